//! The scope hierarchy end to end, on real `anchorage` processes on loopback:
//!
//! 1. `cold_walk_round_trips`: `/`, `/eu`, `/eu/payments` on three different member sets; a
//!    cold resolve of a depth-3 name costs exactly 3 resolve requests (counted by the client
//!    and by the anchors' `/metrics`), a warm one none, a new name under a warm referral one.
//! 2. `rogue_anchor_rejected`: an anchor that is not a member of `/eu` (or of the root) but
//!    hosts a scope with the same id and a forged record is rejected by the resolver; the same
//!    question at a real member is answered.
//! 3. `watch_survives_leader_kill`: a watch on `/eu` sees exactly the acknowledged changes, in
//!    version order, across a kill -9 of `/eu`'s leader (changes of writes whose outcome is
//!    unknown may appear; nothing else may).
//! 4. `delegation_under_write_load`: `/eu` is delegated to other anchors while writers hammer
//!    the root; a reader resolving every written name throughout never sees one missing or
//!    with a value never written for it; every acknowledged write reads back afterwards.
//! 5. `root_partition_warm_client_continues`: with every root anchor stopped (SIGSTOP), a
//!    client holding the `/eu` referral keeps resolving and writing under `/eu`.
//! 6. `child_policy_enforced`: a write by a key the child policy does not admit is denied; a
//!    policy change with fewer than k admin signatures is denied; with k it commits and is
//!    what `ScopeInfo` and `anchorage policy get` show.
//! 7. `placement_refused`: delegating `/eu` to an anchor without `jurisdiction=eu` is denied
//!    (and changes nothing); to labelled anchors it works.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchorage_tests::{
    bounded, check_all, policy_toml, random_key, sign_op, text_of, wait_for, Cluster, Delegated,
    Options, Written,
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use ed25519_dalek::SigningKey;
use proto::msg::{AdminRequest, AdminResponse, MutateResponse, ScopeTarget};
use proto::{Name, Op, ReadLevel, Record, ScopeDescriptor, ScopeId};
use resolver::{Client, ClientConfig, Error, HopOutcome, WatchEvent};

const EU: &[(&str, &str)] = &[("jurisdiction", "eu")];
const NONE: &[(&str, &str)] = &[];
/// The resolve counter every anchor exports (labels `level`, `outcome`).
const RESOLVES: &str = "anchorage_resolves_total";

/// The tests of this file run one at a time even without `--test-threads=1`: each starts up
/// to six anchors, and timing bounds assume they do not share the CPU with another cluster.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn text(v: &str) -> Vec<Record> {
    vec![Record::Text(v.to_string())]
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("static name")
}

/// A root policy: `admin` alone (1 of 1) may change it and delegate; any key may write.
fn root_policy(admin: &SigningKey) -> Result<String> {
    policy_toml(&[admin], 1, &[("/**", &[])], 3, &[])
}

/// A child policy for `prefix`: `admin` alone administers it, any key writes under it,
/// `replicas` members carrying `labels`.
fn open_child_policy(
    prefix: &str,
    admin: &SigningKey,
    replicas: u32,
    labels: &[(&str, &str)],
) -> Result<String> {
    policy_toml(
        &[admin],
        1,
        &[(&format!("{prefix}/**"), &[])],
        replicas,
        labels,
    )
}

async fn resolve_count(c: &mut Cluster) -> Result<f64> {
    c.metric_sum(RESOLVES, &[]).await
}

// ---------------------------------------------------------------------------------------
// 1. Cold and warm walks

/// Six anchors: the root on 0, 1, 2 (its admin key signs the delegation), `/eu` delegated to
/// 3, 4, 5 (labelled `jurisdiction=eu`) with an open child policy; a client trusting the
/// root's anchors, its referral to `/eu` warm.
async fn root_and_eu_apart() -> Result<(Cluster, Client, Delegated)> {
    let c = Cluster::start_labeled(6, Options::default(), &[NONE, NONE, NONE, EU, EU, EU]).await?;
    let root_admin = random_key();
    c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
    let client = c
        .client_trusting(&[0, 1, 2], ClientConfig::default())
        .await?;
    let eu = c
        .delegate(
            &client,
            "/eu",
            &[3, 4, 5],
            &open_child_policy("/eu", &random_key(), 3, EU)?,
            &[&root_admin],
        )
        .await?;
    Ok((c, client, eu))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_walk_round_trips() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        // root on 0,1,2; /eu on 2,3,4; /eu/payments on 0,3,4: three different, overlapping
        // sets (an anchor may host a scope and its child, and be seeded by itself).
        let mut c =
            Cluster::start_labeled(5, Options::default(), &[NONE, NONE, EU, EU, EU]).await?;
        let root_admin = random_key();
        let eu_admin = random_key();
        let pay_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let admin_client = c.client_trusting(&[0, 1, 2], ClientConfig::default()).await?;
        let eu = c
            .delegate(
                &admin_client,
                "/eu",
                &[2, 3, 4],
                &open_child_policy("/eu", &eu_admin, 3, EU)?,
                &[&root_admin],
            )
            .await?;
        let pay = c
            .delegate(
                &admin_client,
                "/eu/payments",
                &[0, 3, 4],
                &open_child_policy("/eu/payments", &pay_admin, 3, NONE)?,
                &[&eu_admin],
            )
            .await?;
        eprintln!(
            "/eu = {} (parent {}), /eu/payments = {} (parent {})",
            eu.child, eu.parent, pay.child, pay.parent
        );
        ensure!(eu.parent == ScopeId::root(), "/eu's parent is {}", eu.parent);
        ensure!(pay.parent == eu.child, "/eu/payments' parent is {}", pay.parent);

        let key = random_key();
        let v_api = admin_client
            .put("/eu/payments/api", text("api-1"), 300, &key)
            .await?;
        let v_db = admin_client
            .put("/eu/payments/db", text("db-1"), 300, &key)
            .await?;
        ensure!(
            v_api > pay.index && v_db > v_api,
            "versions {v_api}, {v_db} do not continue after the delegation index {}",
            pay.index
        );

        // The walk's last hop may reach any member: let every one apply the writes first.
        for m in [0, 3, 4] {
            c.wait_scope_applied(m, pay.child, v_db, Duration::from_secs(10))
                .await?;
        }
        // A fresh client: nothing cached but its trust anchors.
        let reader = c.client_trusting(&[0, 1, 2], ClientConfig::default()).await?;
        let api = name("/eu/payments/api");
        let (m0, r0) = (resolve_count(&mut c).await?, reader.round_trips());
        let (res, trace) = reader.resolve_traced(&api, ReadLevel::Cached).await;
        let (m1, r1) = (resolve_count(&mut c).await?, reader.round_trips());
        let set = res.context("cold resolve")?;
        ensure!(
            text_of(&set) == Some("api-1") && set.version == v_api,
            "cold resolve gave {set:?}"
        );
        let hops: Vec<String> = trace
            .hops
            .iter()
            .map(|h| format!("{} {:?}", h.prefix, h.outcome))
            .collect();
        eprintln!("cold walk: {hops:?}");
        ensure!(
            r1 - r0 == 3,
            "the cold walk took {} round trips (client): {hops:?}",
            r1 - r0
        );
        ensure!(
            m1 - m0 == 3.0,
            "the anchors served {} resolves for the cold walk: {hops:?}",
            m1 - m0
        );
        let scopes: Vec<ScopeId> = trace.hops.iter().map(|h| h.scope).collect();
        ensure!(
            scopes == vec![ScopeId::root(), eu.child, pay.child],
            "the walk asked scopes {scopes:?}"
        );
        ensure!(
            matches!(trace.hops[0].outcome, HopOutcome::Referral(_))
                && matches!(trace.hops[1].outcome, HopOutcome::Referral(_))
                && matches!(trace.hops[2].outcome, HopOutcome::Found { version } if version == v_api),
            "hop outcomes: {hops:?}"
        );

        // Warm: the answer is cached, nothing is sent.
        let set = reader.resolve("/eu/payments/api", ReadLevel::Cached).await?;
        let (m2, r2) = (resolve_count(&mut c).await?, reader.round_trips());
        ensure!(text_of(&set) == Some("api-1"), "warm resolve gave {set:?}");
        ensure!(r2 == r1, "the warm resolve took {} round trips", r2 - r1);
        ensure!(m2 == m1, "the anchors served {} resolves for the warm one", m2 - m1);

        // Another name in the same scope: the referrals are warm, one request.
        let set = reader.resolve("/eu/payments/db", ReadLevel::Cached).await?;
        let (m3, r3) = (resolve_count(&mut c).await?, reader.round_trips());
        ensure!(text_of(&set) == Some("db-1"), "resolve of db gave {set:?}");
        ensure!(
            r3 - r2 == 1 && m3 - m2 == 1.0,
            "a name under warm referrals took {} round trips ({} served)",
            r3 - r2,
            m3 - m2
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. A rogue anchor

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rogue_anchor_rejected() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        // root on 0,1,2; /eu on 3,4; anchor 5 is a valid, eu-labelled peer of no scope.
        let c =
            Cluster::start_labeled(6, Options::default(), &[NONE, NONE, NONE, EU, EU, EU]).await?;
        let root_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let eu = c
            .delegate(
                &client,
                "/eu",
                &[3, 4],
                &open_child_policy("/eu", &random_key(), 2, EU)?,
                &[&root_admin],
            )
            .await?;
        let key = random_key();
        let v_eu = client.put("/eu/api", text("real"), 300, &key).await?;
        let v_top = client.put("/top", text("real-top"), 300, &key).await?;

        // The rogue hosts scopes with the ids of /eu and of the root, with itself as the only
        // member, and a forged record in each.
        let rogue = 5;
        let me = c.anchor_info(rogue).await?;
        let dev = policy::Policy::development(None).to_toml();
        for (id, prefix) in [(eu.child, "/eu"), (ScopeId::root(), "/")] {
            let req = AdminRequest::CreateScope {
                descriptor: ScopeDescriptor {
                    id,
                    prefix: name(prefix),
                    epoch: 1,
                    members: vec![me.clone()],
                    range: proto::KeyRange::all(),
                },
                policy_toml: dev.clone(),
                bootstrap: true,
            };
            match c.admin(rogue, &req).await? {
                AdminResponse::Ok => {}
                other => bail!("the rogue refused to create {prefix}: {other:?}"),
            }
            wait_for(
                &format!("the rogue to lead its {prefix}"),
                Duration::from_secs(10),
                || {
                    let c = &c;
                    async move {
                        let s = c.scope_status(rogue, id).await?;
                        Ok(s.filter(|s| s.role == "leader").map(|_| ()))
                    }
                },
            )
            .await?;
        }
        for (n, v) in [("/eu/api", "forged"), ("/top", "forged-top")] {
            let op = Op::Put {
                name: name(n),
                records: text(v),
                ttl_s: 300,
            };
            match c.mutate_at(rogue, sign_op(&client, op, &[&key])?).await? {
                MutateResponse::Committed { .. } => {}
                other => bail!("the rogue did not store {n}: {other:?}"),
            }
        }

        let rogue_addr = c.anchors[rogue].addr()?;
        for (n, real, v) in [("/eu/api", "real", v_eu), ("/top", "real-top", v_top)] {
            let before = client.rejected_answers();
            let got = client
                .resolve_via(&name(n), &rogue_addr, ReadLevel::Replica)
                .await;
            eprintln!("{n} via the rogue: {got:?}");
            match &got {
                Err(Error::NotMember { .. }) | Err(Error::Unverified { .. }) => {}
                other => bail!("{n} via the rogue (a non-member): want NotMember, got {other:?}"),
            }
            ensure!(
                client.rejected_answers() > before,
                "the client did not count the rejected answer for {n}"
            );
            // The same question at a real member, and through the ordinary walk.
            let member = if n == "/eu/api" { 3 } else { 0 };
            let set = client
                .resolve_via(&name(n), &c.anchors[member].addr()?, ReadLevel::Replica)
                .await
                .with_context(|| format!("{n} via member {member}"))?;
            ensure!(
                text_of(&set) == Some(real) && set.version == v,
                "{n} via member {member}: {set:?}"
            );
            let set = client.resolve(n, ReadLevel::Replica).await?;
            ensure!(text_of(&set) == Some(real), "{n} resolved to {set:?}");
        }
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 3. A watch across a leader kill

/// One write a writer attempted: `value` None is a delete.
#[derive(Clone, Debug)]
struct Attempt {
    name: String,
    value: Option<String>,
    /// The committed version when acknowledged.
    version: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_survives_leader_kill() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(120), async {
        let (mut c, client, eu) = root_and_eu_apart().await?;

        // The watch starts now, before any write under /eu; its events go to a log.
        let watcher = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let mut watch = watcher.watch("/eu").await?;
        let start = watch.position();
        let events = Arc::new(Mutex::new(Vec::new()));
        let watch_task = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(e) = watch.next().await {
                    let stop = e.is_err();
                    events.lock().unwrap().push(e);
                    if stop {
                        break;
                    }
                }
            })
        };

        let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for t in 0..3 {
            let (client, attempts, stop) = (client.clone(), attempts.clone(), stop.clone());
            let key = random_key();
            writers.spawn(async move {
                // Each writer owns 4 names and knows whether each exists (after an error it
                // does not know, and puts next).
                let mut exists = [false; 4];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let j = (i % 4) as usize;
                    let n = format!("/eu/w{t}-{j}");
                    let delete = exists[j] && i % 3 == 2;
                    let value = (!delete).then(|| format!("v{t}-{i}"));
                    i += 1;
                    let started = Instant::now();
                    let r = match &value {
                        Some(v) => client.put(&n, text(v), 300, &key).await,
                        None => client.delete(&n, &key).await,
                    };
                    exists[j] = r.is_ok() && value.is_some();
                    let failed = r.is_err();
                    attempts.lock().unwrap().push(Attempt {
                        name: n,
                        value,
                        version: r.ok(),
                    });
                    if failed && started.elapsed() < Duration::from_millis(5) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        let acked = |n: usize| {
            let attempts = attempts.clone();
            move || {
                let attempts = attempts.clone();
                async move {
                    let a = attempts.lock().unwrap();
                    Ok((a.iter().filter(|a| a.version.is_some()).count() >= n).then_some(()))
                }
            }
        };
        wait_for("40 acknowledged writes", Duration::from_secs(30), acked(40)).await?;

        let old = c
            .wait_scope_leader(eu.child, Duration::from_secs(10))
            .await?;
        let old_term = c.scope_status(old, eu.child).await?.map_or(0, |s| s.term);
        c.kill(old);
        eprintln!("killed /eu's leader, anchor {old} (term {old_term})");
        let new = wait_for("a new /eu leader", Duration::from_secs(20), || {
            let c = &c;
            async move {
                let l = c.scope_leader(eu.child).await?;
                Ok(l.filter(|&l| l != old))
            }
        })
        .await?;
        eprintln!("new /eu leader: anchor {new}");
        let n = attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.version.is_some())
            .count();
        wait_for(
            "30 writes after the kill",
            Duration::from_secs(30),
            acked(n + 30),
        )
        .await?;
        c.restart(old).await?;
        let n = attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.version.is_some())
            .count();
        wait_for(
            "30 writes after the restart",
            Duration::from_secs(30),
            acked(n + 30),
        )
        .await?;
        stop.store(true, Ordering::Relaxed);
        while let Some(r) = writers.join_next().await {
            r?;
        }

        let attempts = attempts.lock().unwrap().clone();
        let mut acked: Vec<&Attempt> = attempts.iter().filter(|a| a.version.is_some()).collect();
        acked.sort_by_key(|a| a.version);
        let last = acked.last().and_then(|a| a.version).unwrap_or(0);
        let want: BTreeSet<(String, u64)> = acked
            .iter()
            .map(|a| (a.name.clone(), a.version.unwrap_or(0)))
            .collect();
        // Wait until the watch has delivered every acknowledged change.
        wait_for(
            "the watch to deliver every acknowledged change",
            Duration::from_secs(30),
            || {
                let events = events.clone();
                let want = &want;
                async move {
                    let ev = events.lock().unwrap();
                    if let Some(Err(e)) = ev.last() {
                        bail!("the watch failed: {e}");
                    }
                    let seen: BTreeSet<(String, u64)> = ev
                        .iter()
                        .filter_map(|e| match e {
                            Ok(WatchEvent::Changed(ch)) => Some((ch.name.to_string(), ch.version)),
                            _ => None,
                        })
                        .collect();
                    Ok(want.is_subset(&seen).then_some(()))
                }
            },
        )
        .await?;
        watch_task.abort();
        let events: Vec<_> = events.lock().unwrap().drain(..).collect();
        eprintln!(
            "{} attempts, {} acknowledged (last version {last}), {} watch events from {start}",
            attempts.len(),
            acked.len(),
            events.len()
        );

        // Every event is a change, in version order, at most once per (name, version).
        let mut changes = Vec::new();
        for e in events {
            match e {
                Ok(WatchEvent::Changed(ch)) => changes.push(ch),
                other => bail!("unexpected watch event {other:?}"),
            }
        }
        for w in changes.windows(2) {
            ensure!(
                w[0].version <= w[1].version,
                "watch events out of order: {} @{} then {} @{}",
                w[0].name,
                w[0].version,
                w[1].name,
                w[1].version
            );
            ensure!(
                (w[0].version, &w[0].name) != (w[1].version, &w[1].name),
                "{} @{} delivered twice",
                w[0].name,
                w[0].version
            );
        }
        // The acknowledged changes, exactly, in order; the rest only from writes whose
        // outcome is unknown.
        let by_key: BTreeMap<(String, u64), &Attempt> = acked
            .iter()
            .map(|a| ((a.name.clone(), a.version.unwrap_or(0)), *a))
            .collect();
        let unknown: BTreeSet<(String, Option<String>)> = attempts
            .iter()
            .filter(|a| a.version.is_none())
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect();
        let mut matched = Vec::new();
        for ch in &changes {
            let value = ch
                .set
                .as_ref()
                .map(|s| text_of(s).unwrap_or("?").to_string());
            match by_key.get(&(ch.name.to_string(), ch.version)) {
                Some(a) => {
                    ensure!(
                        a.value == value,
                        "{} @{}: acknowledged {:?}, watch says {value:?}",
                        ch.name,
                        ch.version,
                        a.value
                    );
                    matched.push((ch.name.to_string(), ch.version));
                }
                None => ensure!(
                    ch.version > start && unknown.contains(&(ch.name.to_string(), value.clone())),
                    "the watch reported {} @{} = {value:?}, which no write made",
                    ch.name,
                    ch.version
                ),
            }
        }
        let want_order: Vec<(String, u64)> = acked
            .iter()
            .map(|a| (a.name.clone(), a.version.unwrap_or(0)))
            .collect();
        // Same multiset (checked above via subset and by_key) and same order up to ties
        // within one batched log entry.
        let mut got_sorted = matched.clone();
        got_sorted.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let mut want_sorted = want_order.clone();
        want_sorted.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        ensure!(
            got_sorted == want_sorted && matched.len() == want_order.len(),
            "the watch's acknowledged changes differ: {} delivered, {} acknowledged",
            matched.len(),
            want_order.len()
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 4. Delegation under write load

#[derive(Default)]
struct LoadLog {
    acked: Vec<Written>,
    /// Every value attempted per name (acknowledged or not).
    attempted: BTreeMap<String, Vec<String>>,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delegation_under_write_load() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(120), async {
        // root on 0,1,2; /eu moves to 3,4,5.
        let c =
            Cluster::start_labeled(6, Options::default(), &[NONE, NONE, NONE, EU, EU, EU]).await?;
        let root_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let key = random_key();

        let log = Arc::new(Mutex::new(LoadLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = tokio::task::JoinSet::new();
        for t in 0..4 {
            let (client, key, log, stop) = (client.clone(), key.clone(), log.clone(), stop.clone());
            writers.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Writers 0-2 under /eu, writer 3 elsewhere in the root.
                    let n = if t < 3 {
                        format!("/eu/w{t}-{i}")
                    } else {
                        format!("/other/w-{i}")
                    };
                    let value = format!("v{t}-{i}");
                    i += 1;
                    log.lock()
                        .unwrap()
                        .attempted
                        .entry(n.clone())
                        .or_default()
                        .push(value.clone());
                    let started = Instant::now();
                    let r = client.put(&n, text(&value), 300, &key).await;
                    let failed_fast = r.is_err() && started.elapsed() < Duration::from_millis(5);
                    {
                        let mut l = log.lock().unwrap();
                        match r {
                            Ok(version) => l.acked.push(Written {
                                name: n,
                                value,
                                version,
                            }),
                            Err(e) => l.errors.push(format!("{n}: {e}")),
                        }
                    }
                    if failed_fast {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }

        // The reader: resolves every acknowledged /eu name over and over, from a client of
        // its own, through the walk, at the linearizable level: a replica-level read may
        // legitimately miss a write its member has not applied yet (found when heartbeats
        // began to be coalesced: a follower learns a commit a few ms later), which says
        // nothing about the move; a linearizable read must find every acknowledged name,
        // from the parent before the hand-over and from the child after it.
        let reader_client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (log, stop, reads) = (log.clone(), stop.clone(), reads.clone());
            tokio::spawn(async move {
                let mut bad = Vec::new();
                while !stop.load(Ordering::Relaxed) && bad.len() < 10 {
                    let names: Vec<String> = {
                        let l = log.lock().unwrap();
                        l.acked
                            .iter()
                            .filter(|w| w.name.starts_with("/eu/"))
                            .map(|w| w.name.clone())
                            .collect()
                    };
                    for n in names {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = reader_client.resolve(&n, ReadLevel::Linearizable).await;
                        reads.fetch_add(1, Ordering::Relaxed);
                        let ok_values = log.lock().unwrap().attempted.get(&n).cloned();
                        let ok_values = ok_values.unwrap_or_default();
                        match r {
                            Ok(set)
                                if text_of(&set)
                                    .is_some_and(|v| ok_values.iter().any(|w| w == v)) => {}
                            Ok(set) => bad.push(format!("{n} resolved to {set:?}, never written")),
                            Err(e) => bad.push(format!("{n}: {e}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                bad
            })
        };

        let eu_acked = |n: usize, after: u64| {
            let log = log.clone();
            move || {
                let log = log.clone();
                async move {
                    let l = log.lock().unwrap();
                    let k = l
                        .acked
                        .iter()
                        .filter(|w| w.name.starts_with("/eu/") && w.version > after)
                        .count();
                    Ok((k >= n).then_some(()))
                }
            }
        };
        wait_for(
            "60 writes under /eu",
            Duration::from_secs(30),
            eu_acked(60, 0),
        )
        .await?;
        let reads_before = reads.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let eu = c
            .delegate(
                &c.client_trusting(&[0, 1, 2], ClientConfig::default())
                    .await?,
                "/eu",
                &[3, 4, 5],
                &open_child_policy("/eu", &random_key(), 3, EU)?,
                &[&root_admin],
            )
            .await?;
        let reads_during = reads.load(Ordering::Relaxed) - reads_before;
        eprintln!(
            "delegated /eu at index {} in {:.2} s; {reads_during} reads meanwhile",
            eu.index,
            t0.elapsed().as_secs_f64()
        );
        // Writes under /eu continue in the child.
        wait_for(
            "30 writes under /eu in the child",
            Duration::from_secs(30),
            eu_acked(30, eu.index),
        )
        .await?;
        stop.store(true, Ordering::Relaxed);
        while let Some(r) = writers.join_next().await {
            r?;
        }
        let bad = reader.await?;
        let (writes, errors) = {
            let l = log.lock().unwrap();
            (l.acked.clone(), l.errors.clone())
        };
        eprintln!(
            "{} acknowledged writes, {} errors, {} reads",
            writes.len(),
            errors.len(),
            reads.load(Ordering::Relaxed)
        );
        for e in errors.iter().take(5) {
            eprintln!("  write error: {e}");
        }
        ensure!(
            bad.is_empty(),
            "the reader saw {} wrong resolutions; first: {}",
            bad.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
        ensure!(
            reads_during > 0,
            "the reader did not read during the delegation"
        );
        ensure!(
            writes
                .iter()
                .any(|w| w.name.starts_with("/other/") && w.version > eu.index),
            "no write outside /eu after the delegation"
        );
        // Every acknowledged write, linearizably, through a cold client.
        let fresh = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        check_all(&fresh, &writes, ReadLevel::Linearizable, 8).await?;
        // The moved names are served by the child's members.
        for &m in &[3usize, 4, 5] {
            let s = c.scope_status(m, eu.child).await?;
            ensure!(s.is_some(), "anchor {m} does not host /eu");
        }
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 5. The root partitioned away

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn root_partition_warm_client_continues() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        // root on 0,1,2; /eu on 3,4,5: no root anchor is an /eu member.
        let (mut c, client, eu) = root_and_eu_apart().await?;
        let key = random_key();
        let v_a = client.put("/eu/a", text("a-1"), 300, &key).await?;
        // Replica reads below may go to any member: let every one apply the write first.
        for m in [3, 4, 5] {
            c.wait_scope_applied(m, eu.child, v_a, Duration::from_secs(10))
                .await?;
        }
        // Warm the referral for reads too.
        let set = client.resolve("/eu/a", ReadLevel::Replica).await?;
        ensure!(text_of(&set) == Some("a-1"), "/eu/a: {set:?}");
        let located = client.locate(&name("/eu/a")).await?;
        ensure!(
            located.scope == eu.child,
            "/eu/a located in {}",
            located.scope
        );

        for i in 0..3 {
            c.pause(i)?;
        }
        eprintln!("root anchors 0, 1, 2 paused");
        // One request, straight to an /eu member (any member answers a replica read).
        let r0 = client.round_trips();
        let started = Instant::now();
        let set = client.resolve("/eu/a", ReadLevel::Replica).await?;
        let r1 = client.round_trips();
        ensure!(
            text_of(&set) == Some("a-1") && set.version == v_a,
            "/eu/a with the root away: {set:?}"
        );
        ensure!(
            r1 - r0 == 1,
            "a replica read under a warm referral took {} round trips ({:?})",
            r1 - r0,
            started.elapsed()
        );
        let set = client.resolve("/eu/a", ReadLevel::Linearizable).await?;
        ensure!(text_of(&set) == Some("a-1"), "/eu/a linearizable: {set:?}");
        match client.resolve("/eu/missing", ReadLevel::Replica).await {
            Err(Error::NotFound { .. }) => {}
            other => bail!("/eu/missing with the root away: {other:?}"),
        }
        // Writes: a new name, an overwrite, a delete; each reads back.
        let v_b = client.put("/eu/b", text("b-1"), 300, &key).await?;
        let v_a2 = client.put("/eu/a", text("a-2"), 300, &key).await?;
        ensure!(v_b > eu.index && v_a2 > v_b, "versions {v_b}, {v_a2}");
        for (n, v) in [("/eu/b", "b-1"), ("/eu/a", "a-2")] {
            let set = client.resolve(n, ReadLevel::Linearizable).await?;
            ensure!(text_of(&set) == Some(v), "{n}: {set:?}");
        }
        client.delete("/eu/b", &key).await?;
        match client.resolve("/eu/b", ReadLevel::Linearizable).await {
            Err(Error::NotFound { .. }) => {}
            other => bail!("/eu/b after its delete: {other:?}"),
        }
        // The partition is real: a cold client cannot get anywhere.
        let cold_cfg = ClientConfig {
            request_timeout: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        };
        let cold = c.client_trusting(&[0, 1, 2], cold_cfg).await?;
        ensure!(
            cold.resolve("/eu/a", ReadLevel::Replica).await.is_err(),
            "a cold client resolved /eu/a with every root anchor stopped"
        );
        for i in 0..3 {
            c.resume(i)?;
        }
        let set = cold.resolve("/eu/a", ReadLevel::Replica).await;
        let set = match set {
            Ok(s) => s,
            // The first attempt may time out while the root anchors wake up.
            Err(_) => {
                let cold = c
                    .client_trusting(&[0, 1, 2], ClientConfig::default())
                    .await?;
                cold.resolve("/eu/a", ReadLevel::Replica).await?
            }
        };
        ensure!(
            text_of(&set) == Some("a-2"),
            "/eu/a after the root came back: {set:?}"
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 6. The child's policy

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_policy_enforced() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        let c = Cluster::start_labeled(5, Options::default(), &[NONE, NONE, NONE, EU, EU]).await?;
        let root_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let (a1, a2, a3) = (random_key(), random_key(), random_key());
        let (writer, intruder) = (random_key(), random_key());
        let p1 = policy_toml(&[&a1, &a2, &a3], 2, &[("/eu/**", &[&writer])], 2, EU)?;
        let eu = c
            .delegate(&client, "/eu", &[3, 4], &p1, &[&root_admin])
            .await?;

        // Writes: only the writer's key.
        match client.put("/eu/x", text("intruder"), 300, &intruder).await {
            Err(Error::Denied { reason }) => eprintln!("intruder denied: {reason}"),
            other => bail!("a write by a key the child policy does not admit: {other:?}"),
        }
        client.put("/eu/x", text("writer"), 300, &writer).await?;
        // The root's permissive policy does not leak into the child.
        match client
            .put("/eu/y", text("root-admin"), 300, &root_admin)
            .await
        {
            Err(Error::Denied { .. }) => {}
            other => bail!("a write under /eu by the root admin: {other:?}"),
        }

        // A policy change that also lets the intruder write under /eu/open.
        let p2 = policy_toml(
            &[&a1, &a2, &a3],
            2,
            &[("/eu/**", &[&writer]), ("/eu/open/**", &[&intruder])],
            2,
            EU,
        )?;
        let set_p2 = || Op::SetPolicy {
            prefix: name("/eu"),
            policy_toml: p2.clone(),
        };
        for signers in [
            vec![&a1],
            vec![&a2, &a2],
            vec![&writer, &a3],
            vec![&root_admin, &a1],
        ] {
            match client.submit(sign_op(&client, set_p2(), &signers)?).await {
                Err(Error::Denied { reason }) => eprintln!("policy change denied: {reason}"),
                // The same key twice may also be refused as malformed before the policy.
                Err(Error::Invalid { reason })
                    if signers.len() == 2 && signers[0] == signers[1] =>
                {
                    eprintln!("duplicate signer refused: {reason}")
                }
                other => bail!(
                    "a policy change with {} admin signature(s) short of 2: {other:?}",
                    signers.len()
                ),
            }
        }
        let info = c
            .scope_info_at(eu.leader, ScopeTarget::Id(eu.child))
            .await?;
        ensure!(
            info.policy_toml
                .as_deref()
                .map(policy::Policy::from_toml)
                .transpose()?
                == Some(policy::Policy::from_toml(&p1)?),
            "the refused changes altered the policy: {:?}",
            info.policy_toml
        );
        match client
            .put("/eu/open/z", text("intruder"), 300, &intruder)
            .await
        {
            Err(Error::Denied { .. }) => {}
            other => bail!("the intruder wrote before the policy change: {other:?}"),
        }
        let v = client
            .submit(sign_op(&client, set_p2(), &[&a1, &a3])?)
            .await
            .context("a policy change with 2 of 3 admin signatures")?;
        eprintln!("policy change committed at {v}");

        // Every member shows the new policy once it has applied it.
        let want = policy::Policy::from_toml(&p2)?;
        for m in [3usize, 4] {
            c.wait_scope_applied(m, eu.child, v, Duration::from_secs(10))
                .await?;
            let info = c.scope_info_at(m, ScopeTarget::Id(eu.child)).await?;
            let got = info
                .policy_toml
                .as_deref()
                .map(policy::Policy::from_toml)
                .transpose()?;
            ensure!(
                got.as_ref() == Some(&want),
                "anchor {m} shows policy {:?}",
                info.policy_toml
            );
        }
        let info = client.scope_info(&name("/eu/open/z")).await?;
        ensure!(
            info.descriptor.id == eu.child
                && info
                    .policy_toml
                    .as_deref()
                    .map(policy::Policy::from_toml)
                    .transpose()?
                    == Some(want.clone()),
            "the client's scope_info of /eu: {:?}",
            info.policy_toml
        );
        // `anchorage policy get /eu` prints it as TOML.
        let mut args = vec!["policy".to_string(), "get".to_string(), "/eu".to_string()];
        for a in c.addrs_of(&[0, 1, 2])? {
            args.push("--anchor".into());
            args.push(a.to_string());
        }
        let out = c.cli_ok(&args).await?;
        ensure!(
            policy::Policy::from_toml(&out).ok().as_ref() == Some(&want),
            "`anchorage policy get /eu` printed:\n{out}"
        );
        // The new policy is in force.
        client
            .put("/eu/open/z", text("intruder"), 300, &intruder)
            .await
            .context("the intruder's write under /eu/open after the change")?;
        match client.put("/eu/w", text("intruder"), 300, &intruder).await {
            Err(Error::Denied { .. }) => {}
            other => bail!("the intruder wrote outside /eu/open: {other:?}"),
        }
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 7. Placement

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_refused() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(60), async {
        // The root on 0, 1, 2 (not in the EU); anchors 3 and 4 are in the EU.
        let c = Cluster::start_labeled(5, Options::default(), &[NONE, NONE, NONE, EU, EU]).await?;
        let root_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let key = random_key();
        client.put("/eu/a", text("a-1"), 300, &key).await?;

        let p3 = open_child_policy("/eu", &random_key(), 3, EU)?;
        let op = c.delegate_op("/eu", &[2, 3, 4], &p3, 300).await?;
        match client.submit(sign_op(&client, op, &[&root_admin])?).await {
            Err(Error::Denied { reason }) => {
                eprintln!("delegation denied: {reason}");
                ensure!(reason.contains("jurisdiction"), "denied, but for: {reason}");
            }
            other => bail!("delegating /eu to an anchor without jurisdiction=eu: {other:?}"),
        }
        // Nothing changed: no delegation, /eu still writable in the root.
        let leader = c
            .wait_scope_leader(ScopeId::root(), Duration::from_secs(5))
            .await?;
        let info = c
            .scope_info_at(leader, ScopeTarget::Id(ScopeId::root()))
            .await?;
        ensure!(
            info.delegations.is_empty(),
            "delegations: {:?}",
            info.delegations
        );
        client.put("/eu/b", text("b-1"), 300, &key).await?;

        // The same on the two labelled anchors works, and the names move with it.
        let p2 = open_child_policy("/eu", &random_key(), 2, EU)?;
        let eu = c
            .delegate(&client, "/eu", &[3, 4], &p2, &[&root_admin])
            .await
            .map_err(|e| anyhow!("delegating /eu to the labelled anchors: {e:#}"))?;
        for (n, v) in [("/eu/a", "a-1"), ("/eu/b", "b-1")] {
            let set = client.resolve(n, ReadLevel::Linearizable).await?;
            ensure!(text_of(&set) == Some(v), "{n}: {set:?}");
        }
        ensure!(
            c.scope_status(2, eu.child).await?.is_none(),
            "the unlabelled anchor hosts /eu"
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8. A delegation whose members include the parent's leader

/// `/eu` delegated to the root's own anchors (as a split keeps its members): the parent's
/// leader is then a child member and must seed its own replica as well; the move completes
/// at once, not after a straggler grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delegate_to_parent_members() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(60), async {
        let c = Cluster::start_labeled(3, Options::default(), &[EU, EU, EU]).await?;
        let root_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let key = random_key();
        let v = client.put("/eu/a", text("a-1"), 300, &key).await?;
        let leader = c
            .wait_scope_leader(ScopeId::root(), Duration::from_secs(5))
            .await?;
        let started = Instant::now();
        let eu = c
            .delegate(
                &client,
                "/eu",
                &[0, 1, 2],
                &open_child_policy("/eu", &random_key(), 3, EU)?,
                &[&root_admin],
            )
            .await?;
        // Every member, the root's leader (anchor {leader}) included, hosts the child.
        for i in 0..3 {
            c.wait_scope_applied(i, eu.child, eu.index, Duration::from_secs(5))
                .await
                .with_context(|| format!("anchor {i} (the root's leader is {leader})"))?;
        }
        let took = started.elapsed();
        ensure!(
            took < Duration::from_secs(5),
            "the delegation took {:.1} s with the parent's leader (anchor {leader}) among the \
             child's members",
            took.as_secs_f64()
        );
        let set = client.resolve("/eu/a", ReadLevel::Linearizable).await?;
        ensure!(
            text_of(&set) == Some("a-1") && set.version == v,
            "/eu/a: {set:?}"
        );
        Ok(())
    })
    .await;
}

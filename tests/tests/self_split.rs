//! Scopes that split by themselves, on real `anchorage` processes on loopback
//! (`docs/design.md`, "Splits and merges: the decision"; `docs/reliability.md`):
//!
//! 1. `one_hot_name_never_splits`: the root, with automatic splits and a low read limit, is
//!    hammered with linearizable reads of one name; its leader's decider, once the limit
//!    has been exceeded for the whole hold, says "one hot name" (also in `anchorage scope
//!    show`), and no split happens while the hold elapses several times over.
//! 2. `split_completes_with_every_other_anchor_stopped`: `/shop` lives on anchors 3-5, the
//!    root on 0-2; with 0-2 stopped (SIGSTOP), names written under `/shop/eu` through a
//!    client holding the `/shop` referral make `/shop` split `/shop/eu` off: the split is
//!    handed over, the new scope has a leader, and both scopes take writes.
//! 3. `split_survives_a_member_down_and_the_parent_leader_killed`: the root splits `/shop`
//!    off while one member is killed (restarted after the split); `/shop` then splits
//!    `/shop/eu` off and its leader is killed right after the split entry committed. In the
//!    end every anchor hosts the same scopes, active, with the same records (each anchor's
//!    replica asked on its own), and every acknowledged write reads back linearizably.
//! 4. `a_member_back_after_the_split_was_purged_from_the_logs_hosts_the_child`: a member
//!    down while the root splits `/shop` off and every log is purged past the split learns
//!    it from the root's snapshot, hosts `/shop` and holds every acknowledged record.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchorage_tests::{
    bounded, policy_toml, random_key, split_policy, wait_for, Acked, Cluster, Options,
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use ed25519_dalek::SigningKey;
use proto::msg::{Answer, ScopeTarget};
use proto::{DelegationState, Name, ReadLevel, Record, ScopeId};
use resolver::ClientConfig;

/// The tests of this file run one at a time even without `--test-threads=1`: each starts
/// three to six anchors, and the timing bounds assume they do not share the CPU with
/// another cluster.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn name(s: &str) -> Name {
    Name::parse(s).expect("static name")
}

/// Anchor `i`'s replica of `scope` refers `n` to a child scope.
async fn refers(c: &Cluster, i: usize, scope: ScopeId, n: &str) -> Result<()> {
    let a = c.resolve_at(i, scope, &name(n), ReadLevel::Replica).await?;
    ensure!(
        matches!(a, Answer::Referral { .. }),
        "anchor {i}, scope {scope}, {n}: {a:?}"
    );
    Ok(())
}

/// A root policy: `admin` alone administers it, any key writes anywhere, three replicas.
fn root_policy(admin: &SigningKey) -> Result<String> {
    policy_toml(&[admin], 1, &[("/**", &[])], 3, &[])
}

// ---------------------------------------------------------------------------------------
// 1. One hot name

/// The root's read limit, per second, and its hold.
const READS_MAX: u32 = 20;
const WINDOW_S: u32 = 2;
/// What the decider says about the hot name.
const HOT_REASON: &str = "stay: no qualifying split key: one hot name /hot/x carries";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hot_name_never_splits() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(60), async {
        let mut c = Cluster::start(3).await?;
        let admin = random_key();
        let policy = split_policy(
            &root_policy(&admin)?,
            &[
                ("reads_per_s_max", READS_MAX),
                ("window_s", WINDOW_S),
                ("interval_s_min", 1),
            ],
        )?;
        c.init_on(&[0, 1, 2], &policy).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let key = random_key();
        for n in ["/hot/x", "/a/one", "/b/two"] {
            client
                .put(n, vec![Record::Text(n.into())], 300, &key)
                .await?;
        }
        c.wait_scope_leader(ScopeId::root(), Duration::from_secs(10))
            .await?;

        // Linearizable reads go to the leader, which counts every one of them.
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut hammer = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (client, stop, reads) = (client.clone(), stop.clone(), reads.clone());
            hammer.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if client
                        .resolve("/hot/x", ReadLevel::Linearizable)
                        .await
                        .is_ok()
                    {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let root = ScopeTarget::Id(ScopeId::root());
        let view_at = |i: usize| {
            let root = root.clone();
            let c = &c;
            async move {
                let info = c.scope_info_at(i, root).await?;
                let view = info
                    .split
                    .ok_or_else(|| anyhow!("anchor {i}: no split view"))?;
                Ok::<_, anyhow::Error>((view, info.delegations))
            }
        };
        // The current leader (which counted the reads) blames the hot name, over the limit:
        // the decider has evaluated an over-limit figure held for the whole window, for only
        // then does it look for a key.
        let blames_hot_name = |what: &'static str| {
            let c = &c;
            let view_at = &view_at;
            wait_for(what, Duration::from_secs(30), move || async move {
                let Some(leader) = c.scope_leader(ScopeId::root()).await? else {
                    return Ok(None);
                };
                let (view, _) = view_at(leader).await?;
                let hot = view.decision.starts_with(HOT_REASON)
                    && view.reads_per_s > u64::from(READS_MAX);
                Ok(hot.then_some((leader, view)))
            })
        };
        let started = Instant::now();
        let (_, first) = blames_hot_name("the leader's decider to blame the hot name").await?;
        eprintln!(
            "after {:.1} s: reads {}/s (limit {READS_MAX}/s), key: {}; {}",
            started.elapsed().as_secs_f64(),
            first.reads_per_s,
            first.key_text,
            first.decision
        );
        ensure!(first.key.is_none(), "a key qualified: {first:?}");

        // The hold elapses four times over while the load goes on: no split, anywhere.
        let watch_until = Instant::now() + Duration::from_secs(4 * u64::from(WINDOW_S));
        let mut polls = 0;
        while Instant::now() < watch_until {
            for i in 0..3 {
                let (view, delegations) = view_at(i).await?;
                ensure!(
                    delegations.is_empty() && !view.would_split,
                    "anchor {i} split or would: {delegations:?}; {}",
                    view.decision
                );
            }
            polls += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (leader, _) = blames_hot_name("the leader to blame the hot name still").await?;
        // The operator sees the same reason (asking the leader, which counted the reads).
        let addr = c.anchors[leader].addr()?.to_string();
        let shown = c
            .cli_ok(&[
                "scope".into(),
                "show".into(),
                "/".into(),
                "--anchor".into(),
                addr,
            ])
            .await?;
        ensure!(
            shown.contains(HOT_REASON.trim_start_matches("stay: ")),
            "scope show does not name the hot name:\n{shown}"
        );
        stop.store(true, Ordering::Relaxed);
        while hammer.join_next().await.is_some() {}
        let splits = c.metric_sum("anchorage_splits_total", &[]).await?;
        ensure!(splits == 0.0, "anchorage_splits_total is {splits}");
        eprintln!(
            "{} hot reads in {:.1} s, {polls} polls of every anchor: no split",
            reads.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. Decentralization

/// `/shop`'s `[split] names_max` in the decentralization test.
const SHOP_NAMES_MAX: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_completes_with_every_other_anchor_stopped() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        let mut c = Cluster::start(6).await?;
        let root_admin = random_key();
        c.init_on(&[0, 1, 2], &root_policy(&root_admin)?).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let shop_policy = split_policy(
            &policy_toml(&[&random_key()], 1, &[("/shop/**", &[])], 3, &[])?,
            &[("names_max", SHOP_NAMES_MAX), ("interval_s_min", 1)],
        )?;
        let shop = c
            .delegate(&client, "/shop", &[3, 4, 5], &shop_policy, &[&root_admin])
            .await?;
        let key = random_key();
        let mut book = Acked::default();
        book.put(&client, &key, "/shop/home", Duration::from_secs(10))
            .await?;
        // The client holds the referral to /shop from here on (TTL 300 s).
        let at = client.locate(&name("/shop/home")).await?;
        ensure!(at.scope == shop.child, "/shop/home located in {}", at.scope);

        for i in 0..3 {
            c.pause(i)?;
        }
        eprintln!("root anchors 0, 1, 2 stopped; /shop on 3, 4, 5");
        let started = Instant::now();
        for i in 0..=SHOP_NAMES_MAX {
            let n = format!("/shop/eu/n{i:02}");
            book.put(&client, &key, &n, Duration::from_secs(20)).await?;
        }
        let d = c
            .wait_split_active(&[3, 4, 5], shop.child, "/shop/eu", Duration::from_secs(30))
            .await?;
        let eu = d.referral.scope;
        let eu_leader = c.wait_scope_ready(eu, Duration::from_secs(20)).await?;
        eprintln!(
            "/shop/eu split off /shop at index {} and ready (leader anchor {eu_leader}) {:.1} s \
             after the first write under it",
            d.index,
            started.elapsed().as_secs_f64()
        );
        let info = c.scope_info_at(eu_leader, ScopeTarget::Id(eu)).await?;
        let parent = info.parent.as_ref().map(|p| p.id);
        ensure!(
            parent == Some(shop.child),
            "/shop/eu's parent is {parent:?}"
        );
        let members: BTreeSet<String> = info
            .descriptor
            .members
            .iter()
            .map(|m| m.peer_id.clone())
            .collect();
        let want: BTreeSet<String> = (3..6)
            .map(|i| c.anchors[i].peer.map(|p| p.to_base58()).unwrap_or_default())
            .collect();
        ensure!(
            members == want,
            "/shop/eu lives on {members:?}, not on /shop's anchors"
        );

        // Both scopes take writes, the root still stopped.
        book.put(&client, &key, "/shop/after", Duration::from_secs(10))
            .await?;
        book.put(&client, &key, "/shop/eu/after", Duration::from_secs(10))
            .await?;
        let (res, trace) = client
            .resolve_traced(&name("/shop/eu/after"), ReadLevel::Linearizable)
            .await;
        res.context("/shop/eu/after")?;
        let asked: Vec<String> = trace.hops.iter().map(|h| h.prefix.to_string()).collect();
        ensure!(
            trace.hops.iter().all(|h| h.scope != ScopeId::root())
                && trace.hops.last().map(|h| h.scope) == Some(eu),
            "the walk asked {asked:?}"
        );
        book.check_linearizable(&client).await?;
        ensure!(
            (0..3).all(|i| c.anchors[i].paused),
            "a root anchor was resumed"
        );
        for i in 0..3 {
            c.resume(i)?;
        }
        // With the root back, a walk from the trust anchors finds every write too.
        client.clear_cache();
        book.check_linearizable(&client).await?;
        eprintln!(
            "{} writes acknowledged and read back, the root's anchors stopped until the end",
            book.acked.len()
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 3. A member down, the parent's leader killed

/// The root's `[split] names_max` in the kill test: `/shop/n0..n6` split `/shop` off.
const ROOT_NAMES_MAX: u32 = 6;
/// Names under `/shop/eu` that make it half of `/shop` (8 of 16: n0..n6, p0 and these).
const EU_NAMES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_survives_a_member_down_and_the_parent_leader_killed() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(90), async {
        let mut c = Cluster::start(3).await?;
        let admin = random_key();
        let policy = split_policy(
            &root_policy(&admin)?,
            &[("names_max", ROOT_NAMES_MAX), ("interval_s_min", 1)],
        )?;
        c.init_on(&[0, 1, 2], &policy).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let key = random_key();
        let mut book = Acked::default();
        let root = ScopeId::root();

        // A member down while the root splits /shop off.
        let root_leader = c.wait_scope_leader(root, Duration::from_secs(10)).await?;
        let down = (root_leader + 1) % 3;
        c.kill(down);
        let up: Vec<usize> = (0..3).filter(|&i| i != down).collect();
        for i in 0..=ROOT_NAMES_MAX {
            book.put(
                &client,
                &key,
                &format!("/shop/n{i}"),
                Duration::from_secs(20),
            )
            .await?;
        }
        let shop = c
            .wait_split_active(&up, root, "/shop", Duration::from_secs(30))
            .await?;
        let shop_id = shop.referral.scope;
        c.wait_scope_ready(shop_id, Duration::from_secs(20)).await?;
        book.put(&client, &key, "/shop/p0", Duration::from_secs(20))
            .await?;
        c.restart(down).await?;
        eprintln!(
            "/shop split off at root index {} with anchor {down} down; restarted",
            shop.index
        );

        // /shop splits /shop/eu off; its leader is killed once the split entry applied.
        let shop_leader = c.wait_scope_ready(shop_id, Duration::from_secs(20)).await?;
        for i in 0..EU_NAMES {
            book.put(
                &client,
                &key,
                &format!("/shop/eu/e{i}"),
                Duration::from_secs(20),
            )
            .await?;
        }
        let eu_prefix = name("/shop/eu");
        let deadline = Instant::now() + Duration::from_secs(20);
        let frozen = loop {
            match c.delegation_at(shop_leader, shop_id, &eu_prefix).await {
                Ok(Some(d)) if d.state == DelegationState::Frozen => break d,
                Ok(Some(d)) => bail!(
                    "the split of /shop/eu was {:?} before the test saw it Frozen",
                    d.state
                ),
                Ok(None) | Err(_) if Instant::now() < deadline => {}
                other => bail!("no split of /shop/eu on /shop's leader within 20 s: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        c.kill(shop_leader);
        eprintln!(
            "/shop/eu split entry at index {} seen Frozen; /shop's leader {shop_leader} killed",
            frozen.index
        );
        let rest: Vec<usize> = (0..3).filter(|&i| i != shop_leader).collect();
        let eu = c
            .wait_split_active(&rest, shop_id, "/shop/eu", Duration::from_secs(30))
            .await?;
        ensure!(
            eu.index == frozen.index,
            "the split handed over is at index {}, the one seen Frozen at {}",
            eu.index,
            frozen.index
        );
        let eu_id = eu.referral.scope;
        c.wait_scope_ready(eu_id, Duration::from_secs(20)).await?;
        book.put(&client, &key, "/shop/eu/after", Duration::from_secs(20))
            .await?;
        book.put(&client, &key, "/shop/q0", Duration::from_secs(20))
            .await?;
        c.restart(shop_leader).await?;

        // Every anchor: the same scopes, active, each split handed over. (A scope over the
        // name limit with no dominant child label goes on to split by range: the set is
        // whatever the first anchor hosts, the three tracked scopes among them.)
        let tracked: BTreeSet<ScopeId> = [root, shop_id, eu_id].into();
        let splits = [(root, "/shop", shop_id), (shop_id, "/shop/eu", eu_id)];
        wait_for(
            "every anchor to host the same scopes, active, the splits handed over",
            Duration::from_secs(30),
            || async {
                let scopes: BTreeSet<ScopeId> =
                    c.status(0).await?.scopes.iter().map(|s| s.id).collect();
                if !scopes.is_superset(&tracked) {
                    return Ok(None);
                }
                for i in 0..3 {
                    let hosted: BTreeSet<ScopeId> =
                        c.status(i).await?.scopes.iter().map(|s| s.id).collect();
                    if hosted != scopes {
                        return Ok(None);
                    }
                    for &id in &scopes {
                        if !c.scope_info_at(i, ScopeTarget::Id(id)).await?.active {
                            return Ok(None);
                        }
                    }
                    for (parent, prefix, child) in splits {
                        match c.delegation_at(i, parent, &name(prefix)).await? {
                            Some(d)
                                if d.state == DelegationState::Active
                                    && d.referral.scope == child => {}
                            _ => return Ok(None),
                        }
                    }
                }
                Ok(Some(()))
            },
        )
        .await?;

        // Every anchor's own replica holds the same record set for every name tried.
        let governing = |n: &str| {
            if n.starts_with("/shop/eu/") {
                eu_id
            } else {
                shop_id
            }
        };
        wait_for(
            "every anchor's replica to hold the same records",
            Duration::from_secs(30),
            || async {
                for n in &book.tried {
                    let mut answers = Vec::new();
                    for i in 0..3 {
                        // Each anchor's own replicas, following a range split off the
                        // governing scope on the same anchor.
                        let mut scope = governing(n);
                        let mut held = None;
                        for _ in 0..8 {
                            match c.resolve_at(i, scope, &name(n), ReadLevel::Replica).await? {
                                Answer::Found { set, .. } => {
                                    held = Some(Some((set.version, set.records)));
                                    break;
                                }
                                Answer::NotFound { .. } => {
                                    held = Some(None);
                                    break;
                                }
                                Answer::Referral { referral, .. }
                                    if referral.range.is_bounded() =>
                                {
                                    scope = referral.scope;
                                }
                                Answer::Referral { .. } => {
                                    bail!("anchor {i} refers {n} elsewhere")
                                }
                                Answer::Members { .. } => {
                                    bail!("anchor {i} answered {n} with a member list")
                                }
                            }
                        }
                        match held {
                            Some(h) => answers.push(h),
                            None => bail!("anchor {i}: {n} is more than 8 range hops away"),
                        }
                    }
                    if answers.iter().any(|a| a != &answers[0]) {
                        return Ok(None);
                    }
                    if let Some((version, value)) = book.acked.get(n) {
                        let want = Some((*version, vec![Record::Text(value.clone())]));
                        ensure!(
                            answers[0] == want,
                            "{n}: acknowledged {want:?}, held {:?}",
                            answers[0]
                        );
                    }
                }
                Ok(Some(()))
            },
        )
        .await?;
        // The parents refer, on every anchor.
        for i in 0..3 {
            refers(&c, i, root, "/shop/n0").await?;
            refers(&c, i, shop_id, "/shop/eu/e0").await?;
        }
        client.clear_cache();
        book.check_linearizable(&client).await?;
        eprintln!(
            "{} names on 3 anchors, identical; {} acknowledged writes read back",
            book.tried.len(),
            book.acked.len()
        );
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 4. A member back after the logs were purged past the split

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_back_after_the_split_was_purged_from_the_logs_hosts_the_child() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(120), async {
        let options = Options {
            logs_kept_after_snapshot: 0,
            ..Options::default()
        };
        let mut c = Cluster::start_with(3, options).await?;
        let policy = split_policy(
            &root_policy(&random_key())?,
            &[("names_max", ROOT_NAMES_MAX), ("interval_s_min", 1)],
        )?;
        c.init_on(&[0, 1, 2], &policy).await?;
        let client = c
            .client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?;
        let (key, root) = (random_key(), ScopeId::root());
        let mut book = Acked::default();
        let leader = c.wait_scope_leader(root, Duration::from_secs(10)).await?;
        let down = (leader + 1) % 3;
        c.kill(down);
        let up: Vec<usize> = (0..3).filter(|&i| i != down).collect();
        for i in 0..=ROOT_NAMES_MAX + 4 {
            let n = format!("/shop/n{i}");
            book.put(&client, &key, &n, Duration::from_secs(20)).await?;
        }
        let shop = c
            .wait_split_active(&up, root, "/shop", Duration::from_secs(30))
            .await?;
        let shop_id = shop.referral.scope;
        c.wait_scope_ready(shop_id, Duration::from_secs(20)).await?;
        for i in 0..4 {
            book.put(
                &client,
                &key,
                &format!("/shop/p{i}"),
                Duration::from_secs(20),
            )
            .await?;
        }
        // Every scope on the live anchors snapshots and purges its log: the split entry, the
        // hand-over and the child's first entries are gone from every log.
        let mut args = vec!["snapshot".to_string()];
        for &i in &up {
            args.extend(["--anchor".to_string(), c.anchors[i].addr()?.to_string()]);
        }
        c.cli_ok(&args).await?;
        for &i in &up {
            let s = c.root_status(i).await?;
            ensure!(
                s.snapshot.unwrap_or(0) > shop.index,
                "anchor {i}'s root snapshot {:?} is not past the split at {}",
                s.snapshot,
                shop.index
            );
        }
        c.restart(down).await?;
        eprintln!(
            "/shop split off at {} with anchor {down} down, logs purged; restarted",
            shop.index
        );

        // The member learns the split from the root's snapshot, hosts /shop and catches up
        // (the whole test takes 27 s alone on the 2-core machine; the bound leaves room for the
        // other tests of this file running beside it, each with its own three anchors). /shop
        // inherits the root's names_max, so it may split into ranges of its own meanwhile:
        // each name is read from the scope that governs it on that member.
        wait_for(
            &format!("anchor {down} to host /shop with every record"),
            Duration::from_secs(60),
            || async {
                if !c
                    .scope_info_at(down, ScopeTarget::Id(shop_id))
                    .await?
                    .active
                {
                    return Ok(None);
                }
                for (n, (version, value)) in &book.acked {
                    let Ok(at) = c.scope_info_at(down, ScopeTarget::Name(name(n))).await else {
                        return Ok(None);
                    };
                    if !at.active {
                        return Ok(None);
                    }
                    match c
                        .resolve_at(down, at.descriptor.id, &name(n), ReadLevel::Replica)
                        .await?
                    {
                        Answer::Found { set, .. }
                            if set.version == *version
                                && set.records == vec![Record::Text(value.clone())] => {}
                        _ => return Ok(None),
                    }
                }
                Ok(Some(()))
            },
        )
        .await?;
        refers(&c, down, root, "/shop/n0").await?;
        let s = c.root_status(down).await?;
        ensure!(
            s.snapshot.unwrap_or(0) > shop.index,
            "anchor {down} did not catch up the root by snapshot: {s:?}"
        );
        // And it serves: /shop still takes writes with it as a member.
        book.put(&client, &key, "/shop/after", Duration::from_secs(20))
            .await?;
        client.clear_cache();
        book.check_linearizable(&client).await?;
        Ok(())
    })
    .await;
}

//! Quiescence with real anchor processes: idle scopes fall asleep (no elections, almost no
//! Raft traffic while they sleep), a write and a linearizable read to a sleeping scope
//! succeed, and SIGKILLing the anchor that leads every sleeping scope gets every group a new
//! leader within a bound, after which writes succeed.
//!
//! Every replica also hibernates (its group stopped) after 1.5 s asleep: the write, the read
//! and the failover all start from hibernated groups, which are reopened from disk.
//!
//! Short timers: a group sleeps after 1 s idle; anchors ping each other every 200 ms and
//! count a silent one dead after 800 ms.

use std::time::{Duration, Instant};

use anchorage_tests::proto::msg::{AdminRequest, AdminResponse, Answer, MutateResponse};
use anchorage_tests::proto::{
    AnchorInfo, KeyRange, Mutation, Name, Op, ReadLevel, Record, ScopeDescriptor, ScopeId,
    SignedMutation,
};
use anchorage_tests::{bounded, metric_value, random_key, wait_for, Cluster, Options, Quiesce};
use anyhow::{anyhow, bail, Result};

/// Scopes created besides the root, all bootstrapped on anchor 0 (it leads them).
const SCOPES: usize = 24;
/// Every group must have a leader again this long after the kill.
const FAILOVER_MAX: Duration = Duration::from_secs(10);
/// How long the scopes are watched asleep before the first write.
const ASLEEP_FOR: Duration = Duration::from_secs(4);
/// A group asleep this long hibernates (its group stopped, reopened on demand).
const HIBERNATE_AFTER_MS: u64 = 1_500;

fn options() -> Options {
    Options {
        quiesce: Some(Quiesce {
            after_ms: 1_000,
            liveness_ms: 200,
            dead_after_ms: 800,
            hibernate_after_ms: HIBERNATE_AFTER_MS,
        }),
        ..Options::default()
    }
}

fn scope_id(k: usize) -> ScopeId {
    ScopeId::derive(&[
        b"anchorage/sleeping-scopes-test/v1",
        format!("{k}").as_bytes(),
    ])
}

/// Creates `/z0`…: a non-bootstrap replica on anchors 1 and 2, then the bootstrap on 0.
async fn create_scopes(c: &Cluster) -> Result<Vec<ScopeId>> {
    let mut members = Vec::new();
    for i in 0..c.len() {
        let s = c.status(i).await?;
        members.push(AnchorInfo {
            peer_id: s.peer_id,
            addrs: s.addrs,
        });
    }
    let policy_toml = policy::Policy::development(None).to_toml();
    let mut ids = Vec::new();
    for k in 0..SCOPES {
        let descriptor = ScopeDescriptor {
            id: scope_id(k),
            prefix: Name::parse(&format!("/z{k}"))?,
            epoch: 1,
            members: members.clone(),
            range: KeyRange::all(),
        };
        for i in [1, 2, 0] {
            let req = AdminRequest::CreateScope {
                descriptor: descriptor.clone(),
                policy_toml: policy_toml.clone(),
                bootstrap: i == 0,
            };
            match c.admin(i, &req).await? {
                AdminResponse::Ok => {}
                other => bail!("creating /z{k} on anchor {i}: {other:?}"),
            }
        }
        ids.push(descriptor.id);
    }
    Ok(ids)
}

/// (leaders asleep, followers asleep) summed over the anchors in `on`.
async fn asleep(c: &Cluster, on: &[usize]) -> Result<(f64, f64)> {
    let (mut l, mut f) = (0.0, 0.0);
    for &i in on {
        let text = c.metrics(i).await?;
        l += metric_value(&text, "anchorage_scopes_asleep", &[("role", "leader")]);
        f += metric_value(&text, "anchorage_scopes_asleep", &[("role", "follower")]);
    }
    Ok((l, f))
}

async fn sum(c: &Cluster, on: &[usize], name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let mut total = 0.0;
    for &i in on {
        total += metric_value(&c.metrics(i).await?, name, labels);
    }
    Ok(total)
}

async fn wait_all_asleep(c: &Cluster, groups: usize, within: Duration) -> Result<()> {
    wait_for("every group asleep", within, || async {
        let (l, f) = asleep(c, &[0, 1, 2]).await?;
        Ok((l as usize == groups && f as usize == 2 * groups).then_some(()))
    })
    .await
}

/// Waits until every replica of every group sleeps and hibernates.
async fn wait_all_hibernated(c: &Cluster, groups: usize, within: Duration) -> Result<()> {
    wait_all_asleep(c, groups, within).await?;
    wait_for("every replica hibernated", within, || async {
        let h = sum(c, &[0, 1, 2], "anchorage_scopes_hibernated", &[]).await?;
        Ok((h as usize == 3 * groups).then_some(()))
    })
    .await
}

fn put(k: usize, label: &str, value: &str) -> Result<SignedMutation> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let m = Mutation {
        op: Op::Put {
            name: Name::parse(&format!("/z{k}/{label}"))?,
            records: vec![Record::Text(value.into())],
            ttl_s: 60,
        },
        nonce: rand::random(),
        expires_at_ms: now + 60_000,
    };
    Ok(SignedMutation::sign(&m, &random_key())?)
}

async fn write(c: &Cluster, at: usize, k: usize, label: &str, value: &str) -> Result<u64> {
    match c.mutate_at(at, put(k, label, value)?).await? {
        MutateResponse::Committed { version, .. } => Ok(version),
        other => bail!("put /z{k}/{label} at anchor {at}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleeping_scopes() {
    bounded(Duration::from_secs(150), async {
        let mut c = Cluster::start_with(3, options()).await?;
        c.init(None).await?;
        let ids = create_scopes(&c).await?;
        let groups = SCOPES + 1;
        for id in &ids {
            c.wait_scope_leader(*id, Duration::from_secs(10)).await?;
        }
        wait_all_asleep(&c, groups, Duration::from_secs(30)).await?;

        // Asleep for a while: no election, Raft traffic is the liveness pings only.
        let all = [0, 1, 2];
        let terms = sum(&c, &all, "anchorage_scope_terms", &[]).await?;
        let rpcs = sum(&c, &all, "anchorage_request_seconds_count", &[("protocol", "raft")]).await?;
        let watched = Instant::now();
        wait_for("the sleep to last", ASLEEP_FOR + Duration::from_secs(2), || async {
            Ok((watched.elapsed() >= ASLEEP_FOR).then_some(()))
        })
        .await?;
        let secs = watched.elapsed().as_secs_f64();
        let rpcs_per_s =
            (sum(&c, &all, "anchorage_request_seconds_count", &[("protocol", "raft")]).await? - rpcs) / secs;
        assert_eq!(sum(&c, &all, "anchorage_scope_terms", &[]).await?, terms, "no election while asleep");
        // Pings: 3 anchors × 2 peers × 5/s = 30/s; awake, 25 groups × 2 followers would send
        // 1 300 heartbeats/s at these timers (fewer frames once coalesced).
        assert!(rpcs_per_s < 60.0, "{rpcs_per_s:.0} raft requests/s while asleep");
        let (l, f) = asleep(&c, &all).await?;
        assert_eq!((l as usize, f as usize), (groups, 2 * groups), "still asleep");
        wait_all_hibernated(&c, groups, Duration::from_secs(20)).await?;
        let reopened = sum(&c, &all, "anchorage_scope_hibernations_total", &[("event", "reopened")]).await?;

        // A write through a follower (forwarded to the sleeping leader) and a linearizable
        // read at the leader of another sleeping scope.
        let started = Instant::now();
        let version = write(&c, 1, 3, "first", "v1").await?;
        let write_ms = started.elapsed().as_millis();
        let name = Name::parse("/z4/nothing")?;
        let started = Instant::now();
        let answer = c.resolve_at(0, ids[4], &name, ReadLevel::Linearizable).await?;
        let read_ms = started.elapsed().as_millis();
        assert!(matches!(answer, Answer::NotFound { .. }), "{answer:?}");
        println!("first write to a sleeping scope {write_ms} ms (version {version}), first linearizable read {read_ms} ms");
        let write_wakes = sum(&c, &[0], "anchorage_scope_wakes_total", &[("cause", "write")]).await?;
        let read_wakes = sum(&c, &[0], "anchorage_scope_wakes_total", &[("cause", "read")]).await?;
        assert!(write_wakes >= 1.0 && read_wakes >= 1.0, "wakes: {write_wakes} write, {read_wakes} read");
        let now_reopened = sum(&c, &all, "anchorage_scope_hibernations_total", &[("event", "reopened")]).await?;
        assert!(now_reopened >= reopened + 2.0, "the write and the read reopened {} groups", now_reopened - reopened);

        // Both fall asleep and hibernate again; the written value reads back linearizably
        // from there.
        wait_all_hibernated(&c, groups, Duration::from_secs(20)).await?;
        let answer = c
            .resolve_at(0, ids[3], &Name::parse("/z3/first")?, ReadLevel::Linearizable)
            .await?;
        match answer {
            Answer::Found { .. } => {}
            other => bail!("/z3/first after sleeping: {other:?}"),
        }
        assert_eq!(sum(&c, &all, "anchorage_scope_terms", &[]).await?, terms, "waking elected nobody");

        // Failover of the anchor that leads every sleeping (hibernated) scope.
        wait_all_hibernated(&c, groups, Duration::from_secs(20)).await?;
        let led = sum(&c, &[0], "anchorage_scopes", &[("role", "leader")]).await?;
        assert!(led as usize >= SCOPES, "anchor 0 leads {led} groups");
        let killed = Instant::now();
        c.kill(0);
        wait_for("a leader for every group on anchors 1 and 2", FAILOVER_MAX, || async {
            let led = sum(&c, &[1, 2], "anchorage_scopes", &[("role", "leader")]).await?;
            Ok((led as usize == groups).then_some(()))
        })
        .await?;
        let failover = killed.elapsed();
        println!("failover of {led} sleeping groups: {:.2} s", failover.as_secs_f64());
        for (k, id) in ids.iter().enumerate() {
            let at = c
                .scope_leader(*id)
                .await?
                .ok_or_else(|| anyhow!("/z{k} has no leader"))?;
            write(&c, at, k, "after", "v2").await?;
        }
        let dead_wakes = sum(&c, &[1, 2], "anchorage_scope_wakes_total", &[("cause", "leader_dead")]).await?;
        assert!(dead_wakes >= SCOPES as f64, "{dead_wakes} leader_dead wakes");
        Ok(())
    })
    .await;
}

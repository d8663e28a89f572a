//! Placement decided locally, on real anchor processes, with no operator command:
//! 1. `joining_anchors_take_their_share`: two anchors join a loaded three-anchor cluster
//!    holding many scopes; leaderships and replicas spread until every anchor is within
//!    20 % of the mean, and every scope keeps its three members and a leader.
//! 2. `a_dead_anchors_replicas_are_recreated`: an anchor is SIGKILLed for longer than the
//!    replacement time; its replicas are re-created on the anchor left, and every scope is
//!    back to three members, none of them the dead anchor.
//!
//! `ANCHORAGE_REBALANCE_SCOPES` sets the number of scopes of the first test (default 300).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchorage_tests::{bounded, policy_toml, random_key, wait_for, Cluster, Options};
use anyhow::{anyhow, bail, ensure, Result};
use proto::msg::{AdminRequest, AdminResponse, AnchorStatus};
use proto::{AnchorInfo, KeyRange, Name, Record, ScopeDescriptor, ScopeId};
use resolver::ClientConfig;

/// The tests of this file run one at a time: each starts four or five anchors.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(replace_after_s: u64) -> Options {
    Options {
        rebalance_every_ms: Some(500),
        replace_after_s,
        ..Options::default()
    }
}

/// Creates `count` scopes `/s0000`… on the anchors `on`, each bootstrapped by the next
/// anchor in turn (so leaderships start even), `parallel` at a time.
async fn create_scopes(c: &Cluster, on: &[usize], count: usize, policy: &str) -> Result<()> {
    let mut members = Vec::new();
    for &i in on {
        members.push(c.anchor_info(i).await?);
    }
    let started = Instant::now();
    let parallel = 8;
    for chunk in (0..count).collect::<Vec<_>>().chunks(parallel) {
        let mut calls = Vec::new();
        for &k in chunk {
            calls.push(create_one(c, on, &members, policy, k));
        }
        for r in futures::future::join_all(calls).await {
            r?;
        }
    }
    eprintln!(
        "created {count} scopes on anchors {on:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_one(
    c: &Cluster,
    on: &[usize],
    members: &[AnchorInfo],
    policy: &str,
    k: usize,
) -> Result<()> {
    let prefix = format!("/s{k:04}");
    let descriptor = ScopeDescriptor {
        id: ScopeId::derive(&[b"anchorage/rebalance-test/v1", prefix.as_bytes()]),
        prefix: Name::parse(&prefix)?,
        epoch: 1,
        members: members.to_vec(),
        range: KeyRange::all(),
    };
    let boot = k % on.len();
    for (pos, &i) in on
        .iter()
        .enumerate()
        .filter(|(p, _)| *p != boot)
        .chain([(boot, &on[boot])])
    {
        let req = AdminRequest::CreateScope {
            descriptor: descriptor.clone(),
            policy_toml: policy.to_string(),
            bootstrap: pos == boot,
        };
        match c.admin(i, &req).await? {
            AdminResponse::Ok => {}
            other => bail!("creating {prefix} on anchor {i}: {other:?}"),
        }
    }
    Ok(())
}

/// Replicas hosted and leaderships of each running anchor.
async fn spread(c: &Cluster, anchors: &[usize]) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for &i in anchors {
        let s: AnchorStatus = c.status(i).await?;
        let led = s.scopes.iter().filter(|x| x.role == "leader").count();
        out.push((s.scopes.len(), led));
    }
    Ok(out)
}

fn within(values: &[usize], pct: f64) -> bool {
    let mean = values.iter().sum::<usize>() as f64 / values.len() as f64;
    values
        .iter()
        .all(|v| (*v as f64 - mean).abs() <= mean * pct / 100.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joining_anchors_take_their_share() {
    let _serial = SERIAL.lock().await;
    let scopes: usize = std::env::var("ANCHORAGE_REBALANCE_SCOPES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    bounded(Duration::from_secs(600), async move {
        let mut c = Cluster::start_with(3, options(300)).await?;
        let admin = random_key();
        let policy = policy_toml(&[&admin], 1, &[("/**", &[])], 3, &[])?;
        c.init_on(&[0, 1, 2], &policy).await?;
        create_scopes(&c, &[0, 1, 2], scopes, &policy).await?;
        // Load: a writer and a reader on the root while the cluster rebalances.
        let client = c.client_trusting(&[0, 1, 2], ClientConfig::default()).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let key = random_key();
                let mut acked: BTreeMap<String, u64> = BTreeMap::new();
                let mut took: Vec<Duration> = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 100_000 {
                    let name = format!("/load/n{i}");
                    let sent = Instant::now();
                    if let Ok(v) = client.put(&name, vec![Record::Text(format!("v{i}"))], 300, &key).await {
                        took.push(sent.elapsed());
                        acked.insert(name, v);
                    }
                    i += 1;
                }
                (acked, took)
            })
        };
        let started = Instant::now();
        let four = c.add_joining(&[0]).await?;
        let five = c.add_joining(&[1]).await?;
        let all = [0, 1, 2, four, five];
        let last_print = std::sync::Mutex::new(Instant::now());
        let settled = wait_for("replicas and leaderships within 20 % of the mean", Duration::from_secs(if scopes < 100 { 150 } else { 480 }), || async {
            let s = spread(&c, &all).await?;
            let replicas: Vec<usize> = s.iter().map(|x| x.0).collect();
            let leads: Vec<usize> = s.iter().map(|x| x.1).collect();
            let due = last_print.lock().map(|mut t| {
                let due = t.elapsed() > Duration::from_secs(10);
                if due {
                    *t = Instant::now();
                }
                due
            });
            if due.unwrap_or(false) {
                eprintln!("{:>5.0} s: replicas {replicas:?}, leaderships {leads:?}", started.elapsed().as_secs_f64());
            }
            Ok((within(&replicas, 20.0) && within(&leads, 20.0)).then_some(s))
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let took_s = started.elapsed().as_secs_f64();
        let (acked, mut took) = writer.await.map_err(|e| anyhow!("writer: {e}"))?;
        let settled = settled?;
        took.sort();
        let pct = |p: f64| took.get(((took.len() as f64 * p) as usize).min(took.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        eprintln!(
            "settled after {took_s:.1} s: (replicas, leaderships) per anchor {settled:?}; {} writes acknowledged meanwhile, put latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            acked.len(),
            pct(0.5),
            pct(0.99),
            took.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        );
        // Every scope keeps three voters and has a leader (moves still finishing may take a
        // moment); every write reads back.
        wait_for("every scope with three members and a leader", Duration::from_secs(60), || async {
            let mut members: BTreeMap<ScopeId, (usize, bool)> = BTreeMap::new();
            for &i in &all {
                for s in c.status(i).await?.scopes {
                    let e = members.entry(s.id).or_insert((s.members.len(), false));
                    if s.role == "leader" {
                        *e = (s.members.len(), true);
                    }
                }
            }
            let ok = members.len() == scopes + 1 && members.values().all(|(m, led)| *m == 3 && *led);
            Ok(ok.then_some(()))
        })
        .await?;
        for (name, version) in acked.iter().rev().take(50) {
            let set = client.resolve(name, proto::ReadLevel::Linearizable).await?;
            ensure!(set.version == *version, "{name}: version {} read, {version} acknowledged", set.version);
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_anchors_replicas_are_recreated() {
    let _serial = SERIAL.lock().await;
    bounded(Duration::from_secs(240), async {
        let mut c = Cluster::start_with(3, options(4)).await?;
        let admin = random_key();
        let policy = policy_toml(&[&admin], 1, &[("/**", &[])], 3, &[])?;
        c.init_on(&[0, 1, 2], &policy).await?;
        create_scopes(&c, &[0, 1, 2], 12, &policy).await?;
        // The fourth anchor joins the mesh (and may take some replicas first).
        let four = c.add_joining(&[1]).await?;
        ensure!(four == 3);
        let dead = c.anchor_info(0).await?.peer_id;
        c.kill(0);
        let killed = Instant::now();
        let live = [1, 2, 3];
        wait_for(
            "every scope back to three members without the dead anchor",
            Duration::from_secs(180),
            || async {
                let mut scopes: BTreeMap<ScopeId, (Vec<String>, bool)> = BTreeMap::new();
                for &i in &live {
                    for s in c.status(i).await?.scopes {
                        let e = scopes.entry(s.id).or_insert((s.members.clone(), false));
                        if s.role == "leader" {
                            *e = (s.members.clone(), true);
                        }
                    }
                }
                let ok = scopes.len() == 13
                    && scopes
                        .values()
                        .all(|(m, led)| *led && m.len() == 3 && !m.contains(&dead));
                Ok(ok.then_some(()))
            },
        )
        .await?;
        eprintln!(
            "every scope re-created its replica {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
        // Anchor 3 hosts them all now.
        let s = c.status(3).await?;
        ensure!(
            s.scopes.len() == 13,
            "anchor 3 hosts {} scopes",
            s.scopes.len()
        );
        Ok(())
    })
    .await;
}

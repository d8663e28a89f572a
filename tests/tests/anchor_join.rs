//! Anchors joining and gossiping load summaries: three anchors hold the root scope; a
//! fourth starts with `join` naming one of them; within a deadline every anchor's status
//! lists the other three with fresh summaries (and `/metrics` counts four live anchors);
//! the fourth is killed and its summary expires from the others' view. A summary that is
//! malformed, too large, or signed by another anchor than the one it names is refused and
//! counted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anchorage_tests::resolver::net::{self, GossipConfig, NetConfig};
use anchorage_tests::{bounded, metric_value, wait_for, Cluster};
use anyhow::{anyhow, Result};
use proto::gossip::LoadSummary;

/// How old a summary may be to count as fresh (the harness publishes every second).
const FRESH_MS: u64 = 3_000;

/// Peer ids of anchors `ids`.
fn peers(c: &Cluster, ids: &[usize]) -> Result<Vec<String>> {
    ids.iter()
        .map(|&i| {
            c.anchors[i]
                .peer
                .map(|p| p.to_base58())
                .ok_or_else(|| anyhow!("anchor {i} never started"))
        })
        .collect()
}

/// The anchors anchor `i` holds a summary of, with their age.
async fn heard_by(c: &Cluster, i: usize) -> Result<Vec<(String, u64)>> {
    let s = c.status(i).await?;
    Ok(s.peers
        .into_iter()
        .map(|p| (p.summary.anchor, p.age_ms))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_anchor_is_heard_by_all_and_expires_when_killed() {
    bounded(Duration::from_secs(150), async {
        let mut c = Cluster::start(3).await?;
        c.init(None).await?;
        let j = c.add_joining(&[0]).await?;
        let all = peers(&c, &[0, 1, 2, j])?;
        let started = Instant::now();
        wait_for(
            "every anchor to hold fresh summaries of the other three",
            Duration::from_secs(30),
            || async {
                for i in [0, 1, 2, j] {
                    let heard = heard_by(&c, i).await?;
                    for p in &all {
                        if !heard.iter().any(|(a, age)| a == p && *age < FRESH_MS) {
                            return Ok(None);
                        }
                    }
                }
                Ok(Some(()))
            },
        )
        .await?;
        println!(
            "anchor_join: all 4 anchors hold fresh summaries of each other {:.1} s after the 4th started",
            started.elapsed().as_secs_f64()
        );

        // What the summaries say: the root scope is hosted by anchors 0-2, led by one; the
        // joiner hosts nothing.
        let s = c.status(j).await?;
        let by_anchor = |p: &str| s.peers.iter().find(|l| l.summary.anchor == p).cloned();
        let mut leaders = 0;
        for (i, p) in all.iter().enumerate().take(3) {
            let l = by_anchor(p).ok_or_else(|| anyhow!("anchor {i} missing"))?;
            assert_eq!(l.summary.scopes, 1, "anchor {i}: {:?}", l.summary);
            leaders += l.summary.leaderships;
            assert!(l.summary.mem_bytes > 0 && l.summary.disk_total_bytes > 0);
            assert_eq!(l.summary.labels.get("test_index"), Some(&i.to_string()));
            assert!(!l.summary.addrs.is_empty());
        }
        assert_eq!(leaders, 1, "one root leader among the summaries");
        let joiner = by_anchor(&all[3]).ok_or_else(|| anyhow!("joiner missing"))?;
        assert_eq!(joiner.summary.scopes, 0);

        // /metrics and the CLI table show the same.
        let m = c.metrics(1).await?;
        assert_eq!(metric_value(&m, "anchorage_peers_live", &[]), 4.0, "{m}");
        assert_eq!(
            metric_value(&m, "anchorage_peer_scopes", &[("peer", all[0].as_str())]),
            1.0
        );
        let json = c.status_json_cli().await?;
        let listed = json
            .as_array()
            .and_then(|a| a.get(j))
            .and_then(|s| s["peers"].as_array())
            .map_or(0, |p| p.len());
        assert_eq!(listed, 4, "status --json of the joiner: {json}");
        let text = c
            .cli_ok(&[
                "status".into(),
                "--anchor".into(),
                c.anchors[j].addr()?.to_string(),
            ])
            .await?;
        println!("{text}");
        for p in &all {
            assert!(text.contains(p.as_str()), "{p} in:\n{text}");
        }
        assert!(text.contains("disk free"), "{text}");

        // Kill the joiner (by pid): its summary expires from the others' view.
        let pid = c.anchors[j].pid().ok_or_else(|| anyhow!("joiner has no pid"))?;
        println!("anchor_join: killing anchor {j} (pid {pid})");
        c.kill(j);
        let killed = Instant::now();
        wait_for(
            "the killed anchor's summary to expire on the others",
            Duration::from_secs(30),
            || async {
                for i in 0..3 {
                    if heard_by(&c, i).await?.iter().any(|(a, _)| a == &all[3]) {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )
        .await?;
        let gone = killed.elapsed();
        // The book drops it on the gossip task's next tick (status hides it at once).
        wait_for(
            "the expiry to be counted on the others",
            Duration::from_secs(5),
            || async {
                for i in 0..3 {
                    let m = c.metrics(i).await?;
                    let expired = metric_value(
                        &m,
                        "anchorage_gossip_summaries_total",
                        &[("outcome", "expired")],
                    );
                    if expired < 1.0 {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )
        .await?;
        println!(
            "anchor_join: the killed anchor expired everywhere {:.1} s after the kill",
            gone.as_secs_f64()
        );
        for i in 0..3 {
            let heard: BTreeSet<String> =
                heard_by(&c, i).await?.into_iter().map(|(a, _)| a).collect();
            assert_eq!(heard, all[..3].iter().cloned().collect(), "anchor {i}");
            let m = c.metrics(i).await?;
            assert_eq!(metric_value(&m, "anchorage_peers_live", &[]), 3.0);
        }
        Ok(())
    })
    .await;
}

/// A node that speaks gossipsub publishes a malformed summary, one over the size bound,
/// and a well-formed one naming another anchor; the anchor refuses and counts each, and
/// does not list the forged anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_summaries_are_refused_and_counted() {
    bounded(Duration::from_secs(90), async {
        let c = Cluster::start(1).await?;
        let target = c.anchors[0].addr()?;
        let (inbox, _rx) = tokio::sync::mpsc::channel(16);
        let (rogue, _) = net::spawn(NetConfig {
            gossip: Some(GossipConfig {
                heartbeat: Duration::from_millis(200),
                inbox,
            }),
            ..NetConfig::client()
        })
        .map_err(|e| anyhow!("{e}"))?;
        let addr = anchorage_tests::resolver::AnchorAddr::from_multiaddr(&target)?;
        rogue.dial(addr.peer, addr.addrs.clone());
        let anchor = peers(&c, &[0])?.remove(0);
        let forged = LoadSummary {
            anchor: anchor.clone(),
            seq: u64::MAX,
            sent_at_ms: 0,
            interval_ms: 1_000,
            cpu_millicores: 0,
            cores: 1,
            mem_bytes: 0,
            disk_free_bytes: 0,
            disk_total_bytes: 0,
            scopes: 1_000,
            leaderships: 0,
            reads_per_s: 0,
            writes_per_s: 0,
            hot: vec![],
            labels: Default::default(),
            addrs: vec![],
        }
        .encode()?;
        let too_large = vec![7u8; proto::limits::LOAD_SUMMARY_BYTES_MAX + 100];
        let refused = |m: &str, reason: &str| {
            metric_value(
                m,
                "anchorage_refused_messages_total",
                &[("protocol", "gossip"), ("reason", reason)],
            )
        };
        // Publish until each kind has been counted (the first ones may go out before the
        // anchor's subscription reached the rogue node; each publish is a new message).
        wait_for(
            "the anchor to refuse and count each bad summary",
            Duration::from_secs(30),
            || {
                let (rogue, forged, too_large) = (rogue.clone(), forged.clone(), too_large.clone());
                let c = &c;
                async move {
                    let _ = rogue.publish(b"not a summary".to_vec()).await;
                    let _ = rogue.publish(too_large).await;
                    let _ = rogue.publish(forged).await;
                    let m = c.metrics(0).await?;
                    let counted = ["malformed", "too_large", "wrong_source"]
                        .iter()
                        .all(|r| refused(&m, r) >= 1.0);
                    Ok(counted.then_some(()))
                }
            },
        )
        .await?;
        let s = c.status(0).await?;
        assert!(
            s.peers.iter().all(|p| p.summary.scopes != 1_000),
            "a forged summary was taken: {:?}",
            s.peers
        );
        rogue.shutdown();
        Ok(())
    })
    .await;
}

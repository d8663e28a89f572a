//! Three in-process anchors whose root policy allows automatic splits at a low name limit:
//! names written under `/shop/eu` make the root split `/shop` off, then `/shop` split
//! `/shop/eu` off, by themselves (no operator command) onto the same anchors, and every
//! acknowledged write reads back linearizably through a resolver client whose walk reaches
//! the new scopes, during the splits and after.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use proto::{Name, Record};
use resolver::{Client, ClientConfig};

/// The root's `[split] names_max`: low, so a few dozen names split it.
const NAMES_MAX: u32 = 24;
/// Names written under `/shop/eu`.
const NAMES: usize = 3 * NAMES_MAX as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_splits_a_subtree_off_by_itself_and_loses_no_write() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("the test finished in time");
}

async fn run() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (anchors, addrs) = common::splitting_root(dir.path(), NAMES_MAX).await;
    let trust: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let client = Client::connect_str(&trust, ClientConfig::default())
        .await
        .unwrap();
    let writer = SigningKey::from_bytes(&[8; 32]);

    // Writes, each checked right away and one earlier write read back after each, while
    // the scopes split under them.
    let started = Instant::now();
    let mut acked: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let names: Vec<String> = ["/other/a", "/other/b"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..NAMES).map(|i| format!("/shop/eu/n{i:03}")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let value = format!("v{i}");
        let version = common::put_until_acked(&client, name, &value, &writer).await;
        acked.insert(name.clone(), (version, value));
        let earlier = &names[i / 2];
        if let Some(expected) = acked.get(earlier) {
            common::reads_back(&client, earlier, expected).await;
        }
    }
    let wrote_s = started.elapsed().as_secs_f32();

    // The scopes split by themselves: the root split /shop off (it held nearly every name),
    // then /shop split /shop/eu off; /shop/eu has no dominant child label and stays. Each
    // lives on the same three anchors and has a leader.
    let eu = Name::parse("/shop/eu/n000").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = client.scope_info(&eu).await;
        if let Ok(info) = info {
            if info.descriptor.prefix.to_string() == "/shop/eu" && info.active {
                break info;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no scope of its own governs /shop/eu"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let parent = info.parent.as_ref().map(|p| p.prefix.to_string());
    assert_eq!(
        parent.as_deref(),
        Some("/shop"),
        "split off /shop, itself split off"
    );
    let mut members: Vec<String> = info
        .descriptor
        .members
        .iter()
        .map(|m| m.peer_id.clone())
        .collect();
    members.sort();
    let mut ours: Vec<String> = anchors.iter().map(|a| a.info().peer_id).collect();
    ours.sort();
    assert_eq!(members, ours, "the child lives on the same anchors");
    let leader = anchors
        .iter()
        .flat_map(|a| a.status().scopes)
        .find(|s| s.id == info.descriptor.id && s.role == "leader");
    assert!(leader.is_some(), "the child scope has a leader");
    let splits: u64 = anchors
        .iter()
        .map(|a| {
            a.metrics()
                .splits
                .with_label_values(&["subtree", "size", "split"])
                .get()
        })
        .sum();
    assert!(splits >= 2, "anchorage_splits_total counts both splits");

    // The new scope takes writes.
    for i in 0..5 {
        let name = format!("/shop/eu/after{i}");
        let value = format!("after{i}");
        let version = client
            .put(&name, vec![Record::Text(value.clone())], 300, &writer)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        acked.insert(name, (version, value));
    }

    // Every acknowledged write reads back linearizably, the walk going through the new
    // scope(s).
    client.clear_cache();
    for (name, expected) in &acked {
        common::reads_back(&client, name, expected).await;
    }
    // Every member of each scope under /shop/eu (it may have split again by range: no
    // child label dominates it) ends with the same records, and together they hold every
    // acknowledged name under /shop/eu once.
    let under_eu: Vec<&String> = acked
        .keys()
        .filter(|n| n.starts_with("/shop/eu/"))
        .collect();
    let mut scopes = BTreeMap::new();
    for name in &under_eu {
        let info = client
            .scope_info(&Name::parse(name).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        scopes.insert(info.descriptor.id, info.descriptor);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut agreed = true;
        let mut held = 0;
        for d in scopes.values() {
            let copies: Vec<Vec<(Name, proto::RecordSet)>> = anchors
                .iter()
                .filter_map(|a| a.replicas().into_iter().find(|r| r.id == d.id))
                .map(|r| r.state.records_in(&d.prefix, &d.range).unwrap())
                .collect();
            agreed &= copies.len() == 3 && copies.iter().all(|c| c == &copies[0]);
            held += copies.first().map_or(0, Vec::len);
        }
        if agreed && held == under_eu.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the members of the scopes under /shop/eu differ, or hold {held} of {} names",
            under_eu.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} writes in {wrote_s:.1} s, two splits, all read back; total {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f32()
    );
    for a in &anchors {
        a.shutdown().await;
    }
}

//! Three in-process anchors whose root policy allows automatic splits at a low name limit,
//! and a flat keyspace (`/users/u000`, `/users/u001`, ...): the root splits `/users` off
//! (one child label holds nearly every name), then `/users`, which no child label
//! dominates, splits by range at its median, and its halves split again as they grow, all
//! by themselves onto the same anchors. Every acknowledged write reads back linearizably
//! through a resolver client whose walk follows range referrals, during the splits and after,
//! and every member of each range scope ends with the same records.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use proto::{Name, ScopeId};
use resolver::{Client, ClientConfig};

/// The root's `[split] names_max`: low, so a few dozen names split it.
const NAMES_MAX: u32 = 16;
/// Names written under `/users`.
const NAMES: usize = 4 * NAMES_MAX as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_scope_splits_by_range_by_itself_and_loses_no_write() {
    tokio::time::timeout(Duration::from_secs(150), run())
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
    let writer = SigningKey::from_bytes(&[9; 32]);

    let started = Instant::now();
    let mut acked: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let names: Vec<String> = (0..NAMES).map(|i| format!("/users/u{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        let value = format!("v{i}");
        let version = common::put_until_acked(&client, name, &value, &writer).await;
        acked.insert(name.clone(), (version, value));
        // An earlier name reads back right away, whichever scope holds it now.
        let earlier = &names[i / 2];
        common::reads_back(&client, earlier, &acked[earlier]).await;
    }
    let wrote_s = started.elapsed().as_secs_f32();

    // The scopes that govern the names: /users split by range at least once, so at least
    // two scopes share the prefix /users, one of them a range that starts past the first
    // name; each lives on the three anchors.
    let deadline = Instant::now() + Duration::from_secs(40);
    let scopes = loop {
        let mut scopes: BTreeMap<ScopeId, proto::ScopeDescriptor> = BTreeMap::new();
        for name in &names {
            let n = Name::parse(name).unwrap();
            if let Ok(info) = client.scope_info(&n).await {
                if info.active {
                    scopes.insert(info.descriptor.id, info.descriptor);
                }
            }
        }
        let ranges = scopes
            .values()
            .filter(|d| d.prefix.to_string() == "/users" && d.range.start.is_some())
            .count();
        if ranges >= 1 {
            break scopes;
        }
        if Instant::now() >= deadline {
            let info = client.scope_info(&Name::parse("/users").unwrap()).await;
            panic!("no range of /users became a scope of its own: {scopes:?}; /users: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut ours: Vec<String> = anchors.iter().map(|a| a.info().peer_id).collect();
    ours.sort();
    for d in scopes.values() {
        assert_eq!(d.prefix.to_string(), "/users", "{d:?}");
        let mut members: Vec<String> = d.members.iter().map(|m| m.peer_id.clone()).collect();
        members.sort();
        assert_eq!(members, ours, "a split-off scope lives on the same anchors");
    }
    let splits: u64 = anchors
        .iter()
        .map(|a| {
            a.metrics()
                .splits
                .with_label_values(&["range", "size", "split"])
                .get()
        })
        .sum();
    assert!(splits >= 1, "anchorage_splits_total counts the range split");

    // Every range takes writes.
    for d in scopes.values() {
        let first = d
            .range
            .start
            .as_ref()
            .map_or("/users/a".into(), |s| s.to_string());
        let name = format!("{first}-after");
        let version = common::put_until_acked(&client, &name, "after", &writer).await;
        acked.insert(name, (version, "after".to_string()));
    }

    // Every acknowledged write reads back linearizably, from a cold client too (its walk
    // goes root -> /users -> range).
    client.clear_cache();
    for (name, expected) in &acked {
        common::reads_back(&client, name, expected).await;
    }
    let cold = Client::connect_str(&trust, ClientConfig::default())
        .await
        .unwrap();
    for (name, expected) in &acked {
        common::reads_back(&cold, name, expected).await;
    }

    // Every member of each scope ends with the same records, and the scopes' records
    // together are exactly the acknowledged names, each held once. (The scopes may still be
    // splitting: the set is read again each round, from the first anchor's replicas.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let users = Name::parse("/users").unwrap();
    loop {
        let mut agreed = true;
        let mut held: BTreeMap<String, usize> = BTreeMap::new();
        let now: Vec<proto::ScopeDescriptor> = anchors[0]
            .replicas()
            .into_iter()
            .map(|r| r.descriptor.clone())
            .filter(|d| d.prefix == users)
            .collect();
        for d in &now {
            let copies: Vec<Vec<(Name, proto::RecordSet)>> = anchors
                .iter()
                .filter_map(|a| a.replicas().into_iter().find(|r| r.id == d.id))
                .map(|r| r.state.records_in(&d.prefix, &d.range).unwrap())
                .collect();
            agreed &= copies.len() == 3 && copies.iter().all(|c| c == &copies[0]);
            for (n, _) in copies.first().into_iter().flatten() {
                *held.entry(n.to_string()).or_default() += 1;
            }
        }
        let exact = held.len() == acked.len() && held.values().all(|c| *c == 1);
        if agreed && exact {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members disagree or names are held twice or not at all ({} scopes): {held:?}",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} writes in {wrote_s:.1} s, {} scopes under /users ({splits} range splits), all read back; total {:.1} s",
        acked.len(),
        scopes.len(),
        started.elapsed().as_secs_f32()
    );
    for a in &anchors {
        a.shutdown().await;
    }
}

//! Three in-process anchors whose root policy allows automatic splits and merges at low
//! limits: names written under `/shop/eu` make the root split `/shop` off and `/shop` split
//! `/shop/eu` off; then most names are deleted, and both children merge back by themselves
//! (`/shop/eu` into `/shop`, then `/shop` into the root). Throughout, a reader resolving
//! names that always exist never sees a not-found, and a writer rewriting them reads every
//! acknowledged write back linearizably; at the end every member holds the same records in
//! the root and hosts no other scope.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchor::Anchor;
use ed25519_dalek::SigningKey;
use proto::{Name, ReadLevel, Record, ScopeId};
use resolver::{Client, ClientConfig, Error};

/// The root's `[split] names_max`: low, so a few dozen names split it.
const NAMES_MAX: u32 = 24;
/// The root's `[merge] names_min`.
const NAMES_MIN: u32 = 8;
/// Names written under `/shop/eu` at first: with [`SHOP_OTHER`] under `/shop/x` and two
/// under `/other`, the root and then `/shop` exceed [`NAMES_MAX`] and split their dominant
/// child off, while `/shop/eu` itself stays under the limit (it would split by range).
const NAMES: usize = 20;
/// Names written under `/shop/x`, deleted with the others.
const SHOP_OTHER: usize = 6;
/// Names under `/shop/eu` never deleted (the reader's and the writer's).
const KEPT: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_children_merge_back_by_themselves_and_lose_no_write() {
    tokio::time::timeout(Duration::from_secs(170), run())
        .await
        .expect("the test finished in time");
}

fn kept() -> Vec<String> {
    std::iter::once("/other/a".to_string())
        .chain((0..KEPT).map(|i| format!("/shop/eu/n{i:03}")))
        .collect()
}

async fn run() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let policy = common::merge_policy(NAMES_MAX, NAMES_MIN, 2);
    let (anchors, addrs) =
        common::root_with(dir.path(), &policy, |cfg| cfg.load.peak_window_s = 6).await;
    let trust: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let connect = || Client::connect_str(&trust, ClientConfig::default());
    let client = connect().await.unwrap();
    let writer = SigningKey::from_bytes(&[9; 32]);

    // Phase 1: enough names under /shop/eu for two splits.
    let started = Instant::now();
    let acked: Arc<Mutex<BTreeMap<String, (u64, String)>>> = Default::default();
    let names: Vec<String> = ["/other/a", "/other/b"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..SHOP_OTHER).map(|i| format!("/shop/x/m{i}")))
        .chain((0..NAMES).map(|i| format!("/shop/eu/n{i:03}")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let version = put_until_acked(&client, name, &format!("v{i}"), &writer).await;
        acked
            .lock()
            .unwrap()
            .insert(name.clone(), (version, format!("v{i}")));
    }
    let eu = Name::parse("/shop/eu/n000").unwrap();
    common::wait_for(Duration::from_secs(40), "/shop/eu split off", || async {
        matches!(client.scope_info(&eu).await, Ok(info)
            if info.descriptor.prefix.to_string() == "/shop/eu" && info.active)
    })
    .await;
    assert_eq!(
        hosted(&anchors),
        3 * 3,
        "root, /shop and /shop/eu on each anchor"
    );
    // `scope show` of /shop says why /shop/eu does not merge back yet.
    let shop = client
        .scope_info(&Name::parse("/shop").unwrap())
        .await
        .unwrap();
    let merges = shop.split.map(|v| v.merges).unwrap_or_default();
    assert!(
        merges
            .iter()
            .any(|m| m.starts_with("/shop/eu: stay: ") && m.contains("names")),
        "{merges:?}"
    );
    eprintln!("split in {:.1} s", started.elapsed().as_secs_f32());

    // Phase 2: a reader and a writer on the kept names, through the merges.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let read_errors: Arc<Mutex<Vec<String>>> = Default::default();
    let reader = tokio::spawn({
        let (client, stop, reads, errors) = (
            connect().await.unwrap(),
            stop.clone(),
            reads.clone(),
            read_errors.clone(),
        );
        async move {
            while !stop.load(Ordering::Relaxed) {
                for name in kept() {
                    let parsed = Name::parse(&name).unwrap();
                    let (result, trace) = client
                        .resolve_traced(&parsed, ReadLevel::Linearizable)
                        .await;
                    match result {
                        Ok(_) => {}
                        Err(e @ Error::NotFound { .. }) => errors
                            .lock()
                            .unwrap()
                            .push(format!("NOT FOUND {name}: {e}; hops {:?}", trace.hops)),
                        Err(e) => errors
                            .lock()
                            .unwrap()
                            .push(format!("{name}: {e}; hops {:?}", trace.hops)),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let writes = Arc::new(AtomicU64::new(0));
    let stall_ms = Arc::new(AtomicU64::new(0));
    let rewriter = tokio::spawn({
        let (client, stop, acked, writes, stall_ms) = (
            connect().await.unwrap(),
            stop.clone(),
            acked.clone(),
            writes.clone(),
            stall_ms.clone(),
        );
        let writer = writer.clone();
        async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for name in kept() {
                    let value = format!("w{round}");
                    let put_at = Instant::now();
                    let version = put_until_acked(&client, &name, &value, &writer).await;
                    stall_ms.fetch_max(put_at.elapsed().as_millis() as u64, Ordering::Relaxed);
                    // Read back at once, linearizably: the acknowledged write, no older one.
                    let set = client
                        .resolve(&name, ReadLevel::Linearizable)
                        .await
                        .unwrap_or_else(|e| panic!("{name} after its write: {e}"));
                    assert_eq!(set.version, version, "{name} reads back its last write");
                    acked.lock().unwrap().insert(name, (version, value));
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    });

    // Phase 3: delete the other names under /shop: both children are small now.
    let doomed = (KEPT..NAMES)
        .map(|i| format!("/shop/eu/n{i:03}"))
        .chain((0..SHOP_OTHER).map(|i| format!("/shop/x/m{i}")));
    for name in doomed {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.delete(&name, &writer).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{name} never deleted: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        acked.lock().unwrap().remove(&name);
    }
    let deleted_at = Instant::now();

    // Phase 4: both children merge back; every anchor ends with the root alone.
    common::wait_for(
        Duration::from_secs(100),
        "both children merged back",
        || {
            let anchors = &anchors;
            async move {
                hosted(anchors) == 3
                    && anchors.iter().all(|a| {
                        a.replicas()
                            .iter()
                            .all(|r| r.state.view().delegations.is_empty())
                    })
            }
        },
    )
    .await;
    let merged_s = deleted_at.elapsed().as_secs_f32();
    // Keep reading and writing a moment after the last removal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    rewriter.await.unwrap();

    let errors = read_errors.lock().unwrap().clone();
    let not_found: Vec<&String> = errors
        .iter()
        .filter(|e| e.starts_with("NOT FOUND"))
        .collect();
    assert!(
        not_found.is_empty(),
        "a kept name was not found: {not_found:?}"
    );
    assert!(errors.is_empty(), "reads failed: {errors:?}");
    let merged: u64 = anchors
        .iter()
        .map(|a| a.metrics().merges.with_label_values(&["merged"]).get())
        .sum();
    assert_eq!(merged, 2, "anchorage_merges_total counts both merges");

    // Every acknowledged write reads back linearizably through a fresh client.
    let fresh = connect().await.unwrap();
    let acked = acked.lock().unwrap().clone();
    for (name, (version, value)) in &acked {
        let set = fresh
            .resolve(name, ReadLevel::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(set.version, *version, "{name}");
        assert_eq!(set.records, vec![Record::Text(value.clone())], "{name}");
    }
    match fresh
        .resolve("/shop/eu/n050", ReadLevel::Linearizable)
        .await
    {
        Err(Error::NotFound { .. }) => {}
        other => panic!("a deleted name resolves: {other:?}"),
    }
    // Every member ends with the same records, all in the root, and no other scope.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: Vec<Vec<(Name, proto::RecordSet)>> = anchors
            .iter()
            .filter_map(|a| a.replicas().into_iter().find(|r| r.id == ScopeId::root()))
            .map(|r| {
                r.state
                    .records_in(&Name::root(), &proto::KeyRange::all())
                    .unwrap()
            })
            .collect();
        let same = held.len() == 3 && held.iter().all(|h| h == &held[0]);
        if same && held[0].len() == acked.len() {
            let names: Vec<String> = held[0].iter().map(|(n, _)| n.to_string()).collect();
            let want: Vec<String> = acked.keys().cloned().collect();
            assert_eq!(names, want, "the root holds exactly the live names");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the members' roots differ: {:?}",
            held.iter().map(Vec::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "merged back {merged_s:.1} s after the deletes; {} reads and {} writes meanwhile (longest write {} ms), 0 lost; total {:.1} s",
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
        stall_ms.load(Ordering::Relaxed),
        started.elapsed().as_secs_f32()
    );
    for a in &anchors {
        a.shutdown().await;
    }
}

/// Scope replicas hosted on all anchors.
fn hosted(anchors: &[Anchor]) -> usize {
    anchors.iter().map(|a| a.replicas().len()).sum()
}

/// Puts `value` at `name` until a write is acknowledged; returns its version.
async fn put_until_acked(client: &Client, name: &str, value: &str, key: &SigningKey) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .put(name, vec![Record::Text(value.to_string())], 300, key)
            .await
        {
            Ok(version) => return version,
            // Not acknowledged: only acknowledged writes are held to account, and the same
            // value is written again.
            Err(e) => {
                assert!(Instant::now() < deadline, "{name} never committed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

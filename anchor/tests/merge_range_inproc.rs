//! Ranges merge back by themselves. Three in-process anchors whose root policy allows
//! automatic splits and merges at low limits, and a flat keyspace (`/users/u000`, ...): the
//! root splits `/users` off, `/users` splits by range, and the root learns the range. Then
//! most names are deleted: the right range merges back into the left one, and `/users`
//! into the root. Throughout, cold clients (each walk from the trust anchors, through the
//! root's learned range while it is stale) resolve the kept names without an error, and a
//! watch of `/users` started before the first write ends with exactly the live names; at
//! the end every acknowledged write reads back and every member hosts the root alone.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::put_until_acked;
use ed25519_dalek::SigningKey;
use proto::{Name, ReadLevel, Record, RecordSet};
use resolver::{Client, ClientConfig, WatchEvent};

/// The root's `[split] names_max`.
const NAMES_MAX: u32 = 16;
/// The root's `[merge] names_min`.
const NAMES_MIN: u32 = 6;
/// Names written at first: the root splits `/users` off, `/users` splits by range.
const NAMES: usize = 30;
/// Names kept at each end of the keyspace (one range each).
const KEPT: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_merge_back_by_themselves_and_cold_walks_and_watches_stay_right() {
    tokio::time::timeout(Duration::from_secs(170), run())
        .await
        .expect("the test finished in time");
}

fn user(i: usize) -> String {
    format!("/users/u{i:03}")
}

fn kept() -> Vec<String> {
    (0..KEPT).chain(NAMES - KEPT..NAMES).map(user).collect()
}

/// What the watch delivered, applied in arrival order: name → record set.
type Cache = Arc<Mutex<BTreeMap<String, Option<RecordSet>>>>;

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

    let cache: Cache = Default::default();
    let watch = client.watch("/users").await.unwrap();
    let watcher = tokio::spawn(drain(watch, cache.clone()));

    // Phase 1: the names; the root splits /users off and /users splits by range.
    let started = Instant::now();
    let acked: Arc<Mutex<BTreeMap<String, (u64, String)>>> = Default::default();
    for i in 0..NAMES {
        let value = format!("v{i}");
        let version = put_until_acked(&client, &user(i), &value, &writer).await;
        acked.lock().unwrap().insert(user(i), (version, value));
    }
    let last = Name::parse(&user(NAMES - 1)).unwrap();
    common::wait_for(Duration::from_secs(60), "/users split by range", || async {
        matches!(client.scope_info(&last).await, Ok(info)
            if info.descriptor.range.is_bounded() && info.active)
    })
    .await;
    common::wait_for(
        Duration::from_secs(30),
        "the root learned the range",
        || {
            let anchors = &anchors;
            async move {
                anchors.iter().all(|a| {
                    a.replicas().iter().any(|r| {
                        r.id == proto::ScopeId::root()
                            && r.state
                                .view()
                                .delegations
                                .values()
                                .any(|d| matches!(d.state, proto::DelegationState::Learned { .. }))
                    })
                })
            }
        },
    )
    .await;
    eprintln!("split in {:.1} s", started.elapsed().as_secs_f32());

    // Phase 2: cold readers of the kept names, through the merges.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let read_errors: Arc<Mutex<Vec<String>>> = Default::default();
    let reader = tokio::spawn({
        let (trust, stop, reads, errors) = (
            addrs.clone(),
            stop.clone(),
            reads.clone(),
            read_errors.clone(),
        );
        async move {
            let trust: Vec<&str> = trust.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                // A new client each round: every read walks from the root.
                let cold = Client::connect_str(&trust, ClientConfig::default())
                    .await
                    .unwrap();
                for name in kept() {
                    let parsed = Name::parse(&name).unwrap();
                    let (result, trace) =
                        cold.resolve_traced(&parsed, ReadLevel::Linearizable).await;
                    if let Err(e) = result {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("{name}: {e}; hops {:?}", trace.hops));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    // Phase 3: delete the middle names; both ranges and /users are small now.
    for i in KEPT..NAMES - KEPT {
        let name = user(i);
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

    // Phase 4: the range merges into the left one, /users into the root.
    common::wait_for(Duration::from_secs(100), "everything merged back", || {
        let anchors = &anchors;
        async move {
            anchors.iter().all(|a| {
                let replicas = a.replicas();
                replicas.len() == 1 && replicas[0].state.view().delegations.is_empty()
            })
        }
    })
    .await;
    let merged_s = deleted_at.elapsed().as_secs_f32();
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let errors = read_errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "cold reads failed: {errors:?}");
    let merged: u64 = anchors
        .iter()
        .map(|a| a.metrics().merges.with_label_values(&["merged"]).get())
        .sum();
    assert_eq!(merged, 2, "the range merge and the subtree merge");

    // Every acknowledged write reads back through a fresh client, and the watch's view
    // comes to the same live names and record sets.
    let fresh = connect().await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let mut want = BTreeMap::new();
    for (name, (version, value)) in &acked {
        let set = fresh
            .resolve(name, ReadLevel::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(set.version, *version, "{name}");
        assert_eq!(set.records, vec![Record::Text(value.clone())], "{name}");
        want.insert(name.clone(), set.records);
    }
    common::wait_for(
        Duration::from_secs(20),
        "the watch saw the final state",
        || {
            let (cache, want) = (&cache, &want);
            async move { watched(cache) == *want }
        },
    )
    .await;
    watcher.abort();
    eprintln!(
        "merged back {merged_s:.1} s after the deletes; {} cold reads meanwhile, 0 failed; total {:.1} s",
        reads.load(Ordering::Relaxed),
        started.elapsed().as_secs_f32()
    );
    for a in &anchors {
        a.shutdown().await;
    }
}

/// Applies the watch's changes to `cache` in arrival order.
async fn drain(mut watch: resolver::Watch, cache: Cache) {
    while let Some(item) = watch.next().await {
        if let Ok(WatchEvent::Changed(e)) = item {
            cache.lock().unwrap().insert(e.name.to_string(), e.set);
        }
    }
}

/// The live names in the watch's view, with their records.
fn watched(cache: &Cache) -> BTreeMap<String, Vec<Record>> {
    cache
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(n, s)| s.as_ref().map(|s| (n.clone(), s.records.clone())))
        .collect()
}

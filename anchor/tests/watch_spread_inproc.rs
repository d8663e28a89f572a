//! Watches that follow their prefix across the scopes that come to govern parts of it.
//! Three in-process anchors whose root policy splits automatically at a low name limit and
//! a flat keyspace (`/users/u000`, ...), as in `split_range_inproc.rs`: the root splits
//! the subtree `/users` off, then `/users` splits by range, by themselves. Two watches run
//! from before the first write: one of `/` (which must follow the `/users` child, then the
//! ranges split off it) and one of `/users` (which moves to the `/users` scope, then
//! follows the ranges split off it). Each delivers every acknowledged put exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use resolver::{Client, ClientConfig, WatchEvent};

/// The root splits past this many names (and `/users` by range as it grows on).
const SPLIT_AT: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_follows_its_prefix_into_split_off_subtrees_and_ranges() {
    let bounded = tokio::time::timeout(Duration::from_secs(170), run());
    bounded.await.expect("the test finished in time");
}

/// What one watch delivered: each change as (name, version), and the scopes it followed.
#[derive(Debug, Default)]
struct Seen {
    changes: Vec<(String, u64)>,
    followed: Vec<String>,
    moved: usize,
    errors: usize,
}

/// Drains `watch` into a shared [`Seen`] until the returned task is stopped.
fn drain(mut watch: resolver::Watch) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = watch.next().await {
            let mut s = out.lock().unwrap();
            match item {
                Ok(WatchEvent::Changed(e)) => s.changes.push((e.name.to_string(), e.version)),
                Ok(WatchEvent::Followed(r)) => s.followed.push(format!("{} {}", r.prefix, r.range)),
                Ok(WatchEvent::Moved(_)) => s.moved += 1,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("watch error (retried): {e}");
                    s.errors += 1;
                }
            }
        }
    });
    (seen, task)
}

async fn run() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (anchors, addrs) = common::splitting_root(dir.path(), SPLIT_AT).await;
    let trust: Vec<&str> = addrs.iter().map(String::as_str).collect();
    // One client writes, another watches (its cache sees no write of its own).
    let connect = || Client::connect_str(&trust, ClientConfig::default());
    let (client, watcher) = (connect().await.unwrap(), connect().await.unwrap());
    let writer = SigningKey::from_bytes(&[9; 32]);

    let deadline = Instant::now() + Duration::from_secs(20);
    let (all, users) = loop {
        let started = async {
            Ok::<_, resolver::Error>((watcher.watch("/").await?, watcher.watch("/users").await?))
        };
        match started.await {
            Ok(w) => break w,
            Err(e) => {
                assert!(Instant::now() < deadline, "no watch started: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let ((all, all_task), (users, users_task)) = (drain(all), drain(users));

    let started = Instant::now();
    let mut acked: BTreeSet<(String, u64)> = BTreeSet::new();
    for i in 0..4 * SPLIT_AT as usize {
        let name = format!("/users/u{i:03}");
        let version = common::put_until_acked(&client, &name, &format!("v{i}"), &writer).await;
        acked.insert((name, version));
    }
    // One more write in every scope now under /users, after the splits.
    let deadline = Instant::now() + Duration::from_secs(40);
    let ranges = loop {
        let info = anchors[0].replicas();
        let ranges: Vec<proto::ScopeDescriptor> = info
            .iter()
            .map(|r| r.descriptor.clone())
            .filter(|d| d.prefix.to_string() == "/users")
            .collect();
        if ranges.iter().any(|d| d.range.start.is_some()) {
            break ranges;
        }
        assert!(
            Instant::now() < deadline,
            "/users never split by range: {ranges:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let firsts = ranges.iter().map(|d| d.range.start.clone());
    for name in firsts.map(|s| format!("{}-late", s.map_or("/users/a".into(), |s| s.to_string()))) {
        let version = common::put_until_acked(&client, &name, "late", &writer).await;
        acked.insert((name, version));
    }
    let wrote_s = started.elapsed().as_secs_f32();

    // Both watches deliver every acknowledged put, each once.
    let deadline = Instant::now() + Duration::from_secs(40);
    for (what, seen) in [("/", &all), ("/users", &users)] {
        loop {
            let (missing, twice, followed) = {
                let s = seen.lock().unwrap();
                let mut count: BTreeMap<&(String, u64), usize> = BTreeMap::new();
                for c in &s.changes {
                    *count.entry(c).or_default() += 1;
                }
                let missing: Vec<&(String, u64)> =
                    acked.iter().filter(|a| !count.contains_key(a)).collect();
                let twice: Vec<&(String, u64)> = count
                    .iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(c, _)| *c)
                    .collect();
                assert!(
                    twice.is_empty(),
                    "the watch of {what} delivered {twice:?} twice"
                );
                (
                    missing.len(),
                    format!("{:?}", missing.iter().take(5).collect::<Vec<_>>()),
                    s.followed.clone(),
                )
            };
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the watch of {what} misses {missing} acknowledged puts, e.g. {twice}; it follows {followed:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    {
        let a = all.lock().unwrap();
        let u = users.lock().unwrap();
        for (what, s) in [("/", &*a), ("/users", &*u)] {
            for (name, _) in &s.changes {
                assert!(name.starts_with("/users/"), "{what}: change to {name}");
            }
            assert!(
                s.followed.iter().any(|f| f.starts_with("/users [/users/")),
                "the watch of {what} followed a range of /users: {:?}",
                s.followed
            );
        }
        assert!(
            a.followed.iter().any(|f| f == "/users [all]"),
            "the watch of / followed the subtree /users: {:?}",
            a.followed
        );
        assert_eq!(a.moved, 0, "the watch of / never moves");
        assert_eq!(u.moved, 1, "the watch of /users moved to the /users scope");
        eprintln!(
            "{} writes in {wrote_s:.1} s; / saw {} changes following {:?} ({} errors); /users saw {} following {:?} ({} errors); total {:.1} s",
            acked.len(),
            a.changes.len(),
            a.followed,
            a.errors,
            u.changes.len(),
            u.followed,
            u.errors,
            started.elapsed().as_secs_f32()
        );
    }
    // The watches stop before the anchors do.
    all_task.abort();
    users_task.abort();
    for anchor in &anchors {
        anchor.shutdown().await;
    }
}

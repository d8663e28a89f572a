//! Three in-process anchors: the root splits `/users` off by itself, then `/users` splits by
//! range (and its ranges may split again). The splitting scope's leader pushes each range to
//! the root with the signed answers of a majority of its members, every root member checks
//! them and stores the range, and from then on a cold resolver walk to a name in a right
//! range takes as many hops as one to a name in the left range: root, then the scope that
//! governs the name.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use proto::msg::ScopeTarget;
use proto::{DelegationState, Name, ReadLevel, ScopeId};
use resolver::{Client, ClientConfig};

/// The root's `[split] names_max`.
const NAMES_MAX: u32 = 16;
/// Names written under `/users`.
const NAMES: usize = 3 * NAMES_MAX as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_walk_into_a_range_takes_no_extra_hop_once_the_root_learned_it() {
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
    let mut acked: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for i in 0..NAMES {
        let name = format!("/users/u{i:03}");
        let version = common::put_until_acked(&client, &name, "v", &writer).await;
        acked.insert(name, (version, "v".into()));
    }

    // Wait until /users has range scopes and the root, on every anchor, has learned each of
    // them; then a cold walk to the first name of each range takes two requests, as one to
    // the first name of the left scope does.
    let users = Name::parse("/users").unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    let ranges = loop {
        assert!(
            Instant::now() < deadline,
            "the root did not learn every range: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The range scopes of /users, as the first anchor hosts them, active.
        let ranges: BTreeMap<ScopeId, Name> = anchors[0]
            .replicas()
            .into_iter()
            .filter(|r| r.descriptor.prefix == users)
            .filter(|r| r.state.with_view(|v| v.active) == Some(true))
            .filter_map(|r| Some((r.id, r.descriptor.range.start.clone()?)))
            .collect();
        if ranges.is_empty() {
            last = "no range scope of /users yet".into();
            continue;
        }
        let learned_everywhere = anchors.iter().all(|a| {
            let Ok(info) = a.scope_info(&ScopeTarget::Id(ScopeId::root())) else {
                return false;
            };
            ranges.keys().all(|id| {
                info.delegations.iter().any(|d| {
                    d.referral.scope == *id && matches!(d.state, DelegationState::Learned { .. })
                })
            })
        });
        if !learned_everywhere {
            last = format!(
                "{} range scopes, not all learned by every root member",
                ranges.len()
            );
            continue;
        }
        break ranges;
    };

    let left = Name::parse("/users/u000").unwrap();
    let cold = Client::connect_str(&trust, ClientConfig::default())
        .await
        .unwrap();
    let (found, trace) = cold.resolve_traced(&left, ReadLevel::Replica).await;
    found.unwrap_or_else(|e| panic!("{left}: {e}"));
    let left_hops = trace.requests();
    assert_eq!(left_hops, 2, "root, then /users: {trace:?}");
    for (id, first) in &ranges {
        let name = acked
            .keys()
            .map(|n| Name::parse(n).unwrap())
            .find(|n| n >= first)
            .unwrap_or_else(|| first.clone());
        let cold = Client::connect_str(&trust, ClientConfig::default())
            .await
            .unwrap();
        let (found, trace) = cold.resolve_traced(&name, ReadLevel::Replica).await;
        let hops = trace.requests();
        eprintln!("{name} in range scope {id}: {hops} requests");
        assert_eq!(
            hops, left_hops,
            "a cold walk to {name} (range from {first}) takes as many requests as one to {left}: {trace:?}"
        );
        if acked.contains_key(&name.to_string()) {
            found.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    // Every acknowledged write reads back, from a cold client.
    let cold = Client::connect_str(&trust, ClientConfig::default())
        .await
        .unwrap();
    for (name, expected) in &acked {
        common::reads_back(&cold, name, expected).await;
    }
    let learned: u64 = anchors
        .iter()
        .map(|a| {
            a.metrics()
                .ranges_learned
                .with_label_values(&["learned"])
                .get()
        })
        .sum();
    assert!(
        learned >= ranges.len() as u64,
        "anchorage_ranges_learned_total counts them"
    );
    for a in &anchors {
        a.shutdown().await;
    }
}

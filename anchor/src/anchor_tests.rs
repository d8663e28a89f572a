//! One anchor in process, with a clock the test moves.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use proto::msg::{MutateRequest, MutateResponse};
use proto::{codec, Mutation, Name, Op, Record, ScopeDescriptor, ScopeId, SignedMutation};
use resolver::clock::ManualClock;
use resolver::net::Protocol;

use super::*;

/// 2001-09-09: long before any machine running this test.
const T0: u64 = 1_000_000_000_000;

async fn mutate(anchor: &Anchor, mutation: SignedMutation) -> MutateResponse {
    let req = MutateRequest {
        mutation,
        forwarded: false,
    };
    let peer: PeerId = anchor.info().peer_id.parse().unwrap();
    let answer = anchor
        .handle(peer, Protocol::Mutate, codec::encode(&req).unwrap())
        .await;
    codec::decode(&answer, 1 << 20).unwrap()
}

fn put(key: &SigningKey, expires_at_ms: u64) -> SignedMutation {
    let m = Mutation {
        op: Op::Put {
            name: Name::parse("/a").unwrap(),
            records: vec![Record::Text("x".into())],
            ttl_s: 60,
        },
        nonce: rand::random(),
        expires_at_ms,
    };
    SignedMutation::sign(&m, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_reads_wall_clock_time_from_the_clock_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AnchorConfig::new(dir.path());
    cfg.listen = "/ip4/127.0.0.1/tcp/0".into();
    cfg.raft.heartbeat_ms = 50;
    cfg.raft.election_min_ms = 300;
    cfg.raft.election_max_ms = 600;
    let clock = ManualClock::new(T0);
    let opts = StartOptions {
        clock: clock.clone(),
        ..StartOptions::default()
    };
    let anchor = Anchor::start_with(cfg, opts).await.unwrap();
    let root = ScopeDescriptor {
        id: ScopeId::root(),
        prefix: Name::root(),
        epoch: 1,
        members: vec![anchor.info()],
        range: proto::KeyRange::all(),
    };
    let policy = policy::Policy::development(None).to_toml();
    anchor.create_scope(root, policy, true).await.unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);

    // Long expired by the machine's clock, valid by the anchor's.
    let answer = mutate(&anchor, put(&key, T0 + 30_000)).await;
    assert!(
        matches!(answer, MutateResponse::Committed { .. }),
        "{answer:?}"
    );

    clock.advance(Duration::from_secs(60));
    let answer = mutate(&anchor, put(&key, T0 + 30_000)).await;
    assert!(
        matches!(answer, MutateResponse::Error(WireError::Expired { .. })),
        "{answer:?}"
    );
    anchor.shutdown().await;
}

/// One anchor with short timers (sleep after 200 ms idle; hibernate after
/// `hibernate_after_ms` asleep, the default if `None`) hosting the root scope, and the
/// root's replica.
async fn quick_sleeper(
    dir: &std::path::Path,
    hibernate_after_ms: Option<u64>,
) -> (Anchor, std::sync::Arc<Replica>) {
    let mut cfg = AnchorConfig::new(dir);
    cfg.raft.heartbeat_ms = 50;
    cfg.raft.election_min_ms = 300;
    cfg.raft.election_max_ms = 600;
    cfg.raft.quiesce_after_ms = 200;
    if let Some(ms) = hibernate_after_ms {
        cfg.raft.hibernate_after_ms = ms;
    }
    let opts = StartOptions {
        clock: ManualClock::new(T0),
        ..StartOptions::default()
    };
    let anchor = Anchor::start_with(cfg, opts).await.unwrap();
    let root = ScopeDescriptor {
        id: ScopeId::root(),
        prefix: Name::root(),
        epoch: 1,
        members: vec![anchor.info()],
        range: proto::KeyRange::all(),
    };
    let policy = policy::Policy::development(None).to_toml();
    anchor.create_scope(root, policy, true).await.unwrap();
    let replica = anchor.replicas().pop().unwrap();
    (anchor, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_scope_sleeps_and_a_write_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (anchor, replica) = quick_sleeper(dir.path(), None).await;
    let asleep = |r: &Replica| r.sleep.is_asleep();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !asleep(&replica) {
        assert!(std::time::Instant::now() < deadline, "never fell asleep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = SigningKey::from_bytes(&[7; 32]);
    let answer = mutate(&anchor, put(&key, T0 + 30_000)).await;
    assert!(
        matches!(answer, MutateResponse::Committed { .. }),
        "{answer:?}"
    );
    let wakes = anchor
        .metrics()
        .scope_wakes
        .with_label_values(&["write"])
        .get();
    assert_eq!(wakes, 1);
    // Kept awake, it does not fall asleep again; released, it does.
    let guard = replica.keep_awake().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!asleep(&replica), "slept while kept awake");
    drop(guard);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !asleep(&replica) {
        assert!(
            std::time::Instant::now() < deadline,
            "never fell asleep again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anchor.shutdown().await;
}

/// Resolves `/a` linearizably at `anchor`.
async fn resolve_a(anchor: &Anchor) -> proto::msg::Answer {
    let req = proto::msg::ResolveRequest {
        name: Name::parse("/a").unwrap(),
        level: proto::ReadLevel::Linearizable,
        scope: ScopeId::root(),
    };
    let peer: PeerId = anchor.info().peer_id.parse().unwrap();
    let bytes = anchor
        .handle(peer, Protocol::Resolve, codec::encode(&req).unwrap())
        .await;
    match codec::decode(&bytes, 1 << 20).unwrap() {
        proto::msg::ResolveResponse::Signed(s) => codec::decode(&s.body, 1 << 20).unwrap(),
        other => panic!("resolve /a: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_scope_reopens_for_a_write_and_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let (anchor, replica) = quick_sleeper(dir.path(), Some(300)).await;
    let me = replica.metrics().borrow().id;
    let wait_hibernated = |what: &'static str| {
        let replica = replica.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !replica.is_hibernated() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_hibernated("never hibernated").await;
    // Hibernated: no group runs, but what the anchor knows of it stays.
    assert!(replica.raft().is_none());
    assert!(replica.sleep.is_asleep());
    assert!(replica.led_by(me), "the frozen metrics still say who leads");
    let term = replica.metrics().borrow().current_term;

    let key = SigningKey::from_bytes(&[7; 32]);
    let answer = mutate(&anchor, put(&key, T0 + 30_000)).await;
    let MutateResponse::Committed { version, .. } = answer else {
        panic!("write to a hibernated scope: {answer:?}");
    };
    assert!(replica.raft().is_some(), "the write reopened the group");
    assert_eq!(
        replica.metrics().borrow().current_term,
        term,
        "reopened as leader, with no election"
    );
    let reopened = || {
        anchor
            .metrics()
            .scope_hibernations
            .with_label_values(&["reopened"])
            .get()
    };
    assert_eq!(reopened(), 1);

    // Hibernated again, a linearizable read reopens it and sees the write.
    wait_hibernated("never hibernated again").await;
    match resolve_a(&anchor).await {
        proto::msg::Answer::Found { set, .. } => assert_eq!(set.version, version),
        other => panic!("read of a hibernated scope: {other:?}"),
    }
    assert_eq!(reopened(), 2);
    assert!(
        anchor
            .metrics()
            .scope_hibernations
            .with_label_values(&["hibernated"])
            .get()
            >= 2
    );
    anchor.shutdown().await;
}

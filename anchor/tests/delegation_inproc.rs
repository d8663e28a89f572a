//! In-process anchors on loopback: a delegation moves a prefix to a child scope on other
//! anchors, the parent refers to it, the child takes writes with versions above the
//! delegation index, and a watch follows the prefix across the move. Talks raw frames (no
//! resolver client) so it checks the anchor's side of the protocol alone.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anchor::Anchor;
use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use proto::msg::{
    AdminRequest, AdminResponse, Answer, MutateRequest, MutateResponse, ResolveRequest,
    ResolveResponse, ScopeInfo, ScopeTarget, WatchRequest, WatchResponse,
};
use proto::{
    codec, AnchorInfo, DelegationState, MemberSpec, Mutation, Name, Op, ReadLevel, Record, ScopeId,
    SignedMutation, WireError,
};
use resolver::clock;
use resolver::net::{self, NetConfig, NetHandle, Protocol};

struct Net {
    net: NetHandle,
}

impl Net {
    async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        a: &Anchor,
        protocol: Protocol,
        req: &Req,
    ) -> Resp {
        let info = a.info();
        let peer: PeerId = info.peer_id.parse().unwrap();
        let addrs: Vec<Multiaddr> = info.addrs.iter().map(|s| s.parse().unwrap()).collect();
        let bytes = codec::encode(req).unwrap();
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            self.net.request(peer, addrs, protocol, bytes),
        )
        .await
        .expect("answer in time")
        .expect("request delivered");
        codec::decode(&reply, 1 << 20).unwrap()
    }

    async fn mutate(&self, a: &Anchor, op: Op, keys: &[&SigningKey]) -> MutateResponse {
        self.send(a, sign(op, keys)).await
    }

    async fn send(&self, a: &Anchor, mutation: SignedMutation) -> MutateResponse {
        let req = MutateRequest {
            mutation,
            forwarded: false,
        };
        self.call(a, Protocol::Mutate, &req).await
    }

    async fn resolve(&self, a: &Anchor, scope: ScopeId, name: &str) -> Result<Answer, WireError> {
        let req = ResolveRequest {
            name: Name::parse(name).unwrap(),
            level: ReadLevel::Replica,
            scope,
        };
        match self.call(a, Protocol::Resolve, &req).await {
            ResolveResponse::Signed(s) => Ok(codec::decode(&s.body, 1 << 20).unwrap()),
            ResolveResponse::Error(e) => Err(e),
        }
    }

    async fn info(&self, a: &Anchor, target: ScopeTarget) -> Option<ScopeInfo> {
        match self
            .call(a, Protocol::Admin, &AdminRequest::ScopeInfo { target })
            .await
        {
            AdminResponse::Scope(info) => Some(*info),
            _ => None,
        }
    }
}

fn sign(op: Op, keys: &[&SigningKey]) -> SignedMutation {
    let m = Mutation {
        op,
        nonce: rand::random(),
        expires_at_ms: clock::system().unix_ms() + 60_000,
    };
    let mut signed = SignedMutation::sign(&m, keys[0]).unwrap();
    for k in &keys[1..] {
        signed.add_signature(k);
    }
    signed
}

fn put(name: &str, text: &str) -> Op {
    Op::Put {
        name: Name::parse(name).unwrap(),
        records: vec![Record::Text(text.into())],
        ttl_s: 60,
    }
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_moves_a_prefix_to_a_child_scope() {
    tokio::time::timeout(Duration::from_secs(90), run())
        .await
        .expect("the test finished in time");
}

async fn run() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut anchors = Vec::new();
    for i in 0..5 {
        let mut cfg = common::fast_config(dir.path(), i);
        if i >= 2 {
            cfg.labels = BTreeMap::from([("jurisdiction".into(), "eu".into())]);
        }
        anchors.push(Anchor::start(cfg).await.unwrap());
    }
    let admin = SigningKey::from_bytes(&[7; 32]);
    let admin_pub = policy::PublicKey::from_bytes(&admin.verifying_key().to_bytes()).unwrap();
    let root_addrs: Vec<Multiaddr> = anchors[..3]
        .iter()
        .map(|a| a.dial_addr().parse().unwrap())
        .collect();
    let root_policy = policy::Policy::development(Some(admin_pub));
    anchor::operator::init_root(&root_addrs, root_policy.to_toml())
        .await
        .unwrap();
    let (handle, _) = net::spawn(NetConfig::client()).unwrap();
    let n = Net { net: handle };
    let writer = SigningKey::from_bytes(&[8; 32]);
    let root = ScopeId::root();

    // Names under /eu and elsewhere, in the root scope.
    let committed = |r: MutateResponse| match r {
        MutateResponse::Committed { version, .. } => version,
        other => panic!("not committed: {other:?}"),
    };
    let mut v_a = 0;
    let first_put = sign(put("/eu/a", "one"), &[&writer]);
    for _ in 0..20 {
        let r = n.send(&anchors[0], first_put.clone()).await;
        match r {
            MutateResponse::Committed { version, .. } => {
                v_a = version;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(v_a > 0, "the root scope took a write");
    committed(
        n.mutate(&anchors[1], put("/eu/b/c", "two"), &[&writer])
            .await,
    );
    committed(
        n.mutate(&anchors[1], put("/us/x", "three"), &[&writer])
            .await,
    );

    // A watch on /eu in the root scope, from now.
    let start: WatchResponse = n
        .call(
            &anchors[0],
            Protocol::Watch,
            &WatchRequest {
                scope: root,
                prefix: Name::parse("/eu").unwrap(),
                after: None,
                wait_ms: 0,
                children: None,
            },
        )
        .await;
    let WatchResponse::Changes {
        up_to: watch_from, ..
    } = start
    else {
        panic!("{start:?}")
    };

    // Placement: an anchor without jurisdiction=eu cannot be a member.
    let eu_policy = "[placement]\nreplicas = 3\n[placement.labels]\njurisdiction = \"eu\"\n\
                     [[writers]]\npattern = \"/eu/**\"\nops = [\"put\", \"delete\", \"cas\"]\nkeys = [\"*\"]\n";
    let member = |i: usize| MemberSpec {
        anchor: AnchorInfo {
            peer_id: anchors[i].info().peer_id,
            addrs: anchors[i].info().addrs,
        },
        labels: anchors[i].status().labels,
    };
    let bad = Op::Delegate {
        prefix: Name::parse("/eu").unwrap(),
        members: vec![member(1), member(3), member(4)],
        policy_toml: eu_policy.into(),
        referral_ttl_s: 600,
    };
    match n.mutate(&anchors[0], bad, &[&admin]).await {
        MutateResponse::Error(WireError::Denied { reason }) => {
            assert!(reason.contains("jurisdiction"), "{reason}")
        }
        other => panic!("placement not enforced: {other:?}"),
    }

    // Delegate /eu to anchors 2, 3, 4 (anchor 2 is in both scopes).
    let op = Op::Delegate {
        prefix: Name::parse("/eu").unwrap(),
        members: vec![member(2), member(3), member(4)],
        policy_toml: eu_policy.into(),
        referral_ttl_s: 600,
    };
    let d_index = committed(n.mutate(&anchors[0], op, &[&admin]).await);
    let child = ScopeId::child(&root, &Name::parse("/eu").unwrap(), d_index);

    // Until the hand-over completes, reads keep answering from the parent.
    wait_until(
        "the delegation to become active",
        Duration::from_secs(30),
        || async {
            let info = n.info(&anchors[0], ScopeTarget::Id(root)).await;
            info.is_some_and(|i| {
                i.delegations
                    .iter()
                    .any(|d| d.referral.scope == child && d.state == DelegationState::Active)
            })
        },
    )
    .await;

    // The parent refers; the child answers with the same record set.
    let a0 = n.resolve(&anchors[0], root, "/eu/a").await.unwrap();
    let Answer::Referral { referral, .. } = a0 else {
        panic!("parent did not refer: {a0:?}")
    };
    assert_eq!(referral.scope, child);
    assert_eq!(referral.members.len(), 3);
    for (i, member) in anchors.iter().enumerate().skip(2) {
        let a = n.resolve(member, child, "/eu/a").await.unwrap();
        let Answer::Found { set, .. } = a else {
            panic!("child member {i} does not hold /eu/a: {a:?}")
        };
        assert_eq!(set.version, v_a, "the version survives the move");
    }
    // The child refuses a replay of a mutation the parent applied before the move.
    match n.send(&anchors[3], first_put.clone()).await {
        MutateResponse::Error(WireError::Replayed { .. }) => {}
        other => panic!("a replay at the child was not refused: {other:?}"),
    }
    // The parent no longer holds the moved names, and keeps the others.
    assert!(matches!(
        n.resolve(&anchors[1], root, "/us/x").await,
        Ok(Answer::Found { .. })
    ));

    // Writes: the parent says where to go; the child takes them once active, with
    // versions above the delegation index.
    match n.mutate(&anchors[0], put("/eu/a", "new"), &[&writer]).await {
        MutateResponse::Error(WireError::Delegated { referral, .. }) => {
            assert_eq!(referral.scope, child)
        }
        // Anchor 0 is not a child member; anything else is wrong.
        other => panic!("expected Delegated, got {other:?}"),
    }
    let mut v_new = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while v_new == 0 {
        assert!(Instant::now() < deadline, "the child took no write");
        match n.mutate(&anchors[3], put("/eu/a", "new"), &[&writer]).await {
            MutateResponse::Committed { version, .. } => v_new = version,
            MutateResponse::Error(WireError::Moving { .. })
            | MutateResponse::Error(WireError::Unavailable { .. })
            | MutateResponse::Error(WireError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        v_new > d_index,
        "child version {v_new} above the delegation index {d_index}"
    );

    // A watch that started in the parent follows the prefix to the child with no gap.
    let mut after = watch_from;
    let mut scope = root;
    let mut at = 0usize;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|(name, v): &(String, u64)| name == "/eu/a" && *v == v_new)
    {
        assert!(
            Instant::now() < deadline,
            "watch did not deliver the child's write: {seen:?}"
        );
        let req = WatchRequest {
            scope,
            prefix: Name::parse("/eu").unwrap(),
            after: Some(after),
            wait_ms: 1000,
            children: None,
        };
        match n.call(&anchors[at], Protocol::Watch, &req).await {
            WatchResponse::Changes { events, up_to, .. } => {
                for e in events {
                    assert!(e.version > after);
                    seen.push((e.name.to_string(), e.version));
                }
                after = up_to;
            }
            WatchResponse::Referral(r) => {
                scope = r.scope;
                at = 3;
            }
            other => panic!("watch: {other:?}"),
        }
    }
    assert_eq!(scope, child, "the watch moved to the child");
    // Nothing changed under /eu in the parent between the start and the move.
    assert!(seen.iter().all(|(_, v)| *v > d_index), "{seen:?}");

    for a in &anchors {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_the_seeding_joins_by_snapshot() {
    tokio::time::timeout(Duration::from_secs(120), run_straggler())
        .await
        .expect("the test finished in time");
}

async fn run_straggler() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfgs = Vec::new();
    let mut anchors = Vec::new();
    for i in 0..4 {
        let cfg = common::fast_config(dir.path(), i);
        anchors.push(Anchor::start(cfg.clone()).await.unwrap());
        cfgs.push(cfg);
    }
    let admin = SigningKey::from_bytes(&[7; 32]);
    let admin_pub = policy::PublicKey::from_bytes(&admin.verifying_key().to_bytes()).unwrap();
    let root_addrs: Vec<Multiaddr> = anchors[..1]
        .iter()
        .map(|a| a.dial_addr().parse().unwrap())
        .collect();
    anchor::operator::init_root(
        &root_addrs,
        policy::Policy::development(Some(admin_pub)).to_toml(),
    )
    .await
    .unwrap();
    let (handle, _) = net::spawn(NetConfig::client()).unwrap();
    let n = Net { net: handle };
    let writer = SigningKey::from_bytes(&[8; 32]);
    let root = ScopeId::root();
    let mut v = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while v == 0 {
        assert!(Instant::now() < deadline, "no root leader");
        if let MutateResponse::Committed { version, .. } =
            n.mutate(&anchors[0], put("/eu/a", "one"), &[&writer]).await
        {
            v = version;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let member = |a: &Anchor| MemberSpec {
        anchor: a.info(),
        labels: BTreeMap::new(),
    };
    let members = vec![
        member(&anchors[1]),
        member(&anchors[2]),
        member(&anchors[3]),
    ];
    // Anchor 3 is down while the parent seeds the child.
    anchors[3].shutdown().await;
    let op = Op::Delegate {
        prefix: Name::parse("/eu").unwrap(),
        members,
        policy_toml: "[placement]\nreplicas = 3\n[[writers]]\npattern = \"/eu/**\"\nops = [\"put\"]\nkeys = [\"*\"]\n".into(),
        referral_ttl_s: 600,
    };
    let d_index = match n.mutate(&anchors[0], op, &[&admin]).await {
        MutateResponse::Committed { version, .. } => version,
        other => panic!("{other:?}"),
    };
    let child = ScopeId::child(&root, &Name::parse("/eu").unwrap(), d_index);
    // After the grace period the parent hands over with two of three members seeded.
    wait_until(
        "a hand-over with a majority",
        Duration::from_secs(40),
        || async {
            n.info(&anchors[0], ScopeTarget::Id(root))
                .await
                .is_some_and(|i| {
                    i.delegations
                        .iter()
                        .any(|d| d.referral.scope == child && d.state == DelegationState::Active)
                })
        },
    )
    .await;
    // The missing member comes back, is offered to join, and catches up by snapshot.
    // It comes back with its identity on an empty disk (the old process may still hold the
    // old database's lock in this test's process).
    let mut cfg = cfgs[3].clone();
    cfg.data_dir = dir.path().join("a3-again");
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    std::fs::copy(
        cfgs[3].data_dir.join("identity.key"),
        cfg.data_dir.join("identity.key"),
    )
    .unwrap();
    anchors[3] = Anchor::start(cfg).await.unwrap();
    wait_until(
        "the late member to hold the moved name",
        Duration::from_secs(40),
        || async {
            matches!(
                n.resolve(&anchors[3], child, "/eu/a").await,
                Ok(Answer::Found { .. })
            )
        },
    )
    .await;
    match n.resolve(&anchors[3], child, "/eu/a").await {
        Ok(Answer::Found { set, .. }) => assert_eq!(set.version, v),
        other => panic!("{other:?}"),
    }
    for a in &anchors {
        a.shutdown().await;
    }
}

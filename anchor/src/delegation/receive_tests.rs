//! The checks a child member makes on a seed, against a fake [`Host`] (no storage, no
//! network): who may send it, what it must prove, and the order of its chunks.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use libp2p::identity::Keypair;
use proto::{AnchorInfo, MemberSpec, Mutation};
use resolver::net::{CallError, Protocol};
use resolver::AnchorAddr;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::replica::Replica;

#[derive(Clone)]
struct FakeHost {
    me: PeerId,
    labels: Arc<BTreeMap<String, String>>,
    hosted: Arc<AtomicUsize>,
}

impl Host for FakeHost {
    fn node_id(&self) -> NodeId {
        1
    }
    fn peer_id(&self) -> PeerId {
        self.me
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn replicas(&self) -> crate::registry::Replicas {
        Arc::default()
    }
    fn replica(&self, _: &ScopeId) -> Option<Arc<Replica>> {
        None
    }
    fn now_ms(&self) -> u64 {
        0
    }
    fn count(&self, _: &str, _: &str) {}
    async fn call<Req, Resp>(
        &self,
        _: &AnchorAddr,
        _: Protocol,
        _: &Req,
        _: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned + Send,
    {
        Err(CallError::Encode {
            reason: "no network in this test".into(),
        })
    }
    fn host_seeded(
        &self,
        _: &Seed<'_>,
    ) -> impl Future<Output = Result<Arc<Replica>, AnchorError>> + Send {
        self.hosted.fetch_add(1, Ordering::SeqCst);
        async { Err(AnchorError::Corrupt("no storage in this test".into())) }
    }
    fn host_empty(
        &self,
        _: &ScopeDescriptor,
    ) -> impl Future<Output = Result<Arc<Replica>, AnchorError>> + Send {
        self.hosted.fetch_add(1, Ordering::SeqCst);
        async { Err(AnchorError::Corrupt("no storage in this test".into())) }
    }
    async fn remove_scope(&self, _: &ScopeId) -> Result<(), AnchorError> {
        Err(AnchorError::Corrupt("no storage in this test".into()))
    }
}

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

fn info(p: PeerId) -> AnchorInfo {
    AnchorInfo {
        peer_id: p.to_base58(),
        addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
    }
}

/// A seed of `/eu` from the root scope (member `parent`) to a child on `children`.
fn seed(parent: PeerId, children: &[PeerId], chunk_no: u32, last: bool) -> SeedScope {
    let prefix = Name::parse("/eu").unwrap();
    let op = Op::Delegate {
        prefix: prefix.clone(),
        members: children
            .iter()
            .map(|c| MemberSpec {
                anchor: info(*c),
                labels: BTreeMap::new(),
            })
            .collect(),
        policy_toml: policy::Policy::development(None).to_toml(),
        referral_ttl_s: 600,
    };
    let m = Mutation {
        op,
        nonce: 1,
        expires_at_ms: u64::MAX / 2,
    };
    let proof = proto::SignedMutation::sign(&m, &SigningKey::from_bytes(&[3; 32])).unwrap();
    let root = ScopeId::root();
    SeedScope {
        parent: ScopeDescriptor {
            id: root,
            prefix: Name::root(),
            epoch: 1,
            members: vec![info(parent)],
            range: proto::KeyRange::all(),
        },
        index: 7,
        proof,
        child: ScopeId::child(&root, &prefix, 7),
        chunk_no,
        records: Vec::new(),
        nonces: Vec::new(),
        last,
        join_only: false,
    }
}

fn host(me: PeerId) -> FakeHost {
    FakeHost {
        me,
        labels: Arc::new(BTreeMap::new()),
        hosted: Arc::new(AtomicUsize::new(0)),
    }
}

#[tokio::test]
async fn only_the_parents_anchors_seed_a_child_of_which_this_anchor_is_a_member() {
    let (parent, me, stranger) = (peer(), peer(), peer());
    let h = host(me);
    let r = Receiver::default();

    let e = r
        .seed_scope(&h, stranger, seed(parent, &[me], 0, true))
        .await;
    assert!(matches!(e, Err(WireError::Refused { .. })), "{e:?}");

    let e = r
        .seed_scope(&h, parent, seed(parent, &[stranger], 0, true))
        .await;
    assert!(matches!(e, Err(WireError::Refused { .. })), "{e:?}");

    let mut wrong_child = seed(parent, &[me], 0, true);
    wrong_child.index = 8;
    let e = r.seed_scope(&h, parent, wrong_child).await;
    assert!(matches!(e, Err(WireError::Invalid { .. })), "{e:?}");
    assert_eq!(h.hosted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn chunks_are_taken_in_order_and_the_last_one_hosts_the_child() {
    let (parent, me) = (peer(), peer());
    let h = host(me);
    let r = Receiver::default();

    let e = r
        .seed_scope(&h, parent, seed(parent, &[me], 1, false))
        .await;
    assert!(matches!(e, Err(WireError::Refused { .. })), "{e:?}");

    r.seed_scope(&h, parent, seed(parent, &[me], 0, false))
        .await
        .unwrap();
    let e = r.seed_scope(&h, parent, seed(parent, &[me], 2, true)).await;
    assert!(matches!(e, Err(WireError::Refused { .. })), "{e:?}");

    r.seed_scope(&h, parent, seed(parent, &[me], 0, false))
        .await
        .unwrap();
    let e = r.seed_scope(&h, parent, seed(parent, &[me], 1, true)).await;
    // The fake host has no storage: hosting fails, but it was asked to.
    assert!(matches!(e, Err(WireError::Unavailable { .. })), "{e:?}");
    assert_eq!(h.hosted.load(Ordering::SeqCst), 1);
}

//! Black-box tests of the client against fake anchors: real libp2p swarms on port 0 that
//! answer canned responses (resolve answers signed with their libp2p key, as real anchors
//! do) and count what they receive. Every test runs under a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::identity::Keypair;
use proto::codec::{decode, encode};
use proto::limits::CLIENT_FRAME_BYTES_MAX;
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, Answer, ChangeEvent, MutateRequest, MutateResponse,
    ResolveRequest, ResolveResponse, SignedAnswer, WatchRequest, WatchResponse,
};
use proto::{
    AnchorInfo, Mutation, Name, ReadLevel, Record, RecordSet, Referral, ScopeId, WireError,
};
use resolver::net::{self, NetConfig, NetHandle, Protocol};
use resolver::{
    Client, ClientConfig, Error, HopOutcome, Multiaddr, PeerId, SigningKey, WatchEvent,
};

const TEST_DEADLINE: Duration = Duration::from_secs(30);

/// Runs a test body under [`TEST_DEADLINE`].
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_DEADLINE, body)
        .await
        .expect("test exceeded its deadline");
}

/// What a fake answers to one request, given its own identity key; `None` drops the request
/// without an answer.
type Handler = Box<dyn Fn(&Keypair, Protocol, &[u8]) -> Option<Vec<u8>> + Send>;

struct Fake {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    net: NetHandle,
    counts: Arc<Mutex<HashMap<Protocol, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(handler: Handler) -> Fake {
        let keypair = Keypair::generate_ed25519();
        let key = keypair.clone();
        let cfg = NetConfig {
            keypair,
            serve: true,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NetConfig::client()
        };
        let (net, inbound) = net::spawn(cfg).unwrap();
        let mut inbound = inbound.expect("a serving swarm hands out inbound requests");
        let addrs = tokio::time::timeout(Duration::from_secs(10), net.listen_addrs())
            .await
            .expect("fake anchor never listened");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let seen = counts.clone();
        let task = tokio::spawn(async move {
            while let Some(req) = inbound.recv().await {
                *seen.lock().unwrap().entry(req.protocol).or_insert(0) += 1;
                if let Some(reply) = handler(&key, req.protocol, &req.bytes) {
                    let _ = req.reply.send(reply);
                }
            }
        });
        Fake {
            peer: net.local_peer_id(),
            addrs,
            net,
            counts,
            task,
        }
    }

    /// Stops answering: the swarm shuts down and any request still reaching it is dropped.
    fn stop(&self) {
        self.task.abort();
        self.net.shutdown();
    }

    fn addr(&self) -> Multiaddr {
        format!("{}/p2p/{}", self.addrs[0], self.peer)
            .parse()
            .unwrap()
    }

    fn info(&self) -> AnchorInfo {
        AnchorInfo {
            peer_id: self.peer.to_base58(),
            addrs: self.addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn count(&self, protocol: Protocol) -> usize {
        self.counts
            .lock()
            .unwrap()
            .get(&protocol)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address nothing listens on: a port bound and released, and a peer id nobody has.
fn never_started() -> Multiaddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", PeerId::random())
        .parse()
        .unwrap()
}

fn config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(8),
        attempts_max: 6,
        ..ClientConfig::default()
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn records() -> Vec<Record> {
    vec![Record::Text("hello".into())]
}

fn resolve_request(bytes: &[u8]) -> ResolveRequest {
    decode(bytes, CLIENT_FRAME_BYTES_MAX).unwrap()
}

fn mutation(bytes: &[u8]) -> Mutation {
    let req: MutateRequest = decode(bytes, CLIENT_FRAME_BYTES_MAX).unwrap();
    assert!(
        !req.forwarded,
        "a client never marks its mutations as forwarded"
    );
    req.mutation
        .verify()
        .expect("the client signs what it sends")
}

/// `answer` signed by `key`, as an anchor sends it.
fn signed(key: &Keypair, answer: &Answer) -> Vec<u8> {
    let body = encode(answer).unwrap();
    let signed = SignedAnswer {
        signature: key.sign(&Answer::signing_bytes(&body)).unwrap(),
        public_key: key.public().encode_protobuf(),
        body,
    };
    encode(&ResolveResponse::Signed(signed)).unwrap()
}

fn found(key: &Keypair, req: &ResolveRequest, ttl_s: u32) -> Vec<u8> {
    let set = RecordSet {
        records: records(),
        ttl_s,
        version: 3,
        writer: [0; 32],
    };
    let answer = Answer::Found {
        scope: req.scope,
        name: req.name.clone(),
        set,
    };
    signed(key, &answer)
}

fn answer(key: &Keypair, bytes: &[u8], ttl_s: u32) -> Vec<u8> {
    found(key, &resolve_request(bytes), ttl_s)
}

fn resolve_error(w: WireError) -> Vec<u8> {
    encode(&ResolveResponse::Error(w)).unwrap()
}

fn mutate_error(w: WireError) -> Vec<u8> {
    encode(&MutateResponse::Error(w)).unwrap()
}

fn committed(version: u64) -> Vec<u8> {
    encode(&MutateResponse::Committed {
        scope: ScopeId::root(),
        version,
        leader: None,
    })
    .unwrap()
}

fn not_leader(leader: AnchorInfo) -> WireError {
    WireError::NotLeader {
        scope: ScopeId::root(),
        leader: Some(leader),
    }
}

/// A leader: answers every resolve (TTL 60 s) and commits every valid mutation at `version`.
fn leader(version: u64) -> Handler {
    Box::new(move |key, protocol, bytes| match protocol {
        Protocol::Resolve => Some(answer(key, bytes, 60)),
        Protocol::Mutate => {
            mutation(bytes);
            Some(committed(version))
        }
        _ => None,
    })
}

/// A follower that redirects every linearizable read and every mutation to `to`.
fn follower(to: AnchorInfo) -> Handler {
    Box::new(move |key, protocol, bytes| match protocol {
        Protocol::Resolve => {
            let req = resolve_request(bytes);
            Some(match req.level {
                ReadLevel::Linearizable => resolve_error(not_leader(to.clone())),
                _ => found(key, &req, 60),
            })
        }
        Protocol::Mutate => Some(mutate_error(not_leader(to.clone()))),
        _ => None,
    })
}

#[tokio::test]
async fn linearizable_resolve_follows_not_leader_redirect() {
    bounded(async {
        let b = Fake::start(leader(42)).await;
        let a = Fake::start(follower(b.info())).await;
        let client = Client::connect(&[a.addr()], config()).await.unwrap();

        let set = client
            .resolve("/eu/api", ReadLevel::Linearizable)
            .await
            .unwrap();
        assert_eq!(set.records, records());
        assert_eq!(
            (a.count(Protocol::Resolve), b.count(Protocol::Resolve)),
            (1, 1)
        );
        assert_eq!(client.leader(), Some(b.peer));
        assert!(client.known_anchors().iter().any(|(p, _)| *p == b.peer));

        client
            .resolve("/eu/api", ReadLevel::Linearizable)
            .await
            .unwrap();
        assert_eq!(
            (a.count(Protocol::Resolve), b.count(Protocol::Resolve)),
            (1, 2),
            "the known leader is asked first"
        );
    })
    .await;
}

#[tokio::test]
async fn mutation_follows_redirect_to_the_leader() {
    bounded(async {
        let b = Fake::start(leader(42)).await;
        let a = Fake::start(follower(b.info())).await;
        let client = Client::connect(&[a.addr()], config()).await.unwrap();

        let version = client.put("/eu/api", records(), 60, &key()).await.unwrap();
        assert_eq!(version, 42);
        assert_eq!(
            (a.count(Protocol::Mutate), b.count(Protocol::Mutate)),
            (1, 1)
        );

        assert_eq!(client.delete("/eu/api", &key()).await.unwrap(), 42);
        assert_eq!(
            (a.count(Protocol::Mutate), b.count(Protocol::Mutate)),
            (1, 2),
            "writes go to the known leader first"
        );
    })
    .await;
}

#[tokio::test]
async fn dead_members_are_skipped() {
    bounded(async {
        let stopped = Fake::start(leader(1)).await;
        let stopped_addr = stopped.addr();
        stopped.stop();
        let live = Fake::start(leader(7)).await;
        let trust = [never_started(), stopped_addr, live.addr()];
        let client = Client::connect(&trust, config()).await.unwrap();

        let set = client.resolve("/a", ReadLevel::Replica).await.unwrap();
        assert_eq!(set.version, 3);
        assert_eq!(client.put("/a", records(), 60, &key()).await.unwrap(), 7);
        client.resolve("/b", ReadLevel::Replica).await.unwrap();
        assert_eq!(live.count(Protocol::Resolve), 2);
        assert_eq!(live.count(Protocol::Mutate), 1);
    })
    .await;
}

#[tokio::test]
async fn all_members_dead_is_unavailable_not_unknown() {
    bounded(async {
        let client = Client::connect(&[never_started(), never_started()], config())
            .await
            .unwrap();
        let err = client.resolve("/a", ReadLevel::Replica).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        let err = client.put("/a", records(), 60, &key()).await.unwrap_err();
        assert!(
            matches!(err, Error::Unavailable { .. }),
            "a mutation no anchor could receive changed nothing: {err}"
        );
    })
    .await;
}

#[tokio::test]
async fn anchor_errors_map_to_error_variants() {
    bounded(async {
        let fake = Fake::start(Box::new(|key, protocol, bytes| match protocol {
            Protocol::Resolve => {
                let req = resolve_request(bytes);
                let answer = Answer::NotFound {
                    scope: req.scope,
                    name: req.name,
                };
                Some(signed(key, &answer))
            }
            Protocol::Mutate => {
                let m = mutation(bytes);
                Some(mutate_error(match m.op.name().to_string().as_str() {
                    "/conflict" => WireError::Conflict { current: 7 },
                    "/denied" => WireError::Denied {
                        reason: "key not allowed".into(),
                    },
                    _ => WireError::NoScope {
                        name: m.op.name().clone(),
                    },
                }))
            }
            _ => None,
        }))
        .await;
        let client = Client::connect(&[fake.addr()], config()).await.unwrap();

        let err = client
            .cas("/conflict", 3, records(), 60, &key())
            .await
            .unwrap_err();
        assert_eq!(err, Error::Conflict { current: 7 });
        let err = client
            .put("/denied", records(), 60, &key())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Denied { ref reason } if reason == "key not allowed"));
        let err = client
            .resolve("/missing", ReadLevel::Cached)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::NotFound {
                name: Name::parse("/missing").unwrap()
            }
        );
        let err = client.delete("/elsewhere", &key()).await.unwrap_err();
        assert!(matches!(err, Error::NoScope { .. }), "{err}");

        let sent = fake.count(Protocol::Resolve) + fake.count(Protocol::Mutate);
        let err = client
            .resolve("/Bad$Name", ReadLevel::Cached)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        let err = client.put("/a", vec![], 60, &key()).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert_eq!(
            fake.count(Protocol::Resolve) + fake.count(Protocol::Mutate),
            sent,
            "bad input is refused before anything is sent"
        );
    })
    .await;
}

#[tokio::test]
async fn cached_resolve_makes_no_second_request() {
    bounded(async {
        let fake = Fake::start(Box::new(|key, protocol, bytes| match protocol {
            Protocol::Resolve => {
                let req = resolve_request(bytes);
                let ttl_s = if req.name.to_string() == "/uncacheable" {
                    0
                } else {
                    60
                };
                Some(found(key, &req, ttl_s))
            }
            _ => None,
        }))
        .await;
        let client = Client::connect(&[fake.addr()], config()).await.unwrap();

        let first = client.resolve("/a", ReadLevel::Cached).await.unwrap();
        let second = client.resolve("/a", ReadLevel::Cached).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(fake.count(Protocol::Resolve), 1);

        client.resolve("/a", ReadLevel::Replica).await.unwrap();
        assert_eq!(
            fake.count(Protocol::Resolve),
            2,
            "replica reads skip the cache"
        );

        client.invalidate(&Name::parse("/a").unwrap());
        client.resolve("/a", ReadLevel::Cached).await.unwrap();
        assert_eq!(fake.count(Protocol::Resolve), 3);

        client
            .resolve("/uncacheable", ReadLevel::Cached)
            .await
            .unwrap();
        client
            .resolve("/uncacheable", ReadLevel::Cached)
            .await
            .unwrap();
        assert_eq!(fake.count(Protocol::Resolve), 5, "a TTL of 0 is not cached");
    })
    .await;
}

#[tokio::test]
async fn unavailable_member_is_retried_elsewhere() {
    bounded(async {
        let busy = Fake::start(Box::new(|_, protocol, _| match protocol {
            Protocol::Mutate => Some(mutate_error(WireError::Unavailable {
                reason: "no quorum".into(),
            })),
            Protocol::Resolve => Some(resolve_error(WireError::Unavailable {
                reason: "no quorum".into(),
            })),
            _ => None,
        }))
        .await;
        let good = Fake::start(leader(11)).await;
        let client = Client::connect(&[busy.addr(), good.addr()], config())
            .await
            .unwrap();

        assert_eq!(client.put("/a", records(), 60, &key()).await.unwrap(), 11);
        client.resolve("/a", ReadLevel::Replica).await.unwrap();
        assert_eq!(busy.count(Protocol::Mutate), 1);
        assert_eq!(
            busy.count(Protocol::Resolve),
            0,
            "after a failure the next call starts at the next member"
        );
    })
    .await;
}

#[tokio::test]
async fn replayed_after_a_lost_reply_is_unknown() {
    bounded(async {
        let bodies: Arc<Mutex<Vec<Mutation>>> = Arc::default();
        let seen = bodies.clone();
        // Takes the mutation, then drops the request without an answer.
        let lossy = Fake::start(Box::new(move |_, protocol, bytes| {
            if protocol == Protocol::Mutate {
                seen.lock().unwrap().push(mutation(bytes));
            }
            None
        }))
        .await;
        let seen = bodies.clone();
        let replaying = Fake::start(Box::new(move |_, protocol, bytes| {
            let m = mutation(bytes);
            seen.lock().unwrap().push(m.clone());
            (protocol == Protocol::Mutate)
                .then(|| mutate_error(WireError::Replayed { nonce: m.nonce }))
        }))
        .await;
        let client = Client::connect(&[lossy.addr(), replaying.addr()], config())
            .await
            .unwrap();

        let err = client.put("/a", records(), 60, &key()).await.unwrap_err();
        assert!(matches!(err, Error::Unknown { .. }), "{err}");
        {
            let bodies = bodies.lock().unwrap();
            assert_eq!(bodies.len(), 2);
            assert_eq!(
                bodies[0], bodies[1],
                "the retry resends the same signed mutation"
            );
        }

        // The same refusal with no earlier doubt is a plain replay.
        let direct = Client::connect(&[replaying.addr()], config())
            .await
            .unwrap();
        let err = direct.put("/a", records(), 60, &key()).await.unwrap_err();
        assert!(matches!(err, Error::Replayed { .. }), "{err}");
    })
    .await;
}

#[tokio::test]
async fn status_all_reports_each_trust_anchor() {
    bounded(async {
        let fake = Fake::start(Box::new(|_, protocol, bytes| {
            (protocol == Protocol::Admin).then(|| {
                let req: AdminRequest = decode(bytes, CLIENT_FRAME_BYTES_MAX).unwrap();
                let resp = match req {
                    AdminRequest::Status => AdminResponse::Status(AnchorStatus {
                        peer_id: "me".into(),
                        node_id: 1,
                        addrs: vec![],
                        labels: Default::default(),
                        scopes: vec![],
                        peers: vec![],
                        peers_omitted: 0,
                    }),
                    _ => AdminResponse::Error(WireError::Refused {
                        reason: "not here".into(),
                    }),
                };
                encode(&resp).unwrap()
            })
        }))
        .await;
        let dead = never_started();
        let client = Client::connect(&[fake.addr(), dead], config())
            .await
            .unwrap();

        let all = client.status_all().await;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, fake.peer);
        assert_eq!(all[0].1.as_ref().unwrap().node_id, 1);
        assert!(matches!(all[1].1, Err(Error::Unavailable { .. })));

        let err = client
            .admin(&fake.peer, AdminRequest::Snapshot)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err}");
        let stranger = PeerId::random();
        let err = client
            .admin(&stranger, AdminRequest::Status)
            .await
            .unwrap_err();
        assert_eq!(err, Error::UnknownAnchor { peer: stranger });
    })
    .await;
}

fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn referral(scope: ScopeId, prefix: &str, members: &[AnchorInfo]) -> Referral {
    Referral {
        scope,
        prefix: n(prefix),
        epoch: 1,
        members: members.to_vec(),
        ttl_s: 60,
        range: proto::KeyRange::all(),
    }
}

/// A member of `scope`: refers names under each `(prefix, referral)` it delegated, answers
/// the others (found), and refuses requests for any other scope with `NoScope`.
fn scope_member(scope: ScopeId, delegated: Vec<Referral>) -> Handler {
    Box::new(move |key, protocol, bytes| {
        (protocol == Protocol::Resolve).then(|| {
            let req = resolve_request(bytes);
            if req.scope != scope {
                return resolve_error(WireError::NoScope { name: req.name });
            }
            match delegated.iter().find(|r| req.name.is_under(&r.prefix)) {
                Some(r) => signed(
                    key,
                    &Answer::Referral {
                        scope,
                        name: req.name.clone(),
                        referral: r.clone(),
                    },
                ),
                None => found(key, &req, 60),
            }
        })
    })
}

#[tokio::test]
async fn three_level_walk_costs_three_requests_cold_and_none_warm() {
    bounded(async {
        let (eu, pay) = (ScopeId::derive(&[b"eu"]), ScopeId::derive(&[b"pay"]));
        let p = Fake::start(scope_member(pay, vec![])).await;
        let pay_ref = referral(pay, "/eu/payments", &[p.info()]);
        let e = Fake::start(scope_member(eu, vec![pay_ref.clone()])).await;
        let eu_ref = referral(eu, "/eu", &[e.info()]);
        let root = Fake::start(scope_member(ScopeId::root(), vec![eu_ref])).await;
        let client = Client::connect(&[root.addr()], config()).await.unwrap();
        let api = n("/eu/payments/api");

        let (set, trace) = client.resolve_traced(&api, ReadLevel::Cached).await;
        assert_eq!(set.unwrap().records, records());
        assert_eq!(client.round_trips(), 3, "a cold depth-3 walk is 3 requests");
        let peers: Vec<_> = trace.hops.iter().map(|h| h.peer).collect();
        assert_eq!(peers, vec![Some(root.peer), Some(e.peer), Some(p.peer)]);
        assert!(matches!(&trace.hops[1].outcome, HopOutcome::Referral(r) if *r == pay_ref));
        assert!(matches!(
            trace.hops[2].outcome,
            HopOutcome::Found { version: 3 }
        ));

        client.resolve_name(&api, ReadLevel::Cached).await.unwrap();
        assert_eq!(client.round_trips(), 3, "a warm walk is no request");
        let (_, trace) = client.resolve_traced(&api, ReadLevel::Cached).await;
        assert!(matches!(trace.hops[..], [ref h] if h.outcome == HopOutcome::CachedAnswer));

        client
            .resolve("/eu/payments/web", ReadLevel::Cached)
            .await
            .unwrap();
        assert_eq!(
            client.round_trips(),
            4,
            "another name under a cached referral goes straight to the child"
        );
        let located = client.locate(&api).await.unwrap();
        assert_eq!(
            (located.scope, located.prefix.clone()),
            (pay, n("/eu/payments"))
        );
        assert_eq!(located.members[0].peer_id, p.peer.to_base58());

        client.clear_cache();
        let before = client.round_trips();
        client.resolve_name(&api, ReadLevel::Cached).await.unwrap();
        assert_eq!(
            client.round_trips() - before,
            3,
            "cleared caches walk from the root"
        );
        assert_eq!(
            (root.count(Protocol::Resolve), e.count(Protocol::Resolve)),
            (2, 2)
        );
        assert_eq!(client.rejected_answers(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_walk_that_reaches_a_merged_away_scope_starts_over_at_the_root() {
    bounded(async {
        // The child's member no longer hosts it (it merged back into the root).
        let eu = ScopeId::derive(&[b"eu"]);
        let gone = Fake::start(scope_member(ScopeId::derive(&[b"other"]), vec![])).await;
        let eu_ref = referral(eu, "/eu", &[gone.info()]);
        // The root refers once (a member not yet past the merge), then answers itself.
        let asked = Arc::new(AtomicUsize::new(0));
        let first = asked.clone();
        let root = Fake::start(Box::new(move |key, protocol, bytes| {
            (protocol == Protocol::Resolve).then(|| {
                let req = resolve_request(bytes);
                if first.fetch_add(1, Ordering::SeqCst) == 0 {
                    let referral = eu_ref.clone();
                    signed(
                        key,
                        &Answer::Referral {
                            scope: req.scope,
                            name: req.name.clone(),
                            referral,
                        },
                    )
                } else {
                    found(key, &req, 60)
                }
            })
        }))
        .await;
        let client = Client::connect(&[root.addr()], config()).await.unwrap();
        let (set, trace) = client
            .resolve_traced(&n("/eu/api"), ReadLevel::Linearizable)
            .await;
        assert_eq!(set.unwrap().records, records());
        assert_eq!(root.count(Protocol::Resolve), 2, "{:?}", trace.hops);
        assert!(gone.count(Protocol::Resolve) >= 1);
    })
    .await;
}

#[tokio::test]
async fn answers_from_non_members_and_forgers_are_rejected() {
    bounded(async {
        let eu = ScopeId::derive(&[b"eu"]);
        let member = Fake::start(scope_member(eu, vec![])).await;
        // Answers for any scope, correctly signed with its own key, but is no member of any.
        let outsider = Fake::start(Box::new(|key, protocol, bytes| {
            (protocol == Protocol::Resolve).then(|| answer(key, bytes, 60))
        }))
        .await;
        let eu_ref = referral(eu, "/eu", &[member.info()]);
        let root = Fake::start(scope_member(ScopeId::root(), vec![eu_ref])).await;
        // A trust anchor that signs with another key than its identity.
        let forger = Fake::start(Box::new(|_, protocol, bytes| {
            (protocol == Protocol::Resolve).then(|| answer(&Keypair::generate_ed25519(), bytes, 60))
        }))
        .await;
        let client = Client::connect(&[forger.addr(), root.addr()], config())
            .await
            .unwrap();

        let name = n("/eu/api");
        let set = client
            .resolve_name(&name, ReadLevel::Replica)
            .await
            .unwrap();
        assert_eq!(set.records, records());
        assert_eq!(forger.count(Protocol::Resolve), 1);
        assert_eq!(
            client.rejected_answers(),
            1,
            "the forged answer was rejected"
        );

        let err = client
            .resolve_via(&name, &outsider.addr(), ReadLevel::Replica)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::NotMember {
                peer: outsider.peer,
                scope: eu
            }
        );
        assert_eq!(client.rejected_answers(), 2);
        let set = client
            .resolve_via(&name, &member.addr(), ReadLevel::Replica)
            .await
            .unwrap();
        assert_eq!(set.version, 3);

        // Only forgers among the trust anchors: the walk fails, saying why.
        let alone = Client::connect(&[forger.addr()], config()).await.unwrap();
        let err = alone.resolve("/x", ReadLevel::Replica).await.unwrap_err();
        assert!(
            matches!(err, Error::Unverified { peer, .. } if peer == forger.peer),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn mutations_follow_delegations_and_wait_out_moves() {
    bounded(async {
        let eu = ScopeId::derive(&[b"eu"]);
        let moving_left = Arc::new(AtomicUsize::new(2));
        let left = moving_left.clone();
        let child = Fake::start(Box::new(move |_, protocol, bytes| {
            (protocol == Protocol::Mutate).then(|| {
                mutation(bytes);
                if left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    mutate_error(WireError::Moving { prefix: n("/eu") })
                } else {
                    committed(77)
                }
            })
        }))
        .await;
        let eu_ref = referral(eu, "/eu", &[child.info()]);
        let delegated = eu_ref.clone();
        let root = Fake::start(Box::new(move |_, protocol, bytes| {
            (protocol == Protocol::Mutate).then(|| {
                let m = mutation(bytes);
                mutate_error(WireError::Delegated {
                    name: m.op.name().clone(),
                    referral: Box::new(delegated.clone()),
                })
            })
        }))
        .await;
        let client = Client::connect(&[root.addr()], config()).await.unwrap();

        assert_eq!(
            client.put("/eu/a", records(), 60, &key()).await.unwrap(),
            77
        );
        assert_eq!(
            (root.count(Protocol::Mutate), child.count(Protocol::Mutate)),
            (1, 3),
            "delegated once, then Moving twice before the commit"
        );
        assert_eq!(
            client.put("/eu/b", records(), 60, &key()).await.unwrap(),
            77
        );
        assert_eq!(
            root.count(Protocol::Mutate),
            1,
            "the cached referral sends the next write to the child directly"
        );

        // A move that outlasts the call's deadline: Moving, not Unknown.
        moving_left.store(usize::MAX, Ordering::SeqCst);
        let short = ClientConfig {
            operation_timeout: Duration::from_secs(1),
            ..config()
        };
        let impatient = Client::connect(&[root.addr()], short).await.unwrap();
        let err = impatient
            .put("/eu/c", records(), 60, &key())
            .await
            .unwrap_err();
        assert_eq!(err, Error::Moving { prefix: n("/eu") });
    })
    .await;
}

/// A root member serving watches from a shared log: every change under the prefix after
/// `after`, or none at once (so the client polls again).
fn watch_member(log: Arc<Mutex<Vec<ChangeEvent>>>) -> Handler {
    Box::new(move |key, protocol, bytes| match protocol {
        Protocol::Resolve => {
            let req = resolve_request(bytes);
            let answer = Answer::NotFound {
                scope: req.scope,
                name: req.name,
            };
            Some(signed(key, &answer))
        }
        Protocol::Watch => {
            let req: WatchRequest = decode(bytes, CLIENT_FRAME_BYTES_MAX).unwrap();
            let log = log.lock().unwrap();
            let up_to = log.last().map_or(0, |e| e.version);
            let events = match req.after {
                None => vec![],
                Some(after) => log
                    .iter()
                    .filter(|e| e.version > after && e.name.is_under(&req.prefix))
                    .cloned()
                    .collect(),
            };
            Some(
                encode(&WatchResponse::Changes {
                    scope: req.scope,
                    events,
                    up_to,
                })
                .unwrap(),
            )
        }
        _ => None,
    })
}

#[tokio::test]
async fn watch_resumes_at_another_member_without_a_gap() {
    bounded(async {
        let change = |name: &str, version| ChangeEvent {
            name: n(name),
            version,
            set: None,
        };
        let log: Arc<Mutex<Vec<ChangeEvent>>> = Arc::default();
        let first = Fake::start(watch_member(log.clone())).await;
        let second = Fake::start(watch_member(log.clone())).await;
        let client = Client::connect(&[first.addr(), second.addr()], config())
            .await
            .unwrap();

        let mut watch = client.watch("/eu").await.unwrap();
        assert_eq!((watch.scope(), watch.position()), (ScopeId::root(), 0));
        log.lock().unwrap().push(change("/eu/a", 1));
        let event = watch.next().await.unwrap().unwrap();
        assert_eq!(event, WatchEvent::Changed(change("/eu/a", 1)));
        assert_eq!(watch.position(), 1);
        assert!(first.count(Protocol::Watch) > 0, "the first member serves");

        first.stop();
        {
            let mut log = log.lock().unwrap();
            log.push(change("/us/x", 2));
            log.push(change("/eu/b", 3));
            log.push(change("/eu/c", 4));
        }
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match watch.next().await.unwrap() {
                Ok(WatchEvent::Changed(c)) => seen.push(c),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => assert!(matches!(e, Error::Unavailable { .. }), "{e}"),
            }
        }
        assert_eq!(seen, vec![change("/eu/b", 3), change("/eu/c", 4)]);
        assert_eq!(watch.position(), 4);
        assert!(
            second.count(Protocol::Watch) > 0,
            "the second member took over"
        );

        // Resuming from a position delivers exactly what came after it.
        let mut resumed = client.watch_from(&n("/eu"), 3).await.unwrap();
        let event = resumed.next().await.unwrap().unwrap();
        assert_eq!(event, WatchEvent::Changed(change("/eu/c", 4)));

        // Dropping the watches stops their polls.
        drop((watch, resumed));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let polls = second.count(Protocol::Watch);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(second.count(Protocol::Watch), polls);
    })
    .await;
}

#[tokio::test]
async fn a_watched_change_drops_the_cached_answer() {
    bounded(async {
        let log: Arc<Mutex<Vec<ChangeEvent>>> = Arc::default();
        let member = Fake::start(Box::new({
            let watch = watch_member(log.clone());
            move |key, protocol, bytes| match protocol {
                Protocol::Resolve => Some(answer(key, bytes, 600)),
                _ => watch(key, protocol, bytes),
            }
        }))
        .await;
        let client = Client::connect(&[member.addr()], config()).await.unwrap();
        let mut watch = client.watch("/eu").await.unwrap();
        client.resolve("/eu/a", ReadLevel::Cached).await.unwrap();
        let before = client.round_trips();
        client.resolve("/eu/a", ReadLevel::Cached).await.unwrap();
        assert_eq!(client.round_trips(), before, "cached");
        log.lock().unwrap().push(ChangeEvent {
            name: n("/eu/a"),
            version: 9,
            set: None,
        });
        assert!(matches!(
            watch.next().await,
            Some(Ok(WatchEvent::Changed(_)))
        ));
        client.resolve("/eu/a", ReadLevel::Cached).await.unwrap();
        assert_eq!(
            client.round_trips(),
            before + 1,
            "the change dropped the cached copy"
        );
    })
    .await;
}

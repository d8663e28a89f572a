//! Black-box tests of the client against fake anchors: real libp2p swarms on port 0 that
//! answer canned responses and count what they receive. Every test runs under a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::codec::{decode, encode};
use proto::limits::CLIENT_FRAME_BYTES_MAX;
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, MutateRequest, MutateResponse, ResolveRequest,
    ResolveResponse,
};
use proto::{AnchorInfo, Mutation, Name, ReadLevel, Record, RecordSet, ScopeId, WireError};
use resolver::net::{self, NetConfig, NetHandle, Protocol};
use resolver::{Client, ClientConfig, Error, Multiaddr, PeerId, SigningKey};

const TEST_DEADLINE: Duration = Duration::from_secs(30);

/// Runs a test body under [`TEST_DEADLINE`].
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_DEADLINE, body)
        .await
        .expect("test exceeded its deadline");
}

/// What a fake answers to one request; `None` drops the request without an answer.
type Handler = Box<dyn Fn(Protocol, &[u8]) -> Option<Vec<u8>> + Send>;

struct Fake {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    net: NetHandle,
    counts: Arc<Mutex<HashMap<Protocol, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(handler: Handler) -> Fake {
        let cfg = NetConfig {
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
                if let Some(reply) = handler(req.protocol, &req.bytes) {
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

fn answer(name: Name, ttl_s: u32) -> Vec<u8> {
    let set = RecordSet {
        records: records(),
        ttl_s,
        version: 3,
        writer: [0; 32],
    };
    encode(&ResolveResponse::Answer {
        scope: ScopeId::root(),
        name,
        set,
    })
    .unwrap()
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
    Box::new(move |protocol, bytes| match protocol {
        Protocol::Resolve => Some(answer(resolve_request(bytes).name, 60)),
        Protocol::Mutate => {
            mutation(bytes);
            Some(committed(version))
        }
        _ => None,
    })
}

/// A follower that redirects every linearizable read and every mutation to `to`.
fn follower(to: AnchorInfo) -> Handler {
    Box::new(move |protocol, bytes| match protocol {
        Protocol::Resolve => {
            let req = resolve_request(bytes);
            Some(match req.level {
                ReadLevel::Linearizable => resolve_error(not_leader(to.clone())),
                _ => answer(req.name, 60),
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
        let fake = Fake::start(Box::new(|protocol, bytes| match protocol {
            Protocol::Resolve => {
                let name = resolve_request(bytes).name;
                Some(
                    encode(&ResolveResponse::NotFound {
                        scope: ScopeId::root(),
                        name,
                    })
                    .unwrap(),
                )
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
        let fake = Fake::start(Box::new(|protocol, bytes| match protocol {
            Protocol::Resolve => {
                let name = resolve_request(bytes).name;
                let ttl_s = if name.to_string() == "/uncacheable" {
                    0
                } else {
                    60
                };
                Some(answer(name, ttl_s))
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
        let busy = Fake::start(Box::new(|protocol, _| match protocol {
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
        let lossy = Fake::start(Box::new(move |protocol, bytes| {
            if protocol == Protocol::Mutate {
                seen.lock().unwrap().push(mutation(bytes));
            }
            None
        }))
        .await;
        let seen = bodies.clone();
        let replaying = Fake::start(Box::new(move |protocol, bytes| {
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
        let fake = Fake::start(Box::new(|protocol, bytes| {
            (protocol == Protocol::Admin).then(|| {
                let req: AdminRequest = decode(bytes, CLIENT_FRAME_BYTES_MAX).unwrap();
                let resp = match req {
                    AdminRequest::Status => AdminResponse::Status(AnchorStatus {
                        peer_id: "me".into(),
                        node_id: 1,
                        addrs: vec![],
                        labels: Default::default(),
                        scopes: vec![],
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

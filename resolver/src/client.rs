//! [`Client`]: resolve names, send signed mutations and operator calls to a scope's anchors.
//!
//! Every call is one straight path: encode the request, run it through the retry loop
//! (`Inner::exchange`), decode and judge each answer (`judge_resolve`, `judge_mutate`).
//! The loop tries the known anchors in the order `members` gives (the leader first for
//! linearizable reads and writes), follows `NotLeader` redirects, moves on after network
//! failures and `Unavailable`, and stops after `attempts_max` requests or at the call's
//! deadline, whichever comes first.
//!
//! # Retrying mutations
//!
//! A mutation is signed once, with a random nonce and an expiry, and the same signed bytes
//! are resent on every attempt. That is safe: an anchor refuses a nonce it has seen with
//! `Replayed`, so a mutation is applied at most once. The price is that a retry cannot
//! always tell what happened to an earlier attempt: when an attempt may have reached an
//! anchor (it timed out, the connection dropped mid-request, or the anchor answered
//! `Unavailable`) and a later attempt comes back `Replayed` or `Expired`, or no later
//! attempt gets an answer at all, the call returns [`Error::Unknown`] rather than claiming
//! the write failed. Resolve the name at [`ReadLevel::Linearizable`] to find out.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use proto::codec;
use proto::limits::{CLIENT_FRAME_BYTES_MAX, MUTATION_VALIDITY_MS_MAX};
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, MutateRequest, MutateResponse, ResolveRequest,
    ResolveResponse,
};
use proto::{
    AnchorInfo, Mutation, Name, Op, ReadLevel, Record, RecordSet, SignedMutation, WireError,
};

use crate::cache::Cache;
use crate::error::Error;
use crate::members::{split_p2p, Anchor, Members, KNOWN_ANCHORS_MAX};
use crate::net::{self, NetConfig, NetError, NetHandle, Protocol};

/// Largest `attempts_max` a [`ClientConfig`] may set.
pub const ATTEMPTS_MAX_LIMIT: u32 = 100;
/// Pause after a full round of failed attempts, doubled each round up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between rounds of attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How a [`Client`] behaves. Build it with `ClientConfig { field: value, ..Default::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long one request to one anchor may take.
    pub request_timeout: Duration,
    /// How long one call (all its attempts and redirects together) may take.
    pub operation_timeout: Duration,
    /// Requests one call may send in all, redirects included (1..=[`ATTEMPTS_MAX_LIMIT`]).
    pub attempts_max: u32,
    /// How long a mutation built by this client stays valid: its `expires_at_ms` is now
    /// plus this. At most [`MUTATION_VALIDITY_MS_MAX`] ms. A mutation call gives up retrying
    /// once its mutation has expired.
    pub mutation_validity: Duration,
    /// Record sets the answer cache holds (0 disables it).
    pub cache_entries_max: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            attempts_max: 24,
            mutation_validity: Duration::from_secs(60),
            cache_entries_max: 10_000,
        }
    }
}

impl ClientConfig {
    fn check(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::BadConfig { reason });
        if self.request_timeout.is_zero() || self.operation_timeout.is_zero() {
            return bad("request_timeout and operation_timeout must be above zero".into());
        }
        if self.attempts_max == 0 || self.attempts_max > ATTEMPTS_MAX_LIMIT {
            let n = self.attempts_max;
            return bad(format!(
                "attempts_max is {n}; it must be 1..={ATTEMPTS_MAX_LIMIT}"
            ));
        }
        let validity_ms = self.mutation_validity.as_millis();
        if validity_ms == 0 || validity_ms > u128::from(MUTATION_VALIDITY_MS_MAX) {
            return bad(format!(
                "mutation_validity is {validity_ms} ms; it must be 1..={MUTATION_VALIDITY_MS_MAX} ms"
            ));
        }
        Ok(())
    }
}

/// A handle to the anchors of an Anchorage cluster. Cheap to clone; clones share the
/// network task, the known anchors and the cache. The network task stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    net: NetHandle,
    cfg: ClientConfig,
    trust: Vec<Anchor>,
    members: Mutex<Members>,
    cache: Mutex<Cache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.net.shutdown();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local_peer_id", &self.inner.net.local_peer_id())
            .field("trust_anchors", &self.trust_anchors())
            .field("leader", &self.leader())
            .finish()
    }
}

impl Client {
    /// Starts a client from the trust anchors, each a multiaddr ending in
    /// `/p2p/<peer id>` (several addresses of one peer are merged). Spawns the client's
    /// libp2p task on the current tokio runtime; nothing is dialed until the first call, so
    /// an unreachable trust anchor is not an error here.
    pub async fn connect(trust_anchors: &[Multiaddr], cfg: ClientConfig) -> Result<Client, Error> {
        Client::connect_with_net(trust_anchors, cfg, NetConfig::client()).await
    }

    /// [`Client::connect`] with a network configuration of the caller's (a fixed identity,
    /// or the test harness's fault injection). Its request timeout is replaced by the
    /// client's.
    pub async fn connect_with_net(
        trust_anchors: &[Multiaddr],
        cfg: ClientConfig,
        net_cfg: NetConfig,
    ) -> Result<Client, Error> {
        cfg.check()?;
        let trust = parse_trust_anchors(trust_anchors)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Setup {
                reason: "Client::connect must be called inside a tokio runtime".into(),
            });
        }
        let net_cfg = NetConfig {
            request_timeout: cfg.request_timeout,
            serve: false,
            ..net_cfg
        };
        let (net, _) = net::spawn(net_cfg).map_err(|e| Error::Setup {
            reason: e.to_string(),
        })?;
        let inner = Inner {
            net,
            cache: Mutex::new(Cache::new(cfg.cache_entries_max)),
            members: Mutex::new(Members::new(trust.clone())),
            trust,
            cfg,
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// [`Client::connect`] with the trust anchors in text form.
    pub async fn connect_str(trust_anchors: &[&str], cfg: ClientConfig) -> Result<Client, Error> {
        let addrs = trust_anchors
            .iter()
            .map(|s| {
                s.parse::<Multiaddr>().map_err(|e| Error::BadTrustAnchor {
                    addr: s.to_string(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Client::connect(&addrs, cfg).await
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// This client's libp2p peer id (a fresh identity per client).
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.net.local_peer_id()
    }

    /// The trust anchors' peer ids, in the order given.
    pub fn trust_anchors(&self) -> Vec<PeerId> {
        self.inner.trust.iter().map(|a| a.peer).collect()
    }

    /// Every anchor this client knows (trust anchors, then anchors learned from redirects)
    /// with the addresses it dials them at.
    pub fn known_anchors(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let members = self.inner.members();
        members
            .all()
            .iter()
            .map(|a| (a.peer, a.addrs.clone()))
            .collect()
    }

    /// The leader this client last saw (from a redirect or a linearizable answer).
    pub fn leader(&self) -> Option<PeerId> {
        self.inner.members().leader()
    }

    /// Drops the cached answer for `name`, if any.
    pub fn invalidate(&self, name: &Name) {
        self.inner.cache().remove(name);
    }

    /// Resolves a name given as text; see [`Client::resolve_name`].
    pub async fn resolve(&self, name: &str, level: ReadLevel) -> Result<RecordSet, Error> {
        let name = Name::parse(name).map_err(|e| Error::invalid_name(name, e))?;
        self.resolve_name(&name, level).await
    }

    /// The record set of `name`, as fresh as `level` asks:
    ///
    /// - [`ReadLevel::Cached`]: from the local cache while the answer's TTL lasts, else from
    ///   any member;
    /// - [`ReadLevel::Replica`]: from any member, never from the cache;
    /// - [`ReadLevel::Linearizable`]: from the leader (the last known one first, following
    ///   `NotLeader` redirects, falling back to the other members).
    ///
    /// Every answer refreshes the cache for its TTL; a not-found drops the cached entry.
    pub async fn resolve_name(&self, name: &Name, level: ReadLevel) -> Result<RecordSet, Error> {
        if level == ReadLevel::Cached {
            if let Some(set) = self.inner.cache().get(name, Instant::now()) {
                return Ok(set);
            }
        }
        let request = ResolveRequest {
            name: name.clone(),
            level,
            scope: proto::ScopeId::root(),
        };
        let bytes = codec::encode(&request).map_err(Error::from_proto)?;
        let route = match level {
            ReadLevel::Linearizable => Route::LEADER_READ,
            ReadLevel::Cached | ReadLevel::Replica => Route::ANY,
        };
        let deadline = Instant::now() + self.inner.cfg.operation_timeout;
        let judge = |from: &Anchor, reply| judge_resolve(name, from, reply);
        let result = self
            .inner
            .exchange(Protocol::Resolve, bytes, route, deadline, judge)
            .await
            .map_err(Failure::into_error);
        let mut cache = self.inner.cache();
        match &result {
            Ok(set) => cache.insert(name.clone(), set.clone(), Instant::now()),
            Err(Error::NotFound { .. }) => cache.remove(name),
            Err(_) => {}
        }
        result
    }

    /// Replaces the record set of `name`; returns the committed version.
    pub async fn put(
        &self,
        name: &str,
        records: Vec<Record>,
        ttl_s: u32,
        key: &SigningKey,
    ) -> Result<u64, Error> {
        let name = Name::parse(name).map_err(|e| Error::invalid_name(name, e))?;
        let op = Op::Put {
            name,
            records,
            ttl_s,
        };
        self.mutate(op, key).await
    }

    /// Removes `name`; returns the committed version.
    pub async fn delete(&self, name: &str, key: &SigningKey) -> Result<u64, Error> {
        let name = Name::parse(name).map_err(|e| Error::invalid_name(name, e))?;
        self.mutate(Op::Delete { name }, key).await
    }

    /// Replaces the record set of `name` only if it is at `expected_version` (0: only if it
    /// does not exist); returns the committed version, or [`Error::Conflict`] with the
    /// current one.
    pub async fn cas(
        &self,
        name: &str,
        expected_version: u64,
        records: Vec<Record>,
        ttl_s: u32,
        key: &SigningKey,
    ) -> Result<u64, Error> {
        let name = Name::parse(name).map_err(|e| Error::invalid_name(name, e))?;
        let op = Op::Cas {
            name,
            expected_version,
            records,
            ttl_s,
        };
        self.mutate(op, key).await
    }

    /// Checks `op`, wraps it with a fresh nonce and expiry ([`Client::prepare`]), signs it
    /// with `key` and submits it ([`Client::submit`]).
    pub async fn mutate(&self, op: Op, key: &SigningKey) -> Result<u64, Error> {
        op.validate().map_err(Error::from_proto)?;
        let body = self.prepare(op);
        let signed = SignedMutation::sign(&body, key).map_err(Error::from_proto)?;
        // Signed here a moment ago: no need to verify our own signature again.
        self.send_mutation(signed, body).await
    }

    /// Wraps `op` in a [`Mutation`] with a random nonce and `expires_at_ms` set to now plus
    /// `mutation_validity`, for callers that sign it themselves (k-of-n policy changes:
    /// [`SignedMutation::sign`], then [`SignedMutation::add_signature`] per extra signer).
    pub fn prepare(&self, op: Op) -> Mutation {
        let validity_ms = self.inner.cfg.mutation_validity.as_millis() as u64;
        Mutation {
            op,
            nonce: rand::random(),
            expires_at_ms: unix_ms().saturating_add(validity_ms),
        }
    }

    /// Sends a signed mutation to the scope's leader (retrying as the module docs say) and
    /// returns the committed version. The signatures and body are checked here first, so a
    /// bad mutation fails without a round trip. Drops the cached answer for the name.
    pub async fn submit(&self, mutation: SignedMutation) -> Result<u64, Error> {
        let body = mutation.verify().map_err(Error::from_proto)?;
        self.send_mutation(mutation, body).await
    }

    async fn send_mutation(&self, mutation: SignedMutation, body: Mutation) -> Result<u64, Error> {
        let now_ms = unix_ms();
        if body.expires_at_ms <= now_ms {
            return Err(Error::Expired {
                expires_at_ms: body.expires_at_ms,
                reason: format!("it expired before it was sent (now is {now_ms} ms here)"),
            });
        }
        let validity_left = Duration::from_millis(body.expires_at_ms - now_ms);
        let deadline = Instant::now() + self.inner.cfg.operation_timeout.min(validity_left);
        let request = MutateRequest {
            mutation,
            forwarded: false,
        };
        let bytes = codec::encode(&request).map_err(Error::from_proto)?;
        if bytes.len() > CLIENT_FRAME_BYTES_MAX {
            let reason = format!(
                "the mutation request is {} bytes; at most {CLIENT_FRAME_BYTES_MAX}",
                bytes.len()
            );
            return Err(Error::Invalid { reason });
        }
        let mut ambiguity = None;
        let mut committed_by = None;
        let judge =
            |from: &Anchor, reply| judge_mutate(&mut ambiguity, &mut committed_by, from, reply);
        let result = self
            .inner
            .exchange(
                Protocol::Mutate,
                bytes,
                Route::LEADER_WRITE,
                deadline,
                judge,
            )
            .await;
        self.inner.cache().remove(body.op.name());
        if let Some(leader) = committed_by.and_then(|info| Anchor::from_info(&info).ok()) {
            let mut members = self.inner.members();
            let leader = members.learn(leader);
            members.set_leader(leader.peer);
        }
        result.map_err(|failure| match (failure, ambiguity) {
            (Failure::Exhausted(x), Some(first)) => Error::Unknown {
                reason: format!("{first}; no later attempt settled it: {}", x.summary),
            },
            (failure, _) => failure.into_error(),
        })
    }

    /// Sends one operator call to one known anchor (no retries, no redirects). An
    /// [`AdminResponse::Error`] comes back as the matching [`Error`].
    pub async fn admin(
        &self,
        peer: &PeerId,
        request: AdminRequest,
    ) -> Result<AdminResponse, Error> {
        let anchor = self.inner.members().get(peer).cloned();
        let anchor = anchor.ok_or(Error::UnknownAnchor { peer: *peer })?;
        self.inner.admin(&anchor, &request).await
    }

    /// Asks every trust anchor for its status, concurrently; one entry per trust anchor,
    /// in the order given to [`Client::connect`].
    pub async fn status_all(&self) -> Vec<(PeerId, Result<AnchorStatus, Error>)> {
        let asks = self.inner.trust.iter().map(|anchor| async move {
            let reply = self.inner.admin(anchor, &AdminRequest::Status).await;
            let status = reply.and_then(|r| match r {
                AdminResponse::Status(s) => Ok(s),
                other => Err(Error::BadResponse {
                    peer: anchor.peer,
                    reason: format!("asked for status, got {other:?}"),
                }),
            });
            (anchor.peer, status)
        });
        futures::future::join_all(asks).await
    }
}

fn parse_trust_anchors(addrs: &[Multiaddr]) -> Result<Vec<Anchor>, Error> {
    if addrs.is_empty() {
        return Err(Error::BadConfig {
            reason: "no trust anchors: give at least one root-scope anchor as \
                     /…/p2p/<peer id>"
                .into(),
        });
    }
    let mut anchors: Vec<Anchor> = Vec::new();
    for addr in addrs {
        let (peer, dial) = split_p2p(addr).map_err(|reason| Error::BadTrustAnchor {
            addr: addr.to_string(),
            reason,
        })?;
        match anchors.iter_mut().find(|a| a.peer == peer) {
            Some(known) if !known.addrs.contains(&dial) => known.addrs.push(dial),
            Some(_) => {}
            None => anchors.push(Anchor {
                peer,
                addrs: vec![dial],
            }),
        }
    }
    if anchors.len() > KNOWN_ANCHORS_MAX {
        return Err(Error::BadConfig {
            reason: format!(
                "{} trust anchors; at most {KNOWN_ANCHORS_MAX}",
                anchors.len()
            ),
        });
    }
    Ok(anchors)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which anchors a call prefers, and what a success says about the one that answered.
#[derive(Clone, Copy, Debug)]
struct Route {
    /// Try the last known leader first.
    leader_first: bool,
    /// A successful answer came from the leader (linearizable reads).
    answered_by_leader: bool,
}

impl Route {
    const ANY: Route = Route {
        leader_first: false,
        answered_by_leader: false,
    };
    const LEADER_READ: Route = Route {
        leader_first: true,
        answered_by_leader: true,
    };
    const LEADER_WRITE: Route = Route {
        leader_first: true,
        answered_by_leader: false,
    };
}

/// Why one request to one anchor got no answer.
#[derive(Clone, Debug)]
struct AttemptError {
    reason: String,
    /// The anchor may have received the request (so a mutation may have been applied).
    maybe_delivered: bool,
}

impl AttemptError {
    fn from_net(e: NetError) -> AttemptError {
        let maybe_delivered = match &e {
            // libp2p's texts for "never dialed" and "never opened a stream"; any other text
            // counts as possibly delivered, which is the safe side.
            NetError::Failed { reason, .. } => {
                !(reason.starts_with("Failed to dial") || reason.contains("supports none"))
            }
            NetError::Stopped | NetError::Setup(_) => false,
        };
        AttemptError {
            reason: e.to_string(),
            maybe_delivered,
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What the judge of a call makes of one attempt.
#[derive(Debug)]
enum Step<T> {
    /// Final: return this.
    Done(Result<T, Error>),
    /// Ask the leader named here next.
    Redirect(AnchorInfo),
    /// Try the next anchor. `fallback` is returned instead of `Unavailable` if no later
    /// attempt gets further (e.g. `NoScope`, which says more than "unavailable"); an anchor
    /// that gave such an answer is not asked again in this call.
    Next {
        reason: String,
        fallback: Option<Error>,
    },
}

impl<T> Step<T> {
    fn next(reason: impl fmt::Display) -> Step<T> {
        Step::Next {
            reason: reason.to_string(),
            fallback: None,
        }
    }
}

/// How a call through [`Inner::exchange`] failed.
#[derive(Debug)]
enum Failure {
    /// An anchor gave a final answer that is an error.
    Answered(Error),
    /// No attempt got a final answer.
    Exhausted(Exhausted),
}

#[derive(Debug)]
struct Exhausted {
    summary: String,
    fallback: Option<Error>,
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Answered(e) => e,
            Failure::Exhausted(x) => x.fallback.unwrap_or(Error::unavailable(x.summary)),
        }
    }
}

/// The attempts of one call so far, for the error that ends it.
struct Attempts {
    started: Instant,
    count: u32,
    last: Option<(PeerId, String)>,
    fallback: Option<Error>,
    /// Anchors whose answer will not change within this call (they host no scope for the
    /// name, or speak another protocol version).
    settled: Vec<PeerId>,
    deadline_passed: bool,
}

impl Attempts {
    fn new() -> Attempts {
        Attempts {
            started: Instant::now(),
            count: 0,
            last: None,
            fallback: None,
            settled: Vec::new(),
            deadline_passed: false,
        }
    }

    fn note(&mut self, peer: PeerId, reason: String, fallback: Option<Error>) {
        self.last = Some((peer, reason));
        if fallback.is_some() {
            self.fallback = fallback;
            self.settled.push(peer);
        }
    }

    fn exhausted(self, attempts_max: u32) -> Exhausted {
        let ms = self.started.elapsed().as_millis();
        let stop = if self.deadline_passed {
            "the deadline passed"
        } else if self.count < attempts_max {
            "no anchor left to ask"
        } else {
            "attempts_max reached"
        };
        let last = match &self.last {
            Some((peer, reason)) => format!("; last: anchor {peer}: {reason}"),
            None => String::new(),
        };
        Exhausted {
            summary: format!("{} attempts in {ms} ms, then {stop}{last}", self.count),
            fallback: self.fallback,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is bookkeeping that every method leaves consistent; a panic
    // elsewhere while it was held does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn members(&self) -> MutexGuard<'_, Members> {
        lock(&self.members)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    /// Sends `bytes` to anchor after anchor until `judge` calls an answer final, for at most
    /// `attempts_max` requests and until `deadline`. A full round of failures is followed by
    /// a short pause that doubles each round.
    async fn exchange<T>(
        &self,
        protocol: Protocol,
        bytes: Vec<u8>,
        route: Route,
        deadline: Instant,
        mut judge: impl FnMut(&Anchor, Result<Vec<u8>, AttemptError>) -> Step<T>,
    ) -> Result<T, Failure> {
        let mut queue: VecDeque<Anchor> = self.members().plan(route.leader_first).into();
        let mut attempts = Attempts::new();
        let mut backoff = BACKOFF_MIN;
        while attempts.count < self.cfg.attempts_max {
            let Some(target) = queue.pop_front() else {
                queue = self.members().plan(route.leader_first).into();
                queue.retain(|a| !attempts.settled.contains(&a.peer));
                if queue.is_empty() {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                attempts.deadline_passed = true;
                break;
            }
            attempts.count += 1;
            let timeout = left.min(self.cfg.request_timeout);
            let reply = self.send(&target, protocol, bytes.clone(), timeout).await;
            match judge(&target, reply) {
                Step::Done(result) => {
                    let from_leader = matches!(result, Ok(_) | Err(Error::NotFound { .. }));
                    if route.answered_by_leader && from_leader {
                        self.members().set_leader(target.peer);
                    }
                    return result.map_err(Failure::Answered);
                }
                Step::Redirect(info) => self.redirect(&target, &info, &mut queue, &mut attempts),
                Step::Next { reason, fallback } => {
                    tracing::debug!(peer = %target.peer, %reason, "attempt failed; trying the next anchor");
                    self.members().failed(&target.peer);
                    attempts.note(target.peer, reason, fallback);
                }
            }
        }
        Err(Failure::Exhausted(
            attempts.exhausted(self.cfg.attempts_max),
        ))
    }

    /// Follows a `NotLeader` redirect: learns the leader and puts it first in the queue.
    fn redirect(
        &self,
        from: &Anchor,
        info: &AnchorInfo,
        queue: &mut VecDeque<Anchor>,
        attempts: &mut Attempts,
    ) {
        let mut members = self.members();
        match Anchor::from_info(info) {
            Ok(leader) if leader.peer != from.peer => {
                let leader = members.learn(leader);
                members.set_leader(leader.peer);
                let reason = format!("not the leader; redirected to {}", leader.peer);
                queue.retain(|a| a.peer != leader.peer);
                queue.push_front(leader);
                attempts.note(from.peer, reason, None);
            }
            Ok(_) => {
                members.failed(&from.peer);
                attempts.note(from.peer, "named itself as leader".into(), None);
            }
            Err(reason) => {
                members.failed(&from.peer);
                attempts.note(from.peer, format!("unusable redirect: {reason}"), None);
            }
        }
    }

    /// One request to one anchor, bounded by `timeout`.
    async fn send(
        &self,
        to: &Anchor,
        protocol: Protocol,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, AttemptError> {
        let request = self.net.request(to.peer, to.addrs.clone(), protocol, bytes);
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(AttemptError::from_net(e)),
            Err(_) => Err(AttemptError {
                reason: format!("no answer within {} ms", timeout.as_millis()),
                maybe_delivered: true,
            }),
        }
    }

    async fn admin(&self, anchor: &Anchor, request: &AdminRequest) -> Result<AdminResponse, Error> {
        let bytes = codec::encode(request).map_err(Error::from_proto)?;
        let timeout = self.cfg.request_timeout;
        let reply = self.send(anchor, Protocol::Admin, bytes, timeout).await;
        let reply =
            reply.map_err(|e| Error::unavailable(format!("anchor {}: {e}", anchor.peer)))?;
        let response: AdminResponse = decode(anchor, &reply)?;
        match response {
            AdminResponse::Error(w) => Err(w.into()),
            ok => Ok(ok),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(from: &Anchor, bytes: &[u8]) -> Result<T, Error> {
    codec::decode(bytes, CLIENT_FRAME_BYTES_MAX).map_err(|e| Error::BadResponse {
        peer: from.peer,
        reason: e.to_string(),
    })
}

/// What one resolve attempt means: an answer for `name`, a not-found, a redirect, or a
/// reason to try another anchor.
fn judge_resolve(
    name: &Name,
    from: &Anchor,
    reply: Result<Vec<u8>, AttemptError>,
) -> Step<RecordSet> {
    let bytes = match reply {
        Ok(bytes) => bytes,
        Err(e) => return Step::next(e),
    };
    let response: ResolveResponse = match decode(from, &bytes) {
        Ok(r) => r,
        Err(e) => {
            return Step::Next {
                reason: e.to_string(),
                fallback: Some(e),
            }
        }
    };
    let signed = match response {
        ResolveResponse::Signed(signed) => signed,
        ResolveResponse::Error(w) => return judge_wire_error(w),
    };
    let answer: proto::msg::Answer = match decode(from, &signed.body) {
        Ok(a) => a,
        Err(e) => {
            return Step::Next {
                reason: e.to_string(),
                fallback: Some(e),
            }
        }
    };
    match answer {
        proto::msg::Answer::Found { name: got, set, .. } if got == *name => Step::Done(Ok(set)),
        proto::msg::Answer::NotFound { name: got, .. } if got == *name => {
            Step::Done(Err(Error::NotFound { name: got }))
        }
        other => {
            let e = Error::BadResponse {
                peer: from.peer,
                reason: format!("asked for {name}, the answer is {other:?}"),
            };
            Step::Next {
                reason: e.to_string(),
                fallback: Some(e),
            }
        }
    }
}

/// The errors both resolves and mutations retry elsewhere; the rest are final.
fn judge_wire_error<T>(w: WireError) -> Step<T> {
    match w {
        WireError::NotLeader {
            leader: Some(leader),
            ..
        } => Step::Redirect(leader),
        WireError::NotLeader { leader: None, .. } | WireError::Unavailable { .. } => Step::next(w),
        WireError::NoScope { name } => Step::Next {
            reason: format!("hosts no scope governing {name}"),
            fallback: Some(Error::NoScope { name }),
        },
        w => Step::Done(Err(w.into())),
    }
}

/// What one mutation attempt means. `ambiguity` remembers the first attempt that may have
/// been applied without this client hearing so; once set, `Replayed` and `Expired` can be
/// this very mutation's earlier attempt, so they make the outcome unknown.
fn judge_mutate(
    ambiguity: &mut Option<String>,
    committed_by: &mut Option<AnchorInfo>,
    from: &Anchor,
    reply: Result<Vec<u8>, AttemptError>,
) -> Step<u64> {
    let mut note = |what: String| {
        ambiguity.get_or_insert_with(|| format!("an attempt at anchor {}: {what}", from.peer));
    };
    let bytes = match reply {
        Ok(bytes) => bytes,
        Err(e) => {
            if e.maybe_delivered {
                note(e.reason.clone());
            }
            return Step::next(e);
        }
    };
    let response: MutateResponse = match decode(from, &bytes) {
        Ok(r) => r,
        Err(e) => {
            note(e.to_string());
            return Step::Next {
                reason: e.to_string(),
                fallback: Some(e),
            };
        }
    };
    match response {
        MutateResponse::Committed {
            version, leader, ..
        } => {
            *committed_by = leader;
            Step::Done(Ok(version))
        }
        MutateResponse::Error(w @ WireError::Unavailable { .. }) => {
            note(w.to_string());
            Step::next(w)
        }
        // After an attempt that may have been applied, a refusal that depends on the
        // scope's state (a replay, an expiry, a compare-and-set conflict, a policy denial)
        // may be caused by that very attempt or by writes since: the outcome is unknown.
        // (Found by a chaos campaign: a retried CAS answered Conflict although its first
        // attempt, still queued at the leader, committed.)
        MutateResponse::Error(
            w @ (WireError::Replayed { .. }
            | WireError::Expired { .. }
            | WireError::Conflict { .. }
            | WireError::Denied { .. }),
        ) => match ambiguity {
            Some(first) => Step::Done(Err(Error::Unknown {
                reason: format!("{first}; a retry of the same mutation was then refused: {w}"),
            })),
            None => judge_wire_error(w),
        },
        MutateResponse::Error(w) => judge_wire_error(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ScopeId;

    fn anchor() -> Anchor {
        Anchor {
            peer: PeerId::random(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        }
    }

    fn mutate_reply(w: WireError) -> Result<Vec<u8>, AttemptError> {
        Ok(codec::encode(&MutateResponse::Error(w)).unwrap())
    }

    fn timed_out() -> Result<Vec<u8>, AttemptError> {
        Err(AttemptError {
            reason: "no answer within 5 ms".into(),
            maybe_delivered: true,
        })
    }

    #[test]
    fn client_and_its_futures_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        fn assert_send<T: Send>(_: &T) {}
        assert_send_sync::<Client>();
        // Only the futures' types are checked; nothing here runs.
        let check = |c: Client, key: SigningKey| async move {
            let r = c.resolve("/a", ReadLevel::Cached);
            assert_send(&r);
            let p = c.put("/a", vec![], 1, &key);
            assert_send(&p);
            let s = c.status_all();
            assert_send(&s);
        };
        let _ = check;
    }

    #[test]
    fn replayed_after_a_timeout_is_unknown_but_alone_is_replayed() {
        let a = anchor();
        let mut fresh = None;
        let step = judge_mutate(
            &mut fresh,
            &mut None,
            &a,
            mutate_reply(WireError::Replayed { nonce: 4 }),
        );
        assert!(matches!(
            step,
            Step::Done(Err(Error::Replayed { nonce: 4 }))
        ));

        let mut ambiguity = None;
        assert!(matches!(
            judge_mutate(&mut ambiguity, &mut None, &a, timed_out()),
            Step::Next { .. }
        ));
        let step = judge_mutate(
            &mut ambiguity,
            &mut None,
            &a,
            mutate_reply(WireError::Replayed { nonce: 4 }),
        );
        assert!(
            matches!(step, Step::Done(Err(Error::Unknown { .. }))),
            "{step:?}"
        );
    }

    #[test]
    fn unavailable_answer_makes_a_mutation_ambiguous_but_a_failed_dial_does_not() {
        let a = anchor();
        let mut ambiguity = None;
        let dial = AttemptError::from_net(NetError::Failed {
            peer: a.peer,
            reason: "Failed to dial the requested peer".into(),
        });
        assert!(!dial.maybe_delivered);
        let _ = judge_mutate(&mut ambiguity, &mut None, &a, Err(dial));
        assert!(ambiguity.is_none());
        let unavailable = WireError::Unavailable {
            reason: "no quorum".into(),
        };
        let _ = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(unavailable));
        assert!(ambiguity.is_some());
        let expired = WireError::Expired {
            expires_at_ms: 1,
            reason: "past".into(),
        };
        let step = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(expired));
        assert!(matches!(step, Step::Done(Err(Error::Unknown { .. }))));
    }

    #[test]
    fn a_conflict_after_an_ambiguous_attempt_is_unknown() {
        let a = anchor();
        let mut ambiguity = Some("an attempt timed out".to_string());
        let step = judge_mutate(
            &mut ambiguity,
            &mut None,
            &a,
            mutate_reply(WireError::Conflict { current: 7 }),
        );
        assert!(matches!(step, Step::Done(Err(Error::Unknown { .. }))));
        let mut fresh = None;
        let step = judge_mutate(
            &mut fresh,
            &mut None,
            &a,
            mutate_reply(WireError::Conflict { current: 7 }),
        );
        assert!(matches!(
            step,
            Step::Done(Err(Error::Conflict { current: 7 }))
        ));
    }

    #[test]
    fn not_leader_redirects_only_with_a_leader() {
        let info = AnchorInfo {
            peer_id: PeerId::random().to_base58(),
            addrs: vec![],
        };
        let with = WireError::NotLeader {
            scope: ScopeId::root(),
            leader: Some(info.clone()),
        };
        assert!(matches!(judge_wire_error::<()>(with), Step::Redirect(i) if i == info));
        let without = WireError::NotLeader {
            scope: ScopeId::root(),
            leader: None,
        };
        assert!(matches!(judge_wire_error::<()>(without), Step::Next { .. }));
        let denied = WireError::Denied {
            reason: "no".into(),
        };
        assert!(matches!(
            judge_wire_error::<()>(denied),
            Step::Done(Err(Error::Denied { .. }))
        ));
    }

    #[test]
    fn resolve_answer_for_another_name_is_not_accepted() {
        let a = anchor();
        let asked = Name::parse("/a").unwrap();
        let reply = ResolveResponse::NotFound {
            scope: ScopeId::root(),
            name: Name::parse("/b").unwrap(),
        };
        let step = judge_resolve(&asked, &a, Ok(codec::encode(&reply).unwrap()));
        assert!(matches!(
            step,
            Step::Next {
                fallback: Some(Error::BadResponse { .. }),
                ..
            }
        ));
        let garbage = judge_resolve(&asked, &a, Ok(vec![0xff; 3]));
        assert!(matches!(garbage, Step::Next { .. }));
    }

    #[test]
    fn config_bounds_are_checked() {
        assert!(ClientConfig::default().check().is_ok());
        let too_long = ClientConfig {
            mutation_validity: Duration::from_millis(MUTATION_VALIDITY_MS_MAX + 1),
            ..Default::default()
        };
        assert!(matches!(too_long.check(), Err(Error::BadConfig { .. })));
        let no_attempts = ClientConfig {
            attempts_max: 0,
            ..Default::default()
        };
        assert!(no_attempts.check().is_err());
    }

    #[test]
    fn trust_anchors_are_parsed_and_merged() {
        let peer = PeerId::random();
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let b: Multiaddr = format!("/ip4/127.0.0.2/tcp/1/p2p/{peer}").parse().unwrap();
        let anchors = parse_trust_anchors(&[a.clone(), b, a]).unwrap();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].addrs.len(), 2);
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(matches!(
            parse_trust_anchors(&[bare]),
            Err(Error::BadTrustAnchor { .. })
        ));
        assert!(matches!(
            parse_trust_anchors(&[]),
            Err(Error::BadConfig { .. })
        ));
    }

    #[test]
    fn connect_outside_a_runtime_is_an_error_not_a_panic() {
        let peer = PeerId::random();
        let addr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}");
        let connect = |addr: String| async move {
            Client::connect_str(&[&addr], ClientConfig::default()).await
        };
        let err = futures::executor::block_on(connect(addr)).unwrap_err();
        assert!(matches!(err, Error::Setup { .. }), "{err}");
        let err = futures::executor::block_on(connect("garbage".into())).unwrap_err();
        assert!(matches!(err, Error::BadTrustAnchor { .. }), "{err}");
    }
}

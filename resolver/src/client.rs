//! [`Client`]: resolve names by walking referrals, send signed mutations to the scope that
//! governs a name, watch prefixes, and make operator calls.
//!
//! Every call is one straight path: encode the request, run it through the retry loop
//! (`Inner::exchange`) at one scope's members, decode and judge each answer
//! (`judge_resolve`, which verifies signed answers; `judge_mutate`). The loop tries the
//! scope's known members in the order `members` gives (the leader first for linearizable
//! reads and writes), follows `NotLeader` redirects, moves on after network failures,
//! rejected answers and `Unavailable`, follows `Delegated` to the child scope, waits out
//! `Moving`, and stops after `attempts_max` requests or at the call's deadline, whichever
//! comes first. A resolve runs the loop once per scope on its walk (see [`crate::walk`]);
//! a walk that started from a cached referral which no longer works starts over at the root
//! once.
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
//! `Delegated` and `Moving` are refusals before anything was proposed: they never make an
//! outcome unknown.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use proto::codec;
use proto::limits::{CLIENT_FRAME_BYTES_MAX, MUTATION_VALIDITY_MS_MAX};
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, Answer, MutateRequest, MutateResponse,
    ResolveRequest, ResolveResponse, ScopeInfo, ScopeTarget, WatchRequest, WatchResponse,
};
use proto::{
    AnchorInfo, Mutation, Name, Op, ReadLevel, Record, RecordSet, Referral, ScopeId,
    SignedMutation, WireError,
};

use crate::addr::AnchorAddr;
use crate::cache::{Cache, ReferralCache};
use crate::error::Error;
use crate::members::{Directory, Members, KNOWN_ANCHORS_MAX};
use crate::net::{self, NetConfig, NetError, NetHandle, Protocol};
use crate::verify::{check_referral, verify_answer, Asked};
use crate::walk::{Hop, HopOutcome, ScopeRef, Trace, Walk};
use crate::watch::{self, Watch};

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
    /// How long one call (all its attempts, redirects and referral hops together) may take.
    pub operation_timeout: Duration,
    /// Requests one call may send to one scope in all, redirects included
    /// (1..=[`ATTEMPTS_MAX_LIMIT`]).
    pub attempts_max: u32,
    /// How long a mutation built by this client stays valid: its `expires_at_ms` is now
    /// plus this. At most [`MUTATION_VALIDITY_MS_MAX`] ms. A mutation call gives up retrying
    /// once its mutation has expired.
    pub mutation_validity: Duration,
    /// Record sets the answer cache holds (0 disables it).
    pub cache_entries_max: usize,
    /// Referrals the referral cache holds (0 disables it: every walk starts at the root).
    pub referral_entries_max: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            attempts_max: 24,
            mutation_validity: Duration::from_secs(60),
            cache_entries_max: 10_000,
            referral_entries_max: 1_024,
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
/// network task, the known scopes and members, and the caches. The network task stops when
/// the last clone (and the last [`Watch`]) is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    net: NetHandle,
    pub(crate) cfg: ClientConfig,
    trust: Vec<AnchorAddr>,
    directory: Mutex<Directory>,
    cache: Mutex<Cache>,
    referrals: Mutex<ReferralCache>,
    round_trips: AtomicU64,
    rejected: AtomicU64,
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

/// Where a walk or a mutation starts: the deepest cached referral above the name, or the
/// root.
struct Start {
    scope: ScopeId,
    prefix: Name,
    cached: bool,
}

impl Client {
    /// Starts a client from the trust anchors, each a multiaddr ending in
    /// `/p2p/<peer id>` (several addresses of one peer are merged): the members of the root
    /// scope, the start of every chain of trust. Spawns the client's libp2p task on the
    /// current tokio runtime; nothing is dialed until the first call, so an unreachable
    /// trust anchor is not an error here.
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
            // Long polls of watches last up to request_timeout + their wait.
            request_timeout: cfg.request_timeout + watch::wait_for(cfg.request_timeout),
            serve: false,
            ..net_cfg
        };
        let (net, _) = net::spawn(net_cfg).map_err(|e| Error::Setup {
            reason: e.to_string(),
        })?;
        let inner = Inner {
            net,
            cache: Mutex::new(Cache::new(cfg.cache_entries_max)),
            referrals: Mutex::new(ReferralCache::new(cfg.referral_entries_max)),
            directory: Mutex::new(Directory::new(trust.clone())),
            trust,
            cfg,
            round_trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
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

    /// Every anchor this client knows (root members first: trust anchors and anchors
    /// learned from redirects; then the members of child scopes) with the addresses it
    /// dials them at.
    pub fn known_anchors(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let directory = self.inner.directory();
        directory
            .all_anchors()
            .into_iter()
            .map(|a| (a.peer, a.addrs))
            .collect()
    }

    /// The root scope's leader as this client last saw it (from a redirect or a
    /// linearizable answer).
    pub fn leader(&self) -> Option<PeerId> {
        self.inner.directory().root().leader()
    }

    /// The leader of `scope` as this client last saw it.
    pub fn leader_of(&self, scope: &ScopeId) -> Option<PeerId> {
        let directory = self.inner.directory();
        directory.get(scope).and_then(|s| s.members.leader())
    }

    /// Drops the cached answer for `name`, if any.
    pub fn invalidate(&self, name: &Name) {
        self.inner.cache().remove(name);
    }

    /// Drops every cached answer and referral: the next walk starts at the root.
    pub fn clear_cache(&self) {
        self.inner.cache().clear();
        self.inner.referrals().clear();
    }

    /// Resolve requests this client has sent (every hop of every walk, retries included).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Signed answers (and `Delegated` referrals) this client rejected: bad signature,
    /// wrong signer, a signer not a member of the scope, another scope or name, a referral
    /// that leads nowhere deeper.
    pub fn rejected_answers(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Resolves a name given as text; see [`Client::resolve_name`].
    pub async fn resolve(&self, name: &str, level: ReadLevel) -> Result<RecordSet, Error> {
        let name = Name::parse(name).map_err(|e| Error::invalid_name(name, e))?;
        self.resolve_name(&name, level).await
    }

    /// The record set of `name`, found by walking referrals from the deepest scope this
    /// client holds a referral for (the root at first), as fresh as `level` asks:
    ///
    /// - [`ReadLevel::Cached`]: from the local cache while the answer's TTL lasts, else from
    ///   any member of each scope on the way;
    /// - [`ReadLevel::Replica`]: from any member, never from the cache;
    /// - [`ReadLevel::Linearizable`]: from the governing scope's leader (the last known one
    ///   first, following `NotLeader` redirects, falling back to the other members).
    ///
    /// Every answer is verified (see [`crate::verify`]); every answer refreshes the cache
    /// for its TTL, every referral the referral cache; a not-found drops the cached entry.
    pub async fn resolve_name(&self, name: &Name, level: ReadLevel) -> Result<RecordSet, Error> {
        let mut trace = Trace::default();
        self.walk(name, level, &mut trace).await.result
    }

    /// [`Client::resolve_name`], with every hop it took (`resolve --trace`).
    pub async fn resolve_traced(
        &self,
        name: &Name,
        level: ReadLevel,
    ) -> (Result<RecordSet, Error>, Trace) {
        let mut trace = Trace::default();
        let result = self.walk(name, level, &mut trace).await.result;
        (result, trace)
    }

    /// `dig @anchor`: asks this one anchor for `name` at the scope governing it (found by
    /// [`Client::locate`], walking from the trust anchors when needed). The answer is
    /// verified like any other, so an anchor that is not a member of that scope is refused
    /// with [`Error::NotMember`]; a referral it gives is followed as in a walk.
    pub async fn resolve_via(
        &self,
        name: &Name,
        anchor: &Multiaddr,
        level: ReadLevel,
    ) -> Result<RecordSet, Error> {
        let target = AnchorAddr::from_multiaddr(anchor).map_err(|e| Error::BadTrustAnchor {
            addr: anchor.to_string(),
            reason: e.to_string(),
        })?;
        let at = self.locate(name).await?;
        let request = ResolveRequest {
            name: name.clone(),
            level,
            scope: at.scope,
        };
        let bytes = codec::encode(&request).map_err(Error::from_proto)?;
        let reply = self
            .inner
            .send(
                &target,
                Protocol::Resolve,
                bytes,
                self.inner.cfg.request_timeout,
            )
            .await;
        let step = self
            .inner
            .judge_resolve(name, at.scope, &at.prefix, &target, reply);
        let answer = match step {
            Step::Done(result) => result?,
            Step::Redirect(info) => {
                return Err(Error::NotLeader {
                    scope: at.scope,
                    leader: Some(info),
                })
            }
            Step::Next { reason, fallback } => {
                return Err(fallback.unwrap_or_else(|| Error::unavailable(reason)))
            }
            Step::Refer(_) | Step::Wait(_) => {
                return Err(Error::unavailable("unexpected answer to a resolve"))
            }
        };
        let mut trace = Trace::default();
        match answer {
            Answer::Found { set, .. } => {
                self.inner
                    .cache()
                    .insert(name.clone(), set.clone(), Instant::now());
                Ok(set)
            }
            Answer::NotFound { name, .. } => Err(Error::NotFound { name }),
            Answer::Referral { referral, .. } => {
                self.inner.take_referral(&referral);
                let start = Start {
                    scope: referral.scope,
                    prefix: referral.prefix.clone(),
                    cached: false,
                };
                self.walk_from(name, level, start, &mut trace).await.result
            }
        }
    }

    /// The scope governing `name`: the walk from the deepest cached referral to the scope
    /// that answers for the name itself (one request at least, more when referrals are
    /// followed; the answer is cached on the way).
    pub async fn locate(&self, name: &Name) -> Result<ScopeRef, Error> {
        let mut trace = Trace::default();
        let end = self.walk(name, ReadLevel::Replica, &mut trace).await;
        match end.result {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(self.inner.scope_ref(end.scope, end.prefix)),
            Err(e) => Err(e),
        }
    }

    /// The [`ScopeInfo`] of the scope governing `name`, asked of its members (the leader
    /// first when known) until one answers.
    pub async fn scope_info(&self, name: &Name) -> Result<ScopeInfo, Error> {
        let at = self.locate(name).await?;
        let plan = self.inner.plan(&at.scope, true);
        let mut last = Error::unavailable(format!("no known member of scope {}", at.scope));
        for anchor in plan {
            let target = ScopeTarget::Id(at.scope);
            match self.inner.scope_info(&anchor, target).await {
                Ok(info) => return Ok(info),
                Err(e) => {
                    self.inner.failed(&at.scope, &anchor.peer);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The [`ScopeInfo`] one anchor gives for `target` (no retries).
    pub async fn scope_info_at(
        &self,
        anchor: &AnchorInfo,
        target: ScopeTarget,
    ) -> Result<ScopeInfo, Error> {
        let anchor = AnchorAddr::from_info(anchor).map_err(|e| Error::BadTrustAnchor {
            addr: anchor.peer_id.clone(),
            reason: e.to_string(),
        })?;
        self.inner.scope_info(&anchor, target).await
    }

    /// Watches every change under `prefix` committed from now on: locates the scope
    /// governing `prefix`, asks one of its members where "now" is (its applied index, which
    /// becomes [`Watch::position`]) and starts long-polling from there.
    pub async fn watch(&self, prefix: &str) -> Result<Watch, Error> {
        let prefix = Name::parse(prefix).map_err(|e| Error::invalid_name(prefix, e))?;
        let at = self.locate(&prefix).await?;
        let request = WatchRequest {
            scope: at.scope,
            prefix: prefix.clone(),
            after: None,
            wait_ms: 0,
        };
        let bytes = codec::encode(&request).map_err(Error::from_proto)?;
        let deadline = Instant::now() + self.inner.cfg.operation_timeout;
        let judge = |from: &AnchorAddr, reply: Result<Vec<u8>, AttemptError>| {
            let bytes = match reply {
                Ok(b) => b,
                Err(e) => return Step::next(e),
            };
            match decode::<WatchResponse>(from, &bytes) {
                Ok(WatchResponse::Changes { scope, up_to, .. }) if scope == at.scope => {
                    Step::Done(Ok(up_to))
                }
                Ok(WatchResponse::Error(w)) => judge_wire_error(w),
                Ok(other) => Step::next(format!("unexpected answer to a watch start: {other:?}")),
                Err(e) => Step::Next {
                    reason: e.to_string(),
                    fallback: Some(e),
                },
            }
        };
        let answered = self
            .inner
            .exchange(
                Protocol::Watch,
                bytes,
                &prefix,
                at.scope,
                Route::ANY,
                deadline,
                judge,
            )
            .await
            .map_err(Failure::into_error)?;
        Ok(watch::spawn(
            self.inner.clone(),
            at.scope,
            at.prefix,
            prefix,
            answered.0.value,
        ))
    }

    /// Watches every change under `prefix` after log index `after` (a former
    /// [`Watch::position`]), starting at the deepest scope with a cached referral above
    /// `prefix` (the root when none): scopes the prefix has moved away from deliver their
    /// history up to the move and refer the watch onwards.
    pub async fn watch_from(&self, prefix: &Name, after: u64) -> Result<Watch, Error> {
        let start = self.inner.start(prefix);
        Ok(watch::spawn(
            self.inner.clone(),
            start.scope,
            start.prefix,
            prefix.clone(),
            after,
        ))
    }

    /// The walk behind every resolve; see the [`crate::walk`] module docs.
    async fn walk(&self, name: &Name, level: ReadLevel, trace: &mut Trace) -> WalkEnd {
        let start = self.inner.start(name);
        if level == ReadLevel::Cached {
            if let Some(set) = self.inner.cache().get(name, Instant::now()) {
                trace.hops.push(Hop {
                    scope: start.scope,
                    prefix: start.prefix.clone(),
                    peer: None,
                    rtt: Duration::ZERO,
                    outcome: HopOutcome::CachedAnswer,
                });
                return WalkEnd {
                    result: Ok(set),
                    scope: start.scope,
                    prefix: start.prefix,
                };
            }
        }
        self.walk_from(name, level, start, trace).await
    }

    async fn walk_from(
        &self,
        name: &Name,
        level: ReadLevel,
        start: Start,
        trace: &mut Trace,
    ) -> WalkEnd {
        let deadline = Instant::now() + self.inner.cfg.operation_timeout;
        let (mut scope, mut prefix, mut from_cache) = (start.scope, start.prefix, start.cached);
        let mut walk = Walk::new(scope, prefix.clone());
        let end = |result, scope, prefix| WalkEnd {
            result,
            scope,
            prefix,
        };
        loop {
            if from_cache {
                trace.hops.push(Hop {
                    scope,
                    prefix: prefix.clone(),
                    peer: None,
                    rtt: Duration::ZERO,
                    outcome: HopOutcome::CachedReferral,
                });
            }
            if let Err(e) = walk.request() {
                return end(Err(e), scope, prefix);
            }
            let started = Instant::now();
            let hop = |peer, rtt, outcome| Hop {
                scope,
                prefix: prefix.clone(),
                peer,
                rtt,
                outcome,
            };
            match self.inner.ask(name, level, scope, &prefix, deadline).await {
                Ok(Answered { value, peer, rtt }) => match value {
                    Answer::Found { set, .. } => {
                        let version = set.version;
                        trace
                            .hops
                            .push(hop(Some(peer), rtt, HopOutcome::Found { version }));
                        self.inner
                            .cache()
                            .insert(name.clone(), set.clone(), Instant::now());
                        return end(Ok(set), scope, prefix);
                    }
                    Answer::NotFound { name: got, .. } => {
                        trace.hops.push(hop(Some(peer), rtt, HopOutcome::NotFound));
                        self.inner.cache().remove(name);
                        return end(Err(Error::NotFound { name: got }), scope, prefix);
                    }
                    Answer::Referral { referral, .. } => {
                        let outcome = HopOutcome::Referral(referral.clone());
                        trace.hops.push(hop(Some(peer), rtt, outcome));
                        if let Err(e) = walk.follow(&referral) {
                            return end(Err(e), scope, prefix);
                        }
                        self.inner.take_referral(&referral);
                        scope = referral.scope;
                        prefix = referral.prefix;
                        from_cache = false;
                    }
                },
                Err(failure) => {
                    let e = failure.into_error();
                    let reason = e.to_string();
                    trace
                        .hops
                        .push(hop(None, started.elapsed(), HopOutcome::Failed { reason }));
                    let stale = from_cache && !matches!(e, Error::Invalid { .. });
                    if !stale {
                        return end(Err(e), scope, prefix);
                    }
                    // The cached referral led nowhere (the scope moved, or its members
                    // changed): forget it and walk again from the root, once.
                    tracing::debug!(%scope, %prefix, error = %e, "cached referral failed; walking from the root");
                    self.inner.referrals().remove(&prefix);
                    scope = ScopeId::root();
                    prefix = Name::root();
                    walk = Walk::new(scope, prefix.clone());
                    from_cache = false;
                }
            }
        }
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

    /// Sends a signed mutation to the leader of the scope governing its name (retrying as
    /// the module docs say) and returns the committed version. The signatures and body are
    /// checked here first, so a bad mutation fails without a round trip. Drops the cached
    /// answer for the name.
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
        let name = body.op.name();
        let mut ambiguity = None;
        let mut committed_by = None;
        let mut start = self.inner.start(name);
        let result = loop {
            let judge = |from: &AnchorAddr, reply| {
                judge_mutate(&mut ambiguity, &mut committed_by, from, reply)
            };
            let result = self
                .inner
                .exchange(
                    Protocol::Mutate,
                    bytes.clone(),
                    name,
                    start.scope,
                    Route::LEADER_WRITE,
                    deadline,
                    judge,
                )
                .await;
            let stale = matches!(
                &result,
                Err(Failure::Exhausted(Exhausted {
                    fallback: Some(Error::NoScope { .. }),
                    ..
                }))
            );
            if stale && start.cached {
                // The cached referral's scope no longer governs the name: start over at the
                // root (the same signed bytes; replays are refused by nonce).
                self.inner.referrals().remove(&start.prefix);
                start = Start {
                    scope: ScopeId::root(),
                    prefix: Name::root(),
                    cached: false,
                };
                continue;
            }
            break result;
        };
        self.inner.cache().remove(name);
        if let (Some(info), Ok(answered)) = (committed_by, &result) {
            if let Ok(leader) = AnchorAddr::from_info(&info) {
                self.inner.learn_leader(&answered.1, leader);
            }
        }
        result
            .map(|(answered, _)| answered.value)
            .map_err(|failure| match (failure, ambiguity) {
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
        let anchor = self
            .inner
            .directory()
            .all_anchors()
            .into_iter()
            .find(|a| a.peer == *peer);
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

/// Where a walk ended: its result and the last scope asked.
struct WalkEnd {
    result: Result<RecordSet, Error>,
    scope: ScopeId,
    prefix: Name,
}

fn parse_trust_anchors(addrs: &[Multiaddr]) -> Result<Vec<AnchorAddr>, Error> {
    if addrs.is_empty() {
        return Err(Error::BadConfig {
            reason: "no trust anchors: give at least one root-scope anchor as \
                     /…/p2p/<peer id>"
                .into(),
        });
    }
    let mut anchors: Vec<AnchorAddr> = Vec::new();
    for addr in addrs {
        let given = AnchorAddr::from_multiaddr(addr).map_err(|e| Error::BadTrustAnchor {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        match anchors.iter_mut().find(|a| a.peer == given.peer) {
            Some(known) => known.merge_addrs(&given.addrs),
            None => anchors.push(given),
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
pub(crate) struct AttemptError {
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
    /// The name is governed by this child scope (`WireError::Delegated`): cache the
    /// referral and continue at its members.
    Refer(Referral),
    /// Nothing changed and the same scope will do better shortly (`WireError::Moving`):
    /// wait, then ask again, until the deadline; this error if it never does.
    Wait(Error),
}

impl<T> Step<T> {
    fn next(reason: impl fmt::Display) -> Step<T> {
        Step::Next {
            reason: reason.to_string(),
            fallback: None,
        }
    }
}

/// A final answer from [`Inner::exchange`]: the value, who gave it, and the round-trip
/// time of that last request.
#[derive(Debug)]
struct Answered<T> {
    value: T,
    peer: PeerId,
    rtt: Duration,
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

    /// A refusal that is not the anchor's fault and may pass (`Moving`): remembered as the
    /// error to return if nothing better comes, without ruling the anchor out.
    fn note_wait(&mut self, peer: PeerId, error: Error) {
        self.last = Some((peer, error.to_string()));
        self.fallback = Some(error);
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
    pub(crate) fn directory(&self) -> MutexGuard<'_, Directory> {
        lock(&self.directory)
    }

    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    pub(crate) fn referrals(&self) -> MutexGuard<'_, ReferralCache> {
        lock(&self.referrals)
    }

    /// The members of `scope` in the order to try them (none when the scope is unknown).
    pub(crate) fn plan(&self, scope: &ScopeId, leader_first: bool) -> Vec<AnchorAddr> {
        let directory = self.directory();
        directory
            .get(scope)
            .map(|s| s.members.plan(leader_first))
            .unwrap_or_default()
    }

    /// Records that `peer` failed a request to `scope`.
    pub(crate) fn failed(&self, scope: &ScopeId, peer: &PeerId) {
        if let Some(s) = self.directory().get_mut(scope) {
            s.members.failed(peer);
        }
    }

    fn with_members<R>(&self, scope: &ScopeId, f: impl FnOnce(&mut Members) -> R) -> Option<R> {
        self.directory().get_mut(scope).map(|s| f(&mut s.members))
    }

    fn learn_leader(&self, scope: &ScopeId, leader: AnchorAddr) {
        self.with_members(scope, |m| {
            let leader = m.learn(leader);
            m.set_leader(leader.peer);
        });
    }

    /// Learns the members a verified referral lists.
    pub(crate) fn adopt(&self, referral: &Referral) {
        self.directory().adopt(referral);
    }

    /// Takes in a verified referral: its members, and the referral cache for its TTL.
    pub(crate) fn take_referral(&self, referral: &Referral) {
        self.adopt(referral);
        self.referrals().insert(referral.clone(), Instant::now());
    }

    /// Where a walk for `name` starts: the deepest cached referral (its members learned
    /// again in case they were forgotten), or the root.
    fn start(&self, name: &Name) -> Start {
        let cached = self.referrals().deepest(name, Instant::now());
        match cached {
            Some(r) => {
                self.adopt(&r);
                Start {
                    scope: r.scope,
                    prefix: r.prefix,
                    cached: true,
                }
            }
            None => Start {
                scope: ScopeId::root(),
                prefix: Name::root(),
                cached: false,
            },
        }
    }

    fn scope_ref(&self, scope: ScopeId, prefix: Name) -> ScopeRef {
        let members = self
            .plan(&scope, true)
            .iter()
            .map(|a| AnchorInfo {
                peer_id: a.peer.to_base58(),
                addrs: a.addrs.iter().map(|x| x.to_string()).collect(),
            })
            .collect();
        ScopeRef {
            scope,
            prefix,
            members,
        }
    }

    /// One hop of a walk: asks `scope`'s members for `name` until one gives a verified
    /// answer.
    async fn ask(
        &self,
        name: &Name,
        level: ReadLevel,
        scope: ScopeId,
        prefix: &Name,
        deadline: Instant,
    ) -> Result<Answered<Answer>, Failure> {
        let request = ResolveRequest {
            name: name.clone(),
            level,
            scope,
        };
        let bytes = codec::encode(&request).map_err(|e| Failure::Answered(Error::from_proto(e)))?;
        let route = match level {
            ReadLevel::Linearizable => Route::LEADER_READ,
            ReadLevel::Cached | ReadLevel::Replica => Route::ANY,
        };
        let judge = |from: &AnchorAddr, reply| self.judge_resolve(name, scope, prefix, from, reply);
        self.exchange(
            Protocol::Resolve,
            bytes,
            name,
            scope,
            route,
            deadline,
            judge,
        )
        .await
        .map(|(answered, _)| answered)
    }

    /// [`judge_resolve`] against this client's members of `scope`, counting and logging
    /// rejected answers.
    fn judge_resolve(
        &self,
        name: &Name,
        scope: ScopeId,
        prefix: &Name,
        from: &AnchorAddr,
        reply: Result<Vec<u8>, AttemptError>,
    ) -> Step<Answer> {
        let asked = Asked {
            peer: from.peer,
            scope,
            prefix,
            name,
        };
        let is_member = |p: &PeerId| self.directory().is_member(&scope, p);
        let step = judge_resolve(asked, from, reply, &is_member);
        if let Step::Next {
            fallback: Some(e @ (Error::Unverified { .. } | Error::NotMember { .. })),
            ..
        } = &step
        {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %from.peer, %scope, %name, error = %e, "answer rejected");
        }
        step
    }

    async fn scope_info(
        &self,
        anchor: &AnchorAddr,
        target: ScopeTarget,
    ) -> Result<ScopeInfo, Error> {
        match self
            .admin(anchor, &AdminRequest::ScopeInfo { target })
            .await?
        {
            AdminResponse::Scope(info) => Ok(*info),
            other => Err(Error::BadResponse {
                peer: anchor.peer,
                reason: format!("asked for scope info, got {other:?}"),
            }),
        }
    }

    /// Sends `bytes` to member after member of `scope` until `judge` calls an answer final,
    /// for at most `attempts_max` requests and until `deadline`. A full round of failures is
    /// followed by a short pause that doubles each round. A `Delegated` refusal moves the
    /// exchange to the child scope it names (after checking it leads deeper towards `name`);
    /// a `Moving` refusal waits and asks again without counting against `attempts_max`.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<T>(
        &self,
        protocol: Protocol,
        bytes: Vec<u8>,
        name: &Name,
        mut scope: ScopeId,
        route: Route,
        deadline: Instant,
        mut judge: impl FnMut(&AnchorAddr, Result<Vec<u8>, AttemptError>) -> Step<T>,
    ) -> Result<(Answered<T>, ScopeId), Failure> {
        let mut prefix = match self.directory().get(&scope) {
            Some(s) => s.prefix.clone(),
            None => Name::root(),
        };
        let mut queue: VecDeque<AnchorAddr> = self.plan(&scope, route.leader_first).into();
        let mut attempts = Attempts::new();
        let mut backoff = BACKOFF_MIN;
        while attempts.count < self.cfg.attempts_max {
            let Some(target) = queue.pop_front() else {
                queue = self.plan(&scope, route.leader_first).into();
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
            let sent = Instant::now();
            let reply = self.send(&target, protocol, bytes.clone(), timeout).await;
            let rtt = sent.elapsed();
            match judge(&target, reply) {
                Step::Done(result) => {
                    let from_leader = matches!(result, Ok(_) | Err(Error::NotFound { .. }));
                    if route.answered_by_leader && from_leader {
                        self.with_members(&scope, |m| m.set_leader(target.peer));
                    }
                    let value = result.map_err(Failure::Answered)?;
                    let answered = Answered {
                        value,
                        peer: target.peer,
                        rtt,
                    };
                    return Ok((answered, scope));
                }
                Step::Redirect(info) => {
                    self.redirect(scope, &target, &info, &mut queue, &mut attempts)
                }
                Step::Next { reason, fallback } => {
                    tracing::debug!(peer = %target.peer, %reason, "attempt failed; trying the next anchor");
                    self.failed(&scope, &target.peer);
                    attempts.note(target.peer, reason, fallback);
                }
                Step::Refer(referral) => {
                    let checked = if self.directory().is_member(&scope, &target.peer) {
                        check_referral(&referral, &prefix, name)
                    } else {
                        Err(format!("{} is not a member of scope {scope}", target.peer))
                    };
                    match checked {
                        Ok(()) => {
                            tracing::debug!(peer = %target.peer, from = %scope, to = %referral.scope, prefix = %referral.prefix, "delegated; continuing at the child scope");
                            self.take_referral(&referral);
                            let reason = format!(
                                "{name} is delegated to scope {} at {}",
                                referral.scope, referral.prefix
                            );
                            attempts.note(target.peer, reason, None);
                            scope = referral.scope;
                            prefix = referral.prefix;
                            queue = self.plan(&scope, route.leader_first).into();
                            attempts.settled.clear();
                            backoff = BACKOFF_MIN;
                        }
                        Err(reason) => {
                            self.rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(peer = %target.peer, %scope, %name, %reason, "delegation referral rejected");
                            let e = Error::Unverified {
                                peer: target.peer,
                                reason,
                            };
                            attempts.note(target.peer, e.to_string(), Some(e));
                        }
                    }
                }
                Step::Wait(error) => {
                    // Nothing changed: not an attempt against attempts_max, only the deadline.
                    attempts.count -= 1;
                    attempts.note_wait(target.peer, error);
                    queue.push_front(target);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        attempts.deadline_passed = true;
                        break;
                    }
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        Err(Failure::Exhausted(
            attempts.exhausted(self.cfg.attempts_max),
        ))
    }

    /// Follows a `NotLeader` redirect from a member of `scope`: learns the leader as a
    /// member of that scope and puts it first in the queue. A redirect from an anchor that
    /// is not a member teaches nothing.
    fn redirect(
        &self,
        scope: ScopeId,
        from: &AnchorAddr,
        info: &AnchorInfo,
        queue: &mut VecDeque<AnchorAddr>,
        attempts: &mut Attempts,
    ) {
        let mut directory = self.directory();
        let Some(known) = directory.get_mut(&scope) else {
            attempts.note(from.peer, "redirect for an unknown scope".into(), None);
            return;
        };
        let members = &mut known.members;
        if !members.contains(&from.peer) {
            attempts.note(from.peer, "redirect from a non-member ignored".into(), None);
            return;
        }
        match AnchorAddr::from_info(info) {
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

    /// One request to one anchor, bounded by `timeout`. Resolve requests are counted
    /// ([`Client::round_trips`]).
    pub(crate) async fn send(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, AttemptError> {
        if protocol == Protocol::Resolve {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
        }
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

    async fn admin(
        &self,
        anchor: &AnchorAddr,
        request: &AdminRequest,
    ) -> Result<AdminResponse, Error> {
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

fn decode<T: serde::de::DeserializeOwned>(from: &AnchorAddr, bytes: &[u8]) -> Result<T, Error> {
    codec::decode(bytes, CLIENT_FRAME_BYTES_MAX).map_err(|e| Error::BadResponse {
        peer: from.peer,
        reason: e.to_string(),
    })
}

/// What one resolve attempt means: a verified answer (found, not-found or referral), a
/// redirect, or a reason to try another member. A rejected answer ([`verify_answer`]) comes
/// back as `Next` with the rejection as its fallback, so the anchor is not asked again in
/// this hop.
fn judge_resolve(
    asked: Asked<'_>,
    from: &AnchorAddr,
    reply: Result<Vec<u8>, AttemptError>,
    is_member: &dyn Fn(&PeerId) -> bool,
) -> Step<Answer> {
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
    match verify_answer(&signed, asked, is_member) {
        Ok(answer) => Step::Done(Ok(answer)),
        Err(e) => Step::Next {
            reason: e.to_string(),
            fallback: Some(e),
        },
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
    from: &AnchorAddr,
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
        // Refused before anything was proposed: not ambiguous.
        MutateResponse::Error(WireError::Delegated { referral, .. }) => Step::Refer(referral),
        MutateResponse::Error(WireError::Moving { prefix }) => Step::Wait(Error::Moving { prefix }),
        MutateResponse::Error(w) => judge_wire_error(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ScopeId;

    fn anchor() -> AnchorAddr {
        AnchorAddr {
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

    fn signed(key: &libp2p::identity::Keypair, answer: &Answer) -> Vec<u8> {
        let body = codec::encode(answer).unwrap();
        let signed = proto::msg::SignedAnswer {
            signature: key.sign(&Answer::signing_bytes(&body)).unwrap(),
            public_key: key.public().encode_protobuf(),
            body,
        };
        codec::encode(&ResolveResponse::Signed(signed)).unwrap()
    }

    #[test]
    fn resolve_answers_are_verified_before_they_count() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let a = AnchorAddr {
            peer: key.public().to_peer_id(),
            addrs: vec![],
        };
        let asked_name = Name::parse("/a").unwrap();
        let root = Name::root();
        let asked = Asked {
            peer: a.peer,
            scope: ScopeId::root(),
            prefix: &root,
            name: &asked_name,
        };
        let member = |_: &PeerId| true;
        let stranger = |_: &PeerId| false;
        let not_found = |name: &str| Answer::NotFound {
            scope: ScopeId::root(),
            name: Name::parse(name).unwrap(),
        };
        let ok = judge_resolve(asked, &a, Ok(signed(&key, &not_found("/a"))), &member);
        assert!(matches!(ok, Step::Done(Ok(Answer::NotFound { .. }))));
        let other = judge_resolve(asked, &a, Ok(signed(&key, &not_found("/b"))), &member);
        assert!(matches!(
            other,
            Step::Next {
                fallback: Some(Error::Unverified { .. }),
                ..
            }
        ));
        let outsider = judge_resolve(asked, &a, Ok(signed(&key, &not_found("/a"))), &stranger);
        assert!(matches!(
            outsider,
            Step::Next {
                fallback: Some(Error::NotMember { .. }),
                ..
            }
        ));
        let garbage = judge_resolve(asked, &a, Ok(vec![0xff; 3]), &member);
        assert!(matches!(garbage, Step::Next { .. }));
        let error = ResolveResponse::Error(WireError::NoScope {
            name: asked_name.clone(),
        });
        let no_scope = judge_resolve(asked, &a, Ok(codec::encode(&error).unwrap()), &member);
        assert!(matches!(
            no_scope,
            Step::Next {
                fallback: Some(Error::NoScope { .. }),
                ..
            }
        ));
    }

    #[test]
    fn delegated_and_moving_are_not_ambiguous() {
        let a = anchor();
        let referral = Referral {
            scope: ScopeId::derive(&[b"eu"]),
            prefix: Name::parse("/eu").unwrap(),
            epoch: 1,
            members: vec![],
            ttl_s: 60,
        };
        let mut ambiguity = None;
        let delegated = WireError::Delegated {
            name: Name::parse("/eu/a").unwrap(),
            referral: referral.clone(),
        };
        let step = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(delegated));
        assert!(matches!(step, Step::Refer(r) if r == referral));
        let moving = WireError::Moving {
            prefix: Name::parse("/eu").unwrap(),
        };
        let step = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(moving));
        assert!(matches!(step, Step::Wait(Error::Moving { .. })));
        assert!(ambiguity.is_none());
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

//! [`Client`] and [`ClientConfig`]: the public calls. Resolve names by walking referrals,
//! send signed mutations to the scope that governs a name, watch prefixes, and make
//! operator calls.
//!
//! Every call is one straight path: encode the request, run it through the one retry
//! engine (the private `exchange` module) at one scope's members, and let a judge (`judge`)
//! decide what each answer means. The engine tries the scope's known members (the leader
//! first for linearizable reads and writes), follows `NotLeader` redirects, moves on after
//! network failures, rejected answers and `Unavailable`, follows `Delegated` to the child
//! scope, waits out `Moving`, and stops after `attempts_max` requests or at the call's
//! deadline, whichever comes first. A resolve runs the engine once per scope on its walk
//! (see [`crate::walk`]); a walk that started from a cached referral which no longer works
//! starts over at the root once. What the client has learned (members, leaders, referrals,
//! answers) is shared by its clones and its watches.
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

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use proto::codec;
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, Answer, ResolveRequest, ScopeInfo, ScopeTarget,
    WatchRequest,
};
use proto::{
    AnchorInfo, Mutation, Name, Op, ReadLevel, Record, RecordSet, ScopeId, SignedMutation,
};

use crate::addr::AnchorAddr;
use crate::config::parse_trust_anchors;
use crate::error::Error;
use crate::exchange::{Engine, Failure, Retry, Route, Step};
use crate::judge::{judge_admin, judge_resolve_at, judge_watch_start};
use crate::known::{Known, Start};
use crate::mutate;
use crate::net::{self, NetConfig, Protocol};
use crate::net_owner::NetOwner;
use crate::walk::{self, ScopeRef, Trace};
use crate::watch::{self, Watch, WatchLink};

pub use crate::config::{ClientConfig, ATTEMPTS_MAX_LIMIT};

/// A handle to the anchors of an Anchorage cluster. Cheap to clone; clones share the
/// network task, the known scopes and members, and the caches. The network task stops when
/// the last clone (and the last [`Watch`]) is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What the clones of one client share.
struct Inner {
    cfg: ClientConfig,
    trust: Vec<AnchorAddr>,
    engine: Engine,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local_peer_id", &self.local_peer_id())
            .field("trust_anchors", &self.trust_anchors())
            .field("leader", &self.leader())
            .finish()
    }
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
        let known = Known::new(
            trust.clone(),
            cfg.cache_entries_max,
            cfg.referral_entries_max,
        );
        let retry = Retry {
            request_timeout: cfg.request_timeout,
            operation_timeout: cfg.operation_timeout,
            attempts_max: cfg.attempts_max,
        };
        let engine = Engine::new(Arc::new(NetOwner::new(net)), Arc::new(known), retry);
        let inner = Inner { cfg, trust, engine };
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
        self.inner.engine.net.local_peer_id()
    }

    /// The trust anchors' peer ids, in the order given.
    pub fn trust_anchors(&self) -> Vec<PeerId> {
        self.inner.trust.iter().map(|a| a.peer).collect()
    }

    /// Every anchor this client knows (root members first: trust anchors and anchors
    /// learned from redirects; then the members of child scopes) with the addresses it
    /// dials them at.
    pub fn known_anchors(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let directory = self.known().directory();
        directory
            .all_anchors()
            .into_iter()
            .map(|a| (a.peer, a.addrs))
            .collect()
    }

    /// The root scope's leader as this client last saw it (from a redirect or a
    /// linearizable answer).
    pub fn leader(&self) -> Option<PeerId> {
        self.known().directory().root().leader()
    }

    /// The leader of `scope` as this client last saw it.
    pub fn leader_of(&self, scope: &ScopeId) -> Option<PeerId> {
        let directory = self.known().directory();
        directory.get(scope).and_then(|s| s.members.leader())
    }

    /// Drops the cached answer for `name`, if any.
    pub fn invalidate(&self, name: &Name) {
        self.known().cache().remove(name);
    }

    /// Drops every cached answer and referral: the next walk starts at the root.
    pub fn clear_cache(&self) {
        self.known().cache().clear();
        self.known().referrals().clear();
    }

    /// Resolve requests this client has sent (every hop of every walk, retries included).
    pub fn round_trips(&self) -> u64 {
        self.inner.engine.round_trips()
    }

    /// Signed answers (and `Delegated` referrals) this client rejected: bad signature,
    /// wrong signer, a signer not a member of the scope, another scope or name, a referral
    /// that leads nowhere deeper.
    pub fn rejected_answers(&self) -> u64 {
        self.inner.engine.rejected()
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
        walk::walk(self.engine(), name, level, &mut trace)
            .await
            .result
    }

    /// [`Client::resolve_name`], with every hop it took (`resolve --trace`).
    pub async fn resolve_traced(
        &self,
        name: &Name,
        level: ReadLevel,
    ) -> (Result<RecordSet, Error>, Trace) {
        let mut trace = Trace::default();
        let result = walk::walk(self.engine(), name, level, &mut trace)
            .await
            .result;
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
        let timeout = self.inner.cfg.request_timeout;
        let engine = self.engine();
        let reply = engine
            .send(&target, Protocol::Resolve, bytes, timeout)
            .await;
        let step = judge_resolve_at(engine, name, at.scope, &at.prefix, &target, reply);
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
                self.known()
                    .cache()
                    .insert(name.clone(), set.clone(), Instant::now());
                Ok(set)
            }
            Answer::NotFound { name, .. } => Err(Error::NotFound { name }),
            Answer::Members { .. } => Err(Error::unavailable("unexpected answer to a resolve")),
            Answer::Referral { referral, .. } => {
                self.known().take_referral(&referral);
                let start = Start {
                    scope: referral.scope,
                    prefix: referral.prefix.clone(),
                    range_start: referral.range.start.clone(),
                    cached: false,
                };
                walk::walk_from(self.engine(), name, level, start, &mut trace)
                    .await
                    .result
            }
        }
    }

    /// The scope governing `name`: the walk from the deepest cached referral to the scope
    /// that answers for the name itself (one request at least, more when referrals are
    /// followed; the answer is cached on the way).
    pub async fn locate(&self, name: &Name) -> Result<ScopeRef, Error> {
        let mut trace = Trace::default();
        let end = walk::walk(self.engine(), name, ReadLevel::Replica, &mut trace).await;
        match end.result {
            Ok(_) | Err(Error::NotFound { .. }) => {
                Ok(walk::scope_ref(self.known(), end.scope, end.prefix))
            }
            Err(e) => Err(e),
        }
    }

    /// The [`ScopeInfo`] of the scope governing `name`, asked of its members (the leader
    /// first when known) until one answers.
    pub async fn scope_info(&self, name: &Name) -> Result<ScopeInfo, Error> {
        let at = self.locate(name).await?;
        let plan = self.known().plan(&at.scope, true);
        let mut last = Error::unavailable(format!("no known member of scope {}", at.scope));
        for anchor in plan {
            let target = ScopeTarget::Id(at.scope);
            match self.scope_info_of(&anchor, target).await {
                Ok(info) => return Ok(info),
                Err(e) => {
                    self.known().failed(&at.scope, &anchor.peer);
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
        self.scope_info_of(&anchor, target).await
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
            children: None,
        };
        let bytes = codec::encode(&request).map_err(Error::from_proto)?;
        let deadline = Instant::now() + self.inner.cfg.operation_timeout;
        let judge = |_: &AnchorAddr, reply| judge_watch_start(at.scope, reply);
        let answered = self
            .engine()
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
            self.watch_link(),
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
        let start = self.known().start(prefix);
        Ok(watch::spawn(
            self.watch_link(),
            start.scope,
            start.prefix,
            prefix.clone(),
            after,
        ))
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
        mutate::send(self.engine(), signed, body, self.inner.cfg.clock.unix_ms()).await
    }

    /// Wraps `op` in a [`Mutation`] with a random nonce and `expires_at_ms` set to now plus
    /// `mutation_validity`, for callers that sign it themselves (k-of-n policy changes:
    /// [`SignedMutation::sign`], then [`SignedMutation::add_signature`] per extra signer).
    pub fn prepare(&self, op: Op) -> Mutation {
        let validity_ms = self.inner.cfg.mutation_validity.as_millis() as u64;
        Mutation {
            op,
            nonce: rand::random(),
            expires_at_ms: self.inner.cfg.clock.unix_ms().saturating_add(validity_ms),
        }
    }

    /// Sends a signed mutation to the leader of the scope governing its name (retrying as
    /// the module docs say) and returns the committed version. The signatures and body are
    /// checked here first, so a bad mutation fails without a round trip. Drops the cached
    /// answer for the name.
    pub async fn submit(&self, mutation: SignedMutation) -> Result<u64, Error> {
        let body = mutation.verify().map_err(Error::from_proto)?;
        mutate::send(
            self.engine(),
            mutation,
            body,
            self.inner.cfg.clock.unix_ms(),
        )
        .await
    }

    /// Sends one operator call to one known anchor (no retries, no redirects). An
    /// [`AdminResponse::Error`] comes back as the matching [`Error`].
    pub async fn admin(
        &self,
        peer: &PeerId,
        request: AdminRequest,
    ) -> Result<AdminResponse, Error> {
        let anchor = self
            .known()
            .directory()
            .all_anchors()
            .into_iter()
            .find(|a| a.peer == *peer);
        let anchor = anchor.ok_or(Error::UnknownAnchor { peer: *peer })?;
        self.admin_at(&anchor, &request).await
    }

    /// Asks every trust anchor for its status, concurrently; one entry per trust anchor,
    /// in the order given to [`Client::connect`].
    pub async fn status_all(&self) -> Vec<(PeerId, Result<AnchorStatus, Error>)> {
        let asks = self.inner.trust.iter().map(|anchor| async move {
            let reply = self.admin_at(anchor, &AdminRequest::Status).await;
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

    fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn known(&self) -> &Known {
        &self.inner.engine.known
    }

    /// What a watch task started by this client holds instead of the client.
    fn watch_link(&self) -> WatchLink {
        WatchLink {
            net: self.engine().net.clone(),
            known: self.engine().known.clone(),
            request_timeout: self.inner.cfg.request_timeout,
        }
    }

    /// One operator call to one anchor (no retries).
    async fn admin_at(
        &self,
        anchor: &AnchorAddr,
        request: &AdminRequest,
    ) -> Result<AdminResponse, Error> {
        let bytes = codec::encode(request).map_err(Error::from_proto)?;
        let timeout = self.inner.cfg.request_timeout;
        let reply = self
            .engine()
            .send(anchor, Protocol::Admin, bytes, timeout)
            .await;
        judge_admin(anchor, reply)
    }

    /// The [`ScopeInfo`] one anchor gives for `target`.
    async fn scope_info_of(
        &self,
        anchor: &AnchorAddr,
        target: ScopeTarget,
    ) -> Result<ScopeInfo, Error> {
        match self
            .admin_at(anchor, &AdminRequest::ScopeInfo { target })
            .await?
        {
            AdminResponse::Scope(info) => Ok(*info),
            other => Err(Error::BadResponse {
                peer: anchor.peer,
                reason: format!("asked for scope info, got {other:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[tokio::test]
    async fn mutation_expiry_follows_the_configured_clock() {
        let clock = ManualClock::new(1_000_000);
        let cfg = ClientConfig {
            clock: clock.clone(),
            mutation_validity: Duration::from_secs(60),
            ..ClientConfig::default()
        };
        let anchor = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", PeerId::random());
        let client = Client::connect_str(&[&anchor], cfg).await.unwrap();
        let body = client.prepare(Op::Delete {
            name: Name::parse("/a").unwrap(),
        });
        assert_eq!(body.expires_at_ms, 1_060_000);
        let signed = SignedMutation::sign(&body, &SigningKey::from_bytes(&[7; 32])).unwrap();
        // Expired by the client's clock: refused before anything is sent.
        clock.advance(Duration::from_secs(61));
        let err = client.submit(signed).await.unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
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

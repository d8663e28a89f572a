//! The referral walk behind every resolve, what it reports, and its loop guard.
//!
//! To resolve a name the client asks the deepest scope it holds an unexpired referral for
//! (the root scope, whose members are the trust anchors, when it holds none). Each verified
//! answer is the record set, a not-found, or a referral one level (or more) deeper towards
//! the name; the walk follows referrals, caching each for its TTL, until a scope answers for
//! the name itself. A cold walk to a name `d` scopes deep therefore sends `d` resolve
//! requests; a warm one sends none (the answer is cached), or one when only the referrals are.
//! Each hop is one run of the retry engine (the private `exchange` module) at that scope's
//! members. A walk that started from a cached referral which no longer works, or that
//! reached a scope no member hosts any more (`NoScope`: a child merged back into its parent,
//! referred to by a parent member not yet past the merge), starts over at the root, at most
//! twice.
//!
//! `Walk` keeps a walk finite: at most [`REFERRAL_HOPS_MAX`] requests, no scope asked
//! twice, and every referral strictly deeper than the scope that gave it. [`Trace`] is what
//! `resolve --trace` prints: one [`Hop`] per cache hit or request, like `dig +trace`.

use std::fmt;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use proto::codec;
use proto::limits::REFERRAL_HOPS_MAX;
use proto::msg::{Answer, ResolveRequest};
use proto::{AnchorInfo, Name, ReadLevel, RecordSet, Referral, ScopeId};

use crate::addr::AnchorAddr;
use crate::error::Error;
use crate::exchange::{Answered, Engine, Failure, Route};
use crate::judge::judge_resolve_at;
use crate::known::{Known, Start};
use crate::mutate::RESTARTS_MAX;
use crate::net::Protocol;

/// A scope and where to reach it: what [`crate::Client::locate`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRef {
    /// The scope's id.
    pub scope: ScopeId,
    /// The prefix it governs.
    pub prefix: Name,
    /// Its members as this client knows them (trust anchors for the root, the referral's
    /// members for a child, plus leaders learned from redirects).
    pub members: Vec<AnchorInfo>,
}

/// Every step of one resolve, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The steps.
    pub hops: Vec<Hop>,
}

impl Trace {
    /// Resolve requests this walk sent (hops that are not cache hits).
    pub fn requests(&self) -> usize {
        self.hops
            .iter()
            .filter(|h| {
                !matches!(
                    h.outcome,
                    HopOutcome::CachedAnswer | HopOutcome::CachedReferral
                )
            })
            .count()
    }
}

/// One step of a walk: a cache hit, or one scope asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The scope asked (or whose cached referral was used).
    pub scope: ScopeId,
    /// Its prefix.
    pub prefix: Name,
    /// The anchor whose verified answer ended the step (`None` for cache hits and failures).
    pub peer: Option<PeerId>,
    /// Round-trip time of the answering request (zero for cache hits; for a failure, the
    /// time the step took).
    pub rtt: Duration,
    /// What came of it.
    pub outcome: HopOutcome,
}

/// What one [`Hop`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HopOutcome {
    /// The answer was in the client's cache: no request.
    CachedAnswer,
    /// The walk started at this cached referral instead of the root.
    CachedReferral,
    /// The scope referred the walk to a child scope.
    Referral(Referral),
    /// The scope holds the name at this version.
    Found {
        /// The record set's version.
        version: u64,
    },
    /// The scope governs the name and holds nothing.
    NotFound,
    /// No member gave a usable answer.
    Failed {
        /// The error that ended the step.
        reason: String,
    },
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for hop in &self.hops {
            writeln!(f, "{hop}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = match &self.peer {
            Some(p) => p.to_string(),
            None => "-".to_string(),
        };
        let what = match &self.outcome {
            HopOutcome::CachedAnswer => "answer from the client cache".to_string(),
            HopOutcome::CachedReferral => "cached referral".to_string(),
            HopOutcome::Referral(r) if r.range.is_bounded() => format!(
                "referral to {} {} (scope {}, {} members, ttl {} s)",
                r.prefix,
                r.range,
                r.scope,
                r.members.len(),
                r.ttl_s
            ),
            HopOutcome::Referral(r) => format!(
                "referral to {} (scope {}, {} members, ttl {} s)",
                r.prefix,
                r.scope,
                r.members.len(),
                r.ttl_s
            ),
            HopOutcome::Found { version } => format!("found, version {version}"),
            HopOutcome::NotFound => "not found".to_string(),
            HopOutcome::Failed { reason } => format!("failed: {reason}"),
        };
        write!(
            f,
            "{:<24} {} {:<52} {:>6.1} ms  {what}",
            self.prefix.to_string(),
            &self.scope.to_hex()[..8],
            peer,
            self.rtt.as_secs_f64() * 1000.0
        )
    }
}

/// The loop guard of one walk: requests sent, scopes asked, and the prefix reached.
#[derive(Debug)]
pub(crate) struct Walk {
    requests: usize,
    seen: Vec<ScopeId>,
    prefix: Name,
    range_start: Option<Name>,
}

impl Walk {
    /// A walk starting at `scope`, which governs `prefix` (from `range_start` on, for a
    /// scope born from a range split).
    pub fn new(scope: ScopeId, prefix: Name, range_start: Option<Name>) -> Walk {
        Walk {
            requests: 0,
            seen: vec![scope],
            prefix,
            range_start,
        }
    }

    /// Counts one more request; refused past [`REFERRAL_HOPS_MAX`].
    pub fn request(&mut self) -> Result<(), Error> {
        if self.requests >= REFERRAL_HOPS_MAX {
            return Err(Error::ReferralLoop {
                reason: format!("{REFERRAL_HOPS_MAX} requests without reaching the name"),
            });
        }
        self.requests += 1;
        Ok(())
    }

    /// Takes a referral as the next scope to ask: refused when the scope was already asked
    /// in this walk, or when it does not lead nearer than the current one (a deeper prefix,
    /// or a range of the same prefix that starts later).
    pub fn follow(&mut self, referral: &Referral) -> Result<(), Error> {
        if self.seen.contains(&referral.scope) {
            return Err(Error::ReferralLoop {
                reason: format!(
                    "scope {} ({}) was referred to twice",
                    referral.scope, referral.prefix
                ),
            });
        }
        if !referral.narrower_than(&self.prefix, self.range_start.as_ref()) {
            return Err(Error::ReferralLoop {
                reason: format!(
                    "referral to {} does not lead below {}",
                    referral.prefix, self.prefix
                ),
            });
        }
        self.seen.push(referral.scope);
        self.prefix = referral.prefix.clone();
        self.range_start = referral.range.start.clone();
        Ok(())
    }
}

/// Where a walk ended: its result and the last scope asked.
pub(crate) struct WalkEnd {
    pub result: Result<RecordSet, Error>,
    pub scope: ScopeId,
    pub prefix: Name,
}

/// The walk behind every resolve, from the deepest cached referral above `name` (or the
/// cached answer itself, at [`ReadLevel::Cached`]).
pub(crate) async fn walk(
    engine: &Engine,
    name: &Name,
    level: ReadLevel,
    trace: &mut Trace,
) -> WalkEnd {
    let start = engine.known.start(name);
    if level == ReadLevel::Cached {
        if let Some(set) = engine.known.cache().get(name, Instant::now()) {
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
    walk_from(engine, name, level, start, trace).await
}

/// The walk from `start`: one hop per scope, following referrals until a scope answers for
/// `name`, within one operation timeout.
pub(crate) async fn walk_from(
    engine: &Engine,
    name: &Name,
    level: ReadLevel,
    start: Start,
    trace: &mut Trace,
) -> WalkEnd {
    let deadline = Instant::now() + engine.retry.operation_timeout;
    let (mut scope, mut prefix, mut from_cache) = (start.scope, start.prefix, start.cached);
    let mut range_start = start.range_start;
    let mut walk = Walk::new(scope, prefix.clone(), range_start.clone());
    let mut restarts = 0;
    // The scope that referred this walk to the current one, when that referral skipped a
    // level (a range a parent learned its child split off): if the range scope is gone, the
    // walk asks that scope for the range's prefix instead, once (`docs/design.md`, "The
    // walk").
    let mut skipped_from: Option<(ScopeId, Name, Option<Name>)> = None;
    let mut fell_back = false;
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
        match ask(engine, name, level, scope, &prefix, deadline).await {
            Ok(Answered { value, peer, rtt }) => match value {
                Answer::Found { set, .. } => {
                    let version = set.version;
                    trace
                        .hops
                        .push(hop(Some(peer), rtt, HopOutcome::Found { version }));
                    engine
                        .known
                        .cache()
                        .insert(name.clone(), set.clone(), Instant::now());
                    return end(Ok(set), scope, prefix);
                }
                Answer::NotFound { name: got, .. } => {
                    trace.hops.push(hop(Some(peer), rtt, HopOutcome::NotFound));
                    engine.known.cache().remove(name);
                    return end(Err(Error::NotFound { name: got }), scope, prefix);
                }
                Answer::Referral { referral, .. } => {
                    let outcome = HopOutcome::Referral(referral.clone());
                    trace.hops.push(hop(Some(peer), rtt, outcome));
                    if let Err(e) = walk.follow(&referral) {
                        return end(Err(e), scope, prefix);
                    }
                    engine.known.take_referral(&referral);
                    skipped_from = (referral.range.is_bounded() && referral.prefix != prefix)
                        .then(|| (scope, prefix.clone(), range_start.clone()));
                    scope = referral.scope;
                    prefix = referral.prefix;
                    range_start = referral.range.start;
                    from_cache = false;
                }
                Answer::Members { .. } => {
                    let e = Error::unavailable("unexpected answer to a resolve");
                    return end(Err(e), scope, prefix);
                }
            },
            Err(failure) => {
                let e = failure.into_error();
                let reason = e.to_string();
                trace
                    .hops
                    .push(hop(None, started.elapsed(), HopOutcome::Failed { reason }));
                // A cached referral that led nowhere (the scope moved, or its members
                // changed), or a scope no member hosts any more (a child that merged back
                // into its parent, referred to by a parent member not yet past the merge):
                // forget the referral and walk again from the root, a bounded number of times.
                let gone = matches!(e, Error::NoScope { .. }) && scope != ScopeId::root();
                let stale = (from_cache || gone) && !matches!(e, Error::Invalid { .. });
                if let Some(back) = skipped_from.take().filter(|_| gone && !fell_back) {
                    fell_back = true;
                    engine
                        .known
                        .referrals()
                        .remove(&prefix, range_start.as_ref());
                    let via = (back.0, back.1.clone());
                    if let Some(base) =
                        base_referral(engine, &prefix, level, via, deadline, trace).await
                    {
                        let mut fresh = Walk::new(back.0, back.1, back.2);
                        if walk.request().is_ok() && fresh.follow(&base).is_ok() {
                            tracing::debug!(%scope, %prefix, "range scope gone; walking through the delegated scope");
                            walk = fresh;
                            engine.known.take_referral(&base);
                            scope = base.scope;
                            prefix = base.prefix;
                            range_start = base.range.start;
                            from_cache = false;
                            continue;
                        }
                    }
                }
                if !stale || restarts >= RESTARTS_MAX {
                    return end(Err(e), scope, prefix);
                }
                restarts += 1;
                tracing::debug!(%scope, %prefix, error = %e, "referral failed; walking from the root");
                engine
                    .known
                    .referrals()
                    .remove(&prefix, range_start.as_ref());
                scope = ScopeId::root();
                prefix = Name::root();
                range_start = None;
                walk = Walk::new(scope, prefix.clone(), None);
                from_cache = false;
            }
        }
    }
}

/// The referral `via` (a scope and its prefix) gives for `prefix` itself: the delegation
/// of the whole subtree, which a range learned under it skipped. One request, traced.
async fn base_referral(
    engine: &Engine,
    prefix: &Name,
    level: ReadLevel,
    via: (ScopeId, Name),
    deadline: Instant,
    trace: &mut Trace,
) -> Option<Referral> {
    let started = Instant::now();
    let asked = ask(engine, prefix, level, via.0, &via.1, deadline).await;
    let (outcome, peer, referral) = match asked {
        Ok(Answered {
            value: Answer::Referral { referral, .. },
            peer,
            rtt: _,
        }) if referral.prefix == *prefix && !referral.range.is_bounded() => (
            HopOutcome::Referral(referral.clone()),
            Some(peer),
            Some(referral),
        ),
        Ok(a) => (
            HopOutcome::Failed {
                reason: "no referral to the delegated scope".into(),
            },
            Some(a.peer),
            None,
        ),
        Err(f) => (
            HopOutcome::Failed {
                reason: f.into_error().to_string(),
            },
            None,
            None,
        ),
    };
    trace.hops.push(Hop {
        scope: via.0,
        prefix: via.1,
        peer,
        rtt: started.elapsed(),
        outcome,
    });
    referral
}

/// One hop of a walk: asks `scope`'s members for `name` until one gives a verified
/// answer.
async fn ask(
    engine: &Engine,
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
    let judge =
        |from: &AnchorAddr, reply| judge_resolve_at(engine, name, scope, prefix, from, reply);
    engine
        .exchange(
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

/// `scope` and its members as this client knows them, the leader first.
pub(crate) fn scope_ref(known: &Known, scope: ScopeId, prefix: Name) -> ScopeRef {
    let members = known
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

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn referral(scope: &[u8], prefix: &str) -> Referral {
        Referral {
            scope: ScopeId::derive(&[scope]),
            prefix: n(prefix),
            epoch: 1,
            members: vec![],
            ttl_s: 60,
            range: proto::KeyRange::all(),
        }
    }

    #[test]
    fn walk_follows_deeper_referrals() {
        let mut w = Walk::new(ScopeId::root(), Name::root(), None);
        w.request().unwrap();
        w.follow(&referral(b"eu", "/eu")).unwrap();
        w.request().unwrap();
        w.follow(&referral(b"pay", "/eu/payments/api")).unwrap();
    }

    #[test]
    fn a_scope_seen_twice_is_a_loop() {
        let mut w = Walk::new(ScopeId::root(), Name::root(), None);
        w.follow(&referral(b"eu", "/eu")).unwrap();
        let again = referral(b"eu", "/eu/payments");
        assert!(matches!(w.follow(&again), Err(Error::ReferralLoop { .. })));
        let mut to_root = referral(b"x", "/eu/x");
        to_root.scope = ScopeId::root();
        assert!(matches!(
            w.follow(&to_root),
            Err(Error::ReferralLoop { .. })
        ));
    }

    #[test]
    fn a_referral_not_deeper_is_a_loop() {
        let mut w = Walk::new(ScopeId::root(), Name::root(), None);
        w.follow(&referral(b"eu", "/eu")).unwrap();
        for (id, prefix) in [(b"a", "/eu"), (b"b", "/us/x")] {
            let r = referral(id, prefix);
            assert!(
                matches!(w.follow(&r), Err(Error::ReferralLoop { .. })),
                "{prefix}"
            );
        }
    }

    #[test]
    fn requests_are_bounded() {
        let mut w = Walk::new(ScopeId::root(), Name::root(), None);
        for _ in 0..REFERRAL_HOPS_MAX {
            w.request().unwrap();
        }
        assert!(matches!(w.request(), Err(Error::ReferralLoop { .. })));
    }

    #[test]
    fn trace_counts_requests_and_prints_each_hop() {
        let hop = |outcome| Hop {
            scope: ScopeId::root(),
            prefix: Name::root(),
            peer: None,
            rtt: Duration::from_millis(3),
            outcome,
        };
        let trace = Trace {
            hops: vec![
                hop(HopOutcome::CachedReferral),
                hop(HopOutcome::Referral(referral(b"eu", "/eu"))),
                hop(HopOutcome::Found { version: 9 }),
            ],
        };
        assert_eq!(trace.requests(), 2);
        let text = trace.to_string();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.contains("referral to /eu") && text.contains("version 9"),
            "{text}"
        );
    }
}

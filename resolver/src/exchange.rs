//! The retry engine every call of a [`crate::Client`] goes through: one request, encoded
//! once, sent to member after member of one scope until an answer is final.
//!
//! [`Engine::exchange`] tries the scope's known members in the order
//! [`Known::plan`](crate::known::Known::plan) gives (the leader first for linearizable reads
//! and writes, see [`Route`]), follows `NotLeader` redirects, moves on after network
//! failures, rejected answers and `Unavailable`, follows `Delegated` to the child scope,
//! waits out `Moving`, and stops after `attempts_max` requests or at the call's deadline,
//! whichever comes first. What one answer means is not decided here: the judge the
//! caller passes in turns each reply into a [`Step`].
//!
//! # Retrying mutations
//!
//! A mutation is signed once and the same bytes are resent on every attempt (a replay is
//! refused by nonce, so it is applied at most once). When an attempt may have reached an
//! anchor ([`CallError::maybe_delivered`], or an `Unavailable` answer) and no later attempt
//! settles it, the call ends in [`Error::Unknown`]: the mutation judge tracks that, and
//! the `client` module docs say what it means to a caller.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use proto::{AnchorInfo, Name, Referral, ScopeId};
use serde::de::DeserializeOwned;

use crate::addr::AnchorAddr;
use crate::error::Error;
use crate::known::Known;
use crate::net::{CallError, Protocol};
use crate::net_owner::NetOwner;
use crate::verify::check_referral;

/// Pause after a full round of failed attempts, doubled each round up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between rounds of attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The bounds of every call, taken from the client's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    /// How long one request to one anchor may take.
    pub request_timeout: Duration,
    /// How long one call (all its attempts, redirects and referral hops together) may take.
    pub operation_timeout: Duration,
    /// Requests one call may send to one scope in all, redirects included.
    pub attempts_max: u32,
}

/// The engine: the network, what the client knows, the bounds, and the counters a client
/// reports.
#[derive(Debug)]
pub(crate) struct Engine {
    /// The client's swarm (shared with its watches).
    pub net: Arc<NetOwner>,
    /// What the client has learned (shared with its watches).
    pub known: Arc<Known>,
    /// The bounds of every call.
    pub retry: Retry,
    round_trips: AtomicU64,
    rejected: AtomicU64,
}

/// Which anchors a call prefers, and what a success says about the one that answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    /// Try the last known leader first.
    leader_first: bool,
    /// A successful answer came from the leader (linearizable reads).
    answered_by_leader: bool,
}

impl Route {
    pub const ANY: Route = Route {
        leader_first: false,
        answered_by_leader: false,
    };
    pub const LEADER_READ: Route = Route {
        leader_first: true,
        answered_by_leader: true,
    };
    pub const LEADER_WRITE: Route = Route {
        leader_first: true,
        answered_by_leader: false,
    };
}

/// What the judge of a call makes of one attempt.
#[derive(Debug)]
pub(crate) enum Step<T> {
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
    pub fn next(reason: impl fmt::Display) -> Step<T> {
        Step::Next {
            reason: reason.to_string(),
            fallback: None,
        }
    }
}

/// A final answer from [`Engine::exchange`]: the value, who gave it, and the round-trip
/// time of that last request.
#[derive(Debug)]
pub(crate) struct Answered<T> {
    pub value: T,
    pub peer: PeerId,
    pub rtt: Duration,
}

/// How a call through [`Engine::exchange`] failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An anchor gave a final answer that is an error.
    Answered(Error),
    /// No attempt got a final answer.
    Exhausted(Exhausted),
}

/// No attempt got a final answer: what happened, and the error to report if nothing more
/// specific is known.
#[derive(Debug)]
pub(crate) struct Exhausted {
    pub summary: String,
    pub fallback: Option<Error>,
}

impl Failure {
    /// The error a caller sees: the final answer, or the most telling failure.
    pub fn into_error(self) -> Error {
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

impl Engine {
    /// An engine with its counters at zero.
    pub fn new(net: Arc<NetOwner>, known: Arc<Known>, retry: Retry) -> Engine {
        Engine {
            net,
            known,
            retry,
            round_trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Resolve requests sent so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Signed answers and delegation referrals rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Counts one rejected answer.
    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `bytes` to member after member of `scope` until `judge` calls an answer final,
    /// for at most `attempts_max` requests and until `deadline`. A full round of failures is
    /// followed by a short pause that doubles each round. A `Delegated` refusal moves the
    /// exchange to the child scope it names (after checking it leads deeper towards `name`);
    /// a `Moving` refusal waits and asks again without counting against `attempts_max`.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange<R: DeserializeOwned, T>(
        &self,
        protocol: Protocol,
        bytes: Vec<u8>,
        name: &Name,
        mut scope: ScopeId,
        route: Route,
        deadline: Instant,
        mut judge: impl FnMut(&AnchorAddr, Result<R, CallError>) -> Step<T>,
    ) -> Result<(Answered<T>, ScopeId), Failure> {
        let known = &self.known;
        let (mut prefix, mut range) = match known.directory().get(&scope) {
            Some(s) => (s.prefix.clone(), s.range.clone()),
            None => (Name::root(), proto::KeyRange::all()),
        };
        let mut queue: VecDeque<AnchorAddr> = known.plan(&scope, route.leader_first).into();
        let mut attempts = Attempts::new();
        let mut backoff = BACKOFF_MIN;
        while attempts.count < self.retry.attempts_max {
            let Some(target) = queue.pop_front() else {
                queue = known.plan(&scope, route.leader_first).into();
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
            let timeout = left.min(self.retry.request_timeout);
            let sent = Instant::now();
            let reply = self.send(&target, protocol, bytes.clone(), timeout).await;
            let rtt = sent.elapsed();
            match judge(&target, reply) {
                Step::Done(result) => {
                    let from_leader = matches!(result, Ok(_) | Err(Error::NotFound { .. }));
                    if route.answered_by_leader && from_leader {
                        known.with_members(&scope, |m| m.set_leader(target.peer));
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
                    known.failed(&scope, &target.peer);
                    attempts.note(target.peer, reason, fallback);
                }
                Step::Refer(referral) => {
                    let checked = if known.is_member(&scope, &target.peer) {
                        check_referral(&referral, &prefix, &range, name)
                    } else {
                        Err(format!("{} is not a member of scope {scope}", target.peer))
                    };
                    match checked {
                        Ok(()) => {
                            tracing::debug!(peer = %target.peer, from = %scope, to = %referral.scope, prefix = %referral.prefix, "delegated; continuing at the child scope");
                            known.take_referral(&referral);
                            let reason = format!(
                                "{name} is delegated to scope {} at {}",
                                referral.scope, referral.prefix
                            );
                            attempts.note(target.peer, reason, None);
                            scope = referral.scope;
                            prefix = referral.prefix;
                            range = referral.range;
                            queue = known.plan(&scope, route.leader_first).into();
                            attempts.settled.clear();
                            backoff = BACKOFF_MIN;
                        }
                        Err(reason) => {
                            self.count_rejected();
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
            attempts.exhausted(self.retry.attempts_max),
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
        let mut directory = self.known.directory();
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

    /// One request to one anchor, bounded by `timeout`, its answer decoded as `R`. Resolve
    /// requests are counted ([`Engine::round_trips`]).
    pub async fn send<R: DeserializeOwned>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<R, CallError> {
        if protocol == Protocol::Resolve {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
        }
        self.net.call_encoded(to, protocol, bytes, timeout).await
    }
}

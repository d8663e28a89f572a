//! What one reply means: the judges that turn an anchor's reply (or the lack of one) into
//! a [`Step`] of the retry engine, one per kind of call.
//!
//! - [`judge_resolve`]: a verified answer, a redirect, or a reason to ask another member; a
//!   rejected answer is counted and the anchor not asked again in this hop.
//! - [`judge_mutate`]: also tracks whether an earlier attempt may have been applied, which
//!   turns later refusals into [`Error::Unknown`] (see [`crate::exchange`]).
//! - [`judge_watch_start`]: where "now" is in a scope's log, to start a watch from.
//! - [`judge_admin`]: one operator call, no retries.
//! - [`judge_wire_error`]: the errors every call retries elsewhere; the rest are final.
//!
//! Judges do no IO and hold no state beyond what they are given.

use libp2p::PeerId;
use proto::msg::{AdminResponse, Answer, MutateResponse, ResolveResponse, WatchResponse};
use proto::{AnchorInfo, Name, ScopeId, WireError};

use crate::addr::AnchorAddr;
use crate::error::Error;
use crate::exchange::{Engine, Step};
use crate::net::CallError;
use crate::verify::{verify_answer, Asked};

/// An answer that does not decode, as the [`Error::BadResponse`] it is.
fn bad_response(e: CallError) -> Result<Error, CallError> {
    match e {
        CallError::Decode { peer, reason } => Ok(Error::BadResponse { peer, reason }),
        other => Err(other),
    }
}

/// A reply that is not an answer: a network failure is a reason to try the next anchor; an
/// answer that does not decode also rules the anchor out for this call.
fn unanswered<T>(e: CallError) -> Step<T> {
    match bad_response(e) {
        Ok(e) => Step::Next {
            reason: e.to_string(),
            fallback: Some(e),
        },
        Err(e) => Step::next(e),
    }
}

/// [`judge_resolve`] against the engine's members of `scope`, counting and logging
/// rejected answers.
pub(crate) fn judge_resolve_at(
    engine: &Engine,
    name: &Name,
    scope: ScopeId,
    prefix: &Name,
    from: &AnchorAddr,
    reply: Result<ResolveResponse, CallError>,
) -> Step<Answer> {
    let range = engine
        .known
        .directory()
        .get(&scope)
        .map(|s| s.range.clone())
        .unwrap_or_default();
    let asked = Asked {
        peer: from.peer,
        scope,
        prefix,
        range: &range,
        name,
    };
    let is_member = |p: &PeerId| engine.known.is_member(&scope, p);
    let step = judge_resolve(asked, reply, &is_member);
    if let Step::Next {
        fallback: Some(e @ (Error::Unverified { .. } | Error::NotMember { .. })),
        ..
    } = &step
    {
        engine.count_rejected();
        tracing::warn!(peer = %from.peer, %scope, %name, error = %e, "answer rejected");
    }
    step
}

/// What one resolve attempt means: a verified answer (found, not-found or referral), a
/// redirect, or a reason to try another member. A rejected answer ([`verify_answer`]) comes
/// back as `Next` with the rejection as its fallback, so the anchor is not asked again in
/// this hop.
pub(crate) fn judge_resolve(
    asked: Asked<'_>,
    reply: Result<ResolveResponse, CallError>,
    is_member: &dyn Fn(&PeerId) -> bool,
) -> Step<Answer> {
    let response = match reply {
        Ok(r) => r,
        Err(e) => return unanswered(e),
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
pub(crate) fn judge_wire_error<T>(w: WireError) -> Step<T> {
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
        // A scope that retired into its parent refuses linearizable reads until it is gone.
        WireError::Moving { prefix } => Step::Wait(Error::Moving { prefix }),
        w => Step::Done(Err(w.into())),
    }
}

/// What one mutation attempt means. `ambiguity` remembers the first attempt that may have
/// been applied without this client hearing so; once set, `Replayed` and `Expired` can be
/// this very mutation's earlier attempt, so they make the outcome unknown.
pub(crate) fn judge_mutate(
    ambiguity: &mut Option<String>,
    committed_by: &mut Option<AnchorInfo>,
    from: &AnchorAddr,
    reply: Result<MutateResponse, CallError>,
) -> Step<u64> {
    let mut note = |what: String| {
        ambiguity.get_or_insert_with(|| format!("an attempt at anchor {}: {what}", from.peer));
    };
    let response = match reply.map_err(bad_response) {
        Ok(r) => r,
        Err(Ok(e)) => {
            note(e.to_string());
            return Step::Next {
                reason: e.to_string(),
                fallback: Some(e),
            };
        }
        Err(Err(e)) => {
            if e.maybe_delivered() {
                note(e.to_string());
            }
            return Step::next(e);
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
        MutateResponse::Error(WireError::Delegated { referral, .. }) => Step::Refer(*referral),
        MutateResponse::Error(WireError::Moving { prefix }) => Step::Wait(Error::Moving { prefix }),
        MutateResponse::Error(w) => judge_wire_error(w),
    }
}

/// What one answer to a watch start (`after: None`) means: the scope's applied index,
/// where the new watch begins.
pub(crate) fn judge_watch_start(
    scope: ScopeId,
    reply: Result<WatchResponse, CallError>,
) -> Step<u64> {
    match reply {
        Ok(WatchResponse::Changes {
            scope: answered,
            up_to,
            ..
        }) if answered == scope => Step::Done(Ok(up_to)),
        Ok(WatchResponse::Error(w)) => judge_wire_error(w),
        Ok(other) => Step::next(format!("unexpected answer to a watch start: {other:?}")),
        Err(e) => unanswered(e),
    }
}

/// What the answer to one operator call means: an [`AdminResponse::Error`] and a failed
/// call become the matching [`Error`].
pub(crate) fn judge_admin(
    anchor: &AnchorAddr,
    reply: Result<AdminResponse, CallError>,
) -> Result<AdminResponse, Error> {
    let response = reply.map_err(|e| match bad_response(e) {
        Ok(e) => e,
        Err(e) => Error::unavailable(format!("anchor {}: {e}", anchor.peer)),
    })?;
    match response {
        AdminResponse::Error(w) => Err(w.into()),
        ok => Ok(ok),
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;

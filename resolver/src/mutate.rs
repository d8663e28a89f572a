//! The path of one signed mutation: from the deepest cached referral above its name,
//! through `Delegated` refusals to the child scope that governs it, to that scope's leader,
//! with the same signed bytes on every attempt. When an attempt may have been applied and
//! no later one settles it, the result is [`Error::Unknown`]; when the scope it reached turns
//! out gone (`NoScope`: a stale cached referral, or a child that merged back into its
//! parent), the mutation starts over at the root, at most twice.

use std::time::{Duration, Instant};

use proto::codec;
use proto::limits::CLIENT_FRAME_BYTES_MAX;
use proto::msg::MutateRequest;
use proto::{Mutation, SignedMutation};

use crate::addr::AnchorAddr;
use crate::error::Error;
use crate::exchange::{Engine, Exhausted, Failure, Route};
use crate::judge::judge_mutate;
use crate::known::Start;
use crate::net::Protocol;

/// How many times one mutation starts over at the root after a `NoScope`.
pub(crate) const RESTARTS_MAX: u32 = 2;

/// Sends `mutation` (whose checked body is `body`; `now_ms` is the client's wall clock) to
/// the leader of the scope governing its name, retrying within the engine's bounds and the
/// mutation's validity, and returns the committed version. Drops the cached answer for the
/// name.
pub(crate) async fn send(
    engine: &Engine,
    mutation: SignedMutation,
    body: Mutation,
    now_ms: u64,
) -> Result<u64, Error> {
    if body.expires_at_ms <= now_ms {
        return Err(Error::Expired {
            expires_at_ms: body.expires_at_ms,
            reason: format!("it expired before it was sent (now is {now_ms} ms here)"),
        });
    }
    let validity_left = Duration::from_millis(body.expires_at_ms - now_ms);
    let deadline = Instant::now() + engine.retry.operation_timeout.min(validity_left);
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
    let mut start = engine.known.start(name);
    let mut restarts = 0;
    let result = loop {
        let judge =
            |from: &AnchorAddr, reply| judge_mutate(&mut ambiguity, &mut committed_by, from, reply);
        let result = engine
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
        if stale && restarts < RESTARTS_MAX {
            // The scope the mutation reached (a cached referral's, or a child it was
            // referred to) no longer governs the name, e.g. it merged back into its parent:
            // start over at the root (the same signed bytes; replays are refused by nonce).
            restarts += 1;
            engine
                .known
                .referrals()
                .remove(&start.prefix, start.range_start.as_ref());
            start = Start::root();
            continue;
        }
        break result;
    };
    engine.known.cache().remove(name);
    if let (Some(info), Ok(answered)) = (committed_by, &result) {
        if let Ok(leader) = AnchorAddr::from_info(&info) {
            engine.known.learn_leader(&answered.1, leader);
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

//! The filler of a merge campaign ([`super::CampaignConfig::merge_names_min`]): one more
//! recorded client that first writes enough names beside the checked ones for the scopes
//! to split (a deep subtree `/chaos/s/t/f<i>` and a flat part `/chaos/u/f<i>`, which splits
//! by range), then, from a later instant while the faults are still on, deletes them all,
//! so the split-off scopes shrink under `names_min` and merge back. Every put and delete is
//! recorded in the history like the other clients' operations (and read back at the end),
//! so the checker and the lost-write count cover the filler names too.

use std::time::{Duration, Instant};

use proto::Record;
use resolver::{Client, Error};

use crate::linearizability::{Input, OpId, Recorder};
use crate::recorded::write_output;

/// The filler's client id in the history.
pub const FILLER: u32 = u32::MAX - 1;

/// The checked names of a merge campaign: even ones in the deep subtree, odd ones in the
/// flat part, so both the subtree chain and the ranges of `/chaos/u` hold checked names.
pub(super) fn checked_name(n: usize) -> String {
    if n.is_multiple_of(2) {
        format!("/chaos/s/t/k{n}")
    } else {
        format!("/chaos/u/k{n}")
    }
}

/// The filler names: `per_part` in each part.
pub(super) fn names(per_part: usize) -> Vec<String> {
    (0..per_part)
        .flat_map(|i| [format!("/chaos/s/t/f{i}"), format!("/chaos/u/f{i}")])
        .collect()
}

/// How many filler names each part gets for `names_max`: enough that every level exceeds
/// it and splits, and that each part, also holding two checked names, splits by range
/// into halves at or under the limit.
pub(super) fn per_part(names_max: u32) -> usize {
    usize::try_from(names_max)
        .unwrap_or(usize::MAX / 4)
        .saturating_add(2)
}

/// Puts every name once (retrying until acknowledged or `shrink_at`), waits for
/// `shrink_at`, then deletes every name (retrying until acknowledged, found gone, or
/// `deadline`).
pub(super) async fn run(
    client: Client,
    key: ed25519_dalek::SigningKey,
    recorder: Recorder,
    names: Vec<String>,
    shrink_at: Instant,
    deadline: Instant,
) {
    let mut seq = 0u64;
    for name in &names {
        while Instant::now() < shrink_at {
            seq += 1;
            let value = format!("f-{seq}");
            let input = Input::Put {
                value: value.clone(),
            };
            let started = Instant::now();
            let id = recorder.invoke(FILLER, name.as_str(), input);
            let result = client.put(name, vec![Record::Text(value)], 60, &key).await;
            if finish(&recorder, id, &result, started).await {
                break;
            }
        }
    }
    tokio::time::sleep_until(shrink_at.into()).await;
    for name in &names {
        while Instant::now() < deadline {
            let started = Instant::now();
            let id = recorder.invoke(FILLER, name.as_str(), Input::Delete);
            let result = client.delete(name, &key).await;
            let gone = matches!(result, Err(Error::NotFound { .. }));
            if finish(&recorder, id, &result, started).await || gone {
                break;
            }
        }
    }
}

/// Records the outcome of a write started at `started`; true when it was acknowledged. An
/// instant failure is followed by a short pause, so the filler does not spin while the
/// cluster is unavailable.
async fn finish(
    recorder: &Recorder,
    id: OpId,
    result: &Result<u64, Error>,
    started: Instant,
) -> bool {
    match write_output(result) {
        Some(out) => recorder.complete(id, out),
        None => recorder.unknown(id),
    }
    if result.is_err() && started.elapsed() < Duration::from_millis(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result.is_ok()
}

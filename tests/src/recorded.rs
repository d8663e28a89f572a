//! The recorded register workload of the fault campaigns (the in-process chaos campaigns of
//! [`crate::chaos`] and the process-level partition test): clients that put,
//! compare-and-set, delete and read linearizably on a few names, recording every operation
//! in a [`Recorder`] for the linearizability checker, and the count of acknowledged writes
//! the final reads do not see.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::{ReadLevel, Record};
use rand::rngs::StdRng;
use rand::Rng;
use resolver::{Client, Error};

use crate::linearizability::{History, Input, Output, Recorder};

/// The client id of the final reads after the faults end ([`lost_acknowledged`] compares
/// acknowledged writes with what this client read).
pub const FINAL_READER: u32 = u32::MAX;

/// What one recorded client does: which names, and how often each kind of operation.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Number of names; the client picks `name(0..names)` uniformly.
    pub names: usize,
    /// The name of index `n`.
    pub name: fn(usize) -> String,
    /// Of 100 rolls: below 30 a read, below 65 a put, below `cas_below` a compare-and-set
    /// expecting the last version this client saw, else a delete.
    pub cas_below: i32,
    /// Sleep 20 ms after a read without a definite answer and after a write that failed
    /// within 5 ms, so a client does not spin while the cluster is unavailable.
    pub pause_on_failure: bool,
}

/// The value of a record set as the history records it (its first text record).
fn text_of(set: &proto::RecordSet) -> String {
    match set.records.first() {
        Some(Record::Text(t)) => t.clone(),
        other => format!("{other:?}"),
    }
}

/// A definite answer to a write, or `None` when its outcome is unknown.
pub fn write_output(r: &Result<u64, Error>) -> Option<Output> {
    match r {
        Ok(version) => Some(Output::Written { version: *version }),
        Err(Error::Conflict { current }) => Some(Output::Conflict { current: *current }),
        Err(Error::Denied { .. } | Error::Invalid { .. } | Error::InvalidName { .. }) => {
            Some(Output::Failed)
        }
        Err(_) => None,
    }
}

/// A recorded linearizable read; returns the output if definite.
pub async fn record_read(
    client: &Client,
    recorder: &Recorder,
    c: u32,
    name: &str,
) -> Option<Output> {
    let id = recorder.invoke(c, name, Input::Read);
    let out = match client.resolve(name, ReadLevel::Linearizable).await {
        Ok(set) => Output::Value {
            version: set.version,
            value: text_of(&set),
        },
        Err(Error::NotFound { .. }) => Output::NotFound,
        Err(_) => {
            recorder.unknown(id);
            return None;
        }
    };
    recorder.complete(id, out.clone());
    Some(out)
}

/// Client `c`'s workload: while `keep_going()`, one operation chosen by `rng` as `mix`
/// says, recorded in `recorder`. `on_write` sees the result of every write and the
/// recorder's time just before it was invoked (before the write is completed in the
/// recorder).
#[allow(clippy::too_many_arguments)]
pub async fn run_client<K, W>(
    c: u32,
    client: Client,
    key: ed25519_dalek::SigningKey,
    recorder: Recorder,
    mut rng: StdRng,
    mix: Mix,
    keep_going: K,
    mut on_write: W,
) where
    K: Fn() -> bool,
    W: FnMut(&Result<u64, Error>, u64),
{
    let mut seq = 0u64;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    while keep_going() {
        let n = (mix.name)(rng.gen_range(0..mix.names));
        let roll = rng.gen_range(0..100);
        seq += 1;
        let value = format!("c{c}-{seq}");
        let records = || vec![Record::Text(value.clone())];
        let started = Instant::now();
        // Taken just before the invoke: "acknowledged and invoked after t" errs safe.
        let invoked = recorder.now_ns();
        if roll < 30 {
            if record_read(&client, &recorder, c, &n).await.is_none() && mix.pause_on_failure {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        }
        let (id, result) = if roll < 65 {
            let input = Input::Put {
                value: value.clone(),
            };
            let id = recorder.invoke(c, n.as_str(), input);
            (id, client.put(&n, records(), 60, &key).await)
        } else if roll < mix.cas_below {
            let expected = *seen.get(&n).unwrap_or(&0);
            let input = Input::Cas {
                expected_version: expected,
                value: value.clone(),
            };
            let id = recorder.invoke(c, n.as_str(), input);
            (id, client.cas(&n, expected, records(), 60, &key).await)
        } else {
            let id = recorder.invoke(c, n.as_str(), Input::Delete);
            (id, client.delete(&n, &key).await)
        };
        match &result {
            Ok(v) => {
                seen.insert(n.clone(), *v);
            }
            Err(Error::Conflict { current }) => {
                seen.insert(n.clone(), *current);
            }
            Err(_) => {}
        }
        on_write(&result, invoked);
        match write_output(&result) {
            Some(out) => recorder.complete(id, out),
            None => recorder.unknown(id),
        }
        if mix.pause_on_failure && result.is_err() && started.elapsed() < Duration::from_millis(5) {
            // An instant failure: do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Acknowledged writes (puts and compare-and-sets) at a version above what the final read
/// of their name ([`FINAL_READER`]) saw: writes the cluster lost. A final "not found" is
/// compared with the highest acknowledged delete; names with a delete of unknown outcome
/// are skipped.
pub fn lost_acknowledged(history: &History) -> Vec<String> {
    let ops = &history.ops;
    let mut lost = Vec::new();
    for o in ops.iter().filter(|o| o.client == FINAL_READER) {
        let fin = match &o.output {
            Output::Value { version, .. } => *version,
            Output::NotFound => {
                let deletes = ops
                    .iter()
                    .filter(|d| d.name == o.name && matches!(d.input, Input::Delete));
                if deletes
                    .clone()
                    .any(|d| d.complete_ns.is_none() || d.output == Output::Unknown)
                {
                    continue;
                }
                deletes
                    .filter_map(|d| match d.output {
                        Output::Written { version } => Some(version),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0)
            }
            _ => continue,
        };
        for w in ops.iter().filter(|w| {
            w.name == o.name
                && w.complete_ns.is_some()
                && !matches!(w.input, Input::Delete | Input::Read)
        }) {
            if let Output::Written { version } = w.output {
                if version > fin {
                    lost.push(format!(
                        "{} {:?} acknowledged at v{version}, final read at v{fin}",
                        w.name, w.input
                    ));
                }
            }
        }
    }
    lost
}

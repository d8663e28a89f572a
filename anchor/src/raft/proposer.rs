//! The leader's side of a scope's writes and linearizable reads: concurrent writes become one
//! log entry, concurrent linearizable reads share one read-index round.
//!
//! openraft 0.9 appends (and fsyncs) each `client_write` on its own, so one entry per write
//! caps a scope at one fsync per write. The proposer drains what is queued into one
//! [`ScopeCommand::Writes`] entry (bounded in count and bytes, at most one mutation per name so
//! each name's version stays the log index that changed it), keeps a few entries in flight,
//! and hands each writer its own outcome. Choosing an entry's mutations is the pure
//! [`take_entry`].
//!
//! (Not to be confused with the coalescing of Raft RPCs of many scopes into one message,
//! which the network adapter does.)

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use proto::limits::{BATCH_BYTES_MAX, BATCH_MUTATIONS_MAX};
use proto::{Name, ScopeId, SignedMutation, WireError};
use resolver::clock::SharedClock;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::raft::network::Urgency;
use crate::raft::{ScopeCommand, ScopeRaft};

/// Proposals queued per scope before writers hear "overloaded".
pub const PROPOSALS_QUEUED_MAX: usize = 8192;
/// Entries of writes in flight (proposed, not yet committed) per scope.
pub const ENTRIES_INFLIGHT_MAX: usize = 2;
/// Linearizable reads waiting per scope.
pub const READS_QUEUED_MAX: usize = 8192;
/// How long one read-index round may take.
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one entry of writes may wait for its commit.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One verified mutation waiting to be proposed.
#[derive(Debug)]
pub struct Proposal {
    /// The mutation as signed.
    pub mutation: SignedMutation,
    /// The name it addresses.
    pub name: Name,
    /// Where its outcome goes: the committed version, or why not.
    pub reply: oneshot::Sender<Result<u64, WireError>>,
}

impl Proposal {
    fn bytes(&self) -> usize {
        self.mutation.body.len() + 100 * self.mutation.signatures.len()
    }
}

/// Takes the mutations of the next entry from the front of `queue`: at most [`BATCH_MUTATIONS_MAX`]
/// mutations and [`BATCH_BYTES_MAX`] bytes (the first is always taken), at most one per name.
/// Skipped proposals keep their order in the queue.
pub fn take_entry(queue: &mut VecDeque<Proposal>) -> Vec<Proposal> {
    let mut entry: Vec<Proposal> = Vec::new();
    let mut names = BTreeSet::new();
    let mut bytes = 0;
    let mut rest = VecDeque::with_capacity(queue.len());
    while let Some(p) = queue.pop_front() {
        let fits = entry.is_empty()
            || (entry.len() < BATCH_MUTATIONS_MAX && bytes + p.bytes() <= BATCH_BYTES_MAX);
        if fits && !names.contains(&p.name) {
            bytes += p.bytes();
            names.insert(p.name.clone());
            entry.push(p);
        } else {
            rest.push_back(p);
        }
        if entry.len() >= BATCH_MUTATIONS_MAX {
            break;
        }
    }
    rest.append(queue);
    *queue = rest;
    entry
}

/// Starts the proposer of one scope; send it verified proposals. `clock` stamps each entry
/// with the leader's wall-clock time; `urgency` is held while an entry is being committed.
pub fn spawn_proposer(
    raft: ScopeRaft,
    scope: ScopeId,
    clock: SharedClock,
    urgency: Arc<Urgency>,
) -> mpsc::Sender<Proposal> {
    let (tx, rx) = mpsc::channel(PROPOSALS_QUEUED_MAX);
    tokio::spawn(run_proposer(raft, scope, clock, urgency, rx));
    tx
}

async fn run_proposer(
    raft: ScopeRaft,
    scope: ScopeId,
    clock: SharedClock,
    urgency: Arc<Urgency>,
    mut rx: mpsc::Receiver<Proposal>,
) {
    let inflight = Arc::new(Semaphore::new(ENTRIES_INFLIGHT_MAX));
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(p) => queue.push_back(p),
                None => break,
            }
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        let entry = take_entry(&mut queue);
        let raft = raft.clone();
        let clock = clock.clone();
        let urgency = urgency.clone();
        tokio::spawn(async move {
            let _urgent = urgency.hold();
            commit_entry(&raft, scope, entry, clock.unix_ms()).await;
            drop(permit);
        });
    }
}

async fn commit_entry(raft: &ScopeRaft, scope: ScopeId, entry: Vec<Proposal>, proposed_at_ms: u64) {
    let (mutations, replies): (Vec<_>, Vec<_>) =
        entry.into_iter().map(|p| (p.mutation, p.reply)).unzip();
    let cmd = ScopeCommand::Writes {
        mutations,
        proposed_at_ms,
    };
    let outcome = tokio::time::timeout(COMMIT_TIMEOUT, raft.client_write(cmd)).await;
    let results: Vec<Result<u64, WireError>> = match outcome {
        Ok(Ok(resp)) => resp.data.results,
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            vec![
                Err(WireError::NotLeader {
                    scope,
                    leader: f.leader_node
                });
                replies.len()
            ]
        }
        Ok(Err(e)) => vec![
            Err(WireError::Unavailable {
                reason: e.to_string()
            });
            replies.len()
        ],
        Err(_) => vec![
            Err(WireError::Unavailable {
                reason: "the write was not committed in time; its outcome is unknown".into(),
            });
            replies.len()
        ],
    };
    let mut results = results.into_iter();
    for reply in replies {
        let r = results.next().unwrap_or_else(|| {
            Err(WireError::Unavailable {
                reason: "no outcome for this mutation".into(),
            })
        });
        let _ = reply.send(r);
    }
}

/// A reader waiting for a read-index round.
pub type ReadWaiter = oneshot::Sender<Result<(), WireError>>;

/// Starts the read-index rounds of one scope: every waiter queued when a round starts is
/// answered by that round (the round starts after each of them arrived, so each read is
/// linearizable). `urgency` is held during each round: its heartbeats go at once.
pub fn spawn_read_rounds(
    raft: ScopeRaft,
    scope: ScopeId,
    urgency: Arc<Urgency>,
) -> mpsc::Sender<ReadWaiter> {
    let (tx, rx) = mpsc::channel(READS_QUEUED_MAX);
    tokio::spawn(run_read_rounds(raft, scope, urgency, rx));
    tx
}

async fn run_read_rounds(
    raft: ScopeRaft,
    scope: ScopeId,
    urgency: Arc<Urgency>,
    mut rx: mpsc::Receiver<ReadWaiter>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let _urgent = urgency.hold();
        let result =
            match tokio::time::timeout(READ_INDEX_TIMEOUT, raft.ensure_linearizable()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    Err(WireError::NotLeader {
                        scope,
                        leader: f.leader_node,
                    })
                }
                Ok(Err(e)) => Err(WireError::Unavailable {
                    reason: e.to_string(),
                }),
                Err(_) => Err(WireError::Unavailable {
                    reason: "the leader could not confirm its quorum in time; retry".into(),
                }),
            };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Mutation, Op, Record};

    fn proposal(name: &str, text_bytes: usize) -> Proposal {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let op = Op::Put {
            name: Name::parse(name).unwrap(),
            records: vec![Record::Text("x".repeat(text_bytes))],
            ttl_s: 1,
        };
        let mutation = SignedMutation::sign(
            &Mutation {
                op,
                nonce: 1,
                expires_at_ms: 1,
            },
            &key,
        )
        .unwrap();
        Proposal {
            mutation,
            name: Name::parse(name).unwrap(),
            reply: oneshot::channel().0,
        }
    }

    fn names(b: &[Proposal]) -> Vec<String> {
        b.iter().map(|p| p.name.to_string()).collect()
    }

    #[test]
    fn one_mutation_per_name_and_order_kept() {
        let mut q: VecDeque<_> = ["/a", "/b", "/a", "/c", "/b"]
            .iter()
            .map(|n| proposal(n, 1))
            .collect();
        assert_eq!(names(&take_entry(&mut q)), ["/a", "/b", "/c"]);
        assert_eq!(names(&take_entry(&mut q)), ["/a", "/b"]);
        assert!(take_entry(&mut q).is_empty());
    }

    #[test]
    fn entries_are_bounded_by_bytes_and_count() {
        let mut q: VecDeque<_> = (0..4).map(|i| proposal(&format!("/n{i}"), 4000)).collect();
        let per_entry = BATCH_BYTES_MAX / 4100;
        let b = take_entry(&mut q);
        assert!(b.len() <= per_entry.max(1));
        let mut q: VecDeque<_> = (0..BATCH_MUTATIONS_MAX + 10)
            .map(|i| proposal(&format!("/m{i}"), 1))
            .collect();
        assert_eq!(take_entry(&mut q).len(), BATCH_MUTATIONS_MAX);
        assert_eq!(q.len(), 10);
    }
}

//! The persistent state machine of one scope, in the anchor's shared sled database: the
//! openraft [`RaftStateMachine`] (apply, snapshots out and in).
//!
//! One scope's state goes by these names, each for one job:
//! - [`ScopeView`] (`view.rs`): the single-valued fields and the delegations, decoded and
//!   kept in memory, so request handlers read them without touching sled.
//! - [`ScopeReader`] (`reader.rs`): the handle request handlers hold: the view, plus reads
//!   of records, watch history and what a delegation moves, and the leader's decision
//!   before it proposes.
//! - `Overlay` (`overlay.rs`): the writes of one `apply` call, read through before the
//!   tree and written as one sled batch; decisions at apply read the state through it.
//! - [`ScopeRead`](crate::scope::decide::ScopeRead): what a decision needs to read, so the
//!   decision itself does no IO.
//!
//! `keys.rs` is the key layout (the one place that builds and splits keys), `snapshot.rs`
//! the snapshot format, `seed.rs` the writes that create a child scope or remove a scope
//! outside its log, `merge.rs` the merge entries at apply (a parent taking a child it split
//! off back in, the child retiring). Decisions come from [`crate::scope::decide`].

// openraft's StorageError is large and is what its traits return; boxing it here would only
// move the cost.
#![allow(clippy::result_large_err)]

mod keys;
mod merge;
mod overlay;
mod reader;
mod seed;
mod snapshot;
mod view;

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
};
use proto::{codec, AnchorInfo, Name, ScopeId};

use super::{sto_err, ApplyOutcome, NodeId, ScopeCommand, TypeConfig};
use crate::scope::decide;
use crate::scope::sig_cache::SigCache;
use crate::AnchorError;
use keys::{Keys, Meta, SM_TREE, SNAPSHOT_TREE};
use overlay::{sm_err, Overlay};
use snapshot::StoredMem;

pub use overlay::WATCH_HISTORY_CHANGES;
pub use reader::{RetiredState, ScopeReader, SizeScan, SplitChild};
pub use seed::{remove_scope, seed, Seed};
pub use snapshot::{parse_snapshot, Kvs, SnapshotError};
pub use view::{Retired, ScopeView};

/// The openraft state machine of one scope.
pub struct StateMachine {
    sig_cache: Arc<SigCache>,
    scope: ScopeId,
    keys: Keys,
    tree: sled::Tree,
    snapshots: sled::Tree,
    view: Arc<RwLock<ScopeView>>,
    /// Changes the watch history keeps ([`WATCH_HISTORY_CHANGES`]; tests lower it).
    history_max: u64,
    /// Dropped with this state machine: its receivers learn it is gone (see
    /// [`StateMachine::alive`]).
    alive: tokio::sync::watch::Sender<()>,
}

impl StateMachine {
    /// Opens (or creates) the state machine of `scope` with the given prefix.
    pub fn open(
        db: &sled::Db,
        scope: ScopeId,
        prefix: Name,
        sig_cache: Arc<SigCache>,
    ) -> Result<StateMachine, AnchorError> {
        let keys = Keys::new(scope);
        let tree = db.open_tree(SM_TREE)?;
        let snapshots = db.open_tree(SNAPSHOT_TREE)?;
        let view = ScopeView::load(&tree, &keys, prefix)?;
        Ok(StateMachine {
            sig_cache,
            scope,
            keys,
            tree,
            snapshots,
            view: Arc::new(RwLock::new(view)),
            history_max: WATCH_HISTORY_CHANGES,
            alive: tokio::sync::watch::Sender::new(()),
        })
    }

    /// The state machine of a hibernated group being reopened: the same stored state, and
    /// the view `reader` shares (it is current: the stopped group had applied everything it
    /// applies to the view, and its worker has ended).
    pub fn resume(
        db: &sled::Db,
        reader: &ScopeReader,
        sig_cache: Arc<SigCache>,
    ) -> Result<StateMachine, AnchorError> {
        let scope = reader.scope();
        Ok(StateMachine {
            sig_cache,
            scope,
            keys: Keys::new(scope),
            tree: db.open_tree(SM_TREE)?,
            snapshots: db.open_tree(SNAPSHOT_TREE)?,
            view: reader.shared_view(),
            history_max: WATCH_HISTORY_CHANGES,
            alive: tokio::sync::watch::Sender::new(()),
        })
    }

    /// Dead once this state machine is dropped (openraft's worker that owns it ended).
    pub fn alive(&self) -> tokio::sync::watch::Receiver<()> {
        self.alive.subscribe()
    }

    /// A read handle sharing this state machine's view.
    pub fn reader(&self) -> ScopeReader {
        ScopeReader::new(self.scope, self.tree.clone(), self.view.clone())
    }

    /// The outcome of a merge entry (`what`, about scope `other`), logged.
    fn outcome(
        &self,
        what: &str,
        other: &ScopeId,
        applied: merge::Applied,
        index: u64,
    ) -> ApplyOutcome {
        match applied {
            Ok(()) => {
                tracing::info!(scope = %self.scope, %other, index, "{what} applied");
                ApplyOutcome {
                    results: vec![Ok(index)],
                }
            }
            Err(reason) => {
                tracing::info!(scope = %self.scope, %other, %reason, "{what} refused at apply");
                ApplyOutcome {
                    results: vec![Err(proto::WireError::Refused { reason })],
                }
            }
        }
    }

    /// Reads the view again from the tree (after a snapshot replaced the state).
    #[cfg(test)]
    fn reload_view(&self) -> Result<(), AnchorError> {
        let prefix = self
            .view
            .read()
            .map(|v| v.prefix.clone())
            .unwrap_or_default();
        let view = ScopeView::load(&self.tree, &self.keys, prefix)?;
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = view;
        Ok(())
    }
}

/// Builds a snapshot from a copy of the state taken when the builder was created.
pub struct SnapshotBuilder {
    keys: Keys,
    snapshots: sled::Tree,
    applied: Option<LogId<NodeId>>,
    membership: StoredMem,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let digest = snapshot::hex_prefix(&self.data);
        let snapshot_id = match &self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, digest),
            None => format!("0-0-{digest}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        snapshot::store(&self.snapshots, &self.keys, &meta, &self.data).map_err(snap_write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(self.data.clone())),
        })
    }
}

fn snap_write_err(e: AnchorError) -> StorageError<NodeId> {
    sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMem), StorageError<NodeId>> {
        let read = |e: AnchorError| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let applied = view::read_meta(&self.tree, &self.keys, Meta::Applied).map_err(read)?;
        let membership = view::read_meta(&self.tree, &self.keys, Meta::Membership)
            .map_err(read)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
    {
        let view = self.view.read().map(|v| v.clone()).unwrap_or_default();
        let mut overlay = Overlay::new(self.scope, &self.tree, view, self.history_max);
        let mut outcomes = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let outcome = match entry.payload {
                EntryPayload::Blank => ApplyOutcome::default(),
                EntryPayload::Membership(m) => {
                    overlay.put_meta(Meta::Membership, &StoredMem::new(Some(log_id), m))?;
                    ApplyOutcome::default()
                }
                EntryPayload::Normal(ScopeCommand::Genesis {
                    descriptor,
                    policy_toml,
                }) => {
                    overlay.apply_genesis(descriptor, policy_toml)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::DelegationActive { child }) => {
                    overlay.activate_delegation(child)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::DelegationAborted { child, reason }) => {
                    tracing::warn!(scope = %self.scope, %child, %reason, "delegation aborted");
                    overlay.abort_delegation(child)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::Activate) => {
                    overlay.view.active = true;
                    overlay.put_meta(Meta::Active, &true)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::Merge {
                    child,
                    evidence,
                    proposed_at_ms,
                }) => {
                    let applied =
                        overlay.apply_merge(&child, &evidence, proposed_at_ms, log_id.index)?;
                    self.outcome("merge", &child, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::Retire { into, merge_index }) => {
                    let applied = overlay.apply_retire(into, merge_index)?;
                    self.outcome("retire", &into, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::MergeDone {
                    child,
                    retired_at,
                    records,
                    nonces,
                }) => {
                    let applied = overlay.apply_merge_done(
                        &child,
                        retired_at,
                        &records,
                        &nonces,
                        log_id.index,
                    )?;
                    self.outcome("merge done", &child, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::Resume { merge_index }) => {
                    let applied = overlay.apply_resume(merge_index);
                    self.outcome("resume", &self.scope, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::MergeAborted { child, reason }) => {
                    tracing::warn!(scope = %self.scope, %child, %reason, "merge aborted");
                    let applied = overlay.apply_merge_aborted(&child)?;
                    self.outcome("merge aborted", &child, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::Split {
                    evidence,
                    proposed_at_ms,
                }) => match overlay.apply_split(&evidence, proposed_at_ms, log_id.index)? {
                    Ok(child) => {
                        tracing::info!(scope = %self.scope, %child, plan = %evidence.plan, "split: the subtree moves to a child scope on the same members");
                        ApplyOutcome {
                            results: vec![Ok(log_id.index)],
                        }
                    }
                    Err(reason) => {
                        tracing::info!(scope = %self.scope, plan = %evidence.plan, %reason, "split refused at apply");
                        ApplyOutcome {
                            results: vec![Err(proto::WireError::Refused { reason })],
                        }
                    }
                },
                EntryPayload::Normal(ScopeCommand::LearnRange { referral, proofs }) => {
                    let checked = crate::scope::learn::check_learned(
                        &overlay.view.delegations,
                        &referral,
                        &proofs,
                        log_id.index,
                    );
                    let result = match checked {
                        Ok(Some(d)) => {
                            tracing::info!(scope = %self.scope, range_scope = %referral.scope, prefix = %referral.prefix, range = %referral.range, "learned a range split off below a delegation");
                            overlay.store_delegation(d)?;
                            Ok(log_id.index)
                        }
                        Ok(None) => Ok(log_id.index),
                        Err(refusal) => {
                            tracing::warn!(scope = %self.scope, range_scope = %referral.scope, %refusal, "range refused at apply");
                            Err(proto::WireError::Refused {
                                reason: refusal.to_string(),
                            })
                        }
                    };
                    ApplyOutcome {
                        results: vec![result],
                    }
                }
                EntryPayload::Normal(ScopeCommand::ForgetRange { first, proofs }) => {
                    let result = match crate::scope::forget::check_forget(
                        &overlay.view.delegations,
                        &first,
                        &proofs,
                    ) {
                        Ok(forget) => {
                            if forget {
                                tracing::info!(scope = %self.scope, %first, "forgot a learned range: its scope no longer governs it");
                                overlay.forget_delegation(&first);
                            }
                            Ok(log_id.index)
                        }
                        Err(refusal) => Err(proto::WireError::Refused {
                            reason: refusal.to_string(),
                        }),
                    };
                    ApplyOutcome {
                        results: vec![result],
                    }
                }
                EntryPayload::Normal(ScopeCommand::MembersChanged { index }) => {
                    let applied = overlay.apply_members_changed(index)?;
                    self.outcome("members changed", &self.scope, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::MembersAborted { index, reason }) => {
                    tracing::warn!(scope = %self.scope, index, %reason, "member change aborted");
                    let applied = overlay.apply_members_aborted(index)?;
                    self.outcome("members aborted", &self.scope, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::Place {
                    add,
                    remove,
                    why,
                    proposed_at_ms,
                }) => {
                    tracing::info!(scope = %self.scope, %why, "the scope's own member change");
                    let applied =
                        overlay.apply_place(&add, &remove, log_id.index, proposed_at_ms)?;
                    self.outcome("place", &self.scope, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::ChildMembers { child, proofs }) => {
                    let applied = overlay.apply_child_members(child, &proofs)?.map(|_| ());
                    self.outcome("child members", &child, applied, log_id.index)
                }
                EntryPayload::Normal(ScopeCommand::Writes {
                    mutations,
                    proposed_at_ms,
                }) => {
                    overlay.prune_nonces(proposed_at_ms);
                    overlay.prune_changes()?;
                    let mut results = Vec::with_capacity(mutations.len());
                    let verified = self.sig_cache.verify_all(&mutations);
                    for (signed, verified) in mutations.iter().zip(verified) {
                        let decided = verified.and_then(|m| {
                            decide::decide(&overlay, &m, signed, proposed_at_ms, log_id.index)
                        });
                        results.push(match decided {
                            Ok(acc) => {
                                overlay.apply_effect(acc, log_id.index, proposed_at_ms)?;
                                Ok(log_id.index)
                            }
                            Err(e) => Err(e),
                        });
                    }
                    ApplyOutcome { results }
                }
            };
            overlay.view.applied = Some(log_id);
            overlay.put_meta(Meta::Applied, &log_id)?;
            outcomes.push(outcome);
        }
        let (batch, view) = overlay.into_batch();
        // The view's lock is held while the batch lands, so a reader that holds it (see
        // `ScopeReader::lookup`) sees the records and the view of one state: never the
        // records a delegation turning Active drops, gone, with the view still Frozen.
        let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
        self.tree.apply_batch(batch).map_err(sm_err)?;
        *current = view;
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let (applied, membership, data) = match snapshot::dump(&self.tree, &self.keys) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, scope = %self.scope, "cannot read state for snapshot");
                (None, StoredMem::default(), snapshot::empty_data())
            }
        };
        SnapshotBuilder {
            keys: self.keys,
            snapshots: self.snapshots.clone(),
            applied,
            membership,
            data,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, AnchorInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let kvs = parse_snapshot(&data).map_err(|e| {
            sto_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let mut batch = sled::Batch::default();
        for kv in self.tree.scan_prefix(self.keys.scope()) {
            let (k, _) = kv.map_err(sm_err)?;
            batch.remove(k);
        }
        for (k, v) in kvs {
            batch.insert(self.keys.join(&k), v);
        }
        if let Some(applied) = &meta.last_log_id {
            batch.insert(
                self.keys.meta(Meta::Applied),
                codec::encode(applied).map_err(sm_err)?,
            );
        }
        batch.insert(
            self.keys.meta(Meta::Membership),
            codec::encode(&meta.last_membership).map_err(sm_err)?,
        );
        // As in apply: readers holding the view's lock see the old state or the new one.
        let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
        let prefix = current.prefix.clone();
        self.tree.apply_batch(batch).map_err(sm_err)?;
        snapshot::store(&self.snapshots, &self.keys, meta, &data).map_err(snap_write_err)?;
        *current = ScopeView::load(&self.tree, &self.keys, prefix).map_err(sm_err)?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = snapshot::load(&self.snapshots, &self.keys)
            .map_err(|e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod members_tests;
#[cfg(test)]
mod merge_range_tests;
#[cfg(test)]
mod split_tests;
#[cfg(test)]
#[path = "tests.rs"]
mod tests;

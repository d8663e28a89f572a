//! [`ScopeReader`]: read access to one scope's applied state, shared by the anchor's request
//! handlers (records, watch history, what a delegation moves, the leader's check).

use std::sync::{Arc, PoisonError, RwLock};

use proto::msg::{ChangeEvent, SeededNonce};
use proto::{
    codec, Delegation, DelegationState, KeyRange, Name, RecordSet, ScopeDescriptor, ScopeId,
    SignedMutation,
};

use super::keys::{split_nonce_value, Keys, Tag};
use super::overlay::{Overlay, WATCH_HISTORY_CHANGES};
use super::view::ScopeView;
use crate::scope::decide::{self, Accepted};
use crate::scope::load::{ChildSize, Median, SizeFigures, CHILD_LABELS_MAX};
use crate::AnchorError;

/// What a bounded scan of a scope's records found ([`ScopeReader::size_scan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SizeScan {
    /// Names from the view; bytes, child labels (the [`CHILD_LABELS_MAX`] largest by names)
    /// and the median name from the scan.
    pub figures: SizeFigures,
    /// Names the scan read.
    pub scanned: u64,
    /// True when the scan read every record, so bytes and child labels are exact.
    pub complete: bool,
}

/// A scope split off by its parent's own decision, as one parent member sees it.
#[derive(Clone, Debug)]
pub enum SplitChild {
    /// Not handed over yet: the parent still holds what moves, and this is it.
    Frozen {
        /// The split's delegation.
        delegation: Delegation,
        /// The parent.
        parent: ScopeDescriptor,
        /// The records that move.
        records: Vec<(Name, RecordSet)>,
        /// The replay protection that moves with them.
        nonces: Vec<SeededNonce>,
        /// When the parent split (its last split, which no other split follows while this
        /// one is Frozen).
        split_at_ms: Option<u64>,
    },
    /// Handed over: the parent dropped the records; a member that hosts no replica yet joins
    /// empty and catches up from the child's leader.
    Active(Delegation),
}

/// The cut nearest the middle of `names` around the child label run `held` (its label and
/// the index of its first name): before it, or before the `next` label's run. A cut that
/// leaves a side empty is no cut.
fn median_cut(
    prefix: &Name,
    held: (&str, u64),
    next: Option<(&String, u64)>,
    names: u64,
) -> Option<Median> {
    let half = names / 2;
    let candidates = [Some(held), next.map(|(l, i)| (l.as_str(), i))];
    candidates
        .into_iter()
        .flatten()
        .filter(|(_, left)| *left > 0 && *left < names)
        .min_by_key(|(_, left)| left.abs_diff(half))
        .and_then(|(label, left)| {
            Some(Median {
                at: prefix.child(label).ok()?,
                left,
            })
        })
}

/// A retired scope's final state, as one replica read it (for the parent's `MergeDone`).
#[derive(Clone, Debug)]
pub struct RetiredState {
    /// Its retirement.
    pub retired: super::view::Retired,
    /// The applied log index the state was read at.
    pub applied: u64,
    /// Every record.
    pub records: Vec<(Name, RecordSet)>,
    /// Every remembered nonce.
    pub nonces: Vec<SeededNonce>,
    /// True when it holds a delegation that is not aborted (its state is then more than
    /// records: such a scope does not merge).
    pub delegates: bool,
}

/// Read access to a scope's state machine: the sled tree and the [`ScopeView`] the state
/// machine replaces after every apply. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ScopeReader {
    scope: ScopeId,
    keys: Keys,
    tree: sled::Tree,
    view: Arc<RwLock<ScopeView>>,
}

impl ScopeReader {
    pub(super) fn new(scope: ScopeId, tree: sled::Tree, view: Arc<RwLock<ScopeView>>) -> Self {
        ScopeReader {
            scope,
            keys: Keys::new(scope),
            tree,
            view,
        }
    }

    /// The record set of `name`, as last applied on this replica.
    pub fn get(&self, name: &Name) -> Result<Option<RecordSet>, AnchorError> {
        let Some(bytes) = self.tree.get(self.keys.record(name))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode(
            &bytes,
            proto::limits::RAFT_FRAME_BYTES_MAX,
        )?))
    }

    /// Reads `name`'s record set and hands it to `f` with the view, both of one state: the
    /// view's lock is held across the read, and apply holds it while its batch lands. A
    /// handler that must not answer "not found" for a name whose records an entry has just
    /// moved away (a delegation turning Active) decides with both here.
    pub fn lookup<T>(
        &self,
        name: &Name,
        f: impl FnOnce(&ScopeView, Option<RecordSet>) -> T,
    ) -> Result<T, AnchorError> {
        let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        if view.removed {
            return Err(AnchorError::ScopeRemoved(self.scope));
        }
        let set = self.get(name)?;
        Ok(f(&view, set))
    }

    /// The scope this reader reads.
    pub fn scope(&self) -> ScopeId {
        self.scope
    }

    /// Whether the replica was removed ([`ScopeReader::mark_removed`]).
    pub fn is_removed(&self) -> bool {
        self.with_view(|v| v.removed).unwrap_or(true)
    }

    /// The view this reader shares with its state machine (a reopened group's state
    /// machine shares it too).
    pub(super) fn shared_view(&self) -> Arc<RwLock<ScopeView>> {
        self.view.clone()
    }

    /// Marks the replica removed before its stored state is deleted: from then on
    /// [`ScopeReader::lookup`] refuses, so a request that found the replica just before it
    /// was removed never reads a state half deleted (a name missing).
    pub fn mark_removed(&self) {
        self.view
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .removed = true;
    }

    /// A copy of the scope's view.
    pub fn view(&self) -> ScopeView {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Runs `f` on the view without copying it.
    pub fn with_view<T>(&self, f: impl FnOnce(&ScopeView) -> T) -> Option<T> {
        self.view.read().ok().map(|v| f(&v))
    }

    /// The admin-signed mutation that created the delegation to `child`.
    pub fn delegation_proof(&self, child: &ScopeId) -> Result<Option<SignedMutation>, AnchorError> {
        match self.tree.get(self.keys.proof(child))? {
            Some(b) => Ok(Some(codec::decode(
                &b,
                proto::limits::RAFT_FRAME_BYTES_MAX,
            )?)),
            None => Ok(None),
        }
    }

    /// The remembered (writer, nonce) pairs of mutations to names under `prefix` inside
    /// `range` that have not expired by `now_ms` (for seeding a child scope).
    pub fn nonces_in(
        &self,
        prefix: &Name,
        range: &KeyRange,
        now_ms: u64,
    ) -> Result<Vec<SeededNonce>, AnchorError> {
        let prefix_key = prefix.key();
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(self.keys.all(Tag::Nonce)) {
            let (k, v) = kv?;
            let (writer, nonce) = self.keys.split_nonce(&k)?;
            let (expires_at_ms, name_key) = split_nonce_value(&v)?;
            if !name_key.starts_with(&prefix_key) || name_key.is_empty() {
                continue;
            }
            if expires_at_ms < now_ms {
                continue;
            }
            let name = Name::from_key(name_key)?;
            if !range.covers(prefix, &name) {
                continue;
            }
            out.push(SeededNonce {
                writer,
                nonce,
                expires_at_ms,
                name,
            });
        }
        Ok(out)
    }

    /// Where the split-off child `child` stands on this replica, and for a Frozen one what
    /// moves to it: read under the view's lock, so the records are those of the state the
    /// view shows (the hand-over, which drops them, cannot land in between). `None` when
    /// `child` is not a split of this scope (an operator's delegation has a stored proof)
    /// or it was aborted.
    pub fn split_child(&self, child: &ScopeId) -> Result<Option<SplitChild>, AnchorError> {
        let Ok(view) = self.view.read() else {
            return Ok(None);
        };
        let Some(d) = view
            .delegations
            .values()
            .find(|d| d.referral.scope == *child)
        else {
            return Ok(None);
        };
        if self.delegation_proof(child)?.is_some() {
            return Ok(None);
        }
        let Some(parent) = view.descriptor.clone() else {
            return Ok(None);
        };
        Ok(match d.state {
            DelegationState::Aborted | DelegationState::Learned { .. } => None,
            DelegationState::Active | DelegationState::Merging { .. } => {
                Some(SplitChild::Active(d.clone()))
            }
            DelegationState::Frozen => Some(SplitChild::Frozen {
                delegation: d.clone(),
                parent,
                records: self.records_in(&d.referral.prefix, &d.referral.range)?,
                // Every remembered nonce, expired or not: none is pruned while a split is in
                // flight, so every member seeds the same.
                nonces: self.nonces_in(&d.referral.prefix, &d.referral.range, 0)?,
                split_at_ms: view.last_split_ms,
            }),
        })
    }

    /// The final state of this scope once it has retired, read under the view's lock (the
    /// records and the applied index of one state); `None` before it retired.
    pub fn retired_state(&self) -> Result<Option<RetiredState>, AnchorError> {
        let Ok(view) = self.view.read() else {
            return Ok(None);
        };
        let (Some(retired), Some(applied)) = (view.retired, view.applied) else {
            return Ok(None);
        };
        let range = view
            .descriptor
            .as_ref()
            .map(|d| d.range.clone())
            .unwrap_or_default();
        Ok(Some(RetiredState {
            retired,
            applied: applied.index,
            records: self.records_in(&view.prefix, &range)?,
            nonces: self.nonces_in(&view.prefix, &range, 0)?,
            delegates: view
                .delegations
                .values()
                .any(|d| d.state != DelegationState::Aborted),
        }))
    }

    /// Every record under `prefix` inside `range`, in name order (for seeding a child scope).
    pub fn records_in(
        &self,
        prefix: &Name,
        range: &KeyRange,
    ) -> Result<Vec<(Name, RecordSet)>, AnchorError> {
        let mut out = Vec::new();
        let span = self.keys.record_span(prefix, range);
        for kv in span.scan(&self.tree) {
            let (k, v) = kv?;
            let name = self.keys.split_record(&k)?;
            out.push((
                name,
                codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?,
            ));
        }
        Ok(out)
    }

    /// Reads at most `names_max` records in name order and sums their sizes: bytes and
    /// names per child label (the first label below the scope's prefix) and the median cut
    /// (reached when the scope holds fewer than `2 × names_max` names): the child label
    /// boundary nearest the median name, as a range split cuts there. When the scan
    /// stops early, bytes and child labels cover the names it read.
    pub fn size_scan(&self, names_max: u64) -> Result<SizeScan, AnchorError> {
        let (prefix, names) = self
            .with_view(|v| (v.prefix.clone(), v.names))
            .unwrap_or_default();
        let depth = prefix.depth();
        let median_at = names / 2;
        let mut children: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        let mut bytes = 0u64;
        let mut scanned = 0u64;
        let mut median = None;
        let mut complete = true;
        // The child label whose run of names is being read, and the index it began at; the
        // run holding the median name, while its end is not reached yet.
        let mut run: Option<(String, u64)> = None;
        let mut median_run: Option<(String, u64)> = None;
        for kv in self.tree.scan_prefix(self.keys.all(Tag::Record)) {
            if scanned >= names_max {
                complete = false;
                break;
            }
            let (k, v) = kv?;
            let name = self.keys.split_record(&k)?;
            let len = v.len() as u64;
            bytes += len;
            if let Some(label) = name.labels().get(depth) {
                let c = children.entry(label.clone()).or_default();
                c.0 += 1;
                c.1 += len;
                if run.as_ref().is_none_or(|(l, _)| l != label) {
                    if let Some((held, began)) = median_run.take() {
                        // The median's run ended here: cut before it or after it.
                        median = median_cut(&prefix, (&held, began), Some((label, scanned)), names);
                    }
                    run = Some((label.clone(), scanned));
                }
            }
            if scanned == median_at && names > 0 {
                median_run = run.clone();
            }
            scanned += 1;
        }
        if let Some((held, began)) = median_run.take() {
            if complete {
                median = median_cut(&prefix, (&held, began), None, names);
            }
        }
        let mut children: Vec<ChildSize> = children
            .into_iter()
            .map(|(label, (names, bytes))| ChildSize {
                label,
                names,
                bytes,
            })
            .collect();
        children.sort_by(|a, b| b.names.cmp(&a.names).then_with(|| a.label.cmp(&b.label)));
        children.truncate(CHILD_LABELS_MAX);
        Ok(SizeScan {
            figures: SizeFigures {
                names,
                bytes,
                children,
                median,
            },
            scanned,
            complete,
        })
    }

    /// Changes to names under `prefix` at indexes in `(after, up_to]`, in order, at most
    /// `events_max` events and about `bytes_max` bytes. Returns the events and the index
    /// they cover up to (`up_to`, or less when a bound cut the list; never inside an index).
    pub fn changes(
        &self,
        prefix: &Name,
        after: u64,
        up_to: u64,
        events_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<ChangeEvent>, u64), AnchorError> {
        if self.with_view(|v| v.removed).unwrap_or(true) {
            return Err(AnchorError::ScopeRemoved(self.scope));
        }
        if up_to <= after {
            return Ok((Vec::new(), after));
        }
        let start = self.keys.change_from(after + 1);
        let end = self.keys.change_from(up_to.saturating_add(1));
        let prefix_key = prefix.key();
        let mut events: Vec<ChangeEvent> = Vec::new();
        let mut bytes = 0usize;
        // Changes of one index are delivered together or not at all.
        let mut pending: Vec<ChangeEvent> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut pending_index: Option<u64> = None;
        let fits = |events: &Vec<ChangeEvent>, n: usize, bytes: usize| {
            events.is_empty() || (events.len() + n <= events_max && bytes <= bytes_max)
        };
        for kv in self.tree.range(start..end) {
            let (k, v) = kv?;
            let (index, name_key) = self.keys.split_change(&k)?;
            if pending_index != Some(index) {
                if let Some(prev) = pending_index {
                    if !fits(&events, pending.len(), bytes + pending_bytes) {
                        return Ok((events, prev - 1));
                    }
                    events.append(&mut pending);
                    bytes += pending_bytes;
                    pending_bytes = 0;
                }
                pending_index = Some(index);
            }
            if !name_key.starts_with(&prefix_key) {
                continue;
            }
            let set: Option<RecordSet> = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            pending_bytes += v.len() + name_key.len();
            pending.push(ChangeEvent {
                name: Name::from_key(name_key)?,
                version: index,
                set,
            });
        }
        if let Some(last) = pending_index {
            if !fits(&events, pending.len(), bytes + pending_bytes) {
                return Ok((events, last - 1));
            }
            events.append(&mut pending);
        }
        Ok((events, up_to))
    }

    /// Decides `m` (verified from `signed`) against the current state at time `now_ms`, as
    /// apply would (the leader's check before proposing; apply decides again in log order).
    pub fn decide(
        &self,
        m: &proto::Mutation,
        signed: &SignedMutation,
        now_ms: u64,
    ) -> Result<Accepted, proto::WireError> {
        let overlay = Overlay::new(self.scope, &self.tree, self.view(), WATCH_HISTORY_CHANGES);
        decide::decide(&overlay, m, signed, now_ms, 0)
    }
}

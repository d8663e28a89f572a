//! One scope replica hosted by this anchor: its Raft group, read access to its state, its
//! load meters and split view, and the queues of its leader-side proposer and read-index rounds; with the
//! questions about its group that the handlers and the delegation driver ask.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use libp2p::PeerId;
use proto::msg::{ScopeStatus, SplitView};
use proto::{AnchorInfo, Name, ScopeDescriptor, ScopeId};

use crate::group::{Group, Slot};
use crate::raft::proposer::{Proposal, ReadWaiter};
use crate::raft::quiesce::{Cause, KeepAwake, Role, Sleep};
use crate::raft::sm::{ScopeReader, SizeScan};
use crate::registry::Plumbing;
use crate::scope::load::LoadLimits;
use crate::scope::meter::ReplicaLoad;
use crate::scope::show::{split_view, Coverage};

/// Most names one size scan reads.
pub const SIZE_SCAN_NAMES_MAX: u64 = 100_000;
/// How long a size scan's result is reused, ms (so repeated `scope show`/`scope tree`
/// calls cost at most one scan per scope in this time).
pub const SIZE_SCAN_REUSE_MS: u64 = 5_000;

/// One hosted scope replica.
pub struct Replica {
    /// Scope id.
    pub id: ScopeId,
    /// The scope as created.
    pub descriptor: ScopeDescriptor,
    /// Its Raft group: running, or hibernated ([`crate::group`]).
    pub(crate) slot: RwLock<Slot>,
    /// One reopen or hibernation of the group at a time.
    pub(crate) reopening: tokio::sync::Mutex<()>,
    /// Whether the slot holds a hibernated group (read without its lock).
    pub(crate) hibernated: AtomicBool,
    /// The leader the group knew when it hibernated ([`crate::group::NO_LEADER`]: none).
    pub(crate) frozen_leader: AtomicU64,
    /// What the group is (re)started with.
    pub(crate) plumbing: Arc<Plumbing>,
    /// Read access to its state machine.
    pub state: ScopeReader,
    /// Requests served for this scope here: the rate meter and the split accounting.
    pub load: ReplicaLoad,
    /// Whether its group sleeps (quiescence), and what keeps it awake.
    pub sleep: Arc<Sleep>,
    /// The last size scan and when it was made, ms.
    size_scan: Mutex<Option<(u64, SizeScan)>>,
    /// Until when (ms since the epoch) this replica, leading, hands its leadership to
    /// another member: it takes no writes and no linearizable reads meanwhile, so the
    /// other members' leader leases run out and the chosen one can win an election.
    yield_until_ms: AtomicU64,
    /// Peers a majority of this replica's voters reported in a newer configuration than the
    /// one it has (see [`Replica::vouch`]): members it accepts Raft messages from before it
    /// has caught up with the configuration that added them.
    vouched: Mutex<BTreeSet<String>>,
    /// When a vouching check last started here, ms since the epoch (one at a time).
    vouch_started_ms: AtomicU64,
}

impl Replica {
    /// A replica around a started group.
    pub(crate) fn new(
        descriptor: ScopeDescriptor,
        group: Group,
        state: ScopeReader,
        plumbing: Arc<Plumbing>,
    ) -> Replica {
        let seed = u64::from_le_bytes(descriptor.id.0[..8].try_into().unwrap_or_default());
        Replica {
            id: descriptor.id,
            load: ReplicaLoad::new(descriptor.prefix.clone(), seed, plumbing.load)
                .listing_on(descriptor.id, plumbing.busy.clone()),
            size_scan: Mutex::new(None),
            yield_until_ms: AtomicU64::new(0),
            vouched: Mutex::new(BTreeSet::new()),
            vouch_started_ms: AtomicU64::new(0),
            sleep: Arc::new(Sleep::new(plumbing.wakes.clone())),
            slot: RwLock::new(Slot::Running(group)),
            reopening: tokio::sync::Mutex::new(()),
            hibernated: AtomicBool::new(false),
            frozen_leader: AtomicU64::new(crate::group::NO_LEADER),
            plumbing,
            descriptor,
            state,
        }
    }

    /// True while this replica hands its leadership over (until `set_yield_until`'s time).
    pub fn yielding(&self, now_ms: u64) -> bool {
        now_ms < self.yield_until_ms.load(Ordering::Relaxed)
    }

    /// Hands the leadership over until `until_ms` (0 ends it): see [`Replica::yielding`].
    pub fn set_yield_until(&self, until_ms: u64) {
        self.yield_until_ms.store(until_ms, Ordering::Relaxed);
    }

    /// Queues a verified write for the proposer (reopening the group if it hibernates and
    /// waking it if it sleeps); false when its queue is full or the group cannot run.
    pub(crate) async fn queue_write(&self, proposal: Proposal) -> bool {
        let Ok(raft) = self.group().await else {
            return false;
        };
        self.sleep.wake_leader(&raft, Cause::Write);
        self.proposals()
            .is_some_and(|q| q.try_send(proposal).is_ok())
    }

    /// Queues a linearizable read for the next read-index round (reopening and waking the
    /// group as a write does); false when its queue is full or the group cannot run.
    pub(crate) async fn queue_read(&self, waiter: ReadWaiter) -> bool {
        let Ok(raft) = self.group().await else {
            return false;
        };
        self.sleep.wake_leader(&raft, Cause::Read);
        self.reads().is_some_and(|q| q.try_send(waiter).is_ok())
    }

    /// Wakes the group if it sleeps as this scope's leader (its followers wake on its first
    /// heartbeat), reopening it if it hibernates; true if it slept. For callers that
    /// propose without the proposer.
    pub async fn wake(&self) -> bool {
        match self.group().await {
            Ok(raft) => self.sleep.wake_leader(&raft, Cause::KeptAwake),
            Err(_) => false,
        }
    }

    /// Keeps the group awake (and wakes it now) until the guard is dropped: hold it across a
    /// membership change. While held, this replica never agrees to sleep (nor hibernates).
    pub async fn keep_awake(&self) -> KeepAwake {
        let guard = self.sleep.hold();
        if let Ok(raft) = self.group().await {
            self.sleep.wake_leader(&raft, Cause::KeptAwake);
        }
        guard
    }

    /// Puts the group to sleep in `role` (see [`Sleep::try_sleep`]); a hibernated group
    /// sleeps already.
    pub fn try_sleep(&self, role: Role, activity_seen: u64, last_log: Option<u64>) -> bool {
        match self.raft() {
            Some(raft) => self.sleep.try_sleep(&raft, role, activity_seen, last_log),
            None => self.sleep.is_asleep(),
        }
    }

    /// The load limits of the scope's current policy (none before genesis is applied).
    pub fn load_limits(&self) -> LoadLimits {
        self.state
            .with_view(|v| v.policy.as_ref().map(|p| LoadLimits::of(&p.split)))
            .flatten()
            .unwrap_or(LoadLimits::NONE)
    }

    /// Counts one resolve of `name` answered here at `now_ms`.
    pub fn record_read(&self, name: &Name, now_ms: u64) {
        self.load.read(name, now_ms, self.load_limits());
    }

    /// Counts one mutation of `name` received here at `now_ms`; a `forwarded` one (sent on
    /// by a member that received it) is left out of `scope tree`'s window.
    pub fn record_write(&self, name: &Name, now_ms: u64, forwarded: bool) {
        self.load
            .write(name, now_ms, self.load_limits(), !forwarded);
    }

    /// The last size scan, if it was made less than [`SIZE_SCAN_REUSE_MS`] before `now_ms`,
    /// with its name count replaced by the state machine's current one (kept by every
    /// apply, so free to read): the decider sees a size limit crossed at once, not up to
    /// [`SIZE_SCAN_REUSE_MS`] later. Bytes, child labels and the median stay as scanned.
    pub fn fresh_size_scan(&self, now_ms: u64) -> Option<SizeScan> {
        let mut scan = {
            let cache = self.size_scan.lock().ok()?;
            let (at, scan) = cache.as_ref()?;
            (now_ms.saturating_sub(*at) < SIZE_SCAN_REUSE_MS).then(|| scan.clone())?
        };
        if let Some(names) = self.state.with_view(|v| v.names) {
            scan.figures.names = names;
        }
        Some(scan)
    }

    /// Scans the scope's records now ([`SIZE_SCAN_NAMES_MAX`] names at most) and keeps the
    /// result for [`SIZE_SCAN_REUSE_MS`]. Reads up to that many records from disk: call it
    /// off the async workers (`spawn_blocking`).
    pub fn refresh_size_scan(&self, now_ms: u64) -> Option<SizeScan> {
        let scan = self.state.size_scan(SIZE_SCAN_NAMES_MAX).ok()?;
        if let Ok(mut cache) = self.size_scan.lock() {
            *cache = Some((now_ms, scan.clone()));
        }
        Some(scan)
    }

    /// The fresh size scan, or a new one.
    pub fn size_scan(&self, now_ms: u64) -> Option<SizeScan> {
        self.fresh_size_scan(now_ms)
            .or_else(|| self.refresh_size_scan(now_ms))
    }

    /// What the split decider sees and would do at `now_ms`; `None` before the replica has
    /// applied its scope's policy.
    pub fn split_view(&self, now_ms: u64) -> Option<SplitView> {
        let (policy, last_split_ms, bounds) = self
            .state
            .with_view(|v| v.policy.clone().map(|p| (p, v.last_split_ms, v.bounds())))
            .flatten()?;
        let load = self.load.figures(now_ms, LoadLimits::of(&policy.split))?;
        let scan = self.size_scan(now_ms)?;
        let coverage = Coverage {
            scanned: scan.scanned,
            complete: scan.complete,
        };
        let mut view = split_view(
            &bounds,
            &load,
            &scan.figures,
            coverage,
            &policy,
            now_ms,
            last_split_ms,
        );
        view.peak_window_s = self.load.peak_window_ms() / 1000;
        Some(view)
    }

    /// The current leader's id and addresses, when known.
    pub fn leader_info(&self) -> Option<AnchorInfo> {
        let m = self.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).cloned()
    }

    /// Whether `peer` is a member: in the group's configuration (voter or learner), or,
    /// before the group has one, in the descriptor the replica was created with. A member
    /// that left is not one any more, whatever the descriptor says.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        let peer = peer.to_base58();
        let metrics = self.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        if nodes.peek().is_none() {
            return self.descriptor.members.iter().any(|m| m.peer_id == peer);
        }
        nodes.any(|(_, n)| n.peer_id == peer)
            || self.vouched.lock().is_ok_and(|v| v.contains(&peer))
    }

    /// Accepts Raft messages from `peer` from now on: a majority of this replica's voters
    /// reported it in a configuration newer than this replica's (a member added while this
    /// one was cut off, now perhaps the leader that would catch it up).
    pub fn vouch(&self, peer: &PeerId) {
        if let Ok(mut v) = self.vouched.lock() {
            if v.len() < proto::limits::SCOPE_MEMBERS_MAX * 2 {
                v.insert(peer.to_base58());
            }
        }
    }

    /// Starts a vouching check unless one started within `every_ms` of `now_ms`; true if
    /// the caller runs it.
    pub fn start_vouching(&self, now_ms: u64, every_ms: u64) -> bool {
        let last = self.vouch_started_ms.load(Ordering::SeqCst);
        now_ms.saturating_sub(last) >= every_ms
            && self
                .vouch_started_ms
                .compare_exchange(last, now_ms, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// The replica's status, as `anchorage status` shows it.
    pub fn status(&self) -> ScopeStatus {
        let m = self.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.peer_id.clone());
        let members: Vec<String> = membership.nodes().map(|(_, n)| n.peer_id.clone()).collect();
        ScopeStatus {
            id: self.id,
            prefix: self.descriptor.prefix.clone(),
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader,
            last_applied: m.last_applied.map(|l| l.index),
            last_log: m.last_log_index,
            snapshot: m.snapshot.map(|l| l.index),
            members: if members.is_empty() {
                self.descriptor
                    .members
                    .iter()
                    .map(|m| m.peer_id.clone())
                    .collect()
            } else {
                members
            },
            names: self.state.view().names,
            membership_log: m.membership_config.log_id().map(|l| l.index),
            membership_term: m.membership_config.log_id().map(|l| l.leader_id.term),
            sleep: if self.is_hibernated() {
                "hibernated"
            } else if self.sleep.is_asleep() {
                "asleep"
            } else {
                "awake"
            }
            .into(),
        }
    }
}

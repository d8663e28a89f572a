//! A replica's Raft group, running or hibernated.
//!
//! A sleeping group (quiescence, [`crate::raft::quiesce`]) sends and receives nothing, but
//! its openraft core, state-machine worker, tick task, proposer and read-round tasks and
//! their channels stay: about 175 KiB and a timer wake every 750 ms per replica. After
//! `raft.hibernate_after_ms` asleep, the quiescer *hibernates* it: the group is shut down
//! and only what answers questions about it stays (the descriptor, the state machine's
//! view, the sleep state, and the last Raft metrics, frozen). The first thing that needs
//! the group (a Raft message, a write, a linearizable read, a wake) reopens it from sled,
//! with its switches off as it slept (openraft 0.9 restores a leader whose vote is
//! committed as leader, so a hibernated leader comes back leading, with no election); the
//! wake then proceeds as for a sleeping group.
//!
//! Nothing changes a hibernated group's state: every path that would goes through
//! [`Replica::group`], which reopens it first. A caller that took the handle just before
//! the group was stopped gets openraft's "stopped" error and retries, as after any
//! failure.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use proto::{AnchorInfo, ScopeDescriptor};
use tokio::sync::{mpsc, watch};

use crate::raft::network::{NetworkFactory, Urgency};
use crate::raft::proposer::{self, Proposal, ReadWaiter};
use crate::raft::quiesce::Role;
use crate::raft::sm::StateMachine;
use crate::raft::{log_store::LogStore, NodeId, ScopeRaft};
use crate::registry::Plumbing;
use crate::replica::Replica;
use crate::AnchorError;

/// The group's metrics as openraft publishes them.
pub type Metrics = openraft::RaftMetrics<NodeId, AnchorInfo>;

/// `Replica::frozen_leader` when the hibernated group knew no leader (a node id is a hash of
/// a peer id: this one is as likely as any other, and never used).
pub(crate) const NO_LEADER: NodeId = NodeId::MAX;
/// How long hibernating waits for the group to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long a reopen waits for the stopped group's state-machine worker to finish.
const OLD_WORKER_WAIT: Duration = Duration::from_secs(5);

/// How many hosted replicas hibernate, by the role they slept in, and whether that changed
/// since the registry last listed the replicas that do not ([`crate::registry::Registry::awake`]):
/// the per-second loops walk only those, and take the hibernated ones' figures from here.
#[derive(Debug, Default)]
pub struct Hibernated {
    leaders: AtomicI64,
    followers: AtomicI64,
    /// Set by every hibernation and reopening.
    pub(crate) changed: AtomicBool,
}

impl Hibernated {
    fn add(&self, role: Role, n: i64) {
        let c = match role {
            Role::Leader => &self.leaders,
            Role::Follower => &self.followers,
        };
        c.fetch_add(n, Ordering::AcqRel);
        self.changed.store(true, Ordering::Release);
    }

    /// Hibernated replicas that slept as leaders.
    pub fn leaders(&self) -> i64 {
        self.leaders.load(Ordering::Acquire)
    }

    /// Hibernated replicas that slept as followers.
    pub fn followers(&self) -> i64 {
        self.followers.load(Ordering::Acquire)
    }
}

/// A running group: the Raft handle and the queues of its leader-side tasks.
pub(crate) struct Group {
    pub raft: ScopeRaft,
    pub proposals: mpsc::Sender<Proposal>,
    pub reads: mpsc::Sender<ReadWaiter>,
    pub metrics: watch::Receiver<Metrics>,
    /// Alive while the state machine handed to openraft is (its worker ends after the core).
    sm_alive: watch::Receiver<()>,
}

/// A replica's group: running, or stopped with its last metrics.
pub(crate) enum Slot {
    Running(Group),
    Hibernated {
        /// The last metrics before it stopped; the sender is kept so that waiting on the
        /// receiver waits (bounded by the caller) instead of failing at once.
        metrics: watch::Receiver<Metrics>,
        _frozen: watch::Sender<Metrics>,
        /// The stopped group's state machine, alive until its worker ends.
        sm_alive: watch::Receiver<()>,
        /// The role it slept in, as counted in [`Hibernated`] (taken when it no longer
        /// counts: reopened or stopped for good).
        role: Option<Role>,
    },
}

impl Slot {
    pub(crate) fn metrics(&self) -> &watch::Receiver<Metrics> {
        match self {
            Slot::Running(g) => &g.metrics,
            Slot::Hibernated { metrics, .. } => metrics,
        }
    }
}

/// Starts the group of `descriptor`'s scope over its stored log and state `sm`.
pub(crate) async fn start(
    p: &Plumbing,
    descriptor: &ScopeDescriptor,
    sm: StateMachine,
) -> Result<Group, AnchorError> {
    let id = descriptor.id;
    let log = LogStore::open(&p.db, id, p.flusher.clone())?;
    let sm_alive = sm.alive();
    let urgency = Arc::new(Urgency::default());
    let network = NetworkFactory {
        scope: id,
        net: p.net.clone(),
        coalescer: p.coalescer.clone(),
        urgency: urgency.clone(),
    };
    let raft = openraft::Raft::new(p.node_id, p.raft_config.clone(), network, log, sm)
        .await
        .map_err(|e| AnchorError::Raft(e.to_string()))?;
    Ok(Group {
        proposals: proposer::spawn_proposer(raft.clone(), id, p.clock.clone(), urgency.clone()),
        reads: proposer::spawn_read_rounds(raft.clone(), id, urgency),
        metrics: raft.metrics(),
        raft,
        sm_alive,
    })
}

impl Replica {
    fn slot(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        self.slot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The running group's handle; `None` while it hibernates (see [`Replica::group`]).
    pub fn raft(&self) -> Option<ScopeRaft> {
        match &*self.slot() {
            Slot::Running(g) => Some(g.raft.clone()),
            Slot::Hibernated { .. } => None,
        }
    }

    /// Whether the group hibernates (stopped; reopened on demand).
    pub fn is_hibernated(&self) -> bool {
        self.hibernated.load(Ordering::Acquire)
    }

    /// The group's metrics: live, or as they were when it stopped to hibernate.
    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        self.slot().metrics().clone()
    }

    /// Whether `node` leads this scope, as far as this replica knows: the group's metrics, or
    /// while it hibernates the leader it had (asked of every hosted scope several times a
    /// second: a hibernated one answers from one atomic).
    pub fn led_by(&self, node: NodeId) -> bool {
        if self.is_hibernated() {
            return self.frozen_leader.load(Ordering::Acquire) == node && node != NO_LEADER;
        }
        self.with_metrics(|m| m.current_leader == Some(node))
    }

    /// Reads the group's current metrics without cloning them.
    pub fn with_metrics<T>(&self, f: impl FnOnce(&Metrics) -> T) -> T {
        let slot = self.slot();
        let m = slot.metrics().borrow();
        f(&m)
    }

    /// The Raft configuration every group runs with.
    pub fn raft_config(&self) -> &openraft::Config {
        &self.plumbing.raft_config
    }

    /// The group's handle, reopening it from sled if it hibernates (its sleep switches as
    /// they were: a group that slept still sleeps). Fails only if the replica was removed or
    /// its storage cannot be read.
    pub async fn group(&self) -> Result<ScopeRaft, AnchorError> {
        if let Some(raft) = self.raft() {
            return Ok(raft);
        }
        let _one = self.reopening.lock().await;
        let sm_alive = match &*self.slot() {
            Slot::Running(g) => return Ok(g.raft.clone()),
            Slot::Hibernated { sm_alive, .. } => sm_alive.clone(),
        };
        if self.state.is_removed() {
            return Err(AnchorError::ScopeRemoved(self.id));
        }
        // The stopped core is joined; its state-machine worker ends once it has drained
        // its queue (empty: the group slept with everything applied). Two workers must
        // never write the same state.
        let mut sm_alive = sm_alive;
        let ended = async { while sm_alive.changed().await.is_ok() {} };
        if tokio::time::timeout(OLD_WORKER_WAIT, ended).await.is_err() {
            return Err(AnchorError::Raft(
                "the stopped group's state machine is still busy; try again".into(),
            ));
        }
        let p = &self.plumbing;
        let sm = StateMachine::resume(&p.db, &self.state, p.verified.clone())?;
        let group = start(p, &self.descriptor, sm).await?;
        if self.sleep.is_asleep() {
            let rc = group.raft.runtime_config();
            rc.tick(false);
            rc.heartbeat(false);
            rc.elect(false);
            self.sleep.restart_sleep_clock();
        }
        let raft = group.raft.clone();
        {
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            if let Slot::Hibernated {
                role: Some(role), ..
            } = &*slot
            {
                p.hibernated.add(*role, -1);
            }
            *slot = Slot::Running(group);
            self.hibernated.store(false, Ordering::Release);
        }
        p.hibernations.with_label_values(&["reopened"]).inc();
        tracing::debug!(scope = %self.id, "hibernated group reopened");
        Ok(raft)
    }

    /// Stops the group if it still sleeps and nothing keeps it awake; true if it now
    /// hibernates. Its metrics are frozen as they were.
    pub async fn hibernate(&self) -> bool {
        let _one = self.reopening.lock().await;
        if !self.sleep.is_asleep() || self.sleep.kept_awake() {
            return false;
        }
        // Only a settled scope: the background loops look at hibernated ones rarely
        // (`delegation::HIBERNATED_VISIT`), so nothing may be left for them to drive.
        if self.state.with_view(|v| v.settled()) != Some(true) {
            return false;
        }
        let activity = self.sleep.activity();
        let frozen = match &*self.slot() {
            Slot::Running(g) => g.metrics.borrow().clone(),
            Slot::Hibernated { .. } => return true,
        };
        let leader = frozen.current_leader;
        let (tx, rx) = watch::channel(frozen);
        let old = {
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            let sm_alive = match &*slot {
                Slot::Running(g) => g.sm_alive.clone(),
                Slot::Hibernated { .. } => return true,
            };
            let role = self.sleep.slept().map(|(role, _)| role);
            let old = std::mem::replace(
                &mut *slot,
                Slot::Hibernated {
                    metrics: rx,
                    _frozen: tx,
                    sm_alive,
                    role,
                },
            );
            if let Some(role) = role {
                self.plumbing.hibernated.add(role, 1);
            }
            self.frozen_leader
                .store(leader.unwrap_or(NO_LEADER), Ordering::Release);
            self.hibernated.store(true, Ordering::Release);
            old
        };
        if let Slot::Running(g) = old {
            match tokio::time::timeout(STOP_WAIT, g.raft.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(scope = %self.id, error = %e, "stopping a hibernating group")
                }
                Err(_) => tracing::warn!(
                    scope = %self.id,
                    "a hibernating group did not stop within {STOP_WAIT:?}"
                ),
            }
        }
        self.plumbing
            .hibernations
            .with_label_values(&["hibernated"])
            .inc();
        if self.sleep.activity() != activity {
            // Touched while it stopped (a message that took the handle just before): reopen
            // now rather than wait for the sender's retry.
            drop(_one);
            let _ = self.group().await;
            return false;
        }
        true
    }

    /// Stops the group for good (the anchor stops, or the replica is removed).
    pub(crate) async fn stop(&self) {
        let _one = self.reopening.lock().await;
        if let Slot::Hibernated { role, .. } =
            &mut *self.slot.write().unwrap_or_else(PoisonError::into_inner)
        {
            if let Some(role) = role.take() {
                self.plumbing.hibernated.add(role, -1);
            }
        }
        if let Some(raft) = self.raft() {
            if let Err(e) = raft.shutdown().await {
                tracing::debug!(scope = %self.id, error = %e, "stopping a group");
            }
        }
    }

    /// The proposer's queue, if the group runs.
    pub(crate) fn proposals(&self) -> Option<mpsc::Sender<Proposal>> {
        match &*self.slot() {
            Slot::Running(g) => Some(g.proposals.clone()),
            Slot::Hibernated { .. } => None,
        }
    }

    /// The read rounds' queue, if the group runs.
    pub(crate) fn reads(&self) -> Option<mpsc::Sender<ReadWaiter>> {
        match &*self.slot() {
            Slot::Running(g) => Some(g.reads.clone()),
            Slot::Hibernated { .. } => None,
        }
    }
}

/// Keeps the replica reachable by `Arc` for spawned reopen-and-wake tasks.
pub(crate) fn spawn_with_group(
    r: &Arc<Replica>,
    what: &'static str,
    f: impl FnOnce(&Replica, &ScopeRaft) + Send + 'static,
) {
    let r = r.clone();
    tokio::spawn(async move {
        match r.group().await {
            Ok(raft) => f(&r, &raft),
            Err(e) => {
                tracing::info!(scope = %r.id, error = %e, what, "could not reopen a hibernated group")
            }
        }
    });
}

/// What [`Replica::client_write`] answers.
pub type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
    openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, AnchorInfo>>,
>;

impl Replica {
    /// Proposes `cmd` to the group (reopened if it hibernates) without the proposer, as
    /// openraft's `client_write`; a group that cannot be reopened answers as a stopped one.
    pub async fn client_write(&self, cmd: crate::raft::ScopeCommand) -> WriteResult {
        match self.group().await {
            Ok(raft) => raft.client_write(cmd).await,
            Err(e) => {
                tracing::info!(scope = %self.id, error = %e, "no group to write to");
                Err(openraft::error::RaftError::Fatal(
                    openraft::error::Fatal::Stopped,
                ))
            }
        }
    }
}

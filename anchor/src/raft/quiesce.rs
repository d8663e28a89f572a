//! One replica's sleep state and the switches that put its group to sleep and wake it
//! (openraft 0.9's run-time `tick`, `heartbeat` and `elect` switches). The decisions are in
//! [`crate::scope::quiesce`]; the anchor-wide loop that takes them is
//! [`crate::quiescer`].
//!
//! Every event that must keep a group awake calls [`Sleep::touch`] (cheap) or
//! [`Sleep::wake`]: writes and linearizable reads queued, Raft RPCs received. Putting a
//! group to sleep ([`Sleep::try_sleep`]) is refused if anything touched it since the
//! decision was taken, so a write racing with quiescence either wakes the group or stops it
//! from sleeping.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

use super::ScopeRaft;

/// What woke a group (the label of `anchorage_scope_wakes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A write queued on the leader.
    Write,
    /// A linearizable read queued on the leader.
    Read,
    /// A vote request received.
    Vote,
    /// An append (entries or heartbeat) received.
    Append,
    /// A snapshot chunk received.
    Snapshot,
    /// The leader's anchor is dead: a follower wakes to elect.
    LeaderDead,
    /// A member's anchor came back or restarted: the leader wakes to catch it up.
    PeerBack,
    /// Its log moved while it slept (an entry proposed by other code than the proposer).
    LogMoved,
    /// It lost leadership while asleep.
    NotLeader,
    /// A caller keeps it awake (membership change, operator).
    KeptAwake,
}

impl Cause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Write => "write",
            Cause::Read => "read",
            Cause::Vote => "vote",
            Cause::Append => "append",
            Cause::Snapshot => "snapshot",
            Cause::LeaderDead => "leader_dead",
            Cause::PeerBack => "peer_back",
            Cause::LogMoved => "log_moved",
            Cause::NotLeader => "not_leader",
            Cause::KeptAwake => "kept_awake",
        }
    }
}

/// The role a replica slept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It led the group.
    Leader,
    /// It followed.
    Follower,
}

#[derive(Debug, Default)]
struct State {
    /// `Some` while asleep.
    asleep: Option<Role>,
    /// The last log index when it fell asleep.
    slept_at: Option<u64>,
    /// The term when it fell asleep.
    slept_term: u64,
    /// When it fell asleep.
    slept_since: Option<Instant>,
    /// (activity count, last log index, since when, ms) as last observed by the quiescer.
    seen: Option<(u64, Option<u64>, u64)>,
    /// A quiesce round of this leader is under way.
    round: bool,
    /// No new round before this time, ms.
    retry_at_ms: u64,
}

/// One replica's sleep state.
#[derive(Debug)]
pub struct Sleep {
    state: Mutex<State>,
    asleep: AtomicBool,
    activity: AtomicU64,
    kept: AtomicUsize,
    wakes: IntCounterVec,
}

/// Keeps a group awake while it lives ([`crate::replica::Replica::keep_awake`]).
#[derive(Debug)]
pub struct KeepAwake {
    sleep: Arc<Sleep>,
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.sleep.kept.fetch_sub(1, Ordering::SeqCst);
        self.sleep.touch();
    }
}

impl Sleep {
    /// An awake state; wakes are counted in `wakes` (label: cause).
    pub fn new(wakes: IntCounterVec) -> Sleep {
        Sleep {
            state: Mutex::new(State::default()),
            asleep: AtomicBool::new(false),
            activity: AtomicU64::new(0),
            kept: AtomicUsize::new(0),
            wakes,
        }
    }

    /// Something happened in the group: it is not idle.
    pub fn touch(&self) {
        self.activity.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times it was touched.
    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::SeqCst)
    }

    /// Whether it sleeps.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// The role it sleeps in and the last log index it fell asleep at.
    pub fn slept(&self) -> Option<(Role, Option<u64>)> {
        let st = self.state.lock().ok()?;
        st.asleep.map(|r| (r, st.slept_at))
    }

    /// How long it has slept, if it sleeps.
    pub fn asleep_for(&self) -> Option<Duration> {
        self.state.lock().ok()?.slept_since.map(|t| t.elapsed())
    }

    /// Counts its sleep from now (a hibernated group reopened while it sleeps: it
    /// hibernates again only after another `raft.hibernate_after_ms`, so a scope that a
    /// read-index round or a stray heartbeat reopens now and then does not stop and reopen
    /// every second).
    pub fn restart_sleep_clock(&self) {
        if let Ok(mut st) = self.state.lock() {
            if st.slept_since.is_some() {
                st.slept_since = Some(Instant::now());
            }
        }
    }

    /// Whether someone keeps it awake.
    pub fn kept_awake(&self) -> bool {
        self.kept.load(Ordering::SeqCst) > 0
    }

    /// Keeps the group awake until the guard is dropped: no replica kept awake agrees to
    /// sleep. The caller wakes it if it sleeps as the leader (a follower asleep stays so
    /// until its leader's next append: woken without one, its leader lease long expired,
    /// it would start an election).
    pub fn hold(self: &Arc<Self>) -> KeepAwake {
        self.kept.fetch_add(1, Ordering::SeqCst);
        KeepAwake {
            sleep: self.clone(),
        }
    }

    /// Wakes the group if it sleeps as the leader (see [`Sleep::wake`]); a follower asleep
    /// is only touched. For writes and reads queued here: a follower forwards them, and the
    /// leader they reach wakes it.
    pub fn wake_leader(&self, raft: &ScopeRaft, cause: Cause) -> bool {
        self.touch();
        if !self.is_asleep() || self.slept().map(|(r, _)| r) != Some(Role::Leader) {
            return false;
        }
        self.wake(raft, cause)
    }

    /// Wakes the group if it sleeps; true if it slept. Touches it in any case. A leader
    /// sends a heartbeat at once, so its followers wake with a fresh leader lease. Wake a
    /// follower this way only on a message that renews its lease or calls an election
    /// (append, snapshot, vote).
    pub fn wake(&self, raft: &ScopeRaft, cause: Cause) -> bool {
        self.touch();
        if !self.is_asleep() {
            return false;
        }
        let Some(role) = self.take_asleep() else {
            return false;
        };
        let rc = raft.runtime_config();
        rc.heartbeat(true);
        rc.elect(true);
        rc.tick(true);
        self.wakes.with_label_values(&[cause.label()]).inc();
        if role == Role::Leader {
            let raft = raft.clone();
            tokio::spawn(async move {
                let _ = raft.trigger().heartbeat().await;
            });
        }
        true
    }

    /// After an append was handled: wakes the group if it sleeps, unless this was a
    /// heartbeat (no entries) that left its term and last log index as they were when it
    /// fell asleep. (A leader's heartbeat sent just before it slept, or one of a
    /// read-index round, must not leave a follower awake with a silent leader: it would
    /// elect once its lease expired. Entries always wake it; a new leader's first append
    /// carries its blank entry.)
    pub fn on_append(&self, raft: &ScopeRaft, heartbeat: bool) -> bool {
        if !self.is_asleep() {
            return false;
        }
        if heartbeat {
            let unchanged = self.state.lock().ok().is_some_and(|st| {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                st.asleep == Some(Role::Follower)
                    && st.slept_at == m.last_log_index
                    && st.slept_term == m.current_term
            });
            if unchanged {
                return false;
            }
        }
        self.wake(raft, Cause::Append)
    }

    /// Wakes a follower whose leader died: ticks at once, elections after `delay` (its rank
    /// among the survivors, see [`crate::scope::quiesce::elect_delay_ms`]).
    pub fn wake_to_elect(&self, raft: &ScopeRaft, delay: Duration) -> bool {
        self.touch();
        if self.take_asleep().is_none() {
            return false;
        }
        let rc = raft.runtime_config();
        rc.heartbeat(true);
        rc.tick(true);
        self.wakes
            .with_label_values(&[Cause::LeaderDead.label()])
            .inc();
        if delay.is_zero() {
            rc.elect(true);
        } else {
            let raft = raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                raft.runtime_config().elect(true);
            });
        }
        true
    }

    fn take_asleep(&self) -> Option<Role> {
        let mut st = self.state.lock().ok()?;
        let role = st.asleep.take()?;
        st.slept_at = None;
        st.slept_since = None;
        st.seen = None;
        self.asleep.store(false, Ordering::SeqCst);
        Some(role)
    }

    /// Puts the group to sleep in `role`, unless it was touched since `activity_seen` was
    /// read or someone keeps it awake; true if it sleeps now.
    pub fn try_sleep(
        &self,
        raft: &ScopeRaft,
        role: Role,
        activity_seen: u64,
        last_log: Option<u64>,
    ) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st.asleep.is_some() {
            return true;
        }
        if self.activity() != activity_seen || self.kept_awake() {
            return false;
        }
        let rc = raft.runtime_config();
        rc.tick(false);
        rc.heartbeat(false);
        rc.elect(false);
        st.asleep = Some(role);
        st.slept_at = last_log;
        st.slept_term = raft.metrics().borrow().current_term;
        st.slept_since = Some(Instant::now());
        self.asleep.store(true, Ordering::SeqCst);
        true
    }

    /// How long the group has been idle at `now_ms`: the time since its activity count or
    /// its last log index last changed, as observed by successive calls.
    pub fn idle_ms(&self, last_log: Option<u64>, now_ms: u64) -> u64 {
        let activity = self.activity();
        let Ok(mut st) = self.state.lock() else {
            return 0;
        };
        match st.seen {
            Some((a, l, since)) if a == activity && l == last_log => now_ms.saturating_sub(since),
            _ => {
                st.seen = Some((activity, last_log, now_ms));
                0
            }
        }
    }

    /// Starts a quiesce round unless one is under way or the last one failed recently; true
    /// if the caller may run it (and must call [`Sleep::end_round`]).
    pub fn begin_round(&self, now_ms: u64) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st.round || now_ms < st.retry_at_ms {
            return false;
        }
        st.round = true;
        true
    }

    /// Ends a quiesce round; a failed one is not retried before `retry_at_ms`.
    pub fn end_round(&self, retry_at_ms: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.round = false;
            st.retry_at_ms = retry_at_ms;
        }
    }
}

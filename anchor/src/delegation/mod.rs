//! Carrying out delegations: the parent's leader seeds the child's members and commits the
//! hand-over; the child, once its parent refers to it, starts taking writes.
//!
//! 1. The parent commits `Op::Delegate` (an admin-signed mutation): the delegation is Frozen
//!    and writes under its prefix get `Moving`; reads are still served.
//! 2. [`drive`] on the parent's leader sends every child member the frozen records in chunks
//!    (`SeedScope`, with the signed delegation as proof). Each member ([`Receiver`]) checks
//!    the proof, the sender and its own placement labels, then writes the child's state as a
//!    snapshot at the parent's delegation index and starts the group; the first listed
//!    member calls the election.
//! 3. Once the child has a leader that applied its first entry, the parent's leader commits
//!    `DelegationActive`: the parent drops the moved records and answers with a referral.
//!    If that cannot happen within [`HAND_OVER_TIMEOUT`], it commits `DelegationAborted`.
//! 4. The child's leader, while inactive, asks its parent's members about its prefix; when one
//!    answers with a referral to it, it commits `Activate` and accepts writes.
//!
//! Every step is idempotent and re-driven by whoever leads after a leader change. At no
//! instant does a name resolve to nothing or to two different record sets: until step 3 the
//! parent answers and the child holds the same frozen records; from step 3 the parent refers
//! and the child answers; the child changes nothing before step 4.
//!
//! A scope's own subtree split is a delegation too, to its own members and without a proof:
//! the leader's splitter ([`propose_splits`]) proposes it as one log entry, each member
//! builds the child from its own replica of the parent instead of step 2, and steps 3 and 4
//! are the same.
//!
//! Such a child merges back the other way, also by log entries only ([`merge_scopes`]): the
//! parent's leader commits `Merge` (the delegation is `Merging`), the child's leader
//! `Retire` (the child's state is final), the parent's leader `MergeDone` with the child's
//! records, and every anchor removes the child's replica.
//!
//! A range split off a delegated scope is then pushed to the scope holding the delegation
//! ([`push_ranges`]), with the signed answers of a majority of the scope's members as proof,
//! so the holder refers names in the range straight to the range scope.
//!
//! A scope's members change the same way, driven by its leader ([`move_members`]): the
//! anchors that join become learners, then voters alongside the old members; the change
//! commits (`MembersChanged`); the parent learns the new members; the members that leave
//! stop voting and drop their replica ([`check_removed`]).
//!
//! Both sides see the anchor only through [`Host`]: its hosted replicas, its identity, a way
//! to reach other anchors, and the two ways of hosting a child scope.

mod driver;
mod forgetter;
mod learner;
mod merge_child;
mod merger;
mod mover;
mod rebalancer;
mod receive;
mod removal;
mod reporter;
mod split;
mod splitter;
mod transfer;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use proto::{ScopeDescriptor, ScopeId};
use resolver::net::{CallError, Protocol};
use resolver::AnchorAddr;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::sm::Seed;
use crate::raft::NodeId;
use crate::replica::Replica;
use crate::AnchorError;

/// A timer for a background, retry or poll loop: the first tick is immediate; a late tick
/// does not make the loop catch up.
fn every(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Waits for the next tick of a background loop, or for `stop` to change: false once the
/// anchor stops.
async fn next_tick(
    tick: &mut tokio::time::Interval,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tick.tick() => {}
        _ = stop.changed() => {}
    }
    !*stop.borrow()
}

/// How often a background loop looks at a hibernated replica (one whose group is stopped;
/// [`crate::group`]). Nothing in it changes while it hibernates, so what a loop decides from
/// its state alone stays decided; what also depends on time or on other scopes (a merge of
/// an idle child, a removal check, a split held back by its cooldown) is looked at this
/// often. Awake and sleeping replicas are looked at on every pass.
pub const HIBERNATED_VISIT: Duration = Duration::from_secs(10);

/// Which replicas one pass of a loop that ticks every `tick` looks at.
struct Visits {
    every: u64,
    pass: u64,
}

impl Visits {
    fn new(tick: Duration) -> Visits {
        let tick = tick.as_millis().max(1);
        Visits {
            every: u64::try_from(HIBERNATED_VISIT.as_millis() / tick)
                .unwrap_or(1)
                .max(1),
            pass: 0,
        }
    }

    /// Starts the next pass.
    fn next_pass(&mut self) {
        self.pass = self.pass.wrapping_add(1);
    }

    /// Whether this pass looks at every replica (what a loop keeps per scope may be pruned
    /// of the scopes it did not see only on such a pass).
    fn full(&self) -> bool {
        self.pass.is_multiple_of(self.every)
    }

    /// The replicas this pass walks: every one on a full pass, else those that do not
    /// hibernate.
    fn list<H: Host>(&self, host: &H) -> crate::registry::Replicas {
        if self.full() {
            host.replicas()
        } else {
            host.awake_replicas()
        }
    }

    /// Whether this pass looks at `r`.
    fn wants(&self, r: &Replica) -> bool {
        self.full() || !r.is_hibernated()
    }
}

pub use driver::{drive, HAND_OVER_TIMEOUT, STRAGGLER_GRACE};
pub use forgetter::{forget_stale_ranges, FORGET_EVERY};
pub use learner::{push_ranges, LEARN_EVERY};
pub use merge_child::merged_into;
pub use merger::{merge_lines, merge_scopes, MERGE_ENTRY_BYTES_MAX, MERGE_EVERY};
pub use mover::{move_members, MOVE_EVERY};
pub use rebalancer::rebalance;
pub use receive::Receiver;
pub use removal::{check_removed, removal_confirmed, vouch_for};
pub use reporter::{report_loads, REPORT_EVERY};
pub use splitter::{propose_splits, SPLIT_EVERY};
pub use transfer::{campaign, transfer_leadership};

/// What delegation needs of the anchor it runs on.
pub trait Host: Clone + Send + Sync + 'static {
    /// This anchor's Raft node id.
    fn node_id(&self) -> NodeId;

    /// This anchor's peer id.
    fn peer_id(&self) -> PeerId;

    /// This anchor's placement labels.
    fn labels(&self) -> &BTreeMap<String, String>;

    /// This anchor's listen addresses.
    fn addrs(&self) -> Vec<String> {
        Vec::new()
    }

    /// The other anchors this one hears from (live load summaries), as the placement
    /// planner sees them.
    fn anchors_heard(&self, now_ms: u64) -> Vec<crate::scope::place::AnchorLoad> {
        let _ = now_ms;
        Vec::new()
    }

    /// Every hosted replica.
    fn replicas(&self) -> crate::registry::Replicas;

    /// The hosted replicas whose group does not hibernate (see
    /// [`crate::registry::Registry::awake`]); all of them by default.
    fn awake_replicas(&self) -> crate::registry::Replicas {
        self.replicas()
    }

    /// The hosted replicas that served requests lately or have reads to report (see
    /// [`crate::registry::Registry::busy`]); all of them by default.
    fn busy_replicas(&self, _now_s: u64) -> Vec<Arc<Replica>> {
        self.replicas().to_vec()
    }

    /// The replica of scope `id`, if hosted here.
    fn replica(&self, id: &ScopeId) -> Option<Arc<Replica>>;

    /// Wall-clock time, ms since the epoch.
    fn now_ms(&self) -> u64;

    /// Counts one delegation step by its outcome.
    fn count(&self, step: &str, outcome: &str);

    /// Counts one split this anchor proposed, by kind, reason and outcome.
    fn count_split(&self, kind: &str, reason: &str, outcome: &str) {
        let _ = (kind, reason, outcome);
    }

    /// Counts one merge step this anchor drove, by outcome.
    fn count_merge(&self, outcome: &str) {
        let _ = outcome;
    }

    /// Counts one range pushed to (or learned by) a delegation's holder, by outcome.
    fn count_learn(&self, outcome: &str) {
        let _ = outcome;
    }

    /// Stops hosting a scope and deletes its state (a child merged back into its parent).
    fn remove_scope(&self, id: &ScopeId) -> impl Future<Output = Result<(), AnchorError>> + Send;

    /// One request to an anchor, answered within `timeout`; a request to this anchor itself
    /// (a parent member that is also a child member) is handled in place.
    fn call<Req, Resp>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        req: &Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Resp, CallError>> + Send
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned + Send;

    /// Hosts a child scope from its seed and starts its group.
    fn host_seeded(
        &self,
        seed: &Seed<'_>,
    ) -> impl Future<Output = Result<Arc<Replica>, AnchorError>> + Send;

    /// Hosts an empty replica of a child scope (it catches up by snapshot).
    fn host_empty(
        &self,
        descriptor: &ScopeDescriptor,
    ) -> impl Future<Output = Result<Arc<Replica>, AnchorError>> + Send;
}

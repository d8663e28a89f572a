//! Quiescence of idle scopes, the decisions only (no IO, no clock reads): when a scope's
//! leader may put its group to sleep, when a follower agrees to sleep, which anchors count as
//! dead, and how long a follower whose leader died waits before it may elect.
//!
//! The protocol (after CockroachDB's quiescence and TiKV's hibernate regions):
//! 1. A leader whose group saw no write, read or log change for `quiesce_after_ms`, whose
//!    log is applied, whose membership is not changing and that nobody keeps awake, and
//!    whose every *live* member has its last log index (a quorum of voters live and caught
//!    up), sends each live member a quiesce message: its term, its node id and its last log
//!    id ([`QuiesceMsg`]).
//! 2. A follower sleeps (ticks, heartbeats and elections off) only when the message's term
//!    and leader are its own and it has the same last log id, applied
//!    ([`follower_verdict`]); it answers whether it sleeps.
//! 3. When every member told answered that it sleeps, the leader sleeps too. Any member
//!    that refused, or did not answer, keeps the group awake; the leader tries again later.
//! 4. A write, a linearizable read or a vote wakes the leader, which sends a heartbeat at
//!    once; a follower wakes on any append, vote or snapshot it receives (after handling it,
//!    so its leader lease is fresh and it does not elect).
//! 5. A sleeping follower whose leader's anchor is dead ([`Liveness`]) wakes and may elect,
//!    staggered by its rank among the live voters ([`elect_delay_ms`]) so the survivors of a
//!    group do not split their votes. A sleeping leader wakes when a member's anchor comes
//!    back (or restarted), to catch it up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

/// Raft node id (as in `crate::raft::NodeId`).
pub type Node = u64;

/// A log id reduced to what the protocol compares: (term, index).
pub type LogPos = (u64, u64);

/// What the leader knows of its group when it considers sleeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderFacts {
    /// This node.
    pub me: Node,
    /// The current term.
    pub term: u64,
    /// Whether this node leads the group now.
    pub leading: bool,
    /// The last log id.
    pub last_log: Option<LogPos>,
    /// The last applied index.
    pub applied: Option<u64>,
    /// The voters of the effective membership.
    pub voters: BTreeSet<Node>,
    /// Whether the membership is joint (a change in progress).
    pub joint: bool,
    /// Each other member's (voter or learner) matched index, as the leader's replication
    /// reports it.
    pub matched: BTreeMap<Node, Option<u64>>,
    /// Whether some caller keeps the group awake (a membership change, an operator).
    pub kept_awake: bool,
    /// How long the group has been idle (no write, read or log change), ms.
    pub idle_ms: u64,
}

/// Why a leader keeps its group awake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stay {
    /// Not the leader.
    NotLeader,
    /// Quiescence is off.
    Off,
    /// Active less than `quiesce_after_ms` ago.
    Busy,
    /// Someone keeps the group awake.
    KeptAwake,
    /// The membership is changing.
    MembershipChanging,
    /// Its own log is not applied up to its end.
    NotApplied,
    /// A live member lacks the last log index.
    Lagging(Node),
    /// Fewer live, caught-up voters (itself included) than a quorum.
    NoLiveQuorum,
}

impl Stay {
    /// A short label (for metrics and logs).
    pub fn label(&self) -> &'static str {
        match self {
            Stay::NotLeader => "not_leader",
            Stay::Off => "off",
            Stay::Busy => "busy",
            Stay::KeptAwake => "kept_awake",
            Stay::MembershipChanging => "membership_changing",
            Stay::NotApplied => "not_applied",
            Stay::Lagging(_) => "lagging",
            Stay::NoLiveQuorum => "no_live_quorum",
        }
    }
}

/// The leader's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderVerdict {
    /// Sleep once every member in `tell` (the live ones, sorted) has agreed.
    Sleep {
        /// The live members to send the quiesce message to.
        tell: Vec<Node>,
    },
    /// Stay awake, and why.
    Stay(Stay),
}

/// May the leader put its group to sleep? `dead(n)`: node `n`'s anchor is known dead.
/// `quiesce_after_ms` 0 means never.
pub fn leader_verdict(
    f: &LeaderFacts,
    quiesce_after_ms: u64,
    dead: impl Fn(Node) -> bool,
) -> LeaderVerdict {
    let stay = LeaderVerdict::Stay;
    if quiesce_after_ms == 0 {
        return stay(Stay::Off);
    }
    if !f.leading {
        return stay(Stay::NotLeader);
    }
    if f.kept_awake {
        return stay(Stay::KeptAwake);
    }
    if f.joint {
        return stay(Stay::MembershipChanging);
    }
    if f.idle_ms < quiesce_after_ms {
        return stay(Stay::Busy);
    }
    let last = f.last_log.map(|(_, i)| i);
    if f.applied != last {
        return stay(Stay::NotApplied);
    }
    let mut tell = Vec::new();
    let mut caught_up_voters = usize::from(f.voters.contains(&f.me));
    for (&n, &m) in &f.matched {
        if n == f.me || dead(n) {
            continue;
        }
        if m != last {
            return stay(Stay::Lagging(n));
        }
        tell.push(n);
        if f.voters.contains(&n) {
            caught_up_voters += 1;
        }
    }
    // A voter the replication does not report (it should, on a leader) counts as lagging
    // unless it is dead.
    if let Some(&n) = f
        .voters
        .iter()
        .find(|&&n| n != f.me && !f.matched.contains_key(&n) && !dead(n))
    {
        return stay(Stay::Lagging(n));
    }
    if caught_up_voters * 2 <= f.voters.len() {
        return stay(Stay::NoLiveQuorum);
    }
    tell.sort_unstable();
    LeaderVerdict::Sleep { tell }
}

/// The quiesce message a leader sends each live member (the wire form is
/// `proto::msg::QuiesceRequest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuiesceMsg {
    /// The leader's term.
    pub term: u64,
    /// The leader's node id.
    pub leader: Node,
    /// The leader's last log id.
    pub last_log: Option<LogPos>,
}

/// What a follower knows of its group when a quiesce message arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowerFacts {
    /// Its current term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<Node>,
    /// Whether it leads (then it never sleeps on someone else's word).
    pub leading: bool,
    /// Its last log id.
    pub last_log: Option<LogPos>,
    /// Its last applied index.
    pub applied: Option<u64>,
}

/// Why a follower refuses to sleep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Another term.
    Term,
    /// It knows another leader, or none, or leads itself.
    Leader,
    /// Another last log id.
    Log,
    /// Its log is not applied to the end.
    NotApplied,
    /// The message comes from an anchor that is not the leader's.
    Sender,
}

impl Mismatch {
    /// A short label (for metrics and logs).
    pub fn label(&self) -> &'static str {
        match self {
            Mismatch::Term => "term",
            Mismatch::Leader => "leader",
            Mismatch::Log => "log",
            Mismatch::NotApplied => "not_applied",
            Mismatch::Sender => "sender",
        }
    }
}

/// Does the follower sleep on this message? `sender` is the node id of the anchor the
/// message came from (it must be the leader it names).
pub fn follower_verdict(f: &FollowerFacts, msg: &QuiesceMsg, sender: Node) -> Result<(), Mismatch> {
    if sender != msg.leader {
        return Err(Mismatch::Sender);
    }
    if f.term != msg.term {
        return Err(Mismatch::Term);
    }
    if f.leading || f.leader != Some(msg.leader) {
        return Err(Mismatch::Leader);
    }
    if f.last_log != msg.last_log {
        return Err(Mismatch::Log);
    }
    if f.applied != f.last_log.map(|(_, i)| i) {
        return Err(Mismatch::NotApplied);
    }
    Ok(())
}

/// How long a sleeping follower whose leader died waits before it may elect: the live voters
/// other than the dead leader, ranked by node id, elect one `step_ms` apart (rank 0 at once),
/// so two survivors of a group do not both stand in the same term.
pub fn elect_delay_ms(
    me: Node,
    voters: &BTreeSet<Node>,
    dead: impl Fn(Node) -> bool,
    step_ms: u64,
) -> u64 {
    let rank = voters
        .iter()
        .filter(|&&n| n != me && !dead(n))
        .take_while(|&&n| n < me)
        .count();
    (rank as u64).saturating_mul(step_ms)
}

/// Followers woken together when their leader's anchor died: more at once jam the
/// connection between the survivors with vote and append RPCs (a failover of 3 333 sleeping
/// groups woken at once stalled for a minute).
pub const WAKE_BATCH: u64 = 100;
/// Between two such batches, ms.
pub const WAKE_BATCH_GAP_MS: u64 = 500;

/// The extra delay of the `k`-th follower (0-based) woken because its leader died: whole
/// batches of [`WAKE_BATCH`], [`WAKE_BATCH_GAP_MS`] apart.
pub fn wake_batch_delay_ms(k: u64) -> u64 {
    (k / WAKE_BATCH).saturating_mul(WAKE_BATCH_GAP_MS)
}

/// What an answer (or a failure) of a liveness ping changed about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Nothing worth acting on.
    None,
    /// It was dead (or never heard of) and answers again, or it restarted (another
    /// incarnation): leaders of groups it belongs to should wake to catch it up.
    Back,
    /// It just became dead: followers it leads should wake.
    Died,
}

/// One peer's liveness record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Life {
    /// When it last answered, ms.
    ok_ms: Option<u64>,
    /// When we started asking, ms.
    since_ms: u64,
    /// Its incarnation (its start time) as it last said.
    incarnation: Option<u64>,
    /// Whether it was counted dead.
    dead: bool,
}

/// How many times `dead_after_ms` a peer that is reachable but does not answer in time
/// (pings time out) must stay silent before it counts as dead.
pub const SILENT_FACTOR: u64 = 20;

/// Node-level liveness of the anchors this one shares groups with, from pings (counted from
/// the first ping when a peer never answered):
/// - a peer that cannot be dialed at all (a killed process refuses connections) is dead
///   after `dead_after_ms` without an answer;
/// - a peer whose pings time out or fail on an established connection (an overloaded
///   anchor, or a partition) is dead after [`SILENT_FACTOR`] × `dead_after_ms`. Counting a slow anchor dead makes the
///   followers it leads elect, which loads every anchor more: with a short grace, two busy
///   survivors of a failover would count each other dead and depose each other's leaders.
#[derive(Clone, Debug)]
pub struct Liveness<P: Eq + Hash + Clone> {
    dead_after_ms: u64,
    peers: HashMap<P, Life>,
}

impl<P: Eq + Hash + Clone> Liveness<P> {
    /// An empty record; peers count as dead after `dead_after_ms` unreachable.
    pub fn new(dead_after_ms: u64) -> Liveness<P> {
        Liveness {
            dead_after_ms,
            peers: HashMap::new(),
        }
    }

    fn life(&mut self, peer: &P, now_ms: u64) -> &mut Life {
        self.peers.entry(peer.clone()).or_insert(Life {
            ok_ms: None,
            since_ms: now_ms,
            incarnation: None,
            dead: false,
        })
    }

    /// `peer` answered a ping at `now_ms`, saying it started as `incarnation`.
    pub fn answered(&mut self, peer: &P, incarnation: u64, now_ms: u64) -> PeerEvent {
        let life = self.life(peer, now_ms);
        let restarted = life.incarnation.is_some_and(|i| i != incarnation);
        let back = life.dead || restarted;
        life.ok_ms = Some(now_ms);
        life.incarnation = Some(incarnation);
        life.dead = false;
        if back {
            PeerEvent::Back
        } else {
            PeerEvent::None
        }
    }

    /// `peer` could not be reached by a ping sent at or before `now_ms` (no connection).
    pub fn failed(&mut self, peer: &P, now_ms: u64) -> PeerEvent {
        let grace = self.dead_after_ms;
        self.silent_for(peer, now_ms, grace)
    }

    /// A ping to `peer`, sent at or before `now_ms`, timed out (the peer may be busy).
    pub fn timed_out(&mut self, peer: &P, now_ms: u64) -> PeerEvent {
        let grace = self.dead_after_ms.saturating_mul(SILENT_FACTOR);
        self.silent_for(peer, now_ms, grace)
    }

    fn silent_for(&mut self, peer: &P, now_ms: u64, grace: u64) -> PeerEvent {
        let life = self.life(peer, now_ms);
        let since = life.ok_ms.unwrap_or(life.since_ms);
        if !life.dead && now_ms.saturating_sub(since) >= grace {
            life.dead = true;
            return PeerEvent::Died;
        }
        PeerEvent::None
    }

    /// Whether `peer` counts as dead now (a peer never pinged is alive).
    pub fn is_dead(&self, peer: &P) -> bool {
        self.peers.get(peer).is_some_and(|l| l.dead)
    }

    /// Forgets peers not in `keep` (they share no group with this anchor any more).
    pub fn retain(&mut self, keep: impl Fn(&P) -> bool) {
        self.peers.retain(|p, _| keep(p));
    }
}

#[cfg(test)]
#[path = "quiesce_tests.rs"]
mod tests;

//! Member changes in chaos campaigns ([`super::CampaignConfig::member_moves`]): `/chaos` is
//! delegated to three of four anchors before the clients start, then a mover, whose client
//! suffers the campaign's faults like the others, asks every 1–3 s (seeded) for a move of
//! one of its members (the leader itself in two moves of five) to the fourth anchor
//! (`Op::Members`, signed by the scope's admin). A watcher notes every member set the scope
//! reaches and whether the faults were on. After healing, the campaign waits until no change
//! is in flight and the anchors that left have dropped their replica.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anchor::Anchor;
use proto::msg::ScopeTarget;
use proto::{MemberChange, Name, ScopeDescriptor};
use rand::rngs::StdRng;
use rand::Rng;
use resolver::Client;

/// What the member changes of one campaign did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moves {
    /// Moves the mover asked for.
    pub asked: u64,
    /// Asks the scope acknowledged (committed; the leader then carries the change out).
    pub acknowledged: u64,
    /// Asks that moved the scope's leader away.
    pub of_leader: u64,
    /// Asks refused or whose outcome the mover could not know.
    pub not_acknowledged: u64,
    /// Member sets the scope reached (each a finished change), seen by the watcher.
    pub done: usize,
    /// Of those, reached while the faults were on.
    pub done_during_faults: usize,
    /// A change still in flight when the wait after healing ran out.
    pub in_flight: bool,
    /// Anchors not in the final member set that still hosted a replica of `/chaos` when
    /// the wait ran out (an anchor that left must drop its copy).
    pub left_over: usize,
}

/// The prefix whose members move.
pub(super) fn prefix() -> Name {
    Name::parse("/chaos").expect("a valid name")
}

/// The `/chaos` scope as the anchor with the newest descriptor sees it, with the change in
/// flight and the leader's peer id.
fn view(anchors: &[Anchor]) -> Option<(ScopeDescriptor, Option<MemberChange>, Option<String>)> {
    let target = ScopeTarget::Name(prefix());
    anchors
        .iter()
        .filter_map(|a| a.scope_info(&target).ok())
        .filter(|i| i.descriptor.prefix == prefix())
        .max_by_key(|i| (i.descriptor.epoch, i.status.last_applied))
        .map(|i| (i.descriptor, i.member_change, i.status.leader))
}

fn peer_set(d: &ScopeDescriptor) -> BTreeSet<String> {
    d.members.iter().map(|m| m.peer_id.clone()).collect()
}

/// Asks for moves until `deadline`; returns the asks' counts.
pub(super) async fn run(
    anchors: &[Anchor],
    client: Client,
    key: ed25519_dalek::SigningKey,
    mut rng: StdRng,
    deadline: Instant,
) -> Moves {
    let mut moves = Moves::default();
    loop {
        let pause = Duration::from_millis(rng.gen_range(1000..3000));
        let left = deadline.saturating_duration_since(Instant::now());
        if left < pause {
            return moves;
        }
        tokio::time::sleep(pause).await;
        let Some((descriptor, change, leader)) = view(anchors) else {
            continue;
        };
        if change.is_some() {
            continue;
        }
        let members = peer_set(&descriptor);
        let Some(spare) = anchors
            .iter()
            .find(|a| !members.contains(&a.info().peer_id))
        else {
            continue;
        };
        let leaving = match leader.filter(|l| members.contains(l) && rng.gen_ratio(2, 5)) {
            Some(l) => {
                moves.of_leader += 1;
                l
            }
            None => {
                let all: Vec<&String> = members.iter().collect();
                all[rng.gen_range(0..all.len())].clone()
            }
        };
        let op = proto::Op::Members {
            scope: prefix(),
            add: vec![proto::MemberSpec {
                anchor: spare.info(),
                labels: spare.status().labels,
            }],
            remove: vec![leaving],
        };
        moves.asked += 1;
        match client.mutate(op, &key).await {
            Ok(_) => moves.acknowledged += 1,
            Err(_) => moves.not_acknowledged += 1,
        }
    }
}

/// The member sets the scope went through, as a watcher polling the anchors saw them.
#[derive(Debug, Default)]
pub(super) struct Seen {
    last: Option<BTreeSet<String>>,
    changes: usize,
}

impl Seen {
    fn observe(&mut self, d: &ScopeDescriptor) {
        let now = peer_set(d);
        if self.last.as_ref().is_some_and(|l| *l != now) {
            self.changes += 1;
        }
        self.last = Some(now);
    }
}

/// Notes each member set the scope reaches until `deadline` (the end of the faults).
pub(super) async fn watch(anchors: &[Anchor], deadline: Instant) -> Seen {
    let mut seen = Seen::default();
    // A sample every 50 ms until the deadline (a sampler, not a wait for a condition).
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tokio::time::timeout_at(deadline.into(), every.tick())
        .await
        .is_ok()
    {
        if let Some((d, _, _)) = view(anchors) {
            seen.observe(&d);
        }
    }
    seen
}

/// After healing: waits up to `within` until no change is in flight and only members host
/// `/chaos`, still noting member sets; fills in `done`, `done_during_faults` (from `seen`,
/// the watch of the faults), `in_flight` and `left_over`. When it did not settle, returns
/// what each anchor's replica of `/chaos` looked like at the end.
pub(super) async fn settle(
    anchors: &[Anchor],
    mut seen: Seen,
    moves: &mut Moves,
    within: Duration,
) -> Option<String> {
    moves.done_during_faults = seen.changes;
    let deadline = Instant::now() + within;
    loop {
        let current = view(anchors);
        if let Some((d, _, _)) = &current {
            seen.observe(d);
        }
        let members = current.as_ref().map(|(d, _, _)| peer_set(d));
        moves.in_flight = current.as_ref().is_none_or(|(_, c, _)| c.is_some());
        moves.left_over = anchors
            .iter()
            .filter(|a| {
                members
                    .as_ref()
                    .is_some_and(|m| !m.contains(&a.info().peer_id))
                    && a.status().scopes.iter().any(|s| s.prefix == prefix())
            })
            .count();
        moves.done = seen.changes;
        if !moves.in_flight && moves.left_over == 0 {
            return None;
        }
        if Instant::now() > deadline {
            return Some(describe(anchors));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each anchor's replica of `/chaos`: role, term, applied index, descriptor epoch and
/// members, the Raft configuration's members, the change in flight.
fn describe(anchors: &[Anchor]) -> String {
    let target = ScopeTarget::Name(prefix());
    let short = |p: &str| p.chars().rev().take(6).collect::<String>();
    let mut out = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let line = match a.scope_info(&target) {
            Ok(info) if info.descriptor.prefix == prefix() => {
                let s = &info.status;
                format!(
                    "a{i} ({}): {} term {} applied {:?} leader {:?} epoch {} members {:?} \
                     raft members {:?} (config at {:?}) change {:?}",
                    short(&a.info().peer_id),
                    s.role,
                    s.term,
                    s.last_applied,
                    s.leader.as_deref().map(short),
                    info.descriptor.epoch,
                    info.descriptor
                        .members
                        .iter()
                        .map(|m| short(&m.peer_id))
                        .collect::<Vec<_>>(),
                    s.members.iter().map(|m| short(m)).collect::<Vec<_>>(),
                    s.membership_log,
                    info.member_change.as_ref().map(|c| {
                        (
                            c.index,
                            c.target
                                .iter()
                                .map(|m| short(&m.peer_id))
                                .collect::<Vec<_>>(),
                        )
                    }),
                )
            }
            _ => format!("a{i} ({}): no replica", short(&a.info().peer_id)),
        };
        out.push(line);
    }
    out.join("; ")
}

//! Placement decided locally: what an anchor does about the scopes it leads, from what it
//! believes about the other anchors (their gossiped load summaries) and about itself. Pure:
//! the rebalancer (`crate::delegation::rebalancer`) gathers the figures and carries the
//! actions out, one member change or leadership hand-over at a time per scope.
//!
//! In order, for the scopes this anchor leads (and none with a change in flight):
//! 1. **Repair.** A member whose anchor is dead (silent longer than the replacement time)
//!    or whose labels no longer meet the scope's placement is replaced by the live anchor
//!    with the fewest replicas that meets it; a scope with fewer members than its
//!    placement's replica count gets one more.
//! 2. **Leaderships.** An anchor leading more than the mean by the tolerance (and by at
//!    least one) hands the leadership of one scope to a member below the mean.
//! 3. **Replicas.** An anchor holding more replicas than the mean by the tolerance (and by
//!    at least one) moves its own replica of its hottest scopes to anchors below the mean.
//!
//! Hysteresis: an anchor acts only when it is above the mean by the tolerance, and moves load
//! only to anchors below the mean, so a move never makes the target the next one to move;
//! each move is simulated on the figures before the next is chosen, so one round does not
//! overshoot; the rebalancer runs at most a few actions per round.

use std::collections::{BTreeMap, BTreeSet};

use proto::{AnchorInfo, MemberSpec, ScopeId};

/// One anchor as the rebalancer sees it (this one included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorLoad {
    /// Base58 peer id.
    pub peer: String,
    /// Where to dial it.
    pub addrs: Vec<String>,
    /// Its placement labels.
    pub labels: BTreeMap<String, String>,
    /// Scope replicas it hosts.
    pub scopes: u32,
    /// Of those, the ones it leads.
    pub leaderships: u32,
}

impl AnchorLoad {
    /// The anchor as a member change names it.
    pub fn spec(&self) -> MemberSpec {
        MemberSpec {
            anchor: AnchorInfo {
                peer_id: self.peer.clone(),
                addrs: self.addrs.clone(),
            },
            labels: self.labels.clone(),
        }
    }
}

/// A scope this anchor leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedScope {
    /// The scope.
    pub id: ScopeId,
    /// Its members (peer ids, the descriptor's).
    pub members: Vec<String>,
    /// The replicas its placement wants.
    pub replicas: u32,
    /// The labels its placement requires.
    pub labels: BTreeMap<String, String>,
    /// False when its policy turns automatic placement off.
    pub auto: bool,
    /// True while a member change, split or merge is in flight.
    pub busy: bool,
    /// Requests per second it served here (what "hottest" means).
    pub load: u64,
}

/// What the rebalancer does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Replace member `leaving` of `scope` by `joining`.
    Replace {
        /// The scope.
        scope: ScopeId,
        /// The member that leaves.
        leaving: String,
        /// The anchor that joins.
        joining: MemberSpec,
        /// Why, for logs and metrics: `dead`, `placement`, `balance`.
        why: &'static str,
    },
    /// Add `joining` to `scope` (fewer members than its placement wants).
    Add {
        /// The scope.
        scope: ScopeId,
        /// The anchor that joins.
        joining: MemberSpec,
    },
    /// Hand the leadership of `scope` to its member `to`.
    Transfer {
        /// The scope.
        scope: ScopeId,
        /// The member that takes over.
        to: String,
    },
}

/// The rebalancer's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// How far above the mean an anchor must be before it acts, percent.
    pub tolerance_pct: u32,
    /// Most actions per round.
    pub actions_max: usize,
}

/// True if `labels` carry every label `required` with its value.
pub fn meets(labels: &BTreeMap<String, String>, required: &BTreeMap<String, String>) -> bool {
    required.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The actions for this anchor (`me`) now. `anchors` are the live anchors (this one
/// included), `dead` the members silent for longer than the replacement time.
pub fn plan(
    me: &str,
    anchors: &[AnchorLoad],
    dead: &BTreeSet<String>,
    led: &[LedScope],
    knobs: Knobs,
) -> Vec<Action> {
    let mut loads: BTreeMap<String, AnchorLoad> = anchors
        .iter()
        .filter(|a| !dead.contains(&a.peer))
        .map(|a| (a.peer.clone(), a.clone()))
        .collect();
    let mut actions = Vec::new();
    let mut touched: BTreeSet<ScopeId> = BTreeSet::new();
    let open: Vec<&LedScope> = led.iter().filter(|s| s.auto && !s.busy).collect();
    // 1. Repair.
    for s in &open {
        if actions.len() >= knobs.actions_max {
            return actions;
        }
        let broken = s.members.iter().find_map(|m| {
            if dead.contains(m) {
                Some((m.clone(), "dead"))
            } else {
                loads
                    .get(m)
                    .filter(|a| !meets(&a.labels, &s.labels))
                    .map(|_| (m.clone(), "placement"))
            }
        });
        let short = (s.members.len() as u32) < s.replicas;
        if broken.is_none() && !short {
            continue;
        }
        let Some(c) = candidate(&loads, s, u32::MAX) else {
            continue;
        };
        let joining = c.spec();
        bump(&mut loads, &c.peer, 1, 0);
        touched.insert(s.id);
        actions.push(match broken {
            Some((leaving, why)) => {
                bump(&mut loads, &leaving, -1, 0);
                Action::Replace {
                    scope: s.id,
                    leaving,
                    joining,
                    why,
                }
            }
            None => Action::Add {
                scope: s.id,
                joining,
            },
        });
    }
    let over = |mine: u32, mean: f64| {
        let mine = f64::from(mine);
        mine > mean * (1.0 + f64::from(knobs.tolerance_pct) / 100.0) && mine - mean >= 1.0
    };
    // 2. Leaderships: one hand-over per round (each pauses its scope's writes briefly).
    let mean_lead = mean(&loads, |a| a.leaderships);
    if let (Some(mean_lead), Some(mine)) = (mean_lead, loads.get(me).map(|a| a.leaderships)) {
        if over(mine, mean_lead) && actions.len() < knobs.actions_max {
            let target = open
                .iter()
                .filter(|s| !touched.contains(&s.id))
                .flat_map(|s| s.members.iter().map(move |m| (s, m)))
                .filter(|(_, m)| m.as_str() != me)
                .filter_map(|(s, m)| loads.get(m).map(|a| (s, a)))
                .filter(|(_, a)| f64::from(a.leaderships) + 1.0 <= mean_lead)
                .min_by_key(|(s, a)| (a.leaderships, std::cmp::Reverse(s.load)));
            if let Some((s, a)) = target {
                let to = a.peer.clone();
                bump(&mut loads, &to, 0, 1);
                bump(&mut loads, me, 0, -1);
                touched.insert(s.id);
                actions.push(Action::Transfer { scope: s.id, to });
            }
        }
    }
    // 3. Replicas: this anchor's own replica of its hottest scopes moves away.
    let mut hottest: Vec<&&LedScope> = open.iter().filter(|s| !touched.contains(&s.id)).collect();
    hottest.sort_by_key(|s| std::cmp::Reverse(s.load));
    for s in hottest {
        if actions.len() >= knobs.actions_max {
            break;
        }
        let (Some(mean_scopes), Some(mine)) =
            (mean(&loads, |a| a.scopes), loads.get(me).map(|a| a.scopes))
        else {
            break;
        };
        if !over(mine, mean_scopes) {
            break;
        }
        // Only to an anchor that stays at or below the mean with one more.
        let ceiling = (mean_scopes - 1.0).floor().max(0.0) as u32;
        let Some(c) = candidate(&loads, s, ceiling) else {
            continue;
        };
        let joining = c.spec();
        bump(&mut loads, &c.peer, 1, 0);
        bump(&mut loads, me, -1, 0);
        actions.push(Action::Replace {
            scope: s.id,
            leaving: me.to_string(),
            joining,
            why: "balance",
        });
    }
    actions
}

/// The live anchor that is not a member of `s`, meets its placement and holds at most
/// `ceiling` replicas, with the fewest replicas (ties: the peer id, so every anchor that
/// computes it picks the same).
fn candidate(
    loads: &BTreeMap<String, AnchorLoad>,
    s: &LedScope,
    ceiling: u32,
) -> Option<AnchorLoad> {
    loads
        .values()
        .filter(|a| !s.members.contains(&a.peer))
        .filter(|a| meets(&a.labels, &s.labels))
        .filter(|a| !a.addrs.is_empty())
        .filter(|a| a.scopes <= ceiling)
        .min_by_key(|a| (a.scopes, a.peer.clone()))
        .cloned()
}

fn mean(loads: &BTreeMap<String, AnchorLoad>, f: impl Fn(&AnchorLoad) -> u32) -> Option<f64> {
    if loads.is_empty() {
        return None;
    }
    let sum: u64 = loads.values().map(|a| u64::from(f(a))).sum();
    Some(sum as f64 / loads.len() as f64)
}

fn bump(loads: &mut BTreeMap<String, AnchorLoad>, peer: &str, scopes: i64, leaderships: i64) {
    if let Some(a) = loads.get_mut(peer) {
        a.scopes = (i64::from(a.scopes) + scopes).max(0) as u32;
        a.leaderships = (i64::from(a.leaderships) + leaderships).max(0) as u32;
    }
}

#[cfg(test)]
#[path = "place_tests.rs"]
mod tests;

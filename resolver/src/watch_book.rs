//! Bookkeeping of a watch's legs, apart from the tasks that poll them: which scopes the
//! watch follows (each at most once, at most [`WATCH_LEGS_MAX`] at a time) and, on the
//! caller's side, where each leg stands in what [`crate::Watch::next`] has returned.

use std::collections::BTreeMap;

use proto::limits::WATCH_LEGS_MAX;
use proto::ScopeId;

/// The leg of the scope governing the watched prefix itself (it moves with the prefix).
pub(crate) const HOME_LEG: u64 = 0;

/// The scopes a watch's tasks follow, by leg.
#[derive(Debug)]
pub(crate) struct LegBook {
    /// Leg id by scope.
    legs: BTreeMap<ScopeId, u64>,
    next: u64,
    max: usize,
}

impl LegBook {
    /// A book holding the home leg at `home`.
    pub(crate) fn new(home: ScopeId) -> LegBook {
        LegBook::with_max(home, WATCH_LEGS_MAX)
    }

    fn with_max(home: ScopeId, max: usize) -> LegBook {
        LegBook {
            legs: BTreeMap::from([(home, HOME_LEG)]),
            next: HOME_LEG + 1,
            max,
        }
    }

    /// A new leg for `scope`: its id, `None` when the watch follows that scope already, an
    /// error when the watch already follows as many scopes as it may.
    pub(crate) fn open(&mut self, scope: ScopeId) -> Result<Option<u64>, String> {
        if self.legs.contains_key(&scope) {
            return Ok(None);
        }
        if self.legs.len() >= self.max {
            return Err(format!(
                "the watch would follow more than {} scopes (the prefix spans too many child \
                 scopes); watch narrower prefixes",
                self.max
            ));
        }
        let id = self.next;
        self.next += 1;
        self.legs.insert(scope, id);
        Ok(Some(id))
    }

    /// The leg `leg` follows `to` instead of `from` (the home leg after a move).
    pub(crate) fn moved(&mut self, leg: u64, from: &ScopeId, to: ScopeId) {
        if self.legs.get(from) == Some(&leg) {
            self.legs.remove(from);
        }
        self.legs.insert(to, leg);
    }

    /// The leg on `scope` ended.
    pub(crate) fn close(&mut self, scope: &ScopeId) {
        self.legs.remove(scope);
    }

    /// Scopes followed now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.legs.len()
    }
}

/// Where each leg stands in what the caller has consumed: its scope and the `after` it
/// would resume from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Positions {
    legs: BTreeMap<u64, (ScopeId, u64)>,
}

impl Positions {
    /// Starts with the home leg at (`scope`, `after`).
    pub(crate) fn new(scope: ScopeId, after: u64) -> Positions {
        Positions {
            legs: BTreeMap::from([(HOME_LEG, (scope, after))]),
        }
    }

    /// Leg `leg` is at (`scope`, `position`) once an item of it is consumed.
    pub(crate) fn advance(&mut self, leg: u64, scope: ScopeId, position: u64) {
        self.legs.insert(leg, (scope, position));
    }

    /// Leg `leg` ended (its child merged back into its parent).
    pub(crate) fn end(&mut self, leg: u64) {
        if leg != HOME_LEG {
            self.legs.remove(&leg);
        }
    }

    /// The home leg's scope and position.
    pub(crate) fn home(&self) -> (ScopeId, u64) {
        self.legs
            .get(&HOME_LEG)
            .copied()
            .unwrap_or((ScopeId::root(), 0))
    }

    /// Every live leg's scope and position, home first.
    pub(crate) fn all(&self) -> Vec<(ScopeId, u64)> {
        self.legs.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ScopeId {
        ScopeId([b; 16])
    }

    #[test]
    fn a_scope_is_followed_once_and_the_number_of_legs_is_bounded() {
        let mut book = LegBook::with_max(id(0), 3);
        assert_eq!(book.open(id(1)), Ok(Some(1)));
        assert_eq!(book.open(id(1)), Ok(None), "already followed");
        assert_eq!(book.open(id(0)), Ok(None), "the home scope");
        assert_eq!(book.open(id(2)), Ok(Some(2)));
        let err = book.open(id(3)).unwrap_err();
        assert!(err.contains("more than 3 scopes"), "{err}");
        book.close(&id(1));
        assert_eq!(book.len(), 2);
        assert_eq!(book.open(id(3)), Ok(Some(3)), "a leg ended: room again");
        assert_eq!(book.open(id(1)), Err(err), "full again");
    }

    #[test]
    fn the_home_leg_moves_with_the_prefix() {
        let mut book = LegBook::with_max(id(0), 2);
        book.moved(HOME_LEG, &id(0), id(5));
        assert_eq!(book.len(), 1);
        assert_eq!(book.open(id(0)), Ok(Some(1)), "the old home is free");
        assert_eq!(book.open(id(5)), Ok(None));
    }

    #[test]
    fn positions_follow_consumed_items_per_leg() {
        let mut p = Positions::new(id(0), 10);
        assert_eq!(p.home(), (id(0), 10));
        p.advance(1, id(1), 40);
        p.advance(HOME_LEG, id(0), 12);
        assert_eq!(p.all(), vec![(id(0), 12), (id(1), 40)]);
        p.end(1);
        p.end(HOME_LEG);
        assert_eq!(p.all(), vec![(id(0), 12)], "the home leg never ends");
        p.advance(HOME_LEG, id(7), 12);
        assert_eq!(p.home(), (id(7), 12));
    }
}

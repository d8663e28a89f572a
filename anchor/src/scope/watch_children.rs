//! What a watch of a prefix must follow besides the scope it asks: the scope's live
//! delegations whose part of the namespace lies strictly under the prefix (subtrees below
//! it, ranges split off it or off a prefix below it). Pure: the watch handler lists them
//! from the scope's view and the resolver opens a leg on each.

use std::collections::BTreeMap;

use proto::msg::WatchChild;
use proto::{Delegation, DelegationState, Name, ScopeId};

/// The live (Active or Merging) delegations whose first name lies strictly under `prefix`,
/// in key order. A delegation of `prefix` itself (or above it) is not among them: that one
/// moves the whole watch (`WatchResponse::Referral`). Frozen delegations are left out (the
/// child takes no write before it is Active, and one may still abort), and so are Aborted
/// ones, and so are ranges learned of a child's prefix (the child lists those).
pub fn children_under(delegations: &BTreeMap<Name, Delegation>, prefix: &Name) -> Vec<WatchChild> {
    // Names order by their labels, so the names under `prefix` follow it contiguously.
    delegations
        .range(prefix.clone()..)
        .skip_while(|(first, _)| *first == prefix)
        .take_while(|(first, _)| first.is_under(prefix))
        // A range learned of a child's prefix is the child's to list, not this scope's.
        .filter(|(_, d)| d.state.refers() && !matches!(d.state, DelegationState::Learned { .. }))
        .map(|(_, d)| WatchChild {
            referral: d.referral.clone(),
            index: d.index,
        })
        .collect()
}

/// True when `listed` names exactly the child scopes in `known` (in any order).
pub fn same_children(listed: &[WatchChild], known: &[ScopeId]) -> bool {
    let mut a: Vec<ScopeId> = listed.iter().map(|c| c.referral.scope).collect();
    let mut b = known.to_vec();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

#[cfg(test)]
mod tests {
    use proto::{DelegationState, KeyRange, Referral};

    use super::*;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn delegation(prefix: &str, range: KeyRange, index: u64, state: DelegationState) -> Delegation {
        let prefix = n(prefix);
        let first = range.start.clone().unwrap_or_else(|| prefix.clone());
        Delegation {
            referral: Referral {
                scope: ScopeId::child(&ScopeId::root(), &first, index),
                prefix,
                epoch: 1,
                members: Vec::new(),
                ttl_s: 60,
                range,
            },
            members: Vec::new(),
            policy_toml: String::new(),
            index,
            state,
        }
    }

    fn map(ds: Vec<Delegation>) -> BTreeMap<Name, Delegation> {
        ds.into_iter()
            .map(|d| (d.referral.first().clone(), d))
            .collect()
    }

    fn range(start: &str, end: Option<&str>) -> KeyRange {
        KeyRange {
            start: Some(n(start)),
            end: end.map(n),
        }
    }

    #[test]
    fn lists_live_subtrees_and_ranges_strictly_under_the_prefix() {
        use DelegationState::*;
        let ds = map(vec![
            delegation("/users", range("/users/m", None), 10, Active),
            delegation("/users/a", KeyRange::all(), 11, Merging { index: 30 }),
            delegation("/users/b", KeyRange::all(), 12, Frozen),
            delegation("/users/c", KeyRange::all(), 13, Aborted),
            delegation("/users0", KeyRange::all(), 14, Active),
            delegation("/eu", KeyRange::all(), 15, Active),
            delegation("/users/d/x", range("/users/d/x/k", None), 16, Active),
        ]);
        let listed = children_under(&ds, &n("/users"));
        let firsts: Vec<String> = listed
            .iter()
            .map(|c| c.referral.first().to_string())
            .collect();
        assert_eq!(firsts, ["/users/a", "/users/d/x/k", "/users/m"]);
        assert_eq!(listed[0].index, 11);
        let all = children_under(&ds, &Name::root());
        assert_eq!(all.len(), 5, "everything live under the root: {all:?}");
    }

    #[test]
    fn the_delegation_of_the_prefix_itself_is_not_a_child() {
        let ds = map(vec![delegation(
            "/eu",
            KeyRange::all(),
            5,
            DelegationState::Active,
        )]);
        assert!(children_under(&ds, &n("/eu")).is_empty());
        assert_eq!(children_under(&ds, &Name::root()).len(), 1);
        assert!(children_under(&ds, &n("/eu/x")).is_empty());
    }

    #[test]
    fn the_known_set_is_compared_as_a_set() {
        let ds = map(vec![
            delegation("/a", KeyRange::all(), 5, DelegationState::Active),
            delegation("/b", KeyRange::all(), 6, DelegationState::Active),
        ]);
        let listed = children_under(&ds, &Name::root());
        let ids: Vec<ScopeId> = listed.iter().map(|c| c.referral.scope).collect();
        assert!(same_children(&listed, &[ids[1], ids[0]]));
        assert!(!same_children(&listed, &ids[..1]));
        assert!(!same_children(&listed[..1], &ids));
        assert!(same_children(&[], &[]));
    }
}

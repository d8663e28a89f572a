use super::*;

fn anchor(peer: &str, scopes: u32, leaderships: u32) -> AnchorLoad {
    AnchorLoad {
        peer: peer.into(),
        addrs: vec![format!("/ip4/127.0.0.1/tcp/1/{peer}")],
        labels: BTreeMap::new(),
        scopes,
        leaderships,
    }
}

fn scope(id: u8, members: &[&str], load: u64) -> LedScope {
    LedScope {
        id: ScopeId([id; 16]),
        members: members.iter().map(|m| m.to_string()).collect(),
        replicas: 3,
        labels: BTreeMap::new(),
        auto: true,
        busy: false,
        load,
    }
}

const KNOBS: Knobs = Knobs {
    tolerance_pct: 10,
    actions_max: 4,
};

#[test]
fn a_dead_member_is_replaced_by_the_least_loaded_anchor_that_meets_placement() {
    let mut eu = scope(1, &["a", "b", "c"], 5);
    eu.labels.insert("jurisdiction".into(), "eu".into());
    let mut d = anchor("d", 10, 0);
    d.labels.insert("jurisdiction".into(), "eu".into());
    let mut e = anchor("e", 1, 0);
    e.labels.insert("jurisdiction".into(), "us".into());
    let mut anchors = vec![anchor("a", 10, 5), anchor("b", 10, 5), d, e];
    for a in anchors.iter_mut().take(2) {
        a.labels.insert("jurisdiction".into(), "eu".into());
    }
    let dead = BTreeSet::from(["c".to_string()]);
    let actions = plan("a", &anchors, &dead, &[eu.clone()], KNOBS);
    assert_eq!(actions.len(), 1);
    match &actions[0] {
        Action::Replace {
            leaving,
            joining,
            why,
            ..
        } => {
            assert_eq!(leaving, "c");
            assert_eq!(
                joining.anchor.peer_id, "d",
                "e is lighter but not in the eu"
            );
            assert_eq!(*why, "dead");
        }
        other => panic!("{other:?}"),
    }
    // Nobody meets the placement: nothing to do.
    let only_us: Vec<AnchorLoad> = anchors.iter().filter(|a| a.peer != "d").cloned().collect();
    assert!(plan("a", &only_us, &dead, &[eu.clone()], KNOBS).is_empty());
    // A busy scope, or one with automatic placement off, waits.
    let busy = LedScope {
        busy: true,
        ..eu.clone()
    };
    assert!(plan("a", &anchors, &dead, &[busy], KNOBS).is_empty());
    let manual = LedScope { auto: false, ..eu };
    assert!(plan("a", &anchors, &dead, &[manual], KNOBS).is_empty());
}

#[test]
fn a_member_whose_labels_changed_is_moved_and_a_short_scope_gets_one_more() {
    let mut s = scope(1, &["a", "b", "c"], 5);
    s.labels.insert("zone".into(), "x".into());
    let mut anchors: Vec<AnchorLoad> = ["a", "b", "c", "d"]
        .iter()
        .map(|p| anchor(p, 5, 1))
        .collect();
    for a in &mut anchors {
        a.labels.insert("zone".into(), "x".into());
    }
    anchors[1].labels.insert("zone".into(), "y".into());
    let actions = plan("a", &anchors, &BTreeSet::new(), &[s], KNOBS);
    assert!(matches!(
        &actions[..],
        [Action::Replace { leaving, why: "placement", joining, .. }]
            if leaving == "b" && joining.anchor.peer_id == "d"
    ));
    let short = scope(2, &["a", "b"], 5);
    let actions = plan("a", &anchors[2..], &BTreeSet::new(), &[short], KNOBS);
    assert!(matches!(&actions[..], [Action::Add { joining, .. }] if joining.anchor.peer_id == "c"));
}

#[test]
fn an_anchor_above_the_mean_hands_a_leadership_to_a_member_below_it() {
    // a leads 6, b 0, c 0: mean 2.
    let led: Vec<LedScope> = (0..6)
        .map(|i| scope(i, &["a", "b", "c"], u64::from(i)))
        .collect();
    let anchors = vec![anchor("a", 6, 6), anchor("b", 6, 0), anchor("c", 6, 0)];
    let actions = plan("a", &anchors, &BTreeSet::new(), &led, KNOBS);
    let transfers: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Transfer { .. }))
        .collect();
    assert_eq!(transfers.len(), 1, "one hand-over per round: {actions:?}");
    // Within the tolerance: nothing.
    let even = vec![anchor("a", 6, 2), anchor("b", 6, 2), anchor("c", 6, 2)];
    assert!(plan("a", &even, &BTreeSet::new(), &led, KNOBS).is_empty());
}

#[test]
fn replicas_move_from_an_anchor_above_the_mean_to_new_anchors_without_overshooting() {
    // Three anchors with 10 replicas each, two new empty ones: mean 6.
    let led: Vec<LedScope> = (0..4)
        .map(|i| scope(i, &["a", "b", "c"], u64::from(i)))
        .collect();
    let anchors = vec![
        anchor("a", 10, 4),
        anchor("b", 10, 3),
        anchor("c", 10, 3),
        anchor("d", 0, 0),
        anchor("e", 0, 0),
    ];
    let knobs = Knobs {
        tolerance_pct: 10,
        actions_max: 8,
    };
    let actions = plan("a", &anchors, &BTreeSet::new(), &led, knobs);
    let moves: Vec<(&str, &str)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Replace {
                leaving, joining, ..
            } => Some((leaving.as_str(), joining.anchor.peer_id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(moves.len(), 4, "every scope a leads moves: {actions:?}");
    assert!(moves.iter().all(|(from, _)| *from == "a"));
    // Spread over both new anchors, hottest first.
    assert_eq!(moves.iter().filter(|(_, to)| *to == "d").count(), 2);
    assert_eq!(moves.iter().filter(|(_, to)| *to == "e").count(), 2);
    assert!(matches!(&actions[0], Action::Replace { scope, .. } if *scope == ScopeId([3; 16])));
    // Once a is at the mean, it stops.
    let settled = vec![
        anchor("a", 6, 2),
        anchor("b", 6, 2),
        anchor("c", 6, 2),
        anchor("d", 6, 2),
        anchor("e", 6, 2),
    ];
    assert!(plan("a", &settled, &BTreeSet::new(), &led, knobs).is_empty());
    // Never to an anchor that would end above the mean.
    let near = vec![
        anchor("a", 8, 2),
        anchor("b", 6, 2),
        anchor("c", 6, 2),
        anchor("d", 6, 2),
    ];
    assert!(plan("a", &near, &BTreeSet::new(), &led, knobs)
        .iter()
        .all(|a| !matches!(a, Action::Replace { .. })));
}

use super::*;
use crate::scope::load::ChildShares;
use crate::scope::sampler::KeyFinding;
use proto::Name;

const S: u64 = 1000;
const NOW: u64 = 1_000_000 * S;
const SPLIT_AT: u64 = NOW - 7200 * S;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn policy() -> policy::Policy {
    let mut p = policy::Policy::development(None);
    p.split.names_max = 1000;
    p.split.bytes_max = 1_000_000;
    p.split.reads_per_s_max = 1000;
    p.split.writes_per_s_max = 100;
    p.merge.auto = true;
    p.merge.age_s_min = 3600;
    p.validate().unwrap();
    p
}

fn cold(reads_peak: u64) -> LoadFigures {
    LoadFigures {
        at_ms: NOW,
        reads_per_s: 1,
        writes_per_s: 0,
        reads_peak,
        writes_peak: 2,
        peak_reliable: true,
        reads_over: None,
        writes_over: None,
        key: KeyFinding::NotSampled,
        children: ChildShares::default(),
    }
}

fn size(names: u64) -> SizeFigures {
    SizeFigures {
        names,
        bytes: names * 100,
        ..SizeFigures::default()
    }
}

fn halves() -> (ScopeBounds, ScopeBounds) {
    let cut = name("/users/m");
    (
        ScopeBounds {
            prefix: name("/users"),
            start: None,
            end: Some(cut.clone()),
        },
        ScopeBounds {
            prefix: name("/users"),
            start: Some(cut),
            end: None,
        },
    )
}

struct Pair {
    bounds: (ScopeBounds, ScopeBounds),
    load: (LoadFigures, LoadFigures),
    size: (SizeFigures, SizeFigures),
}

impl Pair {
    fn new() -> Pair {
        Pair {
            bounds: halves(),
            load: (cold(100), cold(120)),
            size: (size(100), size(80)),
        }
    }

    fn decide(&self, p: &policy::Policy, now_ms: u64) -> MergeDecision {
        let left = MergeInput {
            bounds: &self.bounds.0,
            load: &self.load.0,
            size: &self.size.0,
        };
        let right = MergeInput {
            bounds: &self.bounds.1,
            load: &self.load.1,
            size: &self.size.1,
        };
        decide_merge(left, right, p, now_ms, SPLIT_AT)
    }
}

fn stay(d: MergeDecision) -> MergeReason {
    match d {
        MergeDecision::Stay(r) => r,
        MergeDecision::Merge(e) => panic!("expected to stay, got {e:?}"),
    }
}

#[test]
fn small_cold_old_neighbours_merge() {
    let MergeDecision::Merge(e) = Pair::new().decide(&policy(), NOW) else {
        panic!("expected a merge");
    };
    assert_eq!(e.left.end, Some(name("/users/m")));
    assert_eq!(e.right.start, Some(name("/users/m")));
    assert_eq!(e.split_at_ms, SPLIT_AT);
    justify_merge(&e, &policy(), NOW + 10).unwrap();
}

#[test]
fn a_child_merges_into_its_parent() {
    let mut pair = Pair::new();
    pair.bounds = (
        ScopeBounds::subtree(name("/shop")),
        ScopeBounds::subtree(name("/shop/eu")),
    );
    assert!(matches!(
        pair.decide(&policy(), NOW),
        MergeDecision::Merge(_)
    ));
}

#[test]
fn only_neighbours_merge() {
    let mut pair = Pair::new();
    pair.bounds.1.start = Some(name("/users/n"));
    assert_eq!(stay(pair.decide(&policy(), NOW)), MergeReason::NotAdjacent);
    pair.bounds = (
        ScopeBounds::subtree(name("/shop")),
        ScopeBounds::subtree(name("/users")),
    );
    assert_eq!(stay(pair.decide(&policy(), NOW)), MergeReason::NotAdjacent);
    // A range scope takes back a subtree inside its own names only.
    pair.bounds = (halves().0, ScopeBounds::subtree(name("/users/z")));
    assert_eq!(stay(pair.decide(&policy(), NOW)), MergeReason::NotAdjacent);
    pair.bounds = (halves().0, ScopeBounds::subtree(name("/users/a")));
    assert!(matches!(
        pair.decide(&policy(), NOW),
        MergeDecision::Merge(_)
    ));
    // A range does not merge into the range after it (the left one keeps going).
    pair.bounds = (halves().1, halves().0);
    assert_eq!(stay(pair.decide(&policy(), NOW)), MergeReason::NotAdjacent);
}

#[test]
fn both_sides_must_be_small() {
    // The default minimum is a quarter of the split limit: 250 names, 250000 bytes.
    let mut pair = Pair::new();
    pair.size.1 = size(250);
    let r = stay(pair.decide(&policy(), NOW));
    assert_eq!(
        r,
        MergeReason::TooBig {
            side: Side::Right,
            what: "names",
            value: 250,
            min: 250
        }
    );
    assert_eq!(
        r.to_string(),
        "the right scope holds 250 names; a merge needs under 250"
    );
    pair.size.1 = size(10);
    pair.size.0.bytes = 300_000;
    let r = stay(pair.decide(&policy(), NOW));
    assert!(
        matches!(
            r,
            MergeReason::TooBig {
                side: Side::Left,
                what: "bytes",
                ..
            }
        ),
        "{r}"
    );
    let mut p = policy();
    p.merge.bytes_min = Some(400_000);
    assert!(matches!(pair.decide(&p, NOW), MergeDecision::Merge(_)));
}

#[test]
fn peaks_must_be_reliable() {
    let mut pair = Pair::new();
    pair.load.1.peak_reliable = false;
    let r = stay(pair.decide(&policy(), NOW));
    assert_eq!(r, MergeReason::Unreliable { side: Side::Right });
    assert!(r.to_string().contains("full window"));
}

/// No flapping: a pair whose summed peak is near the split limit stays apart; it merges
/// only under half of it.
#[test]
fn the_summed_peak_must_stay_under_half_the_split_limit() {
    let mut pair = Pair::new();
    pair.load = (cold(450), cold(450));
    let r = stay(pair.decide(&policy(), NOW));
    assert_eq!(
        r,
        MergeReason::TooHot {
            what: "reads",
            sum: 900,
            half: 500
        }
    );
    assert!(r.to_string().contains("half the split limit"), "{r}");
    pair.load = (cold(250), cold(250));
    assert!(matches!(
        stay(pair.decide(&policy(), NOW)),
        MergeReason::TooHot { sum: 500, .. }
    ));
    pair.load = (cold(250), cold(249));
    assert!(matches!(
        pair.decide(&policy(), NOW),
        MergeDecision::Merge(_)
    ));
    pair.load.0.writes_peak = 48;
    let r = stay(pair.decide(&policy(), NOW));
    assert!(
        matches!(
            r,
            MergeReason::TooHot {
                what: "writes",
                sum: 50,
                half: 50
            }
        ),
        "{r}"
    );
}

#[test]
fn the_split_must_be_old_enough() {
    let r = stay(Pair::new().decide(&policy(), SPLIT_AT + 3599 * S));
    assert_eq!(
        r,
        MergeReason::TooYoung {
            age_ms: 3_599_000,
            min_ms: 3_600_000
        }
    );
    assert_eq!(r.to_string(), "split 3599 s ago; a merge waits 3600 s");
    assert!(matches!(
        Pair::new().decide(&policy(), SPLIT_AT + 3600 * S),
        MergeDecision::Merge(_)
    ));
}

#[test]
fn auto_off_says_what_it_would_do_and_apply_refuses() {
    let mut p = policy();
    p.merge.auto = false;
    let r = stay(Pair::new().decide(&p, NOW));
    let MergeReason::AutoOff { would } = &r else {
        panic!("{r}");
    };
    assert_eq!(
        r.to_string(),
        "automatic merges are off ([merge] auto = false); it would merge /users from /users/m into /users"
    );
    assert_eq!(justify_merge(would, &p, NOW), Err(Refusal::MergeAutoOff));
    justify_merge(would, &policy(), NOW).unwrap();
}

#[test]
fn apply_rechecks_the_figures() {
    let MergeDecision::Merge(e) = Pair::new().decide(&policy(), NOW) else {
        panic!("expected a merge");
    };
    let mut hot = e.clone();
    hot.right.load.reads_peak = 900;
    let refusal = justify_merge(&hot, &policy(), NOW).unwrap_err();
    assert!(
        refusal.to_string().contains("summed peak reads 1000/s"),
        "{refusal}"
    );
    let mut apart = e.clone();
    apart.right.start = Some(name("/users/z"));
    assert!(matches!(
        justify_merge(&apart, &policy(), NOW),
        Err(Refusal::NotMergeable { .. })
    ));
    assert!(matches!(
        justify_merge(&e, &policy(), NOW + EVIDENCE_AGE_MS),
        Err(Refusal::Stale { .. })
    ));
    // The member's stricter policy wins.
    let mut strict = policy();
    strict.merge.names_min = Some(50);
    assert!(justify_merge(&e, &strict, NOW).is_err());
}

const EVIDENCE_AGE_MS: u64 = crate::scope::split::EVIDENCE_AGE_MS_MAX + 1;

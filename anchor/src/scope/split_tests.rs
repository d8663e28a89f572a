use proto::split::{Basis, SplitPlan, Trigger};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::scope::load::{ChildShares, ChildSize, LoadConfig, LoadLimits, Median, ScopeLoad};

const S: u64 = 1000;
const NOW: u64 = 1_000_000 * S;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn policy() -> policy::Policy {
    let mut p = policy::Policy::development(None);
    p.split.auto = true;
    p.split.names_max = 1000;
    p.split.bytes_max = 1_000_000;
    p.split.reads_per_s_max = 1000;
    p.split.writes_per_s_max = 100;
    p.split.window_s = 10;
    p.split.interval_s_min = 60;
    p.validate().unwrap();
    p
}

fn users() -> ScopeBounds {
    ScopeBounds::subtree(name("/users"))
}

fn quiet() -> LoadFigures {
    LoadFigures {
        at_ms: NOW,
        reads_per_s: 340,
        writes_per_s: 3,
        reads_peak: 400,
        writes_peak: 5,
        peak_reliable: true,
        reads_over: None,
        writes_over: None,
        key: KeyFinding::NotSampled,
        children: ChildShares::default(),
    }
}

fn candidate(at: &str, left: u64, right: u64, on: u64) -> Candidate {
    Candidate {
        at: name(at),
        left,
        right,
        on,
    }
}

/// Reads over the limit for `for_s` seconds, with `key` from the sampler.
fn hot(for_s: u64, key: KeyFinding) -> LoadFigures {
    LoadFigures {
        reads_per_s: 1500,
        reads_peak: 1800,
        reads_over: Some(Over {
            since_s: NOW / S - for_s,
            for_ms: for_s * S,
            low: 1200,
        }),
        key,
        children: ChildShares {
            total: 5000,
            labels: vec![("u1".into(), 300), ("u2".into(), 280)],
            other: 4420,
        },
        ..quiet()
    }
}

fn small() -> SizeFigures {
    SizeFigures {
        names: 12,
        bytes: 3400,
        ..SizeFigures::default()
    }
}

fn stay(d: Decision) -> Reason {
    match d {
        Decision::Stay(r) => r,
        Decision::Split(e) => panic!("expected to stay, got {}", e.plan),
    }
}

fn split(d: Decision) -> SplitEvidence {
    match d {
        Decision::Split(e) => e,
        Decision::Stay(r) => panic!("expected a split, got: {r}"),
    }
}

fn found(key: Candidate) -> KeyFinding {
    KeyFinding::Found { key, hottest: None }
}

fn held(names: u64) -> Held {
    Held { names, bytes: None }
}

fn balanced() -> KeyFinding {
    found(candidate("/users/u5", 2100, 2000, 3))
}

#[test]
fn under_every_limit_stays_and_says_so() {
    let r = stay(decide(&quiet(), &small(), &policy(), &users(), NOW, None));
    assert!(matches!(r, Reason::UnderLimits { .. }));
    let text = r.to_string();
    assert!(text.contains("reads 340/s of 1000/s"), "{text}");
    assert!(text.contains("12 names of 1000"), "{text}");
}

#[test]
fn a_load_limit_must_hold_for_the_window() {
    let r = stay(decide(
        &hot(4, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    assert_eq!(r.to_string(), "reads over the limit 1000/s for 4 s of 10 s");
    split(decide(
        &hot(10, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
}

#[test]
fn writes_trigger_too() {
    let mut load = hot(0, balanced());
    load.reads_over = None;
    load.writes_over = Some(Over {
        since_s: 0,
        for_ms: 30 * S,
        low: 150,
    });
    let e = split(decide(&load, &small(), &policy(), &users(), NOW, None));
    assert_eq!(e.trigger, Trigger::Writes);
    assert_eq!((e.load.over_ms, e.load.over_low), (30 * S, 150));
}

#[test]
fn no_sample_no_split() {
    let r = stay(decide(
        &hot(20, KeyFinding::NotSampled),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    assert_eq!(
        r,
        Reason::NotSampled {
            trigger: Trigger::Reads
        }
    );
}

#[test]
fn one_hot_name_stays_and_names_it() {
    let key = KeyFinding::NoKey {
        best: Some(candidate("/users/u1", 0, 1000, 970)),
        hottest: Some(candidate("/users/u1", 0, 1000, 970)),
    };
    let mut load = hot(20, key);
    // Even if its child label dominates, the hot name blocks a subtree split.
    load.children.labels[0].1 = 4900;
    let r = stay(decide(&load, &small(), &policy(), &users(), NOW, None));
    assert_eq!(
        r.to_string(),
        "no qualifying split key: one hot name /users/u1 carries 97% of reads"
    );
}

#[test]
fn no_qualifying_key_stays_with_the_nearest_miss() {
    let few = KeyFinding::NoKey {
        best: Some(candidate("/users/u3", 20, 20, 0)),
        hottest: None,
    };
    let text = stay(decide(
        &hot(20, few),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ))
    .to_string();
    assert!(text.contains("has 40 of 100 counts"), "{text}");
    let skewed = KeyFinding::NoKey {
        best: Some(candidate("/users/u3", 800, 200, 10)),
        hottest: Some(candidate("/users/u9", 500, 500, 10)),
    };
    let text = stay(decide(
        &hot(20, skewed),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ))
    .to_string();
    assert!(text.contains("splits 80%/20% (imbalance 0.60"), "{text}");
    let none = KeyFinding::NoKey {
        best: None,
        hottest: None,
    };
    let r = stay(decide(
        &hot(20, none),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    assert!(r.to_string().ends_with("no candidate"));
}

#[test]
fn a_dominant_child_label_splits_as_a_subtree() {
    let mut load = hot(20, balanced());
    load.children.labels = vec![("eu".into(), 4000), ("us".into(), 500)];
    let e = split(decide(
        &load,
        &small(),
        &policy(),
        &ScopeBounds::subtree(name("/shop")),
        NOW,
        None,
    ));
    assert_eq!(
        e.plan,
        SplitPlan::Subtree {
            label: "eu".into(),
            basis: Basis::Load,
            part: 4000,
            whole: 5000
        }
    );
    let bounds = ScopeBounds::subtree(name("/shop"));
    justify(&e, &bounds, held(12), &policy(), NOW, None).unwrap();
}

/// A name with half the requests: a qualifying key next to it may cut the range, but its
/// child label never becomes a scope of its own.
#[test]
fn a_hot_name_never_becomes_a_subtree_of_its_own() {
    let hot_one = candidate("/shop/eu/api", 1000, 1000, 1000);
    let mut load = hot(
        20,
        KeyFinding::Found {
            key: hot_one.clone(),
            hottest: Some(hot_one),
        },
    );
    load.children.labels = vec![("eu".into(), 4000)];
    let shop = ScopeBounds::subtree(name("/shop"));
    let e = split(decide(&load, &small(), &policy(), &shop, NOW, None));
    assert!(
        matches!(&e.plan, SplitPlan::Range { at, .. } if *at == name("/shop/eu/api")),
        "{}",
        e.plan
    );
    // A hot name outside the dominant child does not stop its subtree split.
    let elsewhere = candidate("/shop/us", 1000, 1000, 1000);
    load.key = KeyFinding::Found {
        key: candidate("/shop/eu/m", 1000, 1000, 0),
        hottest: Some(elsewhere),
    };
    let e = split(decide(&load, &small(), &policy(), &shop, NOW, None));
    assert!(
        matches!(&e.plan, SplitPlan::Subtree { label, .. } if label == "eu"),
        "{}",
        e.plan
    );
}

#[test]
fn a_spread_load_splits_at_the_sampled_key() {
    let e = split(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        Some(NOW - 61 * S),
    ));
    assert_eq!(
        e.plan,
        SplitPlan::Range {
            at: name("/users/u5"),
            basis: Basis::Load,
            left: 2100,
            right: 2000
        }
    );
    assert_eq!(e.decided_at_ms, NOW);
    assert_eq!(e.load.reads_peak, 1800);
    justify(
        &e,
        &users(),
        held(12),
        &policy(),
        NOW + 50,
        Some(NOW - 61 * S),
    )
    .unwrap();
}

#[test]
fn a_range_scope_splits_off_subtrees_inside_its_range_only() {
    let mut load = hot(20, found(candidate("/users/u7", 2100, 2000, 0)));
    load.children.labels = vec![("u7".into(), 4000)];
    let bounds = ScopeBounds {
        prefix: name("/users"),
        start: Some(name("/users/u5")),
        end: None,
    };
    let e = split(decide(&load, &small(), &policy(), &bounds, NOW, None));
    assert!(matches!(&e.plan, SplitPlan::Subtree { label, .. } if label == "u7"));
    // A dominant child label outside the range is not this scope's: the key cuts instead.
    load.children.labels = vec![("u1".into(), 4000)];
    let e = split(decide(&load, &small(), &policy(), &bounds, NOW, None));
    assert!(matches!(e.plan, SplitPlan::Range { .. }));
    // A key before the range's start is not inside it.
    let load = hot(20, found(candidate("/users/u1", 2100, 2000, 0)));
    let r = stay(decide(&load, &small(), &policy(), &bounds, NOW, None));
    assert!(matches!(r, Reason::NoKey { .. }));
}

#[test]
fn too_many_names_split_by_subtree_or_at_the_median() {
    let mut size = SizeFigures {
        names: 1500,
        bytes: 10,
        children: vec![
            ChildSize {
                label: "eu".into(),
                names: 1200,
                bytes: 5,
            },
            ChildSize {
                label: "us".into(),
                names: 300,
                bytes: 5,
            },
        ],
        median: Some(Median {
            at: name("/shop/eu/m"),
            left: 750,
        }),
    };
    let shop = ScopeBounds::subtree(name("/shop"));
    let e = split(decide(&quiet(), &size, &policy(), &shop, NOW, None));
    assert_eq!(e.trigger, Trigger::Names);
    assert_eq!(
        e.plan,
        SplitPlan::Subtree {
            label: "eu".into(),
            basis: Basis::Size,
            part: 1200,
            whole: 1500
        }
    );
    justify(&e, &shop, held(1500), &policy(), NOW, None).unwrap();
    size.children[0].names = 700;
    let e = split(decide(&quiet(), &size, &policy(), &shop, NOW, None));
    assert_eq!(
        e.plan,
        SplitPlan::Range {
            at: name("/shop/eu/m"),
            basis: Basis::Size,
            left: 750,
            right: 750
        }
    );
    justify(&e, &shop, held(1500), &policy(), NOW, None).unwrap();
    // The member's own count decides: names deleted meanwhile refuse the split.
    assert_eq!(
        justify(&e, &shop, held(900), &policy(), NOW, None),
        Err(Refusal::NotOver {
            trigger: Trigger::Names,
            value: 900,
            limit: 1000
        })
    );
}

#[test]
fn no_usable_median_stays() {
    let shop = ScopeBounds::subtree(name("/shop"));
    let mut size = SizeFigures {
        names: 1500,
        ..SizeFigures::default()
    };
    let r = stay(decide(&quiet(), &size, &policy(), &shop, NOW, None));
    assert_eq!(
        r,
        Reason::NoMedian {
            trigger: Trigger::Names
        }
    );
    assert!(r.to_string().contains("no median name"));
    // The scope's first name, or a name outside it, cannot be the cut.
    for (at, left) in [("/shop", 1), ("/users/x", 700), ("/shop/x", 0)] {
        size.median = Some(Median { at: name(at), left });
        let r = stay(decide(&quiet(), &size, &policy(), &shop, NOW, None));
        assert_eq!(
            r,
            Reason::NoMedian {
                trigger: Trigger::Names
            },
            "{at}"
        );
    }
    // A hot spread load still splits by its key.
    let e = split(decide(
        &hot(20, balanced()),
        &size,
        &policy(),
        &users(),
        NOW,
        None,
    ));
    assert_eq!(e.trigger, Trigger::Reads);
}

#[test]
fn too_many_bytes_split() {
    let size = SizeFigures {
        names: 100,
        bytes: 2_000_000,
        children: vec![ChildSize {
            label: "blobs".into(),
            names: 2,
            bytes: 1_900_000,
        }],
        median: None,
    };
    let shop = ScopeBounds::subtree(name("/shop"));
    let e = split(decide(&quiet(), &size, &policy(), &shop, NOW, None));
    assert_eq!(e.trigger, Trigger::Bytes);
    assert!(matches!(&e.plan, SplitPlan::Subtree { label, .. } if label == "blobs"));
    justify(&e, &shop, held(100), &policy(), NOW, None).unwrap();
    let under = Held {
        names: 100,
        bytes: Some(10),
    };
    assert!(matches!(
        justify(&e, &shop, under, &policy(), NOW, None),
        Err(Refusal::NotOver {
            trigger: Trigger::Bytes,
            ..
        })
    ));
}

#[test]
fn auto_off_says_what_it_would_do() {
    let mut p = policy();
    p.split.auto = false;
    let r = stay(decide(
        &hot(20, balanced()),
        &small(),
        &p,
        &users(),
        NOW,
        None,
    ));
    let Reason::AutoOff { would } = &r else {
        panic!("{r}");
    };
    assert!(matches!(would.plan, SplitPlan::Range { .. }));
    assert!(r.to_string().starts_with("automatic splits are off"), "{r}");
    assert_eq!(
        justify(would, &users(), held(12), &p, NOW, None),
        Err(Refusal::AutoOff)
    );
}

#[test]
fn splits_keep_their_interval() {
    let last = Some(NOW - 20 * S);
    let r = stay(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        last,
    ));
    assert!(matches!(
        r,
        Reason::TooSoon {
            since_ms: 20_000,
            min_ms: 60_000,
            ..
        }
    ));
    assert!(r.to_string().starts_with("last split 20 s ago"), "{r}");
    let e = split(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    assert_eq!(
        justify(&e, &users(), held(12), &policy(), NOW, last),
        Err(Refusal::TooSoon {
            since_ms: 20_000,
            min_ms: 60_000
        })
    );
}

#[test]
fn stale_or_future_evidence_is_refused() {
    let e = split(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    let late = NOW + EVIDENCE_AGE_MS_MAX + 1;
    assert!(matches!(
        justify(&e, &users(), held(12), &policy(), late, None),
        Err(Refusal::Stale { .. })
    ));
    let early = NOW - CLOCK_SKEW_MS_MAX - 1;
    assert!(matches!(
        justify(&e, &users(), held(12), &policy(), early, None),
        Err(Refusal::FromTheFuture { .. })
    ));
    justify(
        &e,
        &users(),
        held(12),
        &policy(),
        NOW - CLOCK_SKEW_MS_MAX,
        None,
    )
    .unwrap();
}

#[test]
fn load_evidence_must_exceed_and_hold() {
    let e = split(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    let mut low = e.clone();
    low.load.over_low = 1000;
    assert!(matches!(
        justify(&low, &users(), held(12), &policy(), NOW, None),
        Err(Refusal::NotOver {
            value: 1000,
            limit: 1000,
            ..
        })
    ));
    let mut short = e.clone();
    short.load.over_ms = 9_999;
    let refusal = justify(&short, &users(), held(12), &policy(), NOW, None).unwrap_err();
    assert!(matches!(refusal, Refusal::NotHeld { .. }));
    assert!(refusal.to_string().contains("10000 ms"), "{refusal}");
    // A stricter policy at the member refuses evidence the leader thought enough.
    let mut strict = policy();
    strict.split.reads_per_s_max = 5000;
    assert!(justify(&e, &users(), held(12), &strict, NOW, None).is_err());
}

#[test]
fn a_plan_must_match_its_trigger() {
    let mut e = split(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    e.trigger = Trigger::Names;
    assert_eq!(
        justify(&e, &users(), held(5000), &policy(), NOW, None),
        Err(Refusal::BasisMismatch {
            trigger: Trigger::Names,
            basis: Basis::Load
        })
    );
}

#[test]
fn keys_outside_the_scope_or_unbalanced_are_refused() {
    let e = split(decide(
        &hot(20, balanced()),
        &small(),
        &policy(),
        &users(),
        NOW,
        None,
    ));
    let with_plan = |plan| SplitEvidence { plan, ..e.clone() };
    let range = |at: &str, left, right| {
        with_plan(SplitPlan::Range {
            at: name(at),
            basis: Basis::Load,
            left,
            right,
        })
    };
    let check = |e: &SplitEvidence, bounds: &ScopeBounds| {
        justify(e, bounds, held(12), &policy(), NOW, None)
    };
    for at in ["/shop/x", "/users", "/"] {
        assert!(
            matches!(
                check(&range(at, 100, 100), &users()),
                Err(Refusal::OutsideScope { .. })
            ),
            "{at}"
        );
    }
    let left_half = ScopeBounds {
        prefix: name("/users"),
        start: None,
        end: Some(name("/users/m")),
    };
    assert!(check(&range("/users/n", 100, 100), &left_half).is_err());
    check(&range("/users/a", 100, 100), &left_half).unwrap();
    assert!(matches!(
        check(&range("/users/a", 0, 300), &users()),
        Err(Refusal::Unbalanced { .. })
    ));
    assert!(matches!(
        check(&range("/users/a", 200, 50), &users()),
        Err(Refusal::Unbalanced { .. })
    ));
    assert!(matches!(
        check(&range("/users/a", 40, 40), &users()),
        Err(Refusal::Unbalanced { .. })
    ));
    let subtree = |label: &str, part, whole| {
        with_plan(SplitPlan::Subtree {
            label: label.into(),
            basis: Basis::Load,
            part,
            whole,
        })
    };
    check(&subtree("eu", 60, 100), &users()).unwrap();
    assert!(matches!(
        check(&subtree("eu", 49, 100), &users()),
        Err(Refusal::Unbalanced { .. })
    ));
    assert!(matches!(
        check(&subtree("eu", 60, 50), &users()),
        Err(Refusal::Unbalanced { .. })
    ));
    assert!(matches!(
        check(&subtree("eu", 6, 10), &users()),
        Err(Refusal::Unbalanced { .. })
    ));
    assert!(matches!(
        check(&subtree("Bad/Label", 60, 100), &users()),
        Err(Refusal::OutsideScope { .. })
    ));
    // A range scope splits off subtrees inside its range only.
    check(&subtree("eu", 60, 100), &left_half).unwrap();
    assert!(matches!(
        check(&subtree("zz", 60, 100), &left_half),
        Err(Refusal::OutsideScope { .. })
    ));
}

#[test]
fn bounds_contain_their_names_only() {
    let b = ScopeBounds {
        prefix: name("/users"),
        start: Some(name("/users/f")),
        end: Some(name("/users/m")),
    };
    assert!(b.contains(&name("/users/f")));
    assert!(b.contains(&name("/users/g/x")));
    assert!(!b.contains(&name("/users/m")));
    assert!(!b.contains(&name("/users/a")));
    assert!(!b.contains(&name("/shop")));
    assert!(b.is_range());
    assert!(!users().is_range());
}

/// End to end through the accounting: a single hot name never splits, a spread does.
#[test]
fn through_the_accounting() {
    let p = policy();
    let run = |pick: &dyn Fn(&mut StdRng) -> Name| {
        let mut rng = StdRng::seed_from_u64(9);
        let mut load = ScopeLoad::new(name("/users"), LoadConfig::default());
        load.set_limits(LoadLimits::of(&p.split));
        for s in 0..15u64 {
            for i in 0..1500u64 {
                let n = pick(&mut rng);
                load.record_read(&n, NOW + s * S + i / 2, rng.gen());
            }
        }
        let figures = load.figures(NOW + 17 * S);
        decide(&figures, &small(), &p, &users(), NOW + 17 * S, None)
    };
    let hot_name = |rng: &mut StdRng| {
        if rng.gen_bool(0.97) {
            name("/users/u00042")
        } else {
            name(&format!("/users/u{:05}", rng.gen_range(0..10_000)))
        }
    };
    let r = stay(run(&hot_name));
    assert!(matches!(r, Reason::HotName { .. }), "{r}");
    assert!(r.to_string().contains("/users/u00042 carries 9"), "{r}");
    let spread = |rng: &mut StdRng| name(&format!("/users/u{:05}", rng.gen_range(0..10_000)));
    let e = split(run(&spread));
    let SplitPlan::Range { at, .. } = &e.plan else {
        panic!("{}", e.plan);
    };
    assert!(
        *at > name("/users/u03000") && *at < name("/users/u07000"),
        "{at}"
    );
    justify(&e, &users(), held(12), &p, NOW + 17 * S, None).unwrap();
}

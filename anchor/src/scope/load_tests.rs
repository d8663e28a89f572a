use proto::load::FollowerReport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const S: u64 = 1000;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn small_window() -> LoadConfig {
    LoadConfig {
        peak_window_ms: 60 * S,
        report_lag_s: 2,
    }
}

/// `per_s` reads of `names` (cycled) in each second of `from_s..to_s`.
fn reads(
    load: &mut ScopeLoad,
    names: &[Name],
    per_s: u64,
    from_s: u64,
    to_s: u64,
    rng: &mut StdRng,
) {
    for s in from_s..to_s {
        for i in 0..per_s {
            let n = &names[(i as usize + s as usize) % names.len()];
            load.record_read(n, s * S + i * 1000 / per_s.max(1), rng.gen());
        }
    }
}

#[test]
fn rates_and_peaks_settle_after_the_report_lag() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    let names = [name("/shop/a")];
    reads(&mut load, &names, 30, 100, 101, &mut rng);
    load.record_write(&names[0], 100_500, 0);
    // Second 100 is still open at 102.x (lag 2), settled from 103.
    assert_eq!(load.figures(102_900).reads_per_s, 0);
    let f = load.figures(103_000);
    assert_eq!((f.reads_per_s, f.writes_per_s), (30, 1));
    assert_eq!((f.reads_peak, f.writes_peak), (30, 1));
    // An idle second follows: the rate drops, the peak stays.
    let f = load.figures(104_000);
    assert_eq!((f.reads_per_s, f.reads_peak), (0, 30));
}

#[test]
fn peaks_expire_after_the_window() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    let names = [name("/shop/a"), name("/shop/b")];
    reads(&mut load, &names, 50, 1000, 1001, &mut rng);
    reads(&mut load, &names, 5, 1001, 1040, &mut rng);
    assert_eq!(load.figures(1040 * S).reads_peak, 50);
    // Sub-windows are 10 s: the peak of second 1000 goes once its sub-window is 6 old.
    reads(&mut load, &names, 5, 1040, 1075, &mut rng);
    assert_eq!(load.figures(1075 * S).reads_peak, 5);
    // After a long silence nothing is left.
    assert_eq!(load.figures(5000 * S).reads_peak, 0);
}

#[test]
fn the_peak_is_reliable_after_a_full_window() {
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    // Observation starts with the first second settled after the first call: second 8.
    load.record_read(&name("/shop/a"), 10 * S, 0);
    assert!(!load.figures(40 * S).peak_reliable);
    assert!(!load.figures(69 * S).peak_reliable);
    assert!(load.figures(70 * S).peak_reliable);
}

#[test]
fn follower_reports_add_up() {
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    load.record_read(&name("/shop/a"), 200 * S, 0);
    load.record_read(&name("/shop/a"), 201 * S, 0);
    let report = |start_s, r: Vec<u32>| FollowerReport {
        start_s,
        writes: vec![1; r.len()],
        reads: r,
    };
    assert_eq!(load.absorb(&report(200, vec![10, 20]), 201_500), 0);
    assert_eq!(load.absorb(&report(200, vec![5, 5]), 201_700), 0);
    let f = load.figures(203 * S);
    assert_eq!((f.reads_per_s, f.writes_per_s), (16, 2));
    let f = load.figures(204 * S);
    assert_eq!((f.reads_per_s, f.writes_per_s), (26, 2));
    assert_eq!(f.reads_peak, 26);
    // Second 201 is settled now: its count comes too late; second 202 still counts.
    assert_eq!(load.absorb(&report(201, vec![100, 100]), 204 * S), 1);
    assert_eq!(load.figures(205 * S).reads_per_s, 100);
    // A report from a clock ahead counts in the current second.
    assert_eq!(load.absorb(&report(900, vec![7]), 205 * S), 0);
    assert_eq!(load.figures(208 * S).reads_per_s, 7);
}

#[test]
fn the_hold_counts_whole_seconds_over_the_limit_and_breaks_on_one_under() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    load.set_limits(LoadLimits {
        reads_per_s: 100,
        writes_per_s: 100,
    });
    let names: Vec<Name> = (0..50).map(|i| name(&format!("/shop/n{i}"))).collect();
    reads(&mut load, &names, 150, 10, 14, &mut rng);
    reads(&mut load, &names, 120, 14, 15, &mut rng);
    // At 17 s the seconds up to 14 are settled (lag 2).
    let f = load.figures(17 * S);
    let over = f.reads_over.expect("over the limit");
    assert_eq!((over.since_s, over.for_ms, over.low), (10, 5 * S, 120));
    assert!(f.writes_over.is_none());
    // The sampler ran from the first hot second on.
    assert!(!matches!(f.key, KeyFinding::NotSampled));
    // One quiet second ends the hold and resets the sampler.
    reads(&mut load, &names, 50, 15, 16, &mut rng);
    let f = load.figures(19 * S);
    assert!(f.reads_over.is_none());
    assert_eq!(f.key, KeyFinding::NotSampled);
}

#[test]
fn a_uniform_hot_load_yields_a_key_near_the_middle() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut load = ScopeLoad::new(name("/users"), small_window());
    load.set_limits(LoadLimits {
        reads_per_s: 500,
        writes_per_s: 500,
    });
    for s in 0..20u64 {
        for i in 0..1000u64 {
            let n = name(&format!("/users/u{:05}", rng.gen_range(0..10_000)));
            load.record_read(&n, 1_000 * S + s * S + i, rng.gen());
        }
    }
    let f = load.figures(1_022 * S);
    let KeyFinding::Found { key: c, .. } = f.key else {
        panic!("no key: {:?}", f.key);
    };
    assert!(
        c.at > name("/users/u03500") && c.at < name("/users/u06500"),
        "{c:?}"
    );
}

#[test]
fn child_label_shares_are_bounded() {
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    for i in 0..100 {
        load.record_read(&name(&format!("/shop/c{i}/x")), 50 * S, 0);
    }
    for _ in 0..300 {
        load.record_read(&name("/shop/eu/api"), 51 * S, 0);
    }
    load.record_read(&name("/shop"), 51 * S, 0);
    let shares = load.figures(52 * S).children;
    assert_eq!(shares.total, 401);
    assert!(shares.labels.len() <= CHILD_LABELS_MAX);
    // The table was full when "eu" came: it counts as other.
    assert_eq!(shares.other, 36 + 300);
    // A later sub-window starts a fresh table; the old one still counts once more.
    for _ in 0..10 {
        load.record_read(&name("/shop/eu/api"), 65 * S, 0);
    }
    let shares = load.figures(65 * S).children;
    assert_eq!(shares.labels[0], ("eu".to_string(), 10));
    assert_eq!(shares.total, 411);
    let shares = load.figures(75 * S).children;
    assert_eq!((shares.total, shares.labels.len()), (10, 1));
}

#[test]
fn carried_peak_keeps_a_merged_scope_warm() {
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    load.carry_peak(400, 30, 500 * S);
    let f = load.figures(510 * S);
    assert_eq!((f.reads_peak, f.writes_peak), (400, 30));
    assert!(!f.peak_reliable);
}

#[test]
fn size_and_limits_are_set_by_the_caller() {
    let mut load = ScopeLoad::new(name("/shop"), LoadConfig::default());
    let size = SizeFigures {
        names: 10,
        bytes: 99,
        ..SizeFigures::default()
    };
    load.set_size(size.clone());
    assert_eq!(load.size(), &size);
    let split = policy::Split::default();
    assert_eq!(LoadLimits::of(&split).reads_per_s, 20_000);
}

#[test]
fn counts_before_the_first_settle_are_kept() {
    let mut load = ScopeLoad::new(name("/shop"), small_window());
    load.record_read(&name("/shop/a"), 1_200, 0);
    assert_eq!(load.figures(4 * S).reads_per_s, 1);
}

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn user(i: u32) -> Name {
    Name::parse(&format!("/users/u{i:05}")).unwrap()
}

#[test]
fn one_hot_name_alone_never_qualifies() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut s = Sampler::default();
    let hot = user(500);
    for _ in 0..20_000 {
        let name = if rng.gen_bool(0.97) {
            hot.clone()
        } else {
            user(rng.gen_range(0..1000))
        };
        s.offer(&name, rng.gen());
    }
    let KeyFinding::NoKey { hottest, .. } = s.finding() else {
        panic!("a hot name must not yield a key: {:?}", s.finding());
    };
    let hottest = hottest.expect("the hot name is in the reservoir");
    assert_eq!(hottest.at, hot);
    assert!(hottest.on * 100 >= hottest.counts() * 90, "{hottest:?}");
}

#[test]
fn only_the_hot_name_never_qualifies() {
    let mut s = Sampler::default();
    for i in 0..5_000 {
        s.offer(&user(7), i);
    }
    assert!(matches!(s.finding(), KeyFinding::NoKey { .. }));
}

#[test]
fn a_uniform_spread_yields_a_key_near_the_middle() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut s = Sampler::default();
    for _ in 0..20_000 {
        s.offer(&user(rng.gen_range(0..10_000)), rng.gen());
    }
    let KeyFinding::Found { key: c, .. } = s.finding() else {
        panic!("expected a key: {:?}", s.finding());
    };
    assert!(c.qualifies());
    assert!(c.at > user(3_500) && c.at < user(6_500), "{c:?}");
}

#[test]
fn too_few_counts_do_not_qualify() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut s = Sampler::default();
    for _ in 0..60 {
        s.offer(&user(rng.gen_range(0..1000)), rng.gen());
    }
    let KeyFinding::NoKey { best, hottest } = s.finding() else {
        panic!("60 requests cannot give 100 counts");
    };
    assert!(best.unwrap().counts() < COUNTS_MIN);
    assert!(hottest.is_none());
}

#[test]
fn counting_and_reset() {
    let mut s = Sampler::default();
    assert_eq!(s.finding(), KeyFinding::NotSampled);
    s.offer(&user(5), 0);
    s.offer(&user(1), 0);
    s.offer(&user(5), 0);
    s.offer(&user(9), 0);
    let first = &s.candidates()[0];
    assert_eq!((first.left, first.right, first.on), (1, 2, 1));
    assert_eq!(s.candidates().len(), 4);
    assert_eq!(s.seen(), 4);
    s.reset();
    assert_eq!(s.seen(), 0);
    assert_eq!(s.finding(), KeyFinding::NotSampled);
}

#[test]
fn the_reservoir_stays_bounded() {
    let mut s = Sampler::default();
    for i in 0..1_000u32 {
        s.offer(&user(i), u64::from(i) * 7919);
    }
    assert_eq!(s.candidates().len(), CANDIDATES_MAX);
}

#[test]
fn imbalance_of_an_empty_candidate_is_one() {
    let c = Candidate::new(user(1));
    assert_eq!(c.imbalance(), 1.0);
    assert!(!c.qualifies());
}

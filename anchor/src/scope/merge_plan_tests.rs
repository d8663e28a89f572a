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
    p.split.auto = true;
    p.split.names_max = 100;
    p.split.bytes_max = 1_000_000;
    p.split.reads_per_s_max = 1000;
    p.split.writes_per_s_max = 100;
    p.merge.auto = true;
    p.merge.names_min = Some(20);
    p.merge.age_s_min = 60;
    p.validate().unwrap();
    p
}

fn load(reads_peak: u64, writes_peak: u64) -> LoadFigures {
    LoadFigures {
        at_ms: NOW,
        reads_per_s: 0,
        writes_per_s: 0,
        reads_peak,
        writes_peak,
        peak_reliable: true,
        reads_over: None,
        writes_over: None,
        key: KeyFinding::NotSampled,
        children: ChildShares::default(),
    }
}

fn size(names: u64, children: &[(&str, u64)]) -> SizeFigures {
    SizeFigures {
        names,
        bytes: names * 10,
        children: children
            .iter()
            .map(|(l, n)| ChildSize {
                label: l.to_string(),
                names: *n,
                bytes: n * 10,
            })
            .collect(),
        median: None,
    }
}

struct Pair {
    bounds: (ScopeBounds, ScopeBounds),
    load: (LoadFigures, LoadFigures),
    size: (SizeFigures, SizeFigures),
}

impl Pair {
    fn new() -> Pair {
        Pair {
            bounds: (
                ScopeBounds::subtree(name("/shop")),
                ScopeBounds::subtree(name("/shop/eu")),
            ),
            load: (load(10, 3), load(20, 4)),
            size: (size(5, &[("us", 3), ("eu", 1)]), size(7, &[])),
        }
    }

    fn sides(&self) -> (Side<'_>, Side<'_>) {
        (
            Side {
                bounds: &self.bounds.0,
                load: &self.load.0,
                size: &self.size.0,
            },
            Side {
                bounds: &self.bounds.1,
                load: &self.load.1,
                size: &self.size.1,
            },
        )
    }

    fn verdict(&self, p: &policy::Policy) -> Result<Box<MergeEvidence>, Hold> {
        let (parent, child) = self.sides();
        merge_verdict(parent, child, p, NOW, SPLIT_AT)
    }
}

#[test]
fn a_cold_small_child_merges_with_both_sides_in_the_evidence() {
    let pair = Pair::new();
    let e = pair.verdict(&policy()).unwrap();
    assert_eq!(e.left.prefix, name("/shop"));
    assert_eq!(e.right.prefix, name("/shop/eu"));
    assert_eq!(e.right.names, 7);
    assert_eq!(e.split_at_ms, SPLIT_AT);
    assert_eq!(e.decided_at_ms, NOW);
}

#[test]
fn the_merged_figures_sum_peaks_and_sizes_and_fold_the_child_into_its_label() {
    let pair = Pair::new();
    let (parent, child) = pair.sides();
    let (l, s) = merged(parent, child);
    assert_eq!((l.reads_peak, l.writes_peak), (30, 7));
    assert_eq!((s.names, s.bytes), (12, 120));
    let eu = s.children.iter().find(|c| c.label == "eu").unwrap();
    assert_eq!((eu.names, eu.bytes), (8, 80));
    assert_eq!(s.children[0].label, "eu", "most names first");
    assert!(s.median.is_none());
}

#[test]
fn a_merge_the_split_decider_would_undo_is_refused() {
    // A policy that lets merge minimums reach the split maximum (validation forbids it):
    // the two halves fit under names_min, their sum does not fit under names_max.
    let mut p = policy();
    p.merge.names_min = Some(100);
    let mut pair = Pair::new();
    pair.size = (size(30, &[("us", 30)]), size(80, &[]));
    match pair.verdict(&p) {
        Err(Hold::WouldSplitAgain { plan }) => {
            assert!(plan.contains("subtree split"), "{plan}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let text = pair.verdict(&p).unwrap_err().to_string();
    assert!(text.contains("would split again at once"), "{text}");
    // With automatic splits off nothing would split it back: the merge goes ahead.
    p.split.auto = false;
    assert!(pair.verdict(&p).is_ok());
}

#[test]
fn the_merge_deciders_reasons_come_through() {
    let mut pair = Pair::new();
    pair.size.1 = size(50, &[]);
    let hold = pair.verdict(&policy()).unwrap_err();
    assert!(
        matches!(
            hold,
            Hold::Decider(MergeReason::TooBig { what: "names", .. })
        ),
        "{hold:?}"
    );
    assert!(hold.to_string().contains("holds 50 names"), "{hold}");
    let mut off = policy();
    off.merge.auto = false;
    let hold = Pair::new().verdict(&off).unwrap_err();
    assert!(
        matches!(hold, Hold::Decider(MergeReason::AutoOff { .. })),
        "{hold:?}"
    );
}

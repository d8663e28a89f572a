//! The split view `scope show` prints: a replica's load figures, its size, the sampler's
//! split key and what the split decider would do now and why, put together into
//! [`proto::msg::SplitView`]. Pure: figures, policy and time come in as arguments.

use proto::msg::SplitView;
use proto::split::percent;

use super::load::{LoadFigures, SizeFigures, PEAK_WINDOW_MS_DEFAULT};
use super::sampler::{Candidate, KeyFinding, COUNTS_MIN};
use super::split::{decide, Decision, ScopeBounds};

/// Child labels `scope show` lists.
pub const CHILDREN_SHOWN: usize = 8;

/// What the size scan covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// Names the scan read.
    pub scanned: u64,
    /// True when it read every name.
    pub complete: bool,
}

/// The split view of the scope holding the names in `bounds` at `now_ms`, when the scope
/// last split at `last_split_ms` (if ever), as the leader's splitter would ask `decide`.
pub fn split_view(
    bounds: &ScopeBounds,
    load: &LoadFigures,
    size: &SizeFigures,
    coverage: Coverage,
    policy: &policy::Policy,
    now_ms: u64,
    last_split_ms: Option<u64>,
) -> SplitView {
    let verdict = decide(load, size, policy, bounds, now_ms, last_split_ms);
    let (would_split, decision) = match verdict {
        Decision::Split(e) => (
            true,
            format!("split due: {} ({} over the limit)", e.plan, e.trigger),
        ),
        Decision::Stay(reason) => (false, format!("stay: {reason}")),
    };
    let key = match &load.key {
        KeyFinding::Found { key, .. } => Some(key.at.clone()),
        _ => None,
    };
    SplitView {
        reads_per_s: load.reads_per_s,
        writes_per_s: load.writes_per_s,
        reads_peak: load.reads_peak,
        writes_peak: load.writes_peak,
        peak_window_s: PEAK_WINDOW_MS_DEFAULT / 1000,
        peak_reliable: load.peak_reliable,
        names: size.names,
        bytes: coverage.complete.then_some(size.bytes),
        scanned: coverage.scanned,
        complete: coverage.complete,
        children: size
            .children
            .iter()
            .take(CHILDREN_SHOWN)
            .map(|c| (c.label.clone(), c.names, c.bytes))
            .collect(),
        median: size.median.as_ref().map(|m| m.at.clone()),
        key,
        key_text: key_text(&load.key),
        would_split,
        decision,
        auto: policy.split.auto,
        merges: Vec::new(),
    }
}

/// The sampler's finding in words.
pub fn key_text(finding: &KeyFinding) -> String {
    match finding {
        KeyFinding::NotSampled => {
            "not sampling (the sampler runs only while a load limit is exceeded)".into()
        }
        KeyFinding::Found { key, .. } => format!("{} ({})", key.at, counts(key)),
        KeyFinding::NoKey { best, hottest } => {
            let mut s = match best {
                Some(b) if b.counts() < COUNTS_MIN => format!(
                    "none qualifies yet: the best candidate {} has {} of {COUNTS_MIN} counts",
                    b.at,
                    b.counts()
                ),
                Some(b) => format!(
                    "none qualifies: the best candidate {} ({})",
                    b.at,
                    counts(b)
                ),
                None => "none: no candidate".into(),
            };
            if let Some(h) = hottest {
                s.push_str(&format!(
                    "; hottest name {} takes {} of its counts",
                    h.at,
                    percent(h.on, h.counts())
                ));
            }
            s
        }
    }
}

fn counts(c: &Candidate) -> String {
    format!(
        "{} left, {} right, imbalance {:.2}",
        c.left,
        c.right,
        c.imbalance()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::load::{LoadConfig, LoadLimits, ScopeLoad};
    use proto::Name;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn policy(auto: bool) -> policy::Policy {
        let mut p = policy::Policy::development(None);
        p.split.auto = auto;
        p.split.reads_per_s_max = 50;
        p.split.window_s = 5;
        p.validate().unwrap();
        p
    }

    /// `per_s` reads a second for `secs` seconds, names from `pick(i)`.
    fn drive(pick: impl Fn(u64) -> String, per_s: u64, secs: u64) -> (ScopeLoad, u64) {
        let p = policy(true);
        let mut l = ScopeLoad::new(name("/shop"), LoadConfig::default());
        l.set_limits(LoadLimits::of(&p.split));
        let start = 1_000_000_000u64;
        let mut i = 0;
        for s in 0..secs {
            for k in 0..per_s {
                l.record_read(&name(&pick(i)), start + s * 1000 + k, i * 7919 + 13);
                i += 1;
            }
        }
        (l, start + secs * 1000)
    }

    fn size(names: u64) -> (SizeFigures, Coverage) {
        (
            SizeFigures {
                names,
                bytes: 10 * names,
                ..SizeFigures::default()
            },
            Coverage {
                scanned: names,
                complete: true,
            },
        )
    }

    #[test]
    fn one_hot_name_has_no_qualifying_key() {
        let (mut l, now) = drive(|_| "/shop/hot".into(), 200, 15);
        let f = l.figures(now);
        let (s, c) = size(3);
        let v = split_view(
            &ScopeBounds::subtree(name("/shop")),
            &f,
            &s,
            c,
            &policy(true),
            now,
            None,
        );
        assert!(!v.would_split, "{v:?}");
        assert_eq!(v.key, None);
        assert!(
            v.decision.contains("one hot name /shop/hot"),
            "{}",
            v.decision
        );
        assert!(
            v.key_text.contains("hottest name /shop/hot"),
            "{}",
            v.key_text
        );
        assert_eq!(v.reads_per_s, 200);
        assert_eq!(v.bytes, Some(30));
    }

    #[test]
    fn spread_load_finds_a_key_and_says_what_auto_off_would_do() {
        let (mut l, now) = drive(|i| format!("/shop/n{:03}", (i * 37) % 400), 200, 15);
        let f = l.figures(now);
        let (s, c) = size(400);
        let v = split_view(
            &ScopeBounds::subtree(name("/shop")),
            &f,
            &s,
            c,
            &policy(true),
            now,
            None,
        );
        assert!(v.would_split, "{v:?}");
        assert!(
            v.decision.starts_with("split due: range split at"),
            "{}",
            v.decision
        );
        assert!(v.key.is_some());
        // Just after a split, the view says when the next one may come.
        let soon = split_view(
            &ScopeBounds::subtree(name("/shop")),
            &f,
            &s,
            c,
            &policy(true),
            now,
            Some(now - 1),
        );
        assert!(!soon.would_split);
        assert!(
            soon.decision.contains("last split 0 s ago"),
            "{}",
            soon.decision
        );
        let off = split_view(
            &ScopeBounds::subtree(name("/shop")),
            &f,
            &s,
            c,
            &policy(false),
            now,
            None,
        );
        assert!(!off.would_split);
        assert!(
            off.decision.contains("automatic splits are off"),
            "{}",
            off.decision
        );
        assert!(!off.auto);
    }

    #[test]
    fn a_quiet_scope_is_under_every_limit_and_a_partial_scan_has_no_bytes() {
        let mut l = ScopeLoad::new(name("/shop"), LoadConfig::default());
        let f = l.figures(5_000);
        let s = SizeFigures {
            names: 10,
            bytes: 5,
            ..SizeFigures::default()
        };
        let c = Coverage {
            scanned: 4,
            complete: false,
        };
        let v = split_view(
            &ScopeBounds::subtree(name("/shop")),
            &f,
            &s,
            c,
            &policy(false),
            5_000,
            None,
        );
        assert!(
            v.decision.starts_with("stay: under every limit"),
            "{}",
            v.decision
        );
        assert_eq!(v.bytes, None);
        assert!(v.key_text.starts_with("not sampling"));
    }
}

//! Load and size accounting for one scope: what the split decider
//! ([`super::split`]) reads. Pure: time comes in as an argument (ms since the epoch) and
//! randomness as a `u64` per request.
//!
//! What it keeps, and where each rule comes from:
//! - **Size**: names and bytes, per child label too, and the median name, set by the caller
//!   from the state machine's figures ([`ScopeLoad::set_size`]).
//! - **Rates** in 1 s buckets: reads/s and writes/s, the leader's own requests plus the
//!   counts followers report ([`ScopeLoad::absorb`]). A second stays open for
//!   [`LoadConfig::report_lag_s`] seconds so reports can still land in it, then it is
//!   *settled*: it feeds the peak and the hold.
//! - **Peak** over a retained window (5 min by default) in [`SUB_WINDOWS`] rotating
//!   sub-windows, as CockroachDB keeps it for merge decisions; the peak is *reliable* only
//!   once a full window has been observed.
//! - **Hold**: while every settled second exceeds a load limit (set with
//!   [`ScopeLoad::set_limits`]), how long that has lasted and the lowest rate in it. One
//!   second under the limit ends it, as a bucket under the threshold discards CockroachDB's
//!   key finder.
//! - **Split key**: a [`Sampler`] that runs only while a load limit is exceeded and is reset
//!   when the scope cools down.
//! - **Child labels**: requests per first label below the prefix, so the decider can see one
//!   child subtree carrying most of the load. Bounded to [`CHILD_LABELS_MAX`] labels plus
//!   an "other" count, over the current and the previous sub-window.
//!
//! Follower reports carry counts only, so the sampler and the child-label shares see the
//! requests this member served itself: a sample of the scope's traffic, not all of it.

use std::collections::{BTreeMap, VecDeque};

use proto::load::FollowerReport;
use proto::Name;

use super::sampler::{KeyFinding, Sampler};

/// Sub-windows of the peak window.
pub const SUB_WINDOWS: usize = 6;
/// Child labels counted by name; the rest are counted as "other".
pub const CHILD_LABELS_MAX: usize = 64;
/// Default retained window of the peak (CockroachDB's 5 min).
pub const PEAK_WINDOW_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Default seconds a second stays open for follower reports.
pub const REPORT_LAG_S_DEFAULT: u64 = 2;

/// How the accounting is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadConfig {
    /// The retained window of the peak, ms (at least [`SUB_WINDOWS`] seconds).
    pub peak_window_ms: u64,
    /// Seconds a second stays open for follower reports before it is settled.
    pub report_lag_s: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            peak_window_ms: PEAK_WINDOW_MS_DEFAULT,
            report_lag_s: REPORT_LAG_S_DEFAULT,
        }
    }
}

/// The load limits of the scope's policy (`[split] reads_per_s_max`, `writes_per_s_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadLimits {
    /// Reads per second.
    pub reads_per_s: u64,
    /// Writes per second.
    pub writes_per_s: u64,
}

impl LoadLimits {
    /// No limit: nothing is ever hot.
    pub const NONE: LoadLimits = LoadLimits {
        reads_per_s: u64::MAX,
        writes_per_s: u64::MAX,
    };

    /// The limits of a policy's `[split]` section.
    pub fn of(split: &policy::Split) -> LoadLimits {
        LoadLimits {
            reads_per_s: split.reads_per_s_max.into(),
            writes_per_s: split.writes_per_s_max.into(),
        }
    }
}

/// Names and bytes under one child label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildSize {
    /// The first label below the scope's prefix.
    pub label: String,
    /// Names under it.
    pub names: u64,
    /// Bytes under it.
    pub bytes: u64,
}

/// The median name of the scope and how many names order before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Median {
    /// The name.
    pub at: Name,
    /// Names before it (the rest are at or after it).
    pub left: u64,
}

/// What the scope holds, from the state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SizeFigures {
    /// Names.
    pub names: u64,
    /// Bytes of record sets.
    pub bytes: u64,
    /// The largest child labels (the caller may leave out small ones).
    pub children: Vec<ChildSize>,
    /// The median name, when the caller computed it.
    pub median: Option<Median>,
}

/// A load limit exceeded in every settled second since `since_s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Over {
    /// The first second of the run.
    pub since_s: u64,
    /// How long it has lasted, ms (whole settled seconds).
    pub for_ms: u64,
    /// The lowest per-second rate during it.
    pub low: u64,
}

/// Requests per child label over the current and previous sub-window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildShares {
    /// Every request counted, including those for the prefix itself and "other".
    pub total: u64,
    /// Labels and their requests, most first (at most [`CHILD_LABELS_MAX`]).
    pub labels: Vec<(String, u64)>,
    /// Requests under labels not counted by name.
    pub other: u64,
}

/// A snapshot of a scope's load, for the decider and `scope show`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadFigures {
    /// When it was taken, ms.
    pub at_ms: u64,
    /// Reads in the last settled second.
    pub reads_per_s: u64,
    /// Writes in the last settled second.
    pub writes_per_s: u64,
    /// Highest reads/s in the retained window.
    pub reads_peak: u64,
    /// Highest writes/s in the retained window.
    pub writes_peak: u64,
    /// True once a full retained window has been observed.
    pub peak_reliable: bool,
    /// The reads limit exceeded without a break, if it is.
    pub reads_over: Option<Over>,
    /// The writes limit exceeded without a break, if it is.
    pub writes_over: Option<Over>,
    /// The sampler's split key, or why there is none.
    pub key: KeyFinding,
    /// Requests per child label.
    pub children: ChildShares,
}

#[derive(Clone, Copy, Debug, Default)]
struct Second {
    s: u64,
    reads: u64,
    writes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct SubWindow {
    index: u64,
    reads: u64,
    writes: u64,
}

#[derive(Clone, Debug, Default)]
struct ChildGen {
    index: u64,
    labels: BTreeMap<String, u64>,
    other: u64,
    total: u64,
}

/// Load and size accounting for one scope. See the module docs.
#[derive(Clone, Debug)]
pub struct ScopeLoad {
    prefix: Name,
    config: LoadConfig,
    limits: LoadLimits,
    size: SizeFigures,
    /// Seconds not settled yet, ascending, all after `settled`.
    open: VecDeque<Second>,
    /// The last settled second; `None` before the first request or report.
    settled: Option<u64>,
    /// The first settled second.
    started_s: Option<u64>,
    last: Second,
    peaks: [SubWindow; SUB_WINDOWS],
    reads_over: Option<Over>,
    writes_over: Option<Over>,
    sampler: Sampler,
    children: [ChildGen; 2],
}

impl ScopeLoad {
    /// Accounting for the scope at `prefix`, with no load limits (nothing is hot) until
    /// [`ScopeLoad::set_limits`].
    pub fn new(prefix: Name, config: LoadConfig) -> ScopeLoad {
        ScopeLoad {
            prefix,
            config,
            limits: LoadLimits::NONE,
            size: SizeFigures::default(),
            open: VecDeque::new(),
            settled: None,
            started_s: None,
            last: Second::default(),
            peaks: [SubWindow::default(); SUB_WINDOWS],
            reads_over: None,
            writes_over: None,
            sampler: Sampler::default(),
            children: Default::default(),
        }
    }

    /// Sets the load limits (from the policy). A change ends the current holds and resets
    /// the sampler, which only runs while a limit is exceeded.
    pub fn set_limits(&mut self, limits: LoadLimits) {
        if limits != self.limits {
            self.limits = limits;
            self.reads_over = None;
            self.writes_over = None;
            self.sampler.reset();
        }
    }

    /// How the accounting is set up.
    pub fn config(&self) -> LoadConfig {
        self.config
    }

    /// Sets the size figures (from the state machine).
    pub fn set_size(&mut self, size: SizeFigures) {
        self.size = size;
    }

    /// The size figures last set.
    pub fn size(&self) -> &SizeFigures {
        &self.size
    }

    /// Counts one read of `name` at `now_ms`; `random` feeds the sampler.
    pub fn record_read(&mut self, name: &Name, now_ms: u64, random: u64) {
        self.record(name, now_ms, random, 1, 0);
    }

    /// Counts one write of `name` at `now_ms`; `random` feeds the sampler.
    pub fn record_write(&mut self, name: &Name, now_ms: u64, random: u64) {
        self.record(name, now_ms, random, 0, 1);
    }

    fn record(&mut self, name: &Name, now_ms: u64, random: u64, reads: u64, writes: u64) {
        let now_s = now_ms / 1000;
        self.advance(now_s);
        self.add(now_s, reads, writes);
        self.count_child(name, now_s);
        if self.is_hot() {
            self.sampler.offer(name, random);
        }
    }

    /// Adds a follower's per-second counts. Seconds already settled are dropped (the
    /// report came too late to count) and their number returned; seconds ahead of `now_ms`
    /// (clock skew) count in the current second.
    pub fn absorb(&mut self, report: &FollowerReport, now_ms: u64) -> usize {
        let now_s = now_ms / 1000;
        self.advance(now_s);
        let mut late = 0;
        for (s, reads, writes) in report.seconds() {
            if self.settled.is_some_and(|settled| s <= settled) {
                late += 1;
                continue;
            }
            self.add(s.min(now_s), reads.into(), writes.into());
        }
        late
    }

    /// Keeps the peak of the scopes this one was merged from, so a merged scope does not
    /// look cold and split again (CockroachDB keeps the summed peak after a merge).
    pub fn carry_peak(&mut self, reads_peak: u64, writes_peak: u64, now_ms: u64) {
        self.advance(now_ms / 1000);
        let index = self.sub_index(self.settled.unwrap_or(now_ms / 1000));
        let slot = self.slot(index);
        slot.reads = slot.reads.max(reads_peak);
        slot.writes = slot.writes.max(writes_peak);
    }

    /// The figures at `now_ms` (settling every second due by then).
    pub fn figures(&mut self, now_ms: u64) -> LoadFigures {
        self.advance(now_ms / 1000);
        let settled = self.settled.unwrap_or(0);
        let newest = self.sub_index(settled);
        let live = self
            .peaks
            .iter()
            .filter(|w| w.index + SUB_WINDOWS as u64 > newest && w.index <= newest);
        let (reads_peak, writes_peak) =
            live.fold((0, 0), |(r, w), p| (r.max(p.reads), w.max(p.writes)));
        let window_s = self.window_s();
        LoadFigures {
            at_ms: now_ms,
            reads_per_s: self.last_rate(settled).0,
            writes_per_s: self.last_rate(settled).1,
            reads_peak,
            writes_peak,
            peak_reliable: self
                .started_s
                .is_some_and(|start| settled + 1 >= start + window_s),
            reads_over: self.reads_over,
            writes_over: self.writes_over,
            key: self.sampler.finding(),
            children: self.child_shares(now_ms / 1000),
        }
    }

    fn last_rate(&self, settled: u64) -> (u64, u64) {
        if self.settled.is_some() && self.last.s == settled {
            (self.last.reads, self.last.writes)
        } else {
            (0, 0)
        }
    }

    fn is_hot(&self) -> bool {
        self.reads_over.is_some() || self.writes_over.is_some()
    }

    fn window_s(&self) -> u64 {
        (self.config.peak_window_ms / 1000).max(SUB_WINDOWS as u64)
    }

    fn sub_len_s(&self) -> u64 {
        self.window_s().div_ceil(SUB_WINDOWS as u64)
    }

    fn sub_index(&self, s: u64) -> u64 {
        s / self.sub_len_s()
    }

    fn slot(&mut self, index: u64) -> &mut SubWindow {
        let slot = &mut self.peaks[(index % SUB_WINDOWS as u64) as usize];
        if slot.index != index {
            *slot = SubWindow {
                index,
                ..SubWindow::default()
            };
        }
        slot
    }

    /// Adds counts to the open second `s` (or the oldest open one if `s` is settled).
    fn add(&mut self, s: u64, reads: u64, writes: u64) {
        let s = match self.settled {
            Some(settled) if s <= settled => settled + 1,
            _ => s,
        };
        let at = self.open.partition_point(|o| o.s < s);
        match self.open.get_mut(at) {
            Some(o) if o.s == s => {
                o.reads += reads;
                o.writes += writes;
            }
            _ => self.open.insert(at, Second { s, reads, writes }),
        }
    }

    /// Settles every second older than `now_s - report_lag_s`.
    fn advance(&mut self, now_s: u64) {
        let Some(due) = now_s.checked_sub(self.config.report_lag_s + 1) else {
            return;
        };
        // The first call: nothing before now (or before the first count) needs settling.
        let settled = *self.settled.get_or_insert_with(|| {
            let first = self.open.front().map_or(due, |o| o.s.saturating_sub(1));
            first.min(due)
        });
        let mut next = settled + 1;
        if next > due {
            return;
        }
        // A long silence: the windows hold nothing older; skip to the last window's worth.
        let keep = self.window_s() + 1;
        if due - next > keep {
            self.reads_over = None;
            self.writes_over = None;
            self.sampler.reset();
            let skip_to = due - keep;
            while self.open.front().is_some_and(|o| o.s < skip_to) {
                self.open.pop_front();
            }
            next = skip_to;
        }
        for s in next..=due {
            while self.open.front().is_some_and(|o| o.s < s) {
                self.open.pop_front();
            }
            let second = match self.open.front() {
                Some(o) if o.s == s => self.open.pop_front().unwrap_or_default(),
                _ => Second {
                    s,
                    ..Second::default()
                },
            };
            self.settle(second);
        }
    }

    fn settle(&mut self, second: Second) {
        let s = second.s;
        self.settled = Some(s);
        self.started_s.get_or_insert(s);
        self.last = second;
        let index = self.sub_index(s);
        let slot = self.slot(index);
        slot.reads = slot.reads.max(second.reads);
        slot.writes = slot.writes.max(second.writes);
        self.reads_over = over(self.reads_over, s, second.reads, self.limits.reads_per_s);
        self.writes_over = over(self.writes_over, s, second.writes, self.limits.writes_per_s);
        if !self.is_hot() {
            self.sampler.reset();
        }
    }

    fn count_child(&mut self, name: &Name, now_s: u64) {
        let index = self.sub_index(now_s);
        if self.children[0].index < index {
            self.children[1] = std::mem::take(&mut self.children[0]);
            self.children[0].index = index;
        }
        let depth = self.prefix.depth();
        let label =
            (name.depth() > depth && name.is_under(&self.prefix)).then(|| &name.labels()[depth]);
        let current = &mut self.children[0];
        current.total += 1;
        let Some(label) = label else { return };
        if let Some(n) = current.labels.get_mut(label) {
            *n += 1;
        } else if current.labels.len() < CHILD_LABELS_MAX {
            current.labels.insert(label.clone(), 1);
        } else {
            current.other += 1;
        }
    }

    fn child_shares(&self, now_s: u64) -> ChildShares {
        let newest = self.sub_index(now_s);
        let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut total, mut other) = (0, 0);
        for gen in self.children.iter().filter(|g| g.index + 1 >= newest) {
            total += gen.total;
            other += gen.other;
            for (label, n) in &gen.labels {
                *merged.entry(label).or_default() += n;
            }
        }
        let mut labels: Vec<(String, u64)> = merged
            .into_iter()
            .map(|(l, n)| (l.to_string(), n))
            .collect();
        labels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (_, n) in labels.drain(CHILD_LABELS_MAX.min(labels.len())..) {
            other += n;
        }
        ChildShares {
            total,
            labels,
            other,
        }
    }
}

/// The hold after second `s` with `rate` against `limit`.
fn over(run: Option<Over>, s: u64, rate: u64, limit: u64) -> Option<Over> {
    if rate <= limit {
        return None;
    }
    let run = run.unwrap_or(Over {
        since_s: s,
        for_ms: 0,
        low: rate,
    });
    Some(Over {
        since_s: run.since_s,
        for_ms: (s + 1 - run.since_s) * 1000,
        low: run.low.min(rate),
    })
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;

//! A replica's load meters behind one lock: the [`RateMeter`] behind `scope tree`'s load
//! column and the [`ScopeLoad`] the split decider reads, fed by the request handlers with
//! the anchor's clock and a cheap per-replica random stream for the split-key sampler.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::load::{FollowerReport, REPORT_SECONDS_MAX};
use proto::msg::Load;
use proto::Name;

use super::load::{LoadConfig, LoadFigures, LoadLimits, ScopeLoad};
use super::rate::RateMeter;

/// The load meters of one hosted replica. Shared by the handlers (`&self`).
#[derive(Debug)]
pub struct ReplicaLoad {
    rate: RateMeter,
    split: Mutex<ScopeLoad>,
    random: AtomicU64,
    /// Reads answered here per second, not reported to the leader yet (a follower's reads
    /// count in the leader's accounting through its reports); at most
    /// [`REPORT_SECONDS_MAX`] seconds are kept.
    unreported: Mutex<BTreeMap<u64, u32>>,
}

impl ReplicaLoad {
    /// Meters for the scope at `prefix`; `seed` starts the sampler's random stream.
    pub fn new(prefix: Name, seed: u64, config: LoadConfig) -> ReplicaLoad {
        ReplicaLoad {
            rate: RateMeter::default(),
            split: Mutex::new(ScopeLoad::new(prefix, config)),
            random: AtomicU64::new(seed),
            unreported: Mutex::new(BTreeMap::new()),
        }
    }

    /// The reads answered here in the whole seconds before `now_ms` that were not reported
    /// yet, as a report for the leader (`None` when there were none); they are forgotten
    /// here. Writes are not reported: a follower forwards them and the leader counts them.
    pub fn take_report(&self, now_ms: u64) -> Option<FollowerReport> {
        let now_s = now_ms / 1000;
        let mut pending = self.unreported.lock().ok()?;
        let current = pending.split_off(&now_s);
        let done = std::mem::replace(&mut *pending, current);
        let (&first, _) = done.first_key_value()?;
        let reads: Vec<u32> = (first..now_s)
            .map(|s| done.get(&s).copied().unwrap_or(0))
            .collect();
        let report = FollowerReport {
            start_s: first,
            writes: vec![0; reads.len()],
            reads,
        };
        Some(report)
    }

    /// Adds a follower's report to the split accounting at `now_ms`; returns the seconds
    /// that came too late to count.
    pub fn absorb(&self, report: &FollowerReport, now_ms: u64) -> usize {
        self.split
            .lock()
            .map(|mut l| l.absorb(report, now_ms))
            .unwrap_or(0)
    }

    /// The next number of the random stream (splitmix64: one atomic add and a few
    /// multiplications).
    fn next_random(&self) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Counts one resolve answered for `name` at `now_ms`, under the policy's `limits`.
    pub fn read(&self, name: &Name, now_ms: u64, limits: LoadLimits) {
        self.rate.read(now_ms / 1000);
        if let Ok(mut pending) = self.unreported.lock() {
            let now_s = now_ms / 1000;
            *pending.entry(now_s).or_default() += 1;
            let oldest = now_s.saturating_sub(REPORT_SECONDS_MAX as u64 - 1);
            while pending.first_key_value().is_some_and(|(s, _)| *s < oldest) {
                pending.pop_first();
            }
        }
        let random = self.next_random();
        if let Ok(mut l) = self.split.lock() {
            l.set_limits(limits);
            l.record_read(name, now_ms, random);
        }
    }

    /// Counts one mutation received for `name` at `now_ms`, under the policy's `limits`;
    /// `in_window` false leaves it out of the [`RateMeter`] (`scope tree`'s window).
    pub fn write(&self, name: &Name, now_ms: u64, limits: LoadLimits, in_window: bool) {
        if in_window {
            self.rate.write(now_ms / 1000);
        }
        let random = self.next_random();
        if let Ok(mut l) = self.split.lock() {
            l.set_limits(limits);
            l.record_write(name, now_ms, random);
        }
    }

    /// What `scope tree` shows: requests over the last [`Load::WINDOW_S`] seconds.
    pub fn window(&self, now_s: u64) -> Load {
        self.rate.load(now_s)
    }

    /// Keeps the peaks of a scope merged into this one ([`ScopeLoad::carry_peak`]).
    pub fn carry_peak(&self, reads_peak: u64, writes_peak: u64, now_ms: u64) {
        if let Ok(mut l) = self.split.lock() {
            l.carry_peak(reads_peak, writes_peak, now_ms);
        }
    }

    /// The retained window of the peaks, ms.
    pub fn peak_window_ms(&self) -> u64 {
        self.split
            .lock()
            .map(|l| l.config().peak_window_ms)
            .unwrap_or_default()
    }

    /// The split decider's load figures at `now_ms`, under the policy's `limits`; `None`
    /// if the lock is poisoned.
    pub fn figures(&self, now_ms: u64, limits: LoadLimits) -> Option<LoadFigures> {
        let mut l = self.split.lock().ok()?;
        l.set_limits(limits);
        Some(l.figures(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn both_meters_count_and_the_random_stream_moves() {
        let m = ReplicaLoad::new(name("/shop"), 7, LoadConfig::default());
        let a = m.next_random();
        let b = m.next_random();
        assert_ne!(a, b);
        let limits = LoadLimits {
            reads_per_s: 10,
            writes_per_s: 10,
        };
        for s in 0..5u64 {
            for i in 0..20 {
                m.read(&name(&format!("/shop/n{i}")), s * 1000 + 10, limits);
            }
            m.write(&name("/shop/x"), s * 1000 + 20, limits, true);
            m.write(&name("/shop/y"), s * 1000 + 30, limits, false);
        }
        assert_eq!(
            m.window(4),
            Load {
                reads: 100,
                writes: 5
            }
        );
        let f = m.figures(5_000, limits).unwrap();
        assert_eq!(f.reads_per_s, 20);
        assert_eq!(f.writes_per_s, 2);
        assert_eq!(f.reads_peak, 20);
        assert!(f.reads_over.is_some());
        assert!(f.writes_over.is_none());
    }

    #[test]
    fn reads_are_reported_once_per_whole_second_and_absorbed_by_the_leader() {
        let follower = ReplicaLoad::new(name("/shop"), 1, LoadConfig::default());
        let limits = LoadLimits {
            reads_per_s: 1000,
            writes_per_s: 1000,
        };
        for (ms, n) in [(10_100, 3), (12_500, 2), (13_200, 1)] {
            for _ in 0..n {
                follower.read(&name("/shop/a"), ms, limits);
            }
        }
        // Seconds 10..13 are whole at 13.5 s; second 13 stays for the next report.
        let r = follower.take_report(13_500).unwrap();
        assert_eq!((r.start_s, r.reads.clone()), (10, vec![3, 0, 2]));
        assert_eq!(r.writes, vec![0, 0, 0]);
        r.validate().unwrap();
        assert!(
            follower.take_report(13_900).is_none(),
            "nothing whole is left"
        );
        let r = follower.take_report(14_000).unwrap();
        assert_eq!((r.start_s, r.reads), (13, vec![1]));
        // The leader counts them as its own.
        let leader = ReplicaLoad::new(name("/shop"), 2, LoadConfig::default());
        let report = FollowerReport {
            start_s: 20,
            reads: vec![40, 40],
            writes: vec![0, 0],
        };
        assert_eq!(leader.absorb(&report, 21_500), 0);
        let f = leader.figures(25_000, limits).unwrap();
        assert_eq!(f.reads_peak, 40);
        // A follower that never reports keeps only the last seconds.
        let quiet = ReplicaLoad::new(name("/shop"), 3, LoadConfig::default());
        for s in 0..200u64 {
            quiet.read(&name("/shop/a"), s * 1000, limits);
        }
        let r = quiet.take_report(200_000).unwrap();
        assert_eq!(r.reads.len(), REPORT_SECONDS_MAX);
    }
}

//! A replica's load meters behind one lock: the [`RateMeter`] behind `scope tree`'s load
//! column and the [`ScopeLoad`] the split decider reads, fed by the request handlers with
//! the anchor's clock and a cheap per-replica random stream for the split-key sampler.
//!
//! A meter that counts a request also puts its scope on the anchor's [`BusyList`]: the loops
//! that sum load (the gossip summary, the followers' load reports) walk that list, not
//! every hosted replica, so 10 000 idle scopes cost them nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proto::load::{FollowerReport, REPORT_SECONDS_MAX};
use proto::msg::Load;
use proto::{Name, ScopeId};

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
    /// The anchor's list of busy scopes and this scope's id in it.
    busy: Option<(ScopeId, Arc<BusyList>)>,
    /// Whether this scope is on the busy list.
    listed: AtomicBool,
    /// The second of the last request counted here (0: none).
    last_s: AtomicU64,
}

/// The scopes of one anchor that counted a request in the last [`Load::WINDOW_S`] seconds
/// or have reads not reported yet: the only ones whose load is not zero. A meter adds its
/// scope when it counts a request ([`ReplicaLoad::read`], [`ReplicaLoad::write`]); the
/// loops that read the list drop a scope gone quiet ([`ReplicaLoad::retire_if_quiet`]).
#[derive(Debug, Default)]
pub struct BusyList {
    ids: Mutex<BTreeSet<ScopeId>>,
}

impl BusyList {
    /// The busy scopes now.
    pub fn ids(&self) -> Vec<ScopeId> {
        self.ids
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Drops `id` (a scope no longer hosted here).
    pub fn remove(&self, id: &ScopeId) {
        if let Ok(mut s) = self.ids.lock() {
            s.remove(id);
        }
    }

    fn insert(&self, id: ScopeId) {
        if let Ok(mut s) = self.ids.lock() {
            s.insert(id);
        }
    }
}

impl ReplicaLoad {
    /// Meters for the scope at `prefix`; `seed` starts the sampler's random stream.
    pub fn new(prefix: Name, seed: u64, config: LoadConfig) -> ReplicaLoad {
        ReplicaLoad {
            rate: RateMeter::default(),
            split: Mutex::new(ScopeLoad::new(prefix, config)),
            random: AtomicU64::new(seed),
            unreported: Mutex::new(BTreeMap::new()),
            busy: None,
            listed: AtomicBool::new(false),
            last_s: AtomicU64::new(0),
        }
    }

    /// These meters put scope `id` on `list` whenever they count a request.
    pub fn listing_on(mut self, id: ScopeId, list: Arc<BusyList>) -> ReplicaLoad {
        self.busy = Some((id, list));
        self
    }

    /// Notes a request counted in second `now_s`: the scope goes on the busy list.
    fn note_busy(&self, now_s: u64) {
        // The second is stored before the flag is read: a concurrent `retire_if_quiet` that
        // cleared the flag either sees this second on its re-check or leaves the flag clear
        // for this swap to find.
        self.last_s.fetch_max(now_s, Ordering::SeqCst);
        if let Some((id, list)) = &self.busy {
            if !self.listed.swap(true, Ordering::SeqCst) {
                list.insert(*id);
            }
        }
    }

    /// Whether a request was counted in the [`Load::WINDOW_S`] seconds up to `now_s`.
    fn busy_lately(&self, now_s: u64) -> bool {
        let last = self.last_s.load(Ordering::SeqCst);
        last != 0 && last + Load::WINDOW_S >= now_s
    }

    /// Takes the scope off the busy list when it counted no request in the last
    /// [`Load::WINDOW_S`] seconds before `now_s` and has no reads left to report; true when
    /// it did.
    pub fn retire_if_quiet(&self, now_s: u64) -> bool {
        let Some((id, list)) = &self.busy else {
            return false;
        };
        let unreported = self.unreported.lock().is_ok_and(|p| !p.is_empty());
        if unreported || self.busy_lately(now_s) {
            return false;
        }
        self.listed.store(false, Ordering::SeqCst);
        list.remove(id);
        // A request counted since the check above put the flag back or finds it clear.
        if self.busy_lately(now_s) && !self.listed.swap(true, Ordering::SeqCst) {
            list.insert(*id);
            return false;
        }
        true
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
        self.note_busy(now_ms / 1000);
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
        self.note_busy(now_ms / 1000);
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
    fn a_scope_is_busy_from_its_first_request_until_quiet_and_reported() {
        let list = Arc::new(BusyList::default());
        let id = ScopeId([5; 16]);
        let m =
            ReplicaLoad::new(name("/shop"), 9, LoadConfig::default()).listing_on(id, list.clone());
        let limits = LoadLimits {
            reads_per_s: 100,
            writes_per_s: 100,
        };
        assert!(list.ids().is_empty(), "no request, not busy");
        m.read(&name("/shop/a"), 100_500, limits);
        m.read(&name("/shop/b"), 100_600, limits);
        assert_eq!(list.ids(), vec![id]);
        // Unreported reads keep it listed even after the window.
        assert!(!m.retire_if_quiet(100 + Load::WINDOW_S + 5));
        assert!(m.take_report(101_000).is_some());
        // Within the window it stays; after it, it goes.
        assert!(!m.retire_if_quiet(100 + Load::WINDOW_S));
        assert!(m.retire_if_quiet(100 + Load::WINDOW_S + 1));
        assert!(list.ids().is_empty());
        // A write lists it again, once.
        m.write(&name("/shop/c"), 200_000, limits, true);
        m.write(&name("/shop/c"), 200_100, limits, false);
        assert_eq!(list.ids(), vec![id]);
        // Meters with no list are never listed and never retire.
        let loose = ReplicaLoad::new(name("/x"), 1, LoadConfig::default());
        loose.write(&name("/x/a"), 1_000, limits, true);
        assert!(!loose.retire_if_quiet(1_000_000));
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

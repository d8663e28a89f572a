//! A rate meter: per-scope request counts over a sliding window, for `anchorage scope tree`
//! and, later, for deciding when to split a scope. Pure: the caller passes the time in whole
//! seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proto::msg::Load;

const WINDOW: usize = Load::WINDOW_S as usize;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    second: u64,
    reads: u64,
    writes: u64,
}

/// Reads and writes seen in each of the last [`Load::WINDOW_S`] seconds.
#[derive(Debug, Default)]
pub struct RateMeter {
    buckets: Mutex<[Bucket; WINDOW]>,
    /// The last second anything was counted (read without the lock: an idle scope's load
    /// is known to be zero without locking, which matters when an anchor sums the load of
    /// thousands of idle scopes every second).
    last_s: AtomicU64,
}

impl RateMeter {
    fn bump(&self, now_s: u64, read: bool) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        let b = &mut buckets[(now_s % WINDOW as u64) as usize];
        if b.second != now_s {
            *b = Bucket {
                second: now_s,
                ..Bucket::default()
            };
        }
        if read {
            b.reads += 1;
        } else {
            b.writes += 1;
        }
        self.last_s.fetch_max(now_s, Ordering::Relaxed);
    }

    /// Counts one resolve at second `now_s`.
    pub fn read(&self, now_s: u64) {
        self.bump(now_s, true);
    }

    /// Counts one mutation at second `now_s`.
    pub fn write(&self, now_s: u64) {
        self.bump(now_s, false);
    }

    /// What the window ending at `now_s` holds.
    pub fn load(&self, now_s: u64) -> Load {
        if self.last_s.load(Ordering::Relaxed) + (WINDOW as u64) <= now_s {
            return Load::default();
        }
        let Ok(buckets) = self.buckets.lock() else {
            return Load::default();
        };
        buckets
            .iter()
            .filter(|b| b.second + (WINDOW as u64) > now_s && b.second <= now_s)
            .fold(Load::default(), |l, b| Load {
                reads: l.reads + b.reads,
                writes: l.writes + b.writes,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_out_of_the_window() {
        let m = RateMeter::default();
        m.read(100);
        m.read(100);
        m.write(105);
        assert_eq!(
            m.load(105),
            Load {
                reads: 2,
                writes: 1
            }
        );
        assert_eq!(
            m.load(109),
            Load {
                reads: 2,
                writes: 1
            }
        );
        assert_eq!(
            m.load(110),
            Load {
                reads: 0,
                writes: 1
            }
        );
        // A bucket reused ten seconds later starts from zero.
        m.read(110);
        assert_eq!(
            m.load(110),
            Load {
                reads: 1,
                writes: 1
            }
        );
        assert_eq!(m.load(200), Load::default());
    }
}

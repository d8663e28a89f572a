//! The one wall clock, shared by the anchor and the resolver, so that tests can drive time.
//!
//! Wall-clock time (milliseconds since the Unix epoch) is what mutations carry (their
//! expiry), what replay protection and change history are pruned by, and what answers'
//! ages are measured in. Every module that needs it takes a [`SharedClock`] instead of
//! reading `SystemTime`: [`SystemClock`] in production, [`ManualClock`] in a test that wants
//! to move time by hand. Durations and deadlines (timeouts, retry pauses, intervals) use
//! tokio's monotonic time, which a test pauses and advances with `tokio::time::pause`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn unix_s(&self) -> u64 {
        self.unix_ms() / 1000
    }
}

/// A clock that any number of tasks share.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock. A clock set before 1970 reads as 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The machine's clock, shared: every call returns the same one, so configurations that
/// hold it compare equal.
pub fn system() -> SharedClock {
    static SYSTEM: LazyLock<SharedClock> = LazyLock::new(|| Arc::new(SystemClock));
    SYSTEM.clone()
}

/// A clock that moves only when told to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `unix_ms` until moved.
    pub fn new(unix_ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            ms: AtomicU64::new(unix_ms),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock (also backwards, to test a clock that jumps).
    pub fn set(&self, unix_ms: u64) {
        self.ms.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5_000);
        assert_eq!(c.unix_ms(), 5_000);
        assert_eq!(c.unix_s(), 5);
        c.advance(Duration::from_millis(1_500));
        assert_eq!(c.unix_ms(), 6_500);
        c.set(10);
        assert_eq!(c.unix_ms(), 10);
        let shared: SharedClock = c;
        assert_eq!(shared.unix_ms(), 10);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(system().unix_ms() > 1_577_836_800_000);
        assert!(Arc::ptr_eq(&system(), &system()));
    }
}

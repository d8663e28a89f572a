//! When to dial an anchor this anchor should be connected to (its `join` list, and anchors
//! it hears of in summaries): at once, then with a doubling backoff while it stays
//! unconnected, and at once again after a connection was seen. Pure.

use std::collections::HashMap;

/// First wait after a dial that did not connect, ms.
pub const BACKOFF_MIN_MS: u64 = 1_000;
/// Longest wait between dials, ms.
pub const BACKOFF_MAX_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug)]
struct Attempt {
    next_ms: u64,
    backoff_ms: u64,
    count: u32,
}

/// Dial schedule per peer.
#[derive(Clone, Debug, Default)]
pub struct Redial {
    peers: HashMap<String, Attempt>,
}

impl Redial {
    /// `Some(n)` when `peer` should be dialled now, for the `n`th time since it was last
    /// connected (1 = first); records the attempt. A connected peer is never dialled, and
    /// its next dial after a disconnection happens at once.
    pub fn due(&mut self, peer: &str, connected: bool, now_ms: u64) -> Option<u32> {
        if connected {
            self.peers.remove(peer);
            return None;
        }
        match self.peers.get_mut(peer) {
            None => {
                self.peers.insert(
                    peer.to_string(),
                    Attempt {
                        next_ms: now_ms + BACKOFF_MIN_MS,
                        backoff_ms: BACKOFF_MIN_MS,
                        count: 1,
                    },
                );
                Some(1)
            }
            Some(a) if now_ms >= a.next_ms => {
                a.backoff_ms = (a.backoff_ms * 2).min(BACKOFF_MAX_MS);
                a.next_ms = now_ms + a.backoff_ms;
                a.count = a.count.saturating_add(1);
                Some(a.count)
            }
            Some(_) => None,
        }
    }

    /// The pause before the next dial of `peer`, ms (0 when none is planned).
    pub fn backoff_ms(&self, peer: &str) -> u64 {
        self.peers.get(peer).map_or(0, |a| a.backoff_ms)
    }

    /// Forgets peers not in `keep` (expired from the book, say).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.peers.retain(|p, _| keep(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_while_unconnected_and_resets_on_connection() {
        let mut r = Redial::default();
        assert_eq!(r.due("a", false, 0), Some(1));
        assert_eq!(r.due("a", false, 999), None);
        assert_eq!(r.due("a", false, 1_000), Some(2));
        assert_eq!(r.due("a", false, 2_999), None);
        assert_eq!(r.due("a", false, 3_000), Some(3), "then 2 s");
        assert_eq!(r.due("a", false, 7_000), Some(4), "then 4 s");
        assert_eq!(r.backoff_ms("a"), 8_000);
        let mut t = 7_000;
        for _ in 0..10 {
            t += BACKOFF_MAX_MS;
            assert!(r.due("a", false, t).is_some(), "capped at 30 s");
        }
        assert_eq!(r.backoff_ms("a"), BACKOFF_MAX_MS);
        assert_eq!(r.due("a", true, t + 1), None);
        assert_eq!(
            r.due("a", false, t + 2),
            Some(1),
            "at once after a disconnection"
        );
        r.retain(|p| p != "a");
        assert_eq!(r.due("a", false, t + 3), Some(1));
    }
}

//! [`PeerBook`]: what this anchor believes about the load of every anchor it hears from
//! (itself included), from their gossiped summaries. Pure: time comes in as an argument.
//!
//! A summary replaces an older one of the same anchor (by its sequence number) and lives
//! for `expire_intervals` of its sender's publishing interval after it was received; the
//! book holds at most `capacity` anchors. The rebalancer reads [`PeerBook::live`] and
//! [`PeerBook::mean`].

use std::collections::BTreeMap;

use proto::gossip::LoadSummary;
use proto::limits::SUMMARY_INTERVAL_MS_MAX;

/// One anchor's latest summary and when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// The summary.
    pub summary: LoadSummary,
    /// When this anchor received it (its own clock), ms.
    pub received_ms: u64,
}

impl PeerEntry {
    /// How old the entry is at `now_ms`.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.received_ms)
    }
}

/// What [`PeerBook::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// First summary of this anchor (or the first since its last one expired).
    New,
    /// Replaced an older summary.
    Updated,
    /// Not newer than the one held: ignored.
    Stale,
    /// The book is full of live anchors: ignored.
    Full,
}

impl Insert {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Insert::New => "new",
            Insert::Updated => "updated",
            Insert::Stale => "stale",
            Insert::Full => "book_full",
        }
    }
}

/// Mean figures over the live anchors of a [`PeerBook`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanLoad {
    /// Anchors averaged.
    pub anchors: usize,
    /// CPU, thousandths of a core.
    pub cpu_millicores: f64,
    /// Resident memory, bytes.
    pub mem_bytes: f64,
    /// Free disk, bytes.
    pub disk_free_bytes: f64,
    /// Scope replicas hosted.
    pub scopes: f64,
    /// Scopes led.
    pub leaderships: f64,
    /// Reads per second.
    pub reads_per_s: f64,
    /// Writes per second.
    pub writes_per_s: f64,
}

/// The load summaries of the anchors this anchor hears from. Cheap to clone (a few hundred
/// bytes per anchor).
#[derive(Clone, Debug)]
pub struct PeerBook {
    entries: BTreeMap<String, PeerEntry>,
    expire_intervals: u32,
    capacity: usize,
}

impl PeerBook {
    /// An empty book: summaries expire after `expire_intervals` of their sender's interval;
    /// at most `capacity` anchors.
    pub fn new(expire_intervals: u32, capacity: usize) -> PeerBook {
        PeerBook {
            entries: BTreeMap::new(),
            expire_intervals: expire_intervals.max(1),
            capacity,
        }
    }

    /// When `e` expires, ms.
    pub fn expires_at_ms(&self, e: &PeerEntry) -> u64 {
        let interval = u64::from(e.summary.interval_ms).min(SUMMARY_INTERVAL_MS_MAX);
        e.received_ms
            .saturating_add(interval.saturating_mul(u64::from(self.expire_intervals)))
    }

    fn is_live(&self, e: &PeerEntry, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms(e)
    }

    /// Takes a (checked) summary received at `now_ms`.
    pub fn insert(&mut self, summary: LoadSummary, now_ms: u64) -> Insert {
        let outcome = match self.entries.get(&summary.anchor) {
            Some(held) if self.is_live(held, now_ms) => {
                if summary.seq <= held.summary.seq {
                    return Insert::Stale;
                }
                Insert::Updated
            }
            Some(_) => Insert::New,
            None => {
                if self.entries.len() >= self.capacity {
                    self.expire(now_ms);
                    if self.entries.len() >= self.capacity {
                        return Insert::Full;
                    }
                }
                Insert::New
            }
        };
        self.entries.insert(
            summary.anchor.clone(),
            PeerEntry {
                summary,
                received_ms: now_ms,
            },
        );
        outcome
    }

    /// Drops every summary expired at `now_ms`; returns the anchors dropped.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .entries
            .values()
            .filter(|e| !self.is_live(e, now_ms))
            .map(|e| e.summary.anchor.clone())
            .collect();
        for g in &gone {
            self.entries.remove(g);
        }
        gone
    }

    /// The live entries at `now_ms`, by peer id.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &PeerEntry> + '_ {
        self.entries
            .values()
            .filter(move |e| self.is_live(e, now_ms))
    }

    /// One anchor's live entry.
    pub fn get(&self, anchor: &str, now_ms: u64) -> Option<&PeerEntry> {
        self.entries.get(anchor).filter(|e| self.is_live(e, now_ms))
    }

    /// The live anchors carrying every label of `required` (a placement policy's
    /// `[placement.labels]`), by peer id.
    pub fn satisfying<'a>(
        &'a self,
        required: &'a BTreeMap<String, String>,
        now_ms: u64,
    ) -> impl Iterator<Item = &'a PeerEntry> + 'a {
        self.live(now_ms).filter(move |e| {
            required
                .iter()
                .all(|(k, v)| e.summary.labels.get(k) == Some(v))
        })
    }

    /// Entries held (live or not yet expired by [`PeerBook::expire`]).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Mean figures over the live anchors, `None` when there is none.
    pub fn mean(&self, now_ms: u64) -> Option<MeanLoad> {
        let live: Vec<&LoadSummary> = self.live(now_ms).map(|e| &e.summary).collect();
        if live.is_empty() {
            return None;
        }
        let n = live.len() as f64;
        let avg = |f: fn(&LoadSummary) -> f64| live.iter().map(|s| f(s)).sum::<f64>() / n;
        Some(MeanLoad {
            anchors: live.len(),
            cpu_millicores: avg(|s| f64::from(s.cpu_millicores)),
            mem_bytes: avg(|s| s.mem_bytes as f64),
            disk_free_bytes: avg(|s| s.disk_free_bytes as f64),
            scopes: avg(|s| f64::from(s.scopes)),
            leaderships: avg(|s| f64::from(s.leaderships)),
            reads_per_s: avg(|s| s.reads_per_s as f64),
            writes_per_s: avg(|s| s.writes_per_s as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(anchor: &str, seq: u64, scopes: u32, cpu: u32) -> LoadSummary {
        LoadSummary {
            anchor: anchor.into(),
            seq,
            sent_at_ms: 0,
            interval_ms: 1_000,
            cpu_millicores: cpu,
            cores: 2,
            mem_bytes: 100,
            disk_free_bytes: 10,
            disk_total_bytes: 20,
            scopes,
            leaderships: 0,
            reads_per_s: u64::from(scopes) * 10,
            writes_per_s: 0,
            hot: vec![],
            labels: Default::default(),
            addrs: vec![],
        }
    }

    #[test]
    fn newer_summaries_replace_older_ones() {
        let mut b = PeerBook::new(3, 10);
        assert_eq!(b.insert(summary("a", 5, 1, 0), 0), Insert::New);
        assert_eq!(b.insert(summary("a", 5, 2, 0), 10), Insert::Stale);
        assert_eq!(b.insert(summary("a", 4, 2, 0), 10), Insert::Stale);
        assert_eq!(b.insert(summary("a", 6, 2, 0), 20), Insert::Updated);
        assert_eq!(b.get("a", 20).unwrap().summary.scopes, 2);
        assert_eq!(b.get("a", 20).unwrap().received_ms, 20);
    }

    #[test]
    fn summaries_expire_after_three_intervals() {
        let mut b = PeerBook::new(3, 10);
        b.insert(summary("a", 1, 1, 0), 1_000);
        b.insert(summary("b", 1, 1, 0), 2_000);
        assert_eq!(b.live(3_999).count(), 2);
        assert_eq!(
            b.live(4_000).count(),
            1,
            "a expires 3 intervals after receipt"
        );
        assert!(b.get("a", 4_000).is_none());
        assert_eq!(b.expire(4_000), vec!["a".to_string()]);
        assert_eq!(b.len(), 1);
        // After expiry, even a summary with a lower sequence number (a restarted anchor
        // with a clock set back) is taken.
        assert_eq!(b.insert(summary("a", 0, 1, 0), 4_000), Insert::New);
        assert_eq!(b.expire(5_000), vec!["b".to_string()]);
    }

    #[test]
    fn the_book_is_bounded() {
        let mut b = PeerBook::new(3, 2);
        assert_eq!(b.insert(summary("a", 1, 1, 0), 0), Insert::New);
        assert_eq!(b.insert(summary("b", 1, 1, 0), 0), Insert::New);
        assert_eq!(b.insert(summary("c", 1, 1, 0), 100), Insert::Full);
        assert_eq!(b.insert(summary("a", 2, 1, 0), 100), Insert::Updated);
        // Once b has expired, c finds room.
        assert_eq!(b.insert(summary("c", 1, 1, 0), 3_000), Insert::New);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn mean_covers_live_anchors_only() {
        let mut b = PeerBook::new(3, 10);
        assert!(b.mean(0).is_none());
        b.insert(summary("a", 1, 2, 100), 0);
        b.insert(summary("b", 1, 4, 300), 2_000);
        let m = b.mean(2_000).unwrap();
        assert_eq!(m.anchors, 2);
        assert_eq!(m.scopes, 3.0);
        assert_eq!(m.cpu_millicores, 200.0);
        assert_eq!(m.reads_per_s, 30.0);
        let m = b.mean(3_000).unwrap();
        assert_eq!((m.anchors, m.scopes), (1, 4.0));
    }

    #[test]
    fn placement_labels_select_anchors() {
        let mut b = PeerBook::new(3, 10);
        let mut eu = summary("eu", 1, 1, 0);
        eu.labels.insert("jurisdiction".into(), "eu".into());
        eu.labels.insert("zone".into(), "a".into());
        b.insert(eu, 0);
        b.insert(summary("us", 1, 1, 0), 0);
        let want: BTreeMap<String, String> = [("jurisdiction".into(), "eu".into())].into();
        let got: Vec<&str> = b
            .satisfying(&want, 0)
            .map(|e| e.summary.anchor.as_str())
            .collect();
        assert_eq!(got, vec!["eu"]);
        assert_eq!(b.satisfying(&BTreeMap::new(), 0).count(), 2);
        assert_eq!(b.satisfying(&want, 3_000).count(), 0, "expired");
    }
}

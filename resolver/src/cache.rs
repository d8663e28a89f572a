//! The answer cache behind [`ReadLevel::Cached`](proto::ReadLevel::Cached): record sets kept
//! for their TTL, at most `entries_max` of them, least recently used evicted first.
//!
//! It never reads a clock: every method that needs the time takes `now` from the caller, so
//! expiry is tested by passing instants, not by waiting.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proto::{Name, RecordSet};

struct Entry {
    set: RecordSet,
    expires_at: Instant,
    /// Position in [`Cache::recency`]; larger is more recent.
    used: u64,
}

/// A bounded TTL cache of record sets, keyed by name.
pub struct Cache {
    entries_max: usize,
    entries: HashMap<Name, Entry>,
    /// Use counter → name, oldest first: the eviction order.
    recency: BTreeMap<u64, Name>,
    next_use: u64,
}

impl Cache {
    /// A cache holding at most `entries_max` record sets (0 disables caching).
    pub fn new(entries_max: usize) -> Cache {
        Cache {
            entries_max,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_use: 0,
        }
    }

    /// The record set of `name` if it is cached and its TTL has not run out at `now`.
    /// An expired entry is dropped.
    pub fn get(&mut self, name: &Name, now: Instant) -> Option<RecordSet> {
        let entry = self.entries.get(name)?;
        if now >= entry.expires_at {
            self.remove(name);
            return None;
        }
        let (old, new) = (entry.used, self.bump());
        self.recency.remove(&old);
        self.recency.insert(new, name.clone());
        let entry = self.entries.get_mut(name)?;
        entry.used = new;
        Some(entry.set.clone())
    }

    /// Caches `set` for `name` until `now + set.ttl_s`, replacing any older entry and evicting
    /// the least recently used one when full. A TTL of 0 caches nothing.
    pub fn insert(&mut self, name: Name, set: RecordSet, now: Instant) {
        if self.entries_max == 0 || set.ttl_s == 0 {
            self.remove(&name);
            return;
        }
        self.remove(&name);
        if self.entries.len() >= self.entries_max {
            self.evict(now);
        }
        let used = self.bump();
        let expires_at = now + Duration::from_secs(u64::from(set.ttl_s));
        self.recency.insert(used, name.clone());
        self.entries.insert(
            name,
            Entry {
                set,
                expires_at,
                used,
            },
        );
        debug_assert_eq!(self.entries.len(), self.recency.len());
        debug_assert!(self.entries.len() <= self.entries_max);
    }

    /// Drops the entry of `name`, if any.
    pub fn remove(&mut self, name: &Name) {
        if let Some(entry) = self.entries.remove(name) {
            self.recency.remove(&entry.used);
        }
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.recency.clear();
    }

    /// Drops every entry whose TTL has run out at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        let expired: Vec<Name> = self
            .entries
            .iter()
            .filter(|(_, e)| now >= e.expires_at)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &expired {
            self.remove(name);
        }
    }

    /// Entries held, expired ones included until they are touched or purged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room for one entry: expired entries first, else the least recently used.
    fn evict(&mut self, now: Instant) {
        self.purge_expired(now);
        if self.entries.len() < self.entries_max {
            return;
        }
        if let Some((_, oldest)) = self.recency.pop_first() {
            self.entries.remove(&oldest);
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.entries.len())
            .field("entries_max", &self.entries_max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Record;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn set(ttl_s: u32, version: u64) -> RecordSet {
        RecordSet {
            records: vec![Record::Text(format!("v{version}"))],
            ttl_s,
            version,
            writer: [0; 32],
        }
    }

    #[test]
    fn entry_is_served_until_its_ttl_runs_out() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8);
        cache.insert(name("/a"), set(10, 1), t0);
        assert_eq!(cache.get(&name("/a"), t0).unwrap().version, 1);
        let almost = t0 + Duration::from_millis(9_999);
        assert_eq!(cache.get(&name("/a"), almost).unwrap().version, 1);
        assert!(cache
            .get(&name("/a"), t0 + Duration::from_secs(10))
            .is_none());
        assert!(cache.is_empty(), "an expired entry is dropped when touched");
    }

    #[test]
    fn zero_ttl_or_zero_capacity_caches_nothing() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8);
        cache.insert(name("/a"), set(0, 1), t0);
        assert!(cache.get(&name("/a"), t0).is_none());
        let mut off = Cache::new(0);
        off.insert(name("/a"), set(10, 1), t0);
        assert!(off.get(&name("/a"), t0).is_none());
    }

    #[test]
    fn full_cache_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let mut cache = Cache::new(2);
        cache.insert(name("/a"), set(60, 1), t0);
        cache.insert(name("/b"), set(60, 2), t0);
        assert!(
            cache.get(&name("/a"), t0).is_some(),
            "touch /a: /b is now oldest"
        );
        cache.insert(name("/c"), set(60, 3), t0);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&name("/b"), t0).is_none());
        assert!(cache.get(&name("/a"), t0).is_some());
        assert!(cache.get(&name("/c"), t0).is_some());
    }

    #[test]
    fn full_cache_evicts_expired_entries_before_live_ones() {
        let t0 = Instant::now();
        let mut cache = Cache::new(2);
        cache.insert(name("/short"), set(1, 1), t0);
        cache.insert(name("/long"), set(60, 2), t0);
        assert!(
            cache.get(&name("/short"), t0).is_some(),
            "/long is now the LRU"
        );
        let later = t0 + Duration::from_secs(2);
        cache.insert(name("/new"), set(60, 3), later);
        assert!(cache.get(&name("/long"), later).is_some());
        assert!(cache.get(&name("/new"), later).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn reinserting_replaces_without_growing() {
        let t0 = Instant::now();
        let mut cache = Cache::new(2);
        cache.insert(name("/a"), set(60, 1), t0);
        cache.insert(name("/a"), set(60, 2), t0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&name("/a"), t0).unwrap().version, 2);
        cache.remove(&name("/a"));
        assert!(cache.is_empty());
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let t0 = Instant::now();
        let mut cache = Cache::new(4);
        cache.insert(name("/a"), set(1, 1), t0);
        cache.insert(name("/b"), set(5, 2), t0);
        cache.purge_expired(t0 + Duration::from_secs(2));
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&name("/b"), t0).is_some());
    }
}

//! The client's two caches, both bounded, least-recently-used, and expiring by TTL:
//!
//! - [`Cache`]: answers (record sets) behind [`ReadLevel::Cached`](proto::ReadLevel::Cached),
//!   kept for the record set's TTL;
//! - [`ReferralCache`]: referrals to child scopes, kept for the referral's `ttl_s`, looked up
//!   by the deepest prefix above a name (where a walk starts).
//!
//! Neither reads a clock: every method that needs the time takes `now` from the caller, so
//! expiry is tested by passing instants, not by waiting. Both are built on [`Lru`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use proto::{Name, RecordSet, Referral};

struct Entry<V> {
    value: V,
    expires_at: Instant,
    /// Position in [`Lru::recency`]; larger is more recent.
    used: u64,
}

/// A bounded map whose entries expire: at most `entries_max` of them, the least recently
/// used evicted first (expired ones before any live one).
pub struct Lru<K, V> {
    entries_max: usize,
    entries: HashMap<K, Entry<V>>,
    /// Use counter → key, oldest first: the eviction order.
    recency: BTreeMap<u64, K>,
    next_use: u64,
}

impl<K: Clone + Eq + Hash, V: Clone> Lru<K, V> {
    /// A map holding at most `entries_max` entries (0 disables it).
    pub fn new(entries_max: usize) -> Lru<K, V> {
        Lru {
            entries_max,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_use: 0,
        }
    }

    /// The value of `key` if present and unexpired at `now` (it becomes the most recently
    /// used). An expired entry is dropped.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        let entry = self.entries.get(key)?;
        if now >= entry.expires_at {
            self.remove(key);
            return None;
        }
        let (old, new) = (entry.used, self.bump());
        self.recency.remove(&old);
        self.recency.insert(new, key.clone());
        let entry = self.entries.get_mut(key)?;
        entry.used = new;
        Some(entry.value.clone())
    }

    /// Keeps `value` for `key` until `now + ttl`, replacing any older entry and evicting the
    /// least recently used one when full. A zero `ttl` keeps nothing (and drops `key`).
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        self.remove(&key);
        if self.entries_max == 0 || ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.entries_max {
            self.evict(now);
        }
        let used = self.bump();
        self.recency.insert(used, key.clone());
        let expires_at = now + ttl;
        self.entries.insert(
            key,
            Entry {
                value,
                expires_at,
                used,
            },
        );
        debug_assert_eq!(self.entries.len(), self.recency.len());
        debug_assert!(self.entries.len() <= self.entries_max);
    }

    /// Drops the entry of `key`, if any.
    pub fn remove(&mut self, key: &K) {
        if let Some(entry) = self.entries.remove(key) {
            self.recency.remove(&entry.used);
        }
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.recency.clear();
    }

    /// True if `key` has an entry (expired or not), without making it recently used.
    pub fn holds(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Drops every entry whose TTL has run out at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        let expired: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, e)| now >= e.expires_at)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.remove(key);
        }
    }

    /// Entries held, expired ones included until they are touched or purged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
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

impl<K, V> std::fmt::Debug for Lru<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru")
            .field("entries", &self.entries.len())
            .field("entries_max", &self.entries_max)
            .finish()
    }
}

/// A bounded TTL cache of record sets, keyed by name.
#[derive(Debug)]
pub struct Cache {
    lru: Lru<Name, RecordSet>,
}

impl Cache {
    /// A cache holding at most `entries_max` record sets (0 disables caching).
    pub fn new(entries_max: usize) -> Cache {
        Cache {
            lru: Lru::new(entries_max),
        }
    }

    /// The record set of `name` if it is cached and its TTL has not run out at `now`.
    /// An expired entry is dropped.
    pub fn get(&mut self, name: &Name, now: Instant) -> Option<RecordSet> {
        self.lru.get(name, now)
    }

    /// Caches `set` for `name` until `now + set.ttl_s`, replacing any older entry and evicting
    /// the least recently used one when full. A TTL of 0 caches nothing.
    pub fn insert(&mut self, name: Name, set: RecordSet, now: Instant) {
        let ttl = Duration::from_secs(u64::from(set.ttl_s));
        self.lru.insert(name, set, ttl, now);
    }

    /// Drops the entry of `name`, if any.
    pub fn remove(&mut self, name: &Name) {
        self.lru.remove(name);
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.lru.clear();
    }

    /// Drops every entry whose TTL has run out at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        self.lru.purge_expired(now);
    }

    /// Entries held, expired ones included until they are touched or purged.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }
}

/// A bounded TTL cache of referrals, keyed by the child scope's prefix and, for a scope born
/// from a range split, its range's start: a prefix may have a referral for its whole subtree
/// and others for ranges of it.
#[derive(Debug)]
pub struct ReferralCache {
    lru: Lru<(Name, Option<Name>), Referral>,
    /// The range starts cached per prefix, to find the range that holds a name. Entries whose
    /// referral expired or was evicted are dropped when a lookup meets them, and all of them
    /// when the index outgrows the cache.
    ranges: BTreeMap<Name, BTreeSet<Name>>,
    entries_max: usize,
}

impl ReferralCache {
    /// A cache holding at most `entries_max` referrals (0 disables it: every walk starts at
    /// the root).
    pub fn new(entries_max: usize) -> ReferralCache {
        ReferralCache {
            lru: Lru::new(entries_max),
            ranges: BTreeMap::new(),
            entries_max,
        }
    }

    /// The unexpired referral that lies deepest on the way to `name`: the longest prefix that
    /// is an ancestor of `name` or `name` itself, and at one prefix a range that holds `name`
    /// before the whole subtree (the range was split off the scope the subtree referral
    /// leads to, so it is nearer).
    pub fn deepest(&mut self, name: &Name, now: Instant) -> Option<Referral> {
        let mut at = Some(name.clone());
        while let Some(prefix) = at {
            if let Some(r) = self.range_holding(&prefix, name, now) {
                return Some(r);
            }
            if prefix.is_root() {
                return None;
            }
            if let Some(r) = self.lru.get(&(prefix.clone(), None), now) {
                return Some(r);
            }
            at = prefix.parent();
        }
        None
    }

    /// The cached range referral of `prefix` that holds `name`.
    fn range_holding(&mut self, prefix: &Name, name: &Name, now: Instant) -> Option<Referral> {
        let boundary = proto::KeyRange::boundary(prefix, name)?;
        let starts = self.ranges.get(prefix)?;
        // Ranges of one prefix are disjoint: the one holding `name` starts at the greatest
        // start not after it. A stale entry (expired, evicted) is dropped and the next tried.
        let candidates: Vec<Name> = starts.range(..=boundary).rev().take(4).cloned().collect();
        for start in candidates {
            match self.lru.get(&(prefix.clone(), Some(start.clone())), now) {
                Some(r) if r.covers(name) => return Some(r),
                Some(_) => return None,
                None => self.forget_range(prefix, &start),
            }
        }
        None
    }

    fn forget_range(&mut self, prefix: &Name, start: &Name) {
        if let Some(starts) = self.ranges.get_mut(prefix) {
            starts.remove(start);
            if starts.is_empty() {
                self.ranges.remove(prefix);
            }
        }
    }

    /// The referral for exactly `prefix` (its whole subtree), if cached and unexpired.
    pub fn get(&mut self, prefix: &Name, now: Instant) -> Option<Referral> {
        self.lru.get(&(prefix.clone(), None), now)
    }

    /// Caches `referral` until `now + referral.ttl_s` (a TTL of 0 caches nothing).
    pub fn insert(&mut self, referral: Referral, now: Instant) {
        let ttl = Duration::from_secs(u64::from(referral.ttl_s));
        let key = (referral.prefix.clone(), referral.range.start.clone());
        if let Some(start) = &referral.range.start {
            if !ttl.is_zero() && self.entries_max > 0 {
                self.ranges
                    .entry(referral.prefix.clone())
                    .or_default()
                    .insert(start.clone());
            }
        }
        self.lru.insert(key, referral, ttl, now);
        let indexed: usize = self.ranges.values().map(BTreeSet::len).sum();
        if indexed > 2 * self.entries_max + 16 {
            let lru = &self.lru;
            self.ranges.retain(|prefix, starts| {
                starts.retain(|s| lru.holds(&(prefix.clone(), Some(s.clone()))));
                !starts.is_empty()
            });
        }
    }

    /// Drops `referral`'s entry (the subtree or range it names), if any.
    pub fn remove(&mut self, referral_prefix: &Name, start: Option<&Name>) {
        self.lru.remove(&(referral_prefix.clone(), start.cloned()));
        if let Some(s) = start {
            self.forget_range(referral_prefix, s);
        }
    }

    /// Drops every referral.
    pub fn clear(&mut self) {
        self.lru.clear();
        self.ranges.clear();
    }

    /// Referrals held.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
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

    fn referral(prefix: &str, ttl_s: u32) -> Referral {
        Referral {
            scope: proto::ScopeId::derive(&[prefix.as_bytes()]),
            prefix: name(prefix),
            epoch: 1,
            members: vec![],
            ttl_s,
            range: proto::KeyRange::all(),
        }
    }

    fn range_referral(prefix: &str, start: Option<&str>, end: Option<&str>) -> Referral {
        let mut r = referral(prefix, 60);
        r.scope = proto::ScopeId::derive(&[prefix.as_bytes(), start.unwrap_or("").as_bytes()]);
        r.range = proto::KeyRange {
            start: start.map(name),
            end: end.map(name),
        };
        r
    }

    #[test]
    fn a_range_that_holds_the_name_is_nearer_than_its_prefix() {
        let t0 = Instant::now();
        let mut refs = ReferralCache::new(8);
        refs.insert(referral("/users", 60), t0);
        refs.insert(
            range_referral("/users", Some("/users/m"), Some("/users/t")),
            t0,
        );
        refs.insert(range_referral("/users", Some("/users/t"), None), t0);
        refs.insert(referral("/users/n/deep", 60), t0);
        let at = |s: &str, refs: &mut ReferralCache| {
            let r = refs.deepest(&name(s), t0).unwrap();
            (r.prefix.to_string(), r.range.start.map(|n| n.to_string()))
        };
        assert_eq!(at("/users/a", &mut refs), ("/users".into(), None));
        assert_eq!(at("/users", &mut refs), ("/users".into(), None));
        assert_eq!(
            at("/users/m", &mut refs),
            ("/users".into(), Some("/users/m".into()))
        );
        assert_eq!(
            at("/users/q/x", &mut refs),
            ("/users".into(), Some("/users/m".into()))
        );
        assert_eq!(
            at("/users/z", &mut refs),
            ("/users".into(), Some("/users/t".into()))
        );
        assert_eq!(
            at("/users/n/deep/x", &mut refs),
            ("/users/n/deep".into(), None),
            "a deeper subtree beats a range of a shallower prefix"
        );
        refs.remove(&name("/users"), Some(&name("/users/t")));
        assert_eq!(at("/users/z", &mut refs), ("/users".into(), None));
        // The root's ranges count too (the root's own referral is never cached).
        refs.insert(range_referral("/", Some("/k"), None), t0);
        assert_eq!(at("/zz", &mut refs), ("/".into(), Some("/k".into())));
        assert!(refs.deepest(&name("/a"), t0).is_none());
    }

    #[test]
    fn the_range_index_stays_bounded() {
        let t0 = Instant::now();
        let mut refs = ReferralCache::new(2);
        for i in 0..100 {
            let start = format!("/r/k{i:03}");
            refs.insert(range_referral("/r", Some(&start), None), t0);
        }
        assert_eq!(refs.len(), 2);
        let indexed: usize = refs.ranges.values().map(BTreeSet::len).sum();
        assert!(indexed <= 2 * 2 + 16, "{indexed} range starts indexed");
    }

    #[test]
    fn deepest_referral_above_a_name_is_found_and_expires() {
        let t0 = Instant::now();
        let mut refs = ReferralCache::new(8);
        refs.insert(referral("/eu", 10), t0);
        refs.insert(referral("/eu/payments", 5), t0);
        refs.insert(referral("/us", 10), t0);
        let api = name("/eu/payments/api");
        assert_eq!(refs.deepest(&api, t0).unwrap().prefix, name("/eu/payments"));
        assert_eq!(
            refs.deepest(&name("/eu/payments"), t0).unwrap().prefix,
            name("/eu/payments"),
            "a referral for the name itself counts"
        );
        assert_eq!(
            refs.deepest(&name("/eu/x"), t0).unwrap().prefix,
            name("/eu")
        );
        assert!(refs.deepest(&name("/asia/x"), t0).is_none());
        assert!(refs.deepest(&Name::root(), t0).is_none());
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            refs.deepest(&api, later).unwrap().prefix,
            name("/eu"),
            "the expired child falls back to its parent's referral"
        );
        assert!(refs.deepest(&api, t0 + Duration::from_secs(10)).is_none());
        refs.insert(referral("/eu", 0), t0);
        assert!(
            refs.get(&name("/eu"), t0).is_none(),
            "a TTL of 0 caches nothing (and replaces the older entry)"
        );
    }

    #[test]
    fn referral_cache_is_bounded_lru() {
        let t0 = Instant::now();
        let mut refs = ReferralCache::new(2);
        refs.insert(referral("/a", 60), t0);
        refs.insert(referral("/b", 60), t0);
        assert!(refs.get(&name("/a"), t0).is_some());
        refs.insert(referral("/c", 60), t0);
        assert_eq!(refs.len(), 2);
        assert!(
            refs.get(&name("/b"), t0).is_none(),
            "/b was least recently used"
        );
        refs.remove(&name("/a"), None);
        refs.clear();
        assert!(refs.is_empty());
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

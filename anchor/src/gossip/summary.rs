//! Building this anchor's [`LoadSummary`] from its local figures, and deciding when a
//! summary has changed enough to be published before its interval is up. Pure.

use std::collections::BTreeMap;

use proto::gossip::{HotScope, LoadSummary};
use proto::limits::{
    ADDR_BYTES_MAX, ANCHOR_ADDRS_MAX, HOT_SCOPES_MAX, LABELS_MAX, LABEL_TEXT_BYTES_MAX,
};
use proto::{Name, ScopeId};

/// Requests per second under which a change of the request rate never publishes early.
pub const LOAD_CHANGE_MIN_PER_S: u64 = 10;

/// One hosted scope's figures on this anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeLoad {
    /// Scope id.
    pub id: ScopeId,
    /// Scope prefix; only for a scope with requests (the others are never listed as hot,
    /// and copying thousands of idle scopes' prefixes every second is not free).
    pub prefix: Option<Name>,
    /// This anchor leads it.
    pub leader: bool,
    /// Reads per second this anchor served for it.
    pub reads_per_s: u64,
    /// Writes per second this anchor received for it.
    pub writes_per_s: u64,
}

impl ScopeLoad {
    fn requests(&self) -> u64 {
        self.reads_per_s.saturating_add(self.writes_per_s)
    }
}

/// What this anchor measures about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalFigures {
    /// CPU, thousandths of a core.
    pub cpu_millicores: u32,
    /// Cores of the machine.
    pub cores: u16,
    /// Resident memory, bytes.
    pub mem_bytes: u64,
    /// Free bytes on the data directory's file system.
    pub disk_free_bytes: u64,
    /// Size of that file system.
    pub disk_total_bytes: u64,
    /// Scopes hosted here.
    pub hosted: u32,
    /// Of those, the ones this anchor leads.
    pub leaderships: u32,
    /// The hosted scopes that served requests lately (the others' load is zero).
    pub busy: Vec<ScopeLoad>,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// Advertised addresses.
    pub addrs: Vec<String>,
}

/// Who is publishing, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publisher {
    /// This anchor's peer id.
    pub anchor: String,
    /// Its publishing interval, ms.
    pub interval_ms: u64,
    /// Hot scopes to list (capped at [`HOT_SCOPES_MAX`]).
    pub hot_scopes: usize,
}

/// Builds the summary: totals, the hottest scopes (by reads + writes, scopes without
/// requests left out), and labels and addresses cut to their bounds (entries over a bound
/// are left out, not truncated).
pub fn build(p: &Publisher, seq: u64, now_ms: u64, f: &LocalFigures) -> LoadSummary {
    let sum =
        |g: fn(&ScopeLoad) -> u64| f.busy.iter().map(g).fold(0u64, |a, b| a.saturating_add(b));
    let mut hot: Vec<&ScopeLoad> = f
        .busy
        .iter()
        .filter(|s| s.requests() > 0 && s.prefix.is_some())
        .collect();
    hot.sort_by(|a, b| b.requests().cmp(&a.requests()).then(a.id.cmp(&b.id)));
    hot.truncate(p.hot_scopes.min(HOT_SCOPES_MAX));
    LoadSummary {
        anchor: p.anchor.clone(),
        seq,
        sent_at_ms: now_ms,
        interval_ms: u32::try_from(p.interval_ms).unwrap_or(u32::MAX),
        cpu_millicores: f.cpu_millicores,
        cores: f.cores,
        mem_bytes: f.mem_bytes,
        disk_free_bytes: f.disk_free_bytes.min(f.disk_total_bytes),
        disk_total_bytes: f.disk_total_bytes,
        scopes: f.hosted,
        leaderships: f.leaderships,
        reads_per_s: sum(|s| s.reads_per_s),
        writes_per_s: sum(|s| s.writes_per_s),
        hot: hot
            .into_iter()
            .filter_map(|s| {
                Some(HotScope {
                    id: s.id,
                    prefix: s.prefix.clone()?,
                    leader: s.leader,
                    reads_per_s: s.reads_per_s,
                    writes_per_s: s.writes_per_s,
                })
            })
            .collect(),
        labels: f
            .labels
            .iter()
            .filter(|(k, v)| k.len() <= LABEL_TEXT_BYTES_MAX && v.len() <= LABEL_TEXT_BYTES_MAX)
            .take(LABELS_MAX)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        addrs: f
            .addrs
            .iter()
            .filter(|a| a.len() <= ADDR_BYTES_MAX)
            .take(ANCHOR_ADDRS_MAX)
            .cloned()
            .collect(),
    }
}

/// When a summary differs enough from the last one published to go out early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Scopes or leaderships changed by more than this many percent ...
    pub change_percent: u64,
    /// ... or by more than this many.
    pub change_scopes: u64,
    /// The request rate changed by more than this many percent (and by at least
    /// [`LOAD_CHANGE_MIN_PER_S`]).
    pub load_change_percent: u64,
}

/// True when `now` should be published before the interval is up: scopes or leaderships
/// moved by more than the percentage or the count, the request rate by more than its
/// percentage, or the labels or addresses changed.
pub fn changed_much(last: &LoadSummary, now: &LoadSummary, t: &Thresholds) -> bool {
    let moved = |a: u64, b: u64| {
        let d = a.abs_diff(b);
        d > t.change_scopes || d.saturating_mul(100) > t.change_percent.saturating_mul(a)
    };
    let rate = |s: &LoadSummary| s.reads_per_s.saturating_add(s.writes_per_s);
    let (r0, r1) = (rate(last), rate(now));
    let d = r0.abs_diff(r1);
    let load = d >= LOAD_CHANGE_MIN_PER_S
        && d.saturating_mul(100) > t.load_change_percent.saturating_mul(r0);
    moved(u64::from(last.scopes), u64::from(now.scopes))
        || moved(u64::from(last.leaderships), u64::from(now.leaderships))
        || load
        || last.labels != now.labels
        || last.addrs != now.addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(n: u8, leader: bool, reads: u64, writes: u64) -> ScopeLoad {
        ScopeLoad {
            id: ScopeId([n; 16]),
            prefix: Some(Name::parse(&format!("/s{n}")).unwrap()),
            leader,
            reads_per_s: reads,
            writes_per_s: writes,
        }
    }

    fn publisher(k: usize) -> Publisher {
        Publisher {
            anchor: "me".into(),
            interval_ms: 5_000,
            hot_scopes: k,
        }
    }

    #[test]
    fn totals_and_top_k() {
        let f = LocalFigures {
            cpu_millicores: 500,
            cores: 2,
            mem_bytes: 1 << 20,
            disk_free_bytes: 5,
            disk_total_bytes: 10,
            hosted: 4,
            leaderships: 2,
            busy: vec![
                scope(1, true, 10, 0),
                scope(2, false, 0, 0),
                scope(3, true, 50, 5),
                scope(4, false, 20, 1),
            ],
            labels: [("zone".to_string(), "a".to_string())].into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        };
        let s = build(&publisher(2), 9, 1_000, &f);
        assert_eq!((s.anchor.as_str(), s.seq, s.sent_at_ms), ("me", 9, 1_000));
        assert_eq!((s.scopes, s.leaderships), (4, 2));
        assert_eq!((s.reads_per_s, s.writes_per_s), (80, 6));
        let hot: Vec<u8> = s.hot.iter().map(|h| h.id.0[0]).collect();
        assert_eq!(hot, vec![3, 4], "hottest first, k = 2");
        assert!(s.hot[0].leader);
        // Idle scopes are never hot.
        let s = build(&publisher(16), 9, 1_000, &f);
        assert_eq!(s.hot.len(), 3);
        s.check("me").unwrap();
    }

    #[test]
    fn everything_is_cut_to_its_bound() {
        let mut f = LocalFigures {
            disk_free_bytes: 11,
            disk_total_bytes: 10,
            hosted: 40,
            busy: (0..40)
                .map(|i| scope(i, false, 1 + u64::from(i), 0))
                .collect(),
            ..Default::default()
        };
        f.labels = (0..LABELS_MAX + 5)
            .map(|i| (format!("k{i:03}"), "v".into()))
            .collect();
        f.labels
            .insert("big".into(), "x".repeat(LABEL_TEXT_BYTES_MAX + 1));
        f.addrs = vec!["/ip4/1.2.3.4/tcp/1".into(); ANCHOR_ADDRS_MAX + 3];
        let s = build(&publisher(1_000), 1, 0, &f);
        assert_eq!(s.hot.len(), HOT_SCOPES_MAX);
        assert_eq!(s.labels.len(), LABELS_MAX);
        assert!(!s.labels.contains_key("big"));
        assert_eq!(s.addrs.len(), ANCHOR_ADDRS_MAX);
        assert_eq!(s.disk_free_bytes, 10);
        s.check("me").unwrap();
        assert!(s.encode().is_ok());
    }

    #[test]
    fn large_changes_publish_early() {
        let t = Thresholds {
            change_percent: 5,
            change_scopes: 5,
            load_change_percent: 50,
        };
        let f = |n: u32, reads: u64| LocalFigures {
            hosted: n,
            busy: vec![scope(0, false, reads, 0)],
            ..Default::default()
        };
        let p = publisher(8);
        let base = build(&p, 1, 0, &f(100, 100));
        assert!(!changed_much(&base, &build(&p, 2, 0, &f(100, 100)), &t));
        assert!(
            !changed_much(&base, &build(&p, 2, 0, &f(104, 100)), &t),
            "4 %"
        );
        assert!(
            changed_much(&base, &build(&p, 2, 0, &f(106, 100)), &t),
            "6 scopes"
        );
        assert!(
            !changed_much(&base, &build(&p, 2, 0, &f(100, 149)), &t),
            "49 %"
        );
        assert!(
            changed_much(&base, &build(&p, 2, 0, &f(100, 151)), &t),
            "51 %"
        );
        // Small absolute rate changes never count.
        let idle = build(&p, 1, 0, &f(100, 2));
        assert!(!changed_much(&idle, &build(&p, 2, 0, &f(100, 9)), &t));
        // One scope more on an anchor with few is a large change.
        let few = build(&p, 1, 0, &f(3, 0));
        assert!(changed_much(&few, &build(&p, 2, 0, &f(4, 0)), &t));
        let mut relabelled = f(100, 100);
        relabelled.labels.insert("zone".into(), "b".into());
        assert!(changed_much(&base, &build(&p, 2, 0, &relabelled), &t));
    }
}

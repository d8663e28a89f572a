//! `status`: an anchor, one line per scope it hosts, and the table of the load summaries
//! it holds of the anchors it hears from.

use proto::msg::{AnchorStatus, PeerLoad};

use super::{labels_text, opt_text, short_id};

/// One anchor's status as text lines: who and where (and its labels), its scopes, then
/// what it believes about the anchors it hears from (itself marked `*`).
pub fn status_lines(s: &AnchorStatus) -> Vec<String> {
    let mut out = Vec::new();
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if labels.is_empty() {
        out.push(format!("anchor {} {}", s.peer_id, s.addrs.join(" ")));
    } else {
        out.push(format!(
            "anchor {} {}  labels {}",
            s.peer_id,
            s.addrs.join(" "),
            labels.join(",")
        ));
    }
    for sc in &s.scopes {
        out.push(format!(
            "  scope {} {:<12} {:<9} {:<10} term {:<4} applied {:<8} log {:<8} snapshot {:<8} names {:<6} leader {}",
            short_id(&sc.id),
            sc.prefix.to_string(),
            sc.role,
            sc.sleep,
            sc.term,
            opt_text(sc.last_applied),
            opt_text(sc.last_log),
            opt_text(sc.snapshot),
            sc.names,
            sc.leader.as_deref().unwrap_or("-"),
        ));
    }
    out.extend(peer_lines(&s.peer_id, &s.peers, s.peers_omitted));
    out
}

/// The peer table: one line per anchor with a live summary, `*` marking `me`.
pub fn peer_lines(me: &str, peers: &[PeerLoad], omitted: u32) -> Vec<String> {
    let mut out = Vec::new();
    if peers.is_empty() && omitted == 0 {
        out.push("  peers: none heard from yet".into());
        return out;
    }
    out.push(format!(
        "  {:<54} {:>6} {:>6} {:>5} {:>6} {:>9} {:>10} {:>8} {:>8}  labels",
        "peer", "age", "scopes", "lead", "cpu", "mem", "disk free", "reads/s", "writes/s"
    ));
    for p in peers {
        let s = &p.summary;
        let mark = if s.anchor == me { "*" } else { " " };
        out.push(format!(
            "{mark} {:<54} {:>6} {:>6} {:>5} {:>6} {:>9} {:>10} {:>8} {:>8}  {}",
            s.anchor,
            format!("{:.1}s", p.age_ms as f64 / 1000.0),
            s.scopes,
            s.leaderships,
            format!("{:.2}", f64::from(s.cpu_millicores) / 1000.0),
            bytes_text(s.mem_bytes),
            bytes_text(s.disk_free_bytes),
            s.reads_per_s,
            s.writes_per_s,
            labels_text(&s.labels),
        ));
    }
    if omitted > 0 {
        out.push(format!(
            "  ... and {omitted} more (see --json of another anchor, or /metrics)"
        ));
    }
    out
}

/// Bytes in binary units with one decimal (`64.0 MiB`).
pub fn bytes_text(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

//! `status`: an anchor and one line per scope it hosts.

use proto::msg::AnchorStatus;

use super::{opt_text, short_id};

/// One anchor's status as text lines: who and where (and its labels), then its scopes.
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
            "  scope {} {:<12} {:<9} term {:<4} applied {:<8} log {:<8} snapshot {:<8} names {:<6} leader {}",
            short_id(&sc.id),
            sc.prefix.to_string(),
            sc.role,
            sc.term,
            opt_text(sc.last_applied),
            opt_text(sc.last_log),
            opt_text(sc.snapshot),
            sc.names,
            sc.leader.as_deref().unwrap_or("-"),
        ));
    }
    out
}

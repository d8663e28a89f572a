//! `resolve --trace`: the hops of a walk as aligned text lines like `dig +trace`, or JSON.

use resolver::{Hop, HopOutcome, Trace};
use serde_json::{json, Value};

use super::{short_id, short_members, short_peer, where_text};

fn outcome_text(o: &HopOutcome) -> String {
    match o {
        HopOutcome::CachedAnswer => "cached answer".into(),
        HopOutcome::CachedReferral => "cached referral".into(),
        HopOutcome::Referral(r) => {
            format!(
                "referral to {} [{}]",
                where_text(&r.prefix, &r.range),
                short_members(&r.members)
            )
        }
        HopOutcome::Found { version } => format!("answer v{version}"),
        HopOutcome::NotFound => "not found".into(),
        HopOutcome::Failed { reason } => format!("failed: {reason}"),
    }
}

fn rtt_text(hop: &Hop) -> String {
    if hop.peer.is_none() && hop.rtt.is_zero() {
        return "-".into();
    }
    format!("{:.1} ms", hop.rtt.as_secs_f64() * 1000.0)
}

/// The hops of a traced resolve as aligned text lines (a header, then one per hop).
pub fn trace_lines(trace: &Trace) -> Vec<String> {
    let mut rows: Vec<[String; 5]> = vec![[
        ";; scope".into(),
        "id".into(),
        "anchor".into(),
        "rtt".into(),
        "outcome".into(),
    ]];
    for hop in &trace.hops {
        rows.push([
            format!(";; {}", hop.prefix),
            short_id(&hop.scope),
            hop.peer
                .map_or("(cache)".to_string(), |p| short_peer(&p.to_string())),
            rtt_text(hop),
            outcome_text(&hop.outcome),
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                line.push_str(cell);
                if i < 4 {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// One hop as JSON.
pub fn hop_json(hop: &Hop) -> Value {
    let (outcome, extra) = match &hop.outcome {
        HopOutcome::CachedAnswer => ("cached_answer", Value::Null),
        HopOutcome::CachedReferral => ("cached_referral", Value::Null),
        HopOutcome::Referral(r) => (
            "referral",
            json!({
                "scope": r.scope.to_hex(), "prefix": r.prefix.to_string(),
                "range": super::range_json(&r.range),
                "members": r.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
            }),
        ),
        HopOutcome::Found { version } => ("found", json!({ "version": version })),
        HopOutcome::NotFound => ("not_found", Value::Null),
        HopOutcome::Failed { reason } => ("failed", json!({ "reason": reason })),
    };
    json!({
        "scope": hop.scope.to_hex(),
        "prefix": hop.prefix.to_string(),
        "peer": hop.peer.map(|p| p.to_string()),
        "rtt_ms": hop.rtt.as_secs_f64() * 1000.0,
        "outcome": outcome,
        "detail": extra,
    })
}

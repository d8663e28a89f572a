//! `scope show`: one scope (or a delegation known only from its parent) as text lines or
//! JSON, and a one-line summary of a policy.

use proto::msg::{Load, ScopeInfo, SplitView};
use proto::Delegation;
use serde_json::{json, Value};

use super::{
    labels_text, opt_text, range_json, short_id, short_members, short_peer, state_text, where_text,
};

pub fn delegation_json(d: &Delegation) -> Value {
    json!({
        "prefix": d.referral.prefix.to_string(),
        "range": range_json(&d.referral.range),
        "scope": d.referral.scope.to_hex(),
        "state": state_text(d.state),
        "index": d.index,
        "epoch": d.referral.epoch,
        "ttl_s": d.referral.ttl_s,
        "members": d.members.iter().map(|m| json!({
            "peer_id": m.anchor.peer_id,
            "addrs": m.anchor.addrs,
            "labels": m.labels,
        })).collect::<Vec<_>>(),
    })
}

/// One scope as JSON (ids in hex).
pub fn info_json(info: &ScopeInfo) -> Value {
    json!({
        "scope": info.descriptor.id.to_hex(),
        "prefix": info.descriptor.prefix.to_string(),
        "range": range_json(&info.descriptor.range),
        "epoch": info.descriptor.epoch,
        "members": info.descriptor.members.iter().map(|m| json!({
            "peer_id": m.peer_id, "addrs": m.addrs,
        })).collect::<Vec<_>>(),
        "parent": info.parent.as_ref().map(|p| json!({
            "scope": p.id.to_hex(), "prefix": p.prefix.to_string(),
            "range": range_json(&p.range), "epoch": p.epoch,
            "members": p.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
        })),
        "active": info.active,
        "status": {
            "role": info.status.role,
            "sleep": info.status.sleep,
            "term": info.status.term,
            "leader": info.status.leader,
            "last_applied": info.status.last_applied,
            "last_log": info.status.last_log,
            "snapshot": info.status.snapshot,
            "names": info.status.names,
        },
        "load": {
            "reads": info.load.reads, "writes": info.load.writes, "window_s": Load::WINDOW_S,
        },
        "delegations": info.delegations.iter().map(delegation_json).collect::<Vec<_>>(),
        "policy_toml": info.policy_toml,
        "split": info.split.as_ref().map(split_json),
        "member_change": info.member_change.as_ref().map(|c| json!({
            "index": c.index,
            "joining": c.added.iter().map(|a| a.anchor.peer_id.clone()).collect::<Vec<_>>(),
            "leaving": c.removed,
            "target": c.target.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
            "started_ms": c.started_ms,
        })),
        "voters_and_learners": info.status.members,
    })
}

/// The split view as JSON.
pub fn split_json(v: &SplitView) -> Value {
    json!({
        "auto": v.auto,
        "would_split": v.would_split,
        "decision": v.decision,
        "load": {
            "reads_per_s": v.reads_per_s,
            "writes_per_s": v.writes_per_s,
            "reads_peak": v.reads_peak,
            "writes_peak": v.writes_peak,
            "peak_window_s": v.peak_window_s,
            "peak_reliable": v.peak_reliable,
        },
        "size": {
            "names": v.names,
            "bytes": v.bytes,
            "scanned": v.scanned,
            "complete": v.complete,
            "median": v.median.as_ref().map(|m| m.to_string()),
            "children": v.children.iter().map(|(label, names, bytes)| json!({
                "label": label, "names": names, "bytes": bytes,
            })).collect::<Vec<_>>(),
        },
        "key": v.key.as_ref().map(|k| k.to_string()),
        "key_text": v.key_text,
        "merges": v.merges,
    })
}

/// The split view as text lines (under `scope show`'s other lines).
pub fn split_lines(v: &SplitView) -> Vec<String> {
    let mut out = vec![format!(
        "  split load   reads {}/s (peak {}/s), writes {}/s (peak {}/s); peaks over {} s, {} (answering anchor)",
        v.reads_per_s,
        v.reads_peak,
        v.writes_per_s,
        v.writes_peak,
        v.peak_window_s,
        if v.peak_reliable {
            "reliable"
        } else {
            "not reliable yet (window not full)"
        }
    )];
    let bytes = match v.bytes {
        Some(b) => format!("{b} bytes"),
        None => "bytes unknown".into(),
    };
    let scan = if v.complete {
        format!("scan of all {} names", v.scanned)
    } else {
        format!(
            "scan stopped after {} names: children are a sample (the first names in order)",
            v.scanned
        )
    };
    out.push(format!(
        "  split size   {} names, {bytes}; median {} ({scan})",
        v.names,
        v.median.as_ref().map_or("-".to_string(), |m| m.to_string())
    ));
    if !v.children.is_empty() {
        out.push(format!(
            "  children     {}",
            v.children
                .iter()
                .map(|(label, names, bytes)| format!("{label} {names} names/{bytes} B"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push(format!("  split key    {}", v.key_text));
    out.push(format!(
        "  split        {} (auto {})",
        v.decision,
        if v.auto { "on" } else { "off" }
    ));
    for m in &v.merges {
        out.push(format!("  merge        {m}"));
    }
    out
}

/// One line summing up a policy TOML (admins, writers, reads, limits, placement, split).
pub fn policy_summary(toml: &str) -> String {
    let p = match policy::Policy::from_toml(toml) {
        Ok(p) => p,
        Err(e) => return format!("unreadable: {e}"),
    };
    let admin = match &p.admin {
        Some(a) => format!("{} of {} admin keys", a.threshold, a.keys.len()),
        None => "frozen (no admin)".into(),
    };
    let reads = match p.reads.access {
        policy::ReadAccess::Anonymous => "anonymous".to_string(),
        policy::ReadAccess::Keyed => format!("keyed ({} keys)", p.reads.keys.len()),
    };
    format!(
        "{admin}; {} writer rule(s); reads {reads}; ttl ≤ {}s; placement {} replicas, labels {}; \
         split at {} names or {} writes/s or {} reads/s for {}s",
        p.writers.len(),
        p.limits.ttl_s_max,
        p.placement.replicas,
        labels_text(&p.placement.labels),
        p.split.names_max,
        p.split.writes_per_s_max,
        p.split.reads_per_s_max,
        p.split.window_s,
    )
}

/// `scope show` for one scope, as text lines.
pub fn show_lines(info: &ScopeInfo) -> Vec<String> {
    let d = &info.descriptor;
    let mut out = vec![format!(
        "scope {}  prefix {}  epoch {}  {}",
        d.id,
        where_text(&d.prefix, &d.range),
        d.epoch,
        if info.active {
            "active"
        } else {
            "inactive (writes refused: waiting for the parent's hand-over, or merging back into it)"
        }
    )];
    out.push(match &info.parent {
        Some(p) => format!(
            "  parent       {} ({})  members {}{}",
            where_text(&p.prefix, &p.range),
            short_id(&p.id),
            short_members(&p.members),
            if p.prefix == d.prefix {
                "  (this scope is a range split off it)"
            } else {
                ""
            }
        ),
        None => "  parent       - (root scope)".into(),
    });
    out.push("  members".into());
    for m in &d.members {
        let lead = if info.status.leader.as_deref() == Some(m.peer_id.as_str()) {
            "  (leader)"
        } else {
            ""
        };
        out.push(format!("    {}  {}{lead}", m.peer_id, m.addrs.join(" ")));
    }
    if let Some(c) = &info.member_change {
        let peers = |v: Vec<&str>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(format!(
            "  changing     members since v{}: joining {}; leaving {} (the leader carries it out)",
            c.index,
            peers(c.added.iter().map(|a| a.anchor.peer_id.as_str()).collect()),
            peers(c.removed.iter().map(|p| p.as_str()).collect()),
        ));
    }
    let listed = |p: &String| d.members.iter().any(|m| &m.peer_id == p);
    let extra: Vec<&str> = info
        .status
        .members
        .iter()
        .filter(|p| !listed(p))
        .map(|p| p.as_str())
        .collect();
    if !extra.is_empty() {
        out.push(format!(
            "  also in the Raft configuration (joining, or leaving): {}",
            extra.join(", ")
        ));
    }
    let s = &info.status;
    out.push(format!(
        "  status       {} ({}) term {}  applied {}  log {}  snapshot {}  names {}  (answering anchor)",
        s.role,
        s.sleep,
        s.term,
        opt_text(s.last_applied),
        opt_text(s.last_log),
        opt_text(s.snapshot),
        s.names
    ));
    out.push(format!(
        "  load         {} reads, {} writes in the last {} s (answering anchor)",
        info.load.reads,
        info.load.writes,
        Load::WINDOW_S
    ));
    match &info.split {
        Some(v) => out.extend(split_lines(v)),
        None => {
            out.push("  split        not known (the answering replica has no policy yet)".into())
        }
    }
    out.push(format!(
        "  policy       {}",
        info.policy_toml
            .as_deref()
            .map_or("not returned".to_string(), policy_summary)
    ));
    if info.delegations.is_empty() {
        out.push("  delegations  none".into());
    } else {
        out.push("  delegations".into());
        for del in &info.delegations {
            out.push(format!(
                "    {}  {}  scope {}  v{}  ttl {}s  members {}",
                where_text(&del.referral.prefix, &del.referral.range),
                state_text(del.state),
                short_id(&del.referral.scope),
                del.index,
                del.referral.ttl_s,
                del.members
                    .iter()
                    .map(|m| format!(
                        "{}[{}]",
                        short_peer(&m.anchor.peer_id),
                        labels_text(&m.labels)
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    out
}

pub fn delegation_lines(parent: &ScopeInfo, d: &Delegation) -> Vec<String> {
    let mut out = vec![
        format!(
            "scope {}  prefix {}  {} delegation of {} ({}) at v{}",
            d.referral.scope,
            where_text(&d.referral.prefix, &d.referral.range),
            state_text(d.state),
            parent.descriptor.prefix,
            short_id(&parent.descriptor.id),
            d.index
        ),
        "  members".into(),
    ];
    for m in &d.members {
        out.push(format!(
            "    {}  {}  labels {}",
            m.anchor.peer_id,
            m.anchor.addrs.join(" "),
            labels_text(&m.labels)
        ));
    }
    if d.policy_toml.is_empty() {
        // Anchors send delegations without their policy text: the child has it.
        out.push(format!(
            "  policy       not sent by the parent (once active: `anchorage policy get {}`)",
            d.referral.prefix
        ));
    } else {
        out.push(format!("  policy       {}", policy_summary(&d.policy_toml)));
    }
    out
}

//! `watch`: one line of text or one JSON object per event.

use proto::msg::ChangeEvent;
use proto::RecordSet;
use resolver::WatchEvent;
use serde_json::{json, Value};

use super::{short_id, short_members};

fn records_text(set: &RecordSet) -> String {
    let list: Vec<String> = set.records.iter().map(|r| r.to_string()).collect();
    list.join(", ")
}

fn change_line(e: &ChangeEvent) -> String {
    match &e.set {
        Some(set) => format!(
            "v{}  {}  {}  ttl {}s",
            e.version,
            e.name,
            records_text(set),
            set.ttl_s
        ),
        None => format!("v{}  {}  deleted", e.version, e.name),
    }
}

/// One watch event as a line of text.
pub fn watch_line(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Changed(e) => change_line(e),
        WatchEvent::Compacted { oldest, up_to } => format!(
            "compacted: resync from {up_to} (history before {oldest} is no longer kept; \
             re-read the names under the prefix)"
        ),
        WatchEvent::Moved(r) => format!(
            "moved to child scope {} ({}) [{}]; following it",
            r.prefix,
            short_id(&r.scope),
            short_members(&r.members)
        ),
        WatchEvent::Followed(r) => format!(
            "following child scope {} {} ({}) [{}] too",
            r.prefix,
            r.range,
            short_id(&r.scope),
            short_members(&r.members)
        ),
        WatchEvent::Merged(scope) => format!(
            "child scope {} merged back into its parent; its names' changes come from there",
            short_id(scope)
        ),
    }
}

/// One watch event as a JSON object (one line of `--json` output).
pub fn watch_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Changed(e) => match &e.set {
            Some(set) => json!({
                "event": "changed", "version": e.version, "name": e.name.to_string(),
                "records": set.records.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "ttl_s": set.ttl_s, "writer": hex::encode(set.writer),
            }),
            None => json!({ "event": "deleted", "version": e.version, "name": e.name.to_string() }),
        },
        WatchEvent::Compacted { oldest, up_to } => {
            json!({ "event": "compacted", "oldest": oldest, "up_to": up_to })
        }
        WatchEvent::Moved(r) => json!({
            "event": "moved", "scope": r.scope.to_hex(), "prefix": r.prefix.to_string(),
            "members": r.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
        }),
        WatchEvent::Followed(r) => json!({
            "event": "followed", "scope": r.scope.to_hex(), "prefix": r.prefix.to_string(),
            "range": r.range.to_string(),
            "members": r.members.iter().map(|m| m.peer_id.clone()).collect::<Vec<_>>(),
        }),
        WatchEvent::Merged(scope) => json!({ "event": "merged", "scope": scope.to_hex() }),
    }
}

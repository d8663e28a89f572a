//! A name's answer: the record set `resolve` prints, and the version a write committed at.

use proto::RecordSet;
use serde_json::{json, Value};

/// `resolve --json` output of a record set.
pub fn answer_json(name: &str, set: &RecordSet) -> Value {
    let records: Vec<String> = set.records.iter().map(|r| r.to_string()).collect();
    json!({
        "name": name, "version": set.version, "ttl_s": set.ttl_s,
        "writer": hex::encode(set.writer), "records": records,
    })
}

/// `resolve` human output of a record set.
pub fn answer_lines(name: &str, set: &RecordSet) -> Vec<String> {
    let mut out = vec![format!(
        "{name}  version {}  ttl {}s",
        set.version, set.ttl_s
    )];
    out.extend(set.records.iter().map(|r| format!("  {r}")));
    out
}

/// What `put`, `cas` and `delete` print with `--json`.
pub fn version_json(name: &str, version: u64) -> Value {
    json!({ "name": name, "version": version })
}

/// What `put`, `cas` and `delete` print.
pub fn version_line(name: &str, version: u64) -> String {
    format!("{name}: committed at version {version}")
}

//! Everything `anchorage` prints, as pure functions of what the cluster answered: text
//! lines for humans and JSON values for `--json`. Unit-tested in `tests.rs`.

use std::collections::BTreeMap;

use proto::msg::Load;
use proto::{AnchorInfo, DelegationState, ScopeId};

pub mod answer;
pub mod delegated;
pub mod scope;
pub mod status;
pub mod trace;
pub mod tree;
pub mod watch;

#[cfg(test)]
mod tests;

/// The first 12 hex digits of a scope id, as `scope tree` and `status` print it.
/// Where a scope sits: its prefix, and its range when it governs only a range of it
/// (`/users [/users/m, -)`).
pub fn where_text(prefix: &proto::Name, range: &proto::KeyRange) -> String {
    if range.is_bounded() {
        format!("{prefix} {range}")
    } else {
        prefix.to_string()
    }
}

/// A range as JSON: `null` for a whole subtree, else its ends (`null` for an open end).
pub fn range_json(range: &proto::KeyRange) -> serde_json::Value {
    if !range.is_bounded() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "start": range.start.as_ref().map(|n| n.to_string()),
        "end": range.end.as_ref().map(|n| n.to_string()),
    })
}

pub fn short_id(id: &ScopeId) -> String {
    id.to_hex()[..12].to_string()
}

/// The last 6 characters of a peer id (they all start alike), after an ellipsis.
pub fn short_peer(peer: &str) -> String {
    let chars: Vec<char> = peer.chars().collect();
    if chars.len() <= 8 {
        return peer.to_string();
    }
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("…{tail}")
}

/// The members' short peer ids, comma-separated.
pub fn short_members(members: &[AnchorInfo]) -> String {
    let list: Vec<String> = members.iter().map(|m| short_peer(&m.peer_id)).collect();
    list.join(",")
}

/// A scope's recent load as `scope tree` prints it: reads and writes in the window.
pub fn load_text(load: &Load) -> String {
    format!("{}r/{}w per {}s", load.reads, load.writes, Load::WINDOW_S)
}

/// A delegation's state as one word.
pub fn state_text(state: DelegationState) -> &'static str {
    match state {
        DelegationState::Frozen => "frozen",
        DelegationState::Active => "active",
        DelegationState::Aborted => "aborted",
        DelegationState::Merging { .. } => "merging",
        DelegationState::Learned { .. } => "learned",
    }
}

/// Labels as `k=v,k=v`, or `-` when there are none.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let list: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    list.join(",")
}

/// A number that may be missing (an index, a snapshot), `-` when it is.
pub fn opt_text(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

//! `scope delegate`: what was delegated, to which scope and members, and in what state.

use proto::{DelegationState, MemberSpec, Name, ScopeId};
use serde_json::{json, Value};

use super::{labels_text, state_text};

/// A committed delegation as `scope delegate` reports it.
pub struct Delegated<'a> {
    /// The delegated prefix.
    pub prefix: &'a Name,
    /// The child scope's id.
    pub scope: ScopeId,
    /// The parent scope's id.
    pub parent: ScopeId,
    /// The parent scope's prefix.
    pub parent_prefix: &'a Name,
    /// The parent's log index the delegation was committed at.
    pub index: u64,
    /// Active, or frozen when not waited for.
    pub state: DelegationState,
    /// The child's members.
    pub members: &'a [MemberSpec],
}

impl Delegated<'_> {
    /// As JSON (`--json`).
    pub fn json(&self) -> Value {
        json!({
            "prefix": self.prefix.to_string(),
            "scope": self.scope.to_hex(),
            "parent": self.parent.to_hex(),
            "parent_prefix": self.parent_prefix.to_string(),
            "index": self.index,
            "state": state_text(self.state),
            "members": self.members.iter().map(|m| json!({
                "peer_id": m.anchor.peer_id, "addrs": m.anchor.addrs, "labels": m.labels,
            })).collect::<Vec<_>>(),
        })
    }

    /// As text lines: the child scope and its state, then one line per member.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{}: scope {} {} (delegated by {} at v{})",
            self.prefix,
            self.scope,
            state_text(self.state),
            self.parent_prefix,
            self.index
        )];
        for m in self.members {
            out.push(format!(
                "  {}  {}  labels {}",
                m.anchor.peer_id,
                m.anchor.addrs.join(" "),
                labels_text(&m.labels)
            ));
        }
        out
    }
}

//! `scope tree`: the hierarchy assembled from each scope's own description, as aligned text
//! lines or nested JSON, and looking a scope up in it by a leading part of its id.

use std::collections::{BTreeMap, BTreeSet};

use proto::limits::REFERRAL_HOPS_MAX;
use proto::msg::ScopeInfo;
use proto::{Delegation, DelegationState, Name, ScopeId};
use serde_json::{json, Value};

use super::scope::info_json;
use super::{load_text, short_id, short_members, short_peer, where_text};

/// One scope of the hierarchy with what its parent says about its own delegations.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeNode {
    /// The scope as one of its members described it.
    pub info: ScopeInfo,
    /// Its delegations, in prefix order.
    pub children: Vec<ChildNode>,
}

/// A delegation of a [`ScopeNode`].
#[derive(Clone, Debug, PartialEq)]
pub enum ChildNode {
    /// An active child scope, described by one of its members.
    Active(Box<ScopeNode>),
    /// An active child whose members could not be asked.
    Unreachable {
        /// The parent's delegation.
        delegation: Delegation,
        /// Why.
        error: String,
    },
    /// Frozen (being seeded) or aborted: only the parent's record of it.
    Annotation(Delegation),
}

impl ChildNode {
    /// Children sort by where they start (a range by its first name), then by index.
    fn delegation_prefix(&self) -> (&Name, u64) {
        match self {
            ChildNode::Active(n) => {
                let d = &n.info.descriptor;
                (d.range.start.as_ref().unwrap_or(&d.prefix), 0)
            }
            ChildNode::Unreachable { delegation, .. } | ChildNode::Annotation(delegation) => {
                (delegation.referral.first(), delegation.index)
            }
        }
    }
}

/// Builds the tree below `root` from the child scopes fetched so far (by id; a missing
/// active child is shown as unreachable). Pure; guards against loops and depth.
pub fn build_tree(
    root: ScopeInfo,
    fetched: &BTreeMap<ScopeId, Result<ScopeInfo, String>>,
) -> ScopeNode {
    let mut seen = BTreeSet::new();
    build_node(root, fetched, &mut seen, 0)
}

fn build_node(
    info: ScopeInfo,
    fetched: &BTreeMap<ScopeId, Result<ScopeInfo, String>>,
    seen: &mut BTreeSet<ScopeId>,
    depth: usize,
) -> ScopeNode {
    seen.insert(info.descriptor.id);
    let mut children = Vec::new();
    for d in &info.delegations {
        let child = match d.state {
            DelegationState::Active | DelegationState::Merging { .. } => {
                let id = d.referral.scope;
                match fetched.get(&id) {
                    _ if seen.contains(&id) => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: "loop: this scope already appears above".into(),
                    },
                    _ if depth + 1 > REFERRAL_HOPS_MAX => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: format!("deeper than {REFERRAL_HOPS_MAX} levels"),
                    },
                    Some(Ok(child)) => {
                        let node = build_node(child.clone(), fetched, seen, depth + 1);
                        ChildNode::Active(Box::new(node))
                    }
                    Some(Err(e)) => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: e.clone(),
                    },
                    None => ChildNode::Unreachable {
                        delegation: d.clone(),
                        error: "not asked".into(),
                    },
                }
            }
            // A learned range is a child of the delegated scope, shown below it there.
            DelegationState::Frozen
            | DelegationState::Aborted
            | DelegationState::Learned { .. } => ChildNode::Annotation(d.clone()),
        };
        children.push(child);
    }
    children.sort_by(|a, b| a.delegation_prefix().cmp(&b.delegation_prefix()));
    ScopeNode { info, children }
}

/// The tree as text lines, one per scope or delegation annotation, columns aligned.
pub fn render_tree(root: &ScopeNode) -> Vec<String> {
    let mut rows = Vec::new();
    tree_rows(root, "", "", &mut rows);
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    rows.into_iter()
        .map(|(label, rest)| {
            let pad = width - label.chars().count();
            format!("{label}{}  {rest}", " ".repeat(pad))
                .trim_end()
                .to_string()
        })
        .collect()
}

fn scope_row(info: &ScopeInfo) -> String {
    let leader = info
        .status
        .leader
        .as_deref()
        .map_or("-".to_string(), short_peer);
    let mut row = format!(
        "{}  members {}  leader {}  names {}  load {}",
        short_id(&info.descriptor.id),
        short_members(&info.descriptor.members),
        leader,
        info.status.names,
        load_text(&info.load),
    );
    if let Some(p) = &info.parent {
        let how = if p.prefix == info.descriptor.prefix {
            "range split of"
        } else {
            "from"
        };
        row.push_str(&format!("  ({how} {})", short_id(&p.id)));
    }
    if !info.active {
        row.push_str("  [inactive: waiting for the parent's hand-over, or merging back]");
    }
    row
}

fn annotation_row(d: &Delegation) -> String {
    match d.state {
        DelegationState::Frozen => format!(
            "{}  [frozen since v{}: moving to {}; writes refused until active]",
            short_id(&d.referral.scope),
            d.index,
            short_members(&d.referral.members)
        ),
        DelegationState::Aborted => format!(
            "{}  [aborted delegation of v{}: the parent governs it again]",
            short_id(&d.referral.scope),
            d.index
        ),
        DelegationState::Active => format!(
            "{}  members {}",
            short_id(&d.referral.scope),
            short_members(&d.referral.members)
        ),
        DelegationState::Merging { index } => format!(
            "{}  members {}  [merging back since v{index}]",
            short_id(&d.referral.scope),
            short_members(&d.referral.members)
        ),
        DelegationState::Learned { base } => format!(
            "{}  [range learned at v{}: referred to directly, not through {}]",
            short_id(&d.referral.scope),
            d.index,
            short_id(&base)
        ),
    }
}

fn tree_rows(
    node: &ScopeNode,
    label_prefix: &str,
    child_indent: &str,
    rows: &mut Vec<(String, String)>,
) {
    rows.push((
        format!(
            "{label_prefix}{}",
            where_text(&node.info.descriptor.prefix, &node.info.descriptor.range)
        ),
        scope_row(&node.info),
    ));
    let n = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        let branch = format!("{child_indent}{}", if last { "└── " } else { "├── " });
        let below = format!("{child_indent}{}", if last { "    " } else { "│   " });
        match child {
            ChildNode::Active(c) => tree_rows(c, &branch, &below, rows),
            ChildNode::Unreachable { delegation, error } => rows.push((
                format!(
                    "{branch}{}",
                    where_text(&delegation.referral.prefix, &delegation.referral.range)
                ),
                format!(
                    "{}  members {}  [unreachable: {error}]",
                    short_id(&delegation.referral.scope),
                    short_members(&delegation.referral.members)
                ),
            )),
            ChildNode::Annotation(d) => {
                let at = where_text(&d.referral.prefix, &d.referral.range);
                rows.push((format!("{branch}{at}"), annotation_row(d)))
            }
        }
    }
}

/// The tree as nested JSON: every scope with `children` (active scopes) and `delegations`
/// (the parent's record of every delegation, frozen and aborted ones included).
pub fn tree_json(node: &ScopeNode) -> Value {
    let mut v = info_json(&node.info);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("policy_toml");
        let children: Vec<Value> = node
            .children
            .iter()
            .filter_map(|c| match c {
                ChildNode::Active(c) => Some(tree_json(c)),
                ChildNode::Unreachable { delegation, error } => Some(json!({
                    "scope": delegation.referral.scope.to_hex(),
                    "prefix": delegation.referral.prefix.to_string(),
                    "unreachable": error,
                })),
                ChildNode::Annotation(_) => None,
            })
            .collect();
        obj.insert("children".into(), Value::Array(children));
    }
    v
}

/// What a hex id found in the tree.
#[derive(Debug, PartialEq)]
pub enum Found<'a> {
    /// A scope that answered.
    Scope(&'a ScopeInfo),
    /// A delegation known only from its parent (frozen, aborted or unreachable).
    Delegation {
        /// The parent.
        parent: &'a ScopeInfo,
        /// The delegation.
        delegation: &'a Delegation,
    },
}

/// Every scope or delegation in the tree whose hex id starts with `query` (lowercase).
pub fn find_in_tree<'a>(node: &'a ScopeNode, query: &str, out: &mut Vec<Found<'a>>) {
    if node.info.descriptor.id.to_hex().starts_with(query) {
        out.push(Found::Scope(&node.info));
    }
    for c in &node.children {
        match c {
            ChildNode::Active(c) => find_in_tree(c, query, out),
            ChildNode::Unreachable { delegation, .. } | ChildNode::Annotation(delegation) => {
                if delegation.referral.scope.to_hex().starts_with(query) {
                    out.push(Found::Delegation {
                        parent: &node.info,
                        delegation,
                    });
                }
            }
        }
    }
}

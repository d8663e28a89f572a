//! Fetching scope descriptions: one scope from the first of its members that answers, and
//! the whole hierarchy breadth first from the root.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{bail, Context, Result};
use proto::limits::REFERRAL_HOPS_MAX;
use proto::msg::{ScopeInfo, ScopeTarget};
use proto::{AnchorInfo, Referral, ScopeId};

use crate::render::tree::{build_tree, ScopeNode};
use crate::render::{short_id, short_peer};

/// Scopes `scope tree` fetches at most (a guard against a runaway hierarchy).
pub const TREE_SCOPES_MAX: usize = 1024;

/// Asks the given anchors in turn for a scope's info; the first answer wins.
pub async fn info_from(
    client: &resolver::Client,
    anchors: &[AnchorInfo],
    scope: ScopeId,
) -> Result<ScopeInfo> {
    let mut failures = Vec::new();
    for a in anchors {
        match client.scope_info_at(a, ScopeTarget::Id(scope)).await {
            Ok(info) => return Ok(info),
            Err(e) => failures.push(format!("{}: {e}", short_peer(&a.peer_id))),
        }
    }
    if failures.is_empty() {
        bail!("scope {} has no members to ask", short_id(&scope));
    }
    bail!(
        "no member of scope {} answered: {}",
        short_id(&scope),
        failures.join("; ")
    )
}

/// Fetches the whole hierarchy: the root from the trust anchors, then every active child
/// from its own members, breadth first.
pub async fn fetch_tree(client: &resolver::Client, trust: &[AnchorInfo]) -> Result<ScopeNode> {
    let root = info_from(client, trust, ScopeId::root())
        .await
        .context("asking the trust anchors for the root scope")?;
    let mut fetched: BTreeMap<ScopeId, Result<ScopeInfo, String>> = BTreeMap::new();
    let mut queue: VecDeque<(Referral, usize)> = active_referrals(&root)
        .into_iter()
        .map(|r| (r, 1))
        .collect();
    while let Some((referral, depth)) = queue.pop_front() {
        if fetched.contains_key(&referral.scope)
            || referral.scope == ScopeId::root()
            || depth > REFERRAL_HOPS_MAX
            || fetched.len() >= TREE_SCOPES_MAX
        {
            continue;
        }
        let got = info_from(client, &referral.members, referral.scope).await;
        if let Ok(info) = &got {
            queue.extend(active_referrals(info).into_iter().map(|r| (r, depth + 1)));
        }
        fetched.insert(referral.scope, got.map_err(|e| format!("{e:#}")));
    }
    Ok(build_tree(root, &fetched))
}

fn active_referrals(info: &ScopeInfo) -> Vec<Referral> {
    info.delegations
        .iter()
        .filter(|d| d.state.refers())
        .map(|d| d.referral.clone())
        .collect()
}

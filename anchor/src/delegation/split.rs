//! A scope's own split, on each of its members: the split entry made the child prefix a
//! Frozen delegation to the same members, so every member builds the child from its OWN
//! replica of the parent (the frozen records and their nonces, at the split's index) and
//! hosts it; nothing is sent over the network. A member that finds the split already
//! handed over (it was behind) hosts the child empty and catches up from the child's
//! leader. The parent's leader does the rest as for any delegation (`driver.rs`): it waits
//! for the child's leader, commits the hand-over, and the child activates.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use proto::ScopeId;
use tokio::task::JoinHandle;

use super::receive::{build_child, join_child, Born};
use super::Host;
use crate::raft::sm::SplitChild;
use crate::replica::Replica;
use crate::AnchorError;

/// Starts hosting, one task per child, each split-off child of `parent` this anchor is a
/// member of and hosts no replica of yet; `running` holds the tasks (the caller drops the
/// finished ones).
pub(super) fn start_hosting<H: Host>(
    host: &H,
    parent: &Arc<Replica>,
    running: &mut BTreeMap<ScopeId, JoinHandle<()>>,
) {
    for child in unhosted(host, parent) {
        if let Entry::Vacant(slot) = running.entry(child) {
            slot.insert(tokio::spawn(host_child(
                host.clone(),
                parent.clone(),
                child,
            )));
        }
    }
}

/// The split-off children of `parent` this anchor is a member of and hosts no replica of.
fn unhosted<H: Host>(host: &H, parent: &Replica) -> Vec<ScopeId> {
    let wanted: Vec<ScopeId> = parent
        .state
        .with_view(|v| {
            // Most scopes delegate nothing: no peer id to encode (this runs for every
            // hosted scope five times a second).
            if v.delegations.is_empty() {
                return Vec::new();
            }
            let me = host.peer_id().to_base58();
            v.delegations
                .values()
                .filter(|d| d.state != proto::DelegationState::Aborted)
                .filter(|d| !matches!(d.state, proto::DelegationState::Learned { .. }))
                .filter(|d| d.referral.members.iter().any(|m| m.peer_id == me))
                .map(|d| d.referral.scope)
                .collect()
        })
        .unwrap_or_default();
    wanted
        .into_iter()
        .filter(|c| host.replica(c).is_none())
        .collect()
}

/// Hosts the split-off `child` of `parent` here, from this anchor's own parent replica.
/// Does nothing for an operator's delegation (its parent's leader seeds it) or an aborted
/// split. A failure is logged and counted; the driver tries again on its next tick.
async fn host_child<H: Host>(host: H, parent: Arc<Replica>, child: ScopeId) {
    if let Err(e) = try_host_child(&host, parent, child).await {
        tracing::warn!(%child, error = %e, "hosting a split-off scope failed; retrying");
        host.count("split_host", "error");
    }
}

async fn try_host_child<H: Host>(
    host: &H,
    parent: Arc<Replica>,
    child: ScopeId,
) -> Result<(), AnchorError> {
    let state = parent.state.clone();
    // A disk scan under the parent's view lock: off the async workers. (A task that did not
    // finish is retried by the driver.)
    let Ok(found) = tokio::task::spawn_blocking(move || state.split_child(&child)).await else {
        return Ok(());
    };
    match found? {
        None => Ok(()),
        Some(SplitChild::Active(d)) => {
            let descriptor = descriptor_of(&d);
            join_child(host, &descriptor).await
        }
        Some(SplitChild::Frozen {
            delegation: d,
            parent,
            records,
            nonces,
            split_at_ms,
        }) => {
            let descriptor = descriptor_of(&d);
            build_child(
                host,
                &descriptor,
                &parent,
                &d.policy_toml,
                (&records, &nonces),
                d.index,
                Born::Split { at_ms: split_at_ms },
            )
            .await
        }
    }
}

fn descriptor_of(d: &proto::Delegation) -> proto::ScopeDescriptor {
    proto::ScopeDescriptor {
        id: d.referral.scope,
        prefix: d.referral.prefix.clone(),
        epoch: 1,
        members: d.referral.members.clone(),
        range: d.referral.range.clone(),
    }
}

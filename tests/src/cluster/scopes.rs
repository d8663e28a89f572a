//! Scopes other than the root: a scope's status and leader on any anchor, and delegation
//! (an admin-signed `Op::Delegate`, then waiting until the parent reports it Active and the
//! child accepts writes).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proto::msg::{AdminRequest, AdminResponse, ScopeInfo, ScopeStatus, ScopeTarget};
use proto::{AnchorInfo, Delegation, DelegationState, MemberSpec, Name, Op, Referral, ScopeId};
use resolver::Client;

use super::Cluster;
use crate::keys::sign_op;
use crate::wait::{wait_for, POLL};

/// A delegation that the parent committed and then marked Active, with the child's
/// replicas ready for writes (see [`Cluster::delegate`]).
#[derive(Clone, Debug)]
pub struct Delegated {
    /// The parent scope.
    pub parent: ScopeId,
    /// The parent's log index of the delegation (the version the submit returned).
    pub index: u64,
    /// The child scope.
    pub child: ScopeId,
    /// The referral the parent hands out for it.
    pub referral: Referral,
    /// The child's leader (anchor index) once it was ready.
    pub leader: usize,
}

impl Cluster {
    /// `ScopeInfo` of a scope hosted on anchor `i`.
    pub async fn scope_info_at(&self, i: usize, target: ScopeTarget) -> Result<ScopeInfo> {
        match self
            .admin(
                i,
                &AdminRequest::ScopeInfo {
                    target: target.clone(),
                },
            )
            .await?
        {
            AdminResponse::Scope(info) => Ok(*info),
            AdminResponse::Error(e) => bail!("anchor {i}: scope info of {target:?}: {e}"),
            other => bail!("anchor {i} answered scope info with {other:?}"),
        }
    }

    /// Scope `id` as anchor `i` sees it (`None` if it does not host it).
    pub async fn scope_status(&self, i: usize, id: ScopeId) -> Result<Option<ScopeStatus>> {
        let s = self.status(i).await?;
        Ok(s.scopes.into_iter().find(|sc| sc.id == id))
    }

    /// The leader of scope `id`, if the live anchors hosting it agree on one: an anchor that
    /// says it leads at the highest term seen, named as leader by a majority of the scope's
    /// members.
    pub async fn scope_leader(&self, id: ScopeId) -> Result<Option<usize>> {
        let mut seen = Vec::new();
        for i in self.live() {
            if let Ok(Some(s)) = self.scope_status(i, id).await {
                seen.push((i, s));
            }
        }
        let members = seen
            .iter()
            .map(|(_, s)| s.members.len())
            .max()
            .unwrap_or(1)
            .max(1);
        Ok(self.agreed_leader(&seen, members))
    }

    /// Waits for a leader of scope `id` (see [`Cluster::scope_leader`]).
    pub async fn wait_scope_leader(&self, id: ScopeId, within: Duration) -> Result<usize> {
        wait_for(&format!("a leader of scope {id}"), within, || async move {
            self.scope_leader(id).await
        })
        .await
    }

    /// Waits until anchor `i` has applied at least `index` in scope `id`.
    pub async fn wait_scope_applied(
        &self,
        i: usize,
        id: ScopeId,
        index: u64,
        within: Duration,
    ) -> Result<()> {
        wait_for(
            &format!("anchor {i} to apply index {index} of scope {id}"),
            within,
            || async move {
                let s = self.scope_status(i, id).await?;
                Ok(s.filter(|s| s.last_applied.unwrap_or(0) >= index)
                    .map(|_| ()))
            },
        )
        .await
    }

    /// Anchor `i` as scopes name it (peer id and listen addresses, from its status).
    pub async fn anchor_info(&self, i: usize) -> Result<AnchorInfo> {
        let s = self.status(i).await?;
        Ok(AnchorInfo {
            peer_id: s.peer_id,
            addrs: s.addrs,
        })
    }

    /// Anchor `i` as a delegation names it: its info and the labels its status reports.
    pub async fn member_spec(&self, i: usize) -> Result<MemberSpec> {
        let s = self.status(i).await?;
        Ok(MemberSpec {
            anchor: AnchorInfo {
                peer_id: s.peer_id,
                addrs: s.addrs,
            },
            labels: s.labels,
        })
    }

    /// An `Op::Delegate` of `prefix` to the anchors `members` (with the labels they report)
    /// under the child policy `policy_toml`.
    pub async fn delegate_op(
        &self,
        prefix: &str,
        members: &[usize],
        policy_toml: &str,
        referral_ttl_s: u32,
    ) -> Result<Op> {
        let mut specs = Vec::new();
        for &i in members {
            specs.push(self.member_spec(i).await?);
        }
        Ok(Op::Delegate {
            prefix: Name::parse(prefix)?,
            members: specs,
            policy_toml: policy_toml.to_string(),
            referral_ttl_s,
        })
    }

    /// Delegates `prefix` to the anchors `members` with the child policy `policy_toml`: an
    /// `Op::Delegate` signed by every key of `admins` (k of the parent's admin keys) sent
    /// through `client` to the parent, then waits until a parent replica reports the
    /// delegation Active and the child has a leader that accepts writes.
    pub async fn delegate(
        &self,
        client: &Client,
        prefix: &str,
        members: &[usize],
        policy_toml: &str,
        admins: &[&ed25519_dalek::SigningKey],
    ) -> Result<Delegated> {
        policy::Policy::from_toml(policy_toml).context("the child policy is invalid")?;
        let started = Instant::now();
        let op = self.delegate_op(prefix, members, policy_toml, 300).await?;
        let signed = sign_op(client, op, admins)?;
        let index = client
            .submit(signed)
            .await
            .with_context(|| format!("submitting the delegation of {prefix}"))?;
        let prefix = Name::parse(prefix)?;
        let (parent, delegation) = self
            .wait_delegation_active(&prefix, index, Duration::from_secs(30))
            .await?;
        let child = delegation.referral.scope;
        let derived = ScopeId::derive(&[
            &parent.0,
            prefix.to_string().as_bytes(),
            &index.to_be_bytes(),
        ]);
        if child != derived {
            bail!("the referral names child scope {child}, but the delegation at index {index} derives {derived}");
        }
        let active = started.elapsed();
        let leader = self
            .wait_scope_ready(child, Duration::from_secs(20))
            .await?;
        eprintln!(
            "delegated {prefix} to anchors {members:?} at index {index}: Active after {:.2} s, \
             child ready after {:.2} s",
            active.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(Delegated {
            parent,
            index,
            child,
            referral: delegation.referral,
            leader,
        })
    }

    /// Waits until a live anchor hosting the scope that governs `prefix`'s parent reports the
    /// delegation of `prefix` committed at `index` as Active; fails at once if it is
    /// Aborted. Returns the parent's id and the delegation.
    pub async fn wait_delegation_active(
        &self,
        prefix: &Name,
        index: u64,
        within: Duration,
    ) -> Result<(ScopeId, Delegation)> {
        let above = prefix.parent().unwrap_or_else(Name::root);
        let deadline = Instant::now() + within;
        let mut last = String::from("no parent replica answered");
        loop {
            for i in self.live() {
                let info = match self
                    .scope_info_at(i, ScopeTarget::Name(above.clone()))
                    .await
                {
                    Ok(info) => info,
                    Err(e) => {
                        last = format!("{e:#}");
                        continue;
                    }
                };
                let Some(d) = info
                    .delegations
                    .iter()
                    .find(|d| &d.referral.prefix == prefix && d.index == index)
                else {
                    continue;
                };
                match d.state {
                    DelegationState::Active | DelegationState::Merging { .. } => {
                        return Ok((info.descriptor.id, d.clone()))
                    }
                    DelegationState::Aborted => {
                        bail!(
                            "the delegation of {prefix} at index {index} was aborted (anchor {i})"
                        )
                    }
                    DelegationState::Frozen => last = format!("anchor {i}: still Frozen"),
                    DelegationState::Learned { .. } => {
                        last = format!("anchor {i}: only a learned range at {index}")
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("the delegation of {prefix} at index {index} was not Active within {within:?}; last: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until scope `id` has a leader whose `ScopeInfo` says it is active (accepts
    /// writes); returns the leader's index.
    pub async fn wait_scope_ready(&self, id: ScopeId, within: Duration) -> Result<usize> {
        wait_for(
            &format!("scope {id} to have an active leader"),
            within,
            || async move {
                let Some(l) = self.scope_leader(id).await? else {
                    return Ok(None);
                };
                let info = self.scope_info_at(l, ScopeTarget::Id(id)).await?;
                Ok(info.active.then_some(l))
            },
        )
        .await
    }

    /// Scope `parent`'s live (not Aborted) delegation of `prefix`, as anchor `i` has
    /// applied it (an operator's delegation or a split).
    pub async fn delegation_at(
        &self,
        i: usize,
        parent: ScopeId,
        prefix: &Name,
    ) -> Result<Option<Delegation>> {
        let info = self.scope_info_at(i, ScopeTarget::Id(parent)).await?;
        Ok(info
            .delegations
            .into_iter()
            .find(|d| &d.referral.prefix == prefix && d.state != DelegationState::Aborted))
    }

    /// Waits until one of `anchors` reports `parent`'s delegation of `prefix` (a split, or
    /// an operator's delegation) Active; returns it.
    pub async fn wait_split_active(
        &self,
        anchors: &[usize],
        parent: ScopeId,
        prefix: &str,
        within: Duration,
    ) -> Result<Delegation> {
        let prefix = Name::parse(prefix)?;
        wait_for(
            &format!("{prefix} to be split off {parent} and handed over"),
            within,
            || {
                let prefix = prefix.clone();
                async move {
                    for &i in anchors {
                        if let Some(d) = self.delegation_at(i, parent, &prefix).await? {
                            if d.state == DelegationState::Active {
                                return Ok(Some(d));
                            }
                        }
                    }
                    Ok(None)
                }
            },
        )
        .await
    }
}

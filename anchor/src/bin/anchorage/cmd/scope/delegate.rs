//! `anchorage scope delegate`: hand a subtree over to a new child scope on chosen anchors,
//! signed by k of the parent's admins, and wait until the child has taken over.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anchor::operator::Operator;
use anyhow::{bail, Context, Result};
use clap::Args;
use proto::limits::REFERRAL_TTL_S_DEFAULT;
use proto::{AnchorInfo, DelegationState, MemberSpec, Op, ScopeId};
use resolver::AnchorAddr;

use super::fetch::info_from;
use crate::cmd::parse_name;
use crate::keys::{admin_refusal, read_keys, sign_all};
use crate::render::delegated::Delegated;
use crate::render::short_id;
use crate::target::{anchor_list, Target};

/// How long `scope delegate` waits for the delegation to become active, by default.
pub const DELEGATE_WAIT_S: u64 = 60;

/// Pause between two polls of the parent while waiting for a delegation.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Arguments of `anchorage scope delegate`.
#[derive(Args, Debug)]
pub struct DelegateArgs {
    /// The child's prefix, e.g. /eu (strictly under the parent scope's prefix).
    prefix: String,
    /// The child's member anchors, multiaddrs ending in /p2p/<peer id> (comma-separated or
    /// repeated).
    #[arg(long = "anchors", value_delimiter = ',', required = true)]
    members: Vec<String>,
    /// The child's first policy (TOML).
    #[arg(long)]
    policy: PathBuf,
    /// An admin key of the parent scope (repeat for k-of-n; the first one is the writer).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
    /// How long resolvers may cache the referral, seconds.
    #[arg(long, default_value_t = REFERRAL_TTL_S_DEFAULT)]
    ttl: u32,
    /// Return once the delegation is committed, without waiting for the child to take over.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the delegation to become active, seconds.
    #[arg(long, default_value_t = DELEGATE_WAIT_S)]
    wait_s: u64,
    #[command(flatten)]
    target: Target,
}

/// Asks each chosen anchor for its status: who it is, where it listens, its labels.
pub async fn member_specs(addrs: &[AnchorAddr]) -> Result<Vec<MemberSpec>> {
    let conn = Operator::new()?;
    let mut out = Vec::new();
    for a in addrs {
        let s = conn
            .status(a)
            .await
            .with_context(|| format!("asking anchor {a} for its status"))?;
        if s.peer_id != a.peer.to_string() {
            bail!(
                "anchor {a} answered as {}: the address names another peer",
                s.peer_id
            );
        }
        let addrs = if s.addrs.is_empty() {
            a.to_info().addrs
        } else {
            s.addrs
        };
        out.push(MemberSpec {
            anchor: AnchorInfo {
                peer_id: s.peer_id,
                addrs,
            },
            labels: s.labels,
        });
    }
    Ok(out)
}

/// Runs `anchorage scope delegate`.
pub async fn run(args: DelegateArgs) -> Result<()> {
    let target = &args.target;
    let prefix = parse_name(&args.prefix)?;
    let policy_toml = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    policy::Policy::from_toml(&policy_toml)
        .with_context(|| format!("the child policy {} is invalid", args.policy.display()))?;
    let keys = read_keys(&args.sign)?;
    let addrs = anchor_list(&args.members)?;
    if addrs.is_empty() {
        bail!("--anchors lists no anchor");
    }
    let members = member_specs(&addrs).await?;
    let client = target.client().await?;
    let parent = client
        .locate(&prefix)
        .await
        .with_context(|| format!("finding the scope that governs {prefix}"))?;
    let op = Op::Delegate {
        prefix: prefix.clone(),
        members: members.clone(),
        policy_toml,
        referral_ttl_s: args.ttl,
    };
    let signed = sign_all(&client, op, &keys)?;
    let index = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&format!("delegating {prefix}"), e))?;
    let child = ScopeId::child(&parent.scope, &prefix, index);
    let state = if args.no_wait {
        DelegationState::Frozen
    } else {
        if !target.json {
            eprintln!(
                "delegation committed in scope {} ({}) at v{index}; waiting for scope {} to take over…",
                parent.prefix,
                short_id(&parent.scope),
                short_id(&child)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.wait_s);
        wait_delegation(&client, &parent.members, parent.scope, index, deadline)
            .await
            .with_context(|| {
                format!(
                    "delegation of {prefix} committed at v{index} in scope {}, but it did not \
                     become active (see `anchorage scope show {}`)",
                    parent.prefix, parent.prefix
                )
            })?
    };
    let done = Delegated {
        prefix: &prefix,
        scope: child,
        parent: parent.scope,
        parent_prefix: &parent.prefix,
        index,
        state,
        members: &members,
    };
    if target.json {
        println!("{}", done.json());
    } else {
        for l in done.lines() {
            println!("{l}");
        }
    }
    Ok(())
}

/// Polls the parent's members until the delegation committed at `index` is active (Ok),
/// aborted (error) or the deadline passes (error).
pub(super) async fn wait_delegation(
    client: &resolver::Client,
    parent_members: &[AnchorInfo],
    parent: ScopeId,
    index: u64,
    deadline: Instant,
) -> Result<DelegationState> {
    loop {
        let last = match info_from(client, parent_members, parent).await {
            Ok(info) => match info.delegations.iter().find(|d| d.index == index) {
                Some(d) if d.state == DelegationState::Active => return Ok(d.state),
                Some(d) if d.state == DelegationState::Aborted => bail!(
                    "the delegation was aborted: the child's members could not be seeded \
                     (check that they run and can reach each other; the prefix is writable in \
                     the parent again)"
                ),
                Some(_) => "still frozen: seeding the child's members".to_string(),
                None => format!("the parent does not list a delegation at v{index} yet"),
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            bail!("gave up waiting: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

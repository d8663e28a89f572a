//! `anchorage scope merge`: an operator's merge of a scope back into the scope it was split
//! off (its parent, or the range right before it), signed by k of the parent's admins. The
//! same execution as the scopes' automatic merges; waits until the part is taken back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use proto::{DelegationState, Op, ScopeDescriptor};
use serde_json::json;

use super::delegate::DELEGATE_WAIT_S;
use super::fetch::info_from;
use crate::cmd::parse_name;
use crate::keys::{admin_refusal, read_keys, sign_all};
use crate::render::short_id;
use crate::target::Target;

/// How often the parent is asked whether the merge finished.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Arguments of `anchorage scope merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// A name governed by the scope to merge back (e.g. /shop/eu, or a name in a range
    /// scope): that scope's names return to the scope it was split off.
    name: String,
    /// An admin key of the parent scope (repeat for k-of-n; the first one is the writer).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
    /// Return once the merge is committed in the parent, without waiting for it to finish.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the merge to finish, seconds.
    #[arg(long, default_value_t = DELEGATE_WAIT_S)]
    wait_s: u64,
    #[command(flatten)]
    target: Target,
}

/// Where a scope's names start: its range's first name, or its prefix.
fn first_name(d: &ScopeDescriptor) -> proto::Name {
    d.range.start.clone().unwrap_or_else(|| d.prefix.clone())
}

/// Runs `anchorage scope merge`.
pub async fn run(args: MergeArgs) -> Result<()> {
    let target = &args.target;
    let name = parse_name(&args.name)?;
    let keys = read_keys(&args.sign)?;
    let client = target.client().await?;
    let info = client
        .scope_info(&name)
        .await
        .with_context(|| format!("finding the scope that governs {name}"))?;
    let child = info.descriptor;
    let Some(parent) = info.parent else {
        bail!(
            "{name} is governed by the root scope, which was split off no scope: nothing to merge it into"
        );
    };
    let part = first_name(&child);
    let where_ = format!("{} {}", child.prefix, child.range);
    let op = Op::Merge {
        scope: first_name(&parent),
        part: part.clone(),
    };
    let signed = sign_all(&client, op, &keys)?;
    let index = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&format!("merging {where_} back"), e))?;
    let state = if args.no_wait {
        "merging"
    } else {
        if !target.json {
            eprintln!(
                "merge committed in scope {} ({}) at v{index}; waiting for scope {} to hand its names back…",
                parent.prefix,
                short_id(&parent.id),
                short_id(&child.id)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.wait_s);
        loop {
            let last = match info_from(&client, &parent.members, parent.id).await {
                Ok(p) => match p.delegations.iter().find(|d| d.referral.scope == child.id) {
                    None => break "merged",
                    Some(d) if d.state == DelegationState::Active => bail!(
                        "the merge of {where_} was aborted (see the parent's log and \
                         `anchorage scope show {}`): the scope keeps its names",
                        parent.prefix
                    ),
                    Some(_) => "still merging".to_string(),
                },
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() + POLL_INTERVAL > deadline {
                bail!(
                    "the merge of {where_} committed at v{index} in scope {}, but it did not \
                     finish in time (see `anchorage scope show {}`): {last}",
                    parent.prefix,
                    parent.prefix
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    if target.json {
        let v = json!({
            "scope": child.id.to_hex(),
            "part": part.to_string(),
            "into": parent.id.to_hex(),
            "index": index,
            "state": state,
        });
        println!("{v}");
    } else {
        println!(
            "{where_}: scope {} {state} back into scope {} ({}) at v{index}",
            short_id(&child.id),
            parent.prefix,
            short_id(&parent.id)
        );
    }
    Ok(())
}

//! `anchorage scope move`, `scope add-anchor`, `scope remove-anchor`: an operator's change of
//! the anchors that hold a scope, signed by k of the scope's admins (`Op::Members`). The
//! scope's leader carries it out (learner, catch-up, voters, the parent told, the leaving
//! replicas dropped); the command waits until the scope's descriptor lists the new members
//! and the anchors that left vote no more.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use proto::{MemberSpec, Op, ScopeDescriptor};
use serde_json::json;

use super::delegate::{member_specs, DELEGATE_WAIT_S};
use super::fetch::info_from;
use crate::cmd::parse_name;
use crate::keys::{admin_refusal, read_keys, sign_all};
use crate::render::short_id;
use crate::target::{anchor_list, Target};

/// How often the scope is asked whether the change finished.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a member change does, from the command line.
#[derive(Args, Debug)]
pub struct ChangeArgs {
    /// A name the scope governs (its prefix, e.g. /eu).
    scope: String,
    /// An admin key of the scope (repeat for k-of-n; the first one is the writer).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
    /// Return once the change is committed, without waiting for it to finish.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the change to finish, seconds.
    #[arg(long, default_value_t = DELEGATE_WAIT_S * 3)]
    wait_s: u64,
    #[command(flatten)]
    target: Target,
}

/// Arguments of `anchorage scope move`.
#[derive(Args, Debug)]
pub struct MoveArgs {
    /// The member anchor that leaves (multiaddr ending in /p2p/<peer id>, or a peer id).
    #[arg(long)]
    from: String,
    /// The anchor that joins (multiaddr ending in /p2p/<peer id>).
    #[arg(long)]
    to: String,
    #[command(flatten)]
    change: ChangeArgs,
}

/// Arguments of `anchorage scope add-anchor`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The anchor that joins (multiaddr ending in /p2p/<peer id>).
    #[arg(long)]
    anchor: String,
    #[command(flatten)]
    change: ChangeArgs,
}

/// Arguments of `anchorage scope remove-anchor`.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The member anchor that leaves (multiaddr ending in /p2p/<peer id>, or a peer id).
    #[arg(long)]
    anchor: String,
    #[command(flatten)]
    change: ChangeArgs,
}

/// Runs `anchorage scope move`.
pub async fn run_move(args: MoveArgs) -> Result<()> {
    let add = joining(&args.to).await?;
    run(args.change, add, vec![peer_of(&args.from)?]).await
}

/// Runs `anchorage scope add-anchor`.
pub async fn run_add(args: AddArgs) -> Result<()> {
    let add = joining(&args.anchor).await?;
    run(args.change, add, Vec::new()).await
}

/// Runs `anchorage scope remove-anchor`.
pub async fn run_remove(args: RemoveArgs) -> Result<()> {
    run(args.change, Vec::new(), vec![peer_of(&args.anchor)?]).await
}

/// The anchor that joins, with its labels, asked from the anchor itself.
async fn joining(addr: &str) -> Result<Vec<MemberSpec>> {
    let addrs = anchor_list(&[addr.to_string()])?;
    member_specs(&addrs).await
}

/// A peer id, from a peer id or a multiaddr ending in /p2p/<peer id>.
fn peer_of(text: &str) -> Result<String> {
    let last = text.rsplit('/').next().unwrap_or(text);
    last.parse::<libp2p::PeerId>()
        .map(|p| p.to_base58())
        .with_context(|| format!("{text:?} is neither a peer id nor a multiaddr ending in one"))
}

/// Where a scope's names start: its range's first name, or its prefix.
fn first_name(d: &ScopeDescriptor) -> proto::Name {
    d.range.start.clone().unwrap_or_else(|| d.prefix.clone())
}

async fn run(args: ChangeArgs, add: Vec<MemberSpec>, remove: Vec<String>) -> Result<()> {
    let target = &args.target;
    let name = parse_name(&args.scope)?;
    let keys = read_keys(&args.sign)?;
    let client = target.client().await?;
    let info = client
        .scope_info(&name)
        .await
        .with_context(|| format!("finding the scope that governs {name}"))?;
    let scope = info.descriptor;
    let op = Op::Members {
        scope: first_name(&scope),
        add: add.clone(),
        remove: remove.clone(),
    };
    let what = format!("changing the members of {} {}", scope.prefix, scope.range);
    let signed = sign_all(&client, op, &keys)?;
    let index = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&what, e))?;
    let wanted = |d: &ScopeDescriptor| {
        add.iter()
            .all(|a| d.members.iter().any(|m| m.peer_id == a.anchor.peer_id))
            && remove
                .iter()
                .all(|r| d.members.iter().all(|m| &m.peer_id != r))
    };
    let mut members = scope.members.clone();
    members.extend(add.iter().map(|a| a.anchor.clone()));
    let state = if args.no_wait {
        "changing"
    } else {
        if !target.json {
            eprintln!(
                "member change committed in scope {} ({}) at v{index}; waiting for its leader to carry it out…",
                scope.prefix,
                short_id(&scope.id)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.wait_s);
        loop {
            let last = match info_from(&client, &members, scope.id).await {
                Ok(i) if i.status.last_applied.unwrap_or(0) < index => {
                    "the member asked has not applied the change yet".to_string()
                }
                Ok(i) if i.member_change.is_none() && wanted(&i.descriptor) => {
                    // Done once the members that left vote no more.
                    if remove.iter().all(|r| !i.status.members.contains(r)) {
                        break "changed";
                    }
                    "the members that leave still vote".to_string()
                }
                Ok(i) if i.member_change.is_none() && !wanted(&i.descriptor) => bail!(
                    "the member change was given up (see `anchorage scope show {}`): the \
                     scope keeps its members",
                    scope.prefix
                ),
                Ok(_) => "still changing".to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() + POLL_INTERVAL > deadline {
                bail!(
                    "the member change committed at v{index} in scope {}, but it did not \
                     finish in time (see `anchorage scope show {}`): {last}",
                    scope.prefix,
                    scope.prefix
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    let added: Vec<&str> = add.iter().map(|a| a.anchor.peer_id.as_str()).collect();
    if target.json {
        let v = json!({
            "scope": scope.id.to_hex(),
            "added": added,
            "removed": remove,
            "index": index,
            "state": state,
        });
        println!("{v}");
    } else {
        println!(
            "scope {} ({}): {state} at v{index}; joined: {}; left: {}",
            scope.prefix,
            short_id(&scope.id),
            if added.is_empty() {
                "-".into()
            } else {
                added.join(", ")
            },
            if remove.is_empty() {
                "-".into()
            } else {
                remove.join(", ")
            },
        );
    }
    Ok(())
}

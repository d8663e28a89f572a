//! `anchorage scope split`: an operator's split of a scope onto its own anchors, signed by k
//! of its admins: a subtree becomes a scope of its own, or (`--at`) the scope's range is cut
//! and the names from the cut to its end become a scope of their own. The same execution
//! as the scope's automatic splits; waits until the new scope has taken over.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use proto::{DelegationState, KeyRange, Op, ScopeId};
use serde_json::json;

use super::delegate::{wait_delegation, DELEGATE_WAIT_S};
use crate::cmd::parse_name;
use crate::keys::{admin_refusal, read_keys, sign_all};
use crate::render::short_id;
use crate::target::Target;

/// Arguments of `anchorage scope split`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    /// Without --at: the subtree to split off the scope that governs it (e.g. /shop/eu).
    /// With --at: a name governed by the scope to cut.
    prefix: String,
    /// Cut the scope's range at this name (brought up to its label right below the scope's
    /// prefix): the names from there to the scope's end move to a new scope.
    #[arg(long)]
    at: Option<String>,
    /// An admin key of the scope (repeat for k-of-n; the first one is the writer).
    #[arg(long = "sign", required = true)]
    sign: Vec<PathBuf>,
    /// Return once the split is committed, without waiting for the new scope to take over.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the new scope to take over, seconds.
    #[arg(long, default_value_t = DELEGATE_WAIT_S)]
    wait_s: u64,
    #[command(flatten)]
    target: Target,
}

/// Runs `anchorage scope split`.
pub async fn run(args: SplitArgs) -> Result<()> {
    let target = &args.target;
    let prefix = parse_name(&args.prefix)?;
    let keys = read_keys(&args.sign)?;
    let client = target.client().await?;
    let scope = client
        .locate(&prefix)
        .await
        .with_context(|| format!("finding the scope that governs {prefix}"))?;
    let (at, by_range) = match &args.at {
        None => (prefix.clone(), false),
        Some(at) => {
            let at = parse_name(at)?;
            let governing = client
                .locate(&at)
                .await
                .with_context(|| format!("finding the scope that governs {at}"))?;
            if governing.scope != scope.scope {
                bail!(
                    "{at} is governed by scope {} ({}), not by the scope of {prefix} ({}): \
                     a cut must lie inside the scope it cuts",
                    governing.prefix,
                    short_id(&governing.scope),
                    short_id(&scope.scope)
                );
            }
            (at, true)
        }
    };
    let first = if by_range {
        KeyRange::boundary(&scope.prefix, &at)
            .with_context(|| format!("{at} is not below the scope's prefix {}", scope.prefix))?
    } else {
        at.clone()
    };
    let op = Op::Split {
        at: at.clone(),
        by_range,
    };
    let signed = sign_all(&client, op, &keys)?;
    let index = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&format!("splitting at {at}"), e))?;
    let child = ScopeId::child(&scope.scope, &first, index);
    let part = if by_range {
        format!("the names of {} from {first} on", scope.prefix)
    } else {
        first.to_string()
    };
    let state = if args.no_wait {
        DelegationState::Frozen
    } else {
        if !target.json {
            eprintln!(
                "split committed in scope {} ({}) at v{index}; waiting for scope {} to take over…",
                scope.prefix,
                short_id(&scope.scope),
                short_id(&child)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.wait_s);
        wait_delegation(&client, &scope.members, scope.scope, index, deadline)
            .await
            .with_context(|| {
                format!(
                    "the split of {part} committed at v{index} in scope {}, but the new scope \
                     did not take over (see `anchorage scope show {}`)",
                    scope.prefix, scope.prefix
                )
            })?
    };
    let state_text = match state {
        DelegationState::Active => "active",
        DelegationState::Frozen => "frozen (being handed over)",
        DelegationState::Aborted => "aborted",
        DelegationState::Merging { .. } => "merging back",
        DelegationState::Learned { .. } => "learned (a range of a child)",
    };
    if target.json {
        let v = json!({
            "scope": child.to_hex(),
            "part": part,
            "by_range": by_range,
            "parent": scope.scope.to_hex(),
            "index": index,
            "state": state_text,
        });
        println!("{v}");
    } else {
        println!(
            "{part}: split off scope {} ({}) at v{index} into scope {} on the same anchors, {state_text}",
            scope.prefix,
            short_id(&scope.scope),
            short_id(&child)
        );
    }
    Ok(())
}

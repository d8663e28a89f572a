//! `anchorage policy get` and `policy set`: read a scope's policy exactly as stored, and
//! replace it, signed by k of the scope's admins.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use proto::Op;
use serde_json::json;

use super::parse_name;
use crate::keys::{admin_refusal, read_keys, sign_all};
use crate::render::short_id;
use crate::target::Target;

/// `anchorage policy ...`
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print the policy (TOML) of the scope governing PREFIX, exactly as stored.
    Get {
        /// A name; the policy of the scope governing it is printed.
        prefix: String,
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
    /// Replace the policy of the scope whose prefix is PREFIX, signed by k of its admins.
    Set {
        /// The scope's prefix.
        prefix: String,
        /// The new policy (TOML).
        file: PathBuf,
        /// An admin key (repeat for k-of-n).
        #[arg(long = "sign", required = true)]
        sign: Vec<PathBuf>,
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
}

/// Runs `anchorage policy ...`.
pub async fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Get { prefix, target } => policy_get(&target, &prefix).await,
        PolicyCmd::Set {
            prefix,
            file,
            sign,
            target,
        } => policy_set(&target, &prefix, &file, &sign).await,
    }
}

async fn policy_get(target: &Target, prefix: &str) -> Result<()> {
    let client = target.client().await?;
    let name = parse_name(prefix)?;
    let info = client
        .scope_info(&name)
        .await
        .with_context(|| format!("asking for the scope governing {name}"))?;
    let toml = info.policy_toml.as_deref().ok_or_else(|| {
        anyhow!(
            "scope {} ({}) did not return its policy",
            info.descriptor.prefix,
            short_id(&info.descriptor.id)
        )
    })?;
    if target.json {
        println!(
            "{}",
            json!({
                "scope": info.descriptor.id.to_hex(),
                "prefix": info.descriptor.prefix.to_string(),
                "policy_toml": toml,
            })
        );
    } else {
        print!("{toml}");
        if !toml.ends_with('\n') {
            println!();
        }
    }
    Ok(())
}

async fn policy_set(
    target: &Target,
    prefix: &str,
    file: &std::path::Path,
    sign: &[PathBuf],
) -> Result<()> {
    let prefix = parse_name(prefix)?;
    let policy_toml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    policy::Policy::from_toml(&policy_toml)
        .with_context(|| format!("the policy {} is invalid", file.display()))?;
    let keys = read_keys(sign)?;
    let client = target.client().await?;
    let op = Op::SetPolicy {
        prefix: prefix.clone(),
        policy_toml,
    };
    let signed = sign_all(&client, op, &keys)?;
    let version = client
        .submit(signed)
        .await
        .map_err(|e| admin_refusal(&format!("the policy change of {prefix}"), e))?;
    if target.json {
        println!(
            "{}",
            json!({ "prefix": prefix.to_string(), "version": version, "signatures": keys.len() })
        );
    } else {
        println!(
            "policy of {prefix} committed at version {version} ({} signature(s))",
            keys.len()
        );
    }
    Ok(())
}

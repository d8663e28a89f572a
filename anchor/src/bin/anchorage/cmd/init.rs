//! `anchorage init`: create the root scope on the given anchors (once per cluster).

use std::path::Path;

use anchor::operator::Operator;
use anyhow::{Context, Result};

use crate::target::Target;

/// Runs `anchorage init`.
pub async fn run(target: &Target, policy: Option<&Path>) -> Result<()> {
    let addrs = target.anchor_addrs()?;
    let policy_toml = match policy {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => policy::Policy::development(None).to_toml(),
    };
    let id = Operator::new()?.init_root(&addrs, policy_toml).await?;
    if target.json {
        println!(
            "{}",
            serde_json::json!({ "root_scope": id.to_hex(), "members": addrs.len() })
        );
    } else {
        println!("root scope {id} created on {} anchors", addrs.len());
    }
    Ok(())
}

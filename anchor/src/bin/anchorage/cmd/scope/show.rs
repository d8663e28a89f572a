//! `anchorage scope show`: one scope, by prefix or by (a leading part of) its id.

use anyhow::{bail, Context, Result};
use proto::msg::ScopeInfo;
use serde_json::json;

use super::fetch::fetch_tree;
use crate::cmd::parse_name;
use crate::render::scope::{delegation_json, delegation_lines, info_json, show_lines};
use crate::render::tree::{find_in_tree, Found};
use crate::target::Target;

/// Runs `anchorage scope show`.
pub async fn run(target: &Target, what: &str) -> Result<()> {
    let client = target.client().await?;
    if what.starts_with('/') {
        let name = parse_name(what)?;
        let info = client
            .scope_info(&name)
            .await
            .with_context(|| format!("asking for the scope governing {name}"))?;
        return print_show(target, &info);
    }
    let query = what.to_ascii_lowercase();
    if query.len() < 4 || query.len() > 32 || !query.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{what:?} is neither a prefix (starting with '/') nor a scope id (4 to 32 hex digits)"
        );
    }
    let tree = fetch_tree(&client, &target.trust_infos()?).await?;
    let mut found = Vec::new();
    find_in_tree(&tree, &query, &mut found);
    match found.as_slice() {
        [] => bail!("no scope with id {what} in the hierarchy (see `anchorage scope tree`)"),
        [Found::Scope(info)] => print_show(target, info),
        [Found::Delegation { parent, delegation }] => {
            if target.json {
                let mut v = delegation_json(delegation);
                if let Some(o) = v.as_object_mut() {
                    o.insert("parent".into(), json!(parent.descriptor.id.to_hex()));
                    if !delegation.policy_toml.is_empty() {
                        o.insert("policy_toml".into(), json!(delegation.policy_toml));
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for l in delegation_lines(parent, delegation) {
                    println!("{l}");
                }
            }
            Ok(())
        }
        many => bail!(
            "{what} matches {} scopes; give more digits of the id",
            many.len()
        ),
    }
}

fn print_show(target: &Target, info: &ScopeInfo) -> Result<()> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(&info_json(info))?);
    } else {
        for l in show_lines(info) {
            println!("{l}");
        }
    }
    Ok(())
}

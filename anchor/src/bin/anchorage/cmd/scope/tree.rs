//! `anchorage scope tree`: the scope hierarchy from the root, with members, leader, names
//! and load.

use anyhow::Result;

use super::fetch::fetch_tree;
use crate::render::tree::{render_tree, tree_json};
use crate::target::Target;

/// Runs `anchorage scope tree`.
pub async fn run(target: &Target) -> Result<()> {
    let client = target.client().await?;
    let tree = fetch_tree(&client, &target.trust_infos()?).await?;
    if target.json {
        println!("{}", serde_json::to_string_pretty(&tree_json(&tree))?);
    } else {
        for line in render_tree(&tree) {
            println!("{line}");
        }
    }
    Ok(())
}

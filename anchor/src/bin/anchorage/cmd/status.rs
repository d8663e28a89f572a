//! `anchorage status`: each given anchor's scopes, roles, terms and indexes.

use anchor::operator::Operator;
use anyhow::Result;
use proto::msg::AnchorStatus;

use crate::render::status::status_lines;
use crate::target::Target;

/// Runs `anchorage status`.
pub async fn run(target: &Target) -> Result<()> {
    let conn = Operator::new()?;
    let mut all = Vec::new();
    for a in target.anchor_addrs()? {
        match conn.status(&a).await {
            Ok(s) => all.push(serde_json::to_value(&s)?),
            Err(e) => {
                all.push(serde_json::json!({ "anchor": a.to_string(), "error": e.to_string() }))
            }
        }
    }
    if target.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for s in &all {
        if let Some(e) = s.get("error") {
            println!(
                "{}: unreachable: {}",
                s["anchor"].as_str().unwrap_or("?"),
                e.as_str().unwrap_or("?")
            );
            continue;
        }
        let s: AnchorStatus = serde_json::from_value(s.clone())?;
        for l in status_lines(&s) {
            println!("{l}");
        }
    }
    Ok(())
}

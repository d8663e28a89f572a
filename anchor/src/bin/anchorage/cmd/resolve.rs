//! `anchorage resolve NAME`, and with `--trace` every hop of the walk like `dig +trace`.

use anyhow::{Context, Result};
use proto::ReadLevel;
use serde_json::json;

use super::parse_name;
use crate::render::answer::{answer_json, answer_lines};
use crate::render::trace::{hop_json, trace_lines};
use crate::target::Target;

/// The read level the flags ask for (`--linearizable` and `--replica` exclude each other).
pub fn level(linearizable: bool, replica: bool) -> ReadLevel {
    if linearizable {
        ReadLevel::Linearizable
    } else if replica {
        ReadLevel::Replica
    } else {
        ReadLevel::Cached
    }
}

/// Runs `anchorage resolve NAME`.
pub async fn run(target: &Target, name: &str, level: ReadLevel) -> Result<()> {
    let client = target.client().await?;
    let set = client.resolve(name, level).await?;
    if target.json {
        println!("{}", answer_json(name, &set));
    } else {
        for l in answer_lines(name, &set) {
            println!("{l}");
        }
    }
    Ok(())
}

/// Runs `anchorage resolve NAME --trace`.
pub async fn traced(target: &Target, name: &str, level: ReadLevel) -> Result<()> {
    let parsed = parse_name(name)?;
    let client = target.client().await?;
    let (result, trace) = client.resolve_traced(&parsed, level).await;
    if target.json {
        let mut v = json!({
            "name": parsed.to_string(),
            "level": level.to_string(),
            "hops": trace.hops.iter().map(hop_json).collect::<Vec<_>>(),
        });
        if let Some(o) = v.as_object_mut() {
            match &result {
                Ok(set) => o.insert("answer".into(), answer_json(&parsed.to_string(), set)),
                Err(e) => o.insert("error".into(), json!(e.to_string())),
            };
        }
        println!("{v}");
    } else {
        for l in trace_lines(&trace) {
            println!("{l}");
        }
        if let Ok(set) = &result {
            println!();
            for l in answer_lines(&parsed.to_string(), set) {
                println!("{l}");
            }
        }
    }
    result
        .map(|_| ())
        .with_context(|| format!("resolving {parsed}"))
}

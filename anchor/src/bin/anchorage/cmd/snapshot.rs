//! `anchorage snapshot`: have each given anchor snapshot its scopes and purge its log.

use anchor::operator::Operator;
use anyhow::Result;

use crate::target::Target;

/// Runs `anchorage snapshot`.
pub async fn run(target: &Target) -> Result<()> {
    let conn = Operator::new()?;
    for a in target.anchor_addrs()? {
        conn.snapshot(&a).await?;
        println!("{a}: snapshot built, log purged");
    }
    Ok(())
}

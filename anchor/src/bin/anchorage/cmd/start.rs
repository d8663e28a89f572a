//! `anchorage start --config anchor.toml`: run one anchor until Ctrl-C or SIGTERM.

use std::path::Path;

use anchor::{Anchor, AnchorConfig};
use anyhow::Result;

use crate::signal::wait_for_signal;

/// Runs `anchorage start`.
pub async fn run(config: &Path) -> Result<()> {
    let cfg = AnchorConfig::load(config)?;
    let anchor = Anchor::start(cfg).await?;
    println!(
        "anchor {} listening; dial it as {}",
        anchor.info().peer_id,
        anchor.dial_addr()
    );
    if let Some(http) = anchor.http_addr() {
        println!("metrics at http://{http}/metrics");
    }
    wait_for_signal().await;
    anchor.shutdown().await;
    Ok(())
}

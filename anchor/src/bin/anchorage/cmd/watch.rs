//! `anchorage watch PREFIX`: every committed change under a prefix as it happens, following
//! the prefix when it moves to a child scope.

use anyhow::{Context, Result};
use clap::Args;
use resolver::WatchEvent;

use super::parse_name;
use crate::render::watch::{watch_json, watch_line};
use crate::target::Target;

/// Arguments of `anchorage watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Names under this prefix.
    prefix: String,
    /// Report every change after this version (default: from now on).
    #[arg(long = "from")]
    from: Option<u64>,
    /// Stop after this many changes (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// Runs `anchorage watch`.
pub async fn run(args: WatchArgs) -> Result<()> {
    let target = &args.target;
    let prefix = parse_name(&args.prefix)?;
    let client = target.client().await?;
    let mut w = match args.from {
        Some(after) => client.watch_from(&prefix, after).await,
        None => client.watch(&prefix.to_string()).await,
    }
    .with_context(|| format!("watching {prefix}"))?;
    if args.count == Some(0) {
        return Ok(());
    }
    let mut changes = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = w.next() => next,
        };
        let event = match next {
            None => return Ok(()),
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "watching {prefix} (resume with --from {})",
                    w.position()
                )))
            }
        };
        if target.json {
            println!("{}", watch_json(&event));
        } else {
            println!("{}", watch_line(&event));
        }
        if matches!(event, WatchEvent::Changed(_)) {
            changes += 1;
            if args.count.is_some_and(|n| changes >= n) {
                return Ok(());
            }
        }
    }
}

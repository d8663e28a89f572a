//! Waits with a deadline: [`wait_for`] polls a condition every [`POLL`] (no bare sleeps as
//! waits).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Pause between two polls of [`wait_for`].
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `cond` every [`POLL`] until it returns `Ok(Some(v))` (then returns `v`) or the
/// deadline passes (then fails, quoting the last `Err`/`None` and `what`). Errors from
/// `cond` are taken as "not yet".
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut cond: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last;
    loop {
        match cond().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "condition not met".into(),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

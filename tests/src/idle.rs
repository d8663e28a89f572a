//! What the idle-scopes bench (`idle_scopes`) waits for and times across a cluster of
//! anchor processes: every replica asleep (and, with hibernation on, hibernated), and the
//! failover of the anchor that leads a third of them.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{metric_value, Cluster};

/// Kills anchor 0 and waits until the other anchors lead every group between them.
pub async fn failover(cluster: &mut Cluster, groups: usize, every: Duration) -> Result<()> {
    let led = metric_value(
        &cluster.metrics(0).await?,
        "anchorage_scopes",
        &[("role", "leader")],
    );
    let killed = Instant::now();
    cluster.kill(0);
    let others: Vec<usize> = (1..cluster.len()).collect();
    let mut last_print = Instant::now();
    let mut first_half = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let mut leaders = 0.0;
        for &i in &others {
            // A loaded anchor may be slow to answer; a failed scrape counts as no progress.
            if let Ok(text) = cluster.metrics(i).await {
                leaders += metric_value(&text, "anchorage_scopes", &[("role", "leader")]);
            }
        }
        let lost = groups as f64 - leaders;
        if first_half.is_none() && lost <= led / 2.0 {
            first_half = Some(killed.elapsed());
        }
        if leaders as usize >= groups {
            break;
        }
        if killed.elapsed() > Duration::from_secs(120) {
            bail!("{lost} groups still without a leader 120 s after killing anchor 0");
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            println!(
                "  {:.1} s: {lost} groups without a leader",
                killed.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
    }
    println!(
        "\nfailover: killed anchor 0 (leader of {led} groups); half of them had a new leader after {:.2} s, all after {:.2} s (polled every {:.1} s)",
        first_half.unwrap_or_default().as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        every.as_secs_f64()
    );
    Ok(())
}

/// Replicas asleep on all anchors together (leaders and followers), and how many of them
/// hibernate.
pub async fn asleep_hibernated(cluster: &Cluster) -> Result<(f64, f64)> {
    let (mut n, mut h) = (0.0, 0.0);
    for i in 0..cluster.len() {
        let text = cluster.metrics(i).await?;
        n += metric_value(&text, "anchorage_scopes_asleep", &[]);
        h += metric_value(&text, "anchorage_scopes_hibernated", &[]);
    }
    Ok((n, h))
}

/// Replicas asleep on all anchors together (leaders and followers).
pub async fn asleep(cluster: &Cluster) -> Result<f64> {
    Ok(asleep_hibernated(cluster).await?.0)
}

/// Waits until every replica of every group sleeps (bounded by `wait_s`).
pub async fn wait_asleep(
    cluster: &Cluster,
    groups: usize,
    poll: Duration,
    wait_s: u64,
    hibernates: bool,
) -> Result<()> {
    let started = Instant::now();
    let all = (groups * cluster.len()) as f64;
    let mut asleep_at = None;
    let mut tick = tokio::time::interval(poll);
    loop {
        tick.tick().await;
        let (n, h) = asleep_hibernated(cluster).await?;
        if n >= all && asleep_at.is_none() {
            asleep_at = Some(started.elapsed());
        }
        // With hibernation on, every replica hibernates too: wait for that as well.
        if n >= all && (h >= all || !hibernates) {
            break;
        }
        if started.elapsed() > Duration::from_secs(wait_s) {
            for i in 0..cluster.len() {
                let text = cluster.metrics(i).await?;
                for line in text.lines().filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("hibernat") || l.contains("wakes") || l.contains("asleep"))
                }) {
                    println!("anchor {i}: {line}");
                }
            }
            bail!("only {n} of {all} replicas asleep ({h} hibernated) after {wait_s} s");
        }
    }
    println!(
        "every replica asleep {:.1} s after settling{}",
        asleep_at.unwrap_or_default().as_secs_f64(),
        if !hibernates {
            String::new()
        } else {
            format!(
                ", hibernated {:.1} s after",
                started.elapsed().as_secs_f64()
            )
        }
    );
    Ok(())
}

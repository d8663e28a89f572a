//! `split_bench`: what a range split costs while it runs, on three real `anchorage`
//! processes on loopback (`docs/benchmarks.md`, "A range split under write load").
//!
//! The root scope is loaded with `--names` flat names (`/u0000000`, ...) of `--value-bytes`
//! each while automatic splits are off. Then writers keep overwriting names of the left
//! quarter and of the right quarter (`--writers` tasks per half) and a reader resolves names
//! of both halves linearizably, and an admin turns `[split] auto` on with `names_max` just
//! under the name count: the root's leader decides a range split at the median by itself,
//! and the bench records
//! - decision: from the policy's commit to the split entry (the root reports the range
//!   delegation Frozen), which includes the splitter's 1 s tick and its size scan;
//! - hand-over: from Frozen to Active (each member built the right half from its own
//!   replica, the new scope elected a leader, the root committed the hand-over);
//! - both halves writable: from Frozen to the first acknowledged write to the right half
//!   that started after the split entry;
//! - write latency (p50/p99/max) of each half's writers during the split (from the policy
//!   change to 2 s after the hand-over), and before it, as the stall the split causes;
//! - linearizable resolve latency during the split;
//! - resident memory of each anchor before, after, and 30 s after the split.
//!
//! Uses `target/release/anchorage` when it exists and `ANCHORAGE_BIN` is not set. Bounded by
//! `--timeout-s`; the anchors are children of this process and die with it.
//!
//! ```sh
//! cargo build --release -p anchor -p anchorage-tests
//! target/release/split_bench --names 100000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchor::config::{RaftSettings, StorageSettings};
use anchorage_tests::proto::msg::ScopeTarget;
use anchorage_tests::proto::{DelegationState, Name, Op, ReadLevel, Record, ScopeId};
use anchorage_tests::resolver::ClientConfig;
use anchorage_tests::{policy_toml, random_key, Cluster, Options};
use anyhow::{bail, Context, Result};
use clap::Parser;
use ed25519_dalek::SigningKey;

/// Range split figures under write load.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Names loaded into the root before the split.
    #[arg(long, default_value_t = 100_000)]
    names: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Concurrent loaders.
    #[arg(long, default_value_t = 64)]
    loaders: usize,
    /// Writers per half during the split.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Give up after this many seconds overall.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Copy the anchors' logs into this directory at the end.
    #[arg(long)]
    keep_logs: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout_s);
    anchorage_tests::bench_main("split_bench", limit, run(args))
}

/// One timed operation: when it started and how long it took.
#[derive(Clone, Copy, Debug)]
struct Op1 {
    at: Instant,
    took: Duration,
    ok: bool,
}

type Log = Arc<Mutex<Vec<Op1>>>;

fn name_of(k: usize) -> String {
    format!("/u{k:07}")
}

async fn run(args: Args) -> Result<()> {
    let d = RaftSettings::default();
    let options = Options {
        heartbeat_ms: d.heartbeat_ms,
        election_min_ms: d.election_min_ms,
        election_max_ms: d.election_max_ms,
        snapshot_logs: d.snapshot_logs,
        logs_kept_after_snapshot: d.logs_kept_after_snapshot,
        cache_bytes: StorageSettings::default().cache_bytes,
        ..Options::default()
    };
    println!(
        "split_bench: 3 anchors, {} names of {} B, {} writers per half, heartbeat {} ms, election {}-{} ms, binary {}",
        args.names,
        args.value_bytes,
        args.writers,
        d.heartbeat_ms,
        d.election_min_ms,
        d.election_max_ms,
        anchorage_tests::anchorage_bin().display()
    );
    println!(
        "machine: {} CPUs, loadavg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut cluster = Cluster::start_with(3, options).await?;
    let result = run_on(&mut cluster, &args).await;
    if result.is_err() {
        cluster.print_logs();
    }
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        for (i, log) in cluster.log_files().iter().enumerate() {
            std::fs::copy(log, dir.join(format!("anchor{i}.log")))?;
        }
    }
    result
}

fn policy(admin: &SigningKey, auto: bool, names_max: usize) -> Result<String> {
    let mut t = policy_toml(&[admin], 1, &[("/**", &[])], 3, &[])?;
    t.push_str(&format!(
        "\n[split]\nauto = {auto}\nnames_max = {names_max}\ninterval_s_min = 1\nwindow_s = 1\n"
    ));
    policy::Policy::from_toml(&t).context("the bench policy")?;
    Ok(t)
}

async fn run_on(c: &mut Cluster, args: &Args) -> Result<()> {
    let admin = random_key();
    c.init_on(&[0, 1, 2], &policy(&admin, false, u32::MAX as usize)?)
        .await?;
    let client = Arc::new(
        c.client_trusting(&[0, 1, 2], ClientConfig::default())
            .await?,
    );
    let writer = Arc::new(random_key());
    let value = "x".repeat(args.value_bytes);

    // ---- load ----
    let load_started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.loaders {
        let (client, writer, next, value) =
            (client.clone(), writer.clone(), next.clone(), value.clone());
        let n = args.names;
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let name = name_of(k);
                let mut tries = 0;
                while let Err(e) = client
                    .put(&name, vec![Record::Text(value.clone())], 3600, &writer)
                    .await
                {
                    tries += 1;
                    if tries > 20 {
                        bail!("loading {name}: {e}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let load_s = load_started.elapsed().as_secs_f64();
    println!(
        "loaded {} names in {load_s:.1} s ({:.0} puts/s)",
        args.names,
        args.names as f64 / load_s
    );
    let rss_before = rss_all(c);

    // ---- load during the split ----
    let stop = Arc::new(AtomicBool::new(false));
    let (left, right, reads): (Log, Log, Log) = Default::default();
    let quarter = args.names / 4;
    let mut running = Vec::new();
    for (log, base) in [(&left, 0usize), (&right, 3 * quarter)] {
        for w in 0..args.writers {
            let (client, writer, stop, log, value) = (
                client.clone(),
                writer.clone(),
                stop.clone(),
                log.clone(),
                value.clone(),
            );
            running.push(tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let name = name_of(base + i % quarter.max(1));
                    let at = Instant::now();
                    let ok = client
                        .put(&name, vec![Record::Text(value.clone())], 3600, &writer)
                        .await
                        .is_ok();
                    push(&log, at, ok);
                    i += 7;
                }
            }));
        }
    }
    {
        let (client, stop, log) = (client.clone(), stop.clone(), reads.clone());
        let n = args.names;
        running.push(tokio::spawn(async move {
            let mut k = 1usize;
            while !stop.load(Ordering::Relaxed) {
                k = (k * 48271) % 2_147_483_647;
                let name = name_of(k % n);
                let at = Instant::now();
                let ok = client.resolve(&name, ReadLevel::Linearizable).await.is_ok();
                push(&log, at, ok);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // ---- the split ----
    let turned_on = Instant::now();
    let on = policy(&admin, true, args.names - 1)?;
    client
        .mutate(
            Op::SetPolicy {
                prefix: Name::root(),
                policy_toml: on,
            },
            &admin,
        )
        .await
        .context("turning automatic splits on")?;
    let committed = Instant::now();
    let (frozen, child) = wait_state(c, DelegationState::Frozen, None).await?;
    let (active, _) = wait_state(c, DelegationState::Active, Some(child)).await?;
    let window_end = active + Duration::from_secs(2);
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in running {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_all(c);
    // Whether the growth stays: resident memory once more after a quiet while.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss_later = rss_all(c);

    // ---- figures ----
    let right_ops = right.lock().map(|v| v.clone()).unwrap_or_default();
    let writable = right_ops
        .iter()
        .filter(|o| o.ok && o.at >= frozen)
        .map(|o| o.at + o.took)
        .min();
    println!();
    println!(
        "policy change committed in {:.0} ms",
        (committed - turned_on).as_secs_f64() * 1000.0
    );
    println!(
        "decision (policy committed -> split entry applied, Frozen): {:.0} ms",
        ms(frozen.saturating_duration_since(committed))
    );
    println!(
        "hand-over (Frozen -> Active): {:.0} ms",
        ms(active.saturating_duration_since(frozen))
    );
    match writable {
        Some(w) => println!(
            "both halves writable (Frozen -> first acknowledged right-half write started after it): {:.0} ms",
            ms(w.saturating_duration_since(frozen))
        ),
        None => println!("the right half took no write after the split entry"),
    }
    println!();
    println!("| operations | window | count | failed | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for (label, log) in [
        ("left-half puts", &left),
        ("right-half puts", &right),
        ("lin. resolves", &reads),
    ] {
        let ops = log.lock().map(|v| v.clone()).unwrap_or_default();
        let before: Vec<Op1> = ops.iter().copied().filter(|o| o.at < turned_on).collect();
        let during: Vec<Op1> = ops
            .iter()
            .copied()
            .filter(|o| o.at >= turned_on && o.at < window_end)
            .collect();
        row(label, "before", &before);
        row(label, "during split", &during);
    }
    println!();
    println!("| anchor | RSS before MiB | RSS after MiB | RSS 30 s later MiB |");
    println!("|---|---|---|---|");
    for (i, ((b, a), l)) in rss_before
        .iter()
        .zip(&rss_after)
        .zip(&rss_later)
        .enumerate()
    {
        println!("| {i} | {} | {} | {} |", mib(*b), mib(*a), mib(*l));
    }
    Ok(())
}

fn push(log: &Log, at: Instant, ok: bool) {
    if let Ok(mut v) = log.lock() {
        v.push(Op1 {
            at,
            took: at.elapsed(),
            ok,
        });
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(label: &str, window: &str, ops: &[Op1]) {
    let mut took: Vec<Duration> = ops.iter().filter(|o| o.ok).map(|o| o.took).collect();
    took.sort();
    let failed = ops.iter().filter(|o| !o.ok).count();
    let q = |p: f64| {
        if took.is_empty() {
            return f64::NAN;
        }
        let i = ((took.len() as f64 - 1.0) * p).round() as usize;
        ms(took[i.min(took.len() - 1)])
    };
    println!(
        "| {label} | {window} | {} | {failed} | {:.1} | {:.1} | {:.1} |",
        ops.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

/// When the root's range delegation (of `child`, or any) first shows `state` on anchor 0,
/// polled every 20 ms for at most 120 s; and the child's id.
async fn wait_state(
    c: &Cluster,
    state: DelegationState,
    child: Option<ScopeId>,
) -> Result<(Instant, ScopeId)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(info) = c.scope_info_at(0, ScopeTarget::Id(ScopeId::root())).await {
            let found = info.delegations.iter().find(|d| {
                d.referral.range.is_bounded()
                    && child.is_none_or(|c| c == d.referral.scope)
                    && (d.state == state
                        || (state == DelegationState::Frozen && d.state == DelegationState::Active))
            });
            if let Some(d) = found {
                return Ok((Instant::now(), d.referral.scope));
            }
        }
        if Instant::now() > deadline {
            bail!("the root's range split did not reach {state:?} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss_all(c: &mut Cluster) -> Vec<u64> {
    c.anchors
        .iter()
        .map(|a| a.pid().map_or(0, rss_kib))
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

//! `hier_bench`: figures of the scope hierarchy on real `anchorage` processes on loopback
//! (`docs/benchmarks.md`, "Scope hierarchy"): cold depth-3 resolve latency, warm resolves/s
//! in-process, and watch latency from commit to the watcher.
//!
//! Seven anchors; `/` on anchors 0,1,2, `/eu` delegated to 2,3,4, `/eu/payments` delegated
//! to 4,5,6 (each delegation an admin-signed `Op::Delegate`, waited for until the parent
//! reports it Active and the child accepts writes). Then:
//! - **cold**: `--cold` resolves of `/eu/payments/n<k>` (`Cached` level), each after
//!   `client.clear_cache()`, so each walks root → `/eu` → `/eu/payments` (3 round trips,
//!   checked with `round_trips()`); connections stay open (cold cache, warm connections);
//! - **warm**: `--warm-tasks` tasks resolving cached names until `--warm-total` resolves are
//!   done (0 round trips, checked);
//! - **watch**: a watch on `/eu` in one client, `--watch` sequential puts of `/eu/w<i>`
//!   through another; latency = arrival of the `Changed` event at the watcher minus the
//!   moment the put returned (commit acknowledged), and minus the moment the put started.
//!
//! Uses `target/release/anchorage` when it exists and `ANCHORAGE_BIN` is not set. Bounded by
//! `--timeout-s`; the anchors are children of this process and die with it.
//!
//! ```sh
//! cargo build --release -p anchor -p anchorage-tests
//! target/release/hier_bench --cold 500 --warm-total 200000 --watch 500
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchor::config::{RaftSettings, StorageSettings};
use anchorage_tests::proto::{Name, ReadLevel, Record, ScopeId};
use anchorage_tests::resolver::{ClientConfig, WatchEvent};
use anchorage_tests::{policy_toml, random_key, text_of, Cluster, Options};
use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

/// Hierarchy figures: cold and warm resolves, watch latency.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Cold depth-3 resolves (each on an empty cache).
    #[arg(long, default_value_t = 500)]
    cold: usize,
    /// Distinct names under /eu/payments (written first, resolved by both phases).
    #[arg(long, default_value_t = 100)]
    names: usize,
    /// Warm resolves in all.
    #[arg(long, default_value_t = 200_000)]
    warm_total: u64,
    /// Concurrent tasks of the warm phase.
    #[arg(long, default_value_t = 64)]
    warm_tasks: usize,
    /// Writes whose watch latency is measured.
    #[arg(long, default_value_t = 500)]
    watch: usize,
    /// Give up after this many seconds overall.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout_s);
    anchorage_tests::bench_main("hier_bench", limit, run(args))
}

/// p-quantile (0..=1) of sorted durations, in ms.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn row(label: &str, mut v: Vec<Duration>, extra: &str) {
    v.sort();
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64 * 1000.0
    };
    println!(
        "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {extra} |",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        pct(&v, 1.0),
        mean,
    );
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
        "hier_bench: 7 anchors, heartbeat {} ms, election {}-{} ms, binary {}",
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
    let mut cluster = Cluster::start_with(7, options).await?;
    let result = run_on(&mut cluster, &args).await;
    if result.is_err() {
        cluster.print_logs();
    }
    result
}

async fn run_on(c: &mut Cluster, args: &Args) -> Result<()> {
    const ROOT: [usize; 3] = [0, 1, 2];
    let (root_admin, eu_admin, pay_admin) = (random_key(), random_key(), random_key());
    let root_policy = policy_toml(&[&root_admin], 1, &[("/**", &[])], 3, &[])?;
    c.init_on(&ROOT, &root_policy).await?;
    let admin = c.client_trusting(&ROOT, ClientConfig::default()).await?;
    let setup = Instant::now();
    let eu_policy = policy_toml(&[&eu_admin], 1, &[("/eu/**", &[])], 3, &[])?;
    let eu = c
        .delegate(&admin, "/eu", &[2, 3, 4], &eu_policy, &[&root_admin])
        .await
        .context("delegating /eu")?;
    let eu_took = setup.elapsed();
    let pay_policy = policy_toml(&[&pay_admin], 1, &[("/eu/payments/**", &[])], 3, &[])?;
    let pay = c
        .delegate(
            &admin,
            "/eu/payments",
            &[4, 5, 6],
            &pay_policy,
            &[&eu_admin],
        )
        .await
        .context("delegating /eu/payments")?;
    let pay_took = setup.elapsed() - eu_took;
    ensure!(eu.parent == ScopeId::root() && pay.parent == eu.child);
    println!(
        "delegations (submit → Active and child writable): /eu {:.2} s, /eu/payments {:.2} s",
        eu_took.as_secs_f64(),
        pay_took.as_secs_f64()
    );

    // Names to resolve.
    let key = random_key();
    let mut versions = Vec::new();
    for k in 0..args.names {
        let v = admin
            .put(
                &format!("/eu/payments/n{k}"),
                vec![Record::Text(format!("v{k}"))],
                3600,
                &key,
            )
            .await
            .with_context(|| format!("put /eu/payments/n{k}"))?;
        versions.push(v);
    }

    // ---- cold ----
    let reader = c.client_trusting(&ROOT, ClientConfig::default()).await?;
    // One resolve first so the connections to every member exist (not counted).
    reader.clear_cache();
    reader.resolve("/eu/payments/n0", ReadLevel::Cached).await?;
    let mut cold = Vec::with_capacity(args.cold);
    let mut bad_trips = 0usize;
    let rt0 = reader.round_trips();
    for i in 0..args.cold {
        let k = i % args.names;
        reader.clear_cache();
        let before = reader.round_trips();
        let t = Instant::now();
        let set = reader
            .resolve(&format!("/eu/payments/n{k}"), ReadLevel::Cached)
            .await
            .with_context(|| format!("cold resolve {i}"))?;
        cold.push(t.elapsed());
        if text_of(&set) != Some(format!("v{k}").as_str()) || set.version != versions[k] {
            bail!("cold resolve of n{k} gave {set:?}");
        }
        if reader.round_trips() - before != 3 {
            bad_trips += 1;
        }
    }
    let cold_trips = (reader.round_trips() - rt0) as f64 / args.cold.max(1) as f64;

    // ---- warm ----
    reader.clear_cache();
    for k in 0..args.names {
        reader
            .resolve(&format!("/eu/payments/n{k}"), ReadLevel::Cached)
            .await?;
    }
    let warm_rt0 = reader.round_trips();
    let next = Arc::new(AtomicU64::new(0));
    let t_warm = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.warm_tasks.max(1) {
        let (reader, next, names, total) = (
            reader.clone(),
            next.clone(),
            args.names as u64,
            args.warm_total,
        );
        set.spawn(async move {
            let mut worst = Duration::ZERO;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(worst);
                }
                let t = Instant::now();
                reader
                    .resolve(&format!("/eu/payments/n{}", i % names), ReadLevel::Cached)
                    .await?;
                worst = worst.max(t.elapsed());
            }
        });
    }
    let mut warm_worst = Duration::ZERO;
    while let Some(r) = set.join_next().await {
        warm_worst = warm_worst.max(r??);
    }
    let warm_elapsed = t_warm.elapsed();
    let warm_trips = reader.round_trips() - warm_rt0;

    // ---- watch ----
    let watcher = c.client_trusting(&ROOT, ClientConfig::default()).await?;
    let writer = c.client_trusting(&ROOT, ClientConfig::default()).await?;
    // Warm the writer's referrals and leader knowledge (not counted).
    writer
        .put("/eu/warmup", vec![Record::Text("w".into())], 300, &key)
        .await?;
    let mut watch = watcher.watch("/eu").await?;
    let arrivals: Arc<Mutex<HashMap<Name, (u64, Instant)>>> = Arc::default();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watch_task = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(ev) = watch.next().await {
                let at = Instant::now();
                match ev {
                    Ok(WatchEvent::Changed(ch)) => {
                        if let Ok(mut a) = arrivals.lock() {
                            a.insert(ch.name.clone(), (ch.version, at));
                        }
                        let _ = seen_tx.send(());
                    }
                    Ok(other) => eprintln!("watch: {other:?}"),
                    Err(e) => eprintln!("watch error: {e}"),
                }
            }
        })
    };
    let mut from_ack = Vec::new();
    let mut from_start = Vec::new();
    let mut put_lat = Vec::new();
    let mut early = 0usize;
    for i in 0..args.watch {
        let name = Name::parse(&format!("/eu/w{i}"))?;
        let t0 = Instant::now();
        let v = writer
            .put(
                &name.to_string(),
                vec![Record::Text(format!("w{i}"))],
                300,
                &key,
            )
            .await
            .with_context(|| format!("put {name}"))?;
        let t1 = Instant::now();
        put_lat.push(t1 - t0);
        let deadline = t1 + Duration::from_secs(10);
        let at = loop {
            let got = arrivals.lock().ok().and_then(|a| a.get(&name).copied());
            if let Some((ver, at)) = got {
                ensure!(
                    ver == v,
                    "{name}: watch saw version {ver}, put returned {v}"
                );
                break at;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{name} (version {v}) never reached the watcher within 10 s");
            }
            let _ = tokio::time::timeout(left, seen_rx.recv()).await;
        };
        if at < t1 {
            early += 1;
            from_ack.push(-((t1 - at).as_secs_f64() * 1000.0));
        } else {
            from_ack.push((at - t1).as_secs_f64() * 1000.0);
        }
        from_start.push(at.saturating_duration_since(t0));
    }
    watch_task.abort();

    // ---- report ----
    println!("\n| measurement | n | p50 ms | p99 ms | max ms | mean ms | notes |");
    println!("|---|---|---|---|---|---|---|");
    row(
        "cold depth-3 resolve (empty cache)",
        cold,
        &format!("{cold_trips:.2} round trips each; {bad_trips} not exactly 3"),
    );
    println!(
        "| warm resolve, in-process | {} | | | {:.3} | | {:.0} resolves/s with {} tasks; {} round trips |",
        args.warm_total,
        warm_worst.as_secs_f64() * 1000.0,
        args.warm_total as f64 / warm_elapsed.as_secs_f64(),
        args.warm_tasks,
        warm_trips
    );
    from_ack.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let i = ((from_ack.len() as f64 - 1.0) * p).round() as usize;
        from_ack.get(i).copied().unwrap_or(f64::NAN)
    };
    println!(
        "| watch: Changed at watcher − put acknowledged (signed) | {} | {:.2} | {:.2} | {:.2} | {:.2} | {early} events arrived before the put returned (negative) |",
        from_ack.len(),
        q(0.5),
        q(0.99),
        q(1.0),
        from_ack.iter().sum::<f64>() / from_ack.len().max(1) as f64,
    );
    row("watch: put sent → Changed at watcher", from_start, "");
    row("put /eu/w<i> (for reference)", put_lat, "sequential");
    println!(
        "\nloadavg at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

//! `idle_scopes`: the idle cost of many scope groups on a small cluster of real `anchorage`
//! processes (`docs/benchmarks.md`, "Idle cost of many scopes").
//!
//! Starts `--anchors` anchors (default 3) with the given Raft timers, runs `anchorage init`,
//! then creates `--scopes` independent scopes `/s0000`, `/s0001`, … on every anchor (one
//! non-bootstrap `CreateScope` on each member, then a bootstrap call on one member, spread
//! round-robin so leadership is spread too), waits until every scope has a leader and the
//! cluster has settled, and measures over `--seconds`:
//! CPU of each anchor process (`utime + stime` from `/proc/<pid>/stat`), its resident memory,
//! the inbound Raft RPCs it handled (`anchorage_request_seconds_count{protocol="raft"}`), and
//! the elections that happened (`anchorage_scope_terms`, the sum of every scope's term). A baseline with only the root
//! scope is measured first.
//!
//! Uses `target/release/anchorage` when it exists and `ANCHORAGE_BIN` is not set. Bounded by
//! `--timeout-s`; the anchors are children of this process and die with it.
//!
//! ```sh
//! cargo build --release -p anchor -p anchorage-tests
//! target/release/idle_scopes --scopes 1000 --seconds 30
//! target/release/idle_scopes --scopes 1000 --seconds 30 --heartbeat-ms 500 \
//!     --election-min-ms 2500 --election-max-ms 5000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor::config::{RaftSettings, StorageSettings};
use anchorage_tests::idle::{asleep, failover, wait_asleep};
use anchorage_tests::proto::msg::{AdminRequest, AdminResponse};
use anchorage_tests::proto::{AnchorInfo, Name, ScopeDescriptor, ScopeId};
use anchorage_tests::resolver::net::{self, NetConfig, NetHandle, Protocol};
use anchorage_tests::resolver::AnchorAddr;
use anchorage_tests::{metric_value, Cluster, Options};
use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

/// Idle CPU, memory and Raft traffic of many scopes on a few anchors.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Anchors in the cluster (every scope is hosted on all of them).
    #[arg(long, default_value_t = 3)]
    anchors: usize,
    /// Scopes to create besides the root.
    #[arg(long, default_value_t = 1000)]
    scopes: usize,
    /// Length of each measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Length of the root-only baseline window, seconds (0: skip).
    #[arg(long, default_value_t = 10)]
    baseline_seconds: u64,
    /// Pause after every scope has a leader, before measuring, seconds.
    #[arg(long, default_value_t = 10)]
    settle_seconds: u64,
    /// `raft.heartbeat_ms` (default: the anchor's default).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// `raft.election_min_ms` (default: the anchor's default).
    #[arg(long)]
    election_min_ms: Option<u64>,
    /// `raft.election_max_ms` (default: the anchor's default).
    #[arg(long)]
    election_max_ms: Option<u64>,
    /// Scope creations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Bootstrap every scope on anchor 0 (it then leads them all) instead of round-robin.
    #[arg(long)]
    leaders_on_one: bool,
    /// After measuring, SIGKILL anchor 0 and time until every group it led has a new
    /// leader on the others.
    #[arg(long)]
    failover: bool,
    /// `raft.quiesce_after_ms` (default: the anchor's default; 0 turns quiescence off).
    #[arg(long)]
    quiesce_after_ms: Option<u64>,
    /// `raft.hibernate_after_ms` (default: the anchor's default; 0 keeps sleeping groups
    /// running).
    #[arg(long)]
    hibernate_after_ms: Option<u64>,
    /// After measuring, time the first write and the first linearizable read to this many
    /// sleeping scopes each (and a second write to each, awake).
    #[arg(long, default_value_t = 0)]
    wake_samples: usize,
    /// Give up after this many seconds overall.
    #[arg(long, default_value_t = 1200)]
    timeout_s: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout_s);
    anchorage_tests::bench_main("idle_scopes", limit, run(args))
}

/// Tries per `CreateScope` call.
const CREATE_ATTEMPTS: u32 = 4;

/// One reading of one anchor.
#[derive(Clone, Debug, Default)]
struct Sample {
    cpu_ticks: u64,
    rss_kib: u64,
    threads: u64,
    raft_rpcs: f64,
    raft_rpc_seconds: f64,
    terms: f64,
    leaders: f64,
}

/// Whole-machine CPU counters from `/proc/stat` (busy, total) in ticks.
fn machine_cpu() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        bail!("short /proc/stat line {line:?}");
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

#[cfg(target_os = "linux")]
fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks_per_s() -> f64 {
    100.0
}

fn proc_sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15, num_threads 20.
    let num = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| anyhow!("field {i} of /proc/{pid}/stat"))
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        cpu_ticks: num(14)? + num(15)?,
        rss_kib,
        threads: num(20)?,
        ..Sample::default()
    })
}

async fn sample(cluster: &Cluster, i: usize) -> Result<Sample> {
    let pid = cluster.anchors[i]
        .pid()
        .ok_or_else(|| anyhow!("anchor {i} is not running"))?;
    let mut s = proc_sample(pid)?;
    let text = cluster.metrics(i).await?;
    s.raft_rpcs = metric_value(
        &text,
        "anchorage_request_seconds_count",
        &[("protocol", "raft")],
    );
    s.raft_rpc_seconds = metric_value(
        &text,
        "anchorage_request_seconds_sum",
        &[("protocol", "raft")],
    );
    s.terms = metric_value(&text, "anchorage_scope_terms", &[]);
    s.leaders = metric_value(&text, "anchorage_scopes", &[("role", "leader")]);
    Ok(s)
}

async fn sample_all(cluster: &Cluster) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        out.push(sample(cluster, i).await?);
    }
    Ok(out)
}

/// Measures every anchor over `secs` and prints a table; returns the cluster's CPU in % of
/// one core.
async fn measure(
    cluster: &Cluster,
    label: &str,
    groups: usize,
    hb_ms: u64,
    secs: u64,
) -> Result<f64> {
    let tck = clock_ticks_per_s();
    let m0 = machine_cpu()?;
    let before = sample_all(cluster).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = sample_all(cluster).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let m1 = machine_cpu()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\n### {label}: {groups} groups (root included), {elapsed:.1} s window\n");
    println!("| anchor | CPU % of a core | RSS MiB | threads | raft RPCs in /s | mean raft RPC handling ms | leads | elections in window |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut total_cpu = 0.0;
    let mut total_rpcs = 0.0;
    let mut total_elections = 0.0;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let cpu = (a.cpu_ticks.saturating_sub(b.cpu_ticks)) as f64 / tck / elapsed * 100.0;
        let rpcs = a.raft_rpcs - b.raft_rpcs;
        let mean_ms = if rpcs > 0.0 {
            (a.raft_rpc_seconds - b.raft_rpc_seconds) / rpcs * 1000.0
        } else {
            0.0
        };
        let elections = a.terms - b.terms;
        total_cpu += cpu;
        total_rpcs += rpcs / elapsed;
        total_elections += elections;
        println!(
            "| {i} | {cpu:.1} | {:.1} | {} | {:.0} | {mean_ms:.3} | {:.0} | {elections:.0} |",
            a.rss_kib as f64 / 1024.0,
            a.threads,
            rpcs / elapsed,
            a.leaders,
        );
    }
    // openraft 0.9 ticks every 1.5 × heartbeat and sends a due heartbeat on a tick, so each
    // leader sends one heartbeat per follower every 1.5 × heartbeat_ms when idle.
    let expected = groups as f64 * (cluster.len() - 1) as f64 * 1000.0 / (1.5 * hb_ms as f64);
    let machine = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64 * 100.0;
    println!(
        "| all | {total_cpu:.1} | | | {total_rpcs:.0} (heartbeats expected: {expected:.0}) | | | {total_elections:.0} |"
    );
    println!(
        "\nper group: {:.1} µs CPU per second; per raft RPC (both ends): {:.0} µs; whole machine busy {machine:.0} % of all cores over the window; loadavg {}",
        total_cpu / 100.0 * 1e6 / groups as f64,
        if total_rpcs > 0.0 { total_cpu / 100.0 * 1e6 / total_rpcs } else { 0.0 },
        load.trim()
    );
    Ok(total_cpu)
}

/// How long one admin call may take (creating a scope waits for its first election).
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn admin(net: &NetHandle, info: &AnchorInfo, req: &AdminRequest) -> Result<AdminResponse> {
    let to = AnchorAddr::from_info(info)?;
    Ok(net
        .call(&to, Protocol::Admin, req, ADMIN_CALL_TIMEOUT)
        .await?)
}

async fn create_one(
    net: NetHandle,
    members: Arc<Vec<AnchorInfo>>,
    policy_toml: Arc<String>,
    k: usize,
    bootstrap_on: usize,
) -> Result<()> {
    let prefix = format!("/s{k:04}");
    let descriptor = ScopeDescriptor {
        id: ScopeId::derive(&[b"anchorage/idle-scopes-bench/v1", prefix.as_bytes()]),
        prefix: Name::parse(&prefix)?,
        epoch: 1,
        members: members.to_vec(),
        range: proto::KeyRange::all(),
    };
    let order: Vec<usize> = (0..members.len())
        .filter(|&i| i != bootstrap_on)
        .chain([bootstrap_on])
        .collect();
    for i in order {
        let req = AdminRequest::CreateScope {
            descriptor: descriptor.clone(),
            policy_toml: policy_toml.to_string(),
            bootstrap: i == bootstrap_on,
        };
        // A loaded anchor may drop a slow answer (its inbound timeout is 10 s); the call is
        // then repeated, and "already exists" means the first one took effect.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match admin(&net, &members[i], &req).await {
                Ok(AdminResponse::Ok) => Ok(()),
                Ok(AdminResponse::Error(e)) if attempt > 1 && e.to_string().contains("already") => {
                    Ok(())
                }
                Ok(other) => Err(anyhow!("{other:?}")),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => break,
                Err(e) if attempt >= CREATE_ATTEMPTS => {
                    bail!("{prefix} on anchor {i}, attempt {attempt}: {e:#}")
                }
                Err(e) => {
                    eprintln!("{prefix} on anchor {i}, attempt {attempt}: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let d = RaftSettings::default();
    let hb = args.heartbeat_ms.unwrap_or(d.heartbeat_ms);
    let emin = args.election_min_ms.unwrap_or(d.election_min_ms);
    let emax = args.election_max_ms.unwrap_or(d.election_max_ms);
    let options = Options {
        heartbeat_ms: hb,
        election_min_ms: emin,
        election_max_ms: emax,
        snapshot_logs: d.snapshot_logs,
        logs_kept_after_snapshot: d.logs_kept_after_snapshot,
        cache_bytes: StorageSettings::default().cache_bytes,
        quiesce: (args.quiesce_after_ms.is_some() || args.hibernate_after_ms.is_some()).then(
            || anchorage_tests::Quiesce {
                after_ms: args.quiesce_after_ms.unwrap_or(d.quiesce_after_ms),
                liveness_ms: d.liveness_ms,
                dead_after_ms: d.dead_after_ms,
                hibernate_after_ms: args.hibernate_after_ms.unwrap_or(d.hibernate_after_ms),
            },
        ),
        ..Options::default()
    };
    let quiesce = args.quiesce_after_ms.unwrap_or(d.quiesce_after_ms);
    let hibernate = args.hibernate_after_ms.unwrap_or(d.hibernate_after_ms);
    println!(
        "idle_scopes: {} anchors, {} scopes, heartbeat {hb} ms, election {emin}-{emax} ms, quiesce after {quiesce} ms (0: off), hibernate after {hibernate} ms (0: off), binary {}",
        args.anchors,
        args.scopes,
        anchorage_tests::anchorage_bin().display()
    );
    println!(
        "machine: {} CPUs, loadavg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut cluster = Cluster::start_with(args.anchors, options).await?;
    let result = run_on(&mut cluster, &args, hb, quiesce > 0).await;
    if result.is_err() {
        cluster.print_logs();
    }
    result
}

impl Args {
    /// Whether the anchors stop sleeping groups (hibernation on).
    fn hibernates(&self) -> bool {
        let d = RaftSettings::default();
        self.quiesce_after_ms.unwrap_or(d.quiesce_after_ms) > 0
            && self.hibernate_after_ms.unwrap_or(d.hibernate_after_ms) > 0
    }
}

async fn run_on(cluster: &mut Cluster, args: &Args, hb: u64, quiesce: bool) -> Result<()> {
    cluster.init(None).await?;
    if args.baseline_seconds > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        measure(
            cluster,
            "baseline (root scope only)",
            1,
            hb,
            args.baseline_seconds,
        )
        .await?;
    }
    let mut members = Vec::new();
    for i in 0..cluster.len() {
        let s = cluster.status(i).await?;
        members.push(AnchorInfo {
            peer_id: s.peer_id,
            addrs: s.addrs,
        });
    }
    let members = Arc::new(members);
    let policy_toml = Arc::new(policy::Policy::development(None).to_toml());
    let (net, _) = net::spawn(NetConfig {
        request_timeout: Duration::from_secs(60),
        ..NetConfig::client()
    })
    .map_err(|e| anyhow!("client network: {e}"))?;

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for k in 0..args.scopes {
        let permit = permits.clone().acquire_owned().await?;
        let on = if args.leaders_on_one {
            0
        } else {
            k % members.len()
        };
        let (net, members, policy_toml) = (net.clone(), members.clone(), policy_toml.clone());
        set.spawn(async move {
            let r = create_one(net, members, policy_toml, k, on).await;
            drop(permit);
            r
        });
        while let Some(r) = set.try_join_next() {
            r??;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let created = started.elapsed();
    println!(
        "\ncreated {} scopes in {:.1} s ({:.0} scopes/s)",
        args.scopes,
        created.as_secs_f64(),
        args.scopes as f64 / created.as_secs_f64()
    );

    // Every group has a leader when the anchors' leader gauges add up to the group count.
    let groups = args.scopes + 1;
    let wait_s = 120.max(args.scopes as u64 / 50);
    // A scrape renders every scope's gauges: poll big clusters less often.
    let poll = Duration::from_millis(if args.scopes > 2_000 { 2_000 } else { 500 });
    let deadline = Instant::now() + Duration::from_secs(wait_s);
    loop {
        let mut leaders = 0.0;
        for i in 0..cluster.len() {
            leaders += metric_value(
                &cluster.metrics(i).await?,
                "anchorage_scopes",
                &[("role", "leader")],
            );
        }
        if leaders as usize == groups {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {leaders} of {groups} groups report a leader after {wait_s} s");
        }
        tokio::time::sleep(poll).await;
    }
    println!(
        "every group has a leader {:.1} s after the first creation; settling {} s",
        started.elapsed().as_secs_f64(),
        args.settle_seconds
    );
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    if quiesce {
        wait_asleep(cluster, groups, poll, wait_s, args.hibernates()).await?;
    }
    measure(
        cluster,
        &format!("{} idle scopes", args.scopes),
        groups,
        hb,
        args.seconds,
    )
    .await?;
    net.shutdown();
    if args.wake_samples > 0 {
        wake(cluster, args, groups, poll, wait_s, quiesce).await?;
    }
    if args.failover {
        if quiesce {
            // The scopes the wake measurement woke fall asleep again first.
            wait_asleep(cluster, groups, poll, wait_s, args.hibernates()).await?;
        }
        // A scrape renders every scope's gauges: scraping a big cluster 5 times a second
        // would load the survivors more than the failover does.
        let every = if args.scopes > 2_000 {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        };
        failover(cluster, groups, every).await?;
    }
    Ok(())
}

/// Times the first write and the first linearizable read to sleeping scopes
/// ([`anchorage_tests::wake::wake_latencies`]), spread over the scopes.
async fn wake(
    cluster: &Cluster,
    args: &Args,
    groups: usize,
    poll: Duration,
    wait_s: u64,
    quiesce: bool,
) -> Result<()> {
    if quiesce {
        wait_asleep(cluster, groups, poll, wait_s, args.hibernates()).await?;
    }
    let n = args.wake_samples.min(args.scopes / 2).max(1);
    let step = (args.scopes / (2 * n)).max(1);
    let scope = |k: usize| -> Result<(ScopeId, Name)> {
        let prefix = format!("/s{k:04}");
        Ok((
            ScopeId::derive(&[b"anchorage/idle-scopes-bench/v1", prefix.as_bytes()]),
            Name::parse(&prefix)?,
        ))
    };
    let writes = (0..n)
        .map(|i| scope(2 * i * step))
        .collect::<Result<Vec<_>>>()?;
    let reads = (0..n)
        .map(|i| scope(2 * i * step + 1))
        .collect::<Result<Vec<_>>>()?;
    let asleep_before = asleep(cluster).await?;
    let f = anchorage_tests::wake::wake_latencies(cluster, &writes, &reads).await?;
    println!(
        "\nwake latency ({} replicas asleep before; one request at a time, sent to the scope's leader), p50 / p99 / max:",
        asleep_before
    );
    println!(
        "- first write to a sleeping scope: {}",
        f.first_write.summary()
    );
    println!(
        "- second write, same scope awake: {}",
        f.awake_write.summary()
    );
    println!(
        "- first linearizable read of a sleeping scope: {}",
        f.first_read.summary()
    );
    Ok(())
}

//! `anchorage bench`: starts a 3-anchor cluster as child processes on loopback (or uses the
//! anchors given), drives concurrent signed writers and linearizable readers through the
//! resolver library, and prints throughput, latency percentiles and each anchor's resident
//! memory at rest and under load, and the size of their data directories. Figures, not a
//! pass/fail test; the last line (`SUMMARY key=value …`) is for `scripts/bench-vs-etcd`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchor::operator::Operator;
use anyhow::{bail, Context, Result};
use libp2p::Multiaddr;
use proto::{ReadLevel, Record};
use resolver::AnchorAddr;

use crate::target::dial_multiaddr;

/// Arguments of `anchorage bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Concurrent linearizable readers.
    #[arg(long, default_value_t = 64)]
    readers: usize,
    /// Total writes.
    #[arg(long, default_value_t = 20_000)]
    writes: usize,
    /// Total reads.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    /// Bytes of the text record each write carries.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// sled cache per anchor, MiB.
    #[arg(long, default_value_t = 16)]
    cache_mib: u64,
}

struct Children {
    procs: Vec<Child>,
    http: Vec<std::net::SocketAddr>,
    dir: tempfile::TempDir,
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn start_cluster(cache_mib: u64) -> Result<(Children, Vec<AnchorAddr>)> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let conn = Operator::new()?;
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    let mut https = Vec::new();
    for i in 0..3 {
        let data: PathBuf = dir.path().join(format!("a{i}"));
        let (p2p, http) = (free_port()?, free_port()?);
        let cfg = format!(
            "data_dir = {:?}\nlisten = \"/ip4/127.0.0.1/tcp/{p2p}\"\nhttp = \"127.0.0.1:{http}\"\n[storage]\ncache_bytes = {}\n",
            data.display().to_string(),
            cache_mib * 1024 * 1024
        );
        let cfg_path = dir.path().join(format!("a{i}.toml"));
        std::fs::write(&cfg_path, cfg)?;
        let log = std::fs::File::create(dir.path().join(format!("a{i}.log")))?;
        let child = Command::new(&exe)
            .args(["start", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning an anchor")?;
        procs.push(child);
        https.push(std::net::SocketAddr::from(([127, 0, 0, 1], http)));
        // The peer id is known once the identity exists; ask the anchor itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        let id_path = data.join("identity.key");
        let peer = loop {
            if let Ok(bytes) = std::fs::read(&id_path) {
                if let Ok(k) = libp2p::identity::Keypair::from_protobuf_encoding(&bytes) {
                    break k.public().to_peer_id();
                }
            }
            if Instant::now() > deadline {
                bail!("anchor {i} did not create its identity in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let addr = AnchorAddr {
            peer,
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{p2p}").parse()?],
        };
        loop {
            if conn.status(&addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("anchor {i} did not answer status in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        addrs.push(addr);
    }
    conn.init_root(&addrs, policy::Policy::development(None).to_toml())
        .await?;
    Ok((
        Children {
            procs,
            http: https,
            dir,
        },
        addrs,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Phase {
    ops: usize,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn run_phase<F, Fut>(workers: usize, total: usize, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (op, next, errors) = (op.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    latencies.sort();
    Phase {
        ops: latencies.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies,
    }
}

fn row(name: &str, p: &Phase) {
    let rate = p.ops as f64 / p.elapsed.as_secs_f64().max(1e-9);
    println!(
        "| {name:<18} | {:>7} | {:>6} | {:>9.0} | {:>8.2} | {:>8.2} |",
        p.ops,
        p.errors,
        rate,
        percentile(&p.latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&p.latencies, 0.99).as_secs_f64() * 1000.0
    );
}

/// Runs `anchorage bench`.
pub async fn run(args: BenchArgs) -> Result<()> {
    let (children, anchors) = start_cluster(args.cache_mib).await?;
    let pids: Vec<u32> = children.procs.iter().map(|c| c.id()).collect();
    let addrs: Vec<Multiaddr> = anchors.iter().map(dial_multiaddr).collect();
    let client = resolver::Client::connect(&addrs, resolver::ClientConfig::default()).await?;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    // Warm up: one write makes sure a leader is elected and known.
    client
        .put("/bench/warmup", vec![Record::Text("w".into())], 60, &key)
        .await?;
    let rest: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    let peak = Arc::new(std::sync::Mutex::new(vec![0u64; pids.len()]));
    let sampler = {
        let (peak, pids) = (peak.clone(), pids.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Ok(mut p) = peak.lock() {
                    for (i, pid) in pids.iter().enumerate() {
                        p[i] = p[i].max(rss_kib(*pid));
                    }
                }
            }
        })
    };
    let value = "x".repeat(args.value_bytes);
    let names = (args.writes / 4).max(1);
    let w = {
        let (client, key) = (client.clone(), key.clone());
        run_phase(args.writers, args.writes, move |i| {
            let (client, key, value) = (client.clone(), key.clone(), value.clone());
            async move {
                let name = format!("/bench/n{}", i % names);
                client
                    .put(&name, vec![Record::Text(value)], 300, &key)
                    .await
                    .is_ok()
            }
        })
        .await
    };
    let r = {
        let client = client.clone();
        run_phase(args.readers, args.reads, move |i| {
            let client = client.clone();
            async move {
                let name = format!("/bench/n{}", i % names);
                client.resolve(&name, ReadLevel::Linearizable).await.is_ok()
            }
        })
        .await
    };
    sampler.abort();
    let peak = peak.lock().map(|p| p.clone()).unwrap_or_default();
    println!(
        "3 anchors on loopback (child processes), {} writers, {} readers, {} B values\n",
        args.writers, args.readers, args.value_bytes
    );
    println!("| phase              |     ops | errors |     ops/s |  p50 ms  |  p99 ms  |");
    println!("|--------------------|---------|--------|-----------|----------|----------|");
    row("put (fsynced)", &w);
    row("linearizable read", &r);
    println!("\n| anchor | RSS at rest MiB | RSS peak under load MiB |");
    println!("|--------|-----------------|-------------------------|");
    for i in 0..pids.len() {
        println!(
            "| {:<6} | {:>15.1} | {:>23.1} |",
            i + 1,
            rest[i] as f64 / 1024.0,
            peak[i] as f64 / 1024.0
        );
    }
    println!("\n| anchor | fsyncs | mean fsync ms | raft RPCs handled | mean raft RPC ms |");
    println!("|--------|--------|---------------|-------------------|------------------|");
    for (i, http) in children.http.iter().enumerate() {
        let text = scrape(*http).await.unwrap_or_default();
        let flushes = metric(&text, "anchorage_flush_seconds_count");
        let flush_s = metric(&text, "anchorage_flush_seconds_sum");
        let rpcs = metric(&text, "anchorage_request_seconds_count{protocol=\"raft\"}");
        let rpc_s = metric(&text, "anchorage_request_seconds_sum{protocol=\"raft\"}");
        println!(
            "| {:<6} | {:>6.0} | {:>13.3} | {:>17.0} | {:>16.3} |",
            i + 1,
            flushes,
            1000.0 * flush_s / flushes.max(1.0),
            rpcs,
            1000.0 * rpc_s / rpcs.max(1.0)
        );
    }
    let disk: u64 = (0..pids.len())
        .map(|i| dir_bytes(&children.dir.path().join(format!("a{i}"))))
        .sum();
    println!(
        "\ndata directories: {:.1} MiB in all for {} writes over {names} names",
        disk as f64 / (1024.0 * 1024.0),
        w.ops
    );
    let ms = |p: &Phase, q: f64| percentile(&p.latencies, q).as_secs_f64() * 1000.0;
    println!(
        "SUMMARY puts_per_s={:.0} put_p50_ms={:.2} put_p99_ms={:.2} reads_per_s={:.0} read_p50_ms={:.2} read_p99_ms={:.2} errors={} rss_rest_mib={:.1} disk_bytes={disk}",
        w.ops as f64 / w.elapsed.as_secs_f64().max(1e-9),
        ms(&w, 0.5),
        ms(&w, 0.99),
        r.ops as f64 / r.elapsed.as_secs_f64().max(1e-9),
        ms(&r, 0.5),
        ms(&r, 0.99),
        w.errors + r.errors,
        rest.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
    );
    drop(children);
    Ok(())
}

/// Bytes of the files under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Fetches `/metrics` with a bare HTTP/1.0 GET.
async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of the first sample line starting with `name ` in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

//! `etcd-bench`: puts, then linearizable gets, against an etcd cluster, with `--clients`
//! tasks each holding its own etcd client (its own gRPC connection), as a new user of etcd
//! would write it. Keys and values match `anchorage bench`: `--puts` puts of
//! `--value-bytes` bytes over `puts / 4` keys, then `--reads` gets of the same keys.
//!
//! Prints a table, then one line for `scripts/bench-vs-etcd` to read:
//! `SUMMARY puts_per_s=… put_p50_ms=… put_p99_ms=… reads_per_s=… read_p50_ms=… read_p99_ms=… errors=…`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use etcd_client::{Client, GetOptions};

#[derive(Parser, Debug)]
struct Args {
    /// Client URLs of the members, comma-separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Concurrent tasks, each with its own client.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Total puts.
    #[arg(long, default_value_t = 10_000)]
    puts: usize,
    /// Total linearizable gets.
    #[arg(long, default_value_t = 10_000)]
    reads: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Give up on the whole run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

struct Phase {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)].as_secs_f64() * 1000.0
    }
}

/// Runs `total` operations over `clients`, one task per client; `op(client, i)` is one.
async fn phase<F, Fut>(clients: &[Client], total: usize, op: F) -> Phase
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (c, op, next, errors) = (c.clone(), op.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if op(c.clone(), i).await {
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
        latencies,
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

async fn run(args: Args) -> Result<()> {
    if args.endpoints.is_empty() {
        bail!("--endpoints: give the members' client URLs");
    }
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients.max(1) {
        // Spread the clients over the members, as etcd's own benchmark tool does.
        let mut eps = args.endpoints.clone();
        eps.rotate_left(i % args.endpoints.len());
        clients.push(
            Client::connect(eps, None)
                .await
                .context("connecting to etcd")?,
        );
    }
    let keys = (args.puts / 4).max(1);
    let value = Arc::new("x".repeat(args.value_bytes));
    // Warm up: one put, so the cluster has a leader and every connection is up.
    for c in &clients {
        c.clone().put("/bench/warmup", "w", None).await?;
    }
    let puts = {
        let value = value.clone();
        phase(&clients, args.puts, move |mut c, i| {
            let value = value.clone();
            async move {
                c.put(format!("/bench/n{}", i % keys), value.as_bytes(), None)
                    .await
                    .is_ok()
            }
        })
        .await
    };
    let reads = phase(&clients, args.reads, move |mut c, i| async move {
        // etcd's gets are linearizable unless asked to be serializable.
        c.get(format!("/bench/n{}", i % keys), Some(GetOptions::new()))
            .await
            .is_ok_and(|r| !r.kvs().is_empty())
    })
    .await;
    println!(
        "etcd, {} members, {} clients, {} B values\n",
        args.endpoints.len(),
        args.clients,
        args.value_bytes
    );
    println!("| phase              |     ops | errors |     ops/s |  p50 ms  |  p99 ms  |");
    println!("|--------------------|---------|--------|-----------|----------|----------|");
    for (name, p) in [("put (fsynced)", &puts), ("linearizable get", &reads)] {
        println!(
            "| {name:<18} | {:>7} | {:>6} | {:>9.0} | {:>8.2} | {:>8.2} |",
            p.latencies.len(),
            p.errors,
            p.rate(),
            p.ms(0.5),
            p.ms(0.99)
        );
    }
    println!(
        "SUMMARY puts_per_s={:.0} put_p50_ms={:.2} put_p99_ms={:.2} reads_per_s={:.0} read_p50_ms={:.2} read_p99_ms={:.2} errors={}",
        puts.rate(),
        puts.ms(0.5),
        puts.ms(0.99),
        reads.rate(),
        reads.ms(0.5),
        reads.ms(0.99),
        puts.errors + reads.errors
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout_s);
    match tokio::time::timeout(limit, run(args)).await {
        Ok(r) => r,
        Err(_) => bail!("the run took longer than {limit:?}"),
    }
}

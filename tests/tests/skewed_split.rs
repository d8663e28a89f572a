//! A skewed workload makes scopes split by themselves, on three real `anchorage` processes
//! on loopback (`docs/design.md`, "Splits and merges: the decision").
//!
//! The root has automatic splits on with a low name limit, and no operator command is ever
//! given. Writers put Zipf-drawn names under `/shop/<region>/<item>` (a few regions, `eu`
//! much hotter and larger than the rest; items Zipf-drawn too) and uniformly drawn names of
//! the flat `/users/u<n>` keyspace, from a seeded RNG (the seed is printed;
//! `ANCHORAGE_SEED=<seed>` replays the draws). The scopes split until the tree holds both a
//! subtree scope of one region (`/shop/<region>`) and a range scope of `/users`
//! (`/users [/users/…, …)`), as `scope info` and `anchorage scope tree` show.
//!
//! Throughout, readers resolve acknowledged names: a cold sweep (a fresh client every few
//! names), a warm sweep and a warm Zipf reader, each alternating linearizable and cached
//! reads. No read may fail, find nothing, or return a value no put was tried with (or a
//! version other than the one its value was acknowledged at); a linearizable read may not
//! return a version older than the one acknowledged before it started. At the end every
//! acknowledged write reads back linearizably from a cold client.
//!
//! This file holds one test, so its binary runs one cluster at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anchorage_tests::proto::msg::ScopeTarget;
use anchorage_tests::proto::{KeyRange, Name, ReadLevel, Record, RecordSet};
use anchorage_tests::resolver::{Client, ClientConfig, Error};
use anchorage_tests::{
    bounded, policy_toml, random_key, split_policy, text_of, wait_for, Cluster, Zipf,
};
use anyhow::{ensure, Context, Result};
use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every scope's `[split] names_max` (children take their parent's policy).
const NAMES_MAX: u32 = 16;
/// Regions under `/shop` with their number of items; region `k` is drawn with weight
/// `1/(k+1)^REGION_S`, so `eu` takes about 79% of the `/shop` draws.
const REGIONS: [(&str, usize); 4] = [("eu", 160), ("us", 16), ("asia", 12), ("au", 8)];
const REGION_S: f64 = 2.5;
/// The Zipf exponent of the items of a region.
const ITEM_S: f64 = 1.0;
/// Names of the flat keyspace, `/users/u000..`, drawn uniformly.
const USERS: usize = 64;
/// The share of the draws that go to `/shop`.
const SHOP_SHARE: f64 = 0.75;
/// Writer tasks and the pause between two puts of one writer.
const WRITERS: u64 = 2;
const WRITE_EVERY: Duration = Duration::from_millis(40);
/// The pause between two reads of one reader, and how many names a cold client reads.
const READ_EVERY: Duration = Duration::from_millis(10);
const COLD_READS: u64 = 6;
/// Violations quoted in a failure.
const QUOTED: usize = 10;

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// The seeded draws of the workload.
struct Skew {
    regions: Zipf,
    items: Vec<Zipf>,
    users: usize,
}

impl Skew {
    fn new() -> Skew {
        Skew {
            regions: Zipf::new(REGIONS.len(), REGION_S),
            items: REGIONS.iter().map(|&(_, n)| Zipf::new(n, ITEM_S)).collect(),
            users: USERS,
        }
    }

    /// A name under `/shop`: a Zipf region, then a Zipf item of it.
    fn shop(&self, rng: &mut StdRng) -> String {
        let r = self.regions.sample(rng);
        let item = self.items[r].sample(rng);
        format!("/shop/{}/i{item:03}", REGIONS[r].0)
    }

    /// A name of the whole workload: `/shop` with [`SHOP_SHARE`], else a uniform user.
    fn any(&self, rng: &mut StdRng) -> String {
        if rng.gen_bool(SHOP_SHARE) {
            self.shop(rng)
        } else {
            format!("/users/u{:03}", rng.gen_range(0..self.users))
        }
    }
}

/// What the writers tried and what was acknowledged.
#[derive(Debug, Default)]
struct Book {
    /// Every value a put of a name was tried with (acknowledged or not: a put that failed
    /// may still have taken effect).
    tried: HashMap<String, HashSet<String>>,
    /// The version each acknowledged (name, value) got.
    acked_at: HashMap<(String, String), u64>,
    /// Per name, the highest acknowledged version and its value.
    latest: BTreeMap<String, (u64, String)>,
    /// Acknowledged names in the order of their first acknowledgement (readers index it).
    names: Vec<String>,
    /// Failed puts by error.
    failed: BTreeMap<String, u64>,
}

impl Book {
    /// The version acknowledged for `name` so far (0: none).
    fn floor(&self, name: &str) -> u64 {
        self.latest.get(name).map_or(0, |(v, _)| *v)
    }

    fn acknowledged(&mut self, name: &str, value: &str, version: u64) {
        self.acked_at
            .insert((name.to_string(), value.to_string()), version);
        match self.latest.get_mut(name) {
            None => {
                self.latest
                    .insert(name.to_string(), (version, value.to_string()));
                self.names.push(name.to_string());
            }
            Some(l) if l.0 < version => *l = (version, value.to_string()),
            Some(_) => {}
        }
    }

    /// Judges one read of `name` at `level` that started when `floor` was acknowledged.
    fn judge(
        &self,
        name: &str,
        level: ReadLevel,
        floor: u64,
        read: &Result<RecordSet, Error>,
    ) -> Result<(), String> {
        let set = read
            .as_ref()
            .map_err(|e| format!("{name} at {level}: {e}"))?;
        let value =
            text_of(set).ok_or_else(|| format!("{name} at {level}: records {:?}", set.records))?;
        if !self.tried.get(name).is_some_and(|t| t.contains(value)) {
            return Err(format!(
                "{name} at {level}: {value:?} at v{} was never written",
                set.version
            ));
        }
        if let Some(&v) = self.acked_at.get(&(name.to_string(), value.to_string())) {
            if v != set.version {
                return Err(format!(
                    "{name} at {level}: {value:?} read at v{}, acknowledged at v{v}",
                    set.version
                ));
            }
        }
        if level == ReadLevel::Linearizable && set.version < floor {
            return Err(format!(
                "{name} at {level}: v{} read, v{floor} acknowledged before the read",
                set.version
            ));
        }
        Ok(())
    }
}

/// The shared state of the workload tasks.
struct Shared {
    book: Mutex<Book>,
    stop_writers: AtomicBool,
    stop_readers: AtomicBool,
    /// Reads by kind, and the violations seen (the first [`QUOTED`] quoted).
    reads: Mutex<BTreeMap<String, u64>>,
    violations: Mutex<(u64, Vec<String>)>,
    /// Sweeps completed by the cold and the warm sweeper.
    sweeps: [AtomicU64; 2],
}

impl Shared {
    fn record(&self, kind: &str, verdict: Result<(), String>) {
        *self
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
        if let Err(v) = verdict {
            let mut vs = self.violations.lock().unwrap_or_else(|p| p.into_inner());
            vs.0 += 1;
            if vs.1.len() < QUOTED {
                vs.1.push(format!("{kind}: {v}"));
            }
        }
    }
}

/// One writer: Zipf-drawn names, a new value per put, until told to stop.
async fn writer(w: u64, client: Client, key: SigningKey, seed: u64, shared: Arc<Shared>) {
    let (skew, mut rng) = (Skew::new(), StdRng::seed_from_u64(seed ^ w));
    let mut pace = tokio::time::interval(WRITE_EVERY);
    let mut seq = 0u64;
    while !shared.stop_writers.load(Ordering::Relaxed) {
        pace.tick().await;
        let name = skew.any(&mut rng);
        seq += 1;
        let value = format!("w{w}-{seq}");
        lock(&shared.book)
            .tried
            .entry(name.clone())
            .or_default()
            .insert(value.clone());
        let put = client
            .put(&name, vec![Record::Text(value.clone())], 300, &key)
            .await;
        let mut book = lock(&shared.book);
        match put {
            Ok(version) => book.acknowledged(&name, &value, version),
            Err(e) => {
                let kind = format!("{e}").chars().take(60).collect::<String>();
                *book.failed.entry(kind).or_default() += 1;
            }
        }
    }
}

/// Which reader, and so which names and clients.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Every acknowledged name in turn, a fresh client every [`COLD_READS`] names.
    ColdSweep,
    /// Every acknowledged name in turn, one client.
    WarmSweep,
    /// Zipf-drawn names (acknowledged ones only), one client.
    WarmZipf,
}

/// One reader: alternately linearizable and cached reads, each judged against the book.
async fn reader(
    kind: Reader,
    connect: impl Fn() -> tokio::task::JoinHandle<Result<Client>>,
    seed: u64,
    shared: Arc<Shared>,
) -> Result<()> {
    let (skew, mut rng) = (Skew::new(), StdRng::seed_from_u64(seed ^ 0x5eed));
    let mut pace = tokio::time::interval(READ_EVERY);
    let mut client = connect().await??;
    let (mut next, mut n) = (0usize, 0u64);
    while !shared.stop_readers.load(Ordering::Relaxed) {
        pace.tick().await;
        let (name, floor) = {
            let book = lock(&shared.book);
            let name = match kind {
                Reader::ColdSweep | Reader::WarmSweep => {
                    if next >= book.names.len() && !book.names.is_empty() {
                        next = 0;
                        let i = matches!(kind, Reader::WarmSweep) as usize;
                        shared.sweeps[i].fetch_add(1, Ordering::Relaxed);
                    }
                    next += 1;
                    book.names.get(next - 1).cloned()
                }
                Reader::WarmZipf => {
                    Some(skew.any(&mut rng)).filter(|n| book.latest.contains_key(n))
                }
            };
            let Some(name) = name else { continue };
            let floor = book.floor(&name);
            (name, floor)
        };
        if matches!(kind, Reader::ColdSweep) && n > 0 && n % COLD_READS == 0 {
            client = connect().await??;
        }
        let level = if n % 2 == 0 {
            ReadLevel::Linearizable
        } else {
            ReadLevel::Cached
        };
        n += 1;
        let read = client.resolve(&name, level).await;
        let verdict = lock(&shared.book).judge(&name, level, floor, &read);
        shared.record(&format!("{kind:?} {level}"), verdict);
    }
    Ok(())
}

/// The scopes anchor 0 hosts (every scope lives on all three), with their ranges.
async fn scopes(c: &Cluster) -> Result<Vec<(Name, KeyRange)>> {
    let mut out = Vec::new();
    for s in c.status(0).await?.scopes {
        let info = c.scope_info_at(0, ScopeTarget::Id(s.id)).await?;
        out.push((info.descriptor.prefix, info.descriptor.range));
    }
    out.sort_by_key(|(p, r)| (p.to_string(), r.to_string()));
    Ok(out)
}

/// A range scope of `/users` and a subtree scope of one `/shop` region, if both exist.
fn wanted(scopes: &[(Name, KeyRange)]) -> Option<(String, String)> {
    let range = scopes
        .iter()
        .find(|(p, r)| p.to_string() == "/users" && r.is_bounded())?;
    let region = scopes.iter().find(|(p, r)| {
        let p = p.to_string();
        !r.is_bounded()
            && p.strip_prefix("/shop/")
                .is_some_and(|region| !region.is_empty() && !region.contains('/'))
    })?;
    Some((format!("{} {}", range.0, range.1), region.0.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_workload_splits_scopes_into_subtrees_and_ranges_by_themselves() {
    bounded(Duration::from_secs(120), run()).await;
}

async fn run() -> Result<()> {
    let seed: u64 = std::env::var("ANCHORAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("workload seed {seed} (ANCHORAGE_SEED={seed} replays the Zipf draws)");
    let mut c = Cluster::start(3).await?;
    let policy = split_policy(
        &policy_toml(&[&random_key()], 1, &[("/**", &[])], 3, &[])?,
        &[("names_max", NAMES_MAX), ("interval_s_min", 1)],
    )?;
    c.init_on(&[0, 1, 2], &policy).await?;
    let addrs = c.addrs()?;
    let connect = move || {
        let addrs = addrs.clone();
        tokio::spawn(async move {
            Client::connect(&addrs, ClientConfig::default())
                .await
                .context("connecting a client")
        })
    };
    let shared = Arc::new(Shared {
        book: Mutex::new(Book::default()),
        stop_writers: AtomicBool::new(false),
        stop_readers: AtomicBool::new(false),
        reads: Mutex::new(BTreeMap::new()),
        violations: Mutex::new((0, Vec::new())),
        sweeps: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let started = Instant::now();
    let key = random_key();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let client = connect().await??;
        writers.spawn(writer(w, client, key.clone(), seed, shared.clone()));
    }
    let mut readers = tokio::task::JoinSet::new();
    for kind in [Reader::ColdSweep, Reader::WarmSweep, Reader::WarmZipf] {
        readers.spawn(reader(kind, connect.clone(), seed, shared.clone()));
    }

    // The scopes split by themselves until a region and a range of /users have scopes.
    let (range, region) = wait_for(
        "a range scope of /users and a subtree scope of a /shop region",
        Duration::from_secs(60),
        || async { Ok(wanted(&scopes(&c).await?)) },
    )
    .await?;
    let split_after = started.elapsed();
    eprintln!(
        "after {:.1} s: {range} and {region} split off; {} names acknowledged",
        split_after.as_secs_f64(),
        lock(&shared.book).latest.len()
    );

    // Writers stop; both sweepers read every name once more.
    shared.stop_writers.store(true, Ordering::Relaxed);
    while let Some(r) = writers.join_next().await {
        r.context("a writer task")?;
    }
    let swept = shared.sweeps.each_ref().map(|s| s.load(Ordering::Relaxed));
    wait_for(
        "both sweepers to read every acknowledged name once more",
        Duration::from_secs(30),
        || async {
            let now = shared.sweeps.each_ref().map(|s| s.load(Ordering::Relaxed));
            Ok((now[0] >= swept[0] + 2 && now[1] >= swept[1] + 2).then_some(()))
        },
    )
    .await?;
    shared.stop_readers.store(true, Ordering::Relaxed);
    while let Some(r) = readers.join_next().await {
        r.context("a reader task")??;
    }
    let reads = shared
        .reads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (violations, quoted) = shared
        .violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    eprintln!("reads: {reads:?}");
    ensure!(
        violations == 0,
        "{violations} bad reads; first: {}",
        quoted.join("; ")
    );
    ensure!(
        reads.len() == 6 && reads.values().all(|&n| n > 0),
        "not every reader read at both levels: {reads:?}"
    );

    // Every acknowledged write reads back linearizably from a cold client.
    let cold = connect().await??;
    let book = std::mem::take(&mut *lock(&shared.book));
    for (name, &(version, _)) in &book.latest {
        let read = cold.resolve(name, ReadLevel::Linearizable).await;
        book.judge(name, ReadLevel::Linearizable, version, &read)
            .map_err(|e| anyhow::anyhow!("the final read: {e}"))?;
    }
    let acked = book.acked_at.len();
    eprintln!(
        "{acked} puts acknowledged on {} names, failed: {:?}; every name read back",
        book.latest.len(),
        book.failed
    );
    ensure!(acked > 0, "no put was acknowledged");

    // `scope tree` shows both kinds of scope.
    let mut args = vec!["scope".to_string(), "tree".to_string()];
    args.extend(c.anchor_args()?);
    let tree = c.cli_ok(&args).await?;
    eprintln!("{tree}");
    ensure!(
        tree.contains(&range) && tree.contains(&format!("{region}  ")),
        "scope tree shows neither {range} nor {region}:\n{tree}"
    );
    let mut splits = Vec::new();
    for kind in ["subtree", "range"] {
        let n = c
            .metric_sum(
                "anchorage_splits_total",
                &[("kind", kind), ("outcome", "split")],
            )
            .await?;
        splits.push(format!("{kind} {n}"));
    }
    eprintln!(
        "splits (summed over the anchors that led): {}; scopes: {:?}; {:.1} s in all",
        splits.join(", "),
        scopes(&c)
            .await?
            .iter()
            .map(|(p, r)| format!("{p} {r}"))
            .collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

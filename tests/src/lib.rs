//! Black-box harness for multi-anchor integration tests: real `anchorage` processes on
//! loopback, each with its own data dir and fixed ports inside one temporary directory.
//!
//! - [`anchorage_bin`] builds the binary once per test process (`cargo build -p anchor --bin
//!   anchorage` in the workspace root, honouring `CARGO_TARGET_DIR`; `ANCHORAGE_BIN` skips
//!   the build and uses that file).
//! - [`Cluster::start`] picks free ports, writes one `anchor.toml` per anchor and starts them;
//!   [`Cluster::kill`] (SIGKILL), [`Cluster::restart`] (same ports, same data dir, so the
//!   same identity and addresses) steer single anchors; dropping the cluster kills them all.
//! - [`Cluster::init`] runs `anchorage init`; [`Cluster::status`], [`Cluster::leader`],
//!   [`Cluster::wait_leader`], [`Cluster::wait_caught_up`] read anchors' status over the
//!   admin protocol (the same [`AnchorStatus`] that `anchorage status --json` prints);
//!   [`Cluster::status_json_cli`] goes through the CLI.
//! - [`Cluster::metrics`] scrapes `/metrics` with a raw HTTP GET; [`metric_value`] sums a
//!   metric over the series whose labels match.
//! - [`wait_for`] polls a condition until a deadline (no bare sleeps as waits).
//! - [`bounded`] runs a test body under an overall timeout; on failure (error, timeout or
//!   panic) the tail of every anchor's stdout/stderr is printed. Set `ANCHORAGE_TEST_KEEP=1`
//!   to keep the temporary directory of a failed test.
//!
//! - [`Cluster::start_netns`] runs every anchor in its own Linux network namespace (see
//!   [`netns`]) so [`Cluster::netns`] can cut and heal the network between anchor processes.
//!
//! - Scopes: [`Cluster::start_labeled`] gives anchors placement labels;
//!   [`Cluster::init_on`] creates the root scope on a subset of the anchors (the trust
//!   anchors of [`Cluster::client_trusting`]) with a policy from [`policy_toml`];
//!   [`Cluster::delegate`] submits an admin-signed `Op::Delegate` and waits until the
//!   parent reports it Active and the child accepts writes; [`Cluster::scope_leader`],
//!   [`Cluster::scope_info_at`] look at any scope; [`Cluster::pause`]/[`Cluster::resume`]
//!   SIGSTOP/SIGCONT an anchor (a paused anchor is still killed on drop).
//!
//! Each anchor's output goes to `<tmp>/logs/a<i>.<start>.{out,err}`; a restart opens new
//! files, so the logs of every run survive.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use proto::codec;
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, MutateRequest, MutateResponse, ScopeInfo,
    ScopeStatus, ScopeTarget,
};
use proto::{
    AnchorInfo, Delegation, DelegationState, MemberSpec, Name, Op, Referral, ScopeId,
    SignedMutation,
};
use resolver::net::{self, NetConfig, NetHandle, Protocol};
use resolver::{Client, ClientConfig, Multiaddr, PeerId};

pub use proto;
pub use resolver;

pub mod chaos;
pub mod faults;
pub mod linearizability;
pub mod netns;

/// libp2p port of anchors in network namespaces (each has an address of its own).
const NETNS_P2P_PORT: u16 = 7400;
/// HTTP port of anchors in network namespaces.
const NETNS_HTTP_PORT: u16 = 9400;
/// How long an anchor may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of [`wait_for`].
pub const POLL: Duration = Duration::from_millis(100);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------------------
// The binary

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The `anchorage` binary, built once per test process. Panics with cargo's output if the
/// build fails.
pub fn anchorage_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match build_bin() {
        Ok(p) => p,
        Err(e) => panic!("cannot build the anchorage binary: {e:#}"),
    })
}

fn build_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ANCHORAGE_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("ANCHORAGE_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "-p", "anchor", "--bin", "anchorage"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cargo:?} build"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`cargo build -p anchor --bin anchorage` failed ({}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    let bin = target_dir().join("debug").join("anchorage");
    if !bin.is_file() {
        bail!("built, but {} does not exist", bin.display());
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------------
// Test scaffolding

static NEXT_TEST: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    static TEST_ID: u64;
}

/// Directories of clusters dropped inside [`bounded`], kept until the test's outcome is
/// known (so their logs can be printed on failure).
struct Grave {
    test: u64,
    dir: tempfile::TempDir,
    logs: Vec<PathBuf>,
}

static GRAVEYARD: Mutex<Vec<Grave>> = Mutex::new(Vec::new());

fn graveyard() -> std::sync::MutexGuard<'static, Vec<Grave>> {
    GRAVEYARD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a test body with an overall time limit. On an error or a timeout it prints the tail
/// of every anchor's logs (of clusters created inside the body) and panics; a panic inside
/// the body prints them as the cluster unwinds.
pub async fn bounded<F>(limit: Duration, body: F)
where
    F: Future<Output = Result<()>>,
{
    let id = NEXT_TEST.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let outcome = TEST_ID
        .scope(id, async { tokio::time::timeout(limit, body).await })
        .await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!("the test did not finish within {limit:?}")),
    };
    let graves: Vec<Grave> = {
        let mut all = graveyard();
        let (mine, rest): (Vec<Grave>, Vec<Grave>) = all.drain(..).partition(|g| g.test == id);
        *all = rest;
        mine
    };
    match failure {
        None => {
            eprintln!(
                "test body passed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Some(f) => {
            for g in graves {
                print_log_tails(&g.logs);
                keep_dir(g.dir);
            }
            panic!(
                "test failed after {:.1} s: {f}",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

fn keep_dir(dir: tempfile::TempDir) {
    if std::env::var_os("ANCHORAGE_TEST_KEEP").is_some() {
        let path = dir.keep();
        eprintln!("kept the test directory {}", path.display());
    }
}

fn print_log_tails(logs: &[PathBuf]) {
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "----- {} (last {} of {} lines) -----",
            path.display(),
            lines.len() - from,
            lines.len()
        );
        for l in &lines[from..] {
            eprintln!("{l}");
        }
    }
    if !logs.is_empty() {
        eprintln!("----- end of anchor logs -----");
    }
}

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

// ---------------------------------------------------------------------------------------
// Options

/// Raft and storage settings written into every anchor's config.
#[derive(Clone, Debug)]
pub struct Options {
    /// `raft.heartbeat_ms`.
    pub heartbeat_ms: u64,
    /// `raft.election_min_ms`.
    pub election_min_ms: u64,
    /// `raft.election_max_ms`.
    pub election_max_ms: u64,
    /// `raft.snapshot_logs`.
    pub snapshot_logs: u64,
    /// `raft.logs_kept_after_snapshot`.
    pub logs_kept_after_snapshot: u64,
    /// `storage.cache_bytes`.
    pub cache_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_logs: 100_000,
            logs_kept_after_snapshot: 1_000,
            cache_bytes: 8 * 1024 * 1024,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Anchors

/// One anchor process slot: fixed ports and data dir, a child while running.
pub struct AnchorProc {
    /// Index in the cluster.
    pub index: usize,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// libp2p TCP port.
    pub p2p_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Its peer id (known after the first start; stable across restarts).
    pub peer: Option<PeerId>,
    /// The address it listens on (127.0.0.1, or its namespace's address).
    pub ip: std::net::Ipv4Addr,
    /// Its network namespace, when the cluster runs in namespaces.
    pub netns: Option<String>,
    /// Labels written into its config besides `test_index` (placement policy reads them).
    pub labels: BTreeMap<String, String>,
    /// True while it is stopped by [`Cluster::pause`].
    pub paused: bool,
    child: Option<Child>,
    starts: usize,
    logs: Vec<PathBuf>,
}

impl AnchorProc {
    /// `/ip4/<ip>/tcp/<port>` (no peer id).
    pub fn base_addr(&self) -> Multiaddr {
        format!("/ip4/{}/tcp/{}", self.ip, self.p2p_port)
            .parse()
            .expect("static multiaddr")
    }

    /// `/ip4/<ip>/tcp/<port>/p2p/<peer>`.
    pub fn addr(&self) -> Result<Multiaddr> {
        let peer = self
            .peer
            .ok_or_else(|| anyhow!("anchor {} never started", self.index))?;
        Ok(format!("/ip4/{}/tcp/{}/p2p/{peer}", self.ip, self.p2p_port).parse()?)
    }

    /// Its HTTP address.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.http_port))
    }

    /// The pid of its process while it runs (with namespaces: the anchor itself, since
    /// `ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while its process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL also ends a stopped (paused) process.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }
}

/// A set of anchors in one temporary directory.
pub struct Cluster {
    /// The anchors, by index.
    pub anchors: Vec<AnchorProc>,
    /// The options they run with.
    pub options: Options,
    dir: Option<tempfile::TempDir>,
    net: NetHandle,
    test: Option<u64>,
    /// The namespaces, when the anchors run in them; dropped after the anchors are killed.
    fabric: Option<netns::Fabric>,
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Hold every listener until all are chosen so the ports are distinct.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

impl Cluster {
    /// Starts `n` anchors with the default [`Options`] and waits until each is listening.
    pub async fn start(n: usize) -> Result<Cluster> {
        Cluster::start_with(n, Options::default()).await
    }

    /// Starts `n` anchors with `options` and waits until each is listening.
    pub async fn start_with(n: usize, options: Options) -> Result<Cluster> {
        Cluster::launch(n, options, None, Vec::new()).await
    }

    /// Starts `n` anchors with `options`, anchor `i` carrying the labels `labels[i]` (an
    /// anchor without an entry gets none besides `test_index`), and waits until each is
    /// listening.
    pub async fn start_labeled(
        n: usize,
        options: Options,
        labels: &[&[(&str, &str)]],
    ) -> Result<Cluster> {
        let labels = labels
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        Cluster::launch(n, options, None, labels).await
    }

    /// Starts `n` anchors with `options`, each in its own network namespace (see
    /// [`netns`]), and waits until each is listening. Fails, saying what is missing, if
    /// this machine cannot create namespaces (not root, no `ip`, no `iptables-restore`).
    pub async fn start_netns(n: usize, options: Options) -> Result<Cluster> {
        anchorage_bin();
        let fabric = tokio::task::spawn_blocking(move || netns::Fabric::create(n)).await??;
        Cluster::launch(n, options, Some(fabric), Vec::new()).await
    }

    async fn launch(
        n: usize,
        options: Options,
        fabric: Option<netns::Fabric>,
        labels: Vec<BTreeMap<String, String>>,
    ) -> Result<Cluster> {
        // Build (or find) the binary before anything else, so a build failure says so.
        anchorage_bin();
        let dir = tempfile::Builder::new()
            .prefix("anchorage-test-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        // In namespaces every anchor has an address of its own, so fixed ports do.
        let ports = match &fabric {
            Some(_) => (0..n)
                .flat_map(|_| [NETNS_P2P_PORT, NETNS_HTTP_PORT])
                .collect(),
            None => free_ports(2 * n)?,
        };
        let mut anchors = Vec::new();
        for i in 0..n {
            let data_dir = dir.path().join(format!("a{i}"));
            std::fs::create_dir_all(&data_dir)?;
            let config = dir.path().join(format!("a{i}.toml"));
            let a = AnchorProc {
                index: i,
                data_dir,
                config,
                p2p_port: ports[2 * i],
                http_port: ports[2 * i + 1],
                peer: None,
                ip: fabric
                    .as_ref()
                    .map_or(std::net::Ipv4Addr::LOCALHOST, |f| f.addr(i)),
                netns: fabric.as_ref().map(|f| f.namespace(i)),
                labels: labels.get(i).cloned().unwrap_or_default(),
                paused: false,
                child: None,
                starts: 0,
                logs: Vec::new(),
            };
            std::fs::write(&a.config, config_toml(&a, &options))?;
            anchors.push(a);
        }
        let (net, _) = net::spawn(NetConfig {
            request_timeout: STATUS_TIMEOUT,
            ..NetConfig::client()
        })
        .map_err(|e| anyhow!("harness network: {e}"))?;
        let mut cluster = Cluster {
            anchors,
            options,
            dir: Some(dir),
            net,
            test: TEST_ID.try_with(|id| *id).ok(),
            fabric,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_listening(i).await?;
        }
        Ok(cluster)
    }

    /// The temporary directory holding data, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir present until drop").path()
    }

    /// Number of anchor slots.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True if the cluster has no anchors.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let bin = anchorage_bin();
        let logs = self.dir().join("logs");
        let a = &mut self.anchors[i];
        if a.is_running() {
            bail!("anchor {i} is already running");
        }
        a.starts += 1;
        let out_path = logs.join(format!("a{i}.{}.out", a.starts));
        let err_path = logs.join(format!("a{i}.{}.err", a.starts));
        let out = std::fs::File::create(&out_path)?;
        let err = std::fs::File::create(&err_path)?;
        a.logs.push(out_path);
        a.logs.push(err_path);
        let mut cmd = match (&self.fabric, &a.netns) {
            (Some(f), Some(_)) => f.command(i, bin),
            _ => Command::new(bin),
        };
        cmd.arg("start")
            .arg("--config")
            .arg(&a.config)
            .env_remove("ANCHORAGE_ANCHORS")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        a.child = Some(child);
        Ok(())
    }

    async fn wait_listening(&mut self, i: usize) -> Result<()> {
        let out_path = self.anchors[i].logs[self.anchors[i].logs.len() - 2].clone();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(peer) = parse_listening(&text) {
                let a = &mut self.anchors[i];
                if let Some(known) = a.peer {
                    if known != peer {
                        bail!("anchor {i} came back as {peer}, was {known}: identity not stable");
                    }
                }
                a.peer = Some(peer);
                return Ok(());
            }
            let a = &mut self.anchors[i];
            if let Some(c) = &mut a.child {
                if let Ok(Some(status)) = c.try_wait() {
                    a.child = None;
                    let err =
                        std::fs::read_to_string(&a.logs[a.logs.len() - 1]).unwrap_or_default();
                    bail!(
                        "anchor {i} exited ({status}) before listening:\n{}",
                        tail(&err, 30)
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!("anchor {i} printed no 'listening' line within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs anchor `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.anchors[i].kill();
    }

    /// The network-namespace fabric, to cut and heal links between anchor processes;
    /// an error for a cluster started without namespaces.
    pub fn netns(&mut self) -> Result<&mut netns::Fabric> {
        self.fabric.as_mut().ok_or_else(|| {
            anyhow!("this cluster runs on loopback; start it with Cluster::start_netns")
        })
    }

    /// Starts anchor `i` again (same ports, same data dir) and waits until it listens.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_listening(i).await
    }

    /// Every anchor's `/ip4/127.0.0.1/tcp/<port>/p2p/<peer>`.
    pub fn addrs(&self) -> Result<Vec<Multiaddr>> {
        self.anchors.iter().map(|a| a.addr()).collect()
    }

    /// `--anchor X` arguments for every anchor.
    pub fn anchor_args(&self) -> Result<Vec<String>> {
        let mut args = Vec::new();
        for a in self.addrs()? {
            args.push("--anchor".to_string());
            args.push(a.to_string());
        }
        Ok(args)
    }

    /// Runs `anchorage <args>` and returns its output (whatever the exit status).
    pub async fn cli(&self, args: &[String]) -> Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(anchorage_bin());
        cmd.args(args)
            .env_remove("ANCHORAGE_ANCHORS")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("`anchorage {}` took over {CLI_TIMEOUT:?}", args.join(" ")))??;
        Ok(out)
    }

    /// Runs `anchorage <args>` and fails unless it exits 0; returns stdout.
    pub async fn cli_ok(&self, args: &[String]) -> Result<String> {
        let out = self.cli(args).await?;
        if !out.status.success() {
            bail!(
                "`anchorage {}` failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `anchorage init` on every anchor (optionally with a policy file), then waits until the
    /// root scope has a leader that every anchor knows.
    pub async fn init(&mut self, policy: Option<&Path>) -> Result<()> {
        let mut args = vec!["init".to_string()];
        args.extend(self.anchor_args()?);
        if let Some(p) = policy {
            args.push("--policy".into());
            args.push(p.display().to_string());
        }
        self.cli_ok(&args).await?;
        self.wait_settled(Duration::from_secs(20)).await?;
        Ok(())
    }

    /// The status of anchor `i` over the admin protocol.
    pub async fn status(&self, i: usize) -> Result<AnchorStatus> {
        let a = &self.anchors[i];
        let peer = a.peer.ok_or_else(|| anyhow!("anchor {i} never started"))?;
        let bytes = codec::encode(&AdminRequest::Status)?;
        let call = self
            .net
            .request(peer, vec![a.base_addr()], Protocol::Admin, bytes);
        let answer = tokio::time::timeout(STATUS_TIMEOUT, call)
            .await
            .map_err(|_| anyhow!("anchor {i} did not answer status within {STATUS_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("anchor {i}: {e}"))?;
        match codec::decode(&answer, proto::limits::CLIENT_FRAME_BYTES_MAX)? {
            AdminResponse::Status(s) => Ok(s),
            other => bail!("anchor {i} answered status with {other:?}"),
        }
    }

    /// The root scope as anchor `i` sees it.
    pub async fn root_status(&self, i: usize) -> Result<ScopeStatus> {
        let s = self.status(i).await?;
        s.scopes
            .into_iter()
            .find(|sc| sc.id == ScopeId::root())
            .ok_or_else(|| anyhow!("anchor {i} hosts no root scope"))
    }

    /// `anchorage status --json` over every anchor, parsed.
    pub async fn status_json_cli(&self) -> Result<serde_json::Value> {
        let mut args = vec!["status".to_string(), "--json".to_string()];
        args.extend(self.anchor_args()?);
        let out = self.cli_ok(&args).await?;
        serde_json::from_str(&out).with_context(|| format!("status output is not JSON: {out}"))
    }

    /// Indexes of anchors whose process runs and is not paused ([`Cluster::pause`]).
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.anchors.len())
            .filter(|&i| !self.anchors[i].paused && self.anchors[i].is_running())
            .collect()
    }

    fn index_of(&self, peer: &str) -> Option<usize> {
        self.anchors
            .iter()
            .position(|a| a.peer.is_some_and(|p| p.to_base58() == peer))
    }

    /// The index of the root scope's leader, if the running anchors agree on one: an
    /// anchor that says it leads, at the highest term seen, that a majority of the running
    /// anchors also name as leader.
    pub async fn leader(&mut self) -> Result<Option<usize>> {
        let running = self.running();
        let mut seen = Vec::new();
        for &i in &running {
            if let Ok(s) = self.root_status(i).await {
                seen.push((i, s));
            }
        }
        Ok(self.agreed_leader(&seen, self.anchors.len()))
    }
    /// Waits for a root-scope leader (see [`Cluster::leader`]).
    pub async fn wait_leader(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await? {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                let mut report = String::new();
                for i in self.running() {
                    report.push_str(&format!("\n  anchor {i}: {:?}", self.root_status(i).await));
                }
                bail!("no root-scope leader within {within:?}:{report}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a leader exists and every running anchor names it.
    pub async fn wait_settled(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await? {
                let want = self.anchors[l].peer.map(|p| p.to_base58());
                let mut all = true;
                for i in self.running() {
                    match self.root_status(i).await {
                        Ok(s) if s.leader == want => {}
                        _ => all = false,
                    }
                }
                if all {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                bail!("the running anchors did not agree on a leader within {within:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The leader's index, which anchor it is, by peer id (from anchor `i`'s status).
    pub async fn leader_seen_by(&self, i: usize) -> Result<Option<usize>> {
        let s = self.root_status(i).await?;
        Ok(s.leader.as_deref().and_then(|p| self.index_of(p)))
    }

    /// Root-scope `last_applied` of anchor `i` (0 when none).
    pub async fn last_applied(&self, i: usize) -> Result<u64> {
        Ok(self.root_status(i).await?.last_applied.unwrap_or(0))
    }

    /// Waits until anchor `i` has applied at least `index` in the root scope.
    pub async fn wait_applied(
        &self,
        i: usize,
        index: u64,
        within: Duration,
    ) -> Result<ScopeStatus> {
        wait_for(
            &format!("anchor {i} to apply index {index}"),
            within,
            || async move {
                let s = self.root_status(i).await?;
                Ok((s.last_applied.unwrap_or(0) >= index).then_some(s))
            },
        )
        .await
    }

    /// Waits until anchor `i` has applied everything the leader `leader` had applied when
    /// this was called (re-reading the leader each poll: the target is the leader's value
    /// at that moment, so it terminates while writes continue).
    pub async fn wait_caught_up(&self, i: usize, leader: usize, within: Duration) -> Result<u64> {
        let target = self.last_applied(leader).await?;
        self.wait_applied(i, target, within).await?;
        Ok(target)
    }

    /// A resolver client whose trust anchors are all anchors.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.addrs()?, ClientConfig::default()).await?)
    }

    /// A resolver client that knows only anchor `i` (so replica reads go to it alone).
    pub async fn client_of(&self, i: usize) -> Result<Client> {
        let cfg = ClientConfig {
            cache_entries_max: 0,
            ..ClientConfig::default()
        };
        Ok(Client::connect(&[self.anchors[i].addr()?], cfg).await?)
    }

    /// Sends one raw frame to anchor `i` on `protocol` from `net` (a client swarm of the
    /// test's own) and returns the raw answer.
    pub async fn raw_request(
        &self,
        net: &NetHandle,
        i: usize,
        protocol: Protocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, resolver::net::NetError> {
        let a = &self.anchors[i];
        let peer = a.peer.expect("anchor started");
        net.request(peer, vec![a.base_addr()], protocol, bytes)
            .await
    }

    /// The Prometheus text of anchor `i`.
    pub async fn metrics(&self, i: usize) -> Result<String> {
        http_get(self.anchors[i].http(), "/metrics").await
    }

    /// `metric_value` summed over every running anchor.
    pub async fn metric_sum(&mut self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let mut sum = 0.0;
        for i in self.running() {
            sum += metric_value(&self.metrics(i).await?, name, labels);
        }
        Ok(sum)
    }

    /// Paths of every log file written so far.
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.anchors
            .iter()
            .flat_map(|a| a.logs.iter().cloned())
            .collect()
    }

    /// Prints the tail of every anchor's logs.
    pub fn print_logs(&self) {
        print_log_tails(&self.log_files());
    }
}

// ---------------------------------------------------------------------------------------
// Scopes: the root on a subset of anchors, delegation, scope leaders, pause/resume

/// A delegation that the parent committed and then marked Active, with the child's
/// replicas ready for writes (see [`Cluster::delegate`]).
#[derive(Clone, Debug)]
pub struct Delegated {
    /// The parent scope.
    pub parent: ScopeId,
    /// The parent's log index of the delegation (the version the submit returned).
    pub index: u64,
    /// The child scope.
    pub child: ScopeId,
    /// The referral the parent hands out for it.
    pub referral: Referral,
    /// The child's leader (anchor index) once it was ready.
    pub leader: usize,
}

impl Cluster {
    /// Indexes of anchors that were started, are not known dead and are not paused. Unlike
    /// [`Cluster::running`] it does not reap exited processes, so it needs only `&self`.
    pub fn live(&self) -> Vec<usize> {
        (0..self.anchors.len())
            .filter(|&i| self.anchors[i].child.is_some() && !self.anchors[i].paused)
            .collect()
    }

    /// Stops anchor `i` with SIGSTOP: its sockets stay open but it answers nothing, as if
    /// partitioned away. [`Cluster::resume`] continues it; dropping the cluster kills it.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::Stop)?;
        self.anchors[i].paused = true;
        Ok(())
    }

    /// Continues anchor `i` after [`Cluster::pause`] (SIGCONT).
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::Cont)?;
        self.anchors[i].paused = false;
        Ok(())
    }

    fn signal(&mut self, i: usize, sig: Signal) -> Result<()> {
        let a = &mut self.anchors[i];
        if !a.is_running() {
            bail!("anchor {i} is not running");
        }
        let pid = a
            .pid()
            .ok_or_else(|| anyhow!("anchor {i} has no process"))?;
        send_signal(pid, sig).with_context(|| format!("signalling anchor {i} (pid {pid})"))
    }

    /// Paths `name` in the test directory after writing `text` to it.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir().join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `/ip4/../tcp/../p2p/..` of the anchors `members`.
    pub fn addrs_of(&self, members: &[usize]) -> Result<Vec<Multiaddr>> {
        members.iter().map(|&i| self.anchors[i].addr()).collect()
    }

    /// `anchorage init` on the anchors `members` only (the root scope's members, which are
    /// then the trust anchors) with the root policy `policy_toml`; waits for a root leader.
    pub async fn init_on(&self, members: &[usize], policy_toml: &str) -> Result<usize> {
        policy::Policy::from_toml(policy_toml).context("the root policy is invalid")?;
        let path = self.write_file("root-policy.toml", policy_toml)?;
        let mut args = vec!["init".to_string()];
        for a in self.addrs_of(members)? {
            args.push("--anchor".into());
            args.push(a.to_string());
        }
        args.push("--policy".into());
        args.push(path.display().to_string());
        self.cli_ok(&args).await?;
        self.wait_scope_leader(ScopeId::root(), Duration::from_secs(20))
            .await
    }

    /// A resolver client whose trust anchors are the anchors `members` (the root's).
    pub async fn client_trusting(&self, members: &[usize], cfg: ClientConfig) -> Result<Client> {
        Ok(Client::connect(&self.addrs_of(members)?, cfg).await?)
    }

    /// One admin call to anchor `i` over the harness's own client swarm.
    pub async fn admin(&self, i: usize, req: &AdminRequest) -> Result<AdminResponse> {
        let a = &self.anchors[i];
        let peer = a.peer.ok_or_else(|| anyhow!("anchor {i} never started"))?;
        let bytes = codec::encode(req)?;
        let call = self
            .net
            .request(peer, vec![a.base_addr()], Protocol::Admin, bytes);
        let answer = tokio::time::timeout(STATUS_TIMEOUT, call)
            .await
            .map_err(|_| anyhow!("anchor {i} did not answer within {STATUS_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("anchor {i}: {e}"))?;
        Ok(codec::decode(
            &answer,
            proto::limits::CLIENT_FRAME_BYTES_MAX,
        )?)
    }

    /// `ScopeInfo` of a scope hosted on anchor `i`.
    pub async fn scope_info_at(&self, i: usize, target: ScopeTarget) -> Result<ScopeInfo> {
        match self
            .admin(
                i,
                &AdminRequest::ScopeInfo {
                    target: target.clone(),
                },
            )
            .await?
        {
            AdminResponse::Scope(info) => Ok(*info),
            AdminResponse::Error(e) => bail!("anchor {i}: scope info of {target:?}: {e}"),
            other => bail!("anchor {i} answered scope info with {other:?}"),
        }
    }

    /// Scope `id` as anchor `i` sees it (`None` if it does not host it).
    pub async fn scope_status(&self, i: usize, id: ScopeId) -> Result<Option<ScopeStatus>> {
        let s = self.status(i).await?;
        Ok(s.scopes.into_iter().find(|sc| sc.id == id))
    }

    /// The leader of scope `id`, if the live anchors hosting it agree on one: an anchor that
    /// says it leads at the highest term seen, named as leader by a majority of the scope's
    /// members.
    pub async fn scope_leader(&self, id: ScopeId) -> Result<Option<usize>> {
        let mut seen = Vec::new();
        for i in self.live() {
            if let Ok(Some(s)) = self.scope_status(i, id).await {
                seen.push((i, s));
            }
        }
        let members = seen
            .iter()
            .map(|(_, s)| s.members.len())
            .max()
            .unwrap_or(1)
            .max(1);
        Ok(self.agreed_leader(&seen, members))
    }

    /// Of the scope statuses `seen` (anchor index, status), the anchor that says it leads at
    /// the highest term seen and that more than half of `quorum_of` name as leader.
    fn agreed_leader(&self, seen: &[(usize, ScopeStatus)], quorum_of: usize) -> Option<usize> {
        let max_term = seen.iter().map(|(_, s)| s.term).max()?;
        let (li, _) = seen
            .iter()
            .find(|(_, s)| s.role == "leader" && s.term == max_term)?;
        let leader_peer = self.anchors[*li].peer.map(|p| p.to_base58());
        let agree = seen
            .iter()
            .filter(|(_, s)| s.leader.is_some() && s.leader == leader_peer)
            .count();
        (2 * agree > quorum_of).then_some(*li)
    }

    /// Waits for a leader of scope `id` (see [`Cluster::scope_leader`]).
    pub async fn wait_scope_leader(&self, id: ScopeId, within: Duration) -> Result<usize> {
        wait_for(&format!("a leader of scope {id}"), within, || async move {
            self.scope_leader(id).await
        })
        .await
    }

    /// Waits until anchor `i` has applied at least `index` in scope `id`.
    pub async fn wait_scope_applied(
        &self,
        i: usize,
        id: ScopeId,
        index: u64,
        within: Duration,
    ) -> Result<()> {
        wait_for(
            &format!("anchor {i} to apply index {index} of scope {id}"),
            within,
            || async move {
                let s = self.scope_status(i, id).await?;
                Ok(s.filter(|s| s.last_applied.unwrap_or(0) >= index)
                    .map(|_| ()))
            },
        )
        .await
    }

    /// Anchor `i` as scopes name it (peer id and listen addresses, from its status).
    pub async fn anchor_info(&self, i: usize) -> Result<AnchorInfo> {
        let s = self.status(i).await?;
        Ok(AnchorInfo {
            peer_id: s.peer_id,
            addrs: s.addrs,
        })
    }

    /// Anchor `i` as a delegation names it: its info and the labels its status reports.
    pub async fn member_spec(&self, i: usize) -> Result<MemberSpec> {
        let s = self.status(i).await?;
        Ok(MemberSpec {
            anchor: AnchorInfo {
                peer_id: s.peer_id,
                addrs: s.addrs,
            },
            labels: s.labels,
        })
    }

    /// An `Op::Delegate` of `prefix` to the anchors `members` (with the labels they report)
    /// under the child policy `policy_toml`.
    pub async fn delegate_op(
        &self,
        prefix: &str,
        members: &[usize],
        policy_toml: &str,
        referral_ttl_s: u32,
    ) -> Result<Op> {
        let mut specs = Vec::new();
        for &i in members {
            specs.push(self.member_spec(i).await?);
        }
        Ok(Op::Delegate {
            prefix: Name::parse(prefix)?,
            members: specs,
            policy_toml: policy_toml.to_string(),
            referral_ttl_s,
        })
    }

    /// Delegates `prefix` to the anchors `members` with the child policy `policy_toml`: an
    /// `Op::Delegate` signed by every key of `admins` (k of the parent's admin keys) sent
    /// through `client` to the parent, then waits until a parent replica reports the
    /// delegation Active and the child has a leader that accepts writes.
    pub async fn delegate(
        &self,
        client: &Client,
        prefix: &str,
        members: &[usize],
        policy_toml: &str,
        admins: &[&ed25519_dalek::SigningKey],
    ) -> Result<Delegated> {
        policy::Policy::from_toml(policy_toml).context("the child policy is invalid")?;
        let started = Instant::now();
        let op = self.delegate_op(prefix, members, policy_toml, 300).await?;
        let signed = sign_op(client, op, admins)?;
        let index = client
            .submit(signed)
            .await
            .with_context(|| format!("submitting the delegation of {prefix}"))?;
        let prefix = Name::parse(prefix)?;
        let (parent, delegation) = self
            .wait_delegation_active(&prefix, index, Duration::from_secs(30))
            .await?;
        let child = delegation.referral.scope;
        let derived = ScopeId::derive(&[
            &parent.0,
            prefix.to_string().as_bytes(),
            &index.to_be_bytes(),
        ]);
        if child != derived {
            bail!("the referral names child scope {child}, but the delegation at index {index} derives {derived}");
        }
        let active = started.elapsed();
        let leader = self
            .wait_scope_ready(child, Duration::from_secs(20))
            .await?;
        eprintln!(
            "delegated {prefix} to anchors {members:?} at index {index}: Active after {:.2} s, \
             child ready after {:.2} s",
            active.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(Delegated {
            parent,
            index,
            child,
            referral: delegation.referral,
            leader,
        })
    }

    /// Waits until a live anchor hosting the scope that governs `prefix`'s parent reports the
    /// delegation of `prefix` committed at `index` as Active; fails at once if it is
    /// Aborted. Returns the parent's id and the delegation.
    pub async fn wait_delegation_active(
        &self,
        prefix: &Name,
        index: u64,
        within: Duration,
    ) -> Result<(ScopeId, Delegation)> {
        let above = prefix.parent().unwrap_or_else(Name::root);
        let deadline = Instant::now() + within;
        let mut last = String::from("no parent replica answered");
        loop {
            for i in self.live() {
                let info = match self
                    .scope_info_at(i, ScopeTarget::Name(above.clone()))
                    .await
                {
                    Ok(info) => info,
                    Err(e) => {
                        last = format!("{e:#}");
                        continue;
                    }
                };
                let Some(d) = info
                    .delegations
                    .iter()
                    .find(|d| &d.referral.prefix == prefix && d.index == index)
                else {
                    continue;
                };
                match d.state {
                    DelegationState::Active => return Ok((info.descriptor.id, d.clone())),
                    DelegationState::Aborted => {
                        bail!(
                            "the delegation of {prefix} at index {index} was aborted (anchor {i})"
                        )
                    }
                    DelegationState::Frozen => last = format!("anchor {i}: still Frozen"),
                }
            }
            if Instant::now() >= deadline {
                bail!("the delegation of {prefix} at index {index} was not Active within {within:?}; last: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until scope `id` has a leader whose `ScopeInfo` says it is active (accepts
    /// writes); returns the leader's index.
    pub async fn wait_scope_ready(&self, id: ScopeId, within: Duration) -> Result<usize> {
        wait_for(
            &format!("scope {id} to have an active leader"),
            within,
            || async move {
                let Some(l) = self.scope_leader(id).await? else {
                    return Ok(None);
                };
                let info = self.scope_info_at(l, ScopeTarget::Id(id)).await?;
                Ok(info.active.then_some(l))
            },
        )
        .await
    }

    /// Sends one signed mutation to anchor `i` directly (no routing, no retries).
    pub async fn mutate_at(&self, i: usize, mutation: SignedMutation) -> Result<MutateResponse> {
        let a = &self.anchors[i];
        let peer = a.peer.ok_or_else(|| anyhow!("anchor {i} never started"))?;
        let bytes = codec::encode(&MutateRequest {
            mutation,
            forwarded: false,
        })?;
        let call = self
            .net
            .request(peer, vec![a.base_addr()], Protocol::Mutate, bytes);
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| anyhow!("anchor {i} did not answer the mutation within 10 s"))?
            .map_err(|e| anyhow!("anchor {i}: {e}"))?;
        Ok(codec::decode(
            &answer,
            proto::limits::CLIENT_FRAME_BYTES_MAX,
        )?)
    }
}

/// `op` wrapped by `client` (nonce, expiry) and signed by every key of `signers`, in order
/// (the first is the writer).
pub fn sign_op(
    client: &Client,
    op: Op,
    signers: &[&ed25519_dalek::SigningKey],
) -> Result<SignedMutation> {
    let (first, rest) = signers
        .split_first()
        .ok_or_else(|| anyhow!("a mutation needs at least one signer"))?;
    let mut signed = SignedMutation::sign(&client.prepare(op), first)?;
    for k in rest {
        signed.add_signature(k);
    }
    Ok(signed)
}

/// Hex of a signing key's public key, as policies list keys.
pub fn public_hex(key: &ed25519_dalek::SigningKey) -> String {
    to_hex(&key.verifying_key().to_bytes())
}

/// A policy in TOML: `[admin]` with the public keys of `admins` and `threshold` (omitted,
/// freezing the policy, when `admins` is empty); one `[[writers]]` rule per `(pattern,
/// keys)` of `writers` (an empty key list means any key); `[placement]` with `replicas`
/// and the required `labels`. Checked with `Policy::from_toml`.
pub fn policy_toml(
    admins: &[&ed25519_dalek::SigningKey],
    threshold: u32,
    writers: &[(&str, &[&ed25519_dalek::SigningKey])],
    replicas: u32,
    labels: &[(&str, &str)],
) -> Result<String> {
    let quoted = |keys: &[&ed25519_dalek::SigningKey]| -> String {
        keys.iter()
            .map(|k| format!("\"{}\"", public_hex(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = String::new();
    if !admins.is_empty() {
        t.push_str(&format!(
            "[admin]\nkeys = [{}]\nthreshold = {threshold}\n\n",
            quoted(admins)
        ));
    }
    for (pattern, keys) in writers {
        let keys = if keys.is_empty() {
            "\"*\"".to_string()
        } else {
            quoted(keys)
        };
        t.push_str(&format!(
            "[[writers]]\npattern = \"{}\"\nkeys = [{keys}]\n\n",
            toml_escape(pattern)
        ));
    }
    t.push_str(&format!("[placement]\nreplicas = {replicas}\n"));
    if !labels.is_empty() {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{} = \"{}\"", toml_key(k), toml_escape(v)))
            .collect();
        t.push_str(&format!("labels = {{ {} }}\n", l.join(", ")));
    }
    policy::Policy::from_toml(&t).with_context(|| format!("the generated policy:\n{t}"))?;
    Ok(t)
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Stop,
    Cont,
}

#[cfg(target_os = "linux")]
fn send_signal(pid: u32, sig: Signal) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| anyhow!("pid {pid} out of range"))?;
    let sig = match sig {
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
    };
    // SAFETY: kill(2) on a pid this harness spawned and has not reaped.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send_signal(_pid: u32, sig: Signal) -> Result<()> {
    bail!("{sig:?} is only implemented on Linux")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.anchors {
            a.kill();
        }
        self.net.shutdown();
        let logs = self.log_files();
        let Some(dir) = self.dir.take() else { return };
        if std::thread::panicking() {
            print_log_tails(&logs);
            keep_dir(dir);
            return;
        }
        if let Some(test) = self.test {
            graveyard().push(Grave { test, dir, logs });
        }
    }
}

fn config_toml(a: &AnchorProc, o: &Options) -> String {
    // TOML basic strings: escape backslashes and quotes of the path.
    let data_dir = a
        .data_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        "data_dir = \"{data_dir}\"\n\
         listen = \"/ip4/{ip}/tcp/{p2p}\"\n\
         http = \"{ip}:{http}\"\n\
         \n\
         [labels]\n\
         test_index = \"{index}\"\n\
         {labels}\
         \n\
         [raft]\n\
         heartbeat_ms = {hb}\n\
         election_min_ms = {emin}\n\
         election_max_ms = {emax}\n\
         snapshot_logs = {snap}\n\
         logs_kept_after_snapshot = {kept}\n\
         \n\
         [storage]\n\
         cache_bytes = {cache}\n",
        ip = a.ip,
        p2p = a.p2p_port,
        http = a.http_port,
        index = a.index,
        labels = a
            .labels
            .iter()
            .map(|(k, v)| format!("{} = \"{}\"\n", toml_key(k), toml_escape(v)))
            .collect::<String>(),
        hb = o.heartbeat_ms,
        emin = o.election_min_ms,
        emax = o.election_max_ms,
        snap = o.snapshot_logs,
        kept = o.logs_kept_after_snapshot,
        cache = o.cache_bytes,
    )
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("\"{}\"", toml_escape(k))
    }
}

/// The peer id from an `anchor <peer> listening; dial it as <addr>` line.
fn parse_listening(stdout: &str) -> Option<PeerId> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("anchor ")?;
        let (peer, tail) = rest.split_once(' ')?;
        if !tail.starts_with("listening") {
            return None;
        }
        peer.parse().ok()
    })
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    // The anchor gets SIGKILL if the thread that spawned it dies (the test process
    // crashing or being killed), so no anchor outlives its test.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

// ---------------------------------------------------------------------------------------
// HTTP and metrics

/// A raw HTTP/1.1 GET; returns the body of a 200 answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let path = path.to_string();
    let call = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP header end in {} bytes", raw.len()))?;
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 200 ") {
            bail!("GET {path}: {status}");
        }
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        Ok(if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        })
    });
    call.await?
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).unwrap_or("");
    }
}

/// The sum of the samples of metric `name` whose labels include every `(key, value)` of
/// `labels`, in a Prometheus text exposition (0 when there is none).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric whose name starts with `name`
        };
        let ok = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|kv| kv.trim() == format!("{k}=\"{v}\""))
        });
        if ok {
            if let Some(v) = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                sum += v;
            }
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random signing key.
pub fn random_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
}

/// The single `text` record of a record set, if that is what it holds.
pub fn text_of(set: &proto::RecordSet) -> Option<&str> {
    match set.records.as_slice() {
        [proto::Record::Text(t)] => Some(t),
        _ => None,
    }
}

/// One acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The name.
    pub name: String,
    /// Its single text record.
    pub value: String,
    /// The version the put returned.
    pub version: u64,
}

/// Writes `/<prefix>/n<i>` = `v<i>-<prefix>` for `i` in `0..n` from `tasks` concurrent tasks
/// through `client`; fails on the first error. Returns the writes sorted by version.
pub async fn write_many(
    client: &Client,
    key: &ed25519_dalek::SigningKey,
    prefix: &str,
    n: usize,
    tasks: usize,
) -> Result<Vec<Written>> {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        let key = key.clone();
        let prefix = prefix.to_string();
        set.spawn(async move {
            let mut out = Vec::new();
            for i in (t..n).step_by(tasks) {
                let name = format!("{prefix}/n{i}");
                let value = format!("v{i}{}", prefix.replace('/', "-"));
                let records = vec![proto::Record::Text(value.clone())];
                let version = client
                    .put(&name, records, 300, &key)
                    .await
                    .with_context(|| format!("put {name}"))?;
                out.push(Written {
                    name,
                    value,
                    version,
                });
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    // Several names may share a version: the leader may batch mutations into one log entry.
    all.sort_by_key(|w| w.version);
    if let Some(w) = all.iter().find(|w| w.version == 0) {
        bail!("{} was acknowledged at version 0", w.name);
    }
    Ok(all)
}

/// Resolves every write at `level` through `client` (`tasks` at a time) and checks its value
/// and version. Fails listing the first few mismatches.
pub async fn check_all(
    client: &Client,
    writes: &[Written],
    level: proto::ReadLevel,
    tasks: usize,
) -> Result<()> {
    let writes = std::sync::Arc::new(writes.to_vec());
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        let writes = writes.clone();
        set.spawn(async move {
            let mut bad = Vec::new();
            for w in writes.iter().skip(t).step_by(tasks) {
                match client.resolve(&w.name, level).await {
                    Ok(set)
                        if text_of(&set) == Some(w.value.as_str()) && set.version == w.version => {}
                    Ok(set) => bad.push(format!(
                        "{} at {level}: want {:?}@{}, got {:?}@{}",
                        w.name, w.value, w.version, set.records, set.version
                    )),
                    Err(e) => bad.push(format!("{} at {level}: {e}", w.name)),
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(r) = set.join_next().await {
        bad.extend(r?);
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} reads wrong; first: {}",
            bad.len(),
            writes.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    Ok(())
}

/// `main` of a bench binary: uses `target/release/anchorage` when it exists (unless
/// `ANCHORAGE_BIN` says otherwise), runs `body` on a multi-thread runtime within `limit`, and
/// turns the outcome into an exit code with a message naming `name`.
pub fn bench_main<F>(name: &str, limit: Duration, body: F) -> std::process::ExitCode
where
    F: Future<Output = Result<()>>,
{
    if std::env::var_os("ANCHORAGE_BIN").is_none() {
        let release = workspace_root()
            .join("target")
            .join("release")
            .join("anchorage");
        if release.is_file() {
            // Called first thing in main: no other thread exists yet.
            std::env::set_var("ANCHORAGE_BIN", &release);
        } else {
            eprintln!("note: no target/release/anchorage; the harness builds a debug binary");
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(async { tokio::time::timeout(limit, body).await }) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{name} failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{name} did not finish within {limit:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_matches_labels() {
        let text = "# HELP x\nanchorage_mutations_total{outcome=\"committed\"} 5\n\
                    anchorage_mutations_total{outcome=\"denied\"} 2\n\
                    anchorage_mutations_total_extra 9\n\
                    anchorage_refused_messages_total{protocol=\"mutate\",reason=\"malformed\"} 3\n";
        assert_eq!(metric_value(text, "anchorage_mutations_total", &[]), 7.0);
        assert_eq!(
            metric_value(text, "anchorage_mutations_total", &[("outcome", "denied")]),
            2.0
        );
        assert_eq!(
            metric_value(
                text,
                "anchorage_refused_messages_total",
                &[("protocol", "mutate"), ("reason", "malformed")]
            ),
            3.0
        );
        assert_eq!(
            metric_value(text, "anchorage_refused_messages_total", &[("reason", "x")]),
            0.0
        );
    }

    #[test]
    fn listening_line_is_parsed() {
        let peer = PeerId::random();
        let line = format!(
            "anchor {peer} listening; dial it as /ip4/127.0.0.1/tcp/1/p2p/{peer}\nmetrics at x\n"
        );
        assert_eq!(parse_listening(&line), Some(peer));
        assert_eq!(parse_listening("nothing here"), None);
    }

    #[test]
    fn dechunk_works() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}

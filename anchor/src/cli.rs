//! The `anchorage` command line: run an anchor (`start`), a local 3-anchor cluster (`dev`),
//! create the root scope (`init`), and talk to a cluster (`put`, `delete`, `cas`, `resolve`,
//! `status`, `snapshot`, `keygen`, `bench`), and inspect and steer the scope hierarchy
//! (`scope tree|show|delegate`, `policy get|set`, `watch`, `resolve --trace`; in
//! [`crate::cli_scope`]). Every command prints for humans, or JSON with `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use libp2p::multiaddr::Protocol as MaProtocol;
use libp2p::{Multiaddr, PeerId};
use proto::msg::{AdminRequest, AdminResponse, AnchorStatus};
use proto::{codec, Name, ReadLevel, Record, ScopeDescriptor, ScopeId};
use resolver::net::{self, NetConfig, NetHandle, Protocol};

use crate::{Anchor, AnchorConfig};

/// Anchorage: a namespace daemon with no central control plane.
#[derive(Parser, Debug)]
#[command(name = "anchorage", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the cluster is: trust anchors as multiaddrs ending in `/p2p/<peer id>`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// An anchor to talk to (repeatable); defaults to $ANCHORAGE_ANCHORS (comma-separated).
    #[arg(
        long = "anchor",
        env = "ANCHORAGE_ANCHORS",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) anchors: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The records of a put or cas.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// An `addr` record, IP:PORT (repeatable).
    #[arg(long)]
    addr: Vec<std::net::SocketAddr>,
    /// A `text` record (repeatable).
    #[arg(long)]
    text: Vec<String>,
    /// An `alias` record: another name.
    #[arg(long)]
    alias: Vec<String>,
    /// A `service` record: NAME:PORT[:PRIORITY[:WEIGHT]].
    #[arg(long)]
    service: Vec<String>,
    /// An `object` record: the peer id of the anchor hosting the object.
    #[arg(long)]
    object: Vec<String>,
    /// A `blob` record read from a file (at most 64 KiB).
    #[arg(long)]
    blob_file: Vec<PathBuf>,
    /// Time to live, seconds.
    #[arg(long, default_value_t = 300)]
    ttl: u32,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an anchor.
    Start {
        /// Path of anchor.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run 3 anchors locally with a development policy and example names.
    Dev {
        /// Where the anchors keep their data.
        #[arg(long, default_value = "anchorage-dev")]
        dir: PathBuf,
        /// First libp2p port; anchors use PORT, PORT+1, PORT+2 (HTTP: PORT+100...).
        #[arg(long, default_value_t = 7401)]
        port: u16,
    },
    /// Create the root scope on the given anchors (once per cluster).
    Init {
        #[command(flatten)]
        target: Target,
        /// Policy of the root scope (TOML); default: the development policy.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Generate an ed25519 signing key.
    Keygen {
        /// Where to write the secret key (hex, mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a name's record set.
    Put {
        /// The name, e.g. /eu/payments/api.
        name: String,
        #[command(flatten)]
        records: RecordArgs,
        /// Signing key file (from `anchorage keygen`).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Compare-and-set a name's record set on its version (0 = must not exist).
    Cas {
        /// The name.
        name: String,
        /// Expected current version.
        #[arg(long)]
        expect: u64,
        #[command(flatten)]
        records: RecordArgs,
        /// Signing key file.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a name.
    Delete {
        /// The name.
        name: String,
        /// Signing key file.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Resolve a name.
    Resolve {
        /// The name.
        name: String,
        /// Read through the leader after a quorum check.
        #[arg(long, conflicts_with = "replica")]
        linearizable: bool,
        /// Read any member's current state, bypassing caches.
        #[arg(long)]
        replica: bool,
        /// Show every hop of the walk (scope, anchor, round-trip time, outcome), like
        /// `dig +trace`.
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show each anchor's scopes, roles, terms and indexes.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Snapshot every scope on each given anchor and purge its log.
    Snapshot {
        #[command(flatten)]
        target: Target,
    },
    /// Drive concurrent writers and readers against a cluster and print figures.
    Bench(crate::cli_bench::BenchArgs),
    /// Inspect and delegate scopes: `scope tree`, `scope show`, `scope delegate`.
    #[command(subcommand)]
    Scope(crate::cli_scope::ScopeCommand),
    /// Read and change a scope's policy: `policy get`, `policy set`.
    #[command(subcommand)]
    Policy(crate::cli_scope::PolicyCommand),
    /// Print every committed change under a prefix as it happens.
    Watch(crate::cli_scope::WatchArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANCHORAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,anchor=info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Start { config } => start(&config).await,
        Command::Dev { dir, port } => dev(&dir, port).await,
        Command::Init { target, policy } => init(&target, policy.as_deref()).await,
        Command::Keygen { out } => keygen(&out),
        Command::Put {
            name,
            records,
            key,
            target,
        } => {
            let client = client(&target).await?;
            let key = load_key(&key)?;
            let v = client
                .put(&name, records.build()?, records.ttl, &key)
                .await?;
            print_version(&target, &name, v);
            Ok(())
        }
        Command::Cas {
            name,
            expect,
            records,
            key,
            target,
        } => {
            let client = client(&target).await?;
            let key = load_key(&key)?;
            let v = client
                .cas(&name, expect, records.build()?, records.ttl, &key)
                .await?;
            print_version(&target, &name, v);
            Ok(())
        }
        Command::Delete { name, key, target } => {
            let client = client(&target).await?;
            let v = client.delete(&name, &load_key(&key)?).await?;
            print_version(&target, &name, v);
            Ok(())
        }
        Command::Resolve {
            name,
            linearizable,
            replica,
            trace,
            target,
        } => {
            let level = if linearizable {
                ReadLevel::Linearizable
            } else if replica {
                ReadLevel::Replica
            } else {
                ReadLevel::Cached
            };
            if trace {
                crate::cli_scope::resolve_trace(&target, &name, level).await
            } else {
                resolve(&target, &name, level).await
            }
        }
        Command::Status { target } => status(&target).await,
        Command::Snapshot { target } => snapshot(&target).await,
        Command::Bench(args) => crate::cli_bench::run(args).await,
        Command::Scope(cmd) => crate::cli_scope::run_scope(cmd).await,
        Command::Policy(cmd) => crate::cli_scope::run_policy(cmd).await,
        Command::Watch(args) => crate::cli_scope::watch(args).await,
    }
}

fn print_version(target: &Target, name: &str, version: u64) {
    if target.json {
        println!(
            "{}",
            serde_json::json!({ "name": name, "version": version })
        );
    } else {
        println!("{name}: committed at version {version}");
    }
}

/// A client whose trust anchors are the target's anchors.
pub(crate) async fn client(target: &Target) -> Result<resolver::Client> {
    let addrs = parse_anchors(&target.anchors)?;
    Ok(resolver::Client::connect(&addrs, resolver::ClientConfig::default()).await?)
}

/// Parses `/ip4/.../tcp/.../p2p/<peer>` strings.
pub fn parse_anchors(list: &[String]) -> Result<Vec<Multiaddr>> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let a: Multiaddr = s
                .trim()
                .parse()
                .with_context(|| format!("anchor {s:?} is not a multiaddr"))?;
            split_peer(&a).with_context(|| format!("anchor {s:?}"))?;
            Ok(a)
        })
        .collect()
}

/// Splits `/…/p2p/<peer>` into the peer and the address before it.
pub(crate) fn split_peer(addr: &Multiaddr) -> Result<(PeerId, Multiaddr)> {
    let mut base = addr.clone();
    match base.pop() {
        Some(MaProtocol::P2p(peer)) => Ok((peer, base)),
        _ => bail!("must end in /p2p/<peer id> (see `anchorage status` or the anchor's log)"),
    }
}

// ---- start ----

async fn start(config: &Path) -> Result<()> {
    let cfg = AnchorConfig::load(config)?;
    let anchor = Anchor::start(cfg).await?;
    println!(
        "anchor {} listening; dial it as {}",
        anchor.info().peer_id,
        anchor.dial_addr()
    );
    if let Some(http) = anchor.http_addr() {
        println!("metrics at http://{http}/metrics");
    }
    wait_for_signal().await;
    anchor.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

// ---- admin calls ----

/// A short-lived client swarm for operator calls to specific anchors.
pub struct AdminConn {
    net: NetHandle,
}

impl AdminConn {
    /// Starts a client swarm.
    pub fn new() -> Result<AdminConn> {
        let (net, _) = net::spawn(NetConfig::client())?;
        Ok(AdminConn { net })
    }

    /// Sends one admin request to the anchor at `addr` (ending in /p2p/<peer>).
    pub async fn call(&self, addr: &Multiaddr, req: &AdminRequest) -> Result<AdminResponse> {
        let (peer, base) = split_peer(addr)?;
        let bytes = codec::encode(req)?;
        let fut = self.net.request(peer, vec![base], Protocol::Admin, bytes);
        let answer = tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| anyhow!("{addr} did not answer within 30 s"))??;
        Ok(codec::decode(
            &answer,
            proto::limits::CLIENT_FRAME_BYTES_MAX,
        )?)
    }

    /// The status of the anchor at `addr`.
    pub async fn status(&self, addr: &Multiaddr) -> Result<AnchorStatus> {
        match self.call(addr, &AdminRequest::Status).await? {
            AdminResponse::Status(s) => Ok(s),
            AdminResponse::Error(e) => bail!("{addr}: {e}"),
            other => bail!("{addr}: unexpected answer {other:?}"),
        }
    }
}

impl Drop for AdminConn {
    fn drop(&mut self) {
        self.net.shutdown();
    }
}

/// Creates the root scope on the anchors at `addrs` with the given policy.
pub async fn init_root(addrs: &[Multiaddr], policy_toml: String) -> Result<ScopeId> {
    policy::Policy::from_toml(&policy_toml).context("the root policy is invalid")?;
    if addrs.is_empty() || addrs.len() > proto::limits::SCOPE_MEMBERS_MAX {
        bail!(
            "init needs 1..={} anchors",
            proto::limits::SCOPE_MEMBERS_MAX
        );
    }
    let conn = AdminConn::new()?;
    let mut members = Vec::new();
    for a in addrs {
        let s = conn.status(a).await?;
        if s.scopes.iter().any(|sc| sc.id == ScopeId::root()) {
            bail!("{a} already hosts the root scope: this cluster is initialized (init runs once)");
        }
        members.push(proto::AnchorInfo {
            peer_id: s.peer_id,
            addrs: s.addrs,
        });
    }
    let descriptor = ScopeDescriptor {
        id: ScopeId::root(),
        prefix: Name::root(),
        epoch: 1,
        members,
    };
    for (i, a) in addrs.iter().enumerate().rev() {
        let req = AdminRequest::CreateScope {
            descriptor: descriptor.clone(),
            policy_toml: policy_toml.clone(),
            bootstrap: i == 0,
        };
        match conn.call(a, &req).await? {
            AdminResponse::Ok => {}
            AdminResponse::Error(e) => bail!("{a}: {e}"),
            other => bail!("{a}: unexpected answer {other:?}"),
        }
    }
    Ok(descriptor.id)
}

async fn init(target: &Target, policy: Option<&Path>) -> Result<()> {
    let addrs = parse_anchors(&target.anchors)?;
    let policy_toml = match policy {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => policy::Policy::development(None).to_toml(),
    };
    let id = init_root(&addrs, policy_toml).await?;
    if target.json {
        println!(
            "{}",
            serde_json::json!({ "root_scope": id.to_hex(), "members": addrs.len() })
        );
    } else {
        println!("root scope {id} created on {} anchors", addrs.len());
    }
    Ok(())
}

async fn status(target: &Target) -> Result<()> {
    let conn = AdminConn::new()?;
    let mut all = Vec::new();
    for a in parse_anchors(&target.anchors)? {
        match conn.status(&a).await {
            Ok(s) => all.push(serde_json::to_value(&s)?),
            Err(e) => {
                all.push(serde_json::json!({ "anchor": a.to_string(), "error": e.to_string() }))
            }
        }
    }
    if target.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for s in &all {
        if let Some(e) = s.get("error") {
            println!(
                "{}: unreachable: {}",
                s["anchor"].as_str().unwrap_or("?"),
                e.as_str().unwrap_or("?")
            );
            continue;
        }
        let s: AnchorStatus = serde_json::from_value(s.clone())?;
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if labels.is_empty() {
            println!("anchor {} {}", s.peer_id, s.addrs.join(" "));
        } else {
            println!(
                "anchor {} {}  labels {}",
                s.peer_id,
                s.addrs.join(" "),
                labels.join(",")
            );
        }
        for sc in &s.scopes {
            println!(
                "  scope {} {:<12} {:<9} term {:<4} applied {:<8} log {:<8} snapshot {:<8} names {:<6} leader {}",
                &sc.id.to_hex()[..12],
                sc.prefix.to_string(),
                sc.role,
                sc.term,
                fmt_opt(sc.last_applied),
                fmt_opt(sc.last_log),
                fmt_opt(sc.snapshot),
                sc.names,
                sc.leader.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(())
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

async fn snapshot(target: &Target) -> Result<()> {
    let conn = AdminConn::new()?;
    for a in parse_anchors(&target.anchors)? {
        match conn.call(&a, &AdminRequest::Snapshot).await? {
            AdminResponse::Ok => println!("{a}: snapshot built, log purged"),
            AdminResponse::Error(e) => bail!("{a}: {e}"),
            other => bail!("{a}: unexpected answer {other:?}"),
        }
    }
    Ok(())
}

async fn resolve(target: &Target, name: &str, level: ReadLevel) -> Result<()> {
    let client = client(target).await?;
    let set = client.resolve(name, level).await?;
    if target.json {
        let records: Vec<String> = set.records.iter().map(|r| r.to_string()).collect();
        println!(
            "{}",
            serde_json::json!({
                "name": name, "version": set.version, "ttl_s": set.ttl_s,
                "writer": hex::encode(set.writer), "records": records,
            })
        );
    } else {
        println!("{name}  version {}  ttl {}s", set.version, set.ttl_s);
        for r in &set.records {
            println!("  {r}");
        }
    }
    Ok(())
}

// ---- keys ----

fn keygen(out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    write_key(out, &key)?;
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(())
}

/// Writes a signing key as hex, mode 0600.
pub fn write_key(path: &Path, key: &ed25519_dalek::SigningKey) -> Result<()> {
    std::fs::write(path, format!("{}\n", hex::encode(key.to_bytes())))
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Reads a signing key written by `anchorage keygen`.
pub fn load_key(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let bytes =
        hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("{} must hold 32 bytes (64 hex digits)", path.display()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

impl RecordArgs {
    fn build(&self) -> Result<Vec<Record>> {
        let mut out: Vec<Record> = self.addr.iter().map(|a| Record::Addr(*a)).collect();
        out.extend(self.text.iter().map(|t| Record::Text(t.clone())));
        for a in &self.alias {
            out.push(Record::Alias(Name::parse(a)?));
        }
        for s in &self.service {
            out.push(parse_service(s)?);
        }
        out.extend(
            self.object
                .iter()
                .map(|p| Record::Object { peer: p.clone() }),
        );
        for f in &self.blob_file {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            out.push(Record::Blob(bytes));
        }
        if out.is_empty() {
            bail!("give at least one record: --addr, --text, --alias, --service, --object or --blob-file");
        }
        proto::record::validate_records(&out, self.ttl)?;
        Ok(out)
    }
}

fn parse_service(s: &str) -> Result<Record> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |i: usize, what: &str, default: u16| -> Result<u16> {
        parts.get(i).map_or(Ok(default), |p| {
            p.parse()
                .with_context(|| format!("service {s:?}: bad {what}"))
        })
    };
    if parts.len() < 2 || parts.len() > 4 {
        bail!("service {s:?} must be NAME:PORT[:PRIORITY[:WEIGHT]]");
    }
    Ok(Record::Service {
        target: Name::parse(parts[0])?,
        port: num(1, "port", 0)?,
        priority: num(2, "priority", 10)?,
        weight: num(3, "weight", 10)?,
    })
}

// ---- dev ----

async fn dev(dir: &Path, port: u16) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut anchors = Vec::new();
    for i in 0..3u16 {
        let mut cfg = AnchorConfig::new(dir.join(format!("anchor{}", i + 1)));
        cfg.listen = format!("/ip4/127.0.0.1/tcp/{}", port + i);
        cfg.http = std::net::SocketAddr::from(([127, 0, 0, 1], port + 100 + i));
        anchors.push(Anchor::start(cfg).await?);
    }
    let addrs: Vec<Multiaddr> = anchors
        .iter()
        .map(|a| a.dial_addr().parse())
        .collect::<Result<_, _>>()?;
    let admin_path = dir.join("admin.key");
    let dev_key_path = dir.join("dev.key");
    let fresh = !anchors[0]
        .replicas()
        .iter()
        .any(|r| r.id == ScopeId::root());
    if fresh {
        let admin = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        write_key(&admin_path, &admin)?;
        write_key(
            &dev_key_path,
            &ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        )?;
        let admin_pub = policy::PublicKey::from_bytes(&admin.verifying_key().to_bytes())?;
        init_root(
            &addrs,
            policy::Policy::development(Some(admin_pub)).to_toml(),
        )
        .await?;
        let client = resolver::Client::connect(&addrs, resolver::ClientConfig::default()).await?;
        let key = load_key(&dev_key_path)?;
        let examples: [(&str, Record); 3] = [
            ("/hello", Record::Text("hello from anchorage".into())),
            ("/eu/payments/api", Record::Addr("127.0.0.1:8443".parse()?)),
            (
                "/eu/payments/db",
                Record::Service {
                    target: Name::parse("/eu/payments/db1")?,
                    port: 5432,
                    priority: 10,
                    weight: 10,
                },
            ),
        ];
        for (name, record) in examples {
            client.put(name, vec![record], 300, &key).await?;
        }
    }
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "Anchorage dev cluster: 3 anchors, data in {}",
        dir.display()
    );
    for a in &anchors {
        println!(
            "  {}  metrics http://{}/metrics",
            a.dial_addr(),
            a.http_addr().map_or("-".into(), |h| h.to_string())
        );
    }
    println!("\nFrom another terminal:\n");
    println!("  export ANCHORAGE_ANCHORS={}", list.join(","));
    println!("  anchorage status");
    println!("  anchorage resolve /hello");
    println!("  anchorage resolve /eu/payments/api --linearizable");
    println!(
        "  anchorage put /hello --text 'hi there' --key {}",
        dev_key_path.display()
    );
    println!("\nCtrl-C stops the cluster; run `anchorage dev` again to restart it with its data.");
    wait_for_signal().await;
    for a in &anchors {
        a.shutdown().await;
    }
    Ok(())
}

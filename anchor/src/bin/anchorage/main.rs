//! The `anchorage` command line: run an anchor (`start`), a local 3-anchor cluster (`dev`),
//! create the root scope (`init`), talk to a cluster (`put`, `delete`, `cas`, `resolve`,
//! `status`, `snapshot`, `keygen`, `bench`), and inspect and steer the scope hierarchy
//! (`scope tree|show|delegate`, `policy get|set`, `watch`, `resolve --trace`). Every command
//! prints for humans, or JSON with `--json`.
//!
//! Layout: one file per command in [`cmd`]; the arguments every cluster command shares in
//! [`target`]; key files in [`keys`]; everything that turns answers into text or JSON, as
//! pure functions, in [`render`].

// The doc comments of the clap argument types are the `--help` text users read
// (`NAME:PORT[:WEIGHT]`, `/p2p/<peer id>`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// jemalloc returns freed memory to the system (see `anchor/Cargo.toml`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the environment overrides
/// them): a background thread hands freed pages back after the decay time even while the
/// anchor is idle. Without it, pages are only returned when the process allocates again,
/// so after thousands of groups hibernated an idle anchor kept up to 45 MiB more resident.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 23] = b"background_thread:true\0";

mod cmd;
mod keys;
mod render;
mod signal;
mod target;

use cmd::put::RecordArgs;
use target::Target;

/// Anchorage: a namespace daemon with no central control plane.
#[derive(Parser, Debug)]
#[command(name = "anchorage", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    Bench(cmd::bench::BenchArgs),
    /// Inspect and delegate scopes: `scope tree`, `scope show`, `scope delegate`.
    #[command(subcommand)]
    Scope(cmd::scope::ScopeCmd),
    /// Read and change a scope's policy: `policy get`, `policy set`.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCmd),
    /// Print every committed change under a prefix as it happens.
    Watch(cmd::watch::WatchArgs),
}

fn main() -> ExitCode {
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
        Command::Start { config } => cmd::start::run(&config).await,
        Command::Dev { dir, port } => cmd::dev::run(&dir, port).await,
        Command::Init { target, policy } => cmd::init::run(&target, policy.as_deref()).await,
        Command::Keygen { out } => cmd::keygen::run(&out),
        Command::Put {
            name,
            records,
            key,
            target,
        } => cmd::put::put(&target, &name, &records, &key).await,
        Command::Cas {
            name,
            expect,
            records,
            key,
            target,
        } => cmd::put::cas(&target, &name, expect, &records, &key).await,
        Command::Delete { name, key, target } => cmd::put::delete(&target, &name, &key).await,
        Command::Resolve {
            name,
            linearizable,
            replica,
            trace,
            target,
        } => {
            let level = cmd::resolve::level(linearizable, replica);
            if trace {
                cmd::resolve::traced(&target, &name, level).await
            } else {
                cmd::resolve::run(&target, &name, level).await
            }
        }
        Command::Status { target } => cmd::status::run(&target).await,
        Command::Snapshot { target } => cmd::snapshot::run(&target).await,
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::Scope(c) => cmd::scope::run(c).await,
        Command::Policy(c) => cmd::policy::run(c).await,
        Command::Watch(args) => cmd::watch::run(args).await,
    }
}

//! The `anchorage` binary under test: where the workspace and its target dir are, the
//! one-per-process build, and `main` of the bench binaries (which prefer a release build).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};

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

//! The external tools the fabric drives (`ip` from iproute2, `iptables-restore`): finding
//! them, checking that this machine can create namespaces, and running them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Where the external tools live.
#[derive(Clone, Debug)]
pub(super) struct Tools {
    pub(super) ip: PathBuf,
    pub(super) iptables_restore: PathBuf,
}

/// Finds `name` on `PATH`, then in the sbin directories (which a non-login `PATH` may lack).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Checks what network namespaces need and says precisely what is missing.
pub(super) fn requirements() -> Result<Tools> {
    let mut missing = Vec::new();
    if !cfg!(target_os = "linux") {
        bail!("process-level partitions need Linux network namespaces; this is not Linux");
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            missing.push(format!(
                "root (creating network namespaces, veths and iptables rules needs \
                 CAP_SYS_ADMIN and CAP_NET_ADMIN; this test runs as uid {euid})"
            ));
        }
    }
    let ip = find_tool("ip");
    if ip.is_none() {
        missing.push("the `ip` command (iproute2) on PATH or in /usr/sbin, /sbin".into());
    }
    let iptables_restore = find_tool("iptables-restore");
    if iptables_restore.is_none() {
        missing.push(
            "the `iptables-restore` command (iptables) on PATH or in /usr/sbin, /sbin".into(),
        );
    }
    if !missing.is_empty() {
        bail!(
            "cannot build the network-namespace fabric for process-level partitions; \
             missing: {}. Run the test as root on Linux with iproute2 and iptables \
             installed (see docs/reliability-netns.md)",
            missing.join("; ")
        );
    }
    Ok(Tools {
        ip: ip.expect("checked"),
        iptables_restore: iptables_restore.expect("checked"),
    })
}

/// Runs a command; fails with its stderr.
pub(super) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, ignoring failure (cleanup of things that may not exist).
pub(super) fn run_quiet(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

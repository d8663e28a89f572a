//! One anchor process slot ([`AnchorProc`]: ports, data dir, logs, the child while it runs)
//! and the operating-system details around it: free loopback ports, the "listening" line,
//! SIGSTOP/SIGCONT, and dying with the test process.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::{anyhow, Result};
use resolver::{Multiaddr, PeerId};

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
    /// Anchors it joins at start (`join` in its config: `/ip4/…/p2p/…` each).
    pub join: Vec<String>,
    /// True while it is stopped by [`Cluster::pause`](crate::Cluster::pause).
    pub paused: bool,
    pub(crate) child: Option<Child>,
    pub(crate) starts: usize,
    pub(crate) logs: Vec<PathBuf>,
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

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL also ends a stopped (paused) process.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }
}

pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Hold every listener until all are chosen so the ports are distinct.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Signal {
    Stop,
    Cont,
}

#[cfg(target_os = "linux")]
pub(crate) fn send_signal(pid: u32, sig: Signal) -> Result<()> {
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
pub(crate) fn send_signal(_pid: u32, sig: Signal) -> Result<()> {
    anyhow::bail!("{sig:?} is only implemented on Linux")
}

/// The peer id from an `anchor <peer> listening; dial it as <addr>` line.
pub(crate) fn parse_listening(stdout: &str) -> Option<PeerId> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("anchor ")?;
        let (peer, tail) = rest.split_once(' ')?;
        if !tail.starts_with("listening") {
            return None;
        }
        peer.parse().ok()
    })
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(target_os = "linux")]
pub(crate) fn die_with_parent(cmd: &mut Command) {
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
pub(crate) fn die_with_parent(_: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed() {
        let peer = PeerId::random();
        let line = format!(
            "anchor {peer} listening; dial it as /ip4/127.0.0.1/tcp/1/p2p/{peer}\nmetrics at x\n"
        );
        assert_eq!(parse_listening(&line), Some(peer));
        assert_eq!(parse_listening("nothing here"), None);
    }
}

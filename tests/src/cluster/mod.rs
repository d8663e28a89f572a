//! A [`Cluster`] of real `anchorage` processes in one temporary directory: starting them
//! (on loopback, with labels, or in network namespaces), killing, restarting, pausing and
//! resuming single anchors, and cleaning up on drop. The requests the harness makes to the
//! anchors, the root scope's leader, the CLI and scopes live in the submodules.

mod calls;
mod cli;
mod root;
pub(crate) mod scopes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use proto::msg::ScopeStatus;
use resolver::net::{self, NetConfig, NetHandle};

use crate::binary::anchorage_bin;
use crate::bounded::{graveyard, keep_dir, print_log_tails, Grave, TEST_ID};
use crate::config::{config_toml, Options};
use crate::netns;
use crate::process::{
    die_with_parent, free_ports, parse_listening, send_signal, tail, AnchorProc, Signal,
};

/// libp2p port of anchors in network namespaces (each has an address of its own).
const NETNS_P2P_PORT: u16 = 7400;

/// HTTP port of anchors in network namespaces.
const NETNS_HTTP_PORT: u16 = 9400;

/// How long an anchor may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

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
                join: Vec::new(),
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

    /// Starts one more anchor on loopback whose config joins the anchors `join` (their
    /// `/ip4/…/tcp/…/p2p/…` addresses), and waits until it listens; returns its index.
    pub async fn add_joining(&mut self, join: &[usize]) -> Result<usize> {
        if self.fabric.is_some() {
            bail!("add_joining runs on loopback clusters only");
        }
        let i = self.anchors.len();
        let join = join
            .iter()
            .map(|&j| Ok(self.anchors[j].addr()?.to_string()))
            .collect::<Result<Vec<_>>>()?;
        let ports = free_ports(2)?;
        let data_dir = self.dir().join(format!("a{i}"));
        std::fs::create_dir_all(&data_dir)?;
        let a = AnchorProc {
            index: i,
            data_dir,
            config: self.dir().join(format!("a{i}.toml")),
            p2p_port: ports[0],
            http_port: ports[1],
            peer: None,
            ip: std::net::Ipv4Addr::LOCALHOST,
            netns: None,
            labels: BTreeMap::new(),
            join,
            paused: false,
            child: None,
            starts: 0,
            logs: Vec::new(),
        };
        std::fs::write(&a.config, config_toml(&a, &self.options))?;
        self.anchors.push(a);
        self.spawn(i)?;
        self.wait_listening(i).await?;
        Ok(i)
    }

    /// SIGKILLs anchor `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.anchors[i].kill();
    }

    /// Starts anchor `i` again (same ports, same data dir) and waits until it listens.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)?;
        self.wait_listening(i).await
    }

    /// The network-namespace fabric, to cut and heal links between anchor processes;
    /// an error for a cluster started without namespaces.
    pub fn netns(&mut self) -> Result<&mut netns::Fabric> {
        self.fabric.as_mut().ok_or_else(|| {
            anyhow!("this cluster runs on loopback; start it with Cluster::start_netns")
        })
    }

    /// Indexes of anchors whose process runs and is not paused ([`Cluster::pause`]).
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.anchors.len())
            .filter(|&i| !self.anchors[i].paused && self.anchors[i].is_running())
            .collect()
    }

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

    fn index_of(&self, peer: &str) -> Option<usize> {
        self.anchors
            .iter()
            .position(|a| a.peer.is_some_and(|p| p.to_base58() == peer))
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

//! The [`Fabric`]: one slot's namespaces (a hub with a bridge, one namespace per anchor, a
//! link to the root namespace), the commands that run an anchor inside its namespace, and
//! the firewall rules that cut and heal links between endpoints.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};

use super::slots::{lock_dir, ours, remove_leftovers, remove_slot, try_lock, PREFIX, SLOTS};
use super::tools::{requirements, run, run_quiet, Tools};

/// Host byte of the root namespace's address on every slot's subnet.
const HOST_BYTE: u8 = 254;

/// Most anchors one fabric holds (host bytes 1..=ANCHORS_MAX).
pub const ANCHORS_MAX: usize = 32;

static NEXT_FABRIC: AtomicU64 = AtomicU64::new(0);

/// A set of network namespaces, one per anchor, joined by a bridge; see the module docs.
pub struct Fabric {
    tools: Tools,
    slot: u8,
    anchors: usize,
    /// Unordered pairs of cut endpoints, `(low, high)`; [`HOST`] is the root namespace.
    cuts: BTreeSet<(usize, usize)>,
    /// The slot lock; dropping it releases the slot.
    _lock: std::fs::File,
    torn_down: bool,
}

/// The root namespace (the test process) as an endpoint of a cut.
pub const HOST: usize = usize::MAX;

impl Fabric {
    /// Claims a free slot, removes leftovers of an earlier run in it, and creates the hub,
    /// `anchors` anchor namespaces and their links. Fails saying what is missing if the
    /// machine cannot (not root, no `ip`, no `iptables-restore`, no namespace support).
    pub fn create(anchors: usize) -> Result<Fabric> {
        if anchors == 0 || anchors > ANCHORS_MAX {
            bail!("a fabric holds 1..={ANCHORS_MAX} anchors, not {anchors}");
        }
        let tools = requirements()?;
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Start somewhere that depends on the process and on how many fabrics it made, so
        // parallel tests (threads or processes) rarely probe the same slots.
        let start = (u64::from(std::process::id()) * 7
            + NEXT_FABRIC.fetch_add(1, Ordering::Relaxed))
            % u64::from(SLOTS);
        let mut claimed = None;
        for k in 0..SLOTS {
            let x = (start as u32 + k) % SLOTS + 1;
            if let Some(lock) = try_lock(&dir, x)? {
                claimed = Some((x, lock));
                break;
            }
        }
        let (x, lock) =
            claimed.ok_or_else(|| anyhow!("all {SLOTS} network-namespace slots are in use"))?;
        remove_leftovers(&tools, &dir, x);
        let mut fabric = Fabric {
            tools,
            slot: x as u8,
            anchors,
            cuts: BTreeSet::new(),
            _lock: lock,
            torn_down: false,
        };
        if let Err(e) = fabric.build() {
            fabric.teardown();
            return Err(e.context(format!(
                "creating the network-namespace fabric in slot {x} (10.200.{x}.0/24); \
                 this needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN, iproute2 and \
                 kernel support for network namespaces, veth and bridges"
            )));
        }
        Ok(fabric)
    }

    /// The slot number (the subnet is `10.200.<slot>.0/24`).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Number of anchor namespaces.
    pub fn len(&self) -> usize {
        self.anchors
    }

    /// True if the fabric has no anchor namespaces (never: [`Fabric::create`] refuses 0).
    pub fn is_empty(&self) -> bool {
        self.anchors == 0
    }

    /// The `ip` binary in use.
    pub fn ip_bin(&self) -> &Path {
        &self.tools.ip
    }

    fn prefix(&self) -> String {
        format!("{PREFIX}{}", self.slot)
    }

    fn hub(&self) -> String {
        format!("{}h", self.prefix())
    }

    /// The namespace of anchor `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}a{i}", self.prefix())
    }

    /// The root namespace's end of the link to the hub.
    fn root_link(&self) -> String {
        format!("{}r", self.prefix())
    }

    /// Anchor `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.slot, i as u8 + 1)
    }

    /// The root namespace's address on the fabric.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.slot, HOST_BYTE)
    }

    fn endpoint_addr(&self, e: usize) -> Ipv4Addr {
        if e == HOST {
            self.host_addr()
        } else {
            self.addr(e)
        }
    }

    /// `ip netns exec <namespace of i> <program>`: run `program` inside anchor `i`'s
    /// namespace (`ip` execs it, so the child's pid is `program`'s).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new(&self.tools.ip);
        cmd.arg("netns")
            .arg("exec")
            .arg(self.namespace(i))
            .arg(program);
        cmd
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.tools.ip).args(args))
    }

    fn build(&self) -> Result<()> {
        let hub = self.hub();
        self.ip(&["netns", "add", &hub])?;
        self.ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        self.ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        self.ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        // The root namespace's link into the hub.
        let root = self.root_link();
        self.ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", "up0", "netns", &hub,
        ])?;
        self.ip(&["-n", &hub, "link", "set", "up0", "master", "br0", "up"])?;
        let host = format!("{}/24", self.host_addr());
        self.ip(&["addr", "add", &host, "dev", &root])?;
        self.ip(&["link", "set", &root, "up"])?;
        for i in 0..self.anchors {
            let ns = self.namespace(i);
            let port = format!("a{i}");
            self.ip(&["netns", "add", &ns])?;
            self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            self.ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            self.ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.addr(i));
            self.ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            self.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        // An empty rule set everywhere proves iptables works inside the namespaces now,
        // not at the first partition.
        for i in 0..self.anchors {
            self.apply_rules(i)
                .with_context(|| format!("iptables in namespace {}", self.namespace(i)))?;
        }
        Ok(())
    }

    /// Processes (pids) running in anchor `i`'s namespace.
    pub fn pids(&self, i: usize) -> Vec<u32> {
        run_quiet(Command::new(&self.tools.ip).args(["netns", "pids", &self.namespace(i)]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills what runs in the namespaces, deletes them and the root link. Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let mut all: Vec<String> = (0..self.anchors).map(|i| self.namespace(i)).collect();
        all.push(self.hub());
        let slot = u32::from(self.slot);
        for (s, ns) in ours(&self.tools).0 {
            if s == slot && !all.contains(&ns) {
                all.push(ns);
            }
        }
        remove_slot(&self.tools, slot, &all);
    }

    /// The iptables-restore input for anchor `i`'s namespace.
    fn rules(&self, i: usize) -> String {
        let mut text = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for &(a, b) in &self.cuts {
            let other = if a == i {
                b
            } else if b == i {
                a
            } else {
                continue;
            };
            let addr = self.endpoint_addr(other);
            let _ = writeln!(text, "-A INPUT -s {addr}/32 -j DROP");
            let _ = writeln!(text, "-A OUTPUT -d {addr}/32 -j DROP");
        }
        text.push_str("COMMIT\n");
        text
    }

    /// Replaces anchor `i`'s rule set with the one [`Fabric::rules`] gives.
    fn apply_rules(&self, i: usize) -> Result<()> {
        let rules = self.rules(i);
        let mut child = Command::new(&self.tools.ip)
            .arg("netns")
            .arg("exec")
            .arg(self.namespace(i))
            .arg(&self.tools.iptables_restore)
            .arg("-w")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning iptables-restore")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "iptables-restore in {} failed ({}): {}\ninput:\n{rules}",
                self.namespace(i),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn check_endpoint(&self, e: usize) -> Result<()> {
        if e != HOST && e >= self.anchors {
            bail!("no anchor {e} in a fabric of {}", self.anchors);
        }
        Ok(())
    }

    fn set_cut(&mut self, a: usize, b: usize, cut: bool) -> Result<()> {
        self.check_endpoint(a)?;
        self.check_endpoint(b)?;
        if a == b {
            bail!("cannot cut {a} from itself");
        }
        let pair = (a.min(b), a.max(b));
        let changed = if cut {
            self.cuts.insert(pair)
        } else {
            self.cuts.remove(&pair)
        };
        if changed {
            for e in [a, b] {
                if e != HOST {
                    self.apply_rules(e)?;
                }
            }
        }
        Ok(())
    }

    /// Drops every packet between anchors `a` and `b` (both directions). `a` or `b` may be
    /// [`HOST`], the root namespace.
    pub fn cut(&mut self, a: usize, b: usize) -> Result<()> {
        self.set_cut(a, b, true)
    }

    /// Undoes [`Fabric::cut`] between `a` and `b`.
    pub fn heal(&mut self, a: usize, b: usize) -> Result<()> {
        self.set_cut(a, b, false)
    }

    /// Cuts anchor `i` from every other anchor (the root namespace still reaches it).
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        for j in 0..self.anchors {
            if j != i {
                self.cut(i, j)?;
            }
        }
        Ok(())
    }

    /// Cuts anchor `i` from the root namespace (the test process and its clients).
    pub fn cut_host(&mut self, i: usize) -> Result<()> {
        self.cut(i, HOST)
    }

    /// Removes every cut.
    pub fn heal_all(&mut self) -> Result<()> {
        let touched: BTreeSet<usize> = self
            .cuts
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .filter(|&e| e != HOST)
            .collect();
        self.cuts.clear();
        for e in touched {
            self.apply_rules(e)?;
        }
        Ok(())
    }

    /// The current cuts, as unordered pairs (`(low, high)`; [`HOST`] sorts last).
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        self.cuts.iter().copied().collect()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_both_directions_of_each_cut() {
        let mut f = Fabric {
            tools: Tools {
                ip: "/nonexistent/ip".into(),
                iptables_restore: "/nonexistent/iptables-restore".into(),
            },
            slot: 7,
            anchors: 3,
            cuts: BTreeSet::new(),
            _lock: tempfile::tempfile().unwrap(),
            torn_down: true,
        };
        f.cuts.insert((0, 2));
        f.cuts.insert((1, HOST));
        let r0 = f.rules(0);
        assert!(r0.contains("-A INPUT -s 10.200.7.3/32 -j DROP"));
        assert!(r0.contains("-A OUTPUT -d 10.200.7.3/32 -j DROP"));
        assert!(!r0.contains("10.200.7.2/"));
        let r1 = f.rules(1);
        assert!(r1.contains("-A INPUT -s 10.200.7.254/32 -j DROP"));
        assert!(r1.ends_with("COMMIT\n"));
        assert_eq!(f.namespace(2), "anch7a2");
        assert_eq!(f.hub(), "anch7h");
        assert_eq!(f.root_link(), "anch7r");
    }
}

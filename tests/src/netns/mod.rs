//! Process-level network faults: every anchor process in its own Linux network namespace,
//! so the harness can cut and heal the network between anchor *processes*. See
//! docs/reliability-netns.md.
//!
//! # Topology
//!
//! One [`Fabric`] owns a *slot* `X` (1..=250) and with it the subnet `10.200.X.0/24`:
//!
//! ```text
//!   root namespace (the test process, the resolver clients, the CLI)
//!     anch<X>r 10.200.X.254/24 ──veth── up0 ┐
//!                                          │ namespace anch<X>h: bridge br0
//!     namespace anch<X>a0: eth0 10.200.X.1 ──veth── a0 ┤
//!     namespace anch<X>a1: eth0 10.200.X.2 ──veth── a1 ┤
//!     ...                                              ┘
//! ```
//!
//! The bridge lives in a namespace of its own (the hub), not in the root namespace: with
//! `br_netfilter` loaded (Docker loads it) bridged frames go through the root namespace's
//! iptables `FORWARD` chain, whose policy Docker sets to `DROP`, so anchors on a
//! root-namespace bridge could not reach each other. A fresh namespace has its own,
//! empty, accepting firewall.
//!
//! Anchors are started with `ip netns exec anch<X>a<i> anchorage start ...`; `ip netns exec`
//! execs the command, so the child's pid is the anchor itself and `kill -9` kills it.
//!
//! # Faults
//!
//! [`Fabric::cut`] drops every packet between two anchors (iptables `DROP` in both anchors'
//! namespaces, `INPUT` from and `OUTPUT` to the other's address: packets vanish, TCP
//! connections hang as in a real partition); [`Fabric::cut_host`] does the same between an
//! anchor and the root namespace. Each namespace's rule set is replaced atomically with
//! `iptables-restore`. [`Fabric::heal_all`] removes every rule.
//!
//! # Slots, leftovers, cleanup
//!
//! A slot is claimed with an exclusive `flock` on `<tmp>/anchorage-netns/slot-X.lock`,
//! held for the fabric's lifetime (the kernel releases it if the test process dies). So
//! namespaces or links named after a slot we hold are leftovers of a crashed run: they are
//! removed (their processes killed) before the slot is set up. Dropping the fabric kills
//! every process left in its namespaces and deletes the namespaces and the root link.
//!
//! Everything needs root (`CAP_SYS_ADMIN`, `CAP_NET_ADMIN`), `ip` (iproute2) and
//! `iptables-restore`; [`Fabric::create`] fails saying which is missing.
//!
//! # Layout
//!
//! - `fabric`: the [`Fabric`] itself: creating a slot's namespaces and links, running an
//!   anchor inside one, cutting and healing links, teardown.
//! - `slots`: names, the slot lock, removing leftovers of crashed runs.
//! - `tools`: finding and running `ip` and `iptables-restore`.

mod fabric;
mod slots;
mod tools;

pub use fabric::{Fabric, ANCHORS_MAX, HOST};

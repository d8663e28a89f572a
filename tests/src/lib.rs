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
//!   admin protocol (the same [`AnchorStatus`](proto::msg::AnchorStatus) that `anchorage status --json` prints);
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
//!   parent reports it Active and the child accepts writes; [`Cluster::delegation_at`] and
//!   [`Cluster::wait_split_active`] watch a parent's delegations (splits among them);
//!   [`Cluster::resolve_at`] asks one anchor's replica; [`Cluster::scope_leader`],
//!   [`Cluster::scope_info_at`] look at any scope; [`Cluster::pause`]/[`Cluster::resume`]
//!   SIGSTOP/SIGCONT an anchor (a paused anchor is still killed on drop).
//!
//! Each anchor's output goes to `<tmp>/logs/a<i>.<start>.{out,err}`; a restart opens new
//! files, so the logs of every run survive.
//!
//! # Layout
//!
//! - `binary`: the `anchorage` binary under test ([`anchorage_bin`], [`workspace_root`]) and
//!   [`bench_main`] for the bench binaries.
//! - `bounded`: [`bounded`], the overall time limit of a test and its logs on failure.
//! - `wait`: [`wait_for`] and [`POLL`], waits with a deadline.
//! - `config`: [`Options`] and the `anchor.toml` each anchor gets.
//! - `process`: [`AnchorProc`], one anchor process slot, and the OS details around it
//!   (free ports, signals, the "listening" line).
//! - `cluster`: the process cluster [`Cluster`]: start/kill/restart/pause in `cluster`
//!   itself; `cluster/calls` (admin calls, mutations, clients, metrics), `cluster/cli`
//!   (the CLI, `init`), `cluster/root` (the root scope's leader and catching up),
//!   `cluster/scopes` (scope leaders, delegation, [`Delegated`]).
//! - `keys`: keys, signatures and policies ([`random_key`], [`sign_op`], [`policy_toml`],
//!   [`split_policy`]).
//! - `http`: [`http_get`] and [`metric_value`].
//! - `workload`: the client workload of the write/read tests ([`write_many`],
//!   [`check_all`], [`Written`], [`text_of`], [`Acked`]).
//! - `zipf`: [`Zipf`], the seeded skewed draws of the split workloads.
//! - [`chaos`]: seeded chaos campaigns against an in-process cluster; [`faults`]: the
//!   seeded fault injector they use; [`linearizability`]: histories and the checker;
//!   [`netns`]: Linux network namespaces to cut links between anchor processes;
//!   [`recorded`]: the recorded register workload both fault campaigns run.

pub use proto;
pub use resolver;

mod binary;
mod bounded;
mod cluster;
mod config;
mod http;
mod keys;
mod process;
mod wait;
mod workload;
mod zipf;

pub mod chaos;
pub mod faults;
pub mod idle;
pub mod linearizability;
pub mod netns;
pub mod recorded;
pub mod wake;

pub use binary::{anchorage_bin, bench_main, workspace_root};
pub use bounded::bounded;
pub use cluster::scopes::Delegated;
pub use cluster::Cluster;
pub use config::{Options, Quiesce};
pub use http::{http_get, metric_value};
pub use keys::{policy_toml, public_hex, random_key, sign_op, split_policy, to_hex};
pub use process::AnchorProc;
pub use wait::{wait_for, POLL};
pub use workload::{check_all, text_of, write_many, Acked, Written};
pub use zipf::Zipf;

//! The Anchorage daemon: an anchor hosts scope replicas (one openraft group each) in one sled
//! database and serves them over libp2p.
//!
//! # Layout
//! - [`anchor`] — [`Anchor`]: start-up, shutdown, and the calls the command line makes.
//! - [`registry`] — the hosted replicas: opening, creating, finding them.
//! - [`replica`] — one hosted scope replica and what its group knows.
//! - [`server`] — decoding, dispatch and refusal counting, and one handler per protocol
//!   (raft, resolve with referrals and signed answers, mutate, watch long polls, admin).
//! - [`delegation`] — seeding a child scope and handing a prefix over to it, behind
//!   [`delegation::Host`].
//! - [`gossip`] — joining other anchors and gossiping load summaries; the [`gossip::PeerBook`]
//!   placement reads.
//! - [`config`] — `anchor.toml`.
//! - [`identity`] — the libp2p key in the data dir; peer id → Raft node id.
//! - [`raft`] — openraft type config, sled log store with group commit, state machine,
//!   network adapter multiplexed by scope id, and the leader-side proposer (one log entry
//!   for many writes, one read-index round for many reads).
//! - [`quiescer`] — quiescence: idle groups this anchor leads go to sleep; liveness pings
//!   wake the sleeping followers of a dead anchor.
//! - [`scope`] — pure decisions: what a mutation does to a scope.
//! - [`http`] — `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`] — the Prometheus registry.
//! - [`error`] — [`AnchorError`].
//! - [`operator`] — operator calls to specific anchors: status, snapshot, creating the root
//!   scope (used by the `anchorage` command line, whose code is in `src/bin/anchorage/`).
#![deny(missing_docs)]

pub mod anchor;
pub mod config;
pub mod delegation;
pub mod error;
pub mod gossip;
pub mod group;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod operator;
pub mod quiescer;
pub mod raft;
pub mod registry;
pub mod replica;
pub mod scope;
pub mod server;

pub use anchor::{Anchor, StartOptions};
pub use config::AnchorConfig;
pub use error::AnchorError;

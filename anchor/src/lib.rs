//! The Anchorage daemon: an anchor hosts scope replicas (one openraft group each) in one sled
//! database and serves them over libp2p.
//!
//! # Layout
//! - [`config`] — `anchor.toml`.
//! - [`identity`] — the libp2p key in the data dir; peer id → Raft node id.
//! - [`raft`] — openraft type config, sled log store with group commit, state machine,
//!   network adapter multiplexed by scope id.
//! - [`scope`] — pure decisions: what a mutation does to a scope.
//! - [`batch`] — leader-side batching of writes and read-index rounds per scope.
//! - [`node`] — [`Anchor`]: replicas and the protocol handlers (resolve with referrals and
//!   signed answers, mutate, admin, watch long polls).
//! - [`delegation`] — seeding a child scope and handing a prefix over to it.
//! - [`http`] — `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`] — the Prometheus registry.
//! - [`operator`] — operator calls to specific anchors: status, snapshot, creating the root
//!   scope (used by the `anchorage` command line, whose code is in `src/bin/anchorage/`).
#![deny(missing_docs)]

pub mod batch;
pub mod config;
pub mod delegation;
pub mod error;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod raft;
pub mod scope;

pub use config::AnchorConfig;
pub use error::AnchorError;
pub use node::{Anchor, StartOptions};

//! Anchorage client library: resolve names, write them with signed mutations, and make
//! operator calls to anchors, over libp2p (DESIGN.md §6, §7).
//!
//! A [`Client`] starts from a list of trust anchors (root-scope anchors, each given as a
//! multiaddr ending in `/p2p/<peer id>`). It remembers the scope's leader, learns new members
//! from `NotLeader` redirects, retries across members within a bounded number of attempts and
//! a deadline, and caches answers for their TTL. Every failure is one [`Error`] variant a
//! caller can match on.
//!
//! # Layout
//! - [`client`] — [`Client`] and [`ClientConfig`]: the calls, and the one retry loop they all
//!   go through (leader first, redirects, rotation, deadlines; why a retried mutation can end
//!   in [`Error::Unknown`]).
//! - [`cache`] — [`cache::Cache`]: bounded, least-recently-used, TTL-expiring answers; it
//!   takes `now` as an argument and never reads a clock.
//! - `members` — the known anchors, the last known leader and the order to try them in.
//! - [`error`] — [`Error`]: every failure, one variant per thing a caller can act on; every
//!   [`WireError`](proto::WireError) maps to one.
//! - [`net`] — the libp2p swarm shared with the anchor: four request-response protocols,
//!   size-checked frames.
//!
//! # Example
//! ```no_run
//! use resolver::{Client, ClientConfig, Error, ReadLevel, Record, SigningKey};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Error> {
//!     let client = Client::connect_str(
//!         &["/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"],
//!         ClientConfig::default(),
//!     )
//!     .await?;
//!     // The writer's ed25519 key; load it from wherever your keys live.
//!     let key = SigningKey::from_bytes(&[7; 32]);
//!     let api = Record::Addr("10.0.0.7:443".parse().unwrap());
//!     let version = client.put("/eu/payments/api", vec![api], 60, &key).await?;
//!     let set = client.resolve("/eu/payments/api", ReadLevel::Linearizable).await?;
//!     assert!(set.version >= version);
//!     match client.resolve("/eu/payments/missing", ReadLevel::Cached).await {
//!         Err(Error::NotFound { name }) => println!("{name} is not there"),
//!         other => println!("{other:?}"),
//!     }
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]

pub mod cache;
pub mod client;
pub mod error;
mod members;
// Shared with the anchor crate, which owns its shape; its one long type is left as it is.
#[allow(clippy::type_complexity)]
pub mod net;

pub use client::{Client, ClientConfig};
pub use ed25519_dalek::SigningKey;
pub use error::Error;
pub use libp2p::{Multiaddr, PeerId};
pub use members::KNOWN_ANCHORS_MAX;
pub use proto::msg::{AdminRequest, AdminResponse, AnchorStatus};
pub use proto::{Mutation, Name, Op, ReadLevel, Record, RecordSet, SignedMutation};

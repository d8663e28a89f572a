//! Anchorage client library: resolve names by walking the scope hierarchy, verify every
//! answer, write names with signed mutations, watch prefixes, and make operator calls to
//! anchors, over libp2p.
//!
//! A [`Client`] starts from a list of trust anchors: members of the root scope, each given
//! as a multiaddr ending in `/p2p/<peer id>`. They are the root of trust.
//!
//! **Walk.** To resolve a name the client asks the deepest scope it holds a cached referral
//! for (the root at first); the scope answers with the record set, a not-found, or a
//! referral to a child scope (its id, prefix and member anchors), which the client caches
//! for its TTL and follows. A cold walk to a name `d` scopes deep costs `d` resolve
//! requests, a warm one none ([`Client::round_trips`] counts them; [`Client::resolve_traced`]
//! shows each hop, like `dig +trace`). Walks are bounded by
//! [`proto::limits::REFERRAL_HOPS_MAX`] and refuse loops ([`Error::ReferralLoop`]).
//!
//! **Verification.** Every answer is signed by the anchor that gives it. The client accepts
//! it only if the signer is the anchor it asked *and* a member of the scope it asked
//! (trust anchors for the root, the referral's members for a child), the signature holds,
//! the answer is about that scope and name, and a referral leads strictly deeper towards
//! the name — a chain of signatures from the trust anchors to the answer. Rejected answers
//! are counted ([`Client::rejected_answers`]) and logged, and another member is asked; when
//! none does better the call fails with [`Error::Unverified`] or [`Error::NotMember`].
//!
//! **Mutations** go to the leader of the scope governing the name, found from the cached
//! referrals: a `Delegated` refusal teaches the client the child scope and the mutation
//! follows it; `Moving` (the prefix is being handed to a new scope) is retried with backoff
//! until the call's deadline — nothing changed, so it is never an ambiguous outcome. Within
//! a scope the client remembers the leader, learns members from `NotLeader` redirects,
//! retries across members within a bounded number of attempts and a deadline, and says
//! [`Error::Unknown`] when a retried mutation's outcome cannot be settled.
//!
//! **Watches** ([`Client::watch`], [`Client::watch_from`]) long-poll a scope's members for
//! the committed changes under a prefix, resume at another member from
//! [`Watch::position`] with no gap, report compaction, follow the prefix when it moves to a
//! child scope, and drop the cached answer of every changed name.
//!
//! Every failure is one [`Error`] variant a caller can match on.
//!
//! # Layout
//! - [`client`] — [`Client`] and [`ClientConfig`]: the public calls.
//! - `config` — [`ClientConfig`]'s fields, defaults and bounds, and the parsing of the
//!   trust anchors (re-exported from [`client`]).
//! - `exchange` — the one retry engine every call goes through (leader first, redirects,
//!   rotation, delegations, deadlines; why a retried mutation can end in
//!   [`Error::Unknown`]).
//! - `mutate` — the path of one signed mutation to the leader of the scope governing its
//!   name, through delegations, and when its outcome is unknown.
//! - `judge` — what one reply means, per kind of call (resolve, mutate, watch start,
//!   admin).
//! - [`walk`] — the referral walk behind every resolve, its loop guard, and what it reports:
//!   [`Trace`], [`Hop`], [`ScopeRef`].
//! - `known` — what a client has learned, shared by its clones and watches: members and
//!   leaders per scope, cached referrals and answers.
//! - [`verify`] — the checks every signed answer passes.
//! - [`watch`] — [`Watch`] and [`WatchEvent`]: a watch's legs (one per scope governing
//!   part of the prefix), which hold the network and what the client knows, not the client.
//! - `watch_leg` — one leg's long-poll task: moves, child scopes, merges.
//! - `watch_book` — which scopes a watch follows (bounded) and where each leg stands.
//! - [`addr`] — [`AnchorAddr`]: a remote anchor's peer id and addresses, and the one
//!   parser of every form they come in.
//! - [`clock`] — [`clock::Clock`]: the one wall clock, shared with the anchor; tests drive a
//!   [`clock::ManualClock`].
//! - [`cache`] — [`cache::Cache`] (answers) and [`cache::ReferralCache`] (referrals):
//!   bounded, least-recently-used, TTL-expiring; they take `now` as an argument and never
//!   read a clock.
//! - `members` — per scope, the known members, the last known leader and the order to try
//!   them in; what answers are verified against.
//! - [`error`] — [`Error`]: every failure, one variant per thing a caller can act on; every
//!   [`WireError`](proto::WireError) maps to one.
//! - [`net`] — the libp2p swarm shared with the anchor: five request-response protocols,
//!   size-checked frames, and the one typed request call.
//! - `net_owner` — stops the client's swarm when the client and its last watch are gone.
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

pub mod addr;
pub mod cache;
pub mod client;
pub mod clock;
mod config;
pub mod error;
mod exchange;
mod judge;
mod known;
mod members;
mod mutate;
mod net_owner;
pub mod verify;
pub mod walk;
pub mod watch;
mod watch_book;
mod watch_leg;
// Shared with the anchor crate, which owns its shape; its one long type is left as it is.
#[allow(clippy::type_complexity)]
pub mod net;

pub use addr::{AddrError, AnchorAddr};
pub use client::{Client, ClientConfig};
pub use ed25519_dalek::SigningKey;
pub use error::Error;
pub use libp2p::{Multiaddr, PeerId};
pub use members::{KNOWN_ANCHORS_MAX, KNOWN_SCOPES_MAX};
pub use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, ChangeEvent, ScopeInfo, ScopeTarget,
};
pub use proto::{
    AnchorInfo, Mutation, Name, Op, ReadLevel, Record, RecordSet, Referral, ScopeId, SignedMutation,
};
pub use walk::{Hop, HopOutcome, ScopeRef, Trace};
pub use watch::{Watch, WatchEvent};

//! Anchorage per-scope policy (`docs/design.md`, "Policy"): the model, its TOML form, and
//! pure evaluation.
//!
//! Nothing here does IO or reads a clock: time comes in as an argument, so the leader (before
//! proposing) and every replica (at apply) reach the same decision from the same inputs.
//!
//! # Layout
//! - [`model`] — [`Policy`] and its sections ([`WriterRule`], [`Admin`], [`Limits`],
//!   [`Reads`], [`Split`], [`Merge`], [`Placement`]); [`Policy::from_toml`], [`Policy::to_toml`],
//!   [`Policy::validate`], [`Policy::development`]. The module docs show a full TOML policy.
//! - [`pattern`] — [`Pattern`], name patterns with `*` and a trailing `**`.
//! - [`key`] — [`PublicKey`] (validated ed25519 key, hex in TOML) and [`KeySet`] (`*` or keys).
//! - [`eval`] — [`evaluate`] → [`Decision`] / [`DenyReason`], [`may_read`],
//!   [`placement_allows`].
//! - [`error`] — [`PolicyError`], everything that makes a policy invalid.
//!
//! # Example
//! ```
//! use policy::{evaluate, Decision, Policy, Request};
//! use proto::{Name, Op, Record};
//!
//! let policy = Policy::from_toml(r#"
//!     [[writers]]
//!     pattern = "/eu/**"
//!     keys = ["*"]
//! "#).unwrap();
//! let scope = Name::parse("/eu").unwrap();
//! let op = Op::Put {
//!     name: Name::parse("/eu/api").unwrap(),
//!     records: vec![Record::Text("hi".into())],
//!     ttl_s: 60,
//! };
//! let req = Request::new(&op, &scope, 0, false);
//! assert_eq!(evaluate(&policy, &req, &[[7; 32]], 0), Decision::Allow);
//! ```
#![deny(missing_docs)]

pub mod error;
pub mod eval;
pub mod key;
pub mod model;
pub mod pattern;

pub use error::PolicyError;
pub use eval::{evaluate, may_read, placement_allows, Decision, DenyReason, Request};
pub use key::{KeySet, PublicKey};
pub use model::{
    Admin, Limits, Merge, Placement, Policy, ReadAccess, Reads, Split, WriteOp, WriterRule,
};
pub use pattern::Pattern;

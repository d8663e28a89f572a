//! Anchorage wire types: names, records, mutations, messages, the codec and the limits.
//!
//! No IO happens here; the anchor and the resolver both build on these types, so the wire
//! and disk formats live in one place.
//!
//! # Layout
//! - [`limits`] — every bound on an input, with `const` asserts between them.
//! - [`name`] — [`Name`] parsing, display, ordering, storage keys, DNS mapping.
//! - [`record`] — [`Record`], [`RecordSet`] and their validation.
//! - [`mutation`] — [`Mutation`], [`SignedMutation`]: signing and verification.
//! - [`scope`] — [`ScopeId`], [`ScopeDescriptor`], [`AnchorInfo`].
//! - [`msg`] — the request and response of every protocol.
//! - [`load`] — [`load::FollowerReport`], a follower's request counts for its leader.
//! - [`split`] — [`split::SplitEvidence`] and [`split::MergeEvidence`], the figures a scope
//!   proposes when it reshapes itself, checked by every member at apply.
//! - [`gossip`] — [`gossip::LoadSummary`], an anchor's load as it gossips it, and its checks.
//! - [`codec`] — bincode 2 encode/decode with size checks before decoding.
//! - [`error`] — [`ProtoError`].
#![deny(missing_docs)]

pub mod codec;
pub mod error;
pub mod gossip;
pub mod limits;
pub mod load;
pub mod msg;
pub mod mutation;
pub mod name;
pub mod record;
pub mod scope;
pub mod split;

pub use error::ProtoError;
pub use msg::{ReadLevel, WireError};
pub use mutation::{Mutation, Op, SignedMutation};
pub use name::Name;
pub use record::{Record, RecordKind, RecordSet};
pub use scope::{
    AnchorInfo, Delegation, DelegationState, KeyRange, MemberChange, MemberSpec, Referral,
    ScopeDescriptor, ScopeId,
};

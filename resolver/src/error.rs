//! The one error type of the client library: every way a resolve, a mutation or an admin
//! call can fail, as data a caller can match on, with a message that says what to do next.
//!
//! Every [`WireError`] an anchor can send maps to one variant here ([`From<WireError>`]);
//! the retry engine (`exchange`) consumes the retryable ones (`NotLeader`,
//! `Unavailable`) and only hands them out when no attempt succeeded.

use std::fmt;

use libp2p::PeerId;
use proto::{AnchorInfo, Name, ProtoError, ScopeId, WireError};

/// Everything that can go wrong between a caller and the anchors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scope that governs the name answered that it holds nothing there.
    #[error("{name} does not exist: the scope that governs it holds no record set for it")]
    NotFound {
        /// The name asked for.
        name: Name,
    },
    /// No anchor reached hosts a scope that governs the name.
    #[error(
        "no anchor reached governs {name}: check the name, and that the trust anchors are \
         anchors of the root scope"
    )]
    NoScope {
        /// The name asked for.
        name: Name,
    },
    /// The scope's policy refused the mutation (or the keyed read).
    #[error(
        "denied by policy: {reason}; sign with a key the scope's policy allows for this name \
         and operation (`anchorage policy get <prefix>` shows the rules)"
    )]
    Denied {
        /// The policy's reason.
        reason: String,
    },
    /// The caller's name does not parse.
    #[error("invalid name {input:?}: {source}")]
    InvalidName {
        /// The text as given.
        input: String,
        /// Which rule it breaks, and where (shown in the message, so not chained as a source).
        source: ProtoError,
    },
    /// The request is malformed (records over a limit, undecodable body...); retrying the
    /// same request will not help.
    #[error("invalid request: {reason}; fix the input, retrying it unchanged will not help")]
    Invalid {
        /// What is wrong, with the numbers.
        reason: String,
    },
    /// A compare-and-set found the name at another version.
    #[error(
        "version conflict: the name is now at version {current} (0 means absent); resolve it \
         again and retry the compare-and-set against that version"
    )]
    Conflict {
        /// The name's current version, 0 when absent.
        current: u64,
    },
    /// The anchor had already seen this mutation's nonce from this key, and nothing in this
    /// call suggests the earlier use was this call's own (see [`Error::Unknown`]).
    #[error(
        "mutation refused as a replay: nonce {nonce} was already used by this key; build a \
         new mutation (with a fresh nonce) to write again"
    )]
    Replayed {
        /// The nonce.
        nonce: u64,
    },
    /// The mutation had expired, or expires too far in the future.
    #[error(
        "mutation expiry {expires_at_ms} ms is outside the accepted window ({reason}); check \
         this machine's clock, and keep `mutation_validity` within the anchors' limit"
    )]
    Expired {
        /// The mutation's expiry, milliseconds since the Unix epoch.
        expires_at_ms: u64,
        /// Why it was refused.
        reason: String,
    },
    /// A signature on the mutation does not verify.
    #[error("bad signature: {reason}; sign the exact mutation body with the writer's ed25519 key")]
    BadSignature {
        /// Details.
        reason: String,
    },
    /// The anchor is not the scope's leader. The client follows these itself; this is only
    /// returned by calls that address one anchor ([`crate::Client::admin`]).
    #[error("anchor is not the leader of scope {scope}; retry at {}", leader_text(.leader))]
    NotLeader {
        /// The scope.
        scope: ScopeId,
        /// The leader, when the anchor knows it.
        leader: Option<AnchorInfo>,
    },
    /// The anchor refused the request for a reason of its own.
    #[error("refused by the anchor: {reason}")]
    Refused {
        /// Details.
        reason: String,
    },
    /// No anchor served the request: every attempt failed or the deadline passed. Nothing
    /// was changed by a mutation that ends with this error (otherwise see [`Error::Unknown`]).
    #[error(
        "no anchor could serve the request: {reason}; check that the anchors are running and \
         reachable, then retry"
    )]
    Unavailable {
        /// The attempts made and the last failure.
        reason: String,
    },
    /// A mutation's outcome is unknown: an attempt timed out or was cut off after the anchor
    /// may have received it, and no later attempt could settle whether it was committed
    /// (a retry of the same signed mutation then comes back `Replayed`, `Expired`,
    /// `Conflict` or `Denied`). The mutation may still take effect later, until its expiry
    /// (`ClientConfig::mutation_validity`): an anchor that held it may forward it to a new
    /// leader after a partition heals. Use compare-and-set on the version you read to make
    /// the next write safe against it.
    #[error(
        "outcome unknown: {reason}; the mutation may have been committed, or may still be \
         until it expires; read the name linearizably and write with compare-and-set on the \
         version you read"
    )]
    Unknown {
        /// What happened.
        reason: String,
    },
    /// A trust anchor address that cannot be used.
    #[error(
        "trust anchor {addr:?}: {reason}; give each as a multiaddr ending in /p2p/<peer id>, \
         e.g. /ip4/10.0.0.1/tcp/4001/p2p/12D3KooW..."
    )]
    BadTrustAnchor {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An admin call named an anchor this client does not know.
    #[error("anchor {peer} is not known to this client; add it to the trust anchors")]
    UnknownAnchor {
        /// The peer id asked for.
        peer: PeerId,
    },
    /// An anchor answered with bytes this client cannot read.
    #[error(
        "anchor {peer} sent a response this client cannot read ({reason}); check that client \
         and anchor speak the same protocol version"
    )]
    BadResponse {
        /// The anchor.
        peer: PeerId,
        /// What the decoder said.
        reason: String,
    },
    /// A [`crate::ClientConfig`] value out of range.
    #[error("bad client configuration: {reason}")]
    BadConfig {
        /// Which value, and its bounds.
        reason: String,
    },
    /// The client's libp2p swarm could not start.
    #[error("cannot start the client's network: {reason}")]
    Setup {
        /// Details.
        reason: String,
    },
    /// An anchor's signed answer did not verify (bad key or signature, signed by another
    /// peer than the one asked, about another scope or name, or a referral that does not lead
    /// deeper towards the name). The walk tried the scope's other members; none did better.
    #[error(
        "answer from anchor {peer} rejected: {reason}; the anchor is misbehaving or speaks          another protocol version"
    )]
    Unverified {
        /// The anchor that answered.
        peer: PeerId,
        /// Why it was rejected.
        reason: String,
    },
    /// An anchor answered for a scope it is not a member of (trust anchors for the root,
    /// the referral's members for a child scope), so its answer cannot be trusted.
    #[error(
        "anchor {peer} is not a member of scope {scope}, so it cannot answer for it; ask one          of the scope's members (`anchorage scope show` lists them)"
    )]
    NotMember {
        /// The anchor that answered.
        peer: PeerId,
        /// The scope it answered for.
        scope: ScopeId,
    },
    /// The referral walk went round in a circle, or deeper than any name can be.
    #[error("referral walk stopped: {reason}; the scopes' delegations are inconsistent")]
    ReferralLoop {
        /// Which scope was seen twice, or how many hops were taken.
        reason: String,
    },
    /// Names under `prefix` are moving to a new scope and stayed frozen until the call's
    /// deadline. Nothing was changed; retry later.
    #[error(
        "names under {prefix} are moving to a new scope; nothing was changed, retry once the          move completes (`anchorage scope show {prefix}`)"
    )]
    Moving {
        /// The prefix being moved.
        prefix: Name,
    },
}

fn leader_text(leader: &Option<AnchorInfo>) -> String {
    match leader {
        Some(info) => format!("the leader {}", info.peer_id),
        None => "another member once a leader is elected".to_string(),
    }
}

impl Error {
    /// The error for a name that does not parse.
    pub(crate) fn invalid_name(input: &str, source: ProtoError) -> Error {
        Error::InvalidName {
            input: input
                .chars()
                .take(proto::limits::NAME_BYTES_MAX + 1)
                .collect(),
            source,
        }
    }

    /// The error for a mutation or record set this side refuses to send.
    pub(crate) fn from_proto(e: ProtoError) -> Error {
        match e {
            ProtoError::BadSignature { .. } | ProtoError::BadKey { .. } => Error::BadSignature {
                reason: e.to_string(),
            },
            e => Error::Invalid {
                reason: e.to_string(),
            },
        }
    }

    /// A summary of failed attempts as an [`Error::Unavailable`].
    pub(crate) fn unavailable(reason: impl fmt::Display) -> Error {
        Error::Unavailable {
            reason: reason.to_string(),
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Error {
        match w {
            WireError::Invalid { reason } => Error::Invalid { reason },
            WireError::BadSignature { reason } => Error::BadSignature { reason },
            WireError::Denied { reason } => Error::Denied { reason },
            WireError::Conflict { current } => Error::Conflict { current },
            WireError::Replayed { nonce } => Error::Replayed { nonce },
            WireError::Expired {
                expires_at_ms,
                reason,
            } => Error::Expired {
                expires_at_ms,
                reason,
            },
            WireError::NotLeader { scope, leader } => Error::NotLeader { scope, leader },
            WireError::NoScope { name } => Error::NoScope { name },
            WireError::Unavailable { reason } => Error::Unavailable { reason },
            WireError::Refused { reason } => Error::Refused { reason },
            WireError::Moving { prefix } => Error::Moving { prefix },
            // `WireError` is non-exhaustive: a newer anchor's error still reaches the caller.
            other => Error::Refused {
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_error_maps_to_its_variant() {
        let name = Name::parse("/eu/x").unwrap();
        let cases = [
            (
                WireError::Invalid { reason: "r".into() },
                Error::Invalid { reason: "r".into() },
            ),
            (
                WireError::BadSignature { reason: "r".into() },
                Error::BadSignature { reason: "r".into() },
            ),
            (
                WireError::Denied { reason: "r".into() },
                Error::Denied { reason: "r".into() },
            ),
            (
                WireError::Conflict { current: 7 },
                Error::Conflict { current: 7 },
            ),
            (
                WireError::Replayed { nonce: 9 },
                Error::Replayed { nonce: 9 },
            ),
            (
                WireError::Expired {
                    expires_at_ms: 5,
                    reason: "r".into(),
                },
                Error::Expired {
                    expires_at_ms: 5,
                    reason: "r".into(),
                },
            ),
            (
                WireError::NotLeader {
                    scope: ScopeId::root(),
                    leader: None,
                },
                Error::NotLeader {
                    scope: ScopeId::root(),
                    leader: None,
                },
            ),
            (
                WireError::NoScope { name: name.clone() },
                Error::NoScope { name },
            ),
            (
                WireError::Unavailable { reason: "r".into() },
                Error::Unavailable { reason: "r".into() },
            ),
            (
                WireError::Refused { reason: "r".into() },
                Error::Refused { reason: "r".into() },
            ),
            (
                WireError::Moving {
                    prefix: Name::parse("/eu").unwrap(),
                },
                Error::Moving {
                    prefix: Name::parse("/eu").unwrap(),
                },
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(Error::from(wire), want);
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::Conflict { current: 3 };
        assert!(e.to_string().contains("version 3"), "{e}");
        let e = Error::invalid_name("/a/B$", Name::parse("/a/B$").unwrap_err());
        assert!(e.to_string().contains("'$'"), "{e}");
        let e = Error::from_proto(ProtoError::BadSignature { key: "ab".into() });
        assert!(matches!(e, Error::BadSignature { .. }));
    }
}

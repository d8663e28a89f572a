//! The one typed request call: encode, check the frame limit, send, wait with a timeout,
//! decode. Every request an anchor, a resolver or the CLI makes goes through
//! [`NetHandle::call`] or [`NetHandle::call_encoded`].

use std::time::Duration;

use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NetError, NetHandle, Protocol};
use crate::addr::AnchorAddr;

/// Why a typed call ([`NetHandle::call`]) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be encoded, or is larger than the protocol allows.
    #[error("the request cannot be sent: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
    /// The network layer failed to deliver it or to bring an answer.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No answer in time; the peer may have received the request.
    #[error("no answer within {ms} ms")]
    Timeout {
        /// The peer asked.
        peer: PeerId,
        /// How long we waited.
        ms: u64,
    },
    /// An answer came but does not decode as the expected type.
    #[error("{peer} answered badly: {reason}")]
    Decode {
        /// The peer that answered.
        peer: PeerId,
        /// What the decoder said.
        reason: String,
    },
}

impl CallError {
    /// Whether the peer may have received the request (so a mutation may have been applied).
    /// Only failures that certainly happened before anything was sent say no.
    pub fn maybe_delivered(&self) -> bool {
        match self {
            CallError::Encode { .. } => false,
            // libp2p's texts for "never dialed" and "never opened a stream"; any other text
            // counts as possibly delivered, which is the safe side.
            CallError::Net(NetError::Failed { reason, .. }) => {
                !(reason.starts_with("Failed to dial") || reason.contains("supports none"))
            }
            // The gossip errors never come from a request; listed for exhaustiveness.
            CallError::Net(
                NetError::Stopped
                | NetError::Setup(_)
                | NetError::NoPeers
                | NetError::Publish { .. }
                | NetError::NoGossip,
            ) => false,
            CallError::Timeout { .. } | CallError::Decode { .. } => true,
        }
    }
}

/// Encodes a request for `protocol`, refusing one larger than the protocol's frame limit.
pub fn encode_request<Req: Serialize>(protocol: Protocol, req: &Req) -> Result<Vec<u8>, CallError> {
    let bytes = proto::codec::encode(req).map_err(|e| CallError::Encode {
        reason: e.to_string(),
    })?;
    let max = protocol.frame_bytes_max();
    if bytes.len() > max {
        return Err(CallError::Encode {
            reason: format!(
                "the {} request is {} bytes; at most {max}",
                protocol.as_str(),
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

impl NetHandle {
    /// The one typed request call: encodes `req`, checks it against the protocol's frame
    /// limit, sends it to `to`, waits at most `timeout` and decodes the answer (within the
    /// same limit). Every request an anchor, the resolver or the CLI makes goes through here
    /// or [`NetHandle::call_encoded`].
    pub async fn call<Req, Resp>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let bytes = encode_request(protocol, req)?;
        self.call_encoded(to, protocol, bytes, timeout).await
    }

    /// [`NetHandle::call`] for a request encoded once and sent several times (retries);
    /// encode it with [`encode_request`].
    pub async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let request = self.request(to.peer, to.addrs.clone(), protocol, bytes);
        let answer = match tokio::time::timeout(timeout, request).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(CallError::Net(e)),
            Err(_) => {
                return Err(CallError::Timeout {
                    peer: to.peer,
                    ms: timeout.as_millis() as u64,
                })
            }
        };
        proto::codec::decode(&answer, protocol.frame_bytes_max()).map_err(|e| CallError::Decode {
            peer: to.peer,
            reason: e.to_string(),
        })
    }
}

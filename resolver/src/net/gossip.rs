//! Gossipsub on anchors: the load-summary topic (`anchorage/load`). Messages are signed
//! with the node's identity and checked by gossipsub (strict mode: signature and signer);
//! every message is then decoded and checked here ([`proto::gossip::decode_summary`]:
//! size before decoding, bounds, signer = anchor named) before it is forwarded to other
//! peers or handed to the anchor. Refused messages are counted ([`GossipRefused`]) and not
//! forwarded; accepted ones go to the anchor through a bounded channel (dropped when it is
//! full: summaries are lossy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use proto::gossip::{decode_summary, LoadSummary, SummaryRefusal, LOAD_TOPIC};
use proto::limits::GOSSIP_MESSAGE_BYTES_MAX;
use tokio::sync::mpsc;

use super::NetError;

/// Gossip settings of a swarm (anchors only).
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Gossipsub heartbeat (mesh upkeep).
    pub heartbeat: Duration,
    /// Where accepted summaries go.
    pub inbox: mpsc::Sender<Received>,
}

/// A summary that passed every check.
#[derive(Clone, Debug)]
pub struct Received {
    /// The peer that forwarded it to us (not necessarily its author).
    pub via: PeerId,
    /// The summary; its `anchor` is the message's signer.
    pub summary: LoadSummary,
}

/// Gossip messages refused, by [`SummaryRefusal::index`], plus those dropped because the
/// anchor's inbox was full (last slot).
#[derive(Debug, Default)]
pub struct GossipRefused(pub [AtomicU64; SummaryRefusal::LABELS.len() + 1]);

impl GossipRefused {
    /// Label of the slot counting summaries dropped for a full inbox.
    pub const INBOX_FULL: &'static str = "inbox_full";

    /// `(label, count)` for every slot.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        SummaryRefusal::LABELS
            .iter()
            .copied()
            .chain([Self::INBOX_FULL])
            .zip(self.0.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }

    fn count(&self, slot: usize) {
        if let Some(c) = self.0.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The topic, subscribed at start.
pub(super) fn topic() -> IdentTopic {
    IdentTopic::new(LOAD_TOPIC)
}

/// Builds the gossipsub behaviour, subscribed to the load topic.
pub(super) fn behaviour(
    keypair: &Keypair,
    cfg: &GossipConfig,
) -> Result<gossipsub::Behaviour, NetError> {
    let setup = |e: String| NetError::Setup(format!("gossipsub: {e}"));
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(cfg.heartbeat)
        .heartbeat_initial_delay(Duration::from_millis(500))
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(GOSSIP_MESSAGE_BYTES_MAX)
        .build()
        .map_err(|e| setup(e.to_string()))?;
    let mut b = gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), config)
        .map_err(|e| setup(e.to_string()))?;
    b.subscribe(&topic()).map_err(|e| setup(e.to_string()))?;
    Ok(b)
}

/// Handles one gossipsub event: checks a message, reports the verdict to gossipsub (which
/// forwards only accepted messages), and hands accepted summaries to the anchor.
pub(super) fn on_event(
    b: &mut gossipsub::Behaviour,
    ev: gossipsub::Event,
    inbox: &mpsc::Sender<Received>,
    refused: &GossipRefused,
) {
    let (propagation_source, message_id, message) = match ev {
        gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } => (propagation_source, message_id, message),
        other => {
            tracing::trace!(event = ?other, "gossipsub event");
            return;
        }
    };
    let verdict = if message.topic != topic().hash() {
        Err(SummaryRefusal::WrongTopic {
            topic: message.topic.to_string(),
        })
    } else {
        let source = message.source.map(|p| p.to_base58());
        decode_summary(&message.data, source.as_deref())
    };
    match verdict {
        Ok(summary) => {
            b.report_message_validation_result(
                &message_id,
                &propagation_source,
                MessageAcceptance::Accept,
            );
            if inbox
                .try_send(Received {
                    via: propagation_source,
                    summary,
                })
                .is_err()
            {
                refused.count(SummaryRefusal::LABELS.len());
            }
        }
        Err(e) => {
            tracing::debug!(via = %propagation_source, source = ?message.source, error = %e, "load summary refused");
            refused.count(e.index());
            b.report_message_validation_result(
                &message_id,
                &propagation_source,
                MessageAcceptance::Reject,
            );
        }
    }
}

/// Publishes bytes on the load topic.
pub(super) fn publish(b: &mut gossipsub::Behaviour, bytes: Vec<u8>) -> Result<(), NetError> {
    match b.publish(topic(), bytes) {
        Ok(_) => Ok(()),
        Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(NetError::NoPeers),
        Err(e) => Err(NetError::Publish {
            reason: e.to_string(),
        }),
    }
}

//! One scope replica hosted by this anchor: its Raft group, read access to its state, its
//! request meter, and the queues of its leader-side proposer and read-index rounds; with the
//! questions about its group that the handlers and the delegation driver ask.

use libp2p::PeerId;
use proto::msg::ScopeStatus;
use proto::{AnchorInfo, ScopeDescriptor, ScopeId};
use tokio::sync::mpsc;

use crate::raft::proposer::{Proposal, ReadWaiter};
use crate::raft::sm::ScopeReader;
use crate::raft::{NodeId, ScopeRaft};
use crate::scope::rate::RateMeter;

/// One hosted scope replica.
pub struct Replica {
    /// Scope id.
    pub id: ScopeId,
    /// The scope as created.
    pub descriptor: ScopeDescriptor,
    /// Its Raft group handle.
    pub raft: ScopeRaft,
    /// Read access to its state machine.
    pub state: ScopeReader,
    /// Requests served for this scope here, over the last seconds.
    pub load: RateMeter,
    proposals: mpsc::Sender<Proposal>,
    reads: mpsc::Sender<ReadWaiter>,
}

impl Replica {
    /// A replica around a started group and the queues of its proposer and read rounds.
    pub(crate) fn new(
        descriptor: ScopeDescriptor,
        raft: ScopeRaft,
        state: ScopeReader,
        proposals: mpsc::Sender<Proposal>,
        reads: mpsc::Sender<ReadWaiter>,
    ) -> Replica {
        Replica {
            id: descriptor.id,
            descriptor,
            raft,
            state,
            load: RateMeter::default(),
            proposals,
            reads,
        }
    }

    /// Queues a verified write for the proposer; false when its queue is full.
    pub(crate) fn queue_write(&self, proposal: Proposal) -> bool {
        self.proposals.try_send(proposal).is_ok()
    }

    /// Queues a linearizable read for the next read-index round; false when its queue is full.
    pub(crate) fn queue_read(&self, waiter: ReadWaiter) -> bool {
        self.reads.try_send(waiter).is_ok()
    }

    /// Whether `node` leads this scope, as far as this replica knows.
    pub fn led_by(&self, node: NodeId) -> bool {
        self.raft.metrics().borrow().current_leader == Some(node)
    }

    /// The current leader's id and addresses, when known.
    pub fn leader_info(&self) -> Option<AnchorInfo> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).cloned()
    }

    /// Whether `peer` is a member: in the group's configuration, or in the descriptor the
    /// scope was created with.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        let peer = peer.to_base58();
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        if nodes.peek().is_none() {
            return self.descriptor.members.iter().any(|m| m.peer_id == peer);
        }
        let in_config = nodes.any(|(_, n)| n.peer_id == peer);
        in_config || self.descriptor.members.iter().any(|m| m.peer_id == peer)
    }

    /// The replica's status, as `anchorage status` shows it.
    pub fn status(&self) -> ScopeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.peer_id.clone());
        let members: Vec<String> = membership.nodes().map(|(_, n)| n.peer_id.clone()).collect();
        ScopeStatus {
            id: self.id,
            prefix: self.descriptor.prefix.clone(),
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader,
            last_applied: m.last_applied.map(|l| l.index),
            last_log: m.last_log_index,
            snapshot: m.snapshot.map(|l| l.index),
            members: if members.is_empty() {
                self.descriptor
                    .members
                    .iter()
                    .map(|m| m.peer_id.clone())
                    .collect()
            } else {
                members
            },
            names: self.state.view().names,
        }
    }
}

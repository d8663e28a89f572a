//! The members a client knows for each scope, the leader it last saw in each, and the order
//! to try them in.
//!
//! [`Directory`] holds one [`Members`] per scope: the root's starts as the trust anchors, a
//! child's as the members its referral lists. Each grows with anchors learned from
//! `NotLeader` redirects sent by a member (a member vouching for its leader is trusted as
//! far as the member is), up to [`KNOWN_ANCHORS_MAX`]. These sets are also what answers are
//! verified against: only an anchor in a scope's set may answer for that scope.
//!
//! A rotating cursor points at the member to try first; a failure moves it on, so one dead
//! member costs one attempt, not one per call. Pure bookkeeping, no IO: the retry loop in
//! [`crate::exchange`] drives it.

use std::collections::HashMap;

use libp2p::PeerId;
use proto::{Name, Referral, ScopeId};

use crate::addr::AnchorAddr;

/// Anchors one client remembers per scope (trust anchors or referral members, plus learned
/// ones).
pub const KNOWN_ANCHORS_MAX: usize = 64;
/// Scopes whose members one client remembers (the root included).
pub const KNOWN_SCOPES_MAX: usize = 4096;

/// The known anchors, the last known leader and the rotation cursor.
#[derive(Debug)]
pub(crate) struct Members {
    anchors: Vec<AnchorAddr>,
    leader: Option<PeerId>,
    cursor: usize,
}

impl Members {
    /// Starts from the given anchors (the first [`KNOWN_ANCHORS_MAX`] are kept).
    pub fn new(mut first: Vec<AnchorAddr>) -> Members {
        first.truncate(KNOWN_ANCHORS_MAX);
        Members {
            anchors: first,
            leader: None,
            cursor: 0,
        }
    }

    pub fn all(&self) -> &[AnchorAddr] {
        &self.anchors
    }

    pub fn get(&self, peer: &PeerId) -> Option<&AnchorAddr> {
        self.anchors.iter().find(|a| a.peer == *peer)
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    pub fn leader(&self) -> Option<PeerId> {
        self.leader
    }

    /// Adds an anchor, or merges its addresses into the known one. Returns the merged
    /// entry (or `a` itself when the list is full).
    pub fn learn(&mut self, a: AnchorAddr) -> AnchorAddr {
        if let Some(known) = self.anchors.iter_mut().find(|k| k.peer == a.peer) {
            known.merge_addrs(&a.addrs);
            return known.clone();
        }
        if self.anchors.len() < KNOWN_ANCHORS_MAX {
            self.anchors.push(a.clone());
        }
        a
    }

    pub fn set_leader(&mut self, peer: PeerId) {
        self.leader = Some(peer);
    }

    /// Records that `peer` failed: it is no longer the leader, and if the cursor pointed at
    /// it, the cursor moves on.
    pub fn failed(&mut self, peer: &PeerId) {
        if self.leader == Some(*peer) {
            self.leader = None;
        }
        if !self.anchors.is_empty()
            && self
                .anchors
                .get(self.cursor)
                .is_some_and(|a| a.peer == *peer)
        {
            self.cursor = (self.cursor + 1) % self.anchors.len();
        }
    }

    /// Every known anchor once, in the order to try them: the leader first when
    /// `leader_first` and one is known, then the rest starting at the cursor.
    pub fn plan(&self, leader_first: bool) -> Vec<AnchorAddr> {
        let n = self.anchors.len();
        let leader = self.leader.filter(|_| leader_first);
        let mut order = Vec::with_capacity(n);
        if let Some(a) = leader.and_then(|p| self.get(&p)) {
            order.push(a.clone());
        }
        let rotation = (0..n).map(|i| &self.anchors[(self.cursor + i) % n]);
        order.extend(rotation.filter(|a| Some(a.peer) != leader).cloned());
        order
    }
}

/// One scope as the client knows it: where it sits, which epoch of its members it has, and
/// those members.
#[derive(Debug)]
pub(crate) struct KnownScope {
    pub prefix: Name,
    /// The part of the prefix's subtree it governs (all of it unless born from a range split).
    pub range: proto::KeyRange,
    pub epoch: u64,
    pub members: Members,
}

/// The members of every scope the client knows: the root (trust anchors) and each child
/// scope a referral named.
#[derive(Debug)]
pub(crate) struct Directory {
    scopes: HashMap<ScopeId, KnownScope>,
}

impl Directory {
    /// A directory knowing only the root scope, with the trust anchors as its members.
    pub fn new(trust: Vec<AnchorAddr>) -> Directory {
        let root = KnownScope {
            prefix: Name::root(),
            range: proto::KeyRange::all(),
            epoch: 0,
            members: Members::new(trust),
        };
        Directory {
            scopes: HashMap::from([(ScopeId::root(), root)]),
        }
    }

    pub fn get(&self, scope: &ScopeId) -> Option<&KnownScope> {
        self.scopes.get(scope)
    }

    pub fn get_mut(&mut self, scope: &ScopeId) -> Option<&mut KnownScope> {
        self.scopes.get_mut(scope)
    }

    pub fn root(&self) -> &Members {
        match self.scopes.get(&ScopeId::root()) {
            Some(root) => &root.members,
            None => unreachable!("the root scope is never removed"),
        }
    }

    /// Whether `peer` is a known member of `scope`.
    pub fn is_member(&self, scope: &ScopeId, peer: &PeerId) -> bool {
        self.scopes
            .get(scope)
            .is_some_and(|s| s.members.contains(peer))
    }

    /// Takes in the members a (verified) referral lists: a scope seen for the first time, or
    /// at a newer epoch, gets exactly those members (the old ones and the old leader are
    /// forgotten); the same epoch merges addresses. Unreadable member entries are skipped.
    pub fn adopt(&mut self, referral: &Referral) {
        let anchors: Vec<AnchorAddr> = referral
            .members
            .iter()
            .filter_map(|info| AnchorAddr::from_info(info).ok())
            .collect();
        if referral.scope == ScopeId::root() {
            return; // The root's members are the trust anchors, never a referral's.
        }
        match self.scopes.get_mut(&referral.scope) {
            Some(known) if known.epoch >= referral.epoch => {
                for a in anchors {
                    if known.members.contains(&a.peer) {
                        known.members.learn(a);
                    }
                }
            }
            _ => {
                if !self.scopes.contains_key(&referral.scope)
                    && self.scopes.len() >= KNOWN_SCOPES_MAX
                {
                    let victim = self
                        .scopes
                        .keys()
                        .find(|id| **id != ScopeId::root())
                        .copied();
                    if let Some(victim) = victim {
                        self.scopes.remove(&victim);
                    }
                }
                let known = KnownScope {
                    prefix: referral.prefix.clone(),
                    range: referral.range.clone(),
                    epoch: referral.epoch,
                    members: Members::new(anchors),
                };
                self.scopes.insert(referral.scope, known);
            }
        }
    }

    /// Every known anchor once (the root's first), with its addresses.
    pub fn all_anchors(&self) -> Vec<AnchorAddr> {
        let mut out: Vec<AnchorAddr> = self.root().all().to_vec();
        for (id, scope) in &self.scopes {
            if *id == ScopeId::root() {
                continue;
            }
            for a in scope.members.all() {
                if !out.iter().any(|o| o.peer == a.peer) {
                    out.push(a.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::AnchorInfo;

    fn anchor(port: u16) -> AnchorAddr {
        AnchorAddr {
            peer: PeerId::random(),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        }
    }

    fn peers(plan: &[AnchorAddr]) -> Vec<PeerId> {
        plan.iter().map(|a| a.peer).collect()
    }

    #[test]
    fn failure_rotates_the_first_choice() {
        let (a, b, c) = (anchor(1), anchor(2), anchor(3));
        let mut m = Members::new(vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(peers(&m.plan(false)), vec![a.peer, b.peer, c.peer]);
        m.failed(&a.peer);
        assert_eq!(peers(&m.plan(false)), vec![b.peer, c.peer, a.peer]);
        m.failed(&a.peer);
        assert_eq!(
            m.plan(false)[0].peer,
            b.peer,
            "only the current first moves the cursor"
        );
    }

    #[test]
    fn leader_goes_first_only_when_asked_and_until_it_fails() {
        let (a, b, c) = (anchor(1), anchor(2), anchor(3));
        let mut m = Members::new(vec![a.clone(), b.clone(), c.clone()]);
        m.set_leader(c.peer);
        assert_eq!(peers(&m.plan(true)), vec![c.peer, a.peer, b.peer]);
        assert_eq!(peers(&m.plan(false)), vec![a.peer, b.peer, c.peer]);
        m.failed(&c.peer);
        assert_eq!(m.leader(), None);
        assert_eq!(peers(&m.plan(true)), vec![a.peer, b.peer, c.peer]);
    }

    #[test]
    fn learned_anchors_join_the_list_and_merge_addresses() {
        let a = anchor(1);
        let mut m = Members::new(vec![a.clone()]);
        let b = anchor(2);
        m.learn(b.clone());
        assert_eq!(m.all().len(), 2);
        let more = AnchorAddr {
            peer: b.peer,
            addrs: vec!["/ip4/127.0.0.2/tcp/2".parse().unwrap()],
        };
        assert_eq!(m.learn(more).addrs.len(), 2);
        assert_eq!(m.all().len(), 2);
    }

    #[test]
    fn known_anchors_are_bounded() {
        let mut m = Members::new(vec![anchor(1)]);
        for port in 0..2 * KNOWN_ANCHORS_MAX as u16 {
            m.learn(anchor(port));
        }
        assert_eq!(m.all().len(), KNOWN_ANCHORS_MAX);
    }

    fn info(a: &AnchorAddr) -> AnchorInfo {
        AnchorInfo {
            peer_id: a.peer.to_base58(),
            addrs: a.addrs.iter().map(|x| x.to_string()).collect(),
        }
    }

    fn referral(scope: ScopeId, epoch: u64, members: &[&AnchorAddr]) -> Referral {
        Referral {
            scope,
            prefix: Name::parse("/eu").unwrap(),
            epoch,
            members: members.iter().map(|a| info(a)).collect(),
            ttl_s: 60,
            range: proto::KeyRange::all(),
        }
    }

    #[test]
    fn directory_keeps_members_per_scope_and_follows_epochs() {
        let (t, a, b, c) = (anchor(1), anchor(2), anchor(3), anchor(4));
        let mut d = Directory::new(vec![t.clone()]);
        let child = ScopeId::derive(&[b"child"]);
        assert!(d.is_member(&ScopeId::root(), &t.peer));
        assert!(!d.is_member(&child, &a.peer));
        d.adopt(&referral(child, 1, &[&a, &b]));
        assert!(d.is_member(&child, &a.peer) && d.is_member(&child, &b.peer));
        assert!(!d.is_member(&ScopeId::root(), &a.peer), "scopes do not mix");
        d.get_mut(&child).unwrap().members.set_leader(b.peer);
        d.adopt(&referral(child, 1, &[&a, &c]));
        assert!(
            !d.is_member(&child, &c.peer),
            "the same epoch cannot add a member"
        );
        assert_eq!(d.get(&child).unwrap().members.leader(), Some(b.peer));
        d.adopt(&referral(child, 2, &[&c]));
        assert!(d.is_member(&child, &c.peer) && !d.is_member(&child, &a.peer));
        assert_eq!(d.get(&child).unwrap().members.leader(), None);
        d.adopt(&referral(ScopeId::root(), 9, &[&c]));
        assert!(
            !d.is_member(&ScopeId::root(), &c.peer),
            "a referral never changes the root's members"
        );
        assert_eq!(d.all_anchors().len(), 2);
    }

    #[test]
    fn empty_member_sets_plan_nothing() {
        let mut m = Members::new(vec![]);
        assert!(m.plan(true).is_empty());
        m.failed(&PeerId::random());
    }
}

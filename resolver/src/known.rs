//! What a client has learned, shared by its clones and its watches: the scopes and their
//! members and leaders ([`Directory`]), the cached referrals and the cached answers.
//!
//! [`Known`] is bookkeeping only, no IO: the retry engine, the walk and the watch task read
//! and update it as answers come in. Each part sits behind its own lock, held only for the few lines that use it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use libp2p::PeerId;
use proto::{Name, Referral, ScopeId};

use crate::addr::AnchorAddr;
use crate::cache::{Cache, ReferralCache};
use crate::members::{Directory, Members};

/// The scopes, members, leaders, referrals and answers one client has learned.
#[derive(Debug)]
pub(crate) struct Known {
    directory: Mutex<Directory>,
    cache: Mutex<Cache>,
    referrals: Mutex<ReferralCache>,
}

/// Where a walk or a mutation starts: the deepest cached referral above the name, or the
/// root.
#[derive(Debug)]
pub(crate) struct Start {
    pub scope: ScopeId,
    pub prefix: Name,
    /// The start of its range, for a scope born from a range split.
    pub range_start: Option<Name>,
    /// It came from the referral cache (and may be stale).
    pub cached: bool,
}

impl Start {
    /// The root scope, whose members are the trust anchors.
    pub fn root() -> Start {
        Start {
            scope: ScopeId::root(),
            prefix: Name::root(),
            range_start: None,
            cached: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is bookkeeping that every method leaves consistent; a panic
    // elsewhere while it was held does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Known {
    /// Knows the trust anchors as the root's members, and nothing else yet.
    pub fn new(
        trust: Vec<AnchorAddr>,
        cache_entries_max: usize,
        referral_entries_max: usize,
    ) -> Known {
        Known {
            directory: Mutex::new(Directory::new(trust)),
            cache: Mutex::new(Cache::new(cache_entries_max)),
            referrals: Mutex::new(ReferralCache::new(referral_entries_max)),
        }
    }

    /// The scopes this client knows, with their members and leaders.
    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        lock(&self.directory)
    }

    /// The answer cache.
    pub fn cache(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    /// The referral cache.
    pub fn referrals(&self) -> MutexGuard<'_, ReferralCache> {
        lock(&self.referrals)
    }

    /// The members of `scope` in the order to try them (none when the scope is unknown).
    pub fn plan(&self, scope: &ScopeId, leader_first: bool) -> Vec<AnchorAddr> {
        let directory = self.directory();
        directory
            .get(scope)
            .map(|s| s.members.plan(leader_first))
            .unwrap_or_default()
    }

    /// Records that `peer` failed a request to `scope`.
    pub fn failed(&self, scope: &ScopeId, peer: &PeerId) {
        if let Some(s) = self.directory().get_mut(scope) {
            s.members.failed(peer);
        }
    }

    /// Whether `peer` is a known member of `scope`.
    pub fn is_member(&self, scope: &ScopeId, peer: &PeerId) -> bool {
        self.directory().is_member(scope, peer)
    }

    /// Runs `f` on the members of `scope`, if the scope is known.
    pub fn with_members<R>(&self, scope: &ScopeId, f: impl FnOnce(&mut Members) -> R) -> Option<R> {
        self.directory().get_mut(scope).map(|s| f(&mut s.members))
    }

    /// Learns `leader` as a member of `scope` and as its leader.
    pub fn learn_leader(&self, scope: &ScopeId, leader: AnchorAddr) {
        self.with_members(scope, |m| {
            let leader = m.learn(leader);
            m.set_leader(leader.peer);
        });
    }

    /// Learns the members a verified referral lists.
    pub fn adopt(&self, referral: &Referral) {
        self.directory().adopt(referral);
    }

    /// Takes in a verified referral: its members, and the referral cache for its TTL.
    pub fn take_referral(&self, referral: &Referral) {
        self.adopt(referral);
        self.referrals().insert(referral.clone(), Instant::now());
    }

    /// Where a walk for `name` starts: the deepest cached referral (its members learned
    /// again in case they were forgotten), or the root.
    pub fn start(&self, name: &Name) -> Start {
        let cached = self.referrals().deepest(name, Instant::now());
        match cached {
            Some(r) => {
                self.adopt(&r);
                Start {
                    scope: r.scope,
                    prefix: r.prefix,
                    range_start: r.range.start,
                    cached: true,
                }
            }
            None => Start::root(),
        }
    }
}

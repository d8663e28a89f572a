//! The scope replicas this anchor hosts: the `scopes` tree that lists them, opening each one
//! (log store, state machine, Raft group, proposer, read-index rounds), creating a new scope,
//! hosting a seeded or an empty child scope, and finding the replica for an id or a name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use proto::limits::CLIENT_FRAME_BYTES_MAX;
use proto::{codec, Name, ScopeDescriptor, ScopeId};
use resolver::clock::SharedClock;
use resolver::net::NetHandle;

use crate::group;
use crate::identity;
use crate::raft::log_store::{self, FlusherHandle, LogStore};
use crate::raft::network::Coalescer;
use crate::raft::sm::{self, Seed, StateMachine};
use crate::raft::{NodeId, ScopeCommand};
use crate::replica::Replica;
use crate::scope::meter::BusyList;
use crate::scope::sig_cache::SigCache;
use crate::AnchorError;

/// How long the genesis entry may wait for its commit.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new scope's first member keeps trying to commit its genesis entry.
const GENESIS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Registry::snapshot_all`] waits for the log purges a leader postpones.
const PURGE_WAIT: Duration = Duration::from_secs(5);

/// What a replica is opened with: the database and the plumbing every group shares.
pub(crate) struct Plumbing {
    /// The anchor's database.
    pub db: sled::Db,
    /// Its group-commit flusher.
    pub flusher: FlusherHandle,
    /// The swarm, for the groups' Raft RPCs.
    pub net: NetHandle,
    /// Coalesces the RPCs of many groups to one peer.
    pub coalescer: Arc<Coalescer>,
    /// Signatures already checked, shared by every state machine.
    pub verified: Arc<SigCache>,
    /// The Raft configuration of every group.
    pub raft_config: Arc<openraft::Config>,
    /// This anchor's Raft node id.
    pub node_id: NodeId,
    /// This anchor's peer id, base58.
    pub peer_id: String,
    /// Wall-clock time for the proposers.
    pub clock: SharedClock,
    /// How each replica's load accounting is set up.
    pub load: crate::scope::load::LoadConfig,
    /// Where wakes of sleeping groups are counted (label: cause).
    pub wakes: prometheus::IntCounterVec,
    /// Where hibernations and reopenings of groups are counted (label: event).
    pub hibernations: prometheus::IntCounterVec,
    /// How many replicas hibernate now.
    pub hibernated: Arc<crate::group::Hibernated>,
    /// The scopes that served requests lately (their meters list them).
    pub busy: Arc<BusyList>,
}

/// The hosted replicas, by scope id.
pub struct Registry {
    plumbing: Arc<Plumbing>,
    /// The `scopes` tree: every hosted scope's descriptor.
    listed: sled::Tree,
    scopes: RwLock<Hosted>,
}

/// The replicas by id, and the same as one list, made again after a change (the
/// background loops walk it several times a second: with 10 000 replicas, copying the map
/// each time cost more than the walk).
#[derive(Default)]
struct Hosted {
    map: BTreeMap<ScopeId, Arc<Replica>>,
    /// The same replicas by prefix, for [`Registry::governing`] (one lookup per label of a
    /// name instead of a pass over every replica).
    by_prefix: BTreeMap<Name, Vec<Arc<Replica>>>,
    listing: Option<Replicas>,
    /// Those whose group does not hibernate (as of when it was made).
    awake: Option<Replicas>,
}

/// Which list of [`Hosted`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    All,
    Awake,
}

impl Hosted {
    fn insert(&mut self, r: Arc<Replica>) {
        let at = self
            .by_prefix
            .entry(r.descriptor.prefix.clone())
            .or_default();
        at.retain(|x| x.id != r.id);
        at.push(r.clone());
        self.map.insert(r.id, r);
        self.listing = None;
        self.awake = None;
    }

    fn remove(&mut self, id: &ScopeId) -> Option<Arc<Replica>> {
        let r = self.map.remove(id)?;
        if let Some(at) = self.by_prefix.get_mut(&r.descriptor.prefix) {
            at.retain(|x| x.id != *id);
            if at.is_empty() {
                self.by_prefix.remove(&r.descriptor.prefix);
            }
        }
        self.listing = None;
        self.awake = None;
        Some(r)
    }

    fn list(&self, which: Listing) -> &Option<Replicas> {
        match which {
            Listing::All => &self.listing,
            Listing::Awake => &self.awake,
        }
    }

    fn list_mut(&mut self, which: Listing) -> &mut Option<Replicas> {
        match which {
            Listing::All => &mut self.listing,
            Listing::Awake => &mut self.awake,
        }
    }
}

/// A list of hosted replicas, shared.
pub type Replicas = Arc<Vec<Arc<Replica>>>;

impl Registry {
    /// Opens the registry and every scope it lists.
    pub(crate) async fn open(plumbing: Plumbing) -> Result<Registry, AnchorError> {
        let listed = plumbing.db.open_tree("scopes")?;
        let registry = Registry {
            plumbing: Arc::new(plumbing),
            listed,
            scopes: RwLock::new(Hosted::default()),
        };
        for kv in registry.listed.iter() {
            let (_, v) = kv?;
            let descriptor: ScopeDescriptor = codec::decode(&v, CLIENT_FRAME_BYTES_MAX)?;
            registry.open_replica(descriptor).await?;
        }
        Ok(registry)
    }

    /// Every hosted replica.
    pub fn all(&self) -> Replicas {
        self.listed(Listing::All, false)
    }

    /// The hosted replicas whose group does not hibernate: what the per-second loops walk
    /// (a replica that hibernated or reopened a moment ago may be in it or not; the loops
    /// walk every replica every `delegation::HIBERNATED_VISIT` as well).
    pub fn awake(&self) -> Replicas {
        let changed = self
            .plumbing
            .hibernated
            .changed
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        self.listed(Listing::Awake, changed)
    }

    /// How many replicas are hosted here.
    pub fn len(&self) -> usize {
        self.scopes.read().map_or(0, |s| s.map.len())
    }

    /// True when no replica is hosted here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hosted replicas that served requests in the last [`proto::msg::Load::WINDOW_S`]
    /// seconds before `now_s` or have reads not reported yet: the only ones whose load is
    /// not zero. Scopes gone quiet or no longer hosted leave the list.
    pub fn busy(&self, now_s: u64) -> Vec<Arc<Replica>> {
        let list = &self.plumbing.busy;
        let mut out = Vec::new();
        for id in list.ids() {
            match self.get(&id) {
                None => list.remove(&id),
                Some(r) if r.load.retire_if_quiet(now_s) => {}
                Some(r) => out.push(r),
            }
        }
        out
    }

    /// The list `which`, made again if there is none yet or it is `stale`.
    fn listed(&self, which: Listing, stale: bool) -> Replicas {
        if !stale {
            if let Some(l) = self.scopes.read().ok().and_then(|s| s.list(which).clone()) {
                return l;
            }
        }
        let mut s = self
            .scopes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let made: Replicas = Arc::new(
            s.map
                .values()
                .filter(|r| which == Listing::All || !r.is_hibernated())
                .cloned()
                .collect(),
        );
        *s.list_mut(which) = Some(made.clone());
        made
    }

    /// How many hosted replicas hibernate, by role.
    pub fn hibernated(&self) -> &crate::group::Hibernated {
        &self.plumbing.hibernated
    }

    /// The replica of scope `id`, if hosted here.
    pub fn get(&self, id: &ScopeId) -> Option<Arc<Replica>> {
        self.scopes.read().ok().and_then(|s| s.map.get(id).cloned())
    }

    /// The hosted scope with the longest prefix whose range holds `name` (of two ranges of
    /// one prefix, the one that starts later: it was split off the other).
    pub fn governing(&self, name: &Name) -> Option<Arc<Replica>> {
        let s = self.scopes.read().ok()?;
        let mut prefix = Some(name.clone());
        while let Some(p) = prefix {
            let found = s.by_prefix.get(&p).and_then(|at| {
                at.iter()
                    .filter(|r| r.descriptor.covers(name))
                    .max_by(|a, b| {
                        (&a.descriptor.range.start, a.id).cmp(&(&b.descriptor.range.start, b.id))
                    })
                    .cloned()
            });
            if found.is_some() {
                return found;
            }
            prefix = p.parent();
        }
        None
    }

    /// This anchor's Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.plumbing.node_id
    }

    /// Stops every group.
    pub(crate) async fn stop_groups(&self) {
        for r in self.all().iter() {
            r.stop().await;
        }
    }

    /// Forgets every replica (after [`Registry::stop_groups`]).
    pub(crate) fn forget_all(&self) {
        if let Ok(mut s) = self.scopes.write() {
            *s = Hosted::default();
        }
    }

    async fn open_replica(&self, descriptor: ScopeDescriptor) -> Result<Arc<Replica>, AnchorError> {
        let p = &self.plumbing;
        let id = descriptor.id;
        let sm = StateMachine::open(&p.db, id, descriptor.prefix.clone(), p.verified.clone())?;
        let state = sm.reader();
        let group = group::start(p, &descriptor, sm).await?;
        let replica = Arc::new(Replica::new(descriptor, group, state, p.clone()));
        if let Ok(mut s) = self.scopes.write() {
            s.insert(replica.clone());
        }
        tracing::info!(scope = %id, prefix = %replica.descriptor.prefix, "scope replica opened");
        Ok(replica)
    }

    fn flush_error(source: std::io::Error) -> AnchorError {
        AnchorError::Io {
            path: "db".into(),
            source,
        }
    }

    /// Records the scope in the registry, makes everything written so far durable, and
    /// starts its group.
    async fn register_and_open(
        &self,
        descriptor: &ScopeDescriptor,
    ) -> Result<Arc<Replica>, AnchorError> {
        self.listed
            .insert(descriptor.id.0, codec::encode(descriptor)?)?;
        self.plumbing
            .flusher
            .flush()
            .await
            .map_err(Registry::flush_error)?;
        self.open_replica(descriptor.clone()).await
    }

    /// Hosts a child scope from its seed: its state as a snapshot at the seed's log id (any
    /// partial earlier attempt replaced), its log starting there, and its group started.
    pub(crate) async fn host_seeded(&self, seed: &Seed<'_>) -> Result<Arc<Replica>, AnchorError> {
        let p = &self.plumbing;
        let id = seed.child.id;
        // Writing a seed reads and writes every moved record (seconds for a large split):
        // off the async workers where the runtime allows it, so the anchor's other groups
        // keep their heartbeats meanwhile.
        let write = || -> Result<(), AnchorError> {
            log_store::remove_scope(&p.db, &id)?;
            sm::seed(&p.db, seed)?;
            LogStore::open(&p.db, id, p.flusher.clone())?.seed_purged(seed.log_id)?;
            Ok(())
        };
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        if multi_thread {
            tokio::task::block_in_place(write)?;
        } else {
            write()?;
        }
        self.register_and_open(seed.child).await
    }

    /// Hosts an empty replica of a child scope that missed its seeding (its leader sends it a
    /// snapshot), replacing any partial earlier attempt.
    pub(crate) async fn host_empty(
        &self,
        descriptor: &ScopeDescriptor,
    ) -> Result<Arc<Replica>, AnchorError> {
        log_store::remove_scope(&self.plumbing.db, &descriptor.id)?;
        sm::remove_scope(&self.plumbing.db, &descriptor.id)?;
        self.register_and_open(descriptor).await
    }

    /// Stops hosting scope `id` (a child merged back into its parent): no request finds
    /// it any more, its group stops, and its registry entry, log and state are deleted.
    /// Harmless when it is not hosted.
    pub(crate) async fn remove(&self, id: &ScopeId) -> Result<(), AnchorError> {
        let removed = self.scopes.write().ok().and_then(|mut s| s.remove(id));
        if let Some(r) = removed {
            // A request that found the replica before it left the map reads nothing more
            // (nor reopens its group).
            r.state.mark_removed();
            r.stop().await;
        }
        // Unlisted first: a crash after this leaves unused keys, never a half scope reopened.
        self.listed.remove(id.0)?;
        self.plumbing
            .flusher
            .flush()
            .await
            .map_err(Registry::flush_error)?;
        log_store::remove_scope(&self.plumbing.db, id)?;
        sm::remove_scope(&self.plumbing.db, id)?;
        tracing::info!(scope = %id, "scope replica removed");
        Ok(())
    }

    /// Hosts a replica of a new scope; with `bootstrap`, initializes the group and commits
    /// its genesis entry.
    pub async fn create_scope(
        &self,
        descriptor: ScopeDescriptor,
        policy_toml: String,
        bootstrap: bool,
    ) -> Result<(), AnchorError> {
        policy::Policy::from_toml(&policy_toml)?;
        let me = &self.plumbing.peer_id;
        if !descriptor.members.iter().any(|m| &m.peer_id == me) {
            return Err(AnchorError::NotAMember { anchor: me.clone() });
        }
        let members = identity::raft_members(&descriptor.members)?;
        if members.len() != descriptor.members.len() || members.is_empty() {
            return Err(AnchorError::MembersNotDistinct);
        }
        let replica = match self.get(&descriptor.id) {
            Some(r) if !bootstrap => return Err(AnchorError::AlreadyExists(r.id)),
            Some(r) => r,
            None => {
                let key = descriptor.id.0;
                let value = codec::encode(&descriptor)?;
                if self
                    .listed
                    .compare_and_swap(key, None as Option<&[u8]>, Some(value))?
                    .is_err()
                {
                    return Err(AnchorError::AlreadyExists(descriptor.id));
                }
                self.plumbing
                    .flusher
                    .flush()
                    .await
                    .map_err(Registry::flush_error)?;
                self.open_replica(descriptor.clone()).await?
            }
        };
        if !bootstrap {
            return Ok(());
        }
        let raft = replica.group().await?;
        if raft
            .is_initialized()
            .await
            .map_err(|e| AnchorError::Raft(e.to_string()))?
        {
            return Err(AnchorError::AlreadyExists(replica.id));
        }
        raft.initialize(members)
            .await
            .map_err(|e| AnchorError::Raft(e.to_string()))?;
        let genesis = ScopeCommand::Genesis {
            descriptor,
            policy_toml,
        };
        let deadline = Instant::now() + GENESIS_TIMEOUT;
        loop {
            match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(genesis.clone())).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if Instant::now() > deadline => {
                    return Err(AnchorError::Raft(e.to_string()))
                }
                Err(_) if Instant::now() > deadline => {
                    return Err(AnchorError::GenesisTimeout {
                        secs: GENESIS_TIMEOUT.as_secs(),
                    })
                }
                _ => {
                    // Not leader yet (the election started by initialize is under way):
                    // wait for the next metrics change, bounded, then try again.
                    let mut metrics = raft.metrics();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
                }
            }
        }
    }

    /// Builds a snapshot of every hosted scope and purges the log up to it.
    ///
    /// A leader postpones a purge while a replication to a lagging or unreachable follower
    /// still holds the entries (openraft retries such a follower every 500 ms and purges
    /// between tries), so this waits up to 5 s for every purge to be done; a purge
    /// still postponed then is logged and happens later on its own.
    pub async fn snapshot_all(&self) -> Result<(), AnchorError> {
        let mut purging = Vec::new();
        for r in self.all().iter() {
            let raft = r.group().await?;
            let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            raft.trigger()
                .snapshot()
                .await
                .map_err(|e| AnchorError::Raft(e.to_string()))?;
            let waited = raft
                .wait(Some(Duration::from_secs(20)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "snapshot built",
                )
                .await
                .map_err(|e| AnchorError::Raft(e.to_string()))?;
            if let Some(s) = waited.snapshot {
                raft.trigger()
                    .purge_log(s.index)
                    .await
                    .map_err(|e| AnchorError::Raft(e.to_string()))?;
                purging.push((r.id, raft, s.index));
            }
        }
        let deadline = Instant::now() + PURGE_WAIT;
        for (id, raft, index) in purging {
            let left = deadline.saturating_duration_since(Instant::now());
            let purged = raft
                .wait(Some(left))
                .metrics(|m| m.purged.is_some_and(|p| p.index >= index), "log purged")
                .await;
            if purged.is_err() {
                tracing::info!(
                    scope = %id,
                    upto = index,
                    "log purge postponed: a replication still uses the entries"
                );
            }
        }
        Ok(())
    }
}

//! The sled-backed Raft log of every scope, and the one flusher task that makes it durable.
//!
//! Every scope hosted by an anchor keeps its Raft log in the anchor's single sled database:
//! entries in the `raft_log` tree under `scope id (16 bytes) ++ index (u64 big-endian)`, and
//! the vote, committed and purged log ids in the `raft_meta` tree under
//! `scope id ++ b"vote" | b"committed" | b"purged"`. Values go through [`proto::codec`].
//!
//! # Durability
//!
//! sled's flush is database-wide, so the anchor runs one [`Flusher`] task for all its scopes
//! (group commit): [`LogStore::append`](RaftLogStorage::append) writes the entries in one
//! batch, so they are readable at once, and hands openraft's [`LogFlushed`] callback to the
//! flusher, which completes it only after a flush that started after the write. One fsync
//! thus acknowledges the appends of every scope that arrived meanwhile.
//!
//! - `save_vote` and `truncate` wait for a flush before they return (truncation is rare, and
//!   a flushed truncation can never be reordered behind the appends that follow it).
//! - `purge` persists `last_purged`, flushes (which also makes the state machine, written to
//!   the same database, durable up to the purged index), and only then deletes entries.
//! - `save_committed` is not flushed by itself; the next flush covers it. Losing it in a
//!   crash only means openraft re-applies less on restart.
//!
//! A `flush` returning means every write issued before it is durable: sled's flush is
//! database-wide, so one [`FlusherHandle::flush`] also covers the other trees of the anchor.

use std::fmt;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, StorageError, Vote};
use prometheus::Histogram;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use proto::limits::{RAFT_ENTRIES_PER_APPEND_MAX, RAFT_FRAME_BYTES_MAX};
use proto::ScopeId;

use super::{scope_prefix, sto_err, NodeId, TypeConfig};

/// The sled tree holding the log entries of every scope.
pub const LOG_TREE: &str = "raft_log";
/// The sled tree holding the vote, committed and purged log ids of every scope.
pub const META_TREE: &str = "raft_meta";

/// Most entries [`RaftLogReader::limited_get_log_entries`] returns at once (one AppendEntries).
pub const READ_ENTRIES_MAX: usize = RAFT_ENTRIES_PER_APPEND_MAX as usize;
/// Encoded bytes after which [`RaftLogReader::limited_get_log_entries`] stops adding entries
/// (it always returns at least one), half a Raft frame.
pub const READ_BYTES_MAX: usize = RAFT_FRAME_BYTES_MAX / 2;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";

const SCOPE_LEN: usize = 16;
const LOG_KEY_LEN: usize = SCOPE_LEN + 8;

type StoreResult<T> = Result<T, StorageError<NodeId>>;
type LogKey = [u8; LOG_KEY_LEN];
type KeyRange = (Bound<LogKey>, Bound<LogKey>);

/// One request to the flusher: an append's callback, or someone waiting for a flush.
enum FlushRequest {
    Appended(LogFlushed<TypeConfig>),
    Waiter(oneshot::Sender<io::Result<()>>),
}

/// The group-commit task of one anchor: flushes the sled database once for every batch of
/// queued requests and then completes them. Create it with [`Flusher::new`] and run it with
/// [`Flusher::run`], or do both with [`FlusherHandle::spawn`].
pub struct Flusher {
    db: sled::Db,
    rx: mpsc::UnboundedReceiver<FlushRequest>,
    flush_seconds: Option<Histogram>,
}

/// A cheap, cloneable handle for queueing work on the anchor's [`Flusher`]. The flusher task
/// exits once every handle is dropped.
#[derive(Clone)]
pub struct FlusherHandle {
    tx: mpsc::UnboundedSender<FlushRequest>,
}

impl Flusher {
    /// A flusher for `db` and the handle that feeds it. Nothing is flushed until
    /// [`Flusher::run`] is polled. `flush_seconds` observes the latency of every flush.
    pub fn new(db: sled::Db, flush_seconds: Option<Histogram>) -> (Flusher, FlusherHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Flusher {
                db,
                rx,
                flush_seconds,
            },
            FlusherHandle { tx },
        )
    }

    /// Runs until every [`FlusherHandle`] is dropped: waits for a request, takes everything
    /// else already queued, flushes the database once, then completes all of them with the
    /// flush's outcome.
    pub async fn run(mut self) {
        let mut batch = Vec::new();
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while let Ok(more) = self.rx.try_recv() {
                batch.push(more);
            }
            let started = Instant::now();
            let outcome = flush_db(&self.db).await;
            if let Some(h) = &self.flush_seconds {
                h.observe(started.elapsed().as_secs_f64());
            }
            if let Err(e) = &outcome {
                tracing::error!(error = %e, requests = batch.len(), "sled flush failed");
            }
            for request in batch.drain(..) {
                let result = match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                match request {
                    FlushRequest::Appended(cb) => cb.log_io_completed(result),
                    // The waiter may have given up; nothing to do then.
                    FlushRequest::Waiter(tx) => {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Flusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

/// One fsync of the whole database, on tokio's blocking pool. (Measured against
/// `sled::Db::flush_async`, which hops to sled's own pool: the same cost within noise,
/// slightly less in the median.)
async fn flush_db(db: &sled::Db) -> io::Result<()> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_bytes)) => Ok(()),
        Ok(Err(e)) => Err(io::Error::from(e)),
        Err(join) => Err(io::Error::other(format!("flush task failed: {join}"))),
    }
}

fn flusher_gone() -> io::Error {
    io::Error::other("the log flusher has stopped")
}

impl FlusherHandle {
    /// Creates the flusher of `db` and spawns it on the current tokio runtime (panics outside
    /// one). Call it once per database: one flusher serves every scope.
    pub fn spawn(db: sled::Db, flush_seconds: Option<Histogram>) -> FlusherHandle {
        let (flusher, handle) = Flusher::new(db, flush_seconds);
        tokio::spawn(flusher.run());
        handle
    }

    /// Queues an append's callback; it is completed after the next flush. If the flusher has
    /// stopped, the callback is completed at once with an error (never with success).
    pub fn submit(&self, cb: LogFlushed<TypeConfig>) {
        if let Err(mpsc::error::SendError(FlushRequest::Appended(cb))) =
            self.tx.send(FlushRequest::Appended(cb))
        {
            cb.log_io_completed(Err(flusher_gone()));
        }
    }

    /// Requests a flush and waits until one that started after this call has finished.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(FlushRequest::Waiter(tx))
            .map_err(|_| flusher_gone())?;
        rx.await.map_err(|_| flusher_gone())?
    }
}

impl fmt::Debug for FlusherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlusherHandle")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// The Raft log, vote and log pointers of one scope, in the anchor's sled database.
/// Cloning is cheap; clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    scope: ScopeId,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: FlusherHandle,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

// `StorageError` is what openraft's traits return; the helpers return it too, unboxed.
#[allow(clippy::result_large_err)]
impl LogStore {
    /// The log store of `scope` in `db`; `flusher` is the anchor's one flusher for `db`.
    pub fn open(
        db: &sled::Db,
        scope: ScopeId,
        flusher: FlusherHandle,
    ) -> Result<LogStore, sled::Error> {
        Ok(LogStore {
            scope,
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
            flusher,
        })
    }

    /// The scope this log belongs to.
    pub fn scope(&self) -> ScopeId {
        self.scope
    }

    /// Starts an empty log after `log_id`, as if everything up to it had been purged into a
    /// snapshot (a child scope seeded at its parent's delegation index). The caller flushes.
    pub fn seed_purged(&self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.write_meta(PURGED_KEY, &log_id, || ErrorSubject::Logs)
    }

    fn log_key(&self, index: u64) -> LogKey {
        let mut key = [0u8; LOG_KEY_LEN];
        key[..SCOPE_LEN].copy_from_slice(&scope_prefix(&self.scope));
        key[SCOPE_LEN..].copy_from_slice(&index.to_be_bytes());
        key
    }

    fn meta_key(&self, name: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(SCOPE_LEN + name.len());
        key.extend_from_slice(&scope_prefix(&self.scope));
        key.extend_from_slice(name);
        key
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        name: &[u8],
        subject: impl Fn() -> ErrorSubject<NodeId>,
    ) -> StoreResult<Option<T>> {
        let Some(bytes) = self
            .meta
            .get(self.meta_key(name))
            .map_err(|e| sto_err(subject(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        proto::codec::decode(&bytes, RAFT_FRAME_BYTES_MAX)
            .map(Some)
            .map_err(|e| sto_err(subject(), ErrorVerb::Read, e))
    }

    fn write_meta<T: Serialize>(
        &self,
        name: &[u8],
        value: &T,
        subject: impl Fn() -> ErrorSubject<NodeId>,
    ) -> StoreResult<()> {
        let bytes =
            proto::codec::encode(value).map_err(|e| sto_err(subject(), ErrorVerb::Write, e))?;
        self.meta
            .insert(self.meta_key(name), bytes)
            .map_err(|e| sto_err(subject(), ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Decodes one `(key, value)` pair of this scope's log, checking that the key is well
    /// formed and that the entry's index matches it.
    fn decode_entry(&self, key: &[u8], value: &[u8]) -> StoreResult<Entry<TypeConfig>> {
        let index = key
            .get(SCOPE_LEN..)
            .filter(|_| key.len() == LOG_KEY_LEN && key[..SCOPE_LEN] == scope_prefix(&self.scope))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| {
                sto_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    format!("malformed log key of {} bytes", key.len()),
                )
            })?;
        let entry: Entry<TypeConfig> = proto::codec::decode(value, RAFT_FRAME_BYTES_MAX)
            .map_err(|e| sto_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
        if entry.log_id.index != index {
            return Err(sto_err(
                ErrorSubject::LogIndex(index),
                ErrorVerb::Read,
                format!("entry under index {index} has log id {}", entry.log_id),
            ));
        }
        Ok(entry)
    }

    /// The sled key range of the log indexes in `range`, or `None` if it is empty.
    fn key_range(&self, range: &impl RangeBounds<u64>) -> Option<KeyRange> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) if e >= start => Bound::Included(self.log_key(e)),
            Bound::Excluded(&e) if e > start => Bound::Excluded(self.log_key(e)),
            Bound::Unbounded => Bound::Included(self.log_key(u64::MAX)),
            _ => return None,
        };
        Some((Bound::Included(self.log_key(start)), end))
    }

    /// Entries in `range`, in order, at most `max_entries`, stopping once `max_bytes` of
    /// encoded entries are collected (but always returning the first one found).
    fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
        max_entries: usize,
        max_bytes: usize,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let Some(keys) = self.key_range(&range) else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self.log.range(keys) {
            if entries.len() >= max_entries || (!entries.is_empty() && bytes >= max_bytes) {
                break;
            }
            let (key, value) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            bytes = bytes.saturating_add(value.len());
            entries.push(self.decode_entry(&key, &value)?);
        }
        Ok(entries)
    }

    /// The log id of the last entry present in this scope's log.
    fn last_present_log_id(&self) -> StoreResult<Option<LogId<NodeId>>> {
        match self.log.scan_prefix(scope_prefix(&self.scope)).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) =
                    item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(self.decode_entry(&key, &value)?.log_id))
            }
        }
    }

    /// Deletes this scope's entries whose index lies in `range`, in one batch.
    fn delete_entries(&self, range: impl RangeBounds<u64>) -> StoreResult<()> {
        let Some(keys) = self.key_range(&range) else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for key in self.log.range(keys).keys() {
            let key = key.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    fn last_purged(&self) -> StoreResult<Option<LogId<NodeId>>> {
        self.read_meta(PURGED_KEY, || ErrorSubject::Logs)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        self.read_entries(range, usize::MAX, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        self.read_entries(start..end, READ_ENTRIES_MAX, READ_BYTES_MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = self.last_present_log_id()?.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write_meta(VOTE_KEY, vote, || ErrorSubject::Vote)?;
        self.flusher
            .flush()
            .await
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE_KEY, || ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        match committed {
            Some(id) => self.write_meta(COMMITTED_KEY, &id, || ErrorSubject::Store),
            None => self
                .meta
                .remove(self.meta_key(COMMITTED_KEY))
                .map(|_| ())
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Delete, e)),
        }
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        self.read_meta(COMMITTED_KEY, || ErrorSubject::Store)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = proto::codec::encode(&entry)
                .map_err(|e| sto_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.insert(&self.log_key(entry.log_id.index)[..], bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Readable now; durable (and acknowledged) after the flusher's next flush.
        self.flusher.submit(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.delete_entries(log_id.index..)?;
        self.flusher
            .flush()
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let purged = match self.last_purged()? {
            Some(earlier) if earlier > log_id => earlier,
            _ => log_id,
        };
        self.write_meta(PURGED_KEY, &purged, || ErrorSubject::Logs)?;
        // Durable before anything is deleted: the purged id, and whatever the state machine
        // wrote to this database up to it.
        self.flusher
            .flush()
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.delete_entries(..=log_id.index)
    }
}

/// Deletes every log entry and the vote, committed and purged ids of `scope` from `db`.
/// Not flushed: the caller flushes (e.g. [`FlusherHandle::flush`]) if the removal must
/// survive a crash. Shut the scope's Raft down first.
pub fn remove_scope(db: &sled::Db, scope: &ScopeId) -> Result<(), sled::Error> {
    for name in [LOG_TREE, META_TREE] {
        let tree = db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for key in tree.scan_prefix(scope_prefix(scope)).keys() {
            batch.remove(key?);
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::Duration;

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload, Membership};
    use prometheus::HistogramOpts;
    use tokio::task::JoinHandle;

    use super::super::sm::StateMachine;
    use super::*;

    fn scope(n: u8) -> ScopeId {
        ScopeId([n; 16])
    }

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership(term: u64, index: u64) -> Entry<TypeConfig> {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into_iter().collect();
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], ())),
        }
    }

    fn histogram() -> Histogram {
        Histogram::with_opts(HistogramOpts::new("flush_seconds", "test")).unwrap()
    }

    /// An open database with a running flusher whose task can be awaited after the stores
    /// and handle are dropped (so the database can be reopened).
    struct Anchor {
        db: sled::Db,
        flusher: FlusherHandle,
        task: JoinHandle<()>,
        flushes: Histogram,
    }

    impl Anchor {
        fn open(path: &Path) -> Anchor {
            // sled lets go of a closed database's file lock from its own background thread:
            // a reopen right after a close may find it still held for a moment.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let db = loop {
                match sled::open(path) {
                    Ok(db) => break db,
                    Err(e) if std::time::Instant::now() < deadline => {
                        eprintln!("reopening {}: {e}; retrying", path.display());
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("reopening {}: {e}", path.display()),
                }
            };
            let flushes = histogram();
            let (flusher, handle) = Flusher::new(db.clone(), Some(flushes.clone()));
            let task = tokio::spawn(flusher.run());
            Anchor {
                db,
                flusher: handle,
                task,
                flushes,
            }
        }

        fn store(&self, s: ScopeId) -> LogStore {
            LogStore::open(&self.db, s, self.flusher.clone()).unwrap()
        }

        /// Drops everything and waits for the flusher to exit, releasing the database.
        async fn close(self) {
            let Anchor {
                db, flusher, task, ..
            } = self;
            drop(flusher);
            drop(db);
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("flusher exits once every handle is dropped")
                .unwrap();
        }
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn append_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));

        let st = store.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));

        store
            .blocking_append([membership(1, 1), blank(1, 2), blank(2, 3)])
            .await
            .unwrap();
        store
            .blocking_append((4..=200).map(|i| blank(2, i)))
            .await
            .unwrap();

        let all = store.try_get_log_entries(..).await.unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(all[0], membership(1, 1));
        assert_eq!(all[2], blank(2, 3));
        assert_eq!(store.try_get_log_entries(2..4).await.unwrap().len(), 2);
        assert_eq!(
            store.try_get_log_entries(5..=5).await.unwrap(),
            [blank(2, 5)]
        );
        assert!(store.try_get_log_entries(7..7).await.unwrap().is_empty());
        assert!(store.try_get_log_entries(201..).await.unwrap().is_empty());

        let limited = store.limited_get_log_entries(10, 150).await.unwrap();
        assert_eq!(limited.len(), READ_ENTRIES_MAX);
        assert_eq!(limited[0].log_id.index, 10);
        assert_eq!(
            store.limited_get_log_entries(10, 12).await.unwrap().len(),
            2
        );

        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(2, 200)));
        assert_eq!(st.last_purged_log_id, None);

        // The reader sees the same log.
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(..).await.unwrap(), all);

        // Every acknowledged append was flushed.
        assert!(anchor.flushes.get_sample_count() >= 2);

        drop((store, reader));
        anchor.close().await;
        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), all);
        drop(store);
        anchor.close().await;
    }

    #[tokio::test]
    async fn append_callback_waits_for_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flushes = histogram();
        // The flusher exists but does not run yet.
        let (flusher, handle) = Flusher::new(db.clone(), Some(flushes.clone()));
        let store = LogStore::open(&db, scope(1), handle.clone()).unwrap();

        let mut appenders = Vec::new();
        for i in 1..=5u64 {
            let mut store = store.clone();
            appenders.push(tokio::spawn(async move {
                store.blocking_append([blank(1, i)]).await
            }));
        }
        let waiter = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.flush().await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Written and readable, but no callback completed without a flush.
        assert_eq!(indexes(&mut store.clone()).await, [1, 2, 3, 4, 5]);
        assert!(appenders.iter().all(|t| !t.is_finished()));
        assert!(!waiter.is_finished());
        assert_eq!(flushes.get_sample_count(), 0);

        let task = tokio::spawn(flusher.run());
        for t in appenders {
            t.await.unwrap().unwrap();
        }
        waiter.await.unwrap().unwrap();
        // Group commit: everything queued before the flusher ran shared one flush.
        assert_eq!(flushes.get_sample_count(), 1);

        drop((store, handle, db));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_stopped_flusher_reports_errors_not_success() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (flusher, handle) = Flusher::new(db.clone(), None);
        drop(flusher);
        let mut store = LogStore::open(&db, scope(1), handle.clone()).unwrap();
        assert!(handle.flush().await.is_err());
        assert!(store.blocking_append([blank(1, 1)]).await.is_err());
        assert!(store.save_vote(&Vote::new(1, 1)).await.is_err());
    }

    #[tokio::test]
    async fn truncate_removes_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        store
            .blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();

        let before = anchor.flushes.get_sample_count();
        store.truncate(log_id(1, 7)).await.unwrap();
        assert!(
            anchor.flushes.get_sample_count() > before,
            "truncate flushes"
        );
        assert_eq!(indexes(&mut store).await, (1..=6).collect::<Vec<_>>());
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(1, 6)));

        // Conflicting entries replace the truncated tail.
        store
            .blocking_append([blank(2, 7), blank(2, 8)])
            .await
            .unwrap();
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(2, 8)));

        store.truncate(log_id(1, 1)).await.unwrap();
        assert!(indexes(&mut store).await.is_empty());
        let st = store.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
        drop(store);
        anchor.close().await;
    }

    #[tokio::test]
    async fn purge_persists_last_purged_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        store
            .blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();

        let before = anchor.flushes.get_sample_count();
        store.purge(log_id(1, 4)).await.unwrap();
        assert!(anchor.flushes.get_sample_count() > before, "purge flushes");
        assert_eq!(indexes(&mut store).await, (5..=10).collect::<Vec<_>>());
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(st.last_log_id, Some(log_id(1, 10)));

        // Purging everything leaves an empty log whose last log id is the purged one.
        store.purge(log_id(1, 10)).await.unwrap();
        assert!(indexes(&mut store).await.is_empty());
        // An older purge does not move last_purged back.
        store.purge(log_id(1, 3)).await.unwrap();
        drop(store);
        anchor.close().await;

        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1, 10)));
        assert_eq!(st.last_log_id, Some(log_id(1, 10)));
        assert!(indexes(&mut store).await.is_empty());

        // The log continues after the purged id.
        store.blocking_append([blank(2, 11)]).await.unwrap();
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(2, 11)));
        drop(store);
        anchor.close().await;
    }

    #[tokio::test]
    async fn vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);

        let mut vote = Vote::new(3, 2);
        vote.commit();
        let before = anchor.flushes.get_sample_count();
        store.save_vote(&vote).await.unwrap();
        assert!(
            anchor.flushes.get_sample_count() > before,
            "save_vote returns after a flush"
        );
        store.save_committed(Some(log_id(3, 9))).await.unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        drop(store);
        anchor.close().await;

        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 9)));
        store.save_committed(None).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
        // Another scope in the same database has no vote.
        assert_eq!(anchor.store(scope(2)).read_vote().await.unwrap(), None);
        drop(store);
        anchor.close().await;
    }

    #[tokio::test]
    async fn scopes_in_one_database_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Anchor::open(dir.path());
        let mut a = anchor.store(scope(1));
        let mut b = anchor.store(scope(2));
        // A neighbour whose id sorts just after `a`, to catch range overruns.
        let mut c = anchor.store(ScopeId({
            let mut id = [1u8; 16];
            id[15] = 2;
            id
        }));
        a.blocking_append((1..=5).map(|i| blank(1, i)))
            .await
            .unwrap();
        b.blocking_append((1..=3).map(|i| blank(7, i)))
            .await
            .unwrap();
        c.blocking_append([blank(9, 1)]).await.unwrap();
        a.save_vote(&Vote::new(1, 1)).await.unwrap();
        b.save_vote(&Vote::new(7, 2)).await.unwrap();

        assert_eq!(indexes(&mut a).await, [1, 2, 3, 4, 5]);
        assert!(a
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .all(|e| e.log_id.leader_id.term == 1));
        assert_eq!(
            b.get_log_state().await.unwrap().last_log_id,
            Some(log_id(7, 3))
        );
        assert_eq!(
            a.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 5))
        );

        a.truncate(log_id(1, 2)).await.unwrap();
        b.purge(log_id(7, 2)).await.unwrap();
        assert_eq!(indexes(&mut a).await, [1]);
        assert_eq!(indexes(&mut b).await, [3]);
        assert_eq!(indexes(&mut c).await, [1]);
        assert_eq!(a.get_log_state().await.unwrap().last_purged_log_id, None);

        remove_scope(&anchor.db, &scope(1)).unwrap();
        assert!(indexes(&mut a).await.is_empty());
        assert_eq!(a.read_vote().await.unwrap(), None);
        let st = a.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
        assert_eq!(indexes(&mut b).await, [3]);
        assert_eq!(b.read_vote().await.unwrap(), Some(Vote::new(7, 2)));
        assert_eq!(
            b.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(7, 2))
        );
        assert_eq!(indexes(&mut c).await, [1]);
        drop((a, b, c));
        anchor.close().await;
    }

    #[tokio::test]
    async fn corrupt_entries_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Anchor::open(dir.path());
        let mut store = anchor.store(scope(1));
        store.blocking_append([blank(1, 1)]).await.unwrap();
        let log = anchor.db.open_tree(LOG_TREE).unwrap();
        log.insert(store.log_key(2), &b"garbage"[..]).unwrap();
        assert!(store.try_get_log_entries(..).await.is_err());
        assert!(store.get_log_state().await.is_err());
        // An entry stored under the wrong index is refused too.
        let misplaced = proto::codec::encode(&blank(1, 9)).unwrap();
        log.insert(store.log_key(2), misplaced).unwrap();
        assert!(store.try_get_log_entries(2..3).await.is_err());
        drop(store);
        anchor.close().await;
    }

    // ---- openraft's storage suite, with a minimal in-memory state machine ----

    /// Just enough state machine for the suite; the builder shares the current snapshot.
    struct SledBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, (tempfile::TempDir, sled::Db)>
        for SledBuilder
    {
        async fn build(
            &self,
        ) -> StoreResult<((tempfile::TempDir, sled::Db), LogStore, StateMachine)> {
            let dir = tempfile::tempdir()
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let db = sled::open(dir.path())
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let flusher = FlusherHandle::spawn(db.clone(), None);
            // A neighbouring scope with entries of its own must not disturb the suite.
            let mut other = LogStore::open(&db, scope(9), flusher.clone())
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            other.blocking_append((0..=30).map(|i| blank(5, i))).await?;
            let store = LogStore::open(&db, scope(8), flusher)
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            // The real state machine, in the same database, next to another scope's state.
            let sm = StateMachine::open(&db, scope(8), proto::Name::root(), Default::default())
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok(((dir, db), store, sm))
        }
    }

    /// openraft's own storage test suite (each case in a fresh runtime, so no tokio test).
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(SledBuilder).unwrap();
    }
}

//! The sled backend.
//!
//! Trees: `events` (big-endian seq of an append's first event -> a chunk holding the
//! records of every event that append recorded, see [`codec::encode_chunk`]; a lone
//! event's bare record, as in the layout before chunks; an append of more than
//! [`CHUNK_MAX_EVENTS`] events is split into several chunks), `meta`
//! (caller's keys), `dead_letters` (meta keys under [`DEAD_LETTER_PREFIX`], stored
//! without it) and `snapshots` (where versions before the snapshot file kept the
//! projection snapshot, under `projection`; see below).
//!
//! The projection snapshot is a file of its own in the database's directory,
//! [`SNAPSHOT_FILE`], replaced atomically (written beside, synced, renamed), and not a
//! sled value: sled recovers its whole database at open, and a snapshot is large enough
//! to be one of its blob files, so a damaged snapshot in sled made the database (the log
//! included) fail to open. A damaged or unreadable snapshot file is only a missing cache.
//! A storage made by [`SledStorage::from_db`] has no directory to put it in and keeps the
//! snapshot in the `snapshots` tree as before.
//!
//! An append is one insert of its chunk, or, when it carries meta entries, one sled
//! transaction of inserts over `events`, `meta` and `dead_letters`. Sled costs about the
//! same per insert whatever its size, and each key costs it space, so one key per append
//! (not per event) is what makes durable appends cheap and the database small. The
//! record of seq `s` is found in the chunk under the greatest key `<= s`.
//!
//! The idempotency index (event id -> seq) and the customer index (customer id -> seqs)
//! live on disk, in the `log_index` tree (see [`super::sled_index`]), written by each
//! append right after its events and repaired from the records at open if a crash came
//! between the two; a bounded cache of recently recorded ids ([`StorageOptions`]) answers
//! most duplicate checks without reading the disk. Opening reads the last chunk and the
//! index's `through` mark, never the whole log (except once, to index a log written by a
//! version without these indexes).
//!
//! Older databases hold one record per key (a value starting with the record version
//! instead of the chunk version) and, beside them, either per-event `ids` / `customers`
//! trees or an `index` journal of ids per append. Their records read as chunks of one,
//! the `log_index` is built from the records like any other, and the old index trees are
//! left alone (never read nor written again).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, IVec, Tree};
use tact_core::Event;

use super::sled_index::{self, IdCache};
use super::{
    Appended, DEAD_LETTER_PREFIX, EventVisitor, MetaEntry, OnTaken, RawVisitor, SNAPSHOT_FILE, Storage,
    StorageOptions, event_in_chunk, meta_under, plan_batch, read_snapshot_file, visit_chunk, visit_indexed,
    with_taken_meta,
};
use crate::codec;
use crate::error::LogError;

const SNAPSHOT_KEY: &[u8] = b"projection";

/// The most events one chunk holds: a bigger append is stored as several chunks (in
/// the same atomic write). Keeps sled's nodes and page rewrites of a reasonable size.
const CHUNK_MAX_EVENTS: usize = 1024;

/// How long [`SledStorage::open`] waits for a lock another handle is releasing.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The log in a sled database. Cheap to share behind an `Arc`.
pub struct SledStorage {
    db: Db,
    events: Tree,
    meta: Tree,
    dead_letters: Tree,
    snapshots: Tree,
    /// Where the snapshot lives; `None`: in the `snapshots` tree.
    snapshot_file: Option<PathBuf>,
    /// The disk indexes (see [`super::sled_index`]).
    index: Tree,
    /// Serializes appends: seq assignment and the duplicate check happen outside the
    /// write, which is safe because only appends write `events` and `log_index`.
    append_lock: Mutex<()>,
    last_seq: AtomicU64,
    /// Recently recorded ids; changed only under `append_lock`, after the write.
    ids: RwLock<IdCache>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage")
            .field("db", &self.db)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl SledStorage {
    /// Opens (or creates) the database in directory `path` with sled's defaults.
    ///
    /// sled releases its file lock from a background thread shortly after the last
    /// handle is dropped, so a reopen in the same process (a restart in tests, a
    /// `replay` right after `serve`) briefly retries a held lock before giving up.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with_options(path, StorageOptions::default())
    }

    /// [`open`](SledStorage::open) with the given memory bounds.
    pub fn open_with_options(path: impl AsRef<Path>, options: StorageOptions) -> Result<Self, LogError> {
        let config = sled::Config::new().path(path).cache_capacity(options.cache_bytes);
        let deadline = std::time::Instant::now() + LOCK_RETRY;
        loop {
            match config.open() {
                Ok(db) => {
                    let file = config.get_path().join(SNAPSHOT_FILE);
                    return Self::with_snapshot_file(db, Some(file), options);
                }
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens a database from an explicit sled configuration (cache size, temporary, ...).
    pub fn open_with(config: sled::Config) -> Result<Self, LogError> {
        let file = config.get_path().join(SNAPSHOT_FILE);
        Self::with_snapshot_file(config.open()?, Some(file), StorageOptions::default())
    }

    /// Uses an already opened database; the snapshot is kept in its `snapshots` tree
    /// (sled does not say where its directory is).
    pub fn from_db(db: Db) -> Result<Self, LogError> {
        Self::with_snapshot_file(db, None, StorageOptions::default())
    }

    fn with_snapshot_file(
        db: Db,
        snapshot_file: Option<PathBuf>,
        options: StorageOptions,
    ) -> Result<Self, LogError> {
        let events = db.open_tree("events")?;
        let index = db.open_tree(sled_index::TREE)?;
        let last_seq = last_seq_of(&events)?;
        let indexed = sled_index::repair(&index, last_seq, |from, visit| scan_tree(&events, from, visit))?;
        if indexed > 0 {
            db.flush()?;
        }
        tracing::debug!(last_seq, indexed, "opened sled log");
        Ok(SledStorage {
            meta: db.open_tree("meta")?,
            dead_letters: db.open_tree("dead_letters")?,
            snapshots: db.open_tree("snapshots")?,
            snapshot_file,
            events,
            index,
            db,
            append_lock: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            ids: RwLock::new(IdCache::new(options.id_cache_entries)),
        })
    }

    /// The underlying database (for tools and tests; writing to the log's trees directly
    /// bypasses every invariant).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db.size_on_disk()?)
    }

    /// How many event ids the in-memory cache holds now (at most
    /// [`StorageOptions::id_cache_entries`]).
    pub fn id_cache_len(&self) -> usize {
        self.read_ids().len()
    }

    fn read_ids(&self) -> std::sync::RwLockReadGuard<'_, IdCache> {
        self.ids.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The seq of `event_id`: from the cache, else from the disk index.
    fn lookup_id(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        if let Some(seq) = self.read_ids().get(event_id) {
            return Ok(Some(seq));
        }
        sled_index::seq_of(&self.index, event_id)
    }

    /// Flushes asynchronously (sled's `flush_async`), for callers outside [`crate::Log`].
    pub async fn flush_async(&self) -> Result<(), LogError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The key and value of the chunk that would hold `seq`: the one under the greatest
    /// key `<= seq` (which may end before `seq`).
    fn chunk_at_or_before(&self, seq: u64) -> Result<Option<(u64, IVec)>, LogError> {
        match self.events.range(..=codec::seq_key(seq)).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((codec::parse_seq("events", &k)?, v)))
            }
            None => Ok(None),
        }
    }

    /// The tree a meta key lives in, and the key in that tree.
    fn meta_tree<'k>(&self, key: &'k [u8]) -> (&Tree, &'k [u8]) {
        match key.strip_prefix(DEAD_LETTER_PREFIX) {
            Some(rest) => (&self.dead_letters, rest),
            None => (&self.meta, key),
        }
    }
}

impl Storage for SledStorage {
    fn append_checked(
        &self,
        events: &[Event],
        meta: &[MetaEntry],
        on_taken: &mut OnTaken<'_>,
    ) -> Result<Vec<Appended>, LogError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let last = self.last_seq.load(Ordering::Acquire);
        let results = plan_batch(events, last, |id| self.lookup_id(id), |seq| self.get(seq))?;
        let meta = with_taken_meta(meta, events, &results, on_taken);
        let meta = meta.as_ref();
        // Encode everything first: the write only inserts (and a transaction may be retried).
        let recorded: Vec<&Event> = events
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_recorded())
            .map(|(e, _)| e)
            .collect();
        let mut chunks = Vec::with_capacity(recorded.len().div_ceil(CHUNK_MAX_EVENTS));
        let mut first = last + 1;
        for part in recorded.chunks(CHUNK_MAX_EVENTS) {
            // A lone event is stored as its bare record (a chunk of one, 13 bytes shorter).
            let value = match part {
                [event] => codec::encode_event(event)?,
                _ => codec::encode_chunk(part.iter().copied())?,
            };
            chunks.push((codec::seq_key(first), value));
            first += part.len() as u64;
        }
        let new_last = last + recorded.len() as u64;
        let mut index_batch = sled::Batch::default();
        for (event, seq) in recorded.iter().zip(last + 1..) {
            sled_index::add(&mut index_batch, &event.event_id, &event.customer_id, seq);
        }
        sled_index::set_through(&mut index_batch, new_last);
        if meta.is_empty() {
            match chunks.as_slice() {
                [] => return Ok(results),
                [(key, chunk)] => {
                    self.events.insert(key, chunk.as_slice())?;
                }
                _ => {
                    let mut batch = sled::Batch::default();
                    for (key, chunk) in &chunks {
                        batch.insert(key, chunk.as_slice());
                    }
                    self.events.apply_batch(batch)?;
                }
            }
        } else {
            let outcome = (&self.events, &self.meta, &self.dead_letters).transaction(|(e, m, d)| {
                for (key, chunk) in &chunks {
                    e.insert(key, chunk.as_slice())?;
                }
                for (k, v) in meta {
                    match k.strip_prefix(DEAD_LETTER_PREFIX) {
                        Some(rest) => d.insert(rest, v.as_slice())?,
                        None => m.insert(k.as_slice(), v.as_slice())?,
                    };
                }
                Ok::<_, ConflictableTransactionError<LogError>>(())
            });
            outcome.map_err(|e| match e {
                TransactionError::Storage(e) => LogError::Sled(e),
                TransactionError::Abort(e) => e,
            })?;
        }
        if !recorded.is_empty() {
            // After the events, in the same flush: a crash in between leaves the index
            // behind the records, which the next open repairs from them.
            self.index.apply_batch(index_batch)?;
            self.ids
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(recorded.iter().copied(), last + 1);
        }
        self.last_seq.store(new_last, Ordering::Release);
        Ok(results)
    }

    fn flush(&self) -> Result<(), LogError> {
        self.db.flush()?;
        Ok(())
    }

    fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.last_seq.load(Ordering::Acquire))
    }

    fn get(&self, seq: u64) -> Result<Option<Event>, LogError> {
        let found = self.chunk_at_or_before(seq)?;
        event_in_chunk(found.as_ref().map(|(first, v)| (*first, &v[..])), seq)
    }

    fn scan_raw(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
        scan_tree(&self.events, from, visit)
    }

    fn visit_customer_events(&self, customer_id: &str, visit: &mut EventVisitor<'_>) -> Result<(), LogError> {
        let seqs = sled_index::customer_seqs(&self.index, customer_id)?;
        visit_indexed(customer_id, &seqs, |seq| self.chunk_at_or_before(seq), visit)
    }

    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        self.lookup_id(event_id)
    }

    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let (tree, key) = self.meta_tree(key);
        tree.insert(key, value)?;
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let (tree, key) = self.meta_tree(key);
        Ok(tree.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_with_prefix_limit(&self, prefix: &[u8], limit: usize) -> Result<Vec<MetaEntry>, LogError> {
        match prefix.strip_prefix(DEAD_LETTER_PREFIX) {
            Some(rest) => self
                .dead_letters
                .scan_prefix(rest)
                .take(limit)
                .map(|item| {
                    let (k, v) = item?;
                    Ok(([DEAD_LETTER_PREFIX, &k].concat(), v.to_vec()))
                })
                .collect(),
            None => {
                let mut all = self.meta_with_prefix(prefix)?;
                all.truncate(limit);
                Ok(all)
            }
        }
    }

    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, LogError> {
        meta_under(
            prefix,
            || {
                self.meta
                    .scan_prefix(prefix)
                    .map(|item| {
                        item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                            .map_err(LogError::from)
                    })
                    .collect()
            },
            |rest| {
                self.dead_letters
                    .scan_prefix(rest)
                    .map(|item| {
                        let (k, v) = item?;
                        Ok(([DEAD_LETTER_PREFIX, &k].concat(), v.to_vec()))
                    })
                    .collect()
            },
        )
    }

    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError> {
        let Some(path) = &self.snapshot_file else {
            self.snapshots.insert(SNAPSHOT_KEY, bytes)?;
            self.db.flush()?;
            return Ok(());
        };
        write_atomically(path, bytes).map_err(|source| LogError::SnapshotFile {
            path: path.display().to_string(),
            source,
        })?;
        // Drop the snapshot an older version kept in sled (no longer read), if any. Best
        // effort: it may be the very value sled cannot read.
        if !self.snapshots.is_empty()
            && let Err(error) = self.snapshots.clear()
        {
            tracing::debug!(%error, "could not clear the old snapshots tree");
        }
        Ok(())
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError> {
        let Some(path) = &self.snapshot_file else {
            return Ok(self.snapshots.get(SNAPSHOT_KEY)?.map(|v| v.to_vec()));
        };
        read_snapshot_file(path)
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old file or the
/// new one, never a mix: written beside it, synced, renamed over it, directory synced.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Visits the records of the `events` tree with seq >= `from`, in order.
fn scan_tree(events: &Tree, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
    // The chunk holding `from` may start before it.
    if let Some(item) = events.range(..=codec::seq_key(from)).next_back() {
        let (k, value) = item?;
        let first = codec::parse_seq("events", &k)?;
        if first < from && !visit_chunk(&codec::parse_chunk(first, &value)?, from, visit)? {
            return Ok(());
        }
    }
    for item in events.range(codec::seq_key(from)..) {
        let (k, v) = item?;
        let first = codec::parse_seq("events", &k)?;
        if !visit_chunk(&codec::parse_chunk(first, &v)?, first, visit)? {
            break;
        }
    }
    Ok(())
}

/// The last seq in the `events` tree (0 if empty), from its last chunk alone.
fn last_seq_of(events: &Tree) -> Result<u64, LogError> {
    match events.last()? {
        Some((k, v)) => {
            let first = codec::parse_seq("events", &k)?;
            Ok(codec::parse_chunk(first, &v)?.last_seq())
        }
        None => Ok(0),
    }
}

//! The fjall backend: the log in an LSM tree whose memory does not grow with the log.
//!
//! sled keeps a page table of every page of its database in memory and rebuilds it at
//! open, so its resident memory and its start time grow with the log's length, whatever
//! its cache is set to. fjall (an LSM tree) keeps in memory its write buffers, a block
//! cache of a configured size and, per table file, small filters and index blocks: what
//! a log of many millions of events costs is mostly on disk.
//!
//! The layout is sled's, in keyspaces instead of trees: `events` (big-endian seq of an
//! append's first event -> the chunk of that append's records, see
//! [`codec::encode_chunk`]; a lone event's bare record), `log_index` (the same keys as
//! sled's, see [`super::sled_index`]: ids, customers, `through`), `meta` and
//! `dead_letters` (meta keys under [`DEAD_LETTER_PREFIX`], without it). The projection
//! snapshot is the file [`SNAPSHOT_FILE`] in the database's directory, as with sled.
//!
//! An append is one fjall write batch over every keyspace it touches: its chunks, its
//! index entries, the new `through` and its meta entries are atomic together, so the
//! index can never fall behind the records (the open still checks `through` and
//! repairs from the records if it ever disagrees). Writes go to fjall's journal without
//! a sync; [`Storage::flush`] syncs the journal (`fsync`), which is the group commit's
//! one durable step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tact_core::Event;

use super::sled_index::{self, IdCache};
use super::sled_store::write_atomically;
use super::{
    Appended, DEAD_LETTER_PREFIX, EventVisitor, MetaEntry, OnTaken, RawVisitor, SNAPSHOT_FILE, Storage,
    StorageOptions, event_in_chunk, meta_under, plan_batch, read_snapshot_file, visit_chunk, visit_indexed,
    with_taken_meta,
};
use crate::codec;
use crate::error::LogError;
use crate::storage::WriteBuffers;

/// The most events one chunk holds (as with sled).
const CHUNK_MAX_EVENTS: usize = 1024;

/// How many records one batch of the index repair covers.
const REINDEX_BATCH: usize = 65_536;

/// How long [`FjallStorage::open`] retries a lock that another handle (being dropped,
/// in this process) still holds.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The write buffer (memtable) of the events and of the index, in bytes (fjall's
/// default is 64 MiB each); the meta keyspaces hold a few small values.
const MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;
const META_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// Opens (or creates) a fjall database in `path` with a block cache of `cache_bytes`;
/// `manual_persist`: writes stay in the process until `persist` (else each write batch
/// reaches the OS). A lock that another handle of this process is still releasing is
/// retried for [`LOCK_RETRY`] before `fjall::Error::Locked` is returned.
/// The most table files a fjall database keeps open (fjall's default is 900 a
/// database: the log and the audit together could then hold 1,800 descriptors, past
/// the common soft limit of 1,024, and a flush that cannot open its file fails the
/// store). Files past it are reopened when read.
pub const MAX_CACHED_FILES: usize = 128;

pub(crate) fn open_database(
    path: &Path,
    cache_bytes: u64,
    manual_persist: bool,
) -> Result<Database, fjall::Error> {
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        let opened = Database::builder(path)
            .cache_size(cache_bytes)
            .max_cached_files(Some(MAX_CACHED_FILES))
            .manual_journal_persist(manual_persist)
            .open();
        match opened {
            Err(fjall::Error::Locked) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The log in a fjall database. Cheap to share behind an `Arc`.
pub struct FjallStorage {
    db: Database,
    events: Keyspace,
    index: Keyspace,
    meta: Keyspace,
    dead_letters: Keyspace,
    snapshot_file: PathBuf,
    /// Serializes appends: seq assignment and the duplicate check happen before the
    /// write, which is safe because only appends write `events` and `log_index`.
    append_lock: Mutex<()>,
    last_seq: AtomicU64,
    /// Recently recorded ids; changed only under `append_lock`, after the write.
    ids: RwLock<IdCache>,
}

impl std::fmt::Debug for FjallStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStorage")
            .field("snapshot_file", &self.snapshot_file)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl FjallStorage {
    /// Opens (or creates) the database in directory `path` with the default caches.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with_options(path, StorageOptions::default())
    }

    /// [`open`](FjallStorage::open) with the given memory bounds (`cache_bytes` is
    /// fjall's block cache).
    pub fn open_with_options(path: impl AsRef<Path>, options: StorageOptions) -> Result<Self, LogError> {
        let path = path.as_ref();
        let db = open_database(path, options.cache_bytes, true).map_err(|e| match e {
            fjall::Error::Locked => LogError::Locked {
                path: path.display().to_string(),
            },
            e => e.into(),
        })?;
        let keyspace = |name: &str, memtable: u64| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let storage = FjallStorage {
            events: keyspace("events", MEMTABLE_BYTES)?,
            index: keyspace(sled_index::TREE, MEMTABLE_BYTES)?,
            meta: keyspace("meta", META_MEMTABLE_BYTES)?,
            dead_letters: keyspace("dead_letters", META_MEMTABLE_BYTES)?,
            snapshot_file: path.join(SNAPSHOT_FILE),
            db,
            append_lock: Mutex::new(()),
            last_seq: AtomicU64::new(0),
            ids: RwLock::new(IdCache::new(options.id_cache_entries)),
        };
        let last_seq = storage.last_seq_on_disk()?;
        storage.last_seq.store(last_seq, Ordering::Release);
        let indexed = storage.repair_index(last_seq)?;
        if indexed > 0 {
            storage.flush()?;
        }
        tracing::debug!(last_seq, indexed, "opened fjall log");
        Ok(storage)
    }

    /// Bytes the database uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db.disk_space()?)
    }

    /// How many event ids the in-memory cache holds now.
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
        self.index
            .get(sled_index::id_key(event_id))?
            .map(|v| codec::parse_seq(sled_index::TREE, &v))
            .transpose()
    }

    /// The last seq in `events` (0 if empty), from its last chunk alone.
    fn last_seq_on_disk(&self) -> Result<u64, LogError> {
        match self.events.last_key_value() {
            Some(guard) => {
                let (k, v) = guard.into_inner()?;
                let first = codec::parse_seq("events", &k)?;
                Ok(codec::parse_chunk(first, &v)?.last_seq())
            }
            None => Ok(0),
        }
    }

    fn through(&self) -> Result<Option<u64>, LogError> {
        self.index
            .get(sled_index::THROUGH)?
            .map(|v| codec::parse_seq(sled_index::TREE, &v))
            .transpose()
    }

    /// Brings the index in line with the records (appends write both atomically, so
    /// this finds nothing to do unless the index was damaged or removed).
    fn repair_index(&self, last: u64) -> Result<u64, LogError> {
        let from = match self.through()? {
            Some(through) if through == last => return Ok(0),
            Some(through) if through < last => {
                tracing::warn!(
                    through,
                    last_seq = last,
                    "the log index is behind the log: indexing its tail"
                );
                through + 1
            }
            Some(through) => {
                tracing::warn!(
                    through,
                    last_seq = last,
                    "the log index is ahead of the log: rebuilding it"
                );
                self.index.clear()?;
                1
            }
            None if last == 0 => {
                self.index.insert(sled_index::THROUGH, codec::seq_key(0))?;
                return Ok(0);
            }
            None => {
                tracing::warn!(
                    last_seq = last,
                    "the log index is missing: building it from the records"
                );
                self.index.clear()?;
                1
            }
        };
        let mut batch = self.db.batch();
        let mut done = 0u64;
        self.scan(from, &mut |seq, raw| {
            let (event_id, customer_id) = codec::decode_ids(seq, raw)?;
            batch.insert(&self.index, sled_index::id_key(event_id), codec::seq_key(seq));
            batch.insert(&self.index, sled_index::customer_key(customer_id, seq), []);
            done += 1;
            if batch.len() >= 2 * REINDEX_BATCH {
                batch.insert(&self.index, sled_index::THROUGH, codec::seq_key(seq));
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
            }
            Ok(true)
        })?;
        batch.insert(&self.index, sled_index::THROUGH, codec::seq_key(last));
        batch.commit()?;
        tracing::info!(records = done, last_seq = last, "log index up to date");
        Ok(done)
    }

    /// The key and value of the chunk that would hold `seq`: the one under the greatest
    /// key `<= seq` (which may end before `seq`).
    fn chunk_at_or_before(&self, seq: u64) -> Result<Option<(u64, fjall::UserValue)>, LogError> {
        match self.events.range(..=codec::seq_key(seq)).next_back() {
            Some(guard) => {
                let (k, v) = guard.into_inner()?;
                Ok(Some((codec::parse_seq("events", &k)?, v)))
            }
            None => Ok(None),
        }
    }

    /// Visits the records with seq >= `from`, in order.
    fn scan(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
        // The chunk holding `from` may start before it.
        if let Some((first, value)) = self.chunk_at_or_before(from)?
            && first < from
            && !visit_chunk(&codec::parse_chunk(first, &value)?, from, visit)?
        {
            return Ok(());
        }
        for guard in self.events.range(codec::seq_key(from)..) {
            let (k, v) = guard.into_inner()?;
            let first = codec::parse_seq("events", &k)?;
            if !visit_chunk(&codec::parse_chunk(first, &v)?, first, visit)? {
                break;
            }
        }
        Ok(())
    }

    /// The keyspace a meta key lives in, and the key in it.
    fn meta_keyspace<'k>(&self, key: &'k [u8]) -> (&Keyspace, &'k [u8]) {
        match key.strip_prefix(DEAD_LETTER_PREFIX) {
            Some(rest) => (&self.dead_letters, rest),
            None => (&self.meta, key),
        }
    }

    fn dead_letters_with_prefix(&self, rest: &[u8], limit: usize) -> Result<Vec<MetaEntry>, LogError> {
        self.dead_letters
            .prefix(rest)
            .take(limit)
            .map(|guard| {
                let (k, v) = guard.into_inner()?;
                Ok(([DEAD_LETTER_PREFIX, &k].concat(), v.to_vec()))
            })
            .collect()
    }
}

impl Storage for FjallStorage {
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
        let recorded: Vec<&Event> = events
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_recorded())
            .map(|(e, _)| e)
            .collect();
        if recorded.is_empty() && meta.is_empty() {
            return Ok(results);
        }
        let mut batch = self.db.batch();
        let mut first = last + 1;
        for part in recorded.chunks(CHUNK_MAX_EVENTS) {
            // A lone event is stored as its bare record (a chunk of one, 13 bytes shorter).
            let value = match part {
                [event] => codec::encode_event(event)?,
                _ => codec::encode_chunk(part.iter().copied())?,
            };
            batch.insert(&self.events, codec::seq_key(first), value);
            first += part.len() as u64;
        }
        let new_last = last + recorded.len() as u64;
        for (event, seq) in recorded.iter().zip(last + 1..) {
            batch.insert(
                &self.index,
                sled_index::id_key(&event.event_id),
                codec::seq_key(seq),
            );
            batch.insert(&self.index, sled_index::customer_key(&event.customer_id, seq), []);
        }
        if !recorded.is_empty() {
            batch.insert(&self.index, sled_index::THROUGH, codec::seq_key(new_last));
        }
        // One write per key, the last given (the items of one fjall batch share a seqno,
        // so two writes of a key in it would not say which is newer).
        for (i, (k, v)) in meta.iter().enumerate() {
            if meta[i + 1..].iter().any(|(later, _)| later == k) {
                continue;
            }
            let (keyspace, key) = self.meta_keyspace(k);
            batch.insert(keyspace, key, v.as_slice());
        }
        batch.commit()?;
        if !recorded.is_empty() {
            self.ids
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(recorded.iter().copied(), last + 1);
        }
        self.last_seq.store(new_last, Ordering::Release);
        Ok(results)
    }

    fn flush(&self) -> Result<(), LogError> {
        self.db.persist(PersistMode::SyncAll)?;
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
        self.scan(from, visit)
    }

    fn visit_customer_events(&self, customer_id: &str, visit: &mut EventVisitor<'_>) -> Result<(), LogError> {
        let prefix = sled_index::customer_prefix(customer_id);
        let mut seqs = Vec::new();
        for guard in self.index.prefix(&prefix) {
            let key = guard.key()?;
            // A longer id that merely starts with this one (and a 0x00) has another length.
            if let Some(seq) = codec::customer_key_seq(&key, prefix.len()) {
                seqs.push(seq);
            }
        }
        visit_indexed(customer_id, &seqs, |seq| self.chunk_at_or_before(seq), visit)
    }

    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        self.lookup_id(event_id)
    }

    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let (keyspace, key) = self.meta_keyspace(key);
        keyspace.insert(key, value)?;
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let (keyspace, key) = self.meta_keyspace(key);
        Ok(keyspace.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_with_prefix_limit(&self, prefix: &[u8], limit: usize) -> Result<Vec<MetaEntry>, LogError> {
        match prefix.strip_prefix(DEAD_LETTER_PREFIX) {
            Some(rest) => self.dead_letters_with_prefix(rest, limit),
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
                    .prefix(prefix)
                    .map(|guard| {
                        let (k, v) = guard.into_inner()?;
                        Ok((k.to_vec(), v.to_vec()))
                    })
                    .collect()
            },
            |rest| self.dead_letters_with_prefix(rest, usize::MAX),
        )
    }

    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError> {
        write_atomically(&self.snapshot_file, bytes).map_err(|source| LogError::SnapshotFile {
            path: self.snapshot_file.display().to_string(),
            source,
        })
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError> {
        read_snapshot_file(&self.snapshot_file)
    }

    fn write_buffers(&self) -> Option<WriteBuffers> {
        Some(WriteBuffers::bound_of_lsm(
            self.db.write_buffer_size(),
            2 * MEMTABLE_BYTES + 2 * META_MEMTABLE_BYTES,
        ))
    }
}

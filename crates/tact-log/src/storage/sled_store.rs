//! The sled backend.
//!
//! Trees: `events` (big-endian seq -> record), `index` (big-endian first seq of an
//! append -> index journal entry: the event and customer ids of the events it recorded,
//! see [`codec::encode_index_entry`]), `meta` (caller's keys) and `snapshots` (one
//! projection snapshot under `projection`).
//!
//! An append is one sled transaction of inserts only: its records, one index journal
//! entry and its meta entries. The idempotency index (event id -> seq) and the customer
//! index (customer id -> seqs) live in memory: they are loaded from the journal at open
//! and updated under the append lock once the transaction has committed. Sled costs
//! about the same per insert whatever its size, so this writes one key per event and one
//! per append instead of three per event.
//!
//! Databases written before the journal have per-event `ids` (event_id -> big-endian
//! seq) and `customers` (customer_id, 0x00, big-endian seq -> empty) trees; they are
//! read at open too and never written again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, Tree};
use tact_core::Event;

use super::{Appended, MetaEntry, RawVisitor, Storage, plan_batch};
use crate::codec;
use crate::error::LogError;

const SNAPSHOT_KEY: &[u8] = b"projection";

/// The in-memory indexes of the log.
#[derive(Default)]
struct Index {
    ids: HashMap<Box<str>, u64>,
    /// Each customer's seqs, ascending.
    customers: HashMap<Box<str>, Vec<u64>>,
}

impl Index {
    fn add(&mut self, event_id: &str, customer_id: &str, seq: u64) {
        self.ids.insert(event_id.into(), seq);
        match self.customers.get_mut(customer_id) {
            Some(seqs) => seqs.push(seq),
            None => {
                self.customers.insert(customer_id.into(), vec![seq]);
            }
        }
    }
}

/// How long [`SledStorage::open`] waits for a lock another handle is releasing.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The log in a sled database. Cheap to share behind an `Arc`.
pub struct SledStorage {
    db: Db,
    events: Tree,
    journal: Tree,
    meta: Tree,
    snapshots: Tree,
    /// Serializes appends: seq assignment and the duplicate check happen outside the
    /// transaction, which is safe because only appends write `events` and `index`.
    append_lock: Mutex<()>,
    last_seq: AtomicU64,
    /// Changed only under `append_lock`, after the transaction committed.
    index: RwLock<Index>,
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
        let config = sled::Config::new().path(path);
        let deadline = std::time::Instant::now() + LOCK_RETRY;
        loop {
            match config.open() {
                Ok(db) => return Self::from_db(db),
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
        Self::from_db(config.open()?)
    }

    /// Uses an already opened database.
    pub fn from_db(db: Db) -> Result<Self, LogError> {
        let events = db.open_tree("events")?;
        let last_seq = match events.last()? {
            Some((k, _)) => codec::parse_seq("events", &k)?,
            None => 0,
        };
        let journal = db.open_tree("index")?;
        let index = load_index(&db, &journal)?;
        tracing::debug!(last_seq, ids = index.ids.len(), "opened sled log");
        Ok(SledStorage {
            meta: db.open_tree("meta")?,
            snapshots: db.open_tree("snapshots")?,
            events,
            journal,
            db,
            append_lock: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            index: RwLock::new(index),
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

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes asynchronously (sled's `flush_async`), for callers outside [`crate::Log`].
    pub async fn flush_async(&self) -> Result<(), LogError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

impl Storage for SledStorage {
    fn append(&self, events: &[Event], meta: &[MetaEntry]) -> Result<Vec<Appended>, LogError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let last = self.last_seq.load(Ordering::Acquire);
        let results = {
            let index = self.read_index();
            plan_batch(events, last, |id| Ok::<_, LogError>(index.ids.get(id).copied()))?
        };
        // Encode everything first: the transaction only inserts (and may be retried).
        let mut records = Vec::new();
        let mut pairs = Vec::new();
        for (event, result) in events.iter().zip(&results) {
            if let Appended::Recorded { seq } = *result {
                records.push((codec::seq_key(seq), codec::encode_event(event)?));
                pairs.push((event.event_id.as_str(), event.customer_id.as_str()));
            }
        }
        let entry = if pairs.is_empty() {
            None
        } else {
            Some((codec::seq_key(last + 1), codec::encode_index_entry(&pairs)?))
        };
        if records.is_empty() && meta.is_empty() {
            return Ok(results);
        }
        let outcome = (&self.events, &self.journal, &self.meta).transaction(|(e, j, m)| {
            for (key, record) in &records {
                e.insert(key, record.as_slice())?;
            }
            if let Some((key, entry)) = &entry {
                j.insert(key, entry.as_slice())?;
            }
            for (k, v) in meta {
                m.insert(k.as_slice(), v.as_slice())?;
            }
            Ok::<_, ConflictableTransactionError<LogError>>(())
        });
        outcome.map_err(|e| match e {
            TransactionError::Storage(e) => LogError::Sled(e),
            TransactionError::Abort(e) => e,
        })?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let mut seq = last;
        for (event_id, customer_id) in pairs {
            seq += 1;
            index.add(event_id, customer_id, seq);
        }
        drop(index);
        self.last_seq.store(seq, Ordering::Release);
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
        self.events
            .get(codec::seq_key(seq))?
            .map(|raw| codec::decode_event(seq, &raw))
            .transpose()
    }

    fn scan_raw(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
        for item in self.events.range(codec::seq_key(from)..) {
            let (k, v) = item?;
            if !visit(codec::parse_seq("events", &k)?, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn customer_events(&self, customer_id: &str) -> Result<Vec<(u64, Event)>, LogError> {
        let seqs = self
            .read_index()
            .customers
            .get(customer_id)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let raw = self.events.get(codec::seq_key(seq))?;
            if let Some(event) = codec::decode_indexed("index", customer_id, seq, raw.as_deref())? {
                out.push((seq, event));
            }
        }
        Ok(out)
    }

    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        Ok(self.read_index().ids.get(event_id).copied())
    }

    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, LogError> {
        self.meta
            .scan_prefix(prefix)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(LogError::from)
            })
            .collect()
    }

    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError> {
        self.snapshots.insert(SNAPSHOT_KEY, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.snapshots.get(SNAPSHOT_KEY)?.map(|v| v.to_vec()))
    }
}

/// Loads the in-memory indexes: the per-event trees of older databases, then the
/// index journal.
fn load_index(db: &Db, journal: &Tree) -> Result<Index, LogError> {
    let mut index = Index::default();
    let names = db.tree_names();
    let legacy = names
        .iter()
        .any(|n| n.as_ref() == b"ids" || n.as_ref() == b"customers");
    if legacy {
        for item in db.open_tree("ids")?.iter() {
            let (k, v) = item?;
            let id = std::str::from_utf8(&k).map_err(|e| LogError::CorruptKey {
                tree: "ids",
                reason: format!("event id is not UTF-8: {e}"),
            })?;
            index.ids.insert(id.into(), codec::parse_seq("ids", &v)?);
        }
        for item in db.open_tree("customers")?.iter() {
            let (k, _) = item?;
            let bad = |reason: String| LogError::CorruptKey {
                tree: "customers",
                reason,
            };
            if k.len() < 9 || k[k.len() - 9] != 0 {
                return Err(bad(format!(
                    "key of {} bytes has no 0x00 separator before its seq",
                    k.len()
                )));
            }
            let (customer, seq) = k.split_at(k.len() - 9);
            let customer =
                std::str::from_utf8(customer).map_err(|e| bad(format!("customer id is not UTF-8: {e}")))?;
            let seq = codec::parse_seq("customers", &seq[1..])?;
            index.customers.entry(customer.into()).or_default().push(seq);
        }
    }
    for item in journal.iter() {
        let (k, v) = item?;
        let first = codec::parse_seq("index", &k)?;
        for (i, (event_id, customer_id)) in codec::decode_index_entry(first, &v)?.into_iter().enumerate() {
            index.add(&event_id, &customer_id, first + i as u64);
        }
    }
    if legacy {
        for seqs in index.customers.values_mut() {
            seqs.sort_unstable();
            seqs.dedup();
        }
    }
    Ok(index)
}

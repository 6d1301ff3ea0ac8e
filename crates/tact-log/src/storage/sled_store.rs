//! The sled backend.
//!
//! Trees: `events` (big-endian seq -> record), `ids` (event_id -> big-endian seq),
//! `customers` (customer_id, 0x00, big-endian seq -> empty), `meta` (caller's keys) and
//! `snapshots` (one projection snapshot under `projection`).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, IVec, Tree};
use tact_core::Event;

use super::{Appended, MetaEntry, RawVisitor, Storage, plan_batch};
use crate::codec;
use crate::error::LogError;

const SNAPSHOT_KEY: &[u8] = b"projection";

/// The log in a sled database. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SledStorage {
    db: Db,
    events: Tree,
    ids: Tree,
    customers: Tree,
    meta: Tree,
    snapshots: Tree,
    /// Serializes appends: seq assignment and the duplicate check read outside the
    /// transaction, which is safe because only appends write `events` and `ids`.
    append_lock: Mutex<()>,
    last_seq: AtomicU64,
}

impl SledStorage {
    /// Opens (or creates) the database in directory `path` with sled's defaults.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::from_db(sled::Config::new().path(path).open()?)
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
        tracing::debug!(last_seq, "opened sled log");
        Ok(SledStorage {
            ids: db.open_tree("ids")?,
            customers: db.open_tree("customers")?,
            meta: db.open_tree("meta")?,
            snapshots: db.open_tree("snapshots")?,
            events,
            db,
            append_lock: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
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
        // Everything happens inside the transaction: the duplicate lookups in `ids` land
        // in its read cache, where the insert of a new id finds them again for free.
        let outcome = (&self.events, &self.ids, &self.customers, &self.meta).transaction(|(e, i, c, m)| {
            let results = plan_batch(events, last, |id| match i.get(id.as_bytes())? {
                Some(v) => codec::parse_seq("ids", &v)
                    .map(Some)
                    .map_err(ConflictableTransactionError::Abort),
                None => Ok(None),
            })?;
            let mut record = Vec::with_capacity(256);
            for (event, result) in events.iter().zip(&results) {
                if let Appended::Recorded { seq } = *result {
                    record.clear();
                    codec::encode_event_into(event, &mut record)
                        .map_err(ConflictableTransactionError::Abort)?;
                    let key = codec::seq_key(seq);
                    e.insert(&key, record.as_slice())?;
                    i.insert(event.event_id.as_bytes(), &key)?;
                    c.insert(codec::customer_key(&event.customer_id, seq), IVec::default())?;
                }
            }
            for (k, v) in meta {
                m.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(results)
        });
        let results = outcome.map_err(|e| match e {
            TransactionError::Storage(e) => LogError::Sled(e),
            TransactionError::Abort(e) => e,
        })?;
        if let Some(seq) = results.iter().rev().find_map(|r| match r {
            Appended::Recorded { seq } => Some(*seq),
            Appended::Duplicate { .. } => None,
        }) {
            self.last_seq.store(seq, Ordering::Release);
        }
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
        let prefix = codec::customer_prefix(customer_id);
        let mut out = Vec::new();
        for item in self.customers.scan_prefix(&prefix) {
            let (k, _) = item?;
            let Some(seq) = codec::customer_key_seq(&k, prefix.len()) else {
                continue;
            };
            let raw = self
                .events
                .get(codec::seq_key(seq))?
                .ok_or_else(|| LogError::CorruptKey {
                    tree: "customers",
                    reason: format!("index names seq {seq}, which is not in the log"),
                })?;
            let event = codec::decode_event(seq, &raw)?;
            if event.customer_id == customer_id {
                out.push((seq, event));
            }
        }
        Ok(out)
    }

    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        self.ids
            .get(event_id.as_bytes())?
            .map(|v| codec::parse_seq("ids", &v))
            .transpose()
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

//! The in-memory backend: the same records and indexes as sled, in `BTreeMap`s.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tact_core::Event;

use super::{Appended, EventVisitor, MetaEntry, OnTaken, RawVisitor, Storage, plan_batch, with_taken_meta};
use crate::codec;
use crate::error::LogError;

/// How many records [`MemoryStorage::scan_raw`] copies out per read lock.
const SCAN_CHUNK: usize = 4096;

#[derive(Debug, Default)]
struct Inner {
    events: BTreeMap<u64, Arc<[u8]>>,
    ids: BTreeMap<String, u64>,
    customers: BTreeMap<Vec<u8>, ()>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
    snapshot: Option<Vec<u8>>,
}

/// A log that lives in memory: for tests and for running without a disk. Writes are
/// "durable" as soon as they are made. Records are encoded exactly as on sled, so
/// replay costs and corruption checks are the same (one record per seq: no chunks).
/// Dead letters ([`super::DEAD_LETTER_PREFIX`]) are kept with the rest of the meta.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    inner: RwLock<Inner>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the raw record at `seq` (tests of corruption handling).
    #[doc(hidden)]
    pub fn put_raw_record(&self, seq: u64, record: &[u8]) {
        self.write().events.insert(seq, record.into());
    }
}

impl Storage for MemoryStorage {
    fn append_checked(
        &self,
        events: &[Event],
        meta: &[MetaEntry],
        on_taken: &mut OnTaken<'_>,
    ) -> Result<Vec<Appended>, LogError> {
        let mut inner = self.write();
        let last = inner.events.last_key_value().map_or(0, |(k, _)| *k);
        let results = plan_batch(
            events,
            last,
            |id| Ok::<_, LogError>(inner.ids.get(id).copied()),
            |seq| {
                inner
                    .events
                    .get(&seq)
                    .map(|raw| codec::decode_event(seq, raw))
                    .transpose()
            },
        )?;
        let meta = with_taken_meta(meta, events, &results, on_taken);
        let meta = meta.as_ref();
        // Encode everything first: a failure leaves the log untouched.
        let mut records = Vec::with_capacity(events.len());
        for (event, result) in events.iter().zip(&results) {
            if let Appended::Recorded { seq } = *result {
                records.push((seq, event, Arc::<[u8]>::from(codec::encode_event(event)?)));
            }
        }
        for (seq, event, record) in records {
            inner.events.insert(seq, record);
            inner.ids.insert(event.event_id.clone(), seq);
            inner
                .customers
                .insert(codec::customer_key(&event.customer_id, seq), ());
        }
        for (k, v) in meta {
            inner.meta.insert(k.clone(), v.clone());
        }
        Ok(results)
    }

    fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.read().events.last_key_value().map_or(0, |(k, _)| *k))
    }

    fn get(&self, seq: u64) -> Result<Option<Event>, LogError> {
        let raw = self.read().events.get(&seq).cloned();
        raw.map(|raw| codec::decode_event(seq, &raw)).transpose()
    }

    fn scan_raw(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
        let mut next = from;
        let mut chunk: Vec<(u64, Arc<[u8]>)> = Vec::with_capacity(SCAN_CHUNK);
        loop {
            chunk.clear();
            {
                let inner = self.read();
                chunk.extend(
                    inner
                        .events
                        .range(next..)
                        .take(SCAN_CHUNK)
                        .map(|(k, v)| (*k, Arc::clone(v))),
                );
            }
            for (seq, raw) in &chunk {
                if !visit(*seq, raw)? {
                    return Ok(());
                }
            }
            match chunk.last() {
                Some((last, _)) if chunk.len() == SCAN_CHUNK => next = last + 1,
                _ => return Ok(()),
            }
        }
    }

    fn visit_customer_events(&self, customer_id: &str, visit: &mut EventVisitor<'_>) -> Result<(), LogError> {
        let prefix = codec::customer_prefix(customer_id);
        let raws: Vec<(u64, Option<Arc<[u8]>>)> = {
            let inner = self.read();
            inner
                .customers
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, _)| codec::customer_key_seq(k, prefix.len()))
                .map(|seq| (seq, inner.events.get(&seq).cloned()))
                .collect()
        };
        for (seq, raw) in raws {
            if let Some(event) = codec::decode_indexed("customers", customer_id, seq, raw.as_deref())? {
                visit(seq, event)?;
            }
        }
        Ok(())
    }

    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        Ok(self.read().ids.get(event_id).copied())
    }

    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        self.write().meta.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.read().meta.get(key).cloned())
    }

    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, LogError> {
        Ok(self
            .read()
            .meta
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn meta_with_prefix_limit(&self, prefix: &[u8], limit: usize) -> Result<Vec<MetaEntry>, LogError> {
        Ok(self
            .read()
            .meta
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError> {
        self.write().snapshot = Some(bytes.to_vec());
        Ok(())
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.read().snapshot.clone())
    }
}

//! The sled backend's disk indexes: event id -> seq (idempotency) and customer id ->
//! seqs (a customer's events), in one tree, `log_index`, plus a bounded in-memory cache
//! of recently recorded ids.
//!
//! Keys of `log_index`:
//! - `b'i'` + event id -> the event's seq (8 bytes, big-endian);
//! - `b'c'` + [`codec::customer_key`] (customer id, 0x00, big-endian seq) -> empty;
//! - `b's'` (alone) -> `through`: the last seq whose events are indexed.
//!
//! Each append writes its index entries and the new `through` as one sled batch on this
//! one tree (atomic: after a crash all of it is there or none), right after the events
//! and under the same append lock, so the same flush makes both durable. The index is
//! derived from the records, so it can always be repaired from them: at open,
//! `through < last seq` (a crash between the two writes, or events appended by a
//! version without these indexes) indexes the tail after `through`; `through > last
//! seq` (index durable, events not: sled recovering out of order) rebuilds the index
//! from the whole log. Only then does the log accept appends.

use std::collections::HashMap;
use std::mem;

use sled::{Batch, Tree};
use tact_core::Event;

use super::RawVisitor;
use crate::codec;
use crate::error::LogError;

/// The name of the index tree (`index` was an older layout's journal: never reused).
pub(super) const TREE: &str = "log_index";

const ID: u8 = b'i';
const CUSTOMER: u8 = b'c';
pub(super) const THROUGH: &[u8] = b"s";

/// How many records one batch of [`reindex`] covers.
const REINDEX_BATCH: usize = 65_536;

pub(super) fn id_key(event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + event_id.len());
    key.push(ID);
    key.extend_from_slice(event_id.as_bytes());
    key
}

pub(super) fn customer_prefix(customer_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(customer_id.len() + 10);
    key.push(CUSTOMER);
    key.extend_from_slice(&codec::customer_prefix(customer_id));
    key
}

pub(super) fn customer_key(customer_id: &str, seq: u64) -> Vec<u8> {
    let mut key = customer_prefix(customer_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Adds the index entries of the event at `seq` to `batch`.
pub(super) fn add(batch: &mut Batch, event_id: &str, customer_id: &str, seq: u64) {
    batch.insert(id_key(event_id), &codec::seq_key(seq));
    batch.insert(customer_key(customer_id, seq), &[]);
}

/// Records in `batch` that every seq up to `seq` is indexed.
pub(super) fn set_through(batch: &mut Batch, seq: u64) {
    batch.insert(THROUGH, &codec::seq_key(seq));
}

/// The seq stored for `event_id`, if any.
pub(super) fn seq_of(tree: &Tree, event_id: &str) -> Result<Option<u64>, LogError> {
    tree.get(id_key(event_id))?
        .map(|v| codec::parse_seq(TREE, &v))
        .transpose()
}

/// A customer's seqs, ascending.
pub(super) fn customer_seqs(tree: &Tree, customer_id: &str) -> Result<Vec<u64>, LogError> {
    let prefix = customer_prefix(customer_id);
    let mut seqs = Vec::new();
    for item in tree.scan_prefix(&prefix) {
        let (key, _) = item?;
        // A longer id that merely starts with this one (and a 0x00) has another length.
        if let Some(seq) = codec::customer_key_seq(&key, prefix.len()) {
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

fn through(tree: &Tree) -> Result<Option<u64>, LogError> {
    tree.get(THROUGH)?.map(|v| codec::parse_seq(TREE, &v)).transpose()
}

/// Brings the index in line with the records at open (see the module docs); `last` is
/// the last seq in `events`. Returns how many records were indexed.
pub(super) fn repair(
    index: &Tree,
    last: u64,
    scan: impl FnOnce(u64, &mut RawVisitor<'_>) -> Result<(), LogError>,
) -> Result<u64, LogError> {
    let from = match through(index)? {
        Some(through) if through == last => return Ok(0),
        Some(through) if through < last => {
            tracing::info!(through, last_seq = last, "indexing the log's tail");
            through + 1
        }
        Some(through) => {
            tracing::warn!(
                through,
                last_seq = last,
                "the log index is ahead of the log: rebuilding it from the records"
            );
            index.clear()?;
            1
        }
        None if last == 0 => {
            index.clear()?;
            index.insert(THROUGH, &codec::seq_key(0))?;
            return Ok(0);
        }
        None => {
            tracing::info!(last_seq = last, "building the log index from the records (once)");
            index.clear()?;
            1
        }
    };
    let mut batch = Batch::default();
    let mut in_batch = 0usize;
    let mut done = 0u64;
    scan(from, &mut |seq, raw| {
        let (event_id, customer_id) = codec::decode_ids(seq, raw)?;
        add(&mut batch, event_id, customer_id, seq);
        in_batch += 1;
        done += 1;
        if in_batch >= REINDEX_BATCH {
            set_through(&mut batch, seq);
            index.apply_batch(mem::take(&mut batch))?;
            in_batch = 0;
        }
        Ok(true)
    })?;
    set_through(&mut batch, last);
    index.apply_batch(batch)?;
    tracing::info!(records = done, last_seq = last, "log index up to date");
    Ok(done)
}

/// The event ids recorded most recently and their seqs, at most `capacity` of them: two
/// generations of `capacity / 2`, the older dropped whole when the younger fills (a
/// cheap approximation of least-recently-recorded). Redeliveries are mostly of recent
/// events, so most duplicates are found here; anything else is looked up on disk.
#[derive(Debug, Default)]
pub(super) struct IdCache {
    half: usize,
    young: HashMap<Box<str>, u64>,
    old: HashMap<Box<str>, u64>,
}

impl IdCache {
    pub(super) fn new(capacity: usize) -> Self {
        IdCache {
            half: capacity / 2,
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    pub(super) fn get(&self, event_id: &str) -> Option<u64> {
        self.young
            .get(event_id)
            .or_else(|| self.old.get(event_id))
            .copied()
    }

    pub(super) fn insert(&mut self, event_id: &str, seq: u64) {
        if self.half == 0 {
            return;
        }
        if self.young.len() >= self.half {
            self.old = mem::take(&mut self.young);
            self.young.reserve(self.half.min(1 << 16));
        }
        self.young.insert(event_id.into(), seq);
    }

    pub(super) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Remembers the ids of the events just recorded at `first..`.
    pub(super) fn extend<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>, first: u64) {
        for (event, seq) in events.into_iter().zip(first..) {
            self.insert(&event.event_id, seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_the_newest_ids() {
        let mut cache = IdCache::new(10);
        for i in 0..1000u64 {
            cache.insert(&format!("e{i}"), i);
            assert!(cache.len() <= 10);
        }
        assert_eq!(cache.get("e999"), Some(999));
        assert_eq!(cache.get("e995"), Some(995));
        assert_eq!(cache.get("e0"), None);
    }

    #[test]
    fn a_cache_of_zero_holds_nothing() {
        let mut cache = IdCache::new(0);
        cache.insert("e", 1);
        assert_eq!(cache.get("e"), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn keys_of_ids_and_customers_do_not_overlap() {
        assert_ne!(id_key("s"), THROUGH);
        assert_ne!(customer_prefix("")[..1], id_key("")[..]);
        let key = customer_key("ab", 7);
        assert_eq!(
            codec::customer_key_seq(&key, customer_prefix("ab").len()),
            Some(7)
        );
        assert_eq!(codec::customer_key_seq(&key, customer_prefix("a").len()), None);
    }
}

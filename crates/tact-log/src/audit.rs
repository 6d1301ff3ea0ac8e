//! The decision audit: one record per decision tact answered, kept beside the event
//! log, never in it (a decision changes no state, so it is not an event: replay and
//! backtest never see these records).
//!
//! - [`AuditRecord`]: what was asked, by whom, when, and what was answered, with the
//!   structured facts behind each reason (the sentences are rendered from them by
//!   `Reason::message`, exactly as the answer was).
//! - [`AuditStore`]: the store, sync and object-safe, with two indexes so that both
//!   reads are cheap and bounded: by decision id and by (customer, time).
//!   [`SledAudit`] keeps it in a sled database of its own (`<data_dir>/audit`);
//!   [`MemoryAudit`] in memory.
//!
//! Record layout: `[version u8][crc32 u32 BE][bincode 2 of AuditRecord]`, like event
//! records. Keys (sled trees):
//!
//! - `audit`: `time key(answered_at)` ++ decision id → record. Time-ordered, so
//!   retention prunes a prefix.
//! - `audit_ids`: decision id → `time key` (find the record).
//! - `audit_customers`: customer id ++ 0x00 ++ `time key` ++ decision id → nothing
//!   (a customer's decisions, newest first, by a reverse range scan).
//!
//! A time key is the instant's milliseconds with the sign bit flipped, big-endian, so
//! keys sort in time order. Writes go to `audit` first and prunes remove the indexes
//! first, so an interrupted write or prune leaves at most a record no index names,
//! which the next prune removes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use tact_core::{Decision, Proposal, Timestamp};

use crate::codec::decode_bounded;

/// The current audit record format.
pub const AUDIT_RECORD_VERSION: u8 = 1;
const HEADER: usize = 5;
/// The longest decision id a store accepts as a key (tact's own are 33 bytes).
pub const MAX_DECISION_ID_BYTES: usize = 128;

/// Which call answered a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditMethod {
    Decide,
    Authorize,
    DecideBatch,
    DecideStream,
}

impl AuditMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMethod::Decide => "Decide",
            AuditMethod::Authorize => "Authorize",
            AuditMethod::DecideBatch => "DecideBatch",
            AuditMethod::DecideStream => "DecideStream",
        }
    }
}

/// One decision as tact answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub decision_id: String,
    /// When tact answered (the server's clock).
    pub answered_at: Timestamp,
    /// The instant the decision was taken for (the request's `at`, else `answered_at`).
    pub at: Timestamp,
    /// True when the caller asked about `at` (`DecideRequest.at` was set).
    pub at_requested: bool,
    pub method: AuditMethod,
    /// What was asked: customer, channel, purpose, campaign, requested_by (as stamped
    /// with the client for `Authorize`).
    pub proposal: Proposal,
    /// The authenticated client that asked; `None` in unauthenticated mode.
    pub client: Option<String>,
    /// The answer: verdict, not_before, reasons (rule id, effect, facts), alternatives.
    pub decision: Decision,
    pub policy_version: String,
    pub log_position: u64,
}

/// Why the audit store failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("audit record {decision_id} does not encode: {source}")]
    Encode {
        decision_id: String,
        #[source]
        source: bincode::error::EncodeError,
    },
    #[error("corrupt audit record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Encodes a record (versioned, checksummed).
pub fn encode_record(record: &AuditRecord, buf: &mut Vec<u8>) -> Result<(), AuditError> {
    let start = buf.len();
    buf.extend_from_slice(&[AUDIT_RECORD_VERSION, 0, 0, 0, 0]);
    bincode::serde::encode_into_std_write(record, buf, bincode::config::standard()).map_err(|source| {
        AuditError::Encode {
            decision_id: record.decision_id.clone(),
            source,
        }
    })?;
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start + 1..start + HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Decodes a record; `key` names it in errors.
pub fn decode_record(key: &[u8], bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    let corrupt = |reason: String| AuditError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(format!("{} bytes, shorter than the header", bytes.len())));
    }
    if bytes[0] != AUDIT_RECORD_VERSION {
        return Err(corrupt(format!("unknown format version {}", bytes[0])));
    }
    let stored = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[HEADER..];
    if crc32fast::hash(payload) != stored {
        return Err(corrupt("crc mismatch".into()));
    }
    let (record, read) =
        decode_bounded::<AuditRecord>(payload).map_err(|e| corrupt(format!("does not decode: {e}")))?;
    if read != payload.len() {
        return Err(corrupt(format!("{} trailing bytes", payload.len() - read)));
    }
    Ok(record)
}

/// An instant as a key that sorts in time order.
pub fn time_key(t: Timestamp) -> [u8; 8] {
    ((t.0 as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_of_key(k: &[u8]) -> Option<Timestamp> {
    let arr: [u8; 8] = k.get(..8)?.try_into().ok()?;
    Some(Timestamp((u64::from_be_bytes(arr) ^ (1 << 63)) as i64))
}

/// Where a page of a customer's decisions ends: the (answered_at, decision id) of its
/// last (oldest) record. The next page starts strictly before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub answered_at: Timestamp,
    pub decision_id: String,
}

impl Cursor {
    /// An opaque token: hex of the time key and the id.
    pub fn to_token(&self) -> String {
        let mut bytes = time_key(self.answered_at).to_vec();
        bytes.extend_from_slice(self.decision_id.as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`to_token`](Cursor::to_token); `None` for anything else.
    pub fn from_token(token: &str) -> Option<Cursor> {
        if !token.len().is_multiple_of(2) || token.len() > 2 * (8 + MAX_DECISION_ID_BYTES) || token.len() < 18
        {
            return None;
        }
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let answered_at = time_of_key(&bytes)?;
        let decision_id = String::from_utf8(bytes[8..].to_vec()).ok()?;
        Some(Cursor {
            answered_at,
            decision_id,
        })
    }
}

/// A customer's decisions answered in `[from, to)`, newest first, at most `limit`,
/// strictly before `after` when given (the previous page's cursor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
    pub after: Option<Cursor>,
}

/// The decision audit's store. Writes need not be durable until [`flush`](AuditStore::flush).
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// Stores records (a record whose decision id is already stored replaces nothing).
    fn write(&self, records: &[AuditRecord]) -> Result<(), AuditError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), AuditError>;
    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError>;
    fn list(&self, query: &ListQuery) -> Result<Vec<AuditRecord>, AuditError>;
    /// Removes up to `max` records answered before `before`, oldest first; how many.
    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError>;
    /// How many records are stored (counts them: for tests and tools).
    fn count(&self) -> Result<usize, AuditError>;
}

fn primary_key(r: &AuditRecord) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + r.decision_id.len());
    k.extend_from_slice(&time_key(r.answered_at));
    k.extend_from_slice(r.decision_id.as_bytes());
    k
}

fn customer_key(customer_id: &str, t: Timestamp, decision_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(customer_id.len() + 9 + decision_id.len());
    k.extend_from_slice(customer_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&time_key(t));
    k.extend_from_slice(decision_id.as_bytes());
    k
}

/// The audit in a sled database of its own.
#[derive(Clone, Debug)]
pub struct SledAudit {
    db: sled::Db,
    records: sled::Tree,
    ids: sled::Tree,
    customers: sled::Tree,
}

impl SledAudit {
    pub fn open(path: impl AsRef<Path>) -> Result<SledAudit, AuditError> {
        let db = sled::Config::new().path(path.as_ref()).open()?;
        Self::with_db(db)
    }

    /// The audit in the trees of an open sled database.
    pub fn with_db(db: sled::Db) -> Result<SledAudit, AuditError> {
        Ok(SledAudit {
            records: db.open_tree("audit")?,
            ids: db.open_tree("audit_ids")?,
            customers: db.open_tree("audit_customers")?,
            db,
        })
    }

    fn decode_at(&self, key: &[u8]) -> Result<Option<AuditRecord>, AuditError> {
        match self.records.get(key)? {
            Some(v) => decode_record(key, &v).map(Some),
            None => Ok(None),
        }
    }
}

impl AuditStore for SledAudit {
    fn write(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let mut primary = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut customers = sled::Batch::default();
        let mut buf = Vec::with_capacity(512);
        for r in records {
            if r.decision_id.is_empty() || r.decision_id.len() > MAX_DECISION_ID_BYTES {
                continue;
            }
            buf.clear();
            encode_record(r, &mut buf)?;
            primary.insert(primary_key(r), buf.as_slice());
            ids.insert(r.decision_id.as_bytes(), &time_key(r.answered_at));
            customers.insert(
                customer_key(&r.proposal.customer_id, r.answered_at, &r.decision_id),
                &[],
            );
        }
        self.records.apply_batch(primary)?;
        self.ids.apply_batch(ids)?;
        self.customers.apply_batch(customers)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.db.flush()?;
        Ok(())
    }

    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError> {
        if decision_id.is_empty() || decision_id.len() > MAX_DECISION_ID_BYTES {
            return Ok(None);
        }
        let Some(t) = self.ids.get(decision_id.as_bytes())? else {
            return Ok(None);
        };
        let mut key = t.to_vec();
        key.extend_from_slice(decision_id.as_bytes());
        self.decode_at(&key)
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let prefix_len = q.customer_id.len() + 1;
        let lo = customer_key(&q.customer_id, q.from, "");
        let hi = match &q.after {
            Some(c) if c.answered_at < q.to => customer_key(&q.customer_id, c.answered_at, &c.decision_id),
            _ => customer_key(&q.customer_id, q.to, ""),
        };
        let mut out = Vec::with_capacity(q.limit.min(1024));
        if lo >= hi {
            return Ok(out);
        }
        for entry in self.customers.range(lo..hi).rev() {
            if out.len() >= q.limit {
                break;
            }
            let (k, _) = entry?;
            let Some(rest) = k.get(prefix_len..) else { continue };
            if rest.len() < 8 {
                continue;
            }
            if let Some(r) = self.decode_at(rest)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
        let end = time_key(before);
        let mut keys = Vec::new();
        let mut ids = sled::Batch::default();
        let mut customers = sled::Batch::default();
        for entry in self.records.range(..end.to_vec()).take(max) {
            let (k, v) = entry?;
            if let Ok(r) = decode_record(&k, &v) {
                ids.remove(r.decision_id.as_bytes());
                customers.remove(customer_key(
                    &r.proposal.customer_id,
                    r.answered_at,
                    &r.decision_id,
                ));
            } else if let Some(id) = k.get(8..) {
                // A record that does not decode still goes; its customer entry, if any,
                // names a record no longer there and is skipped by `list`.
                ids.remove(id);
            }
            keys.push(k);
        }
        self.ids.apply_batch(ids)?;
        self.customers.apply_batch(customers)?;
        let mut primary = sled::Batch::default();
        for k in &keys {
            primary.remove(k.clone());
        }
        self.records.apply_batch(primary)?;
        Ok(keys.len())
    }

    fn count(&self) -> Result<usize, AuditError> {
        Ok(self.records.len())
    }
}

/// The audit in memory (no data directory; tests).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    inner: RwLock<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: BTreeMap<Vec<u8>, AuditRecord>,
    ids: HashMap<String, Vec<u8>>,
    customers: BTreeSet<Vec<u8>>,
}

impl MemoryAudit {
    pub fn new() -> Self {
        Self::default()
    }
}

impl AuditStore for MemoryAudit {
    fn write(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for r in records {
            if r.decision_id.is_empty() || r.decision_id.len() > MAX_DECISION_ID_BYTES {
                continue;
            }
            let key = primary_key(r);
            m.ids.insert(r.decision_id.clone(), key.clone());
            m.customers.insert(customer_key(
                &r.proposal.customer_id,
                r.answered_at,
                &r.decision_id,
            ));
            m.records.insert(key, r.clone());
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }

    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError> {
        let m = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok(m.ids.get(decision_id).and_then(|k| m.records.get(k)).cloned())
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let m = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let prefix_len = q.customer_id.len() + 1;
        let lo = customer_key(&q.customer_id, q.from, "");
        let hi = match &q.after {
            Some(c) if c.answered_at < q.to => customer_key(&q.customer_id, c.answered_at, &c.decision_id),
            _ => customer_key(&q.customer_id, q.to, ""),
        };
        if lo >= hi {
            return Ok(Vec::new());
        }
        Ok(m.customers
            .range(lo..hi)
            .rev()
            .filter_map(|k| m.records.get(&k[prefix_len..]))
            .take(q.limit)
            .cloned()
            .collect())
    }

    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let end = time_key(before).to_vec();
        let keys: Vec<Vec<u8>> = m.records.range(..end).take(max).map(|(k, _)| k.clone()).collect();
        for k in &keys {
            if let Some(r) = m.records.remove(k) {
                m.ids.remove(&r.decision_id);
                m.customers.remove(&customer_key(
                    &r.proposal.customer_id,
                    r.answered_at,
                    &r.decision_id,
                ));
            }
        }
        Ok(keys.len())
    }

    fn count(&self) -> Result<usize, AuditError> {
        Ok(self.inner.read().unwrap_or_else(|p| p.into_inner()).records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tact_core::{Channel, Purpose, Verdict};

    fn record(id: &str, customer: &str, t: i64) -> AuditRecord {
        AuditRecord {
            decision_id: id.into(),
            answered_at: Timestamp(t),
            at: Timestamp(t),
            at_requested: false,
            method: AuditMethod::Decide,
            proposal: Proposal {
                customer_id: customer.into(),
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign_id: "c".into(),
                requested_by: "r".into(),
            },
            client: None,
            decision: Decision {
                verdict: Verdict::Allow,
                not_before: None,
                reasons: Vec::new(),
                alternatives: Vec::new(),
            },
            policy_version: "v".into(),
            log_position: 3,
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let r = record("d1", "c1", -5);
        let mut buf = Vec::new();
        encode_record(&r, &mut buf).unwrap();
        assert_eq!(decode_record(b"k", &buf).unwrap(), r);
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_record(b"k", &bad).is_err());
        assert!(decode_record(b"k", &buf[..3]).is_err());
    }

    #[test]
    fn time_keys_sort_in_time_order() {
        let ts = [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(time_key(Timestamp(w[0])) < time_key(Timestamp(w[1])));
        }
        assert_eq!(time_of_key(&time_key(Timestamp(-7))), Some(Timestamp(-7)));
    }

    #[test]
    fn cursor_tokens_round_trip_and_junk_is_refused() {
        let c = Cursor {
            answered_at: Timestamp(1_700_000_000_000),
            decision_id: "d00ff".into(),
        };
        assert_eq!(Cursor::from_token(&c.to_token()), Some(c));
        for junk in ["", "zz", "0", &"a".repeat(10_000), "00000000000000000"] {
            assert_eq!(Cursor::from_token(junk), None, "{junk}");
        }
    }

    fn exercise(store: &dyn AuditStore) {
        let mut rs = Vec::new();
        for i in 0..10 {
            rs.push(record(&format!("d{i}"), "c1", 100 + i));
        }
        rs.push(record("x", "c10", 105));
        rs.push(record("y", "c", 105));
        store.write(&rs).unwrap();
        assert_eq!(store.get("d3").unwrap().unwrap(), rs[3]);
        assert_eq!(store.get("nope").unwrap(), None);
        let q = |from, to, limit, after| ListQuery {
            customer_id: "c1".into(),
            from: Timestamp(from),
            to: Timestamp(to),
            limit,
            after,
        };
        let all = store.list(&q(0, 1000, 100, None)).unwrap();
        let ids: Vec<_> = all.iter().map(|r| r.decision_id.as_str()).collect();
        assert_eq!(ids, ["d9", "d8", "d7", "d6", "d5", "d4", "d3", "d2", "d1", "d0"]);
        let page = store.list(&q(102, 108, 2, None)).unwrap();
        assert_eq!(
            page.iter().map(|r| r.decision_id.as_str()).collect::<Vec<_>>(),
            ["d7", "d6"]
        );
        let cursor = Cursor {
            answered_at: page[1].answered_at,
            decision_id: page[1].decision_id.clone(),
        };
        let next = store.list(&q(102, 108, 10, Some(cursor))).unwrap();
        assert_eq!(
            next.iter().map(|r| r.decision_id.as_str()).collect::<Vec<_>>(),
            ["d5", "d4", "d3", "d2"]
        );
        assert!(store.list(&q(500, 100, 10, None)).unwrap().is_empty());
        assert_eq!(store.prune(Timestamp(105), 3).unwrap(), 3);
        assert_eq!(store.prune(Timestamp(105), 100).unwrap(), 2);
        assert_eq!(store.get("d4").unwrap(), None);
        assert!(store.get("d5").unwrap().is_some());
        assert_eq!(store.list(&q(0, 1000, 100, None)).unwrap().len(), 5);
        assert_eq!(store.count().unwrap(), 7);
    }

    #[test]
    fn memory_store_indexes_and_prunes() {
        exercise(&MemoryAudit::new());
    }

    #[test]
    fn sled_store_indexes_and_prunes() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        exercise(&SledAudit::with_db(db).unwrap());
    }
}

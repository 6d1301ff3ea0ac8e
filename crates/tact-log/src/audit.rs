//! The decision audit: one record per decision tact answered, kept beside the event
//! log, never in it (a decision changes no state, so it is not an event: replay and
//! backtest never see these records).
//!
//! - [`DecisionId`]: a decision id, `d` and 32 lowercase hex digits: the first 12 are
//!   the millisecond the decision was made (its `answered_at`), the other 20 are random
//!   (80 bits). The store finds a record from its id alone, with no index of ids.
//! - [`AuditRecord`]: what was asked, by whom, when, and what was answered, with the
//!   structured facts behind each reason and the level of detail the answer was given
//!   at (the sentences are rendered from the facts by `Reason::message`, exactly as
//!   the answer was).
//! - [`RecordBatch`]: records encoded for the store, many in one buffer, straight from
//!   borrowed parts ([`RecordParts`]: the decision as answered, no copy of it).
//! - [`AuditStore`]: the store, sync and object-safe: by decision id and by (customer,
//!   time), both cheap and bounded. [`FjallAudit`] keeps it in a fjall database of its
//!   own (`<data_dir>/audit`, the default), [`SledAudit`] in a sled one (audits written
//!   before fjall), [`MemoryAudit`] in memory.
//!
//! # Layout (format 2)
//!
//! An entry is one record: `[decision id: 16 bytes][customer id length u16 LE][customer
//! id][body length u32 LE][body: bincode 2 of the rest of the record]`. Records are
//! stored in groups, at most [`MAX_GROUP_RECORDS`] records answered in the same
//! millisecond, one sled value each: `[format u8][crc32 u32 BE of the rest][record
//! count u16 LE][entries]`. Two sled trees:
//!
//! - `audit_groups`: the binary id of the group's first (smallest) record → group. An
//!   id starts with its millisecond, big-endian, so groups sort in time order:
//!   `GetDecision` reads the groups of the id's millisecond (a prefix scan of a few
//!   keys, usually one), retention prunes a prefix of whole groups.
//! - `audit_customer_groups`: customer id ++ 0x00 ++ binary decision id → the key of
//!   its group (a customer's decisions, newest first, by a reverse range scan).
//!
//! The default tree holds `audit_format` = 2. A database with records of format 1
//! (one record per key, and an index of ids) is refused with [`AuditError::OldFormat`]:
//! format 1 ids carry no time, so they could not be found without that index.
//!
//! Writes go to `audit_groups` first and prunes remove the customer entries first, so
//! an interrupted write or prune leaves at most groups no customer entry names (found
//! by id, not listed), which the next prune removes. A group is written once and never
//! changed; its crc covers every byte after it, so a damaged group is an error, never a
//! misread record.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use tact_core::{Channel, Decision, Explain, Proposal, Purpose, Timestamp};

use crate::codec::decode_bounded;
use crate::storage::WriteBuffers;

/// The current audit format (of groups, and in the database's `audit_format` key).
pub const AUDIT_FORMAT_VERSION: u8 = 2;
/// The most records in one group.
pub const MAX_GROUP_RECORDS: usize = 64;
/// The longest decision id `GetDecision` looks at (tact's own are 33 bytes).
pub const MAX_DECISION_ID_BYTES: usize = 128;
const GROUP_HEADER: usize = 5;
const FORMAT_KEY: &[u8] = b"audit_format";
const GROUPS_TREE: &str = "audit_groups";
const CUSTOMERS_TREE: &str = "audit_customer_groups";
/// The trees of format 1.
const FORMAT_1_TREES: [&str; 3] = ["audit", "audit_ids", "audit_customers"];

/// A decision id: the millisecond the decision was made (48 bits, big-endian) and 80
/// random bits; as text, `d` and 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId([u8; 16]);

impl DecisionId {
    /// The latest instant an id can carry (year 10889); later ones are clamped, as are
    /// instants before 1970 (to 0).
    pub const MAX_MILLIS: i64 = (1 << 48) - 1;

    /// An id made at `made_at` (clamped to `0..=MAX_MILLIS`) with `random` bits.
    pub fn new(made_at: Timestamp, random: [u8; 10]) -> DecisionId {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&millis_bytes(made_at));
        b[6..].copy_from_slice(&random);
        DecisionId(b)
    }

    /// The instant the id was made (to the millisecond).
    pub fn made_at(&self) -> Timestamp {
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(&self.0[..6]);
        Timestamp(u64::from_be_bytes(m) as i64)
    }

    /// Parses the text form; `None` for anything else (uppercase hex included).
    pub fn parse(s: &str) -> Option<DecisionId> {
        let b = s.as_bytes();
        if b.len() != 33 || b[0] != b'd' {
            return None;
        }
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(b[1..].chunks_exact(2)) {
            *o = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(DecisionId(out))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> DecisionId {
        DecisionId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The text form, `d` and 32 lowercase hex digits.
    pub fn to_id_string(&self) -> String {
        // A batch makes one per decision, so four bytes at a time become eight digits by
        // shifts and masks, not a table lookup per digit.
        let mut text = [b'd'; 33];
        for (digits, word) in text[1..].chunks_exact_mut(8).zip(self.0.chunks_exact(4)) {
            let word = u32::from_be_bytes(word.try_into().expect("chunks of 4"));
            digits.copy_from_slice(&hex_digits(word).to_be_bytes());
        }
        std::str::from_utf8(&text)
            .expect("a d and hex digits are ASCII")
            .to_owned()
    }
}

/// The 8 lowercase hex digits of `word`, most significant first when written big-endian.
fn hex_digits(word: u32) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Spread the nibbles out one to a byte: nibble i (from the least significant) in
    // byte i.
    let mut x = u64::from(word);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte whose nibble is 10 or more (no byte carries: at most 15 + 6).
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    // '0' + nibble, and 'a' - '0' - 10 = 39 more for the letters.
    x + b'0' as u64 * ONES + letters * 39
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_id_string())
    }
}

impl fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecisionId({self})")
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The 6 big-endian bytes of an instant's milliseconds, clamped to what an id holds.
fn millis_bytes(t: Timestamp) -> [u8; 6] {
    let ms = t.0.clamp(0, DecisionId::MAX_MILLIS) as u64;
    let b = ms.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub decision_id: String,
    /// When tact answered: the instant the decision id carries.
    pub answered_at: Timestamp,
    /// The instant the decision was taken for (the request's `at`, else `answered_at`).
    pub at: Timestamp,
    /// True when the caller asked about `at` (`DecideRequest.at` was set).
    pub at_requested: bool,
    pub method: AuditMethod,
    /// The level of detail the answer was given at (`DecideRequest.detail`): the
    /// record is read back at the same level.
    pub detail: Explain,
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

impl AuditRecord {
    /// The record's parts, borrowed, to encode it.
    pub fn parts(&self) -> RecordParts<'_> {
        RecordParts {
            decision_id: &self.decision_id,
            at: self.at,
            at_requested: self.at_requested,
            method: self.method,
            detail: self.detail,
            proposal: &self.proposal,
            client: self.client.as_deref(),
            decision: &self.decision,
            policy_version: &self.policy_version,
            log_position: self.log_position,
        }
    }
}

/// A record's parts, borrowed from the answer (see [`AuditRecord`] for each field; the
/// record's `answered_at` is the instant `decision_id` carries).
#[derive(Clone, Copy, Debug)]
pub struct RecordParts<'a> {
    pub decision_id: &'a str,
    pub at: Timestamp,
    pub at_requested: bool,
    pub method: AuditMethod,
    pub detail: Explain,
    pub proposal: &'a Proposal,
    pub client: Option<&'a str>,
    pub decision: &'a Decision,
    pub policy_version: &'a str,
    pub log_position: u64,
}

/// Why the audit store failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("audit store: fjall: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("audit record of decision {decision_id} does not encode: {reason}")]
    Encode { decision_id: String, reason: String },
    #[error("corrupt audit group under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the audit writer's thread could not start: {0}")]
    WriterThread(#[source] std::io::Error),
    #[error("the audit writer failed: a write or flush panicked")]
    WriterPanicked,
    #[error(
        "the decision audit holds records in format {found}, which this version of tact does not read \
         (it reads and writes format {AUDIT_FORMAT_VERSION}): move the audit directory away to start a \
         new audit"
    )]
    OldFormat { found: u8 },
}

/// The body of an entry: the record but for its id, `answered_at` (in the id) and
/// customer id (before the body, for the index).
#[derive(Serialize)]
struct BodyRef<'a> {
    at: Timestamp,
    at_requested: bool,
    method: AuditMethod,
    detail: u8,
    channel: Channel,
    purpose: Purpose,
    campaign_id: &'a str,
    requested_by: &'a str,
    client: Option<&'a str>,
    decision: &'a Decision,
    policy_version: &'a str,
    log_position: u64,
}

#[derive(Deserialize)]
struct Body {
    at: Timestamp,
    at_requested: bool,
    method: AuditMethod,
    detail: u8,
    channel: Channel,
    purpose: Purpose,
    campaign_id: String,
    requested_by: String,
    client: Option<String>,
    decision: Decision,
    policy_version: String,
    log_position: u64,
}

fn detail_code(e: Explain) -> u8 {
    match e {
        Explain::Full => 0,
        Explain::Reasons => 1,
        Explain::Verdict => 2,
    }
}

fn detail_of(code: u8) -> Option<Explain> {
    match code {
        0 => Some(Explain::Full),
        1 => Some(Explain::Reasons),
        2 => Some(Explain::Verdict),
        _ => None,
    }
}

/// One entry, checked for bounds (not decoded).
struct Entry<'a> {
    id: DecisionId,
    customer: &'a [u8],
    body: &'a [u8],
}

/// Splits the entry at the start of `bytes`; the entry and what follows it.
fn split_entry(bytes: &[u8]) -> Result<(Entry<'_>, &[u8]), String> {
    let id: [u8; 16] = bytes
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or("an entry shorter than its id")?;
    let rest = &bytes[16..];
    let clen = rest
        .get(..2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or("an entry cut in its customer id's length")?;
    let customer = rest.get(2..2 + clen).ok_or("an entry cut in its customer id")?;
    let rest = &rest[2 + clen..];
    let blen = rest
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("an entry cut in its body's length")?;
    let body = rest.get(4..4 + blen).ok_or("an entry cut in its body")?;
    Ok((
        Entry {
            id: DecisionId(id),
            customer,
            body,
        },
        &rest[4 + blen..],
    ))
}

fn decode_entry(e: &Entry<'_>) -> Result<AuditRecord, String> {
    let customer_id = std::str::from_utf8(e.customer)
        .map_err(|_| "a customer id that is not UTF-8".to_owned())?
        .to_owned();
    let (b, read) =
        decode_bounded::<Body>(e.body).map_err(|err| format!("a body that does not decode: {err}"))?;
    if read != e.body.len() {
        return Err(format!("{} trailing bytes after a body", e.body.len() - read));
    }
    let detail = detail_of(b.detail).ok_or_else(|| format!("unknown detail level {}", b.detail))?;
    Ok(AuditRecord {
        decision_id: e.id.to_id_string(),
        answered_at: e.id.made_at(),
        at: b.at,
        at_requested: b.at_requested,
        method: b.method,
        detail,
        proposal: Proposal {
            customer_id,
            channel: b.channel,
            purpose: b.purpose,
            campaign_id: b.campaign_id,
            requested_by: b.requested_by,
        },
        client: b.client,
        decision: b.decision,
        policy_version: b.policy_version,
        log_position: b.log_position,
    })
}

/// Records encoded for the store, many in one buffer (one allocation for a batch, not
/// one per record), each as the entry it is stored as.
#[derive(Debug, Default)]
pub struct RecordBatch {
    buf: Vec<u8>,
    /// Each entry's id and where it is in `buf`.
    entries: Vec<(DecisionId, usize, usize)>,
}

impl RecordBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(records: usize) -> Self {
        RecordBatch {
            buf: Vec::with_capacity(records * 160),
            entries: Vec::with_capacity(records),
        }
    }

    /// The batch of one record.
    pub fn of(record: &AuditRecord) -> Result<Self, AuditError> {
        let mut b = Self::with_capacity(1);
        b.push(&record.parts())?;
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encodes a record from its parts. An id that is not a [`DecisionId`] (the store
    /// could never find it) and a customer id over 65,535 bytes are refused.
    pub fn push(&mut self, r: &RecordParts<'_>) -> Result<(), AuditError> {
        let refuse = |reason: String| AuditError::Encode {
            decision_id: r.decision_id.to_owned(),
            reason,
        };
        let id = DecisionId::parse(r.decision_id).ok_or_else(|| refuse("not a decision id".into()))?;
        let customer = r.proposal.customer_id.as_bytes();
        let clen = u16::try_from(customer.len()).map_err(|_| refuse("customer id too long".into()))?;
        let start = self.buf.len();
        self.buf.extend_from_slice(id.as_bytes());
        self.buf.extend_from_slice(&clen.to_le_bytes());
        self.buf.extend_from_slice(customer);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let body = BodyRef {
            at: r.at,
            at_requested: r.at_requested,
            method: r.method,
            detail: detail_code(r.detail),
            channel: r.proposal.channel,
            purpose: r.proposal.purpose,
            campaign_id: &r.proposal.campaign_id,
            requested_by: &r.proposal.requested_by,
            client: r.client,
            decision: r.decision,
            policy_version: r.policy_version,
            log_position: r.log_position,
        };
        let written =
            bincode::serde::encode_into_std_write(&body, &mut self.buf, bincode::config::standard())
                .map_err(|e| e.to_string())
                .and_then(|n| u32::try_from(n).map_err(|_| "a body over 4 GiB".to_owned()));
        match written {
            Ok(n) => {
                self.buf[len_at..len_at + 4].copy_from_slice(&n.to_le_bytes());
                self.entries.push((id, start, self.buf.len()));
                Ok(())
            }
            Err(reason) => {
                self.buf.truncate(start);
                Err(refuse(reason))
            }
        }
    }

    /// Moves `other`'s records to the end of this batch.
    pub fn append(&mut self, other: RecordBatch) {
        if self.entries.is_empty() {
            *self = other;
            return;
        }
        let base = self.buf.len();
        self.buf.extend_from_slice(&other.buf);
        self.entries.extend(
            other
                .entries
                .into_iter()
                .map(|(id, s, e)| (id, s + base, e + base)),
        );
    }

    /// Each record's id and its entry bytes.
    fn entries(&self) -> impl Iterator<Item = (DecisionId, &[u8])> + '_ {
        self.entries.iter().map(|&(id, s, e)| (id, &self.buf[s..e]))
    }

    /// The records, decoded (for a sink, and the memory store).
    pub fn records(&self) -> impl Iterator<Item = Result<AuditRecord, AuditError>> + '_ {
        self.entries().map(|(id, bytes)| {
            let corrupt = |reason: String| AuditError::Corrupt {
                key: id.to_id_string(),
                reason,
            };
            let (entry, _) = split_entry(bytes).map_err(|r| corrupt(r.to_owned()))?;
            decode_entry(&entry).map_err(corrupt)
        })
    }
}

/// A group's entries, after its header and crc are checked.
fn group_entries<'a>(key: &[u8], bytes: &'a [u8]) -> Result<(usize, &'a [u8]), AuditError> {
    let corrupt = |reason: String| AuditError::Corrupt {
        key: key_name(key),
        reason,
    };
    if bytes.len() < GROUP_HEADER + 2 {
        return Err(corrupt(format!("{} bytes, shorter than the header", bytes.len())));
    }
    if bytes[0] != AUDIT_FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {}", bytes[0])));
    }
    let stored = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[GROUP_HEADER..];
    if crc32fast::hash(payload) != stored {
        return Err(corrupt("crc mismatch".into()));
    }
    let count = usize::from(u16::from_le_bytes([payload[0], payload[1]]));
    Ok((count, &payload[2..]))
}

/// Each entry of a checked group, in order; an error for bytes that do not split.
fn each_entry<'a>(
    key: &'a [u8],
    count: usize,
    mut rest: &'a [u8],
) -> impl Iterator<Item = Result<Entry<'a>, AuditError>> + 'a {
    let mut left = count;
    std::iter::from_fn(move || {
        if left == 0 {
            return (!rest.is_empty()).then(|| {
                let n = rest.len();
                rest = &[];
                Err(AuditError::Corrupt {
                    key: key_name(key),
                    reason: format!("{n} bytes after the last entry"),
                })
            });
        }
        left -= 1;
        match split_entry(rest) {
            Ok((entry, after)) => {
                rest = after;
                Some(Ok(entry))
            }
            Err(reason) => {
                left = 0;
                rest = &[];
                Some(Err(AuditError::Corrupt {
                    key: key_name(key),
                    reason: reason.to_owned(),
                }))
            }
        }
    })
}

/// The record of `id` in the group stored under `key`, if it is there.
fn find_in_group(key: &[u8], bytes: &[u8], id: &DecisionId) -> Result<Option<AuditRecord>, AuditError> {
    let (count, entries) = group_entries(key, bytes)?;
    for entry in each_entry(key, count, entries) {
        let entry = entry?;
        if entry.id == *id {
            return decode_entry(&entry)
                .map(Some)
                .map_err(|reason| AuditError::Corrupt {
                    key: key_name(key),
                    reason,
                });
        }
    }
    Ok(None)
}

/// A key for error messages: a group key as its first decision id, else hex.
fn key_name(key: &[u8]) -> String {
    match <[u8; 16]>::try_from(key) {
        Ok(b) => DecisionId(b).to_id_string(),
        Err(_) => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Where a page of a customer's decisions ends: its last (oldest) record. The next
/// page starts strictly before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub last: DecisionId,
}

impl Cursor {
    /// An opaque token (the last record's decision id).
    pub fn to_token(&self) -> String {
        self.last.to_id_string()
    }

    /// Parses [`to_token`](Cursor::to_token); `None` for anything else.
    pub fn from_token(token: &str) -> Option<Cursor> {
        DecisionId::parse(token).map(|last| Cursor { last })
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
/// Decision ids are unique (80 random bits in each millisecond): a record is written
/// once.
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// Stores the records of `batches`.
    fn write(&self, batches: &[RecordBatch]) -> Result<(), AuditError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), AuditError>;
    /// The record of a decision id; `None` when there is none, the id's text included
    /// (an id that is not a [`DecisionId`] is never stored).
    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError>;
    fn list(&self, query: &ListQuery) -> Result<Vec<AuditRecord>, AuditError>;
    /// Removes the records answered before `before`, oldest first, in whole groups, at
    /// least `max` of them when there are that many (a group is never split: its
    /// records were answered in the same millisecond); how many.
    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError>;
    /// How many records are stored (counts them: for tests and tools).
    fn count(&self) -> Result<usize, AuditError>;
    /// The writes held in memory, not yet flushed (see [`Storage::write_buffers`]).
    ///
    /// [`Storage::write_buffers`]: crate::Storage::write_buffers
    fn write_buffers(&self) -> Option<WriteBuffers> {
        None
    }
}

fn customer_key(customer: &[u8], id: &DecisionId) -> Vec<u8> {
    let mut k = Vec::with_capacity(customer.len() + 17);
    k.extend_from_slice(customer);
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The customer-index range of a query, `lo..hi`; `None` when it is empty.
fn list_bounds(q: &ListQuery) -> Option<(Vec<u8>, Vec<u8>)> {
    let prefix = {
        let mut p = Vec::with_capacity(q.customer_id.len() + 17);
        p.extend_from_slice(q.customer_id.as_bytes());
        p.push(0);
        p
    };
    let bound = |t: Timestamp| -> Vec<u8> {
        if t.0 > DecisionId::MAX_MILLIS {
            // Past any id: the end of the customer's prefix.
            let mut end = prefix[..prefix.len() - 1].to_vec();
            end.push(1);
            end
        } else {
            let mut k = prefix.clone();
            k.extend_from_slice(&millis_bytes(t));
            k
        }
    };
    let lo = if q.from.0 <= 0 {
        prefix.clone()
    } else {
        bound(q.from)
    };
    let hi = match &q.after {
        Some(c) if c.last.made_at() < q.to => customer_key(q.customer_id.as_bytes(), &c.last),
        _ if q.to.0 <= 0 => return None,
        _ => bound(q.to),
    };
    (lo < hi).then_some((lo, hi))
}

/// Where [`encode_groups`] puts a key and value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Put {
    /// A group's key and value (`audit_groups`).
    Group,
    /// A record's customer-index key and its group's key (`audit_customer_groups`).
    Customer,
}

/// Groups the records of `batches` (see the module docs) and hands every key and value
/// to `put`; whether there was any record.
fn encode_groups(
    batches: &[RecordBatch],
    mut put: impl FnMut(Put, &[u8], &[u8]),
) -> Result<bool, AuditError> {
    let mut all: Vec<(DecisionId, &[u8])> = batches.iter().flat_map(RecordBatch::entries).collect();
    if all.is_empty() {
        return Ok(false);
    }
    all.sort_unstable_by_key(|e| e.0);
    let mut value = Vec::new();
    for same_ms in all.chunk_by(|a, b| a.0.as_bytes()[..6] == b.0.as_bytes()[..6]) {
        for records in same_ms.chunks(MAX_GROUP_RECORDS) {
            let key = *records[0].0.as_bytes();
            value.clear();
            value.extend_from_slice(&[AUDIT_FORMAT_VERSION, 0, 0, 0, 0]);
            value.extend_from_slice(&(records.len() as u16).to_le_bytes());
            for (id, bytes) in records {
                value.extend_from_slice(bytes);
                let (entry, _) = split_entry(bytes).map_err(|reason| AuditError::Encode {
                    decision_id: id.to_id_string(),
                    reason: reason.to_owned(),
                })?;
                put(Put::Customer, &customer_key(entry.customer, id), &key);
            }
            let crc = crc32fast::hash(&value[GROUP_HEADER..]);
            value[1..GROUP_HEADER].copy_from_slice(&crc.to_be_bytes());
            put(Put::Group, &key, &value);
        }
    }
    Ok(true)
}

/// The record of `id` in the first of `groups` (key, value) that holds it.
fn find_in_groups<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    groups: impl Iterator<Item = Result<(K, V), AuditError>>,
    id: &DecisionId,
) -> Result<Option<AuditRecord>, AuditError> {
    for entry in groups {
        let (k, v) = entry?;
        if let Some(r) = find_in_group(k.as_ref(), v.as_ref(), id)? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Fills `out` (up to the query's limit) from customer-index `entries` (key, group key),
/// newest first, reading each record with `read_in(group key, id)`.
fn list_newest<K: AsRef<[u8]>, G: AsRef<[u8]>>(
    q: &ListQuery,
    entries: impl Iterator<Item = Result<(K, G), AuditError>>,
    read_in: impl Fn(&[u8], &DecisionId) -> Result<Option<AuditRecord>, AuditError>,
    out: &mut Vec<AuditRecord>,
) -> Result<(), AuditError> {
    let prefix_len = q.customer_id.len() + 1;
    for entry in entries {
        if out.len() >= q.limit {
            break;
        }
        let (k, group) = entry?;
        let Some(id) = k
            .as_ref()
            .get(prefix_len..)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
        else {
            continue;
        };
        // An entry whose group is gone (an interrupted prune) names nothing.
        if let Some(r) = read_in(group.as_ref(), &DecisionId(id))? {
            out.push(r);
        }
    }
    Ok(())
}

/// The end key of a prune of the records answered before `before`; `None`: nothing to prune.
fn prune_end(before: Timestamp) -> Option<Vec<u8>> {
    if before.0 <= 0 {
        None
    } else if before.0 > DecisionId::MAX_MILLIS {
        Some(vec![0xff; 17])
    } else {
        Some(millis_bytes(before).to_vec())
    }
}

/// What pruning the group `(k, v)` removes: its customer-index keys (to `customers`);
/// how many records it counts for.
fn prune_group(k: &[u8], v: &[u8], mut customer: impl FnMut(Vec<u8>)) -> usize {
    match group_entries(k, v) {
        Ok((count, entries)) => {
            for e in each_entry(k, count, entries).flatten() {
                customer(customer_key(e.customer, &e.id));
            }
            count.max(1)
        }
        // A damaged group still goes; customer entries naming it are skipped by `list`.
        Err(_) => 1,
    }
}

/// The audit's page cache. sled's default (1 GiB) would let a busy audit add a
/// gigabyte to the server's memory; records are written in time order and read
/// rarely, so a small cache holds what the writer touches.
pub const AUDIT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// The audit in a sled database of its own.
#[derive(Clone, Debug)]
pub struct SledAudit {
    db: sled::Db,
    groups: sled::Tree,
    customers: sled::Tree,
}

impl SledAudit {
    /// Opens (or creates) the audit in directory `path`, with a page cache of
    /// [`AUDIT_CACHE_BYTES`].
    pub fn open(path: impl AsRef<Path>) -> Result<SledAudit, AuditError> {
        let db = sled::Config::new()
            .path(path.as_ref())
            .cache_capacity(AUDIT_CACHE_BYTES)
            .open()?;
        Self::with_db(db)
    }

    /// The audit in the trees of an open sled database; [`AuditError::OldFormat`] if it
    /// holds records of another format.
    pub fn with_db(db: sled::Db) -> Result<SledAudit, AuditError> {
        match db.get(FORMAT_KEY)? {
            Some(v) if v.as_ref() == [AUDIT_FORMAT_VERSION] => {}
            Some(v) => {
                return Err(AuditError::OldFormat {
                    found: v.first().copied().unwrap_or(0),
                });
            }
            None => {
                let names = db.tree_names();
                for old in FORMAT_1_TREES {
                    if names.iter().any(|n| n.as_ref() == old.as_bytes()) {
                        if !db.open_tree(old)?.is_empty() {
                            return Err(AuditError::OldFormat { found: 1 });
                        }
                        db.drop_tree(old)?;
                    }
                }
                db.insert(FORMAT_KEY, &[AUDIT_FORMAT_VERSION])?;
                db.flush()?;
            }
        }
        Ok(SledAudit {
            groups: db.open_tree(GROUPS_TREE)?,
            customers: db.open_tree(CUSTOMERS_TREE)?,
            db,
        })
    }

    /// The record of `id` in the group under `key`.
    fn read_in(&self, key: &[u8], id: &DecisionId) -> Result<Option<AuditRecord>, AuditError> {
        match self.groups.get(key)? {
            Some(v) => find_in_group(key, &v, id),
            None => Ok(None),
        }
    }
}

impl AuditStore for SledAudit {
    fn write(&self, batches: &[RecordBatch]) -> Result<(), AuditError> {
        let mut groups = sled::Batch::default();
        let mut customers = sled::Batch::default();
        if !encode_groups(batches, |put, key, value| match put {
            Put::Group => groups.insert(key, value),
            Put::Customer => customers.insert(key, value),
        })? {
            return Ok(());
        }
        self.groups.apply_batch(groups)?;
        self.customers.apply_batch(customers)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.db.flush()?;
        Ok(())
    }

    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError> {
        let Some(id) = DecisionId::parse(decision_id) else {
            return Ok(None);
        };
        // The groups of the id's millisecond whose first id is not after it.
        let groups = self.groups.range(&id.as_bytes()[..6]..=&id.as_bytes()[..]);
        find_in_groups(groups.map(|e| e.map_err(AuditError::from)), &id)
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let mut out = Vec::with_capacity(q.limit.min(1024));
        let Some((lo, hi)) = list_bounds(q) else {
            return Ok(out);
        };
        let entries = self.customers.range(lo..hi).rev();
        list_newest(
            q,
            entries.map(|e| e.map_err(AuditError::from)),
            |group, id| self.read_in(group, id),
            &mut out,
        )?;
        Ok(out)
    }

    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
        let Some(end) = prune_end(before) else {
            return Ok(0);
        };
        let mut keys = Vec::new();
        let mut customers = sled::Batch::default();
        let mut removed = 0;
        for entry in self.groups.range(..end) {
            if removed >= max {
                break;
            }
            let (k, v) = entry?;
            removed += prune_group(&k, &v, |key| customers.remove(key));
            keys.push(k);
        }
        self.customers.apply_batch(customers)?;
        let mut groups = sled::Batch::default();
        for k in keys {
            groups.remove(k);
        }
        self.groups.apply_batch(groups)?;
        Ok(removed)
    }

    fn count(&self) -> Result<usize, AuditError> {
        let mut n = 0;
        for entry in self.groups.iter() {
            let (k, v) = entry?;
            n += group_entries(&k, &v)?.0;
        }
        Ok(n)
    }
}

/// The audit in a fjall database of its own: the same keys and values as [`SledAudit`],
/// in keyspaces of the same names (and the format under [`FORMAT_KEY`] in `audit_meta`).
/// Its memory is its write buffers and a block cache of [`AUDIT_CACHE_BYTES`], however
/// many records the retention keeps.
#[derive(Clone)]
pub struct FjallAudit {
    db: fjall::Database,
    groups: fjall::Keyspace,
    customers: fjall::Keyspace,
}

impl fmt::Debug for FjallAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FjallAudit").finish_non_exhaustive()
    }
}

/// The write buffer of each of the audit's keyspaces.
const AUDIT_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

impl FjallAudit {
    /// Opens (or creates) the audit in directory `path`; [`AuditError::OldFormat`] if it
    /// holds records of another format.
    pub fn open(path: impl AsRef<Path>) -> Result<FjallAudit, AuditError> {
        let path = path.as_ref();
        // Each write reaches the OS (a crash of the process loses nothing written); the
        // auditor syncs on `flush`.
        let db = crate::storage::open_fjall_database(path, AUDIT_CACHE_BYTES, false)?;
        let keyspace = |name: &str| {
            db.keyspace(name, || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(AUDIT_MEMTABLE_BYTES)
            })
        };
        let meta = keyspace("audit_meta")?;
        match meta.get(FORMAT_KEY)? {
            Some(v) if v.as_ref() == [AUDIT_FORMAT_VERSION] => {}
            Some(v) => {
                return Err(AuditError::OldFormat {
                    found: v.first().copied().unwrap_or(0),
                });
            }
            None => {
                meta.insert(FORMAT_KEY, [AUDIT_FORMAT_VERSION])?;
                db.persist(fjall::PersistMode::SyncAll)?;
            }
        }
        Ok(FjallAudit {
            groups: keyspace(GROUPS_TREE)?,
            customers: keyspace(CUSTOMERS_TREE)?,
            db,
        })
    }

    /// The record of `id` in the group under `key`.
    fn read_in(&self, key: &[u8], id: &DecisionId) -> Result<Option<AuditRecord>, AuditError> {
        match self.groups.get(key)? {
            Some(v) => find_in_group(key, &v, id),
            None => Ok(None),
        }
    }
}

impl AuditStore for FjallAudit {
    fn write(&self, batches: &[RecordBatch]) -> Result<(), AuditError> {
        let mut batch = self.db.batch();
        if !encode_groups(batches, |put, key, value| {
            let keyspace = match put {
                Put::Group => &self.groups,
                Put::Customer => &self.customers,
            };
            batch.insert(keyspace, key, value);
        })? {
            return Ok(());
        }
        batch.commit()?;
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError> {
        let Some(id) = DecisionId::parse(decision_id) else {
            return Ok(None);
        };
        // The groups of the id's millisecond whose first id is not after it.
        let groups = self.groups.range(&id.as_bytes()[..6]..=&id.as_bytes()[..]);
        find_in_groups(groups.map(|g| g.into_inner().map_err(AuditError::from)), &id)
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let mut out = Vec::with_capacity(q.limit.min(1024));
        let Some((lo, hi)) = list_bounds(q) else {
            return Ok(out);
        };
        let entries = self.customers.range(lo..hi).rev();
        list_newest(
            q,
            entries.map(|g| g.into_inner().map_err(AuditError::from)),
            |group, id| self.read_in(group, id),
            &mut out,
        )?;
        Ok(out)
    }

    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
        let Some(end) = prune_end(before) else {
            return Ok(0);
        };
        let mut batch = self.db.batch();
        let mut removed = 0;
        for entry in self.groups.range(..end) {
            if removed >= max {
                break;
            }
            let (k, v) = entry.into_inner()?;
            removed += prune_group(&k, &v, |key| batch.remove(&self.customers, key));
            batch.remove(&self.groups, k);
        }
        batch.commit()?;
        Ok(removed)
    }

    fn count(&self) -> Result<usize, AuditError> {
        let mut n = 0;
        for entry in self.groups.iter() {
            let (k, v) = entry.into_inner()?;
            n += group_entries(&k, &v)?.0;
        }
        Ok(n)
    }

    fn write_buffers(&self) -> Option<WriteBuffers> {
        // Two keyspaces take the records; the meta keyspace holds one small value.
        Some(WriteBuffers::bound_of_lsm(
            self.db.write_buffer_size(),
            3 * AUDIT_MEMTABLE_BYTES,
        ))
    }
}

/// The audit in memory (no data directory; tests). Records go through the same
/// encoding as on disk.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    inner: RwLock<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: BTreeMap<DecisionId, AuditRecord>,
    customers: BTreeSet<Vec<u8>>,
}

impl MemoryAudit {
    pub fn new() -> Self {
        Self::default()
    }
}

impl AuditStore for MemoryAudit {
    fn write(&self, batches: &[RecordBatch]) -> Result<(), AuditError> {
        let mut decoded = Vec::new();
        for b in batches {
            for r in b.records() {
                decoded.push(r?);
            }
        }
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for r in decoded {
            let Some(id) = DecisionId::parse(&r.decision_id) else {
                continue;
            };
            m.customers
                .insert(customer_key(r.proposal.customer_id.as_bytes(), &id));
            m.records.insert(id, r);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }

    fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError> {
        let m = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok(DecisionId::parse(decision_id).and_then(|id| m.records.get(&id).cloned()))
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let m = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some((lo, hi)) = list_bounds(q) else {
            return Ok(Vec::new());
        };
        let prefix_len = q.customer_id.len() + 1;
        Ok(m.customers
            .range(lo..hi)
            .rev()
            .filter_map(|k| {
                let id = <[u8; 16]>::try_from(k.get(prefix_len..)?).ok()?;
                m.records.get(&DecisionId(id))
            })
            .take(q.limit)
            .cloned()
            .collect())
    }

    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        // As on disk, never part of a millisecond: past `max`, the rest of the last one.
        let mut ids: Vec<DecisionId> = Vec::new();
        for id in m.records.keys().take_while(|id| id.made_at() < before) {
            if ids.len() >= max && ids.last().is_none_or(|last| last.made_at() != id.made_at()) {
                break;
            }
            ids.push(*id);
        }
        for id in &ids {
            if let Some(r) = m.records.remove(id) {
                m.customers
                    .remove(&customer_key(r.proposal.customer_id.as_bytes(), id));
            }
        }
        Ok(ids.len())
    }

    fn count(&self) -> Result<usize, AuditError> {
        Ok(self.inner.read().unwrap_or_else(|p| p.into_inner()).records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tact_core::{Detail, Effect, Reason, Verdict};

    /// An id made at `t` whose random part is `n`.
    fn id_at(t: i64, n: u8) -> String {
        DecisionId::new(Timestamp(t), [n; 10]).to_id_string()
    }

    fn record(id: &str, customer: &str) -> AuditRecord {
        let t = DecisionId::parse(id).expect("a decision id").made_at();
        AuditRecord {
            decision_id: id.into(),
            answered_at: t,
            at: Timestamp(t.0 - 7),
            at_requested: true,
            method: AuditMethod::Decide,
            detail: Explain::Reasons,
            proposal: Proposal {
                customer_id: customer.into(),
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign_id: "c".into(),
                requested_by: "r".into(),
            },
            client: Some("crm".into()),
            decision: Decision {
                verdict: Verdict::Deny,
                not_before: None,
                reasons: vec![Reason {
                    rule_id: "not-owner".into(),
                    effect: Effect::Deny,
                    detail: Detail::NotOwner,
                }],
                alternatives: Vec::new(),
            },
            policy_version: "v".into(),
            log_position: 3,
        }
    }

    fn batch(records: &[AuditRecord]) -> RecordBatch {
        let mut b = RecordBatch::new();
        for r in records {
            b.push(&r.parts()).unwrap();
        }
        b
    }

    #[test]
    fn decision_ids_carry_their_millisecond_and_round_trip() {
        for t in [0, 1, 1_700_000_000_123, DecisionId::MAX_MILLIS] {
            let id = DecisionId::new(Timestamp(t), [0xab; 10]);
            let text = id.to_id_string();
            assert_eq!(text.len(), 33);
            assert!(text.starts_with('d'));
            assert_eq!(DecisionId::parse(&text), Some(id));
            assert_eq!(id.made_at(), Timestamp(t));
            assert_eq!(text, format!("d{:032x}", u128::from_be_bytes(*id.as_bytes())));
        }
        assert_eq!(DecisionId::new(Timestamp(-5), [1; 10]).made_at(), Timestamp(0));
        assert_eq!(
            DecisionId::new(Timestamp(i64::MAX), [1; 10]).made_at(),
            Timestamp(DecisionId::MAX_MILLIS)
        );
        // Ids sort in time order.
        assert!(DecisionId::new(Timestamp(5), [0xff; 10]) < DecisionId::new(Timestamp(6), [0; 10]));
    }

    proptest::proptest! {
        /// The shifts and masks write what `format!` does, for any 16 bytes.
        #[test]
        fn decision_ids_are_written_as_format_writes_them(bytes in proptest::prelude::any::<[u8; 16]>()) {
            let id = DecisionId::from_bytes(bytes);
            let text = id.to_id_string();
            proptest::prop_assert_eq!(&text, &format!("d{:032x}", u128::from_be_bytes(bytes)));
            proptest::prop_assert_eq!(DecisionId::parse(&text), Some(id));
        }
    }

    #[test]
    fn every_nibble_is_written_as_its_hex_digit() {
        for n in 0u8..16 {
            let id = DecisionId::from_bytes([n * 17; 16]);
            let digit = char::from_digit(u32::from(n), 16).unwrap();
            assert_eq!(id.to_id_string(), format!("d{}", digit.to_string().repeat(32)));
        }
    }

    #[test]
    fn text_that_is_not_a_decision_id_does_not_parse() {
        let good = id_at(1_700_000_000_000, 7);
        for junk in [
            String::new(),
            "d".into(),
            "d1".into(),
            good.to_uppercase(),
            good.replacen('d', "e", 1),
            format!("{good}0"),
            good[..32].to_owned(),
            format!("d{}", "g".repeat(32)),
            format!("d{}é", "0".repeat(30)),
            "x".repeat(10_000),
        ] {
            assert_eq!(DecisionId::parse(&junk), None, "{junk}");
        }
    }

    #[test]
    fn batches_round_trip_records_and_refuse_foreign_ids() {
        let rs = vec![record(&id_at(100, 1), "c1"), record(&id_at(90, 2), "")];
        let b = batch(&rs);
        assert_eq!(b.len(), 2);
        let back: Vec<AuditRecord> = b.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, rs);
        let mut b = RecordBatch::new();
        let mut foreign = record(&id_at(1, 1), "c");
        foreign.decision_id = "d1".into();
        assert!(matches!(b.push(&foreign.parts()), Err(AuditError::Encode { .. })));
        assert!(b.is_empty());
        let mut a = batch(&rs[..1]);
        a.append(batch(&rs[1..]));
        assert_eq!(a.records().collect::<Result<Vec<_>, _>>().unwrap(), rs);
    }

    #[test]
    fn the_detail_level_is_kept() {
        for detail in [Explain::Full, Explain::Reasons, Explain::Verdict] {
            let mut r = record(&id_at(5, 5), "c");
            r.detail = detail;
            let back = RecordBatch::of(&r).unwrap().records().next().unwrap().unwrap();
            assert_eq!(back.detail, detail);
        }
    }

    #[test]
    fn damaged_groups_are_errors_never_other_records() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = SledAudit::with_db(db).unwrap();
        let rs: Vec<AuditRecord> = (0..3).map(|i| record(&id_at(100, i), "c1")).collect();
        store.write(&[batch(&rs)]).unwrap();
        let (k, v) = store.groups.iter().next().unwrap().unwrap();
        assert_eq!(group_entries(&k, &v).unwrap().0, 3);
        // Every flipped byte is an error (crc), and so is every truncation.
        for i in 0..v.len() {
            let mut bad = v.to_vec();
            bad[i] ^= 0x10;
            assert!(
                find_in_group(&k, &bad, &DecisionId::parse(&rs[1].decision_id).unwrap()).is_err(),
                "byte {i}"
            );
        }
        for n in 0..v.len() {
            assert!(group_entries(&k, &v[..n]).is_err(), "{n} bytes");
        }
        // With the crc fixed up, bytes that do not split or decode are still errors.
        let mut cut = v.to_vec();
        cut.truncate(v.len() - 3);
        let crc = crc32fast::hash(&cut[GROUP_HEADER..]);
        cut[1..GROUP_HEADER].copy_from_slice(&crc.to_be_bytes());
        let last = DecisionId::parse(&rs[2].decision_id).unwrap();
        assert!(find_in_group(&k, &cut, &last).is_err());
        store.groups.insert(&k, cut).unwrap();
        assert!(store.get(&rs[2].decision_id).is_err());
    }

    #[test]
    fn cursor_tokens_round_trip_and_junk_is_refused() {
        let c = Cursor {
            last: DecisionId::new(Timestamp(1_700_000_000_000), [3; 10]),
        };
        assert_eq!(Cursor::from_token(&c.to_token()), Some(c));
        for junk in ["", "zz", "0", &"a".repeat(10_000), "00000000000000000"] {
            assert_eq!(Cursor::from_token(junk), None, "{junk}");
        }
    }

    fn exercise(store: &dyn AuditStore) {
        // c1 decided at 100..110, three of them in the same millisecond (one group).
        let mut rs = Vec::new();
        for i in 0..10u8 {
            rs.push(record(&id_at(100 + i64::from(i), i), "c1"));
        }
        rs.push(record(&id_at(105, 200), "c1"));
        rs.push(record(&id_at(105, 201), "c1"));
        rs.push(record(&id_at(105, 100), "c10"));
        rs.push(record(&id_at(105, 101), "c"));
        // In two writes, out of order: the second's group of 105 is another group.
        store.write(&[batch(&rs[..11]), batch(&rs[12..])]).unwrap();
        store.write(&[batch(&rs[11..12])]).unwrap();
        for r in &rs {
            assert_eq!(store.get(&r.decision_id).unwrap().as_ref(), Some(r));
        }
        assert_eq!(
            store.get(&id_at(105, 7)).unwrap(),
            None,
            "same millisecond, not stored"
        );
        assert_eq!(store.get("nope").unwrap(), None);
        assert_eq!(store.get(&"d".repeat(200)).unwrap(), None);
        assert_eq!(store.count().unwrap(), 14);
        let q = |from, to, limit, after| ListQuery {
            customer_id: "c1".into(),
            from: Timestamp(from),
            to: Timestamp(to),
            limit,
            after,
        };
        let ids = |rs: &[AuditRecord]| rs.iter().map(|r| r.decision_id.clone()).collect::<Vec<_>>();
        let all = store.list(&q(0, 1000, 100, None)).unwrap();
        let mut want: Vec<AuditRecord> = rs
            .iter()
            .filter(|r| r.proposal.customer_id == "c1")
            .cloned()
            .collect();
        want.sort_by(|a, b| b.decision_id.cmp(&a.decision_id));
        assert_eq!(all, want, "newest first");
        assert_eq!(store.list(&q(i64::MIN, i64::MAX, 100, None)).unwrap(), want);
        let page = store.list(&q(102, 108, 2, None)).unwrap();
        assert_eq!(ids(&page), [id_at(107, 7), id_at(106, 6)]);
        let cursor = Cursor {
            last: DecisionId::parse(&page[1].decision_id).unwrap(),
        };
        let next = store.list(&q(102, 108, 10, Some(cursor))).unwrap();
        assert_eq!(
            ids(&next),
            [
                id_at(105, 201),
                id_at(105, 200),
                id_at(105, 5),
                id_at(104, 4),
                id_at(103, 3),
                id_at(102, 2)
            ]
        );
        assert!(store.list(&q(500, 100, 10, None)).unwrap().is_empty());
        assert!(store.list(&q(-50, 0, 10, None)).unwrap().is_empty());
        // Prune: whole groups (105's are two groups, of 4 and 1, with other customers').
        assert_eq!(store.prune(Timestamp(0), 100).unwrap(), 0);
        assert_eq!(store.prune(Timestamp(105), 3).unwrap(), 3);
        assert_eq!(store.prune(Timestamp(105), 100).unwrap(), 2);
        assert_eq!(store.get(&rs[4].decision_id).unwrap(), None);
        assert!(store.get(&rs[5].decision_id).unwrap().is_some());
        assert_eq!(store.list(&q(0, 1000, 100, None)).unwrap().len(), 7);
        assert_eq!(store.count().unwrap(), 9);
        assert!(store.prune(Timestamp(106), 1).unwrap() >= 1);
        assert_eq!(
            store.get(&rs[12].decision_id).unwrap(),
            None,
            "pruned with its millisecond"
        );
        assert!(store.get(&rs[6].decision_id).unwrap().is_some());
        let left = store.count().unwrap();
        assert!(
            left == 4 || left == 5,
            "{left}: 106..110, and perhaps the other group of 105"
        );
        assert_eq!(store.prune(Timestamp(i64::MAX), 1000).unwrap(), left);
        assert_eq!(store.count().unwrap(), 0);
        assert!(store.list(&q(0, 1000, 100, None)).unwrap().is_empty());
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

    #[test]
    fn fjall_store_indexes_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&FjallAudit::open(dir.path()).unwrap());
    }

    #[test]
    fn fjall_records_survive_a_reopen_and_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rs: Vec<AuditRecord> = (0..150u32)
            .map(|i| record(&id_at(1_700_000_000_000 + i64::from(i / 70), i as u8), "c1"))
            .collect();
        {
            let store = FjallAudit::open(dir.path()).unwrap();
            store.write(&[batch(&rs)]).unwrap();
            store.flush().unwrap();
        }
        let store = FjallAudit::open(dir.path()).unwrap();
        for r in &rs {
            assert_eq!(store.get(&r.decision_id).unwrap().as_ref(), Some(r));
        }
        assert_eq!(store.count().unwrap(), 150);
        assert_eq!(
            store.prune(Timestamp(1_700_000_000_001), 1).unwrap(),
            64,
            "one whole group"
        );
        assert_eq!(store.count().unwrap(), 86);
        let meta = store
            .db
            .keyspace("audit_meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert(FORMAT_KEY, [9]).unwrap();
        store.flush().unwrap();
        drop((meta, store));
        assert!(matches!(
            FjallAudit::open(dir.path()),
            Err(AuditError::OldFormat { found: 9 })
        ));
    }

    #[test]
    fn full_groups_split_and_every_record_is_found() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = SledAudit::with_db(db).unwrap();
        let rs: Vec<AuditRecord> = (0..150u32)
            .map(|i| {
                let id = DecisionId::new(Timestamp(50 + i64::from(i / 140)), {
                    let mut r = [0u8; 10];
                    r[..4].copy_from_slice(&i.to_be_bytes());
                    r
                });
                record(&id.to_id_string(), &format!("c{}", i % 3))
            })
            .collect();
        store.write(&[batch(&rs)]).unwrap();
        // 140 in millisecond 50: groups of 64, 64 and 12; 10 in millisecond 51.
        assert_eq!(store.groups.len(), 4);
        for r in &rs {
            assert_eq!(store.get(&r.decision_id).unwrap().as_ref(), Some(r));
        }
        assert_eq!(store.count().unwrap(), 150);
        let q = ListQuery {
            customer_id: "c1".into(),
            from: Timestamp(0),
            to: Timestamp(100),
            limit: 1000,
            after: None,
        };
        assert_eq!(store.list(&q).unwrap().len(), 50);
        // A prune that asks for 10 removes the first whole group.
        assert_eq!(store.prune(Timestamp(51), 10).unwrap(), 64);
        // c1 is every third from 1: 21 of them were in the first 64.
        assert_eq!(store.list(&q).unwrap().len(), 50 - 21);
    }

    #[test]
    fn records_survive_a_reopen_and_format_1_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(&id_at(1_700_000_000_000, 9), "c1");
        {
            let store = SledAudit::open(dir.path().join("a")).unwrap();
            store.write(&[RecordBatch::of(&r).unwrap()]).unwrap();
            store.flush().unwrap();
        }
        // sled's flusher thread may hold the dropped database (and its file lock) a
        // moment longer on a busy machine: retry the reopen for a while.
        let mut tries = 0;
        let store = loop {
            match SledAudit::open(dir.path().join("a")) {
                Ok(store) => break store,
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopening the audit: {e}"),
            }
        };
        assert_eq!(store.get(&r.decision_id).unwrap(), Some(r));
        drop(store);

        let old = sled::Config::new().path(dir.path().join("old")).open().unwrap();
        old.open_tree("audit").unwrap().insert(b"k", b"v").unwrap();
        let e = SledAudit::with_db(old.clone()).unwrap_err();
        assert!(matches!(e, AuditError::OldFormat { found: 1 }), "{e}");
        assert!(e.to_string().contains("move the audit directory away"), "{e}");
        // Format 1 trees with nothing in them are simply dropped.
        let empty = sled::Config::new().temporary(true).open().unwrap();
        empty.open_tree("audit_ids").unwrap();
        SledAudit::with_db(empty.clone()).unwrap();
        assert!(!empty.tree_names().iter().any(|n| n.as_ref() == b"audit_ids"));
        // A format marker from another version is refused.
        let other = sled::Config::new().temporary(true).open().unwrap();
        other.insert(FORMAT_KEY, &[9]).unwrap();
        assert!(matches!(
            SledAudit::with_db(other),
            Err(AuditError::OldFormat { found: 9 })
        ));
    }
}

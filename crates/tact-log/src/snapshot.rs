//! Projection snapshots: the folded state at a log position, so a restart replays only
//! the events after it.
//!
//! Layout: `[version: u8][crc32 of the rest: u32 big-endian][tag][customers]`, where
//! `tag` is bincode of [`SnapshotTag`] (position, retention, customer count) and
//! `customers` is bincode of the `customer_id -> CustomerState` map. The tag is decoded
//! before the crc is checked so that a snapshot of another retention or beyond the log
//! is turned down without reading the rest. Both decode with a limit bound to the
//! snapshot's length ([`codec::decode_bounded`]), so a corrupt length inside cannot make
//! the decoder allocate more than a few times the snapshot's own size.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tact_core::{CustomerState, Retention};

use crate::codec;
use crate::error::LogError;
use crate::projection::Projection;
use crate::storage::Storage;

/// The snapshot's version: of its layout, and of the fold that made its states. A
/// change to how `CustomerState::apply` keeps or prunes history changes it too (states
/// folded by the old rule are not what a replay now gives), so a snapshot of another
/// version is turned down and the log replayed in full.
///
/// - 1: the first layout.
/// - 2: the timeline bounds outreach per channel and purpose, and unanswered outreach
///   per channel (before: all outreach, and all unanswered outreach, together).
/// - 3: compaction keeps the do-not-contact request that reaches furthest (before: the
///   newest); the tag holds the anchor of the log it was taken of.
/// - 4: a consent withdrawal keeps no expiry (before: it kept the `expires_at` it was
///   sent with, which changed no decision but showed in the consent history).
pub const SNAPSHOT_VERSION: u8 = 4;
const HEADER: usize = 5;

/// What a snapshot covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTag {
    /// Every event with seq <= position is folded in.
    pub position: u64,
    /// The retention the states were folded with; states of another retention differ.
    pub retention: Retention,
    pub customers: u64,
    /// The log it was taken of: [`anchor`] of the event at `position`. A snapshot
    /// copied from another data directory (or a log rebuilt since) has another, and is
    /// not used: it would stand in for events this log does not hold (a withdrawal
    /// replaced by another log's grant).
    pub anchor: u64,
}

/// A fingerprint of the event at `position` of `storage` (0 for position 0): its id,
/// customer and instant.
pub fn anchor(storage: &dyn Storage, position: u64) -> Result<u64, LogError> {
    if position == 0 {
        return Ok(0);
    }
    let Some(e) = storage.get(position)? else {
        return Ok(0);
    };
    let mut h = crc32fast::Hasher::new();
    h.update(e.event_id.as_bytes());
    h.update(&[0]);
    h.update(e.customer_id.as_bytes());
    let low = h.finalize();
    let mut h = crc32fast::Hasher::new_with_initial(low);
    h.update(&e.occurred_at.0.to_be_bytes());
    h.update(e.event_id.as_bytes());
    Ok((u64::from(h.finalize()) << 32) | u64::from(low))
}

/// Why a stored snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {0} bytes, shorter than its header")]
    Short(usize),
    #[error("unknown snapshot format version {0}")]
    Version(u8),
    #[error("snapshot tag does not decode: {0}")]
    Tag(String),
    #[error("crc mismatch: stored {stored:08x}, computed {computed:08x}")]
    Crc { stored: u32, computed: u32 },
    #[error("snapshot body does not decode: {0}")]
    Body(String),
    #[error("snapshot holds {found} customers, its tag says {expected}")]
    Count { expected: u64, found: u64 },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `projection` as a snapshot of the log whose [`anchor`] at its position is
/// `anchor`.
pub fn encode_snapshot(projection: &Projection, anchor: u64) -> Result<Vec<u8>, LogError> {
    let tag = SnapshotTag {
        position: projection.position,
        retention: projection.retention,
        customers: projection.customers.len() as u64,
        anchor,
    };
    let mut buf = vec![SNAPSHOT_VERSION, 0, 0, 0, 0];
    bincode::serde::encode_into_std_write(tag, &mut buf, config())
        .map_err(|e| LogError::Snapshot(format!("encoding tag: {e}")))?;
    bincode::serde::encode_into_std_write(&projection.customers, &mut buf, config())
        .map_err(|e| LogError::Snapshot(format!("encoding customers: {e}")))?;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[1..HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(buf)
}

/// Decodes only the tag (no crc check: cheap, to decide whether the rest is wanted).
pub fn decode_snapshot_tag(bytes: &[u8]) -> Result<SnapshotTag, SnapshotError> {
    Ok(split_tag(bytes)?.0)
}

fn split_tag(bytes: &[u8]) -> Result<(SnapshotTag, &[u8]), SnapshotError> {
    if bytes.len() < HEADER {
        return Err(SnapshotError::Short(bytes.len()));
    }
    if bytes[0] != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version(bytes[0]));
    }
    let (tag, used) = codec::decode_bounded::<SnapshotTag>(&bytes[HEADER..])
        .map_err(|e| SnapshotError::Tag(e.to_string()))?;
    Ok((tag, &bytes[HEADER + used..]))
}

/// Checks and decodes a whole snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotTag, HashMap<String, CustomerState>), SnapshotError> {
    let (tag, body) = split_tag(bytes)?;
    let stored = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let computed = crc32fast::hash(&bytes[HEADER..]);
    if stored != computed {
        return Err(SnapshotError::Crc { stored, computed });
    }
    let (customers, used) = codec::decode_bounded::<HashMap<String, CustomerState>>(body)
        .map_err(|e| SnapshotError::Body(e.to_string()))?;
    if used != body.len() {
        return Err(SnapshotError::Body(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    if customers.len() as u64 != tag.customers {
        return Err(SnapshotError::Count {
            expected: tag.customers,
            found: customers.len() as u64,
        });
    }
    Ok((tag, customers))
}

/// Writes a snapshot of `projection` into `storage` (replacing the previous one) and
/// makes it durable. Returns its size in bytes.
///
/// The projection must cover the log up to its position exactly, as one built by
/// [`Projection::load`] or fed by the [`crate::Log`] hook does; a time-travel projection
/// from [`Projection::rebuild_until`] is refused.
pub fn save_snapshot(storage: &dyn Storage, projection: &Projection) -> Result<usize, LogError> {
    if let Some(until) = projection.until {
        return Err(LogError::Snapshot(format!(
            "projection is cut at {until}, not a snapshot of the log; refusing to save it"
        )));
    }
    let last = storage.last_seq()?;
    if projection.position > last {
        return Err(LogError::Snapshot(format!(
            "projection position {} is beyond the log's last seq {last}",
            projection.position
        )));
    }
    let started = std::time::Instant::now();
    let bytes = encode_snapshot(projection, anchor(storage, projection.position)?)?;
    storage.put_snapshot(&bytes)?;
    tracing::info!(
        position = projection.position,
        customers = projection.customers.len(),
        bytes = bytes.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot saved"
    );
    Ok(bytes.len())
}

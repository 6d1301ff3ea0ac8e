//! Errors of the log, its storage backends and snapshots.

use std::sync::Arc;

/// Anything that can go wrong reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The sled database failed (I/O, corruption detected by sled itself, ...).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The fjall database failed (I/O, a damaged journal or table, ...).
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// Another process (or handle) holds the database's lock.
    #[error("database {path} is locked by another process")]
    Locked { path: String },
    /// A stored event record failed its checks (format version, crc, decoding).
    #[error("corrupt event record at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// A key in one of the log's trees does not have the expected layout.
    #[error("corrupt key in tree `{tree}`: {reason}")]
    CorruptKey { tree: &'static str, reason: String },
    /// An event could not be encoded.
    #[error("encoding event `{event_id}`: {reason}")]
    Encode { event_id: String, reason: String },
    /// A snapshot could not be written.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The snapshot file could not be read or written.
    #[error("snapshot file {path}: {source}")]
    SnapshotFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The log was shut down (or its writer task is gone).
    #[error("log is closed")]
    Closed,
    /// A group commit failed; every caller in the group gets the same cause.
    #[error("group commit failed: {0}")]
    Commit(Arc<LogError>),
    /// An earlier write or flush failed: its durability is unknown, so the log refuses
    /// further appends until it is reopened.
    #[error("log is poisoned by an earlier failure, reopen it: {0}")]
    Poisoned(Arc<LogError>),
    /// The blocking storage work of the writer panicked or was cancelled.
    #[error("log writer failed: {0}")]
    Writer(String),
}

impl LogError {
    pub(crate) fn corrupt(seq: u64, reason: impl Into<String>) -> Self {
        LogError::Corrupt {
            seq,
            reason: reason.into(),
        }
    }
}

//! The append-only event log of tact.
//!
//! - [`Storage`]: the log itself, sync and object-safe, on fjall ([`FjallStorage`], the
//!   default), sled ([`SledStorage`]) or in memory ([`MemoryStorage`]); records are
//!   versioned and checksummed ([`codec`]). [`open_storage`] opens a log directory with
//!   the backend that wrote it.
//! - [`Log`]: the async front end that group-commits concurrent appends and answers
//!   only when they are durable, after handing them to a hook (the live projection).
//! - [`Projection`]: every customer's [`tact_core::CustomerState`], rebuilt by replay,
//!   optionally from a snapshot ([`save_snapshot`], [`Projection::load`]).

pub mod audit;
pub mod backtest;
pub mod codec;
mod error;
pub mod feed;
mod log;
pub mod policies;
mod projection;
pub mod snapshot;
mod storage;

pub use audit::{
    AuditError, AuditMethod, AuditRecord, AuditStore, Cursor, DecisionId, FjallAudit, ListQuery, MemoryAudit,
    RecordBatch, RecordParts, SledAudit,
};
pub use error::LogError;
pub use log::{
    DurableHook, GroupCommit, Log, LogHandle, LogStats, PendingAppend, SLOW_FLUSH, warn_while_stalled,
};
pub use policies::{PolicyRecord, policy_history, policy_in_force};
pub use projection::{Projection, ReplayStats, fold, replay_progress};
pub use snapshot::{SnapshotError, SnapshotTag, save_snapshot};
pub use storage::{
    Appended, DEAD_LETTER_PREFIX, Engine, EventIter, EventVisitor, FjallStorage, MemoryStorage, MetaEntry,
    OnTaken, RawVisitor, SNAPSHOT_FILE, SledStorage, Storage, StorageOptions, WriteBuffers, copy_log,
    open as open_storage, size_of_dir,
};

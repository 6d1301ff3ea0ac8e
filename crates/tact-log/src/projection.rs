//! [`Projection`]: every customer's state, folded from the log, and the log position it
//! covers.

use std::collections::HashMap;
use std::mem;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tact_core::{CustomerState, Event, Retention, Timestamp};

use crate::codec;
use crate::error::LogError;
use crate::snapshot::{self, SnapshotTag};
use crate::storage::Storage;

/// Replays shorter than this run on the calling thread only.
const PIPELINE_MIN_EVENTS: u64 = 16_384;
/// Events per chunk handed from the scanning thread to the folding one.
const PIPELINE_CHUNK: usize = 1_024;
/// Chunks in flight between them.
const PIPELINE_DEPTH: usize = 8;

/// Events read by the scanning thread: decoded, or raw records for the folder to decode.
#[derive(Default)]
struct Chunk {
    decoded: Vec<(u64, Event)>,
    /// `(seq, start, end)` of each record in `bytes`.
    raw: Vec<(u64, usize, usize)>,
    bytes: Vec<u8>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.decoded.len() + self.raw.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Events read by every replay in this process so far (counted a chunk at a time), for
/// progress bars: a caller notes it before a replay and watches it grow.
static REPLAYED: AtomicU64 = AtomicU64::new(0);

/// Events read by replays ([`Projection::catch_up`]) in this process so far.
pub fn replay_progress() -> u64 {
    REPLAYED.load(Ordering::Relaxed)
}

/// Folds `event` into its customer's state in `customers`, creating the state for a
/// customer seen for the first time.
pub fn fold(customers: &mut HashMap<String, CustomerState>, event: &Event, retention: Retention) {
    if !event.kind.is_customer_event() {
        // tact's own policy events: not about a customer.
        return;
    }
    match customers.get_mut(event.customer_id.as_str()) {
        Some(state) => state.apply(event, retention),
        None => {
            let mut state = CustomerState::default();
            state.apply(event, retention);
            customers.insert(event.customer_id.clone(), state);
        }
    }
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Events folded in by the replay (not counting those in a snapshot, nor those
    /// skipped by a time cut).
    pub events: u64,
    /// Customers in the projection afterwards.
    pub customers: usize,
    pub elapsed: Duration,
    /// The position of the snapshot the replay started from, if one was used.
    pub snapshot: Option<u64>,
}

impl ReplayStats {
    /// Replayed events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Every customer's state and the log position it covers: all events with seq <=
/// `position` (and, for a time cut, `occurred_at <= until`) are folded in.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub customers: HashMap<String, CustomerState>,
    pub position: u64,
    pub retention: Retention,
    /// Set for a time-travel projection ([`Projection::rebuild_until`]): later events
    /// are skipped. Such a projection cannot be snapshotted.
    pub until: Option<Timestamp>,
}

impl Projection {
    /// An empty projection at position 0.
    pub fn new(retention: Retention) -> Self {
        Projection {
            customers: HashMap::new(),
            position: 0,
            retention,
            until: None,
        }
    }

    pub fn get(&self, customer_id: &str) -> Option<&CustomerState> {
        self.customers.get(customer_id)
    }

    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// Releases the spare capacity a replay leaves in each customer's state (a third of
    /// the memory of a 1M-customer replay, 954 against 617 bytes per customer in the
    /// `core` bench's replay layout), and gives each state a fresh, exactly sized
    /// block.
    pub fn compact(&mut self) {
        for state in self.customers.values_mut() {
            state.shrink();
        }
    }

    /// Folds the event at `seq` in. Events at or before `position` are already in and
    /// are ignored, so feeding the same event twice is harmless. Returns whether it was
    /// folded.
    pub fn apply(&mut self, seq: u64, event: &Event) -> bool {
        if !self.admit(seq, event) || !event.kind.is_customer_event() {
            // Already in, after a time cut, or tact's own policy event (not folded).
            return false;
        }
        fold(&mut self.customers, event, self.retention);
        true
    }

    /// Moves the position to `seq`; whether the event there is still to be folded.
    fn admit(&mut self, seq: u64, event: &Event) -> bool {
        if seq <= self.position {
            return false;
        }
        self.position = seq;
        self.until.is_none_or(|until| event.occurred_at <= until)
    }

    /// Folds in every event after `position`, to the end of the log.
    ///
    /// Long replays run as a two-thread pipeline: one thread scans the storage (and
    /// decodes while the folding thread keeps up), the calling thread folds. Short ones
    /// run on the calling thread alone.
    pub fn catch_up(&mut self, storage: &dyn Storage) -> Result<ReplayStats, LogError> {
        let started = Instant::now();
        let from = self.position + 1;
        let pending = storage.last_seq()?.saturating_sub(self.position);
        let events = if pending < PIPELINE_MIN_EVENTS {
            self.replay_inline(storage, from)?
        } else {
            self.replay_pipelined(storage, from)?
        };
        Ok(ReplayStats {
            events,
            customers: self.customers.len(),
            elapsed: started.elapsed(),
            snapshot: None,
        })
    }

    fn replay_inline(&mut self, storage: &dyn Storage, from: u64) -> Result<u64, LogError> {
        let mut events = 0u64;
        storage.scan_raw(from, &mut |seq, raw| {
            let event = codec::decode_event(seq, raw)?;
            events += u64::from(self.apply(seq, &event));
            REPLAYED.fetch_add(1, Ordering::Relaxed);
            Ok(true)
        })?;
        Ok(events)
    }

    fn replay_pipelined(&mut self, storage: &dyn Storage, from: u64) -> Result<u64, LogError> {
        let (tx, rx) = mpsc::sync_channel::<Result<Chunk, LogError>>(PIPELINE_DEPTH);
        let (recycle_tx, recycle_rx) = mpsc::channel::<Chunk>();
        let queued = AtomicUsize::new(0);
        let mut events = 0u64;
        std::thread::scope(|scope| {
            let queued = &queued;
            scope.spawn(move || {
                let mut chunk = Chunk::default();
                // Decode here only while the folder has work queued; when it is starved,
                // let it decode (scanning sled alone costs about as much as folding).
                // It changes only between chunks, so a chunk is all decoded or all raw.
                let mut decode_here = false;
                let scanned = storage.scan_raw(from, &mut |seq, raw| {
                    if decode_here {
                        chunk.decoded.push((seq, codec::decode_event(seq, raw)?));
                    } else {
                        let start = chunk.bytes.len();
                        chunk.bytes.extend_from_slice(raw);
                        chunk.raw.push((seq, start, chunk.bytes.len()));
                    }
                    if chunk.len() >= PIPELINE_CHUNK {
                        let next = recycle_rx.try_recv().unwrap_or_default();
                        queued.fetch_add(1, Ordering::AcqRel);
                        if tx.send(Ok(mem::replace(&mut chunk, next))).is_err() {
                            return Ok(false); // the folder stopped on an error
                        }
                        decode_here = queued.load(Ordering::Acquire) >= 2;
                    }
                    Ok(true)
                });
                let last = match scanned {
                    Ok(()) => {
                        queued.fetch_add(1, Ordering::AcqRel);
                        Ok(chunk)
                    }
                    Err(e) => {
                        // Hand over what was read before the error, then the error.
                        if !chunk.is_empty() {
                            queued.fetch_add(1, Ordering::AcqRel);
                            let _ = tx.send(Ok(chunk));
                        }
                        Err(e)
                    }
                };
                let _ = tx.send(last);
            });

            for msg in rx {
                let mut chunk = msg?;
                queued.fetch_sub(1, Ordering::AcqRel);
                REPLAYED.fetch_add(chunk.decoded.len() as u64, Ordering::Relaxed);
                for (seq, event) in chunk.decoded.drain(..) {
                    events += u64::from(self.apply(seq, &event));
                }
                for &(seq, start, end) in &chunk.raw {
                    let event = codec::decode_event(seq, &chunk.bytes[start..end])?;
                    events += u64::from(self.apply(seq, &event));
                }
                REPLAYED.fetch_add((chunk.raw.len()) as u64, Ordering::Relaxed);
                chunk.raw.clear();
                chunk.bytes.clear();
                let _ = recycle_tx.send(chunk);
            }
            Ok::<_, LogError>(())
        })?;
        Ok(events)
    }

    /// Replays the whole log.
    pub fn rebuild(
        storage: &dyn Storage,
        retention: Retention,
    ) -> Result<(Projection, ReplayStats), LogError> {
        let mut projection = Projection::new(retention);
        let stats = projection.catch_up(storage)?;
        projection.compact();
        tracing::info!(
            events = stats.events,
            customers = stats.customers,
            position = projection.position,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "projection rebuilt"
        );
        Ok((projection, stats))
    }

    /// Replays the whole log but folds in only events with `occurred_at <= until`: the
    /// states as they were at `until`, as far as the log knew then and since.
    pub fn rebuild_until(
        storage: &dyn Storage,
        retention: Retention,
        until: Timestamp,
    ) -> Result<(Projection, ReplayStats), LogError> {
        let mut projection = Projection {
            until: Some(until),
            ..Projection::new(retention)
        };
        let stats = projection.catch_up(storage)?;
        Ok((projection, stats))
    }

    /// Starts from the stored snapshot if it is usable and replays only the events after
    /// it; otherwise (missing, unreadable by the storage, corrupt, another retention,
    /// beyond the log) replays the whole log, with a warning naming the cause for
    /// anything but a missing snapshot. The snapshot is only a cache: no error reading it
    /// fails the load, while any error reading the log does.
    pub fn load(storage: &dyn Storage, retention: Retention) -> Result<(Projection, ReplayStats), LogError> {
        let started = Instant::now();
        let Some(mut projection) = Self::from_snapshot(storage, retention)? else {
            return Self::rebuild(storage, retention);
        };
        let from = projection.position;
        let mut stats = projection.catch_up(storage)?;
        if stats.events > 0 {
            projection.compact();
        }
        stats.elapsed = started.elapsed();
        stats.snapshot = Some(from);
        tracing::info!(
            snapshot_position = from,
            events = stats.events,
            customers = stats.customers,
            position = projection.position,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "projection loaded from snapshot"
        );
        Ok((projection, stats))
    }

    /// The stored snapshot as a projection, if there is a usable one.
    fn from_snapshot(storage: &dyn Storage, retention: Retention) -> Result<Option<Projection>, LogError> {
        // The snapshot is a cache: whatever keeps it from being read (sled failing to
        // read its slot included) means "no snapshot", never a failed start. Errors
        // reading the log itself still fail `load`.
        let bytes = match storage.get_snapshot() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::debug!("no snapshot: full replay");
                return Ok(None);
            }
            Err(error) => {
                tracing::warn!(%error, "snapshot unreadable: full replay");
                return Ok(None);
            }
        };
        let tag = match snapshot::decode_snapshot_tag(&bytes) {
            Ok(tag) => tag,
            Err(error) => {
                tracing::warn!(%error, "snapshot unusable: full replay");
                return Ok(None);
            }
        };
        if tag.retention != retention {
            tracing::warn!(
                snapshot_retention = ?tag.retention,
                retention = ?retention,
                "snapshot taken under another retention: full replay"
            );
            return Ok(None);
        }
        let last = storage.last_seq()?;
        if tag.position > last {
            tracing::warn!(
                position = tag.position,
                last_seq = last,
                "snapshot is beyond the log: full replay"
            );
            return Ok(None);
        }
        let anchor = snapshot::anchor(storage, tag.position)?;
        if tag.anchor != anchor {
            tracing::warn!(
                position = tag.position,
                "snapshot is of another log (the event at its position differs): full replay"
            );
            return Ok(None);
        }
        match snapshot::decode_snapshot(&bytes) {
            Ok((SnapshotTag { position, .. }, customers)) => Ok(Some(Projection {
                customers,
                position,
                retention,
                until: None,
            })),
            Err(error) => {
                tracing::warn!(%error, position = tag.position, "snapshot unusable: full replay");
                Ok(None)
            }
        }
    }
}

//! The append-only log's storage: a sync, object-safe [`Storage`] trait with two disk
//! backends, fjall ([`FjallStorage`], the default for a new log: memory bounded whatever
//! the log's length) and sled ([`SledStorage`], the logs written before it), and an
//! in-memory one ([`MemoryStorage`]). [`open`] opens a directory with the backend that
//! wrote it.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use tact_core::Event;

use crate::codec;
use crate::error::LogError;

mod fjall_store;
mod memory;
mod sled_index;
mod sled_store;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use self::fjall_store::FjallStorage;
pub(crate) use self::fjall_store::open_database as open_fjall_database;
pub use self::memory::MemoryStorage;
pub use self::sled_store::SledStorage;

/// The writes a storage engine holds in memory, not yet flushed to its table files,
/// and the most it holds while its background flushes keep up (see
/// [`Storage::write_buffers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteBuffers {
    pub bytes: u64,
    /// Above this, flushing has fallen far behind or stopped: memory grows with every
    /// write until it resumes (or the process restarts and replays its journal).
    pub bound: u64,
}

impl WriteBuffers {
    /// The bound of an LSM tree whose keyspaces have write buffers of `memtables` bytes
    /// in total: fjall holds writes to a keyspace with four full buffers waiting to be
    /// flushed, so while its workers keep up it holds about five of each; twice that is
    /// past any burst.
    pub fn bound_of_lsm(bytes: u64, memtables: u64) -> WriteBuffers {
        WriteBuffers {
            bytes,
            bound: memtables.saturating_mul(10),
        }
    }

    pub fn over_bound(&self) -> bool {
        self.bytes > self.bound
    }
}

/// The projection snapshot's file, in the database's directory.
pub const SNAPSHOT_FILE: &str = "tact-snapshot";

/// Which disk backend holds a log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// fjall, an LSM tree: memory bounded by its caches, whatever the log's length.
    #[default]
    Fjall,
    /// sled: its page table (in memory) grows with the log.
    Sled,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Fjall => "fjall",
            Engine::Sled => "sled",
        }
    }

    /// The backend that wrote the database in `path`, if there is one there.
    pub fn of_existing(path: &Path) -> Option<Engine> {
        if path.join("conf").is_file() && path.join("db").is_file() {
            Some(Engine::Sled)
        } else if path.is_dir() && std::fs::read_dir(path).ok()?.next().is_some() {
            Some(Engine::Fjall)
        } else {
            None
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fjall" => Ok(Engine::Fjall),
            "sled" => Ok(Engine::Sled),
            other => Err(format!(
                "unknown log engine `{other}` (expected `fjall` or `sled`)"
            )),
        }
    }
}

/// How a disk backend is chosen and uses memory: every bound is independent of the
/// log's length (sled's page table aside, see [`Engine::Sled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The backend of a new log (an existing one is opened with the backend that wrote it).
    pub engine: Engine,
    /// The backend's cache of disk blocks or pages, in bytes.
    pub cache_bytes: u64,
    /// How many recently recorded event ids (with their seqs) are kept in memory for
    /// duplicate checks; older ones are looked up in the disk index. 0: none.
    pub id_cache_entries: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            engine: Engine::default(),
            cache_bytes: 256 * 1024 * 1024,
            id_cache_entries: 1 << 18,
        }
    }
}

/// Opens (or creates) the log in directory `path`: an existing log with the backend that
/// wrote it (a warning if that is not `options.engine`), a new one with `options.engine`.
pub fn open(path: &Path, options: StorageOptions) -> Result<(Arc<dyn Storage>, Engine), LogError> {
    let engine = match Engine::of_existing(path) {
        Some(existing) => {
            if existing != options.engine {
                tracing::warn!(
                    path = %path.display(),
                    existing = %existing,
                    configured = %options.engine,
                    "the log was written by another engine than the one configured: opening it with its own"
                );
            }
            existing
        }
        None => options.engine,
    };
    let storage: Arc<dyn Storage> = match engine {
        Engine::Fjall => Arc::new(FjallStorage::open_with_options(path, options)?),
        Engine::Sled => Arc::new(SledStorage::open_with_options(path, options)?),
    };
    Ok((storage, engine))
}

/// The visitor of [`Storage::scan_raw`]: gets each record's seq and raw bytes, returns
/// whether to go on.
pub type RawVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, LogError> + 'a;

/// Visits decoded events `(seq, event)`.
pub type EventVisitor<'a> = dyn FnMut(u64, Event) -> Result<(), LogError> + 'a;

/// A meta key/value pair written with [`Storage::append`] (e.g. a Kafka offset).
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// Meta keys starting with this are dead letters: records of input that could not be
/// logged (e.g. a Kafka message that does not decode), written in the same atomic
/// [`Storage::append`] as the consumer offset that skips it. They read and write like
/// any meta entry; [`SledStorage`] keeps them in a tree of their own (`dead_letters`,
/// keys without the prefix) so that scanning ordinary meta never wades through them.
pub const DEAD_LETTER_PREFIX: &[u8] = b"dead-letter/";

/// What [`Storage::append_checked`] calls for an event whose id another event holds.
pub type OnTaken<'a> = dyn FnMut(usize, &Event, u64) -> Option<MetaEntry> + Send + 'a;

/// The outcome of appending one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Appended {
    /// The event is new and now lives at `seq`.
    Recorded { seq: u64 },
    /// This very event was already in the log (or earlier in the same batch) at
    /// `existing_seq` (a retry; see [`tact_core::event::recorded_as`]); nothing was
    /// written for this one.
    Duplicate { existing_seq: u64 },
    /// ANOTHER event holds this `event_id` at `existing_seq` (or earlier in the same
    /// batch): an event id names one event, so this one was not written. Its sender must
    /// hear so (a withdrawal sent under a taken id would otherwise be lost unseen).
    Taken { existing_seq: u64 },
}

impl Appended {
    /// The seq of the event in the log, whether it was recorded now or before.
    /// For [`Appended::Taken`], the seq of the other event that holds the id.
    pub fn seq(self) -> u64 {
        match self {
            Appended::Recorded { seq } => seq,
            Appended::Duplicate { existing_seq } | Appended::Taken { existing_seq } => existing_seq,
        }
    }

    pub fn is_recorded(self) -> bool {
        matches!(self, Appended::Recorded { .. })
    }
}

/// An append-only event log with an idempotency index, a per-customer index, a meta
/// key/value store and one projection snapshot slot.
///
/// Sequence numbers start at 1 and are consecutive; 0 means "before the first event".
/// Implementations serialize appends internally, so any number of threads may call
/// [`append`](Storage::append), but [`crate::Log`] is the intended single writer.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Appends `events` and writes `meta` in one atomic step: after a crash either all
    /// of it is there or none. New events get consecutive seqs in batch order; an event
    /// whose `event_id` is already in the log, or earlier in `events`, is reported as
    /// [`Appended::Duplicate`] (the same event) or [`Appended::Taken`] (another event
    /// under the id) and not written. The result has one entry per event.
    ///
    /// `meta` is written even if every event is a duplicate (a redelivered message's
    /// offset still advances). Its entries are applied in order, so a later one for the
    /// same key wins. Keys under [`DEAD_LETTER_PREFIX`] are dead letters.
    ///
    /// The write is visible to readers on return but durable only after
    /// [`flush`](Storage::flush).
    fn append(&self, events: &[Event], meta: &[MetaEntry]) -> Result<Vec<Appended>, LogError> {
        self.append_checked(events, meta, &mut |_, _, _| None)
    }

    /// [`append`](Storage::append), and for each event found [`Appended::Taken`],
    /// `on_taken(index in events, event, seq of the event holding the id)` may give a
    /// meta entry (a dead letter) to write in the same atomic step, after `meta`.
    fn append_checked(
        &self,
        events: &[Event],
        meta: &[MetaEntry],
        on_taken: &mut OnTaken<'_>,
    ) -> Result<Vec<Appended>, LogError>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), LogError>;

    /// The seq of the last event, 0 if the log is empty.
    fn last_seq(&self) -> Result<u64, LogError>;

    /// The event at `seq`.
    fn get(&self, seq: u64) -> Result<Option<Event>, LogError>;

    /// Visits the raw records (see [`codec`]) with seq >= `from`, in order, until
    /// `visit` returns `Ok(false)` or an error (which is passed on).
    fn scan_raw(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError>;

    /// Up to `limit` events with seq >= `from`, in order.
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, Event)>, LogError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        self.scan_raw(from, &mut |seq, raw| {
            out.push((seq, codec::decode_event(seq, raw)?));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// One customer's events in log order, found through the customer index.
    fn customer_events(&self, customer_id: &str) -> Result<Vec<(u64, Event)>, LogError> {
        let mut out = Vec::new();
        self.visit_customer_events(customer_id, &mut |seq, event| {
            out.push((seq, event));
            Ok(())
        })?;
        Ok(out)
    }

    /// One customer's events in log order, handed to `visit` one at a time: what the
    /// caller keeps is up to it, so a customer with a long history costs time, not
    /// memory.
    fn visit_customer_events(&self, customer_id: &str, visit: &mut EventVisitor<'_>) -> Result<(), LogError>;

    /// The seq of the event with this id, if it is in the log.
    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError>;

    /// Writes one meta value outside any append; durable after [`flush`](Storage::flush).
    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError>;

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError>;

    /// All meta entries whose key starts with `prefix`, in key order (e.g. every
    /// partition's offset under `kafka/offset/<topic>/`, or every dead letter under
    /// [`DEAD_LETTER_PREFIX`]).
    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, LogError>;

    /// The first `limit` of [`meta_with_prefix`](Storage::meta_with_prefix), reading no
    /// more than that (dead letters can be many).
    fn meta_with_prefix_limit(&self, prefix: &[u8], limit: usize) -> Result<Vec<MetaEntry>, LogError> {
        let mut all = self.meta_with_prefix(prefix)?;
        all.truncate(limit);
        Ok(all)
    }

    /// Replaces the stored projection snapshot (opaque bytes, see [`crate::snapshot`]) and
    /// makes it durable.
    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError>;

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError>;

    /// The writes held in memory, not yet flushed, if the engine keeps such buffers
    /// apart from its caches (fjall's memtables); `None` otherwise.
    fn write_buffers(&self) -> Option<WriteBuffers> {
        None
    }
}

impl dyn Storage + '_ {
    /// An iterator over the events with seq >= `from`, in order, read in pages so that no
    /// lock or sled iterator is held between calls.
    pub fn events_from(&self, from: u64) -> EventIter<'_> {
        EventIter::new(self, from)
    }
}

/// Iterator over decoded events, in log order; see [`Storage::read_from`].
pub struct EventIter<'a> {
    storage: &'a dyn Storage,
    next: u64,
    page: VecDeque<(u64, Event)>,
    page_size: usize,
    done: bool,
}

impl fmt::Debug for EventIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventIter")
            .field("next", &self.next)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a> EventIter<'a> {
    pub const DEFAULT_PAGE: usize = 1024;

    pub fn new(storage: &'a dyn Storage, from: u64) -> Self {
        EventIter {
            storage,
            next: from,
            page: VecDeque::new(),
            page_size: Self::DEFAULT_PAGE,
            done: false,
        }
    }

    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }
}

impl Iterator for EventIter<'_> {
    type Item = Result<(u64, Event), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            match self.storage.read_from(self.next, self.page_size) {
                Ok(page) => {
                    if page.len() < self.page_size {
                        self.done = true;
                    }
                    if let Some((last, _)) = page.last() {
                        self.next = last + 1;
                    }
                    self.page = page.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.page.pop_front().map(Ok)
    }
}

/// Copies the log in `from` into `to`, which must be empty: every event at the same seq
/// (in appends of `page` events), every meta entry (consumer offsets, dead letters) and
/// the snapshot; then flushes `to`. `progress` gets the number of events copied so far.
/// A seq that `to` does not reproduce (a gap in `from`) is an error naming it, and so
/// is a `to` that is not empty. Returns how many events were copied.
pub fn copy_log(
    from: &dyn Storage,
    to: &dyn Storage,
    page: usize,
    mut progress: impl FnMut(u64),
) -> Result<u64, LogError> {
    let existing = to.last_seq()?;
    if existing != 0 {
        return Err(LogError::corrupt(
            existing,
            "the log to copy into is not empty (it ends at this seq)",
        ));
    }
    let mut next = 1;
    let mut copied = 0u64;
    loop {
        let events = from.read_from(next, page.max(1))?;
        let Some(&(last, _)) = events.last() else {
            break;
        };
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        let events: Vec<Event> = events.into_iter().map(|(_, event)| event).collect();
        for (appended, seq) in to.append(&events, &[])?.into_iter().zip(seqs) {
            if appended != (Appended::Recorded { seq }) {
                return Err(LogError::corrupt(
                    seq,
                    format!(
                        "copied as {appended:?}: the source log is not consecutive from 1 or repeats an id"
                    ),
                ));
            }
        }
        copied += events.len() as u64;
        progress(copied);
        next = last + 1;
    }
    let meta = from.meta_with_prefix(b"")?;
    if !meta.is_empty() {
        to.append(&[], &meta)?;
    }
    to.flush()?;
    // A snapshot is a cache of the same seqs: still valid. One that cannot be read is
    // only a missing cache.
    match from.get_snapshot() {
        Ok(Some(bytes)) => to.put_snapshot(&bytes)?,
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "the snapshot was not copied (unreadable)"),
    }
    Ok(copied)
}

// What both disk backends do the same way over their sorted keys (see `sled_store` for
// the layout they share).

/// Visits the records of `chunk` with seq >= `from`; whether to go on.
pub(super) fn visit_chunk(
    chunk: &codec::Chunk<'_>,
    from: u64,
    visit: &mut RawVisitor<'_>,
) -> Result<bool, LogError> {
    for record in chunk.records_from(from) {
        let (seq, raw) = record?;
        if !visit(seq, raw)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The event at `seq` in `found`, the chunk under the greatest key `<= seq` (its first
/// seq and value), if any.
pub(super) fn event_in_chunk(found: Option<(u64, &[u8])>, seq: u64) -> Result<Option<Event>, LogError> {
    let Some((first, value)) = found else {
        return Ok(None);
    };
    match codec::parse_chunk(first, value)?.record(seq)? {
        Some(raw) => codec::decode_event(seq, raw).map(Some),
        None => Ok(None),
    }
}

/// Visits one customer's events at `seqs` (ascending, from the customer index), reading
/// each chunk once for all of its events; `chunk_at_or_before` finds the chunk under the
/// greatest key `<= seq`. A seq the index names but the log does not hold is an error.
pub(super) fn visit_indexed<V: AsRef<[u8]>>(
    customer_id: &str,
    seqs: &[u64],
    mut chunk_at_or_before: impl FnMut(u64) -> Result<Option<(u64, V)>, LogError>,
    visit: &mut EventVisitor<'_>,
) -> Result<(), LogError> {
    let mut i = 0;
    while i < seqs.len() {
        let value = chunk_at_or_before(seqs[i])?;
        let chunk = value
            .as_ref()
            .map(|(first, value)| codec::parse_chunk(*first, value.as_ref()))
            .transpose()?;
        loop {
            let seq = seqs[i];
            let raw = match &chunk {
                Some(chunk) => chunk.record(seq)?,
                None => None,
            };
            if let Some(event) = codec::decode_indexed(sled_index::TREE, customer_id, seq, raw)? {
                visit(seq, event)?;
            }
            i += 1;
            if i == seqs.len() || !chunk.as_ref().is_some_and(|c| c.contains(seqs[i])) {
                break;
            }
        }
    }
    Ok(())
}

/// The meta entries under `prefix`: `meta`'s, and the dead letters too when `prefix`
/// covers them (`dead_letters` lists those under a prefix of their own keys, which are
/// stored without [`DEAD_LETTER_PREFIX`]), in key order.
pub(super) fn meta_under(
    prefix: &[u8],
    meta: impl FnOnce() -> Result<Vec<MetaEntry>, LogError>,
    dead_letters: impl Fn(&[u8]) -> Result<Vec<MetaEntry>, LogError>,
) -> Result<Vec<MetaEntry>, LogError> {
    if let Some(rest) = prefix.strip_prefix(DEAD_LETTER_PREFIX) {
        return dead_letters(rest);
    }
    let mut out = meta()?;
    if DEAD_LETTER_PREFIX.starts_with(prefix) {
        // A shorter prefix (`b""`, `b"dead"`) covers the dead letters too.
        out.extend(dead_letters(b"")?);
        out.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(out)
}

/// The snapshot file's bytes; `None` if there is none.
pub(super) fn read_snapshot_file(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::SnapshotFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Bytes of the files under `dir` (a log's size on disk, whatever its engine); 0 if
/// it cannot be read.
pub fn size_of_dir(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_of_dir(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Assigns seqs to a batch: `lookup` finds an id already in the log and `stored` reads
/// the event at a seq (only for ids found: retries and taken ids). Seqs of new events
/// start at `last_seq + 1`, in batch order. An id already used is
/// [`Appended::Duplicate`] if its event is this one as recorded, else
/// [`Appended::Taken`] (an unreadable holder counts as this one, as before ids were
/// compared).
pub(crate) fn plan_batch<E>(
    events: &[Event],
    last_seq: u64,
    mut lookup: impl FnMut(&str) -> Result<Option<u64>, E>,
    mut stored: impl FnMut(u64) -> Result<Option<Event>, E>,
) -> Result<Vec<Appended>, E> {
    let mut out = Vec::with_capacity(events.len());
    let mut in_batch: HashMap<&str, (u64, usize)> = HashMap::new();
    let mut next = last_seq + 1;
    for (i, event) in events.iter().enumerate() {
        let id = event.event_id.as_str();
        if let Some(&(existing_seq, j)) = in_batch.get(id) {
            out.push(if tact_core::event::recorded_as(event, &events[j]) {
                Appended::Duplicate { existing_seq }
            } else {
                Appended::Taken { existing_seq }
            });
        } else if let Some(existing_seq) = lookup(id)? {
            let same = stored(existing_seq)?.is_none_or(|s| tact_core::event::recorded_as(event, &s));
            out.push(if same {
                Appended::Duplicate { existing_seq }
            } else {
                Appended::Taken { existing_seq }
            });
        } else {
            in_batch.insert(id, (next, i));
            out.push(Appended::Recorded { seq: next });
            next += 1;
        }
    }
    Ok(out)
}

/// `meta`, then the entries `on_taken` gives for the taken ids of a planned batch.
pub(crate) fn with_taken_meta<'m>(
    meta: &'m [MetaEntry],
    events: &[Event],
    results: &[Appended],
    on_taken: &mut OnTaken<'_>,
) -> std::borrow::Cow<'m, [MetaEntry]> {
    let mut extra = events
        .iter()
        .zip(results)
        .enumerate()
        .filter_map(|(i, (e, r))| match *r {
            Appended::Taken { existing_seq } => on_taken(i, e, existing_seq),
            _ => None,
        })
        .peekable();
    if extra.peek().is_none() {
        return std::borrow::Cow::Borrowed(meta);
    }
    let mut all = meta.to_vec();
    all.extend(extra);
    std::borrow::Cow::Owned(all)
}

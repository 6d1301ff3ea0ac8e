//! [`Log`]: the async, group-committing front end of a [`Storage`].
//!
//! Appenders send their batches to a two-stage pipeline of tokio tasks:
//!
//! 1. the *writer* gathers every batch that is waiting (up to
//!    [`GroupCommit::max_batch_events`], waiting at most [`GroupCommit::max_wait`] for
//!    more) and writes them with one [`Storage::append`];
//! 2. the *syncer* takes every group written so far, makes them durable with one
//!    [`Storage::flush`], calls the `on_durable` hook with the new events in seq order,
//!    and only then answers the appenders.
//!
//! The writer writes group N+1 while the syncer flushes group N, so disk syncs overlap
//! with encoding and indexing. Blocking storage calls run on tokio's blocking pool.
//!
//! Any storage failure poisons the log: the durability of what was written is unknown,
//! so every later append fails with [`LogError::Poisoned`] until the storage is reopened
//! (and the projection rebuilt from what is really there).

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tact_core::Event;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::LogError;
use crate::storage::{Appended, MetaEntry, OnTaken, Storage};

/// A flush that takes this long is logged as a warning (every write waits for it).
pub const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Awaits `work` (a write or flush to disk that callers wait on) and, while it has not
/// finished, warns every [`SLOW_FLUSH`] with how long it has run (`what` says which), so
/// that a disk that holds a write for seconds shows in the log while it does, not only
/// once (and if) it lets go.
pub async fn warn_while_stalled<F: std::future::Future>(what: &'static str, work: F) -> F::Output {
    let started = tokio::time::Instant::now();
    let mut work = std::pin::pin!(work);
    loop {
        match tokio::time::timeout(SLOW_FLUSH, &mut work).await {
            Ok(out) => return out,
            Err(_) => tracing::warn!(
                waited_ms = started.elapsed().as_millis() as u64,
                what,
                "disk write still running: callers wait for it"
            ),
        }
    }
}

/// Called by the syncer with the newly recorded events and their seqs, in seq order,
/// after they are durable and before their appenders are answered. Duplicates are not
/// passed. It runs on tokio's blocking pool, one call at a time; while it runs no
/// append is acknowledged, so keep it short (fold into a projection, bump a metric).
pub type DurableHook = Box<dyn FnMut(&[(u64, &Event)]) + Send + 'static>;

/// How appends are grouped into storage writes and flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// A group stops gathering once it holds this many events (one request is never
    /// split, so a group may exceed it by one request).
    pub max_batch_events: usize,
    /// How long the writer waits for more requests once it has one. Zero (the default)
    /// takes only what is already queued: under load, requests queue up while the
    /// previous group is written, which batches them without adding latency.
    pub max_wait: Duration,
    /// Appends that may wait in the queue before `append` itself waits (backpressure).
    pub queue_depth: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_batch_events: 16_384,
            max_wait: Duration::ZERO,
            queue_depth: 8_192,
        }
    }
}

/// Counters of a [`Log`], for metrics and benches.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Storage writes (groups).
    pub groups: AtomicU64,
    /// Storage flushes.
    pub flushes: AtomicU64,
    /// Events recorded (not counting duplicates).
    pub recorded: AtomicU64,
    /// Duplicates reported.
    pub duplicates: AtomicU64,
    /// The last seq that is durable and was passed to the hook.
    pub durable_seq: AtomicU64,
}

type Reply = oneshot::Sender<Result<Vec<Appended>, LogError>>;

struct Request {
    events: Vec<Event>,
    meta: Vec<MetaEntry>,
    /// Meta entries for events whose id another event holds (see [`Log::submit_checked`]).
    on_taken: Option<Box<OnTaken<'static>>>,
    reply: Reply,
}

enum Msg {
    Append(Request),
    Shutdown(oneshot::Sender<Result<(), LogError>>),
}

/// A group that the writer wrote and the syncer must make durable.
struct Written {
    events: Vec<Event>,
    results: Vec<Appended>,
    /// Each appender's reply and how many events it sent, in order.
    replies: Vec<(Reply, usize)>,
}

enum Synced {
    Group(Written),
    Shutdown(oneshot::Sender<Result<(), LogError>>),
}

/// The first storage failure, once there is one; watchers hear of it at once.
#[derive(Clone)]
struct Poison(Arc<PoisonInner>);

struct PoisonInner {
    cause: OnceLock<Arc<LogError>>,
    watch: watch::Sender<bool>,
}

impl Default for Poison {
    fn default() -> Self {
        Poison(Arc::new(PoisonInner {
            cause: OnceLock::new(),
            watch: watch::Sender::new(false),
        }))
    }
}

impl Poison {
    fn get(&self) -> Option<LogError> {
        self.0.cause.get().map(|e| LogError::Poisoned(Arc::clone(e)))
    }

    fn cause(&self) -> Option<Arc<LogError>> {
        self.0.cause.get().cloned()
    }

    fn set(&self, err: LogError) -> Arc<LogError> {
        let err = Arc::new(err);
        if self.0.cause.set(Arc::clone(&err)).is_ok() {
            tracing::error!(error = %err, "log poisoned: refusing further appends");
            self.0.watch.send_replace(true);
        }
        err
    }
}

/// The log as the service uses it: concurrent `append`s, group-committed, acknowledged
/// only when durable. Must be opened inside a tokio runtime.
pub struct Log {
    tx: mpsc::Sender<Msg>,
    storage: Arc<dyn Storage>,
    stats: Arc<LogStats>,
    poison: Poison,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

async fn submit(
    tx: &mpsc::Sender<Msg>,
    events: Vec<Event>,
    meta: Vec<MetaEntry>,
    on_taken: Option<Box<OnTaken<'static>>>,
) -> Result<PendingAppend, LogError> {
    if events.is_empty() && meta.is_empty() {
        return Ok(PendingAppend { answer: None });
    }
    let (reply, answer) = oneshot::channel();
    tx.send(Msg::Append(Request {
        events,
        meta,
        on_taken,
        reply,
    }))
    .await
    .map_err(|_| LogError::Closed)?;
    Ok(PendingAppend { answer: Some(answer) })
}

/// What a feed (e.g. the Kafka consumer) gets of the [`Log`]: [`LogHandle::submit`]
/// (as [`Log::submit`]) and the storage for reads. Cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    tx: mpsc::Sender<Msg>,
    storage: Arc<dyn Storage>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("storage", &self.storage)
            .finish()
    }
}

impl LogHandle {
    /// [`Log::submit`].
    pub async fn submit(&self, events: Vec<Event>, meta: Vec<MetaEntry>) -> Result<PendingAppend, LogError> {
        submit(&self.tx, events, meta, None).await
    }

    /// [`Log::submit_checked`].
    pub async fn submit_checked(
        &self,
        events: Vec<Event>,
        meta: Vec<MetaEntry>,
        on_taken: Box<OnTaken<'static>>,
    ) -> Result<PendingAppend, LogError> {
        submit(&self.tx, events, meta, Some(on_taken)).await
    }

    /// The storage under the log, for reads.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("storage", &self.storage)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Log {
    /// Starts the writer and syncer tasks over `storage`. `on_durable` is called with
    /// every group of newly recorded events once they are durable and before their
    /// appenders hear back (see [`DurableHook`]); pass `|_| {}` if nothing needs it.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn open<F>(storage: Arc<dyn Storage>, opts: GroupCommit, on_durable: F) -> Log
    where
        F: FnMut(&[(u64, &Event)]) + Send + 'static,
    {
        let opts = GroupCommit {
            max_batch_events: opts.max_batch_events.max(1),
            queue_depth: opts.queue_depth.max(1),
            ..opts
        };
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        let (synced_tx, synced_rx) = mpsc::channel(4);
        let stats = Arc::new(LogStats::default());
        if let Ok(seq) = storage.last_seq() {
            stats.durable_seq.store(seq, Ordering::Release);
        }
        let poison = Poison::default();
        let writer = tokio::spawn(writer(
            Arc::clone(&storage),
            opts,
            rx,
            synced_tx,
            poison.clone(),
            Arc::clone(&stats),
        ));
        let syncer = tokio::spawn(syncer(
            Arc::clone(&storage),
            synced_rx,
            Box::new(on_durable),
            poison.clone(),
            Arc::clone(&stats),
        ));
        tracing::info!(
            max_batch_events = opts.max_batch_events,
            max_wait_us = opts.max_wait.as_micros() as u64,
            "log opened"
        );
        Log {
            tx,
            storage,
            stats,
            poison,
            tasks: Mutex::new(vec![writer, syncer]),
        }
    }

    /// Appends `events` and writes `meta` atomically with them, and returns once they
    /// are durable and the hook has seen them: one [`Appended`] per event, in order.
    /// Concurrent calls are grouped into one storage write and one flush; one call's
    /// events get consecutive seqs.
    pub async fn append(&self, events: Vec<Event>, meta: Vec<MetaEntry>) -> Result<Vec<Appended>, LogError> {
        self.submit(events, meta).await?.await
    }

    /// Queues an append and returns once it is queued (waiting only for queue space),
    /// with a [`PendingAppend`] that resolves exactly like [`append`](Log::append) once
    /// the append is durable.
    ///
    /// The writer takes appends in the order they were queued and writes them in that
    /// order (a group's meta entries are applied in queue order too), so a caller may
    /// keep many submits in flight: seqs follow the order of its `submit` calls, and the
    /// meta of a later submit (e.g. a Kafka offset) is never overwritten by an earlier
    /// one. Dropping the [`PendingAppend`] does not cancel the append, it only gives up
    /// hearing about it.
    pub async fn submit(&self, events: Vec<Event>, meta: Vec<MetaEntry>) -> Result<PendingAppend, LogError> {
        submit(&self.tx, events, meta, None).await
    }

    /// [`submit`](Log::submit), and for each event whose id ANOTHER event already holds
    /// ([`Appended::Taken`]), `on_taken(index in events, event, seq of the holder)` may
    /// give a meta entry written atomically with the append (a feed's dead letter, with
    /// the offset that moves past the message; see [`Storage::append_checked`]). It runs
    /// on the writer's blocking thread, inside the storage write: keep it short.
    pub async fn submit_checked(
        &self,
        events: Vec<Event>,
        meta: Vec<MetaEntry>,
        on_taken: Box<OnTaken<'static>>,
    ) -> Result<PendingAppend, LogError> {
        submit(&self.tx, events, meta, Some(on_taken)).await
    }

    /// A narrow handle for a feed: appends and reads of the storage, nothing else (it
    /// cannot shut the log down; once the log is shut down, its appends fail `Closed`).
    pub fn handle(&self) -> LogHandle {
        LogHandle {
            tx: self.tx.clone(),
            storage: Arc::clone(&self.storage),
        }
    }

    /// The storage under the log, for reads.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// The last seq that is durable and was passed to the hook.
    pub fn durable_seq(&self) -> u64 {
        self.stats.durable_seq.load(Ordering::Acquire)
    }

    /// The storage failure that poisoned the log, if one did (see the module docs): the
    /// log refuses appends and must be reopened.
    pub fn poisoned(&self) -> Option<Arc<LogError>> {
        self.poison.cause()
    }

    /// Resolves once the log is poisoned (at once if it already is), with the cause.
    pub fn when_poisoned(&self) -> impl Future<Output = Arc<LogError>> + Send + 'static {
        let mut rx = self.poison.0.watch.subscribe();
        let poison = self.poison.clone();
        async move {
            loop {
                if let Some(cause) = poison.cause() {
                    return cause;
                }
                if rx.changed().await.is_err() {
                    // The sender lives in `poison`, which this future holds.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Finishes the appends already queued, flushes, and stops the tasks. Later appends
    /// fail with [`LogError::Closed`]. Calling it again is a no-op.
    ///
    /// A poisoned log is not flushed: the storage has failed, and a flush of a failed
    /// disk can hang (sled retries). It returns [`LogError::Poisoned`] instead. This
    /// waits for a write or flush already under way; bound it with a timeout if the
    /// storage may hang (the engine does).
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let (ack, done) = oneshot::channel();
        let result = match self.tx.send(Msg::Shutdown(ack)).await {
            Ok(()) => done.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let tasks = mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "log task failed");
            }
        }
        tracing::info!(durable_seq = self.durable_seq(), "log shut down");
        result
    }
}

/// An append queued by [`Log::submit`]: a future that resolves, like [`Log::append`],
/// to one [`Appended`] per event once the append is durable and the hook has seen it
/// (or to the error that stopped it; [`LogError::Closed`] if the log shut down first).
#[derive(Debug)]
#[must_use = "an append is acknowledged only through its PendingAppend"]
pub struct PendingAppend {
    /// `None`: nothing to append.
    answer: Option<oneshot::Receiver<Result<Vec<Appended>, LogError>>>,
}

impl Future for PendingAppend {
    type Output = Result<Vec<Appended>, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.answer.as_mut() {
            None => Poll::Ready(Ok(Vec::new())),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(LogError::Closed))),
        }
    }
}

async fn writer(
    storage: Arc<dyn Storage>,
    opts: GroupCommit,
    mut rx: mpsc::Receiver<Msg>,
    synced: mpsc::Sender<Synced>,
    poison: Poison,
    stats: Arc<LogStats>,
) {
    let mut shutdown = None;
    while shutdown.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut group: Vec<Request> = Vec::new();
        let mut n = 0;
        let mut take = |msg: Msg, group: &mut Vec<Request>, shutdown: &mut Option<_>| match msg {
            Msg::Append(req) => {
                n += req.events.len();
                group.push(req);
                n
            }
            Msg::Shutdown(ack) => {
                *shutdown = Some(ack);
                usize::MAX
            }
        };
        let mut full = take(first, &mut group, &mut shutdown) >= opts.max_batch_events;
        let deadline = tokio::time::Instant::now() + opts.max_wait;
        while !full {
            let msg = match rx.try_recv() {
                Ok(msg) => msg,
                Err(mpsc::error::TryRecvError::Empty) if !opts.max_wait.is_zero() => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(msg)) => msg,
                        Ok(None) | Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            full = take(msg, &mut group, &mut shutdown) >= opts.max_batch_events;
        }
        if group.is_empty() {
            continue;
        }
        if let Some(err) = poison.get() {
            for req in group {
                let _ = req.reply.send(Err(poisoned(&err)));
            }
            continue;
        }

        let mut events = Vec::with_capacity(n);
        let mut meta = Vec::new();
        let mut replies = Vec::with_capacity(group.len());
        // Each checked request's first event in the group, its event count, and its
        // `on_taken`.
        let mut takers: Vec<(usize, usize, Box<OnTaken<'static>>)> = Vec::new();
        for req in group {
            if let Some(f) = req.on_taken {
                takers.push((events.len(), req.events.len(), f));
            }
            replies.push((req.reply, req.events.len()));
            events.extend(req.events);
            meta.extend(req.meta);
        }
        let store = Arc::clone(&storage);
        let outcome = warn_while_stalled(
            "log append",
            tokio::task::spawn_blocking(move || {
                let result = if takers.is_empty() {
                    store.append(&events, &meta)
                } else {
                    store.append_checked(&events, &meta, &mut |i, event, holder| {
                        // The request the event came from: the last that starts at or
                        // before it (requests without `on_taken` get nothing).
                        let at = takers
                            .partition_point(|(start, _, _)| *start <= i)
                            .checked_sub(1)?;
                        let (start, len, f) = &mut takers[at];
                        let local = i - *start;
                        if local < *len {
                            f(local, event, holder)
                        } else {
                            None
                        }
                    })
                };
                (events, result)
            }),
        )
        .await;
        let (events, results) = match outcome {
            Ok((events, Ok(results))) => (events, results),
            Ok((_, Err(e))) => {
                fail(replies, poison.set(e));
                continue;
            }
            Err(join) => {
                fail(
                    replies,
                    poison.set(LogError::Writer(format!("storage write: {join}"))),
                );
                continue;
            }
        };
        stats.groups.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tact_log_appends_total").increment(1);
        metrics::histogram!("tact_log_group_commit_events").record(events.len() as f64);
        tracing::trace!(events = events.len(), appenders = replies.len(), "group written");
        if let Err(mpsc::error::SendError(Synced::Group(w))) = synced
            .send(Synced::Group(Written {
                events,
                results,
                replies,
            }))
            .await
        {
            fail(w.replies, Arc::new(LogError::Closed));
        }
    }
    // Refuse whatever is still queued behind a shutdown.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Append(req) => {
                let _ = req.reply.send(Err(LogError::Closed));
            }
            Msg::Shutdown(ack) => {
                let _ = ack.send(Ok(()));
            }
        }
    }
    if let Some(ack) = shutdown
        && let Err(mpsc::error::SendError(Synced::Shutdown(ack))) = synced.send(Synced::Shutdown(ack)).await
    {
        let _ = ack.send(Err(LogError::Closed));
    }
    tracing::debug!("log writer stopped");
}

async fn syncer(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::Receiver<Synced>,
    hook: DurableHook,
    poison: Poison,
    stats: Arc<LogStats>,
) {
    let mut hook = Some(hook);
    let mut shutdown = None;
    while shutdown.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut groups = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Synced::Group(w) => groups.push(w),
                Synced::Shutdown(ack) => {
                    shutdown = Some(ack);
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        if groups.is_empty() {
            continue;
        }
        if let Some(err) = poison.get() {
            // An earlier flush failed: these groups may be partly on disk; do not claim them.
            for w in groups {
                for (reply, _) in w.replies {
                    let _ = reply.send(Err(poisoned(&err)));
                }
            }
            continue;
        }
        let Some(mut h) = hook.take() else {
            for w in groups {
                fail(
                    w.replies,
                    Arc::new(LogError::Writer("durability hook was lost".into())),
                );
            }
            continue;
        };
        let store = Arc::clone(&storage);
        let outcome = warn_while_stalled(
            "log flush",
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let flushed = store.flush();
                let took = started.elapsed();
                metrics::histogram!("tact_log_flush_seconds").record(took.as_secs_f64());
                if took >= SLOW_FLUSH {
                    tracing::warn!(
                        took_ms = took.as_millis() as u64,
                        "log flush slow: writes wait for the disk"
                    );
                }
                if flushed.is_ok() {
                    let durable: Vec<(u64, &Event)> = groups
                        .iter()
                        .flat_map(|w| w.results.iter().zip(&w.events))
                        .filter_map(|(r, e)| match r {
                            Appended::Recorded { seq } => Some((*seq, e)),
                            Appended::Duplicate { .. } | Appended::Taken { .. } => None,
                        })
                        .collect();
                    if !durable.is_empty() {
                        h(&durable);
                    }
                }
                (groups, h, flushed)
            }),
        )
        .await;
        match outcome {
            Ok((groups, h, Ok(()))) => {
                hook = Some(h);
                stats.flushes.fetch_add(1, Ordering::Relaxed);
                for w in groups {
                    answer(w, &stats);
                }
            }
            Ok((groups, h, Err(e))) => {
                hook = Some(h);
                let err = poison.set(e);
                for w in groups {
                    fail(w.replies, Arc::clone(&err));
                }
            }
            Err(join) => {
                // The hook panicked (or the task was cancelled): the projection may be
                // half-updated, so stop accepting appends.
                poison.set(LogError::Writer(format!("durability hook: {join}")));
            }
        }
    }
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Synced::Group(w) => fail(w.replies, Arc::new(LogError::Closed)),
            Synced::Shutdown(ack) => {
                let _ = ack.send(Ok(()));
            }
        }
    }
    if let Some(ack) = shutdown {
        let flushed = if let Some(err) = poison.get() {
            tracing::warn!(error = %err, "log poisoned: no final flush");
            Err(err)
        } else {
            let store = Arc::clone(&storage);
            match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(r) => r,
                Err(join) => Err(LogError::Writer(format!("final flush: {join}"))),
            }
        };
        let _ = ack.send(flushed);
    }
    tracing::debug!("log syncer stopped");
}

/// Splits a durable group's results among its appenders.
fn answer(w: Written, stats: &LogStats) {
    let mut results = w.results.into_iter();
    let mut recorded = 0u64;
    let mut max_seq = 0;
    for (reply, count) in w.replies {
        let mine: Vec<Appended> = results.by_ref().take(count).collect();
        for a in &mine {
            if let Appended::Recorded { seq } = a {
                recorded += 1;
                max_seq = max_seq.max(*seq);
            }
        }
        let _ = reply.send(Ok(mine));
    }
    let total = w.events.len() as u64;
    stats.recorded.fetch_add(recorded, Ordering::Relaxed);
    stats.duplicates.fetch_add(total - recorded, Ordering::Relaxed);
    stats.durable_seq.fetch_max(max_seq, Ordering::AcqRel);
}

fn fail(replies: Vec<(Reply, usize)>, err: Arc<LogError>) {
    for (reply, _) in replies {
        let _ = reply.send(Err(LogError::Commit(Arc::clone(&err))));
    }
}

fn poisoned(err: &LogError) -> LogError {
    match err {
        LogError::Poisoned(cause) => LogError::Poisoned(Arc::clone(cause)),
        other => LogError::Writer(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The work a caller waits on runs to its end through the warnings: a stalled write
    /// is reported, never abandoned (its caller still gets its outcome).
    #[test]
    fn a_stalled_write_is_waited_for_to_its_end() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        std::thread::spawn(move || {
            // Past one warning period.
            std::thread::sleep(SLOW_FLUSH + SLOW_FLUSH / 4);
            let _ = tx.send(7);
        });
        let got = rt.block_on(warn_while_stalled("test write", rx));
        assert_eq!(got.ok(), Some(7));
    }
}

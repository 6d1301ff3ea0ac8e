//! The decision audit of the service: every decision answered is handed, after the
//! answer is built, to the [`Auditor`], which writes records in groups on a task of
//! its own (off the hot path), prunes them after the retention, and reads them back
//! for `GetDecision` and `ListDecisions`.
//!
//! - `Decide`, `DecideBatch`, `DecideStream`: the records go into a bounded queue
//!   (`try`, never waiting). When it is full they are dropped and counted
//!   (`tact_audit_dropped_total`, and a warning at most every 10 s): an interactive
//!   decision is never slowed by the audit.
//! - `Authorize`: its record is written with backpressure: the call waits for room in
//!   its queue and then for the record to be written and flushed (grouped with the
//!   other `Authorize` records waiting), and only then answers. If that fails or takes
//!   longer than [`AUTHORIZE_AUDIT_TIMEOUT`], the call fails with UNAVAILABLE: tact
//!   answers no authorization it could not account for.
//!
//! The two kinds go through two lanes, each a queue, a writer loop and a thread of its
//! own ([`RECORDS`], [`DURABLE`]): the records nobody waits for are written at a low CPU
//! priority and within a share of a core, so under a saturating load they are dropped,
//! and an `Authorize` record never waits behind them (for room in the queue, for a
//! group write, or for a thread that the scheduler starves).
//!
//! Each queue is counted in records (a semaphore of `capacity` permits): a batch takes
//! one permit per decision, so a burst of large batches cannot grow memory without bound.
//! Room is taken before a record is made: a record that will be dropped costs nothing
//! to make. Records are encoded on the answering thread straight from the answer
//! (borrowed, no copy: [`RecordBatch`]), so the writer only stores bytes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tact_core::{Explain, Proposal, Span, Timestamp};
use tact_log::audit::{
    AuditError, AuditMethod, AuditRecord, AuditStore, Cursor, ListQuery, RecordBatch, RecordParts,
};
use tact_proto::convert::{self, timestamp_to_pb};
use tact_proto::pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::clock::Clock;
use crate::engine::Decided;

/// Which decisions are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// Every decision (Decide, Authorize, each item of DecideBatch and DecideStream).
    #[default]
    All,
    /// Only Authorize.
    Authorize,
    /// None (records kept earlier stay readable until pruned).
    Off,
}

impl AuditMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::All => "all",
            AuditMode::Authorize => "authorize",
            AuditMode::Off => "off",
        }
    }

    pub fn wants(self, method: AuditMethod) -> bool {
        match self {
            AuditMode::All => true,
            AuditMode::Authorize => method == AuditMethod::Authorize,
            AuditMode::Off => false,
        }
    }
}

impl FromStr for AuditMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(AuditMode::All),
            "authorize" => Ok(AuditMode::Authorize),
            "off" => Ok(AuditMode::Off),
            other => Err(format!("`{other}` is not one of all, authorize, off")),
        }
    }
}

/// Where records also go once written (e.g. a Kafka topic for the warehouse).
/// `publish` must not block; its failures are its own to count and log, and never
/// affect an answer.
pub trait AuditSink: Send + Sync + fmt::Debug {
    fn publish(&self, records: &[AuditRecord]);
}

/// Days records are kept by default.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// Records queued for the writer, at most, by default.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// How long `Authorize` waits for its record to be durable before failing.
pub const AUTHORIZE_AUDIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most records one `ListDecisions` answer holds.
pub const MAX_LIST: usize = 1_000;
/// Records written in one group, at most.
const MAX_GROUP: usize = 8_192;
/// A group smaller than this, with nobody waiting for it, waits [`LINGER`] for more.
const LINGER_BELOW: usize = 1_024;
const LINGER: Duration = Duration::from_millis(10);
/// Records written without anyone waiting are made durable at most this long after.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Records removed per prune step (each step is one short blocking task).
const PRUNE_STEP: usize = 10_000;

#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub mode: AuditMode,
    /// Records answered longer ago than this are pruned.
    pub retention: Duration,
    /// The store; `None`: `<data_dir>/audit` (sled), or memory without a data directory.
    pub store: Option<Arc<dyn AuditStore>>,
    pub sink: Option<Arc<dyn AuditSink>>,
    /// Records queued for the writer, at most (then `Decide`'s are dropped).
    pub capacity: usize,
    /// How often the background prune runs (also once at start).
    pub prune_every: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            mode: AuditMode::All,
            retention: Duration::from_secs(u64::from(DEFAULT_RETENTION_DAYS) * 86_400),
            store: None,
            sink: None,
            capacity: DEFAULT_CAPACITY,
            prune_every: Duration::from_secs(3_600),
        }
    }
}

type Ack = oneshot::Sender<Result<(), Arc<AuditError>>>;

enum Job {
    Records(RecordBatch, OwnedSemaphorePermit),
    Durable(RecordBatch, OwnedSemaphorePermit, Ack),
    Sync(oneshot::Sender<()>),
    /// Write what came before, flush, and end the writer (releasing the store).
    Close(oneshot::Sender<()>),
}

/// Why an `Authorize` record could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum AuditWriteError {
    #[error("the audit record could not be made: {0}")]
    Record(AuditError),
    #[error("the audit trail is unavailable: {0}")]
    Store(Arc<AuditError>),
    #[error("the audit trail did not keep the record within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the audit trail is closed")]
    Closed,
}

/// The audit's writer, pruner and reader.
pub struct Auditor {
    mode: AuditMode,
    store: Arc<dyn AuditStore>,
    /// The [`RECORDS`] lane's queue and its room.
    tx: mpsc::UnboundedSender<Job>,
    permits: Arc<Semaphore>,
    /// The [`DURABLE`] lane's queue (`Authorize`) and its room.
    durable_tx: mpsc::UnboundedSender<Job>,
    durable_permits: Arc<Semaphore>,
    capacity: usize,
    clock: Arc<dyn Clock>,
    retention: Span,
    dropped: AtomicU64,
    /// Milliseconds since `started` of the last "dropped" warning.
    last_warn: AtomicI64,
    started: Instant,
    /// Why the last write failed, until one succeeds (see [`Auditor::failing`]).
    failing: Failing,
}

/// The cause of the audit's last failed write, cleared by the next that succeeds.
type Failing = Arc<std::sync::Mutex<Option<String>>>;

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("mode", &self.mode)
            .field("retention", &self.retention)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The caller's client name, when authenticated, from a request's extensions (the
/// guard puts the [`crate::Caller`] there).
pub fn client_of<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<crate::auth::Caller>()
        .filter(|c| c.authenticated)
        .map(|c| c.id.to_string())
}

impl Auditor {
    /// Starts the writer and the background pruner. Must run inside a tokio runtime.
    pub fn start(store: Arc<dyn AuditStore>, opts: &AuditOptions, clock: Arc<dyn Clock>) -> Arc<Auditor> {
        let capacity = opts.capacity.clamp(1, Semaphore::MAX_PERMITS);
        let (tx, rx) = mpsc::unbounded_channel();
        let (durable_tx, durable_rx) = mpsc::unbounded_channel();
        let auditor = Arc::new(Auditor {
            mode: opts.mode,
            store: Arc::clone(&store),
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            durable_tx,
            durable_permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            clock,
            retention: Span(opts.retention.as_millis().min(i64::MAX as u128) as i64),
            dropped: AtomicU64::new(0),
            last_warn: AtomicI64::new(i64::MIN),
            started: Instant::now(),
            failing: Failing::default(),
        });
        tokio::spawn(write_loop(
            Arc::clone(&store),
            durable_rx,
            opts.sink.clone(),
            DURABLE,
            Arc::clone(&auditor.failing),
        ));
        tokio::spawn(write_loop(
            store,
            rx,
            opts.sink.clone(),
            RECORDS,
            Arc::clone(&auditor.failing),
        ));
        let weak = Arc::downgrade(&auditor);
        let every = opts.prune_every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(auditor) = weak.upgrade() else { return };
                if let Err(e) = auditor.prune_now().await {
                    tracing::warn!(error = %e, "audit prune failed");
                }
            }
        });
        auditor
    }

    pub fn mode(&self) -> AuditMode {
        self.mode
    }

    pub fn wants(&self, method: AuditMethod) -> bool {
        self.mode.wants(method)
    }

    /// Why the audit's last write failed, while no write has succeeded since: then
    /// `Authorize` answers UNAVAILABLE (it never authorizes what it cannot record),
    /// and `GetStatus` says so.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A recorder for up to `expected` records of `method`: it takes room in the queue
    /// for all of them at once, now (none if there is not room for all; at most the
    /// whole queue). Records beyond its room are dropped and counted, unmade.
    pub fn recorder(&self, method: AuditMethod, expected: usize) -> Recorder<'_> {
        let room = expected.min(self.capacity);
        let permit = u32::try_from(room)
            .ok()
            .filter(|&n| n > 0)
            .and_then(|n| Arc::clone(&self.permits).try_acquire_many_owned(n).ok());
        Recorder {
            auditor: self,
            method,
            room: if permit.is_some() { room } else { 0 },
            permit,
            batch: RecordBatch::with_capacity(if room > 0 { room } else { 0 }),
            dropped: 0,
        }
    }

    /// The record of one decision as answered, encoded (for [`submit_durable`](Auditor::submit_durable)).
    pub fn encode_one(
        &self,
        method: AuditMethod,
        proposal: &Proposal,
        decided: &Decided,
        at_requested: bool,
        client: Option<&str>,
        detail: Explain,
    ) -> Result<RecordBatch, AuditError> {
        let mut batch = RecordBatch::with_capacity(1);
        batch.push(&parts(method, proposal, decided, at_requested, client, detail))?;
        Ok(batch)
    }

    fn drop_records(&self, n: u64) {
        metrics::counter!("tact_audit_dropped_total").increment(n);
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let now = self.started.elapsed().as_millis() as i64;
        let last = self.last_warn.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                capacity = self.capacity,
                "audit cannot keep up: decision records dropped (answers are not affected)"
            );
        }
    }

    /// Writes records with backpressure and waits until they are durable (Authorize).
    pub async fn submit_durable(&self, batch: RecordBatch) -> Result<(), AuditWriteError> {
        let n = u32::try_from(batch.len().clamp(1, self.capacity)).unwrap_or(1);
        let keep = async {
            let permit = Arc::clone(&self.durable_permits)
                .acquire_many_owned(n)
                .await
                .map_err(|_| AuditWriteError::Closed)?;
            let (ack, done) = oneshot::channel();
            self.durable_tx
                .send(Job::Durable(batch, permit, ack))
                .map_err(|_| AuditWriteError::Closed)?;
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(AuditWriteError::Store(e)),
                Err(_) => Err(AuditWriteError::Closed),
            }
        };
        match tokio::time::timeout(AUTHORIZE_AUDIT_TIMEOUT, keep).await {
            Ok(r) => r,
            Err(_) => Err(AuditWriteError::Timeout(AUTHORIZE_AUDIT_TIMEOUT)),
        }
    }

    /// Removes the records older than the retention (as of the clock); how many.
    pub async fn prune_now(&self) -> Result<usize, AuditError> {
        let before = self.clock.now().saturating_sub(self.retention);
        let mut total = 0;
        loop {
            let store = Arc::clone(&self.store);
            let n = tokio::task::spawn_blocking(move || store.prune(before, PRUNE_STEP))
                .await
                .unwrap_or(Ok(0))?;
            total += n;
            if n < PRUNE_STEP {
                break;
            }
        }
        if total > 0 {
            metrics::counter!("tact_audit_pruned_total").increment(total as u64);
            tracing::info!(
                pruned = total,
                before = before.0,
                "audit records past the retention pruned"
            );
        }
        Ok(total)
    }

    /// Waits until everything queued so far is written and flushed (tests, shutdown).
    pub async fn sync(&self) {
        self.on_both_lanes(Job::Sync).await;
    }

    /// Writes and flushes everything queued so far, then stops both writers: later
    /// records are dropped. For shutdown.
    pub async fn close(&self) {
        self.on_both_lanes(Job::Close).await;
    }

    /// Sends `job` to both lanes and waits until both have done it.
    async fn on_both_lanes(&self, job: fn(oneshot::Sender<()>) -> Job) {
        let (tx, rx) = oneshot::channel();
        let (durable_tx, durable_rx) = oneshot::channel();
        let sent = self.tx.send(job(tx)).is_ok();
        let durable_sent = self.durable_tx.send(job(durable_tx)).is_ok();
        if sent {
            let _ = rx.await;
        }
        if durable_sent {
            let _ = durable_rx.await;
        }
    }

    pub async fn get(&self, decision_id: String) -> Result<Option<AuditRecord>, AuditError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.get(&decision_id))
            .await
            .unwrap_or(Ok(None))
    }

    pub async fn list(&self, query: ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.list(&query))
            .await
            .unwrap_or(Ok(Vec::new()))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// A record's parts, borrowed from a decision as answered.
fn parts<'a>(
    method: AuditMethod,
    proposal: &'a Proposal,
    decided: &'a Decided,
    at_requested: bool,
    client: Option<&'a str>,
    detail: Explain,
) -> RecordParts<'a> {
    RecordParts {
        decision_id: &decided.decision_id,
        at: decided.at,
        at_requested,
        method,
        detail,
        proposal,
        client,
        decision: &decided.decision,
        policy_version: &decided.policy_version,
        log_position: decided.log_position,
    }
}

/// Records of one call's decisions (see [`Auditor::recorder`]), handed to the writer by
/// [`submit`](Recorder::submit), without waiting.
#[derive(Debug)]
pub struct Recorder<'a> {
    auditor: &'a Auditor,
    method: AuditMethod,
    permit: Option<OwnedSemaphorePermit>,
    /// Records that can still be added (room taken and not used yet).
    room: usize,
    batch: RecordBatch,
    dropped: u64,
}

impl Recorder<'_> {
    /// The record of a decision as answered (before the answer is moved out of it), at
    /// the level of detail it was answered at; dropped (counted) without room.
    pub fn add(
        &mut self,
        proposal: &Proposal,
        decided: &Decided,
        at_requested: bool,
        client: Option<&str>,
        detail: Explain,
    ) {
        if self.room == 0 {
            self.dropped += 1;
            return;
        }
        self.room -= 1;
        if let Err(e) = self.batch.push(&parts(
            self.method,
            proposal,
            decided,
            at_requested,
            client,
            detail,
        )) {
            // Not a decision tact made (its id) or not encodable: a bug, said once per record.
            tracing::error!(error = %e, "audit record not made");
            self.dropped += 1;
        }
    }

    /// Queues the records (the room not used is given back with them when written).
    pub fn submit(self) {
        let Recorder {
            auditor,
            permit,
            batch,
            dropped,
            ..
        } = self;
        if dropped > 0 {
            auditor.drop_records(dropped);
        }
        let Some(permit) = permit else { return };
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if auditor.tx.send(Job::Records(batch, permit)).is_err() {
            auditor.drop_records(n);
        }
    }
}

/// Jobs taken by the writer and not written yet.
#[derive(Default)]
struct Taken {
    batches: Vec<RecordBatch>,
    records: usize,
    permits: Vec<OwnedSemaphorePermit>,
    acks: Vec<Ack>,
    syncs: Vec<oneshot::Sender<()>>,
    close: Option<oneshot::Sender<()>>,
}

impl Taken {
    /// Takes a job; true when it must be written without waiting (someone waits for
    /// it: an `Authorize` record, a sync, a close).
    fn take(&mut self, job: Job) -> bool {
        match job {
            Job::Records(b, permit) => {
                self.records += b.len();
                self.batches.push(b);
                self.permits.push(permit);
                false
            }
            Job::Durable(b, permit, ack) => {
                self.records += b.len();
                self.batches.push(b);
                self.permits.push(permit);
                self.acks.push(ack);
                true
            }
            Job::Sync(done) => {
                self.syncs.push(done);
                true
            }
            Job::Close(done) => {
                self.close = Some(done);
                true
            }
        }
    }

    /// Someone waits for this group (so it is flushed, and written without lingering).
    fn awaited(&self) -> bool {
        !self.acks.is_empty() || !self.syncs.is_empty() || self.close.is_some()
    }

    /// Takes what is already queued, up to [`MAX_GROUP`] records or a sync or close.
    fn take_queued(&mut self, rx: &mut mpsc::UnboundedReceiver<Job>) {
        while self.records < MAX_GROUP && self.syncs.is_empty() && self.close.is_none() {
            match rx.try_recv() {
                Ok(job) => {
                    self.take(job);
                }
                Err(_) => break,
            }
        }
    }
}

/// A writer lane: a queue's writer loop, the thread its store calls run on, and how
/// much of the CPU it may take.
#[derive(Clone, Copy, Debug)]
struct Lane {
    thread: &'static str,
    /// The thread's CPU priority (a nice value: 0 is the default, 19 the lowest);
    /// `None`: the process's.
    nice: Option<i32>,
    /// The most of one core the writer uses (see [`write_loop`]); `None`: no bound.
    share: Option<f64>,
    /// Records per store call, at most, with the core offered to other threads between
    /// calls (see [`write_in_slices`]); `None`: a group is one store call.
    slice: Option<usize>,
}

/// The records nobody waits for (`Decide`, `DecideBatch`, `DecideStream`): below the
/// threads that answer calls in CPU priority, and within 15% of a core. A long group
/// write yields the core to an arriving call instead of holding it for a scheduler
/// slice; under a saturating load these records are dropped (counted).
const RECORDS: Lane = Lane {
    thread: "tact-audit",
    nice: Some(10),
    share: Some(0.15),
    slice: Some(1024),
};

/// `Authorize`'s records, which a call waits for: at the priority of the threads
/// answering calls, never behind [`RECORDS`]' backlog. Their volume is bounded by
/// the callers waiting for them (and their rate limits).
const DURABLE: Lane = Lane {
    thread: "tact-audit-ack",
    nice: None,
    share: None,
    slice: None,
};

/// A writer's own thread: store writes and flushes run there, not on tokio's blocking
/// pool (which `Authorize`'s log reads share), at the lane's CPU priority (on Linux).
struct WriterThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl WriterThread {
    fn start(lane: Lane) -> std::io::Result<WriterThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name(lane.thread.into())
            .spawn(move || {
                if let Some(nice) = lane.nice {
                    lower_priority(nice);
                }
                // Ends when the writer drops its end. A job that panics loses only its
                // answer (the caller sees the writer fail), not the thread.
                while let Ok(job) = rx.recv() {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })?;
        Ok(WriterThread { jobs })
    }

    /// Runs `f` on the thread; `None` if it panicked (or the thread is gone).
    async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .ok()?;
        answer.await.ok()
    }
}

/// Runs `f` on a thread of its own at the CPU priority of the audit's writer (on
/// Linux); the threads it starts keep that priority. The caller's priority is unchanged.
pub fn at_background_priority<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let f = std::sync::Mutex::new(Some(f));
    let take = || f.lock().unwrap_or_else(|p| p.into_inner()).take();
    let ran = std::thread::scope(|scope| {
        let opener = std::thread::Builder::new()
            .name("tact-audit-open".into())
            .spawn_scoped(scope, || {
                if let Some(nice) = RECORDS.nice {
                    lower_priority(nice);
                }
                take().map(|f| f())
            });
        match opener {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => {
                tracing::debug!(error = %e, "no thread to spare: the audit store opens at the caller's priority");
                None
            }
        }
    });
    match ran {
        Some(r) => r,
        None => take().expect("`f` runs once: on the thread, or here if it could not start")(),
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux, where a nice value is a
/// thread's own); elsewhere, and if refused, it stays as it is.
fn lower_priority(nice: i32) {
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::debug!(error = %e, "audit writer keeps its CPU priority");
    }
}

/// A lane's writer: takes every job already queued (up to [`MAX_GROUP`] records),
/// writes them on the lane's thread (in slices, see [`write_in_slices`]), flushes if an `Authorize`
/// record is among them (or [`FLUSH_EVERY`] has passed since the last flush, or the
/// writer was idle that long with records not flushed), answers those, then hands the
/// group to the sink. A `Sync` (from [`Auditor::sync`]) flushes and answers once
/// everything before it is written; the loop ends when the auditor is dropped.
///
/// With a share (the [`RECORDS`] lane), the writer uses at most that much of one core:
/// after a write that took `t`, it rests `t * (1 / share - 1)` before the next (not
/// reading the queue meanwhile). When deciding needs the CPU and records come faster
/// than that share writes them, the queue fills and `Decide` records are dropped
/// (counted): the audit never takes more than its share from answering.
async fn write_loop(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    sink: Option<Arc<dyn AuditSink>>,
    lane: Lane,
    failing: Failing,
) {
    let writer = match WriterThread::start(lane) {
        Ok(writer) => writer,
        Err(e) => {
            // Without its thread the audit cannot write: every job fails (Authorize
            // answers UNAVAILABLE, fail-closed), and the queue's records are dropped.
            tracing::error!(error = %e, thread = lane.thread, "audit writer thread not started: decisions are not audited");
            let e = Arc::new(AuditError::WriterThread(e));
            *failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Records(..) => {}
                    Job::Durable(_, _, ack) => {
                        let _ = ack.send(Err(Arc::clone(&e)));
                    }
                    Job::Sync(done) => {
                        let _ = done.send(());
                    }
                    Job::Close(done) => {
                        let _ = done.send(());
                        return;
                    }
                }
            }
            return;
        }
    };
    let mut taken = Taken::default();
    // Records written since the last flush, and when that was: nobody waits for them,
    // but they are made durable within [`FLUSH_EVERY`] (on the next write, or when the
    // writer has been idle that long).
    let mut unflushed = false;
    let mut flushed_at = Instant::now();
    loop {
        if taken.records == 0 && !taken.awaited() {
            let job = if unflushed {
                let left = FLUSH_EVERY.saturating_sub(flushed_at.elapsed());
                match tokio::time::timeout(left, rx.recv()).await {
                    Ok(job) => job,
                    Err(_) => {
                        let store = Arc::clone(&store);
                        match writer.run(move || store.flush()).await {
                            Some(Ok(())) => {}
                            Some(Err(e)) => tracing::error!(error = %e, "audit records not flushed"),
                            None => tracing::error!("audit flush failed (the writer thread panicked)"),
                        }
                        unflushed = false;
                        flushed_at = Instant::now();
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            match job {
                Some(job) => {
                    taken.take(job);
                }
                None => break,
            }
        }
        taken.take_queued(&mut rx);
        // A small group with nobody waiting for it lingers a little, so that records of
        // single calls are written many at a time (one blocking task and one sled batch
        // per group, not per call).
        if !taken.awaited() && taken.records < LINGER_BELOW {
            tokio::time::sleep(LINGER).await;
            taken.take_queued(&mut rx);
        }
        let Taken {
            batches,
            records,
            permits,
            acks,
            syncs,
            close,
        } = std::mem::take(&mut taken);
        let flush = !acks.is_empty()
            || !syncs.is_empty()
            || close.is_some()
            || ((unflushed || records > 0) && flushed_at.elapsed() >= FLUSH_EVERY);
        let started = Instant::now();
        let written = {
            let store = Arc::clone(&store);
            let work = writer.run(move || {
                let r = write_in_slices(store.as_ref(), &batches, lane.slice);
                let r = r.and_then(|()| if flush { store.flush() } else { Ok(()) });
                (batches, r)
            });
            if acks.is_empty() {
                work.await
            } else {
                tact_log::warn_while_stalled("audit write and flush (Authorize)", work).await
            }
        };
        let busy = started.elapsed();
        if flush {
            unflushed = false;
            flushed_at = Instant::now();
        } else if records > 0 {
            unflushed = true;
        }
        if flush && busy >= tact_log::SLOW_FLUSH {
            tracing::warn!(
                took_ms = busy.as_millis() as u64,
                records,
                "audit write and flush slow: Authorize waits for it"
            );
        }
        drop(permits);
        let (batches, result) = match written {
            Some((batches, r)) => (batches, r.map_err(Arc::new)),
            None => (Vec::new(), Err(Arc::new(AuditError::WriterPanicked))),
        };
        match &result {
            Ok(()) => {
                metrics::counter!("tact_audit_written_total").increment(records as u64);
                if records > 0 || flush {
                    *failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
            Err(e) => {
                metrics::counter!("tact_audit_write_errors_total").increment(1);
                tracing::error!(error = %e, records, "audit records not written");
                *failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
        for done in syncs {
            let _ = done.send(());
        }
        if let (Some(sink), Ok(())) = (&sink, &result)
            && records > 0
        {
            publish(sink.as_ref(), &batches);
        }
        drop(batches);
        if let Some(done) = close {
            drop(store);
            let _ = done.send(());
            return;
        }
        // Rest, to stay within the writer's share of a core (flushes are waiting on the
        // disk, not the CPU, and count too: a bound, not a measure). The queue is not
        // read meanwhile: a task woken for every record sent would cost every call a
        // wake-up on the cores answering them. Jobs wait in the queue (bounded by its
        // room); a sync or close waits for the rest to end.
        let rest = lane
            .share
            .map_or(Duration::ZERO, |share| busy.mul_f64(1.0 / share - 1.0));
        if records > 0 && rest > Duration::ZERO {
            tokio::time::sleep(rest).await;
        }
    }
    match writer.run(move || store.flush()).await {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::warn!(error = %e, "audit store not flushed at shutdown"),
        None => tracing::warn!("audit store not flushed at shutdown (the writer thread panicked)"),
    }
}

/// Writes `batches` with one store call, or with `slice` (at most that many records,
/// and at least one batch) per call, offering the core to other threads between calls.
///
/// A group of thousands of records takes milliseconds to write. Once a thread of lower
/// priority gets the core it keeps it for a scheduler slice (about a millisecond or
/// more), during which a call that arrives on that core waits: the loaded `Decide`'s
/// p99 grew by about that much with the audit on. Written in slices, the wait is one
/// slice's write (1,024 records: about half a millisecond). Slices are not smaller:
/// each store call is a commit, and once a write buffer is full fjall queues a request
/// to rotate it for every commit, on a queue that a busy background worker can let fill
/// up (see README, "Limits, honestly"). Each store call is atomic on its own (its
/// groups and their customer entries); on an error the slices before it stay written
/// and the rest are not.
fn write_in_slices(
    store: &dyn AuditStore,
    batches: &[RecordBatch],
    slice: Option<usize>,
) -> Result<(), AuditError> {
    let Some(max) = slice else {
        return if batches.is_empty() {
            Ok(())
        } else {
            store.write(batches)
        };
    };
    let mut rest = batches;
    while !rest.is_empty() {
        let mut records = 0;
        let end = rest
            .iter()
            .position(|b| {
                records += b.len();
                records >= max
            })
            .map_or(rest.len(), |i| i + 1);
        store.write(&rest[..end])?;
        rest = &rest[end..];
        if !rest.is_empty() {
            std::thread::yield_now();
        }
    }
    Ok(())
}

/// Hands written records to the sink, decoded.
fn publish(sink: &dyn AuditSink, batches: &[RecordBatch]) {
    let mut records = Vec::with_capacity(batches.iter().map(RecordBatch::len).sum());
    for r in batches.iter().flat_map(RecordBatch::records) {
        match r {
            Ok(r) => records.push(r),
            Err(e) => tracing::error!(error = %e, "audit record not published"),
        }
    }
    sink.publish(&records);
}

/// A record as `GetDecision` and `ListDecisions` answer it: the decision rendered
/// exactly as it was answered (the same `decision_to_pb_explained`, from the same facts,
/// at the level of detail it was answered at).
pub fn record_to_pb(r: &AuditRecord) -> pb::AuditedDecision {
    pb::AuditedDecision {
        decision: Some(convert::decision_to_pb_explained(
            &r.decision,
            r.decision_id.clone(),
            &r.policy_version,
            r.log_position,
            r.proposal.customer_id.clone(),
            r.detail,
        )),
        answered_at: Some(timestamp_to_pb(r.answered_at)),
        proposal: Some(pb::DecideRequest {
            customer_id: r.proposal.customer_id.clone(),
            channel: pb::Channel::from(r.proposal.channel) as i32,
            purpose: pb::Purpose::from(r.proposal.purpose) as i32,
            campaign_id: r.proposal.campaign_id.clone(),
            requested_by: r.proposal.requested_by.clone(),
            at: r.at_requested.then(|| timestamp_to_pb(r.at)),
            detail: detail_to_wire(r.detail),
        }),
        client: r.client.clone().unwrap_or_default(),
        method: r.method.as_str().to_owned(),
        at: Some(timestamp_to_pb(r.at)),
        policy_version: r.policy_version.clone(),
        log_position: r.log_position,
    }
}

fn detail_to_wire(e: Explain) -> i32 {
    (match e {
        Explain::Full => pb::Detail::Full,
        Explain::Reasons => pb::Detail::Rules,
        Explain::Verdict => pb::Detail::Verdict,
    }) as i32
}

/// Checks a `ListDecisions` request: the query, or INVALID_ARGUMENT naming the field.
pub fn list_query(req: &pb::ListDecisionsRequest, now: Timestamp) -> Result<ListQuery, tonic::Status> {
    tact_core::event::validate_customer_id(&req.customer_id)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let from = match &req.from {
        Some(t) => convert::timestamp_from_pb(t, "from")?,
        None => Timestamp(i64::MIN),
    };
    let to = match &req.to {
        // Just past now: a decision answered this millisecond is listed.
        None => now.saturating_add(Span(1)),
        Some(t) => convert::timestamp_from_pb(t, "to")?,
    };
    let after =
        if req.page_token.is_empty() {
            None
        } else {
            Some(Cursor::from_token(&req.page_token).ok_or_else(|| {
                tonic::Status::invalid_argument("page_token: not a token ListDecisions gave")
            })?)
        };
    let limit = match req.limit {
        0 => 100,
        n => (n as usize).min(MAX_LIST),
    };
    Ok(ListQuery {
        customer_id: req.customer_id.clone(),
        from,
        to,
        limit,
        after,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tact_core::{Channel, Decision, Purpose, Verdict};
    use tact_log::audit::{DecisionId, MemoryAudit};

    use super::*;

    /// A memory store that remembers how many records each write call carried, and can
    /// fail the call numbered `fail_at`.
    #[derive(Debug, Default)]
    struct Recording {
        inner: MemoryAudit,
        calls: Mutex<Vec<usize>>,
        fail_at: Option<usize>,
    }

    impl AuditStore for Recording {
        fn write(&self, batches: &[RecordBatch]) -> Result<(), AuditError> {
            let mut calls = self.calls.lock().unwrap();
            if self.fail_at == Some(calls.len()) {
                return Err(AuditError::WriterPanicked);
            }
            calls.push(batches.iter().map(RecordBatch::len).sum());
            self.inner.write(batches)
        }
        fn flush(&self) -> Result<(), AuditError> {
            self.inner.flush()
        }
        fn get(&self, decision_id: &str) -> Result<Option<AuditRecord>, AuditError> {
            self.inner.get(decision_id)
        }
        fn list(&self, query: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
            self.inner.list(query)
        }
        fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
            self.inner.prune(before, max)
        }
        fn count(&self) -> Result<usize, AuditError> {
            self.inner.count()
        }
    }

    fn batch(first: u8, records: usize) -> RecordBatch {
        let mut b = RecordBatch::new();
        for n in 0..records {
            let r = AuditRecord {
                decision_id: DecisionId::new(Timestamp(1_000), [first.wrapping_add(n as u8); 10])
                    .to_id_string(),
                answered_at: Timestamp(1_000),
                at: Timestamp(1_000),
                at_requested: false,
                method: AuditMethod::Decide,
                detail: Explain::Verdict,
                proposal: Proposal {
                    customer_id: format!("c{first}-{n}"),
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign_id: String::new(),
                    requested_by: String::new(),
                },
                client: None,
                decision: Decision {
                    verdict: Verdict::Allow,
                    not_before: None,
                    reasons: Vec::new(),
                    alternatives: Vec::new(),
                },
                policy_version: "v".into(),
                log_position: 0,
            };
            b.push(&r.parts()).unwrap();
        }
        b
    }

    #[test]
    fn slices_split_a_group_at_batch_ends_and_write_every_record() {
        // A call ends with the batch that brings it to the slice (5): 3 + 3, then
        // 1 + 4, then 2 + 9 (a batch is never split).
        let batches = vec![
            batch(0, 3),
            batch(10, 3),
            batch(20, 1),
            batch(30, 4),
            batch(40, 2),
            batch(50, 9),
        ];
        let store = Recording::default();
        write_in_slices(&store, &batches, Some(5)).unwrap();
        assert_eq!(*store.calls.lock().unwrap(), vec![6, 5, 11]);
        assert_eq!(store.count().unwrap(), 22);

        let whole = Recording::default();
        write_in_slices(&whole, &batches, None).unwrap();
        assert_eq!(*whole.calls.lock().unwrap(), vec![22]);
        assert_eq!(whole.count().unwrap(), 22);

        let none = Recording::default();
        write_in_slices(&none, &[], Some(5)).unwrap();
        write_in_slices(&none, &[], None).unwrap();
        assert!(none.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failed_slice_stops_the_write_and_is_reported() {
        let batches = vec![batch(0, 3), batch(10, 3), batch(20, 3)];
        let store = Recording {
            fail_at: Some(1),
            ..Recording::default()
        };
        assert!(write_in_slices(&store, &batches, Some(3)).is_err());
        assert_eq!(*store.calls.lock().unwrap(), vec![3]);
        assert_eq!(store.count().unwrap(), 3);
    }
}

//! The consumer thread: messages to durable, applied events, effectively once.
//!
//! - Each poll gathers up to `max_batch` messages; their events, the next offset of every
//!   partition they came from and the dead letters among them go to the log in ONE
//!   append (one sled transaction, flushed before it is acknowledged). Appends are
//!   pipelined (up to `max_in_flight`); the log writes them in submission order, so a
//!   later offset is never overwritten by an earlier one.
//! - On every assignment the consumer seeks to the offsets stored in the log, never to
//!   the group's committed offsets (which are committed afterwards, for lag monitoring
//!   only). Before an assignment or revocation takes effect, every append in flight is
//!   made durable, so the stored offsets are current.
//! - A message below the partition's next expected offset (a redelivery) is skipped; a
//!   producer retry that got a new offset carries an `event_id` already in the log, which
//!   the log reports as a duplicate (its offset still advances).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tact_core::Event;
use tact_log::LogHandle;
use tact_log::feed::DeadLetter;
use tact_log::{MetaEntry, PendingAppend};
use tokio::runtime::Handle;

use crate::decode::{Envelope, MessageAdmission, decode_admitted, find_header};
use crate::feed::Shared;
use crate::offsets::{offset_entry, stored_offsets};
use crate::origin::ORIGIN_HEADER;
use crate::taken::{Letters, Source, dead_letter_on_taken};

/// An append in flight and the offsets it makes durable.
struct InFlight {
    pending: PendingAppend,
    then: Then,
}

/// What an append makes true once it is durable.
struct Then {
    offsets: BTreeMap<i32, i64>,
    events: usize,
    /// Dead letters for taken ids, made while the append was written.
    taken: Letters,
}

/// What the consumer's callbacks share with its loop (they run on the same thread,
/// inside `poll`).
pub(crate) struct IngestContext {
    shared: Arc<Shared>,
    log: LogHandle,
    runtime: Handle,
    in_flight: Mutex<VecDeque<InFlight>>,
    /// The next offset expected per assigned partition (submitted, maybe not durable).
    expected: Mutex<BTreeMap<i32, i64>>,
    /// Partitions resumed at a stored offset whose first message has not been seen yet,
    /// with how far back the last re-seek went (see [`check_resume`]).
    resuming: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(fac, "librdkafka: {log_message}"),
            L::Warning => tracing::warn!(fac, "librdkafka: {log_message}"),
            L::Notice | L::Info => tracing::info!(fac, "librdkafka: {log_message}"),
            L::Debug => tracing::debug!(fac, "librdkafka: {log_message}"),
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        // Whatever happens next, the stored offsets must be current first.
        self.drain();
        let topic = self.shared.opts.topic.clone();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = match stored_offsets(&**self.log.storage(), &topic) {
                    Ok(s) => s,
                    Err(e) => {
                        // Without stored offsets there is no safe place to resume: take
                        // nothing, and fail closed (the partitions stay unassigned).
                        tracing::error!(error = %e, "cannot read stored offsets; not taking the assignment");
                        return;
                    }
                };
                let now = Instant::now();
                let mut taken = Vec::new();
                {
                    let mut tracker = self.shared.tracker.write().unwrap_or_else(|p| p.into_inner());
                    let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
                    let mut resuming = self.resuming.lock().unwrap_or_else(|p| p.into_inner());
                    if !cooperative {
                        tracker.revoke_all();
                        expected.clear();
                        resuming.clear();
                    }
                    for elem in tpl.elements() {
                        if elem.topic() != topic {
                            continue;
                        }
                        let p = elem.partition();
                        let from = stored.get(&p).copied();
                        tracker.assign(p, from.unwrap_or(0), now);
                        expected.insert(p, from.unwrap_or(0));
                        if from.is_some_and(|o| o > 0) {
                            resuming.insert(p, 0);
                        }
                        taken.push((p, from));
                    }
                }
                let rewind = self.shared.opts.resume_rewind.max(0);
                for (p, from) in &taken {
                    let offset = match from {
                        None => Offset::Beginning,
                        Some(x) if *x <= rewind => Offset::Beginning,
                        Some(x) => Offset::Offset(x - rewind),
                    };
                    if let Err(e) = tpl.set_partition_offset(&topic, *p, offset) {
                        tracing::error!(partition = p, error = %e, "cannot set the resume offset");
                    }
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match assigned {
                    Ok(()) => tracing::info!(
                        partitions = ?taken.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                        resume_at = ?taken.iter().map(|(_, o)| o.unwrap_or(0)).collect::<Vec<_>>(),
                        "partitions assigned; resuming at the offsets stored in the log"
                    ),
                    Err(e) => tracing::error!(error = %e, "assign failed"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                {
                    let mut tracker = self.shared.tracker.write().unwrap_or_else(|p| p.into_inner());
                    let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
                    let mut resuming = self.resuming.lock().unwrap_or_else(|p| p.into_inner());
                    for p in &revoked {
                        tracker.revoke(*p);
                        expected.remove(p);
                        resuming.remove(p);
                    }
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "unassign failed");
                }
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                self.shared
                    .tracker
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .revoke_all();
                self.expected.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let _ = consumer.unassign();
            }
        }
    }
}

impl IngestContext {
    /// Waits for every append in flight.
    fn drain(&self) {
        loop {
            let next = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(f) = next else { break };
            let result = self.runtime.block_on(f.pending);
            self.finish(result.map(|_| ()), f.then);
        }
    }

    /// Completes the appends that are already durable; waits for the oldest while more
    /// than `max` are in flight.
    fn reap(&self, max: usize) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let mut q = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let over = q.len() > max;
            let Some(front) = q.front_mut() else { return };
            let result = match Pin::new(&mut front.pending).poll(&mut cx) {
                Poll::Ready(r) => r,
                Poll::Pending if over => {
                    let f = q.pop_front().expect("front exists");
                    drop(q);
                    let r = self.runtime.block_on(f.pending);
                    self.finish(r.map(|_| ()), f.then);
                    continue;
                }
                Poll::Pending => return,
            };
            let f = q.pop_front().expect("front exists");
            drop(q);
            self.finish(result.map(|_| ()), f.then);
        }
    }

    fn finish(&self, result: Result<(), tact_log::LogError>, then: Then) {
        let Then {
            offsets,
            events,
            taken,
        } = then;
        match result {
            Ok(()) => {
                let now = Instant::now();
                let mut tracker = self.shared.tracker.write().unwrap_or_else(|p| p.into_inner());
                for (p, next) in offsets {
                    tracker.applied(p, next, now);
                }
                drop(tracker);
                // Written with the offsets that move past them: now durable.
                let taken = std::mem::take(&mut *taken.lock().unwrap_or_else(|p| p.into_inner()));
                if !taken.is_empty() {
                    metrics::counter!("tact_events_id_taken_total").increment(taken.len() as u64);
                    report_dead_letters(&self.shared, &taken);
                }
                self.shared
                    .counters
                    .events
                    .fetch_add(events as u64, Ordering::Relaxed);
                metrics::counter!("tact_ingest_events_total").increment(events as u64);
            }
            Err(e) => {
                // The log is poisoned: nothing more can be made durable. Stop consuming;
                // the partitions go stale and decisions fail closed.
                tracing::error!(error = %e, "append failed; stopping ingestion");
                self.shared.fatal.store(true, Ordering::Release);
            }
        }
    }

    fn has_in_flight(&self) -> bool {
        !self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// Messages of one poll, turned into one append.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    meta: Vec<MetaEntry>,
    offsets: BTreeMap<i32, i64>,
    dead: Vec<DeadLetter>,
    /// Where each of `events` came from.
    sources: Vec<Source>,
    messages: usize,
}

fn header<'a>(m: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    find_header(m.headers()?.iter().map(|h| (h.key, h.value)), name)
}

impl Batch {
    fn add(
        &mut self,
        m: &BorrowedMessage<'_>,
        expected: &mut BTreeMap<i32, i64>,
        topic: &str,
        admission: &MessageAdmission,
    ) {
        let p = m.partition();
        let offset = m.offset();
        match expected.get(&p) {
            // Revoked while the message was queued: leave it to the new owner.
            None => return,
            // A redelivery of something already submitted.
            Some(&next) if offset < next => return,
            Some(_) => {}
        }
        expected.insert(p, offset + 1);
        self.offsets.insert(p, offset + 1);
        self.messages += 1;
        let message = Envelope {
            key: m.key(),
            value: m.payload(),
            content_type: header(m, "content-type"),
            origin: header(m, ORIGIN_HEADER),
            timestamp: m.timestamp().to_millis(),
        };
        match decode_admitted(message, admission, tact_core::Timestamp(now_millis())) {
            Ok(event) => {
                self.sources.push((p, offset));
                self.events.push(event);
            }
            Err(reason) => {
                let payload = m.payload().unwrap_or_default();
                self.dead.push(DeadLetter {
                    topic: topic.to_owned(),
                    partition: p,
                    offset,
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    reason,
                    payload: payload[..payload.len().min(DeadLetter::MAX_PAYLOAD)].to_vec(),
                    recorded_at: now_millis(),
                });
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs consumers until `shared.stop` (or a fatal log error), restarting one that the
/// watchdog finds stalled or that cannot be created.
pub(crate) fn run(shared: Arc<Shared>, log: LogHandle, runtime: Handle) {
    while !shared.stopping() {
        let ctx = IngestContext {
            shared: Arc::clone(&shared),
            log: log.clone(),
            runtime: runtime.clone(),
            in_flight: Mutex::new(VecDeque::new()),
            expected: Mutex::new(BTreeMap::new()),
            resuming: Mutex::new(BTreeMap::new()),
        };
        let consumer: BaseConsumer<IngestContext> = match consumer_config(&shared).create_with_context(ctx) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the kafka consumer; retrying in 1 s");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = consumer.subscribe(&[&shared.opts.topic]) {
            tracing::error!(error = %e, topic = %shared.opts.topic, "cannot subscribe; retrying in 1 s");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        tracing::info!(topic = %shared.opts.topic, group = %shared.opts.group, "consuming");
        consume(&consumer, &shared);
        consumer.context().drain();
        // Asynchronous: a synchronous commit waits for the group coordinator with no
        // time limit, so a stop with the broker gone would never finish. The positions
        // that matter are in the log already; these are for monitoring.
        commit_positions(&consumer, &shared, CommitMode::Async);
        // Dropping the consumer leaves the group; nothing is owned until the next assignment.
        drop(consumer);
        shared
            .tracker
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .revoke_all();
        if shared.restart.swap(false, Ordering::AcqRel) && !shared.stopping() {
            shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tact_ingest_consumer_restarts_total").increment(1);
            tracing::warn!("consumer restarted by the watchdog");
        }
    }
    tracing::info!("ingestion stopped");
}

fn consume(consumer: &BaseConsumer<IngestContext>, shared: &Shared) {
    let ctx = consumer.context();
    let topic = shared.opts.topic.as_str();
    let mut last_commit = Instant::now();
    loop {
        if shared.stopping() || shared.restart.load(Ordering::Acquire) {
            return;
        }
        let timeout = if ctx.has_in_flight() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        };
        let mut batch = Batch::default();
        let mut next = consumer.poll(timeout);
        {
            while let Some(item) = next {
                match item {
                    Ok(m) => {
                        if check_resume(consumer, &m, topic) {
                            let mut expected = ctx.expected.lock().unwrap_or_else(|p| p.into_inner());
                            batch.add(&m, &mut expected, topic, &shared.opts.admission);
                        }
                    }
                    Err(KafkaError::PartitionEOF(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                }
                if batch.messages >= shared.opts.max_batch {
                    break;
                }
                next = consumer.poll(Duration::ZERO);
            }
        }
        if !batch.is_empty() {
            submit(ctx, shared, batch);
        }
        ctx.reap(shared.opts.max_in_flight);
        if last_commit.elapsed() >= Duration::from_secs(1) {
            commit_positions(consumer, shared, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
}

/// Checks the first message after resuming a partition at a stored offset `x`. Kafka
/// delivers from `x` itself; some brokers (tansu 0.6) answer a fetch at an offset in the
/// middle of a record batch with the *next* batch, silently skipping the rest of the one
/// holding `x`. A first message beyond `x` is therefore not trusted: the partition is
/// re-sought further back (1, 2, 4, ... offsets before `x`, down to the partition's start)
/// until the first message is at or before `x`; what comes before `x` is skipped as
/// already in the log. Returns whether `m` may be used.
fn check_resume(consumer: &BaseConsumer<IngestContext>, m: &BorrowedMessage<'_>, topic: &str) -> bool {
    let ctx = consumer.context();
    let p = m.partition();
    let mut resuming = ctx.resuming.lock().unwrap_or_else(|e| e.into_inner());
    let Some(&back) = resuming.get(&p) else {
        return true;
    };
    let expected = ctx
        .expected
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&p)
        .copied()
        .unwrap_or(0);
    if m.offset() <= expected || expected - back <= 0 {
        resuming.remove(&p);
        if m.offset() > expected {
            tracing::warn!(
                partition = p,
                expected,
                first = m.offset(),
                "offsets missing from the partition after resuming (compacted or transactional topic?)"
            );
        }
        return true;
    }
    let back = (back * 2).max(1).min(expected);
    resuming.insert(p, back);
    drop(resuming);
    tracing::debug!(
        partition = p,
        expected,
        first = m.offset(),
        seek = expected - back,
        "resumed past the stored offset; seeking back"
    );
    if let Err(e) = consumer.seek(topic, p, Offset::Offset(expected - back), Duration::from_secs(5)) {
        tracing::warn!(partition = p, error = %e, "seek back failed; resuming from the partition's start");
        let _ = consumer.seek(topic, p, Offset::Beginning, Duration::from_secs(5));
    }
    false
}

fn submit(ctx: &IngestContext, shared: &Shared, batch: Batch) {
    let topic = shared.opts.topic.as_str();
    let mut meta: Vec<MetaEntry> = batch.meta;
    for (&p, &next) in &batch.offsets {
        meta.push(offset_entry(topic, p, next));
    }
    if !batch.dead.is_empty() {
        for d in &batch.dead {
            meta.push((d.key(), d.encode()));
        }
        report_dead_letters(shared, &batch.dead);
    }
    let events = batch.events.len();
    let taken = Letters::default();
    let on_taken = dead_letter_on_taken(
        topic.to_owned(),
        batch.sources,
        Some(Arc::clone(&taken)),
        now_millis,
    );
    let then = Then {
        offsets: batch.offsets,
        events,
        taken,
    };
    match ctx
        .runtime
        .block_on(ctx.log.submit_checked(batch.events, meta, on_taken))
    {
        Ok(pending) => ctx
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(InFlight { pending, then }),
        Err(e) => ctx.finish(
            Err(e),
            Then {
                offsets: BTreeMap::new(),
                events: 0,
                ..then
            },
        ),
    }
}

/// Counts and logs dead letters, and copies them to the dead-letter topic if there is one.
fn report_dead_letters(shared: &Shared, dead: &[DeadLetter]) {
    shared
        .counters
        .dead_letters
        .fetch_add(dead.len() as u64, Ordering::Relaxed);
    metrics::counter!("tact_ingest_dead_letters_total").increment(dead.len() as u64);
    for d in dead {
        tracing::warn!(partition = d.partition, offset = d.offset, reason = %d.reason, "dead letter");
    }
    if let Some(dlt) = &shared.opts.dead_letter_topic {
        shared.publisher.dead_letters(dlt, dead);
    }
}

/// Commits the durable positions to the group, for lag monitoring only: tact resumes
/// from the offsets in its log.
fn commit_positions(consumer: &BaseConsumer<IngestContext>, shared: &Shared, mode: CommitMode) {
    let tracker = shared.tracker.read().unwrap_or_else(|p| p.into_inner());
    let mut tpl = TopicPartitionList::new();
    for p in tracker.assigned() {
        if let Some(pos) = tracker.position(p).filter(|&pos| pos > 0) {
            let _ = tpl.add_partition_offset(&shared.opts.topic, p, Offset::Offset(pos));
        }
    }
    drop(tracker);
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, mode)
    {
        tracing::debug!(error = %e, "offset commit failed (monitoring only)");
    }
}

fn consumer_config(shared: &Shared) -> rdkafka::ClientConfig {
    let o = &shared.opts;
    let mut c = o.client_config("consumer");
    c.set("group.id", &o.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", o.session_timeout.as_millis().to_string())
        .set(
            "heartbeat.interval.ms",
            (o.session_timeout.as_millis() / 4).max(100).to_string(),
        )
        .set("fetch.wait.max.ms", o.fetch_wait.as_millis().max(1).to_string());
    for (k, v) in &o.extra {
        c.set(k, v);
    }
    c
}

//! [`KafkaFeed`]: the server's feed in Kafka mode, and its watchdog.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tact_core::Event;
use tact_log::LogHandle;
use tact_log::feed::{Access, BoxFeedFuture, Feed, FeedError, FeedStatus, PartitionStatus};

use crate::freshness::{PartitionAccess, Tracker};
use crate::partitioner::partition_for;
use crate::producer::Publisher;
use crate::{IngestError, KafkaOptions};

/// How long stopping the feed waits for its threads (see [`KafkaFeed`]'s `stop`).
const STOP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub events: AtomicU64,
    pub dead_letters: AtomicU64,
    pub restarts: AtomicU64,
}

/// What the feed, its consumer thread and its watchdog share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub opts: KafkaOptions,
    pub tracker: RwLock<Tracker>,
    /// The topic's partition count; 0 until known.
    pub partitions: AtomicI32,
    pub stop: AtomicBool,
    /// Set by the watchdog: the consumer thread recreates its consumer.
    pub restart: AtomicBool,
    /// The log failed: ingestion stopped for good (until tact restarts).
    pub fatal: AtomicBool,
    pub counters: Counters,
    pub publisher: Publisher,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.fatal.load(Ordering::Acquire)
    }
}

/// Kafka mode: consumes the interaction topic into the engine's log and answers who owns
/// a customer and how fresh its state is.
#[derive(Debug)]
pub struct KafkaFeed {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl KafkaFeed {
    /// Creates the producer (no connection is needed yet); [`Feed::start`] starts
    /// consuming.
    pub fn new(opts: KafkaOptions) -> Result<KafkaFeed, IngestError> {
        let publisher = Publisher::new(&opts)?;
        Ok(KafkaFeed {
            shared: Arc::new(Shared {
                tracker: RwLock::new(Tracker::new(opts.max_staleness)),
                opts,
                partitions: AtomicI32::new(0),
                stop: AtomicBool::new(false),
                restart: AtomicBool::new(false),
                fatal: AtomicBool::new(false),
                counters: Counters::default(),
                publisher,
            }),
            threads: Mutex::new(Vec::new()),
        })
    }

    pub fn options(&self) -> &KafkaOptions {
        &self.shared.opts
    }

    /// Asks the consumer and watchdog threads to stop, without waiting (for drops and
    /// panics; [`Feed::stop`] also waits for them).
    pub fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Events applied from the topic (not counting duplicates' skipped work).
    pub fn events_consumed(&self) -> u64 {
        self.shared.counters.events.load(Ordering::Relaxed)
    }

    /// Times the watchdog restarted a stalled consumer.
    pub fn consumer_restarts(&self) -> u64 {
        self.shared.counters.restarts.load(Ordering::Relaxed)
    }

    /// The partition of a customer, once the topic's partition count is known.
    pub fn partition_of(&self, customer_id: &str) -> Option<i32> {
        let n = self.shared.partitions.load(Ordering::Acquire);
        (n > 0).then(|| partition_for(customer_id.as_bytes(), n))
    }
}

impl Feed for KafkaFeed {
    fn access(&self, customer_id: &str) -> Access {
        let Some(partition) = self.partition_of(customer_id) else {
            return Access::NotReady {
                partition: None,
                why: format!(
                    "the partition count of topic {} is not known yet (is the broker at {} reachable?)",
                    self.shared.opts.topic, self.shared.opts.brokers
                ),
            };
        };
        if self.shared.fatal.load(Ordering::Acquire) {
            return Access::NotReady {
                partition: Some(partition),
                why: "ingestion stopped after an event-log failure; restart tact".into(),
            };
        }
        let tracker = self.shared.tracker.read().unwrap_or_else(|p| p.into_inner());
        match tracker.access(partition, Instant::now()) {
            PartitionAccess::Owned { lag, stale } => Access::Owned {
                partition,
                lag,
                stale,
            },
            PartitionAccess::NotOwner => Access::NotOwner { partition },
            PartitionAccess::CatchingUp { since } => Access::NotReady {
                partition: Some(partition),
                why: format!(
                    "partition {partition} was assigned {} ms ago and is still being caught up",
                    since.as_millis()
                ),
            },
            PartitionAccess::Unassigned => Access::NotReady {
                partition: Some(partition),
                why: format!(
                    "waiting for the consumer group {} to assign partitions",
                    self.shared.opts.group
                ),
            },
        }
    }

    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFeedFuture<'a, Result<(), FeedError>> {
        Box::pin(async move {
            self.shared
                .publisher
                .publish(events)
                .await
                .map_err(|e| FeedError::Publish(e.into()))
        })
    }

    fn start(&self, log: LogHandle) -> Result<(), FeedError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| FeedError::Start(e.into()))?;
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if !threads.is_empty() {
            return Err(FeedError::AlreadyStarted);
        }
        let watch: BaseConsumer = self
            .shared
            .opts
            .client_config("watchdog")
            .create()
            .map_err(|e| FeedError::Start(e.into()))?;
        let shared = Arc::clone(&self.shared);
        threads.push(
            std::thread::Builder::new()
                .name("tact-watchdog".into())
                .spawn(move || watchdog(&shared, &watch))
                .map_err(|e| FeedError::Start(e.into()))?,
        );
        let shared = Arc::clone(&self.shared);
        threads.push(
            std::thread::Builder::new()
                .name("tact-consumer".into())
                .spawn(move || crate::consumer::run(shared, log, runtime))
                .map_err(|e| FeedError::Start(e.into()))?,
        );
        tracing::info!(
            brokers = %self.shared.opts.brokers,
            topic = %self.shared.opts.topic,
            group = %self.shared.opts.group,
            max_staleness_ms = self.shared.opts.max_staleness.as_millis() as u64,
            "kafka feed started"
        );
        Ok(())
    }

    fn stop(&self) -> BoxFeedFuture<'_, ()> {
        Box::pin(async move {
            self.shared.stop.store(true, Ordering::Release);
            let threads: Vec<_> = self
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            // The consumer finishes the appends it has started before it exits, so once
            // it is gone everything it acknowledged is in the log. Closing the Kafka
            // client can then still wait on an unreachable broker (librdkafka waits for
            // the group to be left); past STOP_WAIT the threads are left to finish on
            // their own rather than hold up the shutdown of the log.
            let deadline = Instant::now() + STOP_WAIT;
            let mut left = threads;
            while !left.is_empty() && Instant::now() < deadline {
                let (done, running): (Vec<_>, Vec<_>) = left.into_iter().partition(|t| t.is_finished());
                for t in done {
                    let _ = t.join();
                }
                left = running;
                if !left.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            if !left.is_empty() {
                tracing::warn!(
                    threads = left.len(),
                    waited_ms = STOP_WAIT.as_millis() as u64,
                    "kafka client still closing (broker unreachable?); not waiting for it"
                );
            }
            let publisher = self.shared.publisher.clone();
            let _ = tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5))).await;
        })
    }

    fn status(&self) -> FeedStatus {
        let now = Instant::now();
        let tracker = self.shared.tracker.read().unwrap_or_else(|p| p.into_inner());
        let max = tracker.max_staleness();
        FeedStatus {
            topic: self.shared.opts.topic.clone(),
            partitions_total: self.shared.partitions.load(Ordering::Acquire),
            assigned: tracker
                .status(now)
                .into_iter()
                .map(|t| PartitionStatus {
                    partition: t.partition,
                    position: t.position,
                    high_watermark: t.high_watermark,
                    lag_messages: (t.high_watermark - t.position).max(0),
                    lag: t.lag,
                    ready: t.ready,
                    stale: !t.ready || t.lag > max,
                })
                .collect(),
            since_broker_heard: tracker.since_broker_heard(now),
            max_staleness: max,
            dead_letters: self.shared.counters.dead_letters.load(Ordering::Relaxed),
            healthy: !self.shared.fatal.load(Ordering::Acquire) && tracker.healthy(now),
        }
    }
}

/// Probes the broker for the high watermark of every owned partition (with its own
/// client, so a wedged consumer cannot hide behind it), refreshes the partition count,
/// and asks the consumer thread to restart its consumer when a partition with work stops
/// moving.
fn watchdog(shared: &Shared, watch: &BaseConsumer) {
    let opts = &shared.opts;
    let timeout = (opts.max_staleness / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut last_metadata: Option<Instant> = None;
    let mut was_stale = false;
    while !shared.stop.load(Ordering::Acquire) {
        let round = Instant::now();
        if last_metadata.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            match watch.fetch_metadata(Some(&opts.topic), timeout) {
                Ok(md) => {
                    let n = md
                        .topics()
                        .iter()
                        .find(|t| t.name() == opts.topic)
                        .map_or(0, |t| t.partitions().len() as i32);
                    if n == 0 {
                        tracing::warn!(topic = %opts.topic, "topic not found (create it first); retrying");
                    } else {
                        let old = shared.partitions.swap(n, Ordering::AcqRel);
                        if old != n {
                            tracing::info!(topic = %opts.topic, partitions = n, "topic layout known");
                        }
                        last_metadata = Some(Instant::now());
                    }
                    shared
                        .tracker
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .heard(round);
                }
                Err(e) => tracing::debug!(error = %e, "metadata request failed"),
            }
        }
        let assigned = shared
            .tracker
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .assigned();
        for p in assigned {
            let asked = Instant::now();
            match watch.fetch_watermarks(&opts.topic, p, timeout) {
                Ok((_low, high)) => shared
                    .tracker
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .probed(p, high, asked),
                Err(e) => tracing::debug!(partition = p, error = %e, "watermark request failed"),
            }
        }
        let now = Instant::now();
        let (stale, stalled) = {
            let t = shared.tracker.read().unwrap_or_else(|p| p.into_inner());
            for p in t.status(now) {
                let partition = p.partition.to_string();
                metrics::gauge!("tact_ingest_lag_messages", "partition" => partition.clone())
                    .set((p.high_watermark - p.position).max(0) as f64);
                metrics::gauge!("tact_ingest_lag_seconds", "partition" => partition).set(p.lag.as_secs_f64());
            }
            metrics::gauge!("tact_ingest_partitions_owned").set(t.assigned().len() as f64);
            (
                !t.assigned().is_empty() && !t.healthy(now),
                t.stalled(opts.stall_after, now),
            )
        };
        metrics::gauge!("tact_ingest_stale").set(if stale { 1.0 } else { 0.0 });
        if stale != was_stale {
            if stale {
                tracing::warn!(
                    max_staleness_ms = opts.max_staleness.as_millis() as u64,
                    "state is stale: marketing and sales decisions are denied until it catches up"
                );
            } else {
                tracing::info!("state is fresh again");
            }
            was_stale = stale;
        }
        if !stalled.is_empty() && !shared.restart.swap(true, Ordering::AcqRel) {
            tracing::warn!(partitions = ?stalled, stall_after_ms = opts.stall_after.as_millis() as u64,
                "consumer stalled with work pending; restarting it");
        }
        let spent = round.elapsed();
        if spent < opts.probe_interval {
            std::thread::sleep(opts.probe_interval - spent);
        }
    }
}

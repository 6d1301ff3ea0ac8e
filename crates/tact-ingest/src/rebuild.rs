//! `tact replay --from-kafka`: refill the local log from the topic's beginning, for a new
//! node or a lost disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tact_log::feed::DeadLetter;
use tact_log::{Appended, Log, MetaEntry};
use tokio::runtime::Handle;

use crate::decode::{Envelope, decode_admitted, find_header};
use crate::offsets::offset_entry;
use crate::origin::ORIGIN_HEADER;
use crate::taken::{Source, dead_letter_on_taken};
use crate::{IngestError, KafkaOptions};

fn now() -> tact_core::Timestamp {
    tact_core::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

/// What [`rebuild_from_topic`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RebuildStats {
    pub partitions: i32,
    pub messages: u64,
    pub recorded: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub elapsed: Duration,
}

impl RebuildStats {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads every partition of the topic from its beginning up to its end as of the start
/// (and on while messages keep coming, until the topic is quiet for half a second),
/// appending the events (and the offsets they came from, and dead letters) to `log`.
/// Events already in the log are reported as duplicates. Call from a thread that may
/// block (not a runtime worker); `runtime` runs the log's appends.
pub fn rebuild_from_topic(
    opts: &KafkaOptions,
    log: &Log,
    runtime: &Handle,
) -> Result<RebuildStats, IngestError> {
    let started = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut config = opts.client_config("rebuild");
    config
        .set(
            "group.id",
            format!("{}-rebuild-{}", opts.group, std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config.create()?;
    let md = consumer.fetch_metadata(Some(&opts.topic), timeout)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == opts.topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(IngestError::Topic {
            topic: opts.topic.clone(),
            why: "not found, or it has no partitions".into(),
        });
    }
    // The end of each partition now: what was produced before the rebuild started.
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(&opts.topic, p, timeout)?;
        if high > low {
            remaining.insert(p, high);
            tpl.add_partition_offset(&opts.topic, p, Offset::Beginning)?;
        }
    }
    let mut stats = RebuildStats {
        partitions: partitions.len() as i32,
        ..RebuildStats::default()
    };
    if remaining.is_empty() {
        stats.elapsed = started.elapsed();
        return Ok(stats);
    }
    consumer.assign(&tpl)?;
    let mut pending = std::collections::VecDeque::new();
    let mut idle_since = Instant::now();
    // Until every partition reached its end as of the start, then until the topic has
    // been quiet for a moment: some brokers (tansu 0.6) report a high watermark at the
    // start of the last record batch, not after it.
    loop {
        let mut events = Vec::new();
        let mut sources: Vec<Source> = Vec::new();
        let mut meta: Vec<MetaEntry> = Vec::new();
        let mut offsets = BTreeMap::new();
        let mut next = consumer.poll(Duration::from_millis(200));
        while let Some(item) = next {
            let m = item?;
            let p = m.partition();
            stats.messages += 1;
            offsets.insert(p, m.offset() + 1);
            if remaining.get(&p).is_some_and(|&end| m.offset() + 1 >= end) {
                remaining.remove(&p);
            }
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| find_header(h.iter().map(|h| (h.key, h.value)), name))
            };
            let envelope = Envelope {
                key: m.key(),
                value: m.payload(),
                content_type: header("content-type"),
                origin: header(ORIGIN_HEADER),
                timestamp: m.timestamp().to_millis(),
            };
            // Judged as the live consumer judged it: against the message's timestamp.
            match decode_admitted(envelope, &opts.admission, now()) {
                Ok(e) => {
                    sources.push((p, m.offset()));
                    events.push(e);
                }
                Err(reason) => {
                    stats.dead_letters += 1;
                    let payload = m.payload().unwrap_or_default();
                    let d = DeadLetter {
                        topic: opts.topic.clone(),
                        partition: p,
                        offset: m.offset(),
                        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        reason,
                        payload: payload[..payload.len().min(DeadLetter::MAX_PAYLOAD)].to_vec(),
                        recorded_at: 0,
                    };
                    meta.push((d.key(), d.encode()));
                }
            }
            if events.len() + meta.len() >= opts.max_batch {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        if offsets.is_empty() {
            let quiet = idle_since.elapsed();
            if remaining.is_empty() && quiet > Duration::from_millis(500) {
                break;
            }
            if quiet > Duration::from_secs(30) {
                return Err(IngestError::Topic {
                    topic: opts.topic.clone(),
                    why: format!(
                        "no messages for 30 s with partitions {:?} unfinished",
                        remaining.keys()
                    ),
                });
            }
            continue;
        }
        idle_since = Instant::now();
        for (p, next) in offsets {
            meta.push(offset_entry(&opts.topic, p, next));
        }
        // A message with another event under a taken id: a dead letter, as live.
        let on_taken = dead_letter_on_taken(opts.topic.clone(), sources, None, || 0);
        pending.push_back(runtime.block_on(log.submit_checked(events, meta, on_taken))?);
        while pending.len() > opts.max_in_flight.max(1) {
            if let Some(f) = pending.pop_front() {
                count(&mut stats, runtime.block_on(f)?);
            }
        }
    }
    for f in pending {
        count(&mut stats, runtime.block_on(f)?);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn count(stats: &mut RebuildStats, appended: Vec<Appended>) {
    for a in appended {
        match a {
            Appended::Recorded { .. } => stats.recorded += 1,
            Appended::Duplicate { .. } => stats.duplicates += 1,
            Appended::Taken { .. } => stats.dead_letters += 1,
        }
    }
}

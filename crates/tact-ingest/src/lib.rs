//! tact's Kafka ingestion: interaction events from a topic into the durable log,
//! effectively once, with freshness tracking and partition ownership.
//!
//! - [`KafkaFeed`] is the server's [`tact_log::feed::Feed`] in Kafka mode: a consumer
//!   thread appends each batch of messages to the log *together with the offsets it came
//!   from* (one atomic, flushed append) and resumes from those stored offsets on every
//!   assignment; a watchdog thread probes the broker's high watermarks to know how fresh
//!   each owned partition is ([`freshness`]) and restarts a consumer that stalls;
//!   [`KafkaFeed::publish`](tact_log::feed::Feed::publish) produces what tact writes itself
//!   (idempotent producer, `acks=all`) before it is recorded locally.
//! - [`rebuild_from_topic`] refills a log from the topic's beginning (`tact replay
//!   --from-kafka`); [`Publisher::produce`] publishes events (`tact produce`).
//! - [`partitioner`] is Kafka's default key partitioner, which decides ownership.

mod consumer;
mod decode;
mod error;
mod feed;
pub mod freshness;
mod offsets;
mod origin;
pub mod partitioner;
mod producer;
mod rebuild;
mod taken;

use std::collections::BTreeMap;
use std::time::Duration;

pub use decode::{Envelope, MessageAdmission, decode_admitted};
pub use error::IngestError;
pub use feed::KafkaFeed;
pub use offsets::{offset_key, offset_prefix, stored_offsets};
pub use origin::{ORIGIN_HEADER, OriginKey, OriginKeyError};
pub use producer::{ProduceStats, Publisher};
pub use rebuild::{RebuildStats, rebuild_from_topic};
pub use tact_proto::WireFormat;

/// How tact talks to Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaOptions {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// The topic of interaction events (key: customer id; value: `tact.v1.InteractionEvent`
    /// in protobuf or its canonical JSON).
    pub topic: String,
    /// The consumer group; instances in one group split the partitions.
    pub group: String,
    /// Where bad messages are also sent (they are always kept in the log's dead-letter tree).
    pub dead_letter_topic: Option<String>,
    /// Beyond this lag, marketing and sales decisions are denied (`stale-state`).
    pub max_staleness: Duration,
    /// Messages per log append.
    pub max_batch: usize,
    /// Appends in flight (written, not yet durable) before the consumer waits.
    pub max_in_flight: usize,
    /// How often the watchdog asks the broker for high watermarks.
    pub probe_interval: Duration,
    /// A partition with work that has not moved for this long restarts the consumer.
    pub stall_after: Duration,
    /// How long producing one of tact's own events may take before it fails.
    pub publish_timeout: Duration,
    /// The consumer group session timeout (how fast a dead instance's partitions move).
    pub session_timeout: Duration,
    /// How long the broker may hold a fetch while it has nothing new (`fetch.wait.max.ms`).
    /// Some brokers hold it this long even when new data arrives, so it bounds how late
    /// a consent withdrawal can be seen; keep it small.
    pub fetch_wait: Duration,
    /// On assignment, fetch from this many offsets before the stored one (what comes
    /// before it is skipped as already applied). Kafka needs 0; tansu 0.6 answers a fetch
    /// in the middle of a record batch with the next batch (or nothing), so resuming
    /// there would skip messages unless the fetch starts at or before the batch's start.
    pub resume_rewind: i64,
    pub client_id: String,
    /// The format tact produces in.
    pub format: WireFormat,
    /// Extra librdkafka settings for every client (e.g. `security.protocol`).
    pub extra: BTreeMap<String, String>,
    /// What messages from the topic must satisfy, and the key tact's own producer
    /// signs with (instances sharing a topic must share it; see `origin.rs`). A
    /// [`Publisher`] signs what it produces only if this has a key.
    pub admission: MessageAdmission,
}

impl KafkaOptions {
    pub const DEFAULT_TOPIC: &'static str = "tact.interactions";
    pub const DEFAULT_GROUP: &'static str = "tact";

    pub fn new(brokers: impl Into<String>) -> Self {
        let max_staleness = Duration::from_secs(5);
        KafkaOptions {
            brokers: brokers.into(),
            topic: Self::DEFAULT_TOPIC.into(),
            group: Self::DEFAULT_GROUP.into(),
            dead_letter_topic: None,
            max_staleness,
            max_batch: 10_000,
            max_in_flight: 8,
            probe_interval: Self::probe_interval_for(max_staleness),
            stall_after: max_staleness * 2,
            publish_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(5),
            resume_rewind: 10_000,
            client_id: "tact".into(),
            format: WireFormat::Protobuf,
            extra: BTreeMap::new(),
            admission: MessageAdmission::default(),
        }
    }

    /// A tenth of the staleness limit, between 20 ms and 500 ms.
    pub fn probe_interval_for(max_staleness: Duration) -> Duration {
        (max_staleness / 10).clamp(Duration::from_millis(20), Duration::from_millis(500))
    }

    /// Sets the staleness limit and the intervals that follow from it.
    pub fn with_max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self.probe_interval = Self::probe_interval_for(max_staleness);
        self.stall_after = max_staleness * 2;
        self
    }

    /// A librdkafka configuration with the brokers, client id and extra settings.
    fn client_config(&self, role: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("{}-{role}", self.client_id));
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

//! [`Feed`]: an external event stream the log is fed from (Kafka, in `tact-ingest`).
//!
//! The contract between the server and a feed, here below both so that neither depends
//! on the other: `tact-server` knows a feed only through this trait, so it stays free of
//! Kafka, and `tact-ingest` implements it against the log alone (a [`LogHandle`]). The feed
//! says who answers for a customer and how fresh that customer's state is
//! ([`Feed::access`]), publishes what tact writes itself before it is recorded locally
//! ([`Feed::publish`]), and is started once the engine exists and stopped before the log
//! closes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tact_core::Event;

use crate::log::LogHandle;

/// A boxed, sendable future (the trait must stay object-safe).
pub type BoxFeedFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether this instance may answer for a customer, and how fresh its state is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// This instance owns the customer's partition and its state is at most `lag` behind
    /// the stream; `stale` when that exceeds the feed's limit.
    Owned {
        partition: i32,
        lag: Duration,
        stale: bool,
    },
    /// Another instance owns the customer's partition.
    NotOwner { partition: i32 },
    /// This instance owns (or will own) the partition but has not yet caught up with it
    /// since it was assigned, or does not know the partition layout yet.
    NotReady { partition: Option<i32>, why: String },
}

/// One partition as the feed sees it, for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: i32,
    /// The next offset to be applied (everything before it is durable in the log).
    pub position: i64,
    /// The broker's high watermark when last asked.
    pub high_watermark: i64,
    /// `high_watermark - position`, floored at 0.
    pub lag_messages: i64,
    /// How far behind the stream this partition's state may be.
    pub lag: Duration,
    pub ready: bool,
    pub stale: bool,
}

/// The feed's state, for `GetStatus`, health and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStatus {
    pub topic: String,
    pub partitions_total: i32,
    /// The partitions this instance owns.
    pub assigned: Vec<PartitionStatus>,
    /// Time since the broker last answered; `None` if it never has.
    pub since_broker_heard: Option<Duration>,
    pub max_staleness: Duration,
    pub dead_letters: u64,
    /// True when every owned partition is ready and fresh.
    pub healthy: bool,
}

/// A feed's own error (its client's, its runtime's), kept as the source of a
/// [`FeedError`]: the log does not know which stream a feed talks to.
pub type FeedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("publishing to the event stream failed: {0}")]
    Publish(#[source] FeedSource),
    #[error("cannot start the event feed: {0}")]
    Start(#[source] FeedSource),
    #[error("cannot start the event feed: already started")]
    AlreadyStarted,
}

/// An external stream of interaction events that feeds the engine's log.
pub trait Feed: Send + Sync + fmt::Debug {
    /// Who answers for `customer_id`, and how fresh its state is.
    fn access(&self, customer_id: &str) -> Access;

    /// Publishes events tact writes (authorizations, recorded events) to the stream,
    /// durably (acknowledged by the stream), before they are recorded locally.
    fn publish<'a>(&'a self, events: &'a [Event]) -> BoxFeedFuture<'a, Result<(), FeedError>>;

    /// Starts consuming into the log behind `log` (appends and reads of the storage;
    /// nothing else of the server). Called once, after state is rebuilt.
    fn start(&self, log: LogHandle) -> Result<(), FeedError>;

    /// Stops consuming; resolves once nothing more will be appended.
    fn stop(&self) -> BoxFeedFuture<'_, ()>;

    fn status(&self) -> FeedStatus;
}

/// A message from the stream that could not be used, kept in the log's dead-letter
/// tree (see [`crate::DEAD_LETTER_PREFIX`]) under [`DeadLetter::key`], written in the
/// same atomic append as the offset that moves past it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message key, lossily decoded as UTF-8.
    pub key: String,
    /// Why it was rejected, naming the field at fault where there is one.
    pub reason: String,
    /// The message value, at most [`DeadLetter::MAX_PAYLOAD`] bytes of it.
    pub payload: Vec<u8>,
    /// Milliseconds since the epoch.
    pub recorded_at: i64,
}

impl DeadLetter {
    pub const MAX_PAYLOAD: usize = 64 << 10;

    /// The meta key: the dead-letter prefix, the topic, `/`, and the big-endian
    /// partition and offset, so they list in partition and offset order.
    pub fn key(&self) -> Vec<u8> {
        let mut k = crate::DEAD_LETTER_PREFIX.to_vec();
        k.extend_from_slice(self.topic.as_bytes());
        k.push(b'/');
        k.extend_from_slice(&self.partition.to_be_bytes());
        k.extend_from_slice(&self.offset.to_be_bytes());
        k
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<DeadLetter, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod feed_error_tests {
    use super::FeedError;

    #[test]
    fn a_feed_error_keeps_its_source() {
        let cause = std::io::Error::other("no more threads");
        let e = FeedError::Start(cause.into());
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(e.to_string(), "cannot start the event feed: no more threads");
    }
}

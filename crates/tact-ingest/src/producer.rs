//! Producing to the interaction topic: tact's own events (authorizations, recorded
//! events), dead letters, and `tact produce`.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tact_core::Event;
use tact_log::feed::DeadLetter;
use tact_proto::{WireFormat, event_to_bytes};

use crate::origin::{ORIGIN_HEADER, OriginKey};
use crate::{IngestError, KafkaOptions};

/// An idempotent, `acks=all` producer keyed by customer id with Kafka's default
/// (murmur2) partitioner, so every client agrees on a customer's partition.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    format: WireFormat,
    /// Signs each message as tact's own (see `origin.rs`); `None` for `tact produce`.
    origin_key: Option<OriginKey>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// What [`Publisher::produce`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProduceStats {
    pub events: u64,
    pub elapsed: Duration,
}

impl ProduceStats {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Publisher {
    pub fn new(opts: &KafkaOptions) -> Result<Self, IngestError> {
        let mut c = opts.client_config("producer");
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                opts.publish_timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in &opts.extra {
            c.set(k, v);
        }
        Ok(Publisher {
            producer: c.create()?,
            topic: opts.topic.clone(),
            format: opts.format,
            origin_key: opts.admission.origin_key.clone(),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Queues one event (waiting while librdkafka's queue is full) and returns its
    /// delivery, which resolves once the broker has acknowledged it. Dropping the
    /// delivery does not cancel the message.
    pub async fn enqueue(&self, event: &Event) -> Result<DeliveryFuture, IngestError> {
        let payload = event_to_bytes(event, self.format);
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(self.format.content_type()),
        });
        if let Some(key) = &self.origin_key {
            headers = headers.insert(Header {
                key: ORIGIN_HEADER,
                value: Some(&key.sign(&payload)),
            });
        }
        loop {
            let record = FutureRecord::to(&self.topic)
                .key(event.customer_id.as_bytes())
                .payload(&payload)
                .headers(headers.clone());
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Produces `events` and waits until the broker has acknowledged all of them.
    pub async fn publish(&self, events: &[Event]) -> Result<(), IngestError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for e in events {
            deliveries.push(self.enqueue(e).await?);
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(IngestError::Stopped),
            }
        }
        Ok(())
    }

    /// Produces every event of `events`, at most `window` unacknowledged at a time, and
    /// waits for all acknowledgements.
    pub async fn produce(
        &self,
        events: impl IntoIterator<Item = Event>,
        window: usize,
    ) -> Result<ProduceStats, IngestError> {
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::new();
        let mut n = 0u64;
        for e in events {
            pending.push_back(self.enqueue(&e).await?);
            n += 1;
            while pending.len() > window.max(1) {
                if let Some(d) = pending.pop_front() {
                    wait(d).await?;
                }
            }
        }
        for d in pending {
            wait(d).await?;
        }
        Ok(ProduceStats {
            events: n,
            elapsed: started.elapsed(),
        })
    }

    /// Sends dead letters to `topic` without waiting (the log's dead-letter tree is the
    /// record; this copy is for other tools). Each keeps its key and value and gains
    /// `tact-dead-letter-*` headers with the reason, source partition and offset.
    pub fn dead_letters(&self, topic: &str, dead: &[DeadLetter]) {
        for d in dead {
            let partition = d.partition.to_string();
            let offset = d.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "tact-dead-letter-reason",
                    value: Some(d.reason.as_str()),
                })
                .insert(Header {
                    key: "tact-dead-letter-source",
                    value: Some(d.topic.as_str()),
                })
                .insert(Header {
                    key: "tact-dead-letter-partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "tact-dead-letter-offset",
                    value: Some(offset.as_str()),
                });
            let record = FutureRecord::to(topic)
                .key(d.key.as_bytes())
                .payload(d.payload.as_slice())
                .headers(headers);
            if let Err((e, _)) = self.producer.send_result(record) {
                tracing::warn!(error = %e, topic, "cannot send a dead letter to the dead-letter topic");
            }
        }
    }

    // --- Decision audit (issue 11, section 2) ---

    /// Queues one JSON message keyed `key` to this publisher's topic without waiting:
    /// an error at once when librdkafka's queue is full (the decisions topic must never
    /// hold anything up). The delivery resolves once the broker has it.
    pub fn try_send_json(&self, key: &[u8], payload: &[u8]) -> Result<DeliveryFuture, IngestError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        let record = FutureRecord::to(&self.topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        self.producer.send_result(record).map_err(|(e, _)| e.into())
    }

    /// Waits for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), IngestError> {
        self.producer.flush(timeout)?;
        Ok(())
    }
}

async fn wait(d: DeliveryFuture) -> Result<(), IngestError> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(IngestError::Stopped),
    }
}

//! The decisions topic: with Kafka and `kafka_decision_topic`, every audit record is
//! also produced as canonical protobuf JSON of `tact.v1.AuditedDecision`, keyed by
//! customer id, for the warehouse. Never waits and never fails an answer: a full
//! producer queue or a failed delivery is counted (`tact_audit_kafka_failures_total`)
//! and logged at most every 10 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tact_ingest::{KafkaOptions, Publisher};
use tact_log::audit::AuditRecord;
use tact_server::AuditSink;
use tact_server::audit::record_to_pb;

#[derive(Debug)]
pub struct KafkaDecisions {
    publisher: Publisher,
    failures: Arc<Failures>,
}

#[derive(Debug)]
struct Failures {
    count: AtomicU64,
    /// Milliseconds since `started` of the last warning (+1; 0: never).
    last_warn: AtomicU64,
    started: Instant,
}

impl Failures {
    fn add(&self, n: u64, error: &dyn std::fmt::Display) {
        metrics::counter!("tact_audit_kafka_failures_total").increment(n);
        let total = self.count.fetch_add(n, Ordering::Relaxed) + n;
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_warn.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %error, failures_total = total, "decision records not produced to the decisions topic (answers are not affected)");
        }
    }
}

impl KafkaDecisions {
    /// A producer for `topic` on the brokers of `kafka`.
    pub fn new(kafka: &KafkaOptions, topic: &str) -> Result<KafkaDecisions, tact_ingest::IngestError> {
        let mut opts = kafka.clone();
        opts.topic = topic.to_owned();
        opts.admission.origin_key = None;
        Ok(KafkaDecisions {
            publisher: Publisher::new(&opts)?,
            failures: Arc::new(Failures {
                count: AtomicU64::new(0),
                last_warn: AtomicU64::new(0),
                started: Instant::now(),
            }),
        })
    }
}

impl AuditSink for KafkaDecisions {
    fn publish(&self, records: &[AuditRecord]) {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let json = match serde_json::to_vec(&record_to_pb(r)) {
                Ok(json) => json,
                Err(e) => {
                    self.failures.add(1, &e);
                    continue;
                }
            };
            match self
                .publisher
                .try_send_json(r.proposal.customer_id.as_bytes(), &json)
            {
                Ok(d) => deliveries.push(d),
                Err(e) => self.failures.add(1, &e),
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let failures = Arc::clone(&self.failures);
        tokio::spawn(async move {
            for d in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => failures.add(1, &e),
                    Err(e) => failures.add(1, &e),
                }
            }
        });
    }
}

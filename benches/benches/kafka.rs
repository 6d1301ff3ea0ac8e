//! Kafka ingestion against a real broker (tansu, see `scripts/install-tansu`):
//!
//! 1. **Sustained ingest**: `TACT_BENCH_KAFKA_EVENTS` events (default 500,000) are
//!    produced to a 4-partition topic first, timing the broker's own produce rate (the
//!    same-run baseline); then tact consumes them into its durable sled log, timed from
//!    the first event applied to the last. Reported: both rates and their ratio.
//! 2. **Withdrawal latency**: while ~10,000 events/s of other traffic flow, a consent
//!    withdrawal is produced for an opted-in customer and tact's decision for that
//!    customer is polled (in process, every 100 µs) until it is DENY; repeated
//!    `TACT_BENCH_KAFKA_SAMPLES` times (default 200). Reported: p50, p99, max.
//!
//! A measurement program (`harness = false`), not criterion: each figure is one long
//! end-to-end run. `cargo bench -p tact-benches --bench kafka`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tact_core::{Channel, Event, EventKind, Proposal, Purpose, Timestamp, Verdict};
use tact_ingest::Publisher;
use tact_tests::kafka::{Broker, KafkaServer, now};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn page_view(i: u64, customers: u64, at: Timestamp) -> Event {
    Event {
        event_id: format!("bench-{i}"),
        customer_id: format!("cust-{}", i % customers),
        occurred_at: Timestamp(at.0 + (i % 1_000) as i64),
        source: "bench".into(),
        kind: EventKind::PageViewed {
            url: "/blog/post".into(),
            category: "blog".into(),
        },
    }
}

fn consent(id: String, customer: String, at: Timestamp, granted: bool) -> Event {
    Event {
        event_id: id,
        customer_id: customer,
        occurred_at: at,
        source: "bench".into(),
        kind: EventKind::ConsentChanged {
            channel: Channel::Email,
            purpose: Purpose::Marketing,
            granted,
            expires_at: None,
            proof: "bench".into(),
        },
    }
}

async fn sustained_ingest(broker: &Broker) {
    let n = env("TACT_BENCH_KAFKA_EVENTS", 500_000) as u64;
    let topic = "bench-ingest";
    broker.create_topic(topic, 4);
    let opts = broker.options(topic);
    let at = Timestamp(now().0 - 86_400_000);
    let events: Vec<Event> = (0..n).map(|i| page_view(i, 100_000, at)).collect();
    let publisher = Publisher::new(&opts).expect("producer");
    let produced = publisher.produce(events, 200_000).await.expect("produced");
    let produce_rate = produced.events_per_sec();
    println!(
        "kafka produce (broker baseline): {n} events in {:.2} s = {produce_rate:.0} events/s",
        produced.elapsed.as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let server = KafkaServer::start(opts, Some(dir.path().to_path_buf())).await;
    let engine = Arc::clone(server.handle.engine());
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut first, mut first_pos) = (None, 0);
    loop {
        let pos = engine.position();
        if pos > 0 && first.is_none() {
            first = Some(Instant::now());
            first_pos = pos;
        }
        if pos >= n {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not finish: {pos} of {n}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    let ingest_rate = (n - first_pos) as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "kafka ingest into the durable sled log: {} events in {:.2} s = {ingest_rate:.0} events/s \
         (ratio to the broker's produce rate: {:.2})",
        n - first_pos,
        elapsed.as_secs_f64(),
        ingest_rate / produce_rate
    );
    server.stop().await;
}

async fn withdrawal_latency(broker: &Broker) {
    let samples = env("TACT_BENCH_KAFKA_SAMPLES", 200);
    let customers = 1_000usize;
    let topic = "bench-latency";
    broker.create_topic(topic, 4);
    let mut opts = broker.options(topic).with_max_staleness(Duration::from_secs(5));
    for (k, v) in std::env::vars() {
        if let Some(key) = k.strip_prefix("TACT_BENCH_RDKAFKA_") {
            opts.extra.insert(key.to_lowercase().replace('_', "."), v);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = KafkaServer::start(opts.clone(), Some(dir.path().to_path_buf())).await;
    server.wait_healthy(Duration::from_secs(60)).await;
    let engine = Arc::clone(server.handle.engine());
    let publisher = Publisher::new(&opts).expect("producer");
    let at = Timestamp(now().0 - 3_600_000);
    let optins: Vec<Event> = (0..customers)
        .map(|c| consent(format!("optin-{c}"), format!("lat-{c}"), at, true))
        .collect();
    publisher.produce(optins, 10_000).await.expect("opt-ins");
    let proposal = move |c: usize| Proposal {
        customer_id: format!("lat-{c}"),
        channel: Channel::Email,
        purpose: Purpose::Marketing,
        campaign_id: "bench".into(),
        requested_by: "bench".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = proposal(customers - 1);
    while !engine
        .decide(&last, None)
        .map(|d| d.decision.verdict == Verdict::Allow)
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "opt-ins not applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Background traffic: 10 events every millisecond, queued without waiting for each
    // acknowledgement (a few thousand may be unacknowledged at a time).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let background = {
        let (stop, sent, publisher) = (Arc::clone(&stop), Arc::clone(&sent), publisher.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut pending = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for k in 0..10 {
                    let e = page_view(10_000_000 + i + k, 50_000, at);
                    pending.push_back(publisher.enqueue(&e).await.expect("queued"));
                }
                i += 10;
                while pending.len() > 5_000 {
                    if let Some(d) = pending.pop_front() {
                        let _ = d.await;
                    }
                }
                sent.store(i, Ordering::Relaxed);
            }
            for d in pending {
                let _ = d.await;
            }
            sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Measured on a blocking thread, so polling every 100 µs never stalls the runtime.
    let runtime = tokio::runtime::Handle::current();
    let measure_engine = Arc::clone(&engine);
    let latencies = tokio::task::spawn_blocking(move || {
        let allowed = |c: usize| {
            measure_engine
                .decide(&proposal(c), None)
                .map(|d| d.decision.verdict == Verdict::Allow)
                .unwrap_or(false)
        };
        let mut latencies = Vec::with_capacity(samples);
        for s in 0..samples {
            let c = s % customers;
            let withdrawal = consent(format!("optout-{s}"), format!("lat-{c}"), now(), false);
            let started = Instant::now();
            let delivery = runtime.block_on(publisher.enqueue(&withdrawal)).expect("queued");
            while allowed(c) {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "withdrawal {s} not applied"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            latencies.push(started.elapsed());
            let _ = runtime.block_on(delivery);
            // Grant again for the next round on this customer.
            let regrant = consent(format!("regrant-{s}"), format!("lat-{c}"), now(), true);
            runtime.block_on(publisher.publish(&[regrant])).expect("regrant");
            while !allowed(c) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        latencies
    })
    .await
    .expect("measurement");
    stop.store(true, Ordering::Relaxed);
    let rate = background.await.expect("background");
    let mut latencies = latencies;
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "consent withdrawal produced -> DENY, {samples} samples under {rate:.0} events/s of other traffic: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    server.stop().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let broker = Broker::start();
        sustained_ingest(&broker).await;
        withdrawal_latency(&broker).await;
    });
}

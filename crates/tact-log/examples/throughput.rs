//! Rough throughput check of the log on this machine:
//! `cargo run --release -p tact-log --example throughput -- [events] [appenders] [per_call]`
//! (`TACT_BACKEND=memory` for the in-memory backend).
//!
//! Appends `events` synthetic events through [`Log`] from `appenders` concurrent tasks,
//! `per_call` events per call, on sled in a temp dir, then replays them, saves a
//! snapshot and loads it.

use std::sync::Arc;
use std::time::Instant;

use tact_core::{Channel, Event, EventKind, Purpose, Retention, Timestamp};
use tact_log::{GroupCommit, Log, MemoryStorage, Projection, SledStorage, Storage, save_snapshot};

fn event(i: usize, customers: usize) -> Event {
    let kind = match i % 4 {
        0 => EventKind::PageViewed {
            url: format!("https://example.com/p/{}", i % 1000),
            category: "pricing".into(),
        },
        1 => EventKind::OutreachSent {
            channel: Channel::Email,
            purpose: Purpose::Marketing,
            campaign: "spring-2026".into(),
            decision_id: None,
        },
        2 => EventKind::QuoteRequested {
            product: "widget".into(),
        },
        _ => EventKind::Purchase {
            order_id: format!("o-{i}"),
        },
    };
    Event {
        event_id: format!("evt-{i:012}"),
        customer_id: format!("customer-{:08}", (i * 7919) % customers),
        occurred_at: Timestamp(1_763_600_000_000 + i as i64 * 1_000),
        source: "bench".into(),
        kind,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let total = args.first().copied().unwrap_or(500_000);
    let appenders = args.get(1).copied().unwrap_or(256);
    let per_call = args.get(2).copied().unwrap_or(8);
    let customers = (total / 20).max(1);

    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = match std::env::var("TACT_BACKEND").as_deref() {
        Ok("memory") => Arc::new(MemoryStorage::new()),
        _ => Arc::new(SledStorage::open(dir.path()).unwrap()),
    };
    let log = Arc::new(Log::open(
        Arc::clone(&storage),
        GroupCommit::default(),
        |_: &[(u64, &Event)]| {},
    ));

    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut i = a * per_call;
            while i < total {
                let batch: Vec<Event> = (i..(i + per_call).min(total))
                    .map(|k| event(k, customers))
                    .collect();
                log.append(batch, vec![]).await.unwrap();
                i += appenders * per_call;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = log.stats();
    let groups = stats.groups.load(std::sync::atomic::Ordering::Relaxed);
    let flushes = stats.flushes.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "append: {total} events, {appenders} appenders x {per_call}/call: {:.0} durable events/s ({groups} groups, {flushes} flushes, {:?})",
        total as f64 / elapsed.as_secs_f64(),
        elapsed
    );
    log.shutdown().await.unwrap();

    let (p, stats) = Projection::rebuild(storage.as_ref(), Retention::default()).unwrap();
    println!(
        "replay: {} events, {} customers: {:.0} events/s ({:?})",
        stats.events,
        stats.customers,
        stats.events_per_sec(),
        stats.elapsed
    );

    let started = Instant::now();
    let bytes = save_snapshot(storage.as_ref(), &p).unwrap();
    println!("snapshot: {bytes} bytes saved in {:?}", started.elapsed());
    let (_, stats) = Projection::load(storage.as_ref(), Retention::default()).unwrap();
    println!("load from snapshot: {:?}", stats.elapsed);
}

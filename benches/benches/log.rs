//! The event log: durable group-committed appends, replay and disk use, on fjall and
//! sled, with the in-memory backend as the same-run baseline.
//!
//! - `log_append/<backend>`: `TASKS` concurrent appenders, each appending `ROUNDS`
//!   batches of 1-10 events through [`Log`] (acknowledged only once durable); each disk
//!   database's size after all of them is printed too.
//! - `log_replay/<backend>`: [`Projection::rebuild`] of a log of `TACT_BENCH_LOG_EVENTS`
//!   events (default 500,000).
//! - disk use: printed after each disk engine's replay log is written and flushed, as
//!   bytes on disk / raw bytes, where raw bytes is the sum of the events' bincode payloads.
//! - open: printed after it, the time to reopen that log (its id and customer indexes
//!   are on disk: the open reads the last chunk and the index's mark).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tact_benches::customer_history;
use tact_core::{Event, Retention};
use tact_log::{
    Engine, FjallStorage, GroupCommit, Log, MemoryStorage, Projection, SledStorage, Storage, codec,
};

/// Concurrent appenders.
const TASKS: u64 = 256;
/// Batches each appender appends per iteration.
const ROUNDS: u64 = 4;

fn replay_events() -> u64 {
    std::env::var("TACT_BENCH_LOG_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000)
}

/// The size (1..=10) of appender `task`'s batch number `round`: fixed, so every
/// iteration appends the same number of events.
fn batch_size(task: u64, round: u64) -> u64 {
    1 + (task * 7 + round * 3 + task / 10) % 10
}

fn events_per_iteration() -> u64 {
    (0..TASKS)
        .flat_map(|t| (0..ROUNDS).map(move |r| batch_size(t, r)))
        .sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The bincode payload bytes of `events` (a record without its header).
fn raw_bytes(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| (codec::encode_event(e).expect("encode").len() - codec::RECORD_HEADER) as u64)
        .sum()
}

/// Each iteration's batches, per task; `next_customer` keeps event ids unique across
/// iterations (a customer's events are one batch); `raw` adds up their payload bytes.
fn iteration_batches(next_customer: &AtomicU64, raw: &AtomicU64) -> Vec<Vec<Vec<Event>>> {
    (0..TASKS)
        .map(|t| {
            (0..ROUNDS)
                .map(|r| {
                    let n = batch_size(t, r);
                    let batch = customer_history(next_customer.fetch_add(1, Ordering::Relaxed), n, n);
                    raw.fetch_add(raw_bytes(&batch), Ordering::Relaxed);
                    batch
                })
                .collect()
        })
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let per_iter = events_per_iteration();
    let mut group = c.benchmark_group("log_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(per_iter));

    let dir = tempfile::tempdir().expect("tempdir");
    let backends: Vec<(&str, Arc<dyn Storage>)> = vec![
        ("memory", Arc::new(MemoryStorage::new())),
        (
            "sled",
            Arc::new(SledStorage::open(dir.path().join("append-sled")).expect("open sled")),
        ),
        (
            "fjall",
            Arc::new(FjallStorage::open(dir.path().join("append-fjall")).expect("open fjall")),
        ),
    ];
    for (name, storage) in backends {
        let log = Arc::new({
            let _enter = rt.enter();
            Log::open(Arc::clone(&storage), GroupCommit::default(), |_| {})
        });
        let next_customer = AtomicU64::new(0);
        let raw = AtomicU64::new(0);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let work: Vec<_> = (0..iters)
                    .map(|_| iteration_batches(&next_customer, &raw))
                    .collect();
                let started = Instant::now();
                rt.block_on(async {
                    for batches in work {
                        let handles: Vec<_> = batches
                            .into_iter()
                            .map(|task| {
                                let log = Arc::clone(&log);
                                tokio::spawn(async move {
                                    for batch in task {
                                        let out = log.append(batch, Vec::new()).await.expect("append");
                                        black_box(out);
                                    }
                                })
                            })
                            .collect();
                        for h in handles {
                            h.await.expect("appender");
                        }
                    }
                });
                started.elapsed()
            });
        });
        rt.block_on(log.shutdown()).expect("shutdown");
        let stats = log.stats();
        let recorded = stats.recorded.load(Ordering::Relaxed);
        let groups = stats.groups.load(Ordering::Relaxed);
        let flushes = stats.flushes.load(Ordering::Relaxed);
        eprintln!(
            "log_append/{name}: {recorded} events recorded in {groups} groups ({:.0} events per group), {flushes} flushes ({:.0} events per flush)",
            recorded as f64 / groups.max(1) as f64,
            recorded as f64 / flushes.max(1) as f64,
        );
        if name != "memory" {
            drop(log);
            drop(storage);
            let disk = tact_log::size_of_dir(&dir.path().join(format!("append-{name}")));
            let raw = raw.load(Ordering::Relaxed);
            eprintln!(
                "log_disk/{name} (group-committed appends): raw bincode payloads {raw} bytes, on disk {disk} bytes = {:.2}x raw",
                disk as f64 / raw.max(1) as f64
            );
        }
    }
    group.finish();
}

/// Appends about `n` events (whole customer histories) straight to `storage` in big
/// batches and flushes; returns the events and their raw bincode payload bytes.
fn fill(storage: &dyn Storage, n: u64) -> (u64, u64) {
    let mut events = 0u64;
    let mut raw = 0u64;
    let mut customer = 0u64;
    let mut batch = Vec::new();
    while events < n {
        for e in customer_history(customer, 10, 60) {
            if events == n {
                break;
            }
            raw += raw_bytes(std::slice::from_ref(&e));
            batch.push(e);
            events += 1;
        }
        customer += 1;
        if batch.len() >= 10_000 || events == n {
            storage.append(&batch, &[]).expect("append");
            batch.clear();
        }
    }
    storage.flush().expect("flush");
    (events, raw)
}

fn bench_replay(c: &mut Criterion) {
    let n = replay_events();
    let retention = Retention::default();
    let mut group = c.benchmark_group("log_replay");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(n));

    let dir = tempfile::tempdir().expect("tempdir");
    let memory = MemoryStorage::new();
    fill(&memory, n);
    let mut disk_backends: Vec<(&str, Box<dyn Storage>)> = Vec::new();
    for (name, engine) in [("sled", Engine::Sled), ("fjall", Engine::Fjall)] {
        let path = dir.path().join(format!("replay-{name}"));
        let open = |path: &std::path::Path| -> Box<dyn Storage> {
            match engine {
                Engine::Sled => Box::new(SledStorage::open(path).expect("open sled")),
                Engine::Fjall => Box::new(FjallStorage::open(path).expect("open fjall")),
            }
        };
        let started = Instant::now();
        let storage = open(&path);
        let (events, raw) = fill(storage.as_ref(), n);
        let written = started.elapsed();
        drop(storage);
        let disk = tact_log::size_of_dir(&path);
        eprintln!(
            "log_disk/{name}: {events} events, raw bincode payloads {raw} bytes ({:.0} per event), on disk {disk} bytes ({:.0} per event) = {:.2}x raw; written in {written:.1?} ({:.0} events/s in batches of 10,000, one flush)",
            raw as f64 / events as f64,
            disk as f64 / events as f64,
            disk as f64 / raw as f64,
            events as f64 / written.as_secs_f64(),
        );
        let started = Instant::now();
        let storage = open(&path);
        let opened = started.elapsed();
        eprintln!(
            "log_open/{name}: reopened {events} events in {opened:.1?} ({:.0} events/s)",
            events as f64 / opened.as_secs_f64()
        );
        disk_backends.push((name, storage));
    }

    let mut backends: Vec<(&str, &dyn Storage)> = vec![("memory", &memory)];
    backends.extend(disk_backends.iter().map(|(name, s)| (*name, s.as_ref())));
    for (name, storage) in backends {
        group.bench_function(name, |b| {
            b.iter(|| {
                let (projection, stats) = Projection::rebuild(storage, retention).expect("rebuild");
                assert_eq!(stats.events, n);
                black_box(projection)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_append, bench_replay);
criterion_main!(benches);

//! Decisions through the service's engine (the sharded projection a running `tact
//! serve` decides from) on a population of customers with realistic histories: one
//! call at a time (`Decide`) against batches (`DecideBatch`, `DecideStream`), which
//! decide 64 proposals at a time with their customers warmed into cache together.
//!
//! `TACT_BENCH_CUSTOMERS` sets the population (default 1,000,000). The engine opens
//! from a snapshot of the population, as a restarted server does.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tact_benches::{PROPOSED_CHANNELS, PROPOSED_PURPOSES, Rng, bench_now, customer_history, population_size};
use tact_core::{Admission, CustomerState, Policy, Proposal, Timestamp};
use tact_log::{MemoryStorage, Projection, Storage, save_snapshot};
use tact_server::engine::CHUNK;
use tact_server::{Engine, EngineOptions, ManualClock};

/// Proposals in the pool the benches walk through (random customers, channels and
/// purposes), so picking one costs nothing.
const POOL: usize = 1 << 20;

fn bench_engine(c: &mut Criterion) {
    let started = Instant::now();
    let policy = Policy::default_policy();
    let admission = Admission::default();
    // The engine keeps the admission's clock skew as extra history: build as it would.
    let retention = policy.retention().with_slack(admission.max_clock_skew);
    let n = population_size();
    let mut customers: HashMap<String, CustomerState> = HashMap::with_capacity(n as usize);
    for c in 0..n {
        let history = customer_history(c, 10, 60);
        let mut s = CustomerState::new();
        for e in &history {
            s.apply(e, retention);
        }
        s.shrink();
        customers.insert(history[0].customer_id.clone(), s);
    }
    let ids: Vec<String> = customers.keys().cloned().collect();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let projection = Projection {
        customers,
        ..Projection::new(retention)
    };
    save_snapshot(&*storage, &projection).expect("snapshot");
    drop(projection);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let opts = EngineOptions {
        group_commit: Default::default(),
        clock: Arc::new(ManualClock::new(bench_now())),
        feed: None,
        admission,
    };
    let (engine, stats) = runtime
        .block_on(Engine::open(storage, policy, opts))
        .expect("engine opens");
    assert_eq!(engine.customers() as u64, n, "every customer is in the engine");
    eprintln!(
        "engine: {n} customers from a snapshot (opened in {:.1?}, {:.1?} in all)",
        stats.elapsed,
        started.elapsed()
    );

    let mut rng = Rng::new(11);
    let pool: Vec<(Proposal, Option<Timestamp>)> = (0..POOL)
        .map(|_| {
            let proposal = Proposal {
                customer_id: ids[rng.below(ids.len() as u64) as usize].clone(),
                channel: PROPOSED_CHANNELS[rng.below(PROPOSED_CHANNELS.len() as u64) as usize],
                purpose: PROPOSED_PURPOSES[rng.below(PROPOSED_PURPOSES.len() as u64) as usize],
                campaign_id: "autumn".into(),
                requested_by: "bench".into(),
            };
            (proposal, None)
        })
        .collect();
    drop(ids);

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    g.bench_function(format!("decide, one call, random customer of {n}"), |b| {
        b.iter(|| {
            let (p, at) = &pool[next];
            next = (next + 1) % POOL;
            black_box(engine.decide(p, *at).expect("decides"))
        })
    });
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function(format!("decide_many, {CHUNK} random customers of {n}"), |b| {
        b.iter(|| {
            let batch = &pool[next..next + CHUNK];
            next = (next + CHUNK) % (POOL - CHUNK);
            black_box(engine.decide_many(batch))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);

//! `decide` over a population of customers with realistic histories, and `apply` throughput.
//!
//! `TACT_BENCH_CUSTOMERS` sets the population (default 1,000,000).
//!
//! `TACT_BENCH_LAYOUT` sets how the population's memory is laid out: `snapshot`
//! (default) builds customer by customer and releases spare capacity, as loading a
//! snapshot does, so each customer's memory is in one place; `replay` folds the
//! events of many customers interleaved in time order, as a replay of the log or live
//! traffic does, so a customer's memory is spread out and vectors keep spare capacity.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tact_benches::{PROPOSED_CHANNELS, PROPOSED_PURPOSES, Rng, bench_now, customer_history, population_size};
use tact_core::{CustomerState, Policy, Proposal, decide};

/// Customers in the warm-cache baseline.
const WARM_CUSTOMERS: usize = 1_000;

fn build_population(policy: &Policy, n: u64) -> Vec<CustomerState> {
    let started = Instant::now();
    let mut events = 0usize;
    let replay = std::env::var("TACT_BENCH_LAYOUT").is_ok_and(|l| l == "replay");
    let states: Vec<CustomerState> = if replay {
        // 20,000 customers at a time, their events folded in time order.
        let mut states = vec![CustomerState::new(); n as usize];
        for first in (0..n).step_by(20_000) {
            let mut batch: Vec<(u64, tact_core::Event)> = (first..n.min(first + 20_000))
                .flat_map(|c| customer_history(c, 10, 60).into_iter().map(move |e| (c, e)))
                .collect();
            batch.sort_by_key(|(_, e)| e.occurred_at);
            for (c, e) in &batch {
                states[*c as usize].apply(e, policy.retention());
            }
            events += batch.len();
        }
        states
    } else {
        (0..n)
            .map(|c| {
                let mut s = CustomerState::new();
                for e in customer_history(c, 10, 60) {
                    s.apply(&e, policy.retention());
                    events += 1;
                }
                s.shrink();
                s
            })
            .collect()
    };
    let bytes: usize = states.iter().map(CustomerState::heap_bytes).sum();
    let max = states.iter().map(CustomerState::heap_bytes).max().unwrap_or(0);
    eprintln!(
        "population ({} layout): {n} customers, {events} events ({:.1} per customer) in {:.1?}; state {:.0} bytes per customer on average, {max} at most",
        if replay { "replay" } else { "snapshot" },
        events as f64 / n as f64,
        started.elapsed(),
        bytes as f64 / n as f64,
    );
    states
}

fn bench_decide(c: &mut Criterion) {
    let policy = Policy::default_policy();
    let states = build_population(&policy, population_size());
    let now = bench_now();
    let proposals: Vec<Proposal> = PROPOSED_CHANNELS
        .iter()
        .flat_map(|ch| {
            PROPOSED_PURPOSES.iter().map(|p| Proposal {
                customer_id: String::new(),
                channel: *ch,
                purpose: *p,
                campaign_id: "autumn".into(),
                requested_by: "bench".into(),
            })
        })
        .collect();
    let mut rng = Rng::new(7);
    let mut verdicts = [0u64; 3];
    for _ in 0..100_000 {
        let s = &states[rng.below(states.len() as u64) as usize];
        let d = decide(
            s,
            &policy,
            &proposals[rng.below(proposals.len() as u64) as usize],
            now,
        );
        verdicts[d.verdict as usize] += 1;
    }
    eprintln!("verdict mix over 100k random proposals (allow, deny, defer): {verdicts:?}");

    // The same population's first customers, small enough to stay in cache: the
    // baseline that shows what the cold runs pay in cache misses, measured in the
    // same run under the same machine load.
    let warm = &states[..states.len().min(WARM_CUSTOMERS)];
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for (name, pop) in [
        (format!("random customer of {}", states.len()), &states[..]),
        (format!("warm cache, random customer of {}", warm.len()), warm),
    ] {
        g.bench_function(format!("mixed, {name}"), |b| {
            b.iter(|| {
                let s = &pop[rng.below(pop.len() as u64) as usize];
                let p = &proposals[rng.below(proposals.len() as u64) as usize];
                black_box(decide(black_box(s), &policy, p, now))
            })
        });
        g.bench_function(format!("marketing email, {name}"), |b| {
            b.iter(|| {
                let s = &pop[rng.below(pop.len() as u64) as usize];
                black_box(decide(black_box(s), &policy, &proposals[0], now))
            })
        });
    }
    g.finish();

    // Campaign screening (DecideBatch, DecideStream): the server decides a chunk of
    // proposals at a time and warms the chunk's customers first, so their cache misses
    // overlap. Time per decision = time per batch / BATCH (see `thrpt`).
    let mut g = c.benchmark_group("decide batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    for warm in [true, false] {
        let name = format!(
            "mixed, {BATCH} random customers of {}{}",
            states.len(),
            if warm {
                ", warmed first"
            } else {
                ", one by one (baseline)"
            }
        );
        g.bench_function(name, |b| {
            let mut batch: Vec<(&CustomerState, &Proposal)> = Vec::with_capacity(BATCH);
            let mut refs: Vec<&CustomerState> = Vec::with_capacity(BATCH);
            b.iter(|| {
                batch.clear();
                for _ in 0..BATCH {
                    batch.push((
                        &states[rng.below(states.len() as u64) as usize],
                        &proposals[rng.below(proposals.len() as u64) as usize],
                    ));
                }
                if warm {
                    refs.clear();
                    refs.extend(batch.iter().map(|(s, _)| *s));
                    CustomerState::warm(&refs);
                }
                for (s, p) in &batch {
                    black_box(decide(black_box(s), &policy, p, now));
                }
            })
        });
    }
    g.finish();

    // The floor under a single call on a customer out of cache: the two dependent
    // memory loads every decision starts with (the customer's struct, then the end of
    // its entries), one customer after another, measured in the same run.
    let mut g = c.benchmark_group("memory floor");
    g.bench_function(
        format!("struct then entries, random customer of {}", states.len()),
        |b| {
            let mut last = 0i64;
            b.iter(|| {
                // Depends on the previous load, so the loads cannot overlap.
                let i = (rng.below(states.len() as u64) ^ (last & 1) as u64) as usize % states.len();
                last = states[i].timeline().last().map_or(0, |e| e.at.0);
                black_box(last)
            })
        },
    );
    g.finish();
}

/// Proposals per batch in the batch bench (what the server decides per chunk).
const BATCH: usize = 64;

fn bench_apply(c: &mut Criterion) {
    let policy = Policy::default_policy();
    let events: Vec<(usize, tact_core::Event)> = (0..20_000u64)
        .flat_map(|c| {
            customer_history(c, 10, 60)
                .into_iter()
                .map(move |e| (c as usize, e))
        })
        .collect();
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(20);
    g.bench_function(
        format!("{} events, 20k customers, in log order", events.len()),
        |b| {
            b.iter_batched(
                || vec![CustomerState::new(); 20_000],
                |mut states| {
                    for (idx, e) in &events {
                        states[*idx].apply(e, policy.retention());
                    }
                    states
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.finish();
}

criterion_group!(benches, bench_decide, bench_apply);
criterion_main!(benches);

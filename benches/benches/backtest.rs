//! `tact backtest` against `tact replay` on the same log, in the same run (issue #11's
//! target: a backtest at least 0.5x the replay's speed).
//!
//! The log holds `TACT_BENCH_LOG_EVENTS` events (default 500,000) of the synthetic
//! population (a quarter of them outreach), in a sled database as `tact serve` writes
//! it. `backtest/replay` is [`Projection::rebuild`] (what `tact replay` runs);
//! `backtest/backtest` is [`run_backtest`] of the shipped policy against a stricter
//! candidate (one marketing email a week), which reads the same log, folds every event
//! and re-decides every outreach under both. The ratio of their medians is printed.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tact_benches::customer_history;
use tact_core::backtest::Period;
use tact_core::{Admission, Policy};
use tact_log::backtest::run_backtest;
use tact_log::{Projection, SledStorage, Storage};

fn log_events() -> u64 {
    std::env::var("TACT_BENCH_LOG_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_backtest(c: &mut Criterion) {
    let n = log_events();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = SledStorage::open(dir.path().join("log")).expect("open sled");
    let mut written = 0u64;
    let mut customer = 0u64;
    let mut batch = Vec::new();
    while written < n {
        for e in customer_history(customer, 10, 30) {
            if written < n {
                batch.push(e);
                written += 1;
            }
        }
        customer += 1;
        if batch.len() >= 4096 || written == n {
            storage.append(&batch, &[]).expect("append");
            batch.clear();
        }
    }
    storage.flush().expect("flush");

    let baseline = Policy::default_policy();
    let candidate =
        Policy::from_toml_str(&tact_core::policy::DEFAULT_POLICY.replacen("max = 3", "max = 1", 1))
            .expect("candidate policy");
    let skew = Admission::default().max_clock_skew;
    let retention = baseline.retention().with_slack(skew);
    let none: Option<&HashSet<String>> = None;

    let mut group = c.benchmark_group("backtest");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    let mut replays = Vec::new();
    let mut backtests = Vec::new();
    group.bench_function("replay", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                black_box(Projection::rebuild(&storage, retention).expect("replay"));
                let d = t.elapsed();
                replays.push(d);
                total += d;
            }
            total
        })
    });
    group.bench_function("backtest", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let report = run_backtest(&storage, &baseline, &candidate, skew, Period::default(), none)
                    .expect("backtest");
                let d = t.elapsed();
                black_box(report.changed);
                backtests.push(d);
                total += d;
            }
            total
        })
    });
    group.finish();
    let report =
        run_backtest(&storage, &baseline, &candidate, skew, Period::default(), none).expect("backtest");
    let (r, b) = (median(replays), median(backtests));
    println!(
        "backtest: {} events, {} outreach re-decided, {} changed; replay {:.0} events/s, backtest {:.0} events/s: {:.2}x the replay",
        n,
        report.outreach,
        report.changed,
        n as f64 / r.as_secs_f64(),
        n as f64 / b.as_secs_f64(),
        r.as_secs_f64() / b.as_secs_f64()
    );
}

criterion_group!(benches, bench_backtest);
criterion_main!(benches);

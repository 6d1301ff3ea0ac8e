//! The decision audit's cost (issue #11, section 2): unary `Decide` and `DecideBatch`
//! throughput with `audit = "all"` against `audit = "off"`, on two servers with sled
//! data directories in the same run, measured in alternating rounds. Targets: unary at
//! least 0.85x, batch at least 0.7x. Also prints how many records the audit kept and
//! dropped (a dropped record is counted, never waited for).
//!
//! `cargo bench -p tact-benches --bench audit` (`BENCH_SECS`, default 3, per round;
//! `BENCH_ROUNDS`, default 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tact_core::{Channel, Purpose};
use tact_proto::pb;
use tact_proto::pb::contact_policy_client::ContactPolicyClient;
use tact_server::AuditMode;
use tact_tests::{TestServer, opted_in, request, wed_10am};

const CUSTOMERS: usize = 5_000;
const BATCH: usize = 1_000;
const BATCH_CALLERS: usize = 2;
/// Unary calls in flight at once (one connection each).
const UNARY_CALLERS: usize = 8;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn customer(i: usize) -> String {
    format!("c{i}")
}

/// Decisions per second from `callers` loops of `call` for `secs`, on a client runtime
/// of its own (a thread, as if on another machine).
fn drive(url: String, unary: bool, secs: Duration) -> f64 {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let callers = if unary { UNARY_CALLERS } else { BATCH_CALLERS };
            let mut tasks = Vec::new();
            for c in 0..callers {
                let mut client = ContactPolicyClient::connect(url.clone()).await.unwrap();
                let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
                tasks.push(tokio::spawn(async move {
                    let mut i = c * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        if unary {
                            let req = request(&customer(i % CUSTOMERS), Channel::Email, Purpose::Marketing);
                            client.decide(req).await.unwrap();
                            done.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        } else {
                            let requests = (0..BATCH)
                                .map(|k| {
                                    request(
                                        &customer((i + k) % CUSTOMERS),
                                        Channel::Email,
                                        Purpose::Marketing,
                                    )
                                })
                                .collect();
                            match client
                                .decide_batch(pb::DecideBatchRequest {
                                    requests,
                                    ..Default::default()
                                })
                                .await
                            {
                                Ok(r) => {
                                    done.fetch_add(r.into_inner().decisions.len() as u64, Ordering::Relaxed);
                                }
                                Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                Err(e) => panic!("{e}"),
                            }
                            i += BATCH;
                        }
                    }
                }));
            }
            let t = Instant::now();
            tokio::time::sleep(secs).await;
            stop.store(true, Ordering::Relaxed);
            let n = done.load(Ordering::Relaxed);
            let elapsed = t.elapsed();
            for t in tasks {
                t.await.unwrap();
            }
            n as f64 / elapsed.as_secs_f64()
        })
    })
    .join()
    .unwrap()
}

async fn start(dir: &std::path::Path, mode: AuditMode) -> TestServer {
    let server = TestServer::start_with(Some(dir.to_path_buf()), wed_10am(), move |o| {
        o.audit.mode = mode;
    })
    .await;
    let mut loader = server.client().await;
    let events: Vec<_> = (0..CUSTOMERS)
        .flat_map(|i| opted_in(&customer(i), wed_10am()))
        .collect();
    for chunk in events.chunks(5_000) {
        loader
            .record_events(pb::RecordEventsRequest {
                events: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    server
}

fn main() {
    let secs = Duration::from_secs(env("BENCH_SECS", 3));
    let rounds = env("BENCH_ROUNDS", 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (dir_on, dir_off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let on = start(dir_on.path(), AuditMode::All).await;
        let off = start(dir_off.path(), AuditMode::Off).await;
        let url = |s: &TestServer| format!("http://{}", s.handle.local_addr());
        let run = |url: String, unary: bool, secs: Duration| {
            tokio::task::spawn_blocking(move || drive(url, unary, secs))
        };
        // Warm-up (not measured).
        for s in [&off, &on] {
            run(url(s), true, Duration::from_secs(1)).await.unwrap();
            run(url(s), false, Duration::from_secs(1)).await.unwrap();
        }
        on.handle.auditor().sync().await;
        let dropped_before = on.handle.auditor().dropped();
        let kept_before = on.handle.auditor().store().count().unwrap();

        let (mut unary_on, mut unary_off, mut batch_on, mut batch_off) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..rounds {
            unary_off += run(url(&off), true, secs).await.unwrap();
            unary_on += run(url(&on), true, secs).await.unwrap();
            on.handle.auditor().sync().await;
            batch_off += run(url(&off), false, secs).await.unwrap();
            batch_on += run(url(&on), false, secs).await.unwrap();
            on.handle.auditor().sync().await;
        }
        let r = rounds as f64;
        let (unary_on, unary_off, batch_on, batch_off) =
            (unary_on / r, unary_off / r, batch_on / r, batch_off / r);
        let kept = on.handle.auditor().store().count().unwrap() - kept_before;
        let dropped = on.handle.auditor().dropped() - dropped_before;
        println!(
            "cores: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("unary Decide, audit off:  {unary_off:.0} decisions/s ({UNARY_CALLERS} callers)");
        println!("unary Decide, audit all:  {unary_on:.0} decisions/s");
        println!("DecideBatch, audit off:   {batch_off:.0} decisions/s ({BATCH_CALLERS} callers x {BATCH})");
        println!("DecideBatch, audit all:   {batch_on:.0} decisions/s");
        println!("audit records kept {kept}, dropped {dropped} (queue full)");
        println!(
            "ratios: unary all/off {:.2} (target >= 0.85), batch all/off {:.2} (target >= 0.7)",
            unary_on / unary_off,
            batch_on / batch_off
        );
        on.stop().await;
        off.stop().await;
    });
}

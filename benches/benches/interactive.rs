//! Interactive calls under campaign load (issue #10): unary `Decide` p50/p99 from one
//! client alone, then while another client drives `DecideBatch` at full speed; and batch
//! throughput alone and under that unary load. Figures are ratios from one run.
//!
//! `cargo bench -p tact-benches --bench interactive` (`BENCH_SECS`, default 3, per phase).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tact_core::{Channel, Purpose};
use tact_proto::pb::contact_policy_client::ContactPolicyClient;
use tact_server::{RateLimits, Scope};
use tact_tests::{TestServer, bearer, opted_in, request, wed_10am, write_clients};

const CUSTOMERS: usize = 5_000;
const BATCH: usize = 1_000;
const BATCH_CALLERS: usize = 2;

fn secs() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

fn customer(i: usize) -> String {
    format!("c{i}")
}

/// Sequential `Decide` calls for `secs`: the latencies, sorted.
async fn unary(url: String, key: &str) -> Vec<Duration> {
    let mut client = ContactPolicyClient::connect(url).await.expect("connect");
    let mut lat = Vec::new();
    let end = Instant::now() + secs();
    let mut i = 0;
    while Instant::now() < end {
        let req = request(&customer(i % CUSTOMERS), Channel::Call, Purpose::Sales);
        let t = Instant::now();
        client.decide(bearer(req, key)).await.expect("decide");
        lat.push(t.elapsed());
        i += 7;
    }
    lat.sort();
    lat
}

/// `BATCH_CALLERS` loops of `DecideBatch` until `stop`: decisions made.
async fn batches(url: String, key: &'static str, stop: Arc<AtomicBool>) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..BATCH_CALLERS {
        let mut client = ContactPolicyClient::connect(url.clone()).await.expect("connect");
        let stop = Arc::clone(&stop);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut round = c;
            while !stop.load(Ordering::Relaxed) {
                let requests = (0..BATCH)
                    .map(|i| {
                        request(
                            &customer((round * BATCH + i) % CUSTOMERS),
                            Channel::Email,
                            Purpose::Marketing,
                        )
                    })
                    .collect();
                match client
                    .decide_batch(bearer(
                        tact_proto::pb::DecideBatchRequest {
                            requests,
                            ..Default::default()
                        },
                        key,
                    ))
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
                round += BATCH_CALLERS;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

/// Joins a client thread without blocking the server's runtime.
async fn wait<T: Send + 'static>(h: std::thread::JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || h.join().unwrap())
        .await
        .unwrap()
}

fn pct(lat: &[Duration], p: f64) -> Duration {
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clients = dir.path().join("clients.toml");
        write_clients(
            &clients,
            &[
                ("rep", "rep-key", &[Scope::Decide], RateLimits::default()),
                ("campaign", "campaign-key", &[Scope::Decide, Scope::Record], RateLimits::default()),
            ],
        );
        let server = TestServer::start_with(None, wed_10am(), move |opts| {
            opts.auth.clients_file = Some(clients);
        })
        .await;
        let mut loader = server.client().await;
        let events: Vec<_> = (0..CUSTOMERS).flat_map(|i| opted_in(&customer(i), wed_10am())).collect();
        for chunk in events.chunks(5_000) {
            loader
                .record_events(bearer(
                    tact_proto::pb::RecordEventsRequest { events: chunk.to_vec() },
                    "campaign-key",
                ))
                .await
                .unwrap();
        }

        let url = format!("http://{}", server.handle.local_addr());
        // Each client on a runtime and thread of its own, as if on other machines (they
        // still share this machine's cores with the server).
        let batch_thread = |stop: Arc<AtomicBool>| {
            let url = url.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let n = rt.block_on(batches(url, "campaign-key", stop));
                n as f64 / t.elapsed().as_secs_f64()
            })
        };
        let unary_thread = || {
            let url = url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(unary(url, "rep-key"))
            })
        };

        // Warm-up (not measured).
        let stop = Arc::new(AtomicBool::new(false));
        let b = batch_thread(Arc::clone(&stop));
        let _ = wait(unary_thread()).await;
        stop.store(true, Ordering::Relaxed);
        let _ = wait(b).await;

        // Batch alone.
        let stop = Arc::new(AtomicBool::new(false));
        let b = batch_thread(Arc::clone(&stop));
        tokio::time::sleep(secs()).await;
        stop.store(true, Ordering::Relaxed);
        let batch_alone = wait(b).await;

        // Unary alone.
        let lat_alone = wait(unary_thread()).await;

        // Both.
        let stop = Arc::new(AtomicBool::new(false));
        let b = batch_thread(Arc::clone(&stop));
        let lat_loaded = wait(unary_thread()).await;
        stop.store(true, Ordering::Relaxed);
        let batch_loaded = wait(b).await;

        let (p50a, p99a) = (pct(&lat_alone, 0.5), pct(&lat_alone, 0.99));
        let (p50l, p99l) = (pct(&lat_loaded, 0.5), pct(&lat_loaded, 0.99));
        println!("cores: {}", std::thread::available_parallelism().map_or(0, |n| n.get()));
        println!("unary Decide alone:        p50 {p50a:?}  p99 {p99a:?}  ({} calls)", lat_alone.len());
        println!("unary Decide under batch:  p50 {p50l:?}  p99 {p99l:?}  ({} calls)", lat_loaded.len());
        println!("DecideBatch alone:         {batch_alone:.0} decisions/s");
        println!("DecideBatch under unary:   {batch_loaded:.0} decisions/s");
        println!(
            "ratios: p99 loaded/alone {:.2} (target <= 3), batch throughput loaded/alone {:.2} (target >= 0.8)",
            p99l.as_secs_f64() / p99a.as_secs_f64(),
            batch_loaded / batch_alone
        );
        server.stop().await;
    });
}

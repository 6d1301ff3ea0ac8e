//! `tact bench`: a load generator for a running tact, like `redis-benchmark`.
//!
//! It populates synthetic customers through `RecordEvents` (or takes existing ids from
//! a file), then drives one call (`Decide`, `Authorize`, `DecideBatch`, `DecideStream`
//! or `RecordEvents`) at a given concurrency for a given time, and prints throughput
//! and latency percentiles (HdrHistogram), with a progress line on stderr. With
//! `--server-pid` (a server on this machine) it also reports the server's CPU time
//! per decision, from `/proc/<pid>/stat`.

pub mod noop;
pub mod population;
mod stream;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::Serialize;
use tact_proto::pb;

use crate::client::{Client, Service, connect_service, now};
use population::{PROPOSALS, Rng};

/// The call `tact bench` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Unary Decide, one proposal a call.
    Decide,
    /// Unary Authorize (an ALLOW is recorded: it fills the customers' caps).
    Authorize,
    /// DecideBatch with --batch-size proposals a call.
    Batch,
    /// DecideBatch with an audience: one marketing email proposed to --batch-size
    /// customers a call, answered packed at verdict detail (campaign screening).
    Screen,
    /// DecideStream: --concurrency streams, each with up to --batch-size proposals in flight.
    Stream,
    /// RecordEvents with --batch-size new events a call.
    Record,
}

/// How much of each answer to ask for (`tact.v1.Detail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetailArg {
    Full,
    Rules,
    Verdict,
}

impl DetailArg {
    fn wire(self) -> i32 {
        match self {
            DetailArg::Full => pb::Detail::Full as i32,
            DetailArg::Rules => pb::Detail::Rules as i32,
            DetailArg::Verdict => pb::Detail::Verdict as i32,
        }
    }
}

/// `tact bench`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server to load [default: --server, i.e. TACT_SERVER or the config's `server`].
    /// An https:// URL uses TACT_TLS_CA (and TACT_TLS_CLIENT_CERT/KEY); TACT_API_KEY is sent.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The call to drive.
    #[arg(long, value_enum, default_value_t = Op::Decide)]
    pub op: Op,
    /// Synthetic customers (ids bench-00000000, bench-00000001, ...).
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Record the synthetic customers' histories first (10-30 events each over the last
    /// 90 days; recording them again is harmless: the server answers duplicates).
    #[arg(long)]
    pub populate: bool,
    /// Only populate, then exit.
    #[arg(long, requires = "populate")]
    pub populate_only: bool,
    /// Fewest and most events a synthetic customer has.
    #[arg(long, default_value_t = 10)]
    pub min_events: u64,
    #[arg(long, default_value_t = 30)]
    pub max_events: u64,
    /// Propose to these customers instead (one id a line); nothing is populated.
    #[arg(long, value_name = "PATH", conflicts_with = "populate")]
    pub customers_file: Option<PathBuf>,
    /// Calls in flight (for --op stream: open streams).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections the calls share.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Proposals per DecideBatch, proposals in flight per DecideStream, events per RecordEvents.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// How much of each answer to ask for (Decide and Authorize default to full, as the API does).
    #[arg(long, value_enum, default_value_t = DetailArg::Full)]
    pub detail: DetailArg,
    /// Seed of the proposals' customers, channels and purposes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The pid of the server, if on this machine: report its CPU time per decision.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub op: Op,
    pub detail: DetailArg,
    pub target: String,
    pub concurrency: usize,
    pub connections: usize,
    pub batch_size: usize,
    pub customers: u64,
    pub seconds: f64,
    /// Calls answered (for a stream: proposals answered).
    pub requests: u64,
    /// Proposals decided (or events recorded).
    pub decisions: u64,
    pub errors: u64,
    /// Calls shed by the server (RESOURCE_EXHAUSTED), retried after a pause.
    pub shed: u64,
    pub requests_per_sec: f64,
    pub decisions_per_sec: f64,
    pub latency_us: Latency,
    /// Latencies recorded: one for each call counted in `requests` (the window counts
    /// a call and its latency together).
    pub latency_samples: u64,
    pub allow: u64,
    pub deny: u64,
    pub defer: u64,
    /// The server's CPU time (user + system) per decision, with --server-pid.
    pub server_cpu_us_per_decision: Option<f64>,
    /// The server's CPU use during the run, in cores, with --server-pid.
    pub server_cores: Option<f64>,
    /// This load generator's own CPU use during the run, in cores: near the number of
    /// cores it may use, the figures measure the generator rather than the server.
    /// `None` where `/proc` is not there to tell (not Linux).
    pub client_cores: Option<f64>,
    pub first_error: Option<String>,
}

/// Latencies of calls (for a stream: of each proposal, from sent to answered), µs.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Counters shared by the workers and the progress line.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    decisions: AtomicU64,
    errors: AtomicU64,
    shed: AtomicU64,
    allow: AtomicU64,
    deny: AtomicU64,
    defer: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn verdicts(&self, decisions: &[pb::Decision]) {
        self.tally(decisions.iter().map(|d| d.verdict));
    }

    /// Counts wire verdicts (an audience's answer is packed).
    fn tally(&self, verdicts: impl IntoIterator<Item = i32>) {
        let (mut a, mut d, mut f) = (0, 0, 0);
        for v in verdicts {
            match pb::Verdict::try_from(v) {
                Ok(pb::Verdict::Allow) => a += 1,
                Ok(pb::Verdict::Deny) => d += 1,
                Ok(pb::Verdict::Defer) => f += 1,
                _ => {}
            }
        }
        self.allow.fetch_add(a, Ordering::Relaxed);
        self.deny.fetch_add(d, Ordering::Relaxed);
        self.defer.fetch_add(f, Ordering::Relaxed);
    }

    fn error(&self, status: &tonic::Status) {
        if status.code() == tonic::Code::ResourceExhausted {
            self.shed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{:?}: {}", status.code(), status.message()));
        }
    }
}

/// When the measured window runs; what workers record outside it is dropped.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn measures(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

/// The customers proposals go to.
#[derive(Debug)]
struct Audience {
    ids: Vec<String>,
}

impl Audience {
    fn request(&self, rng: &mut Rng, detail: i32) -> pb::DecideRequest {
        let (channel, purpose) = rng.pick(&PROPOSALS);
        let customer = self.ids[rng.below(self.ids.len() as u64) as usize].clone();
        proposal(customer, channel, purpose, detail)
    }
}

/// The load's request: `channel` and `purpose` for `customer_id`, now, from campaign
/// `bench`.
fn proposal(
    customer_id: String,
    channel: tact_core::Channel,
    purpose: tact_core::Purpose,
    detail: i32,
) -> pb::DecideRequest {
    pb::DecideRequest {
        customer_id,
        channel: pb::Channel::from(channel) as i32,
        purpose: pb::Purpose::from(purpose) as i32,
        campaign_id: "bench".to_owned(),
        requested_by: "tact-bench".to_owned(),
        at: None,
        detail,
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// `tact bench`.
pub async fn run(server: &str, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let target = args.target.clone().unwrap_or_else(|| server.to_owned());
    if args.concurrency == 0 || args.connections == 0 || args.batch_size == 0 {
        bail!("--concurrency, --connections and --batch-size must be at least 1");
    }
    if args.min_events > args.max_events {
        bail!("--min-events must not exceed --max-events");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        bail!("--duration must be positive and --warmup not negative");
    }
    let mut services = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        services.push(connect_service(&target).await?);
    }
    let clients: Vec<Client> = services
        .iter()
        .map(|s| Client::new(s.clone()).max_decoding_message_size(64 << 20))
        .collect();
    let audience = match &args.customers_file {
        Some(path) => Audience { ids: read_ids(path)? },
        None => {
            if args.customers == 0 {
                bail!("--customers must be at least 1");
            }
            Audience {
                ids: (0..args.customers).map(population::customer_id).collect(),
            }
        }
    };
    if args.populate {
        populate(&clients, args).await?;
        if args.populate_only {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let report = drive(&target, clients, services, Arc::new(audience), args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_ids(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ids = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {} at line {}", path.display(), n + 1))?;
        let id = line.trim();
        if !id.is_empty() {
            ids.push(id.to_owned());
        }
    }
    if ids.is_empty() {
        bail!("{}: no customer ids", path.display());
    }
    Ok(ids)
}

/// Records every synthetic customer's history, 1,000 events a call, 4 calls in flight.
async fn populate(clients: &[Client], args: &BenchArgs) -> anyhow::Result<()> {
    const EVENTS_PER_CALL: usize = 1000;
    const IN_FLIGHT: usize = 4;
    let started = Instant::now();
    let at = now();
    let next = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let mut client = clients[w % clients.len()].clone();
        let next = Arc::clone(&next);
        let recorded = Arc::clone(&recorded);
        let (customers, min, max) = (args.customers, args.min_events, args.max_events);
        tasks.spawn(async move {
            let mut events: Vec<pb::InteractionEvent> = Vec::with_capacity(EVENTS_PER_CALL + 64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i < customers {
                    events.extend(
                        population::history(i, min, max, at)
                            .iter()
                            .map(pb::InteractionEvent::from),
                    );
                }
                if events.len() >= EVENTS_PER_CALL || (i >= customers && !events.is_empty()) {
                    let n = events.len() as u64;
                    let results = client
                        .record_events(pb::RecordEventsRequest {
                            events: std::mem::take(&mut events),
                        })
                        .await
                        .map_err(|s| {
                            anyhow::anyhow!("RecordEvents failed: {} ({:?})", s.message(), s.code())
                        })?
                        .into_inner()
                        .results;
                    if let Some(r) = results
                        .iter()
                        .find(|r| r.status == pb::RecordStatus::Rejected as i32)
                    {
                        bail!("the server rejected event {}: {}", r.event_id, r.reason);
                    }
                    recorded.fetch_add(n, Ordering::Relaxed);
                }
                if i >= customers {
                    return Ok::<(), anyhow::Error>(());
                }
            }
        });
    }
    let quiet = args.quiet;
    let total = args.customers;
    let progress = {
        let next = Arc::clone(&next);
        let recorded = Arc::clone(&recorded);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !quiet {
                    eprint!(
                        "\rpopulate: {} of {} customers, {} events ({:.0} events/s)   ",
                        next.load(Ordering::Relaxed).min(total),
                        total,
                        recorded.load(Ordering::Relaxed),
                        recorded.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        })
    };
    while let Some(done) = tasks.join_next().await {
        done.context("populate task")??;
    }
    progress.abort();
    let secs = started.elapsed().as_secs_f64();
    let n = recorded.load(Ordering::Relaxed);
    if !args.quiet {
        eprintln!(
            "\rpopulated {} customers with {n} events in {secs:.1} s ({:.0} events/s)          ",
            args.customers,
            n as f64 / secs
        );
    }
    Ok(())
}

/// The server's CPU time so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("--server-pid {pid}: cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("unreadable /proc stat")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_micros(total * 1_000_000 / clock_ticks()))
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

async fn drive(
    target: &str,
    clients: Vec<Client>,
    services: Vec<Service>,
    audience: Arc<Audience>,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    // The stream load's requests, encoded once (see `stream`).
    let encoded =
        (args.op == Op::Stream).then(|| Arc::new(stream::Encoded::new(&audience.ids, args.detail.wire())));
    let counters = Arc::new(Counters::default());
    let begin = Instant::now();
    let window = Window {
        start: begin + Duration::from_secs_f64(args.warmup),
        end: begin + Duration::from_secs_f64(args.warmup + args.duration),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let client = clients[w % clients.len()].clone();
        let worker = Worker {
            client,
            service: services[w % services.len()].clone(),
            encoded: encoded.clone(),
            audience: Arc::clone(&audience),
            counters: Arc::clone(&counters),
            window,
            rng: Rng::new(args.seed.wrapping_mul(1_000_003) ^ w as u64),
            detail: args.detail.wire(),
            batch: args.batch_size,
            op: args.op,
            worker: w as u64,
        };
        tasks.spawn(worker.run());
    }
    // The progress line, and the server's and our own CPU time at the window's edges.
    let mut measuring = false;
    let mut cpu_start = None;
    let mut own_start = None;
    let mut last = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        // Once, when the window opens (counting what finished during the warm-up).
        if !measuring && now >= window.start {
            measuring = true;
            if let Some(pid) = args.server_pid {
                cpu_start = Some(cpu_time(pid)?);
            }
            own_start = cpu_time(std::process::id()).ok();
            last = (now, 0);
        }
        if now >= window.end {
            break;
        }
        let tick = Duration::from_millis(250).min(if now < window.start {
            window.start - now
        } else {
            window.end - now
        });
        tokio::time::sleep(tick).await;
        if !args.quiet && last.0.elapsed() >= Duration::from_secs(1) {
            let d = counters.decisions.load(Ordering::Relaxed);
            let rate = (d - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let phase = if Instant::now() < window.start {
                "warm-up".to_owned()
            } else {
                format!(
                    "{:.0}/{:.0} s",
                    window.start.elapsed().as_secs_f64(),
                    args.duration
                )
            };
            eprint!(
                "\r{:?} {phase}: {d} decisions, {rate:.0}/s, {} errors, {} shed     ",
                args.op,
                counters.errors.load(Ordering::Relaxed),
                counters.shed.load(Ordering::Relaxed)
            );
            let _ = std::io::stderr().flush();
            last = (Instant::now(), d);
        }
    }
    let cpu = match (args.server_pid, cpu_start) {
        (Some(pid), Some(start)) => Some(cpu_time(pid)?.saturating_sub(start)),
        _ => None,
    };
    let own = own_start.and_then(|start| {
        cpu_time(std::process::id())
            .ok()
            .map(|now| now.saturating_sub(start))
    });
    let mut hist = histogram();
    // Calls still in flight at the window's end are waited for (they are not counted)
    // for a bounded time; a stuck server must not hang the report.
    let collect = async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(h) = done {
                hist.add(h).ok();
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .is_err()
    {
        eprintln!("\nsome calls were still unanswered 10 s after the end: not counted");
    }
    if !args.quiet {
        eprint!("\r{:80}\r", "");
    }
    let seconds = args.duration;
    let c = &counters;
    let requests = c.requests.load(Ordering::Relaxed);
    let decisions = c.decisions.load(Ordering::Relaxed);
    let count = |h: &Histogram<u64>, q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
    Ok(Report {
        op: args.op,
        detail: args.detail,
        target: target.to_owned(),
        concurrency: args.concurrency,
        connections: args.connections,
        batch_size: args.batch_size,
        customers: audience.ids.len() as u64,
        seconds,
        requests,
        decisions,
        errors: c.errors.load(Ordering::Relaxed),
        shed: c.shed.load(Ordering::Relaxed),
        requests_per_sec: requests as f64 / seconds,
        decisions_per_sec: decisions as f64 / seconds,
        latency_us: Latency {
            mean: if hist.is_empty() { 0.0 } else { hist.mean() },
            p50: count(&hist, 0.5),
            p90: count(&hist, 0.9),
            p99: count(&hist, 0.99),
            p999: count(&hist, 0.999),
            max: if hist.is_empty() { 0 } else { hist.max() },
        },
        latency_samples: hist.len(),
        allow: c.allow.load(Ordering::Relaxed),
        deny: c.deny.load(Ordering::Relaxed),
        defer: c.defer.load(Ordering::Relaxed),
        server_cpu_us_per_decision: cpu
            .filter(|_| decisions > 0)
            .map(|d| d.as_secs_f64() * 1e6 / decisions as f64),
        server_cores: cpu.map(|d| d.as_secs_f64() / seconds),
        client_cores: own.map(|d| d.as_secs_f64() / seconds),
        first_error: c.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    })
}

/// One call in flight (for a stream: one stream).
struct Worker {
    client: Client,
    /// The same connection, for the stream load's own codec.
    service: Service,
    /// The stream load's requests.
    encoded: Option<Arc<stream::Encoded>>,
    audience: Arc<Audience>,
    counters: Arc<Counters>,
    window: Window,
    rng: Rng,
    detail: i32,
    batch: usize,
    op: Op,
    worker: u64,
}

impl Worker {
    /// Calls until the window ends; the latencies of the calls that started in it.
    async fn run(mut self) -> Histogram<u64> {
        let mut hist = histogram();
        if self.op == Op::Stream {
            self.stream(&mut hist).await;
            return hist;
        }
        let mut sequence = 0u64;
        while Instant::now() < self.window.end {
            let started = Instant::now();
            let result = match self.op {
                Op::Decide | Op::Authorize => {
                    let req = self.audience.request(&mut self.rng, self.detail);
                    let answer = if self.op == Op::Decide {
                        self.client.decide(req).await
                    } else {
                        self.client.authorize(req).await
                    };
                    answer.map(|d| (1, vec![d.into_inner()]))
                }
                Op::Batch => {
                    let requests = (0..self.batch)
                        .map(|_| self.audience.request(&mut self.rng, pb::Detail::Full as i32))
                        .collect();
                    self.client
                        .decide_batch(pb::DecideBatchRequest {
                            requests,
                            detail: self.detail,
                            audience: None,
                        })
                        .await
                        .map(|r| {
                            let d = r.into_inner().decisions;
                            (d.len() as u64, d)
                        })
                }
                Op::Screen => {
                    let ids = &self.audience.ids;
                    let customer_ids = (0..self.batch)
                        .map(|_| ids[self.rng.below(ids.len() as u64) as usize].clone())
                        .collect();
                    self.client
                        .decide_batch(pb::DecideBatchRequest {
                            audience: Some(pb::Audience {
                                channel: pb::Channel::Email as i32,
                                purpose: pb::Purpose::Marketing as i32,
                                campaign_id: "bench".to_owned(),
                                requested_by: "tact-bench".to_owned(),
                                at: None,
                                customer_ids,
                            }),
                            ..Default::default()
                        })
                        .await
                        .map(|r| {
                            let s = r.into_inner().screening.unwrap_or_default();
                            self.counters.tally(s.verdicts.iter().copied());
                            (s.verdicts.len() as u64, Vec::new())
                        })
                }
                Op::Record => {
                    let events = (0..self.batch)
                        .map(|_| {
                            sequence += 1;
                            self.event(sequence)
                        })
                        .collect();
                    self.client
                        .record_events(pb::RecordEventsRequest { events })
                        .await
                        .map(|r| (r.into_inner().results.len() as u64, Vec::new()))
                }
                Op::Stream => unreachable!("streams run in Worker::stream"),
            };
            let finished = Instant::now();
            if !self.window.measures(started) {
                if let Err(s) = &result
                    && s.code() == tonic::Code::ResourceExhausted
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
            match result {
                Ok((n, decisions)) => {
                    hist.record(micros(finished - started)).ok();
                    self.counters.requests.fetch_add(1, Ordering::Relaxed);
                    self.counters.decisions.fetch_add(n, Ordering::Relaxed);
                    self.counters.verdicts(&decisions);
                }
                Err(s) => {
                    self.counters.error(&s);
                    if s.code() == tonic::Code::ResourceExhausted {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        hist
    }

    /// A new event for RecordEvents: a page view or a send, for a random customer.
    fn event(&mut self, sequence: u64) -> pb::InteractionEvent {
        let customer = &self.audience.ids[self.rng.below(self.audience.ids.len() as u64) as usize];
        let kind = if self.rng.chance(70) {
            tact_core::EventKind::PageViewed {
                url: "/pricing".into(),
                category: "pricing".into(),
            }
        } else {
            tact_core::EventKind::OutreachSent {
                channel: tact_core::Channel::Email,
                purpose: tact_core::Purpose::Marketing,
                campaign: "bench".into(),
                decision_id: None,
            }
        };
        let event = tact_core::Event {
            event_id: format!("bench-{}-{}-{sequence}", self.rng.next_u64(), self.worker),
            customer_id: customer.clone(),
            occurred_at: now(),
            source: "tact-bench".into(),
            kind,
        };
        pb::InteractionEvent::from(&event)
    }

    /// One DecideStream with up to `batch` proposals in flight until the window ends
    /// (see [`stream`] for how the load keeps its own work small).
    async fn stream(&mut self, hist: &mut Histogram<u64>) {
        let Some(encoded) = self.encoded.clone() else {
            return;
        };
        let flight = stream::Flight::new(self.batch);
        let requests = stream::Requests::new(Arc::clone(&flight), encoded, self.rng.clone(), self.window.end);
        let mut grpc = tonic::client::Grpc::new(self.service.clone());
        let answers = match grpc.ready().await {
            Ok(()) => {
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/tact.v1.ContactPolicy/DecideStream",
                );
                grpc.streaming(tonic::Request::new(requests), path, stream::LoadCodec)
                    .await
            }
            Err(e) => Err(tonic::Status::unavailable(format!("not connected: {e}"))),
        };
        let mut answers = match answers {
            Ok(a) => a.into_inner(),
            Err(s) => {
                self.counters.error(&s);
                return;
            }
        };
        // Counted here and added to the shared counters now and then (the progress line
        // reads them).
        let mut verdicts: Vec<i32> = Vec::with_capacity(FLUSH_EVERY);
        let flush = |verdicts: &mut Vec<i32>| {
            let n = verdicts.len() as u64;
            self.counters.requests.fetch_add(n, Ordering::Relaxed);
            self.counters.decisions.fetch_add(n, Ordering::Relaxed);
            self.counters.tally(verdicts.drain(..));
        };
        loop {
            match answers.message().await {
                Ok(Some(answer)) => {
                    let t = Instant::now();
                    let Some(sent) = flight.answered() else {
                        self.counters
                            .error(&tonic::Status::internal("more answers than requests"));
                        break;
                    };
                    if self.window.measures(sent) {
                        hist.record(micros(t - sent)).ok();
                        verdicts.push(answer.verdict);
                        if verdicts.len() == FLUSH_EVERY {
                            flush(&mut verdicts);
                        }
                    }
                }
                Ok(None) => break,
                Err(s) => {
                    // Counted like the calls: only once the window is open.
                    if Instant::now() >= self.window.start {
                        self.counters.error(&s);
                    }
                    break;
                }
            }
        }
        flush(&mut verdicts);
    }
}

/// How many answers a stream counts before adding them to the shared counters.
const FLUSH_EVERY: usize = 1024;

fn render(r: &Report) -> String {
    let mut out = String::new();
    let what = match r.op {
        Op::Batch => format!(", {} per DecideBatch", r.batch_size),
        Op::Screen => format!(", an audience of {} per DecideBatch", r.batch_size),
        Op::Stream => format!(", up to {} in flight per stream", r.batch_size),
        Op::Record => format!(", {} events per call", r.batch_size),
        _ => String::new(),
    };
    out.push_str(&format!(
        "{:?} against {}: {} in flight on {} connection(s){what}, detail {:?}, {} customers, {:.0} s\n",
        r.op, r.target, r.concurrency, r.connections, r.detail, r.customers, r.seconds
    ));
    let unit = if r.op == Op::Record { "events" } else { "decisions" };
    out.push_str(&format!(
        "  throughput  {:.0} calls/s, {:.0} {unit}/s ({} calls, {} {unit})\n",
        r.requests_per_sec, r.decisions_per_sec, r.requests, r.decisions
    ));
    let l = &r.latency_us;
    out.push_str(&format!(
        "  latency     p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs (mean {:.0} µs)\n",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    ));
    if r.op != Op::Record {
        out.push_str(&format!(
            "  verdicts    {} allow, {} deny, {} defer\n",
            r.allow, r.deny, r.defer
        ));
    }
    if let (Some(us), Some(cores)) = (r.server_cpu_us_per_decision, r.server_cores) {
        out.push_str(&format!(
            "  server cpu  {us:.2} µs per {}, {cores:.2} cores busy\n",
            unit.trim_end_matches('s')
        ));
    }
    if let Some(cores) = r.client_cores {
        out.push_str(&format!(
            "  client cpu  {cores:.2} cores busy (this load generator)\n"
        ));
    }
    out.push_str(&format!("  errors      {} ({} shed)\n", r.errors, r.shed));
    if let Some(e) = &r.first_error {
        out.push_str(&format!("  first error {e}\n"));
    }
    out
}

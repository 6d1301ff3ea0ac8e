//! The end-to-end bench (issue #12), as a user would measure a node: the release `tact
//! serve` pinned to core 0 and `tact bench` (the load generator) pinned to core 1, on
//! 100,000 synthetic customers with 10-30 events each. Baselines in the same run, on
//! the same core: a no-op server with the same proto (`tact bench-noop-server`), and
//! Redis + Lua, what users build instead (consent check, one channel sliding-window cap,
//! one global cap; read-only like Decide; `redis-benchmark` pipelined 32 deep on 4
//! connections, on core 1).
//!
//! Targets (ratios, not timed tests): unary Decide at 64 in flight >= 0.9x the no-op's
//! throughput and p99 <= 1.2x; DecideBatch (1,000 a call, 4 in flight) and DecideStream
//! at verdict-only >= 8x Redis + Lua's checks/s. Screening runs both ways: 1,000
//! requests at DETAIL_VERDICT, and an audience (one marketing email proposed to 1,000
//! customers, answered packed), each beside the no-op server answering the same
//! messages.
//!
//! `scripts/bench-e2e` builds the release binary, installs redis-server if it can, and
//! runs this. Directly: `cargo build --release -p tact && cargo bench -p tact-benches
//! --bench e2e`. Environment: `E2E_CUSTOMERS` (100000), `E2E_SECS` per phase (8),
//! `E2E_ROUNDS` (2), `TACT_BIN` (default: target/release/tact), `E2E_AUDIT` (the server's
//! `--audit`: `all`, its default, or `authorize` or `off`; the decision audit's writer
//! takes up to 15% of the server's core when batches saturate it).
//!
//! Each phase also prints the host's stolen time (`steal`, from `/proc/stat`: CPU time
//! the hypervisor gave to other guests), and each round its worst phase. Above 5%, the
//! round measured the VM's neighbours as much as tact. A slow period can also show
//! without it (shared caches and memory): compare the no-op's figures between runs, or
//! count instructions with `benches/instructions.sh`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tact_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TACT_BIN") {
        return PathBuf::from(p);
    }
    // This bench runs as target/release/deps/e2e-<hash>.
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("tact"))
        .expect("target dir")
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` pinned to `core`, its output to `log`.
fn pinned(name: &'static str, core: u32, program: &Path, args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("log file");
    // taskset execs the program: the child's pid is the program's.
    let child = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .arg(program)
        .args(args)
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { child, name }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on port {port} within 60 s");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `tact bench ARGS --json` pinned to core 1: its report.
fn bench(tact: &Path, target: &str, pid: u32, args: &[&str]) -> Value {
    let before = host_ticks();
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(tact)
        .args(["bench", "--quiet", "--json", "--target", target])
        .args(["--server-pid", &pid.to_string()])
        .args(args)
        .output()
        .expect("run tact bench");
    let steal = steal_pct(before, host_ticks());
    let stdout = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(mut v) => {
            v["host_steal_pct"] = steal.map_or(Value::Null, Value::from);
            v
        }
        Err(e) => panic!(
            "tact bench {args:?} gave no report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn p99(v: &Value) -> f64 {
    v["latency_us"]["p99"].as_f64().unwrap_or(f64::NAN)
}

fn line(label: &str, v: &Value) {
    let l = &v["latency_us"];
    println!(
        "  {label:<34} {:>10.0}/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  server {:>6.2} µs/decision ({:.2} cores)  load generator {:.2} cores  errors {} shed {}  steal {:.0}%",
        f(v, "decisions_per_sec"),
        l["p50"],
        l["p99"],
        l["p999"],
        f(v, "server_cpu_us_per_decision"),
        f(v, "server_cores"),
        f(v, "client_cores"),
        v["errors"],
        v["shed"],
        f(v, "host_steal_pct"),
    );
}

/// The server's CPU time so far (user + system), from `/proc/<pid>/stat`, in µs.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let rest = stat.rsplit_once(')').expect("stat").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 * 1e6 / hz
}

/// The host's CPU time taken by the hypervisor (`steal`) and all CPU time so far, in
/// ticks, from the `cpu` line of `/proc/stat`; `None` where there is none.
fn host_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let steal = *fields.get(7)?;
    Some((steal, fields.iter().take(8).sum()))
}

/// The share of the host's CPU time the hypervisor took between two readings, in %.
fn steal_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    (t1 > t0).then(|| (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
}

/// Above this much stolen time, a phase measured the VM's neighbours as much as tact.
const STEAL_NOTED_PCT: f64 = 5.0;

/// A Redis connection speaking just enough RESP for the baseline.
struct Resp {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Resp {
    fn connect(port: u16) -> Resp {
        let w = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        w.set_nodelay(true).ok();
        let r = BufReader::new(w.try_clone().expect("clone socket"));
        Resp { w, r }
    }

    fn encode(buf: &mut Vec<u8>, args: &[&[u8]]) {
        write!(buf, "*{}\r\n", args.len()).unwrap();
        for a in args {
            write!(buf, "${}\r\n", a.len()).unwrap();
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
    }

    /// One reply: an integer, or a string (simple or bulk); arrays are read and dropped.
    fn reply(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read from redis");
        let body = line.trim_end().to_owned();
        match body.as_bytes().first() {
            Some(b'+') | Some(b':') => Ok(body[1..].to_owned()),
            Some(b'-') => Err(body[1..].to_owned()),
            Some(b'$') => {
                let n: i64 = body[1..].parse().expect("bulk length");
                if n < 0 {
                    return Ok(String::new());
                }
                let mut data = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut data).expect("bulk");
                Ok(String::from_utf8_lossy(&data[..n as usize]).into_owned())
            }
            Some(b'*') => {
                let n: i64 = body[1..].parse().expect("array length");
                for _ in 0..n.max(0) {
                    self.reply()?;
                }
                Ok(String::new())
            }
            _ => Err(format!("unexpected reply {body:?}")),
        }
    }

    fn send(&mut self, buf: &[u8]) {
        self.w.write_all(buf).expect("write to redis");
    }
}

/// Consent for channel:purpose, else DENY; the channel's sends in the window under its
/// cap, and all sends under the global cap, else DEFER. KEYS[1] is the customer's id:
/// the script derives its three keys from it, because `redis-benchmark` draws every
/// `__rand_int__` of a command independently, so three keys passed as KEYS would belong
/// to three different customers. (Keys a script did not declare work on one Redis, not
/// on a cluster; the cost is one string concatenation a key.)
const CHECK: &str = r"
local c = KEYS[1]
if redis.call('HGET', 'consent:' .. c, ARGV[1]) ~= '1' then return 0 end
local now = tonumber(ARGV[2])
if redis.call('ZCOUNT', 'sent:' .. c .. ':' .. ARGV[7], now - tonumber(ARGV[3]), '+inf') >= tonumber(ARGV[4]) then return 2 end
if redis.call('ZCOUNT', 'sent:' .. c, now - tonumber(ARGV[5]), '+inf') >= tonumber(ARGV[6]) then return 2 end
return 1
";

/// A customer's id in Redis: `redis-benchmark -r` replaces `__rand_int__` with twelve
/// zero-padded digits, so the population is keyed the same way (keys it never wrote
/// would make every check one miss and a `return 0`).
fn redis_id(i: u64) -> String {
    format!("{i:012}")
}

const CHANNELS: [&str; 4] = ["email", "sms", "call", "push"];
const DAY_MS: u64 = 86_400_000;

/// The Redis + Lua baseline: populate as many customers (consents, 5-20 sends over 90
/// days), then check for `secs` from 4 connections pipelined 32 deep. `None` when
/// redis-server is not installed.
/// The instant Redis's histories end at and its checks are made at.
const NOW_MS: u64 = 1_800_000_000_000;

/// Redis + Lua, populated and ready: `round` measures one round of checks.
struct Redis {
    server: Proc,
    port: String,
    tool: String,
    sha: String,
    client: Resp,
    customers: u64,
}

/// Starts redis-server on core 0 and populates it as tact's customers are; `None`
/// (and says why) without redis-server or redis-benchmark.
fn redis_baseline(dir: &Path, customers: u64) -> Option<Redis> {
    let server = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))?;
    let port = free_port();
    let port_s = port.to_string();
    let redis = pinned(
        "redis-server",
        0,
        &server,
        &[
            "--port",
            &port_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().expect("utf-8 dir"),
        ],
        &dir.join("redis.log"),
    );
    wait_for_port(port, "redis-server");
    let mut c = Resp::connect(port);
    let mut buf = Vec::new();
    Resp::encode(&mut buf, &[b"SCRIPT", b"LOAD", CHECK.as_bytes()]);
    c.send(&buf);
    let sha = c.reply().expect("script loads");
    let mut x: u64 = 0x5eed;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let started = Instant::now();
    for chunk in (0..customers).collect::<Vec<_>>().chunks(1000) {
        buf.clear();
        let mut replies = 0;
        for &i in chunk {
            for ch in CHANNELS {
                let granted = if rnd(100) < 80 { "1" } else { "0" };
                Resp::encode(
                    &mut buf,
                    &[
                        b"HSET",
                        format!("consent:{}", redis_id(i)).as_bytes(),
                        format!("{ch}:marketing").as_bytes(),
                        granted.as_bytes(),
                    ],
                );
                replies += 1;
            }
            for _ in 0..5 + rnd(16) {
                let at = (NOW_MS - rnd(90 * DAY_MS)).to_string();
                let ch = CHANNELS[rnd(4) as usize];
                let member = format!("{at}-{}", rnd(1 << 30));
                Resp::encode(
                    &mut buf,
                    &[
                        b"ZADD",
                        format!("sent:{}:{ch}", redis_id(i)).as_bytes(),
                        at.as_bytes(),
                        member.as_bytes(),
                    ],
                );
                Resp::encode(
                    &mut buf,
                    &[
                        b"ZADD",
                        format!("sent:{}", redis_id(i)).as_bytes(),
                        at.as_bytes(),
                        member.as_bytes(),
                    ],
                );
                replies += 2;
            }
        }
        c.send(&buf);
        for _ in 0..replies {
            c.reply().expect("populate");
        }
    }
    println!(
        "  redis: {customers} customers populated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let check = |id: &str| check_args(&sha, id);
    // What the check answers on this population (so the load below is known to read
    // real keys, not to stop at a missing one).
    let mut verdicts = [0u32; 3];
    for _ in 0..10_000 {
        buf.clear();
        let args = check(&redis_id(rnd(customers)));
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        Resp::encode(&mut buf, &refs);
        c.send(&buf);
        let v: usize = c.reply().expect("check").parse().expect("0, 1 or 2");
        verdicts[v] += 1;
    }
    println!(
        "  redis: 10000 sample checks: {} allow, {} deny (no consent), {} over a cap",
        verdicts[1], verdicts[0], verdicts[2]
    );
    // The load: redis-benchmark (C, from redis-tools) on core 1, EVALSHA of the check
    // pipelined 32 deep on 4 connections, each of a random customer.
    let Some(tool) = Command::new("sh")
        .args(["-c", "command -v redis-benchmark"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    else {
        println!("  redis: no redis-benchmark (redis-tools): the baseline is skipped");
        return None;
    };
    Some(Redis {
        server: redis,
        port: port_s,
        tool,
        sha,
        client: c,
        customers,
    })
}

/// The check's `EVALSHA` for customer `id`: an email for marketing, now, with a cap of
/// 3 a week on email and 8 a month on all channels.
fn check_args(sha: &str, id: &str) -> [Vec<u8>; 11] {
    [
        b"EVALSHA".to_vec(),
        sha.as_bytes().to_vec(),
        b"1".to_vec(),
        id.as_bytes().to_vec(),
        b"email:marketing".to_vec(),
        NOW_MS.to_string().into_bytes(),
        (7 * DAY_MS).to_string().into_bytes(),
        b"3".to_vec(),
        (30 * DAY_MS).to_string().into_bytes(),
        b"8".to_vec(),
        b"email".to_vec(),
    ]
}

impl Redis {
    /// One round: redis-benchmark (C, from redis-tools) on core 1, `EVALSHA` of the
    /// check pipelined 32 deep on 4 connections, each of a random customer, for about
    /// `secs`; its checks/s, the server's CPU per check (µs) and the host's stolen time (%).
    fn round(&mut self, secs: u64) -> (f64, f64, f64) {
        let requests = (60_000 * secs).to_string();
        let keyspace = self.customers.to_string();
        let (hits0, misses0) = keyspace_stats(&mut self.client);
        let cpu0 = cpu_us(self.server.pid());
        let host0 = host_ticks();
        let t0 = Instant::now();
        let args = check_args(&self.sha, "__rand_int__");
        let run = Command::new("taskset")
            .args([
                "-c", "1", &self.tool, "-p", &self.port, "-c", "4", "-P", "32", "-n", &requests,
            ])
            .args(["-r", &keyspace, "--csv"])
            .args(args.iter().map(|a| String::from_utf8_lossy(a).into_owned()))
            .output()
            .expect("run redis-benchmark");
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_us(self.server.pid()) - cpu0;
        let steal = steal_pct(host0, host_ticks()).unwrap_or(f64::NAN);
        let (hits, misses) = keyspace_stats(&mut self.client);
        let csv = String::from_utf8_lossy(&run.stdout);
        let rps: f64 = csv
            .lines()
            .nth(1)
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("redis-benchmark gave no rate: {csv}"));
        let checks = requests.parse::<f64>().expect("number");
        println!(
            "  redis + lua (redis-benchmark -c 4 -P 32)   {rps:>10.0}/s  server {:>6.2} µs/check ({:.2} cores); {} key reads hit, {} missed  steal {steal:.0}%",
            cpu / checks,
            cpu / 1e6 / wall,
            hits - hits0,
            misses - misses0
        );
        (rps, cpu / checks, steal)
    }
}

/// Redis's counts of key reads that found their key and that did not.
fn keyspace_stats(c: &mut Resp) -> (u64, u64) {
    let mut buf = Vec::new();
    Resp::encode(&mut buf, &[b"INFO", b"stats"]);
    c.send(&buf);
    let info = c.reply().expect("INFO");
    let stat = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO stats has no {name}"))
    };
    (stat("keyspace_hits"), stat("keyspace_misses"))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let customers = env_or("E2E_CUSTOMERS", 100_000);
    let secs = env_or("E2E_SECS", 8);
    let rounds = env_or("E2E_ROUNDS", 2);
    let audit = std::env::var("E2E_AUDIT").unwrap_or_else(|_| "all".to_owned());
    let tact = tact_bin();
    if !tact.exists() {
        eprintln!(
            "e2e: no release tact at {} (build it: cargo build --release -p tact, or set TACT_BIN)",
            tact.display()
        );
        std::process::exit(1);
    }
    if Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("e2e: taskset (util-linux) is needed to pin the server and the load generator");
        std::process::exit(1);
    }
    // This process (the Redis client) runs beside tact bench, on core 1.
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = root.join("config/policy.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let (tp, np) = (free_port(), free_port());
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let data = dir.path().join("data");
    let server = pinned(
        "tact serve",
        0,
        &tact,
        &[
            "serve",
            "--listen",
            &listen(tp),
            "--data-dir",
            data.to_str().expect("utf-8 dir"),
            "--policy",
            policy.to_str().expect("utf-8 path"),
            "--snapshot-on-shutdown",
            "false",
            "--audit",
            &audit,
        ],
        &dir.path().join("tact.log"),
    );
    let noop = pinned(
        "tact bench-noop-server",
        0,
        &tact,
        &["bench-noop-server", "--listen", &listen(np)],
        &dir.path().join("noop.log"),
    );
    wait_for_port(tp, "tact serve");
    wait_for_port(np, "the no-op server");
    let (tu, nu) = (format!("http://{}", listen(tp)), format!("http://{}", listen(np)));
    println!(
        "e2e: tact serve (pid {}) and the no-op server (pid {}) on core 0, tact bench on core 1; {customers} customers, {secs} s a phase, {rounds} rounds, audit {audit}",
        server.pid(),
        noop.pid()
    );
    let started = Instant::now();
    let n = customers.to_string();
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&tact)
        .args([
            "bench",
            "--quiet",
            "--target",
            &tu,
            "--populate",
            "--populate-only",
        ])
        .args(["--customers", &n])
        .status()
        .expect("populate");
    assert!(out.success(), "populate failed");
    println!(
        "  populated {customers} customers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let s = secs.to_string();
    let common = ["--customers", &n, "--duration", &s, "--warmup", "2"];
    let run = |url: &str, pid: u32, extra: &[&str]| {
        let mut args: Vec<&str> = common.to_vec();
        args.extend_from_slice(extra);
        bench(&tact, url, pid, &args)
    };
    let unary = ["--op", "decide", "--concurrency", "64"];
    let unloaded = ["--op", "decide", "--concurrency", "1"];
    let batch = ["--op", "batch", "--concurrency", "4", "--batch-size", "1000"];
    let stream = ["--op", "stream", "--concurrency", "4", "--batch-size", "1000"];
    let screen = ["--op", "screen", "--concurrency", "4", "--batch-size", "1000"];
    // Redis + Lua is measured in every round, between tact's unary and batch phases,
    // so that each round's ratios compare figures minutes apart, not a whole run.
    let mut redis = redis_baseline(dir.path(), customers);
    let mut summary = Vec::new();
    for round in 1..=rounds {
        println!("round {round}");
        let t64 = run(&tu, server.pid(), &unary);
        line("tact Decide, 64 in flight", &t64);
        let n64 = run(&nu, noop.pid(), &unary);
        line("no-op Decide, 64 in flight", &n64);
        let t1 = run(&tu, server.pid(), &unloaded);
        line("tact Decide, unloaded", &t1);
        let n1 = run(&nu, noop.pid(), &unloaded);
        line("no-op Decide, unloaded", &n1);
        let rr = redis.as_mut().map(|r| r.round(secs));
        let bf = run(&tu, server.pid(), &[&batch[..], &["--detail", "full"]].concat());
        line("tact DecideBatch 1000 x4, full", &bf);
        let bv = run(
            &tu,
            server.pid(),
            &[&batch[..], &["--detail", "verdict"]].concat(),
        );
        line("tact DecideBatch 1000 x4, verdict", &bv);
        let sf = run(&tu, server.pid(), &[&stream[..], &["--detail", "full"]].concat());
        line("tact DecideStream 4 x1000, full", &sf);
        let sv = run(
            &tu,
            server.pid(),
            &[&stream[..], &["--detail", "verdict"]].concat(),
        );
        line("tact DecideStream 4 x1000, verdict", &sv);
        let nb = run(&nu, noop.pid(), &[&batch[..], &["--detail", "verdict"]].concat());
        line("no-op DecideBatch 1000 x4, verdict", &nb);
        let ns = run(&nu, noop.pid(), &[&stream[..], &["--detail", "verdict"]].concat());
        line("no-op DecideStream 4 x1000, verdict", &ns);
        let ta = run(&tu, server.pid(), &screen);
        line("tact DecideBatch audience 1000 x4", &ta);
        let na = run(&nu, noop.pid(), &screen);
        line("no-op DecideBatch audience 1000 x4", &na);
        summary.push((t64, n64, t1, n1, bf, bv, sf, sv, ta, na, rr));
    }
    drop(server);
    drop(noop);
    drop(redis);
    println!("\nsummary (each round: tact and its baseline back to back on the same cores)");
    for (i, (t64, n64, t1, n1, bf, bv, sf, sv, ta, na, rr)) in summary.iter().enumerate() {
        println!(
            "  round {}: unary 64 in flight {:.2}x the no-op's throughput (target >= 0.9), p99 {:.2}x (<= 1.2), server CPU per call {:.2}x; unloaded p99 {:.2}x",
            i + 1,
            f(t64, "decisions_per_sec") / f(n64, "decisions_per_sec"),
            p99(t64) / p99(n64),
            f(t64, "server_cpu_us_per_decision") / f(n64, "server_cpu_us_per_decision"),
            p99(t1) / p99(n1),
        );
        let per = |v: &Value| (f(v, "decisions_per_sec"), f(v, "server_cpu_us_per_decision"));
        let ((bfr, bfc), (bvr, bvc), (sfr, sfc), (svr, svc)) = (per(bf), per(bv), per(sf), per(sv));
        let ((tar, tac), (nar, nac)) = (per(ta), per(na));
        println!(
            "           batch full {bfr:.0}/s {bfc:.2} µs, verdict {bvr:.0}/s {bvc:.2} µs; stream full {sfr:.0}/s {sfc:.2} µs, verdict {svr:.0}/s {svc:.2} µs (server CPU per decision)"
        );
        println!(
            "           audience {tar:.0}/s {tac:.2} µs, {:.2}x the no-op's {nar:.0}/s {nac:.2} µs",
            tar / nar
        );
        match rr {
            Some((checks, cpu, _)) => {
                println!(
                    "           redis + lua {checks:.0} checks/s, {cpu:.2} µs per check: audience {:.1}x, batch verdict {:.1}x, stream verdict {:.1}x, batch full {:.1}x its checks/s (target >= 8x)",
                    tar / checks,
                    bvr / checks,
                    svr / checks,
                    bfr / checks
                );
                // CPU time is what a core gives when the host takes some of it away (a
                // VM's stolen time slows both rates, not always alike).
                println!(
                    "           by server CPU per decision: audience {:.1}x, batch verdict {:.1}x, stream verdict {:.1}x, batch full {:.1}x",
                    cpu / tac,
                    cpu / bvc,
                    cpu / svc,
                    cpu / bfc
                );
            }
            None => println!(
                "           redis + lua: skipped (redis-server not installed: apt-get install -y redis-server)"
            ),
        }
        let phases = [t64, n64, t1, n1, bf, bv, sf, sv, ta, na];
        let worst = phases
            .iter()
            .map(|v| f(v, "host_steal_pct"))
            .chain(rr.map(|r| r.2))
            .filter(|s| s.is_finite())
            .reduce(f64::max);
        if let Some(worst) = worst {
            println!(
                "           host steal: up to {worst:.0}% of a phase's CPU time{}",
                if worst > STEAL_NOTED_PCT {
                    " (above 5%: the VM's neighbours moved this round's figures; compare rounds with less)"
                } else {
                    ""
                }
            );
        }
    }
}

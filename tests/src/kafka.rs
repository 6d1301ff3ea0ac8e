//! A real Kafka-compatible broker for tests: tansu (`cargo install tansu --version 0.6.0
//! --features dynostore --locked`; `.ci/run` and `scripts/test` install it), started on a
//! free port with in-memory storage, plus helpers to run tact against it.
//!
//! These tests never skip silently: without tansu they fail, saying how to install it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tact_core::{Event, Policy, Timestamp};
use tact_ingest::{KafkaFeed, KafkaOptions, OriginKey, Publisher};
use tact_proto::pb;
use tact_server::{ServerOptions, SystemClock};
use tokio::sync::oneshot;

use crate::Client;

/// Finds the tansu binary: `$TANSU`, then `PATH`, then `~/.cargo/bin`.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the Kafka tests need the tansu broker and it is not installed: run `scripts/test` \
             (which installs it), or `cargo install tansu --version 0.6.0 --features dynostore --locked`, \
             or point $TANSU at it"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A tansu broker on a free port, killed on drop.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let bin = tansu_binary();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_binary())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--partitions",
                &partitions.to_string(),
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("tansu topic create runs");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Freezes the broker (SIGSTOP): it stops answering without closing connections,
    /// like a hung or partitioned-away broker.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Kills the broker (SIGKILL): connections are refused from then on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Options for tact against this broker, with a short staleness limit and session
    /// timeout so tests run quickly.
    pub fn options(&self, topic: &str) -> KafkaOptions {
        let mut o = KafkaOptions::new(self.addr()).with_max_staleness(Duration::from_secs(1));
        o.topic = topic.to_owned();
        o.session_timeout = Duration::from_secs(6);
        // The instances of one test share the key tact signs its own messages with.
        o.admission.origin_key = Some(OriginKey::new(TEST_ORIGIN_KEY.to_vec()).unwrap());
        o
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Thaw a paused broker so it can die; it may be gone already (`kill`).
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tact server in this process, consuming from Kafka, on the system clock.
#[derive(Debug)]
pub struct KafkaServer {
    pub handle: tact_server::ServerHandle,
    pub feed: Arc<KafkaFeed>,
    stop: oneshot::Sender<()>,
    _guard: StopOnDrop,
}

impl KafkaServer {
    pub async fn start(opts: KafkaOptions, data_dir: Option<PathBuf>) -> KafkaServer {
        let feed = Arc::new(KafkaFeed::new(opts).expect("kafka feed"));
        let mut server =
            ServerOptions::new("127.0.0.1:0".parse().unwrap(), data_dir, Policy::default_policy());
        server.clock = Arc::new(SystemClock);
        server.feed = Some(Arc::clone(&feed) as Arc<dyn tact_server::Feed>);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tact_server::run(server, async move {
            let _ = stopped.await;
        })
        .await
        .expect("server starts");
        KafkaServer {
            handle,
            _guard: StopOnDrop(Arc::clone(&feed)),
            feed,
            stop,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(format!("http://{}", self.handle.local_addr()))
            .await
            .expect("connects")
    }

    /// Waits until the feed owns at least one partition and every owned one is fresh.
    pub async fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let s = tact_server::Feed::status(&*self.feed);
            if s.healthy {
                return;
            }
            assert!(Instant::now() < deadline, "not healthy within {within:?}: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.wait().await.expect("clean shutdown");
    }
}

/// Stops the feed's threads when dropped, so a test that panics ends instead of hanging.
#[derive(Debug)]
struct StopOnDrop(Arc<KafkaFeed>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.request_stop();
    }
}

/// Produces events with tact's publisher (keyed by customer, murmur2 partitioner).
/// The origin key of the tact instances in these tests.
pub const TEST_ORIGIN_KEY: &[u8] = b"tact end-to-end tests origin key";

/// Produces as a system of record would: unsigned, so the events are judged as coming
/// from outside tact.
pub async fn produce(opts: &KafkaOptions, events: Vec<Event>) {
    let mut outside = opts.clone();
    outside.admission.origin_key = None;
    let publisher = Publisher::new(&outside).expect("producer");
    publisher.produce(events, 50_000).await.expect("produced");
}

/// The wall clock now, as tact's timestamp.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
}

/// Polls `Decide` until `pred` holds (or panics after `within`); returns how long it took.
pub async fn decide_until(
    client: &mut Client,
    req: &pb::DecideRequest,
    within: Duration,
    mut pred: impl FnMut(&Result<pb::Decision, tonic::Status>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let r = client.decide(req.clone()).await.map(|r| r.into_inner());
        if pred(&r) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "condition not met within {within:?}; last answer {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

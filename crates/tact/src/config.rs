//! Settings: built-in defaults < the TOML config file < `TACT_*` environment variables < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tact_core::Policy;
use tact_server::TransportOptions;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "config/tact.toml";

/// Every setting, after layering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where `tact serve` keeps its event log (`<data_dir>/log`) and snapshot.
    pub data_dir: PathBuf,
    /// The address `tact serve` listens on for gRPC.
    pub listen: SocketAddr,
    /// The contact policy (TOML).
    pub policy: PathBuf,
    /// The URL of the tact server that `import`, `check` and `customer` talk to.
    pub server: String,
    /// Events per group commit (one storage write and flush).
    pub group_commit_max_batch: usize,
    /// How long a group commit waits for more appends once it has one (0: only what is queued).
    pub group_commit_max_wait_ms: u64,
    /// Proposals in one `DecideBatch` request.
    pub max_batch: usize,
    /// Events in one `RecordEvents` request.
    pub max_events_per_request: usize,
    /// Encoded size of one gRPC request.
    pub max_request_bytes: usize,
    /// Write a snapshot of the state on clean shutdown (faster restarts).
    pub snapshot_on_shutdown: bool,
    /// The engine of a new event log (an existing log opens with the engine that wrote it).
    pub log_engine: tact_log::Engine,
    /// The event log's block or page cache, bytes.
    pub log_cache_bytes: u64,
    /// Recently recorded event ids kept in memory for duplicate checks (the rest are
    /// looked up in the log's disk index).
    pub index_cache_entries: usize,
    /// Kafka bootstrap servers (`HOST:PORT,...`); unset: the embedded default, no Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// The topic of interaction events.
    pub kafka_topic: String,
    /// The consumer group; instances in one group split the topic's partitions.
    pub kafka_group: String,
    /// Where bad messages are also sent (they are always kept in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_dead_letter_topic: Option<String>,
    /// Beyond this lag (ms), marketing and sales decisions are denied as stale.
    pub max_staleness_ms: u64,
    /// The consumer group session timeout (ms).
    pub kafka_session_timeout_ms: u64,
    /// Where `tact serve` serves Prometheus metrics (`GET /metrics`); unset: nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// How far ahead of the server's clock an event's `occurred_at` may be (ms); later
    /// ones are rejected (gRPC) or dead-lettered (Kafka). Also kept as extra history.
    pub max_clock_skew_ms: u64,
    /// The largest free-text field of an event or proposal (URL, topic, reason, proof,
    /// campaign, source, requested_by, ...), in bytes. Ids are at most 256 bytes.
    pub max_text_bytes: usize,
    /// The shared secret with which tact signs the events it produces to Kafka, so that
    /// only its own `outreachAuthorized` events are accepted from the topic. Instances
    /// sharing a topic must share it. Unset: `<data_dir>/kafka-origin.key`, created by
    /// `tact serve` if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_origin_key_file: Option<PathBuf>,
    /// After SIGTERM, calls in flight get this long (ms); then connections are closed.
    pub shutdown_grace_ms: u64,
    /// The final flush and snapshot get this long (ms); a hung disk is then abandoned.
    pub shutdown_flush_timeout_ms: u64,
    /// A new connection must complete its HTTP/2 handshake within this time (ms).
    pub handshake_timeout_ms: u64,
    /// HTTP/2 PING interval on every connection (ms).
    pub http2_keepalive_interval_ms: u64,
    /// A connection that does not answer a PING within this time (ms) is closed.
    pub http2_keepalive_timeout_ms: u64,
    /// Concurrent calls per connection.
    pub max_concurrent_streams: u32,
    /// Open connections; more are closed at once. Keep under the file limit.
    pub max_connections: usize,
    /// HTTP/2 flow-control window per call (bytes).
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection (bytes).
    pub http2_connection_window_bytes: u32,
    /// The clients file (API key hashes, scopes, rate limits); unset: no API keys, and
    /// `serve` listens only on a loopback address (unless mTLS or
    /// `allow_unauthenticated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// The server's TLS certificate chain (PEM); with `tls_key`, gRPC is served over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The server's TLS private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must be signed by (mutual TLS); the
    /// certificate's subject CN (else first DNS SAN) names the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    // --- Decision audit (issue 11, section 2) ---
    /// Which decisions are kept: `all`, `authorize` (only Authorize), `off`.
    #[serde(default)]
    pub audit: tact_server::AuditMode,
    /// Audit records are pruned this many days after the decision.
    #[serde(default = "default_audit_retention_days")]
    pub audit_retention_days: u32,
    /// With Kafka: also produce every audit record, as JSON, to this topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_decision_topic: Option<String>,
}

fn default_audit_retention_days() -> u32 {
    tact_server::audit::DEFAULT_RETENTION_DAYS
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl Default for Settings {
    fn default() -> Self {
        let t = TransportOptions::default();
        Settings {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            policy: PathBuf::from("config/policy.toml"),
            server: "http://127.0.0.1:50051".to_owned(),
            group_commit_max_batch: 16_384,
            group_commit_max_wait_ms: 0,
            max_batch: 10_000,
            max_events_per_request: 10_000,
            max_request_bytes: 16 << 20,
            snapshot_on_shutdown: true,
            log_engine: tact_log::Engine::default(),
            log_cache_bytes: tact_log::StorageOptions::default().cache_bytes,
            index_cache_entries: tact_log::StorageOptions::default().id_cache_entries,
            kafka_brokers: None,
            kafka_topic: tact_ingest::KafkaOptions::DEFAULT_TOPIC.to_owned(),
            kafka_group: tact_ingest::KafkaOptions::DEFAULT_GROUP.to_owned(),
            kafka_dead_letter_topic: None,
            max_staleness_ms: 5_000,
            kafka_session_timeout_ms: 10_000,
            metrics_listen: None,
            max_clock_skew_ms: 24 * 3_600_000,
            max_text_bytes: 4096,
            kafka_origin_key_file: None,
            shutdown_grace_ms: ms(t.shutdown_grace),
            shutdown_flush_timeout_ms: ms(t.flush_timeout),
            handshake_timeout_ms: ms(t.handshake_timeout),
            http2_keepalive_interval_ms: ms(t.http2_keepalive_interval),
            http2_keepalive_timeout_ms: ms(t.http2_keepalive_timeout),
            max_concurrent_streams: t.max_concurrent_streams,
            max_connections: t.max_connections,
            http2_stream_window_bytes: t.http2_stream_window_bytes,
            http2_connection_window_bytes: t.http2_connection_window_bytes,
            clients: None,
            allow_unauthenticated: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            audit: tact_server::AuditMode::All,
            audit_retention_days: default_audit_retention_days(),
            kafka_decision_topic: None,
        }
    }
}

/// The keys read from `TACT_*` environment variables (`TACT_DATA_DIR`, ...).
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "policy",
    "server",
    "group_commit_max_batch",
    "group_commit_max_wait_ms",
    "max_batch",
    "max_events_per_request",
    "max_request_bytes",
    "snapshot_on_shutdown",
    "log_engine",
    "log_cache_bytes",
    "index_cache_entries",
    "kafka_brokers",
    "kafka_topic",
    "kafka_group",
    "kafka_dead_letter_topic",
    "max_staleness_ms",
    "kafka_session_timeout_ms",
    "metrics_listen",
    "max_clock_skew_ms",
    "max_text_bytes",
    "kafka_origin_key_file",
    "shutdown_grace_ms",
    "shutdown_flush_timeout_ms",
    "handshake_timeout_ms",
    "http2_keepalive_interval_ms",
    "http2_keepalive_timeout_ms",
    "max_concurrent_streams",
    "max_connections",
    "http2_stream_window_bytes",
    "http2_connection_window_bytes",
    "clients",
    "allow_unauthenticated",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "audit",
    "audit_retention_days",
    "kafka_decision_topic",
];

/// The settings given as flags; unset flags do not override anything.
#[derive(Clone, Debug, Default, Args, Serialize)]
pub struct SettingsArgs {
    /// Data directory of the event log [default: ./data]
    #[arg(long, global = true, env = "TACT_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address for `serve` [default: 127.0.0.1:50051]
    #[arg(long, global = true, env = "TACT_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Contact policy file [default: config/policy.toml]
    #[arg(long, global = true, env = "TACT_POLICY", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// URL of the tact server for import/check/customer [default: http://127.0.0.1:50051]
    #[arg(long, global = true, env = "TACT_SERVER", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Events per group commit [default: 16384]
    #[arg(long, global = true, env = "TACT_GROUP_COMMIT_MAX_BATCH", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit_max_batch: Option<usize>,
    /// Milliseconds a group commit waits for more appends [default: 0]
    #[arg(long, global = true, env = "TACT_GROUP_COMMIT_MAX_WAIT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit_max_wait_ms: Option<u64>,
    /// Proposals per DecideBatch request [default: 10000]
    #[arg(long, global = true, env = "TACT_MAX_BATCH", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Events per RecordEvents request [default: 10000]
    #[arg(long, global = true, env = "TACT_MAX_EVENTS_PER_REQUEST", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_events_per_request: Option<usize>,
    /// Bytes per gRPC request [default: 16777216]
    #[arg(long, global = true, env = "TACT_MAX_REQUEST_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<usize>,
    /// Snapshot the state on clean shutdown [default: true]
    #[arg(long, global = true, env = "TACT_SNAPSHOT_ON_SHUTDOWN", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_on_shutdown: Option<bool>,
    /// Engine of a new event log: fjall, sled (an existing log keeps its own) [default: fjall]
    #[arg(long, global = true, env = "TACT_LOG_ENGINE", value_name = "ENGINE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_engine: Option<tact_log::Engine>,
    /// Bytes of the event log's block or page cache [default: 268435456]
    #[arg(long, global = true, env = "TACT_LOG_CACHE_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_cache_bytes: Option<u64>,
    /// Recent event ids kept in memory for duplicate checks [default: 262144]
    #[arg(long, global = true, env = "TACT_INDEX_CACHE_ENTRIES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_cache_entries: Option<usize>,
    /// Kafka bootstrap servers, HOST:PORT[,...]; unset: no Kafka [default: unset]
    #[arg(long, global = true, env = "TACT_KAFKA_BROKERS", value_name = "HOSTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// Topic of interaction events [default: tact.interactions]
    #[arg(long, global = true, env = "TACT_KAFKA_TOPIC", value_name = "TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_topic: Option<String>,
    /// Kafka consumer group [default: tact]
    #[arg(long, global = true, env = "TACT_KAFKA_GROUP", value_name = "GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_group: Option<String>,
    /// Topic that also receives bad messages [default: unset]
    #[arg(
        long,
        global = true,
        env = "TACT_KAFKA_DEAD_LETTER_TOPIC",
        value_name = "TOPIC"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_dead_letter_topic: Option<String>,
    /// Lag in ms beyond which marketing and sales are denied as stale [default: 5000]
    #[arg(long, global = true, env = "TACT_MAX_STALENESS_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_staleness_ms: Option<u64>,
    /// Kafka consumer group session timeout in ms [default: 10000]
    #[arg(long, global = true, env = "TACT_KAFKA_SESSION_TIMEOUT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_session_timeout_ms: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: unset]
    #[arg(long, global = true, env = "TACT_METRICS_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// How far ahead of the server clock occurred_at may be, in ms [default: 86400000]
    #[arg(long, global = true, env = "TACT_MAX_CLOCK_SKEW_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clock_skew_ms: Option<u64>,
    /// Largest free-text field of an event or proposal, in bytes [default: 4096]
    #[arg(long, global = true, env = "TACT_MAX_TEXT_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_text_bytes: Option<usize>,
    /// File holding the secret tact signs its Kafka messages with [default: DATA_DIR/kafka-origin.key]
    #[arg(long, global = true, env = "TACT_KAFKA_ORIGIN_KEY_FILE", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_origin_key_file: Option<PathBuf>,
    /// Ms that calls in flight get after SIGTERM before connections close [default: 30000]
    #[arg(long, global = true, env = "TACT_SHUTDOWN_GRACE_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_ms: Option<u64>,
    /// Ms the final flush and snapshot get before a hung disk is abandoned [default: 10000]
    #[arg(
        long,
        global = true,
        env = "TACT_SHUTDOWN_FLUSH_TIMEOUT_MS",
        value_name = "MS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_flush_timeout_ms: Option<u64>,
    /// Ms a new connection has to complete its HTTP/2 handshake [default: 10000]
    #[arg(long, global = true, env = "TACT_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_ms: Option<u64>,
    /// HTTP/2 PING interval in ms [default: 30000]
    #[arg(
        long,
        global = true,
        env = "TACT_HTTP2_KEEPALIVE_INTERVAL_MS",
        value_name = "MS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive_interval_ms: Option<u64>,
    /// Ms a connection has to answer a PING [default: 10000]
    #[arg(
        long,
        global = true,
        env = "TACT_HTTP2_KEEPALIVE_TIMEOUT_MS",
        value_name = "MS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive_timeout_ms: Option<u64>,
    /// Concurrent calls per connection [default: 1024]
    #[arg(long, global = true, env = "TACT_MAX_CONCURRENT_STREAMS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// Open connections, kept under the file limit [default: 10000]
    #[arg(long, global = true, env = "TACT_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// HTTP/2 flow-control window per call in bytes [default: 65536]
    #[arg(
        long,
        global = true,
        env = "TACT_HTTP2_STREAM_WINDOW_BYTES",
        value_name = "BYTES"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_stream_window_bytes: Option<u32>,
    /// HTTP/2 flow-control window per connection in bytes [default: 2097152]
    #[arg(
        long,
        global = true,
        env = "TACT_HTTP2_CONNECTION_WINDOW_BYTES",
        value_name = "BYTES"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_connection_window_bytes: Option<u32>,
    /// Clients file: API key hashes, scopes, rate limits [default: unset, no keys]
    #[arg(long, global = true, env = "TACT_CLIENTS", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address [default: false]
    #[arg(
        long,
        global = true,
        env = "TACT_ALLOW_UNAUTHENTICATED",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    /// TLS certificate chain (PEM) for gRPC [default: unset, plaintext]
    #[arg(long, global = true, env = "TACT_TLS_CERT", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [default: unset]
    #[arg(long, global = true, env = "TACT_TLS_KEY", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates must be signed by: mutual TLS [default: unset]
    #[arg(long, global = true, env = "TACT_TLS_CLIENT_CA", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Decisions kept in the audit: all, authorize, off [default: all]
    #[arg(long, global = true, env = "TACT_AUDIT", value_name = "MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<tact_server::AuditMode>,
    /// Days audit records are kept [default: 400]
    #[arg(long, global = true, env = "TACT_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<u32>,
    /// With Kafka, also produce audit records as JSON to this topic [default: unset]
    #[arg(long, global = true, env = "TACT_KAFKA_DECISION_TOPIC", value_name = "TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_decision_topic: Option<String>,
}

/// Layers the settings. `config` is the `--config` flag: a file named there must exist;
/// the default file may be missing.
pub fn load(config: Option<&Path>, flags: &SettingsArgs) -> anyhow::Result<Settings> {
    let settings = figment(config, flags)?
        .extract::<Settings>()
        .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    settings.validate()?;
    Ok(settings)
}

fn figment(config: Option<&Path>, flags: &SettingsArgs) -> anyhow::Result<Figment> {
    let file = match config {
        Some(path) => {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            path.to_path_buf()
        }
        None => PathBuf::from(DEFAULT_CONFIG),
    };
    Ok(layers(Toml::file(file), flags))
}

/// Defaults < the config file's TOML < `TACT_*` environment variables < flags.
fn layers(file: figment::providers::Data<Toml>, flags: &SettingsArgs) -> Figment {
    Figment::from(Serialized::defaults(Settings::default()))
        .merge(file)
        .merge(Env::prefixed("TACT_").only(ENV_KEYS))
        .merge(Serialized::defaults(flags))
}

/// The largest group-commit wait: appenders wait this long for their answer.
const MAX_GROUP_COMMIT_WAIT_MS: u64 = 1_000;
/// The longest audit retention (100 years).
const MAX_AUDIT_RETENTION_DAYS: u32 = 36_500;
/// The event log's page cache: at least 1 MiB, at most 64 GiB.
const MIN_LOG_CACHE_BYTES: u64 = 1 << 20;
const MAX_LOG_CACHE_BYTES: u64 = 64 << 30;
/// The most event ids the in-memory cache may hold (about 100 bytes each).
const MAX_INDEX_CACHE_ENTRIES: usize = 1 << 26;
/// The longest clock skew: it is also kept as extra history for every customer.
const MAX_CLOCK_SKEW_MS: u64 = 30 * 24 * 3_600_000;

impl Settings {
    /// Refuses settings that would leave the service unusable or unsafe, naming the
    /// setting and what it must be.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, why: String| {
            if !ok {
                problems.push(format!("{key}: {why}"));
            }
        };
        check(
            self.group_commit_max_batch >= 1,
            "group_commit_max_batch",
            format!("must be at least 1 (got {})", self.group_commit_max_batch),
        );
        check(
            self.group_commit_max_wait_ms <= MAX_GROUP_COMMIT_WAIT_MS,
            "group_commit_max_wait_ms",
            format!(
                "at most {MAX_GROUP_COMMIT_WAIT_MS} ms: every write waits for it (got {})",
                self.group_commit_max_wait_ms
            ),
        );
        check(
            (MIN_LOG_CACHE_BYTES..=MAX_LOG_CACHE_BYTES).contains(&self.log_cache_bytes),
            "log_cache_bytes",
            format!(
                "from {MIN_LOG_CACHE_BYTES} (1 MiB) to {MAX_LOG_CACHE_BYTES} (64 GiB) (got {})",
                self.log_cache_bytes
            ),
        );
        check(
            self.index_cache_entries <= MAX_INDEX_CACHE_ENTRIES,
            "index_cache_entries",
            format!(
                "at most {MAX_INDEX_CACHE_ENTRIES} (about 100 bytes each) (got {})",
                self.index_cache_entries
            ),
        );
        check(
            self.max_batch >= 1,
            "max_batch",
            format!("must be at least 1 (got {})", self.max_batch),
        );
        check(
            self.max_events_per_request >= 1,
            "max_events_per_request",
            format!("must be at least 1 (got {})", self.max_events_per_request),
        );
        check(
            (1024..=1 << 30).contains(&self.max_request_bytes),
            "max_request_bytes",
            format!(
                "must be between 1024 (one event) and 1073741824 (got {})",
                self.max_request_bytes
            ),
        );
        check(
            self.max_staleness_ms >= 1,
            "max_staleness_ms",
            format!("must be at least 1 (got {})", self.max_staleness_ms),
        );
        check(
            self.kafka_session_timeout_ms >= 1,
            "kafka_session_timeout_ms",
            format!("must be at least 1 (got {})", self.kafka_session_timeout_ms),
        );
        check(
            self.max_clock_skew_ms <= MAX_CLOCK_SKEW_MS,
            "max_clock_skew_ms",
            format!(
                "at most {MAX_CLOCK_SKEW_MS} (30 days): it is kept as extra history for every customer (got {})",
                self.max_clock_skew_ms
            ),
        );
        check(
            (64..=1 << 20).contains(&self.max_text_bytes),
            "max_text_bytes",
            format!("must be between 64 and 1048576 (got {})", self.max_text_bytes),
        );
        check(
            (1..=MAX_AUDIT_RETENTION_DAYS).contains(&self.audit_retention_days),
            "audit_retention_days",
            format!(
                "must be between 1 and {MAX_AUDIT_RETENTION_DAYS} (got {})",
                self.audit_retention_days
            ),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid settings: {}", problems.join("; "))
        }
    }

    /// What events and proposals from outside must satisfy.
    pub fn admission(&self) -> tact_core::Admission {
        tact_core::Admission {
            max_clock_skew: tact_core::Span(self.max_clock_skew_ms.min(MAX_CLOCK_SKEW_MS) as i64),
            max_text_bytes: self.max_text_bytes,
        }
    }

    /// Where the Kafka origin key lives.
    pub fn kafka_origin_key_path(&self) -> PathBuf {
        self.kafka_origin_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("kafka-origin.key"))
    }

    /// The Kafka origin key; with `create`, a missing default key file is created.
    pub fn kafka_origin_key(&self, create: bool) -> anyhow::Result<tact_ingest::OriginKey> {
        let path = self.kafka_origin_key_path();
        if !path.exists() && create && self.kafka_origin_key_file.is_none() {
            std::fs::create_dir_all(&self.data_dir)
                .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
            write_secret(&path, &tact_ingest::OriginKey::generate_text())
                .with_context(|| format!("cannot write the Kafka origin key {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "created a new kafka origin key: every tact instance (and `tact replay --from-kafka`) reading this topic must use the same key file"
            );
        }
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the Kafka origin key {} (the servers' key file; without it the events \
                 tact wrote to the topic would be refused): pass --kafka-origin-key-file",
                path.display()
            )
        })?;
        tact_ingest::OriginKey::from_text(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn group_commit(&self) -> tact_log::GroupCommit {
        tact_log::GroupCommit {
            max_batch_events: self.group_commit_max_batch.max(1),
            max_wait: Duration::from_millis(self.group_commit_max_wait_ms),
            ..tact_log::GroupCommit::default()
        }
    }

    /// The event log's memory: sled's page cache and the cache of recent event ids.
    pub fn log_memory(&self) -> tact_log::StorageOptions {
        tact_log::StorageOptions {
            engine: self.log_engine,
            cache_bytes: self.log_cache_bytes,
            id_cache_entries: self.index_cache_entries,
        }
    }

    pub fn auth(&self) -> tact_server::AuthOptions {
        tact_server::AuthOptions {
            clients_file: self.clients.clone(),
            allow_unauthenticated: self.allow_unauthenticated,
            ..tact_server::AuthOptions::default()
        }
    }

    /// TLS for `serve`: both `tls_cert` and `tls_key`, or neither (and a client CA only with them).
    pub fn tls(&self) -> anyhow::Result<Option<tact_server::TlsOptions>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(tact_server::TlsOptions {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            (None, None) => bail!("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)"),
            _ => bail!("tls_cert and tls_key go together: give both, or neither for plaintext"),
        }
    }

    pub fn limits(&self) -> tact_server::Limits {
        tact_server::Limits {
            max_batch: self.max_batch,
            max_events_per_request: self.max_events_per_request,
            max_request_bytes: self.max_request_bytes,
            ..tact_server::Limits::default()
        }
    }

    /// The server's connection limits, timeouts and shutdown deadlines, checked: a value
    /// that would make the service unusable is an error naming the setting.
    pub fn transport(&self) -> anyhow::Result<TransportOptions> {
        let t = TransportOptions {
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            http2_keepalive_interval: Duration::from_millis(self.http2_keepalive_interval_ms),
            http2_keepalive_timeout: Duration::from_millis(self.http2_keepalive_timeout_ms),
            max_concurrent_streams: self.max_concurrent_streams,
            http2_stream_window_bytes: self.http2_stream_window_bytes,
            http2_connection_window_bytes: self.http2_connection_window_bytes,
            max_connections: self.max_connections,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            flush_timeout: Duration::from_millis(self.shutdown_flush_timeout_ms),
        };
        match t.validate() {
            Ok(()) => Ok(t),
            Err(tact_server::ServerError::InvalidOption { name, why }) => {
                bail!("invalid setting {}: {why}", setting_of(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The Kafka options, if Kafka is configured.
    pub fn kafka(&self) -> Option<tact_ingest::KafkaOptions> {
        let brokers = self.kafka_brokers.as_deref().filter(|b| !b.trim().is_empty())?;
        let mut o = tact_ingest::KafkaOptions::new(brokers)
            .with_max_staleness(Duration::from_millis(self.max_staleness_ms.max(1)));
        o.topic = self.kafka_topic.clone();
        o.group = self.kafka_group.clone();
        o.dead_letter_topic = self.kafka_dead_letter_topic.clone().filter(|t| !t.is_empty());
        o.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms.max(1));
        o.admission.admission = self.admission();
        Some(o)
    }

    /// The Kafka options, or an error saying how to configure them.
    pub fn require_kafka(&self) -> anyhow::Result<tact_ingest::KafkaOptions> {
        match self.kafka() {
            Some(o) => Ok(o),
            None => bail!(
                "no Kafka configured: pass --kafka-brokers HOST:PORT (or TACT_KAFKA_BROKERS, or kafka_brokers in the config file)"
            ),
        }
    }

    /// The decision audit's options (the Kafka sink is added by `serve`).
    pub fn audit(&self) -> tact_server::AuditOptions {
        tact_server::AuditOptions {
            mode: self.audit,
            retention: Duration::from_secs(u64::from(self.audit_retention_days.max(1)) * 86_400),
            ..tact_server::AuditOptions::default()
        }
    }

    /// Loads and checks the policy file.
    pub fn load_policy(&self) -> anyhow::Result<Policy> {
        load_policy(&self.policy)
    }
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The setting behind a [`TransportOptions`] field.
fn setting_of(option: &str) -> String {
    match option {
        "flush_timeout" => "shutdown_flush_timeout_ms".to_owned(),
        "handshake_timeout" | "http2_keepalive_interval" | "http2_keepalive_timeout" | "shutdown_grace" => {
            format!("{option}_ms")
        }
        other => other.to_owned(),
    }
}

/// Reads a policy file; errors name the file and (from the policy checker) the rule and field.
pub fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    Policy::from_toml_str(&text).map_err(|e| anyhow::anyhow!("invalid policy file {}: {e}", path.display()))
}

#[cfg(test)]
// figment::Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn flags() -> SettingsArgs {
        SettingsArgs::default()
    }

    #[test]
    fn defaults_without_file_env_or_flags() {
        figment::Jail::expect_with(|_jail| {
            let s = load(None, &flags()).map_err(|e| e.to_string())?;
            assert_eq!(s, Settings::default());
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/tact.toml",
                "listen = \"127.0.0.1:7000\"\nmax_batch = 5\nserver = \"http://file:1\"\n",
            )?;
            let s = load(None, &flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 7000);
            assert_eq!(s.max_batch, 5);

            jail.set_env("TACT_MAX_BATCH", "6");
            jail.set_env("TACT_SNAPSHOT_ON_SHUTDOWN", "false");
            jail.set_env("TACT_LOG_LEVEL", "debug"); // not a setting: ignored
            let s = load(None, &flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.max_batch, 6);
            assert!(!s.snapshot_on_shutdown);
            assert_eq!(s.server, "http://file:1");

            let f = SettingsArgs {
                max_batch: Some(7),
                listen: Some("127.0.0.1:0".parse().unwrap()),
                ..flags()
            };
            let s = load(None, &f).map_err(|e| e.to_string())?;
            assert_eq!(s.max_batch, 7);
            assert_eq!(s.listen.port(), 0);
            assert_eq!(s.server, "http://file:1");
            Ok(())
        });
    }

    #[test]
    fn explicit_missing_config_is_an_error() {
        figment::Jail::expect_with(|_jail| {
            let err = load(Some(Path::new("nope.toml")), &flags()).unwrap_err();
            assert!(err.to_string().contains("nope.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn audit_settings_layer_and_bad_ones_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "audit = \"authorize\"\naudit_retention_days = 30\n")?;
            let s = load(Some(Path::new("t.toml")), &flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.audit, tact_server::AuditMode::Authorize);
            assert_eq!(s.audit().retention, Duration::from_secs(30 * 86_400));
            jail.set_env("TACT_AUDIT", "off");
            jail.set_env("TACT_KAFKA_DECISION_TOPIC", "tact.decisions");
            let s = load(Some(Path::new("t.toml")), &flags()).map_err(|e| e.to_string())?;
            assert_eq!(s.audit, tact_server::AuditMode::Off);
            assert_eq!(s.kafka_decision_topic.as_deref(), Some("tact.decisions"));
            let f = SettingsArgs {
                audit: Some(tact_server::AuditMode::All),
                ..flags()
            };
            assert_eq!(
                load(Some(Path::new("t.toml")), &f).unwrap().audit,
                tact_server::AuditMode::All
            );
            jail.clear_env();
            jail.create_file("bad.toml", "audit = \"sometimes\"\n")?;
            let err = load(Some(Path::new("bad.toml")), &flags())
                .unwrap_err()
                .to_string();
            assert!(err.contains("audit") && err.contains("sometimes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "lisen = \"127.0.0.1:1\"\n")?;
            let err = load(Some(Path::new("t.toml")), &flags()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn shipped_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/tact.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let s: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(&text))
            .extract()
            .unwrap();
        assert_eq!(s, Settings::default());
        // Every setting is written out (optional ones, unset by default, commented out).
        for key in ENV_KEYS {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "config/tact.toml lacks {key}"
            );
        }
    }

    #[test]
    fn settings_that_make_the_service_unusable_are_refused_by_name() {
        for (key, value) in [
            ("max_request_bytes", "0"),
            ("group_commit_max_wait_ms", "120000"),
            ("group_commit_max_batch", "0"),
            ("max_batch", "0"),
            ("max_events_per_request", "0"),
            ("max_clock_skew_ms", "99999999999"),
            ("audit_retention_days", "0"),
            ("max_text_bytes", "0"),
            ("log_cache_bytes", "1000"),
            ("log_cache_bytes", "99999999999999"),
            ("index_cache_entries", "999999999999"),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.create_file("t.toml", &format!("{key} = {value}\n"))?;
                let err = load(Some(Path::new("t.toml")), &flags()).unwrap_err().to_string();
                assert!(err.contains(key), "{key}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn transport_settings_reach_the_server_and_unusable_ones_are_refused_by_name() {
        let s = Settings::default();
        assert_eq!(s.transport().unwrap(), TransportOptions::default());
        let s = Settings {
            shutdown_grace_ms: 0,
            max_connections: 5,
            ..Settings::default()
        };
        let t = s.transport().unwrap();
        assert_eq!((t.shutdown_grace, t.max_connections), (Duration::ZERO, 5));
        for (setting, s) in [
            (
                "handshake_timeout_ms",
                Settings {
                    handshake_timeout_ms: 0,
                    ..Settings::default()
                },
            ),
            (
                "max_connections",
                Settings {
                    max_connections: 0,
                    ..Settings::default()
                },
            ),
            (
                "shutdown_flush_timeout_ms",
                Settings {
                    shutdown_flush_timeout_ms: 0,
                    ..Settings::default()
                },
            ),
            (
                "http2_stream_window_bytes",
                Settings {
                    http2_stream_window_bytes: 0,
                    ..Settings::default()
                },
            ),
        ] {
            let err = s.transport().unwrap_err().to_string();
            assert!(err.contains(&format!("invalid setting {setting}:")), "{err}");
        }
    }

    #[test]
    fn shipped_policy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/policy.toml");
        load_policy(&path).unwrap();
    }

    #[test]
    fn policy_errors_name_file_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "version = \"v\"\ndefault_time_zone = \"UTC\"\n[[rule]]\nid = \"cap-x\"\ntype = \"frequency_cap\"\nmax = 1\nwindow = \"7 days\"\n",
        )
        .unwrap();
        let err = load_policy(&path).unwrap_err().to_string();
        assert!(err.contains("p.toml") && err.contains("cap-x"), "{err}");
    }

    /// Fuzzing the config file's text (the loader, without the file): arbitrary text,
    /// mutations of the shipped `config/tact.toml`, and arbitrary values for its keys.
    /// Never a panic; an error names what is wrong; settings that load are usable.
    /// 512 cases, `PROPTEST_CASES` to run more; failures kept in `proptest-regressions/`.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        const SHIPPED: &str = include_str!("../../../config/tact.toml");

        fn check(text: &str) {
            match layers(Toml::string(text), &SettingsArgs::default()).extract::<Settings>() {
                Ok(s) => {
                    let _ = (s.group_commit(), s.limits(), s.kafka());
                    // What loaded, written out and read back, is the same.
                    let again: Settings = Figment::from(Serialized::defaults(&s)).extract().unwrap();
                    assert_eq!(again, s);
                }
                Err(e) => assert!(!e.to_string().trim().is_empty()),
            }
        }

        fn config() -> ProptestConfig {
            let mut config = ProptestConfig::default();
            if std::env::var_os("PROPTEST_CASES").is_none() {
                config.cases = 512;
            }
            config
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                Just("18446744073709551616".to_owned()),
                any::<f64>().prop_map(|f| format!("{f:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                "\\PC{0,24}".prop_map(|s| format!("{s:?}")),
                prop::sample::select(vec![
                    "\"127.0.0.1:50051\"",
                    "\"[::1]:0\"",
                    "\"localhost:1\"",
                    "\"\"",
                    "\"host:99999\"",
                    "[]",
                    "{}",
                    "{ a = 1 }",
                    "[1, \"x\"]",
                    "1979-05-27T07:32:00Z",
                ])
                .prop_map(String::from),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn fuzz_config_arbitrary_text(text in "\\PC{0,256}") {
                figment::Jail::expect_with(|_| {
                    check(&text);
                    Ok(())
                });
            }

            #[test]
            fn fuzz_config_values(
                pairs in proptest::collection::vec(
                    (prop_oneof![prop::sample::select(ENV_KEYS).prop_map(String::from), "[a-z_]{1,12}"], value()),
                    0..6,
                ),
            ) {
                let mut seen = std::collections::HashSet::new();
                let text: String = pairs
                    .iter()
                    .filter(|(k, _)| seen.insert(k.clone()))
                    .map(|(k, v)| format!("{k} = {v}\n"))
                    .collect();
                figment::Jail::expect_with(|_| {
                    check(&text);
                    Ok(())
                });
            }

            #[test]
            fn fuzz_config_shipped_mutations(
                edits in proptest::collection::vec((any::<usize>(), any::<char>(), 0..4u8), 1..6),
            ) {
                let mut chars: Vec<char> = SHIPPED.chars().collect();
                for (at, c, op) in edits {
                    let len = chars.len();
                    match op {
                        0 if len > 0 => chars[at % len] = c,
                        1 => chars.insert(at % (len + 1), c),
                        2 if len > 0 => {
                            chars.remove(at % len);
                        }
                        _ => chars.truncate(at % (len + 1)),
                    }
                }
                let text: String = chars.into_iter().collect();
                figment::Jail::expect_with(|_| {
                    check(&text);
                    Ok(())
                });
            }
        }
    }
}

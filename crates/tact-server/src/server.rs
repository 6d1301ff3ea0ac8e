//! `Options -> run -> Handle`: the gRPC server with health and reflection, over the
//! engine, with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tact_core::{Admission, Policy};
use tact_log::{
    AuditStore, FjallAudit, GroupCommit, MemoryAudit, MemoryStorage, ReplayStats, SledAudit, Storage,
    StorageOptions,
};
use tact_proto::pb::contact_policy_server::ContactPolicyServer;
use tact_proto::pb::tact_admin_server::TactAdminServer;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;

use crate::admin::{AdminService, ReloadFailed, ReloadReport, reload_from_file};
use crate::audit::{AuditOptions, Auditor};
use crate::auth::{AuthOptions, Authenticator};
use crate::buffers::BufferWatch;
use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineOptions};
use crate::error::ServerError;
use crate::feed::Feed;
use crate::guard::{Guard, Guarded};
use crate::service::{ContactPolicyService, Limits};
use crate::shed::ShedOptions;
use crate::tls::TlsOptions;
use crate::transport::{Incoming, Signals, TransportOptions};

/// The health-check service name that reports the Kafka feed's freshness.
pub const INGEST_HEALTH_SERVICE: &str = "tact.v1.Ingest";

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// `None`: in-memory storage (nothing survives a restart).
    pub data_dir: Option<PathBuf>,
    /// A storage to use instead of opening one under `data_dir` (tests use it to model
    /// a failing disk).
    pub storage: Option<Arc<dyn Storage>>,
    pub policy: Policy,
    /// The file `policy` was read from: SIGHUP ([`ServerHandle::reload_policy`]) and
    /// the `ReloadPolicy` RPC re-read it. `None`: the policy cannot be reloaded.
    pub policy_file: Option<PathBuf>,
    pub group_commit: GroupCommit,
    pub limits: Limits,
    /// Write a snapshot of the projection on clean shutdown, so the next start
    /// replays only what came after it.
    pub snapshot_on_shutdown: bool,
    pub clock: Arc<dyn Clock>,
    /// An external event stream (Kafka) to consume, started once state is rebuilt.
    pub feed: Option<Arc<dyn Feed>>,
    /// What events from outside must satisfy (clock skew, text sizes, reserved ids).
    pub admission: Admission,
    /// Connection limits and timeouts, and the shutdown deadlines.
    pub transport: TransportOptions,
    /// API keys (the clients file) and the unauthenticated mode's limits.
    pub auth: AuthOptions,
    /// TLS (and mutual TLS with a client CA); `None`: plaintext.
    pub tls: Option<TlsOptions>,
    /// Bounded batch work and streams, so interactive calls stay fast.
    pub shed: ShedOptions,
    /// The decision audit: which decisions are kept, for how long, where.
    pub audit: AuditOptions,
    /// The sled log's memory: its page cache and the cache of recent event ids.
    pub log_memory: StorageOptions,
    /// Cancelled during shutdown: the grace ends at once, and the remaining connections
    /// are closed (`tact serve` cancels it on a second SIGTERM or SIGINT). The log is
    /// still flushed and the snapshot written.
    pub end_grace: CancellationToken,
}

impl ServerOptions {
    pub fn new(listen: SocketAddr, data_dir: Option<PathBuf>, policy: Policy) -> Self {
        ServerOptions {
            listen,
            data_dir,
            storage: None,
            policy,
            policy_file: None,
            group_commit: GroupCommit::default(),
            limits: Limits::default(),
            snapshot_on_shutdown: true,
            clock: Arc::new(SystemClock),
            feed: None,
            admission: Admission::default(),
            transport: TransportOptions::default(),
            auth: AuthOptions::default(),
            tls: None,
            shed: ShedOptions::default(),
            audit: AuditOptions::default(),
            log_memory: StorageOptions::default(),
            end_grace: CancellationToken::new(),
        }
    }
}

/// Opens the log under `data_dir` (created if missing), with the default engine and caches.
pub fn open_storage(data_dir: &Path) -> Result<Arc<dyn Storage>, ServerError> {
    open_storage_with(data_dir, StorageOptions::default())
}

/// Opens the log under `data_dir` (created if missing): an existing log with the engine
/// that wrote it, a new one with `options.engine`; with the given caches.
pub fn open_storage_with(data_dir: &Path, options: StorageOptions) -> Result<Arc<dyn Storage>, ServerError> {
    let err = |why: String| ServerError::DataDir {
        path: data_dir.display().to_string(),
        why,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
    let (storage, engine) = tact_log::open_storage(&data_dir.join("log"), options).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("lock") || msg.contains("WouldBlock") || msg.contains("temporarily unavailable") {
            err(format!("{msg} (is another tact process using it?)"))
        } else {
            err(msg)
        }
    })?;
    tracing::info!(engine = %engine, "event log opened");
    Ok(storage)
}

/// Opens the decision audit's database, `<data_dir>/audit` (created if missing): beside
/// the event log, not in it. An existing audit opens with the engine that wrote it, a
/// new one with `engine`.
pub fn open_audit(data_dir: &Path, engine: tact_log::Engine) -> Result<Arc<dyn AuditStore>, ServerError> {
    let path = data_dir.join("audit");
    let err = |e: tact_log::AuditError| ServerError::DataDir {
        path: path.display().to_string(),
        why: format!("decision audit: {e}"),
    };
    let engine = tact_log::Engine::of_existing(&path).unwrap_or(engine);
    // The store's own threads (fjall's flush and compaction workers, sled's flusher) are
    // started as it opens and take the priority of the thread that opens it: the audit
    // writer's, below the threads that answer calls, so that a compaction of the audit
    // does not hold up a decision.
    let opened =
        crate::audit::at_background_priority(|| -> Result<Arc<dyn AuditStore>, tact_log::AuditError> {
            Ok(match engine {
                tact_log::Engine::Sled => Arc::new(SledAudit::open(&path)?),
                tact_log::Engine::Fjall => Arc::new(FjallAudit::open(&path)?),
            })
        });
    opened.map_err(err)
}

/// tonic answers a request message over `max_decoding_message_size` with OUT_OF_RANGE
/// (trailers-only, before any service code runs); gRPC specifies RESOURCE_EXHAUSTED for
/// a message over the size limit, and clients treat the two differently. Streams get
/// the same from `service::message_too_large`.
fn oversized_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let oversized = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if oversized {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    engine: Arc<Engine>,
    auth: Arc<Authenticator>,
    auditor: Arc<Auditor>,
    policy_file: Option<PathBuf>,
    replay: ReplayStats,
    task: JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Who may call: reload the clients file with `auth().reload()` (SIGHUP in `tact serve`).
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The decision audit (`sync` to wait for queued records, `prune_now`).
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.auditor
    }

    /// Re-reads the policy file and puts it in force (SIGHUP in `tact serve`; the
    /// `ReloadPolicy` RPC does the same). A file that does not read or validate changes
    /// nothing and says why.
    pub async fn reload_policy(&self) -> Result<ReloadReport, ReloadFailed> {
        reload_from_file(&self.engine, self.policy_file.as_deref()).await
    }

    /// How state was rebuilt at start (events replayed, snapshot used).
    pub fn replay_stats(&self) -> ReplayStats {
        self.replay
    }

    /// Resolves once shutdown has finished: health went NOT_SERVING, in-flight calls
    /// completed (or the shutdown grace ran out and their connections were closed), the
    /// log was flushed and (if configured) a snapshot written. An error if the storage
    /// failed (the log is poisoned, or the final flush timed out): nothing was flushed.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(|e| ServerError::Join(e.to_string()))?
    }
}

/// How long closed connections get to end their tasks once the shutdown grace is over.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Health NOT_SERVING for the API and for the server as a whole (the "" service).
async fn set_not_serving(health: &tonic_health::server::HealthReporter) {
    health
        .set_not_serving::<ContactPolicyServer<ContactPolicyService>>()
        .await;
    health.set_not_serving::<TactAdminServer<AdminService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

/// Rebuilds state, binds, and serves until `shutdown` resolves.
pub async fn run(
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle, ServerError> {
    let transport = opts.transport;
    transport.validate()?;
    let tls = opts.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let mtls = opts.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let auth = Arc::new(Authenticator::new(&opts.auth, mtls)?);
    if auth.is_open() && !opts.listen.ip().is_loopback() && !opts.auth.allow_unauthenticated {
        return Err(ServerError::Unauthenticated { addr: opts.listen });
    }
    if auth.is_open() {
        tracing::warn!(
            "no clients file and no client certificates: every caller may do everything (loopback only)"
        );
    } else {
        tracing::info!(clients = auth.clients().len(), "api keys from the clients file");
    }
    if let Some(warning) = transport.frame_budget_warning() {
        tracing::warn!(detail = %warning, "http/2 windows let a fast stream trip h2's flood protection");
    }
    let storage: Arc<dyn Storage> = match (opts.storage, &opts.data_dir) {
        (Some(storage), _) => storage,
        (None, Some(dir)) => open_storage_with(dir, opts.log_memory)?,
        (None, None) => Arc::new(MemoryStorage::new()),
    };
    let audit_store: Arc<dyn AuditStore> = match (&opts.audit.store, &opts.data_dir) {
        (Some(store), _) => Arc::clone(store),
        (None, Some(dir)) => open_audit(dir, opts.log_memory.engine)?,
        (None, None) => Arc::new(MemoryAudit::new()),
    };
    let auditor = Auditor::start(audit_store, &opts.audit, Arc::clone(&opts.clock));
    tracing::info!(
        mode = auditor.mode().as_str(),
        retention_days = opts.audit.retention.as_secs() / 86_400,
        "decision audit"
    );
    let policy_version = opts.policy.version().clone();
    let (engine, stats) = Engine::open(
        storage,
        opts.policy,
        EngineOptions {
            group_commit: opts.group_commit,
            clock: opts.clock,
            feed: opts.feed.clone(),
            admission: opts.admission,
        },
    )
    .await?;
    tracing::info!(
        events = stats.events,
        customers = stats.customers,
        snapshot = ?stats.snapshot,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "state rebuilt from the log"
    );
    let engine = Arc::new(engine);
    if let Some(feed) = &opts.feed {
        feed.start(engine.log().handle())?;
    }

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: opts.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Listen {
        addr: opts.listen,
        source,
    })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ContactPolicyServer<ContactPolicyService>>()
        .await;
    health.set_serving::<TactAdminServer<AdminService>>().await;
    metrics::gauge!("tact_log_poisoned").set(0.0);
    // A poisoned log (a storage failure) records nothing until tact is restarted: say
    // so, for the API and the server as a whole.
    let poison_task = {
        let health = health.clone();
        let poisoned = engine.log().when_poisoned();
        tokio::spawn(async move {
            let cause = poisoned.await;
            metrics::gauge!("tact_log_poisoned").set(1.0);
            metrics::counter!("tact_log_poisoned_total").increment(1);
            tracing::error!(
                error = %cause,
                "event log failed: health NOT_SERVING, writes refused until tact is restarted"
            );
            set_not_serving(&health).await;
        })
    };
    // Gauges sampled once a second: customers in memory, the log position, the log's
    // counters, and the storage engines' write buffers (see `crate::buffers`).
    let gauges_task = {
        let engine = Arc::clone(&engine);
        let audit_store = Arc::clone(auditor.store());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut log_buffers = BufferWatch::new("log");
            let mut audit_buffers = BufferWatch::new("audit");
            loop {
                tick.tick().await;
                let now = std::time::Instant::now();
                log_buffers.sample(engine.log().storage().write_buffers(), now);
                audit_buffers.sample(audit_store.write_buffers(), now);
                let stats = engine.log().stats();
                let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                metrics::gauge!("tact_customers_in_memory").set(engine.customers() as f64);
                metrics::gauge!("tact_log_position").set(engine.position() as f64);
                metrics::counter!("tact_log_events_recorded_total").absolute(load(&stats.recorded));
                metrics::counter!("tact_log_duplicates_total").absolute(load(&stats.duplicates));
                metrics::counter!("tact_log_flushes_total").absolute(load(&stats.flushes));
            }
        })
    };
    // With a feed, `tact.v1.Ingest` reports whether every owned partition is caught up
    // and fresh (the API stays SERVING: it fails closed per decision instead).
    let freshness_task = opts.feed.clone().map(|feed| {
        let health = health.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let healthy = feed.status().healthy;
                if last != Some(healthy) {
                    let status = if healthy {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status(INGEST_HEALTH_SERVICE, status).await;
                    last = Some(healthy);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    });
    // Reflection in both versions: grpc.reflection.v1, and v1alpha for the clients that
    // speak only that one (Python's grpcio-reflection, older grpcurl, several GUI tools).
    // Each lists both reflection services, as grpc-go's does.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tact_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let limits = opts.limits;
    let guard = Arc::new(Guard::new(Arc::clone(&auth), opts.shed));
    let api = ContactPolicyServer::new(Guarded::new(
        ContactPolicyService::new(Arc::clone(&engine), limits).with_audit(Arc::clone(&auditor)),
        Arc::clone(&guard),
    ))
    .max_decoding_message_size(limits.max_request_bytes)
    .max_encoding_message_size(usize::MAX);
    // tact.v1.TactAdmin (issue #11): policy reloads and history, live backtests.
    let admin = TactAdminServer::new(Guarded::new(
        AdminService::new(Arc::clone(&engine), opts.policy_file.clone()),
        guard,
    ))
    .max_decoding_message_size(limits.max_request_bytes)
    .max_encoding_message_size(usize::MAX);
    tracing::info!(
        addr = %local_addr,
        policy_version = %policy_version,
        tls = opts.tls.is_some(),
        mtls,
        "serving tact.v1.ContactPolicy"
    );

    let snapshot = opts.snapshot_on_shutdown;
    let end_grace = opts.end_grace.clone();
    let task_engine = Arc::clone(&engine);
    let task_auditor = Arc::clone(&auditor);
    let slots = Arc::new(Semaphore::new(transport.max_connections));
    let signals = Signals::default();
    let incoming = Incoming::new(listener, Arc::clone(&slots), &transport, signals.clone(), tls);
    let task = tokio::spawn(async move {
        let (fired, grace_starts) = tokio::sync::oneshot::channel::<()>();
        let stopping = signals.stopping.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                grace_ms = transport.shutdown_grace.as_millis() as u64,
                "shutting down: health not serving, finishing in-flight calls"
            );
            poison_task.abort();
            gauges_task.abort();
            set_not_serving(&health).await;
            if let Some(task) = freshness_task {
                task.abort();
                health
                    .set_service_status(INGEST_HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            // Connections still in their handshake have no call to finish.
            stopping.cancel();
            let _ = fired.send(());
        };
        let served = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                oversized_is_resource_exhausted,
            ))
            .http2_keepalive_interval(Some(transport.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(transport.http2_keepalive_timeout))
            .max_concurrent_streams(Some(transport.max_concurrent_streams))
            .initial_stream_window_size(Some(transport.http2_stream_window_bytes))
            .initial_connection_window_size(Some(transport.http2_connection_window_bytes))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(served);
        let grace_over = async {
            if grace_starts.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::select! {
                () = tokio::time::sleep(transport.shutdown_grace) => {}
                () = end_grace.cancelled() => {
                    tracing::warn!("shutdown grace ended early (asked again to stop)");
                }
            }
        };
        let served = tokio::select! {
            served = &mut served => served,
            () = grace_over => {
                let open = transport.max_connections - slots.available_permits();
                tracing::warn!(
                    connections = open,
                    grace_ms = transport.shutdown_grace.as_millis() as u64,
                    "shutdown grace is over: closing the remaining connections"
                );
                metrics::counter!("tact_connections_closed_at_shutdown_total").increment(open as u64);
                signals.kill();
                // Closed connections end their tasks at once; do not wait on any that
                // would not.
                match tokio::time::timeout(CLOSE_WAIT, &mut served).await {
                    Ok(served) => served,
                    Err(_) => {
                        tracing::warn!("connections still open after closing: abandoning them");
                        Ok(())
                    }
                }
            }
        };
        // The audit records of the calls answered are written and flushed (bounded: a
        // hung disk is not waited for).
        if tokio::time::timeout(transport.flush_timeout, task_auditor.close())
            .await
            .is_err()
        {
            tracing::warn!("audit records not flushed in time at shutdown");
        }
        // Whatever happened to the transport, make the log durable before leaving
        // (unless the storage has failed: then there is nothing to wait for).
        let closed = task_engine
            .shutdown_within(snapshot, transport.flush_timeout)
            .await;
        served?;
        closed?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(ServerHandle {
        local_addr,
        engine,
        auth,
        auditor,
        policy_file: opts.policy_file,
        replay: stats,
        task,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The ids and nice values of this process's threads named `name`.
    fn threads_named(name: &str) -> Vec<(u64, i64)> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                continue;
            };
            // Fields after the command's closing parenthesis start at field 3; nice is 19.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let nice: i64 = after.split(' ').nth(19 - 3).unwrap().parse().unwrap();
            let tid = task.file_name().to_string_lossy().parse().unwrap();
            found.push((tid, nice));
        }
        found
    }

    /// The audit's compaction and flushes run below the threads that answer calls; the
    /// thread that opened it keeps its priority.
    #[test]
    fn the_audit_store_works_at_the_writers_priority() {
        let dir = tempfile::tempdir().unwrap();
        let before: Vec<u64> = threads_named("fjall:worker")
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let nice_before = rustix::process::getpriority_process(None).unwrap();
        let store = open_audit(dir.path(), tact_log::Engine::Fjall).unwrap();
        let new: Vec<(u64, i64)> = threads_named("fjall:worker")
            .into_iter()
            .filter(|(t, _)| !before.contains(t))
            .collect();
        assert!(
            new.iter().any(|&(_, nice)| nice >= 10),
            "the audit's workers: {new:?}"
        );
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), nice_before);
        drop(store);
    }
}

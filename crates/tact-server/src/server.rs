//! `Options -> run -> Handle`: the gRPC server with health and reflection, over the
//! engine, with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tact_core::{Admission, Policy};
use tact_log::{GroupCommit, MemoryStorage, ReplayStats, SledStorage, Storage};
use tact_proto::pb::contact_policy_server::ContactPolicyServer;
use tokio::task::JoinHandle;
use tonic::codegen::http;

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineOptions};
use crate::error::ServerError;
use crate::feed::Feed;
use crate::service::{ContactPolicyService, Limits};

/// The health-check service name that reports the Kafka feed's freshness.
pub const INGEST_HEALTH_SERVICE: &str = "tact.v1.Ingest";

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// `None`: in-memory storage (nothing survives a restart).
    pub data_dir: Option<PathBuf>,
    pub policy: Policy,
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
}

impl ServerOptions {
    pub fn new(listen: SocketAddr, data_dir: Option<PathBuf>, policy: Policy) -> Self {
        ServerOptions {
            listen,
            data_dir,
            policy,
            group_commit: GroupCommit::default(),
            limits: Limits::default(),
            snapshot_on_shutdown: true,
            clock: Arc::new(SystemClock),
            feed: None,
            admission: Admission::default(),
        }
    }
}

/// Opens the sled log under `data_dir` (created if missing).
pub fn open_storage(data_dir: &Path) -> Result<Arc<dyn Storage>, ServerError> {
    let err = |why: String| ServerError::DataDir {
        path: data_dir.display().to_string(),
        why,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
    let storage = SledStorage::open(data_dir.join("log")).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("lock") || msg.contains("WouldBlock") || msg.contains("temporarily unavailable") {
            err(format!("{msg} (is another tact process using it?)"))
        } else {
            err(msg)
        }
    })?;
    Ok(Arc::new(storage))
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

    /// How state was rebuilt at start (events replayed, snapshot used).
    pub fn replay_stats(&self) -> ReplayStats {
        self.replay
    }

    /// Resolves once shutdown has finished: health went NOT_SERVING, in-flight calls
    /// completed, the log was flushed and (if configured) a snapshot written.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await.map_err(|e| ServerError::Join(e.to_string()))?
    }
}

/// Rebuilds state, binds, and serves until `shutdown` resolves.
pub async fn run(
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle, ServerError> {
    let storage: Arc<dyn Storage> = match &opts.data_dir {
        Some(dir) => open_storage(dir)?,
        None => Arc::new(MemoryStorage::new()),
    };
    let policy_version = opts.policy.version.clone();
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
        feed.start(Arc::clone(&engine))?;
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tact_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let limits = opts.limits;
    let api = ContactPolicyServer::new(ContactPolicyService::new(Arc::clone(&engine), limits))
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    tracing::info!(addr = %local_addr, policy_version = %policy_version, "serving tact.v1.ContactPolicy");

    let snapshot = opts.snapshot_on_shutdown;
    let task_engine = Arc::clone(&engine);
    let task = tokio::spawn(async move {
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: health not serving, finishing in-flight calls");
            health
                .set_not_serving::<ContactPolicyServer<ContactPolicyService>>()
                .await;
            if let Some(task) = freshness_task {
                task.abort();
                health
                    .set_service_status(INGEST_HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
                    .await;
            }
        };
        let served = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                oversized_is_resource_exhausted,
            ))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(api)
            .serve_with_incoming_shutdown(
                // Small request/response exchanges: Nagle's algorithm would add ~40 ms each.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await;
        // Whatever happened to the transport, make the log durable before leaving.
        let closed = task_engine.shutdown(snapshot).await;
        served?;
        closed?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(ServerHandle {
        local_addr,
        engine,
        replay: stats,
        task,
    })
}

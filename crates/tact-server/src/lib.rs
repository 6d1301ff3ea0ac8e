//! tact's service: the [`Engine`] (event log + live projection + policy) and the
//! `tact.v1.ContactPolicy` gRPC API over it, run with [`run`].

pub mod admin;
pub mod audit;
pub mod auth;
mod buffers;
pub mod clock;
pub mod engine;
mod error;
pub mod feed;
pub mod guard;
pub mod limits;
mod meters;
pub mod server;
pub mod service;
pub mod shed;
pub mod tls;
pub mod transport;

pub use admin::{AdminService, ReloadFailed, ReloadReport, reload_from_file};
pub use audit::{AuditMode, AuditOptions, AuditSink, Auditor};
pub use auth::{
    AuthOptions, Authenticator, Caller, ClientEntry, ClientsError, ClientsFile, RateLimits, Scope,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    Decided, Engine, EngineOptions, Refused, ReloadError, Reloaded, STALE_STATE_RULE, WriteError,
};
pub use error::ServerError;
pub use feed::{Access, BoxFeedFuture, DeadLetter, Feed, FeedError, FeedStatus, PartitionStatus};
pub use server::{
    INGEST_HEALTH_SERVICE, ServerHandle, ServerOptions, open_audit, open_storage, open_storage_with, run,
};
pub use service::{ContactPolicyService, Limits};
pub use shed::ShedOptions;
pub use tls::TlsOptions;
pub use transport::TransportOptions;

//! tact's service: the [`Engine`] (event log + live projection + policy) and the
//! `tact.v1.ContactPolicy` gRPC API over it, run with [`run`].

pub mod clock;
pub mod engine;
mod error;
pub mod server;
pub mod service;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Decided, Engine, EngineOptions};
pub use error::ServerError;
pub use server::{ServerHandle, ServerOptions, open_storage, run};
pub use service::{ContactPolicyService, Limits};

use tact_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("cannot open the data directory {path}: {why}")]
    DataDir { path: String, why: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error(transparent)]
    Feed(#[from] crate::feed::FeedError),
    #[error(
        "the storage did not finish the final flush within {} ms (hung disk?): stopped without it",
        timeout.as_millis()
    )]
    StorageHung { timeout: std::time::Duration },
    #[error("invalid server option {name}: {why}")]
    InvalidOption { name: &'static str, why: String },
    #[error(
        "refusing to serve without authentication on {addr}, which is not a loopback address: \
         give a clients file (--clients FILE, see `tact clients add`), or client certificates \
         (--tls-client-ca), or --allow-unauthenticated if anyone who reaches the port may \
         record, decide and authorize"
    )]
    Unauthenticated { addr: std::net::SocketAddr },
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Clients(#[from] crate::auth::ClientsError),
    #[error("internal task failed: {0}")]
    Join(String),
}

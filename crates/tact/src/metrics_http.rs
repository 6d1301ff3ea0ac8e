//! The Prometheus scrape endpoint (`--metrics-listen`): `GET /metrics` over HTTP/1.1,
//! on a listener bounded like the gRPC port.
//!
//! The exporter's own listener accepted any number of connections, never timed one
//! out, and retried a failed accept at once: idle connections to it took every file
//! descriptor of the process (the event log then failed to open a file and stopped
//! taking writes, withdrawals included), and then it logged the failure a million
//! times a second. Here:
//!
//! - at most [`MAX_SCRAPERS`] connections are served at once; the next is accepted only
//!   when one ends (the rest wait in the kernel's backlog, which holds no descriptor of
//!   ours);
//! - a connection must send its request headers within [`HEADER_TIMEOUT`] and is closed
//!   after [`CONNECTION_TIMEOUT`] whatever it does, one request per connection;
//! - an accept error backs off [`ACCEPT_BACKOFF`] and is logged at most once a second.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once (scrapers are few: Prometheus, an agent, a person).
pub const MAX_SCRAPERS: usize = 16;
/// A connection must have sent its request's headers within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever it is doing.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after an accept error (out of file descriptors, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often the recorder's histograms are tidied (the exporter's own default).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Serves `handle`'s metrics on `listener` until the runtime ends, and runs the
/// recorder's upkeep.
pub fn spawn(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(accept_loop(listener, handle));
}

async fn accept_loop(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    let mut last_warning: Option<Instant> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "metrics listener: accept failed; backing off");
                    last_warning = Some(Instant::now());
                }
                metrics::counter!("tact_accept_errors_total", "kind" => "metrics").increment(1);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(answer(&req, &handle)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (a bad request, a closed connection): nothing to do.
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn answer(req: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, handle.render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "metrics are at GET /metrics\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

//! The server's side of TCP: its own accept loop, so that a connection costs something
//! only while it is useful.
//!
//! - [`Incoming`] accepts connections up to [`TransportOptions::max_connections`]
//!   (over the cap a new connection is closed at once and counted), sets TCP_NODELAY,
//!   and on an accept error (EMFILE when out of file descriptors, ...) logs a
//!   rate-limited warning, counts it and backs off briefly instead of spinning.
//! - [`Conn`] wraps each accepted stream. Until the client has sent the HTTP/2 preface
//!   and the header of its first frame, a read must complete within
//!   [`TransportOptions::handshake_timeout`], or the connection is closed: hyper has no
//!   handshake timeout of its own, and HTTP/2 keepalive pings start only after it. A
//!   connection still in its handshake is also closed as soon as shutdown starts
//!   (hyper's graceful shutdown waits for the handshake to finish, which may be never),
//!   and every connection is closed once the shutdown grace is over.
//!
//! Metrics: `tact_connections_accepted_total`, `tact_connections_refused_total`
//! (over the cap), `tact_connections_open` (gauge), `tact_accept_errors_total`,
//! `tact_handshake_timeouts_total`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::auth::PeerIdentity;

use crate::error::ServerError;

/// The HTTP/2 client preface (24 bytes) and the 9-byte header of the first frame
/// (which must be SETTINGS): what a client must send to be past its handshake.
pub const HANDSHAKE_BYTES: usize = 24 + 9;

/// How long the accept loop pauses after an error that is not about one connection
/// (out of file descriptors, of memory, ...): long enough not to spin, short enough
/// that a freed descriptor is used soon.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning of a kind per this interval; the others are counted in it.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Connection handling of the gRPC server. Every field is a setting of `tact serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// A new connection must send the HTTP/2 preface and its first frame header within
    /// this time, or it is closed.
    pub handshake_timeout: Duration,
    /// HTTP/2 PING interval on every connection, idle or not.
    pub http2_keepalive_interval: Duration,
    /// A connection whose peer does not answer a PING within this time is closed.
    pub http2_keepalive_timeout: Duration,
    /// Concurrent streams (calls) per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each stream: request bytes a client may send ahead
    /// of what a call has read. Keep it at most a sixteenth of the connection window
    /// (see [`frame_budget_warning`](TransportOptions::frame_budget_warning)).
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window of a connection (all its streams together). h2 also
    /// derives its flood protection from it: a connection may hold unread small DATA
    /// frames worth half of it (each frame of `p` < 256 bytes counting `256 - p`).
    pub http2_connection_window_bytes: u32,
    /// Open connections; over it, new connections are closed at once. Each costs a file
    /// descriptor, so keep it under the process's limit (`ulimit -n`) minus the
    /// descriptors of the log and the rest.
    pub max_connections: usize,
    /// After the shutdown signal, calls in flight get this long to finish; then the
    /// remaining connections are closed and the log is flushed anyway.
    pub shutdown_grace: Duration,
    /// The final flush and snapshot get this long; a storage that takes longer is
    /// abandoned (a hung disk must not block the exit).
    pub flush_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            handshake_timeout: Duration::from_secs(10),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            http2_stream_window_bytes: 64 << 10,
            http2_connection_window_bytes: 2 << 20,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

impl TransportOptions {
    /// Refuses values that would make the service unusable. A zero `shutdown_grace` is
    /// allowed: it means "close connections at once".
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |name: &'static str, why: &str| {
            Err(ServerError::InvalidOption {
                name,
                why: why.to_owned(),
            })
        };
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be above 0 (no client could connect)");
        }
        if self.handshake_timeout > MAX_HANDSHAKE_TIMEOUT {
            return bad(
                "handshake_timeout",
                &format!(
                    "must be at most {} s (a connection that never finishes its handshake holds one of \
                     max_connections that long)",
                    MAX_HANDSHAKE_TIMEOUT.as_secs()
                ),
            );
        }
        if self.http2_keepalive_interval.is_zero() {
            return bad(
                "http2_keepalive_interval",
                "must be above 0 (pings would be sent without pause)",
            );
        }
        if self.http2_keepalive_timeout.is_zero() {
            return bad(
                "http2_keepalive_timeout",
                "must be above 0 (every connection would be closed at its first ping)",
            );
        }
        if self.max_concurrent_streams == 0 {
            return bad(
                "max_concurrent_streams",
                "must be at least 1 (no call could be made)",
            );
        }
        if self.max_connections == 0 {
            return bad(
                "max_connections",
                "must be at least 1 (every connection would be refused)",
            );
        }
        if self.max_connections > Semaphore::MAX_PERMITS {
            return bad(
                "max_connections",
                &format!("must be at most {}", Semaphore::MAX_PERMITS),
            );
        }
        for (name, window) in [
            ("http2_stream_window_bytes", self.http2_stream_window_bytes),
            (
                "http2_connection_window_bytes",
                self.http2_connection_window_bytes,
            ),
        ] {
            if window == 0 {
                return bad(name, "must be above 0 (no request could be sent)");
            }
            if window > MAX_WINDOW {
                return bad(name, &format!("must be at most {MAX_WINDOW} (HTTP/2's limit)"));
            }
        }
        if self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            return bad(
                "shutdown_grace",
                &format!(
                    "must be at most {} s (a stream nobody ends would hold the shutdown that long)",
                    MAX_SHUTDOWN_GRACE.as_secs()
                ),
            );
        }
        if self.flush_timeout.is_zero() {
            return bad(
                "flush_timeout",
                "must be above 0 (the log would never be flushed at shutdown)",
            );
        }
        Ok(())
    }
}

impl TransportOptions {
    /// A warning when the windows let one streaming call trip h2's flood protection.
    ///
    /// h2 (the HTTP/2 library under tonic) closes a connection with GOAWAY
    /// ENHANCE_YOUR_CALM `too_many_data_frames` when the small DATA frames it holds
    /// unread cost more than half the connection window, a frame of `p` < 256 payload
    /// bytes costing `256 - p`. A client that sends each request of a `DecideStream` in
    /// a frame of its own (~30-80 bytes) can get a stream window ahead of the call, so
    /// `stream_window / p * (256 - p)` must stay under `connection_window / 2`: with the
    /// connection window at least 16 stream windows, frames of 29 bytes and more never
    /// trip it.
    pub fn frame_budget_warning(&self) -> Option<String> {
        let stream = u64::from(self.http2_stream_window_bytes);
        let connection = u64::from(self.http2_connection_window_bytes);
        (connection < 16 * stream).then(|| {
            format!(
                "http2_connection_window_bytes ({connection}) is under 16 x http2_stream_window_bytes \
                 ({stream}): a fast stream of small requests can make h2 close its connection \
                 (GOAWAY too_many_data_frames)"
            )
        })
    }
}

/// HTTP/2's largest flow-control window.
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The longest shutdown grace: ten minutes, well past any orchestrator's wait for a stop.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(600);
/// The longest handshake timeout: five minutes.
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(300);

/// Allows one event of a kind per `every` and counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)`: report this event now, with `n` more since the last report; `None`:
    /// stay quiet (counted for the next report).
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Whether an accept error is about that one connection (the next accept may well
/// succeed) rather than the process (out of descriptors, memory, ...).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Signals shared by the listener and its connections.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    /// Shutdown started: connections still in their handshake close.
    pub(crate) stopping: CancellationToken,
    /// The shutdown grace is over: every connection closes. Fired by [`Signals::kill`].
    kill: CancellationToken,
    /// Set by [`Signals::kill`] before it cancels `kill`: what each read and write
    /// checks. A token's own `is_cancelled` takes its node's mutex, which every read
    /// and write of every connection would then contend on.
    killed: Arc<AtomicBool>,
}

impl Signals {
    /// Closes every connection: the ones busy at their next read or write, the idle
    /// ones at once (they are woken).
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.cancel();
    }
}

/// The accepted connections, as a stream for tonic's `serve_with_incoming_shutdown`.
/// Never yields an error: accept errors are logged, counted and waited out here.
pub(crate) struct Incoming {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    handshake_timeout: Duration,
    signals: Signals,
    backoff: Option<Pin<Box<Sleep>>>,
    refused: Throttle,
    errors: Throttle,
    timeouts: Arc<Mutex<Throttle>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    pub(crate) fn new(
        listener: TcpListener,
        slots: Arc<Semaphore>,
        opts: &TransportOptions,
        signals: Signals,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        Incoming {
            tls,
            listener,
            slots,
            handshake_timeout: opts.handshake_timeout,
            signals,
            backoff: None,
            refused: Throttle::new(WARN_EVERY),
            errors: Throttle::new(WARN_EVERY),
            timeouts: Arc::new(Mutex::new(Throttle::new(WARN_EVERY))),
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: std::net::SocketAddr) -> Option<Conn> {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            metrics::counter!("tact_connections_refused_total").increment(1);
            if let Some(more) = self.refused.hit(Instant::now()) {
                tracing::warn!(
                    peer = %peer,
                    more_since_last_warning = more,
                    "connection refused: max_connections reached"
                );
            }
            // Dropping the stream closes it: the client sees the connection reset or
            // closed at once instead of hanging in the listen backlog.
            return None;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %peer, error = %e, "cannot set tcp_nodelay");
        }
        metrics::counter!("tact_connections_accepted_total").increment(1);
        metrics::gauge!("tact_connections_open").increment(1.0);
        let info = ConnInfo {
            tcp: TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(peer),
            },
            peer: Arc::new(OnceLock::new()),
        };
        let io = match &self.tls {
            Some(acceptor) => Io::Tls(Box::new(TlsIo {
                state: TlsState::Handshake(acceptor.accept(stream)),
                peer: Arc::clone(&info.peer),
            })),
            None => Io::Plain(stream),
        };
        Some(Conn {
            io,
            info,
            _slot: slot,
            handshake: Some(Handshake {
                deadline: Box::pin(tokio::time::sleep(self.handshake_timeout)),
                remaining: HANDSHAKE_BYTES,
                stopping: Box::pin(self.signals.stopping.child_token().cancelled_owned()),
                timeouts: Arc::clone(&self.timeouts),
                peer,
            }),
            // Child tokens: each connection waits on its own notifier, not one shared by all.
            killed: {
                let kill = self.signals.kill.child_token();
                Killed {
                    wait: Box::pin(kill.cancelled_owned()),
                    flag: Arc::clone(&self.signals.killed),
                }
            },
            closed: false,
        })
    }
}

impl Stream for Incoming {
    type Item = Result<Conn, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(backoff) = this.backoff.as_mut() {
                std::task::ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            match std::task::ready!(this.listener.poll_accept(cx)) {
                Ok((stream, peer)) => {
                    if let Some(conn) = this.admit(stream, peer) {
                        return Poll::Ready(Some(Ok(conn)));
                    }
                }
                Err(e) => {
                    let kind = if is_connection_error(&e) {
                        "connection"
                    } else {
                        "process"
                    };
                    metrics::counter!("tact_accept_errors_total", "kind" => kind).increment(1);
                    if let Some(more) = this.errors.hit(Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            more_since_last_warning = more,
                            "accepting a connection failed"
                        );
                    }
                    if !is_connection_error(&e) {
                        this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    }
                }
            }
        }
    }
}

struct Handshake {
    deadline: Pin<Box<Sleep>>,
    /// Bytes still to come before the handshake is over.
    remaining: usize,
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    timeouts: Arc<Mutex<Throttle>>,
    peer: std::net::SocketAddr,
}

/// An accepted connection: the TCP stream, its slot under `max_connections` (freed
/// when hyper drops it), the handshake deadline and the shutdown signals.
pub(crate) struct Conn {
    io: Io,
    info: ConnInfo,
    _slot: OwnedSemaphorePermit,
    handshake: Option<Handshake>,
    killed: Killed,
    /// Closed by a signal or the handshake deadline: every later call fails.
    closed: bool,
}

/// The signal that closes a connection at the end of the shutdown grace. Each read or
/// write checks the flag (one atomic load, no lock); the wait, which registers the task
/// to be woken (a lock), is polled only when the I/O would block: a busy connection
/// reads on without it, and an idle one is woken by it.
struct Killed {
    flag: Arc<AtomicBool>,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("io", &self.io)
            .field("in_handshake", &self.handshake.is_some())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        metrics::gauge!("tact_connections_open").decrement(1.0);
    }
}

fn aborted(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, why)
}

impl Conn {
    /// Fails once the connection has been told to close (and registers for the signals).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.closed {
            return Err(aborted("connection closed by the server"));
        }
        if self.killed.flag.load(Ordering::Acquire) {
            self.closed = true;
            return Err(aborted("server stopping: shutdown grace is over"));
        }
        if let Some(h) = self.handshake.as_mut()
            && h.stopping.as_mut().poll(cx).is_ready()
        {
            self.closed = true;
            return Err(aborted("server stopping: connection still in its handshake"));
        }
        Ok(())
    }

    /// The I/O would block: the task is registered to be woken by the kill signal, and
    /// the handshake deadline is checked. An error if either has come.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.killed.wait.as_mut().poll(cx).is_ready() {
            self.closed = true;
            return Some(aborted("server stopping: shutdown grace is over"));
        }
        self.handshake_expired(cx)
    }

    /// The handshake deadline passed: the connection is closed (logged, rate-limited).
    fn handshake_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let h = self.handshake.as_mut()?;
        if h.deadline.as_mut().poll(cx).is_pending() {
            return None;
        }
        metrics::counter!("tact_handshake_timeouts_total").increment(1);
        let more = h
            .timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hit(Instant::now());
        if let Some(more) = more {
            tracing::warn!(
                peer = %h.peer,
                missing_bytes = h.remaining,
                more_since_last_warning = more,
                "connection closed: no http/2 handshake within handshake_timeout"
            );
        }
        self.closed = true;
        self.handshake = None;
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            "no http/2 handshake within handshake_timeout",
        ))
    }

    /// A write that cannot proceed watches the kill signal, and the handshake deadline
    /// (with TLS: the handshake waits for the client, and hyper flushes its SETTINGS
    /// before it reads).
    fn pending_write<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => match self.blocked(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

/// What a call learns of its connection (in the request's extensions): the TCP
/// addresses, and the client's name from its verified certificate (mTLS), known once
/// the TLS handshake is over (before any call).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    peer: Arc<OnceLock<PeerIdentity>>,
}

impl ConnInfo {
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.get()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// The byte stream under a connection: plain TCP, or TLS over it (the handshake driven
/// by the first reads and writes, so the connection's handshake deadline covers it).
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsIo>),
}

struct TlsIo {
    state: TlsState,
    peer: Arc<OnceLock<PeerIdentity>>,
}

enum TlsState {
    Handshake(tokio_rustls::Accept<TcpStream>),
    Ready(tokio_rustls::server::TlsStream<TcpStream>),
    Failed,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Io::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Io::Tls(t) => f
                .debug_struct("Tls")
                .field("ready", &matches!(t.state, TlsState::Ready(_)))
                .finish_non_exhaustive(),
        }
    }
}

impl TlsIo {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                TlsState::Ready(_) => return Poll::Ready(Ok(())),
                TlsState::Failed => return Poll::Ready(Err(aborted("tls handshake failed"))),
                TlsState::Handshake(accept) => match std::task::ready!(Pin::new(accept).poll(cx)) {
                    Ok(stream) => {
                        let name = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(crate::tls::peer_name);
                        if let Some(name) = name {
                            let _ = self.peer.set(PeerIdentity(name.into()));
                        }
                        self.state = TlsState::Ready(stream);
                    }
                    Err(e) => {
                        metrics::counter!("tact_tls_handshake_failures_total").increment(1);
                        tracing::debug!(error = %e, "tls handshake failed");
                        self.state = TlsState::Failed;
                        return Poll::Ready(Err(e));
                    }
                },
            }
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(t) => {
                std::task::ready!(t.poll_handshake(cx))?;
                match &mut t.state {
                    TlsState::Ready(s) => Pin::new(s).poll_read(cx, buf),
                    _ => Poll::Ready(Err(aborted("tls handshake failed"))),
                }
            }
        }
    }
}

impl Io {
    /// The stream to write to, once the handshake is over.
    fn poll_writable(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Pin<&mut (dyn AsyncWrite + Unpin)>>> {
        match self {
            Io::Plain(s) => Poll::Ready(Ok(Pin::new(s))),
            Io::Tls(t) => {
                std::task::ready!(t.poll_handshake(cx))?;
                match &mut t.state {
                    TlsState::Ready(s) => Poll::Ready(Ok(Pin::new(s))),
                    _ => Poll::Ready(Err(aborted("tls handshake failed"))),
                }
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.get_mut().poll_writable(cx))?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.get_mut().poll_writable(cx))?.poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.get_mut().poll_writable(cx))?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(t) => match &mut t.state {
                TlsState::Ready(s) => Pin::new(s).poll_shutdown(cx),
                _ => Poll::Ready(Ok(())),
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx)?;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if let Some(h) = this.handshake.as_mut() {
                    h.remaining = h.remaining.saturating_sub(n);
                    // Past the handshake (or at EOF, which hyper handles).
                    if h.remaining == 0 || n == 0 {
                        this.handshake = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.blocked(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.pending_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.pending_write(cx, polled)
    }

    /// No, on purpose, though a plain socket could: h2 reads this once per connection
    /// and, for a vectored writer, leaves every DATA payload over 256 bytes out of its
    /// write buffer, to go out as an iovec of its own, and buffers nothing more until
    /// that payload is written. A full decision is often over 256 bytes (about 280 on
    /// the wire on average), so those answers each took a `writev` of their own: 1.5
    /// syscalls a call at 64 in flight, 1.0 now. Without vectored writes h2 copies
    /// payloads up to 1 KiB into its buffer, and the answers that are ready leave
    /// together.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.pending_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TransportOptions::default().validate().unwrap();
    }

    #[test]
    fn zeros_that_make_the_service_unusable_are_refused_by_name() {
        let base = TransportOptions::default();
        let cases: [(&str, TransportOptions); 6] = [
            (
                "handshake_timeout",
                TransportOptions {
                    handshake_timeout: Duration::ZERO,
                    ..base
                },
            ),
            (
                "http2_keepalive_interval",
                TransportOptions {
                    http2_keepalive_interval: Duration::ZERO,
                    ..base
                },
            ),
            (
                "http2_keepalive_timeout",
                TransportOptions {
                    http2_keepalive_timeout: Duration::ZERO,
                    ..base
                },
            ),
            (
                "max_concurrent_streams",
                TransportOptions {
                    max_concurrent_streams: 0,
                    ..base
                },
            ),
            (
                "max_connections",
                TransportOptions {
                    max_connections: 0,
                    ..base
                },
            ),
            (
                "flush_timeout",
                TransportOptions {
                    flush_timeout: Duration::ZERO,
                    ..base
                },
            ),
        ];
        for (name, opts) in cases {
            let err = opts.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        let too_many = TransportOptions {
            max_connections: usize::MAX,
            ..base
        };
        assert!(too_many.validate().unwrap_err().to_string().contains("at most"));
        // Zero grace is a choice (close at once), not a mistake.
        TransportOptions {
            shutdown_grace: Duration::ZERO,
            ..base
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn windows_are_checked_against_h2s_small_frame_budget() {
        let base = TransportOptions::default();
        assert_eq!(base.frame_budget_warning(), None);
        // hyper's own defaults (1 MiB each) let a fast stream trip it.
        let hyper = TransportOptions {
            http2_stream_window_bytes: 1 << 20,
            http2_connection_window_bytes: 1 << 20,
            ..base
        };
        let warning = hyper.frame_budget_warning().unwrap();
        assert!(warning.contains("too_many_data_frames"), "{warning}");
        // The rule itself: 16 stream windows of 29-byte frames cost under half the
        // connection window.
        let (w, p) = (u64::from(base.http2_stream_window_bytes), 29u64);
        assert!(w / p * (256 - p) <= 16 * w / 2);
        for (name, window) in [
            ("http2_stream_window_bytes", 0),
            ("http2_connection_window_bytes", u32::MAX),
        ] {
            let mut o = base;
            if name.starts_with("http2_stream") {
                o.http2_stream_window_bytes = window;
            } else {
                o.http2_connection_window_bytes = window;
            }
            assert!(o.validate().unwrap_err().to_string().contains(name));
        }
    }

    #[test]
    fn throttle_reports_once_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(1));
        assert_eq!(t.hit(t0), Some(0));
        assert_eq!(t.hit(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.hit(t0 + Duration::from_millis(999)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(t.hit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn only_per_connection_accept_errors_skip_the_backoff() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionRefused,
        ] {
            assert!(is_connection_error(&io::Error::from(kind)));
        }
        // EMFILE ("too many open files") is about the process: back off.
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
        assert!(!is_connection_error(&io::Error::from(io::ErrorKind::OutOfMemory)));
    }

    #[test]
    fn the_handshake_is_the_preface_and_a_frame_header() {
        assert_eq!(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len() + 9, HANDSHAKE_BYTES);
    }
}

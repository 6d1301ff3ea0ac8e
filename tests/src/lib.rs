//! Shared helpers for tact's end-to-end tests (the tests live in `tests/tests/end_to_end/`):
//! an in-process server on `127.0.0.1:0`, a client, and event builders.

pub mod kafka;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tact_core::{Channel, Event, EventKind, Policy, Purpose, Timestamp};
use tact_log::{Appended, LogError, MemoryStorage, MetaEntry, OnTaken, RawVisitor, Storage};
use tact_proto::pb;
use tact_proto::pb::contact_policy_client::ContactPolicyClient;
use tact_server::{ManualClock, ServerError, ServerHandle, ServerOptions};
use tokio::sync::oneshot;
use tonic::transport::Channel as GrpcChannel;

pub type Client = ContactPolicyClient<GrpcChannel>;

/// A server running in this process, stopped by [`TestServer::stop`].
#[derive(Debug)]
pub struct TestServer {
    pub handle: ServerHandle,
    pub clock: ManualClock,
    stop: oneshot::Sender<()>,
}

impl TestServer {
    /// Starts on `127.0.0.1:0` with the default policy, a manual clock at `now`, and
    /// sled under `data_dir` (`None`: in memory).
    pub async fn start(data_dir: Option<PathBuf>, now: Timestamp) -> TestServer {
        Self::start_with(data_dir, now, |_| {}).await
    }

    pub async fn start_with(
        data_dir: Option<PathBuf>,
        now: Timestamp,
        configure: impl FnOnce(&mut ServerOptions),
    ) -> TestServer {
        let clock = ManualClock::new(now);
        let mut opts = ServerOptions::new("127.0.0.1:0".parse().unwrap(), data_dir, Policy::default_policy());
        opts.clock = Arc::new(clock.clone());
        configure(&mut opts);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tact_server::run(opts, async move {
            let _ = stopped.await;
        })
        .await
        .expect("server starts");
        TestServer { handle, clock, stop }
    }

    pub async fn client(&self) -> Client {
        ContactPolicyClient::connect(format!("http://{}", self.handle.local_addr()))
            .await
            .expect("connects")
    }

    /// Graceful shutdown; waits until the log is flushed (and the snapshot written).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.wait().await.expect("clean shutdown");
    }

    /// Starts the shutdown and returns how it ended (an error if the storage failed).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(());
        self.handle.wait().await
    }
}

/// A storage that models a failing disk: in memory until told to fail. `fail_writes`
/// makes appends, meta writes, snapshots and flushes fail like a full disk (ENOSPC);
/// `hang_flushes` makes flushes block (a hung disk) until `release`.
#[derive(Debug, Default)]
pub struct FlakyStorage {
    inner: MemoryStorage,
    failing: AtomicBool,
    hanging: Mutex<bool>,
    released: Condvar,
    /// Flushes started (including hung ones).
    pub flushes: AtomicU64,
}

impl FlakyStorage {
    pub fn new() -> Arc<FlakyStorage> {
        Arc::new(FlakyStorage::default())
    }

    pub fn fail_writes(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    pub fn hang_flushes(&self) {
        *self.hanging.lock().unwrap() = true;
    }

    /// Lets hung flushes finish (tests must call it before they end: a blocked thread
    /// would hold up the runtime's exit).
    pub fn release(&self) {
        *self.hanging.lock().unwrap() = false;
        self.released.notify_all();
    }

    fn check(&self) -> Result<(), LogError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(LogError::Writer("No space left on device (os error 28)".into()));
        }
        Ok(())
    }
}

impl Storage for FlakyStorage {
    fn append_checked(
        &self,
        events: &[Event],
        meta: &[MetaEntry],
        on_taken: &mut OnTaken<'_>,
    ) -> Result<Vec<Appended>, LogError> {
        self.check()?;
        self.inner.append_checked(events, meta, on_taken)
    }
    fn flush(&self) -> Result<(), LogError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        let mut hanging = self.hanging.lock().unwrap();
        while *hanging {
            hanging = self.released.wait(hanging).unwrap();
        }
        drop(hanging);
        self.check()?;
        self.inner.flush()
    }
    fn last_seq(&self) -> Result<u64, LogError> {
        self.inner.last_seq()
    }
    fn get(&self, seq: u64) -> Result<Option<Event>, LogError> {
        self.inner.get(seq)
    }
    fn scan_raw(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
        self.inner.scan_raw(from, visit)
    }
    fn visit_customer_events(
        &self,
        customer_id: &str,
        visit: &mut tact_log::EventVisitor<'_>,
    ) -> Result<(), LogError> {
        self.inner.visit_customer_events(customer_id, visit)
    }
    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        self.inner.seq_of(event_id)
    }
    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        self.check()?;
        self.inner.put_meta(key, value)
    }
    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get_meta(key)
    }
    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, LogError> {
        self.inner.meta_with_prefix(prefix)
    }
    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError> {
        self.check()?;
        self.inner.put_snapshot(bytes)
    }
    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get_snapshot()
    }
}

/// Wednesday 2026-11-18 10:00 UTC.
pub fn wed_10am() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-18T10:00:00Z").unwrap()
}

pub fn minutes(n: i64) -> tact_core::Span {
    tact_core::Span(n * tact_core::MINUTE.0)
}

pub fn hours(n: i64) -> tact_core::Span {
    tact_core::Span(n * tact_core::HOUR.0)
}

pub fn days(n: i64) -> tact_core::Span {
    tact_core::Span(n * tact_core::DAY.0)
}

/// A wire event (what a CRM would send).
pub fn event(id: &str, customer: &str, at: Timestamp, kind: EventKind) -> pb::InteractionEvent {
    pb::InteractionEvent::from(&Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: at,
        source: "test".into(),
        kind,
    })
}

pub fn consent(channel: Channel, purpose: Purpose, granted: bool) -> EventKind {
    EventKind::ConsentChanged {
        channel,
        purpose,
        granted,
        expires_at: None,
        proof: "signup form".into(),
    }
}

/// Consent events for marketing and sales on email, SMS, call and meetings.
pub fn opted_in(customer: &str, at: Timestamp) -> Vec<pb::InteractionEvent> {
    let mut out = Vec::new();
    for c in [Channel::Email, Channel::Sms, Channel::Call, Channel::SalesMeeting] {
        for p in [Purpose::Marketing, Purpose::Sales] {
            out.push(event(
                &format!("{customer}-optin-{c}-{p}"),
                customer,
                at,
                consent(c, p, true),
            ));
        }
    }
    out
}

pub fn request(customer: &str, channel: Channel, purpose: Purpose) -> pb::DecideRequest {
    pb::DecideRequest {
        customer_id: customer.into(),
        channel: pb::Channel::from(channel) as i32,
        purpose: pb::Purpose::from(purpose) as i32,
        campaign_id: "autumn".into(),
        requested_by: "crm".into(),
        at: None,
        ..Default::default()
    }
}

/// Records events and asserts each was recorded (or was a duplicate).
pub async fn record(client: &mut Client, events: Vec<pb::InteractionEvent>) -> pb::RecordEventsResponse {
    let resp = client
        .record_events(pb::RecordEventsRequest { events })
        .await
        .expect("record_events")
        .into_inner();
    for r in &resp.results {
        assert_ne!(
            r.status,
            pb::RecordStatus::Rejected as i32,
            "rejected: {} {}",
            r.event_id,
            r.reason
        );
    }
    resp
}

pub fn verdict(d: &pb::Decision) -> pb::Verdict {
    pb::Verdict::try_from(d.verdict).unwrap_or(pb::Verdict::Unspecified)
}

pub fn rules(d: &pb::Decision) -> Vec<&str> {
    d.reasons.iter().map(|r| r.rule_id.as_str()).collect()
}

/// A request carrying `authorization: Bearer <key>`.
pub fn bearer<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii key"),
    );
    request
}

/// Writes a clients file with one client per `(id, key, scopes, limits)`.
pub fn write_clients(
    path: &std::path::Path,
    clients: &[(&str, &str, &[tact_server::Scope], tact_server::RateLimits)],
) {
    let file = tact_server::ClientsFile {
        defaults: tact_server::RateLimits::default(),
        clients: clients
            .iter()
            .map(|(id, key, scopes, limits)| tact_server::ClientEntry {
                id: (*id).into(),
                key_sha256: tact_server::auth::key_sha256(key),
                scopes: scopes.to_vec(),
                limits: *limits,
            })
            .collect(),
    };
    std::fs::write(path, file.to_toml()).expect("write clients file");
}

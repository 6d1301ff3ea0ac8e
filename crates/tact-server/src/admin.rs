//! The `tact.v1.TactAdmin` gRPC service: policy reloads (also behind SIGHUP), the
//! history of the policies that took effect, and backtests on the live log. Wire types
//! in, core types to the engine, wire types out; [`crate::guard::Guarded`] puts every
//! method behind the scope `admin`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tact_core::backtest::{Period, Reading};
use tact_core::describe::policy_diff;
use tact_core::{Policy, PolicyError};
use tact_log::backtest::run_backtest_with;
use tact_proto::convert::{self, timestamp_to_pb};
use tact_proto::pb;
use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, ReloadError, Reloaded};

/// Why the policy file was not put in force (the policy in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadFailed {
    #[error("no policy file is configured (this server was given a policy, not a file)")]
    NoFile,
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy file {path} is not valid: {source}")]
    Invalid {
        path: String,
        #[source]
        source: PolicyError,
    },
    #[error(transparent)]
    Engine(#[from] ReloadError),
}

/// A successful reload, with what changed in plain words.
#[derive(Clone, Debug)]
pub struct ReloadReport {
    pub reloaded: Reloaded,
    pub changes: Vec<String>,
}

/// Reads the policy file and puts it in force (see [`Engine::reload_policy`]).
pub async fn reload_from_file(
    engine: &Arc<Engine>,
    path: Option<&Path>,
) -> Result<ReloadReport, ReloadFailed> {
    let path = path.ok_or(ReloadFailed::NoFile)?;
    let shown = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| ReloadFailed::Read {
            path: shown.clone(),
            source,
        })?;
    let policy =
        Policy::from_toml_str(&text).map_err(|source| ReloadFailed::Invalid { path: shown, source })?;
    let changes = policy_diff(&engine.policy(), &policy);
    let reloaded = engine.reload_policy(policy).await?;
    Ok(ReloadReport { reloaded, changes })
}

fn reload_status(e: ReloadFailed) -> Status {
    tracing::error!(error = %e, "policy not reloaded, keeping the policy in force");
    let why = format!("policy not reloaded, the policy in force stays: {e}");
    match e {
        ReloadFailed::Engine(ReloadError::Busy) => Status::unavailable(why),
        ReloadFailed::Engine(ReloadError::SameVersion { .. }) => Status::failed_precondition(why),
        ReloadFailed::Engine(ReloadError::Log(_)) => Status::unavailable(why),
        ReloadFailed::Engine(ReloadError::Rebuild(_)) => Status::internal(why),
        ReloadFailed::NoFile | ReloadFailed::Read { .. } | ReloadFailed::Invalid { .. } => {
            Status::failed_precondition(why)
        }
    }
}

/// How often a running backtest reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct AdminService {
    engine: Arc<Engine>,
    policy_file: Option<PathBuf>,
    /// One backtest at a time: it holds the whole log in memory while it runs.
    backtests: Arc<Semaphore>,
    /// How often a running backtest reports progress ([`PROGRESS_EVERY`]).
    progress_every: Duration,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>, policy_file: Option<PathBuf>) -> Self {
        AdminService {
            engine,
            policy_file,
            backtests: Arc::new(Semaphore::new(1)),
            progress_every: PROGRESS_EVERY,
        }
    }
}

fn policy_field(text: &str, field: &str) -> Result<Policy, Status> {
    Policy::from_toml_str(text).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::BacktestUpdate, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::tact_admin_server::TactAdmin for AdminService {
    async fn reload_policy(
        &self,
        _request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let report = reload_from_file(&self.engine, self.policy_file.as_deref())
            .await
            .map_err(reload_status)?;
        let mut out = pb::ReloadPolicyResponse {
            changes: report.changes,
            ..Default::default()
        };
        match report.reloaded {
            Reloaded::Unchanged { version } => {
                out.outcome = "unchanged".into();
                out.previous_version = version.to_string();
                out.version = version.to_string();
            }
            Reloaded::Activated { previous, record } => {
                out.outcome = "activated".into();
                out.previous_version = previous.to_string();
                out.version = record.version;
                out.content_hash = record.content_hash;
                out.log_position = record.seq;
            }
            Reloaded::Rebuilding {
                previous, version, ..
            } => {
                out.outcome = "rebuilding".into();
                out.previous_version = previous.to_string();
                out.version = version.to_string();
            }
        }
        Ok(Response::new(out))
    }

    async fn policy_history(
        &self,
        request: Request<pb::PolicyHistoryRequest>,
    ) -> Result<Response<pb::PolicyHistoryResponse>, Status> {
        let include_text = request.get_ref().include_text;
        let history = self
            .engine
            .policy_history()
            .await
            .map_err(|e| Status::unavailable(format!("event log unavailable: {e}")))?;
        let policies = history
            .into_iter()
            .map(|r| pb::PolicyRecord {
                log_position: r.seq,
                event_id: r.event_id,
                at: Some(timestamp_to_pb(r.at)),
                version: r.version,
                content_hash: r.content_hash,
                text: if include_text { r.text } else { String::new() },
            })
            .collect();
        Ok(Response::new(pb::PolicyHistoryResponse { policies }))
    }

    type BacktestStream = UpdateStream;

    async fn backtest(
        &self,
        request: Request<pb::BacktestRequest>,
    ) -> Result<Response<Self::BacktestStream>, Status> {
        let req = request.into_inner();
        if req.candidate_toml.trim().is_empty() {
            return Err(Status::invalid_argument("candidate_toml: must not be empty"));
        }
        let candidate = policy_field(&req.candidate_toml, "candidate_toml")?;
        let baseline = match &req.baseline_toml {
            Some(text) => policy_field(text, "baseline_toml")?,
            None => (*self.engine.policy()).clone(),
        };
        let period = Period {
            from: req
                .from
                .as_ref()
                .map(|t| convert::timestamp_from_pb(t, "from"))
                .transpose()?,
            to: req
                .to
                .as_ref()
                .map(|t| convert::timestamp_from_pb(t, "to"))
                .transpose()?,
        };
        let reading: Reading = req
            .reading
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("reading: {e}")))?;
        let only: Option<HashSet<String>> =
            (!req.customers.is_empty()).then(|| req.customers.into_iter().collect());
        let permit = Arc::clone(&self.backtests).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "a backtest is already running on this server; try again when it is done",
            )
        })?;
        let storage = Arc::clone(self.engine.log().storage());
        let skew = self.engine.admission().max_clock_skew;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::BacktestUpdate, Status>>(16);
        let progress_every = self.progress_every;
        tokio::task::spawn_blocking(move || {
            let permit = permit;
            let mut last = None::<Instant>;
            let mut progress = |p: &tact_log::backtest::Progress| {
                let due = last.is_none_or(|l| l.elapsed() >= progress_every);
                if !due {
                    return !tx.is_closed();
                }
                last = Some(Instant::now());
                // Progress is only news: a client that does not read it (its window
                // full, the channel full) misses some, and never keeps this thread and
                // the one backtest slot waiting. The last slot of the channel is kept
                // for the report, so that its send never waits either (this thread is
                // the only sender). A closed channel (the client went away) stops the
                // backtest.
                if tx.capacity() <= 1 {
                    return !tx.is_closed();
                }
                let update = pb::BacktestUpdate {
                    update: Some(pb::backtest_update::Update::Progress(pb::BacktestProgress {
                        phase: p.phase.to_owned(),
                        events_read: p.events_read,
                        events_total: p.events_total,
                        customers_done: p.customers_done,
                        customers_total: p.customers_total,
                    })),
                };
                tx.try_send(Ok(update)).is_ok()
            };
            let result = run_backtest_with(
                &*storage,
                &baseline,
                &candidate,
                skew,
                period,
                only.as_ref(),
                reading,
                &mut progress,
            );
            // The work is done: the next backtest may start while this report waits
            // for its reader.
            drop(permit);
            let last = match result {
                Ok(None) => return, // the client went away
                Ok(Some(report)) => match serde_json::to_string(&report) {
                    Ok(json) => Ok(pb::BacktestUpdate {
                        update: Some(pb::backtest_update::Update::ReportJson(json)),
                    }),
                    Err(e) => Err(Status::internal(format!("cannot encode the report: {e}"))),
                },
                Err(e) => Err(Status::unavailable(format!("event log unavailable: {e}"))),
            };
            // A slot is free (see above): this does not wait for the reader.
            let _ = tx.try_send(last);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use tact_core::{Event, EventKind, Timestamp};
    use tact_log::{MemoryStorage, Storage};
    use tact_proto::pb::tact_admin_server::TactAdmin;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::engine::EngineOptions;

    /// A client that asks for a backtest and never reads the answer (its flow-control
    /// window full, or not polling) must not keep the one backtest slot: the next
    /// backtest starts once the work is done, and the first report is still there for
    /// its reader.
    #[tokio::test]
    async fn a_client_that_never_reads_does_not_hold_the_backtest_slot() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        // Enough customers for many more progress reports (one per 1,024 customers
        // decided) than the channel holds.
        let events: Vec<Event> = (0..40_960)
            .map(|i| Event {
                event_id: format!("e{i}"),
                customer_id: format!("c{i}"),
                occurred_at: Timestamp(1_700_000_000_000 + i64::from(i)),
                source: "test".into(),
                kind: EventKind::PageViewed {
                    url: "/pricing".into(),
                    category: "pricing".into(),
                },
            })
            .collect();
        storage.append(&events, &[]).unwrap();
        let options = EngineOptions {
            group_commit: Default::default(),
            clock: Arc::new(crate::SystemClock),
            feed: None,
            admission: Default::default(),
        };
        let (engine, _) = Engine::open(storage, Policy::default_policy(), options)
            .await
            .unwrap();
        let admin = AdminService {
            progress_every: Duration::ZERO,
            ..AdminService::new(Arc::new(engine), None)
        };
        let request = || {
            Request::new(pb::BacktestRequest {
                candidate_toml: tact_core::policy::DEFAULT_POLICY.to_owned(),
                ..Default::default()
            })
        };
        // Never polled while the second is asked for.
        let first = admin.backtest(request()).await.unwrap().into_inner();
        let deadline = Instant::now() + Duration::from_secs(60);
        let second = loop {
            match admin.backtest(request()).await {
                Ok(second) => break second.into_inner(),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                    assert!(
                        Instant::now() < deadline,
                        "a client that does not read held the backtest slot for a minute"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        for stream in [first, second] {
            let updates: Vec<_> = stream.collect().await;
            let last = updates.last().expect("updates").as_ref().expect("no error");
            assert!(
                matches!(last.update, Some(pb::backtest_update::Update::ReportJson(_))),
                "the report comes last: {last:?}"
            );
        }
    }
}

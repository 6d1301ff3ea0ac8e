//! [`Guarded`]: the `tact.v1.ContactPolicy` service behind authentication, scopes, rate
//! limits and metrics. It wraps the plain service ([`crate::service`]) method by
//! method, so the service itself knows nothing of clients:
//!
//! - identify the caller ([`Authenticator::identify`]) and check the method's scope;
//! - charge its rate limits ([`RateLimiters::charge`]; streams are paced instead);
//! - stamp the caller's identity on what it writes: `Authorize`'s `requested_by`
//!   becomes `<client id>/<requested_by>` (or the client id alone), and events
//!   recorded without a `source` get the client id;
//! - count requests by method and status, latency by method, and decisions by verdict
//!   and rule.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tact_proto::pb;
use tact_proto::pb::contact_policy_server::ContactPolicy;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Authenticator, Caller, PeerIdentity, Scope};
use crate::limits::{Cost, RateLimiters};
use crate::shed::{ShedOptions, Shedder};
use crate::transport::ConnInfo;

/// Authentication, scopes and rate limits, shared by every call.
#[derive(Debug)]
pub struct Guard {
    pub auth: Arc<Authenticator>,
    pub limiters: RateLimiters,
    pub shed: Shedder,
}

impl Guard {
    pub fn new(auth: Arc<Authenticator>, shed: ShedOptions) -> Guard {
        Guard {
            auth,
            limiters: RateLimiters::default(),
            shed: Shedder::new(shed),
        }
    }

    /// The caller, if it may call a method that needs `scope`.
    pub fn admit<T>(&self, request: &Request<T>, scope: Scope) -> Result<Caller, Status> {
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .and_then(ConnInfo::peer)
            .or_else(|| request.extensions().get::<PeerIdentity>());
        let caller = self.auth.identify(request.metadata(), peer)?;
        caller.require(scope)?;
        Ok(caller)
    }
}

/// The service `S` behind a [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, guard: Arc<Guard>) -> Self {
        Guarded { inner, guard }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Requests by method and status code, latency by method.
fn observe<T>(method: &'static str, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::counter!("tact_requests_total", "method" => method, "code" => code_name(code)).increment(1);
    metrics::histogram!("tact_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

fn verdict_name(d: &pb::Decision) -> &'static str {
    verdict_label(d.verdict)
}

/// A wire verdict's metrics label.
fn verdict_label(verdict: i32) -> &'static str {
    match pb::Verdict::try_from(verdict) {
        Ok(pb::Verdict::Allow) => "allow",
        Ok(pb::Verdict::Deny) => "deny",
        Ok(pb::Verdict::Defer) => "defer",
        _ => "unspecified",
    }
}

/// Decisions by verdict and by the rules that fired (a batch is tallied first, so a
/// large one costs one counter update per distinct label set).
fn count_decisions<'a>(decisions: impl IntoIterator<Item = &'a pb::Decision>) {
    let mut verdicts: HashMap<&'static str, u64> = HashMap::new();
    let mut rules: HashMap<(&'static str, &'a str), u64> = HashMap::new();
    for d in decisions {
        let verdict = verdict_name(d);
        *verdicts.entry(verdict).or_default() += 1;
        for r in &d.reasons {
            *rules.entry((verdict, r.rule_id.as_str())).or_default() += 1;
        }
        tracing::debug!(
            decision_id = %d.decision_id,
            verdict,
            rules = ?d.reasons.iter().map(|r| r.rule_id.as_str()).collect::<Vec<_>>(),
            "decided"
        );
    }
    for (verdict, n) in verdicts {
        metrics::counter!("tact_decisions_total", "verdict" => verdict).increment(n);
    }
    for ((verdict, rule), n) in rules {
        metrics::counter!("tact_decision_rules_total", "verdict" => verdict, "rule" => rule.to_owned())
            .increment(n);
    }
}

/// [`count_decisions`] for an audience's packed verdicts (no rules: it is answered at
/// verdict detail; items that were not valid are not decisions).
fn count_screening(s: &pb::Screening) {
    let mut n = [0u64; 4];
    for &v in &s.verdicts {
        if let Some(slot) = usize::try_from(v).ok().and_then(|v| n.get_mut(v)) {
            *slot += 1;
        }
    }
    for v in [pb::Verdict::Allow, pb::Verdict::Deny, pb::Verdict::Defer] {
        let count = n[v as usize];
        if count > 0 {
            metrics::counter!("tact_decisions_total", "verdict" => verdict_label(v as i32)).increment(count);
        }
    }
}

/// Runs one unary call: admit, charge, call, observe.
async fn unary<Req, Resp, F, Fut>(
    guard: &Guard,
    method: &'static str,
    scope: Scope,
    mut request: Request<Req>,
    cost: impl FnOnce(&Req) -> Option<Cost>,
    stamp: impl FnOnce(&Caller, &mut Req),
    call: F,
) -> Result<Response<Resp>, Status>
where
    F: FnOnce(&Caller, Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let started = Instant::now();
    let admitted = guard.admit(&request, scope).and_then(|caller| {
        if let Some(cost) = cost(request.get_ref()) {
            guard.limiters.charge(&caller, cost)?;
        }
        Ok(caller)
    });
    let result = match admitted {
        Ok(caller) => {
            if caller.authenticated {
                stamp(&caller, request.get_mut());
            }
            // Who asked, for the decision audit (`crate::audit::client_of`).
            request.extensions_mut().insert(caller.clone());
            let span = tracing::debug_span!("call", method, client = %caller.id);
            call(&caller, request).instrument(span).await
        }
        Err(status) => Err(status),
    };
    observe(method, started, &result);
    result
}

fn no_cost<T>(_: &T) -> Option<Cost> {
    None
}

fn no_stamp<T>(_: &Caller, _: &mut T) {}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S> ContactPolicy for Guarded<S>
where
    S: ContactPolicy,
    S::DecideStreamStream: Send + 'static,
{
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::Decision>, Status> {
        let r = unary(
            &self.guard,
            "Decide",
            Scope::Decide,
            request,
            |_| Some(Cost::Decisions(1)),
            no_stamp,
            |_, r| self.inner.decide(r),
        )
        .await;
        if let Ok(d) = &r {
            count_decisions([d.get_ref()]);
        }
        r
    }

    async fn authorize(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::Decision>, Status> {
        let r = unary(
            &self.guard,
            "Authorize",
            Scope::Authorize,
            request,
            |_| Some(Cost::Decisions(1)),
            |caller, req: &mut pb::DecideRequest| {
                // tact records who asked; the caller's own words stay beside it.
                req.requested_by = if req.requested_by.is_empty() {
                    caller.id.to_string()
                } else {
                    format!("{}/{}", caller.id, req.requested_by)
                };
            },
            |_, r| self.inner.authorize(r),
        )
        .await;
        if let Ok(d) = &r {
            count_decisions([d.get_ref()]);
        }
        r
    }

    async fn decide_batch(
        &self,
        request: Request<pb::DecideBatchRequest>,
    ) -> Result<Response<pb::DecideBatchResponse>, Status> {
        let r = unary(
            &self.guard,
            "DecideBatch",
            Scope::Decide,
            request,
            |req| {
                let audience = req.audience.as_ref().map_or(0, |a| a.customer_ids.len());
                Some(Cost::Decisions(count(req.requests.len() + audience)))
            },
            no_stamp,
            |caller, r| {
                let caller = caller.clone();
                async move {
                    // Batch work waits for a turn (bounded); interactive calls never do.
                    let _turn = self.guard.shed.batch_turn(&caller).await?;
                    self.inner.decide_batch(r).await
                }
            },
        )
        .await;
        if let Ok(b) = &r {
            count_decisions(&b.get_ref().decisions);
            if let Some(s) = &b.get_ref().screening {
                count_screening(s);
            }
        }
        r
    }

    type DecideStreamStream = DecisionStream;

    /// Streams are paced to the client's decision rate (each answer waits for its
    /// token), not refused: a stream is one long call, and the wait holds back the
    /// client's requests through flow control.
    async fn decide_stream(
        &self,
        request: Request<Streaming<pb::DecideRequest>>,
    ) -> Result<Response<Self::DecideStreamStream>, Status> {
        let started = Instant::now();
        let admitted = self
            .guard
            .admit(&request, Scope::Decide)
            .and_then(|caller| Ok((self.guard.shed.open_stream(&caller)?, caller)));
        let (slot, caller) = match admitted {
            Ok(caller) => caller,
            Err(status) => {
                let r = Err(status);
                observe("DecideStream", started, &r);
                return r;
            }
        };
        let mut request = request;
        request.extensions_mut().insert(caller.clone());
        let result = self.inner.decide_stream(request).await;
        observe("DecideStream", started, &result);
        let (metadata, inner, extensions) = result?.into_parts();
        let guard = Arc::clone(&self.guard);
        let paced = caller.limits.decisions_per_second.is_some();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let _slot = slot;
            let mut inner = std::pin::pin!(inner);
            while let Some(item) = inner.next().await {
                if let Ok(d) = &item {
                    if paced {
                        guard.limiters.pace_decision(&caller).await;
                    }
                    count_decisions([d]);
                }
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        let out: DecisionStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::from_parts(metadata, out, extensions))
    }

    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        unary(
            &self.guard,
            "RecordEvents",
            Scope::Record,
            request,
            |req| Some(Cost::Events(count(req.events.len()))),
            |caller, req: &mut pb::RecordEventsRequest| {
                for e in &mut req.events {
                    if e.source.is_empty() {
                        e.source = caller.id.to_string();
                    }
                }
            },
            |_, r| self.inner.record_events(r),
        )
        .await
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::CustomerView>, Status> {
        unary(
            &self.guard,
            "GetCustomer",
            Scope::Read,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.get_customer(r),
        )
        .await
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ServiceStatus>, Status> {
        unary(
            &self.guard,
            "GetStatus",
            Scope::Read,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.get_status(r),
        )
        .await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        unary(
            &self.guard,
            "ListDeadLetters",
            Scope::Admin,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.list_dead_letters(r),
        )
        .await
    }

    // --- Decision audit (issue 11, section 2): reading it needs `read`. ---

    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::AuditedDecision>, Status> {
        unary(
            &self.guard,
            "GetDecision",
            Scope::Read,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.get_decision(r),
        )
        .await
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        unary(
            &self.guard,
            "ListDecisions",
            Scope::Read,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.list_decisions(r),
        )
        .await
    }
}

// ---- tact.v1.TactAdmin (issue #11): every method needs the scope `admin` ----

type BacktestUpdates = Pin<Box<dyn Stream<Item = Result<pb::BacktestUpdate, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S> pb::tact_admin_server::TactAdmin for Guarded<S>
where
    S: pb::tact_admin_server::TactAdmin<BacktestStream = BacktestUpdates>,
{
    async fn reload_policy(
        &self,
        request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        unary(
            &self.guard,
            "ReloadPolicy",
            Scope::Admin,
            request,
            no_cost,
            no_stamp,
            |caller, r| {
                tracing::info!(client = %caller.id, "policy reload asked");
                self.inner.reload_policy(r)
            },
        )
        .await
    }

    async fn policy_history(
        &self,
        request: Request<pb::PolicyHistoryRequest>,
    ) -> Result<Response<pb::PolicyHistoryResponse>, Status> {
        unary(
            &self.guard,
            "PolicyHistory",
            Scope::Admin,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.policy_history(r),
        )
        .await
    }

    type BacktestStream = BacktestUpdates;

    async fn backtest(
        &self,
        request: Request<pb::BacktestRequest>,
    ) -> Result<Response<Self::BacktestStream>, Status> {
        unary(
            &self.guard,
            "Backtest",
            Scope::Admin,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.backtest(r),
        )
        .await
    }
}

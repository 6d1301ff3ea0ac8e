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
use crate::meters::{self, Method};
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
fn observe<T>(method: &Method, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    method.observe(code_name(code), started.elapsed());
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

/// One decision by verdict and by the rules that fired.
fn count_decision(d: &pb::Decision) {
    let mut verdicts = [0u64; 4];
    if tally_decision(d, &mut verdicts) {
        meters::count_verdicts(&verdicts);
    }
}

/// Adds one decision to `verdicts` (by [`meters::verdict_slot`]) and counts its rules;
/// false for an item that was not valid (no verdict), which is not a decision.
fn tally_decision(d: &pb::Decision, verdicts: &mut [u64; 4]) -> bool {
    let Some(slot) = meters::verdict_slot(d.verdict) else {
        return false;
    };
    verdicts[slot] += 1;
    for r in &d.reasons {
        meters::count_rules(slot, &r.rule_id, 1);
    }
    trace_decision(d);
    true
}

/// Decisions by verdict and by the rules that fired; a batch is tallied first, so a
/// large one costs one counter update per distinct label set. Items that were not
/// valid (answered `VERDICT_UNSPECIFIED` with an error) are not decisions.
fn count_decisions(decisions: &[pb::Decision]) {
    let mut verdicts = [0u64; 4];
    let mut rules: Vec<(usize, &str, u64)> = Vec::new();
    for d in decisions {
        let Some(slot) = meters::verdict_slot(d.verdict) else {
            continue;
        };
        verdicts[slot] += 1;
        for r in &d.reasons {
            match rules.iter_mut().find(|(s, id, _)| *s == slot && *id == r.rule_id) {
                Some(tally) => tally.2 += 1,
                None => rules.push((slot, &r.rule_id, 1)),
            }
        }
        trace_decision(d);
    }
    meters::count_verdicts(&verdicts);
    for (slot, rule, n) in rules {
        meters::count_rules(slot, rule, n);
    }
}

/// A stream's answers, counted as the encoder takes them (unpaced streams). Verdicts are
/// tallied while answers keep coming and added to the meters when none is ready, when
/// the stream ends or is dropped, or every [`TALLY_MAX`] answers: a chunk's answers cost
/// one counter update, not one each. Holds the stream's slot (`_held`) until dropped.
struct Counted<S, H> {
    inner: S,
    verdicts: [u64; 4],
    tallied: u64,
    _held: H,
}

/// The most answers [`Counted`] tallies before adding them to the meters.
const TALLY_MAX: u64 = 1024;

impl<S, H> Counted<S, H> {
    fn flush(&mut self) {
        if self.tallied > 0 {
            meters::count_verdicts(&self.verdicts);
            self.verdicts = [0; 4];
            self.tallied = 0;
        }
    }
}

impl<S, H> Stream for Counted<S, H>
where
    S: Stream<Item = Result<pb::Decision, Status>> + Unpin,
    H: Unpin,
{
    type Item = Result<pb::Decision, Status>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(d))) => {
                if tally_decision(&d, &mut this.verdicts) {
                    this.tallied += 1;
                    if this.tallied >= TALLY_MAX {
                        this.flush();
                    }
                }
                Poll::Ready(Some(Ok(d)))
            }
            Poll::Ready(None) => {
                this.flush();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.flush();
                Poll::Pending
            }
            error => error,
        }
    }
}

impl<S, H> Drop for Counted<S, H> {
    fn drop(&mut self) {
        self.flush();
    }
}

fn trace_decision(d: &pb::Decision) {
    tracing::debug!(
        decision_id = %d.decision_id,
        verdict = meters::verdict_label(d.verdict),
        rules = ?d.reasons.iter().map(|r| r.rule_id.as_str()).collect::<Vec<_>>(),
        "decided"
    );
}

/// [`count_decisions`] for an audience's packed verdicts (no rules: it is answered at
/// verdict detail; items that were not valid are not decisions).
fn count_screening(s: &pb::Screening) {
    let mut verdicts = [0u64; 4];
    for &v in &s.verdicts {
        if let Some(slot) = meters::verdict_slot(v) {
            verdicts[slot] += 1;
        }
    }
    meters::count_verdicts(&verdicts);
}

/// Runs one unary call: admit, charge, call, observe.
async fn unary<Req, Resp, F, Fut>(
    guard: &Guard,
    method: &'static Method,
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
            let span = tracing::debug_span!("call", method = method.name(), client = %caller.id);
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

// One meter set per method (crate::meters).
static DECIDE: Method = Method::new("Decide");
static AUTHORIZE: Method = Method::new("Authorize");
static DECIDE_BATCH: Method = Method::new("DecideBatch");
static RECORD_EVENTS: Method = Method::new("RecordEvents");
static GET_CUSTOMER: Method = Method::new("GetCustomer");
static GET_STATUS: Method = Method::new("GetStatus");
static LIST_DEAD_LETTERS: Method = Method::new("ListDeadLetters");
static GET_DECISION: Method = Method::new("GetDecision");
static LIST_DECISIONS: Method = Method::new("ListDecisions");
static RELOAD_POLICY: Method = Method::new("ReloadPolicy");
static POLICY_HISTORY: Method = Method::new("PolicyHistory");
static BACKTEST: Method = Method::new("Backtest");
static DECIDE_STREAM: Method = Method::new("DecideStream");

type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S> ContactPolicy for Guarded<S>
where
    S: ContactPolicy,
    S::DecideStreamStream: Send + Unpin + 'static,
{
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::Decision>, Status> {
        let r = unary(
            &self.guard,
            &DECIDE,
            Scope::Decide,
            request,
            |_| Some(Cost::Decisions(1)),
            no_stamp,
            |_, r| self.inner.decide(r),
        )
        .await;
        if let Ok(d) = &r {
            count_decision(d.get_ref());
        }
        r
    }

    async fn authorize(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::Decision>, Status> {
        let r = unary(
            &self.guard,
            &AUTHORIZE,
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
            count_decision(d.get_ref());
        }
        r
    }

    async fn decide_batch(
        &self,
        request: Request<pb::DecideBatchRequest>,
    ) -> Result<Response<pb::DecideBatchResponse>, Status> {
        let r = unary(
            &self.guard,
            &DECIDE_BATCH,
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
                observe(&DECIDE_STREAM, started, &r);
                return r;
            }
        };
        let mut request = request;
        request.extensions_mut().insert(caller.clone());
        let result = self.inner.decide_stream(request).await;
        observe(&DECIDE_STREAM, started, &result);
        let (metadata, inner, extensions) = result?.into_parts();
        // The answers are counted (and paced) as the encoder takes them, in its own
        // task: no task or channel of the guard's in between, so a chunk's answers that
        // are ready together still leave together. The stream's slot is held until the
        // stream is dropped.
        let out: DecisionStream = if caller.limits.decisions_per_second.is_some() {
            let guard = Arc::clone(&self.guard);
            let caller = Arc::new(caller);
            Box::pin(inner.then(move |item| {
                let _held = &slot;
                let guard = Arc::clone(&guard);
                let caller = Arc::clone(&caller);
                async move {
                    if let Ok(d) = &item {
                        guard.limiters.pace_decision(&caller).await;
                        count_decision(d);
                    }
                    item
                }
            }))
        } else {
            Box::pin(Counted {
                inner,
                verdicts: [0; 4],
                tallied: 0,
                _held: slot,
            })
        };
        Ok(Response::from_parts(metadata, out, extensions))
    }

    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        unary(
            &self.guard,
            &RECORD_EVENTS,
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
            &GET_CUSTOMER,
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
            &GET_STATUS,
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
            &LIST_DEAD_LETTERS,
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
            &GET_DECISION,
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
            &LIST_DECISIONS,
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
            &RELOAD_POLICY,
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
            &POLICY_HISTORY,
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
            &BACKTEST,
            Scope::Admin,
            request,
            no_cost,
            no_stamp,
            |_, r| self.inner.backtest(r),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// A stream that answers with the polls it was given, in order.
    struct Script(VecDeque<Poll<Option<Result<pb::Decision, Status>>>>);

    impl Stream for Script {
        type Item = Result<pb::Decision, Status>;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.pop_front().unwrap_or(Poll::Ready(None))
        }
    }

    fn answer(verdict: pb::Verdict, id: &str) -> Poll<Option<Result<pb::Decision, Status>>> {
        Poll::Ready(Some(Ok(pb::Decision {
            verdict: verdict as i32,
            decision_id: id.to_owned(),
            ..pb::Decision::default()
        })))
    }

    fn counted(script: Vec<Poll<Option<Result<pb::Decision, Status>>>>) -> Counted<Script, ()> {
        Counted {
            inner: Script(script.into()),
            verdicts: [0; 4],
            tallied: 0,
            _held: (),
        }
    }

    fn next(s: &mut Counted<Script, ()>) -> Poll<Option<Result<pb::Decision, Status>>> {
        Pin::new(s).poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn answers_pass_through_and_are_tallied_until_none_is_ready() {
        let mut s = counted(vec![
            answer(pb::Verdict::Allow, "d1"),
            answer(pb::Verdict::Deny, "d2"),
            // An item error is not a decision.
            Poll::Ready(Some(Ok(pb::Decision::default()))),
            answer(pb::Verdict::Deny, "d3"),
            Poll::Pending,
            answer(pb::Verdict::Defer, "d4"),
            Poll::Ready(Some(Err(Status::resource_exhausted("too large")))),
        ]);
        let mut ids = Vec::new();
        for _ in 0..4 {
            match next(&mut s) {
                Poll::Ready(Some(Ok(d))) => ids.push(d.decision_id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ids, ["d1", "d2", "", "d3"]);
        assert_eq!((s.verdicts, s.tallied), ([0, 1, 2, 0], 3));
        // Nothing ready: the tally goes to the meters.
        assert!(next(&mut s).is_pending());
        assert_eq!((s.verdicts, s.tallied), ([0; 4], 0));
        assert!(matches!(next(&mut s), Poll::Ready(Some(Ok(d))) if d.decision_id == "d4"));
        assert_eq!((s.verdicts, s.tallied), ([0, 0, 0, 1], 1));
        assert!(
            matches!(next(&mut s), Poll::Ready(Some(Err(e))) if e.code() == tonic::Code::ResourceExhausted)
        );
        // The end: the tally goes to the meters.
        assert!(matches!(next(&mut s), Poll::Ready(None)));
        assert_eq!((s.verdicts, s.tallied), ([0; 4], 0));
    }

    #[test]
    fn a_long_run_of_ready_answers_is_counted_every_tally_max() {
        let n = TALLY_MAX as usize + 10;
        let mut s = counted((0..n).map(|_| answer(pb::Verdict::Deny, "d")).collect());
        for _ in 0..TALLY_MAX - 1 {
            assert!(matches!(next(&mut s), Poll::Ready(Some(Ok(_)))));
        }
        assert_eq!(s.tallied, TALLY_MAX - 1);
        assert!(matches!(next(&mut s), Poll::Ready(Some(Ok(_)))));
        assert_eq!((s.verdicts, s.tallied), ([0; 4], 0));
        for _ in 0..10 {
            assert!(matches!(next(&mut s), Poll::Ready(Some(Ok(_)))));
        }
        assert_eq!((s.verdicts, s.tallied), ([0, 0, 10, 0], 10));
    }
}

//! The `tact.v1.ContactPolicy` gRPC service: wire types in, core types to the
//! engine, wire types out. Every bad request gets `INVALID_ARGUMENT` naming the field.

use std::pin::Pin;
use std::sync::Arc;

use tact_core::view::ConsentVia;
use tact_core::{Admission, Event, Explain, Origin, Proposal, Timestamp, Verdict};
use tact_log::audit::AuditMethod;
use tact_log::{Appended, LogError};
use tact_proto::convert::{self, ConvertError, span_to_pb, timestamp_to_pb};
use tact_proto::pb;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{AuditWriteError, Auditor, client_of, list_query, record_to_pb};
use crate::engine::{CHUNK, Decided, Engine, Refused, WriteError};
use crate::feed::Access;

/// The most dead letters one `ListDeadLetters` answer holds (whatever `limit` asks).
pub const MAX_DEAD_LETTERS_PER_ANSWER: usize = 1_000;

/// Request limits of the gRPC API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Proposals in one `DecideBatch`.
    pub max_batch: usize,
    /// Events in one `RecordEvents`.
    pub max_events_per_request: usize,
    /// Encoded size of one request message.
    pub max_request_bytes: usize,
    /// Timeline entries in a `GetCustomer` answer.
    pub timeline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            max_events_per_request: 10_000,
            max_request_bytes: 16 << 20,
            timeline_len: 50,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ContactPolicyService {
    engine: Arc<Engine>,
    limits: Limits,
    /// The decision audit (`None`: nothing is kept and the audit RPCs answer UNAVAILABLE).
    audit: Option<Arc<Auditor>>,
}

impl ContactPolicyService {
    pub fn new(engine: Arc<Engine>, limits: Limits) -> Self {
        ContactPolicyService {
            engine,
            limits,
            audit: None,
        }
    }

    /// Keeps a record of every decision answered, as `auditor`'s mode says.
    pub fn with_audit(mut self, auditor: Arc<Auditor>) -> Self {
        self.audit = Some(auditor);
        self
    }

    /// The auditor, if `method`'s decisions are kept.
    fn auditing(&self, method: AuditMethod) -> Option<&Arc<Auditor>> {
        self.audit.as_ref().filter(|a| a.wants(method))
    }

    /// Answers an audience (`DecideBatchRequest.audience`): its proposal checked once,
    /// each customer id on its own, the answers packed (see `tact.v1.Screening`).
    fn screen(&self, mut audience: pb::Audience, client: Option<&str>) -> Result<pb::Screening, Status> {
        let n = audience.customer_ids.len();
        // Item ids carry the index in 8 hex digits, whatever max_batch is set to.
        let max = self.limits.max_batch.min(u32::MAX as usize);
        if n > max {
            return Err(too_many("audience.customer_ids", max, n));
        }
        let (mut proposal, at) = convert::audience_from_pb(&mut audience)?;
        self.engine.admission().admit_proposal(&proposal).map_err(|e| {
            let e = convert::invalid_event(&e);
            Status::from(ConvertError::new(format!("audience.{}", e.field), e.why))
        })?;
        let mut verdicts = vec![pb::Verdict::Unspecified as i32; n];
        let mut not_before = vec![0i64; n];
        let mut errors = Vec::new();
        let mut customers = Vec::with_capacity(n);
        for (i, id) in audience.customer_ids.into_iter().enumerate() {
            match convert::audience_customer_error(i, &id) {
                None => customers.push((i as u32, id)),
                Some(e) => errors.push(e),
            }
        }
        let mut recorder = self
            .auditing(AuditMethod::DecideBatch)
            .map(|a| a.recorder(AuditMethod::DecideBatch, customers.len()));
        let screened = self.engine.screen(&mut proposal, at, &customers, |i, p, d| {
            let i = i as usize;
            verdicts[i] = pb::Verdict::from(d.decision.verdict) as i32;
            if d.decision.verdict == Verdict::Defer {
                not_before[i] = d.decision.not_before.map_or(0, |t| t.0);
            }
            if let Some(r) = recorder.as_mut() {
                r.add(p, d, at.is_some(), client, Explain::Verdict);
            }
        });
        if let Some(r) = recorder {
            r.submit();
        }
        Ok(pb::Screening {
            verdicts,
            not_before_unix_ms: not_before,
            errors,
            decision_id_prefix: screened.decision_id_prefix,
            policy_version: screened.policy_version.to_string(),
            log_position: screened.log_position,
            decided_at: Some(timestamp_to_pb(screened.at)),
        })
    }

    fn auditor(&self) -> Result<&Arc<Auditor>, Status> {
        self.audit
            .as_ref()
            .ok_or_else(|| Status::unavailable("the decision audit is not configured on this server"))
    }

    fn to_pb(&self, decided: Decided, customer_id: String, explain: Explain) -> pb::Decision {
        convert::decision_to_pb_explained(
            &decided.decision,
            decided.decision_id,
            &decided.policy_version,
            decided.log_position,
            customer_id,
            explain,
        )
    }
}

/// The level of detail a request asks for; in a batch, `batch` for a request that does
/// not say (see `tact.v1.Detail`).
fn explain_of(req: &pb::DecideRequest, batch: Explain) -> Result<Explain, ConvertError> {
    if req.detail == pb::Detail::Full as i32 {
        return Ok(batch);
    }
    convert::explain_from_wire(req.detail, "detail")
}

/// The stream's next item if it is already there, without waiting.
async fn next_ready<S: Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
    std::future::poll_fn(|cx| match Pin::new(&mut *stream).poll_next(cx) {
        std::task::Poll::Ready(item) => std::task::Poll::Ready(Some(item)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// The proposal of a `Decide` or `Authorize`, checked, and the level of detail asked
/// for. The request's strings move into the proposal (no copy): `req` is left with
/// empty ones if it is valid.
fn unary_proposal(
    req: &mut pb::DecideRequest,
    admission: &Admission,
) -> Result<(Proposal, Option<Timestamp>, Explain), Status> {
    let (p, at) = convert::proposal_from_pb_taken(req)?;
    admission
        .admit_proposal(&p)
        .map_err(|e| convert::invalid_event(&e))?;
    let explain = explain_of(req, Explain::Full)?;
    Ok((p, at, explain))
}

/// The answers to a batch or stream, in request order: decisions for the requests that
/// were valid, an item error for each that was not (which does not fail the others).
struct Items {
    /// `None`: the next decision of `proposals`; `Some`: the item's error answer.
    order: Vec<Option<pb::Decision>>,
    proposals: Vec<(Proposal, Option<Timestamp>)>,
    /// The level of detail of each of `proposals`.
    explain: Vec<Explain>,
}

impl Items {
    fn with_capacity(n: usize) -> Self {
        Items {
            order: Vec::with_capacity(n),
            proposals: Vec::with_capacity(n),
            explain: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    /// Checks request number `index` and queues it; `batch`: the batch's level of detail.
    ///
    /// The request's strings move into the proposal (a screening batch has thousands):
    /// `req` is left with empty ones if it is valid, untouched if not.
    fn push(&mut self, index: u64, req: &mut pb::DecideRequest, admission: &Admission, batch: Explain) {
        let p = match convert::proposal_from_pb_taken(req) {
            Ok(p) => p,
            Err(e) => {
                let error = convert::item_error_to_pb(index, &req.customer_id, e);
                self.order.push(Some(error));
                return;
            }
        };
        let checked = admission
            .admit_proposal(&p.0)
            .map_err(|e| convert::invalid_event(&e))
            .and_then(|()| explain_of(req, batch));
        match checked {
            Ok(explain) => {
                self.order.push(None);
                self.proposals.push(p);
                self.explain.push(explain);
            }
            Err(e) => {
                let error = convert::item_error_to_pb(index, &p.0.customer_id, e);
                self.order.push(Some(error));
            }
        }
    }

    /// Decides the valid requests together, each worked out and sent at the level of
    /// detail it asks for; the answers in request order. A customer this instance cannot
    /// answer for gets a DENY saying why, not an error that would fail the others.
    ///
    /// `method`: what the caller called, for the decision audit; `client`: who called.
    fn answer(
        &mut self,
        service: &ContactPolicyService,
        method: AuditMethod,
        client: Option<&str>,
    ) -> Vec<pb::Decision> {
        let explain = &self.explain;
        let decided = service
            .engine
            .decide_many_explained(&self.proposals, |i| explain[i]);
        let answers: Vec<pb::Decision> = match service.auditing(method) {
            None => decided
                .into_iter()
                .zip(self.proposals.drain(..).zip(self.explain.drain(..)))
                .map(|(d, ((p, _), e))| service.to_pb(d, p.customer_id, e))
                .collect(),
            Some(auditor) => {
                let mut recorder = auditor.recorder(method, decided.len());
                let answers = decided
                    .into_iter()
                    .zip(self.proposals.drain(..).zip(self.explain.drain(..)))
                    .map(|(d, ((p, at), e))| {
                        recorder.add(&p, &d, at.is_some(), client, e);
                        service.to_pb(d, p.customer_id, e)
                    })
                    .collect();
                recorder.submit();
                answers
            }
        };
        if answers.len() == self.order.len() {
            // Every request was valid (the usual case): the answers are in order already.
            self.order.clear();
            return answers;
        }
        let mut answers = answers.into_iter();
        self.order
            .drain(..)
            .map(|item| item.unwrap_or_else(|| answers.next().expect("one decision per valid request")))
            .collect()
    }
}

fn log_status(e: LogError) -> Status {
    tracing::error!(error = %e, "event log failed");
    Status::unavailable(format!("event log unavailable: {e}"))
}

/// `not-owner` is FAILED_PRECONDITION (ask the owner); `not-ready` is UNAVAILABLE (retry
/// here soon). The reason is also in the `tact-reason` metadata entry.
fn refused_status(r: Refused) -> Status {
    let (mut status, reason) = match &r {
        Refused::NotOwner { .. } => (Status::failed_precondition(r.to_string()), "not-owner"),
        Refused::NotReady { .. } => (Status::unavailable(r.to_string()), "not-ready"),
    };
    status
        .metadata_mut()
        .insert("tact-reason", tonic::metadata::MetadataValue::from_static(reason));
    status
}

fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::Refused(r) => refused_status(r),
        WriteError::Log(e) => log_status(e),
        WriteError::Feed(e) => {
            tracing::warn!(error = %e, "event stream unavailable");
            Status::unavailable(e.to_string())
        }
        // Not recorded, so not to be acted on; asking again gets a fresh decision id.
        e @ WriteError::Claimed { .. } => Status::aborted(e.to_string()),
    }
}

/// tonic reports a request message over `max_decoding_message_size` as OUT_OF_RANGE;
/// gRPC's convention (and what clients retry on, or not) is RESOURCE_EXHAUSTED.
pub fn message_too_large(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

fn too_many(field: &str, max: usize, got: usize) -> Status {
    Status::invalid_argument(format!("{field}: at most {max} per request (got {got})"))
}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::contact_policy_server::ContactPolicy for ContactPolicyService {
    async fn decide(
        &self,
        mut request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let (proposal, at, explain) = unary_proposal(request.get_mut(), self.engine.admission())?;
        let decided = self
            .engine
            .decide_explained(&proposal, at, explain)
            .map_err(refused_status)?;
        let Some(auditor) = self.auditing(AuditMethod::Decide) else {
            return Ok(Response::new(self.to_pb(decided, proposal.customer_id, explain)));
        };
        let mut recorder = auditor.recorder(AuditMethod::Decide, 1);
        recorder.add(
            &proposal,
            &decided,
            at.is_some(),
            client_of(&request).as_deref(),
            explain,
        );
        recorder.submit();
        Ok(Response::new(self.to_pb(decided, proposal.customer_id, explain)))
    }

    async fn authorize(
        &self,
        mut request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let (proposal, at, explain) = unary_proposal(request.get_mut(), self.engine.admission())?;
        if at.is_some() {
            return Err(Status::invalid_argument(
                "at: Authorize always decides now (use Decide to ask about another time)",
            ));
        }
        let decided = self
            .engine
            .authorize_explained(&proposal, explain)
            .await
            .map_err(write_status)?;
        let Some(auditor) = self.auditing(AuditMethod::Authorize) else {
            return Ok(Response::new(self.to_pb(decided, proposal.customer_id, explain)));
        };
        // Never lost: written and flushed before the answer (see crate::audit).
        let kept = match auditor.encode_one(
            AuditMethod::Authorize,
            &proposal,
            &decided,
            false,
            client_of(&request).as_deref(),
            explain,
        ) {
            Ok(record) => auditor.submit_durable(record).await,
            Err(e) => Err(AuditWriteError::Record(e)),
        };
        let answer = self.to_pb(decided, proposal.customer_id, explain);
        if let Err(e) = kept {
            tracing::error!(error = %e, decision_id = %answer.decision_id, "authorize answer withheld: audit record not kept");
            return Err(Status::unavailable(format!(
                "{e}; do not act on this authorization (decision {})",
                answer.decision_id
            )));
        }
        Ok(Response::new(answer))
    }

    async fn decide_batch(
        &self,
        request: Request<pb::DecideBatchRequest>,
    ) -> Result<Response<pb::DecideBatchResponse>, Status> {
        let client = client_of(&request);
        let mut batch = request.into_inner();
        if let Some(audience) = batch.audience.take() {
            if !batch.requests.is_empty() {
                return Err(Status::invalid_argument(
                    "audience: send either requests or an audience, not both",
                ));
            }
            if batch.detail != pb::Detail::Full as i32 && batch.detail != pb::Detail::Verdict as i32 {
                return Err(Status::invalid_argument(format!(
                    "detail: an audience is answered at DETAIL_VERDICT (got {}); ask Decide or requests for more",
                    batch.detail
                )));
            }
            let screening = self.screen(audience, client.as_deref())?;
            return Ok(Response::new(pb::DecideBatchResponse {
                decisions: Vec::new(),
                screening: Some(screening),
            }));
        }
        let requests = &mut batch.requests;
        if requests.len() > self.limits.max_batch {
            return Err(too_many("requests", self.limits.max_batch, requests.len()));
        }
        let explain = convert::explain_from_wire(batch.detail, "detail")?;
        let mut items = Items::with_capacity(requests.len());
        for (i, r) in requests.iter_mut().enumerate() {
            items.push(i as u64, r, self.engine.admission(), explain);
        }
        let decisions = items.answer(self, AuditMethod::DecideBatch, client.as_deref());
        Ok(Response::new(pb::DecideBatchResponse {
            decisions,
            screening: None,
        }))
    }

    type DecideStreamStream = DecisionStream;

    async fn decide_stream(
        &self,
        request: Request<Streaming<pb::DecideRequest>>,
    ) -> Result<Response<Self::DecideStreamStream>, Status> {
        let client = client_of(&request);
        let mut inbound = request.into_inner();
        let this = self.clone();
        let output = async_stream(move |tx| async move {
            let mut n = 0u64;
            let mut items = Items::with_capacity(CHUNK);
            // Requests that have already arrived are decided together, up to a chunk.
            // A request that is not valid gets an error answer in its place and the
            // stream goes on; only a broken stream (a message that cannot be decoded or
            // is too large) ends it.
            while let Some(first) = inbound.next().await {
                let mut item = Some(first);
                let mut failed = None;
                let mut ended = false;
                while let Some(next) = item.take() {
                    match next {
                        Ok(mut r) => {
                            items.push(
                                n + items.len() as u64,
                                &mut r,
                                this.engine.admission(),
                                Explain::Full,
                            );
                        }
                        Err(status) => {
                            failed = Some(message_too_large(status));
                            break;
                        }
                    }
                    if items.len() < CHUNK {
                        match next_ready(&mut inbound).await {
                            Some(Some(next)) => item = Some(next),
                            Some(None) => ended = true,
                            None => {}
                        }
                    }
                }
                // A chunk's answers go out together: tonic's encoder takes every message
                // that is ready into one buffer, so they leave in one DATA frame instead
                // of one small frame each (which a client's h2 counts against its flood
                // budget while they wait to be read).
                n += items.len() as u64;
                let answers = items.answer(&this, AuditMethod::DecideStream, client.as_deref());
                let last = failed.is_some() || ended;
                if tx.send((answers, failed)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(output))
    }

    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        let events = request.into_inner().events;
        if events.len() > self.limits.max_events_per_request {
            return Err(too_many(
                "events",
                self.limits.max_events_per_request,
                events.len(),
            ));
        }
        let now = self.engine.now();
        let admission = *self.engine.admission();
        let mut results: Vec<pb::EventResult> = Vec::with_capacity(events.len());
        let mut valid: Vec<Event> = Vec::with_capacity(events.len());
        let mut slots: Vec<usize> = Vec::with_capacity(events.len());
        for (i, wire) in events.into_iter().enumerate() {
            let event_id = wire.event_id.clone();
            let admitted = Event::try_from(wire).and_then(|event| {
                admission
                    .admit(&event, now, Origin::Outside)
                    .map(|()| event)
                    .map_err(|e| convert::invalid_event(&e))
            });
            match admitted {
                Ok(mut event) => {
                    // A withdrawal dated ahead of the clock takes effect now (see
                    // `Admission::takes_effect`); the answer says so.
                    let mut reason = String::new();
                    if let Some(at) = admission.takes_effect(&event, now) {
                        reason = format!(
                            "in effect from {at}, when it arrived: occurred_at {} is after the server's clock",
                            event.occurred_at
                        );
                        metrics::counter!("tact_events_in_effect_on_arrival_total").increment(1);
                        event.occurred_at = at;
                    }
                    if let Some(note) = event.ignored() {
                        metrics::counter!("tact_events_field_ignored_total").increment(1);
                        if !reason.is_empty() {
                            reason.push_str("; ");
                        }
                        reason.push_str(note);
                    }
                    slots.push(i);
                    valid.push(event);
                    results.push(pb::EventResult {
                        event_id,
                        reason,
                        ..Default::default()
                    });
                }
                Err(e) => results.push(pb::EventResult {
                    event_id,
                    status: pb::RecordStatus::Rejected as i32,
                    reason: format!("events[{i}].{e}"),
                    log_position: 0,
                }),
            }
        }
        if !valid.is_empty() {
            let appended = self.engine.record(valid).await.map_err(write_status)?;
            for (slot, a) in slots.into_iter().zip(appended) {
                let r = &mut results[slot];
                match a {
                    Appended::Recorded { seq } => {
                        r.status = pb::RecordStatus::Recorded as i32;
                        r.log_position = seq;
                    }
                    Appended::Duplicate { existing_seq } => {
                        r.status = pb::RecordStatus::Duplicate as i32;
                        r.log_position = existing_seq;
                        // The event already recorded stands as it was.
                        r.reason.clear();
                    }
                    Appended::Taken { existing_seq } => {
                        // An event id names one event, and a sender whose event was not
                        // recorded must hear so, not "duplicate" (a withdrawal sent under
                        // an id another event took would otherwise be lost unseen).
                        metrics::counter!("tact_events_id_taken_total").increment(1);
                        r.status = pb::RecordStatus::Rejected as i32;
                        r.log_position = 0;
                        r.reason = format!(
                            "events[{slot}].event_id: `{}` is already recorded (log position {existing_seq}) for another event; \
                             an event id names one event: send this one under an id of its own",
                            r.event_id
                        );
                    }
                }
            }
        }
        Ok(Response::new(pb::RecordEventsResponse { results }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::CustomerView>, Status> {
        let req = request.get_ref();
        tact_core::event::validate_customer_id(&req.customer_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let at = req
            .at
            .as_ref()
            .map(|t| convert::timestamp_from_pb(t, "at"))
            .transpose()?;
        let (view, position, access) = self
            .engine
            .customer(&req.customer_id, at, self.limits.timeline_len);
        let freshness = match access {
            Access::NotOwner { partition } => {
                return Err(refused_status(Refused::NotOwner {
                    customer_id: req.customer_id.clone(),
                    partition,
                }));
            }
            Access::NotReady { why, .. } => return Err(refused_status(Refused::NotReady { why })),
            Access::Owned { lag, stale, .. } => pb::Freshness {
                lag: Some(span_to_pb(tact_core::Span(
                    lag.as_millis().min(i64::MAX as u128) as i64
                ))),
                stale,
            },
        };
        let mut view = view_to_pb(
            &req.customer_id,
            view,
            self.engine.policy().version(),
            position,
            freshness,
        );
        // Consent proof (issue #11): from the customer's events in the log.
        let history = self
            .engine
            .consent_history(&req.customer_id, at)
            .await
            .map_err(log_status)?;
        consent_history_to_pb(history, &mut view);
        Ok(Response::new(view))
    }
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ServiceStatus>, Status> {
        let engine = &self.engine;
        let mut status = pb::ServiceStatus {
            log_position: engine.position(),
            customers: engine.customers() as u64,
            policy_version: engine.policy().version().to_string(),
            healthy: true,
            ..Default::default()
        };
        if let Some(feed) = engine.feed() {
            let f = feed.status();
            let duration = |d: std::time::Duration| {
                span_to_pb(tact_core::Span(d.as_millis().min(i64::MAX as u128) as i64))
            };
            status.kafka = true;
            status.topic = f.topic;
            status.partitions_total = f.partitions_total;
            status.partitions = f
                .assigned
                .into_iter()
                .map(|p| pb::PartitionStatus {
                    partition: p.partition,
                    position: p.position,
                    high_watermark: p.high_watermark,
                    lag_messages: p.lag_messages,
                    lag: Some(duration(p.lag)),
                    ready: p.ready,
                    stale: p.stale,
                })
                .collect();
            status.since_broker_heard = f.since_broker_heard.map(duration);
            status.max_staleness = Some(duration(f.max_staleness));
            status.dead_letters = f.dead_letters;
            status.healthy = f.healthy;
            if !f.healthy {
                status.unhealthy_reason =
                    "event stream: an owned partition is not caught up or is stale".to_owned();
            }
        }
        if let Some(cause) = self.audit.as_ref().and_then(|a| a.failing()) {
            status.healthy = false;
            status.unhealthy_reason = format!(
                "decision audit failing, so Authorize answers UNAVAILABLE until a write succeeds \
                 (Decide still answers): {cause}"
            );
        }
        if let Some(cause) = engine.unhealthy() {
            status.healthy = false;
            status.unhealthy_reason =
                format!("event log failed, writes are refused until tact is restarted: {cause}");
        }
        Ok(Response::new(status))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        // Each dead letter keeps up to 64 KiB of its payload: bound what one answer holds
        // (and what is read to build it).
        let limit = match request.get_ref().limit {
            0 => 1000,
            n => (n as usize).min(MAX_DEAD_LETTERS_PER_ANSWER),
        };
        let dead_letters = self
            .engine
            .dead_letters(limit)
            .map_err(log_status)?
            .into_iter()
            .map(|d| pb::DeadLetter {
                topic: d.topic,
                partition: d.partition,
                offset: d.offset,
                key: d.key,
                reason: d.reason,
                payload: d.payload,
                recorded_at: Some(timestamp_to_pb(Timestamp(d.recorded_at))),
            })
            .collect();
        Ok(Response::new(pb::ListDeadLettersResponse { dead_letters }))
    }

    // --- Decision audit (issue 11, section 2) ---

    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::AuditedDecision>, Status> {
        let auditor = self.auditor()?;
        let id = &request.get_ref().decision_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("decision_id: must not be empty"));
        }
        if id.len() > tact_log::audit::MAX_DECISION_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "decision_id: at most {} bytes (got {})",
                tact_log::audit::MAX_DECISION_ID_BYTES,
                id.len()
            )));
        }
        match auditor.get(id.clone()).await {
            Ok(Some(record)) => Ok(Response::new(record_to_pb(&record))),
            Ok(None) => Err(Status::not_found(format!(
                "decision_id: no record of decision {id} (unknown, pruned, or not audited)"
            ))),
            Err(e) => {
                tracing::error!(error = %e, "audit read failed");
                Err(Status::unavailable(format!("audit store: {e}")))
            }
        }
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let auditor = self.auditor()?;
        let query = list_query(request.get_ref(), auditor.now())?;
        let limit = query.limit;
        let records = auditor.list(query).await.map_err(|e| {
            tracing::error!(error = %e, "audit read failed");
            Status::unavailable(format!("audit store: {e}"))
        })?;
        let next_page_token = match records.last() {
            Some(last) if records.len() == limit => tact_log::audit::DecisionId::parse(&last.decision_id)
                .map(|last| tact_log::audit::Cursor { last }.to_token())
                .unwrap_or_default(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDecisionsResponse {
            decisions: records.iter().map(record_to_pb).collect(),
            next_page_token,
        }))
    }
}

/// Answers in flight between a stream's decider and its encoder, in chunks.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A chunk of a stream's answers, and the error that ends the stream after them.
type Chunk = (Vec<pb::Decision>, Option<Status>);

/// Runs `produce` as a task feeding a bounded channel of chunks of answers, returned as
/// a stream of the answers.
fn async_stream<F, Fut>(produce: F) -> DecisionStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Chunk>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(produce(tx));
    Box::pin(Chunks {
        rx,
        chunk: Vec::new().into_iter(),
        error: None,
    })
}

/// The answers of a channel of chunks, one by one: a chunk's answers are all ready at
/// once, so the encoder packs them together. Each answer is moved once, out of its
/// chunk, into the item.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    chunk: std::vec::IntoIter<pb::Decision>,
    /// The error that follows the current chunk's answers.
    error: Option<Status>,
}

impl Stream for Chunks {
    type Item = Result<pb::Decision, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = self.chunk.next() {
                return std::task::Poll::Ready(Some(Ok(item)));
            }
            if let Some(status) = self.error.take() {
                return std::task::Poll::Ready(Some(Err(status)));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some((chunk, error)) => {
                    self.chunk = chunk.into_iter();
                    self.error = error;
                }
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

fn view_to_pb(
    customer_id: &str,
    v: tact_core::CustomerView,
    policy_version: &str,
    position: u64,
    freshness: pb::Freshness,
) -> pb::CustomerView {
    let channel = |c: tact_core::Channel| pb::Channel::from(c) as i32;
    pb::CustomerView {
        customer_id: customer_id.to_owned(),
        consents: v
            .consents
            .into_iter()
            .map(|c| pb::ConsentView {
                channel: channel(c.channel),
                purpose: pb::Purpose::from(c.purpose) as i32,
                granted: c.granted,
                since: c.since.map(timestamp_to_pb),
                expires_at: c.expires_at.map(timestamp_to_pb),
                via: match c.via {
                    ConsentVia::Consent => "consent",
                    ConsentVia::SoftOptIn => "soft_opt_in",
                    ConsentVia::ContactRequest => "contact_request",
                }
                .to_owned(),
            })
            .collect(),
        caps: v
            .caps
            .into_iter()
            .map(|c| pb::CapView {
                rule_id: c.rule_id,
                channel: c.channel.map(channel),
                count: c.count,
                max: c.max,
                window: Some(span_to_pb(c.window)),
            })
            .collect(),
        cooldowns: v
            .cooldowns
            .into_iter()
            .map(|c| pb::CooldownView {
                rule_id: c.rule_id,
                until: c.until.map(timestamp_to_pb),
                message: c.message,
            })
            .collect(),
        open_inbound: v
            .open_inbound
            .into_iter()
            .map(|i| pb::OpenInbound {
                channel: channel(i.channel),
                since: Some(timestamp_to_pb(i.since)),
                topic: String::new(),
                age: Some(span_to_pb(i.age)),
                holds_back: i.holds_back.unwrap_or_default(),
            })
            .collect(),
        timeline: v
            .timeline
            .into_iter()
            .map(|t| pb::TimelineEntry {
                occurred_at: Some(timestamp_to_pb(t.at)),
                kind: t.kind.to_owned(),
                summary: t.summary,
            })
            .collect(),
        time_zone: v.time_zone,
        accepted_channels: v.accepted_channels.into_iter().map(channel).collect(),
        policy_version: policy_version.to_owned(),
        log_position: position,
        freshness: Some(freshness),
        ..Default::default()
    }
}

/// Consent proofs and history into a customer view (issue #11, section 4).
fn consent_history_to_pb(h: tact_core::proof::ConsentHistory, view: &mut pb::CustomerView) {
    let evidence = |e: tact_core::proof::Evidence| pb::ConsentEvidence {
        at: Some(timestamp_to_pb(e.at)),
        event_id: e.event_id,
        source: e.source,
        proof: e.proof,
        log_position: e.log_position,
    };
    view.consent_proofs = h
        .consents
        .into_iter()
        .map(|c| pb::ConsentProof {
            channel: pb::Channel::from(c.channel) as i32,
            purpose: pb::Purpose::from(c.purpose) as i32,
            status: c.status.as_str().to_owned(),
            given: c.given.map(evidence),
            expires_at: c.expires_at.map(timestamp_to_pb),
            withdrawn: c.withdrawn.map(evidence),
        })
        .collect();
    view.consent_history = h
        .history
        .into_iter()
        .map(|i| pb::HistoryEntry {
            log_position: i.log_position,
            event: Some(pb::InteractionEvent::from(&i.event)),
        })
        .collect();
    view.consent_history_omitted = u32::try_from(h.omitted).unwrap_or(u32::MAX);
}

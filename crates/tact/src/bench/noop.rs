//! `tact bench-noop-server` (hidden): a tonic server with tact's proto that decides
//! nothing. Every call is decoded and answered with a fixed, realistically sized
//! message (a full answer carries the two reasons and the ids an ALLOW typically has),
//! so the end-to-end bench can tell what tact's deciding costs on top of gRPC itself.

use std::net::SocketAddr;
use std::pin::Pin;

use tact_proto::pb;
use tact_proto::pb::contact_policy_server::{ContactPolicy, ContactPolicyServer};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The answer to every proposal, as tact would send an ALLOW with its reasons.
fn answer(customer_id: &str, detail: i32) -> pb::Decision {
    let reasons = if detail == pb::Detail::Verdict as i32 {
        Vec::new()
    } else {
        let sentences = detail == pb::Detail::Full as i32;
        let reason = |rule_id: &str, message: &str| pb::Reason {
            rule_id: rule_id.to_owned(),
            effect: pb::Effect::Allow as i32,
            message: if sentences {
                message.to_owned()
            } else {
                String::new()
            },
        };
        vec![
            reason(
                "consent",
                "the customer gave consent for marketing on email 34 days ago",
            ),
            reason(
                "quiet-hours",
                "open hours 08:00-20:00 in the customer's time zone",
            ),
        ]
    };
    pb::Decision {
        verdict: pb::Verdict::Allow as i32,
        not_before: None,
        reasons,
        alternatives: Vec::new(),
        decision_id: "d0123456789abcdef0123456789abcdef".to_owned(),
        policy_version: "default-2026-11".to_owned(),
        log_position: 2_000_000,
        customer_id: customer_id.to_owned(),
        error: None,
    }
}

#[derive(Debug, Default)]
struct Noop;

type Answers = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ContactPolicy for Noop {
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::Decision>, Status> {
        let r = request.get_ref();
        Ok(Response::new(answer(&r.customer_id, r.detail)))
    }

    async fn authorize(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::Decision>, Status> {
        let r = request.get_ref();
        Ok(Response::new(answer(&r.customer_id, r.detail)))
    }

    async fn decide_batch(
        &self,
        request: Request<pb::DecideBatchRequest>,
    ) -> Result<Response<pb::DecideBatchResponse>, Status> {
        let batch = request.get_ref();
        if let Some(audience) = &batch.audience {
            // An audience's answer as tact packs it: every customer ALLOW.
            let n = audience.customer_ids.len();
            return Ok(Response::new(pb::DecideBatchResponse {
                decisions: Vec::new(),
                screening: Some(pb::Screening {
                    verdicts: vec![pb::Verdict::Allow as i32; n],
                    not_before_unix_ms: vec![0; n],
                    errors: Vec::new(),
                    decision_id_prefix: "d0123456789abcdef01234567".to_owned(),
                    policy_version: "default-2026-11".to_owned(),
                    log_position: 2_000_000,
                    decided_at: Some(tact_proto::convert::timestamp_to_pb(tact_core::Timestamp(
                        1_800_000_000_000,
                    ))),
                }),
            }));
        }
        let decisions = batch
            .requests
            .iter()
            .map(|r| {
                answer(
                    &r.customer_id,
                    if r.detail != 0 { r.detail } else { batch.detail },
                )
            })
            .collect();
        Ok(Response::new(pb::DecideBatchResponse {
            decisions,
            screening: None,
        }))
    }

    type DecideStreamStream = Answers;

    async fn decide_stream(
        &self,
        request: Request<Streaming<pb::DecideRequest>>,
    ) -> Result<Response<Self::DecideStreamStream>, Status> {
        let answers = request
            .into_inner()
            .map(|r| r.map(|r| answer(&r.customer_id, r.detail)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        let results = request
            .into_inner()
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| pb::EventResult {
                event_id: e.event_id,
                status: pb::RecordStatus::Recorded as i32,
                reason: String::new(),
                log_position: i as u64 + 1,
            })
            .collect();
        Ok(Response::new(pb::RecordEventsResponse { results }))
    }

    async fn get_customer(
        &self,
        _request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::CustomerView>, Status> {
        Err(Status::unimplemented("the no-op server keeps no customers"))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ServiceStatus>, Status> {
        Ok(Response::new(pb::ServiceStatus {
            healthy: true,
            policy_version: "noop".to_owned(),
            ..Default::default()
        }))
    }

    async fn list_dead_letters(
        &self,
        _request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        Ok(Response::new(pb::ListDeadLettersResponse::default()))
    }

    async fn get_decision(
        &self,
        _request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::AuditedDecision>, Status> {
        Err(Status::unimplemented("the no-op server keeps no decisions"))
    }

    async fn list_decisions(
        &self,
        _request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        Ok(Response::new(pb::ListDecisionsResponse::default()))
    }
}

/// Serves the no-op service on `listen` until SIGTERM or SIGINT.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<std::process::ExitCode> {
    tracing::info!(addr = %listen, "no-op server listening (it decides nothing: a bench baseline)");
    tonic::transport::Server::builder()
        .add_service(
            ContactPolicyServer::new(Noop)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_shutdown(listen, crate::serve::shutdown_signal())
        .await?;
    Ok(std::process::ExitCode::SUCCESS)
}

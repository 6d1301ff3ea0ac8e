//! `tact decision ID` and `tact decisions --customer C`: the decision audit, read from a
//! running server (GetDecision, ListDecisions), printed for people or as JSON.

use std::fmt::Write as _;
use std::process::ExitCode;

use tact_core::Timestamp;
use tact_proto::convert::{channel_from_wire, purpose_from_wire, timestamp_from_pb, timestamp_to_pb};
use tact_proto::pb;

use crate::client::{connect, now};
use crate::render;

fn status(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} failed: {} ({:?})", s.message(), s.code())
}

/// An audited decision for a person: what was asked, by whom, when, and the answer as
/// it was given (relative times measured from the instant it was decided for).
pub fn render(a: &pb::AuditedDecision, now: Timestamp) -> String {
    let mut out = String::new();
    let p = a.proposal.clone().unwrap_or_default();
    let channel = channel_from_wire(p.channel, "channel").map_or_else(|_| "?".to_owned(), |c| c.to_string());
    let purpose = purpose_from_wire(p.purpose, "purpose").map_or_else(|_| "?".to_owned(), |c| c.to_string());
    let _ = writeln!(
        out,
        "{} answered {} to {}{}",
        a.method,
        render::instant(a.answered_at.as_ref(), now),
        if a.client.is_empty() {
            "an unauthenticated caller"
        } else {
            a.client.as_str()
        },
        if p.requested_by.is_empty() {
            String::new()
        } else {
            format!(" (requested by {})", p.requested_by)
        }
    );
    let _ = writeln!(
        out,
        "asked: {channel} for {purpose} to {}{}{}",
        p.customer_id,
        if p.campaign_id.is_empty() {
            String::new()
        } else {
            format!(", campaign {}", p.campaign_id)
        },
        match &p.at {
            Some(at) => format!(", as of {}", render::instant(Some(at), now)),
            None => String::new(),
        }
    );
    let at =
        a.at.as_ref()
            .and_then(|t| timestamp_from_pb(t, "at").ok())
            .unwrap_or(now);
    if let Some(d) = &a.decision {
        out.push_str(&render::decision(d, at, ""));
    }
    out
}

/// `tact decision ID`: GetDecision.
pub async fn decision(server: &str, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(server).await?;
    let a = client
        .get_decision(pb::GetDecisionRequest {
            decision_id: id.to_owned(),
        })
        .await
        .map_err(|s| status("GetDecision", s))?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        print!("{}", render(&a, now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `tact decisions --customer C`: ListDecisions, newest first, page after page up to
/// `limit` decisions.
pub async fn decisions(
    server: &str,
    customer: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = connect(server).await?;
    let now = now();
    let mut token = String::new();
    let mut shown = 0usize;
    while shown < limit {
        let page = client
            .list_decisions(pb::ListDecisionsRequest {
                customer_id: customer.to_owned(),
                from: from.map(timestamp_to_pb),
                to: to.map(timestamp_to_pb),
                limit: (limit - shown).min(1_000) as u32,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| status("ListDecisions", s))?
            .into_inner();
        for a in &page.decisions {
            if json {
                println!("{}", serde_json::to_string(a)?);
            } else {
                if shown > 0 {
                    println!();
                }
                print!("{}", render(a, now));
            }
            shown += 1;
        }
        if page.next_page_token.is_empty() || page.decisions.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if shown == 0 && !json {
        println!("no decisions kept for {customer} in that time");
    }
    Ok(ExitCode::SUCCESS)
}

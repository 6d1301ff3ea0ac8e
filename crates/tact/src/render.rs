//! Decisions and customer views, printed for people.

use std::fmt::Write as _;

use tact_core::{Effect, Timestamp, Verdict};
use tact_proto::convert::{
    channel_from_wire, effect_from_wire, purpose_from_wire, span_from_pb, timestamp_from_pb,
    verdict_from_wire,
};
use tact_proto::pb;

pub fn verdict_name(v: i32) -> &'static str {
    match verdict_from_wire(v, "verdict") {
        Ok(Verdict::Allow) => "ALLOW",
        Ok(Verdict::Deny) => "DENY",
        Ok(Verdict::Defer) => "DEFER",
        Err(_) => "UNKNOWN",
    }
}

fn effect_name(v: i32) -> &'static str {
    match effect_from_wire(v, "effect") {
        Ok(Effect::Allow) => "ALLOW",
        Ok(Effect::Deny) => "DENY",
        Ok(Effect::Defer) => "DEFER",
        Err(_) => "UNKNOWN",
    }
}

fn channel_name(v: i32) -> String {
    channel_from_wire(v, "channel").map_or_else(|_| format!("channel#{v}"), |c| c.to_string())
}

fn purpose_name(v: i32) -> String {
    purpose_from_wire(v, "purpose").map_or_else(|_| format!("purpose#{v}"), |p| p.to_string())
}

/// `2026-11-20T09:00:00Z (in 47 h)`, relative to `now`.
pub fn instant(ts: Option<&pbjson_types::Timestamp>, now: Timestamp) -> String {
    let Some(t) = ts.and_then(|t| timestamp_from_pb(t, "t").ok()) else {
        return "-".to_owned();
    };
    if t >= now {
        format!("{t} (in {})", t.since(now))
    } else {
        format!("{t} ({} ago)", now.since(t))
    }
}

/// The decision for a person: verdict, when (for DEFER), why, and what instead.
/// Every line is prefixed with `indent`.
pub fn decision(d: &pb::Decision, now: Timestamp, indent: &str) -> String {
    let mut out = String::new();
    if let Some(e) = &d.error {
        // A request of a batch or stream that was not valid: no verdict.
        let _ = writeln!(
            out,
            "{indent}not decided: request {} is not valid: {}: {}",
            e.index, e.field, e.message
        );
        return out;
    }
    let verdict = verdict_name(d.verdict);
    match d.not_before.as_ref() {
        Some(nb) if verdict == "DEFER" => {
            let _ = writeln!(out, "{indent}verdict: DEFER until {}", instant(Some(nb), now));
        }
        _ => {
            let _ = writeln!(out, "{indent}verdict: {verdict}");
        }
    }
    if !d.reasons.is_empty() {
        let _ = writeln!(out, "{indent}why:");
        for r in &d.reasons {
            let _ = writeln!(
                out,
                "{indent}  - [{}] {}: {}",
                r.rule_id,
                effect_name(r.effect),
                r.message
            );
        }
    }
    if !d.alternatives.is_empty() {
        let _ = writeln!(out, "{indent}instead:");
        for a in &d.alternatives {
            let when = match a.not_before.as_ref() {
                None => "now".to_owned(),
                Some(t) => format!("from {}", instant(Some(t), now)),
            };
            let _ = writeln!(
                out,
                "{indent}  - {} for {}, {when}: {}",
                channel_name(a.channel),
                purpose_name(a.purpose),
                a.note
            );
        }
    }
    let _ = writeln!(
        out,
        "{indent}decision {} (policy {}, log position {})",
        d.decision_id, d.policy_version, d.log_position
    );
    out
}

/// The customer view for a person.
pub fn customer(v: &pb::CustomerView, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "customer {} (policy {}, log position {})",
        v.customer_id, v.policy_version, v.log_position
    );
    let tz = v.time_zone.as_deref().unwrap_or("unknown (policy default)");
    let accepted = if v.accepted_channels.is_empty() {
        "any".to_owned()
    } else {
        v.accepted_channels
            .iter()
            .map(|c| channel_name(*c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "time zone: {tz}");
    let _ = writeln!(out, "accepted channels: {accepted}");
    if let Some(f) = &v.freshness
        && f.stale
    {
        let _ = writeln!(out, "warning: this view is stale");
    }

    let _ = writeln!(out, "consents:");
    if v.consents.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for c in &v.consents {
        let state = if c.granted { "granted" } else { "not granted" };
        let mut line = format!(
            "  - {} for {}: {state} via {}",
            channel_name(c.channel),
            purpose_name(c.purpose),
            c.via
        );
        if c.since.is_some() {
            let _ = write!(line, ", since {}", instant(c.since.as_ref(), now));
        }
        if c.expires_at.is_some() {
            let _ = write!(line, ", expires {}", instant(c.expires_at.as_ref(), now));
        }
        let _ = writeln!(out, "{line}");
    }

    let _ = writeln!(out, "caps:");
    for c in &v.caps {
        let on = c.channel.map_or_else(|| "all channels".to_owned(), channel_name);
        let window = c
            .window
            .as_ref()
            .and_then(|w| span_from_pb(w, "window").ok())
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let _ = writeln!(
            out,
            "  - [{}] {on}: {} of {} in {window}",
            c.rule_id, c.count, c.max
        );
    }

    let _ = writeln!(out, "cool-downs:");
    if v.cooldowns.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for c in &v.cooldowns {
        let until = if c.until.is_some() {
            format!(" until {}", instant(c.until.as_ref(), now))
        } else {
            String::new()
        };
        let _ = writeln!(out, "  - [{}]{until}: {}", c.rule_id, c.message);
    }

    if !v.open_inbound.is_empty() {
        let _ = writeln!(out, "awaiting a reply:");
        for i in &v.open_inbound {
            let held = if i.holds_back.is_empty() {
                String::new()
            } else {
                format!(", holding marketing and sales back [{}]", i.holds_back)
            };
            let _ = writeln!(
                out,
                "  - {} since {}{held}",
                channel_name(i.channel),
                instant(i.since.as_ref(), now)
            );
        }
    }

    let _ = writeln!(out, "timeline:");
    if v.timeline.is_empty() {
        let _ = writeln!(out, "  (no events)");
    }
    for t in &v.timeline {
        let at = t
            .occurred_at
            .as_ref()
            .and_then(|ts| timestamp_from_pb(ts, "occurred_at").ok())
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        let _ = writeln!(out, "  - {at}  {:<20} {}", t.kind, t.summary);
    }
    consent_proof(&mut out, v, now);
    out
}

/// Each consent with its proof, and the consent, do-not-contact and preference history
/// (issue #11, section 4).
fn consent_proof(out: &mut String, v: &pb::CustomerView, now: Timestamp) {
    let _ = writeln!(out, "consent proof:");
    if v.consent_proofs.is_empty() {
        let _ = writeln!(out, "  (no consent recorded)");
    }
    let evidence = |e: &pb::ConsentEvidence| {
        format!(
            "{} by event {} from {} (proof: {}, log position {})",
            instant(e.at.as_ref(), now),
            e.event_id,
            if e.source.is_empty() { "-" } else { &e.source },
            if e.proof.is_empty() {
                "none recorded"
            } else {
                &e.proof
            },
            e.log_position
        )
    };
    for c in &v.consent_proofs {
        let _ = writeln!(
            out,
            "  - {} for {}: {}",
            channel_name(c.channel),
            purpose_name(c.purpose),
            c.status
        );
        match &c.given {
            Some(g) => {
                let _ = writeln!(out, "      given {}", evidence(g));
            }
            None => {
                let _ = writeln!(out, "      never given");
            }
        }
        if c.expires_at.is_some() {
            let _ = writeln!(out, "      expires {}", instant(c.expires_at.as_ref(), now));
        }
        if let Some(w) = &c.withdrawn {
            let _ = writeln!(out, "      withdrawn {}", evidence(w));
        }
    }
    let _ = writeln!(
        out,
        "consent, do-not-contact and preference history (newest first):"
    );
    if v.consent_history.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for h in &v.consent_history {
        let Some(e) = &h.event else { continue };
        let line = match tact_core::Event::try_from(e.clone()) {
            Ok(event) => history_line(&event),
            Err(err) => format!("(unreadable: {err})"),
        };
        let _ = writeln!(
            out,
            "  - {}  {}  [{} from {}, log position {}]",
            instant(e.occurred_at.as_ref(), now),
            line,
            e.event_id,
            if e.source.is_empty() { "-" } else { &e.source },
            h.log_position
        );
    }
    if v.consent_history_omitted > 0 {
        let _ = writeln!(
            out,
            "  ({} older changes not shown: 16 of each kind are)",
            v.consent_history_omitted
        );
    }
}

fn history_line(e: &tact_core::Event) -> String {
    use tact_core::EventKind;
    match &e.kind {
        EventKind::ConsentChanged {
            channel,
            purpose,
            granted,
            expires_at,
            proof,
        } => {
            let mut s = format!(
                "consent {} for {channel} {purpose} (proof: {})",
                if *granted { "given" } else { "withdrawn" },
                if proof.is_empty() { "none recorded" } else { proof }
            );
            if let Some(x) = expires_at {
                let _ = write!(s, ", expires {x}");
            }
            s
        }
        EventKind::DoNotContact { reason, until } => match until {
            Some(u) => format!("do not contact until {u} ({reason})"),
            None => format!("do not contact, for good ({reason})"),
        },
        EventKind::PreferencesChanged {
            time_zone,
            accepted_channels,
            max_contacts,
        } => {
            let mut parts = Vec::new();
            if let Some(tz) = time_zone {
                parts.push(format!(
                    "time zone {}",
                    if tz.is_empty() { "cleared" } else { tz }
                ));
            }
            if let Some(cs) = accepted_channels {
                let names: Vec<&str> = cs.iter().map(|c| c.as_str()).collect();
                parts.push(if names.is_empty() {
                    "accepts any channel".to_owned()
                } else {
                    format!("accepts {}", names.join(", "))
                });
            }
            if let Some(l) = max_contacts {
                parts.push(if l.max == 0 {
                    "own limit cleared".to_owned()
                } else {
                    format!("at most {} in {}", l.max, l.window)
                });
            }
            format!("preferences: {}", parts.join("; "))
        }
        other => other.name().to_owned(),
    }
}

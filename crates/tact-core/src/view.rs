//! What tact knows about one customer, for people: consent, cap usage, cool-downs,
//! messages awaiting a reply, and the recent timeline.

use serde::Serialize;

use crate::decide::{Detail, Effect, Proposal, decide};
use crate::event::{Channel, Purpose};
use crate::policy::{Policy, RuleKind};
use crate::rules::answer_first;
use crate::state::{CustomerState, Mark};
use crate::time::{Span, Timestamp};
use crate::touch::touches;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentVia {
    Consent,
    SoftOptIn,
    ContactRequest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentView {
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    /// When the record in force was made.
    pub since: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub via: ConsentVia,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapView {
    pub rule_id: String,
    /// `None`: several channels together.
    pub channel: Option<Channel>,
    pub count: u32,
    pub max: u32,
    pub window: Span,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CooldownView {
    pub rule_id: String,
    pub channel: Option<Channel>,
    pub until: Option<Timestamp>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboundView {
    pub channel: Channel,
    pub since: Timestamp,
    /// How long it has waited for an answer, at the view's instant.
    pub age: Span,
    /// The `answer_first` rule it holds outreach back under, if any.
    pub holds_back: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineItem {
    pub at: Timestamp,
    pub kind: &'static str,
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CustomerView {
    pub consents: Vec<ConsentView>,
    pub caps: Vec<CapView>,
    pub cooldowns: Vec<CooldownView>,
    pub open_inbound: Vec<InboundView>,
    pub timeline: Vec<TimelineItem>,
    pub time_zone: Option<String>,
    pub accepted_channels: Vec<Channel>,
}

const MARKETING_AND_SALES: [Purpose; 2] = [Purpose::Marketing, Purpose::Sales];

/// Builds the view of `state` as of `at`; `timeline_len` bounds the timeline.
pub fn customer_view(
    state: &CustomerState,
    policy: &Policy,
    at: Timestamp,
    timeline_len: usize,
) -> CustomerView {
    let mut view = CustomerView::default();
    let probe = |channel, purpose| Proposal {
        customer_id: String::new(),
        channel,
        purpose,
        campaign_id: String::new(),
        requested_by: "view".into(),
    };

    for &channel in Channel::ALL {
        for purpose in MARKETING_AND_SALES {
            let record = state.consent(channel, purpose, at);
            let d = decide(state, policy, &probe(channel, purpose), at);
            let via = d.reasons.iter().find_map(|r| match r.detail {
                Detail::ConsentGranted { .. } => Some(ConsentVia::Consent),
                Detail::SoftOptIn { .. } => Some(ConsentVia::SoftOptIn),
                Detail::ContactRequested { .. } => Some(ConsentVia::ContactRequest),
                _ => None,
            });
            if via.is_some() || record.is_some() {
                let live = record.filter(|r| r.live(at));
                view.consents.push(ConsentView {
                    channel,
                    purpose,
                    granted: via.is_some(),
                    since: record.map(|r| r.at),
                    expires_at: live.and_then(|r| r.expires_at),
                    via: via.unwrap_or(ConsentVia::Consent),
                });
            }
            // Time-bound holds, as decide sees them.
            for r in d.reasons.iter().filter(|r| r.effect != Effect::Allow) {
                let (ch, until) = match &r.detail {
                    Detail::ResearchCooldown { channel, until, .. } => (Some(*channel), Some(*until)),
                    Detail::Fatigue { channel, until, .. } => (Some(*channel), Some(*until)),
                    Detail::ComplaintCoolOff { until, .. } => (None, Some(*until)),
                    Detail::DoNotContact { until, .. } => (None, *until),
                    _ => continue,
                };
                if !view
                    .cooldowns
                    .iter()
                    .any(|c| *c.rule_id == *r.rule_id && c.channel == ch)
                {
                    view.cooldowns.push(CooldownView {
                        rule_id: r.rule_id.to_string(),
                        channel: ch,
                        until,
                        message: r.message(),
                    });
                }
            }
        }
    }

    for rule in policy.rules() {
        if let RuleKind::FrequencyCap(cap) = &rule.kind {
            let since = at.saturating_sub(cap.window);
            let count = touches(&state.read(policy, at))
                .take_while(|(e, _, _)| e.at > since)
                .filter(|(_, c, p)| rule.channels & c.bit() != 0 && rule.purposes & p.bit() != 0)
                .count() as u32;
            let single = rule.channels.count_ones() == 1;
            view.caps.push(CapView {
                rule_id: rule.id.to_string(),
                channel: Channel::ALL
                    .iter()
                    .copied()
                    .find(|c| single && rule.channels & c.bit() != 0),
                count,
                max: cap.max,
                window: cap.window,
            });
        }
        let open_for = match &rule.kind {
            RuleKind::ServiceReply(s) => s.window,
            RuleKind::AnswerFirst(a) => a.open_for,
            _ => continue,
        };
        let holds_back = matches!(rule.kind, RuleKind::AnswerFirst(_)).then(|| rule.id.to_string());
        for (channel, since) in answer_first::open_messages(&state.as_of(at), open_for) {
            match view
                .open_inbound
                .iter_mut()
                .find(|i| i.channel == channel && i.since == since)
            {
                Some(known) => {
                    if known.holds_back.is_none() {
                        known.holds_back = holds_back.clone();
                    }
                }
                None => view.open_inbound.push(InboundView {
                    channel,
                    since,
                    age: at.since(since),
                    holds_back: holds_back.clone(),
                }),
            }
        }
    }
    view.open_inbound.sort_by_key(|i| std::cmp::Reverse(i.since));

    let prefs = state.prefs(at);
    view.time_zone = prefs.time_zone.map(|tz| tz.name().to_owned());
    view.accepted_channels = Channel::ALL
        .iter()
        .copied()
        .filter(|c| prefs.accepted & c.bit() != 0)
        .collect();
    view.timeline = state
        .recent(at)
        .take(timeline_len)
        .map(|e| {
            let (kind, summary) = describe(e.mark);
            TimelineItem {
                at: e.at,
                kind,
                summary,
            }
        })
        .collect();
    view
}

fn describe(mark: Mark) -> (&'static str, String) {
    match mark {
        Mark::Research(s) => ("research", crate::explain::signal_text(s).to_owned()),
        Mark::ContactRequest(c) => ("contact_requested", format!("asked to be contacted by {c}")),
        Mark::Inbound(c) => ("inbound_message", format!("wrote or called in by {c}")),
        Mark::Touch {
            channel,
            purpose,
            authorized: true,
            ..
        } => (
            "outreach_authorized",
            format!("{purpose} {channel} authorized by tact"),
        ),
        Mark::Touch { channel, purpose, .. } => ("outreach_sent", format!("{purpose} {channel} sent")),
        Mark::Engaged(c, e) => ("outreach_engaged", format!("{e} on {c}")),
        Mark::Unanswered(c, o) => ("outreach_unanswered", format!("{c} outreach {o}")),
        Mark::Purchase => ("purchase", "bought".to_owned()),
        Mark::Complaint => ("complaint", "complained".to_owned()),
        // Side records are never part of the timeline.
        _ => ("record", String::new()),
    }
}

//! What-if: re-deciding the outreach a customer actually got under two policies.
//!
//! History is taken as it happened: every recorded outreach is re-decided as of the
//! instant it occurred, on the customer's state just before it, and then folded in
//! whatever either policy says. So an outreach the candidate would have blocked still
//! counts in later caps (the other reading, "as if the candidate had been in force",
//! would need to invent what callers did after a refusal).
//!
//! Pure, like the rest of the core: the caller reads the log and aggregates.

use std::collections::{HashMap, HashSet};

use crate::decide::{Decision, Proposal, decide};
use crate::event::{Channel, Event, EventKind, Purpose};
use crate::policy::Policy;
use crate::state::{CustomerState, Retention, decision_hash, id_hash};
use crate::time::Timestamp;

/// The instants whose outreach is re-decided (both ends included; `None`: open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Period {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl Period {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at <= t)
    }
}

/// How history is read (see the module's doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// History as it happened: every recorded outreach counts in later caps, whatever
    /// either policy says of it.
    #[default]
    AsHappened,
    /// As if the candidate had been in force: an outreach the candidate would not have
    /// allowed (and the report of an outreach sent under such an authorization) is not
    /// folded into the candidate's state, so it does not count in its later caps. The
    /// baseline still decides on history as it happened. Callers after a refusal are
    /// assumed to have done nothing else instead.
    Counterfactual,
}

impl std::str::FromStr for Reading {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "as_happened" | "as-happened" => Ok(Reading::AsHappened),
            "counterfactual" => Ok(Reading::Counterfactual),
            other => Err(format!(
                "unknown reading `{other}`; expected as_happened or counterfactual"
            )),
        }
    }
}

/// One outreach, re-decided under both policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redecided<'a> {
    pub event: &'a Event,
    pub proposal: Proposal,
    pub baseline: Decision,
    pub candidate: Decision,
}

/// The retention a backtest folds with: enough history for both policies' windows.
pub fn retention_for(baseline: &Policy, candidate: &Policy) -> Retention {
    let (a, b) = (baseline.retention(), candidate.retention());
    Retention {
        window: a.window.max(b.window),
        max_entries: a.max_entries.max(b.max_entries),
    }
}

/// Re-decides each outreach of one customer's events (any order; they are sorted by
/// `(occurred_at, position)`, `position` being the log order) that occurred within
/// `period`, calling `visit` with both decisions. An `outreachSent` reported under a
/// decision tact authorized (and that is in these events) is the same outreach and is
/// not re-decided twice. Returns how many events were folded.
pub fn backtest_customer<'a>(
    events: &mut [(u64, &'a Event)],
    baseline: &Policy,
    candidate: &Policy,
    retention: Retention,
    period: Period,
    visit: impl FnMut(Redecided<'a>),
) -> usize {
    backtest_customer_as(
        events,
        baseline,
        candidate,
        retention,
        period,
        Reading::AsHappened,
        visit,
    )
}

/// [`backtest_customer`] with the history read as `reading` says.
pub fn backtest_customer_as<'a>(
    events: &mut [(u64, &'a Event)],
    baseline: &Policy,
    candidate: &Policy,
    retention: Retention,
    period: Period,
    reading: Reading,
    mut visit: impl FnMut(Redecided<'a>),
) -> usize {
    events.sort_by_key(|(position, e)| (e.occurred_at, *position));
    let absorbed = absorbed_reports(events);
    let mut state = CustomerState::new();
    // Counterfactual: the candidate's own history, without what it would have blocked.
    let mut own = (reading == Reading::Counterfactual).then(CustomerState::new);
    let mut blocked: HashSet<u32> = HashSet::new();
    for (i, (_, event)) in events.iter().enumerate() {
        let mut counts_for_candidate = true;
        let report_of = absorbed.get(&i).copied();
        if period.contains(event.occurred_at)
            && report_of.is_none()
            && let Some(proposal) = outreach(event)
        {
            let at = event.occurred_at;
            let candidate = decide(own.as_ref().unwrap_or(&state), candidate, &proposal, at);
            if own.is_some() && candidate.verdict != crate::decide::Verdict::Allow {
                counts_for_candidate = false;
                if let EventKind::OutreachAuthorized { decision_id, .. } = &event.kind {
                    blocked.insert(decision_hash(decision_id));
                }
            }
            visit(Redecided {
                event,
                baseline: decide(&state, baseline, &proposal, at),
                candidate,
                proposal,
            });
        } else if let Some(d) = report_of
            && blocked.contains(&d)
        {
            counts_for_candidate = false;
        }
        state.apply(event, retention);
        if let Some(own) = own.as_mut()
            && counts_for_candidate
        {
            own.apply(event, retention);
        }
    }
    events.len()
}

/// The reports of outreach tact authorized that count as the authorization, not on
/// their own (see `touch::counts`): for each authorization, the earliest report (by
/// instant, then event id) quoting its decision with its channel and purpose. Their
/// indexes in `events`, with the decision's hash.
fn absorbed_reports(events: &[(u64, &Event)]) -> HashMap<usize, u32> {
    let authorized: HashMap<u32, (Channel, Purpose)> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            EventKind::OutreachAuthorized {
                decision_id,
                channel,
                purpose,
                ..
            } => Some((decision_hash(decision_id), (*channel, *purpose))),
            _ => None,
        })
        .collect();
    if authorized.is_empty() {
        return HashMap::new();
    }
    let mut first: HashMap<u32, (Timestamp, u64, usize)> = HashMap::new();
    for (i, (_, e)) in events.iter().enumerate() {
        if let EventKind::OutreachSent {
            channel,
            purpose,
            decision_id: Some(d),
            ..
        } = &e.kind
            && !d.is_empty()
        {
            let d = decision_hash(d);
            if authorized.get(&d) == Some(&(*channel, *purpose)) {
                let key = (e.occurred_at, id_hash(&e.event_id), i);
                first.entry(d).and_modify(|k| *k = (*k).min(key)).or_insert(key);
            }
        }
    }
    first.into_iter().map(|(d, (_, _, i))| (i, d)).collect()
}

/// The proposal an outreach event stands for (an authorization, or a report of an
/// outreach sent that is not absorbed by an authorization).
fn outreach(event: &Event) -> Option<Proposal> {
    let (channel, purpose, campaign, requested_by) = match &event.kind {
        EventKind::OutreachAuthorized {
            channel,
            purpose,
            campaign,
            requested_by,
            ..
        } => (*channel, *purpose, campaign, requested_by.as_str()),
        EventKind::OutreachSent {
            channel,
            purpose,
            campaign,
            ..
        } => (*channel, *purpose, campaign, event.source.as_str()),
        _ => return None,
    };
    Some(Proposal {
        customer_id: event.customer_id.clone(),
        channel,
        purpose,
        campaign_id: campaign.clone(),
        requested_by: requested_by.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Verdict;
    use crate::event::{Channel, Purpose};
    use crate::time::{DAY, Span};

    fn ev(id: &str, at: Timestamp, kind: EventKind) -> Event {
        Event {
            event_id: id.into(),
            customer_id: "c1".into(),
            occurred_at: at,
            source: "crm".into(),
            kind,
        }
    }

    fn sent(id: &str, at: Timestamp, decision_id: Option<&str>) -> Event {
        ev(
            id,
            at,
            EventKind::OutreachSent {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign: "autumn".into(),
                decision_id: decision_id.map(String::from),
            },
        )
    }

    /// The shipped policy with the email cap lowered from 3 to 1 a week.
    fn stricter() -> Policy {
        let text = crate::policy::DEFAULT_POLICY.replacen("max = 3", "max = 1", 1);
        assert_ne!(text, crate::policy::DEFAULT_POLICY);
        Policy::from_toml_str(&text).unwrap()
    }

    #[test]
    fn each_outreach_is_redecided_once_on_the_state_before_it() {
        let t0 = Timestamp::parse_rfc3339("2026-11-02T10:00:00Z").unwrap();
        let day = |n: i64| t0.saturating_add(Span(n * DAY.0));
        let events = [
            ev(
                "consent",
                day(-30),
                EventKind::ConsentChanged {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    granted: true,
                    expires_at: None,
                    proof: "form".into(),
                },
            ),
            sent("s1", day(0), None),
            sent("s2", day(1), None),
            ev(
                "a3",
                day(2),
                EventKind::OutreachAuthorized {
                    decision_id: "d3".into(),
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "autumn".into(),
                    requested_by: "crm".into(),
                },
            ),
            // The report of the authorized outreach: the same outreach.
            sent("s3", day(2), Some("d3")),
            // A second send quoting the same decision is an outreach of its own.
            sent("s4", day(3), Some("d3")),
        ];
        let mut refs: Vec<(u64, &Event)> = events.iter().enumerate().map(|(i, e)| (i as u64, e)).collect();
        refs.reverse(); // any order
        let (baseline, candidate) = (Policy::default_policy(), stricter());
        let mut seen = Vec::new();
        let folded = backtest_customer(
            &mut refs,
            &baseline,
            &candidate,
            retention_for(&baseline, &candidate),
            Period::default(),
            |r| seen.push((r.event.event_id.clone(), r.baseline.verdict, r.candidate.verdict)),
        );
        assert_eq!(folded, 6);
        assert_eq!(
            seen,
            vec![
                ("s1".to_owned(), Verdict::Allow, Verdict::Allow),
                ("s2".to_owned(), Verdict::Allow, Verdict::Defer),
                ("a3".to_owned(), Verdict::Allow, Verdict::Defer),
                ("s4".to_owned(), Verdict::Defer, Verdict::Defer),
            ]
        );
        // A period keeps only the outreach inside it (but folds everything).
        let mut only = Vec::new();
        backtest_customer(
            &mut refs,
            &baseline,
            &candidate,
            retention_for(&baseline, &candidate),
            Period {
                from: Some(day(1)),
                to: Some(day(1)),
            },
            |r| only.push(r.event.event_id.clone()),
        );
        assert_eq!(only, vec!["s2".to_owned()]);
    }

    #[test]
    fn counterfactual_history_leaves_out_what_the_candidate_blocked() {
        let t0 = Timestamp::parse_rfc3339("2026-11-02T10:00:00Z").unwrap();
        let day = |n: i64| t0.saturating_add(Span(n * DAY.0));
        let events = [
            ev(
                "consent",
                day(-30),
                EventKind::ConsentChanged {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    granted: true,
                    expires_at: None,
                    proof: "form".into(),
                },
            ),
            sent("s1", day(0), None),
            sent("s2", day(1), None),
            sent("s3", day(7).saturating_add(Span(3_600_000)), None),
        ];
        let (baseline, candidate) = (Policy::default_policy(), stricter());
        let run = |reading| {
            let mut refs: Vec<(u64, &Event)> =
                events.iter().enumerate().map(|(i, e)| (i as u64, e)).collect();
            let mut seen = Vec::new();
            backtest_customer_as(
                &mut refs,
                &baseline,
                &candidate,
                retention_for(&baseline, &candidate),
                Period::default(),
                reading,
                |r| seen.push(r.candidate.verdict),
            );
            seen
        };
        // As it happened, s2 (day 1) still counts on day 7: one email in the week.
        assert_eq!(
            run(Reading::AsHappened),
            vec![Verdict::Allow, Verdict::Defer, Verdict::Defer]
        );
        // The candidate would not have sent s2, and s1 has left the week.
        assert_eq!(
            run(Reading::Counterfactual),
            vec![Verdict::Allow, Verdict::Defer, Verdict::Allow]
        );
    }
}

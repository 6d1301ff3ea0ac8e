//! What-if: re-deciding the outreach a customer actually got under two policies.
//!
//! History is taken as it happened: every recorded outreach is re-decided as of the
//! instant it occurred, on the customer's state just before it, and then folded in
//! whatever either policy says. So an outreach the candidate would have blocked still
//! counts in later caps (the other reading, "as if the candidate had been in force",
//! would need to invent what callers did after a refusal).
//!
//! Pure, like the rest of the core: the caller reads the log and aggregates.

use std::collections::HashSet;

use crate::decide::{Decision, Proposal, decide};
use crate::event::{Event, EventKind};
use crate::policy::Policy;
use crate::state::{CustomerState, Retention, decision_hash};
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
    mut visit: impl FnMut(Redecided<'a>),
) -> usize {
    events.sort_by_key(|(position, e)| (e.occurred_at, *position));
    let authorized: HashSet<u32> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            EventKind::OutreachAuthorized { decision_id, .. } => Some(decision_hash(decision_id)),
            _ => None,
        })
        .collect();
    let mut state = CustomerState::new();
    for (_, event) in events.iter() {
        if period.contains(event.occurred_at)
            && let Some(proposal) = outreach(event, &authorized)
        {
            let at = event.occurred_at;
            visit(Redecided {
                event,
                baseline: decide(&state, baseline, &proposal, at),
                candidate: decide(&state, candidate, &proposal, at),
                proposal,
            });
        }
        state.apply(event, retention);
    }
    events.len()
}

/// The proposal an outreach event stands for, unless it is the report of an outreach
/// tact authorized (counted once, as the authorization).
fn outreach(event: &Event, authorized: &HashSet<u32>) -> Option<Proposal> {
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
            decision_id,
        } => {
            if decision_id
                .as_deref()
                .is_some_and(|d| !d.is_empty() && authorized.contains(&decision_hash(d)))
            {
                return None;
            }
            (*channel, *purpose, campaign, event.source.as_str())
        }
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
        assert_eq!(folded, 5);
        assert_eq!(
            seen,
            vec![
                ("s1".to_owned(), Verdict::Allow, Verdict::Allow),
                ("s2".to_owned(), Verdict::Allow, Verdict::Defer),
                ("a3".to_owned(), Verdict::Allow, Verdict::Defer),
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
}

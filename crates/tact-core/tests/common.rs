//! A small vocabulary for writing customer histories in tests.
#![allow(dead_code)]

use tact_core::*;

/// Wednesday 2026-11-18 10:00 UTC (10:00 in London).
pub fn wed_10am() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-18T10:00:00Z").unwrap()
}

pub fn t(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

pub fn mins(n: i64) -> Span {
    Span(n * MINUTE.0)
}
pub fn hours(n: i64) -> Span {
    Span(n * HOUR.0)
}
pub fn days(n: i64) -> Span {
    Span(n * DAY.0)
}

/// Builds one customer's events.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn at(mut self, at: Timestamp, kind: EventKind) -> Self {
        let n = self.events.len();
        self.events.push(Event {
            event_id: format!("e{n}"),
            customer_id: "c1".into(),
            occurred_at: at,
            source: "test".into(),
            kind,
        });
        self
    }

    /// A copy with one more event.
    pub fn clone_with(&self, at: Timestamp, kind: EventKind) -> Self {
        History {
            events: self.events.clone(),
        }
        .at(at, kind)
    }

    pub fn consent(self, at: Timestamp, channel: Channel, purpose: Purpose, granted: bool) -> Self {
        self.at(
            at,
            EventKind::ConsentChanged {
                channel,
                purpose,
                granted,
                expires_at: None,
                proof: "form".into(),
            },
        )
    }

    /// Consent to marketing and sales on email, SMS, call and meetings, long ago.
    pub fn opted_in(mut self, at: Timestamp) -> Self {
        for c in [Channel::Email, Channel::Sms, Channel::Call, Channel::SalesMeeting] {
            for p in [Purpose::Marketing, Purpose::Sales] {
                self = self.consent(at, c, p, true);
            }
        }
        self
    }

    pub fn page(self, at: Timestamp, category: &str) -> Self {
        self.at(
            at,
            EventKind::PageViewed {
                url: format!("/{category}"),
                category: category.into(),
            },
        )
    }

    pub fn sent(self, at: Timestamp, channel: Channel, purpose: Purpose) -> Self {
        self.at(
            at,
            EventKind::OutreachSent {
                channel,
                purpose,
                campaign: "spring".into(),
                decision_id: None,
            },
        )
    }

    pub fn engaged(self, at: Timestamp, channel: Channel, engagement: Engagement) -> Self {
        self.at(at, EventKind::OutreachEngaged { channel, engagement })
    }

    pub fn state(&self, policy: &Policy) -> CustomerState {
        let mut s = CustomerState::new();
        for e in &self.events {
            s.apply(e, policy.retention());
        }
        s
    }
}

pub fn proposal(channel: Channel, purpose: Purpose) -> Proposal {
    Proposal {
        customer_id: "c1".into(),
        channel,
        purpose,
        campaign_id: "spring".into(),
        requested_by: "crm".into(),
    }
}

/// Decides, and checks the DEFER honesty promise on the way.
pub fn check(h: &History, channel: Channel, purpose: Purpose, at: Timestamp) -> Decision {
    let policy = Policy::default_policy();
    let state = h.state(&policy);
    let d = decide(&state, &policy, &proposal(channel, purpose), at);
    if d.verdict == Verdict::Defer {
        let nb = d.not_before.expect("DEFER carries not_before");
        assert!(nb > at, "not_before {nb} must be after {at}");
        let again = decide(&state, &policy, &proposal(channel, purpose), nb);
        assert_ne!(
            again.verdict,
            Verdict::Defer,
            "asked again at not_before {nb}: {again:#?}"
        );
    }
    for r in &d.reasons {
        assert!(!r.message().is_empty());
    }
    d
}

pub fn fired(d: &Decision, rule: &str) -> Option<Effect> {
    d.reasons.iter().find(|r| &*r.rule_id == rule).map(|r| r.effect)
}

/// `text` (a policy) with its `[[rule]]`s in the order `order` gives (indexes into the
/// file's rules).
pub fn reorder_rules(text: &str, order: &[usize]) -> String {
    let mut doc: toml::Table = toml::from_str(text).unwrap();
    let Some(toml::Value::Array(rules)) = doc.remove("rule") else {
        panic!("a policy has rules")
    };
    let shuffled: Vec<toml::Value> = order.iter().map(|i| rules[*i].clone()).collect();
    doc.insert("rule".into(), toml::Value::Array(shuffled));
    toml::to_string(&doc).unwrap()
}

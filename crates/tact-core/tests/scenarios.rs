//! Table-driven scenarios against the shipped default policy: one per story, one per rule.

mod common;

use common::*;
use tact_core::*;

use Channel::*;
use Purpose::*;

struct Case {
    name: &'static str,
    history: History,
    channel: Channel,
    purpose: Purpose,
    at: Timestamp,
    verdict: Verdict,
    not_before: Option<Timestamp>,
    /// Rules that must have fired, with their effect.
    fired: &'static [(&'static str, Effect)],
    /// Channels that must be suggested as alternatives.
    suggests: &'static [Channel],
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let d = check(&c.history, c.channel, c.purpose, c.at);
        let mut problems = Vec::new();
        if d.verdict != c.verdict {
            problems.push(format!("verdict {:?}, expected {:?}", d.verdict, c.verdict));
        }
        if c.not_before.is_some() && d.not_before != c.not_before {
            problems.push(format!(
                "not_before {:?}, expected {:?}",
                d.not_before, c.not_before
            ));
        }
        for (rule, effect) in c.fired {
            if fired(&d, rule) != Some(*effect) {
                problems.push(format!("rule {rule} should have fired with {effect:?}"));
            }
        }
        for ch in c.suggests {
            if !d.alternatives.iter().any(|a| a.channel == *ch) {
                problems.push(format!("{ch} should be suggested"));
            }
        }
        if !problems.is_empty() {
            let msgs: Vec<String> = d
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.rule_id, r.message()))
                .collect();
            failures.push(format!(
                "{}: {}\n  reasons: {msgs:#?}\n  alternatives: {:?}",
                c.name,
                problems.join("; "),
                d.alternatives
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn now() -> Timestamp {
    wed_10am()
}

fn ago(s: Span) -> Timestamp {
    now().saturating_sub(s)
}

#[test]
fn stories() {
    let long_ago = ago(days(400));
    run(vec![
        Case {
            name: "sniper attack: price comparison, then a call 5 minutes later",
            history: History::new().opted_in(long_ago).page(ago(mins(5)), "compare"),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(ago(mins(5)).saturating_add(hours(48))),
            fired: &[("research-cooldown", Effect::Defer), ("consent", Effect::Allow)],
            suggests: &[Email],
        },
        Case {
            name: "misguided pursuit: white paper download, then a demo request next morning",
            history: History::new().opted_in(long_ago).at(
                ago(hours(17)),
                EventKind::ContentDownloaded {
                    asset: "white-paper.pdf".into(),
                },
            ),
            channel: SalesMeeting,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[
                ("earned-meeting", Effect::Deny),
                ("research-cooldown", Effect::Defer),
            ],
            suggests: &[Email],
        },
        Case {
            name: "the same customer after they ask for a demo",
            history: History::new()
                .opted_in(long_ago)
                .at(
                    ago(hours(17)),
                    EventKind::ContentDownloaded {
                        asset: "white-paper.pdf".into(),
                    },
                )
                .at(
                    ago(mins(30)),
                    EventKind::ContactRequested {
                        channel: SalesMeeting,
                        topic: "demo".into(),
                    },
                ),
            channel: SalesMeeting,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("earned-meeting", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "unsubscribe, then a marketing email",
            history: History::new()
                .consent(long_ago, Email, Marketing, true)
                .at(
                    ago(days(20)),
                    EventKind::Purchase {
                        order_id: "o1".into(),
                    },
                )
                .consent(ago(days(1)), Email, Marketing, false),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "unsubscribe, then an order confirmation",
            history: History::new().consent(long_ago, Email, Marketing, true).consent(
                ago(days(1)),
                Email,
                Marketing,
                false,
            ),
            channel: Email,
            purpose: Transactional,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("transactional", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "a 9th touch in 30 days",
            history: (0..8)
                .fold(History::new().opted_in(long_ago), |h, i| {
                    // Two touches every 7 days, alternating channels, within every per-channel cap.
                    let ch = [Email, Sms, Email, DirectMail][i % 4];
                    h.sent(ago(days(28 - 3 * i as i64)), ch, Marketing)
                })
                .engaged(ago(days(1)), Email, Engagement::Clicked),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(ago(days(28)).saturating_add(days(30))),
            fired: &[("cap-all-channels", Effect::Defer)],
            suggests: &[],
        },
        Case {
            name: "a call at 23:00 local time",
            history: History::new().opted_in(long_ago).at(
                long_ago,
                EventKind::PreferencesChanged {
                    time_zone: Some("America/New_York".into()),
                    accepted_channels: None,
                    max_contacts: None,
                },
            ),
            channel: Call,
            purpose: Sales,
            // Wednesday 23:00 in New York.
            at: t("2026-11-19T04:00:00Z"),
            verdict: Verdict::Defer,
            // Thursday 08:00 in New York.
            not_before: Some(t("2026-11-19T13:00:00Z")),
            fired: &[("quiet-hours", Effect::Defer)],
            suggests: &[],
        },
    ]);
}

#[test]
fn rules() {
    let long_ago = ago(days(400));
    let dnc = |_since: Timestamp, until: Option<Timestamp>| EventKind::DoNotContact {
        reason: "asked".into(),
        until,
    };
    let inbound = |channel| EventKind::InboundMessage {
        channel,
        topic: "billing question".into(),
    };
    run(vec![
        Case {
            name: "consent: none at all",
            history: History::new(),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "consent: a grant on another channel is suggested",
            history: History::new().consent(long_ago, Email, Sales, true),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[Email],
        },
        Case {
            name: "consent: expired grant does not count",
            history: History::new().at(
                long_ago,
                EventKind::ConsentChanged {
                    channel: Email,
                    purpose: Sales,
                    granted: true,
                    expires_at: Some(ago(days(1))),
                    proof: "form".into(),
                },
            ),
            channel: Email,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "consent: a grant after a withdrawal counts again",
            history: History::new().consent(long_ago, Email, Marketing, false).consent(
                ago(days(2)),
                Email,
                Marketing,
                true,
            ),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("consent", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "consent: a withdrawal at the same instant as a grant wins",
            history: History::new()
                .consent(ago(days(2)), Email, Marketing, false)
                .consent(ago(days(2)), Email, Marketing, true),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "soft opt-in: a recent customer may get marketing email",
            history: History::new().at(
                ago(days(100)),
                EventKind::Purchase {
                    order_id: "o1".into(),
                },
            ),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("consent", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "soft opt-in: not for SMS",
            history: History::new().at(
                ago(days(100)),
                EventKind::Purchase {
                    order_id: "o1".into(),
                },
            ),
            channel: Sms,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "soft opt-in: not after 24 months",
            history: History::new().at(
                ago(days(800)),
                EventKind::Purchase {
                    order_id: "o1".into(),
                },
            ),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("consent", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "contact request: the customer asked for a call",
            history: History::new().at(
                ago(days(1)),
                EventKind::ContactRequested {
                    channel: Call,
                    topic: "mortgage".into(),
                },
            ),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("consent", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "service reply: allowed within 14 days of the customer's message, despite do-not-contact",
            history: History::new()
                .at(long_ago, dnc(long_ago, None))
                .at(ago(days(2)), inbound(Email)),
            channel: Email,
            purpose: Service,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("service-reply", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "service: unsolicited service is held back by do-not-contact",
            history: History::new()
                .at(long_ago, dnc(long_ago, None))
                .at(ago(days(20)), inbound(Email)),
            channel: Email,
            purpose: Service,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("do-not-contact", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "transactional: allowed under do-not-contact and without consent",
            history: History::new().at(long_ago, dnc(long_ago, None)),
            channel: Sms,
            purpose: Transactional,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("transactional", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "do-not-contact: blocks marketing while in force",
            history: History::new().opted_in(long_ago).at(
                ago(days(3)),
                dnc(ago(days(3)), Some(now().saturating_add(days(10)))),
            ),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("do-not-contact", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "do-not-contact: over once `until` has passed",
            history: History::new()
                .opted_in(long_ago)
                .at(ago(days(30)), dnc(ago(days(30)), Some(ago(days(1))))),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "complaint cool-off: 30 days after a complaint",
            history: History::new().opted_in(long_ago).at(
                ago(days(30)),
                EventKind::Complaint {
                    channel: Some(Call),
                    reason: "pushy".into(),
                },
            ),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("complaint-cool-off", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "complaint cool-off: over after 90 days",
            history: History::new().opted_in(long_ago).at(
                ago(days(91)),
                EventKind::Complaint {
                    channel: None,
                    reason: "pushy".into(),
                },
            ),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "research cooldown: the customer asked for a call after researching",
            history: History::new()
                .opted_in(long_ago)
                .page(ago(hours(2)), "pricing")
                .at(
                    ago(hours(1)),
                    EventKind::ContactRequested {
                        channel: Call,
                        topic: "quote".into(),
                    },
                ),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "research cooldown: email stays welcome",
            history: History::new().opted_in(long_ago).page(ago(mins(5)), "compare"),
            channel: Email,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "research cooldown: a blog page is not research",
            history: History::new().opted_in(long_ago).page(ago(mins(5)), "blog"),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "earned meeting: two engagements earn it",
            history: History::new()
                .opted_in(long_ago)
                .engaged(ago(days(10)), Email, Engagement::Clicked)
                .engaged(ago(days(3)), Email, Engagement::Replied),
            channel: SalesMeeting,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[("earned-meeting", Effect::Allow)],
            suggests: &[],
        },
        Case {
            name: "earned meeting: opens do not count",
            history: History::new()
                .opted_in(long_ago)
                .engaged(ago(days(10)), Email, Engagement::Opened)
                .engaged(ago(days(3)), Email, Engagement::Replied),
            channel: SalesMeeting,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("earned-meeting", Effect::Deny)],
            suggests: &[Email],
        },
        Case {
            name: "cap: one call a week",
            history: History::new().opted_in(long_ago).sent(ago(days(2)), Call, Sales),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(ago(days(2)).saturating_add(days(7))),
            fired: &[("cap-call", Effect::Defer)],
            suggests: &[Email],
        },
        Case {
            name: "cap: service and transactional messages do not count",
            history: History::new()
                .opted_in(long_ago)
                .sent(ago(days(3)), Call, Service)
                .sent(ago(days(2)), Call, Transactional),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "cap: three emails a week",
            history: History::new()
                .opted_in(long_ago)
                .sent(ago(days(6)), Email, Marketing)
                .sent(ago(days(4)), Email, Marketing)
                .sent(ago(days(1)), Email, Sales),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(ago(days(6)).saturating_add(days(7))),
            fired: &[("cap-email", Effect::Defer)],
            suggests: &[],
        },
        Case {
            name: "cap and quiet hours together: a cap that ends on Saturday night waits for Monday",
            // The call leaves its 7-day window on Saturday 2026-11-21 22:00 London time; Sunday is closed.
            history: History::new()
                .opted_in(long_ago)
                .sent(t("2026-11-14T22:00:00Z"), Call, Sales),
            channel: Call,
            purpose: Sales,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(t("2026-11-23T08:00:00Z")),
            fired: &[("cap-call", Effect::Defer), ("quiet-hours", Effect::Defer)],
            suggests: &[],
        },
        Case {
            name: "quiet hours: no calls on Sunday",
            history: History::new().opted_in(long_ago),
            channel: Call,
            purpose: Sales,
            at: t("2026-11-22T12:00:00Z"),
            verdict: Verdict::Defer,
            not_before: Some(t("2026-11-23T08:00:00Z")),
            fired: &[("quiet-hours", Effect::Defer)],
            suggests: &[Email],
        },
        Case {
            name: "quiet hours: a transactional SMS at 23:00 is exempt",
            history: History::new(),
            channel: Sms,
            purpose: Transactional,
            at: t("2026-11-18T23:00:00Z"),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "fatigue: three unanswered marketing emails pause the channel",
            history: History::new()
                .opted_in(long_ago)
                .sent(ago(days(24)), Email, Marketing)
                .sent(ago(days(16)), Email, Marketing)
                .sent(ago(days(8)), Email, Marketing),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(ago(days(8)).saturating_add(days(30))),
            fired: &[("fatigue", Effect::Defer)],
            suggests: &[],
        },
        Case {
            name: "fatigue: over when the customer engages",
            history: History::new()
                .opted_in(long_ago)
                .sent(ago(days(24)), Email, Marketing)
                .sent(ago(days(16)), Email, Marketing)
                .sent(ago(days(8)), Email, Marketing)
                .engaged(ago(days(1)), Email, Engagement::Clicked),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Allow,
            not_before: None,
            fired: &[],
            suggests: &[],
        },
        Case {
            name: "preferences: a channel the customer did not accept",
            history: History::new().opted_in(long_ago).at(
                ago(days(5)),
                EventKind::PreferencesChanged {
                    time_zone: None,
                    accepted_channels: Some(vec![Email]),
                    max_contacts: None,
                },
            ),
            channel: Call,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("customer-preferences", Effect::Deny)],
            suggests: &[Email],
        },
        Case {
            name: "preferences: the customer's own limit beats the policy",
            history: History::new()
                .opted_in(long_ago)
                .at(
                    ago(days(20)),
                    EventKind::PreferencesChanged {
                        time_zone: None,
                        accepted_channels: None,
                        max_contacts: Some(ContactLimit {
                            max: 1,
                            window: days(30),
                        }),
                    },
                )
                .sent(ago(days(10)), Email, Marketing),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Defer,
            not_before: Some(ago(days(10)).saturating_add(days(30))),
            fired: &[("customer-preferences", Effect::Defer)],
            suggests: &[],
        },
    ]);
}

#[test]
fn an_authorized_outreach_reported_as_sent_counts_once() {
    let h = History::new()
        .opted_in(ago(days(400)))
        .at(
            ago(days(6)),
            EventKind::OutreachAuthorized {
                decision_id: "d1".into(),
                channel: Email,
                purpose: Marketing,
                campaign: "spring".into(),
                requested_by: "crm".into(),
            },
        )
        .at(
            ago(days(6)),
            EventKind::OutreachSent {
                channel: Email,
                purpose: Marketing,
                campaign: "spring".into(),
                decision_id: Some("d1".into()),
            },
        )
        .sent(ago(days(3)), Email, Marketing);
    // Two touches, not three: a third email is still allowed this week.
    assert_eq!(check(&h, Email, Marketing, now()).verdict, Verdict::Allow);
    let h = h.sent(ago(days(1)), Email, Marketing);
    assert_eq!(check(&h, Email, Marketing, now()).verdict, Verdict::Defer);
}

#[test]
fn decisions_as_of_a_past_instant_ignore_later_events() {
    let h = History::new()
        .opted_in(ago(days(400)))
        .consent(ago(days(1)), Email, Marketing, false);
    assert_eq!(check(&h, Email, Marketing, now()).verdict, Verdict::Deny);
    assert_eq!(check(&h, Email, Marketing, ago(days(2))).verdict, Verdict::Allow);
}

#[test]
fn messages_read_like_sentences() {
    let h = History::new()
        .opted_in(ago(days(400)))
        .page(ago(mins(5)), "compare");
    let d = check(&h, Call, Sales, now());
    let msg = d
        .reasons
        .iter()
        .find(|r| &*r.rule_id == "research-cooldown")
        .unwrap()
        .message();
    assert!(
        msg.starts_with("Customer compared prices 5 minutes ago; calls are held for 48 h after research"),
        "{msg}"
    );
    assert!(msg.contains("An email acknowledgement is welcome now."), "{msg}");
}

#[test]
fn quiet_hours_say_the_customers_local_time() {
    let h = History::new().opted_in(ago(days(400))).at(
        ago(days(400)),
        EventKind::PreferencesChanged {
            time_zone: Some("America/New_York".into()),
            accepted_channels: None,
            max_contacts: None,
        },
    );
    // Wednesday 23:05 in New York.
    let d = check(&h, Call, Sales, t("2026-11-19T04:05:00Z"));
    let msg = d
        .reasons
        .iter()
        .find(|r| &*r.rule_id == "quiet-hours")
        .unwrap()
        .message();
    assert!(
        msg.starts_with(
            "It is Wed 23:05 (America/New_York) for the customer; calls only 08:00-21:00 on open days."
        ),
        "{msg}"
    );
}

#[test]
fn alternatives_are_only_what_tact_would_accept() {
    // Research holds the call back and suggests email, but without email consent the
    // suggestion would be denied, so it is not made.
    let h = History::new()
        .consent(ago(days(400)), Call, Sales, true)
        .page(ago(mins(5)), "compare");
    let d = check(&h, Call, Sales, now());
    assert_eq!(d.verdict, Verdict::Defer);
    assert!(
        d.alternatives.iter().all(|a| a.channel == Call),
        "{:?}",
        d.alternatives
    );
    let h = h.consent(ago(days(400)), Email, Sales, true);
    let d = check(&h, Call, Sales, now());
    assert!(
        d.alternatives
            .iter()
            .any(|a| a.channel == Email && a.not_before.is_none())
    );
}

/// Issue #9: `do-not-contact` listed before `service-reply` used to deny the reply to
/// the customer's own message; the exemption is known before any rule is looked at.
#[test]
fn do_not_contact_before_service_reply_still_lets_the_reply_through() {
    let text = r#"
version = "dnc-first"
default_time_zone = "Europe/London"

[[rule]]
id = "do-not-contact"
type = "do_not_contact"
purposes = ["marketing", "sales", "service"]

[[rule]]
id = "service-reply"
type = "service_reply"
purposes = ["service"]
window = "14d"
"#;
    let policy = Policy::from_toml_str(text).unwrap();
    let h = History::new()
        .at(
            ago(days(30)),
            EventKind::DoNotContact {
                reason: "asked".into(),
                until: None,
            },
        )
        .at(
            ago(days(1)),
            EventKind::InboundMessage {
                channel: Email,
                topic: "billing question".into(),
            },
        );
    let state = h.state(&policy);
    let d = decide(&state, &policy, &proposal(Email, Service), now());
    assert_eq!(d.verdict, Verdict::Allow, "{d:#?}");
    assert_eq!(fired(&d, "service-reply"), Some(Effect::Allow));
    assert_eq!(fired(&d, "do-not-contact"), None);
    // Without the inbound message, do-not-contact holds the unsolicited service message.
    let unsolicited = History::new().at(
        ago(days(30)),
        EventKind::DoNotContact {
            reason: "asked".into(),
            until: None,
        },
    );
    let d = decide(
        &unsolicited.state(&policy),
        &policy,
        &proposal(Email, Service),
        now(),
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(fired(&d, "do-not-contact"), Some(Effect::Deny));
    // And the same answers with the rules the other way round.
    let swapped = Policy::from_toml_str(&reorder_rules(text, &[1, 0])).unwrap();
    assert_eq!(
        decide(&state, &swapped, &proposal(Email, Service), now()).verdict,
        Verdict::Allow
    );
}

/// Two quiet-hours rules on one channel: the DEFER is to the first minute open in both,
/// whichever comes first in the file; rules that are never open together deny.
#[test]
fn several_quiet_hours_rules_defer_to_a_time_open_in_all() {
    let text = |second: &str| {
        format!(
            r#"
version = "two-quiet"
default_time_zone = "Europe/London"

[[rule]]
id = "quiet-a"
type = "quiet_hours"
channels = ["call"]
start = "08:00"
end = "21:00"

[[rule]]
id = "quiet-b"
type = "quiet_hours"
channels = ["call"]
{second}
"#
        )
    };
    let overlapping = text("start = \"19:00\"\nend = \"22:00\"\nclosed_days = [\"wed\"]");
    let disjoint = text("start = \"06:00\"\nend = \"07:00\"");
    let h = History::new();
    for order in [[0, 1], [1, 0]] {
        let policy = Policy::from_toml_str(&reorder_rules(&overlapping, &order)).unwrap();
        let d = decide(&h.state(&policy), &policy, &proposal(Call, Service), now());
        assert_eq!(d.verdict, Verdict::Defer, "{d:#?}");
        // Wednesday is closed in quiet-b: Thursday 19:00 London.
        assert_eq!(d.not_before, Some(t("2026-11-19T19:00:00Z")));
        assert_eq!(fired(&d, "quiet-b"), Some(Effect::Defer));
        let policy = Policy::from_toml_str(&reorder_rules(&disjoint, &order)).unwrap();
        let d = decide(&h.state(&policy), &policy, &proposal(Call, Service), now());
        assert_eq!(d.verdict, Verdict::Deny, "{d:#?}");
    }
}

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
            name: "do-not-contact: a later, shorter request does not lift one for good",
            history: History::new()
                .opted_in(long_ago)
                .at(ago(days(10)), dnc(ago(days(10)), None))
                .at(ago(days(9)), dnc(ago(days(9)), Some(ago(days(8))))),
            channel: Email,
            purpose: Marketing,
            at: now(),
            verdict: Verdict::Deny,
            not_before: None,
            fired: &[("do-not-contact", Effect::Deny)],
            suggests: &[],
        },
        Case {
            name: "do-not-contact: a later request ending sooner does not end a longer one",
            history: History::new()
                .opted_in(long_ago)
                .at(
                    ago(days(3)),
                    dnc(ago(days(3)), Some(now().saturating_add(days(30)))),
                )
                .at(ago(hours(1)), dnc(ago(hours(1)), Some(ago(mins(29))))),
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
            // The last became unanswered when its 3-day reply window passed.
            not_before: Some(ago(days(5)).saturating_add(days(30))),
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

/// A history with one authorized marketing email (decision `d1`, 6 days ago), plus
/// `reports`: outreach reported sent at the given times quoting `d1`.
fn authorized_then_reported(reports: &[(Timestamp, Channel, Purpose)]) -> History {
    let mut h = History::new().opted_in(ago(days(400))).at(
        ago(days(6)),
        EventKind::OutreachAuthorized {
            decision_id: "d1".into(),
            channel: Email,
            purpose: Marketing,
            campaign: "spring".into(),
            requested_by: "crm".into(),
        },
    );
    for &(at, channel, purpose) in reports {
        h = h.at(
            at,
            EventKind::OutreachSent {
                channel,
                purpose,
                campaign: "spring".into(),
                decision_id: Some("d1".into()),
            },
        );
    }
    h
}

#[test]
fn one_authorization_absorbs_one_report_not_every_send_quoting_its_id() {
    // Email cap: 3 a week. The authorization and its report are one touch.
    let one = authorized_then_reported(&[(ago(days(6)), Email, Marketing)]);
    let d = check(&one, Email, Marketing, now());
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    // Three more sends quoting the same decision are three more touches: four in all.
    let four = authorized_then_reported(&[
        (ago(days(6)), Email, Marketing),
        (ago(days(5)), Email, Marketing),
        (ago(days(4)), Email, Marketing),
        (ago(days(3)), Email, Marketing),
    ]);
    let d = check(&four, Email, Marketing, now());
    assert_eq!(d.verdict, Verdict::Defer, "{d:?}");
    assert_eq!(fired(&d, "cap-email"), Some(Effect::Defer), "{d:?}");
}

#[test]
fn a_report_on_another_channel_or_purpose_is_not_absorbed_by_the_authorization() {
    // Call cap: 1 a week. A sales call quoting an email's decision is a call all the same.
    let h = authorized_then_reported(&[(ago(days(6)), Email, Marketing), (ago(days(2)), Call, Sales)]);
    let d = check(&h, Call, Sales, now());
    assert_eq!(d.verdict, Verdict::Defer, "{d:?}");
    assert_eq!(fired(&d, "cap-call"), Some(Effect::Defer), "{d:?}");
    // A call that is the only report of the email's decision counts too.
    let h = authorized_then_reported(&[(ago(days(2)), Call, Sales)]);
    let d = check(&h, Call, Sales, now());
    assert_eq!(d.verdict, Verdict::Defer, "{d:?}");
    // And so does a sales email quoting a marketing email's decision (a different
    // outreach): with the authorization, two email touches; two more make four.
    let h = authorized_then_reported(&[
        (ago(days(5)), Email, Sales),
        (ago(days(4)), Email, Marketing),
        (ago(days(3)), Email, Marketing),
    ]);
    let d = check(&h, Email, Marketing, now());
    assert_eq!(d.verdict, Verdict::Defer, "{d:?}");
}

/// Found probing a release build: a call made two hours after it was authorized, and
/// reported quoting the decision, counted at the authorization's instant, so the
/// "1 call a week" cap had room again two hours before a week had passed since the
/// call (and without the decision id, the same report gave DEFER).
#[test]
fn an_authorized_outreach_made_later_counts_from_when_it_was_made() {
    let authorized_at = ago(days(7)).saturating_sub(hours(1));
    let made_at = ago(days(7)).saturating_add(hours(1));
    let call = |decision_id: Option<&str>| EventKind::OutreachSent {
        channel: Call,
        purpose: Sales,
        campaign: "spring".into(),
        decision_id: decision_id.map(Into::into),
    };
    let base = History::new().consent(ago(days(400)), Call, Sales, true).at(
        authorized_at,
        EventKind::OutreachAuthorized {
            decision_id: "d1".into(),
            channel: Call,
            purpose: Sales,
            campaign: "spring".into(),
            requested_by: "dialer".into(),
        },
    );
    // Not reported (yet): the authorization holds its place, and its week is over.
    assert_eq!(check(&base, Call, Sales, now()).verdict, Verdict::Allow);
    for h in [
        base.clone().at(made_at, call(Some("d1"))),
        base.clone().at(made_at, call(None)),
    ] {
        let d = check(&h, Call, Sales, now());
        assert_eq!(d.verdict, Verdict::Defer, "{d:?}");
        assert_eq!(d.not_before, Some(made_at.saturating_add(days(7))), "{d:?}");
    }
    // Still one call: between the two instants (the authorization's week, as known
    // then), and a week after the later one.
    let h = base.at(made_at, call(Some("d1")));
    let policy = Policy::default_policy();
    let d = decide(&h.state(&policy), &policy, &proposal(Call, Sales), ago(days(7)));
    assert_eq!(d.verdict, Verdict::Defer, "{d:?}");
    assert_eq!(d.not_before, Some(authorized_at.saturating_add(days(7))), "{d:?}");
    assert_eq!(
        check(&h, Call, Sales, made_at.saturating_add(days(7))).verdict,
        Verdict::Allow
    );
}

#[test]
fn which_report_an_authorization_absorbs_does_not_depend_on_arrival_order() {
    let reports = [
        (ago(days(6)), Email, Marketing),
        (ago(days(5)), Email, Marketing),
        (ago(days(5)), Call, Sales),
    ];
    let h = authorized_then_reported(&reports);
    let policy = Policy::default_policy();
    let forward = h.state(&policy);
    let mut backward = CustomerState::new();
    for e in h.events.iter().rev() {
        backward.apply(e, policy.retention());
    }
    assert_eq!(forward, backward);
    for at in [ago(days(5)), now()] {
        for (channel, purpose) in [(Email, Marketing), (Call, Sales)] {
            let a = decide(&forward, &policy, &proposal(channel, purpose), at);
            let b = decide(&backward, &policy, &proposal(channel, purpose), at);
            assert_eq!(a, b);
        }
    }
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
    // Found probing a release build: a do-not-contact made after the customer's
    // message (or at its instant) was overridden by the reply exemption for 14 days,
    // on every channel. The later statement holds; a message after it exempts again.
    let message = |h: History, at| {
        h.at(
            at,
            EventKind::InboundMessage {
                channel: Email,
                topic: "refund".into(),
            },
        )
    };
    let dnc = |h: History, at| {
        h.at(
            at,
            EventKind::DoNotContact {
                reason: "leave me alone".into(),
                until: None,
            },
        )
    };
    let cases = [
        (
            "message then do-not-contact",
            dnc(message(History::new(), ago(days(2))), ago(days(1))),
            Verdict::Deny,
        ),
        (
            "both at one instant",
            dnc(message(History::new(), ago(days(1))), ago(days(1))),
            Verdict::Deny,
        ),
        (
            "message, do-not-contact, message",
            message(
                dnc(message(History::new(), ago(days(3))), ago(days(2))),
                ago(days(1)),
            ),
            Verdict::Allow,
        ),
        (
            "an old do-not-contact, then a message, then a short one that ended",
            History::new()
                .at(
                    ago(days(30)),
                    EventKind::DoNotContact {
                        reason: "asked".into(),
                        until: None,
                    },
                )
                .at(
                    ago(days(3)),
                    EventKind::InboundMessage {
                        channel: Email,
                        topic: "refund".into(),
                    },
                )
                .at(
                    ago(days(2)),
                    EventKind::DoNotContact {
                        reason: "a day".into(),
                        until: Some(ago(days(1))),
                    },
                ),
            Verdict::Allow,
        ),
    ];
    for (name, h, verdict) in cases {
        for policy in [&policy, &swapped] {
            let d = decide(&h.state(policy), policy, &proposal(Call, Service), now());
            assert_eq!(d.verdict, verdict, "{name}: {d:#?}");
        }
    }
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

/// Consent and fatigue only, so fatigue is what the tests see.
const FATIGUE_ONLY: &str = r#"
version = "fatigue-only"
default_time_zone = "Europe/London"

[[rule]]
id = "consent"
type = "consent"
purposes = ["marketing", "sales"]

[[rule]]
id = "fatigue"
type = "fatigue"
purposes = ["marketing"]
unanswered = 3
within = "30d"
pause = "30d"
"#;

fn decide_fatigue(h: &History, at: Timestamp) -> Decision {
    let policy = Policy::from_toml_str(FATIGUE_ONLY).unwrap();
    let state = h.state(&policy);
    let d = decide(&state, &policy, &proposal(Email, Marketing), at);
    if let Some(nb) = d.not_before {
        let again = decide(&state, &policy, &proposal(Email, Marketing), nb);
        assert_ne!(again.verdict, Verdict::Defer, "honest DEFER: {d:#?}\n{again:#?}");
    }
    d
}

/// Issue #9: three emails authorized within a minute had no time to be answered.
#[test]
fn fatigue_waits_for_the_reply_window() {
    let t0 = ago(days(10));
    let h = (0..3).fold(History::new().opted_in(ago(days(400))), |h, i| {
        h.at(
            t0.saturating_add(Span(i * 20_000)),
            EventKind::OutreachAuthorized {
                decision_id: format!("d{i}"),
                channel: Email,
                purpose: Marketing,
                campaign: "c".into(),
                requested_by: "crm".into(),
            },
        )
    });
    let last = t0.saturating_add(Span(40_000));
    let d = decide_fatigue(&h, t0.saturating_add(MINUTE));
    assert_eq!(d.verdict, Verdict::Allow, "{d:#?}");
    assert_eq!(fired(&d, "fatigue"), None);
    // Still within the 3-day reply window (default).
    let d = decide_fatigue(&h, t0.saturating_add(days(3)));
    assert_eq!(d.verdict, Verdict::Allow, "{d:#?}");
    // The window passed without engagement: paused for 30 days from then.
    let unanswered_at = last.saturating_add(days(3));
    let d = decide_fatigue(&h, unanswered_at);
    assert_eq!(d.verdict, Verdict::Defer, "{d:#?}");
    assert_eq!(d.not_before, Some(unanswered_at.saturating_add(days(30))));
    assert_eq!(fired(&d, "fatigue"), Some(Effect::Defer));
    // An engagement on the channel lifts the pause.
    let engaged = h.clone_with(
        unanswered_at.saturating_add(days(1)),
        EventKind::OutreachEngaged {
            channel: Email,
            engagement: Engagement::Opened,
        },
    );
    let d = decide_fatigue(&engaged, unanswered_at.saturating_add(days(2)));
    assert_eq!(d.verdict, Verdict::Allow, "{d:#?}");
    // Engagement on another channel does not.
    let elsewhere = h.clone_with(
        unanswered_at.saturating_add(days(1)),
        EventKind::OutreachEngaged {
            channel: Sms,
            engagement: Engagement::Replied,
        },
    );
    let d = decide_fatigue(&elsewhere, unanswered_at.saturating_add(days(2)));
    assert_eq!(d.verdict, Verdict::Defer);
}

/// An `outreachUnanswered` event (ignored or bounced) counts at once, without waiting
/// for the reply window; a DEFER for another reason steps over a pause ahead.
#[test]
fn fatigue_counts_reported_non_responses_at_once() {
    let t0 = ago(days(2));
    let h = History::new()
        .opted_in(ago(days(400)))
        .sent(t0, Email, Marketing)
        .sent(t0.saturating_add(hours(1)), Email, Marketing)
        .sent(t0.saturating_add(hours(2)), Email, Marketing);
    for outcome in [NonResponse::Ignored, NonResponse::Bounced] {
        let reported_at = t0.saturating_add(hours(3));
        let reported = h.clone_with(
            reported_at,
            EventKind::OutreachUnanswered {
                channel: Email,
                outcome,
            },
        );
        let d = decide_fatigue(&reported, reported_at.saturating_add(MINUTE));
        assert_eq!(d.verdict, Verdict::Defer, "{outcome}: {d:#?}");
        assert_eq!(d.not_before, Some(reported_at.saturating_add(days(30))));
        // Reported on another channel: nothing yet.
        let other = h.clone_with(
            reported_at,
            EventKind::OutreachUnanswered {
                channel: Sms,
                outcome,
            },
        );
        assert_eq!(
            decide_fatigue(&other, reported_at.saturating_add(MINUTE)).verdict,
            Verdict::Allow
        );
    }
    // The default policy: the email cap (3 in 7 days) defers to a time when the three
    // emails will be unanswered, so the DEFER goes on to the end of that pause.
    let d = check(&h, Email, Marketing, t0.saturating_add(hours(3)));
    assert_eq!(d.verdict, Verdict::Defer, "{d:#?}");
    assert_eq!(fired(&d, "cap-email"), Some(Effect::Defer));
    assert_eq!(fired(&d, "fatigue"), Some(Effect::Defer));
    assert_eq!(
        d.not_before,
        Some(
            t0.saturating_add(hours(2))
                .saturating_add(days(3))
                .saturating_add(days(30))
        )
    );
}

/// A reply logged in the same millisecond as the message answers it, whatever their
/// event ids (found probing a release build: the answer depended on how the ids hashed).
#[test]
fn a_reply_at_the_instant_of_the_message_answers_it_whatever_the_ids() {
    let at = ago(days(1));
    let policy = Policy::default_policy();
    for n in 0..16 {
        let message = Event {
            event_id: format!("in-{n}"),
            customer_id: "c1".into(),
            occurred_at: at,
            source: "desk".into(),
            kind: EventKind::InboundMessage {
                channel: Email,
                topic: "refund".into(),
            },
        };
        let reply = Event {
            event_id: format!("reply-{n}"),
            kind: EventKind::OutreachSent {
                channel: Email,
                purpose: Service,
                campaign: String::new(),
                decision_id: None,
            },
            ..message.clone()
        };
        // An older message, answered too; and one two hours later, still open in half.
        let mut h = History::new().opted_in(ago(days(400)));
        h.events.extend([message, reply]);
        let d = check(&h, Email, Marketing, now());
        assert_eq!(fired(&d, "answer-first"), None, "{n}: {d:#?}");
        let view = customer_view(&h.state(&policy), &policy, now(), 10);
        assert!(view.open_inbound.is_empty(), "{n}: {:?}", view.open_inbound);
        let later = h.clone_with(
            at.saturating_add(hours(2)),
            EventKind::InboundMessage {
                channel: Sms,
                topic: "and?".into(),
            },
        );
        let d = check(&later, Email, Marketing, now());
        assert_eq!(fired(&d, "answer-first"), Some(Effect::Deny), "{n}: {d:#?}");
        let r = d.reasons.iter().find(|r| &*r.rule_id == "answer-first").unwrap();
        assert_eq!(
            r.detail,
            Detail::AwaitingAnswer {
                channel: Sms,
                ago: hours(22)
            },
            "{n}"
        );
        let view = customer_view(&later.state(&policy), &policy, now(), 10);
        assert_eq!(view.open_inbound.len(), 1, "{n}: {:?}", view.open_inbound);
    }
}

/// `answer-first` (shipped on): the customer's own message waits for an answer before
/// any marketing or sales; a service reply on any channel answers it.
#[test]
fn answer_first_holds_marketing_until_the_message_is_answered() {
    let asked = ago(days(2));
    let h = History::new().opted_in(ago(days(400))).at(
        asked,
        EventKind::InboundMessage {
            channel: Email,
            topic: "where is my order".into(),
        },
    );
    for (channel, purpose) in [(Email, Marketing), (Call, Sales), (Sms, Marketing)] {
        let d = check(&h, channel, purpose, now());
        assert_eq!(d.verdict, Verdict::Deny, "{channel} {purpose}: {d:#?}");
        assert_eq!(fired(&d, "answer-first"), Some(Effect::Deny));
        let r = d.reasons.iter().find(|r| &*r.rule_id == "answer-first").unwrap();
        assert_eq!(
            r.detail,
            Detail::AwaitingAnswer {
                channel: Email,
                ago: days(2)
            }
        );
        assert!(r.message().contains("answer it first"), "{}", r.message());
    }
    // The reply itself is welcome (service-reply), and answers the message.
    let d = check(&h, Sms, Service, now());
    assert_eq!(d.verdict, Verdict::Allow, "{d:#?}");
    let answered = h.clone_with(
        ago(days(1)),
        EventKind::OutreachSent {
            channel: Call,
            purpose: Service,
            campaign: String::new(),
            decision_id: None,
        },
    );
    let d = check(&answered, Email, Marketing, now());
    assert_eq!(d.verdict, Verdict::Allow, "{d:#?}");
    assert_eq!(fired(&d, "answer-first"), None);
    // A message older than 14 days no longer holds anything back.
    assert_eq!(
        fired(
            &check(&h, Email, Marketing, asked.saturating_add(days(14))),
            "answer-first"
        ),
        None
    );
    // A service outreach before the message does not answer it.
    let before = h.clone_with(
        ago(days(3)),
        EventKind::OutreachSent {
            channel: Email,
            purpose: Service,
            campaign: String::new(),
            decision_id: None,
        },
    );
    assert_eq!(check(&before, Email, Marketing, now()).verdict, Verdict::Deny);
    // GetCustomer's view: the open message, its age, and the rule it holds back under.
    let policy = Policy::default_policy();
    let view = customer_view(&h.state(&policy), &policy, now(), 10);
    assert_eq!(view.open_inbound.len(), 1, "{:?}", view.open_inbound);
    let open = &view.open_inbound[0];
    assert_eq!((open.channel, open.since, open.age), (Email, asked, days(2)));
    assert_eq!(open.holds_back.as_deref(), Some("answer-first"));
    let view = customer_view(&answered.state(&policy), &policy, now(), 10);
    assert!(view.open_inbound.is_empty());
    // Found probing a release build: an authorized service reply that was never sent
    // answered the message, so marketing resumed while the customer's question stayed
    // open. An authorization is not an answer; the report of the send is.
    let authorized = h.clone_with(
        ago(days(1)),
        EventKind::OutreachAuthorized {
            decision_id: "d1".into(),
            channel: Email,
            purpose: Service,
            campaign: String::new(),
            requested_by: String::new(),
        },
    );
    let d = check(&authorized, Email, Marketing, now());
    assert_eq!(d.verdict, Verdict::Deny, "{d:#?}");
    assert_eq!(fired(&d, "answer-first"), Some(Effect::Deny));
    let view = customer_view(&authorized.state(&policy), &policy, now(), 10);
    assert_eq!(view.open_inbound.len(), 1, "{:?}", view.open_inbound);
    let reported = authorized.clone_with(
        ago(days(1)).saturating_add(mins(5)),
        EventKind::OutreachSent {
            channel: Email,
            purpose: Service,
            campaign: String::new(),
            decision_id: Some("d1".into()),
        },
    );
    assert_eq!(check(&reported, Email, Marketing, now()).verdict, Verdict::Allow);
    let view = customer_view(&reported.state(&policy), &policy, now(), 10);
    assert!(view.open_inbound.is_empty());
}

/// `stale_state` is a policy rule: the lag is an input of the decision, the channels
/// and purposes it holds back are in the policy (marketing and sales by default).
#[test]
fn stale_state_is_a_rule_fed_the_lag() {
    let policy = Policy::default_policy();
    let h = History::new().opted_in(ago(days(400)));
    let state = h.state(&policy);
    let lag = Span(7_000);
    for (purpose, verdict) in [
        (Marketing, Verdict::Deny),
        (Sales, Verdict::Deny),
        (Service, Verdict::Allow),
    ] {
        let d = decide_with_lag(&state, &policy, &proposal(Email, purpose), now(), lag);
        assert_eq!(d.verdict, verdict, "{purpose}: {d:#?}");
        if verdict == Verdict::Deny {
            let r = d
                .reasons
                .iter()
                .find(|r| &*r.rule_id == "stale-state")
                .expect("stale-state");
            assert_eq!(r.detail, Detail::StaleState { lag });
            assert!(d.alternatives.is_empty(), "{:?}", d.alternatives);
        }
        // Fresh state: as `decide`.
        assert_eq!(
            decide_with_lag(&state, &policy, &proposal(Email, purpose), now(), Span(0)),
            decide(&state, &policy, &proposal(Email, purpose), now())
        );
    }
    // The policy says what fails closed beyond marketing and sales: here service and
    // transactional email too.
    let text = r#"
version = "stale-email"
default_time_zone = "UTC"
[[rule]]
id = "stale-email"
type = "stale_state"
channels = ["email"]
[[rule]]
id = "stale-default"
type = "stale_state"
purposes = ["marketing", "sales"]
[[rule]]
id = "cap"
type = "frequency_cap"
max = 5
window = "7d"
"#;
    let p = Policy::from_toml_str(text).unwrap();
    let s = h.state(&p);
    assert_eq!(
        decide_with_lag(&s, &p, &proposal(Email, Service), now(), lag).verdict,
        Verdict::Deny
    );
    assert_eq!(
        decide_with_lag(&s, &p, &proposal(Sms, Marketing), now(), lag).verdict,
        Verdict::Deny
    );
    assert_eq!(
        decide_with_lag(&s, &p, &proposal(Sms, Service), now(), lag).verdict,
        Verdict::Allow
    );
    // It may not hold back less (fail closed is an invariant).
    let narrow = text.replace(
        "purposes = [\"marketing\", \"sales\"]",
        "purposes = [\"marketing\"]",
    );
    let err = Policy::from_toml_str(&narrow).unwrap_err().to_string();
    assert!(err.contains("stale-email") && err.contains("sales"), "{err}");
    // A policy without a stale_state rule gets the built-in one: marketing and sales.
    let p = Policy::from_toml_str(&text.replace("stale_state", "transactional")).unwrap();
    assert_eq!(&**p.rules()[0].id(), "stale-state");
    assert_eq!(
        decide_with_lag(&s, &p, &proposal(Sms, Marketing), now(), lag).verdict,
        Verdict::Deny
    );
    assert_eq!(
        decide_with_lag(&s, &p, &proposal(Sms, Service), now(), lag).verdict,
        Verdict::Allow
    );
}

/// Compaction keeps the do-not-contact request that reaches furthest, not the newest:
/// a flood of short requests after one for good leaves the customer alone.
#[test]
fn compacting_do_not_contact_keeps_the_one_that_reaches_furthest() {
    let policy = Policy::default_policy();
    let mut h = History::new().opted_in(ago(days(400))).at(
        ago(days(300)),
        EventKind::DoNotContact {
            reason: "never again".into(),
            until: None,
        },
    );
    // Far more short requests than a customer's side records hold, each already over.
    for i in 0..700 {
        let at = ago(days(200)).saturating_add(mins(i));
        h = h.at(
            at,
            EventKind::DoNotContact {
                reason: "a day".into(),
                until: Some(at.saturating_add(days(1))),
            },
        );
    }
    let state = h.state(&policy);
    assert!(state.records() < 700, "compacted: {} records", state.records());
    let d = decide(&state, &policy, &proposal(Email, Marketing), now());
    assert_eq!(d.verdict, Verdict::Deny, "{d:#?}");
    assert_eq!(fired(&d, "do-not-contact"), Some(Effect::Deny));
    assert_eq!(state.do_not_contact(now()).map(|r| r.until), Some(None));
}

#[test]
fn a_withdrawal_sent_with_an_expiry_never_expires_and_folds_as_one_without() {
    let policy = Policy::default_policy();
    let withdrawal = |expires_at| EventKind::ConsentChanged {
        channel: Email,
        purpose: Marketing,
        granted: false,
        expires_at,
        proof: String::new(),
    };
    let base = History::new().opted_in(ago(days(30)));
    let with_expiry = base.clone_with(ago(days(10)), withdrawal(Some(ago(days(12)))));
    let without = base.clone_with(ago(days(10)), withdrawal(None));
    // Valid, and said to be ignored; even an expiry before the withdrawal itself is
    // not a reason to refuse (and lose) it.
    let sent = with_expiry.events.last().unwrap();
    assert!(sent.validate().is_ok(), "{sent:?}");
    assert!(
        sent.ignored().is_some_and(|n| n.contains("expires_at")),
        "{sent:?}"
    );
    assert!(without.events.iter().all(|e| e.ignored().is_none()));
    // The fold keeps no expiry: the same state as a withdrawal sent without one.
    assert_eq!(with_expiry.state(&policy), without.state(&policy));
    for at in [now(), now().saturating_add(days(365))] {
        let d = check(&with_expiry, Email, Marketing, at);
        assert_eq!(d.verdict, Verdict::Deny, "{d:#?}");
    }
    // A grant's expiry is still checked.
    let bad_grant = Event {
        kind: EventKind::ConsentChanged {
            channel: Email,
            purpose: Marketing,
            granted: true,
            expires_at: Some(ago(days(11))),
            proof: String::new(),
        },
        ..sent.clone()
    };
    assert!(bad_grant.validate().is_err());
    assert!(bad_grant.ignored().is_none());
}

#[test]
fn a_customer_limit_longer_than_the_policy_counts_says_what_they_asked_and_what_is_counted() {
    let limit = |window| EventKind::PreferencesChanged {
        time_zone: None,
        accepted_channels: None,
        max_contacts: Some(ContactLimit { max: 1, window }),
    };
    let sent = ago(days(10));
    for (window, asked_shown) in [(days(90), true), (days(30), false)] {
        let h = History::new()
            .opted_in(ago(days(400)))
            .at(ago(days(20)), limit(window))
            .sent(sent, Email, Marketing);
        let d = check(&h, Email, Marketing, now());
        assert_eq!(d.verdict, Verdict::Defer, "{d:#?}");
        // The default policy counts a customer's limit over 30 days at most.
        assert_eq!(d.not_before, Some(sent.saturating_add(days(30))));
        let r = d
            .reasons
            .iter()
            .find(|r| &*r.rule_id == "customer-preferences")
            .unwrap();
        let m = r.message();
        if asked_shown {
            assert!(
                m.contains("per 90 days") && m.contains("over 30 days at most") && m.contains("max_window"),
                "{m}"
            );
        } else {
            assert!(m.contains("per 30 days") && !m.contains("max_window"), "{m}");
        }
    }
}

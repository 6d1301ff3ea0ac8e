//! Properties of the fold and of decide, checked on generated histories.

mod common;

use common::*;
use proptest::prelude::*;
use tact_core::*;

const CHANNELS: [Channel; 5] = [
    Channel::Email,
    Channel::Sms,
    Channel::Call,
    Channel::SalesMeeting,
    Channel::DirectMail,
];

fn channel() -> impl Strategy<Value = Channel> {
    prop::sample::select(CHANNELS.to_vec())
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop::sample::select(Purpose::ALL.to_vec())
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        prop::sample::select(vec!["pricing", "compare", "blog", "quote"]).prop_map(|c| {
            EventKind::PageViewed {
                url: "/x".into(),
                category: c.into(),
            }
        }),
        Just(EventKind::ContentDownloaded {
            asset: "wp.pdf".into()
        }),
        Just(EventKind::QuoteRequested {
            product: "car".into()
        }),
        channel().prop_map(|channel| EventKind::ContactRequested {
            channel,
            topic: "t".into()
        }),
        channel().prop_map(|channel| EventKind::InboundMessage {
            channel,
            topic: "t".into()
        }),
        (channel(), purpose(), prop::option::of(0u8..4)).prop_map(|(channel, purpose, d)| {
            EventKind::OutreachSent {
                channel,
                purpose,
                campaign: "c".into(),
                decision_id: d.map(|d| format!("d{d}")),
            }
        }),
        (channel(), purpose(), 0u8..4).prop_map(|(channel, purpose, d)| EventKind::OutreachAuthorized {
            decision_id: format!("d{d}"),
            channel,
            purpose,
            campaign: "c".into(),
            requested_by: "crm".into(),
        }),
        (channel(), prop::sample::select(Engagement::ALL.to_vec()))
            .prop_map(|(channel, engagement)| EventKind::OutreachEngaged { channel, engagement }),
        channel().prop_map(|channel| EventKind::OutreachUnanswered {
            channel,
            outcome: NonResponse::Ignored
        }),
        Just(EventKind::Purchase { order_id: "o".into() }),
        Just(EventKind::Complaint {
            channel: None,
            reason: "r".into()
        }),
        (channel(), purpose(), any::<bool>(), prop::option::of(0i64..40)).prop_map(
            |(channel, purpose, granted, exp)| {
                EventKind::ConsentChanged {
                    channel,
                    purpose,
                    granted,
                    expires_at: exp.map(|d| wed_10am().saturating_sub(days(20)).saturating_add(days(d))),
                    proof: "p".into(),
                }
            }
        ),
        (
            prop::option::of(prop::sample::select(vec![
                "Europe/London",
                "America/New_York",
                "Asia/Tokyo"
            ])),
            prop::option::of(prop::collection::vec(channel(), 0..3)),
            prop::option::of((0u32..3, 1i64..20))
        )
            .prop_map(|(tz, acc, lim)| EventKind::PreferencesChanged {
                time_zone: tz.map(String::from),
                accepted_channels: acc,
                max_contacts: lim.map(|(max, d)| ContactLimit { max, window: days(d) }),
            }),
        prop::option::of(0i64..30).prop_map(|u| EventKind::DoNotContact {
            reason: "r".into(),
            until: u.map(|d| wed_10am().saturating_sub(days(10)).saturating_add(days(d))),
        }),
    ]
}

/// Outreach that answers nothing, mostly of a kind no cap of the default policy counts.
fn flood_purpose() -> impl Strategy<Value = Purpose> {
    prop_oneof![
        3 => Just(Purpose::Transactional),
        1 => Just(Purpose::Marketing),
        1 => Just(Purpose::Sales),
    ]
}

/// Events spread over `span_days` before Wednesday 10:00, with unique ids.
fn history(span_days: i64, max_len: usize) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0..span_days * 24 * 60, kind()), 0..max_len).prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (minute, kind))| Event {
                event_id: format!("e{i}"),
                customer_id: "c1".into(),
                occurred_at: wed_10am().saturating_sub(mins(minute)),
                source: "prop".into(),
                kind,
            })
            .collect()
    })
}

/// The shipped policy with rules that interact more: a second quiet-hours rule on
/// calls, do-not-contact also holding back transactional messages on SMS, a cap that
/// counts service messages.
fn rich_policy() -> String {
    format!(
        "{}{}",
        tact_core::policy::DEFAULT_POLICY,
        r#"
[[rule]]
id = "quiet-calls"
type = "quiet_hours"
channels = ["call"]
start = "09:30"
end = "20:00"
closed_days = ["sat"]
suggest = "sms"

[[rule]]
id = "transactional-sms"
type = "transactional"
channels = ["sms"]
purposes = ["transactional"]
respect_do_not_contact = true

[[rule]]
id = "cap-service"
type = "frequency_cap"
purposes = ["service"]
max = 2
window = "3d"
suggest = "email"
"#
    )
}

const RICH_POLICY_RULES: usize = 20;

fn fold<'a>(events: impl IntoIterator<Item = &'a Event>, policy: &Policy) -> CustomerState {
    let mut s = CustomerState::new();
    for e in events {
        s.apply(e, policy.retention());
    }
    s
}

fn by_time(events: &[Event]) -> Vec<Event> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.occurred_at);
    sorted
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any arrival order, with redeliveries, folds to the state of `occurred_at` order.
    #[test]
    fn fold_is_order_independent(
        events in history(120, 60),
        seed in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let policy = Policy::default_policy();
        let in_order = fold(&by_time(&events), &policy);
        let mut arrival = events.clone();
        for d in &dups {
            if !events.is_empty() {
                arrival.push(d.get(&events).clone());
            }
        }
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..arrival.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            arrival.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(fold(&arrival, &policy), in_order);
    }

    /// Replaying the whole log gives, for any past instant, the decision live traffic got then.
    #[test]
    fn replay_answers_as_live_did(
        events in history(30, 40),
        proposals in prop::collection::vec((channel(), purpose()), 1..4),
    ) {
        let policy = Policy::default_policy();
        let sorted = by_time(&events);
        let replayed = fold(&sorted, &policy);
        let mut live = CustomerState::new();
        for (i, e) in sorted.iter().enumerate() {
            live.apply(e, policy.retention());
            // Live traffic has seen every event of an instant once the instant is over.
            if sorted.get(i + 1).is_some_and(|next| next.occurred_at == e.occurred_at) {
                continue;
            }
            for (c, p) in &proposals {
                let at = e.occurred_at;
                let prop = proposal(*c, *p);
                prop_assert_eq!(decide(&live, &policy, &prop, at), decide(&replayed, &policy, &prop, at));
            }
        }
    }

    /// DEFER is honest: asked again at `not_before` with no new events, the answer is not DEFER.
    #[test]
    fn defer_is_honest(
        events in history(40, 40),
        c in channel(),
        p in purpose(),
        at_offset in -(3 * 24 * 60i64)..(3 * 24 * 60),
    ) {
        let policy = Policy::default_policy();
        let state = fold(&events, &policy);
        // Decide at or after the latest event, so nothing unseen lies between `at` and `not_before`.
        let at = wed_10am().saturating_add(mins(at_offset.abs()));
        let prop = proposal(c, p);
        let d = decide(&state, &policy, &prop, at);
        if d.verdict == Verdict::Defer {
            let nb = d.not_before.unwrap();
            prop_assert!(nb > at);
            let again = decide(&state, &policy, &prop, nb);
            prop_assert_ne!(again.verdict, Verdict::Defer, "first: {:?}\nagain: {:?}", d, again);
            // And it is the earliest such instant, to the minute.
            let before = decide(&state, &policy, &prop, nb.saturating_sub(MINUTE));
            prop_assert_ne!(before.verdict, Verdict::Allow);
        } else {
            prop_assert!(d.not_before.is_none());
        }
    }

    /// The order of a policy's rules never changes a decision: verdict, `not_before`,
    /// the set of rules that fired (with their effects) and the alternatives.
    #[test]
    fn rule_order_never_changes_a_decision(
        events in history(40, 40),
        c in channel(),
        p in purpose(),
        at_offset in 0..(3 * 24 * 60i64),
        order in Just((0..RICH_POLICY_RULES).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let text = rich_policy();
        prop_assert_eq!(text.matches("[[rule]]").count(), RICH_POLICY_RULES);
        let policy = Policy::from_toml_str(&text).unwrap();
        let shuffled = Policy::from_toml_str(&reorder_rules(&text, &order)).unwrap();
        let state = fold(&events, &policy);
        let at = wed_10am().saturating_add(mins(at_offset));
        let prop = proposal(c, p);
        let a = decide(&state, &policy, &prop, at);
        let b = decide(&state, &shuffled, &prop, at);
        prop_assert_eq!(a.verdict, b.verdict);
        prop_assert_eq!(a.not_before, b.not_before);
        let fired = |d: &Decision| {
            let mut ids: Vec<(String, Effect)> =
                d.reasons.iter().map(|r| (r.rule_id.to_string(), r.effect)).collect();
            ids.sort_by(|x, y| x.0.cmp(&y.0));
            ids
        };
        prop_assert_eq!(fired(&a), fired(&b), "order {:?}", order);
        prop_assert_eq!(&a.alternatives, &b.alternatives);
    }

    /// Outreach that answers nothing (marketing, sales, transactional) only ever adds to
    /// what rules count: however much of it is added before an instant, a decision at
    /// that instant that was not ALLOW stays not ALLOW. The retention keeps few entries
    /// of each kind (8, the default policy's largest cap), so floods push entries out.
    #[test]
    fn more_outreach_never_turns_a_refusal_into_an_allow(
        events in history(30, 60),
        flood in prop::collection::vec((0..7i64 * 24 * 60, channel(), flood_purpose()), 0..60),
        channel in channel(),
        purpose in purpose(),
    ) {
        let policy = Policy::default_policy();
        let retention = Retention { max_entries: 8, ..policy.retention() };
        let before = fold_with(&events, retention);
        let mut after = before.clone();
        for (i, (minute, c, p)) in flood.into_iter().enumerate() {
            after.apply(
                &Event {
                    event_id: format!("flood-{i}"),
                    customer_id: "c1".into(),
                    occurred_at: wed_10am().saturating_sub(mins(minute)),
                    source: "prop".into(),
                    kind: EventKind::OutreachSent {
                        channel: c,
                        purpose: p,
                        campaign: "flood".into(),
                        decision_id: None,
                    },
                },
                retention,
            );
        }
        let p = proposal(channel, purpose);
        let a = decide(&before, &policy, &p, wed_10am());
        let b = decide(&after, &policy, &p, wed_10am());
        if a.verdict != Verdict::Allow {
            prop_assert_ne!(b.verdict, Verdict::Allow, "before: {:?}\nafter: {:?}", a, b);
        }
    }

    /// State stays bounded however long the history, side records included.
    #[test]
    fn state_is_bounded(events in history(2000, 800)) {
        let policy = Policy::default_policy();
        let s = fold(&events, &policy);
        let max = policy.retention().max_entries as usize;
        prop_assert!(s.timeline().len() <= TIMELINE_KINDS * max);
        prop_assert!(s.records() <= (TIMELINE_KINDS + 1) * max + SIDE_CLASSES);
        if let Some(reference) = s.pruning_reference() {
            let horizon = reference.saturating_sub(policy.retention().window);
            prop_assert!(s.timeline().iter().all(|e| e.at >= horizon));
        }
    }

    /// One event dated after a decision instant, however far after, never changes the
    /// decision at that instant, for any instant the state keeps full history for (from
    /// the clock skew the server allows before its latest event, onwards).
    #[test]
    fn a_later_event_never_changes_an_earlier_decision(
        events in history(120, 60),
        extra in kind(),
        c in channel(),
        p in purpose(),
        at_offset in -(24 * 60i64)..(3 * 24 * 60),
        ahead_exp in 0u32..41,
        ahead_frac in 0.0f64..1.0,
    ) {
        let policy = Policy::default_policy();
        let retention = policy.retention().with_slack(SKEW);
        let before = fold_with(&events, retention);
        let latest = events.iter().map(|e| e.occurred_at).max().unwrap_or(wed_10am());
        let at = latest.saturating_add(mins(at_offset));
        // From a millisecond to ~35 years after `at`, spread over every magnitude.
        let ahead = 1 + ((1u64 << ahead_exp) as f64 * ahead_frac) as i64;
        let later = Event {
            event_id: "later".into(),
            customer_id: "c1".into(),
            occurred_at: at.saturating_add(Span(ahead)),
            source: "prop".into(),
            kind: extra,
        };
        let mut after = before.clone();
        after.apply(&later, retention);
        let prop = proposal(c, p);
        prop_assert_eq!(
            decide(&before, &policy, &prop, at),
            decide(&after, &policy, &prop, at),
            "event {:?} at {}", later.kind, later.occurred_at
        );
    }

    /// A verdict-only or reasons-only answer has the verdict and `not_before` of the full
    /// answer, on the shipped and the rich policy, with or without stale state; the
    /// reasons-only answer has the full answer's reasons, and neither has alternatives.
    #[test]
    fn a_cheaper_answer_has_the_full_answers_verdict(
        events in history(40, 60),
        c in channel(),
        p in purpose(),
        at_offset in -(2 * 24 * 60i64)..(3 * 24 * 60),
        lag in prop::sample::select(vec![0i64, 60_000]),
        rich in any::<bool>(),
    ) {
        let policy = if rich {
            Policy::from_toml_str(&rich_policy()).unwrap()
        } else {
            Policy::default_policy()
        };
        let state = fold(&events, &policy);
        let at = wed_10am().saturating_add(mins(at_offset));
        let prop = proposal(c, p);
        let full = decide_with_lag(&state, &policy, &prop, at, Span(lag));
        prop_assert_eq!(
            &full,
            &decide_explained(&state, &policy, &prop, at, Span(lag), Explain::Full)
        );
        let verdict = decide_explained(&state, &policy, &prop, at, Span(lag), Explain::Verdict);
        prop_assert_eq!(verdict.verdict, full.verdict, "full: {:?}", full);
        prop_assert_eq!(verdict.not_before, full.not_before, "full: {:?}", full);
        prop_assert!(verdict.reasons.is_empty() && verdict.alternatives.is_empty());
        let reasons = decide_explained(&state, &policy, &prop, at, Span(lag), Explain::Reasons);
        prop_assert_eq!(reasons.verdict, full.verdict);
        prop_assert_eq!(reasons.not_before, full.not_before);
        prop_assert_eq!(&reasons.reasons, &full.reasons);
        prop_assert!(reasons.alternatives.is_empty());
    }

    /// With tight bounds (a short window, few entries), pruning and compaction still
    /// give the same state whatever the arrival order.
    #[test]
    fn pruning_is_order_independent(
        events in history(30, 80),
        seed in any::<u64>(),
    ) {
        let retention = Retention { window: days(3), max_entries: 6 };
        let in_order = fold_with(&by_time(&events), retention);
        let mut arrival = events.clone();
        let mut x = seed | 1;
        for i in (1..arrival.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            arrival.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let shuffled = fold_with(&arrival, retention);
        prop_assert_eq!(&shuffled, &in_order);
        prop_assert!(shuffled.records() <= (TIMELINE_KINDS + 1) * 6 + SIDE_CLASSES);
    }
}

use tact_core::state::TIMELINE_KINDS;

/// The clock skew the server allows by default (kept as extra history).
const SKEW: Span = Span(24 * 3_600_000);

/// The most side records compaction keeps (one per kind, see `state.rs`).
const SIDE_CLASSES: usize = 72;

fn fold_with<'a>(events: impl IntoIterator<Item = &'a Event>, retention: Retention) -> CustomerState {
    let mut s = CustomerState::new();
    for e in events {
        s.apply(e, retention);
    }
    s
}

/// The probe's finding: three emails this week and one page view dated a year (or
/// 9999 years) ahead; the caps must still hold.
#[test]
fn an_event_dated_far_ahead_keeps_the_caps() {
    let policy = Policy::default_policy();
    let now = wed_10am();
    let mut h = History::new().opted_in(now.saturating_sub(days(300)));
    for d in 1..=3 {
        h = h.sent(now.saturating_sub(days(d)), Channel::Email, Purpose::Marketing);
    }
    let email = proposal(Channel::Email, Purpose::Marketing);
    let state = h.state(&policy);
    let before = decide(&state, &policy, &email, now);
    assert_ne!(before.verdict, Verdict::Allow, "{before:?}");
    for ahead in [days(365), Span(253_402_300_799_000 - now.0)] {
        let mut s = state.clone();
        s.apply(
            &Event {
                event_id: format!("ahead-{}", ahead.0),
                customer_id: "c1".into(),
                occurred_at: now.saturating_add(ahead),
                source: "web".into(),
                kind: EventKind::PageViewed {
                    url: "/".into(),
                    category: "pricing".into(),
                },
            },
            policy.retention(),
        );
        assert_eq!(decide(&s, &policy, &email, now), before);
    }
}

/// A flood of page views (research) or engagements cannot push out the touches that
/// caps count: each kind of entry is bounded on its own.
#[test]
fn a_flood_of_one_kind_never_pushes_out_touches() {
    let policy = Policy::default_policy();
    let now = wed_10am();
    let mut h = History::new().opted_in(now.saturating_sub(days(300)));
    for d in 1..=3 {
        h = h.sent(now.saturating_sub(days(d)), Channel::Email, Purpose::Marketing);
    }
    let email = proposal(Channel::Email, Purpose::Marketing);
    let mut s = h.state(&policy);
    let before = decide(&s, &policy, &email, now);
    assert_ne!(before.verdict, Verdict::Allow);
    for i in 0..2_000i64 {
        let kind = if i % 2 == 0 {
            EventKind::PageViewed {
                url: "/".into(),
                category: "pricing".into(),
            }
        } else {
            EventKind::OutreachEngaged {
                channel: Channel::Sms,
                engagement: Engagement::Opened,
            }
        };
        s.apply(
            &Event {
                event_id: format!("flood-{i}"),
                customer_id: "c1".into(),
                occurred_at: now.saturating_sub(SECOND).saturating_sub(Span(i)),
                source: "web".into(),
                kind,
            },
            policy.retention(),
        );
    }
    assert!(s.timeline().len() <= TIMELINE_KINDS * 512);
    let after = decide(&s, &policy, &email, now);
    assert!(
        after.reasons.iter().any(|r| &*r.rule_id == "cap-email"),
        "{after:?}"
    );
    assert_ne!(after.verdict, Verdict::Allow);
}

/// Outreach that a cap does not count (transactional in-app notices) or counts
/// elsewhere (marketing emails) cannot push out a sales call the call cap counts: each
/// channel and purpose is its own kind of entry. (Found by probing a release build: 512
/// in-app notices turned a call's DEFER into ALLOW.)
#[test]
fn a_flood_of_other_outreach_never_pushes_out_a_counted_touch() {
    let policy = Policy::default_policy();
    let now = wed_10am();
    let call = proposal(Channel::Call, Purpose::Sales);
    for (channel, purpose) in [
        (Channel::InApp, Purpose::Transactional),
        (Channel::Email, Purpose::Marketing),
        (Channel::Call, Purpose::Service),
    ] {
        let h = History::new().opted_in(now.saturating_sub(days(300))).sent(
            now.saturating_sub(days(2)),
            Channel::Call,
            Purpose::Sales,
        );
        let mut s = h.state(&policy);
        let before = decide(&s, &policy, &call, now);
        assert_eq!(before.verdict, Verdict::Defer, "{before:?}");
        for i in 0..1_200i64 {
            s.apply(
                &Event {
                    event_id: format!("flood-{i}"),
                    customer_id: "c1".into(),
                    occurred_at: now.saturating_sub(days(1)).saturating_add(Span(i * 60_000)),
                    source: "app".into(),
                    kind: EventKind::OutreachSent {
                        channel,
                        purpose,
                        campaign: "notices".into(),
                        decision_id: None,
                    },
                },
                policy.retention(),
            );
        }
        let after = decide(&s, &policy, &call, now);
        assert!(
            after.reasons.iter().any(|r| &*r.rule_id == "cap-call"),
            "{channel} {purpose}: {after:?}"
        );
        assert_ne!(after.verdict, Verdict::Allow, "{channel} {purpose}");
    }
}

#[test]
fn timeline_kinds_follow_the_enums_discriminants() {
    for (i, c) in Channel::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
    }
    for (i, p) in Purpose::ALL.iter().enumerate() {
        assert_eq!(*p as usize, i);
    }
    assert_eq!(TIMELINE_KINDS, 6 + Channel::ALL.len() * (1 + Purpose::ALL.len()));
}

/// A flood of consent changes cannot grow a customer's state without bound, and the
/// newest change (and any withdrawal) still decides.
#[test]
fn side_records_stay_bounded_under_a_flood() {
    let policy = Policy::default_policy();
    let now = wed_10am();
    let mut s = CustomerState::new();
    let n = 20_000i64;
    for i in 0..n {
        s.apply(
            &Event {
                event_id: format!("flip-{i}"),
                customer_id: "c1".into(),
                occurred_at: now.saturating_sub(mins(n - i)),
                source: "crm".into(),
                kind: EventKind::ConsentChanged {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    granted: i % 2 == 1,
                    expires_at: None,
                    proof: String::new(),
                },
            },
            policy.retention(),
        );
    }
    assert!(s.records() <= 512 + SIDE_CLASSES, "{}", s.records());
    let last = s.consent(Channel::Email, Purpose::Marketing, now).unwrap();
    assert!(!last.withdrawn);
    assert!(s.ever_withdrawn(Channel::Email, Purpose::Marketing, now));
}

#[test]
fn a_duplicate_event_is_ignored() {
    let policy = Policy::default_policy();
    let h = History::new().opted_in(wed_10am().saturating_sub(days(9))).sent(
        wed_10am().saturating_sub(days(1)),
        Channel::Call,
        Purpose::Sales,
    );
    let once = h.state(&policy);
    let mut twice = once.clone();
    twice.apply(h.events.last().unwrap(), policy.retention());
    assert_eq!(once, twice);
}

//! Unit tests for [`crate::convert`]: no I/O.

use std::borrow::Cow;
use std::sync::Arc;

use pbjson_types::{Duration as PbDuration, Timestamp as PbTimestamp};
use proptest::prelude::*;
use tact_core::{
    Alternative, Channel, ContactLimit, DAY, Decision, Detail, Effect, Engagement, Event, EventKind, HOUR,
    NonResponse, Purpose, Reason, Span, Timestamp, Verdict,
};

use crate::convert::{
    ConvertError, decision_to_pb, event_from_json, event_to_json, proposal_from_pb, span_from_pb, span_to_pb,
    timestamp_from_pb, timestamp_to_pb,
};
use crate::pb;
use crate::pb::interaction_event::Kind;

const EXAMPLE: &str = r#"{"eventId":"e1","customerId":"c1","occurredAt":"2026-11-20T09:00:00Z","pageViewed":{"url":"/pricing","category":"pricing"}}"#;

fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn event(kind: EventKind) -> Event {
    Event {
        event_id: format!("e-{}", kind.name()),
        customer_id: "cust-42".into(),
        occurred_at: t("2026-11-20T09:00:00.123Z"),
        source: "crm".into(),
        kind,
    }
}

/// One event of every kind, with optional fields both set and unset.
pub(crate) fn samples() -> Vec<Event> {
    let kinds = vec![
        EventKind::PageViewed {
            url: "/pricing".into(),
            category: "pricing".into(),
        },
        EventKind::ContentDownloaded {
            asset: "whitepaper-7".into(),
        },
        EventKind::QuoteRequested {
            product: "fleet".into(),
        },
        EventKind::ContactRequested {
            channel: Channel::Call,
            topic: "renewal".into(),
        },
        EventKind::InboundMessage {
            channel: Channel::Email,
            topic: "invoice".into(),
        },
        EventKind::OutreachSent {
            channel: Channel::Email,
            purpose: Purpose::Marketing,
            campaign: "winter".into(),
            decision_id: Some("d-1".into()),
        },
        EventKind::OutreachSent {
            channel: Channel::DirectMail,
            purpose: Purpose::Sales,
            campaign: String::new(),
            decision_id: None,
        },
        EventKind::OutreachEngaged {
            channel: Channel::Push,
            engagement: Engagement::Clicked,
        },
        EventKind::OutreachUnanswered {
            channel: Channel::Sms,
            outcome: NonResponse::Bounced,
        },
        EventKind::Purchase {
            order_id: "o-9".into(),
        },
        EventKind::Complaint {
            channel: Some(Channel::SocialDm),
            reason: "too many".into(),
        },
        EventKind::Complaint {
            channel: None,
            reason: "stop".into(),
        },
        EventKind::ConsentChanged {
            channel: Channel::Email,
            purpose: Purpose::Marketing,
            granted: true,
            expires_at: Some(t("2027-11-20T00:00:00Z")),
            proof: "form-1".into(),
        },
        EventKind::ConsentChanged {
            channel: Channel::Sms,
            purpose: Purpose::Service,
            granted: false,
            expires_at: None,
            proof: String::new(),
        },
        EventKind::PreferencesChanged {
            time_zone: Some("Europe/Berlin".into()),
            accepted_channels: Some(vec![Channel::Email, Channel::InApp, Channel::SalesMeeting]),
            max_contacts: Some(ContactLimit {
                max: 2,
                window: Span(7 * DAY.0),
            }),
        },
        EventKind::PreferencesChanged {
            time_zone: None,
            accepted_channels: None,
            max_contacts: None,
        },
        EventKind::PreferencesChanged {
            time_zone: Some(String::new()),
            accepted_channels: Some(vec![]),
            max_contacts: Some(ContactLimit {
                max: 0,
                window: Span(0),
            }),
        },
        EventKind::DoNotContact {
            reason: "legal hold".into(),
            until: Some(t("2027-01-01T00:00:00Z")),
        },
        EventKind::DoNotContact {
            reason: "customer request".into(),
            until: None,
        },
        EventKind::OutreachAuthorized {
            decision_id: "d-2".into(),
            channel: Channel::Call,
            purpose: Purpose::Transactional,
            campaign: "c".into(),
            requested_by: "crm".into(),
        },
    ];
    kinds.into_iter().map(event).collect()
}

#[test]
fn json_example_parses_into_core_event() {
    let e = event_from_json(EXAMPLE).unwrap();
    assert_eq!(
        e,
        Event {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            occurred_at: t("2026-11-20T09:00:00Z"),
            source: String::new(),
            kind: EventKind::PageViewed {
                url: "/pricing".into(),
                category: "pricing".into()
            },
        }
    );
    // And it renders back to the same JSON, up to the spelling of UTC (pbjson-types
    // writes `+00:00` where canonical writers use `Z`; parsers accept both).
    assert_eq!(event_to_json(&e), EXAMPLE.replace("00Z", "00+00:00"));
}

#[test]
fn samples_cover_every_kind() {
    let mut names: Vec<&str> = samples().iter().map(|e| e.kind.name()).collect();
    names.dedup();
    assert_eq!(names.len(), 14, "{names:?}");
}

#[test]
fn every_kind_round_trips_through_pb_and_json() {
    for e in samples() {
        let wire = pb::InteractionEvent::from(&e);
        assert_eq!(
            Event::try_from(wire.clone()),
            Ok(e.clone()),
            "pb round trip of {e:?}"
        );
        let json = event_to_json(&e);
        assert_eq!(event_from_json(&json), Ok(e.clone()), "JSON round trip of {json}");
    }
}

#[test]
fn json_uses_canonical_names() {
    let e = event(EventKind::ConsentChanged {
        channel: Channel::SalesMeeting,
        purpose: Purpose::Marketing,
        granted: true,
        expires_at: None,
        proof: "p".into(),
    });
    let json = event_to_json(&e);
    assert!(json.contains(r#""channel":"CHANNEL_SALES_MEETING""#), "{json}");
    assert!(json.contains(r#""purpose":"PURPOSE_MARKETING""#), "{json}");
    assert!(
        json.contains(r#""occurredAt":"2026-11-20T09:00:00.123+00:00""#),
        "{json}"
    );
    assert!(json.contains(r#""consentChanged":"#), "{json}");

    let prefs = event(EventKind::PreferencesChanged {
        time_zone: None,
        accepted_channels: None,
        max_contacts: Some(ContactLimit {
            max: 3,
            window: Span(48 * HOUR.0),
        }),
    });
    let json = event_to_json(&prefs);
    assert!(
        json.contains(r#""maxContacts":{"max":3,"window":"172800s"}"#),
        "{json}"
    );
}

#[test]
fn unset_accepted_channels_differs_from_empty() {
    let unset =
        r#"{"eventId":"e","customerId":"c","occurredAt":"2026-01-01T00:00:00Z","preferencesChanged":{}}"#;
    let empty = r#"{"eventId":"e","customerId":"c","occurredAt":"2026-01-01T00:00:00Z","preferencesChanged":{"acceptedChannels":{}}}"#;
    let accepted = |json: &str| match event_from_json(json).unwrap().kind {
        EventKind::PreferencesChanged {
            accepted_channels, ..
        } => accepted_channels,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(accepted(unset), None);
    assert_eq!(accepted(empty), Some(vec![]));
}

fn valid_pb() -> pb::InteractionEvent {
    pb::InteractionEvent::from(&event(EventKind::PageViewed {
        url: "/".into(),
        category: "home".into(),
    }))
}

fn with_kind(kind: Kind) -> pb::InteractionEvent {
    pb::InteractionEvent {
        kind: Some(kind),
        ..valid_pb()
    }
}

fn field_of(wire: pb::InteractionEvent) -> String {
    match Event::try_from(wire.clone()) {
        Ok(e) => panic!("accepted {wire:?} as {e:?}"),
        Err(ConvertError { field, .. }) => field,
    }
}

fn consent(channel: i32, purpose: i32) -> pb::ConsentChanged {
    pb::ConsentChanged {
        channel,
        purpose,
        granted: true,
        expires_at: None,
        proof: String::new(),
    }
}

fn prefs() -> pb::PreferencesChanged {
    pb::PreferencesChanged {
        time_zone: None,
        accepted_channels: None,
        max_contacts: None,
    }
}

#[test]
fn bad_events_name_the_field() {
    let email = pb::Channel::Email as i32;
    let marketing = pb::Purpose::Marketing as i32;
    let bad_ts = PbTimestamp {
        seconds: 1,
        nanos: -1,
    };
    let cases: Vec<(pb::InteractionEvent, &str)> = vec![
        (
            pb::InteractionEvent {
                occurred_at: None,
                ..valid_pb()
            },
            "occurred_at",
        ),
        (
            pb::InteractionEvent {
                occurred_at: Some(bad_ts),
                ..valid_pb()
            },
            "occurred_at",
        ),
        (
            pb::InteractionEvent {
                occurred_at: Some(PbTimestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                }),
                ..valid_pb()
            },
            "occurred_at",
        ),
        (
            pb::InteractionEvent {
                occurred_at: Some(PbTimestamp { seconds: 0, nanos: 0 }),
                ..valid_pb()
            },
            "occurred_at",
        ),
        (
            pb::InteractionEvent {
                kind: None,
                ..valid_pb()
            },
            "kind",
        ),
        (
            pb::InteractionEvent {
                event_id: String::new(),
                ..valid_pb()
            },
            "event_id",
        ),
        (
            pb::InteractionEvent {
                event_id: "x".repeat(257),
                ..valid_pb()
            },
            "event_id",
        ),
        (
            pb::InteractionEvent {
                customer_id: String::new(),
                ..valid_pb()
            },
            "customer_id",
        ),
        (
            pb::InteractionEvent {
                customer_id: "a b".into(),
                ..valid_pb()
            },
            "customer_id",
        ),
        (
            with_kind(Kind::ContactRequested(pb::ContactRequested {
                channel: 0,
                topic: String::new(),
            })),
            "contact_requested.channel",
        ),
        (
            with_kind(Kind::InboundMessage(pb::InboundMessage {
                channel: 99,
                topic: String::new(),
            })),
            "inbound_message.channel",
        ),
        (
            with_kind(Kind::OutreachSent(pb::OutreachSent {
                channel: email,
                purpose: 0,
                campaign: String::new(),
                decision_id: None,
            })),
            "outreach_sent.purpose",
        ),
        (
            with_kind(Kind::OutreachEngaged(pb::OutreachEngaged {
                channel: email,
                engagement: 0,
            })),
            "outreach_engaged.engagement",
        ),
        (
            with_kind(Kind::OutreachUnanswered(pb::OutreachUnanswered {
                channel: email,
                outcome: 7,
            })),
            "outreach_unanswered.outcome",
        ),
        (
            with_kind(Kind::Complaint(pb::Complaint {
                channel: Some(42),
                reason: String::new(),
            })),
            "complaint.channel",
        ),
        (
            with_kind(Kind::ConsentChanged(consent(0, marketing))),
            "consent_changed.channel",
        ),
        (
            with_kind(Kind::ConsentChanged(consent(email, 99))),
            "consent_changed.purpose",
        ),
        (
            with_kind(Kind::ConsentChanged(pb::ConsentChanged {
                expires_at: Some(PbTimestamp {
                    seconds: 1,
                    nanos: 1_000_000_000,
                }),
                ..consent(email, marketing)
            })),
            "consent_changed.expires_at",
        ),
        (
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                accepted_channels: Some(pb::ChannelList {
                    channels: vec![email, 0],
                }),
                ..prefs()
            })),
            "preferences_changed.accepted_channels.channels[1]",
        ),
        (
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                max_contacts: Some(pb::ContactLimit { max: 3, window: None }),
                ..prefs()
            })),
            "preferences_changed.max_contacts.window",
        ),
        (
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                max_contacts: Some(pb::ContactLimit {
                    max: 3,
                    window: Some(PbDuration {
                        seconds: 5,
                        nanos: -1,
                    }),
                }),
                ..prefs()
            })),
            "preferences_changed.max_contacts.window",
        ),
        (
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                max_contacts: Some(pb::ContactLimit {
                    max: 3,
                    window: Some(PbDuration {
                        seconds: -60,
                        nanos: 0,
                    }),
                }),
                ..prefs()
            })),
            "preferences_changed.max_contacts.window",
        ),
        (
            // Clearing the limit (max 0) with a negative window: refused, not ignored.
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                max_contacts: Some(pb::ContactLimit {
                    max: 0,
                    window: Some(PbDuration {
                        seconds: -5,
                        nanos: 0,
                    }),
                }),
                ..prefs()
            })),
            "preferences_changed.max_contacts.window",
        ),
        (
            // "At most 0 per 30 days" reads as "never" but would clear the limit.
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                max_contacts: Some(pb::ContactLimit {
                    max: 0,
                    window: Some(PbDuration {
                        seconds: 30 * 86_400,
                        nanos: 0,
                    }),
                }),
                ..prefs()
            })),
            "preferences_changed.max_contacts.max",
        ),
        (
            with_kind(Kind::PreferencesChanged(pb::PreferencesChanged {
                time_zone: Some("Mars/Olympus_Mons".into()),
                ..prefs()
            })),
            "preferences_changed.time_zone",
        ),
        (
            with_kind(Kind::DoNotContact(pb::DoNotContact {
                reason: String::new(),
                until: Some(PbTimestamp {
                    seconds: i64::MIN,
                    nanos: 0,
                }),
            })),
            "do_not_contact.until",
        ),
        (
            with_kind(Kind::OutreachAuthorized(pb::OutreachAuthorized {
                decision_id: String::new(),
                channel: email,
                purpose: marketing,
                campaign: String::new(),
                requested_by: String::new(),
            })),
            "outreach_authorized.decision_id",
        ),
        (
            with_kind(Kind::OutreachAuthorized(pb::OutreachAuthorized {
                decision_id: "d".into(),
                channel: -1,
                purpose: marketing,
                campaign: String::new(),
                requested_by: String::new(),
            })),
            "outreach_authorized.channel",
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(field_of(wire.clone()), want, "for {wire:?}");
    }
}

#[test]
fn complaint_channel_unspecified_means_general() {
    let wire = with_kind(Kind::Complaint(pb::Complaint {
        channel: Some(0),
        reason: "x".into(),
    }));
    assert!(matches!(
        Event::try_from(wire).unwrap().kind,
        EventKind::Complaint { channel: None, .. }
    ));
}

#[test]
fn bad_json_names_the_field() {
    let cases = [
        ("not json", "json"),
        (
            r#"{"eventId":"e1","customerId":"c1","occurredAt":"2026-11-20T09:00:00Z","pageViewed":{"url":"/"},"color":"red"}"#,
            "json",
        ),
        (
            r#"{"eventId":"e1","customerId":"c1","occurredAt":"yesterday","pageViewed":{}}"#,
            "json",
        ),
        (
            r#"{"eventId":"e1","customerId":"c1","occurredAt":"2026-11-20T09:00:00Z","consentChanged":{"channel":"CHANNEL_FAX","purpose":"PURPOSE_SALES"}}"#,
            "json",
        ),
        (
            r#"{"eventId":"e1","customerId":"c1","pageViewed":{}}"#,
            "occurred_at",
        ),
        (
            r#"{"eventId":"e1","customerId":"c1","occurredAt":"2026-11-20T09:00:00Z"}"#,
            "kind",
        ),
        (
            r#"{"eventId":"e1","customerId":"c1","occurredAt":"2026-11-20T09:00:00Z","consentChanged":{"purpose":"PURPOSE_SALES","granted":true}}"#,
            "consent_changed.channel",
        ),
        (
            r#"{"customerId":"c1","occurredAt":"2026-11-20T09:00:00Z","purchase":{"orderId":"o"}}"#,
            "event_id",
        ),
    ];
    for (json, want) in cases {
        match event_from_json(json) {
            Ok(e) => panic!("accepted {json} as {e:?}"),
            Err(err) => assert_eq!(err.field, want, "for {json}: {err}"),
        }
    }
    let err = event_from_json("{").unwrap_err();
    assert!(err.why.contains("EOF"), "{err}");
    assert!(err.to_string().starts_with("json: "), "{err}");
}

fn decide_request() -> pb::DecideRequest {
    pb::DecideRequest {
        customer_id: "c1".into(),
        channel: pb::Channel::Sms as i32,
        purpose: pb::Purpose::Sales as i32,
        campaign_id: "spring".into(),
        requested_by: "crm".into(),
        at: None,
        ..Default::default()
    }
}

#[test]
fn proposals_convert() {
    let (p, at) = proposal_from_pb(&decide_request()).unwrap();
    assert_eq!(p.customer_id, "c1");
    assert_eq!(p.channel, Channel::Sms);
    assert_eq!(p.purpose, Purpose::Sales);
    assert_eq!(p.campaign_id, "spring");
    assert_eq!(p.requested_by, "crm");
    assert_eq!(at, None);

    let at = timestamp_to_pb(t("2026-11-20T09:00:00Z"));
    let (_, got) = proposal_from_pb(&pb::DecideRequest {
        at: Some(at),
        ..decide_request()
    })
    .unwrap();
    assert_eq!(got, Some(t("2026-11-20T09:00:00Z")));
}

#[test]
fn bad_proposals_name_the_field() {
    let cases = [
        (
            pb::DecideRequest {
                customer_id: String::new(),
                ..decide_request()
            },
            "customer_id",
        ),
        (
            pb::DecideRequest {
                customer_id: "tab\there".into(),
                ..decide_request()
            },
            "customer_id",
        ),
        (
            pb::DecideRequest {
                customer_id: "x".repeat(300),
                ..decide_request()
            },
            "customer_id",
        ),
        (
            pb::DecideRequest {
                channel: 0,
                ..decide_request()
            },
            "channel",
        ),
        (
            pb::DecideRequest {
                channel: 1000,
                ..decide_request()
            },
            "channel",
        ),
        (
            pb::DecideRequest {
                purpose: 0,
                ..decide_request()
            },
            "purpose",
        ),
        (
            pb::DecideRequest {
                at: Some(PbTimestamp {
                    seconds: 0,
                    nanos: -5,
                }),
                ..decide_request()
            },
            "at",
        ),
    ];
    for (req, want) in cases {
        let err = proposal_from_pb(&req).unwrap_err();
        assert_eq!(err.field, want, "for {req:?}: {err}");
        assert!(!err.why.starts_with(want), "field repeated in {err}");
    }
}

#[test]
fn decisions_render_with_messages() {
    let reason = Reason {
        rule_id: Arc::from("transactional"),
        effect: Effect::Allow,
        detail: Detail::Transactional,
    };
    let d = Decision {
        verdict: Verdict::Defer,
        not_before: Some(t("2026-11-21T08:00:00Z")),
        reasons: vec![reason.clone()],
        alternatives: vec![Alternative {
            channel: Channel::Email,
            purpose: Purpose::Service,
            not_before: None,
            note: Cow::Borrowed("reply by email"),
        }],
    };
    let wire = decision_to_pb(&d, "d-7", "v3", 99, "c1");
    assert_eq!(wire.verdict, pb::Verdict::Defer as i32);
    assert_eq!(wire.not_before, Some(timestamp_to_pb(t("2026-11-21T08:00:00Z"))));
    assert_eq!(wire.reasons.len(), 1);
    assert_eq!(wire.reasons[0].rule_id, "transactional");
    assert_eq!(wire.reasons[0].effect, pb::Effect::Allow as i32);
    assert_eq!(wire.reasons[0].message, reason.message());
    assert_eq!(wire.alternatives.len(), 1);
    assert_eq!(wire.alternatives[0].channel, pb::Channel::Email as i32);
    assert_eq!(wire.alternatives[0].purpose, pb::Purpose::Service as i32);
    assert_eq!(wire.alternatives[0].not_before, None);
    assert_eq!(wire.alternatives[0].note, "reply by email");
    assert_eq!(
        (wire.decision_id.as_str(), wire.policy_version.as_str()),
        ("d-7", "v3")
    );
    assert_eq!((wire.log_position, wire.customer_id.as_str()), (99, "c1"));
    let json = serde_json::to_string(&wire).unwrap();
    assert!(json.contains(r#""verdict":"VERDICT_DEFER""#), "{json}");
    assert!(json.contains(r#""logPosition":"99""#), "{json}");
}

#[test]
fn enums_convert_both_ways() {
    for &c in Channel::ALL {
        assert_eq!(Channel::try_from(pb::Channel::from(c)), Ok(c));
    }
    for &p in Purpose::ALL {
        assert_eq!(Purpose::try_from(pb::Purpose::from(p)), Ok(p));
    }
    for &e in Engagement::ALL {
        assert_eq!(Engagement::try_from(pb::Engagement::from(e)), Ok(e));
    }
    for &n in NonResponse::ALL {
        assert_eq!(NonResponse::try_from(pb::NonResponse::from(n)), Ok(n));
    }
    for v in [Verdict::Allow, Verdict::Deny, Verdict::Defer] {
        assert_eq!(Verdict::try_from(pb::Verdict::from(v)), Ok(v));
    }
    for e in [Effect::Allow, Effect::Deny, Effect::Defer] {
        assert_eq!(Effect::try_from(pb::Effect::from(e)), Ok(e));
    }
    assert_eq!(
        pb::Channel::from(Channel::DirectMail).as_str_name(),
        "CHANNEL_DIRECT_MAIL"
    );
    let err = Channel::try_from(pb::Channel::Unspecified).unwrap_err();
    assert_eq!(err.field, "channel");
    assert!(err.why.contains("CHANNEL_UNSPECIFIED"), "{err}");
    assert_eq!(
        NonResponse::try_from(pb::NonResponse::Unspecified)
            .unwrap_err()
            .field,
        "non_response"
    );
}

#[test]
fn times_convert_at_the_edges() {
    assert_eq!(
        timestamp_to_pb(Timestamp(-1)),
        PbTimestamp {
            seconds: -1,
            nanos: 999_000_000
        }
    );
    assert_eq!(
        timestamp_from_pb(
            &PbTimestamp {
                seconds: -1,
                nanos: 999_000_000
            },
            "x"
        ),
        Ok(Timestamp(-1))
    );
    assert_eq!(
        timestamp_from_pb(
            &PbTimestamp {
                seconds: 1,
                nanos: 1_999_999
            },
            "x"
        ),
        Ok(Timestamp(1_001))
    );
    assert_eq!(
        span_to_pb(Span(-1_500)),
        PbDuration {
            seconds: -1,
            nanos: -500_000_000
        }
    );
    assert_eq!(
        span_from_pb(
            &PbDuration {
                seconds: -1,
                nanos: -500_000_000
            },
            "x"
        ),
        Ok(Span(-1_500))
    );
    assert_eq!(
        span_from_pb(
            &PbDuration {
                seconds: 0,
                nanos: -500_000_000
            },
            "x"
        ),
        Ok(Span(-500))
    );
    assert!(
        span_from_pb(
            &PbDuration {
                seconds: 315_576_000_001,
                nanos: 0
            },
            "x"
        )
        .is_err()
    );
    // The extremes a hostile client can send are errors naming the field, never an
    // overflow (`i64::MIN.abs()` panics in debug builds and wraps in release ones).
    for seconds in [i64::MIN, i64::MIN + 1, -315_576_000_001, i64::MAX] {
        let err = span_from_pb(&PbDuration { seconds, nanos: 0 }, "x").unwrap_err();
        assert!(err.to_string().contains('x'), "{seconds}: {err}");
    }
    assert_eq!(
        span_from_pb(
            &PbDuration {
                seconds: -315_576_000_000,
                nanos: 0
            },
            "x"
        ),
        Ok(Span(-315_576_000_000_000))
    );

    // Out-of-range instants clamp to what protobuf (and its JSON form) can hold.
    let max = timestamp_to_pb(Timestamp::MAX);
    assert_eq!(timestamp_from_pb(&max, "x"), Ok(t("9999-12-31T23:59:59.999Z")));
    let min = timestamp_to_pb(Timestamp::MIN);
    assert_eq!(timestamp_from_pb(&min, "x"), Ok(t("0001-01-01T00:00:00Z")));
    let far = span_to_pb(Span(i64::MIN));
    assert_eq!(
        far,
        PbDuration {
            seconds: -315_576_000_000,
            nanos: 0
        }
    );

    // ... so rendering never fails, whatever the core holds.
    let extreme = event(EventKind::DoNotContact {
        reason: String::new(),
        until: Some(Timestamp::MAX),
    });
    assert!(event_to_json(&extreme).contains(r#""until":"9999-12-31T23:59:59.999+00:00""#));
    let extreme = event(EventKind::PreferencesChanged {
        time_zone: None,
        accepted_channels: None,
        max_contacts: Some(ContactLimit {
            max: 1,
            window: Span(i64::MAX),
        }),
    });
    assert!(event_to_json(&extreme).contains(r#""window":"315576000000s""#));
}

#[test]
fn descriptor_set_is_embedded() {
    let fds = crate::FILE_DESCRIPTOR_SET;
    assert!(!fds.is_empty());
    let needle = b"tact/v1/contact_policy.proto";
    assert!(fds.windows(needle.len()).any(|w| w == needle));
}

// ---------------------------------------------------------------------------------------------
// Properties

/// In the range a protobuf timestamp can hold, and after the epoch (as `Event::validate` wants).
const LAST_MS: i64 = 253_402_300_799_999;

fn channel() -> impl Strategy<Value = Channel> {
    proptest::sample::select(Channel::ALL)
}

fn purpose() -> impl Strategy<Value = Purpose> {
    proptest::sample::select(Purpose::ALL)
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn instant() -> impl Strategy<Value = Timestamp> {
    (1..=LAST_MS).prop_map(Timestamp)
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (text(), text()).prop_map(|(url, category)| EventKind::PageViewed { url, category }),
        text().prop_map(|asset| EventKind::ContentDownloaded { asset }),
        text().prop_map(|product| EventKind::QuoteRequested { product }),
        (channel(), text()).prop_map(|(channel, topic)| EventKind::ContactRequested { channel, topic }),
        (channel(), text()).prop_map(|(channel, topic)| EventKind::InboundMessage { channel, topic }),
        (channel(), purpose(), text(), proptest::option::of(text())).prop_map(
            |(channel, purpose, campaign, decision_id)| EventKind::OutreachSent {
                channel,
                purpose,
                campaign,
                decision_id
            }
        ),
        (channel(), proptest::sample::select(Engagement::ALL))
            .prop_map(|(channel, engagement)| EventKind::OutreachEngaged { channel, engagement }),
        (channel(), proptest::sample::select(NonResponse::ALL))
            .prop_map(|(channel, outcome)| EventKind::OutreachUnanswered { channel, outcome }),
        text().prop_map(|order_id| EventKind::Purchase { order_id }),
        (proptest::option::of(channel()), text())
            .prop_map(|(channel, reason)| EventKind::Complaint { channel, reason }),
        (
            channel(),
            purpose(),
            any::<bool>(),
            proptest::option::of(instant()),
            text()
        )
            .prop_map(
                |(channel, purpose, granted, expires_at, proof)| EventKind::ConsentChanged {
                    channel,
                    purpose,
                    granted,
                    expires_at,
                    proof
                }
            ),
        (
            proptest::option::of(proptest::sample::select(vec![
                "",
                "UTC",
                "America/New_York",
                "Asia/Tokyo"
            ])),
            proptest::option::of(proptest::collection::vec(channel(), 0..4)),
            proptest::option::of((1..100u32, 1..=LAST_MS)),
        )
            .prop_map(|(tz, accepted_channels, limit)| EventKind::PreferencesChanged {
                time_zone: tz.map(str::to_owned),
                accepted_channels,
                max_contacts: limit.map(|(max, ms)| ContactLimit {
                    max,
                    window: Span(ms)
                }),
            }),
        (text(), proptest::option::of(instant()))
            .prop_map(|(reason, until)| EventKind::DoNotContact { reason, until }),
        ("[a-z0-9-]{1,12}", channel(), purpose(), text(), text()).prop_map(
            |(decision_id, channel, purpose, campaign, requested_by)| EventKind::OutreachAuthorized {
                decision_id,
                channel,
                purpose,
                campaign,
                requested_by
            }
        ),
    ]
}

pub(crate) fn any_event() -> impl Strategy<Value = Event> {
    ("[A-Za-z0-9:_-]{1,40}", "[!-~]{1,40}", instant(), text(), kind()).prop_map(
        |(event_id, customer_id, occurred_at, source, mut kind)| {
            // An expiry or an end must come after the event (the validator says so).
            if let EventKind::ConsentChanged { expires_at: x, .. }
            | EventKind::DoNotContact { until: x, .. } = &mut kind
            {
                *x = x.filter(|x| *x > occurred_at);
            }
            Event {
                event_id,
                customer_id,
                occurred_at,
                source,
                kind,
            }
        },
    )
}

proptest! {
    #[test]
    fn events_round_trip(e in any_event()) {
        prop_assert_eq!(Event::try_from(pb::InteractionEvent::from(&e)), Ok(e.clone()));
        prop_assert_eq!(event_from_json(&event_to_json(&e)), Ok(e));
    }

    #[test]
    fn instants_round_trip(ms in -62_135_596_800_000i64..=LAST_MS) {
        prop_assert_eq!(timestamp_from_pb(&timestamp_to_pb(Timestamp(ms)), "t"), Ok(Timestamp(ms)));
    }

    #[test]
    fn spans_round_trip(ms in -315_576_000_000_000i64..=315_576_000_000_000) {
        prop_assert_eq!(span_from_pb(&span_to_pb(Span(ms)), "s"), Ok(Span(ms)));
    }

    #[test]
    fn any_core_instant_renders(ms in any::<i64>()) {
        let e = event(EventKind::DoNotContact { reason: String::new(), until: Some(Timestamp(ms)) });
        let json = event_to_json(&e);
        match event_from_json(&json) {
            Ok(_) => prop_assert!(Timestamp(ms) > e.occurred_at),
            // An end at or before the event itself is refused, naming the field.
            Err(err) => prop_assert!(
                Timestamp(ms) <= e.occurred_at && err.field == "do_not_contact.until",
                "{} -> {}", json, err
            ),
        }
    }

    #[test]
    fn junk_json_never_panics(s in "\\PC{0,64}") {
        let _ = event_from_json(&s);
    }
}

#[test]
fn every_kind_round_trips_through_stream_bytes_in_both_formats() {
    use crate::convert::{WireFormat, event_from_bytes, event_to_bytes};
    for e in samples() {
        for format in [WireFormat::Protobuf, WireFormat::Json] {
            let bytes = event_to_bytes(&e, format);
            assert_eq!(WireFormat::detect(&bytes), format, "{}", e.kind.name());
            assert_eq!(event_from_bytes(&bytes, None).unwrap(), e, "{format:?} detected");
            assert_eq!(
                event_from_bytes(&bytes, Some(format)).unwrap(),
                e,
                "{format:?} named"
            );
        }
    }
}

#[test]
fn stream_bytes_that_do_not_decode_name_the_format() {
    use crate::convert::{WireFormat, event_from_bytes};
    let err = event_from_bytes(b"\xff\xff\xff", None).unwrap_err();
    assert_eq!(err.field, "protobuf");
    let err = event_from_bytes(b" {\"eventId\": 1", None).unwrap_err();
    assert_eq!(err.field, "json");
    // A header that says JSON wins over detection.
    let err = event_from_bytes(b"\x0a\x02e1", Some(WireFormat::Json)).unwrap_err();
    assert_eq!(err.field, "json");
    // Valid protobuf with a missing required field names that field.
    let wire = pb::InteractionEvent {
        event_id: "e1".into(),
        ..Default::default()
    };
    let err = event_from_bytes(&prost::Message::encode_to_vec(&wire), None).unwrap_err();
    assert_ne!(err.field, "protobuf", "{err}");
}

#[test]
fn content_types_name_formats() {
    use crate::convert::WireFormat;
    assert_eq!(
        WireFormat::from_content_type("application/json; charset=utf-8"),
        Some(WireFormat::Json)
    );
    assert_eq!(
        WireFormat::from_content_type("application/x-protobuf"),
        Some(WireFormat::Protobuf)
    );
    assert_eq!(
        WireFormat::from_content_type("Application/Protobuf"),
        Some(WireFormat::Protobuf)
    );
    assert_eq!(WireFormat::from_content_type("text/plain"), None);
}

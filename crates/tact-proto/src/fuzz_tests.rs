//! Fuzzing the wire decoders of outside bytes with proptest: `event_from_bytes` (both
//! formats, named or detected), `event_from_json`, `TryFrom<pb::InteractionEvent> for
//! Event` over arbitrary prost messages, and `proposal_from_pb`. Inputs: arbitrary
//! bytes and text, arbitrary messages (huge and negative timestamps, unknown enum values,
//! empty oneofs), arbitrary JSON near the schema, and mutations of valid encodings.
//! Never a panic; an error always names a field (`protobuf` / `json` when the input is
//! not the message at all) and says what is wrong; what converts round-trips.
//!
//! Cases per test: 1024 by default, `PROPTEST_CASES` to run more; failures are kept in
//! `proptest-regressions/`.

use pbjson_types::{Duration as PbDuration, Timestamp as PbTimestamp};
use proptest::prelude::*;
use serde_json::Value;
use tact_core::Event;

use crate::convert::{
    ConvertError, WireFormat, event_from_bytes, event_from_json, event_to_bytes, event_to_json,
    proposal_from_pb, timestamp_from_pb, timestamp_to_pb,
};
use crate::convert_tests::{any_event, samples};
use crate::pb;
use crate::pb::interaction_event::Kind;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 1024;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Checks

/// An error names a field as a path (`occurred_at`, `consent_changed.channel`,
/// `preferences_changed.accepted_channels.channels[2]`, `json`, `protobuf`) and says why.
fn assert_clear(err: &ConvertError) {
    assert!(!err.field.is_empty(), "{err:?}");
    assert!(
        err.field
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c)),
        "field is not a path: {err:?}"
    );
    assert!(!err.why.trim().is_empty(), "{err:?}");
}

/// A converted event survives every encoding unchanged.
fn assert_round_trips(e: &Event) {
    assert_eq!(Event::try_from(pb::InteractionEvent::from(e)).as_ref(), Ok(e));
    assert_eq!(event_from_json(&event_to_json(e)).as_ref(), Ok(e));
    for format in [WireFormat::Protobuf, WireFormat::Json] {
        let bytes = event_to_bytes(e, format);
        assert_eq!(event_from_bytes(&bytes, Some(format)).as_ref(), Ok(e));
        assert_eq!(event_from_bytes(&bytes, None).as_ref(), Ok(e));
    }
}

fn check(result: Result<Event, ConvertError>) {
    match result {
        Ok(e) => assert_round_trips(&e),
        Err(err) => assert_clear(&err),
    }
}

fn check_bytes(bytes: &[u8]) {
    check(event_from_bytes(bytes, None));
    check(event_from_bytes(bytes, Some(WireFormat::Protobuf)));
    check(event_from_bytes(bytes, Some(WireFormat::Json)));
}

// ---------------------------------------------------------------------------------------------
// Arbitrary wire messages

fn wire_enum() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0..10i32, 1 => any::<i32>(), 1 => Just(i32::MIN), 1 => Just(-1)]
}

fn wire_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9-]{1,8}",
        1 => Just(String::new()),
        2 => "\\PC{0,16}",
        1 => " {1,3}",
        1 => "[!-~]{250,300}",
        1 => prop::sample::select(vec!["Europe/Paris", "UTC", "Nope/Zone", "tact-d1"]).prop_map(String::from),
    ]
}

const MIN_S: i64 = -62_135_596_800;
const MAX_S: i64 = 253_402_300_799;
const MAX_DURATION_S: i64 = 315_576_000_000;

fn pb_timestamp() -> impl Strategy<Value = PbTimestamp> {
    let seconds = prop_oneof![
        4 => MIN_S..=MAX_S,
        2 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, MIN_S - 1, MAX_S + 1, 0, -1]),
    ];
    let nanos = prop_oneof![
        4 => 0..1_000_000_000i32,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![-1, 1_000_000_000, i32::MIN, i32::MAX]),
    ];
    (seconds, nanos).prop_map(|(seconds, nanos)| PbTimestamp { seconds, nanos })
}

fn pb_duration() -> impl Strategy<Value = PbDuration> {
    let seconds = prop_oneof![
        4 => -MAX_DURATION_S..=MAX_DURATION_S,
        2 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, MAX_DURATION_S + 1, -MAX_DURATION_S - 1]),
    ];
    let nanos = prop_oneof![
        4 => -999_999_999..1_000_000_000i32,
        1 => any::<i32>(),
    ];
    (seconds, nanos).prop_map(|(seconds, nanos)| PbDuration { seconds, nanos })
}

fn wire_kind() -> impl Strategy<Value = Option<Kind>> {
    let t = wire_text;
    let e = wire_enum;
    let kind = prop_oneof![
        (t(), t()).prop_map(|(url, category)| Kind::PageViewed(pb::PageViewed { url, category })),
        t().prop_map(|asset| Kind::ContentDownloaded(pb::ContentDownloaded { asset })),
        t().prop_map(|product| Kind::QuoteRequested(pb::QuoteRequested { product })),
        (e(), t())
            .prop_map(|(channel, topic)| Kind::ContactRequested(pb::ContactRequested { channel, topic })),
        (e(), t()).prop_map(|(channel, topic)| Kind::InboundMessage(pb::InboundMessage { channel, topic })),
        (e(), e(), t(), proptest::option::of(t())).prop_map(|(channel, purpose, campaign, decision_id)| {
            Kind::OutreachSent(pb::OutreachSent {
                channel,
                purpose,
                campaign,
                decision_id,
            })
        }),
        (e(), e()).prop_map(|(channel, engagement)| {
            Kind::OutreachEngaged(pb::OutreachEngaged { channel, engagement })
        }),
        (e(), e()).prop_map(|(channel, outcome)| {
            Kind::OutreachUnanswered(pb::OutreachUnanswered { channel, outcome })
        }),
        t().prop_map(|order_id| Kind::Purchase(pb::Purchase { order_id })),
        (proptest::option::of(e()), t())
            .prop_map(|(channel, reason)| Kind::Complaint(pb::Complaint { channel, reason })),
        (e(), e(), any::<bool>(), proptest::option::of(pb_timestamp()), t()).prop_map(
            |(channel, purpose, granted, expires_at, proof)| {
                Kind::ConsentChanged(pb::ConsentChanged {
                    channel,
                    purpose,
                    granted,
                    expires_at,
                    proof,
                })
            }
        ),
        (
            proptest::option::of(t()),
            proptest::option::of(proptest::collection::vec(e(), 0..12)),
            proptest::option::of((any::<u32>(), proptest::option::of(pb_duration()))),
        )
            .prop_map(|(time_zone, channels, limit)| {
                Kind::PreferencesChanged(pb::PreferencesChanged {
                    time_zone,
                    accepted_channels: channels.map(|channels| pb::ChannelList { channels }),
                    max_contacts: limit.map(|(max, window)| pb::ContactLimit { max, window }),
                })
            }),
        (t(), proptest::option::of(pb_timestamp()))
            .prop_map(|(reason, until)| Kind::DoNotContact(pb::DoNotContact { reason, until })),
        (t(), e(), e(), t(), t()).prop_map(|(decision_id, channel, purpose, campaign, requested_by)| {
            Kind::OutreachAuthorized(pb::OutreachAuthorized {
                decision_id,
                channel,
                purpose,
                campaign,
                requested_by,
            })
        }),
    ];
    prop_oneof![8 => kind.prop_map(Some), 1 => Just(None)]
}

fn wire_event() -> impl Strategy<Value = pb::InteractionEvent> {
    (
        wire_text(),
        wire_text(),
        proptest::option::of(pb_timestamp()),
        wire_text(),
        wire_kind(),
    )
        .prop_map(
            |(event_id, customer_id, occurred_at, source, kind)| pb::InteractionEvent {
                event_id,
                customer_id,
                occurred_at,
                source,
                kind,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Arbitrary JSON near the schema

const KEYS: &[&str] = &[
    "eventId",
    "customerId",
    "occurredAt",
    "source",
    "pageViewed",
    "url",
    "category",
    "contentDownloaded",
    "asset",
    "quoteRequested",
    "product",
    "contactRequested",
    "channel",
    "topic",
    "inboundMessage",
    "outreachSent",
    "purpose",
    "campaign",
    "decisionId",
    "outreachEngaged",
    "engagement",
    "outreachUnanswered",
    "outcome",
    "purchase",
    "orderId",
    "complaint",
    "reason",
    "consentChanged",
    "granted",
    "expiresAt",
    "proof",
    "preferencesChanged",
    "timeZone",
    "acceptedChannels",
    "channels",
    "maxContacts",
    "max",
    "window",
    "doNotContact",
    "until",
    "outreachAuthorized",
    "requestedBy",
    "event_id",
    "occurred_at",
    "page_viewed",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        wire_text().prop_map(Value::from),
        // Timestamps, durations, enum names and numbers as strings, well formed or not.
        "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::from),
        "-?[0-9]{0,22}(\\.[0-9]{0,12})?s?".prop_map(Value::from),
        "(CHANNEL|PURPOSE|ENGAGEMENT|NON_RESPONSE)_[A-Z_]{2,14}".prop_map(Value::from),
        prop::sample::select(vec![
            "CHANNEL_EMAIL", "PURPOSE_MARKETING", "ENGAGEMENT_OPENED", "NON_RESPONSE_IGNORED",
            "2026-11-20T09:00:00Z", "3600s", "1e400", "-0", "NaN", "Infinity",
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![6 => prop::sample::select(KEYS).prop_map(String::from), 1 => "[a-zA-Z_]{1,10}"]
}

/// Every path to a value in `v` (object keys and array indexes).
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(map) => map.get_mut(k),
        Value::Array(items) => items.get_mut(k.parse::<usize>().ok()?),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Byte mutations

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    proptest::collection::vec(one, 1..4)
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, mask) if len > 0 => bytes[i % len] ^= mask,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
}

fn sample() -> impl Strategy<Value = Event> {
    prop_oneof![prop::sample::select(samples()), any_event()]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_event_from_bytes_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_bytes(&bytes);
    }

    #[test]
    fn fuzz_event_from_json_arbitrary_text(text in "\\PC{0,256}") {
        check(event_from_json(&text));
        check_bytes(text.as_bytes());
    }

    #[test]
    fn fuzz_event_from_wire_messages(wire in wire_event()) {
        let bytes = prost::Message::encode_to_vec(&wire);
        let direct = Event::try_from(wire.clone());
        // The same message as protobuf bytes and as canonical JSON decodes the same.
        prop_assert_eq!(event_from_bytes(&bytes, None), direct.clone());
        if let Ok(json) = serde_json::to_string(&wire) {
            let via_json = event_from_json(&json);
            match (&direct, &via_json) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(e)) | (Ok(_), Err(e)) => assert_clear(e),
                (Err(e), Ok(_)) => prop_assert!(false, "JSON accepted what protobuf refused: {}", e),
            }
        }
        check(direct);
    }

    #[test]
    fn fuzz_event_from_json_values(v in json_value()) {
        let text = v.to_string();
        check(event_from_json(&text));
    }

    #[test]
    fn fuzz_event_from_json_mutated_fields(
        e in sample(),
        pick in any::<usize>(),
        with in json_value(),
        remove in any::<bool>(),
    ) {
        let mut v = serde_json::to_value(pb::InteractionEvent::from(&e)).unwrap();
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = &all[pick % all.len()];
        if remove {
            let (last, parent) = path.split_last().unwrap();
            if let Some(Value::Object(map)) = get_mut(&mut v, parent) {
                map.remove(last);
            }
        } else if let Some(slot) = get_mut(&mut v, path) {
            *slot = with;
        }
        check(event_from_json(&v.to_string()));
    }

    #[test]
    fn fuzz_event_bytes_mutations(e in sample(), json in any::<bool>(), muts in mutations()) {
        let format = if json { WireFormat::Json } else { WireFormat::Protobuf };
        let mut bytes = event_to_bytes(&e, format);
        apply(&mut bytes, &muts);
        check_bytes(&bytes);
    }

    #[test]
    fn fuzz_proposal_from_pb(
        customer_id in wire_text(),
        channel in wire_enum(),
        purpose in wire_enum(),
        campaign_id in wire_text(),
        requested_by in wire_text(),
        at in proptest::option::of(pb_timestamp()),
    ) {
        let req = pb::DecideRequest { customer_id, channel, purpose, campaign_id, requested_by, at, ..Default::default() };
        match proposal_from_pb(&req) {
            Ok((proposal, at)) => {
                prop_assert_eq!(&proposal.customer_id, &req.customer_id);
                prop_assert_eq!(pb::Channel::from(proposal.channel) as i32, req.channel);
                prop_assert_eq!(pb::Purpose::from(proposal.purpose) as i32, req.purpose);
                if let Some(at) = at {
                    prop_assert_eq!(timestamp_from_pb(&timestamp_to_pb(at), "at"), Ok(at));
                }
            }
            Err(err) => assert_clear(&err),
        }
    }
}

#[test]
fn a_protobuf_event_whose_id_starts_with_a_brace_is_not_taken_for_json() {
    // Found by `fuzz_event_from_wire_messages`: `\n` (the tag of field 1) and a length of
    // 9 read as JSON whitespace, then `{`. Every whitespace length byte: 9, 10, 12, 13, 32.
    for len in [9usize, 10, 12, 13, 32] {
        let mut e = samples().remove(0);
        e.event_id = format!("{{{}", "a".repeat(len - 1));
        let bytes = event_to_bytes(&e, WireFormat::Protobuf);
        assert_eq!(
            WireFormat::detect(&bytes),
            WireFormat::Json,
            "{len}: the ambiguity is real"
        );
        assert_eq!(event_from_bytes(&bytes, None), Ok(e.clone()), "{len}");
        assert_eq!(event_from_bytes(&bytes, Some(WireFormat::Protobuf)), Ok(e));
    }
    // JSON that does not parse still reports the JSON error.
    let err = event_from_bytes(b"\n\t{\"eventId\": 1", None).unwrap_err();
    assert_eq!(err.field, "json");
}

//! One Kafka message to one event, or the reason it is a dead letter.

use tact_core::{Admission, Event, Origin, Timestamp};
use tact_proto::{WireFormat, event_from_bytes};

use crate::origin::OriginKey;

/// What the edge checks of a message from the topic, beyond decoding it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageAdmission {
    pub admission: Admission,
    /// The key tact's own producer signs with; without one, no message is tact's own.
    pub origin_key: Option<OriginKey>,
}

/// The parts of a Kafka message the consumer judges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Envelope<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
    /// The `tact-origin` header.
    pub origin: Option<&'a [u8]>,
    /// The message's Kafka timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
}

/// Decodes a message ([`decode_message`]) and admits its event: a message signed by
/// tact's own producer is tact's (its events were admitted at tact's edge already);
/// any other must pass [`Admission::admit`] as an outside event, against `now` or the
/// message's own timestamp if that is earlier and plausible (so a rebuild from the topic
/// later judges every honest message as the live consumer did). The error is the
/// dead-letter reason.
pub fn decode_admitted(m: Envelope<'_>, rules: &MessageAdmission, now: Timestamp) -> Result<Event, String> {
    let event = decode_message(m.key, m.value, m.content_type)?;
    let signed = match (&rules.origin_key, m.origin, m.value) {
        (Some(key), Some(sig), Some(value)) => key.verify(value, sig),
        _ => false,
    };
    if signed {
        return Ok(event);
    }
    // The message's timestamp, when it is earlier than the clock and the event is not
    // dated further ahead of it than the allowed skew; else the clock. A producer
    // whose clock is behind (or was never set: a timestamp near 1970) would otherwise
    // get an honestly dated event refused as "ahead", or a withdrawal moved back to a
    // bogus instant before the grant it follows.
    let judged_at = match m.timestamp {
        Some(ts)
            if ts > 0
                && ts < now.0
                && event.occurred_at.since(Timestamp(ts)) <= rules.admission.max_clock_skew =>
        {
            Timestamp(ts)
        }
        _ => now,
    };
    let why = match rules.admission.admit(&event, judged_at, Origin::Outside) {
        Ok(()) => {
            let mut event = event;
            // An event dated ahead of the instant it was judged at takes effect then
            // (see `Admission::takes_effect`): a rebuild from the topic moves an honest
            // message to the same instant.
            if let Some(at) = rules.admission.takes_effect(&event, judged_at) {
                tracing::debug!(
                    event_id = %event.event_id,
                    occurred_at = %event.occurred_at,
                    in_effect = %at,
                    "event dated ahead of the clock: in effect on arrival"
                );
                metrics::counter!("tact_events_in_effect_on_arrival_total").increment(1);
                event.occurred_at = at;
            }
            if let Some(note) = event.ignored() {
                tracing::warn!(event_id = %event.event_id, "{note}");
                metrics::counter!("tact_events_field_ignored_total").increment(1);
            }
            return Ok(event);
        }
        Err(e) => e.to_string(),
    };
    Err(if m.origin.is_some() {
        format!(
            "{why} (its {} signature does not check)",
            crate::origin::ORIGIN_HEADER
        )
    } else {
        why
    })
}

/// Decodes a message: its value is a `tact.v1.InteractionEvent` in the format its
/// `content-type` header names, else the detected one; its key must be the event's
/// customer id (the key decides the partition, and so which instance owns the customer).
/// The error is the dead-letter reason, naming the field at fault.
pub fn decode_message(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    content_type: Option<&[u8]>,
) -> Result<Event, String> {
    let format = match content_type {
        None => None,
        Some(raw) => {
            let text = String::from_utf8_lossy(raw);
            match WireFormat::from_content_type(&text) {
                Some(f) => Some(f),
                None => {
                    return Err(format!(
                        "content-type: unsupported {text:?} (use application/x-protobuf or application/json)"
                    ));
                }
            }
        }
    };
    let value = match value {
        Some(v) if !v.is_empty() => v,
        _ => return Err("value: empty (expected a tact.v1.InteractionEvent)".into()),
    };
    // JSON may start with a UTF-8 byte order mark (some producers write one); it is
    // never the start of a protobuf message (0xEF is no valid field tag).
    let value = match value.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) if format != Some(WireFormat::Protobuf) => rest,
        _ => value,
    };
    let event = event_from_bytes(value, format).map_err(|e| e.to_string())?;
    match key {
        None => Err(format!(
            "key: missing (must be the customer id {:?})",
            event.customer_id
        )),
        Some(k) if k != event.customer_id.as_bytes() => Err(format!(
            "key: {:?} is not the event's customer id {:?}",
            String::from_utf8_lossy(k),
            event.customer_id
        )),
        Some(_) => Ok(event),
    }
}

/// The value of the first header named `name` (ASCII case-insensitive) among a
/// message's `(name, value)` headers; `None` if there is none or it has no value.
pub fn find_header<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    name: &str,
) -> Option<&'a [u8]> {
    headers
        .into_iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use tact_core::{Channel, EventKind, Purpose};
    use tact_proto::event_to_bytes;

    use super::*;

    fn event() -> Event {
        Event {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            occurred_at: Timestamp(1_700_000_000_000),
            source: "web".into(),
            kind: EventKind::Purchase {
                order_id: "o1".into(),
            },
        }
    }

    #[test]
    fn decodes_both_formats_with_or_without_a_header() {
        let e = event();
        for f in [WireFormat::Protobuf, WireFormat::Json] {
            let v = event_to_bytes(&e, f);
            assert_eq!(decode_message(Some(b"c1"), Some(&v), None).unwrap(), e);
            let ct = f.content_type().as_bytes();
            assert_eq!(decode_message(Some(b"c1"), Some(&v), Some(ct)).unwrap(), e);
        }
        // JSON after a UTF-8 byte order mark, with the JSON header or none.
        let v = [&b"\xEF\xBB\xBF"[..], &event_to_bytes(&e, WireFormat::Json)].concat();
        for ct in [None, Some(WireFormat::Json.content_type().as_bytes())] {
            assert_eq!(decode_message(Some(b"c1"), Some(&v), ct), Ok(e.clone()));
        }
    }

    #[test]
    fn bad_messages_get_reasons_naming_the_field() {
        let v = event_to_bytes(&event(), WireFormat::Protobuf);
        let why = |r: Result<Event, String>| r.unwrap_err();
        assert!(why(decode_message(None, Some(&v), None)).starts_with("key: missing"));
        assert!(why(decode_message(Some(b"c2"), Some(&v), None)).starts_with("key: \"c2\""));
        assert!(why(decode_message(Some(b"c1"), None, None)).starts_with("value: empty"));
        assert!(why(decode_message(Some(b"c1"), Some(b"\xff\xfe"), None)).starts_with("protobuf:"));
        assert!(why(decode_message(Some(b"c1"), Some(b"{nope"), None)).starts_with("json:"));
        assert!(why(decode_message(Some(b"c1"), Some(&v), Some(b"text/plain"))).starts_with("content-type:"));
        let bad_id =
            br#"{"eventId":"e1","customerId":"has space","occurredAt":"2026-11-20T09:00:00Z","purchase":{}}"#;
        let r = why(decode_message(Some(b"has space"), Some(bad_id), None));
        assert!(r.starts_with("customer_id:"), "{r}");
    }

    fn authorized() -> Event {
        Event {
            event_id: "tact-d1".into(),
            source: "tact".into(),
            kind: EventKind::OutreachAuthorized {
                decision_id: "d1".into(),
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign: String::new(),
                requested_by: String::new(),
            },
            ..event()
        }
    }

    #[test]
    fn only_tacts_own_signature_admits_its_reserved_events() {
        let key = OriginKey::from_text(&OriginKey::generate_text()).unwrap();
        let rules = MessageAdmission {
            admission: Admission::default(),
            origin_key: Some(key.clone()),
        };
        let now = Timestamp(1_700_000_000_000);
        let v = event_to_bytes(&authorized(), WireFormat::Protobuf);
        let sig = key.sign(&v);
        let msg = |origin: Option<&'static [u8]>| Envelope {
            key: Some(b"c1"),
            value: None,
            content_type: None,
            origin,
            timestamp: None,
        };
        let signed = Envelope {
            value: Some(&v),
            origin: Some(sig.as_bytes()),
            ..msg(None)
        };
        assert_eq!(decode_admitted(signed, &rules, now).unwrap(), authorized());
        // Unsigned, signed with another key, or over another value: from outside.
        let forged = OriginKey::from_text(&OriginKey::generate_text())
            .unwrap()
            .sign(&v);
        for origin in [None, Some(forged.as_bytes()), Some(&b"00"[..])] {
            let m = Envelope {
                value: Some(&v),
                origin,
                ..msg(None)
            };
            let why = decode_admitted(m, &rules, now).unwrap_err();
            assert!(
                why.starts_with("event_id: the prefix `tact-` is reserved"),
                "{why}"
            );
        }
        // Without a key, nothing is tact's own.
        let keyless = MessageAdmission::default();
        assert!(decode_admitted(signed, &keyless, now).is_err());
    }

    #[test]
    fn events_dated_beyond_the_skew_are_refused_naming_the_field() {
        let rules = MessageAdmission::default();
        let now = Timestamp(1_700_000_000_000);
        let mut e = event();
        e.occurred_at = Timestamp(now.0 + 25 * 3_600_000);
        let v = event_to_bytes(&e, WireFormat::Protobuf);
        let m = Envelope {
            key: Some(b"c1"),
            value: Some(&v),
            ..Envelope::default()
        };
        assert!(
            decode_admitted(m, &rules, now)
                .unwrap_err()
                .starts_with("occurred_at:")
        );
        // Judged against the message's own (earlier) timestamp, as a rebuild would.
        e.occurred_at = Timestamp(now.0 + 3_600_000);
        let v = event_to_bytes(&e, WireFormat::Protobuf);
        let at = |timestamp| Envelope {
            key: Some(b"c1"),
            value: Some(&v),
            timestamp,
            ..Envelope::default()
        };
        assert!(decode_admitted(at(None), &rules, now).is_ok());
        assert!(decode_admitted(at(Some(now.0 - 23 * 3_600_000 + 1)), &rules, now).is_ok());
        // Further ahead of the message's timestamp than the skew allows, but not of the
        // clock: the producer's clock is behind, not the event's. Judged against the
        // clock (and in effect from it, being an hour ahead of it).
        for behind in [now.0 - 24 * 3_600_000, 1] {
            assert_eq!(
                decode_admitted(at(Some(behind)), &rules, now).map(|e| e.occurred_at),
                Ok(now)
            );
        }
        // A timestamp ahead of the clock is not believed.
        assert!(decode_admitted(at(Some(now.0 + 48 * 3_600_000)), &rules, now).is_ok());
    }

    #[test]
    fn a_withdrawal_with_a_meaningless_expiry_is_decoded_not_dead_lettered() {
        let rules = MessageAdmission::default();
        let now = Timestamp(1_700_000_000_000);
        let withdrawal = Event {
            occurred_at: Timestamp(now.0 - 60_000),
            kind: EventKind::ConsentChanged {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                granted: false,
                // Before the withdrawal itself: nonsense, but no reason to lose it.
                expires_at: Some(Timestamp(now.0 - 3_600_000)),
                proof: "unsubscribe link".into(),
            },
            ..event()
        };
        let v = event_to_bytes(&withdrawal, WireFormat::Protobuf);
        let m = Envelope {
            key: Some(b"c1"),
            value: Some(&v),
            ..Envelope::default()
        };
        assert_eq!(decode_admitted(m, &rules, now), Ok(withdrawal));
    }

    #[test]
    fn a_withdrawal_dated_ahead_takes_effect_when_the_message_was_made() {
        let rules = MessageAdmission::default();
        let now = Timestamp(1_700_000_000_000);
        let withdrawal = Event {
            occurred_at: Timestamp(now.0 + 3_600_000),
            kind: EventKind::ConsentChanged {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                granted: false,
                expires_at: None,
                proof: "unsubscribe link".into(),
            },
            ..event()
        };
        let v = event_to_bytes(&withdrawal, WireFormat::Protobuf);
        let at = |timestamp| Envelope {
            key: Some(b"c1"),
            value: Some(&v),
            timestamp,
            ..Envelope::default()
        };
        // Now, or the message's own time when earlier (as a rebuild would judge it).
        assert_eq!(decode_admitted(at(None), &rules, now).unwrap().occurred_at, now);
        let made = now.0 - 60_000;
        assert_eq!(
            decode_admitted(at(Some(made)), &rules, now).unwrap().occurred_at,
            Timestamp(made)
        );
        // A purchase dated ahead takes effect on arrival too.
        let mut purchase = event();
        purchase.occurred_at = Timestamp(now.0 + 3_600_000);
        let v = event_to_bytes(&purchase, WireFormat::Protobuf);
        let m = Envelope {
            key: Some(b"c1"),
            value: Some(&v),
            ..Envelope::default()
        };
        assert_eq!(decode_admitted(m, &rules, now).unwrap().occurred_at, now);
        // A withdrawal dated a minute ago from a producer whose clock is a day behind
        // (or unset) is neither refused as "ahead" nor moved back to the timestamp,
        // before a grant that came before it: it keeps its date.
        let honest = Event {
            occurred_at: Timestamp(now.0 - 60_000),
            ..withdrawal
        };
        let v = event_to_bytes(&honest, WireFormat::Protobuf);
        for behind in [now.0 - 25 * 3_600_000, 1_000] {
            let m = Envelope {
                key: Some(b"c1"),
                value: Some(&v),
                timestamp: Some(behind),
                ..Envelope::default()
            };
            assert_eq!(decode_admitted(m, &rules, now).as_ref(), Ok(&honest));
        }
        // Dated a year ahead: still admitted (a customer's "stop" is never refused for
        // its date), in effect on arrival.
        let far = Event {
            occurred_at: Timestamp(now.0 + 365 * 86_400_000),
            ..honest
        };
        let v = event_to_bytes(&far, WireFormat::Protobuf);
        let m = Envelope {
            key: Some(b"c1"),
            value: Some(&v),
            ..Envelope::default()
        };
        assert_eq!(decode_admitted(m, &rules, now).unwrap().occurred_at, now);
    }
}

/// Fuzzing what a Kafka message brings: keys, values and headers, and the dead letters
/// read back from the log. Never a panic; a dead-letter reason always starts with the
/// field at fault (`key`, `value`, `content-type`, `protobuf`, `json` or an event field);
/// what decodes round-trips. Cases: 1024, `PROPTEST_CASES` to run more; failures are
/// kept in `proptest-regressions/`.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use tact_log::feed::DeadLetter;
    use tact_proto::{WireFormat, event_to_bytes};

    use super::*;

    fn config() -> ProptestConfig {
        let mut config = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = 1024;
        }
        config
    }

    fn assert_reason(reason: &str) {
        let (field, why) = reason
            .split_once(": ")
            .unwrap_or_else(|| panic!("no field in {reason:?}"));
        assert!(
            !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]-".contains(c)),
            "{reason:?}"
        );
        assert!(!why.trim().is_empty(), "{reason:?}");
    }

    fn check(key: Option<&[u8]>, value: Option<&[u8]>, content_type: Option<&[u8]>) {
        match decode_message(key, value, content_type) {
            Ok(event) => {
                assert_eq!(key, Some(event.customer_id.as_bytes()));
                for format in [WireFormat::Protobuf, WireFormat::Json] {
                    let bytes = event_to_bytes(&event, format);
                    let ct = format.content_type().as_bytes();
                    assert_eq!(decode_message(key, Some(&bytes), Some(ct)).as_ref(), Ok(&event));
                }
            }
            Err(reason) => assert_reason(&reason),
        }
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(prop_oneof![
            prop::sample::select(vec![
                "application/json",
                "application/x-protobuf",
                "APPLICATION/JSON; charset=utf-8",
                "application/protobuf;",
                "text/plain",
                "",
                ";",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            bytes(64),
        ])
    }

    fn valid_value() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let event = tact_core::Event {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            occurred_at: tact_core::Timestamp(1_700_000_000_000),
            source: "web".into(),
            kind: tact_core::EventKind::ConsentChanged {
                channel: tact_core::Channel::Sms,
                purpose: tact_core::Purpose::Marketing,
                granted: true,
                expires_at: Some(tact_core::Timestamp(1_800_000_000_000)),
                proof: "form".into(),
            },
        };
        any::<bool>().prop_map(move |json| {
            let format = if json {
                WireFormat::Json
            } else {
                WireFormat::Protobuf
            };
            (b"c1".to_vec(), event_to_bytes(&event, format))
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn fuzz_decode_message_arbitrary(
            key in proptest::option::of(bytes(48)),
            value in proptest::option::of(bytes(4096)),
            content_type in content_type(),
        ) {
            check(key.as_deref(), value.as_deref(), content_type.as_deref());
        }

        #[test]
        fn fuzz_decode_message_mutated_values(
            (key, mut value) in valid_value(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..4),
            other_key in proptest::option::of(bytes(8)),
            content_type in content_type(),
        ) {
            for (at, b, op) in edits {
                let len = value.len();
                match op {
                    0 if len > 0 => value[at % len] ^= b | 1,
                    1 => value.insert(at % (len + 1), b),
                    _ => value.truncate(at % (len + 1)),
                }
            }
            let key = other_key.unwrap_or(key);
            check(Some(&key), Some(&value), content_type.as_deref());
        }

        #[test]
        fn fuzz_headers(
            headers in proptest::collection::vec(
                (prop_oneof![Just("content-type".to_owned()), Just("Content-Type".to_owned()), "\\PC{0,16}"],
                 proptest::option::of(bytes(32))),
                0..8,
            ),
            value in bytes(256),
        ) {
            let found = find_header(headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())), "content-type");
            let first = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            prop_assert_eq!(found, first.and_then(|(_, v)| v.as_deref()));
            check(Some(b"c1"), Some(&value), found);
        }

        #[test]
        fn fuzz_dead_letter_decode(raw in bytes(2048), text in "\\PC{0,200}") {
            for input in [&raw[..], text.as_bytes()] {
                match DeadLetter::decode(input) {
                    Ok(d) => prop_assert_eq!(DeadLetter::decode(&d.encode()).unwrap(), d),
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
        }

        #[test]
        fn fuzz_dead_letter_mutations(
            payload in bytes(64),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let d = DeadLetter {
                topic: "tact.interactions".into(),
                partition: 3,
                offset: 77,
                key: "c1".into(),
                reason: "json: expected value".into(),
                payload,
                recorded_at: 1_700_000_000_000,
            };
            let mut raw = d.encode();
            for (at, b, op) in edits {
                let len = raw.len();
                match op {
                    0 if len > 0 => raw[at % len] = b,
                    1 => raw.insert(at % (len + 1), b),
                    _ => raw.truncate(at % (len + 1)),
                }
            }
            match DeadLetter::decode(&raw) {
                Ok(d) => prop_assert_eq!(DeadLetter::decode(&d.encode()).unwrap(), d),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}

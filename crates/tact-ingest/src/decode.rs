//! One Kafka message to one event, or the reason it is a dead letter.

use tact_core::Event;
use tact_proto::{WireFormat, event_from_bytes};

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

#[cfg(test)]
mod tests {
    use tact_core::{EventKind, Timestamp};
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
}

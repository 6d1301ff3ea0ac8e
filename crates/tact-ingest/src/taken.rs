//! Messages whose `event_id` another event already holds: dead letters, written in the
//! same atomic append as the offset that moves past them (see
//! [`tact_log::Log::submit_checked`]).
//!
//! An event id names one event. A producer's retry carries the same event and is a
//! duplicate (skipped, its offset advancing); a message with ANOTHER event under an id
//! the log holds cannot be recorded, and must not vanish as if it were a retry: a
//! consent withdrawal sent under an id some other system took would be lost unseen.

use std::sync::{Arc, Mutex};

use tact_core::Event;
use tact_log::OnTaken;
use tact_log::feed::DeadLetter;

/// Where one event of an append came from: partition and offset. (Its message key is
/// its customer id: decoding refuses any other.)
pub(crate) type Source = (i32, i64);

/// The dead letters made while an append was written, for reporting once it is durable.
pub(crate) type Letters = Arc<Mutex<Vec<DeadLetter>>>;

/// The `on_taken` of an append whose events came from `sources` (one per event, in
/// order) of `topic`: a dead letter naming the id and the position of the event that
/// holds it. The payload is the event as decoded, in JSON (the message itself is no
/// longer at hand). Each is also kept in `letters`, if given, to report once durable.
/// `recorded_at`: milliseconds since the epoch, or 0 in a rebuild.
pub(crate) fn dead_letter_on_taken(
    topic: String,
    sources: Vec<Source>,
    letters: Option<Letters>,
    recorded_at: fn() -> i64,
) -> Box<OnTaken<'static>> {
    Box::new(move |i, event, holder| {
        let &(partition, offset) = sources.get(i)?;
        let d = taken_letter(&topic, partition, offset, event, holder, recorded_at());
        let entry = (d.key(), d.encode());
        if let Some(letters) = &letters {
            letters.lock().unwrap_or_else(|p| p.into_inner()).push(d);
        }
        Some(entry)
    })
}

fn taken_letter(
    topic: &str,
    partition: i32,
    offset: i64,
    event: &Event,
    holder: u64,
    recorded_at: i64,
) -> DeadLetter {
    let mut payload = tact_proto::event_to_json(event).into_bytes();
    payload.truncate(DeadLetter::MAX_PAYLOAD);
    DeadLetter {
        topic: topic.to_owned(),
        partition,
        offset,
        key: event.customer_id.clone(),
        reason: format!(
            "event_id: `{}` is already recorded (log position {holder}) for another event; \
             an event id names one event: send this one under an id of its own \
             (payload: the event as decoded, in JSON)",
            event.event_id
        ),
        payload,
        recorded_at,
    }
}

#[cfg(test)]
mod tests {
    use tact_core::{Channel, EventKind, Purpose, Timestamp};

    use super::*;

    fn withdrawal() -> Event {
        Event {
            event_id: "e-1".into(),
            customer_id: "c-1".into(),
            occurred_at: Timestamp(1_000),
            source: "crm".into(),
            kind: EventKind::ConsentChanged {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                granted: false,
                expires_at: None,
                proof: "form".into(),
            },
        }
    }

    #[test]
    fn a_taken_id_becomes_a_dead_letter_at_its_message() {
        let letters = Letters::default();
        let mut f = dead_letter_on_taken(
            "events".into(),
            vec![(0, 10), (3, 41)],
            Some(Arc::clone(&letters)),
            || 7,
        );
        let (key, value) = f(1, &withdrawal(), 5).expect("a dead letter");
        let got = DeadLetter::decode(&value).expect("decodes");
        assert_eq!(key, got.key());
        assert_eq!((got.topic.as_str(), got.partition, got.offset), ("events", 3, 41));
        assert_eq!(got.key, "c-1");
        assert_eq!(got.recorded_at, 7);
        assert!(
            got.reason
                .starts_with("event_id: `e-1` is already recorded (log position 5) for another event"),
            "{}",
            got.reason
        );
        let decoded = tact_proto::event_from_json(std::str::from_utf8(&got.payload).expect("utf-8"));
        assert_eq!(decoded, Ok(withdrawal()));
        assert_eq!(*letters.lock().expect("lock"), vec![got]);
        // An index past the sources (not this request's event) gives nothing.
        assert!(f(2, &withdrawal(), 5).is_none());
    }
}

//! Byte layouts of the log: event records and keys. Pure functions, no I/O.
//!
//! An event record is `[version: u8][crc32 of payload: u32 big-endian][payload]`, where
//! the payload is bincode 2 (serde, standard config) of [`tact_core::Event`].

use tact_core::Event;

use crate::error::LogError;

/// The current event record format.
pub const RECORD_VERSION: u8 = 1;
/// Bytes before the payload: version and crc.
pub const RECORD_HEADER: usize = 5;

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes one event as a versioned, checksummed record.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, LogError> {
    let mut buf = Vec::with_capacity(RECORD_HEADER + 96 + event.event_id.len() + event.customer_id.len());
    encode_event_into(event, &mut buf)?;
    Ok(buf)
}

/// Appends the record of `event` to `buf` (which need not be empty).
pub fn encode_event_into(event: &Event, buf: &mut Vec<u8>) -> Result<(), LogError> {
    let start = buf.len();
    buf.extend_from_slice(&[RECORD_VERSION, 0, 0, 0, 0]);
    bincode::serde::encode_into_std_write(event, buf, bincode_config()).map_err(|e| LogError::Encode {
        event_id: event.event_id.clone(),
        reason: e.to_string(),
    })?;
    let crc = crc32fast::hash(&buf[start + RECORD_HEADER..]);
    buf[start + 1..start + RECORD_HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Decodes the record stored at `seq`; any defect is a [`LogError::Corrupt`] naming `seq`.
pub fn decode_event(seq: u64, record: &[u8]) -> Result<Event, LogError> {
    let payload = check_record(seq, record)?;
    let (event, read) = bincode::serde::decode_from_slice::<Event, _>(payload, bincode_config())
        .map_err(|e| LogError::corrupt(seq, format!("payload does not decode: {e}")))?;
    if read != payload.len() {
        return Err(LogError::corrupt(
            seq,
            format!("{} trailing bytes after the event", payload.len() - read),
        ));
    }
    Ok(event)
}

/// Checks version and crc, and returns the payload.
pub fn check_record(seq: u64, record: &[u8]) -> Result<&[u8], LogError> {
    if record.len() < RECORD_HEADER {
        return Err(LogError::corrupt(
            seq,
            format!("record is {} bytes, shorter than its header", record.len()),
        ));
    }
    if record[0] != RECORD_VERSION {
        return Err(LogError::corrupt(
            seq,
            format!("unknown format version {} (expected {RECORD_VERSION})", record[0]),
        ));
    }
    let stored = u32::from_be_bytes([record[1], record[2], record[3], record[4]]);
    let payload = &record[RECORD_HEADER..];
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(LogError::corrupt(
            seq,
            format!("crc mismatch: stored {stored:08x}, computed {actual:08x}"),
        ));
    }
    Ok(payload)
}

/// The current index journal entry format.
pub const INDEX_VERSION: u8 = 1;

/// Encodes the index journal entry of one append: the `(event_id, customer_id)` of each
/// recorded event, in seq order (the entry's key is the first seq; the rest follow
/// consecutively). Layout as an event record: `[version][crc32 of payload][payload]`,
/// the payload being bincode 2 of the pairs.
pub fn encode_index_entry(pairs: &[(&str, &str)]) -> Result<Vec<u8>, LogError> {
    let mut buf = Vec::with_capacity(RECORD_HEADER + pairs.len() * 40);
    buf.extend_from_slice(&[INDEX_VERSION, 0, 0, 0, 0]);
    bincode::serde::encode_into_std_write(pairs, &mut buf, bincode_config()).map_err(|e| {
        LogError::Encode {
            event_id: pairs.first().map(|p| p.0.to_owned()).unwrap_or_default(),
            reason: e.to_string(),
        }
    })?;
    let crc = crc32fast::hash(&buf[RECORD_HEADER..]);
    buf[1..RECORD_HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(buf)
}

/// Decodes an index journal entry; any defect is a [`LogError::CorruptKey`] of the
/// `index` tree naming `first_seq`.
pub fn decode_index_entry(first_seq: u64, entry: &[u8]) -> Result<Vec<(String, String)>, LogError> {
    let corrupt = |reason: String| LogError::CorruptKey {
        tree: "index",
        reason: format!("entry at seq {first_seq}: {reason}"),
    };
    if entry.len() < RECORD_HEADER {
        return Err(corrupt(format!("{} bytes, shorter than its header", entry.len())));
    }
    if entry[0] != INDEX_VERSION {
        return Err(corrupt(format!("unknown format version {}", entry[0])));
    }
    let stored = u32::from_be_bytes([entry[1], entry[2], entry[3], entry[4]]);
    let payload = &entry[RECORD_HEADER..];
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(corrupt(format!(
            "crc mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    let (pairs, read) =
        bincode::serde::decode_from_slice::<Vec<(String, String)>, _>(payload, bincode_config())
            .map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
    if read != payload.len() {
        return Err(corrupt(format!("{} trailing bytes", payload.len() - read)));
    }
    Ok(pairs)
}

/// The `events` tree key of a sequence number: big-endian, so keys sort in log order.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of an `events` tree key (or an `ids` value).
pub fn parse_seq(tree: &'static str, bytes: &[u8]) -> Result<u64, LogError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| LogError::CorruptKey {
        tree,
        reason: format!("expected 8 bytes, got {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// The prefix of a customer's index keys: `customer_id` bytes and a 0x00 separator.
pub fn customer_prefix(customer_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(customer_id.len() + 9);
    key.extend_from_slice(customer_id.as_bytes());
    key.push(0);
    key
}

/// A `customers` index key: `customer_id` bytes, 0x00, big-endian seq.
pub fn customer_key(customer_id: &str, seq: u64) -> Vec<u8> {
    let mut key = customer_prefix(customer_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of a customer index key with the given prefix length, if the key has exactly
/// that layout (a longer customer id that merely starts with the prefix does not).
pub fn customer_key_seq(key: &[u8], prefix_len: usize) -> Option<u64> {
    if key.len() != prefix_len + 8 {
        return None;
    }
    key[prefix_len..].try_into().ok().map(u64::from_be_bytes)
}

/// Decodes the record that a customer index (`tree`) names at `seq`: an error if the
/// record is missing or corrupt, `None` if it belongs to another customer.
pub fn decode_indexed(
    tree: &'static str,
    customer_id: &str,
    seq: u64,
    record: Option<&[u8]>,
) -> Result<Option<Event>, LogError> {
    let record = record.ok_or_else(|| LogError::CorruptKey {
        tree,
        reason: format!("index names seq {seq}, which is not in the log"),
    })?;
    let event = decode_event(seq, record)?;
    Ok((event.customer_id == customer_id).then_some(event))
}

#[cfg(test)]
mod tests {
    use tact_core::{Channel, EventKind, Purpose, Timestamp};

    use super::*;

    fn event() -> Event {
        Event {
            event_id: "e-1".into(),
            customer_id: "c-1".into(),
            occurred_at: Timestamp(1_700_000_000_000),
            source: "crm".into(),
            kind: EventKind::OutreachSent {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign: "spring".into(),
                decision_id: Some("d-9".into()),
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let e = event();
        let rec = encode_event(&e).unwrap();
        assert_eq!(rec[0], RECORD_VERSION);
        assert_eq!(decode_event(7, &rec).unwrap(), e);
        let mut buf = vec![1, 2, 3];
        encode_event_into(&e, &mut buf).unwrap();
        assert_eq!(&buf[3..], &rec[..]);
    }

    #[test]
    fn a_flipped_bit_is_a_crc_error_naming_the_seq() {
        let mut rec = encode_event(&event()).unwrap();
        let last = rec.len() - 1;
        rec[last] ^= 0x10;
        let err = decode_event(42, &rec).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { seq: 42, .. }), "{err}");
        assert!(err.to_string().contains("crc"), "{err}");
    }

    #[test]
    fn unknown_version_and_short_records_are_errors() {
        let mut rec = encode_event(&event()).unwrap();
        rec[0] = 9;
        assert!(
            decode_event(1, &rec)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        assert!(matches!(
            decode_event(3, &[1, 0]),
            Err(LogError::Corrupt { seq: 3, .. })
        ));
    }

    #[test]
    fn garbage_with_a_valid_crc_is_a_decode_error() {
        let payload = [0xff_u8; 3];
        let mut rec = vec![RECORD_VERSION];
        rec.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        rec.extend_from_slice(&payload);
        assert!(matches!(
            decode_event(5, &rec),
            Err(LogError::Corrupt { seq: 5, .. })
        ));
    }

    #[test]
    fn index_entries_round_trip_and_check_their_crc() {
        let entry = encode_index_entry(&[("e-1", "c-1"), ("e-2", "c-2")]).unwrap();
        assert_eq!(
            decode_index_entry(1, &entry).unwrap(),
            vec![
                ("e-1".to_owned(), "c-1".to_owned()),
                ("e-2".to_owned(), "c-2".to_owned())
            ]
        );
        let mut bad = entry.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            decode_index_entry(7, &bad)
                .unwrap_err()
                .to_string()
                .contains("seq 7")
        );
        assert!(decode_index_entry(7, &entry[..3]).is_err());
    }

    #[test]
    fn keys_sort_in_order() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(parse_seq("events", &seq_key(99)).unwrap(), 99);
        assert!(parse_seq("events", &[1, 2]).is_err());
        let k = customer_key("abc", 5);
        assert_eq!(customer_key_seq(&k, customer_prefix("abc").len()), Some(5));
        assert!(customer_key("ab", 1) < customer_key("ab", 2));
        // "ab" + 0x00 sorts before "ab!" so a prefix scan of "ab" never meets "ab!".
        assert!(customer_key("ab", u64::MAX) < customer_key("ab!", 0));
    }
}

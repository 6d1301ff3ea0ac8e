//! Byte layouts of the log: event records and keys. Pure functions, no I/O.
//!
//! An event record is `[version: u8][crc32 of payload: u32 big-endian][payload]`, where
//! the payload is bincode 2 (serde, standard config) of [`tact_core::Event`]. The sled
//! backend stores the records of one append together as a [chunk](encode_chunk) under
//! the key of its first seq.

use tact_core::Event;

use crate::error::LogError;

/// The current event record format.
pub const RECORD_VERSION: u8 = 1;
/// Bytes before the payload: version and crc.
pub const RECORD_HEADER: usize = 5;

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Decodes bincode (standard configuration) of a `T` from `bytes` with a limit that
/// bounds what a length read from the bytes can make it allocate.
///
/// bincode 2 allocates a string's buffer at the length its prefix claims *before*
/// reading the bytes, and without a limit nothing checks that claim: a corrupt length
/// (say 2^40) is an allocation failure, which aborts the process instead of being a
/// decode error. With a limit, a claim beyond it is `LimitExceeded`. bincode counts
/// each integer at its in-memory size (a varint u64 read from 1 byte counts 8), so a
/// valid encoding of `n` bytes counts at most `8 n`; the limit is the smallest of a few
/// constant tiers (powers of 4, bincode's limit is a type parameter) at least `8 n`,
/// so no allocation exceeds `32 n` bytes (4 KiB at least) whatever the input.
pub fn decode_bounded<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let need = bytes.len().saturating_mul(8);
    macro_rules! tiers {
        ($($shift:literal)*) => {$(
            if need <= 1usize << $shift {
                return bincode::serde::decode_from_slice(
                    bytes,
                    bincode_config().with_limit::<{ 1usize << $shift }>(),
                );
            }
        )*};
    }
    tiers!(12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42);
    bincode::serde::decode_from_slice(bytes, bincode_config().with_limit::<{ 1usize << 44 }>())
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
    let (event, read) = decode_bounded::<Event>(payload)
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

/// The current chunk format: the records of one append under one key.
pub const CHUNK_VERSION: u8 = 2;
/// Bytes of a chunk before its offset table: version, crc32 of count and table, count.
pub const CHUNK_HEADER: usize = 9;

/// Encodes the records of consecutive events as one chunk, the value stored under the
/// key of the first event's seq:
///
/// `[CHUNK_VERSION: u8][crc32 of the next 4 + 4n bytes: u32 BE][n: u32 BE]`
/// `[end offset of each record in the body: n × u32 BE][body: the n records]`
///
/// Each record in the body is a complete event record (`[version][crc32][payload]`, see
/// [`encode_event`]), so a bad record is reported at its own seq and the rest of the
/// chunk stays readable; the table's own crc guards the count and the offsets.
pub fn encode_chunk<'a, I>(events: I) -> Result<Vec<u8>, LogError>
where
    I: IntoIterator<Item = &'a Event>,
    I::IntoIter: ExactSizeIterator,
{
    let events = events.into_iter();
    let n = events.len();
    let table_end = CHUNK_HEADER + 4 * n;
    let mut buf = Vec::with_capacity(table_end + n * 96);
    buf.resize(table_end, 0);
    buf[0] = CHUNK_VERSION;
    let count = u32::try_from(n).map_err(|_| LogError::Encode {
        event_id: String::new(),
        reason: format!("{n} events do not fit in one chunk"),
    })?;
    buf[5..CHUNK_HEADER].copy_from_slice(&count.to_be_bytes());
    for (i, event) in events.enumerate() {
        encode_event_into(event, &mut buf)?;
        let end = u32::try_from(buf.len() - table_end).map_err(|_| LogError::Encode {
            event_id: event.event_id.clone(),
            reason: "chunk exceeds 4 GiB".into(),
        })?;
        let at = CHUNK_HEADER + 4 * i;
        buf[at..at + 4].copy_from_slice(&end.to_be_bytes());
    }
    let crc = crc32fast::hash(&buf[5..table_end]);
    buf[1..5].copy_from_slice(&crc.to_be_bytes());
    Ok(buf)
}

/// The records stored under one `events` key: a chunk ([`encode_chunk`]), or a single
/// event record as written by databases before chunks.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    first: u64,
    layout: Layout<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Layout<'a> {
    /// One record (the layout before chunks); checked when decoded.
    Single(&'a [u8]),
    /// `table` holds `n` end offsets into `body`; the last one is `body.len()`.
    Many { table: &'a [u8], body: &'a [u8] },
}

/// Reads the value stored under the `events` key `first_seq`. The chunk's header and
/// offset table are checked here (an error names `first_seq`); each record is checked
/// when it is decoded (an error names its own seq).
pub fn parse_chunk(first_seq: u64, value: &[u8]) -> Result<Chunk<'_>, LogError> {
    let corrupt = |reason: String| LogError::corrupt(first_seq, format!("chunk starting here: {reason}"));
    let layout = match value.first() {
        None => return Err(LogError::corrupt(first_seq, "empty value")),
        Some(&RECORD_VERSION) => Layout::Single(value),
        Some(&CHUNK_VERSION) => {
            if value.len() < CHUNK_HEADER {
                return Err(corrupt(format!("{} bytes, shorter than its header", value.len())));
            }
            let n = u32::from_be_bytes([value[5], value[6], value[7], value[8]]) as usize;
            let table_end = n
                .checked_mul(4)
                .and_then(|t| t.checked_add(CHUNK_HEADER))
                .filter(|&end| end <= value.len())
                .ok_or_else(|| {
                    corrupt(format!(
                        "a table of {n} records does not fit in {} bytes",
                        value.len()
                    ))
                })?;
            let stored = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
            let actual = crc32fast::hash(&value[5..table_end]);
            if stored != actual {
                return Err(corrupt(format!(
                    "table crc mismatch: stored {stored:08x}, computed {actual:08x}"
                )));
            }
            if n == 0 {
                return Err(corrupt("no records".into()));
            }
            // Keys are not checksummed: a chunk must not claim seqs past u64::MAX.
            if first_seq.checked_add(n as u64 - 1).is_none() {
                return Err(corrupt(format!("{n} records do not fit after seq {first_seq}")));
            }
            let (table, body) = (&value[CHUNK_HEADER..table_end], &value[table_end..]);
            let last_end = u32::from_be_bytes([
                table[4 * n - 4],
                table[4 * n - 3],
                table[4 * n - 2],
                table[4 * n - 1],
            ]);
            if last_end as usize != body.len() {
                return Err(corrupt(format!(
                    "records end at {last_end}, but the body has {} bytes",
                    body.len()
                )));
            }
            Layout::Many { table, body }
        }
        Some(&other) => {
            return Err(LogError::corrupt(
                first_seq,
                format!("unknown format version {other} (expected {RECORD_VERSION} or {CHUNK_VERSION})"),
            ));
        }
    };
    Ok(Chunk {
        first: first_seq,
        layout,
    })
}

impl<'a> Chunk<'a> {
    /// The seq of the first record.
    pub fn first_seq(&self) -> u64 {
        self.first
    }

    /// The seq of the last record.
    pub fn last_seq(&self) -> u64 {
        // `parse_chunk` made sure this does not overflow (nor would `first + len`, so
        // subtract first).
        self.first + (self.len() as u64 - 1)
    }

    /// The number of records (at least 1).
    pub fn len(&self) -> usize {
        match self.layout {
            Layout::Single(_) => 1,
            Layout::Many { table, .. } => table.len() / 4,
        }
    }

    /// Never true: a chunk holds at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq >= self.first && seq <= self.last_seq()
    }

    /// The raw record at `seq`, `None` if the chunk does not hold it.
    pub fn record(&self, seq: u64) -> Result<Option<&'a [u8]>, LogError> {
        if !self.contains(seq) {
            return Ok(None);
        }
        self.record_at((seq - self.first) as usize).map(Some)
    }

    /// The raw record at index `i` (< `len`).
    fn record_at(&self, i: usize) -> Result<&'a [u8], LogError> {
        match self.layout {
            Layout::Single(record) => Ok(record),
            Layout::Many { table, body } => {
                let end_of = |j: usize| {
                    u32::from_be_bytes([table[4 * j], table[4 * j + 1], table[4 * j + 2], table[4 * j + 3]])
                        as usize
                };
                let start = if i == 0 { 0 } else { end_of(i - 1) };
                let end = end_of(i);
                if start > end || end > body.len() {
                    let seq = self.first + i as u64;
                    return Err(LogError::corrupt(
                        seq,
                        format!("record spans {start}..{end} of a {}-byte chunk body", body.len()),
                    ));
                }
                Ok(&body[start..end])
            }
        }
    }

    /// Each `(seq, raw record)` with seq >= `from`, in order.
    pub fn records_from(&self, from: u64) -> impl Iterator<Item = Result<(u64, &'a [u8]), LogError>> + '_ {
        let skip = from.saturating_sub(self.first).min(self.len() as u64) as usize;
        (skip..self.len()).map(move |i| Ok((self.first + i as u64, self.record_at(i)?)))
    }
}

#[derive(serde::Deserialize)]
struct Ids<'a> {
    event_id: &'a str,
    customer_id: &'a str,
}

/// The `(event_id, customer_id)` of the record at `seq`, after checking its version and
/// crc, without decoding the rest of the event (they are its first two fields).
pub fn decode_ids(seq: u64, record: &[u8]) -> Result<(&str, &str), LogError> {
    let payload = check_record(seq, record)?;
    let (ids, _) = bincode::serde::borrow_decode_from_slice::<Ids<'_>, _>(payload, bincode_config())
        .map_err(|e| LogError::corrupt(seq, format!("ids do not decode: {e}")))?;
    Ok((ids.event_id, ids.customer_id))
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

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                event_id: format!("e-{i}"),
                customer_id: format!("c-{}", i % 3),
                ..event()
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip_every_record() {
        let evs = events(5);
        let value = encode_chunk(&evs).unwrap();
        assert_eq!(value[0], CHUNK_VERSION);
        let chunk = parse_chunk(10, &value).unwrap();
        assert_eq!((chunk.first_seq(), chunk.last_seq(), chunk.len()), (10, 14, 5));
        for (i, e) in evs.iter().enumerate() {
            let seq = 10 + i as u64;
            let raw = chunk.record(seq).unwrap().unwrap();
            assert_eq!(&decode_event(seq, raw).unwrap(), e);
            assert_eq!(
                decode_ids(seq, raw).unwrap(),
                (e.event_id.as_str(), e.customer_id.as_str())
            );
        }
        assert!(chunk.record(9).unwrap().is_none());
        assert!(chunk.record(15).unwrap().is_none());
        let from: Vec<u64> = chunk.records_from(12).map(|r| r.unwrap().0).collect();
        assert_eq!(from, vec![12, 13, 14]);
        assert_eq!(chunk.records_from(3).count(), 5);
        assert_eq!(chunk.records_from(99).count(), 0);
    }

    #[test]
    fn a_single_record_reads_as_a_chunk_of_one() {
        let rec = encode_event(&event()).unwrap();
        let chunk = parse_chunk(4, &rec).unwrap();
        assert_eq!((chunk.first_seq(), chunk.last_seq()), (4, 4));
        assert_eq!(chunk.record(4).unwrap(), Some(&rec[..]));
        assert!(chunk.record(5).unwrap().is_none());
    }

    #[test]
    fn a_bad_record_in_a_chunk_is_an_error_at_its_seq_and_the_others_read() {
        let evs = events(3);
        let mut value = encode_chunk(&evs).unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x40; // inside the last record's payload
        let chunk = parse_chunk(1, &value).unwrap();
        assert!(decode_event(1, chunk.record(1).unwrap().unwrap()).is_ok());
        let err = decode_event(3, chunk.record(3).unwrap().unwrap()).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { seq: 3, .. }), "{err}");
    }

    #[test]
    fn a_bad_chunk_header_or_table_is_an_error_naming_its_first_seq() {
        let value = encode_chunk(&events(4)).unwrap();
        for at in [1, 6, CHUNK_HEADER + 2, CHUNK_HEADER + 13] {
            let mut bad = value.clone();
            bad[at] ^= 0x01;
            let err = parse_chunk(7, &bad).unwrap_err();
            assert!(
                matches!(err, LogError::Corrupt { seq: 7, .. }),
                "byte {at}: {err}"
            );
            assert!(err.to_string().contains("chunk"), "{err}");
        }
        // Truncated anywhere: never a panic, always an error naming the chunk.
        for len in 0..value.len() {
            let err = parse_chunk(7, &value[..len]).unwrap_err();
            assert!(matches!(err, LogError::Corrupt { seq: 7, .. }), "{len}: {err}");
        }
        let mut bad = value.clone();
        bad[0] = 77;
        assert!(
            parse_chunk(7, &bad)
                .unwrap_err()
                .to_string()
                .contains("version 77")
        );
    }

    #[test]
    fn a_table_with_a_valid_crc_but_bad_offsets_is_an_error_not_a_panic() {
        let mut value = encode_chunk(&events(3)).unwrap();
        // Swap the first two end offsets and fix the crc.
        let (a, b) = (CHUNK_HEADER, CHUNK_HEADER + 4);
        let first: [u8; 4] = value[a..a + 4].try_into().unwrap();
        let second: [u8; 4] = value[b..b + 4].try_into().unwrap();
        value[a..a + 4].copy_from_slice(&second);
        value[b..b + 4].copy_from_slice(&first);
        let crc = crc32fast::hash(&value[5..CHUNK_HEADER + 12]);
        value[1..5].copy_from_slice(&crc.to_be_bytes());
        let chunk = parse_chunk(1, &value).unwrap();
        let err = chunk.record(2).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { seq: 2, .. }), "{err}");
        assert!(chunk.records_from(1).any(|r| r.is_err()));
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

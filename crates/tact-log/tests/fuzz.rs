//! Fuzzing the log's decoders of outside bytes (records, chunks, keys, snapshots) with
//! proptest: arbitrary bytes, and mutations of valid encodings (with and without their
//! crc fixed up, so the mutations reach the decoders behind the crc). Never a panic,
//! never an unbounded allocation, always an error that names the seq or says what is
//! wrong; what decodes re-encodes to something that decodes the same.
//!
//! Cases per test: 512 by default, `PROPTEST_CASES` to run more; failures are kept in
//! `proptest-regressions/`.

mod common;

use common::stream;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tact_core::{Event, Retention};
use tact_log::snapshot::{self, SnapshotError};
use tact_log::{LogError, MemoryStorage, Projection, Storage, codec};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        // Integration tests have no lib.rs for proptest's default location to find.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    config
}

/// One way to damage a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR the byte at (index mod len) with a non-zero mask.
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Overwrite from (index mod len) with these bytes.
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        // 0xfb..0xfe are bincode's varint markers: a long "length" next.
        (
            any::<usize>(),
            proptest::collection::vec(prop_oneof![Just(0xfdu8), Just(0xffu8), any::<u8>()], 1..12)
        )
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip(i, mask) if len > 0 => bytes[i % len] ^= mask,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), *b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            Mutation::Splice(i, with) if len > 0 => {
                for (k, b) in with.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(i % len + k) {
                        *slot = *b;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Rewrites a record's crc so that its (mutated) payload passes the check.
fn fix_record_crc(record: &mut [u8]) {
    if record.len() >= codec::RECORD_HEADER {
        let crc = crc32fast::hash(&record[codec::RECORD_HEADER..]);
        record[1..codec::RECORD_HEADER].copy_from_slice(&crc.to_be_bytes());
    }
}

fn events() -> Vec<Event> {
    stream(18, 4)
}

fn assert_corrupt_at(err: &LogError, seq: u64) {
    assert!(
        matches!(err, LogError::Corrupt { seq: s, reason } if *s == seq && !reason.is_empty()),
        "{err}"
    );
}

/// Decodes a record every way the log does; checks errors and round trips.
fn check_record(seq: u64, bytes: &[u8]) {
    match codec::decode_event(seq, bytes) {
        Ok(event) => {
            let again = codec::encode_event(&event).unwrap();
            assert_eq!(codec::decode_event(seq, &again).unwrap(), event);
            let (id, customer) = codec::decode_ids(seq, bytes).expect("ids of a decodable record");
            assert_eq!(
                (id, customer),
                (event.event_id.as_str(), event.customer_id.as_str())
            );
        }
        Err(err) => assert_corrupt_at(&err, seq),
    }
    if let Err(err) = codec::decode_ids(seq, bytes) {
        assert_corrupt_at(&err, seq);
    }
}

/// Parses a chunk and reads every record of it every way the log does.
fn check_chunk(first: u64, bytes: &[u8], from: u64) {
    let chunk = match codec::parse_chunk(first, bytes) {
        Ok(chunk) => chunk,
        Err(err) => return assert_corrupt_at(&err, first),
    };
    assert!(!chunk.is_empty() && chunk.len() as u64 == chunk.last_seq() - first + 1);
    assert_eq!(chunk.first_seq(), first);
    assert!(chunk.last_seq() >= first);
    for seq in [first, chunk.last_seq(), from, first.saturating_add(1)] {
        match chunk.record(seq) {
            Ok(Some(raw)) => check_record(seq, raw),
            Ok(None) => assert!(!chunk.contains(seq)),
            Err(err) => assert_corrupt_at(&err, seq),
        }
    }
    for item in chunk.records_from(from).take(64) {
        match item {
            Ok((seq, raw)) => {
                assert!(chunk.contains(seq));
                check_record(seq, raw)
            }
            Err(LogError::Corrupt { seq, .. }) => assert!(chunk.contains(seq)),
            Err(err) => panic!("{err}"),
        }
    }
}

fn check_snapshot(bytes: &[u8]) {
    match snapshot::decode_snapshot(bytes) {
        Ok((tag, customers)) => {
            assert_eq!(tag.customers, customers.len() as u64);
            let projection = Projection {
                customers,
                position: tag.position,
                retention: tag.retention,
                until: None,
            };
            let again = snapshot::encode_snapshot(&projection, tag.anchor).unwrap();
            let (tag2, customers2) = snapshot::decode_snapshot(&again).unwrap();
            assert_eq!(tag2, tag);
            assert!(customers2 == projection.customers);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
    if let Ok(tag) = snapshot::decode_snapshot_tag(bytes) {
        // The tag decodes before the crc is checked: it must not be trusted for more.
        let _ = tag;
    }
}

fn good_snapshot(until: usize) -> (MemoryStorage, Vec<u8>) {
    let storage = MemoryStorage::new();
    let evs = stream(40, 6);
    storage.append(&evs[..until], &[]).unwrap();
    let (projection, _) = Projection::rebuild(&storage, Retention::default()).unwrap();
    storage.append(&evs[until..], &[]).unwrap();
    let anchor = snapshot::anchor(&storage, projection.position).unwrap();
    let bytes = snapshot::encode_snapshot(&projection, anchor).unwrap();
    (storage, bytes)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_record_arbitrary_bytes(seq in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_record(seq, &bytes);
        let mut with_crc = bytes.clone();
        if let Some(v) = with_crc.first_mut() {
            *v = codec::RECORD_VERSION;
        }
        fix_record_crc(&mut with_crc);
        check_record(seq, &with_crc);
    }

    #[test]
    fn fuzz_record_mutations(i in 0usize..18, muts in mutations(), fix_crc in any::<bool>()) {
        let mut bytes = codec::encode_event(&events()[i]).unwrap();
        apply(&mut bytes, &muts);
        if fix_crc {
            fix_record_crc(&mut bytes);
        }
        check_record(9, &bytes);
    }

    #[test]
    fn fuzz_chunk_arbitrary_bytes(
        first in prop_oneof![any::<u64>(), Just(u64::MAX), Just(u64::MAX - 1), 0..4u64],
        from in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        check_chunk(first, &bytes, from);
        // With a valid version and table crc, so the table itself is exercised.
        let mut fixed = bytes.clone();
        if fixed.len() >= codec::CHUNK_HEADER {
            fixed[0] = codec::CHUNK_VERSION;
            let n = (u32::from_be_bytes([fixed[5], fixed[6], fixed[7], fixed[8]]) % 8).max(1);
            fixed[5..9].copy_from_slice(&n.to_be_bytes());
            let end = (codec::CHUNK_HEADER + 4 * n as usize).min(fixed.len());
            let crc = crc32fast::hash(&fixed[5..end]);
            fixed[1..5].copy_from_slice(&crc.to_be_bytes());
        }
        check_chunk(first, &fixed, from);
    }

    #[test]
    fn fuzz_chunk_mutations(
        n in 1usize..18,
        first in prop_oneof![1..1000u64, Just(u64::MAX - 3)],
        from in 0..1100u64,
        muts in mutations(),
        fix_crc in any::<bool>(),
    ) {
        let evs = events();
        let mut bytes = codec::encode_chunk(&evs[..n]).unwrap();
        apply(&mut bytes, &muts);
        if fix_crc && bytes.len() >= codec::CHUNK_HEADER {
            let count = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
            let end = count
                .checked_mul(4)
                .map(|t| t + codec::CHUNK_HEADER)
                .filter(|&e| e <= bytes.len());
            if let Some(end) = end {
                let crc = crc32fast::hash(&bytes[5..end]);
                bytes[1..5].copy_from_slice(&crc.to_be_bytes());
            }
        }
        check_chunk(first, &bytes, first.saturating_add(from % (n as u64 + 2)));
    }

    #[test]
    fn fuzz_keys(bytes in proptest::collection::vec(any::<u8>(), 0..24), prefix_len in 0usize..24) {
        match codec::parse_seq("events", &bytes) {
            Ok(seq) => assert_eq!(codec::seq_key(seq).as_slice(), bytes.as_slice()),
            Err(err) => assert!(err.to_string().contains("events"), "{err}"),
        }
        if let Some(seq) = codec::customer_key_seq(&bytes, prefix_len) {
            assert_eq!(&bytes[prefix_len..], seq.to_be_bytes().as_slice());
        }
    }

    #[test]
    fn fuzz_snapshot_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_snapshot(&bytes);
        // With a valid version and crc, so the bincode decoders behind them are reached.
        let mut fixed = bytes.clone();
        if fixed.len() >= 5 {
            fixed[0] = snapshot::SNAPSHOT_VERSION;
            let crc = crc32fast::hash(&fixed[5..]);
            fixed[1..5].copy_from_slice(&crc.to_be_bytes());
        }
        check_snapshot(&fixed);
    }

    #[test]
    fn fuzz_snapshot_mutations(until in 0usize..40, muts in mutations(), fix_crc in any::<bool>()) {
        let (storage, good) = good_snapshot(until);
        let mut bytes = good.clone();
        apply(&mut bytes, &muts);
        if fix_crc && bytes.len() >= 5 {
            let crc = crc32fast::hash(&bytes[5..]);
            bytes[1..5].copy_from_slice(&crc.to_be_bytes());
        }
        check_snapshot(&bytes);

        // Loading never fails on a bad snapshot, and gives the same state as a full
        // replay; a snapshot whose crc was not fixed is used only if it is intact.
        storage.put_snapshot(&bytes).unwrap();
        let (full, _) = Projection::rebuild(&storage, Retention::default()).unwrap();
        let (loaded, stats) = Projection::load(&storage, Retention::default()).unwrap();
        if !fix_crc {
            assert!(loaded == full);
            if bytes != good {
                assert_eq!(stats.snapshot, None);
            }
        } else {
            assert_eq!(loaded.position, full.position);
        }
    }
}

#[test]
fn a_huge_length_in_a_record_is_an_error_not_an_allocation() {
    // A payload whose first string (the event id) claims 2^40 bytes, with a valid crc:
    // without a limit bincode allocates the whole string before reading it (an abort).
    for claimed in [1u64 << 40, 1 << 32, u64::MAX, 1 << 20] {
        let mut record = vec![codec::RECORD_VERSION, 0, 0, 0, 0, 0xfd];
        record.extend_from_slice(&claimed.to_le_bytes());
        record.extend_from_slice(b"abc");
        fix_record_crc(&mut record);
        let err = codec::decode_event(3, &record).unwrap_err();
        assert_corrupt_at(&err, 3);
        assert_corrupt_at(&codec::decode_ids(3, &record).unwrap_err(), 3);
    }
}

#[test]
fn a_huge_length_in_a_snapshot_is_an_error_not_an_allocation() {
    let (_, good) = good_snapshot(20);
    let (tag, _) = snapshot::decode_snapshot(&good).unwrap();
    // Header, then a valid tag, then a map of 1 customer whose id claims 2^40 bytes.
    let mut bytes = good[..5].to_vec();
    let (_, tag_len) = codec::decode_bounded::<tact_log::SnapshotTag>(&good[5..]).unwrap();
    bytes.extend_from_slice(&good[5..5 + tag_len]);
    bytes.push(1);
    bytes.push(0xfd);
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    bytes.extend_from_slice(b"xyz");
    let crc = crc32fast::hash(&bytes[5..]);
    bytes[1..5].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(snapshot::decode_snapshot_tag(&bytes).unwrap(), tag);
    assert!(matches!(
        snapshot::decode_snapshot(&bytes),
        Err(SnapshotError::Body(_))
    ));
}

#[test]
fn a_chunk_at_the_end_of_the_seq_space_is_an_error_not_an_overflow() {
    let evs = events();
    let bytes = codec::encode_chunk(&evs[..3]).unwrap();
    for first in [u64::MAX, u64::MAX - 1] {
        let err = codec::parse_chunk(first, &bytes).unwrap_err();
        assert_corrupt_at(&err, first);
    }
    let chunk = codec::parse_chunk(u64::MAX - 2, &bytes).unwrap();
    assert_eq!(chunk.last_seq(), u64::MAX);
    assert_eq!(chunk.records_from(0).count(), 3);
}

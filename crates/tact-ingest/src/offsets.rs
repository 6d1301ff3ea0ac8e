//! Where each partition resumes: the next offset, stored in the log's meta tree in the
//! same atomic append as the events it follows.

use std::collections::BTreeMap;

use tact_log::{LogError, MetaEntry, Storage};

/// `kafka/offset/<topic>/`
pub fn offset_prefix(topic: &str) -> Vec<u8> {
    let mut k = b"kafka/offset/".to_vec();
    k.extend_from_slice(topic.as_bytes());
    k.push(b'/');
    k
}

/// `kafka/offset/<topic>/` and the big-endian partition.
pub fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = offset_prefix(topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The meta entry that says `partition` resumes at `next_offset`.
pub fn offset_entry(topic: &str, partition: i32, next_offset: i64) -> MetaEntry {
    (offset_key(topic, partition), next_offset.to_be_bytes().to_vec())
}

/// Every partition's stored next offset.
pub fn stored_offsets(storage: &dyn Storage, topic: &str) -> Result<BTreeMap<i32, i64>, LogError> {
    let prefix = offset_prefix(topic);
    let mut out = BTreeMap::new();
    for (k, v) in storage.meta_with_prefix(&prefix)? {
        let (p, o) = parse_offset_entry(&prefix, &k, &v)?;
        out.insert(p, o);
    }
    Ok(out)
}

/// The partition and next offset of one stored entry under `prefix`
/// ([`offset_prefix`]): a 4-byte partition after the prefix, an 8-byte offset.
pub fn parse_offset_entry(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<(i32, i64), LogError> {
    let partition = key
        .strip_prefix(prefix)
        .and_then(|rest| <[u8; 4]>::try_from(rest).ok());
    match (partition, <[u8; 8]>::try_from(value)) {
        (Some(p), Ok(o)) => Ok((i32::from_be_bytes(p), i64::from_be_bytes(o))),
        _ => Err(LogError::CorruptKey {
            tree: "meta",
            reason: format!(
                "bad kafka offset entry {:?} ({} value bytes, expected 8)",
                String::from_utf8_lossy(key),
                value.len()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use tact_log::MemoryStorage;

    use super::*;

    #[test]
    fn offsets_round_trip_through_meta_per_topic() {
        let s = MemoryStorage::new();
        for (p, o) in [(0, 10i64), (3, 7), (12, 1 << 40)] {
            let (k, v) = offset_entry("tact.interactions", p, o);
            s.put_meta(&k, &v).unwrap();
        }
        let (k, v) = offset_entry("other", 0, 99);
        s.put_meta(&k, &v).unwrap();
        let got = stored_offsets(&s, "tact.interactions").unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![(0, 10), (3, 7), (12, 1 << 40)]
        );
        assert_eq!(stored_offsets(&s, "other").unwrap().get(&0), Some(&99));
        assert!(stored_offsets(&s, "missing").unwrap().is_empty());
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Offsets are read back from the log's meta tree: whatever the bytes, an entry is
        // parsed or is a clear error, never a panic.
        #![proptest_config(ProptestConfig {
            cases: if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 1024 },
            ..ProptestConfig::default()
        })]

        #[test]
        fn fuzz_offset_entries(
            topic in "\\PC{0,12}",
            tail in proptest::collection::vec(any::<u8>(), 0..12),
            value in proptest::collection::vec(any::<u8>(), 0..12),
            whole_key in proptest::collection::vec(any::<u8>(), 0..40),
            partition in any::<i32>(),
            offset in any::<i64>(),
        ) {
            let prefix = offset_prefix(&topic);
            let mut key = prefix.clone();
            key.extend_from_slice(&tail);
            for key in [&key, &whole_key] {
                match parse_offset_entry(&prefix, key, &value) {
                    Ok((p, o)) => {
                        prop_assert_eq!(offset_entry(&topic, p, o), (key.clone(), value.clone()));
                    }
                    Err(e) => prop_assert!(e.to_string().contains("kafka offset entry")),
                }
            }
            let (k, v) = offset_entry(&topic, partition, offset);
            prop_assert_eq!(parse_offset_entry(&prefix, &k, &v).unwrap(), (partition, offset));
        }
    }
}

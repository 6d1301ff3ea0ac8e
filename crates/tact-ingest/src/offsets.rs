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
        let (Ok(p), Ok(o)) = (
            <[u8; 4]>::try_from(&k[prefix.len()..]),
            <[u8; 8]>::try_from(v.as_slice()),
        ) else {
            return Err(LogError::CorruptKey {
                tree: "meta",
                reason: format!("bad kafka offset entry {:?}", String::from_utf8_lossy(&k)),
            });
        };
        out.insert(i32::from_be_bytes(p), i64::from_be_bytes(o));
    }
    Ok(out)
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

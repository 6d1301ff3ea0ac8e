//! The `Storage` contract, against both backends.

mod common;

use std::sync::Arc;

use common::{T0, backends, ev, stream};
use tact_log::{Appended, LogError, MemoryStorage, SledStorage, Storage, codec};

#[test]
fn appends_get_consecutive_seqs_and_read_back_in_order() {
    for b in backends() {
        let s = &b.storage;
        assert_eq!(s.last_seq().unwrap(), 0, "{}", b.name);
        let first = stream(10, 3);
        let r = s.append(&first, &[]).unwrap();
        assert_eq!(
            r,
            (1..=10).map(|seq| Appended::Recorded { seq }).collect::<Vec<_>>(),
            "{}",
            b.name
        );
        let second = stream(15, 3).split_off(10);
        let r = s.append(&second, &[]).unwrap();
        assert_eq!(
            r.iter().map(|a| a.seq()).collect::<Vec<_>>(),
            (11..=15).collect::<Vec<_>>()
        );
        assert_eq!(s.last_seq().unwrap(), 15);

        let all = s.read_from(1, 100).unwrap();
        assert_eq!(all.len(), 15, "{}", b.name);
        assert_eq!(
            all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=15).collect::<Vec<_>>()
        );
        assert_eq!(
            all.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
            stream(15, 3)
        );

        assert_eq!(s.read_from(14, 100).unwrap().len(), 2);
        assert_eq!(
            s.read_from(3, 2)
                .unwrap()
                .iter()
                .map(|(q, _)| *q)
                .collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(s.read_from(16, 10).unwrap().is_empty());
        assert!(s.read_from(1, 0).unwrap().is_empty());
        assert_eq!(s.get(7).unwrap().unwrap(), stream(7, 3)[6]);
        assert!(s.get(0).unwrap().is_none());
        assert!(s.get(16).unwrap().is_none());

        let iterated: Vec<u64> = s.events_from(1).map(|r| r.unwrap().0).collect();
        assert_eq!(iterated, (1..=15).collect::<Vec<_>>());
        let paged: Vec<u64> = tact_log::EventIter::new(s.as_ref(), 5)
            .with_page_size(2)
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(paged, (5..=15).collect::<Vec<_>>());
        assert_eq!(s.seq_of("ev-3").unwrap(), Some(4));
        assert_eq!(s.seq_of("nope").unwrap(), None);
    }
}

#[test]
fn duplicates_get_no_new_seq_within_and_across_batches() {
    for b in backends() {
        let s = &b.storage;
        let r = s
            .append(
                &[ev("a", "c1", T0), ev("b", "c1", T0 + 1), ev("a", "c1", T0)],
                &[],
            )
            .unwrap();
        assert_eq!(
            r,
            vec![
                Appended::Recorded { seq: 1 },
                Appended::Recorded { seq: 2 },
                Appended::Duplicate { existing_seq: 1 }
            ],
            "{}",
            b.name
        );
        let r = s
            .append(
                &[
                    ev("b", "c1", T0 + 1),
                    ev("c", "c2", T0 + 2),
                    ev("c", "c2", T0 + 2),
                ],
                &[],
            )
            .unwrap();
        assert_eq!(
            r,
            vec![
                Appended::Duplicate { existing_seq: 2 },
                Appended::Recorded { seq: 3 },
                Appended::Duplicate { existing_seq: 3 }
            ],
            "{}",
            b.name
        );
        // A batch of only duplicates writes nothing.
        let r = s.append(&[ev("a", "c1", T0)], &[]).unwrap();
        assert_eq!(r, vec![Appended::Duplicate { existing_seq: 1 }]);
        assert_eq!(s.last_seq().unwrap(), 3);
        assert_eq!(s.read_from(1, 10).unwrap().len(), 3);
        assert_eq!(s.customer_events("c1").unwrap().len(), 2);
    }
}

#[test]
fn customer_index_returns_one_customers_history_in_order() {
    for b in backends() {
        let s = &b.storage;
        let events = vec![
            ev("1", "ab", T0),
            ev("2", "abc", T0),
            ev("3", "a", T0),
            ev("4", "ab", T0 + 5),
            ev("5", "b", T0),
            ev("6", "ab", T0 + 1),
        ];
        s.append(&events, &[]).unwrap();
        let ab = s.customer_events("ab").unwrap();
        assert_eq!(
            ab.iter()
                .map(|(q, e)| (*q, e.event_id.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "1"), (4, "4"), (6, "6")]
        );
        assert_eq!(s.customer_events("abc").unwrap().len(), 1, "{}", b.name);
        assert_eq!(s.customer_events("a").unwrap().len(), 1);
        assert!(s.customer_events("zzz").unwrap().is_empty());
    }
}

#[test]
fn meta_is_written_with_the_batch() {
    for b in backends() {
        let s = &b.storage;
        let meta = vec![(b"kafka/offset/t/0".to_vec(), 41u64.to_be_bytes().to_vec())];
        s.append(&[ev("a", "c", T0)], &meta).unwrap();
        assert_eq!(
            s.get_meta(b"kafka/offset/t/0").unwrap(),
            Some(41u64.to_be_bytes().to_vec())
        );
        // Meta alone, and meta with only duplicates, are still written.
        let meta = vec![
            (b"kafka/offset/t/0".to_vec(), 42u64.to_be_bytes().to_vec()),
            (b"kafka/offset/t/1".to_vec(), 7u64.to_be_bytes().to_vec()),
        ];
        s.append(&[ev("a", "c", T0)], &meta).unwrap();
        assert_eq!(
            s.get_meta(b"kafka/offset/t/0").unwrap(),
            Some(42u64.to_be_bytes().to_vec()),
            "{}",
            b.name
        );
        s.append(&[], &[(b"position".to_vec(), b"p".to_vec())]).unwrap();
        s.put_meta(b"other", b"x").unwrap();
        assert_eq!(s.get_meta(b"position").unwrap(), Some(b"p".to_vec()));
        assert_eq!(s.get_meta(b"other").unwrap(), Some(b"x".to_vec()));
        assert_eq!(s.get_meta(b"missing").unwrap(), None);
        let offsets = s.meta_with_prefix(b"kafka/offset/t/").unwrap();
        assert_eq!(offsets.len(), 2, "{}", b.name);
        assert_eq!(offsets[1].0, b"kafka/offset/t/1".to_vec());
        assert_eq!(s.last_seq().unwrap(), 1);
    }
}

#[test]
fn sled_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.append(&stream(20, 4), &[(b"k".to_vec(), b"v".to_vec())])
            .unwrap();
        s.flush().unwrap();
    }
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 20);
    assert_eq!(s.get_meta(b"k").unwrap(), Some(b"v".to_vec()));
    let r = s
        .append(&[stream(1, 4)[0].clone(), ev("new", "c", T0)], &[])
        .unwrap();
    assert_eq!(
        r,
        vec![
            Appended::Duplicate { existing_seq: 1 },
            Appended::Recorded { seq: 21 }
        ]
    );
    assert_eq!(s.read_from(1, 100).unwrap().len(), 21);
}

fn assert_corrupt_at(err: LogError, seq: u64) {
    match &err {
        LogError::Corrupt { seq: s, .. } => assert_eq!(*s, seq, "{err}"),
        other => panic!("expected corruption at seq {seq}, got {other}"),
    }
    assert!(err.to_string().contains(&format!("seq {seq}")), "{err}");
}

#[test]
fn a_corrupt_sled_record_is_an_error_naming_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    s.append(&stream(5, 2), &[]).unwrap();
    let events = s.db().open_tree("events").unwrap();
    let mut raw = events.get(codec::seq_key(3)).unwrap().unwrap().to_vec();
    let last = raw.len() - 1;
    raw[last] ^= 0xff;
    events.insert(codec::seq_key(3), raw).unwrap();

    assert_corrupt_at(s.get(3).unwrap_err(), 3);
    assert!(s.get(2).unwrap().is_some());
    assert_corrupt_at(s.read_from(1, 10).unwrap_err(), 3);
    let storage: Arc<dyn Storage> = Arc::new(s);
    let seen: Vec<_> = storage.events_from(1).collect();
    assert_eq!(seen.len(), 1, "the page with the bad record fails as a whole");
    assert_corrupt_at(seen.into_iter().next().unwrap().unwrap_err(), 3);
    let err = tact_log::Projection::rebuild(storage.as_ref(), Default::default()).unwrap_err();
    assert_corrupt_at(err, 3);

    // A record of an unknown format version.
    let dir = tempfile::tempdir().unwrap();
    let events = SledStorage::open(dir.path()).unwrap();
    events.append(&stream(1, 1), &[]).unwrap();
    let tree = events.db().open_tree("events").unwrap();
    let mut raw = tree.get(codec::seq_key(1)).unwrap().unwrap().to_vec();
    raw[0] = 200;
    tree.insert(codec::seq_key(1), raw).unwrap();
    let err = events.get(1).unwrap_err();
    assert_corrupt_at(err, 1);
}

#[test]
fn a_corrupt_memory_record_is_an_error_naming_its_seq() {
    let s = MemoryStorage::new();
    s.append(&stream(5, 2), &[]).unwrap();
    let mut raw = codec::encode_event(&stream(4, 2)[3]).unwrap();
    raw[2] ^= 1;
    s.put_raw_record(4, &raw);
    assert_corrupt_at(s.get(4).unwrap_err(), 4);
    assert_corrupt_at(s.customer_events(&stream(4, 2)[3].customer_id).unwrap_err(), 4);
}

#[test]
fn sled_reads_the_per_event_indexes_of_older_databases() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(6, 2);
    {
        // The layout before the index journal: `ids` and `customers` trees per event.
        let db = sled::open(dir.path()).unwrap();
        let (tree, ids, customers) = (
            db.open_tree("events").unwrap(),
            db.open_tree("ids").unwrap(),
            db.open_tree("customers").unwrap(),
        );
        for (i, e) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            tree.insert(codec::seq_key(seq), codec::encode_event(e).unwrap())
                .unwrap();
            ids.insert(e.event_id.as_bytes(), &codec::seq_key(seq)).unwrap();
            customers
                .insert(codec::customer_key(&e.customer_id, seq), &[])
                .unwrap();
        }
        db.flush().unwrap();
    }
    let customer = events[0].customer_id.clone();
    let later = ev("later", &customer, T0);
    {
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.last_seq().unwrap(), 6);
        assert_eq!(s.seq_of(&events[4].event_id).unwrap(), Some(5));
        let r = s.append(&[events[2].clone(), later.clone()], &[]).unwrap();
        assert_eq!(
            r,
            vec![
                Appended::Duplicate { existing_seq: 3 },
                Appended::Recorded { seq: 7 }
            ]
        );
        s.flush().unwrap();
    }
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.seq_of("later").unwrap(), Some(7));
    assert_eq!(s.seq_of(&events[0].event_id).unwrap(), Some(1));
    let mine: Vec<u64> = s
        .customer_events(&customer)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    let expected: Vec<u64> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.customer_id == customer)
        .map(|(i, _)| i as u64 + 1)
        .chain([7])
        .collect();
    assert_eq!(mine, expected);
}

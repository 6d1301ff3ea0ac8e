//! The `Storage` contract, against every backend (memory, sled, fjall).

mod common;

use std::sync::Arc;

use common::{T0, backends, ev, stream};
use tact_core::Event;
use tact_log::{
    Appended, DEAD_LETTER_PREFIX, Engine, FjallStorage, LogError, MemoryStorage, SledStorage, Storage,
    StorageOptions, codec,
};

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

fn withdrawal(id: &str, customer: &str, at: i64) -> Event {
    Event {
        kind: tact_core::EventKind::ConsentChanged {
            channel: tact_core::Channel::Email,
            purpose: tact_core::Purpose::Marketing,
            granted: false,
            expires_at: None,
            proof: "form".into(),
        },
        ..ev(id, customer, at)
    }
}

/// An id names one event: another event under an id the log holds (or that an earlier
/// event of the batch took) is `Taken`, not a duplicate, and the meta entry `on_taken`
/// gives for it is written in the same append; a retry, a withdrawal recorded earlier
/// than it was dated included, stays a duplicate.
#[test]
fn another_event_under_a_taken_id_is_taken_and_its_dead_letter_goes_with_the_append() {
    for b in backends() {
        let s = &b.storage;
        let r = s
            .append(&[ev("a", "c1", T0), withdrawal("w", "c1", T0 + 10)], &[])
            .unwrap();
        assert_eq!(r.iter().map(|a| a.seq()).collect::<Vec<_>>(), vec![1, 2]);
        let mut calls = Vec::new();
        let dead_key = |i: usize| [DEAD_LETTER_PREFIX, format!("t/{i}").as_bytes()].concat();
        let r = s
            .append_checked(
                &[
                    ev("a", "c2", T0),                 // another customer's event under `a`
                    ev("a", "c1", T0),                 // a retry of `a`
                    withdrawal("w", "c1", T0 + 5_000), // `w` dated later: a retry, moved less
                    withdrawal("w", "c1", T0 + 1),     // `w` dated earlier: not what was recorded
                    ev("x", "c1", T0 + 20),            // new
                    ev("x", "c9", T0 + 20),            // takes `x` from the event before it
                    ev("x", "c1", T0 + 20),            // a retry of `x` in the same batch
                ],
                &[(b"offset".to_vec(), b"8".to_vec())],
                &mut |i, e, holder| {
                    calls.push((i, e.customer_id.clone(), holder));
                    Some((dead_key(i), holder.to_string().into_bytes()))
                },
            )
            .unwrap();
        assert_eq!(
            r,
            vec![
                Appended::Taken { existing_seq: 1 },
                Appended::Duplicate { existing_seq: 1 },
                Appended::Duplicate { existing_seq: 2 },
                Appended::Taken { existing_seq: 2 },
                Appended::Recorded { seq: 3 },
                Appended::Taken { existing_seq: 3 },
                Appended::Duplicate { existing_seq: 3 },
            ],
            "{}",
            b.name
        );
        assert_eq!(
            calls,
            vec![(0, "c2".into(), 1), (3, "c1".into(), 2), (5, "c9".into(), 3)],
            "{}",
            b.name
        );
        let dead = s.meta_with_prefix(DEAD_LETTER_PREFIX).unwrap();
        assert_eq!(
            dead,
            vec![
                (dead_key(0), b"1".to_vec()),
                (dead_key(3), b"2".to_vec()),
                (dead_key(5), b"3".to_vec()),
            ],
            "{}",
            b.name
        );
        assert_eq!(s.get_meta(b"offset").unwrap(), Some(b"8".to_vec()), "{}", b.name);
        assert_eq!(s.last_seq().unwrap(), 3, "{}", b.name);
        assert_eq!(s.get(1).unwrap(), Some(ev("a", "c1", T0)), "{}", b.name);
        assert!(s.customer_events("c2").unwrap().is_empty(), "{}", b.name);
        assert!(s.customer_events("c9").unwrap().is_empty(), "{}", b.name);
        // Without a check, a taken id is still reported and nothing is written for it.
        let r = s.append(&[ev("x", "c2", T0 + 20)], &[]).unwrap();
        assert_eq!(r, vec![Appended::Taken { existing_seq: 3 }], "{}", b.name);
        assert_eq!(s.last_seq().unwrap(), 3, "{}", b.name);
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

/// The raw value of the chunk under `first` and the byte range of `seq`'s record in it.
fn record_in_chunk(s: &SledStorage, first: u64, seq: u64) -> (Vec<u8>, std::ops::Range<usize>) {
    let tree = s.db().open_tree("events").unwrap();
    let value = tree.get(codec::seq_key(first)).unwrap().unwrap().to_vec();
    let record = codec::encode_event(&s.get(seq).unwrap().unwrap()).unwrap();
    let at = value
        .windows(record.len())
        .position(|w| w == record.as_slice())
        .expect("the record is in the chunk");
    (value, at..at + record.len())
}

fn put_raw(s: &SledStorage, first: u64, value: Vec<u8>) {
    let tree = s.db().open_tree("events").unwrap();
    tree.insert(codec::seq_key(first), value).unwrap();
}

#[test]
fn a_corrupt_sled_record_is_an_error_naming_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    s.append(&stream(5, 2), &[]).unwrap();
    // The five records are one chunk under seq 1; spoil the last byte of seq 3's.
    let (mut raw, range) = record_in_chunk(&s, 1, 3);
    raw[range.end - 1] ^= 0xff;
    put_raw(&s, 1, raw);

    assert_corrupt_at(s.get(3).unwrap_err(), 3);
    assert!(s.get(2).unwrap().is_some());
    assert!(s.get(4).unwrap().is_some(), "the rest of the chunk still reads");
    assert_corrupt_at(s.read_from(1, 10).unwrap_err(), 3);
    assert_eq!(s.read_from(4, 10).unwrap().len(), 2);
    let customer = stream(5, 2)[2].customer_id.clone();
    assert_corrupt_at(s.customer_events(&customer).unwrap_err(), 3);
    let storage: Arc<dyn Storage> = Arc::new(s);
    let seen: Vec<_> = storage.events_from(1).collect();
    assert_eq!(seen.len(), 1, "the page with the bad record fails as a whole");
    assert_corrupt_at(seen.into_iter().next().unwrap().unwrap_err(), 3);
    let err = tact_log::Projection::rebuild(storage.as_ref(), Default::default()).unwrap_err();
    assert_corrupt_at(err, 3);
    drop(storage);
    // Reopening reads neither the records nor the indexes in full (they are on disk):
    // it opens, and the bad record is still an error by name wherever it is read.
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 5);
    assert_corrupt_at(s.get(3).unwrap_err(), 3);
    assert_corrupt_at(s.customer_events(&customer).unwrap_err(), 3);
    assert_eq!(s.seq_of(&stream(5, 2)[2].event_id).unwrap(), Some(3));
    drop(s);
    // A log without its index (as written by an older version) builds it from the
    // records at open: the bad one stops it, by name.
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.db().drop_tree("log_index").unwrap();
    }
    assert_corrupt_at(SledStorage::open(dir.path()).unwrap_err(), 3);

    // A value of an unknown format version.
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
fn a_corrupt_or_truncated_chunk_table_is_an_error_naming_the_chunk_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    s.append(&stream(3, 2), &[]).unwrap();
    s.append(&stream(8, 2)[3..], &[]).unwrap(); // seqs 4..=8, a chunk under 4
    let tree = s.db().open_tree("events").unwrap();
    let good = tree.get(codec::seq_key(4)).unwrap().unwrap().to_vec();

    // A flipped bit in the count or the offset table.
    for at in [8, codec::CHUNK_HEADER + 1, codec::CHUNK_HEADER + 10] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        put_raw(&s, 4, bad);
        for seq in [4, 6, 8] {
            let err = s.get(seq).unwrap_err();
            assert_corrupt_at(err, 4);
        }
        assert!(s.get(2).unwrap().is_some(), "other chunks still read");
        assert_corrupt_at(s.read_from(1, 100).unwrap_err(), 4);
        assert_corrupt_at(s.read_from(6, 100).unwrap_err(), 4);
    }
    // Cut short anywhere.
    for len in [
        0,
        1,
        5,
        codec::CHUNK_HEADER,
        codec::CHUNK_HEADER + 7,
        good.len() - 1,
    ] {
        put_raw(&s, 4, good[..len].to_vec());
        let err = s.get(5).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { seq: 4, .. }), "{len}: {err}");
        assert!(err.to_string().contains("seq 4"), "{err}");
    }
    put_raw(&s, 4, good);
    assert_eq!(s.read_from(1, 100).unwrap().len(), 8);
}

#[test]
fn sled_chunks_read_back_at_every_seq_across_boundaries_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let all = stream(2600, 13);
    // Appends of 1, 3 and 7 events, then one big enough to be split into several chunks.
    let sizes = [1usize, 3, 7, 2589];
    let check = |s: &SledStorage| {
        assert_eq!(s.last_seq().unwrap(), 2600);
        for (i, e) in all.iter().enumerate() {
            let seq = i as u64 + 1;
            assert_eq!(s.get(seq).unwrap().as_ref(), Some(e), "seq {seq}");
            assert_eq!(s.seq_of(&e.event_id).unwrap(), Some(seq));
        }
        assert!(s.get(0).unwrap().is_none());
        assert!(s.get(2601).unwrap().is_none());
        // Scans starting at each chunk's first seq, inside a chunk, and at its last.
        for from in [1, 2, 3, 4, 5, 11, 12, 13, 500, 1035, 1036, 1037, 2060, 2600, 2601] {
            let read = s.read_from(from, 3000).unwrap();
            assert_eq!(read.len() as u64, 2601 - from, "from {from}");
            assert!(
                read.iter().all(|(seq, e)| *e == all[*seq as usize - 1]),
                "from {from}"
            );
            let page = s.read_from(from, 2).unwrap();
            let seqs: Vec<u64> = page.iter().map(|(q, _)| *q).collect();
            let expected: Vec<u64> = (from..=2600).take(2).collect();
            assert_eq!(seqs, expected, "from {from}");
        }
        let storage: &dyn Storage = s;
        let paged: Vec<u64> = storage
            .events_from(6)
            .with_page_size(5)
            .map(|r| r.unwrap().0)
            .collect::<Vec<_>>();
        assert_eq!(paged, (6..=2600).collect::<Vec<_>>());
        for c in 0..13 {
            let customer = format!("cust-{c}");
            let mine = s.customer_events(&customer).unwrap();
            let expected: Vec<(u64, tact_core::Event)> = all
                .iter()
                .enumerate()
                .filter(|(_, e)| e.customer_id == customer)
                .map(|(i, e)| (i as u64 + 1, e.clone()))
                .collect();
            assert_eq!(mine, expected, "{customer}");
        }
    };
    {
        let s = SledStorage::open(dir.path()).unwrap();
        let mut at = 0;
        for n in sizes {
            s.append(&all[at..at + n], &[]).unwrap();
            at += n;
        }
        s.flush().unwrap();
        let tree = s.db().open_tree("events").unwrap();
        let keys: Vec<u64> = tree
            .iter()
            .keys()
            .map(|k| codec::parse_seq("events", &k.unwrap()).unwrap())
            .collect();
        assert_eq!(keys[..4], [1, 2, 5, 12], "one chunk per append");
        let first_byte = |seq: u64| tree.get(codec::seq_key(seq)).unwrap().unwrap()[0];
        assert_eq!(
            first_byte(1),
            codec::RECORD_VERSION,
            "a lone event is a bare record"
        );
        assert_eq!(first_byte(2), codec::CHUNK_VERSION);
        assert!(keys.len() > 4, "the big append is split: {keys:?}");
        assert!(keys.len() < 10, "{keys:?}");
        check(&s);
    }
    let s = SledStorage::open(dir.path()).unwrap();
    check(&s);
    let r = s
        .append(&[all[7].clone(), ev("next", "cust-1", T0)], &[])
        .unwrap();
    assert_eq!(
        r,
        vec![
            Appended::Duplicate { existing_seq: 8 },
            Appended::Recorded { seq: 2601 }
        ]
    );
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
fn sled_reads_databases_of_the_one_record_per_key_layout() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(6, 2);
    {
        // The layout before chunks and before the index journal: one record per key in
        // `events`, and `ids` and `customers` trees per event.
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
    // Old one-record keys and a new chunk, read as one log.
    let more: Vec<tact_core::Event> = (0..3).map(|i| ev(&format!("more-{i}"), "m", T0 + i)).collect();
    s.append(&more, &[]).unwrap();
    assert_eq!(s.last_seq().unwrap(), 10);
    let seqs: Vec<u64> = s.read_from(5, 100).unwrap().iter().map(|(q, _)| *q).collect();
    assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
    assert_eq!(s.get(6).unwrap().as_ref(), Some(&events[5]));
    assert_eq!(s.get(7).unwrap().unwrap().event_id, "later");
    assert_eq!(s.get(9).unwrap().as_ref(), Some(&more[1]));
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

#[test]
fn sled_reads_databases_of_the_index_journal_layout() {
    // One record per key, plus an `index` journal of ids per append, which is no longer
    // read: the indexes are rebuilt from the records.
    let dir = tempfile::tempdir().unwrap();
    let events = stream(9, 3);
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("events").unwrap();
        for (i, e) in events.iter().enumerate() {
            tree.insert(codec::seq_key(i as u64 + 1), codec::encode_event(e).unwrap())
                .unwrap();
        }
        db.open_tree("index")
            .unwrap()
            .insert(codec::seq_key(1), &b"an old journal entry"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 9);
    assert_eq!(s.seq_of(&events[8].event_id).unwrap(), Some(9));
    assert_eq!(s.customer_events("cust-1").unwrap().len(), 3);
    let r = s
        .append(&[events[0].clone(), ev("new", "cust-1", T0)], &[])
        .unwrap();
    assert_eq!(
        r,
        vec![
            Appended::Duplicate { existing_seq: 1 },
            Appended::Recorded { seq: 10 }
        ]
    );
    let all: Vec<u64> = s.read_from(1, 100).unwrap().iter().map(|(q, _)| *q).collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
}

#[test]
fn dead_letters_are_meta_written_with_the_append() {
    for b in backends() {
        let s = &b.storage;
        let dead = |k: &str| [DEAD_LETTER_PREFIX, k.as_bytes()].concat();
        let offset = b"kafka/offset/t/0".to_vec();
        // A bad message skipped: its dead letter and the offset past it, no events.
        s.append(
            &[],
            &[
                (dead("t/0/41"), b"does not decode".to_vec()),
                (offset.clone(), 42u64.to_be_bytes().to_vec()),
            ],
        )
        .unwrap();
        s.append(
            &[ev("a", "c", T0)],
            &[
                (dead("t/0/43"), b"bad customer".to_vec()),
                (offset.clone(), 44u64.to_be_bytes().to_vec()),
            ],
        )
        .unwrap();
        s.put_meta(&dead("t/1/7"), b"by hand").unwrap();
        s.put_meta(b"dead-end", b"not a dead letter").unwrap();
        assert_eq!(
            s.get_meta(&dead("t/0/41")).unwrap(),
            Some(b"does not decode".to_vec()),
            "{}",
            b.name
        );
        assert_eq!(s.get_meta(&dead("t/0/99")).unwrap(), None);
        assert_eq!(s.get_meta(&offset).unwrap(), Some(44u64.to_be_bytes().to_vec()));
        let letters = s.meta_with_prefix(DEAD_LETTER_PREFIX).unwrap();
        assert_eq!(
            letters,
            vec![
                (dead("t/0/41"), b"does not decode".to_vec()),
                (dead("t/0/43"), b"bad customer".to_vec()),
                (dead("t/1/7"), b"by hand".to_vec()),
            ],
            "{}",
            b.name
        );
        assert_eq!(s.meta_with_prefix(&dead("t/0/")).unwrap().len(), 2);
        // A bounded read stops at the limit, in key order.
        let first = s.meta_with_prefix_limit(DEAD_LETTER_PREFIX, 2).unwrap();
        assert_eq!(first[..], letters[..2], "{}", b.name);
        assert!(
            s.meta_with_prefix_limit(DEAD_LETTER_PREFIX, 0)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.meta_with_prefix(&dead("t/1/")).unwrap().len(), 1);
        assert_eq!(s.meta_with_prefix(b"kafka/").unwrap().len(), 1, "{}", b.name);
        // A prefix shorter than the dead-letter prefix covers both, in key order.
        let keys: Vec<Vec<u8>> = s
            .meta_with_prefix(b"dead")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![
                b"dead-end".to_vec(),
                dead("t/0/41"),
                dead("t/0/43"),
                dead("t/1/7")
            ],
            "{}",
            b.name
        );
        assert_eq!(s.meta_with_prefix(b"").unwrap().len(), 5, "{}", b.name);
        assert_eq!(s.last_seq().unwrap(), 1);
    }
}

#[test]
fn sled_keeps_dead_letters_in_their_own_tree_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.append(
            &[ev("a", "c", T0)],
            &[
                (b"dead-letter/t/0/5".to_vec(), b"bad".to_vec()),
                (b"kafka/offset/t/0".to_vec(), b"6".to_vec()),
            ],
        )
        .unwrap();
        s.flush().unwrap();
        let tree = s.db().open_tree("dead_letters").unwrap();
        assert_eq!(tree.get(b"t/0/5").unwrap().as_deref(), Some(&b"bad"[..]));
        let meta = s.db().open_tree("meta").unwrap();
        assert_eq!(meta.len(), 1, "only the offset is in `meta`");
    }
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.get_meta(b"dead-letter/t/0/5").unwrap(), Some(b"bad".to_vec()));
    assert_eq!(s.get_meta(b"kafka/offset/t/0").unwrap(), Some(b"6".to_vec()));
}

#[test]
fn a_key_near_the_end_of_the_seq_space_does_not_size_the_index_by_it() {
    // Keys are not checksummed. A last key of u64::MAX - 1 used to reserve room for
    // that many ids at open (a capacity overflow panic, or an allocation failure).
    for last in [u64::MAX, u64::MAX - 1, 1 << 40] {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            s.append(&stream(3, 2), &[]).unwrap();
            put_raw(&s, last, codec::encode_event(&ev("far", "c", T0)).unwrap());
            s.flush().unwrap();
        }
        // Opens (the log's content is the caller's to judge: a gap, not a panic).
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.last_seq().unwrap(), last);
    }
}

#[test]
fn the_sled_snapshot_is_a_file_beside_the_database_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        // A snapshot an older version kept in sled is not read, and goes on the next put.
        s.db()
            .open_tree("snapshots")
            .unwrap()
            .insert(b"projection", &b"old"[..])
            .unwrap();
        assert_eq!(s.get_snapshot().unwrap(), None);
        s.put_snapshot(b"snapshot bytes").unwrap();
        assert!(s.db().open_tree("snapshots").unwrap().is_empty());
    }
    let file = dir.path().join(tact_log::SNAPSHOT_FILE);
    assert_eq!(std::fs::read(&file).unwrap(), b"snapshot bytes");
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.get_snapshot().unwrap().as_deref(), Some(&b"snapshot bytes"[..]));
    s.put_snapshot(b"newer").unwrap();
    assert_eq!(s.get_snapshot().unwrap().as_deref(), Some(&b"newer"[..]));
    drop(s);

    // A snapshot that cannot be read (here a directory in its place) is an error of its
    // own, which the projection treats as no snapshot; the log still opens.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    let err = s.get_snapshot().unwrap_err();
    assert!(matches!(err, LogError::SnapshotFile { .. }), "{err}");
    s.append(&stream(4, 2), &[]).unwrap();
    let (p, stats) = tact_log::Projection::load(&s, Default::default()).unwrap();
    assert_eq!((stats.snapshot, p.position), (None, 4));
}

#[test]
fn fjall_keeps_everything_across_reopen_chunks_meta_dead_letters_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(3_000, 37);
    {
        let s = FjallStorage::open(dir.path()).unwrap();
        // One append of 2,500 events (three chunks), then single ones.
        s.append(
            &events[..2_500],
            &[
                (b"dead-letter/t/0/5".to_vec(), b"bad".to_vec()),
                (b"kafka/offset/t/0".to_vec(), b"5".to_vec()),
                (b"kafka/offset/t/0".to_vec(), b"6".to_vec()),
            ],
        )
        .unwrap();
        for e in &events[2_500..] {
            s.append(std::slice::from_ref(e), &[]).unwrap();
        }
        s.put_snapshot(b"snapshot bytes").unwrap();
        s.flush().unwrap();
    }
    let s = FjallStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 3_000);
    // Two writes of one key in one append: the later wins.
    assert_eq!(s.get_meta(b"kafka/offset/t/0").unwrap(), Some(b"6".to_vec()));
    assert_eq!(s.get_meta(b"dead-letter/t/0/5").unwrap(), Some(b"bad".to_vec()));
    assert_eq!(
        s.meta_with_prefix(b"").unwrap(),
        vec![
            (b"dead-letter/t/0/5".to_vec(), b"bad".to_vec()),
            (b"kafka/offset/t/0".to_vec(), b"6".to_vec()),
        ]
    );
    assert_eq!(s.get_snapshot().unwrap().as_deref(), Some(&b"snapshot bytes"[..]));
    for seq in [1, 1_024, 1_025, 2_048, 2_049, 2_500, 2_501, 3_000] {
        let event = s.get(seq).unwrap().unwrap();
        assert_eq!(event, events[seq as usize - 1], "seq {seq}");
    }
    assert_eq!(s.get(3_001).unwrap(), None);
    let from_1023: Vec<u64> = s.read_from(1_023, 4).unwrap().iter().map(|(q, _)| *q).collect();
    assert_eq!(from_1023, vec![1_023, 1_024, 1_025, 1_026]);
    let all: Vec<Event> = s
        .read_from(1, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(all, events);
    let mine: Vec<Event> = events
        .iter()
        .filter(|e| e.customer_id == "cust-5")
        .cloned()
        .collect();
    let read: Vec<Event> = s
        .customer_events("cust-5")
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(read, mine);
    assert_eq!(
        s.append(&[events[7].clone(), ev("new", "c", T0)], &[]).unwrap(),
        vec![
            Appended::Duplicate { existing_seq: 8 },
            Appended::Recorded { seq: 3_001 }
        ]
    );
}

#[test]
fn an_existing_log_opens_with_the_engine_that_wrote_it_whatever_is_configured() {
    for (wrote, configured) in [(Engine::Sled, Engine::Fjall), (Engine::Fjall, Engine::Sled)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert_eq!(Engine::of_existing(&path), None);
        {
            let options = StorageOptions {
                engine: wrote,
                ..StorageOptions::default()
            };
            let (s, engine) = tact_log::open_storage(&path, options).unwrap();
            assert_eq!(engine, wrote);
            s.append(&stream(10, 3), &[]).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(Engine::of_existing(&path), Some(wrote));
        let options = StorageOptions {
            engine: configured,
            ..StorageOptions::default()
        };
        let (s, engine) = tact_log::open_storage(&path, options).unwrap();
        assert_eq!(engine, wrote, "the log written by {wrote} opened with {engine}");
        assert_eq!(s.last_seq().unwrap(), 10);
    }
}

#[test]
fn a_second_fjall_handle_on_the_same_directory_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _s = FjallStorage::open(dir.path()).unwrap();
    let err = FjallStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
}

#[test]
fn copy_log_moves_every_event_at_its_seq_meta_dead_letters_and_the_snapshot_between_engines() {
    for from in backends() {
        let src = &from.storage;
        let events = stream(5_000, 41);
        src.append(&events[..3_000], &[(b"kafka/offset/t/0".to_vec(), b"7".to_vec())])
            .unwrap();
        for e in &events[3_000..3_010] {
            src.append(std::slice::from_ref(e), &[]).unwrap();
        }
        src.append(
            &events[3_010..],
            &[(b"dead-letter/t/0/3".to_vec(), b"bad json".to_vec())],
        )
        .unwrap();
        src.put_snapshot(b"snapshot at 5000").unwrap();
        src.flush().unwrap();
        for to in [common::sled(), common::fjall()] {
            let dst = &to.storage;
            let mut seen = Vec::new();
            let copied = tact_log::copy_log(src.as_ref(), dst.as_ref(), 1_024, |n| seen.push(n)).unwrap();
            let what = format!("{} -> {}", from.name, to.name);
            assert_eq!(copied, 5_000, "{what}");
            assert_eq!(seen.last(), Some(&5_000), "{what}");
            assert_eq!(dst.last_seq().unwrap(), 5_000, "{what}");
            assert_eq!(
                dst.read_from(1, usize::MAX).unwrap(),
                src.read_from(1, usize::MAX).unwrap(),
                "{what}"
            );
            assert_eq!(
                dst.meta_with_prefix(b"").unwrap(),
                src.meta_with_prefix(b"").unwrap(),
                "{what}"
            );
            assert_eq!(
                dst.get_snapshot().unwrap().as_deref(),
                Some(&b"snapshot at 5000"[..]),
                "{what}"
            );
            for c in ["cust-0", "cust-7", "cust-40"] {
                assert_eq!(
                    dst.customer_events(c).unwrap(),
                    src.customer_events(c).unwrap(),
                    "{what} {c}"
                );
            }
            for (i, e) in events.iter().enumerate().step_by(397) {
                assert_eq!(dst.seq_of(&e.event_id).unwrap(), Some(i as u64 + 1), "{what}");
            }
            // Into a log that is not empty: refused, nothing appended.
            let err = tact_log::copy_log(src.as_ref(), dst.as_ref(), 1_024, |_| {}).unwrap_err();
            assert!(err.to_string().contains("not empty"), "{what}: {err}");
            assert_eq!(dst.last_seq().unwrap(), 5_000, "{what}");
        }
    }
}

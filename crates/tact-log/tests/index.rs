//! The log's indexes (event id -> seq, customer -> events) against the records: with an
//! id cache far smaller than the ids, across reopens, and after a crash between the
//! write of the events and the write of their index.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::{backends, ev, stream};
use proptest::prelude::*;
use tact_core::Event;
use tact_log::{Appended, Engine, FjallStorage, MemoryStorage, SledStorage, Storage, StorageOptions, codec};

fn tiny(entries: usize) -> StorageOptions {
    StorageOptions {
        engine: tact_log::Engine::Sled,
        cache_bytes: 1 << 20,
        id_cache_entries: entries,
    }
}

fn open(path: &Path, entries: usize) -> SledStorage {
    SledStorage::open_with_options(path, tiny(entries)).unwrap()
}

/// A disk backend with a cache of `entries` ids, behind the trait.
fn open_engine(engine: Engine, path: &Path, entries: usize) -> Arc<dyn Storage> {
    let options = StorageOptions {
        engine,
        ..tiny(entries)
    };
    match engine {
        Engine::Sled => Arc::new(SledStorage::open_with_options(path, options).unwrap()),
        Engine::Fjall => Arc::new(FjallStorage::open_with_options(path, options).unwrap()),
    }
}

/// Every id in `events` (the first occurrence of each) with its seq, and each
/// customer's (seq, event) in log order, from a full scan of the records.
type Scanned = (HashMap<String, u64>, HashMap<String, Vec<(u64, Event)>>);

fn full_scan(s: &dyn Storage) -> Scanned {
    let mut ids = HashMap::new();
    let mut customers: HashMap<String, Vec<(u64, Event)>> = HashMap::new();
    for item in s.events_from(1) {
        let (seq, event) = item.unwrap();
        assert!(
            ids.insert(event.event_id.clone(), seq).is_none(),
            "id {} recorded twice",
            event.event_id
        );
        customers
            .entry(event.customer_id.clone())
            .or_default()
            .push((seq, event));
    }
    (ids, customers)
}

/// The indexes answer exactly what a full scan of the records says.
fn assert_indexes_agree(s: &dyn Storage, extra_ids: &[&str], extra_customers: &[&str]) {
    let (ids, customers) = full_scan(s);
    for (id, seq) in &ids {
        assert_eq!(s.seq_of(id).unwrap(), Some(*seq), "seq_of({id})");
    }
    for id in extra_ids {
        assert_eq!(s.seq_of(id).unwrap(), ids.get(*id).copied(), "seq_of({id})");
    }
    for (customer, events) in &customers {
        assert_eq!(
            &s.customer_events(customer).unwrap(),
            events,
            "customer {customer:?}"
        );
    }
    for customer in extra_customers {
        let expected = customers.get(*customer).cloned().unwrap_or_default();
        assert_eq!(
            s.customer_events(customer).unwrap(),
            expected,
            "customer {customer:?}"
        );
    }
}

#[test]
fn every_duplicate_is_refused_with_a_cache_of_ten_and_ten_thousand_ids_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), 10);
        for i in 0..1_000 {
            s.append(&[ev(&format!("id-{i}"), "c", common::T0)], &[]).unwrap();
            assert!(s.id_cache_len() <= 10);
        }
    }
    for engine in [Engine::Sled, Engine::Fjall] {
        every_duplicate_is_refused_across_reopens(engine);
    }
}

fn every_duplicate_is_refused_across_reopens(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..10_000)
        .map(|i| ev(&format!("id-{i}"), &format!("c-{}", i % 97), common::T0 + i))
        .collect();
    {
        let s = open_engine(engine, dir.path(), 10);
        for batch in events.chunks(100) {
            assert!(s.append(batch, &[]).unwrap().iter().all(|a| a.is_recorded()));
        }
        assert_eq!(s.last_seq().unwrap(), 10_000);
        // Redelivered in another order and other batch sizes, in the same process.
        let mut again = events.clone();
        again.reverse();
        for batch in again.chunks(333) {
            for (event, outcome) in batch.iter().zip(s.append(batch, &[]).unwrap()) {
                let i: u64 = event.event_id[3..].parse().unwrap();
                assert_eq!(outcome, Appended::Duplicate { existing_seq: i + 1 });
            }
        }
        assert_eq!(s.last_seq().unwrap(), 10_000);
        s.flush().unwrap();
    }
    // After a restart, with a cache that holds none of them.
    let s = open_engine(engine, dir.path(), 0);
    let mixed: Vec<Event> = events
        .iter()
        .step_by(7)
        .cloned()
        .chain((0..50).map(|i| ev(&format!("new-{i}"), "c-new", common::T0)))
        .collect();
    let outcome = s.append(&mixed, &[]).unwrap();
    let recorded = outcome.iter().filter(|a| a.is_recorded()).count();
    assert_eq!(recorded, 50, "only the new ids are recorded");
    assert_eq!(s.last_seq().unwrap(), 10_050);
    assert_indexes_agree(s.as_ref(), &["id-10000", "nope"], &["c-new", "c-", "c-1"]);
}

/// The database with the last `n` chunks' index entries missing, as after a crash
/// between the write of the events and the write of their index (or events appended
/// by a version without the disk index).
fn lose_the_index_of_the_tail(s: &SledStorage, events: &[Event], from_seq: u64) {
    let index = s.db().open_tree("log_index").unwrap();
    for (event, seq) in events.iter().zip(from_seq..) {
        let mut id_key = vec![b'i'];
        id_key.extend_from_slice(event.event_id.as_bytes());
        index.remove(id_key).unwrap();
        let mut customer_key = vec![b'c'];
        customer_key.extend_from_slice(&codec::customer_key(&event.customer_id, seq));
        assert!(index.remove(customer_key).unwrap().is_some());
    }
    index.insert(b"s", &codec::seq_key(from_seq - 1)).unwrap();
    s.flush().unwrap();
}

#[test]
fn a_crash_between_events_and_index_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(300, 17);
    {
        let s = open(dir.path(), 4);
        s.append(&events[..200], &[]).unwrap();
        s.append(&events[200..], &[]).unwrap();
        // The second append's index never made it to disk.
        lose_the_index_of_the_tail(&s, &events[200..], 201);
    }
    let s = open(dir.path(), 4);
    assert_eq!(s.last_seq().unwrap(), 300);
    assert_indexes_agree(&s, &[], &[]);
    // None of the events whose index was lost can be recorded twice.
    let outcome = s.append(&events[150..], &[]).unwrap();
    assert!(outcome.iter().all(|a| !a.is_recorded()), "{outcome:?}");
    assert_eq!(s.last_seq().unwrap(), 300);
}

#[test]
fn an_index_ahead_of_the_events_is_rebuilt_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(300, 17);
    {
        let s = open(dir.path(), 4);
        s.append(&events[..200], &[]).unwrap();
        s.append(&events[200..], &[]).unwrap();
        // The events of the second append are lost, their index entries are not.
        let tree = s.db().open_tree("events").unwrap();
        assert!(tree.remove(codec::seq_key(201)).unwrap().is_some());
        s.flush().unwrap();
    }
    let s = open(dir.path(), 4);
    assert_eq!(s.last_seq().unwrap(), 200);
    let lost: Vec<&str> = events[200..].iter().map(|e| e.event_id.as_str()).collect();
    assert_indexes_agree(&s, &lost, &[]);
    // The lost events are not in the log: they may be recorded (once).
    let outcome = s.append(&events[200..], &[]).unwrap();
    assert!(outcome.iter().all(|a| a.is_recorded()));
    assert_eq!(s.last_seq().unwrap(), 300);
    assert_indexes_agree(&s, &[], &[]);
}

#[test]
fn a_log_without_an_index_gets_one_at_open_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(500, 23);
    {
        let s = open(dir.path(), 4);
        for batch in events.chunks(64) {
            s.append(batch, &[]).unwrap();
        }
        s.db().drop_tree("log_index").unwrap();
        s.flush().unwrap();
    }
    {
        let s = open(dir.path(), 4);
        assert_indexes_agree(&s, &[], &[]);
    }
    let s = open(dir.path(), 4);
    assert_indexes_agree(&s, &[], &[]);
}

/// Customer ids that are prefixes of one another (and one with a 0x00 in it), so that
/// index keys of different customers share prefixes.
const CUSTOMERS: &[&str] = &["a", "ab", "a\u{0}b", "b", "ba", "", "c"];

fn batches() -> impl Strategy<Value = Vec<Vec<(usize, usize)>>> {
    // (id number, customer index): ids repeat across and within batches.
    prop::collection::vec(
        prop::collection::vec((0usize..60, 0..CUSTOMERS.len()), 0..12),
        1..10,
    )
}

fn to_events(batch: &[(usize, usize)]) -> Vec<Event> {
    batch
        .iter()
        .map(|&(id, customer)| ev(&format!("e{id}"), CUSTOMERS[customer], common::T0 + id as i64))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// With a cache of 2 ids, across a reopen halfway, seq_of and customer_events
    /// answer what a full scan says, on every backend, and no id is recorded twice.
    #[test]
    fn indexes_agree_with_a_full_scan(batches in batches(), reopen_at in 0usize..10) {
        let dir = tempfile::tempdir().unwrap();
        let fjall_dir = tempfile::tempdir().unwrap();
        let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut sled = open_engine(Engine::Sled, dir.path(), 2);
        let mut fjall = open_engine(Engine::Fjall, fjall_dir.path(), 2);
        let all_ids: Vec<String> = (0..60).map(|i| format!("e{i}")).collect();
        let all_ids: Vec<&str> = all_ids.iter().map(String::as_str).collect();
        for (i, batch) in batches.iter().enumerate() {
            if i == reopen_at {
                sled.flush().unwrap();
                fjall.flush().unwrap();
                drop(sled);
                drop(fjall);
                sled = open_engine(Engine::Sled, dir.path(), 2);
                fjall = open_engine(Engine::Fjall, fjall_dir.path(), 2);
            }
            let events = to_events(batch);
            let from_memory = memory.append(&events, &[]).unwrap();
            let from_sled = sled.append(&events, &[]).unwrap();
            let from_fjall = fjall.append(&events, &[]).unwrap();
            prop_assert_eq!(&from_memory, &from_sled);
            prop_assert_eq!(&from_memory, &from_fjall);
        }
        for b in [&memory, &sled, &fjall] {
            assert_indexes_agree(b.as_ref(), &all_ids, CUSTOMERS);
        }
        prop_assert_eq!(full_scan(memory.as_ref()).1, full_scan(sled.as_ref()).1);
        prop_assert_eq!(full_scan(memory.as_ref()).1, full_scan(fjall.as_ref()).1);
    }
}

#[test]
fn every_backend_refuses_a_duplicate_after_many_others() {
    for b in backends() {
        let s = &b.storage;
        let events: Vec<Event> = (0..2_000)
            .map(|i| ev(&format!("x{i}"), "c", common::T0 + i))
            .collect();
        for batch in events.chunks(250) {
            s.append(batch, &[]).unwrap();
        }
        let outcome = s.append(&events[..1], &[]).unwrap();
        assert_eq!(
            outcome,
            vec![Appended::Duplicate { existing_seq: 1 }],
            "{}",
            b.name
        );
        assert_eq!(s.customer_events("c").unwrap().len(), 2_000, "{}", b.name);
    }
}

//! Replay, time cuts and snapshots, against both backends.

mod common;

use std::sync::Arc;

use common::{T0, backends, stream};
use tact_core::{DAY, Retention, Span};
use tact_log::{GroupCommit, Log, MemoryStorage, Projection, Storage, codec, save_snapshot, snapshot};

fn fill(storage: &dyn Storage, events: &[tact_core::Event]) {
    for chunk in events.chunks(100) {
        storage.append(chunk, &[]).unwrap();
    }
}

#[test]
fn rebuild_folds_every_event() {
    for b in backends() {
        let events = stream(1000, 37);
        fill(b.storage.as_ref(), &events);
        let (p, stats) = Projection::rebuild(b.storage.as_ref(), Retention::default()).unwrap();
        assert_eq!(stats.events, 1000, "{}", b.name);
        assert_eq!(stats.customers, 37);
        assert_eq!(stats.snapshot, None);
        assert_eq!(p.position, 1000);
        // The same as folding by hand.
        let mut by_hand = Projection::new(Retention::default());
        for (i, e) in events.iter().enumerate() {
            assert!(by_hand.apply(i as u64 + 1, e));
        }
        assert!(!by_hand.apply(5, &events[4]), "already folded");
        assert_eq!(p, by_hand);
        // No spare capacity is left behind: a copy (exactly sized) is no smaller.
        for state in p.customers.values() {
            assert_eq!(state.heap_bytes(), state.clone().heap_bytes(), "{}", b.name);
        }
    }
}

#[test]
fn rebuild_until_skips_later_events() {
    for b in backends() {
        let events = stream(500, 10);
        fill(b.storage.as_ref(), &events);
        let until = events[199].occurred_at;
        let (cut, stats) =
            Projection::rebuild_until(b.storage.as_ref(), Retention::default(), until).unwrap();
        assert_eq!(stats.events, 200, "{}", b.name);
        assert_eq!(cut.until, Some(until));
        let mut expected = Projection::new(Retention::default());
        for (i, e) in events[..200].iter().enumerate() {
            expected.apply(i as u64 + 1, e);
        }
        assert_eq!(cut.customers, expected.customers);
        assert!(
            save_snapshot(b.storage.as_ref(), &cut).is_err(),
            "a time cut is no snapshot"
        );
    }
}

#[test]
fn snapshot_then_incremental_replay_equals_full_replay() {
    for b in backends() {
        let s = b.storage.as_ref();
        let events = stream(3000, 101);
        let retention = Retention {
            window: Span(3 * DAY.0),
            max_entries: 16,
        };
        fill(s, &events[..1800]);
        let (at_1800, _) = Projection::rebuild(s, retention).unwrap();
        let bytes = save_snapshot(s, &at_1800).unwrap();
        assert!(bytes > 0);
        let tag = snapshot::decode_snapshot_tag(&s.get_snapshot().unwrap().unwrap()).unwrap();
        assert_eq!(
            (tag.position, tag.retention, tag.customers),
            (1800, retention, 101)
        );

        fill(s, &events[1800..]);
        let (loaded, stats) = Projection::load(s, retention).unwrap();
        assert_eq!(stats.snapshot, Some(1800), "{}", b.name);
        assert_eq!(stats.events, 1200);
        let (full, _) = Projection::rebuild(s, retention).unwrap();
        assert_eq!(loaded, full, "{}", b.name);
        assert_eq!(loaded.position, 3000);

        // A snapshot at the end of the log replays nothing.
        save_snapshot(s, &full).unwrap();
        let (again, stats) = Projection::load(s, retention).unwrap();
        assert_eq!((stats.snapshot, stats.events), (Some(3000), 0));
        assert_eq!(again, full);
    }
}

#[test]
fn unusable_snapshots_fall_back_to_full_replay() {
    for b in backends() {
        let s = b.storage.as_ref();
        let retention = Retention::default();
        fill(s, &stream(400, 20));
        let (full, _) = Projection::rebuild(s, retention).unwrap();

        // Missing.
        let (p, stats) = Projection::load(s, retention).unwrap();
        assert_eq!((stats.snapshot, stats.events), (None, 400), "{}", b.name);
        assert_eq!(p, full);

        // Corrupt body: crc mismatch.
        let anchor = snapshot::anchor(s, full.position).unwrap();
        let good = snapshot::encode_snapshot(&full, anchor).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        assert!(matches!(
            snapshot::decode_snapshot(&bad),
            Err(snapshot::SnapshotError::Crc { .. })
        ));
        s.put_snapshot(&bad).unwrap();
        let (p, stats) = Projection::load(s, retention).unwrap();
        assert_eq!((stats.snapshot, stats.events), (None, 400), "{}", b.name);
        assert_eq!(p, full);

        // A snapshot of the version before: its states were folded by another rule.
        let mut older = good.clone();
        older[0] = snapshot::SNAPSHOT_VERSION - 1;
        assert!(matches!(
            snapshot::decode_snapshot(&older),
            Err(snapshot::SnapshotError::Version(v)) if v == snapshot::SNAPSHOT_VERSION - 1
        ));
        s.put_snapshot(&older).unwrap();
        let (p, stats) = Projection::load(s, retention).unwrap();
        assert_eq!((stats.snapshot, stats.events), (None, 400), "{}", b.name);
        assert_eq!(p, full);

        // Garbage and truncation.
        for junk in [
            &b"\x01\x00"[..],
            &b"not a snapshot at all"[..],
            &good[..good.len() / 2],
        ] {
            s.put_snapshot(junk).unwrap();
            let (p, stats) = Projection::load(s, retention).unwrap();
            assert_eq!(stats.snapshot, None);
            assert_eq!(p, full);
        }

        // Another retention.
        s.put_snapshot(&good).unwrap();
        let other = Retention {
            window: Span(DAY.0),
            max_entries: 8,
        };
        let (p, stats) = Projection::load(s, other).unwrap();
        assert_eq!(stats.snapshot, None);
        assert_eq!(p, Projection::rebuild(s, other).unwrap().0);
        let (_, stats) = Projection::load(s, retention).unwrap();
        assert_eq!(stats.snapshot, Some(400), "the good snapshot is used");

        // Another log's snapshot (copied from another data directory): its anchor is
        // not this log's event at its position.
        s.put_snapshot(&snapshot::encode_snapshot(&full, anchor ^ 1).unwrap())
            .unwrap();
        let (p, stats) = Projection::load(s, retention).unwrap();
        assert_eq!(stats.snapshot, None, "{}", b.name);
        assert_eq!(p, full);

        // Beyond the log: a snapshot from a longer log.
        let mut ahead = full.clone();
        ahead.position = 10_000;
        s.put_snapshot(&snapshot::encode_snapshot(&ahead, anchor).unwrap())
            .unwrap();
        let (p, stats) = Projection::load(s, retention).unwrap();
        assert_eq!(stats.snapshot, None, "{}", b.name);
        assert_eq!(p, full);
        assert!(save_snapshot(s, &ahead).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durability_hook_keeps_a_live_projection_equal_to_replay() {
    for b in backends() {
        let live = Arc::new(std::sync::Mutex::new(Projection::new(Retention::default())));
        let sink = Arc::clone(&live);
        let log = Arc::new(Log::open(
            Arc::clone(&b.storage),
            GroupCommit::default(),
            move |batch| {
                let mut p = sink.lock().unwrap();
                for (seq, e) in batch {
                    p.apply(*seq, e);
                }
            },
        ));
        let events = stream(2000, 50);
        let mut tasks = Vec::new();
        for chunk in events.chunks(40) {
            let log = Arc::clone(&log);
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(
                async move { log.append(chunk, vec![]).await.unwrap() },
            ));
        }
        for t in tasks {
            t.await.unwrap();
        }
        log.shutdown().await.unwrap();
        let live = live.lock().unwrap().clone();
        let (replayed, _) = Projection::rebuild(b.storage.as_ref(), Retention::default()).unwrap();
        assert_eq!(live, replayed, "{}", b.name);
        save_snapshot(b.storage.as_ref(), &live).unwrap();
        let (loaded, stats) = Projection::load(b.storage.as_ref(), Retention::default()).unwrap();
        assert_eq!(stats.snapshot, Some(2000));
        assert_eq!(loaded, replayed);
    }
}

#[test]
fn a_corrupt_record_after_the_snapshot_fails_the_load() {
    let mem = MemoryStorage::new();
    fill(&mem, &stream(10, 2));
    save_snapshot(&mem, &Projection::rebuild(&mem, Retention::default()).unwrap().0).unwrap();
    let mut rec = codec::encode_event(&common::ev("x", "c", T0)).unwrap();
    rec[5] ^= 1;
    mem.put_raw_record(11, &rec);
    let err = Projection::load(&mem, Retention::default()).unwrap_err();
    assert!(err.to_string().contains("seq 11"), "{err}");
}

#[test]
fn long_replays_are_pipelined_and_still_exact() {
    for b in backends() {
        let s = b.storage.as_ref();
        let events = stream(24_000, 503);
        for chunk in events.chunks(4_000) {
            s.append(chunk, &[]).unwrap();
        }
        let (p, stats) = Projection::rebuild(s, Retention::default()).unwrap();
        assert_eq!(stats.events, 24_000, "{}", b.name);
        let mut by_hand = Projection::new(Retention::default());
        for (i, e) in events.iter().enumerate() {
            by_hand.apply(i as u64 + 1, e);
        }
        assert_eq!(p, by_hand, "{}", b.name);
        let until = events[19_999].occurred_at;
        let (cut, stats) = Projection::rebuild_until(s, Retention::default(), until).unwrap();
        assert_eq!((stats.events, cut.position), (20_000, 24_000));
    }
}

#[test]
fn a_corrupt_record_deep_in_a_long_replay_is_reported_by_seq() {
    for bad in [1, 1_500, 25_000, 40_000] {
        let mem = MemoryStorage::new();
        for chunk in stream(40_000, 97).chunks(5_000) {
            mem.append(chunk, &[]).unwrap();
        }
        let mut rec = codec::encode_event(&stream(1, 1)[0]).unwrap();
        rec[6] ^= 0x40;
        mem.put_raw_record(bad, &rec);
        let err = Projection::rebuild(&mem, Retention::default()).unwrap_err();
        assert!(
            matches!(err, tact_log::LogError::Corrupt { seq, .. } if seq == bad),
            "{err}"
        );
    }
}

/// A storage whose snapshot slot, or whose log, cannot be read (as when sled fails to
/// read the page or blob a value lives in).
#[derive(Debug)]
struct Unreadable {
    inner: MemoryStorage,
    snapshot: bool,
    log: bool,
}

impl Unreadable {
    fn error() -> tact_log::LogError {
        tact_log::LogError::Sled(sled::Error::Io(std::io::Error::other(
            "read corrupted data (simulated)",
        )))
    }
}

impl Storage for Unreadable {
    fn append_checked(
        &self,
        events: &[tact_core::Event],
        meta: &[tact_log::MetaEntry],
        on_taken: &mut tact_log::OnTaken<'_>,
    ) -> Result<Vec<tact_log::Appended>, tact_log::LogError> {
        self.inner.append_checked(events, meta, on_taken)
    }
    fn flush(&self) -> Result<(), tact_log::LogError> {
        self.inner.flush()
    }
    fn last_seq(&self) -> Result<u64, tact_log::LogError> {
        self.inner.last_seq()
    }
    fn get(&self, seq: u64) -> Result<Option<tact_core::Event>, tact_log::LogError> {
        self.inner.get(seq)
    }
    fn scan_raw(&self, from: u64, visit: &mut tact_log::RawVisitor<'_>) -> Result<(), tact_log::LogError> {
        if self.log {
            return Err(Self::error());
        }
        self.inner.scan_raw(from, visit)
    }
    fn visit_customer_events(
        &self,
        customer_id: &str,
        visit: &mut tact_log::EventVisitor<'_>,
    ) -> Result<(), tact_log::LogError> {
        self.inner.visit_customer_events(customer_id, visit)
    }
    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, tact_log::LogError> {
        self.inner.seq_of(event_id)
    }
    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), tact_log::LogError> {
        self.inner.put_meta(key, value)
    }
    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, tact_log::LogError> {
        self.inner.get_meta(key)
    }
    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<tact_log::MetaEntry>, tact_log::LogError> {
        self.inner.meta_with_prefix(prefix)
    }
    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), tact_log::LogError> {
        self.inner.put_snapshot(bytes)
    }
    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, tact_log::LogError> {
        if self.snapshot {
            return Err(Self::error());
        }
        self.inner.get_snapshot()
    }
}

#[test]
fn a_snapshot_slot_that_cannot_be_read_means_a_full_replay() {
    let storage = Unreadable {
        inner: MemoryStorage::new(),
        snapshot: true,
        log: false,
    };
    fill(&storage, &stream(300, 7));
    let (full, _) = Projection::rebuild(&storage, Retention::default()).unwrap();
    save_snapshot(&storage, &full).unwrap();
    let (loaded, stats) = Projection::load(&storage, Retention::default()).unwrap();
    assert_eq!((stats.snapshot, stats.events), (None, 300));
    assert_eq!(loaded, full);
}

#[test]
fn a_log_that_cannot_be_read_still_fails_the_load_whatever_the_snapshot() {
    for snapshot in [false, true] {
        let storage = Unreadable {
            inner: MemoryStorage::new(),
            snapshot,
            log: false,
        };
        fill(&storage, &stream(50, 3));
        // A snapshot of half the log, so the tail must be read.
        let half = MemoryStorage::new();
        fill(&half, &stream(25, 3));
        save_snapshot(
            &storage,
            &Projection::rebuild(&half, Retention::default()).unwrap().0,
        )
        .unwrap();
        let storage = Unreadable { log: true, ..storage };
        let err = Projection::load(&storage, Retention::default()).unwrap_err();
        assert!(err.to_string().contains("sled"), "{err}");
    }
}

//! The group-commit front end, against both backends.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{T0, backends, ev};
use tact_core::Event;
use tact_log::{Appended, GroupCommit, Log, LogError, MemoryStorage, MetaEntry, RawVisitor, Storage};

type Seen = Arc<Mutex<Vec<(u64, String)>>>;

fn recording_hook() -> (Seen, impl FnMut(&[(u64, &Event)]) + Send + 'static) {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    (seen, move |batch: &[(u64, &Event)]| {
        let mut sink = sink.lock().unwrap();
        sink.extend(batch.iter().map(|(seq, e)| (*seq, e.event_id.clone())));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_appenders_get_consecutive_seqs_and_lose_nothing() {
    const APPENDERS: usize = 50;
    const CALLS: usize = 20;
    const PER_CALL: usize = 5;
    for b in backends() {
        let (seen, hook) = recording_hook();
        let log = Arc::new(Log::open(
            Arc::clone(&b.storage),
            GroupCommit {
                max_batch_events: 64,
                ..GroupCommit::default()
            },
            hook,
        ));
        let mut tasks = Vec::new();
        for a in 0..APPENDERS {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for c in 0..CALLS {
                    let events: Vec<Event> = (0..PER_CALL)
                        .map(|k| {
                            ev(
                                &format!("a{a}-c{c}-k{k}"),
                                &format!("cust-{a}"),
                                T0 + (c * 10 + k) as i64,
                            )
                        })
                        .collect();
                    let r = log.append(events, vec![]).await.unwrap();
                    assert_eq!(r.len(), PER_CALL);
                    let seqs: Vec<u64> = r.iter().map(|x| x.seq()).collect();
                    assert!(r.iter().all(|x| x.is_recorded()));
                    // One call's events are consecutive.
                    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
                    got.extend(seqs);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let total = (APPENDERS * CALLS * PER_CALL) as u64;
        all.sort_unstable();
        assert_eq!(all, (1..=total).collect::<Vec<_>>(), "{}", b.name);
        assert_eq!(b.storage.last_seq().unwrap(), total);
        assert_eq!(log.durable_seq(), total);
        // The hook saw every event once, in seq order, before its appender was answered.
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        let stored = b.storage.read_from(1, total as usize).unwrap();
        assert!(
            stored
                .iter()
                .zip(&seen)
                .all(|((q, e), (s, id))| q == s && &e.event_id == id)
        );
        let stats = log.stats();
        let groups = stats.groups.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            groups < (APPENDERS * CALLS) as u64,
            "{}: no grouping happened ({groups} groups)",
            b.name
        );
        log.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn duplicates_across_concurrent_calls_are_reported_not_written() {
    for b in backends() {
        let (seen, hook) = recording_hook();
        let log = Log::open(Arc::clone(&b.storage), GroupCommit::default(), hook);
        let (x, y) = tokio::join!(
            log.append(vec![ev("same", "c", T0), ev("x", "c", T0)], vec![]),
            log.append(vec![ev("same", "c", T0), ev("y", "c", T0)], vec![]),
        );
        let results = [x.unwrap(), y.unwrap()];
        let recorded: usize = results.iter().flatten().filter(|a| a.is_recorded()).count();
        assert_eq!(recorded, 3, "{}", b.name);
        let dup: Vec<&Appended> = results.iter().flatten().filter(|a| !a.is_recorded()).collect();
        assert_eq!(dup.len(), 1);
        assert_eq!(b.storage.seq_of("same").unwrap(), Some(dup[0].seq()));
        assert_eq!(seen.lock().unwrap().len(), 3);
        let again = log.append(vec![ev("x", "c", T0)], vec![]).await.unwrap();
        assert!(!again[0].is_recorded());
        log.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn meta_goes_in_with_the_events_and_shutdown_closes() {
    for b in backends() {
        let log = Log::open(
            Arc::clone(&b.storage),
            GroupCommit {
                max_wait: Duration::from_millis(2),
                ..GroupCommit::default()
            },
            |_: &[(u64, &Event)]| {},
        );
        let meta: Vec<MetaEntry> = vec![(b"kafka/offset/events/3".to_vec(), 99u64.to_be_bytes().to_vec())];
        let r = log.append(vec![ev("e1", "c", T0)], meta).await.unwrap();
        assert_eq!(r, vec![Appended::Recorded { seq: 1 }]);
        assert_eq!(
            b.storage.get_meta(b"kafka/offset/events/3").unwrap(),
            Some(99u64.to_be_bytes().to_vec()),
            "{}",
            b.name
        );
        assert!(log.append(vec![], vec![]).await.unwrap().is_empty());
        log.shutdown().await.unwrap();
        log.shutdown().await.unwrap();
        assert!(matches!(
            log.append(vec![ev("e2", "c", T0)], vec![]).await,
            Err(LogError::Closed)
        ));
        assert_eq!(b.storage.last_seq().unwrap(), 1);
    }
}

#[tokio::test]
async fn appends_queued_before_shutdown_are_committed() {
    let b = common::sled();
    let log = Arc::new(Log::open(
        Arc::clone(&b.storage),
        GroupCommit::default(),
        |_: &[(u64, &Event)]| {},
    ));
    let pending: Vec<_> = (0..20)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(vec![ev(&format!("q{i}"), "c", T0)], vec![]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    log.shutdown().await.unwrap();
    let mut ok = 0;
    for p in pending {
        match p.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LogError::Closed) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // Whatever was acknowledged is in the log.
    assert_eq!(b.storage.last_seq().unwrap(), ok);
}

/// A storage whose flush fails once asked to.
#[derive(Debug, Default)]
struct FailingFlush {
    inner: MemoryStorage,
    fail: std::sync::atomic::AtomicBool,
    flushes: std::sync::atomic::AtomicU64,
}

impl Storage for FailingFlush {
    fn append_checked(
        &self,
        events: &[Event],
        meta: &[MetaEntry],
        on_taken: &mut tact_log::OnTaken<'_>,
    ) -> Result<Vec<Appended>, LogError> {
        self.inner.append_checked(events, meta, on_taken)
    }
    fn flush(&self) -> Result<(), LogError> {
        self.flushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LogError::Writer("disk on fire".into()));
        }
        Ok(())
    }
    fn last_seq(&self) -> Result<u64, LogError> {
        self.inner.last_seq()
    }
    fn get(&self, seq: u64) -> Result<Option<Event>, LogError> {
        self.inner.get(seq)
    }
    fn scan_raw(&self, from: u64, visit: &mut RawVisitor<'_>) -> Result<(), LogError> {
        self.inner.scan_raw(from, visit)
    }
    fn visit_customer_events(
        &self,
        customer_id: &str,
        visit: &mut tact_log::EventVisitor<'_>,
    ) -> Result<(), LogError> {
        self.inner.visit_customer_events(customer_id, visit)
    }
    fn seq_of(&self, event_id: &str) -> Result<Option<u64>, LogError> {
        self.inner.seq_of(event_id)
    }
    fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        self.inner.put_meta(key, value)
    }
    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get_meta(key)
    }
    fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaEntry>, LogError> {
        self.inner.meta_with_prefix(prefix)
    }
    fn put_snapshot(&self, bytes: &[u8]) -> Result<(), LogError> {
        self.inner.put_snapshot(bytes)
    }
    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get_snapshot()
    }
}

#[tokio::test]
async fn a_failed_flush_poisons_the_log_and_skips_the_hook() {
    let storage = Arc::new(FailingFlush::default());
    let (seen, hook) = recording_hook();
    let log = Log::open(storage.clone(), GroupCommit::default(), hook);
    log.append(vec![ev("ok", "c", T0)], vec![]).await.unwrap();
    storage.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = log.append(vec![ev("lost", "c", T0)], vec![]).await.unwrap_err();
    assert!(matches!(err, LogError::Commit(_)), "{err}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    storage.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let err = log.append(vec![ev("later", "c", T0)], vec![]).await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned(_)), "{err}");
    let ids: HashSet<String> = seen.lock().unwrap().iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, HashSet::from(["ok".to_string()]));
    // Poisoned: shutdown skips the final flush and says why.
    assert!(matches!(log.shutdown().await, Err(LogError::Poisoned(_))));
}

#[tokio::test]
async fn a_poisoned_log_tells_its_watchers_and_is_not_flushed_at_shutdown() {
    let storage = Arc::new(FailingFlush::default());
    let log = Log::open(storage.clone(), GroupCommit::default(), |_: &[(u64, &Event)]| {});
    assert!(log.poisoned().is_none());
    let watcher = tokio::spawn(log.when_poisoned());
    log.append(vec![ev("ok", "c", T0)], vec![]).await.unwrap();
    assert!(!watcher.is_finished());
    storage.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    log.append(vec![ev("lost", "c", T0)], vec![]).await.unwrap_err();
    let cause = tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .expect("the watcher hears of it")
        .unwrap();
    assert!(cause.to_string().contains("disk on fire"), "{cause}");
    assert!(log.poisoned().is_some());
    // A later watcher resolves at once.
    assert!(log.when_poisoned().await.to_string().contains("disk on fire"));
    // The failed storage is not flushed again on the way out (a full disk can hang).
    let flushes = storage.flushes.load(std::sync::atomic::Ordering::SeqCst);
    let err = log.shutdown().await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned(_)), "{err}");
    assert_eq!(storage.flushes.load(std::sync::atomic::Ordering::SeqCst), flushes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_in_flight_are_written_in_order_and_later_meta_wins() {
    const SUBMITS: u64 = 300;
    for b in backends() {
        let log = Log::open(
            Arc::clone(&b.storage),
            GroupCommit {
                max_batch_events: 7,
                ..GroupCommit::default()
            },
            |_: &[(u64, &Event)]| {},
        );
        let offset = b"kafka/offset/events/0".to_vec();
        let mut pending = Vec::new();
        for i in 0..SUBMITS {
            // Every other submit repeats an event (a redelivery): its offset still counts.
            let events = if i % 2 == 1 {
                vec![ev(&format!("e{}", i - 1), "c", T0)]
            } else {
                vec![ev(&format!("e{i}"), "c", T0)]
            };
            let meta = vec![(offset.clone(), i.to_be_bytes().to_vec())];
            let p = log.submit(events, meta).await.unwrap();
            if i == 0 {
                assert!(format!("{p:?}").contains("PendingAppend"));
            }
            pending.push(p);
        }
        let mut seqs = Vec::new();
        for (i, p) in pending.into_iter().enumerate() {
            let r = p.await.unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].is_recorded(), i % 2 == 0, "{}: submit {i}", b.name);
            seqs.push(r[0].seq());
        }
        // Seqs follow the order of the submits; a redelivery points at the original.
        let expected: Vec<u64> = (0..SUBMITS).map(|i| i / 2 + 1).collect();
        assert_eq!(seqs, expected, "{}", b.name);
        assert_eq!(
            b.storage.get_meta(&offset).unwrap(),
            Some((SUBMITS - 1).to_be_bytes().to_vec()),
            "{}: the last submit's offset stands",
            b.name
        );
        assert!(log.stats().groups.load(std::sync::atomic::Ordering::Relaxed) > 1);
        log.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_append_of_only_duplicates_still_writes_its_meta() {
    for b in backends() {
        let (seen, hook) = recording_hook();
        let log = Log::open(Arc::clone(&b.storage), GroupCommit::default(), hook);
        let key = b"kafka/offset/events/2".to_vec();
        log.append(
            vec![ev("a", "c", T0), ev("b", "c", T0)],
            vec![(key.clone(), b"10".to_vec())],
        )
        .await
        .unwrap();
        // The same messages redelivered at later offsets, and a dead letter beside them.
        let r = log
            .append(
                vec![ev("b", "c", T0), ev("a", "c", T0)],
                vec![
                    (key.clone(), b"12".to_vec()),
                    (
                        [tact_log::DEAD_LETTER_PREFIX, b"events/2/11"].concat(),
                        b"bad".to_vec(),
                    ),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            r,
            vec![
                Appended::Duplicate { existing_seq: 2 },
                Appended::Duplicate { existing_seq: 1 }
            ]
        );
        assert_eq!(
            b.storage.get_meta(&key).unwrap(),
            Some(b"12".to_vec()),
            "{}",
            b.name
        );
        assert_eq!(
            b.storage
                .meta_with_prefix(tact_log::DEAD_LETTER_PREFIX)
                .unwrap()
                .len(),
            1,
            "{}",
            b.name
        );
        // Meta alone goes through too.
        log.submit(vec![], vec![(key.clone(), b"13".to_vec())])
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(b.storage.get_meta(&key).unwrap(), Some(b"13".to_vec()));
        assert_eq!(b.storage.last_seq().unwrap(), 2);
        assert_eq!(seen.lock().unwrap().len(), 2, "the hook saw no duplicate");
        log.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_dropped_pending_append_is_still_written() {
    for b in backends() {
        let log = Log::open(
            Arc::clone(&b.storage),
            GroupCommit::default(),
            |_: &[(u64, &Event)]| {},
        );
        drop(log.submit(vec![ev("x", "c", T0)], vec![]).await.unwrap());
        let r = log.append(vec![ev("y", "c", T0)], vec![]).await.unwrap();
        assert_eq!(r, vec![Appended::Recorded { seq: 2 }], "{}", b.name);
        assert_eq!(b.storage.seq_of("x").unwrap(), Some(1));
        // An empty submit resolves at once.
        assert!(
            log.submit(vec![], vec![])
                .await
                .unwrap()
                .await
                .unwrap()
                .is_empty()
        );
        log.shutdown().await.unwrap();
        assert!(matches!(
            log.submit(vec![ev("z", "c", T0)], vec![]).await,
            Err(LogError::Closed)
        ));
    }
}

/// One `on_taken` call: the appender's name, the index, the customer, the holder's seq.
type TakenCall = (&'static str, usize, String, u64);

/// Appends grouped into one write each get `on_taken` calls for their own events only,
/// with indexes into their own events, and the meta entries go in with the group.
#[tokio::test]
async fn checked_submits_in_one_group_hear_of_their_own_taken_ids() {
    for b in backends() {
        let log = Log::open(
            Arc::clone(&b.storage),
            GroupCommit {
                max_wait: Duration::from_millis(300),
                ..GroupCommit::default()
            },
            |_: &[(u64, &Event)]| {},
        );
        log.append(vec![ev("a", "c", T0)], vec![]).await.unwrap();
        let calls: Arc<Mutex<Vec<TakenCall>>> = Arc::default();
        let checker = |name: &'static str| -> Box<tact_log::OnTaken<'static>> {
            let calls = Arc::clone(&calls);
            Box::new(move |i, e, holder| {
                calls
                    .lock()
                    .unwrap()
                    .push((name, i, e.customer_id.clone(), holder));
                Some((
                    [tact_log::DEAD_LETTER_PREFIX, format!("{name}/{i}").as_bytes()].concat(),
                    Vec::new(),
                ))
            })
        };
        let groups = log.stats().groups.load(std::sync::atomic::Ordering::Relaxed);
        let plain = log.submit(vec![ev("a", "c2", T0)], vec![]).await.unwrap();
        let first = log
            .submit_checked(
                vec![ev("n", "c", T0), ev("a", "c3", T0)],
                vec![],
                checker("first"),
            )
            .await
            .unwrap();
        let second = log
            .submit_checked(
                vec![ev("a", "c4", T0), ev("n", "c5", T0)],
                vec![],
                checker("second"),
            )
            .await
            .unwrap();
        assert_eq!(plain.await.unwrap(), vec![Appended::Taken { existing_seq: 1 }]);
        assert_eq!(
            first.await.unwrap(),
            vec![Appended::Recorded { seq: 2 }, Appended::Taken { existing_seq: 1 }]
        );
        assert_eq!(
            second.await.unwrap(),
            vec![
                Appended::Taken { existing_seq: 1 },
                Appended::Taken { existing_seq: 2 }
            ]
        );
        assert_eq!(
            log.stats().groups.load(std::sync::atomic::Ordering::Relaxed) - groups,
            1,
            "{}: the three went in one write",
            b.name
        );
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                ("first", 1, "c3".to_owned(), 1),
                ("second", 0, "c4".to_owned(), 1),
                ("second", 1, "c5".to_owned(), 2),
            ],
            "{}",
            b.name
        );
        let dead: Vec<Vec<u8>> = b
            .storage
            .meta_with_prefix(tact_log::DEAD_LETTER_PREFIX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k[tact_log::DEAD_LETTER_PREFIX.len()..].to_vec())
            .collect();
        assert_eq!(
            dead,
            vec![b"first/1".to_vec(), b"second/0".to_vec(), b"second/1".to_vec()]
        );
        log.shutdown().await.unwrap();
    }
}

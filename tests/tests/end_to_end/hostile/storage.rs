//! A failing or corrupt store. See mod.rs. The snapshot is corrupt (the server must
//! start from the log), or the disk fills up (writes fail) or hangs (a flush never
//! returns): tact must say it is unhealthy and must still stop.

// =======================================================================================
// Corrupt snapshots (issue #8, defect 6)
//
// The snapshot is a cache of the projection: whatever is wrong with it (sled cannot read
// its slot, bad crc, version, tag or body, truncated) the server must start by replaying
// the log, with the same state as before. Damage inside the snapshot's bytes is caught by
// its own crc; the tests here also break the sled file the snapshot lives in, so that sled
// itself fails to read the slot ("Read corrupted data"), which used to stop the start.
// =======================================================================================

mod corrupt_snapshot {
    use std::path::{Path, PathBuf};

    use tact_core::{Channel, EventKind, Purpose};
    use tact_log::Projection;
    use tact_proto::pb;
    use tact_tests::*;

    /// Customers in the first life: enough that the snapshot is larger than sled's
    /// inline limit (a quarter of its 512 KiB segments), so sled stores it in a file of
    /// its own under `blobs/`.
    const CUSTOMERS: usize = 1500;

    fn history() -> Vec<pb::InteractionEvent> {
        let now = wed_10am();
        let mut out = Vec::new();
        for c in 0..CUSTOMERS {
            let id = format!("snap-{c}");
            out.extend(opted_in(&id, now.saturating_sub(days(100))));
            out.push(event(
                &format!("{id}-sent"),
                &id,
                now.saturating_sub(days(1 + (c % 5) as i64)),
                EventKind::OutreachSent {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "autumn".into(),
                    decision_id: None,
                },
            ));
        }
        out
    }

    /// Records the history (in appends small enough to stay inline in sled) and stops
    /// cleanly, which writes the snapshot. Returns the projection it had.
    async fn first_life(data: &Path) -> Projection {
        let server = TestServer::start(Some(data.to_path_buf()), wed_10am()).await;
        let mut client = server.client().await;
        for batch in history().chunks(200) {
            record(&mut client, batch.to_vec()).await;
        }
        let projection = server.handle.engine().projection();
        server.stop().await;
        projection
    }

    /// The snapshot's bytes, read back through the storage.
    fn stored_snapshot(data: &Path) -> Vec<u8> {
        let storage = tact_server::open_storage(data).unwrap();
        storage
            .get_snapshot()
            .unwrap()
            .expect("a snapshot was written at shutdown")
    }

    /// Every file under the data directory that holds the snapshot (found by its first
    /// bytes), and where in it the snapshot starts. A sled blob file before the fix (sled
    /// keeps a value this large in a file of its own), the snapshot file after it.
    fn files_holding(data: &Path, snapshot: &[u8]) -> Vec<(PathBuf, usize)> {
        let needle = &snapshot[..64];
        let mut out = Vec::new();
        let mut dirs = vec![data.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Some(at) = std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .position(|w| w == needle)
                {
                    out.push((path, at));
                }
            }
        }
        assert!(
            !out.is_empty(),
            "the {}-byte snapshot is in no file of its own: raise CUSTOMERS",
            snapshot.len()
        );
        out
    }

    /// Starts again, checks the state was rebuilt from the whole log and equals the first
    /// life's, and stops cleanly (writing a good snapshot), then checks a third start
    /// uses that new snapshot.
    async fn starts_from_the_log(data: &Path, before: &Projection) {
        let server = TestServer::start(Some(data.to_path_buf()), wed_10am()).await;
        let stats = server.handle.replay_stats();
        assert_eq!(
            stats.snapshot, None,
            "the broken snapshot was not used: {stats:?}"
        );
        // Every customer event replayed: all but the log's first, tact's record of the
        // policy (not folded into any customer).
        assert_eq!(
            stats.events,
            before.position - 1,
            "the whole log replayed: {stats:?}"
        );
        let after = server.handle.engine().projection();
        assert_eq!(after.position, before.position);
        assert!(after.customers == before.customers, "replayed state differs");
        server.stop().await;

        let server = TestServer::start(Some(data.to_path_buf()), wed_10am()).await;
        let stats = server.handle.replay_stats();
        assert_eq!(stats.snapshot, Some(before.position), "{stats:?}");
        assert!(server.handle.engine().projection().customers == before.customers);
        server.stop().await;
    }

    #[tokio::test]
    async fn server_starts_from_the_log_when_the_snapshot_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let before = first_life(dir.path()).await;
        let snapshot = stored_snapshot(dir.path());
        for (file, at) in files_holding(dir.path(), &snapshot) {
            // Flip a byte in the middle of the snapshot. In a sled blob, sled's own crc of
            // the blob fails and sled refuses to open the database (the log with it).
            let mut bytes = std::fs::read(&file).unwrap();
            bytes[at + snapshot.len() / 2] ^= 0x55;
            std::fs::write(&file, bytes).unwrap();
        }
        starts_from_the_log(dir.path(), &before).await;
    }

    #[tokio::test]
    async fn server_starts_from_the_log_when_the_snapshot_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let before = first_life(dir.path()).await;
        let snapshot = stored_snapshot(dir.path());
        for (file, _) in files_holding(dir.path(), &snapshot) {
            std::fs::remove_file(file).unwrap();
        }
        starts_from_the_log(dir.path(), &before).await;
    }

    #[tokio::test]
    async fn server_starts_from_the_log_when_reading_the_snapshot_fails() {
        let dir = tempfile::tempdir().unwrap();
        let before = first_life(dir.path()).await;
        let snapshot = stored_snapshot(dir.path());
        for (file, _) in files_holding(dir.path(), &snapshot) {
            // A directory where the file was: reading it is an I/O error, not bad bytes.
            std::fs::remove_file(&file).unwrap();
            std::fs::create_dir(&file).unwrap();
        }
        let server = TestServer::start_with(Some(dir.path().to_path_buf()), wed_10am(), |o| {
            o.snapshot_on_shutdown = false
        })
        .await;
        let stats = server.handle.replay_stats();
        assert_eq!(
            (stats.snapshot, stats.events),
            (None, before.position - 1),
            "{stats:?}"
        );
        assert!(server.handle.engine().projection().customers == before.customers);
        server.stop().await;
    }

    #[tokio::test]
    async fn server_starts_from_the_log_when_the_snapshot_bytes_are_bad() {
        let dir = tempfile::tempdir().unwrap();
        let before = first_life(dir.path()).await;
        let good = stored_snapshot(dir.path());
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        let mut bad_crc = good.clone();
        bad_crc[2] ^= 1;
        let mut bad_body = good.clone();
        let last = bad_body.len() - 1;
        bad_body[last] ^= 1;
        // Well-formed snapshots that do not fit: beyond the log, another retention,
        // another log (a snapshot copied from another data directory: found probing a
        // release build, it stood in for this log's events, a withdrawal included).
        let anchor = {
            let storage = tact_server::open_storage(dir.path()).unwrap();
            tact_log::snapshot::anchor(&*storage, before.position).unwrap()
        };
        let beyond = tact_log::snapshot::encode_snapshot(
            &Projection {
                position: before.position + 1,
                ..before.clone()
            },
            anchor,
        )
        .unwrap();
        let mut retention = before.retention;
        retention.max_entries += 1;
        let other_retention = tact_log::snapshot::encode_snapshot(
            &Projection {
                retention,
                ..before.clone()
            },
            anchor,
        )
        .unwrap();
        let other_log = tact_log::snapshot::encode_snapshot(&before, anchor ^ 1).unwrap();
        // The control: the stored snapshot carries this log's anchor.
        assert_eq!(
            tact_log::snapshot::decode_snapshot_tag(&good).map(|t| t.anchor),
            Ok(anchor)
        );
        let cases: [(&str, Vec<u8>); 9] = [
            ("empty", Vec::new()),
            ("header only", good[..5].to_vec()),
            ("truncated", good[..good.len() / 2].to_vec()),
            ("version", bad_version),
            ("crc", bad_crc),
            ("body", bad_body),
            ("beyond the log", beyond),
            ("another retention", other_retention),
            ("another log", other_log),
        ];
        for (what, bytes) in cases {
            {
                let storage = tact_server::open_storage(dir.path()).unwrap();
                storage.put_snapshot(&bytes).unwrap();
            }
            let server = TestServer::start_with(Some(dir.path().to_path_buf()), wed_10am(), |o| {
                o.snapshot_on_shutdown = false
            })
            .await;
            let stats = server.handle.replay_stats();
            assert_eq!(stats.snapshot, None, "{what}: {stats:?}");
            assert_eq!(stats.events, before.position - 1, "{what}: {stats:?}");
            assert!(
                server.handle.engine().projection().customers == before.customers,
                "{what}: replayed state differs"
            );
            server.stop().await;
        }
    }
}

// =======================================================================================
// End of the corrupt-snapshot tests.
// =======================================================================================

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tact_core::Channel::Email;
use tact_core::Purpose::Marketing;
use tact_log::Storage;
use tact_proto::pb;
use tact_server::ServerError;
use tact_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.handle.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let status = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

async fn start_on(storage: &Arc<FlakyStorage>, flush_timeout: Duration) -> TestServer {
    let storage: Arc<dyn Storage> = Arc::clone(storage) as Arc<dyn Storage>;
    TestServer::start_with(None, wed_10am(), move |o| {
        o.storage = Some(storage);
        o.transport.flush_timeout = flush_timeout;
        o.transport.shutdown_grace = Duration::from_millis(500);
    })
    .await
}

/// Records one event, expecting the disk to refuse it.
async fn record_on_a_full_disk(client: &mut Client) -> tonic::Status {
    let now = wed_10am();
    client
        .record_events(pb::RecordEventsRequest {
            events: opted_in("c2", now),
        })
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_log_turns_health_not_serving_and_status_unhealthy() {
    let storage = FlakyStorage::new();
    let server = start_on(&storage, Duration::from_secs(5)).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("c1", wed_10am())).await;
    for service in ["", "tact.v1.ContactPolicy"] {
        assert_eq!(
            health(&server, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.healthy && status.unhealthy_reason.is_empty(), "{status:?}");

    storage.fail_writes();
    let refused = record_on_a_full_disk(&mut client).await;
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // Health turns at once (a watcher, not a poll), for the API and the server.
    let deadline = Instant::now() + Duration::from_secs(2);
    for service in ["", "tact.v1.ContactPolicy"] {
        loop {
            let now = health(&server, service).await;
            if now == ServingStatus::NotServing {
                break;
            }
            assert!(Instant::now() < deadline, "{service:?} still {now:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.healthy, "{status:?}");
    assert!(
        status.unhealthy_reason.contains("event log failed")
            && status.unhealthy_reason.contains("No space left on device"),
        "{}",
        status.unhealthy_reason
    );
    // Reads still answer from the state as it was; writes stay refused even once the
    // disk has room again (durability of the failed write is unknown: restart).
    let d = client
        .decide(request("c1", Email, Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow);

    let stopped = tokio::time::timeout(Duration::from_secs(3), server.shutdown())
        .await
        .expect("stops");
    let err = stopped.unwrap_err();
    assert!(matches!(err, ServerError::Log(_)), "{err}");
    assert!(err.to_string().contains("poisoned"), "{err}");
}

/// A full disk that also hangs on flush (what sled does when it cannot write): the
/// poisoned log is neither flushed nor snapshotted, so SIGTERM returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_on_a_failed_storage() {
    let storage = FlakyStorage::new();
    // A long flush timeout: the test shows the flush is skipped, not timed out.
    let server = start_on(&storage, Duration::from_secs(60)).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("c1", wed_10am())).await;
    storage.fail_writes();
    storage.hang_flushes();
    record_on_a_full_disk(&mut client).await;
    let flushes = storage.flushes.load(Ordering::SeqCst);

    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(3), server.shutdown()).await;
    let took = started.elapsed();
    storage.release();
    let err = stopped
        .expect("shutdown waited on the failed storage")
        .unwrap_err();
    assert!(err.to_string().contains("poisoned"), "{err}");
    assert_eq!(
        storage.flushes.load(Ordering::SeqCst),
        flushes,
        "flushed a failed storage"
    );
    assert!(storage.get_snapshot().unwrap().is_none(), "snapshot written");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// A disk that hangs without an error first: the final flush is bounded by
/// `flush_timeout`, then tact stops without it and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_hung_flush_after_the_flush_timeout() {
    let storage = FlakyStorage::new();
    let server = start_on(&storage, Duration::from_millis(300)).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("c1", wed_10am())).await;
    storage.hang_flushes();

    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(3), server.shutdown()).await;
    let took = started.elapsed();
    storage.release();
    let err = stopped.expect("shutdown waited on the hung flush").unwrap_err();
    assert!(matches!(err, ServerError::StorageHung { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

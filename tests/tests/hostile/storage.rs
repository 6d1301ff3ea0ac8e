//! A failing or corrupt store. See main.rs.

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
        assert_eq!(stats.events, before.position, "the whole log replayed: {stats:?}");
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
            (None, before.position),
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
        // Well-formed snapshots that do not fit: beyond the log, another retention.
        let beyond = tact_log::snapshot::encode_snapshot(&Projection {
            position: before.position + 1,
            ..before.clone()
        })
        .unwrap();
        let mut retention = before.retention;
        retention.max_entries += 1;
        let other_retention = tact_log::snapshot::encode_snapshot(&Projection {
            retention,
            ..before.clone()
        })
        .unwrap();
        let cases: [(&str, Vec<u8>); 8] = [
            ("empty", Vec::new()),
            ("header only", good[..5].to_vec()),
            ("truncated", good[..good.len() / 2].to_vec()),
            ("version", bad_version),
            ("crc", bad_crc),
            ("body", bad_body),
            ("beyond the log", beyond),
            ("another retention", other_retention),
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
            assert_eq!(stats.events, before.position, "{what}: {stats:?}");
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

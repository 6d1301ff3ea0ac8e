//! See main.rs. A failing store: the disk fills up (writes fail) or hangs (a flush
//! never returns). tact must say it is unhealthy and must still stop.

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

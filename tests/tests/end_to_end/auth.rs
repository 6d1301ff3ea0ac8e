//! API keys, scopes and per-client rate limits, against a server on `127.0.0.1:0`.

use std::path::PathBuf;

use tact_core::{Channel, EventKind, Purpose};
use tact_proto::pb;
use tact_server::{RateLimits, Scope, ServerError, ServerOptions};
use tact_tests::{TestServer, bearer, opted_in, request, wed_10am, write_clients};
use tonic::Code;

const CRM: &str = "crm-key";
const DIALER: &str = "dialer-key";
const INGEST: &str = "ingest-key";
const SLOW: &str = "slow-key";

fn limited(decisions: u32, burst: u32) -> RateLimits {
    RateLimits {
        decisions_per_second: Some(decisions),
        events_per_second: None,
        burst: Some(burst),
    }
}

/// A server with four clients: `crm` (decide only), `dialer` (decide, authorize, read),
/// `ingest` (record) and `slow` (decide, 1 a second, burst 2).
async fn server(dir: &tempfile::TempDir) -> (TestServer, PathBuf) {
    let path = dir.path().join("clients.toml");
    write_clients(
        &path,
        &[
            ("crm", CRM, &[Scope::Decide], RateLimits::default()),
            (
                "dialer",
                DIALER,
                &[Scope::Decide, Scope::Authorize, Scope::Read],
                RateLimits::default(),
            ),
            ("ingest", INGEST, &[Scope::Record], RateLimits::default()),
            ("slow", SLOW, &[Scope::Decide], limited(1, 2)),
        ],
    );
    let clients = path.clone();
    let server = TestServer::start_with(None, wed_10am(), move |opts| {
        opts.auth.clients_file = Some(clients);
    })
    .await;
    (server, path)
}

fn decide_req() -> pb::DecideRequest {
    request("c1", Channel::Email, Purpose::Marketing)
}

#[tokio::test]
async fn no_key_or_an_unknown_key_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(&dir).await;
    let mut client = server.client().await;
    let e = client.decide(decide_req()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("Bearer"), "{}", e.message());
    let e = client
        .decide(bearer(decide_req(), "not-a-key"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    client.decide(bearer(decide_req(), CRM)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_client_outside_its_scopes_is_denied_naming_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(&dir).await;
    let mut client = server.client().await;
    let events = pb::RecordEventsRequest {
        events: opted_in("c1", wed_10am()),
    };
    let e = client
        .record_events(bearer(events.clone(), CRM))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("`record`"), "{}", e.message());
    let e = client.authorize(bearer(decide_req(), CRM)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("`authorize`"), "{}", e.message());
    let e = client
        .get_customer(bearer(
            pb::GetCustomerRequest {
                customer_id: "c1".into(),
                ..Default::default()
            },
            INGEST,
        ))
        .await
        .unwrap_err();
    assert!(e.message().contains("`read`"), "{}", e.message());
    let e = client
        .list_dead_letters(bearer(pb::ListDeadLettersRequest::default(), DIALER))
        .await
        .unwrap_err();
    assert!(e.message().contains("`admin`"), "{}", e.message());
    client.record_events(bearer(events, INGEST)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(&dir).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.handle.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tact.v1.ContactPolicy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_when_to_retry_and_another_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(&dir).await;
    let mut client = server.client().await;
    // A batch of 2 spends the whole burst of `slow`.
    let batch = pb::DecideBatchRequest {
        requests: vec![decide_req(), decide_req()],
        ..Default::default()
    };
    client.decide_batch(bearer(batch, SLOW)).await.unwrap();
    let e = client.decide(bearer(decide_req(), SLOW)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let retry_ms: u64 = e
        .metadata()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&retry_ms), "{retry_ms}");
    // Another client is unaffected.
    for _ in 0..20 {
        client.decide(bearer(decide_req(), CRM)).await.unwrap();
    }
    // A batch bigger than the burst can never pass: refused, and told to split it.
    let big = pb::DecideBatchRequest {
        requests: vec![decide_req(); 3],
        ..Default::default()
    };
    let e = client.decide_batch(bearer(big, SLOW)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("split"), "{}", e.message());
    // An audience costs one decision per customer, like requests.
    let audience = pb::DecideBatchRequest {
        audience: Some(pb::Audience {
            channel: pb::Channel::Email as i32,
            purpose: pb::Purpose::Marketing as i32,
            customer_ids: vec!["c1".into(); 3],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = client.decide_batch(bearer(audience, SLOW)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("split"), "{}", e.message());
    server.stop().await;
}

/// A stream is paced to its client's rate, not refused: `slow` (1 a second, burst 2)
/// gets all 4 answers, the last two a second apart.
#[tokio::test]
async fn a_stream_over_its_clients_rate_is_paced_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(&dir).await;
    let mut client = server.client().await;
    let started = std::time::Instant::now();
    let mut answers = client
        .decide_stream(bearer(tokio_stream::iter(vec![decide_req(); 4]), SLOW))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(d) = answers.message().await.unwrap() {
        got.push((d, started.elapsed()));
    }
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.iter().all(|(d, _)| d.error.is_none() && d.verdict != 0),
        "{got:?}"
    );
    // Two from the burst, then one a second: the fourth at least ~2 s in.
    assert!(got[3].1 >= std::time::Duration::from_millis(1_800), "{got:?}");
    server.stop().await;
}

#[tokio::test]
async fn authorize_records_the_authenticated_client_and_events_get_it_as_source() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(&dir).await;
    let mut client = server.client().await;
    let mut events = opted_in("c1", wed_10am());
    events[0].source.clear();
    client
        .record_events(bearer(pb::RecordEventsRequest { events }, INGEST))
        .await
        .unwrap();
    let mut req = request("c1", Channel::Call, Purpose::Sales);
    req.requested_by = "rep anna".into();
    let d = client.authorize(bearer(req, DIALER)).await.unwrap().into_inner();
    assert_eq!(d.verdict, pb::Verdict::Allow as i32, "{d:?}");
    let logged = server
        .handle
        .engine()
        .log()
        .storage()
        .customer_events("c1")
        .unwrap();
    let sources: Vec<&str> = logged.iter().map(|(_, e)| e.source.as_str()).collect();
    assert_eq!(sources[0], "ingest", "{sources:?}");
    assert_eq!(sources[1], "test");
    let authorized = logged
        .iter()
        .find_map(|(_, e)| match &e.kind {
            EventKind::OutreachAuthorized { requested_by, .. } => Some(requested_by.clone()),
            _ => None,
        })
        .expect("an OutreachAuthorized event");
    assert_eq!(authorized, "dialer/rep anna");
    server.stop().await;
}

#[tokio::test]
async fn a_reloaded_clients_file_adds_keys_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = server(&dir).await;
    let mut client = server.client().await;
    let e = client.decide(bearer(decide_req(), "new-key")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    write_clients(
        &path,
        &[("new", "new-key", &[Scope::Decide], RateLimits::default())],
    );
    assert_eq!(server.handle.auth().reload().unwrap(), 1);
    client.decide(bearer(decide_req(), "new-key")).await.unwrap();
    assert_eq!(
        client.decide(bearer(decide_req(), CRM)).await.unwrap_err().code(),
        Code::Unauthenticated,
        "removed with the reload"
    );
    std::fs::write(&path, "[[clients]]\nid = \"tact\"\nscopes = []\n").unwrap();
    let e = server.handle.auth().reload().unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
    client.decide(bearer(decide_req(), "new-key")).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn without_clients_a_non_loopback_address_is_refused_unless_allowed() {
    let mut opts = ServerOptions::new(
        "0.0.0.0:0".parse().unwrap(),
        None,
        tact_core::Policy::default_policy(),
    );
    let e = tact_server::run(opts.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::Unauthenticated { .. }), "{e}");
    assert!(e.to_string().contains("--allow-unauthenticated"), "{e}");
    opts.auth.allow_unauthenticated = true;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tact_server::run(opts, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let _ = stop.send(());
    handle.wait().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_loopback_mode_is_one_shared_client() {
    let server = TestServer::start_with(None, wed_10am(), |opts| {
        opts.auth.unauthenticated_limits = limited(1, 1);
    })
    .await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.decide(decide_req()).await.unwrap();
    let e = b.decide(decide_req()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("`local`"), "{}", e.message());
    server.stop().await;
}

#[tokio::test]
async fn streams_are_bounded_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.toml");
    write_clients(
        &path,
        &[
            ("campaign", CRM, &[Scope::Decide], RateLimits::default()),
            ("rep", DIALER, &[Scope::Decide], RateLimits::default()),
        ],
    );
    let server = TestServer::start_with(None, wed_10am(), move |opts| {
        opts.auth.clients_file = Some(path);
        opts.shed.max_streams_per_client = 1;
    })
    .await;
    let mut client = server.client().await;
    // An open stream (its request side stays open).
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::DecideRequest>(1);
    let open = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut first = client
        .decide_stream(bearer(open, CRM))
        .await
        .unwrap()
        .into_inner();
    tx.send(decide_req()).await.unwrap();
    assert!(first.message().await.unwrap().is_some());
    let e = client
        .decide_stream(bearer(tokio_stream::iter([decide_req()]), CRM))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.metadata().get("tact-reason").unwrap(), "overloaded");
    // Another client is not bound by it; closing the stream frees the slot.
    let mut other = client
        .decide_stream(bearer(tokio_stream::iter([decide_req()]), DIALER))
        .await
        .unwrap()
        .into_inner();
    assert!(other.message().await.unwrap().is_some());
    drop(tx);
    while first.message().await.unwrap().is_some() {}
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match client
            .decide_stream(bearer(tokio_stream::iter([decide_req()]), CRM))
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}

//! The gRPC API end to end, against a real server on 127.0.0.1:0.

use tact_core::{Channel, EventKind, Purpose};
use tact_proto::convert::timestamp_to_pb;
use tact_proto::pb;
use tact_tests::*;

use Channel::*;
use Purpose::*;

#[tokio::test]
async fn stories_end_to_end() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    let year_ago = now.saturating_sub(days(365));

    // The sniper attack: a price comparison, then a call 5 minutes later.
    let mut events = opted_in("sniped", year_ago);
    events.push(event(
        "sniped-compare",
        "sniped",
        now.saturating_sub(minutes(5)),
        EventKind::PageViewed {
            url: "/car-insurance/compare".into(),
            category: "compare".into(),
        },
    ));
    // The misguided pursuit: a white paper yesterday evening, a demo proposed this morning.
    events.extend(opted_in("pursued", year_ago));
    events.push(event(
        "pursued-wp",
        "pursued",
        now.saturating_sub(hours(15)),
        EventKind::ContentDownloaded {
            asset: "white-paper.pdf".into(),
        },
    ));
    // Unsubscribed.
    events.extend(opted_in("unsub", year_ago));
    events.push(event(
        "unsub-out",
        "unsub",
        now.saturating_sub(days(1)),
        consent(Email, Marketing, false),
    ));
    // Eight touches in 30 days (and an engagement, so fatigue is not what decides).
    events.extend(opted_in("touched", year_ago));
    for i in 0..8i64 {
        let ch = [Email, Sms, Email, DirectMail][i as usize % 4];
        events.push(event(
            &format!("touched-{i}"),
            "touched",
            now.saturating_sub(days(28 - 3 * i)),
            EventKind::OutreachSent {
                channel: ch,
                purpose: Marketing,
                campaign: "autumn".into(),
                decision_id: None,
            },
        ));
    }
    events.push(event(
        "touched-click",
        "touched",
        now.saturating_sub(days(1)),
        EventKind::OutreachEngaged {
            channel: Email,
            engagement: tact_core::Engagement::Clicked,
        },
    ));
    // Lives in New York, where it is 05:00 now; asked at 23:00 their time below.
    events.extend(opted_in("nyc", year_ago));
    events.push(event(
        "nyc-tz",
        "nyc",
        year_ago,
        EventKind::PreferencesChanged {
            time_zone: Some("America/New_York".into()),
            accepted_channels: None,
            max_contacts: None,
        },
    ));
    record(&mut client, events).await;

    let d = client
        .decide(request("sniped", Call, Sales))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Defer, "{d:?}");
    assert!(rules(&d).contains(&"research-cooldown"));
    assert_eq!(
        d.not_before,
        Some(timestamp_to_pb(
            now.saturating_sub(minutes(5)).saturating_add(hours(48))
        ))
    );
    assert!(
        d.alternatives
            .iter()
            .any(|a| a.channel == pb::Channel::Email as i32 && a.not_before.is_none())
    );
    let msg = &d
        .reasons
        .iter()
        .find(|r| r.rule_id == "research-cooldown")
        .unwrap()
        .message;
    assert!(
        msg.starts_with("Customer compared prices 5 minutes ago; calls are held for 48 h"),
        "{msg}"
    );

    let d = client
        .decide(request("pursued", SalesMeeting, Sales))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Deny, "{d:?}");
    assert!(rules(&d).contains(&"earned-meeting"));
    assert!(
        d.alternatives
            .iter()
            .any(|a| a.channel == pb::Channel::Email as i32)
    );

    // The same customer asks for a demo: now it is welcome.
    record(
        &mut client,
        vec![event(
            "pursued-asks",
            "pursued",
            now.saturating_sub(minutes(1)),
            EventKind::ContactRequested {
                channel: SalesMeeting,
                topic: "demo".into(),
            },
        )],
    )
    .await;
    let d = client
        .authorize(request("pursued", SalesMeeting, Sales))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow, "{d:?}");
    assert!(!d.decision_id.is_empty());
    assert!(d.log_position > 0);

    let d = client
        .decide(request("unsub", Email, Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Deny);
    assert_eq!(rules(&d), vec!["consent"]);
    let d = client
        .decide(request("unsub", Email, Transactional))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow);

    let d = client
        .decide(request("touched", Email, Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Defer, "{d:?}");
    assert!(rules(&d).contains(&"cap-all-channels"));

    let mut req = request("nyc", Call, Sales);
    req.at = Some(timestamp_to_pb(
        tact_core::Timestamp::parse_rfc3339("2026-11-19T04:00:00Z").unwrap(),
    ));
    let d = client.decide(req).await.unwrap().into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Defer);
    assert_eq!(
        d.not_before,
        Some(timestamp_to_pb(
            tact_core::Timestamp::parse_rfc3339("2026-11-19T13:00:00Z").unwrap()
        ))
    );
    assert_eq!(d.policy_version, "default-2026.12");
    server.stop().await;
}

#[tokio::test]
async fn authorize_races_for_the_last_slot() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("c", now.saturating_sub(days(100)))).await;

    // One call a week: of 40 concurrent callers exactly one gets ALLOW.
    let calls = (0..40).map(|_| {
        let mut c = client.clone();
        tokio::spawn(async move { c.authorize(request("c", Call, Sales)).await.unwrap().into_inner() })
    });
    let mut allowed = 0;
    for h in calls {
        if verdict(&h.await.unwrap()) == pb::Verdict::Allow {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 1);

    // Three emails a week: exactly three.
    let emails = (0..40).map(|_| {
        let mut c = client.clone();
        tokio::spawn(async move {
            c.authorize(request("c", Email, Marketing))
                .await
                .unwrap()
                .into_inner()
        })
    });
    let mut ids = Vec::new();
    for h in emails {
        let d = h.await.unwrap();
        if verdict(&d) == pb::Verdict::Allow {
            ids.push(d.decision_id);
        }
    }
    assert_eq!(ids.len(), 3);

    // The CRM reports the sends with their decision ids: they do not count twice.
    let sent: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            event(
                &format!("sent-{i}"),
                "c",
                now,
                EventKind::OutreachSent {
                    channel: Email,
                    purpose: Marketing,
                    campaign: "autumn".into(),
                    decision_id: Some(id.clone()),
                },
            )
        })
        .collect();
    record(&mut client, sent).await;
    let view = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "c".into(),
            at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let cap = view.caps.iter().find(|c| c.rule_id == "cap-email").unwrap();
    assert_eq!(cap.count, 3);
    let all = view
        .caps
        .iter()
        .find(|c| c.rule_id == "cap-all-channels")
        .unwrap();
    assert_eq!(all.count, 4);

    // Decide is read-only: it never uses up a slot.
    server.clock.advance(days(8));
    for _ in 0..5 {
        let d = client
            .decide(request("c", Call, Sales))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verdict(&d), pb::Verdict::Allow);
    }
    server.stop().await;
}

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let status = result.expect_err("should be rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "`{}` should name {field}",
        status.message()
    );
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let server = TestServer::start_with(None, wed_10am(), |o| {
        o.limits.max_batch = 10;
        o.limits.max_events_per_request = 5;
    })
    .await;
    let mut client = server.client().await;

    let mut r = request("", Email, Marketing);
    assert_invalid(client.decide(r.clone()).await, "customer_id");
    r.customer_id = "has space".into();
    assert_invalid(client.decide(r).await, "customer_id");
    let mut r = request("c", Email, Marketing);
    r.channel = pb::Channel::Unspecified as i32;
    assert_invalid(client.decide(r.clone()).await, "channel");
    r.channel = 999;
    assert_invalid(client.decide(r).await, "channel");
    let mut r = request("c", Email, Marketing);
    r.purpose = 0;
    assert_invalid(client.authorize(r).await, "purpose");
    let mut r = request("c", Email, Marketing);
    r.at = Some(pbjson_types::Timestamp {
        seconds: 0,
        nanos: -5,
    });
    assert_invalid(client.decide(r).await, "at");

    let batch = pb::DecideBatchRequest {
        requests: vec![request("c", Email, Marketing); 11],
        ..Default::default()
    };
    assert_invalid(client.decide_batch(batch).await, "requests");
    // A bad request in a batch is named in its place; the others are answered.
    let mut requests = vec![request("c", Email, Marketing); 4];
    requests[1].channel = 0;
    requests[3].customer_id = "has space".into();
    let decisions = client
        .decide_batch(pb::DecideBatchRequest {
            requests,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_eq!(decisions.len(), 4);
    for i in [0, 2] {
        assert!(decisions[i].error.is_none(), "{:?}", decisions[i]);
        assert_eq!(verdict(&decisions[i]), pb::Verdict::Deny);
        assert_eq!(decisions[i].customer_id, "c");
    }
    let item = |d: &pb::Decision| {
        let e = d.error.as_ref().expect("an item error");
        assert_eq!(verdict(d), pb::Verdict::Unspecified);
        assert!(d.decision_id.is_empty() && d.reasons.is_empty());
        (e.index, e.field.clone())
    };
    assert_eq!(item(&decisions[1]), (1, "channel".to_owned()));
    assert_eq!(item(&decisions[3]), (3, "customer_id".to_owned()));
    assert_eq!(decisions[3].customer_id, "has space");

    let too_many = (0..6)
        .map(|i| event(&format!("e{i}"), "c", wed_10am(), consent(Email, Sales, true)))
        .collect();
    assert_invalid(
        client
            .record_events(pb::RecordEventsRequest { events: too_many })
            .await,
        "events",
    );

    assert_invalid(
        client
            .get_customer(pb::GetCustomerRequest {
                customer_id: String::new(),
                at: None,
            })
            .await,
        "customer_id",
    );

    // A bad event is rejected with its reason; the good ones around it are recorded.
    let mut bad = event("bad", "c", wed_10am(), consent(Email, Sales, true));
    if let Some(pb::interaction_event::Kind::ConsentChanged(c)) = &mut bad.kind {
        c.channel = 0;
    }
    let mut no_time = event("no-time", "c", wed_10am(), consent(Email, Sales, true));
    no_time.occurred_at = None;
    let events = vec![
        event("good-1", "c", wed_10am(), consent(Email, Sales, true)),
        bad,
        no_time,
        event("good-1", "c", wed_10am(), consent(Email, Sales, true)),
    ];
    let resp = client
        .record_events(pb::RecordEventsRequest { events })
        .await
        .unwrap()
        .into_inner();
    let status: Vec<i32> = resp.results.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        vec![
            pb::RecordStatus::Recorded as i32,
            pb::RecordStatus::Rejected as i32,
            pb::RecordStatus::Rejected as i32,
            pb::RecordStatus::Duplicate as i32
        ]
    );
    assert!(
        resp.results[1].reason.contains("consent_changed.channel"),
        "{}",
        resp.results[1].reason
    );
    assert!(
        resp.results[2].reason.contains("occurred_at"),
        "{}",
        resp.results[2].reason
    );
    // The server is still fine.
    let d = client
        .decide(request("c", Email, Sales))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow);
    server.stop().await;
}

#[tokio::test]
async fn batches_and_streams_answer_in_order() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    let mut events = Vec::new();
    for i in 0..50 {
        if i % 2 == 0 {
            events.extend(opted_in(&format!("c{i}"), now.saturating_sub(days(10))));
        }
    }
    record(&mut client, events).await;
    let requests: Vec<_> = (0..1000)
        .map(|i| request(&format!("c{}", i % 50), Email, Marketing))
        .collect();
    let batch = client
        .decide_batch(pb::DecideBatchRequest {
            requests: requests.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_eq!(batch.len(), 1000);
    for (i, d) in batch.iter().enumerate() {
        assert_eq!(d.customer_id, format!("c{}", i % 50));
        let expected = if (i % 50) % 2 == 0 {
            pb::Verdict::Allow
        } else {
            pb::Verdict::Deny
        };
        assert_eq!(verdict(d), expected);
    }
    // The same answers as one call at a time (batches look customers up differently).
    for (r, b) in requests.iter().zip(&batch).take(100) {
        let one = client.decide(r.clone()).await.unwrap().into_inner();
        let rules = |d: &pb::Decision| d.reasons.iter().map(|r| r.rule_id.clone()).collect::<Vec<_>>();
        assert_eq!(
            (one.verdict, &one.not_before, rules(&one), one.alternatives.len()),
            (b.verdict, &b.not_before, rules(b), b.alternatives.len())
        );
    }
    let stream = client
        .decide_stream(tokio_stream_iter(requests))
        .await
        .unwrap()
        .into_inner();
    let streamed = collect(stream).await;
    assert_eq!(streamed.len(), 1000);
    for (a, b) in streamed.iter().zip(&batch) {
        assert_eq!((a.verdict, &a.customer_id), (b.verdict, &b.customer_id));
    }
    server.stop().await;
}

/// A bad request in a stream gets an error answer in its place, naming it, and the
/// stream goes on: every request is answered, in order.
#[tokio::test]
async fn a_bad_request_in_a_stream_is_named_and_the_stream_goes_on() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("c1", now.saturating_sub(days(10)))).await;
    let mut requests: Vec<_> = (0..150).map(|_| request("c1", Email, Marketing)).collect();
    requests[100].customer_id.clear();
    requests[149].purpose = 77;
    let mut stream = client
        .decide_stream(tokio_stream_iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(d) = stream.message().await.expect("the stream ends cleanly") {
        answers.push(d);
    }
    assert_eq!(answers.len(), 150);
    for (i, d) in answers.iter().enumerate() {
        match i {
            100 | 149 => {
                let e = d.error.as_ref().expect("an item error");
                assert_eq!(e.index, i as u64);
                assert_eq!(e.field, if i == 100 { "customer_id" } else { "purpose" });
                assert!(!e.message.is_empty());
                assert_eq!(verdict(d), pb::Verdict::Unspecified);
            }
            _ => {
                assert!(d.error.is_none());
                assert_eq!(verdict(d), pb::Verdict::Allow, "answer {i}");
            }
        }
    }
    server.stop().await;
}

fn tokio_stream_iter(
    items: Vec<pb::DecideRequest>,
) -> impl tonic::IntoStreamingRequest<Message = pb::DecideRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for r in items {
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> tonic::codegen::tokio_stream::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

async fn collect(mut s: tonic::Streaming<pb::Decision>) -> Vec<pb::Decision> {
    let mut out = Vec::new();
    while let Some(d) = s.message().await.unwrap() {
        out.push(d);
    }
    out
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let server = TestServer::start(None, wed_10am()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.handle.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tact.v1.ContactPolicy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection lists the API, so grpcurl works without the proto files.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(stream_once(ask))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tact.v1.ContactPolicy"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1.ServerReflection"),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "{names:?}"
    );
    server.stop().await;
}

/// Clients that speak only `grpc.reflection.v1alpha` (Python's grpcio-reflection,
/// older grpcurl builds, several GUI tools) discover the API too.
#[tokio::test]
async fn reflection_v1alpha_lists_and_describes_the_api() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(None, wed_10am()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.handle.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };

    let mut answers = reflection
        .server_reflection_info(stream_once(ask(MessageRequest::ListServices(String::new()))))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tact.v1.ContactPolicy"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "{names:?}"
    );

    // The service's file (and so its methods and messages) can be fetched by symbol.
    let mut answers = reflection
        .server_reflection_info(stream_once(ask(MessageRequest::FileContainingSymbol(
            "tact.v1.ContactPolicy".into(),
        ))))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    // The encoded FileDescriptorProto names its file and methods as plain strings.
    let contains = |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    let file = files
        .file_descriptor_proto
        .iter()
        .find(|f| contains(f, "tact/v1/contact_policy.proto"))
        .expect("the service's file");
    for method in ["Decide", "Authorize", "DecideBatch", "RecordEvents"] {
        assert!(contains(file, method), "{method} missing");
    }
    server.stop().await;
}

/// A request stream of one message.
fn stream_once<T: Send + 'static>(item: T) -> ReceiverStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(item);
    ReceiverStream(rx)
}

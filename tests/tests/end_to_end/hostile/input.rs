//! Hostile input over gRPC: events dated far ahead, ids tact writes itself, fields of any
//! size, values that contradict themselves, requests over the size limit. None of them
//! may turn a DENY into an ALLOW, grow state without bound, or crash the server.

use std::sync::Arc;

use tact_core::{Channel, Event, EventKind, Policy, Purpose, Span, Timestamp};
use tact_log::{MemoryStorage, Storage};
use tact_proto::convert::timestamp_to_pb;
use tact_proto::pb;
use tact_tests::*;

use Channel::*;
use Purpose::*;

fn email_sent(customer: &str, i: i64, at: Timestamp) -> pb::InteractionEvent {
    event(
        &format!("{customer}-mail-{i}"),
        customer,
        at,
        EventKind::OutreachSent {
            channel: Email,
            purpose: Marketing,
            campaign: "autumn".into(),
            decision_id: None,
        },
    )
}

fn pricing_view(id: &str, customer: &str, at: Timestamp) -> pb::InteractionEvent {
    event(
        id,
        customer,
        at,
        EventKind::PageViewed {
            url: "/pricing".into(),
            category: "pricing".into(),
        },
    )
}

async fn record_one(client: &mut Client, e: pb::InteractionEvent) -> pb::EventResult {
    client
        .record_events(pb::RecordEventsRequest { events: vec![e] })
        .await
        .expect("record_events answers")
        .into_inner()
        .results
        .remove(0)
}

fn status(r: &pb::EventResult) -> pb::RecordStatus {
    pb::RecordStatus::try_from(r.status).unwrap()
}

/// Defect 1, at the edge: an event dated more than the allowed skew (24 h) ahead of the
/// server clock is rejected naming `occurred_at`; one inside the skew is recorded.
#[tokio::test]
async fn an_event_dated_beyond_the_clock_skew_is_rejected_naming_occurred_at() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    for ahead in [hours(25), days(365), Span(253_402_300_799_000 - now.0)] {
        let r = record_one(
            &mut client,
            pricing_view("ahead", "c1", now.saturating_add(ahead)),
        )
        .await;
        assert_eq!(status(&r), pb::RecordStatus::Rejected, "{ahead:?}");
        assert!(r.reason.starts_with("events[0].occurred_at:"), "{}", r.reason);
        assert!(r.reason.contains("ahead of the server clock"), "{}", r.reason);
    }
    let r = record_one(
        &mut client,
        pricing_view("soon", "c1", now.saturating_add(hours(23))),
    )
    .await;
    assert_eq!(status(&r), pb::RecordStatus::Recorded, "{}", r.reason);
    server.stop().await;
}

/// Defect 1, in the core: an event dated a year (or to the end of time) ahead that is
/// already in the log (written before the edge check existed) costs memory, never caps:
/// three emails this week still DEFER a fourth, and Authorize never allows it, also
/// after a restart (rounds 2 and 3 start again from the same log).
/// Found probing a release build: a withdrawal dated inside the skew (a source whose
/// clock runs ahead) applied only from its date, and Authorize kept answering ALLOW
/// until then. It now takes effect when it arrives, and the answer says so.
#[tokio::test]
async fn a_withdrawal_dated_ahead_of_the_clock_takes_effect_at_once() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    for customer in ["c1", "c2"] {
        record(&mut client, opted_in(customer, now.saturating_sub(days(30)))).await;
    }
    let withdrawal = event(
        "w1",
        "c1",
        now.saturating_add(hours(5)),
        consent(Email, Marketing, false),
    );
    let r = record_one(&mut client, withdrawal).await;
    assert_eq!(status(&r), pb::RecordStatus::Recorded, "{}", r.reason);
    assert!(r.reason.starts_with("in effect from "), "{}", r.reason);
    let dnc = event(
        "n1",
        "c2",
        now.saturating_add(hours(5)),
        EventKind::DoNotContact {
            reason: "asked on the phone".into(),
            until: None,
        },
    );
    let r = record_one(&mut client, dnc).await;
    assert_eq!(status(&r), pb::RecordStatus::Recorded, "{}", r.reason);
    for customer in ["c1", "c2"] {
        let d = client
            .authorize(request(customer, Email, Marketing))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verdict(&d), pb::Verdict::Deny, "{customer}: {d:?}");
    }
    // Found probing again: a grant dated ahead kept its date, so from a source an hour
    // or two ahead, a grant and then the withdrawal that followed it ended up in the
    // wrong order once the withdrawal was moved to its arrival (DENY now, ALLOW from
    // the grant's date on). Every event dated ahead takes effect on arrival now.
    let grant = event(
        "g1",
        "c3",
        now.saturating_add(hours(1)),
        consent(Email, Marketing, true),
    );
    let r = record_one(&mut client, grant).await;
    assert_eq!(status(&r), pb::RecordStatus::Recorded, "{}", r.reason);
    assert!(r.reason.starts_with("in effect from "), "{}", r.reason);
    let withdrawal = event(
        "w3",
        "c3",
        now.saturating_add(hours(2)),
        consent(Email, Marketing, false),
    );
    let r = record_one(&mut client, withdrawal).await;
    assert_eq!(status(&r), pb::RecordStatus::Recorded, "{}", r.reason);
    for at in [
        None,
        Some(now.saturating_add(hours(3))),
        Some(now.saturating_add(days(30))),
    ] {
        let d = client
            .decide(pb::DecideRequest {
                at: at.map(timestamp_to_pb),
                ..request("c3", Email, Marketing)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verdict(&d), pb::Verdict::Deny, "at {at:?}: {d:?}");
    }
    server.stop().await;
}

/// Found probing a release build: a withdrawal sent with an `expires_at` (which means
/// nothing for a withdrawal) before its `occurred_at` was rejected, so a careless
/// sender's withdrawal was lost (from Kafka: dead-lettered). It is recorded now, its
/// answer says the field is ignored, and it never expires.
#[tokio::test]
async fn a_withdrawal_with_an_expiry_is_recorded_and_never_expires() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    for (customer, expires) in [("before", days(-1)), ("after", days(1))] {
        record(&mut client, opted_in(customer, now.saturating_sub(days(30)))).await;
        let withdrawal = event(
            &format!("w-{customer}"),
            customer,
            now.saturating_sub(hours(1)),
            EventKind::ConsentChanged {
                channel: Email,
                purpose: Marketing,
                granted: false,
                expires_at: Some(now.saturating_add(expires)),
                proof: String::new(),
            },
        );
        let r = record_one(&mut client, withdrawal).await;
        assert_eq!(status(&r), pb::RecordStatus::Recorded, "{customer}: {}", r.reason);
        assert!(
            r.reason
                .contains("expires_at is ignored: a withdrawal does not expire"),
            "{customer}: {}",
            r.reason
        );
        for at in [None, Some(now.saturating_add(days(2)))] {
            let d = client
                .decide(pb::DecideRequest {
                    at: at.map(timestamp_to_pb),
                    ..request(customer, Email, Marketing)
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(verdict(&d), pb::Verdict::Deny, "{customer} at {at:?}: {d:?}");
        }
    }
    server.stop().await;
}

/// Found probing a release build: event ids are global, so a client could take the id
/// another system's withdrawal will use, and that withdrawal then came back DUPLICATE
/// (as if recorded) and never applied. Another event under a taken id is now rejected
/// naming `event_id`, so its sender knows; a retry is still a duplicate of itself.
#[tokio::test]
async fn another_event_under_a_taken_id_is_rejected_not_reported_duplicate() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("victim", now.saturating_sub(days(30)))).await;
    // The squatter takes the id the unsubscribe system will use next.
    let squat = pricing_view("unsub-1001", "squatter", now.saturating_sub(hours(1)));
    let r = record_one(&mut client, squat.clone()).await;
    assert_eq!(status(&r), pb::RecordStatus::Recorded);
    let position = r.log_position;
    let withdrawal = event("unsub-1001", "victim", now, consent(Email, Marketing, false));
    let r = record_one(&mut client, withdrawal).await;
    assert_eq!(status(&r), pb::RecordStatus::Rejected, "{r:?}");
    assert!(
        r.reason
            .starts_with("events[0].event_id: `unsub-1001` is already recorded"),
        "{}",
        r.reason
    );
    // The squatter's retry is a duplicate of itself, at its position.
    let r = record_one(&mut client, squat).await;
    assert_eq!(
        (status(&r), r.log_position),
        (pb::RecordStatus::Duplicate, position)
    );
    // A withdrawal dated ahead, recorded at arrival, then sent again: a duplicate.
    let ahead = event(
        "unsub-1002",
        "victim",
        now.saturating_add(hours(3)),
        consent(Email, Marketing, false),
    );
    let first = record_one(&mut client, ahead.clone()).await;
    assert_eq!(status(&first), pb::RecordStatus::Recorded);
    // Sent again an hour later: moved less (to the later arrival), the same event.
    server.clock.set(now.saturating_add(hours(1)));
    let again = record_one(&mut client, ahead).await;
    assert_eq!(
        (status(&again), again.log_position),
        (pb::RecordStatus::Duplicate, first.log_position),
        "{again:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_far_future_event_in_the_log_never_wipes_caps() {
    let now = wed_10am();
    let year_ago = now.saturating_sub(days(365));
    let events: Vec<Event> = opted_in("capped", year_ago)
        .into_iter()
        .chain((1..=3).map(|d| email_sent("capped", d, now.saturating_sub(days(d)))))
        .map(|e| Event::try_from(e).unwrap())
        .collect();
    // One such event per customer: the pruning reference ignores the latest instant
    // (a second outlier would take the first's place as the reference; the edge keeps
    // new ones out).
    let storage = Arc::new(MemoryStorage::new());
    storage.append(&events, &[]).unwrap();
    for (round, at) in [now.saturating_add(days(365)), Timestamp(253_402_300_799_000)]
        .into_iter()
        .enumerate()
    {
        let customer = format!("capped-{round}");
        let mut events = events.clone();
        for e in &mut events {
            e.event_id = format!("{}-{round}", e.event_id);
            e.customer_id = customer.clone();
        }
        events.push(Event::try_from(pricing_view(&format!("future-{round}"), &customer, at)).unwrap());
        storage.append(&events, &[]).unwrap();
    }
    for round in 0..4 {
        let customer = format!("capped-{}", round % 2);
        let storage: Arc<dyn Storage> = storage.clone();
        let server = TestServer::start_with(None, now, |o| o.storage = Some(storage)).await;
        let mut client = server.client().await;
        let d = client
            .decide(request(&customer, Email, Marketing))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verdict(&d), pb::Verdict::Defer, "round {round}: {d:?}");
        assert!(rules(&d).contains(&"cap-email"), "{:?}", rules(&d));
        for _ in 0..4 {
            let a = client
                .authorize(request(&customer, Email, Marketing))
                .await
                .unwrap()
                .into_inner();
            assert_ne!(verdict(&a), pb::Verdict::Allow, "round {round}: {a:?}");
        }
        let view = client
            .get_customer(pb::GetCustomerRequest {
                customer_id: customer.clone(),
                at: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            view.timeline.iter().filter(|t| t.kind == "outreach_sent").count() >= 3,
            "{:?}",
            view.timeline
        );
        server.stop().await;
    }
}

/// Defect 2: ids, sources and kinds that only tact writes are refused from callers, so
/// nobody can pre-claim `Authorize`'s ids; decision ids are random (128 bits). The
/// probe recorded 200 events with the next ids and got 10 of 10 ALLOWs under a cap of 3.
#[tokio::test]
async fn callers_cannot_write_tacts_own_events_or_preclaim_authorize_ids() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("victim", now.saturating_sub(days(30)))).await;

    let first = client
        .authorize(request("victim", Email, Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&first), pb::Verdict::Allow);
    let id = &first.decision_id;
    assert_eq!(id.len(), 33, "d + 32 hex digits: {id}");
    assert!(id[1..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");

    // The old attack: claim ids around the one just seen, and ids of any shape.
    let mut claims = Vec::new();
    for i in 0..200u32 {
        claims.push(event(
            &format!("tact-{}{:x}", &id[..25], i),
            "victim",
            now,
            EventKind::PageViewed {
                url: "/".into(),
                category: "blog".into(),
            },
        ));
    }
    let resp = client
        .record_events(pb::RecordEventsRequest { events: claims })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.results
            .iter()
            .all(|r| status(r) == pb::RecordStatus::Rejected)
    );
    assert!(
        resp.results[0]
            .reason
            .starts_with("events[0].event_id: the prefix `tact-` is reserved"),
        "{}",
        resp.results[0].reason
    );

    let mut forged_source = pricing_view("forged-source", "victim", now);
    forged_source.source = "tact".into();
    let r = record_one(&mut client, forged_source).await;
    assert_eq!(status(&r), pb::RecordStatus::Rejected);
    assert!(r.reason.starts_with("events[0].source:"), "{}", r.reason);

    let forged_kind = event(
        "forged-kind",
        "victim",
        now,
        EventKind::OutreachAuthorized {
            decision_id: "d1".into(),
            channel: Email,
            purpose: Marketing,
            campaign: String::new(),
            requested_by: String::new(),
        },
    );
    let r = record_one(&mut client, forged_kind).await;
    assert_eq!(status(&r), pb::RecordStatus::Rejected);
    assert!(
        r.reason.starts_with("events[0].outreach_authorized:"),
        "{}",
        r.reason
    );

    // The cap (3 emails a week) holds: 2 more ALLOWs at most, then none.
    let mut allowed = 1;
    let mut ids = vec![first.decision_id.clone()];
    for _ in 0..9 {
        let d = client
            .authorize(request("victim", Email, Marketing))
            .await
            .unwrap()
            .into_inner();
        if verdict(&d) == pb::Verdict::Allow {
            allowed += 1;
        }
        ids.push(d.decision_id);
    }
    assert_eq!(allowed, 3);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "decision ids are unique");
    server.stop().await;
}

/// Defect 3: every free-text field is bounded (default 4 KiB; ids 256 bytes), in events
/// and in proposals. The probe recorded 160 urls of 15 MiB: 2.65 GB of RSS.
#[tokio::test]
async fn oversized_text_fields_are_refused_naming_the_field() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    let big = "x".repeat(15 << 20);

    let mut url = pricing_view("big-url", "c1", now);
    if let Some(pb::interaction_event::Kind::PageViewed(p)) = &mut url.kind {
        p.url = big.clone();
    }
    let r = record_one(&mut client, url).await;
    assert_eq!(status(&r), pb::RecordStatus::Rejected);
    assert!(
        r.reason
            .starts_with("events[0].page_viewed.url: at most 4096 bytes"),
        "{}",
        r.reason
    );

    let mut source = pricing_view("big-source", "c1", now);
    source.source = "s".repeat(5000);
    let r = record_one(&mut client, source).await;
    assert!(
        r.reason.starts_with("events[0].source: at most 4096 bytes"),
        "{}",
        r.reason
    );

    let mut consent_proof = event("big-proof", "c1", now, consent(Email, Marketing, true));
    if let Some(pb::interaction_event::Kind::ConsentChanged(c)) = &mut consent_proof.kind {
        c.proof = "p".repeat(4097);
    }
    let r = record_one(&mut client, consent_proof).await;
    assert!(
        r.reason.starts_with("events[0].consent_changed.proof:"),
        "{}",
        r.reason
    );

    // A proposal's labels are kept in the decision audit with every decision: at most
    // 256 bytes (found probing a release build: 4 KB labels on a read-only batch load
    // wrote about 100 MB a second to the audit).
    let mut req = request("c1", Email, Marketing);
    req.requested_by = "r".repeat(257);
    let err = client.authorize(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("requested_by: at most 256 bytes"),
        "{}",
        err.message()
    );
    let mut req = request("c1", Email, Marketing);
    req.requested_by = "r".repeat(256);
    client.decide(req).await.unwrap();
    // Nor control characters (found probing: a newline and NUL in `requested_by` were
    // stored, to forge lines in `tact decision`'s output).
    for label in ["rep\nverdict: ALLOW", "rep\0", "r\u{85}"] {
        let mut req = request("c1", Email, Marketing);
        req.requested_by = label.into();
        let err = client.authorize(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{label:?}");
        assert!(
            err.message()
                .starts_with("requested_by: must not hold control characters"),
            "{label:?}: {}",
            err.message()
        );
    }

    // In a batch, the oversized item gets its own error and the others their decisions.
    let mut req = request("c1", Email, Marketing);
    req.campaign_id = "c".repeat(10_000);
    let answers = client
        .decide_batch(pb::DecideBatchRequest {
            requests: vec![request("c1", Email, Marketing), req],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_ne!(verdict(&answers[0]), pb::Verdict::Unspecified);
    let error = answers[1].error.as_ref().expect("an item error");
    assert_eq!(
        (error.index, error.field.as_str()),
        (1, "campaign_id"),
        "{error:?}"
    );
    assert!(error.message.starts_with("at most 256 bytes"), "{error:?}");
    assert_eq!(verdict(&answers[1]), pb::Verdict::Unspecified);

    // A field just under the limit is fine.
    let mut ok = pricing_view("ok-url", "c1", now);
    if let Some(pb::interaction_event::Kind::PageViewed(p)) = &mut ok.kind {
        p.url = "u".repeat(4096);
    }
    assert_eq!(
        status(&record_one(&mut client, ok).await),
        pb::RecordStatus::Recorded
    );
    server.stop().await;
}

/// Defect 7: values that contradict themselves get a clear error naming the field.
#[tokio::test]
async fn self_contradicting_events_are_refused_naming_the_field() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;

    let expired = event(
        "expired",
        "c1",
        now,
        EventKind::ConsentChanged {
            channel: Email,
            purpose: Marketing,
            granted: true,
            expires_at: Some(now),
            proof: "form".into(),
        },
    );
    let r = record_one(&mut client, expired).await;
    assert!(
        r.reason
            .starts_with("events[0].consent_changed.expires_at: must be after occurred_at"),
        "{}",
        r.reason
    );

    let ended = event(
        "ended",
        "c1",
        now,
        EventKind::DoNotContact {
            reason: "asked".into(),
            until: Some(now.saturating_sub(days(1))),
        },
    );
    let r = record_one(&mut client, ended).await;
    assert!(
        r.reason
            .starts_with("events[0].do_not_contact.until: must be after occurred_at"),
        "{}",
        r.reason
    );

    for at in [Timestamp(0), Timestamp(-86_400_000)] {
        let mut e = pricing_view("epoch", "c1", now);
        e.occurred_at = Some(timestamp_to_pb(at));
        let r = record_one(&mut client, e).await;
        assert!(
            r.reason
                .starts_with("events[0].occurred_at: must be after 1970-01-01T00:00:00Z"),
            "{}",
            r.reason
        );
    }
    let mut unset = pricing_view("unset", "c1", now);
    unset.occurred_at = None;
    let r = record_one(&mut client, unset).await;
    assert_eq!(r.reason, "events[0].occurred_at: must be set");
    server.stop().await;
}

/// Defect 7: a policy with no rules would allow everything; it is refused.
#[test]
fn a_policy_with_no_rules_is_refused() {
    let err = Policy::from_toml_str("version = \"empty\"\ndefault_time_zone = \"UTC\"\n").unwrap_err();
    assert!(err.to_string().contains("at least one [[rule]]"), "{err}");
}

/// Defect 7: a request over `max_request_bytes` is RESOURCE_EXHAUSTED (as gRPC specifies
/// for a message over the size limit), unary and streaming, not OUT_OF_RANGE.
#[tokio::test]
async fn oversized_requests_are_resource_exhausted() {
    let now = wed_10am();
    let server = TestServer::start_with(None, now, |o| o.limits.max_request_bytes = 4096).await;
    let mut client = server.client().await;
    let mut big = request("c1", Email, Marketing);
    big.campaign_id = "c".repeat(8000);

    let err = client.decide(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());

    let err = client
        .record_events(pb::RecordEventsRequest {
            events: (0..200)
                .map(|i| pricing_view(&format!("e{i}"), "c1", now))
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    let stream = tokio_stream::iter(vec![request("c1", Email, Marketing), big]);
    let mut answers = client.decide_stream(stream).await.unwrap().into_inner();
    let mut codes = Vec::new();
    loop {
        match answers.message().await {
            Ok(Some(_)) => codes.push(tonic::Code::Ok),
            Ok(None) => break,
            Err(e) => {
                codes.push(e.code());
                break;
            }
        }
    }
    assert!(codes.contains(&tonic::Code::ResourceExhausted), "{codes:?}");

    // An audience over the size limit, likewise.
    let err = client
        .decide_batch(pb::DecideBatchRequest {
            audience: Some(pb::Audience {
                channel: pb::Channel::Email as i32,
                purpose: pb::Purpose::Marketing as i32,
                customer_ids: (0..1000).map(|i| format!("customer-{i}")).collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // The server still serves.
    let d = client
        .decide(request("c1", Email, Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(verdict(&d), pb::Verdict::Unspecified);
    server.stop().await;
}

/// Asking about the ends of time the wire allows answers (or names the field); it never
/// takes the server down.
#[tokio::test]
async fn deciding_at_the_ends_of_time_answers() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    record(&mut client, opted_in("c1", now.saturating_sub(days(30)))).await;
    for at in [Timestamp(-62_135_596_800_000), Timestamp(253_402_300_799_999)] {
        for (c, p) in [(Call, Sales), (Email, Marketing), (SalesMeeting, Sales)] {
            let mut req = request("c1", c, p);
            req.at = Some(timestamp_to_pb(at));
            match client.decide(req).await {
                Ok(d) => assert_ne!(verdict(&d.into_inner()), pb::Verdict::Unspecified),
                Err(e) => assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}"),
            }
            // The same as an audience (with a customer tact has never heard of).
            let audience = pb::DecideBatchRequest {
                audience: Some(pb::Audience {
                    channel: pb::Channel::from(c) as i32,
                    purpose: pb::Purpose::from(p) as i32,
                    at: Some(timestamp_to_pb(at)),
                    customer_ids: vec!["c1".into(), "stranger".into()],
                    ..Default::default()
                }),
                ..Default::default()
            };
            match client.decide_batch(audience).await {
                Ok(r) => {
                    let s = r.into_inner().screening.expect("a screening");
                    assert!(
                        s.verdicts.iter().all(|&v| v != pb::Verdict::Unspecified as i32),
                        "{s:?}"
                    );
                }
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
                    assert!(e.message().starts_with("audience.at"), "{}", e.message());
                }
            }
        }
    }
    let d = client
        .decide(request("c1", Email, Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow);
    server.stop().await;
}

//! The decision audit: every answer kept, readable by id and by customer, across
//! restarts; its switch, retention, bounds, and what happens when it cannot keep up.

use std::sync::{Arc, Condvar, Mutex};

use tact_core::{Channel, EventKind, Purpose, Timestamp};
use tact_log::audit::{AuditError, AuditRecord, AuditStore, ListQuery, MemoryAudit, RecordBatch};
use tact_proto::pb;
use tact_server::{AuditMode, RateLimits, Scope};
use tact_tests::*;
use tonic::Code;

/// Ann opted in 200 days ago and looked at pricing an hour ago: a sales call is
/// deferred (research cool-down), an email is allowed.
async fn ann(client: &mut Client) {
    let now = wed_10am();
    let mut events = opted_in("ann", now.saturating_sub(days(200)));
    events.push(event(
        "ann-pricing",
        "ann",
        now.saturating_sub(hours(1)),
        EventKind::PageViewed {
            url: "/pricing".into(),
            category: "pricing".into(),
        },
    ));
    record(client, events).await;
}

async fn get(client: &mut Client, id: &str) -> Result<pb::AuditedDecision, tonic::Status> {
    client
        .get_decision(pb::GetDecisionRequest {
            decision_id: id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn list(client: &mut Client, customer: &str, limit: u32, token: &str) -> pb::ListDecisionsResponse {
    client
        .list_decisions(pb::ListDecisionsRequest {
            customer_id: customer.into(),
            from: None,
            to: None,
            limit,
            page_token: token.into(),
        })
        .await
        .expect("list_decisions")
        .into_inner()
}

#[tokio::test]
async fn get_decision_after_a_restart_returns_the_answer_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Some(dir.path().to_path_buf()), wed_10am()).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    let mut asked_at = request("ann", Channel::Call, Purpose::Sales);
    asked_at.at = Some(tact_proto::convert::timestamp_to_pb(
        wed_10am().saturating_add(hours(2)),
    ));
    let deferred = client
        .decide(request("ann", Channel::Call, Purpose::Sales))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&deferred), pb::Verdict::Defer);
    assert!(rules(&deferred).contains(&"research-cooldown"), "{deferred:?}");
    server.clock.advance(minutes(1));
    let planned = client.decide(asked_at.clone()).await.unwrap().into_inner();
    server.clock.advance(minutes(1));
    let authorized = client
        .authorize(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&authorized), pb::Verdict::Allow);
    server.handle.auditor().sync().await;

    let before: Vec<pb::AuditedDecision> = {
        let mut out = Vec::new();
        for d in [&deferred, &planned, &authorized] {
            out.push(get(&mut client, &d.decision_id).await.unwrap());
        }
        out
    };
    server.stop().await;

    let server = TestServer::start(Some(dir.path().to_path_buf()), wed_10am().saturating_add(days(3))).await;
    let mut client = server.client().await;
    for ((answer, kept), method) in
        [&deferred, &planned, &authorized]
            .into_iter()
            .zip(&before)
            .zip(["Decide", "Decide", "Authorize"])
    {
        let audited = get(&mut client, &answer.decision_id).await.unwrap();
        assert_eq!(&audited, kept, "same record before and after the restart");
        // Exactly the answer: verdict, not_before, reasons with their sentences,
        // alternatives, policy version, log position.
        assert_eq!(audited.decision.as_ref(), Some(answer));
        assert_eq!(audited.method, method);
        assert_eq!(audited.policy_version, answer.policy_version);
        assert_eq!(audited.log_position, answer.log_position);
        let proposal = audited.proposal.unwrap();
        assert_eq!(proposal.customer_id, "ann");
        assert_eq!(proposal.campaign_id, "autumn");
        assert_eq!(proposal.requested_by, "crm");
        assert_eq!(audited.client, "", "unauthenticated mode names no client");
    }
    // `at` as asked, and when tact answered.
    assert_eq!(before[1].proposal.as_ref().unwrap().at, asked_at.at);
    assert_eq!(before[1].at, asked_at.at);
    assert_eq!(
        before[0].answered_at,
        Some(tact_proto::convert::timestamp_to_pb(wed_10am()))
    );
    assert_eq!(before[0].proposal.as_ref().unwrap().at, None);

    // The customer's decisions, newest first.
    let page = list(&mut client, "ann", 0, "").await;
    let ids: Vec<&str> = page
        .decisions
        .iter()
        .map(|d| d.decision.as_ref().unwrap().decision_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            authorized.decision_id.as_str(),
            planned.decision_id.as_str(),
            deferred.decision_id.as_str()
        ]
    );
    assert!(page.next_page_token.is_empty());
    assert!(list(&mut client, "bob", 0, "").await.decisions.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn every_item_of_a_batch_and_a_stream_is_audited() {
    let server = TestServer::start(None, wed_10am()).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    let mut bad = request("ann", Channel::Email, Purpose::Marketing);
    bad.channel = 0;
    let batch = client
        .decide_batch(pb::DecideBatchRequest {
            requests: vec![
                request("ann", Channel::Email, Purpose::Marketing),
                bad.clone(),
                request("ann", Channel::Call, Purpose::Sales),
                request("bob", Channel::Sms, Purpose::Marketing),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let stream = client
        .decide_stream(tokio_stream::iter(vec![
            request("ann", Channel::Sms, Purpose::Sales),
            bad,
            request("cid", Channel::Email, Purpose::Service),
        ]))
        .await
        .unwrap()
        .into_inner();
    let stream: Vec<pb::Decision> = tokio_stream::StreamExt::collect::<Vec<_>>(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    server.handle.auditor().sync().await;
    for (answers, method) in [(&batch, "DecideBatch"), (&stream, "DecideStream")] {
        assert_eq!(answers.iter().filter(|d| d.error.is_some()).count(), 1);
        for d in answers.iter().filter(|d| d.error.is_none()) {
            let audited = get(&mut client, &d.decision_id).await.unwrap();
            assert_eq!(audited.decision.as_ref(), Some(d));
            assert_eq!(audited.method, method);
        }
    }
    assert_eq!(server.handle.auditor().store().count().unwrap(), 5);
    assert_eq!(list(&mut client, "ann", 0, "").await.decisions.len(), 3);
    server.stop().await;
}

/// Every customer of an audience gets a record under its own decision id (the
/// screening's prefix and its index), readable like any other decision.
#[tokio::test]
async fn every_customer_of_an_audience_is_audited_under_its_id() {
    let server = TestServer::start(None, wed_10am()).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    let ids: Vec<String> = ["ann", "", "bob", "ann"].map(String::from).to_vec();
    let screening = client
        .decide_batch(pb::DecideBatchRequest {
            audience: Some(pb::Audience {
                channel: pb::Channel::Call as i32,
                purpose: pb::Purpose::Sales as i32,
                campaign_id: "spring".into(),
                customer_ids: ids.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .screening
        .unwrap();
    assert_eq!(
        screening.verdicts,
        [
            pb::Verdict::Defer,
            pb::Verdict::Unspecified,
            pb::Verdict::Deny,
            pb::Verdict::Defer
        ]
        .map(|v| v as i32)
    );
    server.handle.auditor().sync().await;
    let mut kept = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let decision_id = format!("{}{i:08x}", screening.decision_id_prefix);
        let audited = get(&mut client, &decision_id).await;
        if i == 1 {
            assert_eq!(
                audited.unwrap_err().code(),
                Code::NotFound,
                "a bad id is not a decision"
            );
            continue;
        }
        let audited = audited.unwrap();
        let d = audited.decision.as_ref().unwrap();
        assert_eq!(audited.method, "DecideBatch");
        assert_eq!((&d.customer_id, &d.decision_id), (id, &decision_id));
        assert_eq!(d.verdict, screening.verdicts[i]);
        let nb = d
            .not_before
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
        assert_eq!(nb, screening.not_before_unix_ms[i]);
        assert!(d.reasons.is_empty(), "answered at verdict detail: {d:?}");
        kept.insert(decision_id);
    }
    assert_eq!(kept.len(), 3);
    assert_eq!(server.handle.auditor().store().count().unwrap(), 3);
    server.stop().await;
}

async fn decide_everything(client: &mut Client) -> Vec<pb::Decision> {
    ann(client).await;
    let mut out = vec![
        client
            .decide(request("ann", Channel::Email, Purpose::Marketing))
            .await
            .unwrap()
            .into_inner(),
        client
            .authorize(request("ann", Channel::Email, Purpose::Marketing))
            .await
            .unwrap()
            .into_inner(),
        client
            .authorize(request("ann", Channel::Call, Purpose::Sales))
            .await
            .unwrap()
            .into_inner(),
    ];
    out.extend(
        client
            .decide_batch(pb::DecideBatchRequest {
                requests: vec![request("ann", Channel::Sms, Purpose::Marketing); 3],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .decisions,
    );
    out
}

#[tokio::test]
async fn audit_off_records_nothing() {
    let server = TestServer::start_with(None, wed_10am(), |o| o.audit.mode = AuditMode::Off).await;
    let mut client = server.client().await;
    let answers = decide_everything(&mut client).await;
    server.handle.auditor().sync().await;
    assert_eq!(server.handle.auditor().store().count().unwrap(), 0);
    for d in &answers {
        let e = get(&mut client, &d.decision_id).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().starts_with("decision_id:"), "{}", e.message());
    }
    server.stop().await;
}

#[tokio::test]
async fn audit_authorize_records_only_authorize() {
    let server = TestServer::start_with(None, wed_10am(), |o| o.audit.mode = AuditMode::Authorize).await;
    let mut client = server.client().await;
    let answers = decide_everything(&mut client).await;
    server.handle.auditor().sync().await;
    assert_eq!(server.handle.auditor().store().count().unwrap(), 2);
    // Both Authorize answers (an ALLOW and a DEFER) are kept, nothing else.
    for (i, d) in answers.iter().enumerate() {
        let got = get(&mut client, &d.decision_id).await;
        if i == 1 || i == 2 {
            let audited = got.unwrap();
            assert_eq!(audited.method, "Authorize");
            assert_eq!(audited.decision.as_ref(), Some(d));
        } else {
            assert_eq!(got.unwrap_err().code(), Code::NotFound);
        }
    }
    assert_eq!(verdict(&answers[1]), pb::Verdict::Allow);
    assert_eq!(verdict(&answers[2]), pb::Verdict::Defer);
    server.stop().await;
}

#[tokio::test]
async fn retention_prunes_records_by_the_servers_clock() {
    let server = TestServer::start(None, wed_10am()).await;
    let mut client = server.client().await;
    let old = client
        .decide(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap()
        .into_inner();
    server.clock.advance(days(399));
    let recent = client
        .decide(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap()
        .into_inner();
    let auditor = server.handle.auditor();
    auditor.sync().await;
    assert_eq!(
        auditor.prune_now().await.unwrap(),
        0,
        "nothing is 400 days old yet"
    );
    server.clock.advance(days(1));
    server.clock.advance(minutes(1));
    assert_eq!(auditor.prune_now().await.unwrap(), 1);
    assert_eq!(
        get(&mut client, &old.decision_id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(get(&mut client, &recent.decision_id).await.is_ok());
    assert_eq!(list(&mut client, "ann", 0, "").await.decisions.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_hostile_list_stays_bounded() {
    let server = TestServer::start(None, wed_10am()).await;
    let mut client = server.client().await;
    client
        .decide_batch(pb::DecideBatchRequest {
            requests: vec![request("ann", Channel::Email, Purpose::Marketing); 1_500],
            ..Default::default()
        })
        .await
        .unwrap();
    server.handle.auditor().sync().await;
    let everything = pb::ListDecisionsRequest {
        customer_id: "ann".into(),
        from: Some(pbjson_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        }),
        to: Some(pbjson_types::Timestamp {
            seconds: 253_402_300_799,
            nanos: 999_999_999,
        }),
        limit: u32::MAX,
        page_token: String::new(),
    };
    let first = client
        .list_decisions(everything.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.decisions.len(), 1_000, "at most 1000 per page");
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_decisions(pb::ListDecisionsRequest {
            page_token: first.next_page_token.clone(),
            ..everything.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.decisions.len(), 500);
    assert!(second.next_page_token.is_empty());
    let mut ids: Vec<String> = first
        .decisions
        .iter()
        .chain(&second.decisions)
        .map(|d| d.decision.as_ref().unwrap().decision_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1_500, "pages neither repeat nor skip");

    for (req, field) in [
        (
            pb::ListDecisionsRequest {
                page_token: "zz".repeat(5_000),
                ..everything.clone()
            },
            "page_token",
        ),
        (
            pb::ListDecisionsRequest {
                customer_id: String::new(),
                ..everything.clone()
            },
            "customer_id",
        ),
        (
            pb::ListDecisionsRequest {
                from: Some(pbjson_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..everything.clone()
            },
            "from",
        ),
    ] {
        let e = client.list_decisions(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // Reversed range: nothing, not an error.
    let reversed = client
        .list_decisions(pb::ListDecisionsRequest {
            from: everything.to,
            to: everything.from,
            ..everything.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reversed.decisions.is_empty());
    for id in [String::new(), "d".repeat(100_000)] {
        let e = get(&mut client, &id).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("decision_id:"), "{}", e.message());
    }
    // Ids tact never makes are simply not found: the wrong length, uppercase, not hex,
    // a time far from any record's.
    let real = &first.decisions[0].decision.as_ref().unwrap().decision_id;
    for id in [
        "d1".to_owned(),
        real.to_uppercase(),
        format!("x{}", &real[1..]),
        format!("{real}0"),
        format!("d{}", "z".repeat(32)),
        format!("d{}", "0".repeat(32)),
        format!("d{}", "f".repeat(32)),
        format!("{}{}", &real[..13], "0".repeat(20)),
    ] {
        let e = get(&mut client, &id).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}: {e:?}");
    }
    assert!(get(&mut client, real).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_decision_answered_with_less_detail_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Some(dir.path().to_path_buf()), wed_10am()).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    let mut answers = Vec::new();
    for detail in [pb::Detail::Full, pb::Detail::Rules, pb::Detail::Verdict] {
        let mut req = request("ann", Channel::Call, Purpose::Sales);
        req.detail = detail as i32;
        answers.push((detail, client.decide(req).await.unwrap().into_inner()));
    }
    // And in a batch, where each item may ask for its own level.
    let mut rules = request("ann", Channel::Call, Purpose::Sales);
    rules.detail = pb::Detail::Rules as i32;
    let batch = client
        .decide_batch(pb::DecideBatchRequest {
            requests: vec![request("ann", Channel::Call, Purpose::Sales), rules],
            detail: pb::Detail::Verdict as i32,
            audience: None,
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    answers.push((pb::Detail::Verdict, batch[0].clone()));
    answers.push((pb::Detail::Rules, batch[1].clone()));
    let full = &answers[0].1;
    assert!(!full.reasons.is_empty() && !full.reasons[0].message.is_empty());
    assert!(answers[1].1.reasons.iter().all(|r| r.message.is_empty()));
    assert!(!answers[1].1.reasons.is_empty());
    assert!(answers[2].1.reasons.is_empty());
    server.handle.auditor().sync().await;
    server.stop().await;

    let server = TestServer::start(Some(dir.path().to_path_buf()), wed_10am()).await;
    let mut client = server.client().await;
    for (detail, answer) in &answers {
        let audited = get(&mut client, &answer.decision_id).await.unwrap();
        assert_eq!(audited.decision.as_ref(), Some(answer), "{detail:?}");
        assert_eq!(audited.proposal.unwrap().detail, *detail as i32);
    }
    server.stop().await;
}

#[tokio::test]
async fn the_client_is_recorded_and_reading_needs_the_read_scope() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.toml");
    write_clients(
        &path,
        &[
            (
                "crm",
                "crm-key",
                &[Scope::Decide, Scope::Record],
                RateLimits::default(),
            ),
            (
                "dialer",
                "dialer-key",
                &[Scope::Decide, Scope::Authorize, Scope::Read],
                RateLimits::default(),
            ),
        ],
    );
    let server = TestServer::start_with(None, wed_10am(), move |o| o.auth.clients_file = Some(path)).await;
    let mut client = server.client().await;
    client
        .record_events(bearer(
            pb::RecordEventsRequest {
                events: opted_in("ann", wed_10am().saturating_sub(days(10))),
            },
            "crm-key",
        ))
        .await
        .unwrap();
    let decided = client
        .decide(bearer(
            request("ann", Channel::Email, Purpose::Marketing),
            "crm-key",
        ))
        .await
        .unwrap()
        .into_inner();
    let authorized = client
        .authorize(bearer(
            request("ann", Channel::Email, Purpose::Marketing),
            "dialer-key",
        ))
        .await
        .unwrap()
        .into_inner();
    server.handle.auditor().sync().await;
    let get_as = |id: &str, key: &str| {
        bearer(
            pb::GetDecisionRequest {
                decision_id: id.into(),
            },
            key,
        )
    };
    let e = client
        .get_decision(get_as(&decided.decision_id, "crm-key"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("`read`"), "{}", e.message());
    let d = client
        .get_decision(get_as(&decided.decision_id, "dialer-key"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.client, "crm");
    assert_eq!(d.proposal.unwrap().requested_by, "crm");
    let a = client
        .get_decision(get_as(&authorized.decision_id, "dialer-key"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.client, "dialer");
    assert_eq!(a.proposal.unwrap().requested_by, "dialer/crm");
    server.stop().await;
}

/// A store whose writes wait while the gate is closed (a slow disk), that notes which
/// thread writes and at what CPU priority, and panics on the write after `panic_next`
/// is set.
#[derive(Debug, Default)]
struct Gated {
    inner: MemoryAudit,
    closed: Mutex<bool>,
    opened: Condvar,
    panic_next: std::sync::atomic::AtomicBool,
    /// While set, writes fail (a full disk).
    failing: std::sync::atomic::AtomicBool,
    /// Each write's thread name and nice value (Linux; `None` elsewhere).
    writers: Mutex<Vec<(Option<String>, Option<i32>)>>,
    /// When set, only the writes on the thread of this name wait at the gate.
    gate_only: Mutex<Option<&'static str>>,
}

impl Gated {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

impl AuditStore for Gated {
    fn write(&self, batches: &[RecordBatch]) -> Result<(), AuditError> {
        self.writers
            .lock()
            .unwrap()
            .push((std::thread::current().name().map(str::to_owned), own_nice()));
        if self.panic_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("a store write panicked (test)");
        }
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AuditError::Corrupt {
                key: "-".into(),
                reason: "No space left on device (test)".into(),
            });
        }
        let gated = match *self.gate_only.lock().unwrap() {
            Some(name) => std::thread::current().name() == Some(name),
            None => true,
        };
        let mut closed = self.closed.lock().unwrap();
        while gated && *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        drop(closed);
        self.inner.write(batches)
    }
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
    fn get(&self, id: &str) -> Result<Option<AuditRecord>, AuditError> {
        self.inner.get(id)
    }
    fn list(&self, q: &ListQuery) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.list(q)
    }
    fn prune(&self, before: Timestamp, max: usize) -> Result<usize, AuditError> {
        self.inner.prune(before, max)
    }
    fn count(&self) -> Result<usize, AuditError> {
        self.inner.count()
    }
}

/// A server whose audit writes into `store`, with a queue of `capacity` records.
async fn serve_audit_into(store: &Arc<Gated>, capacity: usize) -> TestServer {
    let s: Arc<dyn AuditStore> = store.clone();
    TestServer::start_with(None, wed_10am(), move |o| {
        o.audit.store = Some(s);
        o.audit.capacity = capacity;
    })
    .await
}

#[tokio::test]
async fn a_stuck_audit_drops_decide_records_but_never_delays_answers_or_loses_authorize() {
    let store = Arc::new(Gated::default());
    store.set(true);
    let server = serve_audit_into(&store, 4).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    let started = std::time::Instant::now();
    for _ in 0..50 {
        client
            .decide(request("ann", Channel::Email, Purpose::Marketing))
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answers do not wait for the audit"
    );
    let auditor = server.handle.auditor();
    assert!(auditor.dropped() >= 40, "dropped {}", auditor.dropped());
    // Authorize waits for its record (with backpressure) and answers once it is kept.
    let authorize = {
        let mut client = server.client().await;
        tokio::spawn(async move {
            client
                .authorize(request("ann", Channel::Email, Purpose::Marketing))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!authorize.is_finished(), "authorize waits for its record");
    store.set(false);
    let answer = authorize.await.unwrap().unwrap().into_inner();
    assert_eq!(verdict(&answer), pb::Verdict::Allow);
    let kept = get(&mut client, &answer.decision_id).await.unwrap();
    assert_eq!(kept.decision.as_ref(), Some(&answer));
    server.stop().await;
}

/// Found probing a release build: with the audit failing to write (a full disk),
/// `Authorize` answered UNAVAILABLE for everyone while `GetStatus` said healthy. It
/// now says why, until a write succeeds again.
#[tokio::test]
async fn a_failing_audit_shows_in_get_status_until_it_writes_again() {
    let store = Arc::new(Gated::default());
    let server = serve_audit_into(&store, 64).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    let healthy = |s: &pb::ServiceStatus| (s.healthy, s.unhealthy_reason.clone());
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(healthy(&status), (true, String::new()));
    store.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = client
        .authorize(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.healthy);
    assert!(
        status.unhealthy_reason.starts_with("decision audit failing")
            && status.unhealthy_reason.contains("No space left on device"),
        "{}",
        status.unhealthy_reason
    );
    // Decide still answers.
    client
        .decide(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap();
    store.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let answer = client
        .authorize(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&answer), pb::Verdict::Allow);
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(healthy(&status), (true, String::new()));
    server.stop().await;
}

/// The calling thread's nice value, from `/proc/thread-self/stat` (field 19).
fn own_nice() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(16)?.parse().ok()
}

#[tokio::test]
async fn the_audit_writes_on_a_low_priority_thread_that_outlives_a_panicking_write() {
    let store = Arc::new(Gated::default());
    let server = serve_audit_into(&store, tact_server::audit::DEFAULT_CAPACITY).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    // A write that panics: the Authorize waiting for it is refused (fail-closed).
    store.panic_next.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = client
        .authorize(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // The writer goes on: the next Authorize is kept and answered.
    let answer = client
        .authorize(request("ann", Channel::Sms, Purpose::Service))
        .await
        .unwrap()
        .into_inner();
    let kept = get(&mut client, &answer.decision_id).await.unwrap();
    assert_eq!(kept.decision.as_ref(), Some(&answer));
    // A Decide's record, which nobody waits for.
    client
        .decide(request("ann", Channel::Email, Purpose::Marketing))
        .await
        .unwrap();
    server.handle.auditor().sync().await;
    let writers = store.writers.lock().unwrap().clone();
    // Authorize's records are written at the priority of the threads answering calls,
    // the others below it.
    let ours = own_nice();
    let on = |thread: &str| {
        writers
            .iter()
            .filter(|(name, _)| name.as_deref() == Some(thread))
            .count()
    };
    assert!(on("tact-audit-ack") >= 2 && on("tact-audit") >= 1, "{writers:?}");
    for (name, nice) in &writers {
        match name.as_deref() {
            Some("tact-audit-ack") => assert_eq!(*nice, ours, "{writers:?}"),
            Some("tact-audit") if cfg!(target_os = "linux") => assert_eq!(*nice, Some(10), "{writers:?}"),
            Some("tact-audit") => {}
            _ => panic!("a write on another thread: {writers:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn an_authorize_record_never_waits_behind_the_records_nobody_waits_for() {
    // The writer of Decide's records is stuck (a slow disk, or a core it gets no time
    // on) and its queue is full.
    let store = Arc::new(Gated::default());
    *store.gate_only.lock().unwrap() = Some("tact-audit");
    store.set(true);
    let server = serve_audit_into(&store, 4).await;
    let mut client = server.client().await;
    ann(&mut client).await;
    for _ in 0..20 {
        client
            .decide(request("ann", Channel::Email, Purpose::Marketing))
            .await
            .unwrap();
    }
    assert!(server.handle.auditor().dropped() >= 10, "the queue is full");
    // Authorize is answered, its record kept, without waiting for that backlog.
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(4),
        client.authorize(request("ann", Channel::Email, Purpose::Marketing)),
    )
    .await
    .expect("Authorize waits for no Decide record")
    .unwrap()
    .into_inner();
    assert_eq!(verdict(&answer), pb::Verdict::Allow);
    let kept = get(&mut client, &answer.decision_id).await.unwrap();
    assert_eq!(kept.decision.as_ref(), Some(&answer));
    // The backlog is written once its writer moves again, and then the records are there.
    store.set(false);
    server.handle.auditor().sync().await;
    let all = store.inner.count().unwrap();
    assert!(all >= 5, "the Authorize record and the 4 queued: {all}");
    server.stop().await;
}

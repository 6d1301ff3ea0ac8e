//! Operating tact (issue #11): a backtest on a running server gives the same report as
//! the offline command on the same log, and GetCustomer proves each consent.

use std::sync::Arc;

use tact_core::backtest::Period;
use tact_core::{Channel, EventKind, Policy, Purpose};
use tact_log::backtest::run_backtest;
use tact_log::{MemoryStorage, Storage};
use tact_proto::pb;
use tact_proto::pb::tact_admin_client::TactAdminClient;
use tact_tests::*;

const DEFAULT: &str = tact_core::policy::DEFAULT_POLICY;

/// The report without what depends on the run (its duration and speed).
fn comparable(json: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("elapsed_ms");
    o.remove("events_per_sec");
    v
}

#[tokio::test]
async fn a_backtest_on_the_server_gives_the_offline_report() {
    let now = wed_10am();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let server = TestServer::start_with(None, now, |o| o.storage = Some(Arc::clone(&storage))).await;
    let mut client = server.client().await;
    // 100 customers, each sent 5 marketing emails in 7 days (and engaged, so fatigue
    // does not decide).
    let mut events = Vec::new();
    for c in 0..100 {
        let id = format!("c{c}");
        events.push(event(
            &format!("{id}-consent"),
            &id,
            now.saturating_sub(days(60)),
            consent(Channel::Email, Purpose::Marketing, true),
        ));
        for i in 0..5 {
            let at = now.saturating_sub(days(7)).saturating_add(hours(24 * i + 1));
            events.push(event(
                &format!("{id}-mail-{i}"),
                &id,
                at,
                EventKind::OutreachSent {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "autumn".into(),
                    decision_id: None,
                },
            ));
            events.push(event(
                &format!("{id}-click-{i}"),
                &id,
                at.saturating_add(minutes(5)),
                EventKind::OutreachEngaged {
                    channel: Channel::Email,
                    engagement: tact_core::Engagement::Clicked,
                },
            ));
        }
    }
    for chunk in events.chunks(1000) {
        record(&mut client, chunk.to_vec()).await;
    }
    let candidate = DEFAULT
        .replacen("version = \"default-2026.12\"", "version = \"two-emails\"", 1)
        .replacen("max = 3", "max = 2", 1);

    let mut admin = TactAdminClient::connect(format!("http://{}", server.handle.local_addr()))
        .await
        .unwrap();
    let mut stream = admin
        .backtest(pb::BacktestRequest {
            candidate_toml: candidate.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut progress = 0;
    let mut report = None;
    while let Some(update) = stream.message().await.unwrap() {
        match update.update.unwrap() {
            pb::backtest_update::Update::Progress(p) => {
                assert!(report.is_none(), "progress after the report");
                assert!(p.phase == "reading" || p.phase == "deciding", "{p:?}");
                progress += 1;
            }
            pb::backtest_update::Update::ReportJson(json) => report = Some(json),
        }
    }
    assert!(progress >= 1, "no progress message");
    let live = comparable(&report.expect("a report"));

    // The must-show: exactly 100 more sends from ALLOW to DEFER, all by cap-email.
    assert_eq!(live["outreach"], 500, "{live}");
    assert_eq!(live["baseline"]["allow"], 300, "{live}");
    assert_eq!(live["baseline"]["defer"], 200, "{live}");
    assert_eq!(live["candidate"]["allow"], 200, "{live}");
    assert_eq!(live["candidate"]["defer"], 300, "{live}");
    assert_eq!(live["changed"], 100, "{live}");
    assert_eq!(live["customers_affected"], 100, "{live}");
    assert_eq!(live["transitions"]["ALLOW->DEFER"]["count"], 100, "{live}");
    assert_eq!(
        live["transitions"]["ALLOW->DEFER"]["by_rule"]["cap-email"], 100,
        "{live}"
    );
    assert_eq!(live["transitions"].as_object().unwrap().len(), 1, "{live}");
    assert_eq!(live["baseline_policy"], "default-2026.12");
    assert_eq!(live["candidate_policy"], "two-emails");
    assert_eq!(live["reading"], "as_happened");

    // The offline command's function on the same log: the same report.
    let offline = run_backtest(
        &*storage,
        &Policy::default_policy(),
        &Policy::from_toml_str(&candidate).unwrap(),
        tact_core::Admission::default().max_clock_skew,
        Period::default(),
        None,
    )
    .unwrap();
    assert_eq!(live, comparable(&serde_json::to_string(&offline).unwrap()));

    // Bad requests name the field.
    let err = admin
        .backtest(pb::BacktestRequest {
            candidate_toml: DEFAULT.replacen("max = 3", "max = 0", 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("candidate_toml: rule `cap-email`"),
        "{}",
        err.message()
    );
    let err = admin
        .backtest(pb::BacktestRequest {
            candidate_toml: candidate,
            reading: "what-if".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("reading:"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn get_customer_proves_each_consent() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    let at = |d: i64| now.saturating_sub(days(d));
    let consent_event = |id: &str, d: i64, channel, purpose, granted: bool, proof: &str| {
        event(
            id,
            "c1",
            at(d),
            EventKind::ConsentChanged {
                channel,
                purpose,
                granted,
                expires_at: None,
                proof: proof.into(),
            },
        )
    };
    record(
        &mut client,
        vec![
            consent_event(
                "g-email",
                300,
                Channel::Email,
                Purpose::Marketing,
                true,
                "signup form 17",
            ),
            consent_event(
                "w-email",
                10,
                Channel::Email,
                Purpose::Marketing,
                false,
                "unsubscribe link",
            ),
            consent_event(
                "g-call",
                200,
                Channel::Call,
                Purpose::Sales,
                true,
                "call recording 42",
            ),
            consent_event("g-sms", 100, Channel::Sms, Purpose::Service, true, "app settings"),
            event(
                "dnc",
                "c1",
                at(5),
                EventKind::DoNotContact {
                    reason: "asked on the phone".into(),
                    until: Some(now.saturating_add(days(30))),
                },
            ),
            event(
                "tz",
                "c1",
                at(50),
                EventKind::PreferencesChanged {
                    time_zone: Some("Europe/Paris".into()),
                    accepted_channels: None,
                    max_contacts: None,
                },
            ),
        ],
    )
    .await;
    let view = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "c1".into(),
            at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let proof = |c: Channel, p: Purpose| {
        view.consent_proofs
            .iter()
            .find(|x| x.channel == pb::Channel::from(c) as i32 && x.purpose == pb::Purpose::from(p) as i32)
            .unwrap_or_else(|| panic!("no proof for {c} {p}: {view:?}"))
    };
    let email = proof(Channel::Email, Purpose::Marketing);
    assert_eq!(email.status, "withdrawn");
    let given = email.given.as_ref().unwrap();
    assert_eq!(given.event_id, "g-email");
    assert_eq!(given.proof, "signup form 17");
    assert_eq!(given.source, "test");
    assert!(given.log_position > 0);
    let withdrawn = email.withdrawn.as_ref().unwrap();
    assert_eq!(withdrawn.event_id, "w-email");
    assert_eq!(withdrawn.proof, "unsubscribe link");
    let call = proof(Channel::Call, Purpose::Sales);
    assert_eq!(call.status, "granted");
    assert_eq!(call.given.as_ref().unwrap().proof, "call recording 42");
    assert!(call.withdrawn.is_none());
    // Not only marketing: service consents too.
    assert_eq!(proof(Channel::Sms, Purpose::Service).status, "granted");
    // The history: every change, newest first, do-not-contact and preferences included.
    let ids: Vec<&str> = view
        .consent_history
        .iter()
        .map(|h| h.event.as_ref().unwrap().event_id.as_str())
        .collect();
    assert_eq!(ids, ["dnc", "w-email", "tz", "g-sms", "g-call", "g-email"]);
    assert_eq!(view.consent_history_omitted, 0);
    // As of before the withdrawal: granted.
    let before = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "c1".into(),
            at: Some(tact_proto::convert::timestamp_to_pb(at(20))),
        })
        .await
        .unwrap()
        .into_inner();
    let email = before
        .consent_proofs
        .iter()
        .find(|x| x.channel == pb::Channel::Email as i32 && x.purpose == pb::Purpose::Marketing as i32)
        .unwrap();
    assert_eq!(email.status, "granted");
    assert_eq!(before.consent_history.len(), 4);
    server.stop().await;
}

/// A customer with a long history (thousands of page views, dozens of consent changes):
/// the proof still names the grant a withdrawal withdrew, however old, and the history
/// answered is bounded (the server streams the customer's events through the fold
/// instead of holding them all).
#[tokio::test]
async fn get_customer_on_a_long_history_keeps_the_proof_and_bounds_the_history() {
    let now = wed_10am();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Some(dir.path().to_path_buf()), now).await;
    let mut client = server.client().await;
    let at = |minutes: i64| now.saturating_sub(tact_core::Span(minutes * tact_core::MINUTE.0));
    let consent = |id: String, minutes: i64, granted: bool| {
        event(
            &id,
            "c1",
            at(minutes),
            EventKind::ConsentChanged {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                granted,
                expires_at: None,
                proof: format!("proof of {id}"),
            },
        )
    };
    let mut events = vec![consent("g-first".into(), 400 * 24 * 60, true)];
    for i in 0..40 {
        events.push(consent(format!("w{i}"), 300 * 24 * 60 - i * 60, false));
    }
    for i in 0..12_000 {
        events.push(event(
            &format!("v{i}"),
            "c1",
            at(200 * 24 * 60 - i),
            EventKind::PageViewed {
                url: format!("/p/{i}"),
                category: "blog".into(),
            },
        ));
    }
    for chunk in events.chunks(4_000) {
        record(&mut client, chunk.to_vec()).await;
    }
    let view = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "c1".into(),
            at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let email = view
        .consent_proofs
        .iter()
        .find(|x| x.channel == pb::Channel::Email as i32 && x.purpose == pb::Purpose::Marketing as i32)
        .unwrap();
    assert_eq!(email.status, "withdrawn");
    assert_eq!(email.given.as_ref().unwrap().event_id, "g-first");
    assert_eq!(email.given.as_ref().unwrap().proof, "proof of g-first");
    assert_eq!(email.withdrawn.as_ref().unwrap().event_id, "w39");
    // The newest 16 withdrawals and the grant the proof names; page views are no part
    // of it.
    assert_eq!(view.consent_history.len(), tact_core::proof::HISTORY_PER_KIND + 1);
    assert_eq!(
        view.consent_history
            .first()
            .unwrap()
            .event
            .as_ref()
            .unwrap()
            .event_id,
        "w39"
    );
    assert_eq!(
        view.consent_history
            .last()
            .unwrap()
            .event
            .as_ref()
            .unwrap()
            .event_id,
        "g-first"
    );
    assert_eq!(
        view.consent_history_omitted as usize,
        41 - tact_core::proof::HISTORY_PER_KIND - 1
    );
    server.stop().await;
}

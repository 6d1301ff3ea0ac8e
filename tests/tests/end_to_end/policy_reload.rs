//! Policies put in force while the server runs (issue #11, section 3): a good reload
//! changes the next decision and its policy_version, a bad one changes nothing and says
//! why, each policy that takes effect is an event in the log, and a policy that needs
//! more history than the state keeps takes effect after a rebuild from the log.

use std::sync::Arc;
use std::time::Duration;

use tact_core::event::POLICY_KEY;
use tact_core::{Channel, EventKind, Policy, Purpose};
use tact_log::policies::{content_hash, policy_history, policy_in_force};
use tact_log::{MemoryStorage, Storage};
use tact_proto::pb;
use tact_proto::pb::tact_admin_client::TactAdminClient;
use tact_tests::*;

const DEFAULT: &str = tact_core::policy::DEFAULT_POLICY;

/// The shipped policy, renamed, with the email cap lowered from 3 to 2 a week.
fn two_emails_a_week() -> String {
    let text = DEFAULT
        .replacen("version = \"default-2026.12\"", "version = \"two-emails\"", 1)
        .replacen("max = 3", "max = 2", 1);
    assert!(text.contains("\"two-emails\"") && text != DEFAULT);
    text
}

async fn admin(server: &TestServer) -> TactAdminClient<tonic::transport::Channel> {
    TactAdminClient::connect(format!("http://{}", server.handle.local_addr()))
        .await
        .expect("connects")
}

/// A customer opted in a year ago who got two marketing emails this week.
async fn two_emails_sent(client: &mut Client, now: tact_core::Timestamp) {
    let mut events = opted_in("c1", now.saturating_sub(days(365)));
    for i in 0..2 {
        events.push(event(
            &format!("c1-sent-{i}"),
            "c1",
            now.saturating_sub(days(2 - i)),
            EventKind::OutreachSent {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign: "autumn".into(),
                decision_id: None,
            },
        ));
    }
    events.push(event(
        "c1-click",
        "c1",
        now.saturating_sub(hours(1)),
        EventKind::OutreachEngaged {
            channel: Channel::Email,
            engagement: tact_core::Engagement::Clicked,
        },
    ));
    record(client, events).await;
}

#[tokio::test]
async fn a_good_reload_changes_the_next_decision_and_is_recorded() {
    let now = wed_10am();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, DEFAULT).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let server = TestServer::start_with(None, now, |o| {
        o.policy_file = Some(file.clone());
        o.storage = Some(Arc::clone(&storage));
    })
    .await;
    let mut client = server.client().await;
    let mut admin = admin(&server).await;
    two_emails_sent(&mut client, now).await;

    // The policy at start is in the log, under tact's own key.
    let history = policy_history(&*storage).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].version, "default-2026.12");
    assert_eq!(history[0].content_hash, content_hash(DEFAULT));
    assert_eq!(history[0].text, DEFAULT);

    let ask = || request("c1", Channel::Email, Purpose::Marketing);
    let before = client.decide(ask()).await.unwrap().into_inner();
    assert_eq!(verdict(&before), pb::Verdict::Allow, "{before:?}");
    assert_eq!(before.policy_version, "default-2026.12");

    // Reloading the same file changes nothing and records nothing.
    let same = admin
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.outcome, "unchanged");
    assert_eq!(policy_history(&*storage).unwrap().len(), 1);

    let text = two_emails_a_week();
    std::fs::write(&file, &text).unwrap();
    let reloaded = admin
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.outcome, "activated", "{reloaded:?}");
    assert_eq!(reloaded.previous_version, "default-2026.12");
    assert_eq!(reloaded.version, "two-emails");
    assert_eq!(reloaded.content_hash, content_hash(&text));
    assert!(
        reloaded.changes.iter().any(|l| l.starts_with("~ cap-email")),
        "{:?}",
        reloaded.changes
    );

    let after = client.decide(ask()).await.unwrap().into_inner();
    assert_eq!(verdict(&after), pb::Verdict::Defer, "{after:?}");
    assert_eq!(after.policy_version, "two-emails");
    assert!(rules(&after).contains(&"cap-email"), "{after:?}");
    // Batches too.
    let batch = client
        .decide_batch(pb::DecideBatchRequest {
            requests: vec![ask(), ask()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(batch.decisions.iter().all(|d| d.policy_version == "two-emails"));

    // Recorded in the log, at the position the answer gave, and found by instant.
    let history = policy_history(&*storage).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].version, "two-emails");
    assert_eq!(history[1].seq, reloaded.log_position);
    assert_eq!(history[1].text, text);
    assert_eq!(policy_in_force(&history, now).unwrap().version, "two-emails");
    assert_eq!(
        policy_in_force(&history, now.saturating_sub(days(1))),
        None,
        "no policy was recorded before the server started"
    );
    // Not a customer: folding ignores it, GetCustomer knows no such customer.
    let events = storage.customer_events(POLICY_KEY).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(server.handle.engine().customers(), 1);
    // And the history RPC lists both.
    let listed = admin
        .policy_history(pb::PolicyHistoryRequest { include_text: false })
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<&str> = listed.policies.iter().map(|p| p.version.as_str()).collect();
    assert_eq!(versions, ["default-2026.12", "two-emails"]);
    assert!(listed.policies.iter().all(|p| p.text.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn a_bad_reload_changes_nothing_and_names_the_rule_and_field() {
    let now = wed_10am();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, DEFAULT).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let server = TestServer::start_with(None, now, |o| {
        o.policy_file = Some(file.clone());
        o.storage = Some(Arc::clone(&storage));
    })
    .await;
    let mut client = server.client().await;
    let mut admin = admin(&server).await;
    two_emails_sent(&mut client, now).await;

    std::fs::write(&file, DEFAULT.replacen("max = 3", "max = 0", 1)).unwrap();
    let err = admin.reload_policy(pb::ReloadPolicyRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("cap-email"), "{}", err.message());
    assert!(err.message().contains("`max`"), "{}", err.message());
    assert!(
        err.message().contains("policy in force stays"),
        "{}",
        err.message()
    );
    // So does SIGHUP's path.
    let hup = server.handle.reload_policy().await.unwrap_err();
    assert!(hup.to_string().contains("cap-email"), "{hup}");
    // A changed policy under the version in force would make two policies one name
    // in decisions and the audit.
    std::fs::write(&file, DEFAULT.replacen("max = 3", "max = 5", 1)).unwrap();
    let err = admin.reload_policy(pb::ReloadPolicyRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("version: the policy changed but its version `default-2026.12` did not"),
        "{}",
        err.message()
    );
    // A file that is gone is no better.
    std::fs::remove_file(&file).unwrap();
    let err = admin.reload_policy(pb::ReloadPolicyRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    let d = client
        .decide(request("c1", Channel::Email, Purpose::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow);
    assert_eq!(d.policy_version, "default-2026.12");
    assert_eq!(policy_history(&*storage).unwrap().len(), 1, "nothing recorded");
    server.stop().await;
}

#[tokio::test]
async fn the_start_records_the_policy_only_when_it_changed() {
    let now = wed_10am();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |policy: Policy| {
        let data = data.clone();
        async move {
            TestServer::start_with(Some(data), now, move |o| {
                o.policy = policy;
            })
            .await
        }
    };
    start(Policy::default_policy()).await.stop().await;
    start(Policy::default_policy()).await.stop().await;
    let other = Policy::from_toml_str(&two_emails_a_week()).unwrap();
    start(other).await.stop().await;
    let storage = tact_server::open_storage(&data).unwrap();
    let versions: Vec<String> = policy_history(&*storage)
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, ["default-2026.12", "two-emails"]);
}

#[tokio::test]
async fn policy_events_cannot_be_recorded_from_outside() {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    let forged = event(
        "forged",
        "c1",
        now,
        EventKind::PolicyActivated {
            version: "evil".into(),
            content_hash: "00".into(),
            text: "".into(),
        },
    );
    let resp = client
        .record_events(pb::RecordEventsRequest { events: vec![forged] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results[0].status, pb::RecordStatus::Rejected as i32);
    assert!(
        resp.results[0].reason.contains("policy_activated"),
        "{:?}",
        resp.results[0]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_policy_needing_more_history_takes_effect_after_a_rebuild() {
    let now = wed_10am();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, DEFAULT).unwrap();
    let server = TestServer::start_with(None, now, |o| {
        o.policy_file = Some(file.clone());
    })
    .await;
    let mut client = server.client().await;
    // Opted in long ago; emails 100, 101 and 102 days ago: beyond what the default
    // policy keeps (63 days plus the clock skew), so pruned from the state.
    let mut events = opted_in("c1", now.saturating_sub(days(400)));
    for i in 0..3 {
        events.push(event(
            &format!("c1-old-{i}"),
            "c1",
            now.saturating_sub(days(102 - i)),
            EventKind::OutreachSent {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                campaign: "spring".into(),
                decision_id: None,
            },
        ));
    }
    // Two recent engagements: pruning measures back from the latest instant but one.
    for i in 1..=2 {
        events.push(event(
            &format!("c1-click-{i}"),
            "c1",
            now.saturating_sub(hours(i)),
            EventKind::OutreachEngaged {
                channel: Channel::Email,
                engagement: tact_core::Engagement::Clicked,
            },
        ));
    }
    record(&mut client, events).await;
    // As the default policy reads it: the old emails are gone, an email is welcome.
    let d = client
        .decide(request("c1", Channel::Email, Purpose::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), pb::Verdict::Allow, "{d:?}");
    let kept = server.handle.engine().retention().window;

    // Three emails in any 120 days: needs 120 days of history.
    let text = DEFAULT
        .replacen("version = \"default-2026.12\"", "version = \"long-cap\"", 1)
        .replacen("max = 3\nwindow = \"7d\"", "max = 3\nwindow = \"120d\"", 1);
    assert!(text.contains("120d"));
    std::fs::write(&file, &text).unwrap();
    let mut admin = admin(&server).await;
    let answer = admin
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcome, "rebuilding", "{answer:?}");
    let mut waited = 0;
    let decided = loop {
        let d = client
            .decide(request("c1", Channel::Email, Purpose::Marketing))
            .await
            .unwrap()
            .into_inner();
        if d.policy_version == "long-cap" {
            break d;
        }
        assert_eq!(d.policy_version, "default-2026.12");
        waited += 1;
        assert!(waited < 200, "the rebuilt policy never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(server.handle.engine().retention().window > kept);
    // The rebuilt state has the old emails back: three in 120 days, so DEFER.
    assert_eq!(verdict(&decided), pb::Verdict::Defer, "{decided:?}");
    assert!(rules(&decided).contains(&"cap-email"), "{decided:?}");
    server.stop().await;
}

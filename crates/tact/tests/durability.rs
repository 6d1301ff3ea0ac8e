//! Crash safety of `tact serve`: every event whose RecordEvents call answered RECORDED
//! survives a SIGKILL, and the state rebuilt after the crash answers like a clean one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, run, tact, text};
use tact_proto::convert::timestamp_to_pb;
use tact_proto::pb;
use tact_proto::pb::interaction_event::Kind;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z: every event occurs in the 40 days after it.
const T0: i64 = 1_767_225_600_000;
/// Every answer is asked as of this instant, so it does not depend on the wall clock.
const AT: i64 = T0 + 40 * DAY;

const STABLE: usize = 40;
const HOT: usize = 300;
const WRITERS: usize = 4;
const HOT_BATCH: usize = 5;

fn event(id: String, customer: String, at: i64, kind: Kind) -> pb::InteractionEvent {
    pb::InteractionEvent {
        event_id: id,
        customer_id: customer,
        occurred_at: Some(timestamp_to_pb(tact_core::Timestamp(at))),
        source: "durability-test".into(),
        kind: Some(kind),
    }
}

fn consent(channel: pb::Channel, purpose: pb::Purpose, granted: bool) -> Kind {
    Kind::ConsentChanged(pb::ConsentChanged {
        channel: channel as i32,
        purpose: purpose as i32,
        granted,
        expires_at: None,
        proof: "test".into(),
    })
}

fn sent(channel: pb::Channel, purpose: pb::Purpose) -> Kind {
    Kind::OutreachSent(pb::OutreachSent {
        channel: channel as i32,
        purpose: purpose as i32,
        campaign: "c".into(),
        decision_id: None,
    })
}

fn stable_events() -> Vec<pb::InteractionEvent> {
    let mut out = Vec::new();
    for i in 0..STABLE {
        let c = format!("stable-{i}");
        let id = |n: u32| format!("stable-{i}-{n}");
        let m = i as i64 * 60_000;
        out.push(event(
            id(0),
            c.clone(),
            T0 + m,
            consent(pb::Channel::Email, pb::Purpose::Marketing, true),
        ));
        out.push(event(
            id(1),
            c.clone(),
            T0 + 10 * DAY + m,
            sent(pb::Channel::Email, pb::Purpose::Marketing),
        ));
        out.push(event(
            id(2),
            c.clone(),
            T0 + 35 * DAY + m,
            sent(pb::Channel::Call, pb::Purpose::Sales),
        ));
        if i % 2 == 0 {
            out.push(event(
                id(3),
                c.clone(),
                T0 + m,
                consent(pb::Channel::Call, pb::Purpose::Sales, true),
            ));
        }
        if i % 3 == 0 {
            let kind = Kind::PageViewed(pb::PageViewed {
                url: "/pricing".into(),
                category: "pricing".into(),
            });
            out.push(event(id(4), c.clone(), AT - HOUR - m, kind));
        }
    }
    out
}

/// The `n`-th event of writer `w`: a few hundred customers, several kinds, times spread
/// over 40 days.
fn hot_event(w: usize, n: usize) -> pb::InteractionEvent {
    let customer = format!("hot-{}", (w * 7919 + n * 31) % HOT);
    let at = T0 + ((n as i64 * 7_777_777 + w as i64 * 1_234_567) % (39 * DAY));
    let channels = [
        pb::Channel::Email,
        pb::Channel::Sms,
        pb::Channel::Call,
        pb::Channel::Push,
    ];
    let kind = match n % 4 {
        0 => consent(channels[n / 4 % 4], pb::Purpose::Marketing, !n.is_multiple_of(8)),
        1 => sent(channels[n / 4 % 4], pb::Purpose::Marketing),
        2 => Kind::OutreachEngaged(pb::OutreachEngaged {
            channel: pb::Channel::Email as i32,
            engagement: pb::Engagement::Clicked as i32,
        }),
        _ => Kind::PageViewed(pb::PageViewed {
            url: "/quote".into(),
            category: "quote".into(),
        }),
    };
    event(format!("hot-{w}-{n}"), customer, at, kind)
}

type Client = pb::contact_policy_client::ContactPolicyClient<tonic::transport::Channel>;

async fn record_all(client: &mut Client, events: &[pb::InteractionEvent]) -> Vec<pb::EventResult> {
    let mut results = Vec::new();
    for chunk in events.chunks(500) {
        let r = client
            .record_events(pb::RecordEventsRequest {
                events: chunk.to_vec(),
            })
            .await
            .expect("RecordEvents")
            .into_inner();
        results.extend(r.results);
    }
    results
}

type Answers = BTreeMap<String, (pb::CustomerView, Vec<pb::Decision>)>;

/// Every customer's view and decisions on a few proposals, as of `AT`, without what
/// differs between servers (decision ids, log positions). Asked by several tasks at once.
async fn answers(client: &Client, customers: &[String]) -> Answers {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in customers.chunks(customers.len().div_ceil(16).max(1)) {
        let mut client = client.clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for c in chunk {
                let answer = answer(&mut client, &c).await;
                out.push((c, answer));
            }
            out
        });
    }
    let mut out = BTreeMap::new();
    while let Some(part) = tasks.join_next().await {
        out.extend(part.expect("answer task"));
    }
    out
}

async fn answer(client: &mut Client, customer: &str) -> (pb::CustomerView, Vec<pb::Decision>) {
    let proposals = [
        (pb::Channel::Email, pb::Purpose::Marketing),
        (pb::Channel::Call, pb::Purpose::Sales),
        (pb::Channel::Sms, pb::Purpose::Marketing),
        (pb::Channel::SalesMeeting, pb::Purpose::Sales),
        (pb::Channel::Push, pb::Purpose::Marketing),
    ];
    let at = Some(timestamp_to_pb(tact_core::Timestamp(AT)));
    let mut view = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: customer.to_owned(),
            at,
        })
        .await
        .expect("GetCustomer")
        .into_inner();
    view.log_position = 0;
    let requests = proposals
        .iter()
        .map(|(ch, p)| pb::DecideRequest {
            customer_id: customer.to_owned(),
            channel: *ch as i32,
            purpose: *p as i32,
            campaign_id: "probe".into(),
            requested_by: "test".into(),
            at,
            ..Default::default()
        })
        .collect();
    let mut decisions = client
        .decide_batch(pb::DecideBatchRequest {
            requests,
            ..Default::default()
        })
        .await
        .expect("DecideBatch")
        .into_inner()
        .decisions;
    for d in &mut decisions {
        d.decision_id.clear();
        d.log_position = 0;
    }
    (view, decisions)
}

fn replayed_events(stdout: &str) -> u64 {
    stdout
        .strip_prefix("replayed ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected replay output: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let started = Instant::now();
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let stable_ids: Vec<String> = (0..STABLE).map(|i| format!("stable-{i}")).collect();
    let hot_ids: Vec<String> = (0..HOT).map(|i| format!("hot-{i}")).collect();

    // 1. Customers whose events are all acknowledged before the crash.
    let server = Server::start(cwd.path(), &data);
    let mut client = server.client().await;
    let stable = stable_events();
    let results = record_all(&mut client, &stable).await;
    assert!(
        results
            .iter()
            .all(|r| r.status == pb::RecordStatus::Recorded as i32),
        "{results:?}"
    );
    let stable_before = answers(&client, &stable_ids).await;

    // 2. Concurrent writers, each on its own connection, killed mid-stream.
    let acked: Arc<Mutex<Vec<(pb::InteractionEvent, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.client().await;
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (n..n + HOT_BATCH).map(|i| hot_event(w, i)).collect();
                n += HOT_BATCH;
                let Ok(response) = client
                    .record_events(pb::RecordEventsRequest {
                        events: batch.clone(),
                    })
                    .await
                else {
                    return true; // the server died under this call
                };
                let results = response.into_inner().results;
                assert_eq!(results.len(), batch.len());
                let mut acked = acked.lock().unwrap();
                for (e, r) in batch.into_iter().zip(results) {
                    assert_eq!(r.status, pb::RecordStatus::Recorded as i32, "{r:?}");
                    acked.push((e, r.log_position));
                }
            }
            false
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while acked.lock().unwrap().len() < 3000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    server.crash();
    let mut cut_off = 0;
    for w in writers {
        cut_off += usize::from(w.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 100,
        "only {} events acknowledged before the crash",
        acked.len()
    );
    assert!(cut_off > 0, "no writer was cut off by the crash");
    eprintln!("acknowledged {} events before the crash", acked.len());

    // 3. Restart on the same data directory: a full replay of what the crash left.
    let server = Server::start(cwd.path(), &data);
    let mut client = server.client().await;
    let stable_after = answers(&client, &stable_ids).await;
    assert!(
        stable_before == stable_after,
        "answers for fully acknowledged customers changed across the crash"
    );
    let all_ids: Vec<String> = stable_ids.iter().chain(&hot_ids).cloned().collect();
    let after_crash = answers(&client, &all_ids).await;

    // Every acknowledged event is in the log, at the position it was acknowledged with:
    // sent again, it is a duplicate of itself.
    let events: Vec<_> = acked.iter().map(|(e, _)| e.clone()).collect();
    let results = record_all(&mut client, &events).await;
    for ((e, position), r) in acked.iter().zip(&results) {
        assert_eq!(
            (r.status, r.log_position),
            (pb::RecordStatus::Duplicate as i32, *position),
            "acknowledged event {} was lost or moved: {r:?}",
            e.event_id
        );
    }
    drop(client);
    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");

    // 4. The log holds at least everything acknowledged.
    let out = run(tact(cwd.path())
        .args(["replay", "--data-dir"])
        .arg(&data)
        .arg("--policy")
        .arg(common::policy_path()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replayed = replayed_events(&text(&out.stdout));
    assert!(
        replayed >= (stable.len() + acked.len()) as u64,
        "replayed {replayed} events, acknowledged {}",
        stable.len() + acked.len()
    );

    // 5. A server started from the snapshot the clean shutdown wrote answers exactly like
    //    the one that replayed the crashed log.
    let server = Server::start(cwd.path(), &data);
    let client = server.client().await;
    let from_snapshot = answers(&client, &all_ids).await;
    for id in &all_ids {
        assert!(
            after_crash[id] == from_snapshot[id],
            "answers for {id} differ after a clean restart"
        );
    }
    drop(client);
    assert!(server.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

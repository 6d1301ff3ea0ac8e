//! Restarts: with a snapshot, with a stale snapshot, with a corrupt one, and a clean
//! in-memory replay of the same events all give the same answers.

use tact_core::{Channel, Engagement, EventKind, Purpose};
use tact_proto::pb;
use tact_tests::*;

fn history(customers: usize, from: usize) -> Vec<pb::InteractionEvent> {
    let now = wed_10am();
    let mut out = Vec::new();
    for c in 0..customers {
        let id = format!("cust-{c}");
        if from == 0 {
            out.extend(opted_in(&id, now.saturating_sub(days(200))));
        }
        for i in from..from + 6 {
            let at = now
                .saturating_sub(days(40))
                .saturating_add(days(i as i64 * 3 + (c % 3) as i64));
            let kind = match (i + c) % 6 {
                0 => EventKind::OutreachSent {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "autumn".into(),
                    decision_id: None,
                },
                1 => EventKind::PageViewed {
                    url: "/pricing".into(),
                    category: "pricing".into(),
                },
                2 => EventKind::OutreachEngaged {
                    channel: Channel::Email,
                    engagement: Engagement::Clicked,
                },
                3 => EventKind::InboundMessage {
                    channel: Channel::Email,
                    topic: "invoice".into(),
                },
                4 => EventKind::OutreachSent {
                    channel: Channel::Call,
                    purpose: Purpose::Sales,
                    campaign: "q4".into(),
                    decision_id: None,
                },
                _ => EventKind::Purchase {
                    order_id: format!("o{i}"),
                },
            };
            out.push(event(&format!("{id}-{i}"), &id, at, kind));
        }
    }
    out
}

async fn views(server: &TestServer, customers: usize) -> Vec<(pb::CustomerView, Vec<i32>)> {
    let mut client = server.client().await;
    let mut out = Vec::new();
    for c in 0..customers {
        let id = format!("cust-{c}");
        let mut view = client
            .get_customer(pb::GetCustomerRequest {
                customer_id: id.clone(),
                at: None,
            })
            .await
            .unwrap()
            .into_inner();
        view.log_position = 0; // positions differ between a sled log and a fresh replay
        let mut verdicts = Vec::new();
        for ch in [Channel::Email, Channel::Call, Channel::Sms, Channel::SalesMeeting] {
            for p in [Purpose::Marketing, Purpose::Sales, Purpose::Service] {
                verdicts.push(
                    client
                        .decide(request(&id, ch, p))
                        .await
                        .unwrap()
                        .into_inner()
                        .verdict,
                );
            }
        }
        out.push((view, verdicts));
    }
    out
}

#[tokio::test]
async fn restart_with_and_without_snapshot_gives_identical_answers() {
    const N: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let data = Some(dir.path().to_path_buf());
    let now = wed_10am();

    // First life: record, stop cleanly (writes a snapshot).
    let server = TestServer::start(data.clone(), now).await;
    record(&mut server.client().await, history(N, 0)).await;
    let before = views(&server, N).await;
    server.stop().await;

    // Second life: starts from the snapshot; more events; stop without a snapshot.
    let server = TestServer::start_with(data.clone(), now, |o| o.snapshot_on_shutdown = false).await;
    let stats = server.handle.replay_stats();
    assert!(stats.snapshot.is_some(), "{stats:?}");
    assert_eq!(stats.events, 0, "nothing after the snapshot to replay: {stats:?}");
    assert_eq!(views(&server, N).await, before, "restart from snapshot");
    record(&mut server.client().await, history(N, 6)).await;
    let after = views(&server, N).await;
    server.stop().await;

    // Third life: a stale snapshot plus the log's tail.
    let server = TestServer::start(data.clone(), now).await;
    let stats = server.handle.replay_stats();
    assert!(
        stats.snapshot.is_some() && stats.events == 6 * N as u64,
        "{stats:?}"
    );
    assert_eq!(views(&server, N).await, after, "stale snapshot + tail");
    server.stop().await;

    // Fourth life: a corrupt snapshot falls back to a full replay.
    {
        let storage = tact_server::open_storage(dir.path()).unwrap();
        storage.put_snapshot(b"not a snapshot").unwrap();
        storage.flush().unwrap();
    }
    let server = TestServer::start(data.clone(), now).await;
    let stats = server.handle.replay_stats();
    assert!(
        stats.snapshot.is_none() && stats.events == (8 + 12) * N as u64,
        "{stats:?}"
    );
    assert_eq!(views(&server, N).await, after, "corrupt snapshot -> full replay");
    server.stop().await;

    // And a clean replay of the same events in memory agrees.
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    record(&mut client, history(N, 0)).await;
    record(&mut client, history(N, 6)).await;
    assert_eq!(views(&server, N).await, after, "clean replay");
    server.stop().await;
}

//! Answers at a lower level of detail (`tact.v1.Detail`): a screening batch asks for
//! verdicts only, and must get the verdicts and `not_before` of the full answers.

use tact_core::{Channel, ContactLimit, Engagement, EventKind, NonResponse, Purpose, Span, Timestamp};
use tact_proto::convert::timestamp_to_pb;
use tact_proto::pb;
use tact_tests::*;
use tokio_stream::StreamExt;

/// A deterministic xorshift64* generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const CHANNELS: [Channel; 6] = [
    Channel::Email,
    Channel::Sms,
    Channel::Call,
    Channel::SalesMeeting,
    Channel::Push,
    Channel::DirectMail,
];

/// One customer's history over the 30 days before `now`: consents (mostly granted),
/// browsing, sends and engagement, unanswered outreach, inbound messages, contact
/// requests, purchases, the odd complaint, preference change or do-not-contact.
fn history(rng: &mut Rng, customer: &str, now: Timestamp) -> Vec<pb::InteractionEvent> {
    let n = 5 + rng.below(25);
    (0..n)
        .map(|i| {
            let at = now.saturating_sub(Span(1 + rng.below(30 * 24 * 60) as i64 * 60_000));
            let channel = rng.pick(&CHANNELS);
            let kind = match rng.below(100) {
                0..=24 => consent(
                    channel,
                    rng.pick(&[Purpose::Marketing, Purpose::Sales, Purpose::Service]),
                    rng.below(100) < 85,
                ),
                25..=39 => EventKind::PageViewed {
                    url: "/p".into(),
                    category: rng.pick(&["pricing", "blog", "compare", "quote"]).into(),
                },
                40..=42 => EventKind::ContentDownloaded {
                    asset: "paper.pdf".into(),
                },
                43..=62 => EventKind::OutreachSent {
                    channel,
                    purpose: rng.pick(&[Purpose::Marketing, Purpose::Sales, Purpose::Service]),
                    campaign: "c".into(),
                    decision_id: None,
                },
                63..=72 => EventKind::OutreachEngaged {
                    channel,
                    engagement: rng.pick(&[Engagement::Opened, Engagement::Clicked, Engagement::Replied]),
                },
                73..=79 => EventKind::OutreachUnanswered {
                    channel,
                    outcome: NonResponse::Ignored,
                },
                80..=83 => EventKind::InboundMessage {
                    channel: Channel::Email,
                    topic: "question".into(),
                },
                84..=86 => EventKind::ContactRequested {
                    channel: rng.pick(&[Channel::Call, Channel::SalesMeeting]),
                    topic: "demo".into(),
                },
                87..=90 => EventKind::Purchase {
                    order_id: format!("o{i}"),
                },
                91..=92 => EventKind::Complaint {
                    channel: Some(channel),
                    reason: "too many".into(),
                },
                93..=97 => EventKind::PreferencesChanged {
                    time_zone: Some(
                        rng.pick(&["Europe/London", "America/New_York", "Asia/Tokyo"])
                            .into(),
                    ),
                    accepted_channels: None,
                    max_contacts: (rng.below(2) == 0).then_some(ContactLimit {
                        max: 3,
                        window: days(14),
                    }),
                },
                _ => EventKind::DoNotContact {
                    reason: "asked".into(),
                    until: Some(at.saturating_add(days(1 + rng.below(20) as i64))),
                },
            };
            event(&format!("{customer}-{i}"), customer, at, kind)
        })
        .collect()
}

/// A random population on a fresh server, and one proposal per customer (some for
/// later instants, so that quiet hours and cool-downs defer).
async fn population(seed: u64, customers: usize) -> (TestServer, Vec<pb::DecideRequest>) {
    let now = wed_10am();
    let server = TestServer::start(None, now).await;
    let mut client = server.client().await;
    let mut rng = Rng(seed | 1);
    let mut events = Vec::new();
    let mut requests = Vec::new();
    for c in 0..customers {
        let id = format!("p{c}");
        events.extend(history(&mut rng, &id, now));
        let mut req = request(
            &id,
            rng.pick(&CHANNELS),
            rng.pick(&[
                Purpose::Marketing,
                Purpose::Sales,
                Purpose::Service,
                Purpose::Transactional,
            ]),
        );
        if rng.below(3) == 0 {
            req.at = Some(timestamp_to_pb(
                now.saturating_add(Span(rng.below(3 * 24 * 60) as i64 * 60_000)),
            ));
        }
        requests.push(req);
    }
    for chunk in events.chunks(5_000) {
        record(&mut client, chunk.to_vec()).await;
    }
    (server, requests)
}

async fn batch(client: &mut Client, requests: &[pb::DecideRequest], detail: pb::Detail) -> Vec<pb::Decision> {
    client
        .decide_batch(pb::DecideBatchRequest {
            requests: requests.to_vec(),
            detail: detail as i32,
            audience: None,
        })
        .await
        .expect("decide_batch")
        .into_inner()
        .decisions
}

#[tokio::test]
async fn a_batch_answered_with_verdicts_only_agrees_with_the_full_answers() {
    for seed in [7, 1234, 99_991] {
        let (server, requests) = population(seed, 600).await;
        let mut client = server.client().await;
        let full = batch(&mut client, &requests, pb::Detail::Full).await;
        let verdicts = batch(&mut client, &requests, pb::Detail::Verdict).await;
        let rules_only = batch(&mut client, &requests, pb::Detail::Rules).await;
        assert_eq!(full.len(), requests.len());
        assert_eq!(verdicts.len(), requests.len());
        assert_eq!(rules_only.len(), requests.len());
        let mut seen = std::collections::HashMap::new();
        for (i, ((f, v), r)) in full.iter().zip(&verdicts).zip(&rules_only).enumerate() {
            assert!(f.error.is_none() && v.error.is_none(), "item {i}: {f:?} {v:?}");
            assert_eq!(v.customer_id, requests[i].customer_id);
            assert_eq!(
                (v.verdict, v.not_before),
                (f.verdict, f.not_before),
                "item {i}: full {f:?}"
            );
            assert_eq!(
                (r.verdict, r.not_before),
                (f.verdict, f.not_before),
                "item {i}: full {f:?}"
            );
            assert!(
                v.reasons.is_empty() && v.alternatives.is_empty(),
                "item {i}: {v:?}"
            );
            assert!(!v.decision_id.is_empty() && v.decision_id != f.decision_id);
            assert_eq!(v.policy_version, f.policy_version);
            // Rule ids and effects as in the full answer, without the sentences.
            let ids = |d: &pb::Decision| -> Vec<(String, i32)> {
                d.reasons.iter().map(|x| (x.rule_id.clone(), x.effect)).collect()
            };
            assert_eq!(ids(r), ids(f), "item {i}");
            assert!(r.reasons.iter().all(|x| x.message.is_empty()) && r.alternatives.is_empty());
            assert!(f.reasons.iter().all(|x| !x.message.is_empty()), "item {i}: {f:?}");
            *seen.entry(verdict(f)).or_insert(0) += 1;
        }
        // The population must exercise every verdict, or the comparison proves little.
        for v in [pb::Verdict::Allow, pb::Verdict::Deny, pb::Verdict::Defer] {
            assert!(seen.get(&v).copied().unwrap_or(0) >= 10, "seed {seed}: {seen:?}");
        }

        // A request's own detail takes precedence over the batch's; DecideStream and
        // Decide honour it too.
        let mut mixed: Vec<pb::DecideRequest> = requests[..50].to_vec();
        for r in mixed.iter_mut().step_by(2) {
            r.detail = pb::Detail::Verdict as i32;
        }
        let answers = batch(&mut client, &mixed, pb::Detail::Full).await;
        for (i, (a, f)) in answers.iter().zip(&full).enumerate() {
            assert_eq!((a.verdict, a.not_before), (f.verdict, f.not_before));
            if i % 2 == 0 {
                assert!(
                    a.reasons.is_empty() && a.alternatives.is_empty(),
                    "item {i}: {a:?}"
                );
            } else {
                assert_eq!(a.reasons.len(), f.reasons.len(), "item {i}");
            }
        }
        let stream = tokio_stream::iter(mixed.clone());
        let streamed: Vec<pb::Decision> = client
            .decide_stream(stream)
            .await
            .expect("decide_stream")
            .into_inner()
            .map(|d| d.expect("an answer"))
            .collect()
            .await;
        assert_eq!(streamed.len(), mixed.len());
        for (i, (s, a)) in streamed.iter().zip(&answers).enumerate() {
            assert_eq!((s.verdict, s.not_before), (a.verdict, a.not_before));
            assert_eq!(s.reasons.is_empty(), a.reasons.is_empty(), "item {i}");
        }
        let one = client.decide(mixed[0].clone()).await.unwrap().into_inner();
        assert_eq!(
            (one.verdict, one.not_before),
            (full[0].verdict, full[0].not_before)
        );
        assert!(one.reasons.is_empty());
        server.stop().await;
    }
}

/// An audience (one proposal, many customers) gets, for each customer, the verdict and
/// not_before the same proposal gets as a request of its own, with bad ids named in
/// place and every other customer answered.
#[tokio::test]
async fn an_audience_is_answered_like_its_requests_one_by_one() {
    for seed in [11, 4242] {
        let (server, requests) = population(seed, 400).await;
        let mut client = server.client().await;
        let mut ids: Vec<String> = requests.iter().map(|r| r.customer_id.clone()).collect();
        // Bad ids in the middle (and a customer tact has never heard of, which is
        // valid), and a repeat.
        ids.insert(3, String::new());
        ids.insert(100, "has space".to_owned());
        ids.insert(200, "x".repeat(300));
        ids.push("never-seen".to_owned());
        ids.push(ids[10].clone());
        let bad = [3usize, 100, 200];
        let mut seen = std::collections::HashMap::new();
        for (channel, purpose) in [
            (Channel::Email, Purpose::Marketing),
            (Channel::Call, Purpose::Sales),
            (Channel::Sms, Purpose::Service),
        ] {
            for later in [None, Some(hours(13)), Some(days(3))] {
                let at = later.map(|l| timestamp_to_pb(wed_10am().saturating_add(l)));
                let screening = client
                    .decide_batch(pb::DecideBatchRequest {
                        audience: Some(pb::Audience {
                            channel: pb::Channel::from(channel) as i32,
                            purpose: pb::Purpose::from(purpose) as i32,
                            campaign_id: "spring".to_owned(),
                            requested_by: "screening-test".to_owned(),
                            at,
                            customer_ids: ids.clone(),
                        }),
                        ..Default::default()
                    })
                    .await
                    .expect("an audience")
                    .into_inner()
                    .screening
                    .expect("a screening");
                assert_eq!(screening.verdicts.len(), ids.len());
                assert_eq!(screening.not_before_unix_ms.len(), ids.len());
                let named: Vec<(u64, String)> = screening
                    .errors
                    .iter()
                    .map(|e| (e.index, e.field.clone()))
                    .collect();
                let expected: Vec<(u64, String)> = bad
                    .iter()
                    .map(|&i| (i as u64, format!("audience.customer_ids[{i}]")))
                    .collect();
                assert_eq!(named, expected);
                let decided_at = screening.decided_at.expect("decided_at");
                // Decided at the instant asked for (the server's clock stands still at
                // wed_10am).
                assert_eq!(decided_at, at.unwrap_or_else(|| timestamp_to_pb(wed_10am())));
                assert_eq!(screening.decision_id_prefix.len(), 25);
                // The same proposals one by one, at the instant the audience was decided.
                let one_by_one: Vec<pb::DecideRequest> = ids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !bad.contains(i))
                    .map(|(_, id)| {
                        let mut r = request(id, channel, purpose);
                        r.campaign_id = "spring".to_owned();
                        r.at = Some(decided_at);
                        r
                    })
                    .collect();
                let full = batch(&mut client, &one_by_one, pb::Detail::Full).await;
                let mut full = full.iter();
                for (i, id) in ids.iter().enumerate() {
                    let v = screening.verdicts[i];
                    let nb = screening.not_before_unix_ms[i];
                    if bad.contains(&i) {
                        assert_eq!((v, nb), (pb::Verdict::Unspecified as i32, 0), "item {i}");
                        continue;
                    }
                    let f = full.next().expect("one answer per good id");
                    assert_eq!(f.customer_id, *id);
                    let expected_nb = f
                        .not_before
                        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                    assert_eq!((v, nb), (f.verdict, expected_nb), "item {i} ({id}): full {f:?}");
                    *seen.entry(verdict(f)).or_insert(0) += 1;
                }
            }
        }
        for v in [pb::Verdict::Allow, pb::Verdict::Deny, pb::Verdict::Defer] {
            assert!(seen.get(&v).copied().unwrap_or(0) >= 10, "seed {seed}: {seen:?}");
        }
        server.stop().await;
    }
}

/// What an audience must not be: mixed with requests, asked at a detail it does not
/// give, over the batch limit, or without its proposal's channel.
#[tokio::test]
async fn a_malformed_audience_is_named() {
    let server = TestServer::start(None, wed_10am()).await;
    let mut client = server.client().await;
    let audience = |ids: Vec<String>| pb::Audience {
        channel: pb::Channel::Email as i32,
        purpose: pb::Purpose::Marketing as i32,
        customer_ids: ids,
        ..Default::default()
    };
    let cases = [
        (
            pb::DecideBatchRequest {
                requests: vec![request("c1", Channel::Email, Purpose::Marketing)],
                audience: Some(audience(vec!["c2".into()])),
                ..Default::default()
            },
            "audience",
        ),
        (
            pb::DecideBatchRequest {
                detail: pb::Detail::Rules as i32,
                audience: Some(audience(vec!["c2".into()])),
                ..Default::default()
            },
            "detail",
        ),
        (
            pb::DecideBatchRequest {
                audience: Some(audience(vec!["c".into(); 10_001])),
                ..Default::default()
            },
            "audience.customer_ids",
        ),
        (
            pb::DecideBatchRequest {
                audience: Some(pb::Audience {
                    channel: 0,
                    ..audience(vec!["c2".into()])
                }),
                ..Default::default()
            },
            "audience.channel",
        ),
        (
            pb::DecideBatchRequest {
                audience: Some(pb::Audience {
                    purpose: 77,
                    ..audience(vec!["c2".into()])
                }),
                ..Default::default()
            },
            "audience.purpose",
        ),
        (
            pb::DecideBatchRequest {
                audience: Some(pb::Audience {
                    campaign_id: "c".repeat(100_000),
                    ..audience(vec!["c2".into()])
                }),
                ..Default::default()
            },
            "audience.campaign_id",
        ),
    ];
    for (req, field) in cases {
        let e = client.decide_batch(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // An empty audience is an empty answer, not an error.
    let empty = client
        .decide_batch(pb::DecideBatchRequest {
            audience: Some(audience(Vec::new())),
            ..Default::default()
        })
        .await
        .expect("an empty audience")
        .into_inner()
        .screening
        .expect("a screening");
    assert!(empty.verdicts.is_empty() && empty.errors.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_detail_is_named() {
    let server = TestServer::start(None, wed_10am()).await;
    let mut client = server.client().await;
    let e = client
        .decide_batch(pb::DecideBatchRequest {
            requests: vec![request("c1", Channel::Email, Purpose::Marketing)],
            detail: 42,
            audience: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("detail"), "{}", e.message());
    let mut bad = request("c1", Channel::Email, Purpose::Marketing);
    bad.detail = 42;
    let answers = batch(
        &mut client,
        &[request("c1", Channel::Email, Purpose::Marketing), bad.clone()],
        pb::Detail::Verdict,
    )
    .await;
    assert!(answers[0].error.is_none());
    let err = answers[1].error.as_ref().expect("an item error");
    assert_eq!((err.index, err.field.as_str()), (1, "detail"));
    let e = client.decide(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("detail"), "{}", e.message());
    server.stop().await;
}

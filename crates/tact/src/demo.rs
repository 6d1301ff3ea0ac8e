//! `tact demo`: a throw-away server and six short stories, each ending in an outreach
//! that someone proposes and tact's answer to it.

use std::process::ExitCode;

use anyhow::{Context, bail};
use tact_core::{Channel, DAY, HOUR, MINUTE, Policy, Purpose, SECOND, Span, Timestamp};
use tact_proto::convert::timestamp_to_pb;
use tact_proto::pb;
use tact_proto::pb::interaction_event::Kind;
use tact_server::ServerOptions;

use crate::client::{self, Client};
use crate::config::Settings;
use crate::render;

const YEAR: Span = Span(365 * DAY.0);

struct Demo {
    client: Client,
    now: Timestamp,
    next_id: u64,
    unexpected: Vec<String>,
}

fn ch(c: Channel) -> i32 {
    pb::Channel::from(c) as i32
}

fn pu(p: Purpose) -> i32 {
    pb::Purpose::from(p) as i32
}

fn consent(channel: Channel, purpose: Purpose, granted: bool) -> Kind {
    Kind::ConsentChanged(pb::ConsentChanged {
        channel: ch(channel),
        purpose: pu(purpose),
        granted,
        expires_at: None,
        proof: if granted {
            "signup-form".into()
        } else {
            "unsubscribe-link".into()
        },
    })
}

fn sent(channel: Channel, purpose: Purpose, campaign: &str) -> Kind {
    Kind::OutreachSent(pb::OutreachSent {
        channel: ch(channel),
        purpose: pu(purpose),
        campaign: campaign.to_owned(),
        decision_id: None,
    })
}

/// The UTC offset (whole hours, -12..=14) at which it is 23:xx at `now`, and its IANA zone.
fn zone_at_23(now: Timestamp) -> (i64, String) {
    let utc_hour = now.0.div_euclid(HOUR.0).rem_euclid(24);
    let mut offset = (23 - utc_hour).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    // POSIX-style names: Etc/GMT-3 is UTC+3.
    let zone = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    (offset, zone)
}

impl Demo {
    fn ago(&self, span: Span) -> Timestamp {
        self.now.saturating_sub(span)
    }

    async fn record(&mut self, customer: &str, events: Vec<(Timestamp, Kind)>) -> anyhow::Result<()> {
        let events: Vec<pb::InteractionEvent> = events
            .into_iter()
            .map(|(at, kind)| {
                self.next_id += 1;
                pb::InteractionEvent {
                    event_id: format!("demo-{customer}-{}", self.next_id),
                    customer_id: customer.to_owned(),
                    occurred_at: Some(timestamp_to_pb(at)),
                    source: "demo".to_owned(),
                    kind: Some(kind),
                }
            })
            .collect();
        let results = self
            .client
            .record_events(pb::RecordEventsRequest { events })
            .await
            .map_err(|s| anyhow::anyhow!("RecordEvents failed: {}", s.message()))?
            .into_inner()
            .results;
        for r in results {
            if r.status != pb::RecordStatus::Recorded as i32 {
                bail!("demo event {} was not recorded: {}", r.event_id, r.reason);
            }
        }
        Ok(())
    }

    /// Asks tact about one outreach and prints the answer.
    async fn ask(
        &mut self,
        customer: &str,
        channel: Channel,
        purpose: Purpose,
        proposed: &str,
        authorize: bool,
        expect: &str,
    ) -> anyhow::Result<pb::Decision> {
        let req = pb::DecideRequest {
            customer_id: customer.to_owned(),
            channel: ch(channel),
            purpose: pu(purpose),
            campaign_id: "demo".to_owned(),
            requested_by: "tact-demo".to_owned(),
            at: None,
            ..Default::default()
        };
        let d = if authorize {
            self.client.authorize(req).await.context("Authorize")?
        } else {
            self.client.decide(req).await.context("Decide")?
        }
        .into_inner();
        println!(
            "   proposed: {proposed} ({channel}, {purpose}) -> {}",
            if authorize { "Authorize" } else { "Decide" }
        );
        print!("{}", render::decision(&d, client::now(), "   "));
        let got = render::verdict_name(d.verdict);
        if got != expect {
            println!("   !! the story expects {expect}");
            self.unexpected
                .push(format!("{customer}: {proposed}: {got}, expected {expect}"));
        }
        Ok(d)
    }
}

fn story(n: u32, title: &str, lines: &[&str]) {
    println!();
    println!("{n}. {title}");
    for l in lines {
        println!("   {l}");
    }
}

/// Runs the demo. It uses the shipped default policy (the stories are written for it),
/// so it does not depend on local settings.
pub async fn run(_settings: &Settings) -> anyhow::Result<ExitCode> {
    let dir = tempfile::TempDir::with_prefix("tact-demo-").context("cannot create a temporary directory")?;
    let policy = Policy::default_policy();
    let version = policy.version().clone();
    let opts = ServerOptions::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(dir.path().join("data")),
        policy,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tact_server::run(opts, async move {
        let _ = stopped.await;
    })
    .await
    .context("cannot start the demo server")?;
    let url = format!("http://{}", handle.local_addr());
    println!(
        "tact demo: a tact server on {} (data in {}, policy {version})",
        handle.local_addr(),
        dir.path().display()
    );
    println!("every story's events are timed relative to now, and tact decides as of now.");

    let played = async {
        let client = client::connect(&url).await?;
        let mut demo = Demo {
            client,
            now: client::now(),
            next_id: 0,
            unexpected: Vec::new(),
        };
        play(&mut demo).await?;
        anyhow::Ok(demo.unexpected)
    }
    .await;

    let _ = stop.send(());
    let stopped = handle
        .wait()
        .await
        .context("the demo server did not shut down cleanly");
    let unexpected = played?;
    stopped?;
    println!();
    if unexpected.is_empty() {
        println!("demo finished: every story got the answer it expects; the server shut down cleanly.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo finished with unexpected answers:");
        for u in &unexpected {
            println!("  - {u}");
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn play(d: &mut Demo) -> anyhow::Result<()> {
    use Channel::{Call, Email, SalesMeeting};
    use Purpose::{Marketing, Sales, Transactional};

    // 1. The price shopper: research, then a call too soon.
    story(
        1,
        "The price shopper",
        &[
            "Ann agreed to sales calls and emails a year ago.",
            "5 minutes ago she compared car-insurance prices on our site.",
        ],
    );
    let year_ago = d.ago(YEAR);
    d.record(
        "ann",
        vec![
            (year_ago, consent(Call, Sales, true)),
            (year_ago, consent(Email, Sales, true)),
            (
                d.ago(Span(5 * MINUTE.0)),
                Kind::PageViewed(pb::PageViewed {
                    url: "/car-insurance/compare".into(),
                    category: "compare".into(),
                }),
            ),
        ],
    )
    .await?;
    d.ask("ann", Call, Sales, "a sales rep calls Ann now", false, "DEFER")
        .await?;

    // 2. The white paper: a download does not earn a meeting.
    story(
        2,
        "The white paper",
        &[
            "Ben agreed to sales emails and meetings a year ago.",
            "Yesterday evening (14 h ago) he downloaded a white paper.",
            "This morning sales wants to book him for a demo.",
        ],
    );
    d.record(
        "ben",
        vec![
            (year_ago, consent(Email, Sales, true)),
            (year_ago, consent(SalesMeeting, Sales, true)),
            (
                d.ago(Span(14 * HOUR.0)),
                Kind::ContentDownloaded(pb::ContentDownloaded {
                    asset: "white-paper-fleet-insurance".into(),
                }),
            ),
        ],
    )
    .await?;
    d.ask(
        "ben",
        SalesMeeting,
        Sales,
        "a demo meeting with Ben",
        false,
        "DENY",
    )
    .await?;

    // 3. The same customer asks for a demo himself.
    story(
        3,
        "Ben asks for a demo",
        &[
            "A moment ago Ben filled in the \"book a demo\" form.",
            "Sales asks tact to authorize the meeting.",
        ],
    );
    d.now = client::now();
    d.record(
        "ben",
        vec![(
            d.ago(Span(2 * SECOND.0)),
            Kind::ContactRequested(pb::ContactRequested {
                channel: ch(SalesMeeting),
                topic: "product demo".into(),
            }),
        )],
    )
    .await?;
    let decision = d
        .ask(
            "ben",
            SalesMeeting,
            Sales,
            "a demo meeting with Ben",
            true,
            "ALLOW",
        )
        .await?;
    if render::verdict_name(decision.verdict) == "ALLOW" {
        let view = d
            .client
            .get_customer(pb::GetCustomerRequest {
                customer_id: "ben".into(),
                at: None,
            })
            .await
            .context("GetCustomer")?
            .into_inner();
        if let Some(t) = view.timeline.iter().find(|t| t.kind == "outreach_authorized") {
            println!(
                "   recorded: Ben's timeline now shows \"{}\" (decision {}); it counts against caps from now on.",
                t.summary, decision.decision_id
            );
        }
    }

    // 4. The unsubscribe: marketing stops, order confirmations do not.
    story(
        4,
        "The unsubscribe",
        &[
            "Cara agreed to marketing emails a year ago; a minute ago she clicked \"unsubscribe\".",
            "Marketing wants to send her the newsletter; the shop wants to confirm her order.",
        ],
    );
    d.now = client::now();
    d.record(
        "cara",
        vec![
            (year_ago, consent(Email, Marketing, true)),
            (d.ago(MINUTE), consent(Email, Marketing, false)),
            (
                d.ago(Span(30 * SECOND.0)),
                Kind::Purchase(pb::Purchase {
                    order_id: "order-1042".into(),
                }),
            ),
        ],
    )
    .await?;
    d.ask(
        "cara",
        Email,
        Marketing,
        "the weekly newsletter to Cara",
        false,
        "DENY",
    )
    .await?;
    d.ask(
        "cara",
        Email,
        Transactional,
        "an order confirmation to Cara",
        false,
        "ALLOW",
    )
    .await?;

    // 5. The ninth touch in 30 days.
    story(
        5,
        "The ninth touch",
        &[
            "Dan agreed to marketing emails a year ago and got 8 of them in the last 30 days",
            "(never more than 2 a week; he opened the latest one yesterday).",
            "Marketing wants to send a 9th today.",
        ],
    );
    let mut events = vec![(year_ago, consent(Email, Marketing, true))];
    for (i, days) in [29, 26, 22, 18, 14, 10, 6, 2].into_iter().enumerate() {
        events.push((
            d.ago(Span(days * DAY.0)),
            sent(Email, Marketing, &format!("promo-{}", i + 1)),
        ));
    }
    events.push((
        d.ago(DAY),
        Kind::OutreachEngaged(pb::OutreachEngaged {
            channel: ch(Email),
            engagement: pb::Engagement::Opened as i32,
        }),
    ));
    d.record("dan", events).await?;
    d.ask("dan", Email, Marketing, "promo #9 to Dan", false, "DEFER")
        .await?;

    // 6. Late evening where the customer lives.
    d.now = client::now();
    let (offset, zone) = zone_at_23(d.now);
    let local = d
        .now
        .saturating_add(Span(offset * HOUR.0))
        .to_chrono()
        .format("%H:%M")
        .to_string();
    let zone_line = format!("Eve lives in time zone {zone} (UTC{offset:+}), where it is {local} now.");
    story(
        6,
        "Too late to call",
        &[
            "Eve agreed to sales calls and emails a year ago.",
            zone_line.as_str(),
            "A rep wants to call her now.",
        ],
    );
    d.record(
        "eve",
        vec![
            (year_ago, consent(Call, Sales, true)),
            (year_ago, consent(Email, Sales, true)),
            (
                d.ago(Span(30 * DAY.0)),
                Kind::PreferencesChanged(pb::PreferencesChanged {
                    time_zone: Some(zone),
                    accepted_channels: None,
                    max_contacts: None,
                }),
            ),
        ],
    )
    .await?;
    d.ask("eve", Call, Sales, "a sales call to Eve now", false, "DEFER")
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_at_23_is_23_there() {
        for h in 0..24 {
            let now = Timestamp(1_767_225_600_000 + h * HOUR.0 + 17 * MINUTE.0);
            let (offset, zone) = zone_at_23(now);
            assert!((-12..=14).contains(&offset), "{offset}");
            let event = tact_core::Event {
                event_id: "e".into(),
                customer_id: "c".into(),
                occurred_at: now,
                source: "test".into(),
                kind: tact_core::EventKind::PreferencesChanged {
                    time_zone: Some(zone.clone()),
                    accepted_channels: None,
                    max_contacts: None,
                },
            };
            assert_eq!(event.validate(), Ok(()), "{zone}");
            let local_hour = (now.0.div_euclid(HOUR.0) + offset).rem_euclid(24);
            assert_eq!(local_hour, 23);
        }
    }
}

//! Synthetic customers for `tact bench`: each a realistic history over the 90 days
//! before now, from a seed, so that every run (and a re-run: the event ids repeat,
//! the server answers duplicates) works on the same population.

use tact_core::{
    Channel, ContactLimit, DAY, Engagement, Event, EventKind, HOUR, NonResponse, Purpose, Span, Timestamp,
};

/// A deterministic xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The id of synthetic customer `i`.
pub fn customer_id(i: u64) -> String {
    format!("bench-{i:08}")
}

/// Channels events happen on, weighted as a B2C brand sees them.
const CHANNELS: [Channel; 6] = [
    Channel::Email,
    Channel::Email,
    Channel::Email,
    Channel::Sms,
    Channel::Call,
    Channel::SalesMeeting,
];

/// What is proposed, weighted like a brand's outreach: mostly marketing email, then
/// SMS and push, some sales calls and meetings, service and transactional messages.
pub const PROPOSALS: [(Channel, Purpose); 10] = [
    (Channel::Email, Purpose::Marketing),
    (Channel::Email, Purpose::Marketing),
    (Channel::Email, Purpose::Marketing),
    (Channel::Sms, Purpose::Marketing),
    (Channel::Push, Purpose::Marketing),
    (Channel::Call, Purpose::Sales),
    (Channel::SalesMeeting, Purpose::Sales),
    (Channel::Email, Purpose::Sales),
    (Channel::Email, Purpose::Service),
    (Channel::Sms, Purpose::Transactional),
];

/// Customer `i`'s history: `min..=max` events over the 90 days before `now`, in time
/// order: consents, browsing, sends and engagement, the odd purchase, inbound message,
/// complaint, preference change or do-not-contact.
pub fn history(i: u64, min: u64, max: u64, now: Timestamp) -> Vec<Event> {
    let mut rng = Rng::new(i ^ 0x5eed);
    let n = min + rng.below(max.saturating_sub(min) + 1);
    let start = now.saturating_sub(Span(90 * DAY.0));
    let customer_id = customer_id(i);
    let mut events = Vec::with_capacity(n as usize);
    for j in 0..n {
        // At least an hour before now, so that no event lies ahead of the server's clock.
        let at = start.saturating_add(Span(rng.below((90 * DAY.0 - HOUR.0) as u64) as i64));
        let channel = rng.pick(&CHANNELS);
        let kind = match rng.below(100) {
            0..=11 => EventKind::ConsentChanged {
                channel,
                purpose: rng.pick(&[Purpose::Marketing, Purpose::Marketing, Purpose::Sales]),
                granted: rng.chance(88),
                expires_at: None,
                proof: "web form".into(),
            },
            12..=31 => EventKind::PageViewed {
                url: "/p".into(),
                category: rng
                    .pick(&["pricing", "blog", "compare", "product", "support"])
                    .into(),
            },
            32..=35 => EventKind::ContentDownloaded {
                asset: "white-paper.pdf".into(),
            },
            36..=37 => EventKind::QuoteRequested {
                product: "car".into(),
            },
            38..=62 => EventKind::OutreachSent {
                channel,
                purpose: rng.pick(&[
                    Purpose::Marketing,
                    Purpose::Marketing,
                    Purpose::Sales,
                    Purpose::Service,
                ]),
                campaign: "autumn".into(),
                decision_id: None,
            },
            63..=76 => EventKind::OutreachEngaged {
                channel,
                engagement: rng.pick(&[Engagement::Opened, Engagement::Clicked, Engagement::Replied]),
            },
            77..=82 => EventKind::OutreachUnanswered {
                channel,
                outcome: NonResponse::Ignored,
            },
            83..=86 => EventKind::InboundMessage {
                channel: Channel::Email,
                topic: "question".into(),
            },
            87..=89 => EventKind::ContactRequested {
                channel: rng.pick(&[Channel::Call, Channel::SalesMeeting]),
                topic: "demo".into(),
            },
            90..=94 => EventKind::Purchase {
                order_id: format!("o{i}-{j}"),
            },
            95 => EventKind::Complaint {
                channel: Some(channel),
                reason: "too many calls".into(),
            },
            96..=98 => EventKind::PreferencesChanged {
                time_zone: Some(
                    rng.pick(&["Europe/London", "America/New_York", "Europe/Berlin"])
                        .into(),
                ),
                accepted_channels: None,
                max_contacts: rng.chance(30).then_some(ContactLimit {
                    max: 4,
                    window: Span(30 * DAY.0),
                }),
            },
            _ => EventKind::DoNotContact {
                reason: "asked".into(),
                until: Some(at.saturating_add(Span((1 + rng.below(60) as i64) * DAY.0))),
            },
        };
        events.push(Event {
            event_id: format!("{customer_id}-{j}"),
            customer_id: customer_id.clone(),
            occurred_at: at,
            source: "tact-bench".into(),
            kind,
        });
    }
    events.sort_by_key(|e| e.occurred_at);
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_deterministic_bounded_and_in_the_past() {
        let now = Timestamp::parse_rfc3339("2026-11-18T10:00:00Z").unwrap();
        for i in 0..200 {
            let h = history(i, 10, 30, now);
            assert!((10..=30).contains(&h.len()), "{}", h.len());
            assert_eq!(h, history(i, 10, 30, now));
            assert!(
                h.iter()
                    .all(|e| e.occurred_at < now && e.customer_id == customer_id(i))
            );
            assert!(h.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at));
        }
    }
}

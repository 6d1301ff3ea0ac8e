//! Synthetic but realistic customer populations for the benches.
//!
//! Histories are generated from a seed with a small xorshift generator, so every
//! run measures the same population.

use tact_core::{
    Channel, ContactLimit, DAY, Engagement, Event, EventKind, HOUR, MINUTE, Purpose, Span, Timestamp,
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

/// The instant the benches decide at.
pub fn bench_now() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-18T10:00:00Z").expect("valid instant")
}

/// The population size: `TACT_BENCH_CUSTOMERS`, default 1,000,000.
pub fn population_size() -> u64 {
    std::env::var("TACT_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The channels and purposes the decide benches propose (every pair equally often).
pub const PROPOSED_CHANNELS: [Channel; 5] = [
    Channel::Email,
    Channel::Sms,
    Channel::Call,
    Channel::SalesMeeting,
    Channel::Push,
];
pub const PROPOSED_PURPOSES: [Purpose; 4] = [
    Purpose::Marketing,
    Purpose::Sales,
    Purpose::Service,
    Purpose::Transactional,
];

const CHANNELS: [Channel; 5] = [
    Channel::Email,
    Channel::Email,
    Channel::Sms,
    Channel::Call,
    Channel::SalesMeeting,
];
const PURPOSES: [Purpose; 4] = [
    Purpose::Marketing,
    Purpose::Marketing,
    Purpose::Sales,
    Purpose::Service,
];

/// One customer's history over the 90 days before `bench_now()`, in time order:
/// consents, browsing, downloads, marketing sends and engagement, the odd purchase,
/// message, complaint or preference change. `min..max` events.
pub fn customer_history(customer: u64, min: u64, max: u64) -> Vec<Event> {
    let mut rng = Rng::new(customer ^ 0x5eed);
    let n = min + rng.below(max - min + 1);
    let now = bench_now();
    let start = now.saturating_sub(Span(90 * DAY.0));
    let customer_id = format!("cust-{customer:08}");
    let mut events = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = start.saturating_add(Span(rng.below(90 * DAY.0 as u64) as i64));
        let channel = rng.pick(&CHANNELS);
        let kind = match rng.below(100) {
            0..=7 => EventKind::ConsentChanged {
                channel,
                purpose: rng.pick(&[Purpose::Marketing, Purpose::Sales]),
                granted: rng.chance(85),
                expires_at: None,
                proof: "web form".into(),
            },
            8..=29 => EventKind::PageViewed {
                url: "/p".into(),
                category: rng
                    .pick(&["pricing", "blog", "compare", "product", "support"])
                    .into(),
            },
            30..=34 => EventKind::ContentDownloaded {
                asset: "white-paper.pdf".into(),
            },
            35..=37 => EventKind::QuoteRequested {
                product: "car".into(),
            },
            38..=62 => EventKind::OutreachSent {
                channel,
                purpose: rng.pick(&PURPOSES),
                campaign: "autumn".into(),
                decision_id: None,
            },
            63..=77 => EventKind::OutreachEngaged {
                channel,
                engagement: rng.pick(&[Engagement::Opened, Engagement::Clicked, Engagement::Replied]),
            },
            78..=83 => EventKind::OutreachUnanswered {
                channel,
                outcome: tact_core::NonResponse::Ignored,
            },
            84..=87 => EventKind::InboundMessage {
                channel: Channel::Email,
                topic: "question".into(),
            },
            88..=90 => EventKind::ContactRequested {
                channel: rng.pick(&[Channel::Call, Channel::SalesMeeting]),
                topic: "demo".into(),
            },
            91..=94 => EventKind::Purchase {
                order_id: format!("o{i}"),
            },
            95 => EventKind::Complaint {
                channel: Some(channel),
                reason: "too many calls".into(),
            },
            96..=97 => EventKind::PreferencesChanged {
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
                until: Some(at.saturating_add(Span(rng.below(60) as i64 * DAY.0))),
            },
        };
        events.push(Event {
            event_id: format!("{customer_id}-{i}"),
            customer_id: customer_id.clone(),
            occurred_at: at,
            source: "bench".into(),
            kind,
        });
    }
    events.sort_by_key(|e| e.occurred_at);
    // Keep instants distinct from `now` by at least a minute, as real traffic would.
    for e in &mut events {
        if e.occurred_at > now.saturating_sub(MINUTE) {
            e.occurred_at = now.saturating_sub(HOUR);
        }
    }
    events
}

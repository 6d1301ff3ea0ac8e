#![allow(dead_code)]

use std::sync::Arc;

use tact_core::{Channel, ContactLimit, DAY, Engagement, Event, EventKind, Purpose, Span, Timestamp};
use tact_log::{FjallStorage, MemoryStorage, SledStorage, Storage};
use tempfile::TempDir;

/// A backend under test; the temp dir (sled, fjall) lives as long as it.
pub struct Backend {
    pub name: &'static str,
    pub storage: Arc<dyn Storage>,
    pub dir: Option<TempDir>,
}

/// Each backend, fresh.
pub fn backends() -> Vec<Backend> {
    vec![memory(), sled(), fjall()]
}

pub fn memory() -> Backend {
    Backend {
        name: "memory",
        storage: Arc::new(MemoryStorage::new()),
        dir: None,
    }
}

pub fn sled() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let storage = SledStorage::open(dir.path().join("log")).unwrap();
    Backend {
        name: "sled",
        storage: Arc::new(storage),
        dir: Some(dir),
    }
}

pub fn fjall() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let storage = FjallStorage::open(dir.path().join("log")).unwrap();
    Backend {
        name: "fjall",
        storage: Arc::new(storage),
        dir: Some(dir),
    }
}

pub const T0: i64 = 1_763_600_000_000;

pub fn ev(id: &str, customer: &str, at: i64) -> Event {
    Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: Timestamp(at),
        source: "test".into(),
        kind: EventKind::PageViewed {
            url: format!("https://example.com/{id}"),
            category: "pricing".into(),
        },
    }
}

/// A varied, deterministic stream of `n` events over `customers` customers.
pub fn stream(n: usize, customers: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let customer = format!("cust-{}", (i * 7919) % customers);
            let at = T0 + (i as i64) * 37_000;
            let kind = match i % 9 {
                0 => EventKind::PageViewed {
                    url: format!("/p/{i}"),
                    category: "pricing".into(),
                },
                1 => EventKind::OutreachSent {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "spring".into(),
                    decision_id: None,
                },
                2 => EventKind::OutreachEngaged {
                    channel: Channel::Email,
                    engagement: Engagement::Opened,
                },
                3 => EventKind::ConsentChanged {
                    channel: Channel::Sms,
                    purpose: Purpose::Marketing,
                    granted: i % 2 == 0,
                    expires_at: Some(Timestamp(at + 30 * DAY.0)),
                    proof: "form".into(),
                },
                4 => EventKind::PreferencesChanged {
                    time_zone: Some("Europe/Paris".into()),
                    accepted_channels: Some(vec![Channel::Email, Channel::Call]),
                    max_contacts: Some(ContactLimit {
                        max: 3,
                        window: Span(7 * DAY.0),
                    }),
                },
                5 => EventKind::Purchase {
                    order_id: format!("o-{i}"),
                },
                6 => EventKind::Complaint {
                    channel: Some(Channel::Call),
                    reason: "too many calls".into(),
                },
                7 => EventKind::DoNotContact {
                    reason: "asked".into(),
                    until: Some(Timestamp(at + DAY.0)),
                },
                _ => EventKind::QuoteRequested {
                    product: "widget".into(),
                },
            };
            Event {
                event_id: format!("ev-{i}"),
                customer_id: customer,
                occurred_at: Timestamp(at),
                source: "gen".into(),
                kind,
            }
        })
        .collect()
}

//! Per-customer state, folded from events by [`CustomerState::apply`].
//!
//! The state is a function of the *set* of events applied, not of their order:
//! every list is kept sorted by `(occurred_at, id)`, and pruning depends only on
//! the latest `occurred_at` seen. Out-of-order arrival therefore gives the same
//! state as in-order arrival, and a duplicate event (same id, same time) is a no-op.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::decide::Signal;
use crate::event::{Channel, ContactLimit, Engagement, Event, EventKind, NonResponse, Purpose};
use crate::time::{DAY, Span, Timestamp};

/// How much history the state keeps in its timeline: the policy's longest window.
/// Consent, do-not-contact and preference changes are kept in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Retention {
    pub window: Span,
    /// Hard bound on timeline entries; the oldest go first.
    pub max_entries: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            window: Span(60 * DAY.0),
            max_entries: 512,
        }
    }
}

/// A stable 64-bit hash of an event or decision id (FNV-1a): deterministic across
/// runs and builds, so snapshots and replays agree.
pub fn id_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1 // never 0: 0 means "no decision id"
}

/// A 32-bit, never-zero hash of a decision id: enough to match a "sent" report to
/// its authorization within one customer's timeline, and keeps entries at 24 bytes.
pub fn decision_hash(decision_id: &str) -> u32 {
    ((id_hash(decision_id) >> 32) as u32) | 1
}

/// One remembered interaction in the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub at: Timestamp,
    pub id: u64,
    pub mark: Mark,
}

impl Entry {
    fn is_authorized_touch(&self) -> bool {
        matches!(self.mark, Mark::Touch { authorized: true, .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mark {
    Research(Signal),
    ContactRequest(Channel),
    Inbound(Channel),
    /// An outreach sent (`authorized == false`) or authorized by tact.
    /// `decision` is the id hash of the authorizing decision, 0 if none.
    Touch {
        channel: Channel,
        purpose: Purpose,
        decision: u32,
        authorized: bool,
    },
    Engaged(Channel, Engagement),
    Unanswered(Channel, NonResponse),
    Purchase,
    Complaint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub at: Timestamp,
    /// Grants sort before withdrawals at the same instant: a withdrawal wins a tie.
    pub withdrawn: bool,
    pub id: u64,
    pub channel: Channel,
    pub purpose: Purpose,
    pub expires_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DncRecord {
    pub at: Timestamp,
    pub id: u64,
    pub until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrefRecord {
    pub at: Timestamp,
    pub id: u64,
    /// `Some(None)` clears the zone (back to the policy default).
    pub time_zone: Option<Option<Tz>>,
    /// Bit set of accepted channels; `Some(0)` clears the restriction.
    pub accepted: Option<u8>,
    /// `Some(None)` clears the customer's own limit.
    pub limit: Option<Option<ContactLimit>>,
}

impl PrefRecord {
    fn key(&self) -> impl Ord + '_ {
        (
            self.at,
            self.id,
            self.time_zone.map(|z| z.map(|z| z.name())),
            self.accepted,
            self.limit,
        )
    }
}

impl Ord for PrefRecord {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for PrefRecord {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Preferences in force at some instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefs {
    pub time_zone: Option<Tz>,
    /// 0: no restriction.
    pub accepted: u8,
    pub limit: Option<ContactLimit>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    /// The latest `occurred_at` applied; the timeline keeps `[latest - retention, ..]`.
    pub latest: Timestamp,
    /// Sorted by `(at, id, mark)`.
    pub timeline: Vec<Entry>,
    /// How many timeline entries are touches authorized by tact (a fast path for
    /// de-duplicating "sent" reports of authorized outreach).
    pub authorized: u32,
    /// Kinds of event ever seen (purchase, complaint): skips scans for most customers.
    pub seen: u8,
    /// The latest purchase / complaint that fell out of the timeline.
    pub purchase_floor: Option<Timestamp>,
    pub complaint_floor: Option<Timestamp>,
    /// Full histories, sorted.
    pub consents: Vec<ConsentRecord>,
    pub dnc: Vec<DncRecord>,
    pub prefs: Vec<PrefRecord>,
}

/// The research signal a page category stands for, if any.
pub fn research_category(category: &str) -> Option<Signal> {
    match category {
        "pricing" | "price" | "plans" => Some(Signal::PricingPage),
        "quote" => Some(Signal::QuotePage),
        "compare" | "comparison" => Some(Signal::ComparePage),
        _ => None,
    }
}

/// How many items of a time-sorted slice happened at or before `at` (most often all).
fn upto<T>(items: &[T], at: Timestamp, time: impl Fn(&T) -> Timestamp) -> usize {
    match items.last() {
        Some(last) if time(last) > at => items.partition_point(|x| time(x) <= at),
        _ => items.len(),
    }
}

const SEEN_PURCHASE: u8 = 1;
const SEEN_COMPLAINT: u8 = 2;

fn insert_sorted<T: Ord>(v: &mut Vec<T>, item: T) -> bool {
    match v.binary_search(&item) {
        Ok(_) => false,
        Err(pos) => {
            v.insert(pos, item);
            true
        }
    }
}

impl CustomerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event into the state. Deterministic, order-independent, idempotent.
    pub fn apply(&mut self, event: &Event, retention: Retention) {
        let at = event.occurred_at;
        let id = id_hash(&event.event_id);
        let mark = match &event.kind {
            EventKind::PageViewed { category, .. } => research_category(category).map(Mark::Research),
            EventKind::ContentDownloaded { .. } => Some(Mark::Research(Signal::Download)),
            EventKind::QuoteRequested { .. } => Some(Mark::Research(Signal::QuoteRequest)),
            EventKind::ContactRequested { channel, .. } => Some(Mark::ContactRequest(*channel)),
            EventKind::InboundMessage { channel, .. } => Some(Mark::Inbound(*channel)),
            EventKind::OutreachSent {
                channel,
                purpose,
                decision_id,
                ..
            } => Some(Mark::Touch {
                channel: *channel,
                purpose: *purpose,
                decision: decision_id
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map_or(0, decision_hash),
                authorized: false,
            }),
            EventKind::OutreachAuthorized {
                decision_id,
                channel,
                purpose,
                ..
            } => Some(Mark::Touch {
                channel: *channel,
                purpose: *purpose,
                decision: decision_hash(decision_id),
                authorized: true,
            }),
            EventKind::OutreachEngaged { channel, engagement } => Some(Mark::Engaged(*channel, *engagement)),
            EventKind::OutreachUnanswered { channel, outcome } => Some(Mark::Unanswered(*channel, *outcome)),
            EventKind::Purchase { .. } => Some(Mark::Purchase),
            EventKind::Complaint { .. } => Some(Mark::Complaint),
            EventKind::ConsentChanged {
                channel,
                purpose,
                granted,
                expires_at,
                ..
            } => {
                insert_sorted(
                    &mut self.consents,
                    ConsentRecord {
                        at,
                        withdrawn: !granted,
                        id,
                        channel: *channel,
                        purpose: *purpose,
                        expires_at: *expires_at,
                    },
                );
                None
            }
            EventKind::DoNotContact { until, .. } => {
                insert_sorted(
                    &mut self.dnc,
                    DncRecord {
                        at,
                        id,
                        until: *until,
                    },
                );
                None
            }
            EventKind::PreferencesChanged {
                time_zone,
                accepted_channels,
                max_contacts,
            } => {
                let rec = PrefRecord {
                    at,
                    id,
                    time_zone: time_zone.as_ref().map(|tz| tz.parse::<Tz>().ok()),
                    accepted: accepted_channels
                        .as_ref()
                        .map(|cs| cs.iter().fold(0u8, |m, c| m | c.bit())),
                    limit: max_contacts.map(|l| (l.max > 0).then_some(l)),
                };
                insert_sorted(&mut self.prefs, rec);
                None
            }
        };
        if at > self.latest {
            self.latest = at;
        }
        match mark {
            Some(Mark::Purchase) => self.seen |= SEEN_PURCHASE,
            Some(Mark::Complaint) => self.seen |= SEEN_COMPLAINT,
            _ => {}
        }
        if let Some(mark) = mark {
            self.remember(Entry { at, id, mark }, retention);
        }
        self.prune(retention);
    }

    fn boundary(&self, retention: Retention) -> Timestamp {
        self.latest.saturating_sub(retention.window)
    }

    fn remember(&mut self, entry: Entry, retention: Retention) {
        if entry.at < self.boundary(retention) {
            self.forget(&entry);
        } else if insert_sorted(&mut self.timeline, entry) && entry.is_authorized_touch() {
            self.authorized += 1;
        }
    }

    /// Keeps what a dropped entry still tells: the latest purchase and complaint.
    fn forget(&mut self, entry: &Entry) {
        let floor = match entry.mark {
            Mark::Purchase => &mut self.purchase_floor,
            Mark::Complaint => &mut self.complaint_floor,
            _ => return,
        };
        if floor.is_none_or(|f| f < entry.at) {
            *floor = Some(entry.at);
        }
    }

    fn prune(&mut self, retention: Retention) {
        let boundary = self.boundary(retention);
        let stale = self.timeline.partition_point(|e| e.at < boundary);
        let excess = self.timeline.len().saturating_sub(retention.max_entries as usize);
        let cut = stale.max(excess);
        if cut > 0 {
            for i in 0..cut {
                let e = self.timeline[i];
                if e.is_authorized_touch() {
                    self.authorized -= 1;
                }
                self.forget(&e);
            }
            self.timeline.drain(..cut);
        }
    }

    /// Timeline entries that had happened by `at`, newest first.
    pub fn recent(&self, at: Timestamp) -> impl Iterator<Item = &Entry> {
        self.timeline[..upto(&self.timeline, at, |e| e.at)].iter().rev()
    }

    /// The latest purchase at or before `at`.
    pub fn last_purchase(&self, at: Timestamp) -> Option<Timestamp> {
        self.last_mark(at, Mark::Purchase, self.purchase_floor)
    }

    /// The latest complaint at or before `at`.
    pub fn last_complaint(&self, at: Timestamp) -> Option<Timestamp> {
        self.last_mark(at, Mark::Complaint, self.complaint_floor)
    }

    fn last_mark(&self, at: Timestamp, mark: Mark, floor: Option<Timestamp>) -> Option<Timestamp> {
        let bit = if mark == Mark::Purchase {
            SEEN_PURCHASE
        } else {
            SEEN_COMPLAINT
        };
        if self.seen & bit == 0 {
            return None;
        }
        self.recent(at)
            .find(|e| e.mark == mark)
            .map(|e| e.at)
            .or(floor.filter(|f| *f <= at))
    }

    /// The consent record in force for `(channel, purpose)` at `at`, if any.
    pub fn consent(&self, channel: Channel, purpose: Purpose, at: Timestamp) -> Option<&ConsentRecord> {
        self.consents[..upto(&self.consents, at, |c| c.at)]
            .iter()
            .rev()
            .find(|c| c.channel == channel && c.purpose == purpose)
    }

    /// Whether `(channel, purpose)` consent was ever withdrawn by `at`.
    pub fn ever_withdrawn(&self, channel: Channel, purpose: Purpose, at: Timestamp) -> bool {
        self.consents
            .iter()
            .take_while(|c| c.at <= at)
            .any(|c| c.withdrawn && c.channel == channel && c.purpose == purpose)
    }

    /// The do-not-contact record in force at `at`, if any.
    pub fn do_not_contact(&self, at: Timestamp) -> Option<&DncRecord> {
        self.dnc[..upto(&self.dnc, at, |d| d.at)]
            .last()
            .filter(|d| d.until.is_none_or(|u| u > at))
    }

    /// The customer's preferences in force at `at`.
    pub fn prefs(&self, at: Timestamp) -> Prefs {
        let mut p = Prefs::default();
        for r in self.prefs.iter().take_while(|r| r.at <= at) {
            if let Some(tz) = r.time_zone {
                p.time_zone = tz;
            }
            if let Some(a) = r.accepted {
                p.accepted = a;
            }
            if let Some(l) = r.limit {
                p.limit = l;
            }
        }
        p
    }

    /// Bytes this state holds, inline and on the heap (for capacity planning).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.timeline.capacity() * std::mem::size_of::<Entry>()
            + self.consents.capacity() * std::mem::size_of::<ConsentRecord>()
            + self.dnc.capacity() * std::mem::size_of::<DncRecord>()
            + self.prefs.capacity() * std::mem::size_of::<PrefRecord>()
    }

    /// Releases spare capacity (after a bulk replay).
    pub fn shrink(&mut self) {
        self.timeline.shrink_to_fit();
        self.consents.shrink_to_fit();
        self.dnc.shrink_to_fit();
        self.prefs.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_entries_stay_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }
}

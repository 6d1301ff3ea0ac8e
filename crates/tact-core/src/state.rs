//! Per-customer state, folded from events by [`CustomerState::apply`].
//!
//! The state is a function of the *set* of events applied, not of their order:
//! every list is kept sorted, and pruning depends only on the latest `occurred_at`
//! seen. Out-of-order arrival therefore gives the same state as in-order arrival,
//! and a duplicate event (same id, same time) is a no-op.
//!
//! Layout: everything a decision reads lives in **one allocation**, a sorted
//! timeline of 24-byte [`Entry`]s followed by a few *side records* of the same size
//! (consent, do-not-contact and preference changes, the latest purchase and complaint,
//! and the floors of those that left the timeline). A decision on a customer whose
//! state is not in cache therefore waits for two memory loads (this struct, then the
//! newest end of the block), not one per list. The side records are never part of
//! the timeline: [`CustomerState::recent`] only yields timeline entries.

use chrono_tz::{TZ_VARIANTS, Tz};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{Channel, ContactLimit, Engagement, Event, EventKind, NonResponse, Purpose, Signal};
use crate::time::{DAY, Span, Timestamp};

/// How much history the state keeps in its timeline: the policy's longest window.
/// Consent, do-not-contact and preference changes are kept in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Retention {
    pub window: Span,
    /// Hard bound on timeline entries of each kind (see `Mark::timeline_kind`), and on
    /// side records beyond the compacted ones; the oldest go first.
    pub max_entries: u32,
}

impl Retention {
    /// This retention with `slack` more history kept behind the pruning reference: the
    /// clock skew the edge allows, so that events dated up to `slack` ahead of the
    /// server's clock never cost a decision at the server's "now" any history it needs.
    pub fn with_slack(self, slack: Span) -> Retention {
        Retention {
            window: Span(self.window.0.saturating_add(slack.0.max(0))),
            ..self
        }
    }
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

/// One remembered interaction in the timeline, or a side record (see [`Mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub at: Timestamp,
    /// Timeline entries: the event id hash. Side records: the record's value (an
    /// instant, a span or a time-zone code; see the side variants of [`Mark`]).
    pub id: u64,
    pub mark: Mark,
}

impl Entry {
    fn is_authorized_touch(&self) -> bool {
        matches!(self.mark, Mark::Touch { authorized: true, .. })
    }

    /// Side records sort by `(at, mark, value)`: at one instant a withdrawal comes
    /// after (wins over) a grant, whatever the values.
    fn side_key(&self) -> (Timestamp, Mark, u64) {
        (self.at, self.mark, self.id)
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
    // Side records, never in the timeline. They share its allocation and entry size;
    // `Entry::id` holds their value.
    /// A consent change; `id` is the expiry instant if `expires`.
    ConsentChange {
        withdrawn: bool,
        channel: Channel,
        purpose: Purpose,
        expires: bool,
    },
    /// A do-not-contact request; `id` is the instant it ends unless `forever`.
    DoNotContact {
        forever: bool,
    },
    /// A time-zone change; `id` is the zone's code plus one, 0 to clear it.
    TimeZone,
    /// A change of accepted channels (a bit set; 0 clears the restriction).
    AcceptedChannels(u8),
    /// A change of the customer's own limit; `id` is the window. `max == 0` clears it.
    ContactLimit {
        max: u32,
    },
    /// The latest purchase / complaint ever applied (`at`).
    LastPurchase,
    LastComplaint,
    /// The latest purchase / complaint that fell out of the timeline (`at`).
    PurchaseFloor,
    ComplaintFloor,
}

/// What pruning takes out of the timeline that the state must still account for.
struct Forgotten {
    purchase: Option<Timestamp>,
    complaint: Option<Timestamp>,
    authorized: u32,
    /// The state's tally without the entries noted so far; `exact` false once one of
    /// them was in a saturated count (then it is recounted).
    tally: Tally,
    exact: bool,
}

impl Forgotten {
    fn new(tally: Tally) -> Self {
        Forgotten {
            purchase: None,
            complaint: None,
            authorized: 0,
            tally,
            exact: true,
        }
    }

    fn note(&mut self, e: &Entry) {
        self.exact &= self.tally.remove(e.mark);
        match e.mark {
            Mark::Purchase => self.purchase = self.purchase.max(Some(e.at)),
            Mark::Complaint => self.complaint = self.complaint.max(Some(e.at)),
            Mark::Touch { authorized: true, .. } => self.authorized += 1,
            _ => {}
        }
    }
}

/// Counts over the whole timeline that let a decision skip a walk that could find
/// nothing: a frequency cap of 3 cannot be reached by a customer whose timeline holds
/// two touches on the channel, nor a message be waiting for an answer from a customer
/// who never wrote. Every count is of the *whole* timeline, so it bounds what any
/// view as of an earlier instant (a prefix of the timeline) holds too: a decision may
/// skip a walk on it only when the bound proves the walk would find nothing.
///
/// Derived from the timeline alone (kept up as entries come and go, recounted when a
/// saturated count loses an entry, and after loading a snapshot, whose format does not
/// carry it): equal timelines have equal tallies.
///
/// Layout: per channel, 5 bits of touches for marketing or sales (saturating at 31);
/// then 8 bits each (saturating at 255) of all touches for marketing or sales, of all
/// touches for service or transactional, and of inbound messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally(u64);

/// Marketing and sales, the purposes counted per channel.
const PURSUIT: u8 = (1 << Purpose::Marketing as u8) | (1 << Purpose::Sales as u8);
const CHANNEL_FIELD: (u32, u64) = (5, 31);
const PURSUIT_SHIFT: u32 = 40;
const SERVICE_SHIFT: u32 = 48;
const INBOUND_SHIFT: u32 = 56;
const TOTAL_MAX: u64 = 255;
// Every channel's field fits below the totals: a channel added past that would count
// into another field, and a skipped walk could then let an outreach through.
const _: () = assert!(Channel::ALL.len() as u32 * CHANNEL_FIELD.0 <= PURSUIT_SHIFT);

impl Tally {
    fn of(timeline: &[Entry]) -> Tally {
        let mut t = Tally::default();
        for e in timeline {
            t.add(e.mark);
        }
        t
    }

    /// The counts `mark` is in (none, one or two), each as `(shift, saturation)`.
    fn fields(mark: Mark) -> [Option<(u32, u64)>; 2] {
        match mark {
            Mark::Touch { channel, purpose, .. } if purpose.bit() & PURSUIT != 0 => [
                Some((channel as u32 * CHANNEL_FIELD.0, CHANNEL_FIELD.1)),
                Some((PURSUIT_SHIFT, TOTAL_MAX)),
            ],
            Mark::Touch { .. } => [Some((SERVICE_SHIFT, TOTAL_MAX)), None],
            Mark::Inbound(_) => [Some((INBOUND_SHIFT, TOTAL_MAX)), None],
            _ => [None, None],
        }
    }

    fn get(self, (shift, max): (u32, u64)) -> u64 {
        (self.0 >> shift) & max
    }

    fn add(&mut self, mark: Mark) {
        for f in Tally::fields(mark).into_iter().flatten() {
            if self.get(f) < f.1 {
                self.0 += 1 << f.0;
            }
        }
    }

    /// Takes `mark` out; false if a count it is in is saturated (only a recount can
    /// tell its new value).
    #[must_use]
    fn remove(&mut self, mark: Mark) -> bool {
        let mut exact = true;
        for f in Tally::fields(mark).into_iter().flatten() {
            if self.get(f) == f.1 {
                exact = false;
            } else {
                self.0 -= 1 << f.0;
            }
        }
        exact
    }

    /// At least as many touches on `channels` for `purposes` (bit sets) as the timeline
    /// holds; `u32::MAX` if a count it would use is saturated.
    #[inline]
    pub(crate) fn touches(self, channels: u8, purposes: u8) -> u32 {
        let read = |(shift, max): (u32, u64)| {
            let n = (self.0 >> shift) & max;
            if n == max { u32::MAX } else { n as u32 }
        };
        // Marketing and sales: one channel's count, or all channels'.
        let pursuit = if purposes & PURSUIT == 0 {
            0
        } else if channels.is_power_of_two() {
            read((channels.trailing_zeros() * CHANNEL_FIELD.0, CHANNEL_FIELD.1))
        } else {
            read((PURSUIT_SHIFT, TOTAL_MAX))
        };
        if purposes & !PURSUIT == 0 {
            pursuit
        } else {
            pursuit.saturating_add(read((SERVICE_SHIFT, TOTAL_MAX)))
        }
    }

    /// At least as many inbound messages as the timeline holds (saturating, so never
    /// 0 unless there are none).
    #[inline]
    pub(crate) fn inbound(self) -> u32 {
        self.get((INBOUND_SHIFT, TOTAL_MAX)) as u32
    }
}

/// The kinds of timeline entry, each bounded on its own (see `prune_timeline`): one
/// for each of research, contact requests, inbound messages, engagements, purchases
/// and complaints; one per channel for unanswered outreach; and one per channel and
/// purpose for outreach. Rules count outreach by channel and purpose (caps, fatigue,
/// the customer's own limit), so a flood of one channel and purpose (push notices,
/// transactional messages) must not push out another's.
pub const TIMELINE_KINDS: usize = 6 + Channel::ALL.len() + Channel::ALL.len() * Purpose::ALL.len();

/// How many kinds of side record [`CustomerState`] keeps at most one of when compacting:
/// consent per channel and purpose (and its newest withdrawal), do-not-contact, the
/// three preferences, and the four latest/floor records.
const SIDE_CLASSES: usize = 2 * 8 * 4 + 1 + 3 + 4;

impl Mark {
    /// The kind of a timeline entry, for the per-kind bound on entries.
    fn timeline_kind(self) -> usize {
        const UNANSWERED: usize = 6;
        const TOUCH: usize = UNANSWERED + Channel::ALL.len();
        match self {
            Mark::Research(_) => 0,
            Mark::ContactRequest(_) => 1,
            Mark::Inbound(_) => 2,
            Mark::Engaged(..) => 3,
            Mark::Purchase => 4,
            Mark::Unanswered(channel, _) => UNANSWERED + channel as usize,
            Mark::Touch { channel, purpose, .. } => {
                TOUCH + channel as usize * Purpose::ALL.len() + purpose as usize
            }
            // `Complaint`; side records never reach the timeline.
            _ => 5,
        }
    }

    /// Side records derived from other records (a latest or a floor), not events.
    fn is_derived(self) -> bool {
        matches!(
            self,
            Mark::LastPurchase | Mark::LastComplaint | Mark::PurchaseFloor | Mark::ComplaintFloor
        )
    }

    /// A side record's compaction class, and for a consent withdrawal also the class of
    /// "the newest withdrawal of that channel and purpose" (see `compact_side`).
    fn side_classes(self) -> (usize, Option<usize>) {
        match self {
            Mark::ConsentChange {
                withdrawn,
                channel,
                purpose,
                ..
            } => {
                let key = channel as usize * 4 + purpose as usize;
                (key, withdrawn.then_some(32 + key))
            }
            Mark::DoNotContact { .. } => (64, None),
            Mark::TimeZone => (65, None),
            Mark::AcceptedChannels(_) => (66, None),
            Mark::ContactLimit { .. } => (67, None),
            Mark::LastPurchase => (68, None),
            Mark::LastComplaint => (69, None),
            Mark::PurchaseFloor => (70, None),
            // `ComplaintFloor`; timeline marks never reach compaction.
            _ => (71, None),
        }
    }

    fn is_side(self) -> bool {
        matches!(
            self,
            Mark::ConsentChange { .. }
                | Mark::DoNotContact { .. }
                | Mark::TimeZone
                | Mark::AcceptedChannels(_)
                | Mark::ContactLimit { .. }
                | Mark::LastPurchase
                | Mark::LastComplaint
                | Mark::PurchaseFloor
                | Mark::ComplaintFloor
        )
    }
}

/// A consent change, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsentRecord {
    pub at: Timestamp,
    pub withdrawn: bool,
    pub channel: Channel,
    pub purpose: Purpose,
    pub expires_at: Option<Timestamp>,
}

impl ConsentRecord {
    /// A grant that has not expired by `at`.
    pub fn live(&self, at: Timestamp) -> bool {
        !self.withdrawn && self.expires_at.is_none_or(|x| x > at)
    }
}

/// A do-not-contact request, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DncRecord {
    pub at: Timestamp,
    pub until: Option<Timestamp>,
}

impl DncRecord {
    /// How far it reaches: forever beyond any `until`; the newest of equals.
    fn reach(&self) -> (bool, Option<Timestamp>, Timestamp) {
        (self.until.is_none(), self.until, self.at)
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

fn zone_code(tz: Option<Tz>) -> u64 {
    tz.map_or(0, |z| z as u64 + 1)
}

fn zone_of(code: u64) -> Option<Tz> {
    code.checked_sub(1)
        .and_then(|i| TZ_VARIANTS.get(i as usize))
        .copied()
}

fn opt_millis(t: Option<Timestamp>) -> u64 {
    t.map_or(0, |t| t.0 as u64)
}

fn consent_record(e: &Entry) -> Option<ConsentRecord> {
    match e.mark {
        Mark::ConsentChange {
            withdrawn,
            channel,
            purpose,
            expires,
        } => Some(ConsentRecord {
            at: e.at,
            withdrawn,
            channel,
            purpose,
            expires_at: expires.then_some(Timestamp(e.id as i64)),
        }),
        _ => None,
    }
}

fn dnc_record(e: &Entry) -> Option<DncRecord> {
    match e.mark {
        Mark::DoNotContact { forever } => Some(DncRecord {
            at: e.at,
            until: (!forever).then_some(Timestamp(e.id as i64)),
        }),
        _ => None,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerState {
    /// The latest `occurred_at` applied; the timeline keeps `[latest - retention, ..]`.
    latest: Timestamp,
    /// The timeline, sorted by `(at, id, mark)`, then `side` side records, sorted by
    /// `(at, mark, id)`. One allocation.
    slots: Vec<Entry>,
    side: u32,
    /// How many timeline entries are touches authorized by tact (a fast path for
    /// de-duplicating "sent" reports of authorized outreach).
    authorized: u32,
    /// Counts over the timeline that let decisions skip walks (see [`Tally`]).
    tally: Tally,
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
fn upto(items: &[Entry], at: Timestamp) -> usize {
    match items.last() {
        Some(last) if last.at > at => items.partition_point(|x| x.at <= at),
        _ => items.len(),
    }
}

/// How many entries at the end of a customer's block [`CustomerState::warm`] loads:
/// the side records and about a month of a busy timeline.
const WARM_ENTRIES: usize = 32;

/// A customer's state as of an instant: what happened at or before it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AsOf<'a> {
    pub at: Timestamp,
    /// Timeline entries at or before `at`, oldest first.
    pub timeline: &'a [Entry],
    /// Side records at or before `at`.
    side: &'a [Entry],
    /// All side records (the latest purchase may lie after `at`).
    all_side: &'a [Entry],
    pub authorized: u32,
    /// Counts over the whole timeline (bounds for this view, a prefix of it).
    pub tally: Tally,
    /// How far back decisions read the timeline (the policy's retention window).
    pub window: Span,
}

impl<'a> AsOf<'a> {
    /// Timeline entries, newest first.
    pub fn recent(&self) -> std::iter::Rev<std::slice::Iter<'a, Entry>> {
        self.timeline.iter().rev()
    }

    /// The consent record in force for `(channel, purpose)`, if any.
    pub fn consent(&self, channel: Channel, purpose: Purpose) -> Option<ConsentRecord> {
        self.side.iter().rev().find_map(|e| match e.mark {
            Mark::ConsentChange {
                channel: c,
                purpose: p,
                ..
            } if c == channel && p == purpose => consent_record(e),
            _ => None,
        })
    }

    /// Channels (a bit set) with a live grant for `purpose`.
    pub fn consented_channels(&self, purpose: Purpose) -> u8 {
        let mut decided = 0u8;
        let mut live = 0u8;
        for e in self.side.iter().rev() {
            if let Mark::ConsentChange {
                channel, purpose: p, ..
            } = e.mark
                && p == purpose
                && decided & channel.bit() == 0
            {
                decided |= channel.bit();
                if consent_record(e).is_some_and(|r| r.live(self.at)) {
                    live |= channel.bit();
                }
            }
        }
        live
    }

    /// Whether `(channel, purpose)` consent was ever withdrawn.
    pub fn ever_withdrawn(&self, channel: Channel, purpose: Purpose) -> bool {
        self.side.iter().any(|e| {
            matches!(e.mark, Mark::ConsentChange { withdrawn: true, channel: c, purpose: p, .. }
                if c == channel && p == purpose)
        })
    }

    /// The do-not-contact record in force, if any: of the requests made by now that
    /// have not ended, the one that ends last (forever, else the latest `until`). A
    /// later request does not cut an earlier one short: "do not contact me for a day"
    /// after "never contact me again" still leaves the customer alone.
    pub fn do_not_contact(&self) -> Option<DncRecord> {
        self.dncs_in_force().max_by_key(DncRecord::reach)
    }

    /// The do-not-contact requests made by now that have not ended.
    fn dncs_in_force(&self) -> impl Iterator<Item = DncRecord> + '_ {
        self.side
            .iter()
            .filter_map(dnc_record)
            .filter(|d| d.until.is_none_or(|u| u > self.at))
    }

    /// Whether a do-not-contact in force was made at or after `t`.
    pub fn do_not_contact_made_since(&self, t: Timestamp) -> bool {
        self.dncs_in_force().any(|d| d.at >= t)
    }

    /// The customer's preferences in force.
    pub fn prefs(&self) -> Prefs {
        let mut p = Prefs::default();
        for e in self.side {
            match e.mark {
                Mark::TimeZone => p.time_zone = zone_of(e.id),
                Mark::AcceptedChannels(a) => p.accepted = a,
                Mark::ContactLimit { max } => {
                    p.limit = (max > 0).then_some(ContactLimit {
                        max,
                        window: Span(e.id as i64),
                    })
                }
                _ => {}
            }
        }
        p
    }

    /// The latest purchase at or before `at`.
    pub fn last_purchase(&self) -> Option<Timestamp> {
        self.last_mark(Mark::Purchase, Mark::LastPurchase, Mark::PurchaseFloor)
    }

    /// The latest complaint at or before `at`.
    pub fn last_complaint(&self) -> Option<Timestamp> {
        self.last_mark(Mark::Complaint, Mark::LastComplaint, Mark::ComplaintFloor)
    }

    fn last_mark(&self, mark: Mark, last: Mark, floor: Mark) -> Option<Timestamp> {
        let latest = self.all_side.iter().find(|e| e.mark == last)?.at;
        if latest <= self.at {
            return Some(latest);
        }
        // Asked about the past: the newest in the timeline then, else the floor.
        self.recent()
            .find(|e| e.mark == mark)
            .map(|e| e.at)
            .or_else(|| self.side.iter().find(|e| e.mark == floor).map(|e| e.at))
    }
}

fn insert_sorted_by<K: Ord>(
    v: &mut Vec<Entry>,
    range: std::ops::Range<usize>,
    item: Entry,
    key: impl Fn(&Entry) -> K,
) -> bool {
    let k = key(&item);
    match v[range.clone()].binary_search_by(|x| key(x).cmp(&k)) {
        Ok(_) => false,
        Err(pos) => {
            v.insert(range.start + pos, item);
            true
        }
    }
}

impl CustomerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest `occurred_at` applied.
    pub fn latest(&self) -> Timestamp {
        self.latest
    }

    /// The timeline, oldest first.
    pub fn timeline(&self) -> &[Entry] {
        &self.slots[..self.slots.len() - self.side as usize]
    }

    fn side(&self) -> &[Entry] {
        &self.slots[self.slots.len() - self.side as usize..]
    }

    /// What decisions under `policy` read: the state as of `at`, over the policy's window.
    pub(crate) fn read(&self, policy: &crate::Policy, at: Timestamp) -> AsOf<'_> {
        AsOf {
            window: policy.retention().window,
            ..self.as_of(at)
        }
    }

    pub(crate) fn as_of(&self, at: Timestamp) -> AsOf<'_> {
        let (timeline, side) = self.slots.split_at(self.slots.len() - self.side as usize);
        AsOf {
            at,
            timeline: &timeline[..upto(timeline, at)],
            side: &side[..upto(side, at)],
            all_side: side,
            authorized: self.authorized,
            tally: self.tally,
            window: Span(i64::MAX),
        }
    }

    /// Folds one event into the state. Deterministic, order-independent, idempotent.
    pub fn apply(&mut self, event: &Event, retention: Retention) {
        let at = event.occurred_at;
        let id = id_hash(&event.event_id);
        let side = |id: u64, mark: Mark| Entry { at, id, mark };
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
            EventKind::Purchase { .. } => {
                self.raise(Mark::LastPurchase, at);
                Some(Mark::Purchase)
            }
            EventKind::Complaint { .. } => {
                self.raise(Mark::LastComplaint, at);
                Some(Mark::Complaint)
            }
            EventKind::ConsentChanged {
                channel,
                purpose,
                granted,
                expires_at,
                ..
            } => {
                // A withdrawal does not expire (see `Event::ignored`).
                let expires_at = expires_at.filter(|_| *granted);
                self.insert_side(side(
                    opt_millis(expires_at),
                    Mark::ConsentChange {
                        withdrawn: !granted,
                        channel: *channel,
                        purpose: *purpose,
                        expires: expires_at.is_some(),
                    },
                ));
                None
            }
            EventKind::DoNotContact { until, .. } => {
                self.insert_side(side(
                    opt_millis(*until),
                    Mark::DoNotContact {
                        forever: until.is_none(),
                    },
                ));
                None
            }
            EventKind::PreferencesChanged {
                time_zone,
                accepted_channels,
                max_contacts,
            } => {
                if let Some(tz) = time_zone {
                    self.insert_side(side(zone_code(tz.parse::<Tz>().ok()), Mark::TimeZone));
                }
                if let Some(cs) = accepted_channels {
                    let bits = cs.iter().fold(0u8, |m, c| m | c.bit());
                    self.insert_side(side(0, Mark::AcceptedChannels(bits)));
                }
                if let Some(l) = max_contacts {
                    let (max, window) = if l.max > 0 {
                        (l.max, l.window.0 as u64)
                    } else {
                        (0, 0)
                    };
                    self.insert_side(side(window, Mark::ContactLimit { max }));
                }
                None
            }
            // Not about a customer (folding skips it; see `EventKind::is_customer_event`).
            EventKind::PolicyActivated { .. } => return,
        };
        if at > self.latest {
            self.latest = at;
        }
        if let Some(mark) = mark {
            self.remember(Entry { at, id, mark }, retention);
        }
        self.prune(retention);
        debug_assert_eq!(self.tally, Tally::of(self.timeline()));
    }

    fn insert_side(&mut self, entry: Entry) {
        let start = self.slots.len() - self.side as usize;
        let end = self.slots.len();
        if insert_sorted_by(&mut self.slots, start..end, entry, Entry::side_key) {
            self.side += 1;
        }
    }

    /// Raises the singleton side record `mark` (a latest or a floor) to `at`.
    fn raise(&mut self, mark: Mark, at: Timestamp) {
        let start = self.slots.len() - self.side as usize;
        match self.slots[start..].iter().position(|e| e.mark == mark) {
            Some(i) if self.slots[start + i].at >= at => return,
            Some(i) => {
                self.slots.remove(start + i);
                self.side -= 1;
            }
            None => {}
        }
        self.insert_side(Entry { at, id: 0, mark });
    }

    /// Timeline entries before this instant are dropped (see [`Self::pruning_reference`]).
    fn boundary(&self, retention: Retention) -> Timestamp {
        self.pruning_reference()
            .map_or(Timestamp(i64::MIN), |r| r.saturating_sub(retention.window))
    }

    fn remember(&mut self, entry: Entry, retention: Retention) {
        if entry.at < self.boundary(retention) {
            self.forget(&entry);
            return;
        }
        let end = self.slots.len() - self.side as usize;
        if insert_sorted_by(&mut self.slots, 0..end, entry, |e| *e) {
            self.tally.add(entry.mark);
            if entry.is_authorized_touch() {
                self.authorized += 1;
            }
        }
    }

    /// The instant pruning measures back from: the second-latest distinct instant among
    /// the events this state remembers (timeline entries and side records). The latest
    /// instant itself never counts, so one event dated far ahead (however many records
    /// it makes at its instant) costs memory, never history: the timeline keeps at
    /// least `retention.window` behind every instant up to the latest but one. `None`
    /// while fewer than two instants are known (nothing is old then).
    pub fn pruning_reference(&self) -> Option<Timestamp> {
        let (timeline, side) = self.slots.split_at(self.slots.len() - self.side as usize);
        let mut top = [None::<Timestamp>; 2];
        let mut offer = |at: Timestamp| match top {
            [None, _] => top[0] = Some(at),
            [Some(first), _] if at > first => top = [Some(at), Some(first)],
            [Some(first), second] if at < first && second.is_none_or(|s| at > s) => top[1] = Some(at),
            _ => {}
        };
        // Both lists are sorted by instant: only their newest two instants can matter.
        for list in [timeline, side] {
            let mut seen = 0;
            let mut last = None;
            for e in list.iter().rev().filter(|e| !e.mark.is_derived()) {
                if last != Some(e.at) {
                    seen += 1;
                    if seen > 2 {
                        break;
                    }
                    last = Some(e.at);
                    offer(e.at);
                }
            }
        }
        top[1]
    }

    /// Keeps what a dropped entry still tells: the latest purchase and complaint.
    fn forget(&mut self, entry: &Entry) {
        match entry.mark {
            Mark::Purchase => self.raise(Mark::PurchaseFloor, entry.at),
            Mark::Complaint => self.raise(Mark::ComplaintFloor, entry.at),
            _ => {}
        }
    }

    fn prune(&mut self, retention: Retention) {
        let boundary = self.boundary(retention);
        self.prune_timeline(boundary, retention);
        self.compact_side(boundary, retention.max_entries as usize);
    }

    /// Drops timeline entries older than `boundary`, and beyond the newest
    /// `max_entries` of each kind of entry ([`Mark::timeline_kind`]): a flood of one kind
    /// (page views, engagements, inbound messages, outreach on one channel for one
    /// purpose) can only push out older entries of its own kind, never the touches of
    /// another channel or purpose that caps count or the research a cool-down reads.
    /// Within a kind, the newest `max_entries` stay: a count over them reaches any cap
    /// of at most that many (see `Policy::retention`).
    /// Keeping the newest n of each kind is a function of the set of entries, so the
    /// result does not depend on arrival order.
    fn prune_timeline(&mut self, boundary: Timestamp, retention: Retention) {
        let max = retention.max_entries as usize;
        let end = self.slots.len() - self.side as usize;
        let timeline = &self.slots[..end];
        let stale = timeline.partition_point(|e| e.at < boundary);
        let mut excess = [0usize; TIMELINE_KINDS];
        // Fewer entries than `max` in all means fewer in each kind: no counting.
        if end - stale > max {
            for e in &timeline[stale..] {
                excess[e.mark.timeline_kind()] += 1;
            }
            for x in &mut excess {
                *x = x.saturating_sub(max);
            }
        }
        let over = excess.iter().any(|x| *x > 0);
        if stale == 0 && !over {
            return;
        }
        let mut gone = Forgotten::new(self.tally);
        for e in &timeline[..stale] {
            gone.note(e);
        }
        if over {
            let mut kept = Vec::with_capacity(self.slots.len() - stale);
            for e in &self.slots[stale..end] {
                let kind = &mut excess[e.mark.timeline_kind()];
                if *kind > 0 {
                    *kind -= 1;
                    gone.note(e);
                } else {
                    kept.push(*e);
                }
            }
            kept.extend_from_slice(&self.slots[end..]);
            self.slots = kept;
        } else {
            self.slots.drain(..stale);
        }
        self.authorized -= gone.authorized;
        self.tally = if gone.exact {
            gone.tally
        } else {
            Tally::of(self.timeline())
        };
        if let Some(at) = gone.purchase {
            self.raise(Mark::PurchaseFloor, at);
        }
        if let Some(at) = gone.complaint {
            self.raise(Mark::ComplaintFloor, at);
        }
    }

    /// Bounds the side records in number, whatever a sender does: records older than
    /// `boundary`, and any beyond the newest `max` records, are compacted to the newest
    /// record of each kind (of do-not-contact requests, the one that reaches furthest,
    /// as all are in force until they end; per channel and purpose for consent, which
    /// also keeps its newest withdrawal: a soft opt-in needs to know consent was ever
    /// withdrawn). Every
    /// question a decision asks about an instant at or after the compacted records gets
    /// the same answer; at most [`SIDE_CLASSES`] records survive compaction.
    ///
    /// Keeping the maximum of each class is associative, so compacting as records arrive
    /// gives the same state as compacting them all at once, in any order.
    fn compact_side(&mut self, boundary: Timestamp, max: usize) {
        let start = self.slots.len() - self.side as usize;
        let side = &self.slots[start..];
        // Derived records (a latest, a floor) are one of each and never compacted, so
        // they do not count towards `max`.
        let mut beyond_newest = 0;
        let mut events = 0;
        for (i, e) in side.iter().enumerate().rev() {
            if !e.mark.is_derived() {
                events += 1;
                if events > max {
                    beyond_newest = i + 1;
                    break;
                }
            }
        }
        let cut = side.partition_point(|e| e.at < boundary).max(beyond_newest);
        if cut < 2 {
            return;
        }
        // Do-not-contact requests are all in force until they end, not only the
        // newest: of those compacted, the one that reaches furthest answers for all.
        let furthest = side[..cut]
            .iter()
            .enumerate()
            .filter_map(|(i, e)| dnc_record(e).map(|d| (d.reach(), i)))
            .max()
            .map(|(_, i)| i);
        // Newest first: the first record of each class seen is the one to keep.
        let mut seen = 0u128;
        let mut keep = Vec::with_capacity(cut.min(SIDE_CLASSES));
        for (i, e) in side[..cut].iter().enumerate().rev() {
            if dnc_record(e).is_some() && Some(i) != furthest {
                continue;
            }
            let (class, withdrawal) = e.mark.side_classes();
            let mut wanted = false;
            for c in [Some(class), withdrawal].into_iter().flatten() {
                if seen & (1 << c) == 0 {
                    seen |= 1 << c;
                    wanted = true;
                }
            }
            if wanted {
                keep.push(*e);
            }
        }
        if keep.len() == cut {
            return;
        }
        keep.reverse();
        self.side -= (cut - keep.len()) as u32;
        self.slots.splice(start..start + cut, keep);
    }

    /// Timeline entries that had happened by `at`, newest first.
    pub fn recent(&self, at: Timestamp) -> impl Iterator<Item = &Entry> {
        self.as_of(at).recent()
    }

    /// The latest purchase at or before `at`.
    pub fn last_purchase(&self, at: Timestamp) -> Option<Timestamp> {
        self.as_of(at).last_purchase()
    }

    /// The latest complaint at or before `at`.
    pub fn last_complaint(&self, at: Timestamp) -> Option<Timestamp> {
        self.as_of(at).last_complaint()
    }

    /// The consent record in force for `(channel, purpose)` at `at`, if any.
    pub fn consent(&self, channel: Channel, purpose: Purpose, at: Timestamp) -> Option<ConsentRecord> {
        self.as_of(at).consent(channel, purpose)
    }

    /// Whether `(channel, purpose)` consent was ever withdrawn by `at`.
    pub fn ever_withdrawn(&self, channel: Channel, purpose: Purpose, at: Timestamp) -> bool {
        self.as_of(at).ever_withdrawn(channel, purpose)
    }

    /// The do-not-contact record in force at `at`, if any.
    pub fn do_not_contact(&self, at: Timestamp) -> Option<DncRecord> {
        self.as_of(at).do_not_contact()
    }

    /// The customer's preferences in force at `at`.
    pub fn prefs(&self, at: Timestamp) -> Prefs {
        self.as_of(at).prefs()
    }

    /// Records held: timeline entries and side records.
    pub fn records(&self) -> usize {
        self.slots.len()
    }

    /// Bytes this state holds, inline and on the heap (for capacity planning).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.slots.capacity() * std::mem::size_of::<Entry>()
    }

    /// Brings what [`decide`](crate::decide::decide) reads of these customers into the
    /// CPU cache, all customers at once.
    ///
    /// Deciding on a customer whose state is out of cache waits for two memory loads
    /// in a row (this struct, then its entries), a few hundred nanoseconds each on a
    /// large population: far more than the decision itself. Decisions taken one after
    /// another pay that wait one customer at a time. Called on a batch first, the loads
    /// of every customer are independent of each other and the CPU overlaps them, so
    /// the batch pays roughly one wait, not one per customer. Has no effect on any
    /// result; keep batches small enough to stay in cache (tens of customers).
    pub fn warm(states: &[&CustomerState]) {
        // Pass 1: each struct (the entries' address and length).
        let mut acc = 0usize;
        for s in states {
            acc ^= s.slots.len();
        }
        // Pass 2: the newest entries and the side records (a decision reads the end of
        // the block), one load per cache line.
        let mut acc = acc as i64;
        for s in states {
            let tail = &s.slots[s.slots.len().saturating_sub(WARM_ENTRIES)..];
            for e in tail.iter().step_by(2) {
                acc ^= e.at.0;
            }
        }
        std::hint::black_box(acc);
    }

    /// Releases spare capacity (after a bulk replay).
    pub fn shrink(&mut self) {
        self.slots.shrink_to_fit();
    }
}

// Serialized form (snapshots): the layout of earlier versions, which kept a list per
// kind of record, so snapshots written before the single-allocation layout still load.
// Side records have no event id any more; they are written with id 0.

#[derive(Serialize, Deserialize)]
struct WireConsent {
    at: Timestamp,
    withdrawn: bool,
    id: u64,
    channel: Channel,
    purpose: Purpose,
    expires_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
struct WireDnc {
    at: Timestamp,
    id: u64,
    until: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
struct WirePref {
    at: Timestamp,
    id: u64,
    time_zone: Option<Option<Tz>>,
    accepted: Option<u8>,
    limit: Option<Option<ContactLimit>>,
}

#[derive(Serialize)]
#[serde(rename = "CustomerState")]
struct WireOut<'a> {
    latest: Timestamp,
    timeline: &'a [Entry],
    authorized: u32,
    seen: u8,
    purchase_floor: Option<Timestamp>,
    complaint_floor: Option<Timestamp>,
    consents: Vec<WireConsent>,
    dnc: Vec<WireDnc>,
    prefs: Vec<WirePref>,
}

#[derive(Deserialize)]
#[serde(rename = "CustomerState")]
struct WireIn {
    latest: Timestamp,
    timeline: Vec<Entry>,
    #[allow(dead_code)]
    authorized: u32,
    #[allow(dead_code)]
    seen: u8,
    purchase_floor: Option<Timestamp>,
    complaint_floor: Option<Timestamp>,
    consents: Vec<WireConsent>,
    dnc: Vec<WireDnc>,
    prefs: Vec<WirePref>,
}

const SEEN_PURCHASE: u8 = 1;
const SEEN_COMPLAINT: u8 = 2;

impl Serialize for CustomerState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let side = self.side();
        let find = |mark: Mark| side.iter().find(|e| e.mark == mark).map(|e| e.at);
        let mut wire = WireOut {
            latest: self.latest,
            timeline: self.timeline(),
            authorized: self.authorized,
            seen: 0,
            purchase_floor: find(Mark::PurchaseFloor),
            complaint_floor: find(Mark::ComplaintFloor),
            consents: Vec::new(),
            dnc: Vec::new(),
            prefs: Vec::new(),
        };
        for e in side {
            match e.mark {
                Mark::LastPurchase => wire.seen |= SEEN_PURCHASE,
                Mark::LastComplaint => wire.seen |= SEEN_COMPLAINT,
                Mark::ConsentChange { .. } => {
                    let r = consent_record(e).expect("a consent record");
                    wire.consents.push(WireConsent {
                        at: r.at,
                        withdrawn: r.withdrawn,
                        id: 0,
                        channel: r.channel,
                        purpose: r.purpose,
                        expires_at: r.expires_at,
                    });
                }
                Mark::DoNotContact { .. } => {
                    let r = dnc_record(e).expect("a do-not-contact record");
                    wire.dnc.push(WireDnc {
                        at: r.at,
                        id: 0,
                        until: r.until,
                    });
                }
                Mark::TimeZone | Mark::AcceptedChannels(_) | Mark::ContactLimit { .. } => {
                    let mut p = WirePref {
                        at: e.at,
                        id: 0,
                        time_zone: None,
                        accepted: None,
                        limit: None,
                    };
                    match e.mark {
                        Mark::TimeZone => p.time_zone = Some(zone_of(e.id)),
                        Mark::AcceptedChannels(a) => p.accepted = Some(a),
                        Mark::ContactLimit { max } => {
                            p.limit = Some((max > 0).then_some(ContactLimit {
                                max,
                                window: Span(e.id as i64),
                            }))
                        }
                        _ => {}
                    }
                    wire.prefs.push(p);
                }
                _ => {}
            }
        }
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CustomerState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireIn::deserialize(deserializer)?;
        let mut timeline = wire.timeline;
        timeline.retain(|e| !e.mark.is_side());
        timeline.sort_unstable();
        timeline.dedup();
        let mut s = CustomerState {
            latest: wire.latest,
            authorized: timeline.iter().filter(|e| e.is_authorized_touch()).count() as u32,
            tally: Tally::of(&timeline),
            slots: timeline,
            side: 0,
        };
        let (mut last_purchase, mut last_complaint) = (wire.purchase_floor, wire.complaint_floor);
        for e in s.timeline() {
            match e.mark {
                Mark::Purchase => last_purchase = last_purchase.max(Some(e.at)),
                Mark::Complaint => last_complaint = last_complaint.max(Some(e.at)),
                _ => {}
            }
        }
        for (mark, at) in [
            (Mark::LastPurchase, last_purchase),
            (Mark::LastComplaint, last_complaint),
            (Mark::PurchaseFloor, wire.purchase_floor),
            (Mark::ComplaintFloor, wire.complaint_floor),
        ] {
            if let Some(at) = at {
                s.raise(mark, at);
            }
        }
        for c in wire.consents {
            s.insert_side(Entry {
                at: c.at,
                id: opt_millis(c.expires_at),
                mark: Mark::ConsentChange {
                    withdrawn: c.withdrawn,
                    channel: c.channel,
                    purpose: c.purpose,
                    expires: c.expires_at.is_some(),
                },
            });
        }
        for d in wire.dnc {
            s.insert_side(Entry {
                at: d.at,
                id: opt_millis(d.until),
                mark: Mark::DoNotContact {
                    forever: d.until.is_none(),
                },
            });
        }
        for p in wire.prefs {
            if let Some(tz) = p.time_zone {
                s.insert_side(Entry {
                    at: p.at,
                    id: zone_code(tz),
                    mark: Mark::TimeZone,
                });
            }
            if let Some(a) = p.accepted {
                s.insert_side(Entry {
                    at: p.at,
                    id: 0,
                    mark: Mark::AcceptedChannels(a),
                });
            }
            if let Some(l) = p.limit {
                let (max, window) = l.map_or((0, 0), |l| (l.max, l.window.0 as u64));
                s.insert_side(Entry {
                    at: p.at,
                    id: window,
                    mark: Mark::ContactLimit { max },
                });
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_entries_stay_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        assert_eq!(std::mem::size_of::<CustomerState>(), 48);
    }

    #[test]
    fn warming_reads_any_state_and_changes_nothing() {
        let mut big = CustomerState::new();
        for i in 0..100 {
            big.slots.push(Entry {
                at: Timestamp(i),
                id: i as u64 + 1,
                mark: Mark::Purchase,
            });
        }
        let mut one = CustomerState::new();
        one.slots.push(big.slots[0]);
        let before = (big.clone(), one.clone());
        CustomerState::warm(&[]);
        CustomerState::warm(&[&CustomerState::new(), &one, &big, &one]);
        assert_eq!((big, one), before);
    }

    #[test]
    fn the_tally_is_the_timelines_through_saturation_and_pruning() {
        use crate::time::MINUTE;
        // A minute apart under a window of three days: more of each kind than
        // `max_entries` keeps, so every count saturates and pruning drops entries of
        // saturated counts, by number.
        let retention = Retention {
            window: Span(3 * DAY.0),
            max_entries: 512,
        };
        let event = |i: i64, kind: EventKind| Event {
            event_id: format!("e{i}"),
            customer_id: "c".into(),
            occurred_at: Timestamp(i * MINUTE.0),
            source: "test".into(),
            kind,
        };
        let mut s = CustomerState::new();
        let check = |s: &CustomerState| {
            assert_eq!(s.tally, Tally::of(s.timeline()));
        };
        for i in 0..3_000 {
            let kind = match i % 4 {
                0 => EventKind::OutreachSent {
                    channel: Channel::Email,
                    purpose: Purpose::Marketing,
                    campaign: "x".into(),
                    decision_id: None,
                },
                1 => EventKind::OutreachSent {
                    channel: Channel::Sms,
                    purpose: Purpose::Service,
                    campaign: "x".into(),
                    decision_id: None,
                },
                2 => EventKind::InboundMessage {
                    channel: Channel::Email,
                    topic: "q".into(),
                },
                _ => EventKind::OutreachSent {
                    channel: Channel::ALL[(i / 4) as usize % Channel::ALL.len()],
                    purpose: Purpose::Sales,
                    campaign: "x".into(),
                    decision_id: None,
                },
            };
            s.apply(&event(i, kind), retention);
            check(&s);
        }
        let full = s.tally;
        assert_eq!(
            full.touches(Channel::Email.bit(), Purpose::Marketing.bit()),
            u32::MAX
        );
        assert_eq!(full.touches(u8::MAX, u8::MAX), u32::MAX);
        assert_eq!(full.inbound(), 255);
        // Much later: the old entries leave the timeline (two instants, so the later
        // one becomes the pruning reference).
        for i in [1_000_000, 1_000_001] {
            let kind = EventKind::InboundMessage {
                channel: Channel::Sms,
                topic: "q".into(),
            };
            s.apply(&event(i, kind), retention);
            check(&s);
        }
        assert_eq!(s.timeline().len(), 2);
        assert_eq!(s.tally.inbound(), 2);
        assert_eq!(s.tally.touches(u8::MAX, u8::MAX), 0);
    }

    #[test]
    fn zone_codes_round_trip() {
        for tz in TZ_VARIANTS {
            assert_eq!(zone_of(zone_code(Some(tz))), Some(tz));
        }
        assert_eq!(zone_of(zone_code(None)), None);
    }
}

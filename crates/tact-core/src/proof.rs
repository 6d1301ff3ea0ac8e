//! Proof of consent (GDPR Art. 7(1): the controller must be able to demonstrate that
//! the customer consented): for each channel and purpose, the consent record in force
//! with the event behind it (its id, source and proof, when it was given, withdrawn or
//! expires, and the grant a withdrawal withdrew), and the history of consent,
//! do-not-contact and preference changes.
//!
//! The state keeps consent records as 24-byte entries without their proofs, so proof
//! comes from the customer's events in the log (the truth); this is the pure part: the
//! caller reads the events. A record is chosen as the state chooses it (the latest by
//! instant; at one instant a withdrawal beats a grant), so the proof shown is the
//! record decisions use.

use serde::Serialize;

use crate::event::{Channel, Event, EventKind, Purpose};
use crate::time::Timestamp;

/// History entries kept per kind (each channel and purpose's consent, do-not-contact,
/// preferences), newest first; the records the proofs name are always kept besides.
pub const HISTORY_PER_KIND: usize = 16;

/// The event behind a consent record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub at: Timestamp,
    pub event_id: String,
    /// The system that reported it.
    pub source: String,
    /// The proof recorded with it (form id, recording, ...).
    pub proof: String,
    /// Its position in the log.
    pub log_position: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Granted,
    Withdrawn,
    Expired,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Granted => "granted",
            ConsentStatus::Withdrawn => "withdrawn",
            ConsentStatus::Expired => "expired",
        }
    }
}

/// One channel and purpose's consent, with its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentProof {
    pub channel: Channel,
    pub purpose: Purpose,
    pub status: ConsentStatus,
    /// The grant in force, or the one a withdrawal withdrew (none if it never was granted).
    pub given: Option<Evidence>,
    pub expires_at: Option<Timestamp>,
    /// The withdrawal in force, if any.
    pub withdrawn: Option<Evidence>,
}

/// A consent, do-not-contact or preferences change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryItem {
    pub log_position: u64,
    pub event: Event,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConsentHistory {
    /// Per channel and purpose with any consent record, in channel then purpose order.
    pub consents: Vec<ConsentProof>,
    /// Changes, newest first: at most [`HISTORY_PER_KIND`] of each kind, plus the
    /// records the proofs name.
    pub history: Vec<HistoryItem>,
    /// Changes left out of `history` by the bound.
    pub omitted: usize,
}

/// The order the state gives consent records of one channel and purpose (its side
/// key: instant, then withdrawals after grants, then expiry).
fn consent_key(e: &Event) -> (Timestamp, bool, bool, i64) {
    match &e.kind {
        EventKind::ConsentChanged {
            granted, expires_at, ..
        } => {
            // A withdrawal keeps no expiry (see `Event::ignored`).
            let expires_at = expires_at.filter(|_| *granted);
            (
                e.occurred_at,
                !granted,
                expires_at.is_some(),
                expires_at.map_or(0, |t| t.0),
            )
        }
        _ => (e.occurred_at, false, false, 0),
    }
}

fn evidence(seq: u64, e: &Event) -> Evidence {
    let proof = match &e.kind {
        EventKind::ConsentChanged { proof, .. } => proof.clone(),
        _ => String::new(),
    };
    Evidence {
        at: e.occurred_at,
        event_id: e.event_id.clone(),
        source: e.source.clone(),
        proof,
        log_position: seq,
    }
}

/// The kind a change is bounded under, or `None` if it is not a consent,
/// do-not-contact or preferences change.
fn history_kind(e: &Event) -> Option<(u8, u8, u8)> {
    match &e.kind {
        EventKind::ConsentChanged { channel, purpose, .. } => Some((0, *channel as u8, *purpose as u8)),
        EventKind::DoNotContact { .. } => Some((1, 0, 0)),
        EventKind::PreferencesChanged { .. } => Some((2, 0, 0)),
        _ => None,
    }
}

/// Consent proofs and the change history of one customer as of `at`, from their events
/// (`(log position, event)`, any order; events after `at` are ignored).
pub fn consent_history(events: &[(u64, &Event)], at: Timestamp) -> ConsentHistory {
    let mut builder = ConsentHistoryBuilder::new(at);
    for (seq, e) in events {
        if builder.wants(e) {
            builder.push(*seq, (*e).clone());
        }
    }
    builder.finish()
}

type Key = (Timestamp, bool, bool, i64);

/// Changes by (instant, log position).
type Changes = std::collections::BTreeMap<(Timestamp, u64), Event>;

/// [`consent_history`] folded one event at a time, in memory bounded by the number of
/// channels, purposes and [`HISTORY_PER_KIND`], not by the customer's history: the
/// server streams a customer's events from the log through it, so one customer with
/// millions of events costs time, never memory.
#[derive(Debug)]
pub struct ConsentHistoryBuilder {
    at: Timestamp,
    /// Per channel and purpose ([`slot_of`]): the record in force (the
    /// greatest by the state's order, then log position) and the greatest grant.
    records: Vec<Option<Slot>>,
    /// Per kind, the newest changes (by instant, then log position), at most
    /// [`HISTORY_PER_KIND`], and how many changes there were.
    newest: std::collections::HashMap<(u8, u8, u8), (Changes, usize)>,
}

/// The index of a channel and purpose among all pairs.
fn slot_of(channel: Channel, purpose: Purpose) -> usize {
    channel as usize * Purpose::ALL.len() + purpose as usize
}

#[derive(Debug)]
struct Slot {
    last: ((Key, u64), Event),
    grant: Option<((Key, u64), Event)>,
}

impl ConsentHistoryBuilder {
    pub fn new(at: Timestamp) -> Self {
        ConsentHistoryBuilder {
            at,
            records: (0..Channel::ALL.len() * Purpose::ALL.len())
                .map(|_| None)
                .collect(),
            newest: std::collections::HashMap::new(),
        }
    }

    /// Whether `push` would keep anything of `e` (a consent, do-not-contact or
    /// preferences change by `at`): callers can skip the others without cloning them.
    pub fn wants(&self, e: &Event) -> bool {
        e.occurred_at <= self.at && history_kind(e).is_some()
    }

    /// Folds in the event at log position `seq`.
    pub fn push(&mut self, seq: u64, e: Event) {
        if !self.wants(&e) {
            return;
        }
        let Some(kind) = history_kind(&e) else { return };
        if let EventKind::ConsentChanged {
            channel,
            purpose,
            granted,
            ..
        } = &e.kind
        {
            let order = (consent_key(&e), seq);
            let slot = &mut self.records[slot_of(*channel, *purpose)];
            if *granted
                && slot
                    .as_ref()
                    .is_none_or(|s| s.grant.as_ref().is_none_or(|(k, _)| order > *k))
            {
                match slot {
                    Some(s) => s.grant = Some((order, e.clone())),
                    None => {
                        *slot = Some(Slot {
                            last: (order, e.clone()),
                            grant: Some((order, e.clone())),
                        })
                    }
                }
            }
            match slot {
                Some(s) if s.last.0 >= order => {}
                Some(s) => s.last = (order, e.clone()),
                None => {
                    *slot = Some(Slot {
                        last: (order, e.clone()),
                        grant: None,
                    })
                }
            }
        }
        let (newest, total) = self.newest.entry(kind).or_default();
        *total += 1;
        newest.insert((e.occurred_at, seq), e);
        if newest.len() > HISTORY_PER_KIND {
            newest.pop_first();
        }
    }

    pub fn finish(self) -> ConsentHistory {
        let at = self.at;
        let mut consents = Vec::new();
        let mut named: Vec<(u64, Event)> = Vec::new();
        for &channel in Channel::ALL {
            for &purpose in Purpose::ALL {
                let Some(slot) = &self.records[slot_of(channel, purpose)] else {
                    continue;
                };
                let ((_, seq), last) = &slot.last;
                let seq = *seq;
                named.push((seq, last.clone()));
                let EventKind::ConsentChanged {
                    granted, expires_at, ..
                } = &last.kind
                else {
                    continue;
                };
                let proof = if *granted {
                    ConsentProof {
                        channel,
                        purpose,
                        status: if expires_at.is_some_and(|x| x <= at) {
                            ConsentStatus::Expired
                        } else {
                            ConsentStatus::Granted
                        },
                        given: Some(evidence(seq, last)),
                        expires_at: *expires_at,
                        withdrawn: None,
                    }
                } else {
                    // The grant it withdrew: the latest grant before it (every grant is
                    // before the record in force).
                    let grant = slot.grant.as_ref().map(|((_, s), e)| (*s, e));
                    if let Some((s, e)) = grant {
                        named.push((s, e.clone()));
                    }
                    ConsentProof {
                        channel,
                        purpose,
                        status: ConsentStatus::Withdrawn,
                        given: grant.map(|(s, e)| evidence(s, e)),
                        expires_at: grant.and_then(|(_, e)| match &e.kind {
                            EventKind::ConsentChanged { expires_at, .. } => *expires_at,
                            _ => None,
                        }),
                        withdrawn: Some(evidence(seq, last)),
                    }
                };
                consents.push(proof);
            }
        }
        // Newest first; at most HISTORY_PER_KIND of each kind, and what the proofs name.
        let mut total = 0;
        let mut history = Changes::new();
        for (newest, n) in self.newest.into_values() {
            total += n;
            history.extend(newest);
        }
        for (seq, e) in named {
            history.entry((e.occurred_at, seq)).or_insert(e);
        }
        let omitted = total - history.len();
        ConsentHistory {
            consents,
            history: history
                .into_iter()
                .rev()
                .map(|((_, seq), event)| HistoryItem {
                    log_position: seq,
                    event,
                })
                .collect(),
            omitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY, Span};

    /// The first version, sorting every change: the oracle for the streaming builder.
    /// Consent proofs and the change history of one customer as of `at`, from their events
    /// (`(log position, event)`, any order; events after `at` are ignored).
    fn consent_history_by_sorting(events: &[(u64, &Event)], at: Timestamp) -> ConsentHistory {
        let mut changes: Vec<(u64, &Event)> = events
            .iter()
            .copied()
            .filter(|(_, e)| e.occurred_at <= at && history_kind(e).is_some())
            .collect();
        let mut keep = std::collections::HashSet::new();
        let mut consents = Vec::new();
        for &channel in Channel::ALL {
            for &purpose in Purpose::ALL {
                let mut records: Vec<(u64, &Event)> = changes
                    .iter()
                    .copied()
                    .filter(|(_, e)| {
                        matches!(&e.kind, EventKind::ConsentChanged { channel: c, purpose: p, .. }
                            if *c == channel && *p == purpose)
                    })
                    .collect();
                if records.is_empty() {
                    continue;
                }
                records.sort_by_key(|(seq, e)| (consent_key(e), *seq));
                let (seq, last) = *records.last().expect("not empty");
                keep.insert(seq);
                let EventKind::ConsentChanged {
                    granted, expires_at, ..
                } = &last.kind
                else {
                    unreachable!("consent records only")
                };
                let proof = if *granted {
                    ConsentProof {
                        channel,
                        purpose,
                        status: if expires_at.is_some_and(|x| x <= at) {
                            ConsentStatus::Expired
                        } else {
                            ConsentStatus::Granted
                        },
                        given: Some(evidence(seq, last)),
                        expires_at: *expires_at,
                        withdrawn: None,
                    }
                } else {
                    // The grant it withdrew: the latest grant before it.
                    let grant = records[..records.len() - 1]
                        .iter()
                        .rev()
                        .find(|(_, e)| matches!(e.kind, EventKind::ConsentChanged { granted: true, .. }));
                    if let Some((s, _)) = grant {
                        keep.insert(*s);
                    }
                    ConsentProof {
                        channel,
                        purpose,
                        status: ConsentStatus::Withdrawn,
                        given: grant.map(|(s, e)| evidence(*s, e)),
                        expires_at: grant.and_then(|(_, e)| match &e.kind {
                            EventKind::ConsentChanged { expires_at, .. } => *expires_at,
                            _ => None,
                        }),
                        withdrawn: Some(evidence(seq, last)),
                    }
                };
                consents.push(proof);
            }
        }
        // Newest first; at most HISTORY_PER_KIND of each kind, and what the proofs name.
        changes.sort_by(|(sa, a), (sb, b)| (b.occurred_at, sb).cmp(&(a.occurred_at, sa)));
        let mut per_kind: std::collections::HashMap<(u8, u8, u8), usize> = std::collections::HashMap::new();
        let mut history = Vec::new();
        let mut omitted = 0;
        for (seq, e) in changes {
            let n = per_kind.entry(history_kind(e).expect("filtered")).or_default();
            *n += 1;
            if *n <= HISTORY_PER_KIND || keep.contains(&seq) {
                history.push(HistoryItem {
                    log_position: seq,
                    event: e.clone(),
                });
            } else {
                omitted += 1;
            }
        }
        ConsentHistory {
            consents,
            history,
            omitted,
        }
    }

    fn consent(id: &str, at: Timestamp, granted: bool, proof: &str) -> Event {
        Event {
            event_id: id.into(),
            customer_id: "c1".into(),
            occurred_at: at,
            source: "crm".into(),
            kind: EventKind::ConsentChanged {
                channel: Channel::Email,
                purpose: Purpose::Marketing,
                granted,
                expires_at: None,
                proof: proof.into(),
            },
        }
    }

    #[test]
    fn a_withdrawal_shows_the_grant_it_withdrew() {
        let t = Timestamp(1_000 * DAY.0);
        let day = |n: i64| t.saturating_add(Span(n * DAY.0));
        let mut events = vec![
            consent("g1", day(0), true, "form-1"),
            consent("g2", day(1), true, "form-2"),
            consent("w1", day(2), false, "unsubscribe link"),
        ];
        // Many later withdrawals: the grant is still named, and the history is bounded.
        for i in 0..40 {
            events.push(consent(&format!("w{}", i + 2), day(3 + i), false, "again"));
        }
        let refs: Vec<(u64, &Event)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e))
            .collect();
        let h = consent_history(&refs, day(100));
        assert_eq!(h.consents.len(), 1);
        let c = &h.consents[0];
        assert_eq!(c.status, ConsentStatus::Withdrawn);
        assert_eq!(c.given.as_ref().unwrap().event_id, "g2");
        assert_eq!(c.given.as_ref().unwrap().proof, "form-2");
        assert_eq!(c.withdrawn.as_ref().unwrap().event_id, "w41");
        assert_eq!(h.history.len(), HISTORY_PER_KIND + 1);
        assert!(h.history.iter().any(|i| i.event.event_id == "g2"));
        assert_eq!(h.omitted, events.len() - HISTORY_PER_KIND - 1);
        // As of day 1: granted by g2, nothing withdrawn yet.
        let h = consent_history(&refs, day(1));
        assert_eq!(h.consents[0].status, ConsentStatus::Granted);
        assert_eq!(h.consents[0].given.as_ref().unwrap().event_id, "g2");
        assert_eq!(h.history.len(), 2);
    }

    #[test]
    fn at_one_instant_a_withdrawal_beats_a_grant() {
        let t = Timestamp(1_000 * DAY.0);
        let events = [consent("w", t, false, "call"), consent("g", t, true, "form")];
        let refs: Vec<(u64, &Event)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e))
            .collect();
        let h = consent_history(&refs, t);
        assert_eq!(h.consents[0].status, ConsentStatus::Withdrawn);
        assert_eq!(h.consents[0].given.as_ref().unwrap().event_id, "g");
    }

    proptest::proptest! {
        /// Streaming the events through the builder, in any order, gives what sorting
        /// all of them gives.
        #[test]
        fn the_streaming_fold_is_the_sorting_one(
            raw in proptest::collection::vec((0u8..6, 0usize..8, 0usize..4, 0i64..40, proptest::bool::ANY), 0..120),
            at_day in 0i64..45,
        ) {
            let t0 = Timestamp(1_000 * DAY.0);
            let day = |n: i64| t0.saturating_add(Span(n * DAY.0));
            let events: Vec<Event> = raw
                .iter()
                .enumerate()
                .map(|(i, &(kind, c, p, d, flag))| {
                    let channel = Channel::ALL[c % Channel::ALL.len()];
                    let purpose = Purpose::ALL[p % Purpose::ALL.len()];
                    let kind = match kind {
                        0..=2 => EventKind::ConsentChanged {
                            channel,
                            purpose,
                            granted: flag,
                            expires_at: (kind == 1).then(|| day(d + 3)),
                            proof: format!("p{i}"),
                        },
                        3 => EventKind::DoNotContact { reason: "asked".into(), until: flag.then(|| day(d + 1)) },
                        4 => EventKind::PreferencesChanged {
                            time_zone: None,
                            accepted_channels: Some(vec![channel]),
                            max_contacts: None,
                        },
                        _ => EventKind::PageViewed { url: "/".into(), category: "pricing".into() },
                    };
                    Event {
                        event_id: format!("e{i}"),
                        customer_id: "c1".into(),
                        // Few distinct instants, so ties between grants and withdrawals happen.
                        occurred_at: day(d / 2),
                        source: "crm".into(),
                        kind,
                    }
                })
                .collect();
            let refs: Vec<(u64, &Event)> = events.iter().enumerate().map(|(i, e)| ((i as u64 * 7919) % 1000 + 1, e)).collect();
            let refs: Vec<(u64, &Event)> = {
                // Log positions are unique.
                let mut seen = std::collections::HashSet::new();
                refs.into_iter().filter(|(s, _)| seen.insert(*s)).collect()
            };
            proptest::prop_assert_eq!(consent_history(&refs, day(at_day)), consent_history_by_sorting(&refs, day(at_day)));
        }
    }
}

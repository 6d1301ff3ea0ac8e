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
        } => (
            e.occurred_at,
            !granted,
            expires_at.is_some(),
            expires_at.map_or(0, |t| t.0),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY, Span};

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
}

//! The policies that took effect, as recorded in the log: tact writes a
//! [`EventKind::PolicyActivated`] event under [`POLICY_KEY`] each time a policy takes
//! effect (at start when it differs from the last one recorded, and on every reload),
//! so an audit or a backtest can tell which policy was in force at any instant
//! ([`policy_in_force`]) and `tact policy history` can list them.

use sha2::{Digest, Sha256};
use tact_core::event::{POLICY_KEY, TACT_ID_PREFIX, TACT_SOURCE};
use tact_core::{Event, EventKind, Policy, Timestamp};

use crate::error::LogError;
use crate::storage::Storage;

/// One policy that took effect.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PolicyRecord {
    /// Its position in the log.
    pub seq: u64,
    pub event_id: String,
    /// When it took effect.
    pub at: Timestamp,
    pub version: String,
    /// SHA-256 of `text`, lowercase hex.
    pub content_hash: String,
    pub text: String,
}

/// SHA-256 of a policy's text, lowercase hex.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The event that records `policy` taking effect at `at`.
pub fn policy_event(policy: &Policy, at: Timestamp) -> Event {
    let hash = content_hash(policy.text());
    Event {
        event_id: format!("{TACT_ID_PREFIX}policy-{}-{}", at.0, &hash[..16]),
        customer_id: POLICY_KEY.to_owned(),
        occurred_at: at,
        source: TACT_SOURCE.to_owned(),
        kind: EventKind::PolicyActivated {
            version: policy.version().to_string(),
            content_hash: hash,
            text: policy.text().to_string(),
        },
    }
}

/// The record of a policy event (`None` for any other event).
pub fn policy_record(seq: u64, event: &Event) -> Option<PolicyRecord> {
    match &event.kind {
        EventKind::PolicyActivated {
            version,
            content_hash,
            text,
        } => Some(PolicyRecord {
            seq,
            event_id: event.event_id.clone(),
            at: event.occurred_at,
            version: version.clone(),
            content_hash: content_hash.clone(),
            text: text.clone(),
        }),
        _ => None,
    }
}

/// Every policy that took effect, in log order.
pub fn policy_history(storage: &dyn Storage) -> Result<Vec<PolicyRecord>, LogError> {
    Ok(storage
        .customer_events(POLICY_KEY)?
        .iter()
        .filter_map(|(seq, e)| policy_record(*seq, e))
        .collect())
}

/// The policy in force at `at`: the last to take effect at or before it (`None` before
/// the first). `history` in log order, as [`policy_history`] gives it.
pub fn policy_in_force(history: &[PolicyRecord], at: Timestamp) -> Option<&PolicyRecord> {
    history
        .iter()
        .filter(|r| r.at <= at)
        .max_by_key(|r| (r.at, r.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, at: i64, version: &str) -> PolicyRecord {
        PolicyRecord {
            seq,
            event_id: format!("e{seq}"),
            at: Timestamp(at),
            version: version.into(),
            content_hash: String::new(),
            text: String::new(),
        }
    }

    #[test]
    fn the_policy_in_force_is_the_last_to_take_effect_by_then() {
        let h = vec![record(1, 100, "a"), record(7, 200, "b"), record(9, 200, "c")];
        assert_eq!(policy_in_force(&h, Timestamp(99)), None);
        assert_eq!(policy_in_force(&h, Timestamp(100)).unwrap().version, "a");
        assert_eq!(policy_in_force(&h, Timestamp(199)).unwrap().version, "a");
        assert_eq!(policy_in_force(&h, Timestamp(200)).unwrap().version, "c");
        assert_eq!(policy_in_force(&h, Timestamp(1_000)).unwrap().version, "c");
    }

    #[test]
    fn a_policy_event_names_the_policy_and_its_hash() {
        let p = Policy::default_policy();
        let e = policy_event(&p, Timestamp(5));
        assert_eq!(e.customer_id, POLICY_KEY);
        assert!(!e.kind.is_customer_event());
        let r = policy_record(3, &e).unwrap();
        assert_eq!(r.version, p.version().to_string());
        assert_eq!(r.content_hash, content_hash(p.text()));
        assert_eq!(r.content_hash.len(), 64);
        assert_eq!(r.text, p.text().to_string());
    }
}

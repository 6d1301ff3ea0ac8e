//! `do_not_contact`: DENY for the rule's purposes while a do-not-contact is in force,
//! unless a service-reply rule exempts the proposal (a reply to the customer's own
//! message). No parameters.

use crate::decide::Detail;
use crate::policy::Rule;
use crate::rules::Outcome;
use crate::state::AsOf;
use crate::time::{Span, Timestamp};

#[inline]
pub(crate) fn evaluate(rule: &Rule, v: &AsOf<'_>, out: &mut Outcome<'_, '_>) {
    if out.service_reply {
        return;
    }
    if let Some(d) = v.do_not_contact() {
        out.deny(
            rule,
            Detail::DoNotContact {
                ago: v.at.since(d.at),
                until: d.until,
            },
        );
    }
}

pub(crate) fn in_words(on: &str) -> String {
    format!("{on}: DENY while a do-not-contact is in force")
}

pub(crate) fn message(ago: Span, until: Option<Timestamp>) -> String {
    match until {
        Some(u) => format!("Customer asked not to be contacted {ago} ago, until {u}."),
        None => format!("Customer asked not to be contacted {ago} ago. Do not contact them."),
    }
}

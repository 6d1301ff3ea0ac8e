//! `do_not_contact`: DENY for the rule's purposes while a do-not-contact is in force,
//! unless a service-reply rule exempts the proposal (a reply to the customer's own
//! message) and no do-not-contact in force was made at or after that message: the
//! customer who asked to be left alone and then wrote may be answered, but one who
//! wrote and then asked to be left alone has said the later thing. No parameters.

use crate::decide::Detail;
use crate::policy::Rule;
use crate::rules::Outcome;
use crate::state::AsOf;
use crate::time::{Span, Timestamp};

#[inline]
pub(crate) fn evaluate(rule: &Rule, v: &AsOf<'_>, out: &mut Outcome<'_, '_>) {
    if let Some(d) = v.do_not_contact() {
        if out
            .service_reply
            .is_some_and(|message| !v.do_not_contact_made_since(message))
        {
            return;
        }
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

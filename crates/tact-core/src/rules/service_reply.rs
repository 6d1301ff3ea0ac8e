//! `service_reply`: a reply within `window` after the customer's own message or
//! contact request needs no consent, is not held back by a do-not-contact made before
//! that message (one made after it, or at its instant, still holds), and never counts
//! against caps. An exemption: visited before every other rule (see
//! [`crate::policy::RuleKind::is_exemption`]), it tells do-not-contact through
//! [`Outcome::service_reply`].

use crate::decide::{Detail, Effect};
use crate::event::Channel;
use crate::explain::channel_name;
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::{AsOf, Mark};
use crate::time::Span;

/// A `service_reply` rule's parameters.
#[derive(Clone, Debug)]
pub struct ServiceReply {
    pub window: Span,
}

impl ServiceReply {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        Ok(ServiceReply {
            window: r.span("window")?,
        })
    }

    /// How far back it reads the timeline (inbound messages and contact requests).
    pub(crate) fn retention(&self) -> Span {
        self.window
    }

    #[inline]
    pub(crate) fn evaluate<'r>(&self, rule: &'r Rule, v: &AsOf<'_>, out: &mut Outcome<'r, '_>) {
        let at = v.at;
        let since = at.saturating_sub(self.window);
        let inbound = v
            .recent()
            .take_while(|e| e.at > since)
            .find_map(|e| match e.mark {
                Mark::Inbound(c) | Mark::ContactRequest(c) => Some((c, e.at)),
                _ => None,
            });
        if let Some((c, when)) = inbound {
            out.service_reply = Some(when);
            out.push(
                rule,
                Effect::Allow,
                Detail::ServiceReply {
                    inbound_channel: c,
                    ago: at.since(when),
                    window: self.window,
                },
            );
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        let window = self.window;
        format!(
            "{on}: a reply within {window} of the customer's own message or contact request needs no consent, \
             is not held back by do-not-contact and never counts against caps"
        )
    }
}

pub(crate) fn message(inbound_channel: Channel, ago: Span, window: Span) -> String {
    format!(
        "Customer contacted us by {} {ago} ago; a service reply is welcome within {window}.",
        channel_name(inbound_channel)
    )
}

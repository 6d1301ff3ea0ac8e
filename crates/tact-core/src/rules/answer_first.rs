//! `answer_first`: while the customer's own message waits for an answer, no outreach
//! for the rule's purposes (marketing and sales in the shipped policy) on any channel.
//!
//! A message (`InboundMessage`) is open until an outreach for `service` is reported
//! sent after it, on any channel (an authorization alone is not an answer: one never
//! acted on must not lift the hold; the report of the reply, quoting its decision or
//! not, is); one older than `open_for` no longer holds
//! anything back. The verdict is DENY, not DEFER: what lifts it is an answer, a new
//! event, not the passing of time (a DEFER to the end of `open_for` would promise the
//! wrong thing). Contact requests are not messages to answer: the customer asked to be
//! contacted, which the consent rule's `contact_request` handles.

use crate::decide::Detail;
use crate::event::{Channel, Purpose};
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::{AsOf, Entry, Mark};
use crate::time::{Span, Timestamp};

/// An `answer_first` rule's parameters.
#[derive(Clone, Debug)]
pub struct AnswerFirst {
    /// How long a message holds outreach back at most.
    pub open_for: Span,
}

impl AnswerFirst {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        Ok(AnswerFirst {
            open_for: r.span("open_for")?,
        })
    }

    /// How far back it reads the timeline (inbound messages and answers).
    pub(crate) fn retention(&self) -> Span {
        self.open_for
    }

    #[inline]
    pub(crate) fn evaluate(&self, rule: &Rule, v: &AsOf<'_>, out: &mut Outcome<'_, '_>) {
        if let Some((c, when)) = open_inbound(v, self.open_for) {
            out.deny_on_every_channel(
                rule,
                Detail::AwaitingAnswer {
                    channel: c,
                    ago: v.at.since(when),
                },
            );
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        format!(
            "{on}: DENY while the customer's own message of the last {} waits for a service answer",
            self.open_for
        )
    }
}

pub(crate) fn message(channel: Channel, ago: Span) -> String {
    format!("The customer's {channel} message of {ago} ago has not been answered yet: answer it first.")
}

/// The customer's oldest message still waiting for an answer at `v.at`, if any:
/// `(channel, when)`. Messages older than `open_for` do not count.
pub(crate) fn open_inbound(v: &AsOf<'_>, open_for: Span) -> Option<(Channel, Timestamp)> {
    // No message in the whole timeline: none to answer.
    if v.tally.inbound() == 0 {
        return None;
    }
    let since = v.at.saturating_sub(open_for);
    let mut oldest: Option<(Channel, Timestamp)> = None;
    // The oldest message seen at an instant after `oldest`'s: what is left waiting if an
    // answer comes at `oldest`'s instant.
    let mut newer: Option<(Channel, Timestamp)> = None;
    for e in v.recent().take_while(|e| e.at > since) {
        match e.mark {
            // An answer: everything before it is answered, and so is a message at the
            // same instant (whatever the order of their ids within it).
            Mark::Touch {
                purpose: Purpose::Service,
                authorized: false,
                ..
            } => {
                if oldest.is_some_and(|(_, at)| at == e.at) {
                    oldest = newer;
                }
                break;
            }
            Mark::Inbound(channel) => {
                if oldest.is_some_and(|(_, at)| at != e.at) {
                    newer = oldest;
                }
                oldest = Some((channel, e.at));
            }
            _ => {}
        }
    }
    oldest
}

/// Every message waiting for an answer at `v.at`, newest first (for `GetCustomer`).
pub(crate) fn open_messages<'a>(
    v: &AsOf<'a>,
    open_for: Span,
) -> impl Iterator<Item = (Channel, Timestamp)> + 'a {
    let since = v.at.saturating_sub(open_for);
    let is_answer = |e: &Entry| {
        matches!(
            e.mark,
            Mark::Touch {
                purpose: Purpose::Service,
                authorized: false,
                ..
            }
        )
    };
    // The latest answer: messages up to its instant are answered (see `open_inbound`).
    let answered = v
        .recent()
        .take_while(move |e| e.at > since)
        .find(|e| is_answer(e))
        .map_or(since, |e| e.at);
    v.recent()
        .take_while(move |e| e.at > answered)
        .filter_map(|e| match e.mark {
            Mark::Inbound(channel) => Some((channel, e.at)),
            _ => None,
        })
}

//! `fatigue`: after `unanswered` unanswered outreaches in a row on a channel, the
//! channel pauses (see [`crate::policy::RuleKind::Fatigue`]). An outreach becomes
//! unanswered at an `OutreachUnanswered` event after it, or when its reply window
//! passes; so with no new events a pause may start after the decision's instant, and
//! `decide` then keeps a DEFER from ending inside it.

use crate::event::Channel;
use crate::state::{AsOf, Mark};
use crate::time::{Span, Timestamp};
use crate::touch::counts;

/// A fatigue pause: `count` unanswered outreaches in a row; the channel pauses from
/// `from` (when the last of them became unanswered) until `until`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pause {
    pub count: u32,
    pub from: Timestamp,
    pub until: Timestamp,
}

/// The fatigue pause on `channel` that is not over at `v.at`, if any, assuming no new
/// events: the newest `unanswered` outreaches on the channel for `purposes` since the
/// customer last engaged there, sent within `within` of each other. Each becomes
/// unanswered at the first `OutreachUnanswered` event on the channel after it (ignored
/// or bounced: at once), or when `reply_window` has passed after it; the pause starts
/// when the last of them does, so it may start after `v.at` (then `from > v.at`).
pub(crate) fn fatigue_pause(
    v: &AsOf<'_>,
    purposes: u8,
    channel: Channel,
    unanswered: u32,
    within: Span,
    pause: Span,
    reply_window: Span,
) -> Option<Pause> {
    let at = v.at;
    let mut count = 0u32;
    let mut newest: Option<Timestamp> = None;
    let mut from = Timestamp::MIN;
    // The oldest `OutreachUnanswered` on the channel seen so far (newer than the
    // touches still to come).
    let mut reported: Option<Timestamp> = None;
    for e in v.recent() {
        match newest {
            // A pause for touches this old is over, and so is any older one.
            None if e.at.saturating_add(reply_window).saturating_add(pause) <= at => break,
            // Older than the run's newest touch by more than `within`: nothing older
            // can join the run (a touch would end it here too).
            Some(first) if first.since(e.at) > within => break,
            _ => {}
        }
        match e.mark {
            Mark::Engaged(c, _) if c == channel => break,
            Mark::Unanswered(c, _) if c == channel => reported = Some(e.at),
            Mark::Touch {
                channel: c,
                purpose: p,
                decision,
                authorized,
            } if c == channel && purposes & p.bit() != 0 && counts(v, decision, authorized) => {
                newest.get_or_insert(e.at);
                let mut unanswered_at = e.at.saturating_add(reply_window);
                if let Some(r) = reported {
                    unanswered_at = unanswered_at.min(r);
                }
                from = from.max(unanswered_at);
                count += 1;
                if count >= unanswered {
                    break;
                }
            }
            _ => {}
        }
    }
    let until = from.saturating_add(pause);
    (count >= unanswered && until > at).then_some(Pause { count, from, until })
}

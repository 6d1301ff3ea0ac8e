//! Touch counting: which outreaches count (an outreach reported under a decision tact
//! authorized counts once, as the authorization), and frequency-cap counts with the
//! instant a window has room again. Shared by `decide`, the fatigue rule and the view.

use crate::event::{Channel, Purpose};
use crate::state::{AsOf, Entry, Mark};
use crate::time::{Span, Timestamp};

/// Whether a touch counts: an outreach sent under a decision that tact recorded as
/// authorized counts once, as the authorization.
pub(crate) fn counts(v: &AsOf<'_>, decision: u32, authorized: bool) -> bool {
    authorized || decision == 0 || v.authorized == 0 || !was_authorized(v, decision)
}

/// Newest-first touches that count, at or before `at`.
pub(crate) fn touches<'a>(v: &AsOf<'a>) -> impl Iterator<Item = (&'a Entry, Channel, Purpose)> {
    let v = *v;
    v.recent().filter_map(move |e| match e.mark {
        Mark::Touch {
            channel,
            purpose,
            decision,
            authorized,
        } if counts(&v, decision, authorized) => Some((e, channel, purpose)),
        _ => None,
    })
}

/// Whether the decision's authorization is in the history decisions read: the policy's
/// retention window before `at` (older entries may or may not still be held, and a
/// decision must not depend on which). An authorization older than that counts in no
/// window any more, so the report then counts on its own, which errs towards counting.
fn was_authorized(v: &AsOf<'_>, decision: u32) -> bool {
    let since = v.at.saturating_sub(v.window);
    v.recent()
        .take_while(|e| e.at >= since)
        .any(|e| matches!(e.mark, Mark::Touch { decision: d, authorized: true, .. } if d == decision))
}

/// Counts touches on `channels` for `purposes` in `(at - window, at]`. If `max` is
/// reached, returns the count and when the window has room again: the `max`-th
/// newest touch leaves the window at its time plus `window`.
pub(crate) fn cap(
    v: &AsOf<'_>,
    channels: u8,
    purposes: u8,
    max: u32,
    window: Span,
) -> Option<(u32, Timestamp)> {
    // Fewer touches in the whole timeline than `max`: nothing to count.
    if v.tally.touches(channels, purposes) < max {
        return None;
    }
    let since = v.at.saturating_sub(window);
    let mut count = 0u32;
    let mut until = None;
    for e in v.recent() {
        if e.at <= since {
            break;
        }
        if let Mark::Touch {
            channel: c,
            purpose: p,
            decision,
            authorized,
        } = e.mark
            && channels & c.bit() != 0
            && purposes & p.bit() != 0
            && counts(v, decision, authorized)
        {
            count += 1;
            if count == max {
                until = Some(e.at.saturating_add(window));
            }
        }
    }
    until.map(|u| (count, u))
}

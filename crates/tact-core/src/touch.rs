//! Touch counting: which outreaches count (an outreach reported under a decision tact
//! authorized counts once, as the authorization), and frequency-cap counts with the
//! instant a window has room again. Shared by `decide`, the fatigue rule and the view.

use crate::event::{Channel, Purpose};
use crate::state::{AsOf, Entry, Mark};
use crate::time::{Span, Timestamp};

/// Whether touch `e` counts. An outreach reported as sent under a decision that tact
/// recorded as authorized counts once, with the authorization: the authorization
/// absorbs one report, the earliest that quotes its decision with its channel and
/// purpose, and the two count as one outreach at the later of their instants (an
/// outreach made two hours after it was authorized fills a cap's window from when it
/// was made; until it is reported, the authorization holds its place). Every other
/// report counts on its own: one on another channel or for another purpose (a
/// different outreach), and the second and later sends quoting the same decision (a
/// decision authorizes one outreach, not as many as a sender reports under its id).
pub(crate) fn counts(v: &AsOf<'_>, e: &Entry) -> bool {
    match e.mark {
        Mark::Touch {
            channel,
            purpose,
            decision,
            authorized,
        } => {
            if decision == 0 || v.authorized == 0 {
                return true;
            }
            let (authorization, report) = pair(v, channel, purpose, decision);
            if authorized {
                report.is_none_or(|r| r.at <= e.at)
            } else {
                match (authorization, report) {
                    (Some(a), Some(r)) if (r.at, r.id) == (e.at, e.id) => e.at > a.at,
                    _ => true,
                }
            }
        }
        _ => false,
    }
}

/// Newest-first touches that count, at or before `at`.
pub(crate) fn touches<'a>(v: &AsOf<'a>) -> impl Iterator<Item = (&'a Entry, Channel, Purpose)> {
    let v = *v;
    v.recent().filter_map(move |e| match e.mark {
        Mark::Touch { channel, purpose, .. } if counts(&v, e) => Some((e, channel, purpose)),
        _ => None,
    })
}

/// The authorization of `decision` for `channel` and `purpose` and the report it
/// absorbs, the earliest (by instant, then event id) that quotes it, each if it is in
/// the history decisions read (the policy's retention window before `at`: older
/// entries may or may not still be held, and a decision must not depend on which).
/// Which report is absorbed is a function of the set of events, not of their arrival
/// order. An authorization older than the window counts in no window any more, so its
/// reports then count on their own, which errs towards counting.
fn pair<'a>(
    v: &AsOf<'a>,
    channel: Channel,
    purpose: Purpose,
    decision: u32,
) -> (Option<&'a Entry>, Option<&'a Entry>) {
    let since = v.at.saturating_sub(v.window);
    let mut authorization = None;
    let mut report: Option<&Entry> = None;
    for x in v.recent().take_while(|x| x.at >= since) {
        if let Mark::Touch {
            channel: c,
            purpose: p,
            decision: d,
            authorized,
        } = x.mark
            && d == decision
            && c == channel
            && p == purpose
        {
            if authorized {
                authorization = Some(x);
            } else if report.is_none_or(|r| (x.at, x.id) < (r.at, r.id)) {
                report = Some(x);
            }
        }
    }
    (authorization, authorization.and(report))
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
            ..
        } = e.mark
            && channels & c.bit() != 0
            && purposes & p.bit() != 0
            && counts(v, e)
        {
            count += 1;
            if count == max {
                until = Some(e.at.saturating_add(window));
            }
        }
    }
    until.map(|u| (count, u))
}

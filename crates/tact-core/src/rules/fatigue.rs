//! `fatigue`: after `unanswered` unanswered outreaches in a row on a channel, sent
//! within `within`, the channel pauses for `pause` from when the last of them became
//! unanswered, or until the customer engages there. An outreach becomes unanswered at
//! an `OutreachUnanswered` event on its channel after it (ignored or bounced), or when
//! its `reply_window` passes without engagement on the channel; so with no new events
//! a pause may start after the decision's instant. A pause in force is an upward-closed
//! DEFER; one ahead joins [`Outcome::pauses`], and the fixpoint at the end of
//! `decide`'s `evaluate` keeps a DEFER from ending inside it.

use crate::decide::Detail;
use crate::event::Channel;
use crate::explain::channel_noun;
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::{AsOf, Mark};
use crate::time::{DAY, Span, SpanText, Timestamp};
use crate::touch::counts;

/// A `fatigue` rule's parameters.
#[derive(Clone, Debug)]
pub struct Fatigue {
    pub unanswered: u32,
    pub within: Span,
    pub pause: Span,
    pub reply_window: Span,
}

/// How long an outreach waits for an answer before fatigue counts it as unanswered,
/// when a fatigue rule does not say (`reply_window`).
pub const DEFAULT_REPLY_WINDOW: Span = Span(3 * DAY.0);

/// A fatigue pause: `count` unanswered outreaches in a row; the channel pauses from
/// `from` (when the last of them became unanswered) until `until`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pause {
    pub count: u32,
    pub from: Timestamp,
    pub until: Timestamp,
}

impl Fatigue {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        let unanswered: u32 = r.req("unanswered")?;
        if unanswered == 0 {
            return Err(r.err("unanswered", "must be at least 1"));
        }
        r.at_most_max_count("unanswered", unanswered)?;
        Ok(Fatigue {
            unanswered,
            within: r.span("within")?,
            pause: r.span("pause")?,
            reply_window: match r.get::<SpanText>("reply_window")? {
                None => DEFAULT_REPLY_WINDOW,
                Some(_) => r.span("reply_window")?,
            },
        })
    }

    /// How far back it reads the timeline: touches whose pause may not be over.
    pub(crate) fn retention(&self) -> Span {
        Span(
            self.within
                .0
                .saturating_add(self.pause.0)
                .saturating_add(self.reply_window.0),
        )
    }

    #[inline]
    pub(crate) fn evaluate<'r>(
        &self,
        rule: &'r Rule,
        v: &AsOf<'_>,
        channel: Channel,
        out: &mut Outcome<'r, '_>,
    ) {
        if let Some(f) = self.pause_on(v, rule.purposes, channel) {
            if f.from <= v.at {
                // Paused now; over at `until` (no new events: upward closed).
                out.defer(
                    rule,
                    f.until,
                    Detail::Fatigue {
                        channel,
                        unanswered: f.count,
                        until: f.until,
                    },
                );
            } else {
                // A pause ahead, once the reply windows pass: not now, but a DEFER
                // must not end inside it.
                out.pauses.push((rule, f));
            }
        }
    }

    /// The fatigue pause on `channel` that is not over at `v.at`, if any, assuming no new
    /// events: the newest `unanswered` outreaches on the channel for `purposes` since the
    /// customer last engaged there, sent within `within` of each other. Each becomes
    /// unanswered at the first `OutreachUnanswered` event on the channel after it (ignored
    /// or bounced: at once), or when `reply_window` has passed after it; the pause starts
    /// when the last of them does, so it may start after `v.at` (then `from > v.at`).
    pub(crate) fn pause_on(&self, v: &AsOf<'_>, purposes: u8, channel: Channel) -> Option<Pause> {
        let Fatigue {
            unanswered,
            within,
            pause,
            reply_window,
        } = *self;
        // Fewer such touches in the whole timeline than a pause needs: no pause.
        if v.tally.touches(channel.bit(), purposes) < unanswered {
            return None;
        }
        let at = v.at;
        let mut count = 0u32;
        let mut from = Timestamp::MIN;
        // The oldest `OutreachUnanswered` on the channel seen so far (newer than the
        // touches still to come).
        let mut reported: Option<Timestamp> = None;
        // The scan stops at the first entry older than `stop` (one comparison an entry).
        // Until the run's newest touch: a pause for touches this old is over, and so is
        // any older one (`e.at + reply_window + pause <= at`, saturating). None: every
        // entry is that old.
        let mut stop = over_before(at, reply_window, pause)?;
        for e in v.recent() {
            if e.at.0 < stop {
                break;
            }
            match e.mark {
                Mark::Engaged(c, _) if c == channel => break,
                Mark::Unanswered(c, _) if c == channel => reported = Some(e.at),
                Mark::Touch {
                    channel: c,
                    purpose: p,
                    ..
                } if c == channel && purposes & p.bit() != 0 && counts(v, e) => {
                    if count == 0 {
                        // The run's newest touch: from here the scan stops at entries
                        // older than it by more than `within` (`first.since(e.at) >
                        // within`, saturating): nothing older can join the run (a touch
                        // would end it there too).
                        stop = run_ends_before(e.at, within);
                    }
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

    pub(crate) fn in_words(&self, on: &str) -> String {
        let Fatigue {
            unanswered,
            within,
            pause,
            reply_window,
        } = self;
        format!(
            "{on}: after {unanswered} unanswered outreach in a row on a channel within {within} \
             (unanswered after {reply_window} without engagement), DEFER on that channel for {pause}"
        )
    }
}

/// The earliest instant `t` at which `t.saturating_add(reply_window).saturating_add(pause) > at`
/// (`i64::MIN` if every instant), `None` if there is none. The spans are positive (the
/// policy loader checks), so the saturating sum is `min(t + reply_window + pause, i64::MAX)`.
fn over_before(at: Timestamp, reply_window: Span, pause: Span) -> Option<i64> {
    debug_assert!(reply_window.0 >= 0 && pause.0 >= 0);
    if at.0 == i64::MAX {
        // Every sum, saturated or not, is at most `at`.
        None
    } else {
        let t = i128::from(at.0) - i128::from(reply_window.0) - i128::from(pause.0) + 1;
        Some(t.max(i128::from(i64::MIN)) as i64)
    }
}

/// The earliest instant `t` at which `first.since(t) > within` is false (`i64::MIN`:
/// every instant). `first.since(t)` saturates, so it exceeds `within` exactly when
/// `first - t` does, unless `within` is `i64::MAX`: then never.
fn run_ends_before(first: Timestamp, within: Span) -> i64 {
    if within.0 == i64::MAX {
        i64::MIN
    } else {
        (i128::from(first.0) - i128::from(within.0)).max(i128::from(i64::MIN)) as i64
    }
}

pub(crate) fn message(channel: Channel, unanswered: u32, until: Timestamp) -> String {
    format!(
        "The last {unanswered} {} went unanswered (reported ignored or bounced, or no reply within the reply window); \
         marketing there pauses until {until} or until the customer engages.",
        channel_noun(channel)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan's stops are exact at the ends of time: an entry at `t` is past the stop
    /// exactly when the saturating arithmetic they stand for says so.
    #[test]
    fn the_stops_are_the_saturating_comparisons_they_stand_for() {
        let instants = [i64::MIN, i64::MIN + 1, -5, 0, 7, 1 << 40, i64::MAX - 1, i64::MAX];
        let spans = [0, 1, 3, 1 << 40, i64::MAX - 1, i64::MAX];
        for &at in &instants {
            for &rw in &spans {
                for &pause in &spans {
                    let stop = over_before(Timestamp(at), Span(rw), Span(pause));
                    for &t in &instants {
                        let over = Timestamp(t).saturating_add(Span(rw)).saturating_add(Span(pause))
                            <= Timestamp(at);
                        assert_eq!(
                            stop.is_none_or(|s| t < s),
                            over,
                            "at {at} rw {rw} pause {pause} t {t}"
                        );
                    }
                }
            }
        }
        for &first in &instants {
            for &within in &spans {
                let stop = run_ends_before(Timestamp(first), Span(within));
                for &t in &instants {
                    let ends = Timestamp(first).since(Timestamp(t)) > Span(within);
                    assert_eq!(t < stop, ends, "first {first} within {within} t {t}");
                }
            }
        }
    }
}

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
                // Older than the run's newest touch by more than `within`: nothing
                // older can join the run (a touch would end it here too).
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

pub(crate) fn message(channel: Channel, unanswered: u32, until: Timestamp) -> String {
    format!(
        "The last {unanswered} {} went unanswered (reported ignored or bounced, or no reply within the reply window); \
         marketing there pauses until {until} or until the customer engages.",
        channel_noun(channel)
    )
}

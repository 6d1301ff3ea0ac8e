//! `customer_preferences`: the channels the customer accepts (another one: DENY,
//! suggesting those) and the customer's own frequency limit (reached: DEFER until the
//! window has room again, upward closed; the window is at most `max_window`).
//! Transactional messages never count against the limit.

use crate::decide::Detail;
use crate::event::{Channel, Purpose};
use crate::explain::channel_noun;
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::{Facts, Outcome};
use crate::time::{DAY, Span, SpanText, Timestamp};

/// A `customer_preferences` rule's parameters.
#[derive(Clone, Debug)]
pub struct CustomerPreferences {
    /// The longest window a customer's own limit is counted over (default 30 days).
    pub max_window: Span,
}

impl CustomerPreferences {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        Ok(CustomerPreferences {
            max_window: r.get::<SpanText>("max_window")?.map_or(Span(30 * DAY.0), |s| s.0),
        })
    }

    /// How far back it reads the timeline (touches).
    pub(crate) fn retention(&self) -> Span {
        self.max_window
    }

    /// `index`: the rule's index in the policy (what [`Facts::cap`] remembers it by).
    #[inline]
    pub(crate) fn evaluate<'r>(
        &self,
        rule: &'r Rule,
        index: usize,
        facts: &mut Facts<'_>,
        channel: Channel,
        out: &mut Outcome<'r, '_>,
    ) {
        let p = facts.prefs();
        if p.accepted != 0 && p.accepted & channel.bit() == 0 {
            out.deny(rule, Detail::ChannelNotAccepted { channel });
            for c in Channel::ALL.iter().filter(|c| p.accepted & c.bit() != 0) {
                out.suggest(*c, "a channel the customer accepts");
            }
        }
        if let Some(limit) = p.limit {
            let window = limit.window.min(self.max_window);
            // Transactional messages never count.
            let counted = rule.purposes & !Purpose::Transactional.bit();
            if let Some((count, until)) = facts.cap(index, u8::MAX, counted, limit.max, window) {
                let detail = if limit.window > window {
                    Detail::CustomerLimitCapped {
                        count,
                        max: limit.max,
                        asked: limit.window,
                        window,
                        until,
                    }
                } else {
                    Detail::CustomerLimit {
                        count,
                        max: limit.max,
                        window,
                        until,
                    }
                };
                out.defer(rule, until, detail);
            }
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        format!(
            "{on}: the customer's accepted channels (else DENY) and own frequency limit (window at most {}, else DEFER)",
            self.max_window
        )
    }
}

pub(crate) fn channel_not_accepted(channel: Channel) -> String {
    format!(
        "Customer does not accept {}; use a channel they chose.",
        channel_noun(channel)
    )
}

/// `asked`: the customer's window, when longer than the `window` counted.
pub(crate) fn limit(count: u32, max: u32, window: Span, asked: Option<Span>, until: Timestamp) -> String {
    let contacts = if max == 1 { "contact" } else { "contacts" };
    match asked {
        None => format!(
            "Customer asked for at most {max} {contacts} per {window} and got {count}; next one from {until}."
        ),
        Some(asked) => format!(
            "Customer asked for at most {max} {contacts} per {asked}; this policy counts it over {window} at most \
             (customer_preferences max_window), and they got {count} in that; next one from {until}."
        ),
    }
}

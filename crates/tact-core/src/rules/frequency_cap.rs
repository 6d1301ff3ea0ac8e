//! `frequency_cap`: at most `max` outreaches on the rule's channels (all of them
//! together), counted over the rule's purposes, in any sliding `window`; else DEFER
//! until the window has room again (upward closed). The count is
//! [`crate::touch::cap`], remembered per decision by [`Facts::cap`].

use crate::decide::Detail;
use crate::event::Channel;
use crate::explain::channel_noun;
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::{Facts, Outcome};
use crate::time::{Span, Timestamp};

/// A `frequency_cap` rule's parameters.
#[derive(Clone, Debug)]
pub struct FrequencyCap {
    pub max: u32,
    pub window: Span,
}

impl FrequencyCap {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        let max: u32 = r.req("max")?;
        if max == 0 {
            return Err(r.err(
                "max",
                "must be at least 1 (use a consent or do-not-contact rule to block)",
            ));
        }
        r.at_most_max_count("max", max)?;
        Ok(FrequencyCap {
            max,
            window: r.span("window")?,
        })
    }

    /// How far back it reads the timeline (touches).
    pub(crate) fn retention(&self) -> Span {
        self.window
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
        if let Some((count, until)) = facts.cap(index, rule.channels, rule.purposes, self.max, self.window) {
            if let Some(c) = rule.suggest {
                out.suggest(c, "a less intrusive channel that still has room");
            }
            let one = (rule.channels & (rule.channels - 1)) == 0;
            let ch = one.then_some(channel);
            out.defer(
                rule,
                until,
                Detail::CapReached {
                    channel: ch,
                    count,
                    max: self.max,
                    window: self.window,
                    until,
                },
            );
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        format!(
            "{on}: at most {} outreach in any {} (together), else DEFER",
            self.max, self.window
        )
    }
}

pub(crate) fn message(
    channel: Option<Channel>,
    count: u32,
    max: u32,
    window: Span,
    until: Timestamp,
) -> String {
    match channel {
        Some(c) => format!(
            "Customer already got {count} {} in the last {window} (limit {max}); next one from {until}.",
            channel_noun(c)
        ),
        None => format!(
            "Customer already got {count} outreaches across all channels in the last {window} \
             (limit {max}); next one from {until}."
        ),
    }
}

//! `research_cooldown`: after a research signal (pricing page, quote request, ...),
//! DEFER the rule's channels for `cooldown`, unless the customer asked for contact on
//! the channel since. Upward closed: with no new events, over at signal + cooldown.

use crate::decide::Detail;
use crate::event::{Channel, Signal};
use crate::explain::{channel_noun, signal_text};
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::{AsOf, Mark};
use crate::time::{Span, Timestamp};

/// A `research_cooldown` rule's parameters.
#[derive(Clone, Debug)]
pub struct ResearchCooldown {
    /// Bit set of signals ([`signal_bit`]).
    pub signals: u8,
    pub cooldown: Span,
}

/// The signals a policy can name, with their names in the policy and in words.
const SIGNALS: [(Signal, &str, &str); 5] = [
    (Signal::PricingPage, "pricing_page", "pricing page"),
    (Signal::QuotePage, "quote_page", "quote page"),
    (Signal::ComparePage, "compare_page", "compare page"),
    (Signal::QuoteRequest, "quote_request", "quote request"),
    (Signal::Download, "download", "download"),
];

pub(crate) fn signal_bit(s: Signal) -> u8 {
    1 << (s as u8)
}

impl ResearchCooldown {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        let names: Vec<String> = r.req("signals")?;
        let mut signals = 0;
        for n in &names {
            let (s, ..) = SIGNALS.iter().find(|(_, name, _)| name == n).ok_or_else(|| {
                let known: Vec<&str> = SIGNALS.iter().map(|(_, name, _)| *name).collect();
                r.err(
                    "signals",
                    format!("unknown signal `{n}`; expected one of: {}", known.join(", ")),
                )
            })?;
            signals |= signal_bit(*s);
        }
        if signals == 0 {
            return Err(r.err("signals", "must name at least one signal"));
        }
        Ok(ResearchCooldown {
            signals,
            cooldown: r.span("cooldown")?,
        })
    }

    /// How far back it reads the timeline (research signals).
    pub(crate) fn retention(&self) -> Span {
        self.cooldown
    }

    #[inline]
    pub(crate) fn evaluate<'r>(
        &self,
        rule: &'r Rule,
        v: &AsOf<'_>,
        channel: Channel,
        out: &mut Outcome<'r, '_>,
    ) {
        let at = v.at;
        // The newest research signal within the cool-down, and whether the customer
        // asked for contact on this channel after it.
        let since = at.saturating_sub(self.cooldown);
        let mut asked: Option<Timestamp> = None;
        let mut latest = None;
        for e in v.recent() {
            if e.at <= since {
                break;
            }
            match e.mark {
                Mark::Research(s) if self.signals & signal_bit(s) != 0 => {
                    latest = Some((s, e.at));
                    break;
                }
                Mark::ContactRequest(c) if c == channel && asked.is_none() => asked = Some(e.at),
                _ => {}
            }
        }
        if let Some((signal, when)) = latest
            && asked.is_none_or(|a| a <= when)
        {
            let until = when.saturating_add(self.cooldown);
            out.defer(
                rule,
                until,
                Detail::ResearchCooldown {
                    signal,
                    ago: at.since(when),
                    cooldown: self.cooldown,
                    channel,
                    until,
                },
            );
            if let Some(c) = rule.suggest {
                out.suggest(c, "an acknowledgement is welcome now");
            }
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        let which: Vec<&str> = SIGNALS
            .iter()
            .filter(|(s, ..)| self.signals & signal_bit(*s) != 0)
            .map(|(.., words)| *words)
            .collect();
        format!(
            "{on}: DEFER for {} after research ({}), unless the customer asked for contact on that channel since",
            self.cooldown,
            which.join(", ")
        )
    }
}

pub(crate) fn message(
    signal: Signal,
    ago: Span,
    cooldown: Span,
    channel: Channel,
    until: Timestamp,
) -> String {
    format!(
        "Customer {} {ago} ago; {} are held for {cooldown} after research (until {until}). \
         An email acknowledgement is welcome now.",
        signal_text(signal),
        channel_noun(channel)
    )
}

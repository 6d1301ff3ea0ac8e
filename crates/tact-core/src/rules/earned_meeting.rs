//! `earned_meeting`: a meeting needs the customer's meeting request, or at least
//! `min_engagements` engagements of the kinds named in the last `window`; else DENY
//! (suggesting content on the rule's `suggest` channel instead).

use crate::decide::{Detail, Effect};
use crate::event::{Channel, Engagement};
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::{AsOf, Mark};
use crate::time::Span;

/// An `earned_meeting` rule's parameters.
#[derive(Clone, Debug)]
pub struct EarnedMeeting {
    pub window: Span,
    pub min_engagements: u32,
    /// Bit set of the engagements that count (bit `Engagement as u8`).
    pub engagements: u8,
}

impl EarnedMeeting {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        let engagements = r
            .names::<Engagement>("engagements")?
            .unwrap_or_else(|| {
                vec![
                    Engagement::Replied,
                    Engagement::Clicked,
                    Engagement::Answered,
                    Engagement::Attended,
                ]
            })
            .iter()
            .fold(0u8, |m, e| m | (1 << (*e as u8)));
        Ok(EarnedMeeting {
            window: r.span("window")?,
            min_engagements: r.req("min_engagements")?,
            engagements,
        })
    }

    /// How far back it reads the timeline (engagements, meeting requests).
    pub(crate) fn retention(&self) -> Span {
        self.window
    }

    #[inline]
    pub(crate) fn evaluate<'r>(&self, rule: &'r Rule, v: &AsOf<'_>, out: &mut Outcome<'r, '_>) {
        let at = v.at;
        let since = at.saturating_sub(self.window);
        let mut count = 0u32;
        let mut requested = None;
        for e in v.recent().take_while(|e| e.at > since) {
            match e.mark {
                Mark::ContactRequest(Channel::SalesMeeting) if requested.is_none() => requested = Some(e.at),
                Mark::Engaged(_, kind) if self.engagements & (1 << (kind as u8)) != 0 => count += 1,
                _ => {}
            }
        }
        if let Some(when) = requested {
            out.push(
                rule,
                Effect::Allow,
                Detail::MeetingRequested { ago: at.since(when) },
            );
        } else if count >= self.min_engagements {
            out.push(
                rule,
                Effect::Allow,
                Detail::MeetingEarned {
                    engagements: count,
                    window: self.window,
                },
            );
        } else {
            out.deny(
                rule,
                Detail::MeetingNotEarned {
                    engagements: count,
                    needed: self.min_engagements,
                    window: self.window,
                },
            );
            if let Some(c) = rule.suggest {
                out.suggest(
                    c,
                    "share relevant content instead and let the customer ask for a meeting",
                );
            }
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        let which: Vec<&str> = Engagement::ALL
            .iter()
            .filter(|e| self.engagements & (1 << (**e as u8)) != 0)
            .map(|e| e.as_str())
            .collect();
        format!(
            "{on}: DENY unless the customer asked for a meeting or engaged at least {} times ({}) in the last {}",
            self.min_engagements,
            which.join(", "),
            self.window
        )
    }
}

pub(crate) fn requested(ago: Span) -> String {
    format!("Customer asked for a meeting {ago} ago.")
}

pub(crate) fn earned(engagements: u32, window: Span) -> String {
    format!("Customer engaged {engagements} times in the last {window}: a meeting is earned.")
}

pub(crate) fn not_earned(engagements: u32, needed: u32, window: Span) -> String {
    format!(
        "Customer has not asked for a meeting and engaged {engagements} time{} in the last {window} \
         ({needed} needed). Share relevant content by email instead.",
        if engagements == 1 { "" } else { "s" }
    )
}

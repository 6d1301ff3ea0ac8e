//! `complaint_cool_off`: DENY for `duration` after the customer's last complaint, on
//! every channel (complaints are remembered beyond the timeline, so the rule adds no
//! retention).

use crate::decide::Detail;
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::AsOf;
use crate::time::{Span, Timestamp};

/// A `complaint_cool_off` rule's parameters.
#[derive(Clone, Debug)]
pub struct ComplaintCoolOff {
    pub duration: Span,
}

impl ComplaintCoolOff {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        Ok(ComplaintCoolOff {
            duration: r.span("duration")?,
        })
    }

    #[inline]
    pub(crate) fn evaluate(&self, rule: &Rule, v: &AsOf<'_>, out: &mut Outcome<'_, '_>) {
        if let Some(when) = v.last_complaint() {
            let until = when.saturating_add(self.duration);
            if until > v.at {
                out.deny_on_every_channel(
                    rule,
                    Detail::ComplaintCoolOff {
                        ago: v.at.since(when),
                        until,
                    },
                );
            }
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        format!("{on}: DENY for {} after a complaint", self.duration)
    }
}

pub(crate) fn message(ago: Span, until: Timestamp) -> String {
    format!(
        "Customer complained {ago} ago; no marketing or sales until {until}. Look after the complaint first."
    )
}

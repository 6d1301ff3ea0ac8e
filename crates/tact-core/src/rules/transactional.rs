//! `transactional`: transactional messages need no consent and never count against
//! caps; do-not-contact holds them back only if `respect_do_not_contact` (then
//! do-not-contact rules are visited for them too, see
//! [`crate::policy::rules_to_visit`]). An exemption: visited before every other rule.

use crate::decide::{Detail, Effect};
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;

/// A `transactional` rule's parameters.
#[derive(Clone, Debug)]
pub struct Transactional {
    pub respect_do_not_contact: bool,
}

impl Transactional {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        Ok(Transactional {
            respect_do_not_contact: r.get("respect_do_not_contact")?.unwrap_or(false),
        })
    }

    #[inline]
    pub(crate) fn evaluate(&self, rule: &Rule, out: &mut Outcome<'_, '_>) {
        out.push(rule, Effect::Allow, Detail::Transactional);
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        format!(
            "{on}: transactional messages need no consent and are never capped{}",
            if self.respect_do_not_contact {
                ", but do-not-contact holds them back"
            } else {
                ", nor blocked by do-not-contact"
            }
        )
    }
}

pub(crate) const MESSAGE: &str =
    "Transactional message (order, delivery, billing): no consent needed, not counted against caps.";

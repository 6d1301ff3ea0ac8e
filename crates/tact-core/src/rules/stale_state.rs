//! `stale_state`: fail closed. DENY the rule's channels and purposes when the state
//! may be missing recent events (the lag passed to [`crate::decide_with_lag`], in
//! [`Facts::lag`]). No parameters; a policy without one gets the built-in rule
//! ([`crate::policy::STALE_STATE_RULE`]), and the loader checks that these rules cover
//! marketing and sales on every channel.

use crate::decide::Detail;
use crate::policy::Rule;
use crate::rules::{Facts, Outcome};
use crate::time::Span;

#[inline]
pub(crate) fn evaluate(rule: &Rule, facts: &Facts<'_>, out: &mut Outcome<'_, '_>) {
    if facts.lag.0 > 0 {
        out.deny_on_every_channel(rule, Detail::StaleState { lag: facts.lag });
    }
}

pub(crate) fn in_words(on: &str) -> String {
    format!("{on}: DENY while the state may be missing recent events (fail closed)")
}

pub(crate) fn message(lag: Span) -> String {
    format!(
        "tact's view of this customer may be {lag} behind (event stream is stale); marketing and sales are held \
         until it catches up."
    )
}

//! `consent`: the proposal's `(channel, purpose)` needs a current grant; else, if the
//! rule says so, a soft opt-in (a recent purchase, never withdrawn) or the customer's
//! own contact request on the channel. Without any of them: DENY, suggesting the
//! channels the customer did consent to.

use crate::decide::{Detail, Effect};
use crate::describe::{channels, purposes};
use crate::event::{Channel, Purpose};
use crate::explain::{channel_name, consent_subject};
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::rules::Outcome;
use crate::state::{AsOf, Mark};
use crate::time::{Span, Timestamp};

/// A `consent` rule's parameters.
#[derive(Clone, Debug)]
pub struct Consent {
    pub soft_opt_in: Option<SoftOptIn>,
    pub contact_request: Option<ContactRequestConsent>,
}

/// Marketing without a grant to a customer who bought within `purchase_within` and
/// never withdrew (`[rule.soft_opt_in]`).
#[derive(Clone, Debug)]
pub struct SoftOptIn {
    pub channels: u8,
    pub purposes: u8,
    pub purchase_within: Span,
}

/// A contact request allows `purposes` on its channel for `valid_for`
/// (`[rule.contact_request]`).
#[derive(Clone, Debug)]
pub struct ContactRequestConsent {
    pub purposes: u8,
    pub valid_for: Span,
}

impl Consent {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        let soft_opt_in = match r.sub("soft_opt_in")? {
            None => None,
            Some(mut s) => {
                let v = SoftOptIn {
                    channels: s.channel_bits("channels")?.unwrap_or(Channel::Email.bit()),
                    purposes: s.purpose_bits("purposes")?.unwrap_or(Purpose::Marketing.bit()),
                    purchase_within: s.span("purchase_within")?,
                };
                s.finish()?;
                Some(v)
            }
        };
        let contact_request = match r.sub("contact_request")? {
            None => None,
            Some(mut s) => {
                let v = ContactRequestConsent {
                    purposes: s.purpose_bits("purposes")?.unwrap_or(Purpose::Sales.bit()),
                    valid_for: s.span("valid_for")?,
                };
                s.finish()?;
                Some(v)
            }
        };
        Ok(Consent {
            soft_opt_in,
            contact_request,
        })
    }

    /// How far back it reads the timeline (contact requests).
    pub(crate) fn retention(&self) -> Span {
        self.contact_request.as_ref().map_or(Span(0), |c| c.valid_for)
    }

    #[inline]
    pub(crate) fn evaluate<'r>(
        &self,
        rule: &'r Rule,
        v: &AsOf<'_>,
        channel: Channel,
        purpose: Purpose,
        out: &mut Outcome<'r, '_>,
    ) {
        let at = v.at;
        let record = v.consent(channel, purpose);
        if let Some(r) = record.filter(|r| r.live(at)) {
            out.push(
                rule,
                Effect::Allow,
                Detail::ConsentGranted {
                    channel,
                    purpose,
                    ago: at.since(r.at),
                },
            );
            return;
        }
        if let Some(so) = &self.soft_opt_in
            && so.channels & channel.bit() != 0
            && so.purposes & purpose.bit() != 0
            && !v.ever_withdrawn(channel, purpose)
            && let Some(bought) = v.last_purchase()
            && at.since(bought) < so.purchase_within
        {
            out.push(
                rule,
                Effect::Allow,
                Detail::SoftOptIn {
                    purchase_ago: at.since(bought),
                },
            );
            return;
        }
        if let Some(cr) = &self.contact_request
            && cr.purposes & purpose.bit() != 0
        {
            let since = at
                .saturating_sub(cr.valid_for)
                .max(record.map_or(Timestamp::MIN, |r| r.at));
            let asked = v
                .recent()
                .take_while(|e| e.at > since)
                .find(|e| e.mark == Mark::ContactRequest(channel));
            if let Some(e) = asked {
                out.push(
                    rule,
                    Effect::Allow,
                    Detail::ContactRequested {
                        channel,
                        ago: at.since(e.at),
                    },
                );
                return;
            }
        }
        out.denied = true;
        if !out.explain {
            return;
        }
        let detail = match record {
            Some(r) if r.withdrawn => Detail::ConsentWithdrawn {
                channel,
                purpose,
                ago: at.since(r.at),
            },
            Some(r) => Detail::ConsentExpired {
                channel,
                purpose,
                ago: at.since(r.expires_at.unwrap_or(r.at)),
            },
            None => Detail::ConsentMissing { channel, purpose },
        };
        out.push(rule, Effect::Deny, detail);
        let consented = v.consented_channels(purpose);
        for c in Channel::ALL {
            if *c != channel && consented & c.bit() != 0 {
                out.suggest(*c, "the customer has given consent on this channel");
            }
        }
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        let mut s = format!("{on} need a current consent grant, else DENY");
        if let Some(so) = &self.soft_opt_in {
            s.push_str(&format!(
                "; soft opt-in: {} on {} without a grant for a customer who bought within {} and never withdrew",
                purposes(so.purposes),
                channels(so.channels),
                so.purchase_within
            ));
        }
        if let Some(cr) = &self.contact_request {
            s.push_str(&format!(
                "; a contact request allows {} on its channel for {}",
                purposes(cr.purposes),
                cr.valid_for
            ));
        }
        s
    }
}

pub(crate) fn granted(channel: Channel, purpose: Purpose, ago: Span) -> String {
    format!(
        "Customer gave consent to {} {ago} ago.",
        consent_subject(channel, purpose)
    )
}

pub(crate) fn soft_opt_in(purchase_ago: Span) -> String {
    format!(
        "Customer bought from us {purchase_ago} ago and never unsubscribed: marketing email is allowed (soft opt-in)."
    )
}

pub(crate) fn contact_requested(channel: Channel, ago: Span) -> String {
    format!(
        "Customer asked to be contacted by {} {ago} ago.",
        channel_name(channel)
    )
}

pub(crate) fn missing(channel: Channel, purpose: Purpose) -> String {
    format!(
        "Customer never agreed to {}. Do not send them.",
        consent_subject(channel, purpose)
    )
}

pub(crate) fn withdrawn(channel: Channel, purpose: Purpose, ago: Span) -> String {
    format!(
        "Customer withdrew consent to {} {ago} ago. Do not send them.",
        consent_subject(channel, purpose)
    )
}

pub(crate) fn expired(channel: Channel, purpose: Purpose, ago: Span) -> String {
    format!(
        "Customer's consent to {} expired {ago} ago.",
        consent_subject(channel, purpose)
    )
}

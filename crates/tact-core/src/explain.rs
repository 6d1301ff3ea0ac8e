//! Plain-English sentences for reasons: what a sales rep reads.

use std::fmt;

use crate::decide::{Detail, Reason};
use crate::event::{Channel, Purpose, Signal};
use crate::rules::{
    answer_first, complaint_cool_off, consent, customer_preferences, do_not_contact, earned_meeting, fatigue,
    frequency_cap, quiet_hours, research_cooldown, service_reply, stale_state, transactional,
};

pub(crate) fn channel_noun(c: Channel) -> &'static str {
    match c {
        Channel::Email => "emails",
        Channel::Sms => "texts",
        Channel::Call => "calls",
        Channel::Push => "push notifications",
        Channel::DirectMail => "letters",
        Channel::SalesMeeting => "sales meetings",
        Channel::SocialDm => "social messages",
        Channel::InApp => "in-app messages",
    }
}

pub(crate) fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Email => "email",
        Channel::Sms => "SMS",
        Channel::Call => "phone",
        Channel::Push => "push",
        Channel::DirectMail => "post",
        Channel::SalesMeeting => "a meeting",
        Channel::SocialDm => "social DM",
        Channel::InApp => "in-app",
    }
}

/// "marketing emails", "sales calls", "sales meetings" (not "sales sales meetings"):
/// written straight into the sentence around it (no string of its own).
pub(crate) fn consent_subject(channel: Channel, purpose: Purpose) -> ConsentSubject {
    ConsentSubject(channel, purpose)
}

/// See [`consent_subject`].
pub(crate) struct ConsentSubject(Channel, Purpose);

impl fmt::Display for ConsentSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Channel::SalesMeeting, Purpose::Sales) => f.write_str("sales meetings"),
            (Channel::SalesMeeting, p) => {
                f.write_str("meetings for ")?;
                f.write_str(p.as_str())
            }
            (c, p) => {
                f.write_str(p.as_str())?;
                f.write_str(" ")?;
                f.write_str(channel_noun(c))
            }
        }
    }
}

pub(crate) fn signal_text(s: Signal) -> &'static str {
    match s {
        Signal::PricingPage => "looked at pricing",
        Signal::QuotePage => "looked at a quote page",
        Signal::ComparePage => "compared prices",
        Signal::ResearchPage => "researched",
        Signal::QuoteRequest => "requested a quote",
        Signal::Download => "downloaded content",
    }
}

impl Reason {
    /// A sentence a sales rep understands.
    pub fn message(&self) -> String {
        // Every field is `Copy`: matched by value.
        match self.detail {
            Detail::ConsentGranted {
                channel,
                purpose,
                ago,
            } => consent::granted(channel, purpose, ago),
            Detail::SoftOptIn { purchase_ago } => consent::soft_opt_in(purchase_ago),
            Detail::ContactRequested { channel, ago } => consent::contact_requested(channel, ago),
            Detail::ConsentMissing { channel, purpose } => consent::missing(channel, purpose),
            Detail::ConsentWithdrawn {
                channel,
                purpose,
                ago,
            } => consent::withdrawn(channel, purpose, ago),
            Detail::ConsentExpired {
                channel,
                purpose,
                ago,
            } => consent::expired(channel, purpose, ago),
            Detail::Transactional => transactional::MESSAGE.to_owned(),
            Detail::ServiceReply {
                inbound_channel,
                ago,
                window,
            } => service_reply::message(inbound_channel, ago, window),
            Detail::UnsolicitedService => "Unsolicited service message.".to_owned(),
            Detail::DoNotContact { ago, until } => do_not_contact::message(ago, until),
            Detail::ComplaintCoolOff { ago, until } => complaint_cool_off::message(ago, until),
            Detail::ResearchCooldown {
                signal,
                ago,
                cooldown,
                channel,
                until,
            } => research_cooldown::message(signal, ago, cooldown, channel, until),
            Detail::MeetingRequested { ago } => earned_meeting::requested(ago),
            Detail::MeetingEarned { engagements, window } => earned_meeting::earned(engagements, window),
            Detail::MeetingNotEarned {
                engagements,
                needed,
                window,
            } => earned_meeting::not_earned(engagements, needed, window),
            Detail::CapReached {
                channel,
                count,
                max,
                window,
                until,
            } => frequency_cap::message(channel, count, max, window, until),
            Detail::QuietHours {
                channel,
                local,
                start_minute,
                end_minute,
                until,
            } => quiet_hours::message(channel, local, start_minute, end_minute, until),
            Detail::AwaitingAnswer { channel, ago } => answer_first::message(channel, ago),
            Detail::Fatigue {
                channel,
                unanswered,
                until,
            } => fatigue::message(channel, unanswered, until),
            Detail::ChannelNotAccepted { channel } => customer_preferences::channel_not_accepted(channel),
            Detail::CustomerLimit {
                count,
                max,
                window,
                until,
            } => customer_preferences::limit(count, max, window, None, until),
            Detail::CustomerLimitCapped {
                count,
                max,
                asked,
                window,
                until,
            } => customer_preferences::limit(count, max, window, Some(asked), until),
            Detail::StaleState { lag } => stale_state::message(lag),
            Detail::NotOwner => "Another tact instance owns this customer; ask that one.".to_owned(),
            Detail::NotReady => {
                "tact is still catching up with this customer's events after taking them over; \
                                 ask again shortly."
                    .to_owned()
            }
        }
    }
}

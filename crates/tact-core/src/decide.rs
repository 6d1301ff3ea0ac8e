//! `decide(state, policy, proposal, at)`: the verdict on one proposed outreach, explained.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Channel, Purpose};
use crate::time::{Span, Timestamp};

/// "May I contact this customer on this channel, for this purpose?"
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub customer_id: String,
    pub channel: Channel,
    pub purpose: Purpose,
    pub campaign_id: String,
    pub requested_by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Allowed at `Decision::not_before`, not now.
    Defer,
}

/// What a rule did to the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
    Defer,
}

/// One rule that fired, with the facts behind it. [`Reason::message`] renders a
/// plain-English sentence; keeping the facts structured keeps `decide` cheap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub rule_id: Arc<str>,
    pub effect: Effect,
    pub detail: Detail,
}

/// What kind of research signal started a cool-down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    PricingPage,
    QuotePage,
    ComparePage,
    ResearchPage,
    QuoteRequest,
    Download,
}

/// The facts behind a reason. Spans named `ago` are measured back from the decision time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    ConsentGranted { channel: Channel, purpose: Purpose, ago: Span },
    SoftOptIn { purchase_ago: Span },
    ContactRequested { channel: Channel, ago: Span },
    ConsentMissing { channel: Channel, purpose: Purpose },
    ConsentWithdrawn { channel: Channel, purpose: Purpose, ago: Span },
    ConsentExpired { channel: Channel, purpose: Purpose, ago: Span },
    Transactional,
    ServiceReply { inbound_channel: Channel, ago: Span, window: Span },
    UnsolicitedService,
    DoNotContact { ago: Span, until: Option<Timestamp> },
    ComplaintCoolOff { ago: Span, until: Timestamp },
    ResearchCooldown { signal: Signal, ago: Span, cooldown: Span, channel: Channel, until: Timestamp },
    MeetingRequested { ago: Span },
    MeetingEarned { engagements: u32, window: Span },
    MeetingNotEarned { engagements: u32, needed: u32, window: Span },
    CapReached { channel: Option<Channel>, count: u32, max: u32, window: Span, until: Timestamp },
    QuietHours { channel: Channel, local: String, start: String, end: String, until: Timestamp },
    Fatigue { channel: Channel, unanswered: u32, until: Timestamp },
    ChannelNotAccepted { channel: Channel },
    CustomerLimit { count: u32, max: u32, window: Span, until: Timestamp },
    /// Raised outside the core (the service knows how fresh its state is).
    StaleState { lag: Span },
    /// Raised outside the core: the customer belongs to another instance.
    NotOwner,
}

/// Something that would be welcome instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alternative {
    pub channel: Channel,
    pub purpose: Purpose,
    /// `None`: welcome now.
    pub not_before: Option<Timestamp>,
    pub note: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Set for DEFER: the earliest instant at which every rule is satisfied together.
    pub not_before: Option<Timestamp>,
    pub reasons: Vec<Reason>,
    pub alternatives: Vec<Alternative>,
}

//! Customer-interaction events: the only input that changes state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::{Span, Timestamp};

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        kind: stringify!($name),
                        name: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

named_enum!(
    /// A way of reaching a customer.
    Channel {
        Email = "email",
        Sms = "sms",
        Call = "call",
        Push = "push",
        DirectMail = "direct_mail",
        SalesMeeting = "sales_meeting",
        SocialDm = "social_dm",
        InApp = "in_app",
    }
);

named_enum!(
    /// Why an outreach is made.
    Purpose {
        Marketing = "marketing",
        Sales = "sales",
        Service = "service",
        Transactional = "transactional",
    }
);

named_enum!(
    /// How a customer responded to an outreach.
    Engagement {
        Opened = "opened",
        Clicked = "clicked",
        Replied = "replied",
        Answered = "answered",
        Attended = "attended",
    }
);

named_enum!(
    /// An outreach that got no response.
    NonResponse {
        Ignored = "ignored",
        Bounced = "bounced",
    }
);

/// What kind of research signal an event is (it starts research cool-downs). Derived
/// from events by the state (`research_category`), named by policies, explained by
/// decisions; here, below all three, so none of them imports another for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    PricingPage,
    QuotePage,
    ComparePage,
    ResearchPage,
    QuoteRequest,
    Download,
}

/// A name that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`; expected one of: {}", expected.join(", "))]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    pub expected: &'static [&'static str],
}

impl Channel {
    /// Bit for channel sets.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl Purpose {
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A customer's own limit on how often they are contacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContactLimit {
    pub max: u32,
    pub window: Span,
}

/// One customer interaction, as recorded in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique; a second event with the same id is ignored.
    pub event_id: String,
    pub customer_id: String,
    pub occurred_at: Timestamp,
    /// The system that reported it (`web`, `crm`, `tact`, ...).
    pub source: String,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A web page view; `category` is e.g. `pricing`, `quote`, `compare`, `blog`.
    PageViewed {
        url: String,
        category: String,
    },
    ContentDownloaded {
        asset: String,
    },
    QuoteRequested {
        product: String,
    },
    /// The customer asked to be contacted on `channel`.
    ContactRequested {
        channel: Channel,
        topic: String,
    },
    /// The customer wrote or called in.
    InboundMessage {
        channel: Channel,
        topic: String,
    },
    OutreachSent {
        channel: Channel,
        purpose: Purpose,
        campaign: String,
        /// The tact decision that authorized it, if any: it is then not counted twice.
        decision_id: Option<String>,
    },
    OutreachEngaged {
        channel: Channel,
        engagement: Engagement,
    },
    OutreachUnanswered {
        channel: Channel,
        outcome: NonResponse,
    },
    Purchase {
        order_id: String,
    },
    Complaint {
        channel: Option<Channel>,
        reason: String,
    },
    ConsentChanged {
        channel: Channel,
        purpose: Purpose,
        granted: bool,
        expires_at: Option<Timestamp>,
        proof: String,
    },
    /// Each field that is `None` leaves that preference as it was.
    PreferencesChanged {
        time_zone: Option<String>,
        /// Channels the customer accepts; an empty list clears the restriction.
        accepted_channels: Option<Vec<Channel>>,
        /// The customer's own frequency limit; a `max` of 0 clears it.
        max_contacts: Option<ContactLimit>,
    },
    DoNotContact {
        reason: String,
        until: Option<Timestamp>,
    },
    /// Written by tact itself when it answers ALLOW to `Authorize`.
    OutreachAuthorized {
        decision_id: String,
        channel: Channel,
        purpose: Purpose,
        campaign: String,
        requested_by: String,
    },
    /// Written by tact itself when a policy takes effect (at start, when it differs
    /// from the last one recorded, and on each reload). Not about a customer: it is
    /// stored under [`POLICY_KEY`], and folding ignores it. Never admitted from
    /// outside, nor from the Kafka topic (tact does not publish it).
    PolicyActivated {
        version: String,
        /// SHA-256 of `text`, lowercase hex.
        content_hash: String,
        /// The policy file's text, as loaded.
        text: String,
    },
}

/// The customer-id key tact's own policy events are stored under: not a customer id
/// (customer ids have no whitespace), so no event from outside can ever share it.
pub const POLICY_KEY: &str = "tact policy";

impl EventKind {
    /// Whether the event is about a customer (every kind but tact's own
    /// [`EventKind::PolicyActivated`]): only those are folded into customer state.
    pub fn is_customer_event(&self) -> bool {
        !matches!(self, EventKind::PolicyActivated { .. })
    }

    /// A short lowercase name, as used in logs and timelines.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PageViewed { .. } => "page_viewed",
            EventKind::ContentDownloaded { .. } => "content_downloaded",
            EventKind::QuoteRequested { .. } => "quote_requested",
            EventKind::ContactRequested { .. } => "contact_requested",
            EventKind::InboundMessage { .. } => "inbound_message",
            EventKind::OutreachSent { .. } => "outreach_sent",
            EventKind::OutreachEngaged { .. } => "outreach_engaged",
            EventKind::OutreachUnanswered { .. } => "outreach_unanswered",
            EventKind::Purchase { .. } => "purchase",
            EventKind::Complaint { .. } => "complaint",
            EventKind::ConsentChanged { .. } => "consent_changed",
            EventKind::PreferencesChanged { .. } => "preferences_changed",
            EventKind::DoNotContact { .. } => "do_not_contact",
            EventKind::OutreachAuthorized { .. } => "outreach_authorized",
            EventKind::PolicyActivated { .. } => "policy_activated",
        }
    }
}

/// Why an event cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("event_id: must not be empty")]
    MissingEventId,
    #[error("event_id: at most {max} bytes (got {got})")]
    EventIdTooLong { max: usize, got: usize },
    #[error("customer_id: must not be empty")]
    MissingCustomerId,
    #[error("customer_id: at most {max} bytes (got {got})")]
    CustomerIdTooLong { max: usize, got: usize },
    #[error("customer_id: must be printable, without spaces, control or invisible characters (got {0:?})")]
    CustomerIdFormat(String),
    #[error("occurred_at: must be after 1970-01-01T00:00:00Z (got {0})")]
    TimeNotAfterEpoch(Timestamp),
    #[error("{field}: at most {max} bytes (got {got})")]
    TooLong {
        field: &'static str,
        max: usize,
        got: usize,
    },
    #[error("occurred_at: {at} is {ahead} ahead of the server clock ({now}); at most {max} is allowed")]
    InFuture {
        at: Timestamp,
        now: Timestamp,
        ahead: Span,
        max: Span,
    },
    #[error("preferences_changed.time_zone: unknown IANA time zone `{0}`")]
    UnknownTimeZone(String),
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
}

pub const MAX_ID_BYTES: usize = 256;

/// The longest label of a proposal (`campaign_id`, `requested_by`).
pub const MAX_LABEL_BYTES: usize = 256;

impl Event {
    /// Checks what the type system cannot. Events that fail are dead-lettered or
    /// rejected at the edge; they never reach `apply`.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        if self.event_id.is_empty() {
            return Err(InvalidEvent::MissingEventId);
        }
        if self.event_id.len() > MAX_ID_BYTES {
            return Err(InvalidEvent::EventIdTooLong {
                max: MAX_ID_BYTES,
                got: self.event_id.len(),
            });
        }
        validate_customer_id(&self.customer_id)?;
        if self.occurred_at.0 <= 0 {
            return Err(InvalidEvent::TimeNotAfterEpoch(self.occurred_at));
        }
        match &self.kind {
            EventKind::PreferencesChanged {
                time_zone: Some(tz), ..
            } if !tz.is_empty() && tz.parse::<chrono_tz::Tz>().is_err() => {
                return Err(InvalidEvent::UnknownTimeZone(tz.clone()));
            }
            EventKind::OutreachAuthorized { decision_id, .. } if decision_id.is_empty() => {
                return Err(InvalidEvent::Field {
                    field: "outreach_authorized.decision_id",
                    why: "must not be empty".into(),
                });
            }
            EventKind::PreferencesChanged {
                max_contacts: Some(l),
                ..
            } if l.window.0 < 0 || (l.max > 0 && l.window.0 == 0) => {
                return Err(InvalidEvent::Field {
                    field: "preferences_changed.max_contacts.window",
                    why: if l.max > 0 {
                        "must be positive".into()
                    } else {
                        "must not be negative (max 0 clears the limit; leave the window at 0)".into()
                    },
                });
            }
            // A withdrawal's `expires_at` means nothing (see [`Event::ignored`]): a
            // withdrawal is never refused for it, as refusing would lose it.
            // "At most 0 contacts per 30 days" reads as "never", but max 0 clears the
            // limit: refused, so that no sender clears a customer's limit meaning to stop
            // contact (found probing a release build: it was recorded without a word).
            EventKind::PreferencesChanged {
                max_contacts: Some(l),
                ..
            } if l.max == 0 && l.window.0 > 0 => {
                return Err(InvalidEvent::Field {
                    field: "preferences_changed.max_contacts.max",
                    why: "0 with a window would read as \"never\", but max 0 clears the limit: to stop contact, \
                          send do_not_contact or withdraw consent; to clear the limit, leave the window at 0"
                        .into(),
                });
            }
            EventKind::ConsentChanged {
                granted: true,
                expires_at: Some(x),
                ..
            } if *x <= self.occurred_at => {
                return Err(InvalidEvent::Field {
                    field: "consent_changed.expires_at",
                    why: format!(
                        "must be after occurred_at ({} is not after {})",
                        x, self.occurred_at
                    ),
                });
            }
            EventKind::DoNotContact { until: Some(u), .. } if *u <= self.occurred_at => {
                return Err(InvalidEvent::Field {
                    field: "do_not_contact.until",
                    why: format!(
                        "must be after occurred_at ({} is not after {})",
                        u, self.occurred_at
                    ),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// A field of a valid event that tact records but that has no effect, with why, for
    /// the sender to hear (`RecordEvents`' answer, a warning from a feed): a consent
    /// withdrawal's `expires_at` (a withdrawal does not expire: it stands until a new
    /// grant; a pause with an end is a do-not-contact with `until`).
    pub fn ignored(&self) -> Option<&'static str> {
        match self.kind {
            EventKind::ConsentChanged {
                granted: false,
                expires_at: Some(_),
                ..
            } => Some(
                "consent_changed.expires_at is ignored: a withdrawal does not expire, it stands until consent is granted again \
                 (for a pause with an end, send do_not_contact with until)",
            ),
            _ => None,
        }
    }

    /// The free-text fields of the event, named as on the wire, for size checks.
    fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let mut out: [(&'static str, &str); 4] = [("source", &self.source), ("", ""), ("", ""), ("", "")];
        match &self.kind {
            EventKind::PageViewed { url, category } => {
                out[1] = ("page_viewed.url", url);
                out[2] = ("page_viewed.category", category);
            }
            EventKind::ContentDownloaded { asset } => out[1] = ("content_downloaded.asset", asset),
            EventKind::QuoteRequested { product } => out[1] = ("quote_requested.product", product),
            EventKind::ContactRequested { topic, .. } => out[1] = ("contact_requested.topic", topic),
            EventKind::InboundMessage { topic, .. } => out[1] = ("inbound_message.topic", topic),
            EventKind::OutreachSent {
                campaign,
                decision_id,
                ..
            } => {
                out[1] = ("outreach_sent.campaign", campaign);
                out[2] = ("outreach_sent.decision_id", decision_id.as_deref().unwrap_or(""));
            }
            EventKind::Purchase { order_id } => out[1] = ("purchase.order_id", order_id),
            EventKind::Complaint { reason, .. } => out[1] = ("complaint.reason", reason),
            EventKind::ConsentChanged { proof, .. } => out[1] = ("consent_changed.proof", proof),
            EventKind::PreferencesChanged { time_zone, .. } => {
                out[1] = (
                    "preferences_changed.time_zone",
                    time_zone.as_deref().unwrap_or(""),
                );
            }
            EventKind::DoNotContact { reason, .. } => out[1] = ("do_not_contact.reason", reason),
            EventKind::OutreachAuthorized {
                decision_id,
                campaign,
                requested_by,
                ..
            } => {
                out[1] = ("outreach_authorized.decision_id", decision_id);
                out[2] = ("outreach_authorized.campaign", campaign);
                out[3] = ("outreach_authorized.requested_by", requested_by);
            }
            EventKind::OutreachEngaged { .. }
            | EventKind::OutreachUnanswered { .. }
            | EventKind::PolicyActivated { .. } => {}
        }
        out.into_iter().filter(|(field, _)| !field.is_empty())
    }
}

/// Who wrote an event: tact itself (its `Authorize`, through its own producer), or
/// anyone else (callers of `RecordEvents`, other producers on the Kafka topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Tact,
    Outside,
}

/// The event-id prefix, source and kind that only tact writes (see [`Origin`]).
pub const TACT_ID_PREFIX: &str = "tact-";
pub const TACT_SOURCE: &str = "tact";

/// What an event must satisfy to be let into the log, beyond [`Event::validate`]:
/// checked once, at the edge (gRPC, Kafka), against the server's clock. The log keeps
/// what was admitted; replay never judges an event again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// How far ahead of the server's clock `occurred_at` may be.
    pub max_clock_skew: Span,
    /// The largest free-text field (URLs, topics, reasons, proofs, campaigns, sources, ...).
    pub max_text_bytes: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_clock_skew: Span(24 * 3_600_000),
            max_text_bytes: 4096,
        }
    }
}

impl Admission {
    /// Checks an event (already [`Event::validate`]d) from `origin` at the server's `now`.
    pub fn admit(&self, event: &Event, now: Timestamp, origin: Origin) -> Result<(), InvalidEvent> {
        for (field, text) in event.texts() {
            let max = if field.ends_with("decision_id") {
                MAX_ID_BYTES
            } else {
                self.max_text_bytes
            };
            if text.len() > max {
                return Err(InvalidEvent::TooLong {
                    field,
                    max,
                    got: text.len(),
                });
            }
        }
        if let EventKind::PreferencesChanged {
            accepted_channels: Some(cs),
            ..
        } = &event.kind
            && cs.len() > Channel::ALL.len()
        {
            return Err(InvalidEvent::Field {
                field: "preferences_changed.accepted_channels",
                why: format!("at most {} channels (got {})", Channel::ALL.len(), cs.len()),
            });
        }
        // Policy events are tact's alone, and only ever written to its own log: neither
        // callers nor the Kafka topic (signed by tact or not) may write one.
        if matches!(event.kind, EventKind::PolicyActivated { .. }) {
            return Err(InvalidEvent::Field {
                field: "policy_activated",
                why: "only tact records the policies it puts in force (tact policy, SIGHUP, ReloadPolicy)"
                    .into(),
            });
        }
        let ahead = event.occurred_at.since(now);
        // A withdrawal or do-not-contact is never refused for its date: whatever a
        // source's clock says, the customer said stop, and it takes effect on arrival
        // (see `takes_effect`).
        if ahead > self.max_clock_skew && !restricts(event) {
            return Err(InvalidEvent::InFuture {
                at: event.occurred_at,
                now,
                ahead,
                max: self.max_clock_skew,
            });
        }
        if origin == Origin::Outside {
            if event.event_id.starts_with(TACT_ID_PREFIX) {
                return Err(InvalidEvent::Field {
                    field: "event_id",
                    why: format!("the prefix `{TACT_ID_PREFIX}` is reserved for events tact writes itself"),
                });
            }
            if event.source == TACT_SOURCE {
                return Err(InvalidEvent::Field {
                    field: "source",
                    why: format!("`{TACT_SOURCE}` is reserved for events tact writes itself"),
                });
            }
            if matches!(event.kind, EventKind::OutreachAuthorized { .. }) {
                return Err(InvalidEvent::Field {
                    field: "outreach_authorized",
                    why:
                        "only tact records authorizations (its Authorize call); report outreach you made as \
                          outreach_sent with the decision_id"
                            .into(),
                });
            }
        }
        Ok(())
    }

    /// When an admitted event takes effect, if not at its `occurred_at`: an event dated
    /// after `now` (the server's clock, or the instant it was judged at) takes effect at
    /// `now`, when tact learns of it. The server's clock is the reference: an event
    /// dated ahead of it comes from a source whose clock runs ahead (or that sends local
    /// time as UTC), and happened when it arrived. Kept at its date, a withdrawal would
    /// leave a customer reachable for hours after they said stop, and a grant, a
    /// preference or a touch dated ahead would sort after a withdrawal, a restriction or
    /// a cap check that arrived after it (a grant stamped an hour ahead, then the
    /// withdrawal that followed it: DENY now, ALLOW in an hour). A do-not-contact's
    /// `until` and a consent's `expires_at` stay: they only start earlier.
    ///
    /// Called at the edge, before the event is logged: the log holds the event as it
    /// takes effect, so replay and live agree.
    pub fn takes_effect(&self, event: &Event, now: Timestamp) -> Option<Timestamp> {
        (event.occurred_at > now).then_some(now)
    }

    /// Checks a proposal's labels (its customer id is checked on conversion): at most
    /// [`MAX_LABEL_BYTES`] (or `max_text_bytes`, if smaller). Every answered proposal
    /// is kept in the decision audit, so a read-only caller's long labels would write
    /// to disk at its request rate (kilobytes per decision).
    pub fn admit_proposal(&self, proposal: &crate::Proposal) -> Result<(), InvalidEvent> {
        let max = self.max_text_bytes.min(MAX_LABEL_BYTES);
        for (field, text) in [
            ("campaign_id", &proposal.campaign_id),
            ("requested_by", &proposal.requested_by),
        ] {
            if text.len() > max {
                return Err(InvalidEvent::TooLong {
                    field,
                    max,
                    got: text.len(),
                });
            }
            // A newline or NUL in a label would forge lines in `tact decision` and logs.
            let control = if text.is_ascii() {
                text.bytes().any(|b| b.is_ascii_control())
            } else {
                text.chars().any(char::is_control)
            };
            if control {
                return Err(InvalidEvent::Field {
                    field,
                    why: "must not hold control characters (a newline, a tab, NUL, ...)".into(),
                });
            }
        }
        Ok(())
    }
}

/// A consent withdrawal or a do-not-contact request: what a customer says to stop.
fn restricts(event: &Event) -> bool {
    matches!(
        event.kind,
        EventKind::ConsentChanged { granted: false, .. } | EventKind::DoNotContact { .. }
    )
}

/// Whether `stored`, the event the log holds under `submitted`'s id, is `submitted` as
/// it was recorded: the same event, or the same event with its instant moved earlier,
/// to when it took effect (a retry arrives later, so its instant is moved less by
/// [`Admission::takes_effect`], or not at all). Anything else under the id is another
/// event: the id was taken. Both events are as the edge judged them.
pub fn recorded_as(submitted: &Event, stored: &Event) -> bool {
    if submitted == stored {
        return true;
    }
    // Every field but the instant (a new field must be added here: no `..`).
    let Event {
        event_id,
        customer_id,
        occurred_at,
        source,
        kind,
    } = submitted;
    stored.occurred_at < *occurred_at
        && stored.event_id == *event_id
        && stored.customer_id == *customer_id
        && stored.source == *source
        && stored.kind == *kind
}

/// Customer ids are opaque, but printable: 1 to 256 bytes, no whitespace or control characters.
pub fn validate_customer_id(id: &str) -> Result<(), InvalidEvent> {
    if id.is_empty() {
        return Err(InvalidEvent::MissingCustomerId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(InvalidEvent::CustomerIdTooLong {
            max: MAX_ID_BYTES,
            got: id.len(),
        });
    }
    // Most ids are printable ASCII: tested eight bytes at a time, no char decoding.
    if all_ascii_graphic(id.as_bytes()) {
        return Ok(());
    }
    if id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
    {
        return Err(InvalidEvent::CustomerIdFormat(id.to_owned()));
    }
    Ok(())
}

/// Unicode's invisible format characters (general category Cf: a byte order mark,
/// zero-width spaces and joiners, direction marks, tags, ...) and variation selectors:
/// an id holding one prints like the id without it, so a withdrawal sent under one
/// would land on a customer no one asks about.
fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xE0100..=0xE01EF
    )
}

/// Whether every byte is printable ASCII other than space (`0x21..=0x7e`), a word at a
/// time: a batch checks one id per decision.
fn all_ascii_graphic(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let graphic = |word: [u8; 8]| {
        let w = u64::from_le_bytes(word);
        // A byte below 0x21 borrows into its high bit (exact for bounds up to 0x80); a
        // byte of 0x7f carries into its high bit, and one of 0x80 or more has it set.
        let below = w.wrapping_sub(0x21 * ONES) & !w;
        let above = w.wrapping_add(ONES) | w;
        (below | above) & HIGH == 0
    };
    let mut words = bytes.chunks_exact(8);
    if !words.all(|w| graphic(w.try_into().expect("chunks of 8"))) {
        return false;
    }
    // The last few bytes as one more word: padded with a graphic byte, or (in an id of 8
    // bytes or more) the last 8 bytes, which the words above partly checked already.
    let tail = words.remainder();
    if tail.is_empty() {
        return true;
    }
    let mut last = [b'!'; 8];
    if bytes.len() >= 8 {
        last.copy_from_slice(&bytes[bytes.len() - 8..]);
    } else {
        last[..tail.len()].copy_from_slice(tail);
    }
    graphic(last)
}

#[cfg(test)]
mod customer_id_tests {
    use proptest::prelude::*;

    use super::*;

    /// The rule as documented, without the ASCII fast path.
    fn by_the_rule(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_ID_BYTES
            && !id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
    }

    /// Found probing a release build: a withdrawal sent under `"\u{feff}cust-1"` was
    /// recorded for a customer no one asks about, while `cust-1` stayed reachable.
    #[test]
    fn invisible_characters_are_refused_and_visible_unicode_is_not() {
        for id in [
            "\u{feff}cust-1",
            "cust\u{200b}-1",
            "cust-1\u{00ad}",
            "cust-1\u{2060}",
            "\u{202e}1-tsuc",
            "cust\u{200c}-1",
            "cust-1\u{fe0f}",
            "cust-1\u{e0001}",
            "cust\u{180e}-1",
        ] {
            let e = validate_customer_id(id).unwrap_err();
            assert!(e.to_string().contains("invisible"), "{id:?}: {e}");
        }
        for id in ["cust-1-\u{e9}", "e\u{301}t\u{e9}", "日本-42", "Ωmega", "müller#7"] {
            assert!(validate_customer_id(id).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn every_ascii_byte_and_some_unicode_are_judged_by_the_rule() {
        for b in 0u8..=127 {
            let id = format!("a{}b", b as char);
            assert_eq!(validate_customer_id(&id).is_ok(), by_the_rule(&id), "{b:#x}");
        }
        for id in [
            "ok\u{00a0}no",
            "e\u{301}t\u{e9}",
            "x\u{2028}",
            "\u{85}",
            "日本-42",
            "z\u{200b}",
        ] {
            assert_eq!(validate_customer_id(id).is_ok(), by_the_rule(id), "{id:?}");
        }
    }

    #[test]
    fn every_byte_in_every_place_of_a_word_is_judged_as_alone() {
        for len in [1, 5, 7, 8, 9, 14, 16, 23] {
            for place in 0..len {
                for b in 0u8..=255 {
                    let mut bytes = vec![b'x'; len];
                    bytes[place] = b;
                    assert_eq!(
                        all_ascii_graphic(&bytes),
                        b.is_ascii_graphic(),
                        "{b:#x} at {place} of {len}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn words_at_a_time_agree_with_a_byte_at_a_time(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(all_ascii_graphic(&bytes), bytes.iter().all(u8::is_ascii_graphic));
        }

        #[test]
        fn the_fast_path_never_changes_the_answer(id in "\\PC{0,8}|[ -~]{0,300}|.{0,4}") {
            prop_assert_eq!(validate_customer_id(&id).is_ok(), by_the_rule(&id));
        }
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    fn event(at: i64, kind: EventKind) -> Event {
        Event {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            occurred_at: Timestamp(at),
            source: "crm".into(),
            kind,
        }
    }

    fn consent(granted: bool) -> EventKind {
        EventKind::ConsentChanged {
            channel: Channel::Email,
            purpose: Purpose::Marketing,
            granted,
            expires_at: None,
            proof: "form".into(),
        }
    }

    #[test]
    fn an_event_dated_ahead_takes_effect_on_arrival() {
        let a = Admission::default();
        let now = Timestamp(1_000_000);
        let dnc = EventKind::DoNotContact {
            reason: "asked".into(),
            until: Some(Timestamp(9_000_000)),
        };
        assert_eq!(a.takes_effect(&event(1_500_000, consent(false)), now), Some(now));
        assert_eq!(a.takes_effect(&event(1_000_001, dnc.clone()), now), Some(now));
        // On time or late: as dated.
        assert_eq!(a.takes_effect(&event(1_000_000, consent(false)), now), None);
        assert_eq!(a.takes_effect(&event(900_000, dnc.clone()), now), None);
        // A grant, a touch, a complaint dated ahead: on arrival too (a grant kept at its
        // date would sort after the withdrawal that followed it).
        assert_eq!(a.takes_effect(&event(1_500_000, consent(true)), now), Some(now));
        let sent = EventKind::OutreachSent {
            channel: Channel::Call,
            purpose: Purpose::Sales,
            campaign: String::new(),
            decision_id: None,
        };
        assert_eq!(a.takes_effect(&event(1_500_000, sent), now), Some(now));
        let complaint = EventKind::Complaint {
            channel: None,
            reason: "rude".into(),
        };
        assert_eq!(
            a.takes_effect(&event(1_500_000, complaint.clone()), now),
            Some(now)
        );
        // Beyond the allowed skew: a withdrawal or do-not-contact is still admitted (it
        // takes effect now); anything else is refused.
        let far = now.0 + a.max_clock_skew.0 + 1;
        assert_eq!(a.admit(&event(far, consent(false)), now, Origin::Outside), Ok(()));
        assert_eq!(a.admit(&event(far, dnc), now, Origin::Outside), Ok(()));
        assert!(matches!(
            a.admit(&event(far, consent(true)), now, Origin::Outside),
            Err(InvalidEvent::InFuture { .. })
        ));
        assert!(matches!(
            a.admit(&event(far, complaint), now, Origin::Outside),
            Err(InvalidEvent::InFuture { .. })
        ));
    }

    #[test]
    fn a_retry_is_recorded_as_itself_another_event_under_its_id_is_not() {
        let withdrawal = event(1_500_000, consent(false));
        // Recorded at arrival (1_000_000); retried later, as dated or moved less.
        let stored = event(1_000_000, consent(false));
        assert!(recorded_as(&withdrawal, &stored));
        assert!(recorded_as(&event(1_200_000, consent(false)), &stored));
        assert!(recorded_as(&stored, &stored));
        // A grant moved the same way is itself too.
        assert!(recorded_as(
            &event(1_500_000, consent(true)),
            &event(1_000_000, consent(true))
        ));
        // Not the same event: another kind, another customer, or an instant it could not
        // have been moved to.
        assert!(!recorded_as(&event(1_000_000, consent(true)), &stored));
        let mut other = withdrawal.clone();
        other.customer_id = "c2".into();
        assert!(!recorded_as(&other, &stored));
        assert!(!recorded_as(&event(900_000, consent(false)), &stored));
    }
}

//! Conversions between the `tact.v1` wire types and [`tact_core`]'s types.
//!
//! Wire input is untrusted: every conversion from a wire type checks what the
//! wire format cannot (enums set and known, oneofs and timestamps present, values
//! in range) and reports the offending field as a path such as
//! `consent_changed.channel`. Conversions to wire types cannot fail; instants and
//! spans outside what protobuf can represent are clamped to its range.

use pbjson_types::{Duration as PbDuration, Timestamp as PbTimestamp};
use tact_core::event::validate_customer_id;
use tact_core::{
    Channel, ContactLimit, Decision, Effect, Engagement, Event, EventKind, Explain, InvalidEvent,
    NonResponse, Proposal, Purpose, Span, Timestamp, Verdict,
};

use crate::pb;
use crate::pb::interaction_event::Kind;

/// Why a wire message cannot be converted: the field at fault, as a path, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct ConvertError {
    /// The offending field as a path, e.g. `occurred_at` or `consent_changed.channel`;
    /// `json` when the input is not valid JSON for the message.
    pub field: String,
    /// What is wrong with it.
    pub why: String,
}

impl ConvertError {
    pub fn new(field: impl Into<String>, why: impl Into<String>) -> Self {
        ConvertError {
            field: field.into(),
            why: why.into(),
        }
    }

    fn must_be_set(field: impl Into<String>) -> Self {
        ConvertError::new(field, "must be set")
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Maps an [`InvalidEvent`] (whose messages read `field: why`) to a [`ConvertError`].
pub fn invalid_event(e: &InvalidEvent) -> ConvertError {
    split_field_message(&e.to_string(), "event")
}

/// Splits a `field: why` message; `fallback` names the field when there is no path prefix.
fn split_field_message(msg: &str, fallback: &str) -> ConvertError {
    match msg.split_once(": ") {
        Some((field, why))
            if !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c)) =>
        {
            ConvertError::new(field, why)
        }
        _ => ConvertError::new(fallback, msg),
    }
}

// ---------------------------------------------------------------------------------------------
// Time

/// The earliest instant a `google.protobuf.Timestamp` may hold: 0001-01-01T00:00:00Z.
const MIN_PB_SECONDS: i64 = -62_135_596_800;
/// The latest whole second a `google.protobuf.Timestamp` may hold: 9999-12-31T23:59:59Z.
const MAX_PB_SECONDS: i64 = 253_402_300_799;
/// The largest magnitude of a `google.protobuf.Duration`, in seconds (about 10,000 years).
const MAX_PB_DURATION_SECONDS: i64 = 315_576_000_000;
const NANOS_PER_MILLI: i32 = 1_000_000;
const NANOS_PER_SECOND: i32 = 1_000_000_000;

/// Converts a wire timestamp, naming `field` on failure. Sub-millisecond precision is dropped.
pub fn timestamp_from_pb(ts: &PbTimestamp, field: &str) -> Result<Timestamp, ConvertError> {
    if !(0..NANOS_PER_SECOND).contains(&ts.nanos) {
        return Err(ConvertError::new(
            field,
            format!("nanos must be in 0..=999999999 (got {})", ts.nanos),
        ));
    }
    if !(MIN_PB_SECONDS..=MAX_PB_SECONDS).contains(&ts.seconds) {
        return Err(ConvertError::new(
            field,
            format!(
                "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z (got {} s)",
                ts.seconds
            ),
        ));
    }
    // In range, so this cannot overflow.
    Ok(Timestamp(
        ts.seconds * 1_000 + i64::from(ts.nanos / NANOS_PER_MILLI),
    ))
}

/// Converts an instant to a wire timestamp, clamped to the range protobuf allows.
pub fn timestamp_to_pb(t: Timestamp) -> PbTimestamp {
    let seconds = t.0.div_euclid(1_000);
    let millis = t.0.rem_euclid(1_000);
    if seconds < MIN_PB_SECONDS {
        PbTimestamp {
            seconds: MIN_PB_SECONDS,
            nanos: 0,
        }
    } else if seconds > MAX_PB_SECONDS {
        PbTimestamp {
            seconds: MAX_PB_SECONDS,
            nanos: 999 * NANOS_PER_MILLI,
        }
    } else {
        // 0 <= millis < 1000, so the product fits.
        PbTimestamp {
            seconds,
            nanos: millis as i32 * NANOS_PER_MILLI,
        }
    }
}

/// Converts a wire duration, naming `field` on failure. Sub-millisecond precision is dropped.
pub fn span_from_pb(d: &PbDuration, field: &str) -> Result<Span, ConvertError> {
    if d.nanos <= -NANOS_PER_SECOND || d.nanos >= NANOS_PER_SECOND {
        return Err(ConvertError::new(
            field,
            format!("nanos must be in -999999999..=999999999 (got {})", d.nanos),
        ));
    }
    if (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(ConvertError::new(
            field,
            "seconds and nanos must have the same sign",
        ));
    }
    if d.seconds.unsigned_abs() > MAX_PB_DURATION_SECONDS.unsigned_abs() {
        return Err(ConvertError::new(
            field,
            format!(
                "must be at most {MAX_PB_DURATION_SECONDS} s in magnitude (got {} s)",
                d.seconds
            ),
        ));
    }
    // In range, so this cannot overflow.
    Ok(Span(d.seconds * 1_000 + i64::from(d.nanos / NANOS_PER_MILLI)))
}

/// Converts a span to a wire duration, clamped to the range protobuf allows.
pub fn span_to_pb(s: Span) -> PbDuration {
    let limit = MAX_PB_DURATION_SECONDS * 1_000;
    let ms = s.0.clamp(-limit, limit);
    // Truncating division keeps seconds and nanos of the same sign; |ms % 1000| < 1000.
    PbDuration {
        seconds: ms / 1_000,
        nanos: (ms % 1_000) as i32 * NANOS_PER_MILLI,
    }
}

fn opt_timestamp_from_pb(ts: Option<&PbTimestamp>, field: &str) -> Result<Option<Timestamp>, ConvertError> {
    ts.map(|t| timestamp_from_pb(t, field)).transpose()
}

// ---------------------------------------------------------------------------------------------
// Enums

macro_rules! enum_pair {
    (
        $(#[$meta:meta])*
        $pb:ident <=> $core:ident, $unspecified:literal, fn $from_wire:ident { $($pv:ident <=> $cv:ident),+ $(,)? }
    ) => {
        impl From<$core> for pb::$pb {
            fn from(c: $core) -> Self {
                match c {
                    $($core::$cv => pb::$pb::$pv,)+
                }
            }
        }

        /// Fails for the `_UNSPECIFIED` value; the error's field is the enum's name.
        impl TryFrom<pb::$pb> for $core {
            type Error = ConvertError;

            fn try_from(p: pb::$pb) -> Result<Self, ConvertError> {
                match p {
                    pb::$pb::Unspecified => Err(ConvertError::new(
                        stringify!($from_wire).trim_end_matches("_from_wire"),
                        concat!("must be set (got ", $unspecified, ")"),
                    )),
                    $(pb::$pb::$pv => Ok($core::$cv),)+
                }
            }
        }

        $(#[$meta])*
        pub fn $from_wire(value: i32, field: &str) -> Result<$core, ConvertError> {
            match pb::$pb::try_from(value) {
                Ok(pb::$pb::Unspecified) => {
                    Err(ConvertError::new(field, concat!("must be set (got ", $unspecified, ")")))
                }
                Ok(p) => $core::try_from(p).map_err(|e| ConvertError::new(field, e.why)),
                Err(_) => Err(ConvertError::new(field, format!("unknown value {value}"))),
            }
        }
    };
}

enum_pair!(
    /// Converts a wire `tact.v1.Channel` value, naming `field` when it is unspecified or unknown.
    Channel <=> Channel, "CHANNEL_UNSPECIFIED", fn channel_from_wire {
        Email <=> Email,
        Sms <=> Sms,
        Call <=> Call,
        Push <=> Push,
        DirectMail <=> DirectMail,
        SalesMeeting <=> SalesMeeting,
        SocialDm <=> SocialDm,
        InApp <=> InApp,
    }
);

enum_pair!(
    /// Converts a wire `tact.v1.Purpose` value, naming `field` when it is unspecified or unknown.
    Purpose <=> Purpose, "PURPOSE_UNSPECIFIED", fn purpose_from_wire {
        Marketing <=> Marketing,
        Sales <=> Sales,
        Service <=> Service,
        Transactional <=> Transactional,
    }
);

enum_pair!(
    /// Converts a wire `tact.v1.Engagement` value, naming `field` when it is unspecified or unknown.
    Engagement <=> Engagement, "ENGAGEMENT_UNSPECIFIED", fn engagement_from_wire {
        Opened <=> Opened,
        Clicked <=> Clicked,
        Replied <=> Replied,
        Answered <=> Answered,
        Attended <=> Attended,
    }
);

enum_pair!(
    /// Converts a wire `tact.v1.NonResponse` value, naming `field` when it is unspecified or unknown.
    NonResponse <=> NonResponse, "NON_RESPONSE_UNSPECIFIED", fn non_response_from_wire {
        Ignored <=> Ignored,
        Bounced <=> Bounced,
    }
);

enum_pair!(
    /// Converts a wire `tact.v1.Verdict` value, naming `field` when it is unspecified or unknown.
    Verdict <=> Verdict, "VERDICT_UNSPECIFIED", fn verdict_from_wire {
        Allow <=> Allow,
        Deny <=> Deny,
        Defer <=> Defer,
    }
);

enum_pair!(
    /// Converts a wire `tact.v1.Effect` value, naming `field` when it is unspecified or unknown.
    Effect <=> Effect, "EFFECT_UNSPECIFIED", fn effect_from_wire {
        Allow <=> Allow,
        Deny <=> Deny,
        Defer <=> Defer,
    }
);

fn channel_to_wire(c: Channel) -> i32 {
    pb::Channel::from(c) as i32
}

fn purpose_to_wire(p: Purpose) -> i32 {
    pb::Purpose::from(p) as i32
}

// ---------------------------------------------------------------------------------------------
// Events

/// Checks and converts a wire event: every field the core needs must be present and
/// in range, and the result must pass [`Event::validate`].
impl TryFrom<pb::InteractionEvent> for Event {
    type Error = ConvertError;

    fn try_from(e: pb::InteractionEvent) -> Result<Self, ConvertError> {
        let occurred_at = match &e.occurred_at {
            Some(ts) => timestamp_from_pb(ts, "occurred_at")?,
            None => return Err(ConvertError::must_be_set("occurred_at")),
        };
        let kind = match e.kind {
            Some(kind) => kind_from_pb(kind)?,
            None => {
                return Err(ConvertError::new(
                    "kind",
                    "must be set to one of page_viewed, content_downloaded, quote_requested, \
                     contact_requested, inbound_message, outreach_sent, outreach_engaged, \
                     outreach_unanswered, purchase, complaint, consent_changed, preferences_changed, \
                     do_not_contact, outreach_authorized",
                ));
            }
        };
        let event = Event {
            event_id: e.event_id,
            customer_id: e.customer_id,
            occurred_at,
            source: e.source,
            kind,
        };
        event.validate().map_err(|err| invalid_event(&err))?;
        Ok(event)
    }
}

fn kind_from_pb(kind: Kind) -> Result<EventKind, ConvertError> {
    Ok(match kind {
        Kind::PageViewed(m) => EventKind::PageViewed {
            url: m.url,
            category: m.category,
        },
        Kind::ContentDownloaded(m) => EventKind::ContentDownloaded { asset: m.asset },
        Kind::QuoteRequested(m) => EventKind::QuoteRequested { product: m.product },
        Kind::ContactRequested(m) => EventKind::ContactRequested {
            channel: channel_from_wire(m.channel, "contact_requested.channel")?,
            topic: m.topic,
        },
        Kind::InboundMessage(m) => EventKind::InboundMessage {
            channel: channel_from_wire(m.channel, "inbound_message.channel")?,
            topic: m.topic,
        },
        Kind::OutreachSent(m) => EventKind::OutreachSent {
            channel: channel_from_wire(m.channel, "outreach_sent.channel")?,
            purpose: purpose_from_wire(m.purpose, "outreach_sent.purpose")?,
            campaign: m.campaign,
            decision_id: m.decision_id,
        },
        Kind::OutreachEngaged(m) => EventKind::OutreachEngaged {
            channel: channel_from_wire(m.channel, "outreach_engaged.channel")?,
            engagement: engagement_from_wire(m.engagement, "outreach_engaged.engagement")?,
        },
        Kind::OutreachUnanswered(m) => EventKind::OutreachUnanswered {
            channel: channel_from_wire(m.channel, "outreach_unanswered.channel")?,
            outcome: non_response_from_wire(m.outcome, "outreach_unanswered.outcome")?,
        },
        Kind::Purchase(m) => EventKind::Purchase { order_id: m.order_id },
        Kind::Complaint(m) => EventKind::Complaint {
            // Unset and CHANNEL_UNSPECIFIED both mean "contact in general".
            channel: match m.channel {
                None | Some(0) => None,
                Some(v) => Some(channel_from_wire(v, "complaint.channel")?),
            },
            reason: m.reason,
        },
        Kind::ConsentChanged(m) => EventKind::ConsentChanged {
            channel: channel_from_wire(m.channel, "consent_changed.channel")?,
            purpose: purpose_from_wire(m.purpose, "consent_changed.purpose")?,
            granted: m.granted,
            expires_at: opt_timestamp_from_pb(m.expires_at.as_ref(), "consent_changed.expires_at")?,
            proof: m.proof,
        },
        Kind::PreferencesChanged(m) => {
            let accepted_channels = match m.accepted_channels {
                None => None,
                Some(list) => Some(
                    list.channels
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| {
                            channel_from_wire(
                                c,
                                &format!("preferences_changed.accepted_channels.channels[{i}]"),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let max_contacts = match m.max_contacts {
                None => None,
                Some(limit) => {
                    let window = match (&limit.window, limit.max) {
                        (Some(d), _) => span_from_pb(d, "preferences_changed.max_contacts.window")?,
                        (None, 0) => Span(0),
                        (None, _) => {
                            return Err(ConvertError::new(
                                "preferences_changed.max_contacts.window",
                                "must be set when max is positive",
                            ));
                        }
                    };
                    Some(ContactLimit {
                        max: limit.max,
                        window,
                    })
                }
            };
            EventKind::PreferencesChanged {
                time_zone: m.time_zone,
                accepted_channels,
                max_contacts,
            }
        }
        Kind::DoNotContact(m) => EventKind::DoNotContact {
            reason: m.reason,
            until: opt_timestamp_from_pb(m.until.as_ref(), "do_not_contact.until")?,
        },
        Kind::OutreachAuthorized(m) => EventKind::OutreachAuthorized {
            decision_id: m.decision_id,
            channel: channel_from_wire(m.channel, "outreach_authorized.channel")?,
            purpose: purpose_from_wire(m.purpose, "outreach_authorized.purpose")?,
            campaign: m.campaign,
            requested_by: m.requested_by,
        },
        Kind::PolicyActivated(m) => EventKind::PolicyActivated {
            version: m.version,
            content_hash: m.content_hash,
            text: m.text,
        },
    })
}

impl From<&Event> for pb::InteractionEvent {
    fn from(e: &Event) -> Self {
        pb::InteractionEvent {
            event_id: e.event_id.clone(),
            customer_id: e.customer_id.clone(),
            occurred_at: Some(timestamp_to_pb(e.occurred_at)),
            source: e.source.clone(),
            kind: Some(kind_to_pb(&e.kind)),
        }
    }
}

fn kind_to_pb(kind: &EventKind) -> Kind {
    match kind {
        EventKind::PageViewed { url, category } => Kind::PageViewed(pb::PageViewed {
            url: url.clone(),
            category: category.clone(),
        }),
        EventKind::ContentDownloaded { asset } => {
            Kind::ContentDownloaded(pb::ContentDownloaded { asset: asset.clone() })
        }
        EventKind::QuoteRequested { product } => Kind::QuoteRequested(pb::QuoteRequested {
            product: product.clone(),
        }),
        EventKind::ContactRequested { channel, topic } => Kind::ContactRequested(pb::ContactRequested {
            channel: channel_to_wire(*channel),
            topic: topic.clone(),
        }),
        EventKind::InboundMessage { channel, topic } => Kind::InboundMessage(pb::InboundMessage {
            channel: channel_to_wire(*channel),
            topic: topic.clone(),
        }),
        EventKind::OutreachSent {
            channel,
            purpose,
            campaign,
            decision_id,
        } => Kind::OutreachSent(pb::OutreachSent {
            channel: channel_to_wire(*channel),
            purpose: purpose_to_wire(*purpose),
            campaign: campaign.clone(),
            decision_id: decision_id.clone(),
        }),
        EventKind::OutreachEngaged { channel, engagement } => Kind::OutreachEngaged(pb::OutreachEngaged {
            channel: channel_to_wire(*channel),
            engagement: pb::Engagement::from(*engagement) as i32,
        }),
        EventKind::OutreachUnanswered { channel, outcome } => {
            Kind::OutreachUnanswered(pb::OutreachUnanswered {
                channel: channel_to_wire(*channel),
                outcome: pb::NonResponse::from(*outcome) as i32,
            })
        }
        EventKind::Purchase { order_id } => Kind::Purchase(pb::Purchase {
            order_id: order_id.clone(),
        }),
        EventKind::Complaint { channel, reason } => Kind::Complaint(pb::Complaint {
            channel: channel.map(channel_to_wire),
            reason: reason.clone(),
        }),
        EventKind::ConsentChanged {
            channel,
            purpose,
            granted,
            expires_at,
            proof,
        } => Kind::ConsentChanged(pb::ConsentChanged {
            channel: channel_to_wire(*channel),
            purpose: purpose_to_wire(*purpose),
            granted: *granted,
            expires_at: expires_at.map(timestamp_to_pb),
            proof: proof.clone(),
        }),
        EventKind::PreferencesChanged {
            time_zone,
            accepted_channels,
            max_contacts,
        } => Kind::PreferencesChanged(pb::PreferencesChanged {
            time_zone: time_zone.clone(),
            accepted_channels: accepted_channels.as_ref().map(|cs| pb::ChannelList {
                channels: cs.iter().map(|&c| channel_to_wire(c)).collect(),
            }),
            max_contacts: max_contacts.map(|l| pb::ContactLimit {
                max: l.max,
                window: Some(span_to_pb(l.window)),
            }),
        }),
        EventKind::DoNotContact { reason, until } => Kind::DoNotContact(pb::DoNotContact {
            reason: reason.clone(),
            until: until.map(timestamp_to_pb),
        }),
        EventKind::OutreachAuthorized {
            decision_id,
            channel,
            purpose,
            campaign,
            requested_by,
        } => Kind::OutreachAuthorized(pb::OutreachAuthorized {
            decision_id: decision_id.clone(),
            channel: channel_to_wire(*channel),
            purpose: purpose_to_wire(*purpose),
            campaign: campaign.clone(),
            requested_by: requested_by.clone(),
        }),
        EventKind::PolicyActivated {
            version,
            content_hash,
            text,
        } => Kind::PolicyActivated(pb::PolicyActivated {
            version: version.clone(),
            content_hash: content_hash.clone(),
            text: text.clone(),
        }),
    }
}

/// Parses one event in the canonical protobuf JSON mapping of `tact.v1.InteractionEvent`
/// (e.g. `{"eventId":"e1","customerId":"c1","occurredAt":"2026-11-20T09:00:00Z",
/// "pageViewed":{"url":"/pricing","category":"pricing"}}`) and checks it like
/// `TryFrom<pb::InteractionEvent>`. Malformed JSON and unknown fields fail with field `json`.
pub fn event_from_json(line: &str) -> Result<Event, ConvertError> {
    let wire: pb::InteractionEvent =
        serde_json::from_str(line).map_err(|e| ConvertError::new("json", e.to_string()))?;
    Event::try_from(wire)
}

/// Renders an event in the canonical protobuf JSON mapping, on one line.
pub fn event_to_json(e: &Event) -> String {
    // Cannot fail: enum values come from core enums, and timestamps and durations are
    // clamped to protobuf's range, which is what the JSON mapping can render.
    serde_json::to_string(&pb::InteractionEvent::from(e))
        .expect("tact.v1.InteractionEvent built from a core Event always serializes")
}

/// How an event is encoded on a stream (e.g. a Kafka message value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// `tact.v1.InteractionEvent` in binary protobuf.
    Protobuf,
    /// The canonical protobuf JSON mapping of the same message.
    Json,
}

impl WireFormat {
    /// The format named by a `content-type` header (`application/json`,
    /// `application/x-protobuf`, `application/protobuf`, `application/vnd.google.protobuf`,
    /// parameters such as `; charset=utf-8` ignored), if it names one.
    pub fn from_content_type(content_type: &str) -> Option<WireFormat> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "text/json" => Some(WireFormat::Json),
            "application/x-protobuf" | "application/protobuf" | "application/vnd.google.protobuf" => {
                Some(WireFormat::Protobuf)
            }
            _ => None,
        }
    }

    /// Guesses the format from the bytes: JSON starts with `{` (after whitespace). A
    /// protobuf `InteractionEvent` cannot start with `{` (it would be field 15 as a
    /// deprecated group), but it can look like whitespace and then `{`: `\n` is the tag
    /// of field 1 (`event_id`), so an id of 9, 10, 12, 13 or 32 bytes starting with `{`
    /// reads as `\n`, whitespace, `{`. [`event_from_bytes`] therefore falls back to
    /// protobuf when detected JSON does not parse.
    pub fn detect(bytes: &[u8]) -> WireFormat {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => WireFormat::Json,
            _ => WireFormat::Protobuf,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            WireFormat::Protobuf => "application/x-protobuf",
            WireFormat::Json => "application/json",
        }
    }
}

/// Decodes and checks one event from a stream message's value, in `format` or, when
/// `None`, the detected one. Undecodable input fails with field `protobuf` or `json`.
pub fn event_from_bytes(bytes: &[u8], format: Option<WireFormat>) -> Result<Event, ConvertError> {
    let protobuf = |bytes: &[u8]| {
        <pb::InteractionEvent as prost::Message>::decode(bytes)
            .map_err(|e| ConvertError::new("protobuf", e.to_string()))
    };
    let json = |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).map_err(|e| ConvertError::new("json", e.to_string()))?;
        serde_json::from_str::<pb::InteractionEvent>(text)
            .map_err(|e| ConvertError::new("json", e.to_string()))
    };
    let wire = match format {
        Some(WireFormat::Protobuf) => protobuf(bytes)?,
        Some(WireFormat::Json) => json(bytes)?,
        None => match WireFormat::detect(bytes) {
            WireFormat::Protobuf => protobuf(bytes)?,
            // Not JSON after all? It may be protobuf that looks like it (see `detect`).
            WireFormat::Json => json(bytes).or_else(|e| protobuf(bytes).map_err(|_| e))?,
        },
    };
    Event::try_from(wire)
}

/// Encodes an event for a stream message's value.
pub fn event_to_bytes(e: &Event, format: WireFormat) -> Vec<u8> {
    match format {
        WireFormat::Protobuf => prost::Message::encode_to_vec(&pb::InteractionEvent::from(e)),
        WireFormat::Json => event_to_json(e).into_bytes(),
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions

/// Renders a core decision for the wire, with each reason's plain-English message.
pub fn decision_to_pb(
    d: &Decision,
    decision_id: &str,
    policy_version: &str,
    log_position: u64,
    customer_id: &str,
) -> pb::Decision {
    decision_to_pb_explained(
        d,
        decision_id.to_owned(),
        policy_version,
        log_position,
        customer_id.to_owned(),
        Explain::Full,
    )
}

/// Converts a wire `tact.v1.Detail` value (how much of a decision to send), naming
/// `field` when it is unknown. `DETAIL_FULL`, the default, is the full answer.
pub fn explain_from_wire(value: i32, field: &str) -> Result<Explain, ConvertError> {
    match pb::Detail::try_from(value) {
        Ok(pb::Detail::Full) => Ok(Explain::Full),
        Ok(pb::Detail::Rules) => Ok(Explain::Reasons),
        Ok(pb::Detail::Verdict) => Ok(Explain::Verdict),
        Err(_) => Err(ConvertError::new(field, format!("unknown value {value}"))),
    }
}

/// [`decision_to_pb`] at a level of detail: below [`Explain::Full`] the reasons'
/// sentences are not rendered (a decision worked out at that level has no
/// alternatives, and at [`Explain::Verdict`] no reasons either). The ids are moved in,
/// not copied: a screening batch converts thousands.
pub fn decision_to_pb_explained(
    d: &Decision,
    decision_id: String,
    policy_version: &str,
    log_position: u64,
    customer_id: String,
    explain: Explain,
) -> pb::Decision {
    let full = explain == Explain::Full;
    pb::Decision {
        verdict: pb::Verdict::from(d.verdict) as i32,
        not_before: d.not_before.map(timestamp_to_pb),
        reasons: d
            .reasons
            .iter()
            .map(|r| pb::Reason {
                rule_id: r.rule_id.to_string(),
                effect: pb::Effect::from(r.effect) as i32,
                message: if full { r.message() } else { String::new() },
            })
            .collect(),
        alternatives: d
            .alternatives
            .iter()
            .map(|a| pb::Alternative {
                channel: channel_to_wire(a.channel),
                purpose: purpose_to_wire(a.purpose),
                not_before: a.not_before.map(timestamp_to_pb),
                note: a.note.to_string(),
            })
            .collect(),
        decision_id,
        policy_version: policy_version.to_owned(),
        log_position,
        customer_id,
        error: None,
    }
}

/// The answer, in a batch or stream, to request `index` that could not be decided: no
/// verdict (`VERDICT_UNSPECIFIED`), the request's customer id, and what is wrong with it.
pub fn item_error_to_pb(index: u64, customer_id: &str, e: ConvertError) -> pb::Decision {
    pb::Decision {
        customer_id: customer_id.to_owned(),
        error: Some(pb::ItemError {
            index,
            field: e.field,
            message: e.why,
        }),
        ..pb::Decision::default()
    }
}

/// [`proposal_from_pb`], moving the request's strings into the proposal instead of
/// copying them: on success `req` is left with empty strings; on error it is untouched.
pub fn proposal_from_pb_taken(
    req: &mut pb::DecideRequest,
) -> Result<(Proposal, Option<Timestamp>), ConvertError> {
    validate_customer_id(&req.customer_id).map_err(|e| ConvertError {
        field: "customer_id".to_owned(),
        why: invalid_event(&e).why,
    })?;
    let channel = channel_from_wire(req.channel, "channel")?;
    let purpose = purpose_from_wire(req.purpose, "purpose")?;
    let at = opt_timestamp_from_pb(req.at.as_ref(), "at")?;
    let proposal = Proposal {
        customer_id: std::mem::take(&mut req.customer_id),
        channel,
        purpose,
        campaign_id: std::mem::take(&mut req.campaign_id),
        requested_by: std::mem::take(&mut req.requested_by),
    };
    Ok((proposal, at))
}

/// Checks and converts an audience's shared proposal (`DecideBatchRequest.audience`):
/// the proposal with an empty `customer_id` (each customer's id is put in as it is
/// decided), and the instant to decide at. Its strings are moved out of `audience`;
/// errors name the field under `audience.`. The customer ids are not looked at: each
/// is checked on its own (see [`audience_customer_error`]).
pub fn audience_from_pb(audience: &mut pb::Audience) -> Result<(Proposal, Option<Timestamp>), ConvertError> {
    let channel = channel_from_wire(audience.channel, "audience.channel")?;
    let purpose = purpose_from_wire(audience.purpose, "audience.purpose")?;
    let at = opt_timestamp_from_pb(audience.at.as_ref(), "audience.at")?;
    let proposal = Proposal {
        customer_id: String::new(),
        channel,
        purpose,
        campaign_id: std::mem::take(&mut audience.campaign_id),
        requested_by: std::mem::take(&mut audience.requested_by),
    };
    Ok((proposal, at))
}

/// Why item `index` of an audience cannot be decided, if it cannot: its customer id
/// is not valid.
pub fn audience_customer_error(index: usize, customer_id: &str) -> Option<pb::ItemError> {
    validate_customer_id(customer_id).err().map(|e| pb::ItemError {
        index: index as u64,
        field: format!("audience.customer_ids[{index}]"),
        message: invalid_event(&e).why,
    })
}

/// Checks and converts a decide request: the proposal, and the instant to decide at
/// (`None`: now, as the caller's clock says).
pub fn proposal_from_pb(req: &pb::DecideRequest) -> Result<(Proposal, Option<Timestamp>), ConvertError> {
    proposal_from_pb_taken(&mut req.clone())
}

//! The contact policy: rules as data, loaded from TOML and validated.
//!
//! Each `[[rule]]` has an `id`, a `type`, optional `channels` and `purposes` it
//! applies to (absent: all), and the parameters of its type. Operators change
//! numbers, channels, purposes and windows without recompiling.

use std::collections::HashSet;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Deserialize;

use crate::event::{Channel, Purpose};
pub use crate::rules::answer_first::AnswerFirst;
pub use crate::rules::complaint_cool_off::ComplaintCoolOff;
pub use crate::rules::consent::{Consent, ContactRequestConsent, SoftOptIn};
pub use crate::rules::customer_preferences::CustomerPreferences;
pub use crate::rules::earned_meeting::EarnedMeeting;
pub use crate::rules::fatigue::{DEFAULT_REPLY_WINDOW, Fatigue};
pub use crate::rules::frequency_cap::FrequencyCap;
pub use crate::rules::quiet_hours::QuietHours;
pub use crate::rules::research_cooldown::ResearchCooldown;
pub use crate::rules::service_reply::ServiceReply;
pub use crate::rules::transactional::Transactional;
use crate::state::Retention;
use crate::time::{DAY, Span, SpanText};

/// A loaded, validated policy. Immutable: it is only made by
/// [`Policy::from_toml_str`], and what is derived from the rules (the retention, which
/// rules apply to each channel and purpose) is computed then, so it cannot go stale.
#[derive(Clone, Debug)]
pub struct Policy {
    version: Arc<str>,
    default_time_zone: Tz,
    rules: Vec<Rule>,
    retention: Retention,
    /// For each `(channel, purpose)`, the rules `decide` visits, as a bit set of rule
    /// indexes (see [`Policy::rule_set`]).
    rule_sets: RuleSets,
    /// [`exemption_mask`] of the first 64 rules.
    exemptions: u64,
    /// The `stale_state` rules among the first 64, as a bit set of their indexes: a
    /// decision on state that is not behind does not visit them (they only deny when it
    /// is).
    stale_state: u64,
    /// The text it was loaded from (recorded in the log when the policy takes effect).
    text: Arc<str>,
}

#[derive(Clone, Debug)]
struct RuleSets {
    sets: [u64; 32],
}

impl RuleSets {
    fn for_rules(rules: &[Rule]) -> RuleSets {
        let mut sets = [0u64; 32];
        for &channel in Channel::ALL {
            for &purpose in Purpose::ALL {
                sets[Self::slot(channel, purpose)] = rules_to_visit(rules, 0, channel, purpose);
            }
        }
        RuleSets { sets }
    }

    fn slot(channel: Channel, purpose: Purpose) -> usize {
        channel as usize * 4 + purpose as usize
    }
}

/// The rules `decide` visits for `(channel, purpose)` among `rules[base..base + 64]`,
/// as a bit set of their indexes less `base`: those that apply, and do-not-contact
/// rules if a transactional rule that applies says do-not-contact holds back
/// transactional messages too.
pub(crate) fn rules_to_visit(rules: &[Rule], base: usize, channel: Channel, purpose: Purpose) -> u64 {
    let transactional_too = purpose == Purpose::Transactional
        && rules.iter().any(|r| {
            matches!(&r.kind, RuleKind::Transactional(t) if t.respect_do_not_contact)
                && r.applies(channel, purpose)
        });
    let mut set = 0u64;
    for (i, r) in rules.iter().skip(base).enumerate().take(64) {
        let dnc = transactional_too && matches!(r.kind, RuleKind::DoNotContact);
        if r.applies(channel, purpose) || dnc {
            set |= 1 << i;
        }
    }
    set
}

/// Among `rules[base..base + 64]`, the exemptions (transactional and service-reply
/// rules), as a bit set of their indexes less `base`. `decide` looks at them before any
/// other rule, so what they exempt from does not depend on the order of the rules.
pub(crate) fn exemption_mask(rules: &[Rule], base: usize) -> u64 {
    let mut set = 0u64;
    for (i, r) in rules.iter().skip(base).enumerate().take(64) {
        if r.kind.is_exemption() {
            set |= 1 << i;
        }
    }
    set
}

/// One rule of a loaded policy (read-only: see [`Policy`]).
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) id: Arc<str>,
    /// Bit set of channels the rule applies to (all bits: every channel).
    pub(crate) channels: u8,
    /// Bit set of purposes the rule applies to.
    pub(crate) purposes: u8,
    /// When this rule holds a proposal back, suggest this channel instead.
    pub(crate) suggest: Option<Channel>,
    pub(crate) kind: RuleKind,
}

impl Rule {
    /// The rule's id, as it appears in the decisions it takes part in.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Bit set of the channels the rule applies to ([`Channel::bit`]).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Bit set of the purposes the rule applies to ([`Purpose::bit`]).
    pub fn purposes(&self) -> u8 {
        self.purposes
    }

    /// The channel suggested instead when the rule holds a proposal back.
    pub fn suggest(&self) -> Option<Channel> {
        self.suggest
    }

    /// The rule's type and parameters.
    pub fn kind(&self) -> &RuleKind {
        &self.kind
    }

    pub fn applies(&self, channel: Channel, purpose: Purpose) -> bool {
        self.channels & channel.bit() != 0 && self.purposes & purpose.bit() != 0
    }
}

#[derive(Clone, Debug)]
pub enum RuleKind {
    /// The proposal's `(channel, purpose)` needs a current grant.
    Consent(Consent),
    /// A reply within `window` after an inbound message or contact request needs no
    /// consent, is not held back by do-not-contact, and never counts against caps.
    ServiceReply(ServiceReply),
    /// Transactional messages need no consent and never count against caps.
    Transactional(Transactional),
    /// Blocks the rule's purposes while a do-not-contact is in force
    /// (service replies to the customer's own message excepted).
    DoNotContact,
    /// DENY for a while after a complaint, on every channel.
    ComplaintCoolOff(ComplaintCoolOff),
    /// Holds back the rule's channels after research signals.
    ResearchCooldown(ResearchCooldown),
    /// A meeting needs a meeting request or enough engagements in `window`.
    EarnedMeeting(EarnedMeeting),
    /// At most `max` outreaches on the rule's channels (all of them together), counted
    /// over the rule's purposes, in any sliding `window`.
    FrequencyCap(FrequencyCap),
    /// Contact only in open hours, in the customer's time zone.
    QuietHours(QuietHours),
    /// After `unanswered` unanswered outreaches in a row on a channel, sent within
    /// `within`, the channel pauses for `pause` from when the last of them became
    /// unanswered, or until the customer engages there. An outreach is unanswered once
    /// an `OutreachUnanswered` event on its channel (ignored or bounced) follows it, or
    /// once `reply_window` has passed after it without engagement on the channel.
    Fatigue(Fatigue),
    /// While the customer's own message (within `open_for`) waits for a service
    /// answer, the rule's purposes are denied on every channel.
    AnswerFirst(AnswerFirst),
    /// Fail closed: denies the rule's channels and purposes when the state may be
    /// missing recent events (the lag passed to [`crate::decide_with_lag`]).
    StaleState,
    /// The customer's accepted channels and own frequency limit.
    CustomerPreferences(CustomerPreferences),
}

impl RuleKind {
    /// Whether the rule exempts proposals from others (transactional, service reply).
    pub fn is_exemption(&self) -> bool {
        matches!(self, RuleKind::Transactional(_) | RuleKind::ServiceReply(_))
    }
}

/// What is wrong with a policy, naming the rule and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not TOML, or not a policy's shape (the parser's error, with where).
    #[error("policy is not valid TOML: {0}")]
    Syntax(#[source] toml::de::Error),
    #[error("policy field `{field}`: {why}")]
    Top { field: &'static str, why: String },
    #[error("rule #{index}: `id` is missing or empty")]
    MissingId { index: usize },
    #[error("rule `{id}`: duplicate id")]
    DuplicateId { id: String },
    #[error("rule `{id}`: field `{field}`: {why}")]
    Rule { id: String, field: String, why: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: String,
    default_time_zone: String,
    #[serde(default)]
    rule: Vec<toml::Table>,
}

fn all_bits<T: Copy>(all: &[T], bit: impl Fn(T) -> u8) -> u8 {
    all.iter().fold(0, |m, x| m | bit(*x))
}

/// Reads one `[[rule]]` table: each rule type's `read` takes its parameters through it,
/// and every error names the rule and the field.
pub(crate) struct RuleReader<'a> {
    id: String,
    table: &'a toml::Table,
    used: HashSet<&'static str>,
}

impl RuleReader<'_> {
    pub(crate) fn err(&self, field: &str, why: impl Into<String>) -> PolicyError {
        PolicyError::Rule {
            id: self.id.clone(),
            field: field.to_owned(),
            why: why.into(),
        }
    }

    /// Refuses a count of touches (a cap's `max`, fatigue's `unanswered`) over
    /// [`MAX_COUNT`]: the state keeps no more touches of a kind than the largest count.
    pub(crate) fn at_most_max_count(&self, field: &str, count: u32) -> Result<(), PolicyError> {
        if count > MAX_COUNT {
            return Err(self.err(
                field,
                format!("must be at most {MAX_COUNT} (a customer's state keeps that many touches of a kind)"),
            ));
        }
        Ok(())
    }

    pub(crate) fn get<T: for<'de> Deserialize<'de>>(
        &mut self,
        field: &'static str,
    ) -> Result<Option<T>, PolicyError> {
        self.used.insert(field);
        match self.table.get(field) {
            None => Ok(None),
            Some(v) => v
                .clone()
                .try_into::<T>()
                .map(Some)
                .map_err(|e| self.err(field, e.message().to_owned())),
        }
    }

    pub(crate) fn req<T: for<'de> Deserialize<'de>>(
        &mut self,
        field: &'static str,
    ) -> Result<T, PolicyError> {
        self.get(field)?.ok_or_else(|| self.err(field, "is required"))
    }

    pub(crate) fn span(&mut self, field: &'static str) -> Result<Span, PolicyError> {
        let s: SpanText = self.req(field)?;
        if s.0.0 <= 0 {
            return Err(self.err(field, "must be positive"));
        }
        Ok(s.0)
    }

    pub(crate) fn names<T: std::str::FromStr<Err = crate::event::UnknownName>>(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Vec<T>>, PolicyError> {
        let Some(list) = self.get::<Vec<String>>(field)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(list.len());
        for s in &list {
            out.push(s.parse::<T>().map_err(|e| self.err(field, e.to_string()))?);
        }
        Ok(Some(out))
    }

    pub(crate) fn channel_bits(&mut self, field: &'static str) -> Result<Option<u8>, PolicyError> {
        Ok(self
            .names::<Channel>(field)?
            .map(|cs| cs.iter().fold(0, |m, c| m | c.bit())))
    }

    pub(crate) fn purpose_bits(&mut self, field: &'static str) -> Result<Option<u8>, PolicyError> {
        Ok(self
            .names::<Purpose>(field)?
            .map(|ps| ps.iter().fold(0, |m, p| m | p.bit())))
    }

    pub(crate) fn channel(&mut self, field: &'static str) -> Result<Option<Channel>, PolicyError> {
        let Some(s) = self.get::<String>(field)? else {
            return Ok(None);
        };
        s.parse()
            .map(Some)
            .map_err(|e: crate::event::UnknownName| self.err(field, e.to_string()))
    }

    pub(crate) fn sub(&mut self, field: &'static str) -> Result<Option<RuleReader<'_>>, PolicyError> {
        self.used.insert(field);
        match self.table.get(field) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(RuleReader {
                id: format!("{}.{field}", self.id),
                table: t,
                used: HashSet::new(),
            })),
            Some(_) => Err(self.err(field, "must be a table")),
        }
    }

    pub(crate) fn finish(self) -> Result<(), PolicyError> {
        let mut unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.used.contains(k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(k) => Err(self.err(k, "unknown field for this rule type")),
            None => Ok(()),
        }
    }
}

fn read_rule(mut r: RuleReader<'_>) -> Result<Rule, PolicyError> {
    r.used.insert("id");
    let kind_name: String = r.req("type")?;
    let channels = r
        .channel_bits("channels")?
        .unwrap_or(all_bits(Channel::ALL, Channel::bit));
    let purposes = r
        .purpose_bits("purposes")?
        .unwrap_or(all_bits(Purpose::ALL, Purpose::bit));
    if channels == 0 {
        return Err(r.err("channels", "must name at least one channel (omit it for all)"));
    }
    if purposes == 0 {
        return Err(r.err("purposes", "must name at least one purpose (omit it for all)"));
    }
    let suggest = r.channel("suggest")?;
    let kind = match kind_name.as_str() {
        "consent" => RuleKind::Consent(Consent::read(&mut r)?),
        "service_reply" => RuleKind::ServiceReply(ServiceReply::read(&mut r)?),
        "transactional" => RuleKind::Transactional(Transactional::read(&mut r)?),
        "do_not_contact" => RuleKind::DoNotContact,
        "complaint_cool_off" => RuleKind::ComplaintCoolOff(ComplaintCoolOff::read(&mut r)?),
        "research_cooldown" => RuleKind::ResearchCooldown(ResearchCooldown::read(&mut r)?),
        "earned_meeting" => RuleKind::EarnedMeeting(EarnedMeeting::read(&mut r)?),
        "frequency_cap" => RuleKind::FrequencyCap(FrequencyCap::read(&mut r)?),
        "quiet_hours" => RuleKind::QuietHours(QuietHours::read(&mut r)?),
        "fatigue" => RuleKind::Fatigue(Fatigue::read(&mut r)?),
        "stale_state" => RuleKind::StaleState,
        "answer_first" => RuleKind::AnswerFirst(AnswerFirst::read(&mut r)?),
        "customer_preferences" => RuleKind::CustomerPreferences(CustomerPreferences::read(&mut r)?),
        other => {
            return Err(r.err(
                "type",
                format!(
                    "unknown rule type `{other}`; expected one of: consent, service_reply, transactional, \
                     do_not_contact, complaint_cool_off, research_cooldown, earned_meeting, frequency_cap, \
                     quiet_hours, fatigue, answer_first, stale_state, customer_preferences"
                ),
            ));
        }
    };
    let id = Arc::from(r.id.as_str());
    r.finish()?;
    Ok(Rule {
        id,
        channels,
        purposes,
        suggest,
        kind,
    })
}

impl Policy {
    /// Parses and validates a policy.
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(PolicyError::Syntax)?;
        if raw.version.trim().is_empty() {
            return Err(PolicyError::Top {
                field: "version",
                why: "must not be empty".into(),
            });
        }
        let default_time_zone: Tz = raw.default_time_zone.parse().map_err(|_| PolicyError::Top {
            field: "default_time_zone",
            why: format!("unknown IANA time zone `{}`", raw.default_time_zone),
        })?;
        if raw.rule.is_empty() {
            return Err(PolicyError::Top {
                field: "rule",
                why: "a policy needs at least one [[rule]]: with none, every outreach would be allowed"
                    .into(),
            });
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (index, table) in raw.rule.iter().enumerate() {
            let id = match table.get("id") {
                Some(toml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
                _ => return Err(PolicyError::MissingId { index }),
            };
            if !seen.insert(id.clone()) {
                return Err(PolicyError::DuplicateId { id });
            }
            rules.push(read_rule(RuleReader {
                id,
                table,
                used: HashSet::new(),
            })?);
        }
        let stale: Vec<&Rule> = rules
            .iter()
            .filter(|r| matches!(r.kind, RuleKind::StaleState))
            .collect();
        if let Some(first) = stale.first() {
            // Fail closed is an invariant: stale_state rules may hold back more than
            // marketing and sales, never less.
            let uncovered = Channel::ALL.iter().find_map(|c| {
                [Purpose::Marketing, Purpose::Sales]
                    .into_iter()
                    .find(|p| !stale.iter().any(|r| r.applies(*c, *p)))
                    .map(|p| (c, p))
            });
            if let Some((c, p)) = uncovered {
                return Err(PolicyError::Rule {
                    id: first.id.to_string(),
                    field: "purposes".into(),
                    why: format!(
                        "stale_state rules must hold back marketing and sales on every channel (fail closed), \
                         and none covers {p} on {c}"
                    ),
                });
            }
        }
        if stale.is_empty() {
            // Fail closed whatever the file says: a policy without a stale_state rule
            // gets the built-in one (marketing and sales, every channel), first.
            let id = [STALE_STATE_RULE, "stale-state-default"]
                .into_iter()
                .find(|id| !seen.contains(*id))
                .unwrap_or("stale-state-builtin");
            rules.insert(
                0,
                Rule {
                    id: Arc::from(id),
                    channels: all_bits(Channel::ALL, Channel::bit),
                    purposes: Purpose::Marketing.bit() | Purpose::Sales.bit(),
                    suggest: None,
                    kind: RuleKind::StaleState,
                },
            );
        }
        let retention = Self::retention_for(&rules);
        let rule_sets = RuleSets::for_rules(&rules);
        let exemptions = exemption_mask(&rules, 0);
        let stale_state = rules
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, r)| matches!(r.kind, RuleKind::StaleState))
            .fold(0u64, |set, (i, _)| set | 1 << i);
        Ok(Policy {
            version: Arc::from(raw.version.as_str()),
            default_time_zone,
            rules,
            retention,
            rule_sets,
            exemptions,
            stale_state,
            text: Arc::from(text),
        })
    }

    /// The text the policy was loaded from.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// The rules `decide` visits for `(channel, purpose)`, as a bit set of rule
    /// indexes; `None` if the policy has more than 64 rules.
    pub(crate) fn rule_set(&self, channel: Channel, purpose: Purpose) -> Option<u64> {
        if self.rules.len() > 64 {
            return None;
        }
        Some(self.rule_sets.sets[RuleSets::slot(channel, purpose)])
    }

    /// The policy's version, as stamped on every decision.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// The time zone of quiet hours for customers who have not told us theirs.
    pub fn default_time_zone(&self) -> Tz {
        self.default_time_zone
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The `stale_state` rules among the first 64 (policies of at most 64 rules), as a
    /// bit set of rule indexes.
    pub(crate) fn stale_state_rules(&self) -> u64 {
        self.stale_state
    }

    /// [`exemption_mask`] of `rules[base..base + 64]`.
    pub(crate) fn exemptions(&self, base: usize) -> u64 {
        if base == 0 {
            self.exemptions
        } else {
            exemption_mask(&self.rules, base)
        }
    }

    /// The shipped default policy (`config/policy.toml`).
    pub fn default_policy() -> Policy {
        Self::from_toml_str(DEFAULT_POLICY).expect("the shipped default policy is valid")
    }

    /// How much timeline history state must keep for this policy's windows.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The longest window any rule reads, and enough entries of each kind that a count
    /// reaches any rule's threshold: a cap of `max` touches needs the newest `max` of a
    /// channel and purpose kept (the default, 512, unless a rule asks for more).
    fn retention_for(rules: &[Rule]) -> Retention {
        let mut window = Span(DAY.0);
        let mut max_entries = Retention::default().max_entries;
        for r in rules {
            match &r.kind {
                RuleKind::FrequencyCap(c) => max_entries = max_entries.max(c.max),
                RuleKind::Fatigue(f) => max_entries = max_entries.max(f.unanswered),
                _ => {}
            }
            let w = match &r.kind {
                RuleKind::Consent(c) => c.retention(),
                RuleKind::ServiceReply(s) => s.retention(),
                RuleKind::ResearchCooldown(c) => c.retention(),
                RuleKind::EarnedMeeting(m) => m.retention(),
                RuleKind::FrequencyCap(c) => c.retention(),
                RuleKind::Fatigue(f) => f.retention(),
                RuleKind::CustomerPreferences(p) => p.retention(),
                RuleKind::AnswerFirst(a) => a.retention(),
                // Purchases and complaints are remembered beyond the timeline.
                RuleKind::Transactional(_)
                | RuleKind::DoNotContact
                | RuleKind::ComplaintCoolOff(_)
                | RuleKind::QuietHours(_)
                | RuleKind::StaleState => Span(0),
            };
            window = window.max(w);
        }
        Retention { window, max_entries }
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
    }
}

/// The most touches a frequency cap (`max`) or a fatigue rule (`unanswered`) may count:
/// the policy's retention keeps that many entries of each kind per customer.
pub const MAX_COUNT: u32 = 10_000;

/// The id of the built-in `stale_state` rule a policy without one gets.
pub const STALE_STATE_RULE: &str = "stale-state";

/// The shipped default policy text.
pub const DEFAULT_POLICY: &str = include_str!("../../../config/policy.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_keeps_the_parsers_error() {
        let err = Policy::from_toml_str("version = \"v\"\ndefault_time_zone = \n").unwrap_err();
        let PolicyError::Syntax(source) = &err else {
            panic!("not a syntax error: {err:?}");
        };
        // The parser's own error, with where it went wrong, is the source.
        assert!(source.span().is_some(), "{source:?}");
        let chained = std::error::Error::source(&err).expect("a source");
        assert!(chained.downcast_ref::<toml::de::Error>().is_some());
    }

    #[test]
    fn each_rule_types_errors_name_the_rule_and_field() {
        let cases = [
            (
                "type = \"frequency_cap\"\nmax = 0\nwindow = \"7d\"",
                "rule `r`: field `max`: must be at least 1 (use a consent or do-not-contact rule to block)",
            ),
            (
                "type = \"research_cooldown\"\nsignals = [\"nope\"]\ncooldown = \"1d\"",
                "rule `r`: field `signals`: unknown signal `nope`; expected one of: pricing_page, quote_page, \
              compare_page, quote_request, download",
            ),
            (
                "type = \"quiet_hours\"\nstart = \"9\"\nend = \"17:00\"",
                "rule `r`: field `start`: write a time as HH:MM",
            ),
            (
                "type = \"quiet_hours\"\nstart = \"09:00\"\nend = \"17:00\"\n\
              closed_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]",
                "rule `r`: field `closed_days`: closes every day: nothing could ever be sent",
            ),
            (
                "type = \"fatigue\"\nunanswered = 0\nwithin = \"7d\"\npause = \"30d\"",
                "rule `r`: field `unanswered`: must be at least 1",
            ),
            (
                "type = \"frequency_cap\"\nmax = 10001\nwindow = \"7d\"",
                "rule `r`: field `max`: must be at most 10000 (a customer's state keeps that many touches of a kind)",
            ),
            (
                "type = \"fatigue\"\nunanswered = 10001\nwithin = \"7d\"\npause = \"30d\"",
                "rule `r`: field `unanswered`: must be at most 10000 (a customer's state keeps that many touches of a kind)",
            ),
            (
                "type = \"consent\"\n[rule.soft_opt_in]\nchannels = [\"email\"]",
                "rule `r.soft_opt_in`: field `purchase_within`: is required",
            ),
            (
                "type = \"service_reply\"",
                "rule `r`: field `window`: is required",
            ),
            (
                "type = \"answer_first\"\nopen_for = \"72h\"\nmax_hold = \"1h\"",
                "rule `r`: field `max_hold`: unknown field for this rule type",
            ),
        ];
        for (rule, expected) in cases {
            let text =
                format!("version = \"v\"\ndefault_time_zone = \"UTC\"\n[[rule]]\nid = \"r\"\n{rule}\n");
            let err = Policy::from_toml_str(&text).unwrap_err();
            assert_eq!(err.to_string(), expected, "{rule}");
        }
    }

    #[test]
    fn retention_keeps_enough_entries_of_a_kind_for_every_count() {
        assert_eq!(Policy::default_policy().retention().max_entries, 512);
        let text = |max: u32, unanswered: u32| {
            format!(
                "version = \"v\"\ndefault_time_zone = \"UTC\"\n\
                 [[rule]]\nid = \"cap\"\ntype = \"frequency_cap\"\nmax = {max}\nwindow = \"7d\"\n\
                 [[rule]]\nid = \"tired\"\ntype = \"fatigue\"\nunanswered = {unanswered}\nwithin = \"7d\"\npause = \"30d\"\n"
            )
        };
        let retention = |max, unanswered| Policy::from_toml_str(&text(max, unanswered)).unwrap().retention();
        assert_eq!(retention(3, 3).max_entries, 512);
        assert_eq!(retention(600, 3).max_entries, 600);
        assert_eq!(retention(3, 700).max_entries, 700);
        assert_eq!(retention(MAX_COUNT, 3).max_entries, MAX_COUNT);
    }
}

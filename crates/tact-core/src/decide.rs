//! `decide(state, policy, proposal, at)`: the verdict on one proposed outreach, explained.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::event::{Channel, Purpose};
use crate::policy::{Policy, Rule, RuleKind, signal_bit};
use crate::state::{CustomerState, Entry, Mark};
use crate::time::{MINUTE, Span, Timestamp};

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

/// The facts behind a reason. Spans named `ago` are measured back from the decision time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    ConsentGranted {
        channel: Channel,
        purpose: Purpose,
        ago: Span,
    },
    SoftOptIn {
        purchase_ago: Span,
    },
    ContactRequested {
        channel: Channel,
        ago: Span,
    },
    ConsentMissing {
        channel: Channel,
        purpose: Purpose,
    },
    ConsentWithdrawn {
        channel: Channel,
        purpose: Purpose,
        ago: Span,
    },
    ConsentExpired {
        channel: Channel,
        purpose: Purpose,
        ago: Span,
    },
    Transactional,
    ServiceReply {
        inbound_channel: Channel,
        ago: Span,
        window: Span,
    },
    UnsolicitedService,
    DoNotContact {
        ago: Span,
        until: Option<Timestamp>,
    },
    ComplaintCoolOff {
        ago: Span,
        until: Timestamp,
    },
    ResearchCooldown {
        signal: Signal,
        ago: Span,
        cooldown: Span,
        channel: Channel,
        until: Timestamp,
    },
    MeetingRequested {
        ago: Span,
    },
    MeetingEarned {
        engagements: u32,
        window: Span,
    },
    MeetingNotEarned {
        engagements: u32,
        needed: u32,
        window: Span,
    },
    CapReached {
        channel: Option<Channel>,
        count: u32,
        max: u32,
        window: Span,
        until: Timestamp,
    },
    QuietHours {
        channel: Channel,
        local: String,
        start: String,
        end: String,
        until: Timestamp,
    },
    Fatigue {
        channel: Channel,
        unanswered: u32,
        until: Timestamp,
    },
    ChannelNotAccepted {
        channel: Channel,
    },
    CustomerLimit {
        count: u32,
        max: u32,
        window: Span,
        until: Timestamp,
    },
    /// Raised outside the core (the service knows how fresh its state is).
    StaleState {
        lag: Span,
    },
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
    pub note: Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Set for DEFER: the earliest instant at which every rule is satisfied together.
    pub not_before: Option<Timestamp>,
    pub reasons: Vec<Reason>,
    pub alternatives: Vec<Alternative>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Decides on `proposal` as of `at`. Events that occurred after `at` are ignored,
/// so an `at` in the past answers "what would tact have said then".
///
/// DENY wins over DEFER. A DEFER's `not_before` is the earliest instant at which every
/// rule is satisfied together, assuming no new events: asked again then, the answer
/// is not DEFER.
pub fn decide(state: &CustomerState, policy: &Policy, proposal: &Proposal, at: Timestamp) -> Decision {
    let mut suggestions = Suggestions::default();
    let mut decision = evaluate(
        state,
        policy,
        proposal.channel,
        proposal.purpose,
        at,
        Some(&mut suggestions),
    );
    if decision.verdict != Verdict::Allow {
        decision.alternatives = alternatives(state, policy, proposal, at, &decision, &suggestions);
    }
    decision
}

const MAX_ALTERNATIVES: usize = 2;

/// Alternatives a rule proposed: `(channel, purpose, note)`.
#[derive(Default)]
struct Suggestions {
    items: Vec<(Channel, Purpose, &'static str)>,
}

impl Suggestions {
    fn add(&mut self, channel: Channel, purpose: Purpose, note: &'static str) {
        if !self.items.iter().any(|(c, p, _)| *c == channel && *p == purpose) {
            self.items.push((channel, purpose, note));
        }
    }
}

fn alternatives(
    state: &CustomerState,
    policy: &Policy,
    proposal: &Proposal,
    at: Timestamp,
    decision: &Decision,
    suggestions: &Suggestions,
) -> Vec<Alternative> {
    let mut out = Vec::new();
    let candidates = suggestions
        .items
        .iter()
        .filter(|(c, p, _)| *c != proposal.channel || *p != proposal.purpose);
    // Each candidate costs a full evaluation: a couple of good ones are enough.
    for &(channel, purpose, note) in candidates.take(MAX_ALTERNATIVES) {
        // Only suggest what tact would itself accept.
        let d = evaluate(state, policy, channel, purpose, at, None);
        match d.verdict {
            Verdict::Allow => out.push(Alternative {
                channel,
                purpose,
                not_before: None,
                note: note.into(),
            }),
            Verdict::Defer => out.push(Alternative {
                channel,
                purpose,
                not_before: d.not_before,
                note: note.into(),
            }),
            Verdict::Deny => {}
        }
    }
    if decision.verdict == Verdict::Defer {
        out.push(Alternative {
            channel: proposal.channel,
            purpose: proposal.purpose,
            not_before: decision.not_before,
            note: "the same outreach is welcome from this time".into(),
        });
    }
    out
}

/// Newest-first timeline entries at or before `at`, each with whether it is a touch
/// that counts: an outreach sent under a decision that tact recorded as authorized
/// counts once, as the authorization.
fn with_touches(state: &CustomerState, at: Timestamp) -> impl Iterator<Item = (&Entry, bool)> {
    let any_authorized = state.authorized > 0;
    state.recent(at).map(move |e| match e.mark {
        Mark::Touch {
            decision, authorized, ..
        } => (
            e,
            authorized || decision == 0 || !any_authorized || !was_authorized(state, decision, at),
        ),
        _ => (e, false),
    })
}

/// Newest-first touches that count, at or before `at`.
pub(crate) fn touches(
    state: &CustomerState,
    at: Timestamp,
) -> impl Iterator<Item = (&Entry, Channel, Purpose)> {
    with_touches(state, at).filter_map(|(e, counted)| match e.mark {
        Mark::Touch { channel, purpose, .. } if counted => Some((e, channel, purpose)),
        _ => None,
    })
}

fn was_authorized(state: &CustomerState, decision: u32, at: Timestamp) -> bool {
    state
        .recent(at)
        .any(|e| matches!(e.mark, Mark::Touch { decision: d, authorized: true, .. } if d == decision))
}

struct QuietHours<'a> {
    rule: &'a Rule,
    tz: Tz,
    start_minute: u32,
    end_minute: u32,
    closed_days: u8,
}

impl QuietHours<'_> {
    fn day_open(&self, d: NaiveDate) -> bool {
        self.closed_days & (1 << d.weekday().num_days_from_monday()) == 0
    }

    /// The first instant at or after `t` when contact is open.
    fn next_open(&self, t: Timestamp) -> Timestamp {
        let local = t.to_chrono().with_timezone(&self.tz);
        let date = local.date_naive();
        let minute = local.hour() * 60 + local.minute();
        if self.day_open(date) && minute >= self.start_minute && minute < self.end_minute {
            return t;
        }
        let mut day = date;
        if !(self.day_open(date) && minute < self.start_minute) {
            day = (1..=7)
                .map(|i| date + chrono::Days::new(i))
                .find(|d| self.day_open(*d))
                .unwrap_or(date + chrono::Days::new(1));
        }
        let open =
            day.and_time(chrono::NaiveTime::MIN) + chrono::Duration::minutes(i64::from(self.start_minute));
        // A DST gap at opening time: the first valid local instant after it.
        let mut candidate = open;
        for _ in 0..4 {
            if let Some(utc) = self.tz.from_local_datetime(&candidate).earliest() {
                return Timestamp(utc.timestamp_millis()).max(t);
            }
            candidate += chrono::Duration::minutes(30);
        }
        t.saturating_add(MINUTE)
    }

    fn local_clock(&self, t: Timestamp) -> String {
        let local = t.to_chrono().with_timezone(&self.tz);
        format!(
            "{} {:02}:{:02} ({})",
            local.weekday(),
            local.hour(),
            local.minute(),
            self.tz.name()
        )
    }
}

fn clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Evaluates every rule. `suggestions` is `None` when evaluating an alternative.
fn evaluate(
    state: &CustomerState,
    policy: &Policy,
    channel: Channel,
    purpose: Purpose,
    at: Timestamp,
    mut suggestions: Option<&mut Suggestions>,
) -> Decision {
    let mut reasons: Vec<Reason> = Vec::new();
    // Alternatives are evaluated for their verdict only: no reasons to build.
    let explain = suggestions.is_some();
    let mut denied = false;
    // Every DEFER rule below except quiet hours is "upward closed": once satisfied it
    // stays satisfied with no new events. So the earliest instant satisfying all of
    // them is the latest of their thresholds, moved to the next open minute.
    let mut ok_from = at;
    let mut quiet: Option<QuietHours<'_>> = None;
    let mut service_reply = false;
    let mut prefs = None;
    let mut suggest = |c: Channel, p: Purpose, note: &'static str| {
        if let Some(s) = suggestions.as_deref_mut() {
            s.add(c, p, note);
        }
    };
    let push = |reasons: &mut Vec<Reason>, rule: &Rule, effect: Effect, detail: Detail| {
        if !explain {
            return;
        }
        reasons.push(Reason {
            rule_id: rule.id.clone(),
            effect,
            detail,
        });
    };

    for rule in &policy.rules {
        // Only the verdict is wanted and it is settled: DENY wins over everything.
        if denied && !explain {
            break;
        }
        let applies = rule.applies(channel, purpose);
        match &rule.kind {
            RuleKind::DoNotContact => {
                let transactional_too = purpose == Purpose::Transactional
                    && policy.rules.iter().any(|r| {
                        matches!(
                            r.kind,
                            RuleKind::Transactional {
                                respect_do_not_contact: true
                            }
                        ) && r.applies(channel, purpose)
                    });
                if !(applies || transactional_too) || service_reply {
                    continue;
                }
                if let Some(d) = state.do_not_contact(at) {
                    denied = true;
                    push(
                        &mut reasons,
                        rule,
                        Effect::Deny,
                        Detail::DoNotContact {
                            ago: at.since(d.at),
                            until: d.until,
                        },
                    );
                }
                continue;
            }
            _ if !applies => continue,
            _ => {}
        }
        match &rule.kind {
            RuleKind::DoNotContact => {}
            RuleKind::Transactional { .. } => push(&mut reasons, rule, Effect::Allow, Detail::Transactional),
            RuleKind::ServiceReply { window } => {
                let inbound = state
                    .recent(at)
                    .take_while(|e| e.at > at.saturating_sub(*window))
                    .find_map(|e| match e.mark {
                        Mark::Inbound(c) | Mark::ContactRequest(c) => Some((c, e.at)),
                        _ => None,
                    });
                if let Some((c, when)) = inbound {
                    service_reply = true;
                    push(
                        &mut reasons,
                        rule,
                        Effect::Allow,
                        Detail::ServiceReply {
                            inbound_channel: c,
                            ago: at.since(when),
                            window: *window,
                        },
                    );
                }
            }
            RuleKind::Consent {
                soft_opt_in,
                contact_request,
            } => {
                let record = state.consent(channel, purpose, at);
                if let Some(r) = record.filter(|r| !r.withdrawn && r.expires_at.is_none_or(|x| x > at)) {
                    push(
                        &mut reasons,
                        rule,
                        Effect::Allow,
                        Detail::ConsentGranted {
                            channel,
                            purpose,
                            ago: at.since(r.at),
                        },
                    );
                    continue;
                }
                if let Some(so) = soft_opt_in
                    && so.channels & channel.bit() != 0
                    && so.purposes & purpose.bit() != 0
                    && !state.ever_withdrawn(channel, purpose, at)
                    && let Some(bought) = state.last_purchase(at)
                    && at.since(bought) < so.purchase_within
                {
                    push(
                        &mut reasons,
                        rule,
                        Effect::Allow,
                        Detail::SoftOptIn {
                            purchase_ago: at.since(bought),
                        },
                    );
                    continue;
                }
                if let Some(cr) = contact_request
                    && cr.purposes & purpose.bit() != 0
                {
                    let after = record.map_or(Timestamp::MIN, |r| r.at);
                    let asked = state
                        .recent(at)
                        .take_while(|e| e.at > at.saturating_sub(cr.valid_for) && e.at > after)
                        .find(|e| e.mark == Mark::ContactRequest(channel));
                    if let Some(e) = asked {
                        push(
                            &mut reasons,
                            rule,
                            Effect::Allow,
                            Detail::ContactRequested {
                                channel,
                                ago: at.since(e.at),
                            },
                        );
                        continue;
                    }
                }
                denied = true;
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
                push(&mut reasons, rule, Effect::Deny, detail);
                for c in Channel::ALL {
                    if *c != channel
                        && state
                            .consent(*c, purpose, at)
                            .is_some_and(|r| !r.withdrawn && r.expires_at.is_none_or(|x| x > at))
                    {
                        suggest(*c, purpose, "the customer has given consent on this channel");
                    }
                }
            }
            RuleKind::ComplaintCoolOff { duration } => {
                if let Some(when) = state.last_complaint(at) {
                    let until = when.saturating_add(*duration);
                    if until > at {
                        denied = true;
                        push(
                            &mut reasons,
                            rule,
                            Effect::Deny,
                            Detail::ComplaintCoolOff {
                                ago: at.since(when),
                                until,
                            },
                        );
                    }
                }
            }
            RuleKind::ResearchCooldown { signals, cooldown } => {
                let latest = state
                    .recent(at)
                    .take_while(|e| e.at > at.saturating_sub(*cooldown))
                    .find_map(|e| match e.mark {
                        Mark::Research(s) if signals & signal_bit(s) != 0 => Some((s, e.at)),
                        _ => None,
                    });
                if let Some((signal, when)) = latest {
                    let asked_since = state
                        .recent(at)
                        .take_while(|e| e.at > when)
                        .any(|e| e.mark == Mark::ContactRequest(channel));
                    if !asked_since {
                        let until = when.saturating_add(*cooldown);
                        ok_from = ok_from.max(until);
                        push(
                            &mut reasons,
                            rule,
                            Effect::Defer,
                            Detail::ResearchCooldown {
                                signal,
                                ago: at.since(when),
                                cooldown: *cooldown,
                                channel,
                                until,
                            },
                        );
                        if let Some(c) = rule.suggest {
                            suggest(c, purpose, "an acknowledgement is welcome now");
                        }
                    }
                }
            }
            RuleKind::EarnedMeeting {
                window,
                min_engagements,
                engagements,
            } => {
                let since = at.saturating_sub(*window);
                let mut count = 0u32;
                let mut requested = None;
                for e in state.recent(at).take_while(|e| e.at > since) {
                    match e.mark {
                        Mark::ContactRequest(Channel::SalesMeeting) if requested.is_none() => {
                            requested = Some(e.at)
                        }
                        Mark::Engaged(_, kind) if engagements & (1 << (kind as u8)) != 0 => count += 1,
                        _ => {}
                    }
                }
                if let Some(when) = requested {
                    push(
                        &mut reasons,
                        rule,
                        Effect::Allow,
                        Detail::MeetingRequested { ago: at.since(when) },
                    );
                } else if count >= *min_engagements {
                    push(
                        &mut reasons,
                        rule,
                        Effect::Allow,
                        Detail::MeetingEarned {
                            engagements: count,
                            window: *window,
                        },
                    );
                } else {
                    denied = true;
                    push(
                        &mut reasons,
                        rule,
                        Effect::Deny,
                        Detail::MeetingNotEarned {
                            engagements: count,
                            needed: *min_engagements,
                            window: *window,
                        },
                    );
                    if let Some(c) = rule.suggest {
                        suggest(
                            c,
                            purpose,
                            "share relevant content instead and let the customer ask for a meeting",
                        );
                    }
                }
            }
            RuleKind::FrequencyCap { max, window } => {
                if let Some((count, until)) = cap(state, at, rule.channels, rule.purposes, *max, *window) {
                    ok_from = ok_from.max(until);
                    if let Some(c) = rule.suggest {
                        suggest(c, purpose, "a less intrusive channel that still has room");
                    }
                    let one = (rule.channels & (rule.channels - 1)) == 0;
                    let ch = one.then_some(channel);
                    push(
                        &mut reasons,
                        rule,
                        Effect::Defer,
                        Detail::CapReached {
                            channel: ch,
                            count,
                            max: *max,
                            window: *window,
                            until,
                        },
                    );
                }
            }
            RuleKind::QuietHours {
                start_minute,
                end_minute,
                closed_days,
                exempt,
            } => {
                if exempt.iter().any(|(c, p)| *c == channel && *p == purpose) {
                    continue;
                }
                let tz = *prefs.get_or_insert_with(|| state.prefs(at));
                quiet = Some(QuietHours {
                    rule,
                    tz: tz.time_zone.unwrap_or(policy.default_time_zone),
                    start_minute: *start_minute,
                    end_minute: *end_minute,
                    closed_days: *closed_days,
                });
            }
            RuleKind::Fatigue {
                unanswered,
                within,
                pause,
            } => {
                let mut n = 0u32;
                let mut newest = None;
                for (e, counted) in with_touches(state, at) {
                    match e.mark {
                        Mark::Engaged(c, _) if c == channel => break,
                        Mark::Touch {
                            channel: c,
                            purpose: p,
                            ..
                        } if counted && c == channel && rule.purposes & p.bit() != 0 => {
                            let first = *newest.get_or_insert(e.at);
                            if first.since(e.at) > *within {
                                break;
                            }
                            n += 1;
                            if n >= *unanswered {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(first) = newest
                    && n >= *unanswered
                {
                    let until = first.saturating_add(*pause);
                    if until > at {
                        ok_from = ok_from.max(until);
                        push(
                            &mut reasons,
                            rule,
                            Effect::Defer,
                            Detail::Fatigue {
                                channel,
                                unanswered: n,
                                until,
                            },
                        );
                    }
                }
            }
            RuleKind::CustomerPreferences { max_window } => {
                let p = *prefs.get_or_insert_with(|| state.prefs(at));
                if p.accepted != 0 && p.accepted & channel.bit() == 0 {
                    denied = true;
                    push(
                        &mut reasons,
                        rule,
                        Effect::Deny,
                        Detail::ChannelNotAccepted { channel },
                    );
                    for c in Channel::ALL.iter().filter(|c| p.accepted & c.bit() != 0) {
                        suggest(*c, purpose, "a channel the customer accepts");
                    }
                }
                if let Some(limit) = p.limit {
                    let window = limit.window.min(*max_window);
                    let counted = rule.purposes & !Purpose::Transactional.bit();
                    if let Some((count, until)) = cap(state, at, u8::MAX, counted, limit.max, window) {
                        ok_from = ok_from.max(until);
                        push(
                            &mut reasons,
                            rule,
                            Effect::Defer,
                            Detail::CustomerLimit {
                                count,
                                max: limit.max,
                                window,
                                until,
                            },
                        );
                    }
                }
            }
        }
    }

    if denied {
        return Decision {
            verdict: Verdict::Deny,
            not_before: None,
            reasons,
            alternatives: Vec::new(),
        };
    }
    if let Some(q) = &quiet {
        let open = q.next_open(ok_from);
        let closed_now = if ok_from == at {
            open > at
        } else {
            q.next_open(at) > at
        };
        if explain && (open > ok_from || closed_now) {
            if let (Some(c), Some(s)) = (q.rule.suggest, suggestions) {
                s.add(c, purpose, "a channel that is open at this hour");
            }
            reasons.push(Reason {
                rule_id: q.rule.id.clone(),
                effect: Effect::Defer,
                detail: Detail::QuietHours {
                    channel,
                    local: q.local_clock(at),
                    start: clock(q.start_minute),
                    end: clock(q.end_minute),
                    until: open,
                },
            });
        }
        ok_from = open;
    }
    if ok_from > at {
        Decision {
            verdict: Verdict::Defer,
            not_before: Some(ok_from),
            reasons,
            alternatives: Vec::new(),
        }
    } else {
        Decision {
            verdict: Verdict::Allow,
            not_before: None,
            reasons,
            alternatives: Vec::new(),
        }
    }
}

/// Counts touches on `channels` for `purposes` in `(at - window, at]`. If `max` is
/// reached, returns the count and when the window has room again: the `max`-th
/// newest touch leaves the window at its time plus `window`.
fn cap(
    state: &CustomerState,
    at: Timestamp,
    channels: u8,
    purposes: u8,
    max: u32,
    window: Span,
) -> Option<(u32, Timestamp)> {
    let since = at.saturating_sub(window);
    let mut count = 0u32;
    let mut until = None;
    for (e, c, p) in touches(state, at) {
        if e.at <= since {
            break;
        }
        if channels & c.bit() != 0 && purposes & p.bit() != 0 {
            count += 1;
            if count == max {
                until = Some(e.at.saturating_add(window));
            }
        }
    }
    until.map(|u| (count, u))
}

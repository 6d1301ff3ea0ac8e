//! `decide(state, policy, proposal, at)`: the verdict on one proposed outreach, explained.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Channel, Purpose};
use crate::policy::{Policy, RuleKind, rules_to_visit};
use crate::state::CustomerState;
use crate::time::{DAY, Span, Timestamp};

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

/// Moved to [`crate::event`] (state and policy read it too); re-exported here.
pub use crate::event::Signal;
/// Quiet-hours clock readings, in [`crate::quiet`]; re-exported here.
pub use crate::quiet::{Clock, LocalClock};
use crate::rules::{Facts, Outcome, Suggestions, do_not_contact, stale_state};

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
        /// The customer's clock at the decision time.
        local: LocalClock,
        /// Open hours, in minutes since local midnight.
        start_minute: u16,
        end_minute: u16,
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
    /// The customer's message on `channel`, `ago`, has not been answered yet.
    AwaitingAnswer {
        channel: Channel,
        ago: Span,
    },
    CustomerLimit {
        count: u32,
        max: u32,
        window: Span,
        until: Timestamp,
    },
    /// The state may be missing the events of the last `lag` (a `stale_state` rule;
    /// the caller says how fresh its state is).
    StaleState {
        lag: Span,
    },
    /// Raised outside the core: the customer belongs to another instance.
    NotOwner,
    /// Raised outside the core: this instance has not caught up with the customer's
    /// events since it took them over.
    NotReady,
    /// The customer's own limit, asked over a window (`asked`) longer than the policy
    /// counts (`window`, the rule's `max_window`). Last, as audit records name variants
    /// by their index.
    CustomerLimitCapped {
        count: u32,
        max: u32,
        asked: Span,
        window: Span,
        until: Timestamp,
    },
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
    /// A DENY for `reasons`, with no alternatives (yet).
    fn deny(reasons: Vec<Reason>) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            not_before: None,
            reasons,
            alternatives: Vec::new(),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Decides on `proposal` as of `at`, on state known to be complete. Events that
/// occurred after `at` are ignored, so an `at` in the past answers "what would tact
/// have said then".
///
/// DENY wins over DEFER. A DEFER's `not_before` is the earliest instant at which every
/// rule is satisfied together, assuming no new events: asked again then, the answer
/// is not DEFER.
pub fn decide(state: &CustomerState, policy: &Policy, proposal: &Proposal, at: Timestamp) -> Decision {
    decide_with_lag(state, policy, proposal, at, Span(0))
}

/// [`decide`] on state that may be missing the events of the last `lag` that matter
/// to this decision (the caller knows how far behind its event stream it is, and
/// passes zero when that does not reach `at`). `stale_state` rules deny their channels
/// and purposes when `lag` is positive: fail closed.
pub fn decide_with_lag(
    state: &CustomerState,
    policy: &Policy,
    proposal: &Proposal,
    at: Timestamp,
    lag: Span,
) -> Decision {
    decide_explained(state, policy, proposal, at, lag, Explain::Full)
}

/// How much of a decision's explanation to work out. The verdict and `not_before`
/// never depend on it: [`decide_explained`] gives the same ones at every level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Explain {
    /// Reasons with their facts, and the alternatives (what [`decide`] answers).
    #[default]
    Full,
    /// Reasons with their facts, no alternatives (none are evaluated).
    Reasons,
    /// The verdict and `not_before` only: no reasons, no alternatives, and the rules
    /// stop being evaluated as soon as one denies (DENY wins over everything).
    Verdict,
}

/// [`decide_with_lag`], working out only as much of the explanation as `explain` asks
/// for: the cheap path for screening an audience, where only the verdict is read.
/// Same verdict and `not_before` as the full answer, always.
pub fn decide_explained(
    state: &CustomerState,
    policy: &Policy,
    proposal: &Proposal,
    at: Timestamp,
    lag: Span,
    explain: Explain,
) -> Decision {
    let mut facts = Facts::new(state.read(policy, at), policy.default_time_zone(), lag);
    let mut suggestions = Suggestions::default();
    let full = explain == Explain::Full;
    let (mut decision, every_channel_denied) = evaluate(
        &mut facts,
        policy,
        proposal.channel,
        proposal.purpose,
        explain != Explain::Verdict,
        full.then_some(&mut suggestions),
    );
    // A DENY that holds on every channel whatever the channel (a complaint, stale
    // state, a message to answer first) leaves no alternative for this purpose: tact
    // would deny each, so they are not evaluated.
    if full && decision.verdict != Verdict::Allow && !every_channel_denied {
        decision.alternatives = alternatives(&mut facts, policy, proposal, &decision, &suggestions);
    }
    decision
}

const MAX_ALTERNATIVES: usize = 2;

fn alternatives(
    facts: &mut Facts<'_>,
    policy: &Policy,
    proposal: &Proposal,
    decision: &Decision,
    suggestions: &Suggestions,
) -> Vec<Alternative> {
    let mut out = Vec::new();
    // Every suggestion is for the proposal's purpose: only the channel can differ.
    let candidates = suggestions.sorted().filter(|(c, _)| *c != proposal.channel);
    // Each candidate costs an evaluation (cheaper than the first: the facts that do
    // not depend on the channel are known by now). A couple of good ones are enough.
    for (channel, note) in candidates.take(MAX_ALTERNATIVES) {
        // Only suggest what tact would itself accept.
        let (d, _) = evaluate(facts, policy, channel, proposal.purpose, false, None);
        if d.verdict != Verdict::Deny {
            out.push(Alternative {
                channel,
                purpose: proposal.purpose,
                not_before: d.not_before,
                note: note.into(),
            });
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

/// How far past the other rules' threshold quiet-hours rules are searched for a time
/// open in all of them (two weeks and a day: every weekday twice, DST changes included).
const QUIET_HORIZON: Span = Span(15 * DAY.0);

/// The indexes of the rules `evaluate` visits for a proposal, in two passes: first
/// the exemptions (transactional, service reply), then every other rule; within a pass
/// in index order, 64 rules at a time.
struct Visit<'p> {
    policy: &'p Policy,
    channel: Channel,
    purpose: Purpose,
    /// The current chunk's rules still to visit, as bits of their index less `base`.
    todo: u64,
    base: usize,
    /// Policies of at most 64 rules: the second pass, while it is still to come (0:
    /// none, or already under way).
    second: u64,
    /// More than 64 rules: chunk after chunk, pass after pass.
    large: bool,
    /// Large policies: whether the current pass is the exemptions'.
    exemptions: bool,
}

impl<'p> Visit<'p> {
    fn new(policy: &'p Policy, all: Option<u64>, channel: Channel, purpose: Purpose) -> Self {
        let mut visit = Visit {
            policy,
            channel,
            purpose,
            todo: 0,
            base: 0,
            second: 0,
            large: all.is_none(),
            exemptions: true,
        };
        match all {
            // At most 64 rules: both passes known at once.
            Some(set) => {
                let mask = policy.exemptions(0);
                visit.todo = set & mask;
                visit.second = set & !mask;
            }
            None => visit.todo = visit.chunk(0),
        }
        visit
    }

    /// The rules of `rules[base..base + 64]` in the current pass (large policies).
    fn chunk(&self, base: usize) -> u64 {
        let set = rules_to_visit(self.policy.rules(), base, self.channel, self.purpose);
        let mask = self.policy.exemptions(base);
        if self.exemptions { set & mask } else { set & !mask }
    }

    /// Large policies, the current chunk done: moves on to the next chunk with rules to
    /// visit (in this pass, then in the next); false if there is none. Kept out of
    /// `evaluate`'s loop.
    #[inline(never)]
    fn next_chunk(&mut self) -> bool {
        while self.todo == 0 {
            self.base += 64;
            if self.base >= self.policy.rules().len() {
                if !self.exemptions {
                    return false;
                }
                self.exemptions = false;
                self.base = 0;
            }
            self.todo = self.chunk(self.base);
        }
        true
    }
}

impl Iterator for Visit<'_> {
    type Item = usize;

    // Called once per rule visited: inlined into `evaluate`'s loop.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.todo == 0 {
            // The first pass is done (or had no rules): the second, if it has rules;
            // large policies: the next chunk.
            if self.second != 0 {
                self.todo = std::mem::take(&mut self.second);
            } else if !(self.large && self.next_chunk()) {
                return None;
            }
        }
        let index = self.base + self.todo.trailing_zeros() as usize;
        self.todo &= self.todo - 1;
        Some(index)
    }
}

/// Evaluates every rule. `explain`: build the reasons (not for an alternative, nor for
/// a verdict-only answer); `suggestions`: collect alternatives to evaluate (only for
/// the full answer).
fn evaluate(
    facts: &mut Facts<'_>,
    policy: &Policy,
    channel: Channel,
    purpose: Purpose,
    explain: bool,
    suggestions: Option<&mut Suggestions>,
) -> (Decision, bool) {
    let v = facts.v;
    let at = v.at;
    let rules = policy.rules();
    // `stale_state` rules only deny on state that is behind: not visited otherwise
    // (policies of at most 64 rules; larger ones visit them, to no effect).
    let all = policy.rule_set(channel, purpose).map(|set| {
        if facts.lag.0 > 0 {
            set
        } else {
            set & !policy.stale_state_rules()
        }
    });
    let mut out = Outcome::new(explain, all, at, suggestions);
    // Two passes over the rules that apply (see `Visit`): first the exemptions
    // (transactional, service reply), then every other rule. Within a pass each rule's
    // outcome is folded in order-independently (see `Outcome`), so the answer does not
    // depend on the order of the rules.
    for index in Visit::new(policy, all, channel, purpose) {
        // Only the verdict is wanted and it is settled: DENY wins over everything.
        if out.denied && !explain {
            break;
        }
        let rule = &rules[index];
        match &rule.kind {
            RuleKind::DoNotContact => do_not_contact::evaluate(rule, &v, &mut out),
            RuleKind::Transactional(t) => t.evaluate(rule, &mut out),
            RuleKind::ServiceReply(s) => s.evaluate(rule, &v, &mut out),
            RuleKind::Consent(c) => c.evaluate(rule, &v, channel, purpose, &mut out),
            RuleKind::ComplaintCoolOff(c) => c.evaluate(rule, &v, &mut out),
            RuleKind::ResearchCooldown(c) => c.evaluate(rule, &v, channel, &mut out),
            RuleKind::EarnedMeeting(m) => m.evaluate(rule, &v, &mut out),
            RuleKind::FrequencyCap(c) => c.evaluate(rule, index, facts, channel, &mut out),
            RuleKind::QuietHours(q) => q.evaluate(rule, index, facts, channel, purpose, &mut out),
            RuleKind::Fatigue(f) => f.evaluate(rule, &v, channel, &mut out),
            RuleKind::StaleState => stale_state::evaluate(rule, facts, &mut out),
            RuleKind::AnswerFirst(a) => a.evaluate(rule, &v, &mut out),
            RuleKind::CustomerPreferences(p) => p.evaluate(rule, index, facts, channel, &mut out),
        }
    }

    // Only the verdict is wanted and it is DENY: quiet hours and pauses ahead cannot
    // change it (they add reasons, which are not built here).
    if out.denied && !explain {
        return (Decision::deny(out.reasons), out.every_channel_denied);
    }
    if !out.quiet.is_empty() || !out.pauses.is_empty() {
        // The earliest instant at or after `ok_from` open in every quiet-hours rule and
        // outside every fatigue pause ahead: the least common fixpoint of their
        // `next_open`s and pause ends, whatever their order (each is monotone).
        let mut open = out.ok_from;
        let horizon = out
            .pauses
            .iter()
            .fold(out.ok_from, |h, (_, p)| h.max(p.until))
            .saturating_add(QUIET_HORIZON);
        match (out.quiet.only(), out.pauses.is_empty()) {
            (Some((index, q)), true) => open = facts.next_open(*index, q, out.ok_from),
            _ => loop {
                let mut moved = false;
                for (_, p) in out.pauses.iter() {
                    if p.from <= open && open < p.until {
                        open = p.until;
                        moved = true;
                    }
                }
                for (index, q) in out.quiet.iter() {
                    let o = facts.next_open(*index, q, open);
                    if o > open {
                        open = o;
                        moved = true;
                    }
                }
                if !moved || open > horizon {
                    break;
                }
            },
        }
        // Quiet-hours rules that together are never open: nothing can ever be sent.
        let never = open > horizon;
        if never {
            out.denied = true;
        }
        for (index, q) in out.quiet.iter() {
            // Reported if closed now, or if the other rules' threshold falls in closed
            // hours (each judged on its own, so the set does not depend on rule order).
            let closed = facts.next_open(*index, q, out.ok_from) > out.ok_from
                || (out.ok_from != at && facts.next_open(*index, q, at) > at);
            if explain && closed {
                if let (Some(c), Some(s)) = (q.rule.suggest, out.suggestions.as_deref_mut()) {
                    s.add(c, "a channel that is open at this hour");
                }
                out.reasons.push(Reason {
                    rule_id: q.rule.id.clone(),
                    effect: if never { Effect::Deny } else { Effect::Defer },
                    detail: Detail::QuietHours {
                        channel,
                        local: q.local_clock(at),
                        start_minute: q.start_minute as u16,
                        end_minute: q.end_minute as u16,
                        until: open,
                    },
                });
            }
        }
        // A pause ahead is reported if the DEFER steps over part of it.
        for (rule, p) in out.pauses.iter() {
            if explain && !never && p.from < open && p.until > out.ok_from {
                out.reasons.push(Reason {
                    rule_id: rule.id.clone(),
                    effect: Effect::Defer,
                    detail: Detail::Fatigue {
                        channel,
                        unanswered: p.count,
                        until: p.until,
                    },
                });
            }
        }
        out.ok_from = open;
    }
    if out.denied {
        return (Decision::deny(out.reasons), out.every_channel_denied);
    }
    let verdict = if out.ok_from > at {
        Verdict::Defer
    } else {
        Verdict::Allow
    };
    (
        Decision {
            verdict,
            not_before: (out.ok_from > at).then_some(out.ok_from),
            reasons: out.reasons,
            alternatives: Vec::new(),
        },
        false,
    )
}

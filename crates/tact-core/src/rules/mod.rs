//! Rule types, one file each (see ARCHITECTURE.md, "Adding a rule type"), and what
//! they share with `decide`: [`Facts`], what a rule reads about the customer (with
//! what is worth working out once per decision), and [`Outcome`], how it reports
//! (reasons, DENY, its DEFER threshold, suggestions, and what only the fixpoint at the
//! end of `decide`'s `evaluate` can settle: quiet hours and fatigue pauses ahead).

pub(crate) mod answer_first;
pub(crate) mod complaint_cool_off;
pub(crate) mod consent;
pub(crate) mod customer_preferences;
pub(crate) mod do_not_contact;
pub(crate) mod earned_meeting;
pub(crate) mod fatigue;
pub(crate) mod frequency_cap;
pub(crate) mod quiet_hours;
pub(crate) mod research_cooldown;
pub(crate) mod service_reply;
pub(crate) mod stale_state;
pub(crate) mod transactional;

use chrono_tz::Tz;

use crate::decide::{Detail, Effect, Reason};
use crate::event::Channel;
use crate::policy::Rule;
use crate::quiet::QuietHours;
use crate::state::{AsOf, Prefs};
use crate::time::{Span, Timestamp};
use crate::touch::cap;
use fatigue::Pause;

/// A frequency cap's count and when it has room again, if it is reached.
type CapReached = Option<(u32, Timestamp)>;

/// What one decision has learnt about the customer that does not depend on the
/// channel, shared by the evaluation of the proposal and of its alternatives.
pub(crate) struct Facts<'a> {
    /// The state as of the decision's instant.
    pub v: AsOf<'a>,
    /// How far behind the state may be for this decision (see
    /// [`crate::decide_with_lag`]).
    pub lag: Span,
    /// The policy's time zone, for customers who have not told us theirs.
    default_time_zone: Tz,
    prefs: Option<Prefs>,
    /// Frequency caps counted so far: `(rule index, result)`, the first `caps_known`.
    caps: [(usize, CapReached); 4],
    caps_known: u8,
    /// The last `QuietHours::next_open` answers: `(rule index, zone, from, open)`.
    opens: [Option<(usize, Tz, Timestamp, Timestamp)>; 2],
}

impl<'a> Facts<'a> {
    pub fn new(v: AsOf<'a>, default_time_zone: Tz, lag: Span) -> Self {
        Facts {
            v,
            lag,
            default_time_zone,
            prefs: None,
            caps: [(usize::MAX, None); 4],
            caps_known: 0,
            opens: [None; 2],
        }
    }

    pub fn prefs(&mut self) -> Prefs {
        *self.prefs.get_or_insert_with(|| self.v.prefs())
    }

    /// The customer's time zone, or the policy's default.
    pub fn time_zone(&mut self) -> Tz {
        self.prefs().time_zone.unwrap_or(self.default_time_zone)
    }

    /// [`cap`], remembered by rule: a cap's count does not depend on the proposal.
    pub fn cap(
        &mut self,
        index: usize,
        channels: u8,
        purposes: u8,
        max: u32,
        window: Span,
    ) -> Option<(u32, Timestamp)> {
        let counted = &self.caps[..usize::from(self.caps_known)];
        if let Some((_, known)) = counted.iter().find(|(i, _)| *i == index) {
            return *known;
        }
        let known = cap(&self.v, channels, purposes, max, window);
        if let Some(free) = self.caps.get_mut(usize::from(self.caps_known)) {
            *free = (index, known);
            self.caps_known += 1;
        }
        known
    }

    pub fn next_open(&mut self, index: usize, q: &QuietHours<'_>, from: Timestamp) -> Timestamp {
        let hit = |o: &&(usize, Tz, Timestamp, Timestamp)| o.0 == index && o.1 == q.tz && o.2 == from;
        if let Some((.., open)) = self.opens.iter().flatten().find(hit) {
            return *open;
        }
        let open = q.next_open(from);
        self.opens[1] = self.opens[0];
        self.opens[0] = Some((index, q.tz, from, open));
        open
    }
}

/// Alternatives the rules proposed, in the order they were proposed: `(channel, note)`.
/// Every rule suggests for the purpose being evaluated, so one per channel at most.
#[derive(Default)]
pub(crate) struct Suggestions {
    items: [Option<(Channel, &'static str)>; 8],
}

impl Suggestions {
    /// Adds `channel`, keeping the suggestions in channel order (not in the order the
    /// rules made them: the answer must not depend on the order of the rules); a channel
    /// suggested by several rules keeps the smallest note, for the same reason.
    pub fn add(&mut self, channel: Channel, note: &'static str) {
        let mut item = (channel, note);
        for slot in &mut self.items {
            match slot {
                Some((c, n)) if *c == item.0 => {
                    if item.1 < *n {
                        *n = item.1;
                    }
                    return;
                }
                Some(existing) => {
                    if (item.0 as u8) < (existing.0 as u8) {
                        std::mem::swap(existing, &mut item);
                    }
                }
                None => {
                    *slot = Some(item);
                    return;
                }
            }
        }
    }

    /// The suggestions in channel order.
    pub fn sorted(&self) -> impl Iterator<Item = (Channel, &'static str)> + '_ {
        self.items.iter().map_while(|s| *s)
    }
}

/// A few items, usually none or one: the first without allocating. For the quiet-hours
/// rules that apply to a proposal and the fatigue pauses ahead.
pub(crate) struct Few<T> {
    first: Option<T>,
    more: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few {
            first: None,
            more: Vec::new(),
        }
    }
}

impl<T> Few<T> {
    pub fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.more.push(item);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The first item, if it is the only one.
    pub fn only(&self) -> Option<&T> {
        self.first.as_ref().filter(|_| self.more.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(&self.more)
    }
}

/// What the rules of one evaluation have said so far. Each rule's outcome is folded in
/// so that the answer does not depend on the order of the rules: any DENY, the latest
/// DEFER threshold, every quiet-hours rule and fatigue pause ahead.
pub(crate) struct Outcome<'r, 's> {
    /// Whether reasons are built (not for alternatives: their verdict is enough).
    pub explain: bool,
    pub reasons: Vec<Reason>,
    pub denied: bool,
    /// Denied by a rule on every channel whose outcome does not depend on the channel.
    pub every_channel_denied: bool,
    /// The latest threshold of the DEFERs so far. Each is "upward closed": once
    /// satisfied it stays satisfied with no new events, so the earliest instant
    /// satisfying all of them is the latest (see [`Outcome::defer`]).
    pub ok_from: Timestamp,
    /// The quiet-hours rules that apply: `(rule index, the rule for this customer)`.
    pub quiet: Few<(usize, QuietHours<'r>)>,
    /// Fatigue pauses that start after the decision's instant (see
    /// [`fatigue::Fatigue::pause_on`]).
    pub pauses: Few<(&'r Rule, Pause)>,
    /// The instant of the customer's message a service-reply rule found this proposal
    /// answers, if any: it exempts the proposal from a do-not-contact made before that
    /// message (see `do_not_contact`). Known before any other rule is looked at
    /// (exemptions are visited first): the answer must not depend on rule order.
    pub service_reply: Option<Timestamp>,
    /// Alternatives to evaluate (only for the full answer).
    pub suggestions: Option<&'s mut Suggestions>,
}

impl<'r, 's> Outcome<'r, 's> {
    pub fn new(
        explain: bool,
        visited: Option<u64>,
        at: Timestamp,
        suggestions: Option<&'s mut Suggestions>,
    ) -> Self {
        Outcome {
            explain,
            // Room for a reason from each rule visited, and quiet hours.
            reasons: if explain {
                Vec::with_capacity(visited.map_or(8, |set| set.count_ones() as usize) + 1)
            } else {
                Vec::new()
            },
            denied: false,
            every_channel_denied: false,
            ok_from: at,
            quiet: Few::default(),
            pauses: Few::default(),
            service_reply: None,
            suggestions,
        }
    }

    #[inline]
    pub fn push(&mut self, rule: &Rule, effect: Effect, detail: Detail) {
        if self.explain {
            self.reasons.push(Reason {
                rule_id: rule.id.clone(),
                effect,
                detail,
            });
        }
    }

    /// `rule` denies the proposal.
    #[inline]
    pub fn deny(&mut self, rule: &Rule, detail: Detail) {
        self.denied = true;
        self.push(rule, Effect::Deny, detail);
    }

    /// `rule` denies the proposal for a reason that does not depend on the channel:
    /// if the rule applies to every channel, so would its DENY.
    #[inline]
    pub fn deny_on_every_channel(&mut self, rule: &Rule, detail: Detail) {
        let all_channels = Channel::ALL.iter().fold(0u8, |m, c| m | c.bit());
        self.every_channel_denied |= rule.channels == all_channels;
        self.deny(rule, detail);
    }

    /// `rule` defers the proposal to `until`, an **upward-closed** threshold: with no
    /// new events, satisfied from then on.
    #[inline]
    pub fn defer(&mut self, rule: &Rule, until: Timestamp, detail: Detail) {
        self.ok_from = self.ok_from.max(until);
        self.push(rule, Effect::Defer, detail);
    }

    /// Suggests `channel` (for the same purpose) instead, if alternatives are wanted.
    #[inline]
    pub fn suggest(&mut self, channel: Channel, note: &'static str) {
        if let Some(s) = self.suggestions.as_deref_mut() {
            s.add(channel, note);
        }
    }
}

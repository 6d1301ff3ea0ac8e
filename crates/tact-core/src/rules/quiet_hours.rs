//! `quiet_hours`: contact only `start`-`end` on open days, in the customer's time zone
//! (else the policy's). Not upward closed (a time that is open now closes tonight), so
//! a rule that applies only joins [`Outcome::quiet`]: the fixpoint at the end of
//! `decide`'s `evaluate` finds the first instant open in all of them and outside every
//! fatigue pause, and reports the rules closed then. The calendar arithmetic (DST, closed
//! days) is [`crate::quiet`].

use chrono::Weekday;

use crate::event::{Channel, Purpose};
use crate::explain::channel_noun;
use crate::policy::{PolicyError, Rule, RuleReader};
use crate::quiet::{Clock, LocalClock, QuietHours as OpenHours};
use crate::rules::{Facts, Outcome};
use crate::time::Timestamp;

/// A `quiet_hours` rule's parameters.
#[derive(Clone, Debug)]
pub struct QuietHours {
    /// Open hours, in minutes since local midnight.
    pub start_minute: u32,
    pub end_minute: u32,
    /// Bit set of closed weekdays (bit 0 = Monday).
    pub closed_days: u8,
    /// `(channel, purpose)` pairs the rule does not hold back.
    pub exempt: Vec<(Channel, Purpose)>,
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn parse_clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn weekday_bit(d: Weekday) -> u8 {
    1 << d.num_days_from_monday()
}

fn clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

impl QuietHours {
    pub(crate) fn read(r: &mut RuleReader<'_>) -> Result<Self, PolicyError> {
        let start: String = r.req("start")?;
        let end: String = r.req("end")?;
        let start_minute = parse_clock(&start).ok_or_else(|| r.err("start", "write a time as HH:MM"))?;
        let end_minute = parse_clock(&end).ok_or_else(|| r.err("end", "write a time as HH:MM"))?;
        if start_minute >= end_minute {
            return Err(r.err("end", "must be later than `start`"));
        }
        let mut closed_days = 0;
        for d in r.get::<Vec<String>>("closed_days")?.unwrap_or_default() {
            let wd = d.parse::<Weekday>().map_err(|_| {
                r.err(
                    "closed_days",
                    format!("`{d}` is not a weekday (mon, tue, ... sun)"),
                )
            })?;
            closed_days |= weekday_bit(wd);
        }
        if closed_days == 0x7f {
            return Err(r.err("closed_days", "closes every day: nothing could ever be sent"));
        }
        let mut exempt = Vec::new();
        for x in r.get::<Vec<String>>("exempt")?.unwrap_or_default() {
            let (c, p) = x.split_once(':').ok_or_else(|| {
                r.err(
                    "exempt",
                    format!("`{x}`: write channel:purpose, e.g. sms:transactional"),
                )
            })?;
            let c = c.parse::<Channel>().map_err(|e| r.err("exempt", e.to_string()))?;
            let p = p.parse::<Purpose>().map_err(|e| r.err("exempt", e.to_string()))?;
            exempt.push((c, p));
        }
        Ok(QuietHours {
            start_minute,
            end_minute,
            closed_days,
            exempt,
        })
    }

    /// `index`: the rule's index in the policy (what the fixpoint remembers its
    /// `next_open` answers by).
    #[inline]
    pub(crate) fn evaluate<'r>(
        &self,
        rule: &'r Rule,
        index: usize,
        facts: &mut Facts<'_>,
        channel: Channel,
        purpose: Purpose,
        out: &mut Outcome<'r, '_>,
    ) {
        if self.exempt.iter().any(|(c, p)| *c == channel && *p == purpose) {
            return;
        }
        let tz = facts.time_zone();
        out.quiet.push((
            index,
            OpenHours::new(rule, tz, self.start_minute, self.end_minute, self.closed_days),
        ));
    }

    pub(crate) fn in_words(&self, on: &str) -> String {
        let mut s = format!(
            "{on}: only {}-{} in the customer's time zone",
            clock(self.start_minute),
            clock(self.end_minute)
        );
        let closed: Vec<String> = WEEKDAYS
            .iter()
            .filter(|d| self.closed_days & weekday_bit(**d) != 0)
            .map(|d| d.to_string().to_lowercase())
            .collect();
        if !closed.is_empty() {
            s.push_str(&format!(", closed on {}", closed.join(", ")));
        }
        if !self.exempt.is_empty() {
            let ex: Vec<String> = self.exempt.iter().map(|(c, p)| format!("{c}:{p}")).collect();
            s.push_str(&format!(" (exempt: {})", ex.join(", ")));
        }
        s.push_str("; else DEFER to the next open minute");
        s
    }
}

pub(crate) fn message(
    channel: Channel,
    local: LocalClock,
    start_minute: u16,
    end_minute: u16,
    until: Timestamp,
) -> String {
    format!(
        "It is {local} for the customer; {} only {}-{} on open days. Next open: {until}.",
        channel_noun(channel),
        Clock(start_minute),
        Clock(end_minute),
    )
}

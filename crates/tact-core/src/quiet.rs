//! Quiet-hours calendar arithmetic: the customer's local clock, and the next instant a
//! quiet-hours rule is open, skipping closed days and stepping over DST gaps. Pure:
//! time zones come from `chrono-tz`, instants are arguments.

use std::cell::Cell;
use std::fmt;

use chrono::{Datelike, Offset, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::policy::Rule;
use crate::time::{DAY, MINUTE, Timestamp};

/// One quiet-hours rule as it applies to one customer: open `start_minute` to
/// `end_minute` (local minutes since midnight) on days not in `closed_days` (bit 0 =
/// Monday), in time zone `tz`.
pub(crate) struct QuietHours<'a> {
    pub rule: &'a Rule,
    pub tz: Tz,
    pub start_minute: u32,
    pub end_minute: u32,
    pub closed_days: u8,
    /// The last local clock reading (`local(t)` looks the zone's offset up, the
    /// costliest step; a decision reads the same instant a few times).
    last: Cell<Option<(Timestamp, Option<Local>)>>,
}

/// A local clock reading: days since 1970-01-01 (local) and minute of the day.
#[derive(Clone, Copy)]
struct Local {
    day: i64,
    minute: u32,
}

impl Local {
    /// Monday = 0 (1970-01-01 was a Thursday).
    fn weekday(&self) -> u32 {
        (self.day + 3).rem_euclid(7) as u32
    }
}

impl<'a> QuietHours<'a> {
    pub fn new(rule: &'a Rule, tz: Tz, start_minute: u32, end_minute: u32, closed_days: u8) -> Self {
        QuietHours {
            rule,
            tz,
            start_minute,
            end_minute,
            closed_days,
            last: Cell::new(None),
        }
    }

    fn day_open(&self, weekday: u32) -> bool {
        self.closed_days & (1 << weekday) == 0
    }

    /// The local clock at `t`, if chrono can represent `t`.
    fn local(&self, t: Timestamp) -> Option<Local> {
        if let Some((at, local)) = self.last.get()
            && at == t
        {
            return local;
        }
        let local = self.local_uncached(t);
        self.last.set(Some((t, local)));
        local
    }

    fn local_uncached(&self, t: Timestamp) -> Option<Local> {
        let local = t.0 + zone_offset_ms(self.tz, t)?;
        Some(Local {
            day: local.div_euclid(DAY.0),
            minute: (local.rem_euclid(DAY.0) / MINUTE.0) as u32,
        })
    }

    /// The first instant at or after `t` when contact is open.
    pub fn next_open(&self, t: Timestamp) -> Timestamp {
        let Some(local) = self.local(t) else {
            return self.next_open_chrono(t);
        };
        let weekday = local.weekday();
        if self.day_open(weekday) && local.minute >= self.start_minute && local.minute < self.end_minute {
            return t;
        }
        let mut day = local.day;
        if !(self.day_open(weekday) && local.minute < self.start_minute) {
            day = (1..=7)
                .map(|i| local.day + i)
                .find(|d| self.day_open((d + 3).rem_euclid(7) as u32))
                .unwrap_or(local.day + 1);
        }
        let open = day * DAY.0 + i64::from(self.start_minute) * MINUTE.0;
        // The earliest instant whose local time is `open`, or the first valid local
        // time after it if `open` falls in a DST gap (as `first_instant`).
        let mut candidate = open;
        for _ in 0..4 {
            if let Some(utc) = local_to_utc_ms(self.tz, candidate) {
                return Timestamp(utc).max(t);
            }
            candidate += 30 * MINUTE.0;
        }
        match chrono::DateTime::from_timestamp_millis(open) {
            Some(open) => self.first_instant(open.naive_utc(), t),
            None => self.next_open_chrono(t),
        }
    }

    /// The earliest instant whose local time is `open`, or the first valid local time
    /// after it if `open` falls in a DST gap; not before `t`.
    fn first_instant(&self, open: chrono::NaiveDateTime, t: Timestamp) -> Timestamp {
        let mut candidate = open;
        for _ in 0..4 {
            if let Some(utc) = self.tz.from_local_datetime(&candidate).earliest() {
                return Timestamp(utc.timestamp_millis()).max(t);
            }
            candidate += chrono::Duration::minutes(30);
        }
        t.saturating_add(MINUTE)
    }

    /// [`QuietHours::next_open`] for instants chrono cannot represent (they read as
    /// chrono's earliest instant).
    fn next_open_chrono(&self, t: Timestamp) -> Timestamp {
        let local = chrono_safe(t).to_chrono().with_timezone(&self.tz);
        let date = local.date_naive();
        let weekday = date.weekday().num_days_from_monday();
        let minute = local.hour() * 60 + local.minute();
        if self.day_open(weekday) && minute >= self.start_minute && minute < self.end_minute {
            return t;
        }
        let mut day = date;
        if !(self.day_open(weekday) && minute < self.start_minute) {
            day = (1..=7)
                .map(|i| date + chrono::Days::new(i))
                .find(|d| self.day_open(d.weekday().num_days_from_monday()))
                .unwrap_or(date + chrono::Days::new(1));
        }
        let open =
            day.and_time(chrono::NaiveTime::MIN) + chrono::Duration::minutes(i64::from(self.start_minute));
        self.first_instant(open, t)
    }

    /// The local clock at `t`, for explaining.
    pub fn local_clock(&self, t: Timestamp) -> LocalClock {
        let (weekday, minute) = match self.local(t) {
            Some(l) => (l.weekday(), l.minute),
            None => {
                let local = chrono_safe(t).to_chrono().with_timezone(&self.tz);
                (
                    local.weekday().num_days_from_monday(),
                    local.hour() * 60 + local.minute(),
                )
            }
        };
        LocalClock {
            weekday: weekday as u8,
            minute: minute as u16,
            zone: self.tz,
        }
    }
}

/// `t`, brought inside the instants chrono can read a local clock at and step a week
/// from: out there (±262,000 years, reached only by a policy's absurd span), chrono
/// would panic on the local time or the step, and it would read an instant past its
/// range as its earliest one. Quiet hours that far out answer as at the edge.
fn chrono_safe(t: Timestamp) -> Timestamp {
    const MARGIN: i64 = 10 * DAY.0;
    let min = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_millis() + MARGIN;
    let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis() - MARGIN;
    Timestamp(t.0.clamp(min, max))
}

/// The offset of `tz` from UTC at `t`, in milliseconds; `None` where chrono cannot
/// represent `t`.
///
/// chrono-tz answers with a binary search over the zone's transitions, the costliest
/// step of a quiet-hours reading. Offsets change a few times a year, so this memoizes
/// them per (zone, UTC day) in a small direct-mapped table per thread. A day is
/// remembered when its first and last millisecond have the same offset: zones change
/// their offset at most once a day, so the whole day has it (the tests compare with
/// chrono-tz through transitions and at random instants in every zone). A memo, not
/// state: the answer is chrono-tz's whatever was asked before, so decisions stay a
/// function of their arguments.
fn zone_offset_ms(tz: Tz, t: Timestamp) -> Option<i64> {
    let day = t.0.div_euclid(DAY.0);
    let zone = tz as u16;
    let slot = (day as usize ^ usize::from(zone).wrapping_mul(31)) % ZONE_MEMO_SLOTS;
    let memo = ZONE_MEMO.with(|m| m[slot].get());
    if memo.day == day && memo.zone == zone {
        return Some(i64::from(memo.offset_ms));
    }
    let start = day.checked_mul(DAY.0)?;
    match (
        chrono_offset_ms(tz, Timestamp(start)),
        chrono_offset_ms(tz, Timestamp(start.checked_add(DAY.0 - 1)?)),
    ) {
        (Some(first), Some(last)) if first == last => {
            ZONE_MEMO.with(|m| {
                m[slot].set(ZoneMemo {
                    day,
                    zone,
                    offset_ms: first as i32,
                })
            });
            Some(first)
        }
        // The day the offset changes: not remembered.
        _ => chrono_offset_ms(tz, t),
    }
}

/// chrono-tz's offset of `tz` at `t`, in milliseconds.
fn chrono_offset_ms(tz: Tz, t: Timestamp) -> Option<i64> {
    let utc = chrono::DateTime::from_timestamp_millis(t.0)?;
    Some(
        i64::from(
            tz.offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        ) * 1000,
    )
}

/// The earliest instant whose local time in `tz` is `local` (milliseconds since the
/// local epoch), `None` if there is none (a DST gap) or chrono cannot represent it:
/// chrono-tz's `from_local_datetime(..).earliest()`, from memoized offsets. The offsets
/// a day either side are the only ones an instant with that local time can have (a
/// zone's offset is within a day of UTC and changes at most once a day), so each
/// instant they give is checked.
fn local_to_utc_ms(tz: Tz, local: i64) -> Option<i64> {
    let before = zone_offset_ms(tz, Timestamp(local.checked_sub(DAY.0)?))?;
    let after = zone_offset_ms(tz, Timestamp(local.checked_add(DAY.0)?))?;
    let valid = |offset: i64| {
        let utc = local.checked_sub(offset)?;
        (zone_offset_ms(tz, Timestamp(utc))? == offset).then_some(utc)
    };
    match (valid(before), valid(after)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

const ZONE_MEMO_SLOTS: usize = 256;

#[derive(Clone, Copy)]
struct ZoneMemo {
    day: i64,
    zone: u16,
    offset_ms: i32,
}

thread_local! {
    static ZONE_MEMO: [Cell<ZoneMemo>; ZONE_MEMO_SLOTS] = const {
        // No instant is in day `i64::MIN`: every slot starts empty.
        [const { Cell::new(ZoneMemo { day: i64::MIN, zone: 0, offset_ms: 0 }) }; ZONE_MEMO_SLOTS]
    };
}

/// A reading of the customer's local clock, shown as "Wed 05:00 (America/New_York)".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalClock {
    /// Monday = 0.
    pub weekday: u8,
    /// Minutes since local midnight.
    pub minute: u16,
    pub zone: Tz,
}

impl fmt::Display for LocalClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let day = DAYS.get(usize::from(self.weekday)).unwrap_or(&"?");
        write!(f, "{day} {} ({})", Clock(self.minute), self.zone.name())
    }
}

/// Minutes since midnight, shown as "08:00".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock(pub u16);

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn quiet<'a>(rule: &'a Rule, tz: &str, start: u32, end: u32, closed_days: u8) -> QuietHours<'a> {
        QuietHours::new(rule, tz.parse().unwrap(), start, end, closed_days)
    }

    fn with_rule(f: impl FnOnce(&Rule)) {
        let policy = Policy::default_policy();
        f(&policy.rules()[0]);
    }

    /// Found by `fuzz_policy_value_mutations`: a research cooldown of 10,000,000,000 h put
    /// the quiet-hours check a million years out, where chrono panicked reading the
    /// local time (and read an instant past its range as its earliest).
    #[test]
    fn instants_beyond_chrono_answer_without_panicking() {
        with_rule(|r| {
            for tz in ["America/Los_Angeles", "Asia/Tokyo", "UTC"] {
                let q = quiet(r, tz, 8 * 60, 21 * 60, 1 << 6);
                for at in [
                    i64::MAX,
                    i64::MAX / 2,
                    9_000_000_000_000_000,
                    -9_000_000_000_000_000,
                    i64::MIN,
                ] {
                    let open = q.next_open(Timestamp(at));
                    assert!(open >= Timestamp(at), "{tz} {at}: {open:?}");
                    let _ = q.local_clock(Timestamp(at));
                }
            }
        });
    }

    #[test]
    fn open_now_is_now_and_closed_waits_for_the_next_open_minute() {
        with_rule(|r| {
            let q = quiet(r, "Europe/London", 8 * 60, 21 * 60, 1 << 6);
            // Wednesday 10:00 London (UTC in November): open.
            assert_eq!(q.next_open(t("2026-11-18T10:00:00Z")), t("2026-11-18T10:00:00Z"));
            // 21:00 is closed: Thursday 08:00.
            assert_eq!(q.next_open(t("2026-11-18T21:00:00Z")), t("2026-11-19T08:00:00Z"));
            // Saturday 22:00: Sunday is closed, so Monday 08:00.
            assert_eq!(q.next_open(t("2026-11-21T22:00:00Z")), t("2026-11-23T08:00:00Z"));
            assert_eq!(
                q.local_clock(t("2026-11-22T12:30:00Z")).to_string(),
                "Sun 12:30 (Europe/London)"
            );
        });
    }

    #[test]
    fn spring_forward_skips_the_missing_hour() {
        with_rule(|r| {
            // Europe/London 2026-03-29: 01:00 local jumps to 02:00. Open from 01:30,
            // which does not exist that day: the first valid local time after it.
            let q = quiet(r, "Europe/London", 90, 21 * 60, 0);
            assert_eq!(q.next_open(t("2026-03-29T00:10:00Z")), t("2026-03-29T01:00:00Z"));
            // The day before and after, 01:30 local is 01:30 GMT / 00:30 UTC (BST).
            assert_eq!(q.next_open(t("2026-03-28T00:00:00Z")), t("2026-03-28T01:30:00Z"));
            assert_eq!(q.next_open(t("2026-03-29T22:00:00Z")), t("2026-03-30T00:30:00Z"));
        });
    }

    #[test]
    fn fall_back_opens_at_the_first_of_the_repeated_times() {
        with_rule(|r| {
            // America/New_York 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:30
            // local happens twice; open from the first (05:30 UTC).
            let q = quiet(r, "America/New_York", 90, 21 * 60, 0);
            assert_eq!(q.next_open(t("2026-11-01T04:00:00Z")), t("2026-11-01T05:30:00Z"));
            // 08:00 local on the day after is EST (UTC-5).
            let q = quiet(r, "America/New_York", 8 * 60, 21 * 60, 0);
            assert_eq!(q.next_open(t("2026-11-02T02:00:00Z")), t("2026-11-02T13:00:00Z"));
            // And the day before, EDT (UTC-4).
            assert_eq!(q.next_open(t("2026-10-31T02:00:00Z")), t("2026-10-31T12:00:00Z"));
        });
    }

    /// The memo answers what chrono-tz answers, hour after hour through DST changes,
    /// 30-minute shifts (Lord Howe), Ramadan suspensions (Casablanca) and odd offsets.
    #[test]
    fn zone_offsets_are_chrono_tz_offsets_across_transitions() {
        let zones = [
            "Europe/London",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "America/St_Johns",
            "Pacific/Chatham",
            "Africa/Casablanca",
            "America/Nuuk",
        ];
        let (from, to) = (t("2024-01-01T00:00:00Z").0, t("2027-01-01T00:00:00Z").0);
        for zone in zones {
            let tz: Tz = zone.parse().unwrap();
            let mut at = from;
            while at < to {
                for probe in [at, at + 60_000, at + 1_800_000, at + 3_599_999] {
                    let want = chrono_offset_ms(tz, Timestamp(probe));
                    assert_eq!(zone_offset_ms(tz, Timestamp(probe)), want, "{zone} at {probe}");
                    // And again, from the memo.
                    assert_eq!(zone_offset_ms(tz, Timestamp(probe)), want, "{zone} at {probe}");
                }
                at += 3_600_000;
            }
        }
    }

    /// The memoized local-to-UTC conversion is chrono-tz's `earliest()`, through gaps
    /// and repeated hours, in every zone.
    #[test]
    fn local_times_are_chrono_tz_local_times_across_transitions() {
        let (from, to) = (t("2024-01-01T00:00:00Z").0, t("2027-01-01T00:00:00Z").0);
        for zone in [
            "Europe/London",
            "America/New_York",
            "Australia/Lord_Howe",
            "Africa/Casablanca",
        ] {
            let tz: Tz = zone.parse().unwrap();
            let mut local = from;
            while local < to {
                for probe in [
                    local,
                    local + 15 * 60_000,
                    local + 30 * 60_000,
                    local + 59 * 60_000,
                ] {
                    let naive = chrono::DateTime::from_timestamp_millis(probe)
                        .unwrap()
                        .naive_utc();
                    let want = tz
                        .from_local_datetime(&naive)
                        .earliest()
                        .map(|u| u.timestamp_millis());
                    assert_eq!(local_to_utc_ms(tz, probe), want, "{zone} at local {naive}");
                }
                local += 3_600_000;
            }
        }
    }

    /// The memo's premise, checked exhaustively: in no zone does the offset change
    /// twice within one UTC day (probed every 15 minutes of every day whose first and
    /// last millisecond agree, 1900 to 2100). Slow: `cargo test -p tact-core --release
    /// -- --ignored zones_change_offset_at_most_once_a_day`.
    #[test]
    #[ignore = "exhaustive over every zone and day; run in release"]
    fn zones_change_offset_at_most_once_a_day() {
        let (from, to) = (
            t("1900-01-01T00:00:00Z").0 / DAY.0,
            t("2100-01-01T00:00:00Z").0 / DAY.0,
        );
        for tz in chrono_tz::TZ_VARIANTS {
            for day in from..to {
                let start = day * DAY.0;
                let first = chrono_offset_ms(tz, Timestamp(start));
                if first != chrono_offset_ms(tz, Timestamp(start + DAY.0 - 1)) {
                    continue;
                }
                for quarter in 1..96 {
                    let at = start + quarter * 15 * MINUTE.0;
                    assert_eq!(chrono_offset_ms(tz, Timestamp(at)), first, "{tz:?} at {at}");
                }
            }
        }
    }

    proptest::proptest! {
        /// Any zone, any instant (most of them far from now), asked in any order.
        #[test]
        fn zone_offsets_are_chrono_tz_offsets(
            picks in proptest::collection::vec(
                (0..chrono_tz::TZ_VARIANTS.len(), -5_000_000_000_000i64..8_000_000_000_000i64),
                1..64,
            ),
        ) {
            for (zone, ms) in picks {
                let tz = chrono_tz::TZ_VARIANTS[zone];
                let want = chrono_offset_ms(tz, Timestamp(ms));
                proptest::prop_assert_eq!(zone_offset_ms(tz, Timestamp(ms)), want);
                proptest::prop_assert_eq!(zone_offset_ms(tz, Timestamp(ms)), want);
                let naive = chrono::DateTime::from_timestamp_millis(ms).unwrap().naive_utc();
                let local = tz.from_local_datetime(&naive).earliest().map(|u| u.timestamp_millis());
                proptest::prop_assert_eq!(local_to_utc_ms(tz, ms), local);
            }
        }
    }

    #[test]
    fn closed_days_follow_the_local_date_not_utc() {
        with_rule(|r| {
            // Sunday closed in Tokyo (UTC+9): Saturday 20:00 UTC is Sunday 05:00 there.
            let q = quiet(r, "Asia/Tokyo", 8 * 60, 21 * 60, 1 << 6);
            assert_eq!(q.next_open(t("2026-11-21T20:00:00Z")), t("2026-11-22T23:00:00Z"));
        });
    }
}

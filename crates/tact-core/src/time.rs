//! Time as plain data. The core never reads a clock: every instant is an argument.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An instant, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A span of time in milliseconds. Never negative when it comes from a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Span(pub i64);

pub const SECOND: Span = Span(1_000);
pub const MINUTE: Span = Span(60_000);
pub const HOUR: Span = Span(3_600_000);
pub const DAY: Span = Span(86_400_000);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 instant such as `2026-11-20T09:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeError> {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|dt| Timestamp(dt.timestamp_millis()))
            .map_err(|e| TimeError::Instant(s.to_owned(), e.to_string()))
    }

    pub fn to_chrono(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.0).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    }

    pub fn saturating_add(self, span: Span) -> Self {
        Timestamp(self.0.saturating_add(span.0))
    }

    pub fn saturating_sub(self, span: Span) -> Self {
        Timestamp(self.0.saturating_sub(span.0))
    }

    /// `self - earlier`, saturating.
    pub fn since(self, earlier: Timestamp) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }
}

/// RFC 3339 in UTC, `2026-11-20T09:00:00Z` (`.123` when there are milliseconds): what
/// chrono writes with `SecondsFormat::AutoSi` and `Z`, byte for byte. Years 0 to 9999
/// are written here without chrono (a reason's sentence often holds one: rendering
/// every answer's sentences is most of what a full answer costs beyond deciding it);
/// others, by chrono.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            Some((text, len)) => f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?),
            None => f.write_str(
                &self
                    .to_chrono()
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        }
    }
}

impl Timestamp {
    /// The RFC 3339 text of an instant in years 0 to 9999 and its length (see the
    /// `Display` impl); `None` outside them.
    fn rfc3339(self) -> Option<([u8; 24], usize)> {
        const DAY_MS: i64 = 86_400_000;
        // 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z.
        const FIRST: i64 = -62_167_219_200_000;
        const END: i64 = 253_402_300_800_000;
        if !(FIRST..END).contains(&self.0) {
            return None;
        }
        let days = self.0.div_euclid(DAY_MS);
        let in_day = self.0.rem_euclid(DAY_MS);
        // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`),
        // in eras of 400 years from 0000-03-01 (January and February of year 0 are in
        // era -1).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (secs, ms) = (in_day / 1_000, in_day % 1_000);
        let mut t = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, n: i64, width: usize| {
            let mut n = n;
            for i in (at..at + width).rev() {
                t[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, year, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, secs / 3_600, 2);
        put(14, secs / 60 % 60, 2);
        put(17, secs % 60, 2);
        if ms == 0 {
            t[19] = b'Z';
            return Some((t, 20));
        }
        put(20, ms, 3);
        Some((t, 24))
    }
}

impl Span {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Renders a span for people: `5 minutes`, `48 h`, `30 days`.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.max(0);
        let plural = |n: i64| if n == 1 { "" } else { "s" };
        if ms < MINUTE.0 {
            let s = ms / SECOND.0;
            write!(f, "{s} second{}", plural(s))
        } else if ms < HOUR.0 {
            let m = ms / MINUTE.0;
            write!(f, "{m} minute{}", plural(m))
        } else if ms <= 2 * DAY.0 || ms % DAY.0 != 0 && ms < 7 * DAY.0 {
            let h = ms / HOUR.0;
            write!(f, "{h} h")
        } else {
            let d = ms / DAY.0;
            write!(f, "{d} day{}", plural(d))
        }
    }
}

/// Parses `90s`, `15m`, `48h`, `7d`, `2w` (one number, one unit).
impl FromStr for Span {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: i64 = num.parse().map_err(|_| TimeError::Span(s.to_owned()))?;
        let unit_ms = match unit.trim() {
            "ms" => 1,
            "s" => SECOND.0,
            "m" | "min" => MINUTE.0,
            "h" => HOUR.0,
            "d" => DAY.0,
            "w" => 7 * DAY.0,
            _ => return Err(TimeError::Span(s.to_owned())),
        };
        n.checked_mul(unit_ms)
            .map(Span)
            .ok_or_else(|| TimeError::Span(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for SpanText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Span>().map(SpanText).map_err(serde::de::Error::custom)
    }
}

/// A span written in text in a policy file (`"48h"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanText(pub Span);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not a duration: write a whole number and a unit, e.g. 90s, 15m, 48h, 7d, 2w")]
    Span(String),
    #[error("`{0}` is not an RFC 3339 instant ({1}); write e.g. 2026-11-20T09:00:00Z")]
    Instant(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_render() {
        assert_eq!("48h".parse::<Span>().unwrap(), Span(48 * HOUR.0));
        assert_eq!("7d".parse::<Span>().unwrap(), Span(7 * DAY.0));
        assert_eq!("15m".parse::<Span>().unwrap(), Span(15 * MINUTE.0));
        assert!("7 days".parse::<Span>().is_err());
        assert!("h".parse::<Span>().is_err());
        assert_eq!(Span(5 * MINUTE.0).to_string(), "5 minutes");
        assert_eq!(Span(48 * HOUR.0).to_string(), "48 h");
        assert_eq!(Span(30 * DAY.0).to_string(), "30 days");
    }

    #[test]
    fn instants_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-20T09:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-20T09:00:00Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    fn chrono_text(t: Timestamp) -> String {
        t.to_chrono().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    #[test]
    fn instants_render_as_chrono_does_at_the_edges() {
        for t in [
            "0000-01-01T00:00:00Z",
            "0000-02-29T23:59:59.999Z",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.001Z",
            "2000-02-29T12:00:00Z",
            "2100-03-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let at = Timestamp::parse_rfc3339(t).unwrap();
            assert_eq!(at.to_string(), t);
            assert_eq!(at.to_string(), chrono_text(at));
        }
        // Outside years 0 to 9999: chrono's text, whatever it is.
        for ms in [-62_167_219_200_001, 253_402_300_800_000, i64::MIN, i64::MAX] {
            let at = Timestamp(ms);
            assert_eq!(at.to_string(), chrono_text(at));
        }
    }

    proptest::proptest! {
        #[test]
        fn instants_render_as_chrono_does(
            ms in -62_167_219_200_000i64..253_402_300_800_000,
            whole_second in proptest::bool::ANY,
        ) {
            let at = Timestamp(if whole_second { ms - ms.rem_euclid(1_000) } else { ms });
            proptest::prop_assert_eq!(at.to_string(), chrono_text(at));
        }
    }
}

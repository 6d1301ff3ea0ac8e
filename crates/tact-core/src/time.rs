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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.to_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
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
}

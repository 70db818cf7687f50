//! Go-style duration strings (`30s`, `5m`, `1h30m`, `1.5h`) as they appear in the CRDs.
//!
//! The schema accepts a string matching [`DURATION_PATTERN`] (checked by a CEL rule with a
//! readable message); [`parse_duration`] turns the same strings into [`std::time::Duration`].
//! Differences from Go's `time.ParseDuration`, on purpose: no sign (a negative timeout means
//! nothing here), no bare `0` (always name a unit), no `µs` spelling (use `us`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The regular expression (RE2 and Rust-regex compatible) a duration string must match.
pub const DURATION_PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$";

/// The longest duration string the schema accepts.
pub const DURATION_MAX_LENGTH: usize = 32;

/// The message the apiserver returns for a malformed duration.
pub const DURATION_MESSAGE: &str =
    "must be a duration such as 30s, 5m, 1h30m or 1.5h (units: h, m, s, ms, us, ns)";

/// The largest duration accepted, as in Go: `i64::MAX` nanoseconds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// A duration written the Go way (`"90s"`, `"1h30m"`), kept as the user wrote it so that a
/// server-side apply round trip returns exactly the same text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    /// Wraps a duration string without checking it; [`GoDuration::to_std`] checks.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text into a [`Duration`].
    pub fn to_std(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{DURATION_PATTERN}')"),
                "message": DURATION_MESSAGE,
            }],
        })
    }
}

/// Why a duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration: write for example 30s, 5m or 1h30m")]
    Empty,
    /// A number is missing where one was expected.
    #[error("invalid duration {text:?}: expected a number at position {position}")]
    MissingNumber {
        /// The whole input.
        text: String,
        /// Byte offset of the problem.
        position: usize,
    },
    /// A number is not followed by a unit.
    #[error(
        "invalid duration {text:?}: the number at position {position} needs a unit (h, m, s, ms, us, ns)"
    )]
    MissingUnit {
        /// The whole input.
        text: String,
        /// Byte offset of the problem.
        position: usize,
    },
    /// A unit we do not know.
    #[error("invalid duration {text:?}: unknown unit {unit:?} (use h, m, s, ms, us, ns)")]
    UnknownUnit {
        /// The whole input.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// The duration exceeds about 292 years.
    #[error("invalid duration {text:?}: too large (at most about 292 years)")]
    TooLarge {
        /// The whole input.
        text: String,
    },
}

/// Parses a Go-style duration (`"30s"`, `"1h30m"`, `"1.5h"`, `"250ms"`) into a [`Duration`].
///
/// Accepts exactly the strings that match [`DURATION_PATTERN`]. Fractions are exact down to the
/// nanosecond (digits beyond that are truncated).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total: u128 = 0;
    while pos < bytes.len() {
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == int_start {
            return Err(DurationError::MissingNumber {
                text: text.to_owned(),
                position: pos,
            });
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            let frac_start = pos + 1;
            pos = frac_start;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos == frac_start {
                return Err(DurationError::MissingNumber {
                    text: text.to_owned(),
                    position: pos,
                });
            }
            frac_digits = &text[frac_start..pos];
        }
        let unit_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_digit() && bytes[pos] != b'.' {
            pos += 1;
        }
        let unit = &text[unit_start..pos];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                text: text.to_owned(),
                position: unit_start,
            });
        }
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
        })?;
        let too_large = || DurationError::TooLarge {
            text: text.to_owned(),
        };
        let whole = parse_bounded(int_digits).ok_or_else(too_large)?;
        let mut part = whole.checked_mul(scale).ok_or_else(too_large)?;
        part = part
            .checked_add(fraction_nanos(frac_digits, scale))
            .ok_or_else(too_large)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        if total > MAX_NANOS {
            return Err(too_large());
        }
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Nanoseconds per unit, or `None` for an unknown unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a digit string, or `None` when it could not fit a duration anyway.
fn parse_bounded(digits: &str) -> Option<u128> {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 30 {
        return None;
    }
    if trimmed.is_empty() {
        return Some(0);
    }
    trimmed.parse().ok()
}

/// The nanoseconds a fractional part `0.<digits>` of one `scale` unit contributes (truncated).
fn fraction_nanos(digits: &str, scale: u128) -> u128 {
    // 18 digits keep full nanosecond precision even for hours (3.6e12 ns).
    let kept = &digits[..digits.len().min(18)];
    if kept.is_empty() {
        return 0;
    }
    let value: u128 = kept.parse().unwrap_or(0);
    let denominator = 10u128.pow(kept.len() as u32);
    value * scale / denominator
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("9ns"), Duration::from_nanos(9));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn parses_compound_and_fractional() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("1m0.5s"), Duration::from_millis(60_500));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("1h1m1s1ms1us1ns"), Duration::new(3661, 1_001_001));
        assert_eq!(ok("007s"), Duration::from_secs(7));
    }

    #[test]
    fn refuses_malformed_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::MissingUnit { position: 2, .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::MissingNumber { position: 0, .. })
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("1.s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration(".5s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5 s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5µs"),
            Err(DurationError::UnknownUnit { .. })
        ));
        let message = parse_duration("3 days").unwrap_err().to_string();
        assert!(message.contains("unknown unit"), "{message}");
    }

    #[test]
    fn refuses_overflow_instead_of_wrapping() {
        assert!(parse_duration("2562047h").is_ok());
        assert!(matches!(
            parse_duration("2562048h"),
            Err(DurationError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999999999999999999h"),
            Err(DurationError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_duration("2000000h2000000h"),
            Err(DurationError::TooLarge { .. })
        ));
    }

    #[test]
    fn schema_carries_the_same_pattern_and_message() {
        let mut generator = SchemaGenerator::default();
        let schema = serde_json::to_value(GoDuration::json_schema(&mut generator)).unwrap();
        let rule = &schema["x-kubernetes-validations"][0];
        assert_eq!(
            rule["rule"],
            serde_json::json!(format!("self.matches('{DURATION_PATTERN}')"))
        );
        assert_eq!(rule["message"], serde_json::json!(DURATION_MESSAGE));
        assert_eq!(schema["maxLength"], serde_json::json!(DURATION_MAX_LENGTH));
    }

    proptest! {
        /// Any sum of whole units written out parses back to the same total.
        #[test]
        fn whole_units_round_trip(h in 0u64..10_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&text), Ok(expected));
        }

        /// Arbitrary input never panics.
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_duration(&text);
        }
    }
}

//! Go-style duration strings (`30s`, `5m`, `1h30m`, `1.5h`) as they appear in the CRDs.
//!
//! The schema accepts a string matching [`DURATION_PATTERN`] (checked by a CEL rule with a
//! readable message); [`parse_duration`] turns the same strings into [`std::time::Duration`].
//! Differences from Go's `time.ParseDuration`, on purpose: no sign (a negative timeout means
//! nothing here), no bare `0` (always name a unit), no `µs` spelling (use `us`).
//!
//! Each kind of CRD duration has one range ([`DurationRange`]: [`CHECK_INTERVAL`],
//! [`DEVICE_TIMEOUT`], [`SOAK`]), from its own minimum to [`DURATION_MAX_TEXT`] for all. The
//! schema rule ([`DurationRange::rule`]) and the operator ([`GoDuration::to_std_in`]) read the
//! same range and say the same message, so what `kubectl apply` accepts the operator can run.

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

/// The longest duration any CRD field accepts, as written in messages and CEL.
pub const DURATION_MAX_TEXT: &str = "8760h";
/// [`DURATION_MAX_TEXT`]: 365 days. Far beyond any useful interval, timeout or soak, and far
/// below what overflows a clock (Go's and the CEL library's `duration()` stop at about 292
/// years, where `2562048h` fails with an unreadable "type conversion error").
pub const DURATION_MAX: Duration = Duration::from_secs(8760 * 3600);

/// RE2: a duration with one part so large that the part alone exceeds [`DURATION_MAX`]
/// (10000h, 1000000m, 10^8 s, 10^11 ms, 10^14 us, 10^17 ns, leading zeros aside). A string
/// of at most [`DURATION_MAX_LENGTH`] characters that does *not* match stays below about
/// 93000h, so CEL's `duration()` cannot overflow on it: the range rule calls `duration()` only
/// then, and refuses the rest with its own message.
const DURATION_HUGE_PATTERN: &str = "(^|[a-z])0*([1-9][0-9]{4,}([.][0-9]+)?h|[1-9][0-9]{6,}([.][0-9]+)?m([0-9]|$)|[1-9][0-9]{8,}([.][0-9]+)?s|[1-9][0-9]{11,}([.][0-9]+)?ms|[1-9][0-9]{14,}([.][0-9]+)?us|[1-9][0-9]{17,}([.][0-9]+)?ns)";

/// The range of one kind of duration field: at least `min_seconds`, at most [`DURATION_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRange {
    /// The field's name, as messages say it (`deviceTimeout`).
    pub field: &'static str,
    /// The shortest duration accepted, in whole seconds.
    pub min_seconds: u64,
}

/// `IoTConnector.spec.checkInterval`: 10s to 8760h.
pub const CHECK_INTERVAL: DurationRange = DurationRange {
    field: "checkInterval",
    min_seconds: 10,
};
/// `Rollout.spec.policy.deviceTimeout`: 1s to 8760h (a zero timeout would time every device
/// out at once).
pub const DEVICE_TIMEOUT: DurationRange = DurationRange {
    field: "deviceTimeout",
    min_seconds: 1,
};
/// `Rollout.spec.policy.deviceTimeoutTotal`: 1s to 8760h, and never shorter than
/// `deviceTimeout` ([`not_shorter_rule`]).
pub const DEVICE_TIMEOUT_TOTAL: DurationRange = DurationRange {
    field: "deviceTimeoutTotal",
    min_seconds: 1,
};
/// `Rollout.spec.waves[].soak`: 0s to 8760h.
pub const SOAK: DurationRange = DurationRange {
    field: "soak",
    min_seconds: 0,
};

impl DurationRange {
    /// The shortest duration accepted.
    pub fn min(&self) -> Duration {
        Duration::from_secs(self.min_seconds)
    }

    /// The message of the schema rule and of [`DurationError::OutOfRange`].
    pub fn message(&self) -> String {
        format!(
            "{} must be a duration from {}s to {DURATION_MAX_TEXT} (365 days), such as 30m or 2h",
            self.field, self.min_seconds
        )
    }

    /// The CEL rule: a string of the duration's shape is within the range. Strings of another
    /// shape pass here (the shape rule of [`GoDuration`] refuses them with its own message), and
    /// `duration()` is only called on strings that cannot overflow it.
    pub fn rule(&self) -> kube::core::Rule {
        kube::core::Rule::new(format!(
            "!self.matches('{DURATION_PATTERN}') || (!self.matches('{DURATION_HUGE_PATTERN}') \
             && duration(self) >= duration('{}s') && duration(self) <= duration('{DURATION_MAX_TEXT}'))",
            self.min_seconds
        ))
        .message(self.message().as_str())
    }
}

/// The CEL rule, on the object holding both fields, that the optional duration `longer` is not
/// shorter than the duration `shorter` (camelCase field names). It passes when `longer` is
/// absent (objects stored before the field existed keep validating) or when either string is
/// not a duration within range (the fields' own rules refuse those with their messages), so
/// `duration()` is only called where it cannot fail.
pub fn not_shorter_rule(longer: &str, shorter: &str) -> kube::core::Rule {
    let usable = |f: &str| {
        format!(
            "has(self.{f}) && self.{f}.matches('{DURATION_PATTERN}') && !self.{f}.matches('{DURATION_HUGE_PATTERN}')"
        )
    };
    kube::core::Rule::new(format!(
        "!({}) || !({}) || duration(self.{longer}) >= duration(self.{shorter})",
        usable(longer),
        usable(shorter)
    ))
    .message(format!("{longer} must not be shorter than {shorter}").as_str())
}

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

    /// Parses the text and checks it against the field's range, exactly as the schema does.
    pub fn to_std_in(&self, range: &DurationRange) -> Result<Duration, DurationError> {
        let out_of_range = || DurationError::OutOfRange {
            text: self.0.clone(),
            message: range.message(),
        };
        match parse_duration(&self.0) {
            Ok(d) if d >= range.min() && d <= DURATION_MAX => Ok(d),
            Ok(_) | Err(DurationError::TooLarge { .. }) => Err(out_of_range()),
            Err(e) => Err(e),
        }
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
    /// Outside the range of its field ([`GoDuration::to_std_in`]).
    #[error("invalid duration {text:?}: {message}")]
    OutOfRange {
        /// The whole input.
        text: String,
        /// The field's rule, as the schema says it.
        message: String,
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

    #[test]
    fn each_range_accepts_its_bounds_and_refuses_one_step_beyond_with_its_message() {
        for range in [CHECK_INTERVAL, DEVICE_TIMEOUT, SOAK] {
            let at_min = GoDuration::new(format!("{}s", range.min_seconds));
            assert_eq!(at_min.to_std_in(&range), Ok(range.min()));
            let at_max = GoDuration::new(DURATION_MAX_TEXT);
            assert_eq!(at_max.to_std_in(&range), Ok(DURATION_MAX));
            let mut beyond = vec!["8760h1ns", "8761h", "2562048h", "99999999999999999999h"];
            let below = format!(
                "{}ns",
                (range.min_seconds * 1_000_000_000).saturating_sub(1)
            );
            if range.min_seconds > 0 {
                beyond.push(&below);
            }
            for text in beyond {
                match GoDuration::new(text).to_std_in(&range) {
                    Err(DurationError::OutOfRange { message, .. }) => {
                        assert_eq!(message, range.message(), "{text}")
                    }
                    other => panic!("{} {text}: {other:?}", range.field),
                }
            }
            // A malformed value keeps its own error (the schema's shape rule says the same).
            assert!(matches!(
                GoDuration::new("5d").to_std_in(&range),
                Err(DurationError::UnknownUnit { .. })
            ));
        }
        assert_eq!(
            DEVICE_TIMEOUT.message(),
            "deviceTimeout must be a duration from 1s to 8760h (365 days), such as 30m or 2h"
        );
    }

    #[test]
    fn the_range_rule_guards_every_call_of_duration() {
        let rule = serde_json::to_value(SOAK.rule()).unwrap();
        let text = rule["rule"].as_str().unwrap();
        // duration() appears only after the shape and the size guard.
        let guard = format!("!self.matches('{DURATION_HUGE_PATTERN}') && duration(self)");
        assert!(text.contains(&guard), "{text}");
        assert!(text.starts_with(&format!("!self.matches('{DURATION_PATTERN}') || (")));
        assert_eq!(rule["message"], serde_json::json!(SOAK.message()));
    }

    fn huge(text: &str) -> bool {
        regex::Regex::new(DURATION_HUGE_PATTERN)
            .unwrap()
            .is_match(text)
    }

    #[test]
    fn the_huge_guard_matches_exactly_parts_over_the_maximum() {
        for text in [
            "10000h",
            "1000000m",
            "100000000s",
            "1m100000000000ms",
            "00010000h",
        ] {
            assert!(huge(text), "{text}");
            assert!(parse_duration(text).unwrap() > DURATION_MAX, "{text}");
        }
        for text in [
            "9999h",
            "999999m",
            "99999999s",
            "99999999999ms",
            "0000000000009999h",
            "525600m",
        ] {
            assert!(!huge(text), "{text}");
        }
        assert!(huge("2562048h") && huge("99999999999999999999999999999h"));
    }

    /// One part of a duration: a number (some with leading zeros, some far too large), an
    /// optional fraction and a unit.
    fn part() -> impl Strategy<Value = String> {
        (
            "0{0,2}[0-9]{1,14}",
            proptest::option::of("[0-9]{1,6}"),
            prop_oneof![
                Just("h"),
                Just("m"),
                Just("s"),
                Just("ms"),
                Just("us"),
                Just("ns")
            ],
        )
            .prop_map(|(int, frac, unit)| match frac {
                Some(f) => format!("{int}.{f}{unit}"),
                None => format!("{int}{unit}"),
            })
    }

    proptest! {
        /// What the size guard lets through never overflows a clock (so CEL's `duration()`
        /// cannot fail on it); what it stops is beyond the maximum anyway.
        #[test]
        fn the_huge_guard_keeps_duration_from_overflowing(
            parts in proptest::collection::vec(part(), 1..8)
        ) {
            // As many parts as fit the schema's length (the first always does).
            let mut text = String::new();
            for p in parts {
                if text.len() + p.len() > DURATION_MAX_LENGTH {
                    break;
                }
                text.push_str(&p);
            }
            let parsed = parse_duration(&text);
            if huge(&text) {
                prop_assert!(!matches!(parsed, Ok(d) if d <= DURATION_MAX), "{text}: {parsed:?}");
            } else {
                let d = parsed.unwrap_or_else(|e| panic!("{text}: {e}"));
                prop_assert!(d < Duration::from_secs(100_000 * 3600), "{text}: {d:?}");
            }
        }

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

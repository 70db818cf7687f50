//! Durations and the distributions a profile draws step durations from.
//!
//! In YAML a duration is a string with a unit (`250ms`, `2s`, `1.5m`, `1h`, `0`) or a plain
//! number of seconds. A distribution is either a plain duration (fixed), or a map with exactly
//! one of `fixed`, `uniform: {min, max}` or `exponential: {mean, cap}`.

use std::fmt;

use rand::Rng;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A non-negative duration in microseconds, parsed from `250ms`, `2s`, `1.5m`, `1h` or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// The duration in microseconds.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses a duration string; the error says what is accepted.
    pub fn parse(text: &str) -> Result<Micros, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let scale: f64 = match unit.trim() {
            "us" | "µs" => 1.0,
            "ms" => 1e3,
            "" | "s" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            other => {
                return Err(format!(
                    "duration `{text}` has unknown unit `{other}` (use us, ms, s, m, h or d)"
                ));
            }
        };
        let value: f64 = number.parse().map_err(|_| {
            format!("`{text}` is not a duration such as `250ms`, `2s`, `1.5m` or `1h`")
        })?;
        let micros = value * scale;
        if !micros.is_finite() || micros > 1e17 {
            return Err(format!("duration `{text}` is too large"));
        }
        Ok(Micros(micros.round() as i64))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us % 1_000_000 == 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us % 1000 == 0 {
            write!(f, "{}ms", us / 1000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as `250ms`, `2s`, `1.5m`, `1h`, or a number of seconds",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Micros, E> {
                Micros::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Micros, E> {
                Micros::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Micros, E> {
                if v < 0 {
                    return Err(E::custom(format!("duration {v} is negative")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Micros, E> {
                if v < 0.0 {
                    return Err(E::custom(format!("duration {v} is negative")));
                }
                Micros::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a step duration is drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Always this long.
    Fixed(Micros),
    /// Uniform between `min` and `max`, inclusive.
    Uniform {
        /// Shortest.
        min: Micros,
        /// Longest.
        max: Micros,
    },
    /// Exponential with this mean, cut at `cap` (slow devices: a long tail, but bounded).
    Exponential {
        /// Mean duration.
        mean: Micros,
        /// Longest duration ever drawn.
        cap: Micros,
    },
}

impl Distribution {
    /// Draws one duration in microseconds.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        match *self {
            Distribution::Fixed(d) => d.0,
            Distribution::Uniform { min, max } => rng.random_range(min.0..=max.0),
            Distribution::Exponential { mean, cap } => {
                // Inverse transform: -mean * ln(1 - u), u in [0, 1).
                let u: f64 = rng.random();
                let x = -(mean.0 as f64) * (1.0 - u).ln();
                (x.round() as i64).clamp(0, cap.0)
            }
        }
    }

    /// The longest duration this distribution can draw.
    pub fn max(&self) -> i64 {
        match *self {
            Distribution::Fixed(d) => d.0,
            Distribution::Uniform { max, .. } => max.0,
            Distribution::Exponential { cap, .. } => cap.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UniformSpec {
    min: Micros,
    max: Micros,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExponentialSpec {
    mean: Micros,
    cap: Option<Micros>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DistributionSpec {
    fixed: Option<Micros>,
    uniform: Option<UniformSpec>,
    exponential: Option<ExponentialSpec>,
}

impl DistributionSpec {
    fn build(self) -> Result<Distribution, String> {
        match (self.fixed, self.uniform, self.exponential) {
            (Some(d), None, None) => Ok(Distribution::Fixed(d)),
            (None, Some(u), None) => {
                if u.min > u.max {
                    Err(format!(
                        "uniform min {} is greater than max {}",
                        u.min, u.max
                    ))
                } else {
                    Ok(Distribution::Uniform {
                        min: u.min,
                        max: u.max,
                    })
                }
            }
            (None, None, Some(e)) => {
                // Without a cap, ten times the mean keeps the tail long but finite.
                let cap = e.cap.unwrap_or(Micros(e.mean.0.saturating_mul(10)));
                Ok(Distribution::Exponential { mean: e.mean, cap })
            }
            _ => Err(
                "a distribution needs exactly one of `fixed`, `uniform` or `exponential`".into(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Distribution;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration (`2s`) or one of `{fixed: 2s}`, `{uniform: {min: 1s, max: 5s}}`, \
                     `{exponential: {mean: 3s, cap: 30s}}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Distribution, E> {
                Micros::parse(v).map(Distribution::Fixed).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Distribution, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Distribution, E> {
                if v < 0.0 {
                    return Err(E::custom(format!("duration {v} is negative")));
                }
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Distribution, A::Error> {
                let spec =
                    DistributionSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                spec.build().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(Micros::parse("250ms"), Ok(Micros(250_000)));
        assert_eq!(Micros::parse("2s"), Ok(Micros(2_000_000)));
        assert_eq!(Micros::parse("1.5m"), Ok(Micros(90_000_000)));
        assert_eq!(Micros::parse("1h"), Ok(Micros(3_600_000_000)));
        assert_eq!(Micros::parse("3"), Ok(Micros(3_000_000)));
        assert!(
            Micros::parse("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(Micros::parse("fast").is_err());
        assert!(Micros::parse("-1s").is_err());
    }

    #[test]
    fn distributions_parse_in_every_form() {
        let d: Distribution = serde_yaml::from_str("2s").unwrap();
        assert_eq!(d, Distribution::Fixed(Micros(2_000_000)));
        let d: Distribution = serde_yaml::from_str("{uniform: {min: 1s, max: 3s}}").unwrap();
        assert_eq!(d.max(), 3_000_000);
        let d: Distribution = serde_yaml::from_str("exponential: {mean: 1s}").unwrap();
        assert_eq!(d.max(), 10_000_000);
        let e = serde_yaml::from_str::<Distribution>("{uniform: {min: 5s, max: 1s}}").unwrap_err();
        assert!(e.to_string().contains("greater than max"), "{e}");
        let e = serde_yaml::from_str::<Distribution>("{fixed: 1s, uniform: {min: 1s, max: 2s}}")
            .unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = serde_yaml::from_str::<Distribution>("{normal: 1s}").unwrap_err();
        assert!(e.to_string().contains("unknown field `normal`"), "{e}");
    }

    #[test]
    fn samples_stay_within_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let u = Distribution::Uniform {
            min: Micros(10),
            max: Micros(20),
        };
        let e = Distribution::Exponential {
            mean: Micros(1000),
            cap: Micros(3000),
        };
        let mut sum = 0i64;
        for _ in 0..2000 {
            let x = u.sample(&mut rng);
            assert!((10..=20).contains(&x));
            let y = e.sample(&mut rng);
            assert!((0..=3000).contains(&y));
            sum += y;
        }
        let mean = sum / 2000;
        assert!(
            (700..=1100).contains(&mean),
            "capped exponential mean {mean}"
        );
    }
}

//! The experiment's `trial:` section: a program that trains each trial
//! instead of bocb's trainer, and its time limit. What runs it is
//! [`crate::external`]; this is only what the experiment file says.

use std::time::Duration;

use bocb_store::{TrialRecord, TrialStatus};
use serde::{Deserialize, Serialize};

/// Without `timeout`, a trial may run this many times as long as the
/// longest done trial of its pair...
pub const DERIVED_LIMIT_FACTOR: u32 = 3;
/// ...but never less than this.
pub const MIN_DERIVED_LIMIT: Duration = Duration::from_secs(10 * 60);

/// The experiment's `trial:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTrial {
    /// Run with `sh -c` in the experiment file's directory.
    pub command: String,
    /// The trial's time limit; when absent, one is derived from the pair's
    /// earlier trials (see [`ExternalTrial::with_derived_limit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeLimit>,
}

impl ExternalTrial {
    /// The trial as one of a pair runs it: with its own `timeout`, else
    /// [`DERIVED_LIMIT_FACTOR`] times the longest done trial among
    /// `pair_trials`, at least [`MIN_DERIVED_LIMIT`]; no limit before the
    /// pair has a done trial with a measured time.
    pub fn with_derived_limit(&self, pair_trials: &[TrialRecord]) -> ExternalTrial {
        let longest = pair_trials
            .iter()
            .filter(|t| t.status == TrialStatus::Done)
            .filter_map(|t| t.wall_time_s)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .reduce(f64::max);
        let derived = longest.map(|s| {
            TimeLimit(
                Duration::from_secs_f64(s * f64::from(DERIVED_LIMIT_FACTOR)).max(MIN_DERIVED_LIMIT),
            )
        });
        ExternalTrial {
            command: self.command.clone(),
            timeout: self.timeout.or(derived),
        }
    }
}

/// A trial's time limit: `2h`, `90m`, `45s` (a number and `h`, `m` or `s`)
/// or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeLimit(pub Duration);

impl TimeLimit {
    pub const FORMS: &'static str =
        "a positive duration such as `2h`, `90m`, `45s` or a number of seconds";

    fn parse(text: &str) -> Result<TimeLimit, String> {
        let text = text.trim();
        let (number, unit) = match text.char_indices().last() {
            Some((i, 'h')) => (&text[..i], 3600.0),
            Some((i, 'm')) => (&text[..i], 60.0),
            Some((i, 's')) => (&text[..i], 1.0),
            _ => (text, 1.0),
        };
        match number.trim().parse::<f64>() {
            Ok(n) => TimeLimit::from_seconds(n * unit),
            Err(_) => Err(format!("must be {}, got `{text}`", TimeLimit::FORMS)),
        }
    }

    fn from_seconds(seconds: f64) -> Result<TimeLimit, String> {
        if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
            Ok(TimeLimit(Duration::from_secs_f64(seconds)))
        } else {
            Err(format!(
                "must be {}, got {seconds} seconds",
                TimeLimit::FORMS
            ))
        }
    }
}

impl std::fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.0.as_secs_f64();
        match seconds {
            s if s >= 3600.0 && s % 3600.0 == 0.0 => write!(f, "{}h", s / 3600.0),
            s if s >= 60.0 && s % 60.0 == 0.0 => write!(f, "{}m", s / 60.0),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for TimeLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for TimeLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TimeLimit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(TimeLimit::FORMS)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TimeLimit, E> {
                TimeLimit::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TimeLimit, E> {
                TimeLimit::from_seconds(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TimeLimit, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TimeLimit, E> {
                self.visit_f64(v as f64)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_parse_and_derive_from_the_pairs_done_trials() {
        for (text, seconds) in [
            ("2h", 7200.0),
            ("90m", 5400.0),
            ("45s", 45.0),
            ("1.5h", 5400.0),
            ("30", 30.0),
        ] {
            assert_eq!(
                TimeLimit::parse(text).unwrap().0.as_secs_f64(),
                seconds,
                "{text}"
            );
        }
        for bad in ["0", "-1h", "soon", "2d", ""] {
            let err = TimeLimit::parse(bad).unwrap_err();
            assert!(err.contains("such as `2h`"), "{err}");
        }
        assert_eq!(TimeLimit(Duration::from_secs(7200)).to_string(), "2h");
        assert_eq!(TimeLimit(Duration::from_secs(90)).to_string(), "90s");

        let trial = ExternalTrial {
            command: "x".into(),
            timeout: None,
        };
        let record = |status, wall: f64| TrialRecord {
            status,
            wall_time_s: Some(wall),
            ..TrialRecord::new("e", "t", "b", "o")
        };
        assert_eq!(trial.with_derived_limit(&[]).timeout, None);
        let pair = [
            record(TrialStatus::Done, 600.0),
            record(TrialStatus::Done, 1200.0),
            // Not done: says nothing of how long a whole trial takes.
            record(TrialStatus::Failed, 99_999.0),
        ];
        assert_eq!(
            trial.with_derived_limit(&pair).timeout,
            Some(TimeLimit(Duration::from_secs(3600)))
        );
        let quick = [record(TrialStatus::Done, 1.0)];
        assert_eq!(
            trial.with_derived_limit(&quick).timeout,
            Some(TimeLimit(MIN_DERIVED_LIMIT))
        );
        let own = ExternalTrial {
            timeout: Some(TimeLimit(Duration::from_secs(5))),
            ..trial
        };
        assert_eq!(own.with_derived_limit(&pair).timeout, own.timeout);
    }
}

//! The experiment's `trial:` section: a program that trains each trial
//! instead of bocb's trainer, and its time limit. This is only what the
//! experiment file says; the tuner runs it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The experiment's `trial:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTrial {
    /// Run with `sh -c` in the experiment file's directory.
    pub command: String,
    /// The trial's time limit; when absent, one is derived from the pair's
    /// earlier trials (the tuner derives it from the pair's earlier trials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeLimit>,
}

/// A trial's time limit: `2h`, `90m`, `45s` (a number and `h`, `m` or `s`)
/// or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeLimit(pub Duration);

impl TimeLimit {
    pub const FORMS: &'static str =
        "a positive duration such as `2h`, `90m`, `45s` or a number of seconds";

    pub fn parse(text: &str) -> Result<TimeLimit, BadTimeLimit> {
        let text = text.trim();
        let (number, unit) = match text.char_indices().last() {
            Some((i, 'h')) => (&text[..i], 3600.0),
            Some((i, 'm')) => (&text[..i], 60.0),
            Some((i, 's')) => (&text[..i], 1.0),
            _ => (text, 1.0),
        };
        match number.trim().parse::<f64>() {
            Ok(n) => TimeLimit::from_seconds(n * unit),
            Err(_) => Err(BadTimeLimit::Text(text.to_string())),
        }
    }

    fn from_seconds(seconds: f64) -> Result<TimeLimit, BadTimeLimit> {
        if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
            Ok(TimeLimit(Duration::from_secs_f64(seconds)))
        } else {
            Err(BadTimeLimit::Seconds(seconds))
        }
    }
}

/// A `timeout` that is no time limit, with the forms that are.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BadTimeLimit {
    #[error("must be {forms}, got `{0}`", forms = TimeLimit::FORMS)]
    Text(String),
    #[error("must be {forms}, got {0} seconds", forms = TimeLimit::FORMS)]
    Seconds(f64),
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

//! The experiment's `trial:` section: a program that trains each trial
//! instead of bocb's trainer, and its time limit. What runs it is
//! [`crate::external`]; this is only what the experiment file says.

use std::time::Duration;

pub use bocb_spec::{ExternalTrial, TimeLimit};
use bocb_store::{TrialRecord, TrialStatus};

/// Without `timeout`, a trial may run this many times as long as the
/// longest done trial of its pair...
pub const DERIVED_LIMIT_FACTOR: u32 = 3;
/// ...but never less than this.
pub const MIN_DERIVED_LIMIT: Duration = Duration::from_secs(10 * 60);

/// The time limit of a trial without its own `timeout`.
pub trait DerivedLimit {
    /// The trial as one of a pair runs it: with its own `timeout`, else
    /// [`DERIVED_LIMIT_FACTOR`] times the longest done trial among
    /// `pair_trials`, at least [`MIN_DERIVED_LIMIT`]; no limit before the
    /// pair has a done trial with a measured time.
    fn with_derived_limit(&self, pair_trials: &[TrialRecord]) -> ExternalTrial;
}

impl DerivedLimit for ExternalTrial {
    fn with_derived_limit(&self, pair_trials: &[TrialRecord]) -> ExternalTrial {
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
            let err = TimeLimit::parse(bad).unwrap_err().to_string();
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

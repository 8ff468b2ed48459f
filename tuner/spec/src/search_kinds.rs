//! The search strategies and early-stopping rules an experiment names; what
//! each does is the tuner's `search`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::unknown::UnknownChoice;

/// The strategies of `strategy:` in an experiment.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// Every grid point, in order (the paper's search).
    #[default]
    Grid,
    /// Uniformly random untried points.
    Random,
    /// Tree-structured Parzen estimator over the grid.
    Tpe,
    /// Gaussian-process surrogate with expected improvement.
    Bayes,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Grid,
        StrategyKind::Random,
        StrategyKind::Tpe,
        StrategyKind::Bayes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Grid => "grid",
            StrategyKind::Random => "random",
            StrategyKind::Tpe => "tpe",
            StrategyKind::Bayes => "bayes",
        }
    }
}

/// The early-stopping rules of `early_stop:` in an experiment.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StopKind {
    /// Every trial runs every epoch.
    #[default]
    None,
    /// Stop below the median of complete trials at the same epoch.
    Median,
    /// Asynchronous successive halving.
    Asha,
    /// Stop when a fitted learning curve predicts no improvement on the best.
    Curve,
}

impl StopKind {
    pub const ALL: [StopKind; 4] = [
        StopKind::None,
        StopKind::Median,
        StopKind::Asha,
        StopKind::Curve,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StopKind::None => "none",
            StopKind::Median => "median",
            StopKind::Asha => "asha",
            StopKind::Curve => "curve",
        }
    }
}

macro_rules! display_and_parse {
    ($kind:ident, $what:literal) => {
        impl fmt::Display for $kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $kind {
            type Err = UnknownChoice;
            fn from_str(s: &str) -> Result<Self, UnknownChoice> {
                $kind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| {
                        let choices: Vec<&str> = $kind::ALL.iter().map(|k| k.as_str()).collect();
                        UnknownChoice {
                            what: $what,
                            given: s.to_string(),
                            choices: choices.join(", "),
                        }
                    })
            }
        }
    };
}

display_and_parse!(StrategyKind, "strategy");
display_and_parse!(StopKind, "early-stopping rule");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_name_the_choices_when_unknown() {
        assert_eq!("tpe".parse::<StrategyKind>(), Ok(StrategyKind::Tpe));
        assert_eq!("asha".parse::<StopKind>(), Ok(StopKind::Asha));
        let err = "hyperband".parse::<StopKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown early-stopping rule `hyperband`; valid choices: none, median, asha, curve"
        );
        assert!("grids"
            .parse::<StrategyKind>()
            .unwrap_err()
            .to_string()
            .contains("grid, random, tpe, bayes"));
    }
}

//! The arithmetic an experiment asks its trials to train in.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::UnknownName;

/// What an experiment asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// bf16 autocast on CUDA where the recipe allows it (its `bf16`), else fp32.
    #[default]
    Auto,
    Fp32,
    /// bf16 autocast on any device (on a CPU it is slower, but runs).
    Bf16,
}

impl PrecisionChoice {
    /// The name experiment YAML uses.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionChoice::Auto => "auto",
            PrecisionChoice::Fp32 => "fp32",
            PrecisionChoice::Bf16 => "bf16",
        }
    }
}

impl FromStr for PrecisionChoice {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "auto" => Ok(PrecisionChoice::Auto),
            "fp32" => Ok(PrecisionChoice::Fp32),
            "bf16" => Ok(PrecisionChoice::Bf16),
            other => Err(UnknownName {
                what: "precision",
                given: other.to_string(),
                valid: "auto, fp32, bf16",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_yaml_names() {
        for choice in [
            PrecisionChoice::Auto,
            PrecisionChoice::Fp32,
            PrecisionChoice::Bf16,
        ] {
            assert_eq!(choice.name().parse(), Ok(choice));
        }
        let err = "fp16".parse::<PrecisionChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, fp32, bf16"), "{err}");
    }
}

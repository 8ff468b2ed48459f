//! The errors of a name that is none of the values a choice has: each names
//! what was given and what is valid, for the command line and the YAML.

use thiserror::Error;

/// A name that is none of a choice's values, with the values there are.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} `{given}`; valid choices: {choices}")]
pub struct UnknownChoice {
    pub what: &'static str,
    pub given: String,
    pub choices: String,
}

/// A name that is none of a fixed set of forms (`auto, fp32, bf16`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} `{given}`; valid: {valid}")]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub valid: &'static str,
}

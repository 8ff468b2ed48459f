use std::path::PathBuf;

use crate::GridPos;
use crate::TrialStatus;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store directory could not be created (for instance the path is a
    /// regular file).
    #[error("cannot create the bocb store directory {}: {source}", dir.display())]
    CreateDir {
        /// The directory that was asked for.
        dir: PathBuf,
        /// Why creating it failed.
        source: std::io::Error,
    },

    /// Another handle holds the lock on the store.
    #[error(
        "the bocb store at {} is locked: another bocb process may be using it",
        dir.display()
    )]
    Locked {
        /// The store directory.
        dir: PathBuf,
        /// The lock failure as sled reported it.
        source: sled::Error,
    },

    /// sled refused to open the directory.
    #[error(
        "cannot open the bocb store at {}: {source} (is it a bocb store directory? \
         another bocb process may be using it)",
        dir.display()
    )]
    Open {
        /// The store directory.
        dir: PathBuf,
        /// What sled reported.
        source: sled::Error,
    },

    /// A read, write or flush failed in sled after the store was open.
    #[error("bocb store I/O failed: {0}")]
    Sled(#[from] sled::Error),

    /// A stored value is not valid JSON for its record type.
    #[error("corrupt record {key:?} in tree {tree}: {source}")]
    Corrupt {
        /// The sled tree holding the record.
        tree: &'static str,
        /// The record's key, with the `\0` separator shown as `/`.
        key: String,
        /// The decoding failure.
        source: serde_json::Error,
    },

    /// A trial's record counts more pieces of its epochs than the store
    /// holds: the store was changed by something other than bocb.
    #[error("corrupt trial {key:?}: piece {index} of its {pieces} pieces of epochs is missing from tree trial_details.v1")]
    MissingPiece {
        /// The trial's key, with the `\0` separator shown as `/`.
        key: String,
        index: u32,
        pieces: u32,
    },

    /// An experiment name or trial id that cannot be used as (part of) a key.
    #[error("invalid {what} {name:?}: it must be non-empty and must not contain NUL")]
    InvalidName {
        /// "experiment name" or "trial id".
        what: &'static str,
        /// The offending name.
        name: String,
    },

    /// A trial's grid position lies outside the 5 x 5 grid.
    #[error(
        "trial {id:?} has grid position lr={}, weight_decay={}; both must be below {}",
        grid.lr, grid.weight_decay, crate::GRID_POINTS
    )]
    GridOutOfRange {
        /// The trial id.
        id: String,
        /// The offending position.
        grid: GridPos,
    },

    /// A trial parameter is NaN or infinite, which JSON cannot store.
    #[error("trial {id:?} has non-finite parameter {key} = {value}")]
    NonFiniteParam {
        /// The trial id.
        id: String,
        /// The parameter name.
        key: String,
        /// The offending value.
        value: f64,
    },

    /// The trial does not exist.
    #[error("no trial {id:?} in experiment {experiment:?}")]
    TrialNotFound {
        /// The experiment name.
        experiment: String,
        /// The trial id.
        id: String,
    },

    /// An experiment was written over an imported results table, which
    /// would mix trained trials with published numbers.
    #[error(
        "experiment {name:?} holds an imported results table; give the trained experiment \
         another name"
    )]
    ExperimentIsImported {
        /// The experiment name.
        name: String,
    },

    /// An imported results table was refused.
    #[error(transparent)]
    Import(#[from] ImportError),

    /// `finish_trial` was given a status that does not end a trial.
    #[error("cannot finish trial {id:?} with status {status}: it is not a final status")]
    NotFinal {
        /// The trial id.
        id: String,
        /// The status that was passed.
        status: TrialStatus,
    },
}

/// Why an imported results table was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The experiment already holds trials that bocb trained.
    #[error(
        "experiment {experiment:?} already holds {trials} trained trial(s); import the table \
         under another name (--experiment)"
    )]
    OverTrained {
        /// The experiment name.
        experiment: String,
        /// How many trials it holds.
        trials: usize,
    },
    /// A result is not a finite accuracy, lies off the 5 x 5 grid, or names
    /// a backbone or optimizer missing from the table's lists.
    #[error("imported result {backbone} x {optimizer}: {problem}")]
    BadResult {
        /// Backbone of the result.
        backbone: String,
        /// Optimizer of the result.
        optimizer: String,
        /// What is wrong with it.
        problem: String,
    },
}

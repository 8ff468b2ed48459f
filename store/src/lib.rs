//! Durable history of bocb experiments and trials, and the queries derived
//! from it (best hyperparameters per pair, lr x weight-decay grids).
//!
//! The store knows nothing about training or about the tuner: it keeps
//! records and answers questions about them.
//!
//! # On-disk layout
//!
//! One sled database per directory, holding six trees. Tree names carry a
//! version so that a later incompatible layout can live beside the old one
//! and migrate it.
//!
//! | tree               | key                                | value                          |
//! |--------------------|------------------------------------|--------------------------------|
//! | `experiments.v1`   | experiment name (UTF-8)            | [`ExperimentRecord`] as JSON   |
//! | `trials.v2`        | experiment name, `\0`, trial id    | the [`TrialRecord`] without epochs and gradient norms, and how many pieces hold them, as JSON |
//! | `trial_details.v1` | the trial's key, `\0`, piece (u32, big-endian) | up to 4 KiB of the JSON of its epochs and gradient norms |
//! | `imported.v1`      | experiment name (UTF-8)            | [`ImportedTable`] as JSON      |
//! | `probes.v1`        | probe key (UTF-8)                  | [`ProbeRecord`] as JSON        |
//! | `summaries.v2`     | as in `trials.v2`                  | [`TrialSummary`] as JSON       |
//!
//! A trial's epochs and gradient norms lie in small pieces so that sled's
//! page cache can evict them (the reason is in the `layout` module): a
//! service that reads the whole history keeps at most its cache of it. A
//! trial and its pieces are written, and read, in one transaction. Stores
//! written before hold whole records in `trials.v1`; they are split when
//! first opened.
//!
//! A summary is its trial without the epochs, written in the same
//! transaction as the trial, so listing an experiment's 10,000 trials reads
//! a few megabytes rather than every epoch of every trial. A store written
//! before `summaries.v2` (or with `summaries.v1`, which lacked gradients)
//! gets its summaries made when it is first opened.
//!
//! Probes belong to no experiment: a config measured once serves every
//! experiment that trains it. Stores written before `probes.v1` open with
//! the tree empty.
//!
//! An imported experiment (`bocb import`) has an experiment record and an
//! `imported.v1` entry but no trials; the store refuses to mix the two kinds
//! under one name.
//!
//! The `\0` separator makes "all trials of an experiment" a prefix scan; for
//! that reason experiment names may not contain `\0`. Values are JSON so
//! that records stay readable with generic tools and so that optional fields
//! added later default when old records are read.
//!
//! Non-finite floats cannot be written as JSON numbers: `serde_json` writes
//! them as `null`. Epoch metrics read such a `null` back as NaN (a diverged
//! loss stays visibly non-finite), optional floats read it back as `None`,
//! and [`Store::put_trial`] rejects non-finite params outright.
//!
//! # Durability
//!
//! Every write method flushes (fsync) before it returns, so a record that a
//! write reported as stored survives a crash right after.

mod error;
mod imported;
mod layout;
mod query;
mod record;
mod store;
mod stored_spec;

pub use error::{ImportError, StoreError};
pub use imported::{ImportedResult, ImportedTable};
pub use query::{best_per_pair as best_per_pair_of, grid as grid_of, GridCell, PairBest};
// The trial types every crate shares; re-exported so store users need no
// second import.
pub use bocb_spec::{EpochMetrics, GradNormRow, GradNorms, GridPos, TrialStatus, GRID_POINTS};
pub use record::{
    unix_now_s, ExperimentRecord, GradientSummary, ProbeRecord, TrialEnd, TrialRecipe, TrialRecord,
    TrialSummary,
};
pub use store::{Store, RELEASE_WAIT};
pub use stored_spec::{stored_spec, StoredSpecError};

/// Result type of every fallible store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;

//! Trains one bocb trial with tch: data, backbone, optimizer, schedule, metrics.
//!
//! The runner knows nothing about the tuner or the store: it takes a
//! [`TrialSpec`], trains, and reports each epoch to a [`TrialObserver`]. What
//! happens to the reports (recording, early stopping) is the caller's business.

pub mod augment;
pub mod batches;
pub mod cpu_cache;
pub mod data;
pub mod device;
pub mod grad_norms;
pub mod layer_decay;
pub mod memory;
pub mod models;
pub mod optim;
pub mod patterns;
pub mod precision;
pub mod pretrained;
pub mod probe;
pub mod regime;
pub mod schedule;
pub mod seeding;
mod trainer;

pub use bocb_spec::{
    EpochMetrics, PrecisionChoice, TrialObserver, TrialOutcome, TrialSpec, TrialStatus,
};
pub use device::{DeviceChoice, DeviceList, ResolveDevice};
pub use trainer::{run_trial, with_recipe_rates, CheckpointError, Learner, Start, TrialError};

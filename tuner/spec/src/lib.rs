//! The plain types every part of bocb shares, with serde only: what a trial
//! is (its spec and hyperparameters), what each epoch measured, where a
//! trial is in its life, and the device, precision and batch-source choices
//! an experiment makes. Nothing here trains, stores or links libtorch.

mod data_on_device;
pub mod device;
mod grad_norms;
mod precision;
mod transfer;
mod trial;

pub use data_on_device::DataOnDevice;
pub use device::{DeviceChoice, DeviceList};
pub use grad_norms::{GradNormRow, GradNorms, EMBEDDING_GROUP, LARGE_EMBEDDING_RATIO};
pub use precision::PrecisionChoice;
pub use transfer::{split_pretrained, FROM_EXPERIMENT, PRETRAINED_WITH};
pub use trial::{fmt_value, EpochMetrics, Hparams, TrialOutcome, TrialSpec, TrialStatus};

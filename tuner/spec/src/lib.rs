//! The plain types every part of bocb shares, with serde and thiserror only: what a trial
//! is (its spec and hyperparameters), what each epoch measured, where a
//! trial is in its life, the dataset's format, the layer patterns the
//! runner measures, the device, precision and batch-source choices an
//! experiment makes, how the service launches its workers on a cluster,
//! and the experiment file's schema.
//! Nothing here trains, stores or links libtorch.

mod backbones;
mod data_on_device;
pub mod dataset;
pub mod device;
pub mod experiment;
mod external_trial;
mod grad_norms;
mod grid;
pub mod grid_centres;
pub mod launcher;
mod packing_rule;
mod pattern;
mod precision;
mod search_kinds;
mod transfer;
mod trial;
mod unknown;

pub use backbones::{BackboneSummary, KnownBackbones};
pub use data_on_device::DataOnDevice;
pub use dataset::{cifar_form_at, BadFiles, CifarFormat, DatasetFormat};
pub use device::{DeviceChoice, DeviceList, DeviceListError};
pub use external_trial::{BadTimeLimit, ExternalTrial, TimeLimit};
pub use grad_norms::{GradNormRow, GradNorms, EMBEDDING_GROUP, LARGE_EMBEDDING_RATIO};
pub use grid::{ExtendedPos, GridPos, GRID_POINTS, LAST_GRID_INDEX};
pub use launcher::{Launcher, SlurmConfig};
pub use packing_rule::PackingRule;
pub use pattern::{patterns_path, LayerPattern, TOP_K};
pub use precision::PrecisionChoice;
pub use search_kinds::{StopKind, StrategyKind};
pub use transfer::{split_pretrained, FROM_EXPERIMENT, PRETRAINED_WITH};
pub use unknown::{UnknownChoice, UnknownName};
/// Prefix of a user's own TorchScript backbone or optimizer: `torchscript:PATH`.
pub const TORCHSCRIPT_PREFIX: &str = "torchscript:";

pub use trial::{
    fmt_mib, fmt_value, EpochMetrics, Hparams, TrialObserver, TrialOutcome, TrialSpec, TrialStatus,
};

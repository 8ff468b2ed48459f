//! One trial: what determines it, what each epoch measured, how it ended.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bocb_search_spaces::Recipe;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{DataOnDevice, DeviceChoice, PrecisionChoice};

/// Optimizer hyperparameters by reference name (`lr`, `weight_decay`,
/// `momentum`, ...).
pub type Hparams = BTreeMap<String, f64>;

/// A hyperparameter value as grids and tables show it: `0.1`, `5e-4`.
pub fn fmt_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-2 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Bytes as tables show them: MiB, with decimals below 100 MiB (a micro
/// model's optimizer state is a fraction of one); `-` when unknown.
pub fn fmt_mib(bytes: Option<u64>) -> String {
    match bytes.map(|b| b as f64 / f64::from(1u32 << 20)) {
        None => "-".into(),
        Some(mib) if mib >= 100.0 => format!("{mib:.0}"),
        Some(mib) if mib >= 1.0 => format!("{mib:.1}"),
        Some(mib) => format!("{mib:.2}"),
    }
}

/// Everything that determines one trial. `epochs`, `batch_size` and
/// `warmup_epochs` are the ones trained with; a recipe built by the tuner
/// holds the same values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    pub backbone: String,
    pub optimizer: String,
    /// Optimizer hyperparameters by reference name; `lr` is the schedule's base.
    pub hparams: Hparams,
    pub seed: u64,
    pub epochs: u32,
    pub batch_size: usize,
    pub warmup_epochs: u32,
    /// Apply weight decay to biases and norm parameters too (timm's
    /// `filter_bias_and_bn=False`); by default they are exempt.
    #[serde(default)]
    pub decay_norm_and_bias: bool,
    pub device: DeviceChoice,
    /// Where to write the trained weights (safetensors) when the trial ends
    /// done, for the parameter-pattern analysis.
    #[serde(default)]
    pub save_weights: Option<PathBuf>,
    /// The resolved training recipe (augmentation, regularisation, loss,
    /// EMA); `None` trains the CIFAR baseline: random crop with padding,
    /// horizontal flip, cross-entropy. The optimizer, lr and weight decay
    /// are the trial's own, never the recipe's.
    #[serde(default)]
    pub recipe: Option<Recipe>,
    /// Threads that load and augment batches; 0 uses all cores but one.
    /// Batches do not depend on it.
    #[serde(default)]
    pub data_workers: usize,
    /// fp32, or bf16 autocast (`auto`: on CUDA where the recipe allows it).
    #[serde(default)]
    pub precision: PrecisionChoice,
    /// Deterministic kernels only (`torch.use_deterministic_algorithms`),
    /// for bit-equal reruns on CUDA; slower. Process-wide while it trains.
    #[serde(default)]
    pub deterministic: bool,
    /// Batches in channels-last memory order (often faster for
    /// convolutions on CUDA; `bocb bench train --channels-last` measures it).
    #[serde(default)]
    pub channels_last: bool,
    /// Make the batches on the trial's device from splits uploaded there
    /// (`auto`: on CUDA when the recipe's transforms allow it and the data
    /// fits). Batches do not depend on it.
    #[serde(default)]
    pub data_on_device: DataOnDevice,
    /// Where the trial keeps its checkpoint (one per trial): a trial that
    /// finds one there continues from it. `None`: no checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Save a checkpoint after every this many epochs (0: only when asked);
    /// `None` saves after every epoch once an epoch has taken over a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u32>,
    /// Start from these weights (safetensors, the reference's state-dict
    /// names) instead of a random initialisation; a classifier for another
    /// class count starts fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_weights: Option<PathBuf>,
    /// Parameters kept as they start and never handed to the optimizer:
    /// `embedding` (the backbone's embedding layer) or name patterns
    /// (`stages.0.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// Where a trial is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Waiting for a worker.
    Queued,
    /// At least started; epochs may be arriving.
    Running,
    /// Trained to the end.
    Done,
    /// Stopped because the loss blew up.
    Diverged,
    /// Stopped by an early-stopping rule: a partial result, never a pair's best.
    Stopped,
    /// Stopped by an error.
    Failed,
}

impl TrialStatus {
    /// Whether the trial has ended (done, diverged, stopped or failed).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Diverged | Self::Stopped | Self::Failed
        )
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Diverged => "diverged",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        })
    }
}

/// What one epoch of a trial measured.
///
/// Non-finite values (a diverged loss) are stored as JSON `null` and read
/// back as NaN.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Mean training loss over the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    /// Loss on the test set after the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_loss: f64,
    /// Test accuracy after the epoch, in percent.
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_accuracy: f64,
    /// Learning rate at the end of the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Training throughput.
    #[serde(deserialize_with = "f64_or_nan")]
    pub images_per_sec: f64,
    /// Wall-clock seconds the epoch took.
    #[serde(deserialize_with = "f64_or_nan")]
    pub wall_s: f64,
    /// Test accuracy of the weights' moving average after the epoch, where
    /// the recipe keeps one (older records: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_test_accuracy: Option<f64>,
}

/// serde_json writes NaN and infinities as `null`; read that back as NaN so
/// an epoch with a blown-up loss stays readable.
fn f64_or_nan<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    /// `done`, `diverged` or `stopped`: a trial that ends in an error
    /// returns the error instead.
    pub status: TrialStatus,
    /// Test accuracy after the last epoch (None when diverged).
    pub final_accuracy: Option<f64>,
    pub wall_s: f64,
    pub device: String,
    /// Optimizer state at the end, in bytes.
    pub optimizer_state_bytes: usize,
    /// Why the trial diverged, when it did.
    pub note: Option<String>,
    /// Test accuracy of the weights' moving average after the last epoch,
    /// when the recipe keeps one. `final_accuracy` stays the raw weights'.
    #[serde(default)]
    pub ema_accuracy: Option<f64>,
    /// The arithmetic of the training step (`fp32`, `bf16`).
    #[serde(default)]
    pub precision: String,
    /// Peak memory of the trial in bytes: the resident set on the CPU
    /// (where the kernel can measure it), the allocator's peak of allocated
    /// bytes on CUDA (`torch.cuda.max_memory_allocated`).
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Classes of the data it trained on (the head's width): a synthetic
    /// CIFAR-100-format set may hold fewer than 100.
    #[serde(default)]
    pub classes: Option<u32>,
    /// Gradient norms per layer group on the first steps and each epoch's
    /// last (absent where they could not be grouped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norms: Option<crate::GradNorms>,
}

/// Receives a trial's progress.
pub trait TrialObserver {
    /// Before training starts: the epochs already done (from a checkpoint;
    /// 0 when the trial starts over). Epochs recorded beyond them came from
    /// an earlier run and no longer hold.
    fn on_start(&mut self, _epochs_done: u32) {}
    /// After each training batch.
    fn on_batch(&mut self, _epoch: u32, _batch: usize, _batches: usize) {}
    /// After each epoch's evaluation.
    fn on_epoch(&mut self, report: &EpochMetrics);
    /// After `on_epoch` of every epoch but the last: whether to stop the
    /// trial now (early stopping).
    fn stop_after_epoch(&mut self, _report: &EpochMetrics) -> bool {
        false
    }
    /// Asked after every batch and every epoch: whether to stop now (the
    /// worker is shutting down), saving a checkpoint first when the trial
    /// has a `checkpoint_dir`; the trial then ends in
    /// an interruption (the runner's `TrialError::Interrupted`).
    fn checkpoint_requested(&mut self) -> bool {
        false
    }
    /// After a checkpoint was saved whole in `dir` (the trial's
    /// `checkpoint_dir`), before training goes on: a worker sends it to its
    /// service from here, while nothing changes it.
    fn on_checkpoint(&mut self, _dir: &Path) {}
    /// Asked before each save: whether the trial's state may become its
    /// checkpoint. Not after an epoch whose report did not reach its
    /// record: a run resumed from there would skip that epoch, so the
    /// checkpoint before it stays.
    fn may_checkpoint(&mut self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_small_values_in_scientific_notation() {
        assert_eq!(fmt_value(0.1), "0.1");
        assert_eq!(fmt_value(5e-4), "5e-4");
        assert_eq!(fmt_value(1.25e-4), "1.25e-4");
        assert_eq!(fmt_value(0.05), "0.05");
    }
}

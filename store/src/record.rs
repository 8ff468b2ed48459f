use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bocb_spec::{EpochMetrics, GradNorms, GridPos, TrialStatus};
use serde::{Deserialize, Deserializer, Serialize};

/// Seconds since the Unix epoch, the clock of every `*_unix_s` field.
///
/// A clock set before 1970 reads as 0 rather than failing: timestamps only
/// order and label records.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An experiment as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// Unique name; the key of the record.
    pub name: String,
    /// The experiment file exactly as submitted.
    pub spec_yaml: String,
    /// When the experiment was first submitted.
    pub created_unix_s: u64,
    /// When the record was last written.
    pub updated_unix_s: u64,
    /// The experiment file's directory, where its relative paths start
    /// (absent in older records and imported tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<std::path::PathBuf>,
}

/// One training run: a (backbone, optimizer) pair at one set of
/// hyperparameters and one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Unique within the experiment.
    pub id: String,
    /// Name of the experiment the trial belongs to.
    pub experiment: String,
    /// Vision backbone name.
    pub backbone: String,
    /// Optimizer name.
    pub optimizer: String,
    /// The training recipe the trial used (older records: its name only).
    #[serde(default)]
    pub recipe: Option<TrialRecipe>,
    /// Hyperparameters by name (lr, weight_decay, momentum, beta1, ...).
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// Position on the lr x weight-decay grid; `None` off the grid.
    #[serde(default)]
    pub grid: Option<GridPos>,
    /// 1 = lr x weight-decay grid, 2 = extra hyperparameters.
    pub stage: u8,
    /// Random seed of the run.
    pub seed: u64,
    /// Where the trial is in its life.
    pub status: TrialStatus,
    /// Per-epoch metrics, ordered by epoch number.
    #[serde(default)]
    pub epochs: Vec<EpochMetrics>,
    /// Accuracy (percent) the trial ended with.
    #[serde(default)]
    pub final_accuracy: Option<f64>,
    /// Accuracy (percent) of the weights' moving average at the end, when
    /// the recipe keeps one.
    #[serde(default)]
    pub ema_accuracy: Option<f64>,
    /// Total training wall-clock seconds.
    #[serde(default)]
    pub wall_time_s: Option<f64>,
    /// Device the trial ran on, e.g. "cuda:0".
    #[serde(default)]
    pub device: Option<String>,
    /// Arithmetic of the training step, e.g. "fp32"; `None` where bocb did
    /// not train the trial (external trials) or in older records.
    #[serde(default)]
    pub precision: Option<String>,
    /// Peak memory of the trial in bytes, where it was measured. A trial
    /// of `trials_per_device: auto` that shared its device with another at
    /// some point has its config's probe peak instead ([`ProbeRecord`]):
    /// the device-wide CUDA peak mixes the trials running together.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Bytes of optimizer state it kept (what freezing saves), where bocb
    /// trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_state_bytes: Option<u64>,
    /// Classes of the data it trained on (the head's width), where bocb
    /// trained it; absent in older records and external trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<u32>,
    /// Why the trial failed or diverged.
    #[serde(default)]
    pub error: Option<String>,
    /// Gradient norms per layer group on its first steps and each epoch's
    /// last, where bocb trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norms: Option<GradNorms>,
    /// When the trial was created.
    pub created_unix_s: u64,
    /// When the record was last written.
    pub updated_unix_s: u64,
}

impl TrialRecord {
    /// A queued stage-1 trial with seed 0 and nothing recorded yet, created
    /// now; the other fields are set with struct update syntax.
    pub fn new(experiment: &str, id: &str, backbone: &str, optimizer: &str) -> Self {
        let now = unix_now_s();
        TrialRecord {
            id: id.to_owned(),
            experiment: experiment.to_owned(),
            backbone: backbone.to_owned(),
            optimizer: optimizer.to_owned(),
            recipe: None,
            params: BTreeMap::new(),
            grid: None,
            stage: 1,
            seed: 0,
            status: TrialStatus::Queued,
            epochs: Vec::new(),
            final_accuracy: None,
            ema_accuracy: None,
            wall_time_s: None,
            device: None,
            precision: None,
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
            classes: None,
            error: None,
            grad_norms: None,
            created_unix_s: now,
            updated_unix_s: now,
        }
    }
}

/// A trial without its per-epoch metrics or its recipe's settings: what
/// tables, counts and bests read, a few hundred bytes however long the
/// trial trained ([`crate::Store::trial_summaries`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialSummary {
    /// The record with `epochs` and `grad_norms` empty and the recipe's
    /// name only.
    pub trial: TrialRecord,
    /// Epochs recorded.
    pub epochs: usize,
    /// What the report's gradient diagnostic reads of `grad_norms`, where
    /// the trial recorded them.
    pub gradients: Option<GradientSummary>,
}

/// A trial's recorded gradient norms, reduced to what the analyses use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientSummary {
    /// [`GradNorms::embedding_ratio`].
    pub embedding_ratio: Option<f64>,
}

impl TrialSummary {
    /// The summary of `record`.
    pub fn of(record: &TrialRecord) -> Self {
        let mut trial = record.without_details();
        trial.recipe = record.recipe.as_ref().map(|r| r.name.as_str().into());
        TrialSummary {
            trial,
            epochs: record.epochs.len(),
            gradients: record.grad_norms.as_ref().map(|g| GradientSummary {
                embedding_ratio: g.embedding_ratio(),
            }),
        }
    }
}

impl TrialRecord {
    /// The record without what grows with training: `epochs` empty and no
    /// `grad_norms` (per-step rows, like the epochs).
    pub(crate) fn without_details(&self) -> TrialRecord {
        TrialRecord {
            id: self.id.clone(),
            experiment: self.experiment.clone(),
            backbone: self.backbone.clone(),
            optimizer: self.optimizer.clone(),
            recipe: self.recipe.clone(),
            params: self.params.clone(),
            grid: self.grid,
            stage: self.stage,
            seed: self.seed,
            status: self.status,
            epochs: Vec::new(),
            final_accuracy: self.final_accuracy,
            ema_accuracy: self.ema_accuracy,
            wall_time_s: self.wall_time_s,
            device: self.device.clone(),
            precision: self.precision.clone(),
            peak_memory_bytes: self.peak_memory_bytes,
            optimizer_state_bytes: self.optimizer_state_bytes,
            classes: self.classes,
            error: self.error.clone(),
            grad_norms: None,
            created_unix_s: self.created_unix_s,
            updated_unix_s: self.updated_unix_s,
        }
    }
}

/// How a trial ended, as [`crate::Store::finish_trial`] records it beside
/// the final status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrialEnd {
    pub final_accuracy: Option<f64>,
    pub ema_accuracy: Option<f64>,
    pub wall_time_s: Option<f64>,
    pub precision: Option<String>,
    pub peak_memory_bytes: Option<u64>,
    /// Bytes of optimizer state, where bocb trained it.
    pub optimizer_state_bytes: Option<u64>,
    /// Classes of the data it trained on, where bocb trained it.
    pub classes: Option<u32>,
    /// Why the trial failed or diverged.
    pub error: Option<String>,
    /// Gradient norms per layer group, where bocb trained it.
    pub grad_norms: Option<GradNorms>,
}

/// A trial's training recipe: its name and the resolved fields it trained
/// with (after the experiment's overrides), so a report can show exactly
/// how the trial was trained even if the recipe files change later.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrialRecipe {
    /// The recipe's name (`deit`, `pytorch`, ...).
    pub name: String,
    /// Every resolved field, as JSON; absent in records that kept only the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
}

impl From<&str> for TrialRecipe {
    fn from(name: &str) -> Self {
        TrialRecipe {
            name: name.to_owned(),
            settings: None,
        }
    }
}

impl fmt::Display for TrialRecipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

// Older records hold the name alone, as a string.
impl<'de> Deserialize<'de> for TrialRecipe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Name(String),
            Resolved {
                name: String,
                #[serde(default)]
                settings: Option<serde_json::Value>,
            },
        }
        Ok(match Stored::deserialize(deserializer)? {
            Stored::Name(name) => TrialRecipe {
                name,
                settings: None,
            },
            Stored::Resolved { name, settings } => TrialRecipe { name, settings },
        })
    }
}

/// What a probe of one trial config measured (`trials_per_device: auto`):
/// a few training steps on a synthetic batch of its shape, the device to
/// itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Identifies the config (backbone, optimizer, batch, precision,
    /// recipe, ...) and the kind of device; the record's key.
    pub key: String,
    /// The config in words, for people reading the store.
    pub config: String,
    /// The device it ran on, e.g. "cuda:0".
    pub device: String,
    /// Peak memory of the steps in bytes above what the device held
    /// before; `None` where it could not be read.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Training images per second.
    pub images_per_sec: f64,
    /// When it was measured.
    pub measured_unix_s: u64,
}

//! The experiment file's schema: what the user writes, as serde reads and
//! writes it. Validation against the registries, and everything that runs
//! an experiment, is the tuner's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bocb_search_spaces::{OptimizerSpace, RecipeOverrides, SpaceError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::external_trial::ExternalTrial;
use crate::grid_centres::{Centre, GridCentres};
use crate::packing_rule::PackingRule;
use crate::search_kinds::{StopKind, StrategyKind};
use crate::{
    split_pretrained, BadFiles, DataOnDevice, DatasetFormat, DeviceChoice, DeviceList, Launcher,
    PrecisionChoice, FROM_EXPERIMENT, TORCHSCRIPT_PREFIX,
};

/// An experiment as the user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    pub dataset: DatasetRef,
    /// Registry names, or `all`.
    pub backbones: Names,
    /// Registry names (or `torchscript:PATH` for a user's TorchScript
    /// module, relative to the experiment file), or `all`.
    pub optimizers: Names,
    /// The search space of a `torchscript:PATH` optimizer, by its name,
    /// where it is not `PATH.yaml` (relative to the experiment file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub optimizer_spaces: BTreeMap<String, PathBuf>,
    /// Applied to every backbone named without one (`micro` for the reduced presets).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Training epochs; replaces the recipe's.
    pub epochs: u32,
    /// Seeds per config; the paper averages three.
    #[serde(default = "one")]
    pub seeds: u32,
    /// Images per step; replaces the recipe's when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Linear warm-up epochs; replaces the recipe's when given. Without
    /// it the recipe's warm-up is scaled to `epochs` (5 of DeiT's 200
    /// epochs become 0 of 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<u32>,
    /// The training recipe (`pytorch`, `deit`, `convnext`, `rsb_a2`,
    /// `rsb_a3`) of every backbone; without it each backbone trains with
    /// its own (`bocb backbones list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// Recipe fields replaced for every trial (`{ mixup_alpha: 0 }`);
    /// `epochs`, `batch_size` and `warmup_epochs` are set at the top level.
    #[serde(default, skip_serializing_if = "RecipeOverrides::is_empty")]
    pub recipe_overrides: RecipeOverrides,
    /// Weight decay on biases and norm parameters too (default: exempt, as timm).
    #[serde(default)]
    pub decay_norm_and_bias: bool,
    /// `auto` (bf16 autocast on CUDA where the recipe allows it, else
    /// fp32), `fp32` or `bf16`.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub precision: PrecisionChoice,
    /// Deterministic kernels only, for bit-equal reruns on CUDA (slower).
    #[serde(default)]
    pub deterministic: bool,
    /// Batches in channels-last memory order (see `bocb bench train --channels-last`).
    #[serde(default)]
    pub channels_last: bool,
    /// Make batches on the trial's device from data uploaded there: `auto`
    /// (on CUDA when the recipe's per-image transforms allow it and the
    /// data fits), `true` or `false`. Not a training setting: the batches
    /// are the same either way.
    #[serde(default, skip_serializing_if = "DataOnDevice::is_auto")]
    pub data_on_device: DataOnDevice,
    /// The older form of `devices`: one device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceChoice>,
    /// Where trials run (`cpu`, `auto`, `cuda:0`, `cuda:0,1`, `[cuda:0,
    /// cuda:1]`; default `auto`). Not a training setting: a stored
    /// experiment may resume on other devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceList>,
    /// Trials each device trains at once: a number, or `auto` (packed by
    /// measured memory and throughput, see [`PackingRule`]).
    #[serde(default)]
    pub trials_per_device: TrialsPerDevice,
    /// The knobs of `trials_per_device: auto`'s rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<PackingRule>,
    /// Where a service (`bocb submit`) starts this experiment's workers:
    /// `{ slurm: { partition, gres, time, ... } }` submits them as Slurm job
    /// arrays, in place of `bocb serve --launcher`'s block for its jobs
    /// (docs/slurm.md). `bocb run` trains here and ignores it. Not a
    /// training setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<Launcher>,
    /// γ of Eq. (1), the failure threshold of the report: 3 for CIFAR (the
    /// default), 1 for ImageNet (App. A.1). Analysis only: not a training
    /// setting, so it may change between runs.
    #[serde(default)]
    pub failure_gamma: Option<f64>,
    /// How stage 1 picks lr x weight-decay grid points: `grid` (all 25, the
    /// paper's), `random`, `tpe` or `bayes`.
    #[serde(default)]
    pub strategy: StrategyKind,
    /// Seed of the strategy's random choices.
    #[serde(default)]
    pub strategy_seed: u64,
    /// Let each pair's model-based search (`tpe`, `bayes`) start from what
    /// the experiment's other pairs found (the tuner's `search::Prior`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub transfer: bool,
    /// With `transfer`, earlier experiments in the same store whose stage-1
    /// results count as relatives too: the built-in optimizers' grids on
    /// the same backbones, when tuning a new optimizer against them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_from: Vec<String>,
    /// The early-stopping rule: `none`, `median`, `asha` or `curve`.
    #[serde(default)]
    pub early_stop: StopKind,
    #[serde(default)]
    pub budget: Budget,
    /// Extend a pair's lr or weight-decay axis past its 5-point grid by x2
    /// steps while the stage-1 best lies on its edge; without it, on for
    /// `tpe` and `bayes` (2 steps) and off for `grid` and `random` (the
    /// paper's protocol). See [`ExperimentSpec::grid_extension_steps`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_extension: Option<GridExtension>,
    /// Stage 2: search each of the optimizer's extras (β₂, ε, momentum, ...)
    /// over its candidates, lr and weight decay fixed at the stage-1 best.
    #[serde(default)]
    pub search_extras: bool,
    /// Keep each done trial's trained weights (safetensors, below the
    /// store) for `bocb patterns`.
    #[serde(default)]
    pub save_weights: bool,
    /// Run this program per trial instead of bocb's trainer (external trials).
    #[serde(default)]
    pub trial: Option<ExternalTrial>,
    /// Save each trial's checkpoint (below the store) after every this many
    /// epochs, 0 only when bocb is stopped by a signal; by default after
    /// every epoch once an epoch takes over a minute. Not a training
    /// setting: checkpoints change no result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u32>,
    /// Per backbone (and per backbone x optimizer): where the stage-1 lr
    /// and weight-decay grids are centred instead of the optimizer's own
    /// centre, spacing kept (see [`crate::grid_centres`]).
    #[serde(default, skip_serializing_if = "GridCentres::is_empty")]
    pub grid_centres: GridCentres,
    /// Per backbone: the weights its trials start from (safetensors with
    /// the reference implementation's state-dict names, relative to the
    /// experiment file) instead of a random initialisation. See
    /// docs/finetuning.md.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub init: BTreeMap<String, PathBuf>,
    /// Parameters every trial keeps as they start, never handed to the
    /// optimizer: `embedding` (each backbone's embedding layer) and name
    /// patterns (`"stages.0.*"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// Limits on the search; the defaults search everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Stage-1 configs per pair (1 to 25; default 25, the whole grid).
    #[serde(default)]
    pub trials: Option<usize>,
    /// Wall-clock hours of training for the whole run; no trial starts
    /// once they are spent (a run resumed later gets the same again).
    #[serde(default)]
    pub hours: Option<f64>,
    /// `bayes` only: a pair's stage 1 ends before `trials` once no untried
    /// grid point is expected to beat the pair's best by more than this
    /// many accuracy points (its model's expected improvement), after 8
    /// results (3 with thorough relatives: docs/experiment.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_expected_gain: Option<f64>,
}

/// `grid_extension: { max_steps: N }`: how many x2 steps past either end of
/// the lr and weight-decay grids a pair's search may go (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridExtension {
    pub max_steps: u8,
}

/// The most x2 steps `grid_extension` may take past a grid's end (2^8 = 256
/// times its last value).
pub const MAX_EXTENSION_STEPS: u8 = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    pub format: DatasetFormat,
    /// Relative paths are taken from the experiment file's directory.
    pub path: PathBuf,
    /// Side of the square images trials train on (image folders only):
    /// absent, each backbone's input size; 32 holds the folder in memory at
    /// CIFAR's side, any other side streams it from disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<u32>,
    /// A file of a streamed folder that cannot be decoded: `fail` the trial
    /// (the default) or `skip` it, each naming the file.
    #[serde(default, skip_serializing_if = "is_fail")]
    pub bad_files: BadFiles,
}

fn is_fail(bad_files: &BadFiles) -> bool {
    *bad_files == BadFiles::Fail
}

impl DatasetRef {
    /// CIFAR is 32x32: a `resolution` is for image folders.
    pub fn check(&self) -> Result<(), BadResolution> {
        match (self.format, self.resolution) {
            (_, Some(r)) if !(16..=4096).contains(&r) => Err(BadResolution::OutOfRange(r)),
            (DatasetFormat::Cifar(_), Some(r)) if r != 32 => Err(BadResolution::Cifar {
                format: self.format,
                resolution: r,
            }),
            _ => Ok(()),
        }
    }
}

/// A `dataset.resolution` the dataset cannot be trained at.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadResolution {
    #[error("resolution {0} is outside 16..=4096 pixels; use 224 for ImageNet-style training")]
    OutOfRange(u32),
    #[error(
        "the {format} format is 32x32 images; drop `resolution: {resolution}` or point the dataset at an image folder"
    )]
    Cifar {
        format: DatasetFormat,
        resolution: u32,
    },
}

/// Why a `torchscript:PATH` optimizer has no search space.
#[derive(Debug, Error)]
pub enum TorchscriptSpaceError {
    #[error(
        "TorchScript optimizer `{name}` needs a search space: write {file} (the format of search-spaces/optimizers/*.yaml, with `name` equal to its file stem) or name one with `optimizer_spaces: {{ \"{name}\": FILE }}`",
        file = file.display()
    )]
    Missing { name: String, file: PathBuf },
    #[error(transparent)]
    Unreadable(#[from] SpaceError),
}

impl ExperimentSpec {
    /// Where `backbone`'s (as the experiment runs it, preset applied) grids
    /// with `optimizer` are centred by `grid_centres`.
    pub fn grid_centre(&self, backbone: &str, optimizer: &str) -> Centre {
        // A backbone pre-trained with an optimizer takes its architecture's centre.
        let backbone = split_pretrained(backbone).0;
        self.grid_centres
            .for_pair(backbone, optimizer, |key| self.with_preset(key))
    }

    /// `space` with its stage-1 grids centred for `backbone`: the grids a
    /// pair searches.
    /// The x2 steps a pair's axes may be extended past the grid: the
    /// file's `grid_extension`, else 2 for the model-based strategies and
    /// 0 for `grid` and `random`, whose points are the paper's grid.
    pub fn grid_extension_steps(&self) -> u8 {
        match (self.grid_extension, self.strategy) {
            (Some(extension), _) => extension.max_steps,
            (None, StrategyKind::Tpe | StrategyKind::Bayes) => 2,
            (None, StrategyKind::Grid | StrategyKind::Random) => 0,
        }
    }

    pub fn pair_space(&self, backbone: &str, space: &OptimizerSpace) -> OptimizerSpace {
        let centre = self.grid_centre(backbone, &space.name);
        space.with_grid_centres(centre.lr, centre.weight_decay)
    }

    /// The devices as written: `devices`, the older `device`, or `auto`.
    pub fn device_list(&self) -> DeviceList {
        match (&self.devices, self.device) {
            (Some(devices), _) => devices.clone(),
            (None, Some(device)) => device.into(),
            (None, None) => DeviceChoice::Auto.into(),
        }
    }

    /// The devices the experiment's trials are for, as workers name theirs
    /// (`cpu`, `cuda:1`); `None` where it leaves the choice to `auto`, so
    /// any worker may train them.
    pub fn named_devices(&self) -> Option<Vec<String>> {
        let devices = self.device_list();
        let devices = devices.devices();
        (!devices.contains(&DeviceChoice::Auto))
            .then(|| devices.iter().map(ToString::to_string).collect())
    }

    /// The rule `trials_per_device: auto` packs by: `packing`, or the defaults.
    pub fn packing_rule(&self) -> PackingRule {
        self.packing.unwrap_or_default()
    }

    /// `name` with the experiment's `preset`, unless it names its own (or is
    /// a user's `torchscript:PATH` module, which has no presets).
    pub fn with_preset(&self, name: &str) -> String {
        match self.preset {
            Some(Preset::Micro) if !name.contains('@') && !name.starts_with(TORCHSCRIPT_PREFIX) => {
                format!("{name}@micro")
            }
            _ => name.to_string(),
        }
    }

    /// The search space of `torchscript:PATH` optimizer `name`, named `name`:
    /// `optimizer_spaces`' file for it, or `PATH.yaml` (both relative to `base`,
    /// the experiment file's directory).
    pub fn torchscript_space(
        &self,
        name: &str,
        base: &Path,
    ) -> Result<OptimizerSpace, TorchscriptSpaceError> {
        let path = name.strip_prefix(TORCHSCRIPT_PREFIX).unwrap_or(name);
        let space_file = match self.optimizer_spaces.get(name) {
            Some(file) => base.join(file),
            None => PathBuf::from(format!("{}.yaml", base.join(path).display())),
        };
        if !space_file.is_file() {
            return Err(TorchscriptSpaceError::Missing {
                name: name.to_string(),
                file: space_file,
            });
        }
        let mut space = bocb_search_spaces::load_optimizer_file(&space_file)?;
        space.name = name.to_string();
        Ok(space)
    }

    /// The experiment this one fine-tunes from (`init: { from_experiment: NAME }`), when it does.
    pub fn transfer_source(&self) -> Option<String> {
        self.init
            .get(FROM_EXPERIMENT)
            .map(|name| name.to_string_lossy().into_owned())
    }

    /// The settings every trial of the experiment shares. A stored
    /// experiment can grow (more backbones, optimizers, seeds) but not change
    /// these, or its trials would stop being comparable.
    pub fn training_settings(&self) -> String {
        let optional = |v: Option<String>| v.unwrap_or_else(|| "recipe's".into());
        let mut settings = format!(
            "dataset {} at {}, epochs {}, batch_size {}, warmup_epochs {}, decay_norm_and_bias {}",
            self.dataset.format,
            self.dataset.path.display(),
            self.epochs,
            optional(self.batch_size.map(|b| b.to_string())),
            optional(self.warmup_epochs.map(|w| w.to_string())),
            self.decay_norm_and_bias
        );
        settings += &format!(
            ", recipe {}",
            self.recipe.as_deref().unwrap_or("each backbone's own")
        );
        if !self.recipe_overrides.is_empty() {
            let overrides =
                serde_json::to_string(&self.recipe_overrides).expect("recipe overrides serialize");
            settings += &format!(" with {overrides}");
        }
        // Only when set, so experiments stored before the field compare equal.
        if self.precision != PrecisionChoice::Auto {
            settings += &format!(", precision {}", self.precision.name());
        }
        for (backbone, path) in &self.init {
            settings += &format!(", {backbone} from {}", path.display());
        }
        if !self.freeze.is_empty() {
            settings += &format!(", freeze {}", self.freeze.join(" "));
        }
        settings
    }
}

/// A list of registry names, or every registered one (`all`).
#[derive(Debug, Clone, PartialEq)]
pub enum Names {
    All,
    List(Vec<String>),
}

impl Serialize for Names {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Names::All => serializer.serialize_str("all"),
            Names::List(names) => names.serialize(serializer),
        }
    }
}

// Hand-written so a wrong value keeps serde_yaml's location and says what fits.
impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamesVisitor;
        impl<'de> serde::de::Visitor<'de> for NamesVisitor {
            type Value = Names;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of registry names, or `all`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Names, E> {
                if v == "all" {
                    Ok(Names::All)
                } else {
                    Err(E::custom(format!(
                        "`{v}` is neither a list of names nor `all`; write `[{v}]` for a single name"
                    )))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element()? {
                    names.push(name);
                }
                Ok(Names::List(names))
            }
        }
        deserializer.deserialize_any(NamesVisitor)
    }
}

impl Names {
    /// The names as written, or `None` for `all`.
    pub fn listed(&self) -> Option<&[String]> {
        match self {
            Names::All => None,
            Names::List(names) => Some(names),
        }
    }
}

/// How many trials a device trains at once: a fixed number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialsPerDevice {
    Fixed(u32),
    /// As many as the packing rule admits ([`PackingRule`]).
    Auto,
}

impl Default for TrialsPerDevice {
    fn default() -> Self {
        TrialsPerDevice::Fixed(1)
    }
}

impl TrialsPerDevice {
    /// Slots per device that train one trial at a time: the number, or one
    /// for `auto` (what the service starts local workers for).
    pub fn fixed_slots(self) -> u32 {
        match self {
            TrialsPerDevice::Fixed(n) => n,
            TrialsPerDevice::Auto => 1,
        }
    }
}

impl std::fmt::Display for TrialsPerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            TrialsPerDevice::Fixed(n) => write!(f, "{n}"),
            TrialsPerDevice::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for TrialsPerDevice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TrialsPerDevice::Fixed(n) => serializer.serialize_u32(*n),
            TrialsPerDevice::Auto => serializer.serialize_str("auto"),
        }
    }
}

// Hand-written so a wrong value keeps serde_yaml's location and names both forms.
impl<'de> Deserialize<'de> for TrialsPerDevice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TrialsPerDevice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of trials (1, 2, ...) or `auto`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TrialsPerDevice, E> {
                u32::try_from(v).map(TrialsPerDevice::Fixed).map_err(|_| {
                    E::custom(format!("`trials_per_device`: {v} trials is too many; give a number of trials (1, 2, ...) or `auto`"))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TrialsPerDevice, E> {
                u64::try_from(v).map_err(|_| {
                    E::custom(format!("`trials_per_device` must be a number of trials (1, 2, ...) or `auto`, got {v}"))
                }).and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrialsPerDevice, E> {
                match v {
                    "auto" => Ok(TrialsPerDevice::Auto),
                    other => Err(E::custom(format!(
                        "`trials_per_device` must be a number of trials (1, 2, ...) or `auto`, got `{other}`"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A backbone size preset that an experiment can apply to all its backbones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Micro,
}

fn is_false(value: &bool) -> bool {
    !value
}

fn is_auto(precision: &PrecisionChoice) -> bool {
    *precision == PrecisionChoice::Auto
}

fn one() -> u32 {
    1
}

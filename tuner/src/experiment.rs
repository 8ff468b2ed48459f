//! The experiment file: which backbones meet which optimizers, on what data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bocb_search_spaces::{Catalog, OptimizerSpace, Recipe, RecipeBook, SpaceError};
use bocb_spec::device::DEVICE_LIST_FORMS;
use bocb_spec::{
    cifar_form_at, split_pretrained, Hparams, TrialSpec, FROM_EXPERIMENT, TORCHSCRIPT_PREFIX,
};
#[cfg(feature = "train")]
use bocb_spec::{DataOnDevice, DeviceChoice};
use bocb_store::{TrialRecipe, GRID_POINTS};
#[cfg(feature = "train")]
use bocb_trial_runner::{
    batches::ImageTransform, data::LoadedData, device::ResolveDevice, pretrained,
};
use thiserror::Error;

use crate::registries::Registries;
use crate::search::StrategyKind;

pub use bocb_spec::experiment::{
    Budget, DatasetRef, ExperimentSpec, GridExtension, Names, Preset, TrialsPerDevice,
    MAX_EXTENSION_STEPS,
};

/// Prefix of a user's TorchScript backbone (`torchscript:PATH`).
const TORCHSCRIPT: &str = TORCHSCRIPT_PREFIX;
/// Prefix of a user's TorchScript optimizer (`torchscript:PATH`).
const TORCHSCRIPT_OPTIMIZER: &str = TORCHSCRIPT_PREFIX;

/// What an experiment's recipes are with the registries it runs with.
pub trait SpecRecipes {
    fn recipe_name(&self, backbone: &str, registries: &Registries) -> Result<String, String>;
    fn resolved_recipe(
        &self,
        backbone: &str,
        registries: &Registries,
        book: &RecipeBook,
    ) -> Result<Recipe, String>;
}

impl SpecRecipes for ExperimentSpec {
    /// The name of the recipe `backbone` trains with: the experiment's, or
    /// the backbone's own.
    fn recipe_name(&self, backbone: &str, registries: &Registries) -> Result<String, String> {
        match &self.recipe {
            Some(name) => Ok(name.clone()),
            None => Ok(registries.known_backbone(backbone)?.default_recipe),
        }
    }

    /// `backbone`'s recipe with the overrides, then the experiment's
    /// explicit `epochs`, `batch_size` and `warmup_epochs` (which win over
    /// both; an absent `warmup_epochs` scales the recipe's to `epochs`).
    fn resolved_recipe(
        &self,
        backbone: &str,
        registries: &Registries,
        book: &RecipeBook,
    ) -> Result<Recipe, String> {
        let name = self.recipe_name(backbone, registries)?;
        let base = book.recipe(&name).map_err(|e| e.to_string())?;
        let mut overrides = self.recipe_overrides.clone();
        overrides.epochs = Some(bocb_search_spaces::Count(self.epochs));
        if let Some(batch_size) = self.batch_size {
            overrides.batch_size = Some(bocb_search_spaces::Count(batch_size as u32));
        }
        overrides.warmup_epochs = Some(self.warmup_epochs.unwrap_or_else(|| {
            (u64::from(base.warmup_epochs) * u64::from(self.epochs) / u64::from(base.epochs.0))
                as u32
        }));
        let recipe = base
            .with(&overrides)
            .map_err(|e: SpaceError| e.to_string())?;
        let mixes = recipe.mixup_alpha.0 > 0.0 || recipe.cutmix_alpha.0 > 0.0;
        if mixes && recipe.batch_size.0 % 2 != 0 {
            return Err(format!(
                "recipe `{name}` mixes images (Mixup/CutMix pair each image with its mirror in the batch), so `batch_size` must be even, got {}; use an even batch size or set `recipe_overrides: {{ mixup_alpha: 0, cutmix_alpha: 0 }}`",
                recipe.batch_size.0
            ));
        }
        Ok(recipe)
    }
}

/// Where an experiment's trials train, as this machine resolves its devices.
#[cfg(feature = "train")]
pub trait DeviceSlots {
    fn device_slots(&self) -> Result<Vec<DeviceChoice>, String>;
}

#[cfg(feature = "train")]
impl DeviceSlots for ExperimentSpec {
    /// The device of each slot that trains one trial at a time, as this
    /// machine resolves them (`auto` becomes `cuda:0` or `cpu`): every
    /// device `trials_per_device` times (once for `auto`, whose slots
    /// `bocb run` adds as the packing rule admits trials), interleaved so
    /// that fewer busy slots still spread over the devices. An error names the field, the
    /// device this machine lacks, and the valid forms.
    fn device_slots(&self) -> Result<Vec<DeviceChoice>, String> {
        let field = if self.devices.is_some() {
            "devices"
        } else {
            "device"
        };
        let mut resolved: Vec<DeviceChoice> = Vec::new();
        for &device in self.device_list().devices() {
            let here = device
                .resolve_choice()
                .map_err(|e| format!("`{field}`: {e}; valid forms: {DEVICE_LIST_FORMS}"))?;
            if resolved.contains(&here) {
                return Err(format!(
                    "`{field}`: `{device}` is `{here}` on this machine, which `{field}` names already; name each device once and set `trials_per_device` to run more trials on it"
                ));
            }
            resolved.push(here);
        }
        Ok((0..self.trials_per_device.fixed_slots())
            .flat_map(|_| resolved.iter().copied())
            .collect())
    }
}

/// Opens the dataset an experiment names, as trials read it.
#[cfg(feature = "train")]
pub trait OpenDataset {
    /// Opens the dataset in `dir` (this reference's `path`, resolved).
    fn open(
        &self,
        dir: &Path,
        workers: usize,
    ) -> Result<LoadedData, bocb_trial_runner::data::DataError>;
}

#[cfg(feature = "train")]
impl OpenDataset for DatasetRef {
    fn open(
        &self,
        dir: &Path,
        workers: usize,
    ) -> Result<LoadedData, bocb_trial_runner::data::DataError> {
        bocb_trial_runner::data::open(
            dir,
            self.format,
            self.resolution.map(|r| r as usize),
            self.bad_files,
            workers,
        )
    }
}

/// A loaded, validated experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub spec: ExperimentSpec,
    /// The backbones to run, `all` and `preset` applied.
    pub backbones: Vec<String>,
    /// The optimizers to run, `all` applied.
    pub optimizers: Vec<String>,
    /// The file as written, kept in the store with the experiment.
    pub source: String,
    /// The dataset directory, resolved against the file's location.
    pub dataset_dir: PathBuf,
    /// The experiment file's directory, where external trials run.
    pub base_dir: PathBuf,
    /// Each backbone's recipe, resolved once from the registries it was
    /// parsed with (a user's own backbones included).
    pub recipes: BTreeMap<String, Recipe>,
    /// The search spaces of its `torchscript:PATH` optimizers, by name.
    pub user_spaces: BTreeMap<String, OptimizerSpace>,
    /// Each backbone's starting weights (`init`, presets applied, paths
    /// made absolute).
    pub init_weights: BTreeMap<String, PathBuf>,
}

/// A problem with an experiment file, located where possible.
#[derive(Debug, Error)]
pub enum ExperimentError {
    #[error("cannot read experiment file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Unlocated { origin: String, message: String },
}

/// A `torchscript:PATH` backbone with PATH taken from the experiment file's
/// directory `base`, as the dataset's is, and made absolute so a trial
/// finds it whatever directory it runs in; other names as they are. The
/// name as written stays the backbone's name in the store and reports.
fn resolve_module(base: &Path, backbone: &str) -> String {
    match backbone.strip_prefix(TORCHSCRIPT) {
        Some(file) => {
            let path = base.join(file);
            let path = std::path::absolute(&path).unwrap_or(path);
            format!("{TORCHSCRIPT}{}", path.display())
        }
        None => backbone.to_string(),
    }
}

impl Experiment {
    /// What the trial runner needs to train one config of a pair: the
    /// experiment's training settings with the trial's own, and the
    /// backbone's recipe as [`Experiment::parse`] resolved it.
    pub fn trial_spec(
        &self,
        backbone: &str,
        optimizer: &str,
        params: &Hparams,
        seed: u64,
        save_weights: Option<PathBuf>,
    ) -> TrialSpec {
        let recipe = self.recipe(backbone).clone();
        let spec = &self.spec;
        TrialSpec {
            backbone: resolve_module(&self.base_dir, split_pretrained(backbone).0),
            optimizer: self.optimizer_to_build(optimizer),
            hparams: params.clone(),
            seed,
            epochs: recipe.epochs.0,
            batch_size: recipe.batch_size.0 as usize,
            warmup_epochs: recipe.warmup_epochs,
            decay_norm_and_bias: spec.decay_norm_and_bias,
            // Where it runs is the executor's to decide; this is the first choice.
            device: spec.device_list().devices()[0],
            save_weights,
            recipe: Some(recipe),
            data_workers: 0,
            precision: spec.precision,
            deterministic: spec.deterministic,
            channels_last: spec.channels_last,
            data_on_device: spec.data_on_device,
            // Where the trial's checkpoint goes is the search's to decide.
            checkpoint_dir: None,
            checkpoint_every: spec.checkpoint_every,
            init_weights: self.init_weights.get(backbone).cloned(),
            freeze: spec.freeze.clone(),
        }
    }

    /// The name the trial runner builds `optimizer` by: a `torchscript:PATH`
    /// module's path made absolute from the experiment file's directory (the
    /// name as written stays the optimizer's name in the store).
    pub fn optimizer_to_build(&self, optimizer: &str) -> String {
        match optimizer.strip_prefix(TORCHSCRIPT_OPTIMIZER) {
            Some(path) => {
                let path = self.base_dir.join(path);
                let path = std::path::absolute(&path).unwrap_or(path);
                format!("{TORCHSCRIPT_OPTIMIZER}{}", path.display())
            }
            None => optimizer.to_string(),
        }
    }

    /// The search space of `optimizer`: a user's module's own, or the
    /// catalog's.
    pub fn space<'a>(
        &'a self,
        optimizer: &str,
        catalog: &'a Catalog,
    ) -> Result<&'a OptimizerSpace, SpaceError> {
        match self.user_spaces.get(optimizer) {
            Some(space) => Ok(space),
            None => catalog.optimizer(optimizer),
        }
    }

    /// `catalog` with the spaces of the experiment's own optimizers.
    pub fn catalog(&self, catalog: &Catalog) -> Catalog {
        let mut all = catalog.clone();
        for space in self.user_spaces.values() {
            all.insert(space.clone());
        }
        all
    }

    /// The recipe of a trial of `backbone` as the store keeps it: its name
    /// and every resolved field.
    pub fn stored_recipe(&self, backbone: &str) -> TrialRecipe {
        let recipe = self.recipe(backbone);
        TrialRecipe {
            name: recipe.name.clone(),
            settings: Some(serde_json::to_value(recipe).expect("a recipe serializes")),
        }
    }

    /// The resolved recipe of `backbone`, one of the experiment's.
    pub fn recipe(&self, backbone: &str) -> &Recipe {
        self.recipes.get(backbone).unwrap_or_else(|| {
            panic!(
                "`{backbone}` is not a backbone of experiment `{}`",
                self.spec.name
            )
        })
    }

    /// Reads and validates `path` against the registries.
    pub fn load(path: &Path, registries: &Registries) -> Result<Experiment, ExperimentError> {
        let source = std::fs::read_to_string(path).map_err(|source| ExperimentError::Read {
            path: path.display().to_string(),
            source,
        })?;
        // A bare file name's parent is empty: the current directory.
        let base = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Experiment::parse(&source, &path.display().to_string(), base, registries)
    }

    /// Parses `source` (named `origin` in errors); relative dataset paths are
    /// resolved against `base`. Without the `train` feature, what only
    /// libtorch can check (a TorchScript module run once, `init` weights
    /// against their model, `freeze` patterns against its parameters,
    /// transforms on the device) is left to the worker's trial, which fails
    /// saying so.
    pub fn parse(
        source: &str,
        origin: &str,
        base: &Path,
        registries: &Registries,
    ) -> Result<Experiment, ExperimentError> {
        let catalog = &registries.catalog;
        let spec: ExperimentSpec = serde_yaml::from_str(source).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            ExperimentError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message: e
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            }
        })?;
        let located = |key: &str, value: &str, message: String| {
            let (line, column) = locate(source, key, value);
            ExperimentError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        check_experiment_name(&spec.name)
            .map_err(|e| located("name", &spec.name, e.to_string()))?;
        for (key, value) in [
            ("epochs", spec.epochs),
            ("seeds", spec.seeds),
            ("trials_per_device", spec.trials_per_device.fixed_slots()),
        ] {
            if value == 0 {
                return Err(located(key, "0", format!("`{key}` must be at least 1")));
            }
        }
        if spec.trials_per_device == TrialsPerDevice::Auto && spec.trial.is_some() {
            return Err(located(
                "trials_per_device",
                "auto",
                "`trials_per_device: auto` measures bocb's own training step, which external trials (`trial:`) do not run; give a number of trials per device".into(),
            ));
        }
        if let (Some(every), Some(_)) = (spec.checkpoint_every, &spec.trial) {
            return Err(located(
                "checkpoint_every",
                &every.to_string(),
                "`checkpoint_every` paces bocb's own trainer; an external trial (`trial:`) saves its checkpoints itself, in `BOCB_CHECKPOINT_DIR`: drop `checkpoint_every`".into(),
            ));
        }
        if let Some(launcher) = &spec.launcher {
            launcher.slurm.check().map_err(|bad| {
                // The block's own keys, not the experiment's (`device`).
                let (at, _) = locate_key(source, "launcher");
                let block: Vec<&str> = source.lines().skip(at - 1).collect();
                let (line, column) = locate(&block.join("\n"), bad.key, &bad.value);
                ExperimentError::Invalid {
                    origin: origin.to_string(),
                    line: line + at - 1,
                    column,
                    message: format!("launcher.{}", bad.message),
                }
            })?;
        }
        if let Some(rule) = &spec.packing {
            let at_key = |key: &str, message: String| {
                let (line, column) = locate_key(source, key);
                ExperimentError::Invalid {
                    origin: origin.to_string(),
                    line,
                    column,
                    message,
                }
            };
            if spec.trials_per_device != TrialsPerDevice::Auto {
                return Err(at_key(
                    "packing",
                    format!("`packing` tunes `trials_per_device: auto` only, but `trials_per_device` is {}; set it to `auto` or remove `packing`", spec.trials_per_device),
                ));
            }
            rule.check()
                .map_err(|(key, message)| at_key(key, message))?;
        }
        if let (Some(devices), Some(device)) = (&spec.devices, spec.device) {
            return Err(located(
                "device",
                &device.to_string(),
                format!("both `devices` ({devices}) and the older `device` ({device}) are given; keep only `devices`: {DEVICE_LIST_FORMS}"),
            ));
        }
        if spec.batch_size == Some(0) {
            return Err(located(
                "batch_size",
                "0",
                "`batch_size` must be at least 1".into(),
            ));
        }
        if let Some(gamma) = spec.failure_gamma.filter(|g| !(g.is_finite() && *g > 0.0)) {
            return Err(located(
                "failure_gamma",
                &gamma.to_string(),
                format!("`failure_gamma` must be a positive number (3 for CIFAR, 1 for ImageNet), got {gamma}"),
            ));
        }
        if let Some(trials) = spec
            .budget
            .trials
            .filter(|&t| t == 0 || t > GRID_POINTS * GRID_POINTS)
        {
            return Err(located(
                "trials",
                &trials.to_string(),
                format!("`budget.trials` must be between 1 and 25 configs per pair (the 5 x 5 grid), got {trials}"),
            ));
        }
        if spec.transfer && matches!(spec.strategy, StrategyKind::Grid | StrategyKind::Random) {
            return Err(located(
                "transfer",
                "true",
                format!("`transfer` guides the model-based strategies only, but `strategy` is {}; use `strategy: tpe` or `strategy: bayes`, or remove `transfer`", spec.strategy),
            ));
        }
        if let Some(first) = spec.transfer_from.first() {
            if !spec.transfer {
                return Err(located(
                    "transfer_from",
                    first,
                    "`transfer_from` names experiments to learn from, which takes `transfer: true`; add it, or remove `transfer_from`".to_string(),
                ));
            }
            if let Some(own) = spec.transfer_from.iter().find(|n| **n == spec.name) {
                return Err(located(
                    "transfer_from",
                    own,
                    format!("`transfer_from` names `{own}`, this experiment itself, whose pairs `transfer: true` already learns from; name earlier experiments only"),
                ));
            }
        }
        if let Some(steps) = spec
            .grid_extension
            .map(|e| e.max_steps)
            .filter(|&s| s > MAX_EXTENSION_STEPS)
        {
            return Err(located(
                "max_steps",
                &steps.to_string(),
                format!("`grid_extension.max_steps` must be between 0 (off) and {MAX_EXTENSION_STEPS} x2 steps past the grid's ends, got {steps}"),
            ));
        }
        if let Some(gain) = spec.budget.min_expected_gain {
            if !(gain.is_finite() && gain > 0.0) {
                return Err(located(
                    "min_expected_gain",
                    &gain.to_string(),
                    format!("`budget.min_expected_gain` must be a positive number of accuracy points (0.1, say), got {gain}"),
                ));
            }
            if spec.strategy != StrategyKind::Bayes {
                return Err(located(
                    "min_expected_gain",
                    &gain.to_string(),
                    format!("`budget.min_expected_gain` ends a search by its model's expected improvement, which only `strategy: bayes` has, but `strategy` is {}; use `strategy: bayes`, or remove `min_expected_gain`", spec.strategy),
                ));
            }
        }
        if let Some(hours) = spec.budget.hours.filter(|h| !(h.is_finite() && *h > 0.0)) {
            return Err(located(
                "hours",
                &hours.to_string(),
                format!("`budget.hours` must be a positive number of hours, got {hours}"),
            ));
        }
        if let Some(warmup) = spec.warmup_epochs.filter(|&w| w >= spec.epochs) {
            return Err(located(
                "warmup_epochs",
                &warmup.to_string(),
                format!(
                    "`warmup_epochs` ({warmup}) must be below `epochs` ({})",
                    spec.epochs
                ),
            ));
        }
        let book = RecipeBook::builtin();
        if let Some(name) = &spec.recipe {
            book.recipe(name)
                .map_err(|e| located("recipe", name, e.to_string()))?;
        }
        for (field, given) in [
            ("epochs", spec.recipe_overrides.epochs.is_some()),
            ("batch_size", spec.recipe_overrides.batch_size.is_some()),
            (
                "warmup_epochs",
                spec.recipe_overrides.warmup_epochs.is_some(),
            ),
        ] {
            if given {
                return Err(located(
                    "recipe_overrides",
                    field,
                    format!("`recipe_overrides.{field}`: set `{field}` at the top level of the experiment, where it replaces the recipe's"),
                ));
            }
        }
        let mut backbone_names: Vec<String> = match spec.backbones.listed() {
            Some(names) => names.to_vec(),
            None => registries.backbone_names(),
        };
        for name in &mut backbone_names {
            *name = spec.with_preset(name);
        }
        let optimizer_names: Vec<String> = match spec.optimizers.listed() {
            Some(names) => names.to_vec(),
            None => registries.optimizer_names(),
        };
        for (key, list) in [
            ("backbones", &backbone_names),
            ("optimizers", &optimizer_names),
        ] {
            if list.is_empty() {
                return Err(located(
                    key,
                    "[",
                    format!("`{key}` names no {key}; list at least one, or write `all`"),
                ));
            }
        }
        let mut recipes = BTreeMap::new();
        for name in &backbone_names {
            registries
                .known_backbone(name)
                .map_err(|e| located("backbones", name, e))?;
            let recipe = spec
                .resolved_recipe(name, registries, &book)
                .map_err(|e| located("backbones", name, format!("backbone `{name}`: {e}")))?;
            // Refused here rather than by each of its trials.
            if recipe.layer_decay.is_some() && !registries.has_layers(name) {
                return Err(located("backbones", name, format!(
                    "backbone `{name}` trains with recipe `{}`, whose `layer_decay` needs its layers, which bocb knows (from timm's group_matcher) only for {}; drop the backbone or set `recipe_overrides: {{ layer_decay: null }}`",
                    recipe.name,
                    registries.backbones_with_layers().join(", ")
                )));
            }
            recipes.insert(name.clone(), recipe);
        }
        let mut user_spaces = BTreeMap::new();
        for name in spec.optimizer_spaces.keys() {
            if !name.starts_with(TORCHSCRIPT_OPTIMIZER) || !optimizer_names.contains(name) {
                return Err(located(
                    "optimizer_spaces",
                    name,
                    format!("`optimizer_spaces` names `{name}`, which is not a `torchscript:PATH` optimizer of `optimizers`; list it there or remove its space"),
                ));
            }
        }
        for name in &optimizer_names {
            if let Some(path) = name.strip_prefix(TORCHSCRIPT_OPTIMIZER) {
                let space = torchscript_optimizer(&spec, name, path, base)
                    .map_err(|message| located("optimizers", name, message))?;
                user_spaces.insert(name.clone(), space);
                continue;
            }
            if !registries.has_optimizer(name) {
                return Err(located(
                    "optimizers",
                    name,
                    format!(
                        "unknown optimizer `{name}`; valid: {} (or `all`)",
                        registries.optimizer_names().join(", ")
                    ),
                ));
            }
            catalog.optimizer(name).map_err(|e| {
                located(
                    "optimizers",
                    name,
                    format!("optimizer `{name}` has no search space: {e}"),
                )
            })?;
        }
        #[cfg(feature = "train")]
        if spec.data_on_device == DataOnDevice::On {
            check_data_on_device(&spec, &backbone_names, registries, &book)
                .map_err(|message| located("data_on_device", "true", message))?;
        }
        spec.grid_centres
            .check(&backbone_names, &optimizer_names, |key| {
                spec.with_preset(key)
            })
            .map_err(|unknown| {
                let (line, column) = locate_key(source, &unknown.key);
                ExperimentError::Invalid {
                    origin: origin.to_string(),
                    line,
                    column,
                    message: unknown.message,
                }
            })?;
        let init_weights = starting_weights(&spec, &backbone_names, registries, base)
            .map_err(|(key, message)| located("init", &key, message))?;
        #[cfg(feature = "train")]
        check_freeze(&spec, &backbone_names, registries)
            .map_err(|message| located("freeze", "[", message))?;
        if let Some(resolution) = spec.dataset.resolution {
            spec.dataset
                .check()
                .map_err(|e| located("resolution", &resolution.to_string(), e.to_string()))?;
        }
        for name in &backbone_names {
            let known = |instead: &str| registries.backbone(instead).is_some();
            if let Some(message) = spec
                .dataset
                .resolution
                .and_then(|side| cifar_form_at(name, side, known))
            {
                return Err(located("backbones", name, message));
            }
        }
        let dataset_dir = base.join(&spec.dataset.path);
        if !dataset_dir.is_dir() {
            return Err(located(
                "path",
                &spec.dataset.path.display().to_string(),
                format!(
                    "dataset directory {} does not exist (relative paths are taken from the experiment file's directory); create one with `bocb data synth --format {} --out {}` or point `dataset.path` at your data",
                    dataset_dir.display(),
                    spec.dataset.format,
                    dataset_dir.display()
                ),
            ));
        }
        // A user's TorchScript module is run once on a dummy batch now, so a
        // forward that does not fit 3x32x32 images and the dataset's classes
        // is explained before the first trial.
        #[cfg(feature = "train")]
        if backbone_names.iter().any(|n| n.starts_with(TORCHSCRIPT)) {
            let path = spec.dataset.path.display().to_string();
            let workers = bocb_trial_runner::batches::default_workers();
            let classes = spec
                .dataset
                .open(&dataset_dir, workers)
                .map_err(|e| located("path", &path, e.to_string()))?
                .classes() as i64;
            for name in backbone_names.iter().filter(|n| n.starts_with(TORCHSCRIPT)) {
                registries
                    .backbones
                    .check(&resolve_module(base, name), classes)
                    .map_err(|e| located("backbones", name, e.to_string()))?;
            }
        }
        Ok(Experiment {
            spec,
            backbones: backbone_names,
            optimizers: optimizer_names,
            source: source.to_string(),
            dataset_dir,
            base_dir: base.to_path_buf(),
            recipes,
            user_spaces,
            init_weights,
        })
    }
}

/// The `init` weights by backbone name (presets applied, paths made
/// absolute from `base`), each checked now against its backbone, so a file
/// that does not fit is refused before any trial; the error comes with the
/// `init` key it is about.
#[cfg_attr(not(feature = "train"), allow(unused_variables))]
fn starting_weights(
    spec: &ExperimentSpec,
    backbone_names: &[String],
    registries: &Registries,
    base: &Path,
) -> Result<BTreeMap<String, PathBuf>, (String, String)> {
    let mut weights = BTreeMap::new();
    // Found in the store when the experiment runs (`transfer`).
    if spec.init.contains_key(FROM_EXPERIMENT) {
        return match spec.init.len() {
            1 => Ok(weights),
            _ => Err((
                FROM_EXPERIMENT.to_string(),
                format!(
                    "`{}` gives every backbone its weights: drop the other `init` entries, or fine-tune them in an experiment of their own",
                    FROM_EXPERIMENT
                ),
            )),
        };
    }
    for (key, path) in &spec.init {
        let name = spec.with_preset(key);
        if !backbone_names.contains(&name) {
            return Err((
                key.clone(),
                format!(
                    "`init` names `{key}`, which is not among `backbones` ({}); give weights to a backbone the experiment runs",
                    backbone_names.join(", ")
                ),
            ));
        }
        let path = base.join(path);
        let path = std::path::absolute(&path).unwrap_or(path);
        #[cfg(feature = "train")]
        pretrained::check(&registries.backbones, &name, &path)
            .map_err(|e| (key.clone(), e.to_string()))?;
        // Without libtorch its tensors are checked against the model by the
        // worker's trial.
        #[cfg(not(feature = "train"))]
        if !path.is_file() {
            return Err((
                key.clone(),
                format!("weights file {} does not exist (relative paths are taken from the experiment file's directory)", path.display()),
            ));
        }
        weights.insert(name, path);
    }
    Ok(weights)
}

/// Checks that every `freeze` entry names parameters of every backbone.
#[cfg(feature = "train")]
fn check_freeze(
    spec: &ExperimentSpec,
    backbone_names: &[String],
    registries: &Registries,
) -> Result<(), String> {
    let backbones = &registries.backbones;
    if spec.freeze.is_empty() {
        return Ok(());
    }
    for name in backbone_names {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        backbones
            .build(name, &vs.root(), 10, 0)
            .map_err(|e| e.to_string())?;
        pretrained::frozen(backbones, name, &vs, &spec.freeze).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The search space of the experiment's `torchscript:PATH` optimizer
/// `name`, after one step of its module on throw-away parameters with the
/// space's centre and defaults: a module that does not fit bocb's interface
/// is refused before any trial, naming the file and what was expected.
fn torchscript_optimizer(
    spec: &ExperimentSpec,
    name: &str,
    path: &str,
    base: &Path,
) -> Result<OptimizerSpace, String> {
    let module = base.join(path);
    if !module.is_file() {
        return Err(format!(
            "TorchScript optimizer {} does not exist (relative paths are taken from the experiment file's directory); save your module there with torch.jit.script(module).save(PATH) (see docs/extending.md)",
            module.display()
        ));
    }
    let space = spec
        .torchscript_space(name, base)
        .map_err(|e| e.to_string())?;
    // Without libtorch the module's first step is the worker's to take.
    #[cfg(feature = "train")]
    check_torchscript_step(spec, &module, &space)?;
    Ok(space)
}

/// One step of the optimizer module at `module` with `space`'s centre and
/// defaults, and its checkpoints when the experiment asks for them.
#[cfg(feature = "train")]
fn check_torchscript_step(
    spec: &ExperimentSpec,
    module: &Path,
    space: &OptimizerSpace,
) -> Result<(), String> {
    use bocb_trial_runner::optim::torchscript;
    let mut hparams = space.default_params();
    hparams.insert("lr".into(), space.lr.centre());
    hparams.insert("weight_decay".into(), space.weight_decay.centre());
    let capabilities =
        torchscript::check(&module.display().to_string(), &hparams).map_err(|e| e.to_string())?;
    if spec.checkpoint_every.is_some() && !capabilities.checkpoints {
        return Err(format!(
            "`checkpoint_every` is set, but {}; export it, or remove `checkpoint_every`",
            torchscript::no_load_state(&module.display().to_string())
        ));
    }
    Ok(())
}

/// With `data_on_device: true`, every backbone's recipe must have device
/// versions of its per-image transforms; the error names the backbone, the
/// transforms and the overrides that drop them.
#[cfg(feature = "train")]
fn check_data_on_device(
    spec: &ExperimentSpec,
    names: &[String],
    registries: &Registries,
    book: &RecipeBook,
) -> Result<(), String> {
    for name in names {
        let recipe = spec.resolved_recipe(name, registries, book)?;
        let (entry, preset) = registries
            .backbones
            .lookup(name)
            .map_err(|e| e.to_string())?;
        // The dataset mean only fills RandAugment's borders: any will do here.
        let transform = ImageTransform::from_recipe(&recipe, entry.input_size(preset), [0.5; 3]);
        if let Err(missing) = transform.on_device() {
            return Err(format!(
                "`data_on_device: true`, but backbone `{name}` trains with recipe `{}`, whose {missing}; set `data_on_device: auto` (the CPU pipeline where needed) or `false`, or drop it with `recipe_overrides: {}`",
                recipe.name,
                missing.fix()
            ));
        }
    }
    Ok(())
}

/// Refuses an experiment name that is not safe as a URL path segment, a
/// store key and a directory name (`.`, `..`, or one read as an option).
pub fn check_experiment_name(name: &str) -> Result<(), BadExperimentName> {
    let safe = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if safe {
        Ok(())
    } else {
        Err(BadExperimentName(name.to_string()))
    }
}

/// An experiment name that cannot be a store key and a folder name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "experiment name `{0}` must start with a letter or digit and use only letters, digits, `-`, `_` and `.`"
)]
pub struct BadExperimentName(pub String);

/// 1-based line and column of `value` after `key:` in a YAML source (on the
/// key's line, flow style, or in the block list below it); the key itself
/// when the value is not found; (1, 1) when the key is absent. Used for
/// errors found after parsing, when serde_yaml's marks are gone.
fn locate(source: &str, key: &str, value: &str) -> (usize, usize) {
    let lines: Vec<&str> = source.lines().collect();
    let key_token = format!("{key}:");
    for (i, line) in lines.iter().enumerate() {
        let Some(k) = find_token(line, &key_token) else {
            continue;
        };
        let after_key = k + key_token.len();
        if let Some(v) = find_token(&line[after_key..], value) {
            return (i + 1, after_key + v + 1);
        }
        let block = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim_start().starts_with('-') || l.trim().is_empty());
        for (j, item) in block.enumerate() {
            if let Some(v) = find_token(item, value) {
                return (i + j + 2, v + 1);
            }
        }
        return (i + 1, k + 1);
    }
    (1, 1)
}

/// 1-based line and column of the first `key:` in a YAML source; (1, 1)
/// when there is none.
fn locate_key(source: &str, key: &str) -> (usize, usize) {
    let key_token = format!("{key}:");
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| find_token(line, &key_token).map(|k| (i + 1, k + 1)))
        .unwrap_or((1, 1))
}

/// Byte offset of `token` in `line` as a whole YAML scalar (not inside a longer name).
fn find_token(line: &str, token: &str) -> Option<usize> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || "_@.-/".contains(c);
    line.match_indices(token).map(|(i, _)| i).find(|&i| {
        let before = line[..i].chars().next_back();
        let after = line[i + token.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// What every build reads and refuses alike, the one without training
/// included.
#[cfg(test)]
mod spec_tests {
    use super::*;

    fn parse(extra: &str) -> Result<Experiment, ExperimentError> {
        Experiment::parse(
            &format!("name: e\ndataset: {{ format: cifar100-bin, path: . }}\nepochs: 1\n{extra}"),
            "e.yaml",
            Path::new("."),
            &Registries::builtin(),
        )
    }

    #[test]
    fn a_cifar_form_at_full_resolution_is_refused_with_its_imagenet_form() {
        let at = |resolution: u32, backbone: &str| {
            Experiment::parse(
                &format!("name: e\ndataset: {{ format: image-folder, path: ., resolution: {resolution} }}\nbackbones: [{backbone}]\noptimizers: [sgd_m]\nepochs: 1\n"),
                "e.yaml",
                Path::new("."),
                &Registries::builtin(),
            )
        };
        let err = at(224, "resnet50_cifar@micro").unwrap_err().to_string();
        assert!(
            err.starts_with("e.yaml:3:") && err.contains("use `resnet50@micro`, its ImageNet form"),
            "{err}"
        );
        assert!(at(32, "resnet50_cifar").is_ok());
        assert!(at(224, "resnet50").is_ok());
    }

    #[test]
    fn every_build_expands_all_and_refuses_what_it_does_not_know() {
        let registries = Registries::builtin();
        let e = parse("backbones: all\noptimizers: all\npreset: micro\n").unwrap();
        assert_eq!(e.backbones.len(), registries.backbone_names().len());
        assert!(e.backbones.contains(&"swin_t@micro".to_string()));
        assert_eq!(e.optimizers, registries.optimizer_names());
        assert_eq!(e.recipe("deit_s@micro").name, "deit");

        let err = parse("backbones: [resnet19]\noptimizers: [sgd_m]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("e.yaml:4:") && err.contains("resnet19"),
            "{err}"
        );
        let err = parse("backbones: [resnet18]\noptimizers: [sgdd]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("e.yaml:5:") && err.contains("unknown optimizer `sgdd`; valid: "),
            "{err}"
        );
        // Layer-wise lr decay needs the backbone's layers.
        let with_decay = "optimizers: [sgd_m]\nrecipe_overrides: { layer_decay: 0.75 }\n";
        assert!(parse(&format!("backbones: [vit_tiny]\n{with_decay}")).is_ok());
        let err = parse(&format!("backbones: [alexnet]\n{with_decay}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`layer_decay` needs its layers"), "{err}");
        // Weights that are not there.
        let err = parse(
            "backbones: [resnet18]\noptimizers: [sgd_m]\ninit: { resnet18: nowhere.safetensors }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("e.yaml:6:") && err.contains("nowhere.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn a_stored_experiment_with_a_launcher_reads_in_every_build() {
        let spec: ExperimentSpec = serde_yaml::from_str(
            "name: e\ndataset: { format: cifar100-bin, path: . }\nbackbones: all\noptimizers: all\nepochs: 1\nlauncher: { slurm: { partition: gpu, max_jobs: 3 } }\n",
        )
        .unwrap();
        let slurm = &spec.launcher.as_ref().unwrap().slurm;
        assert_eq!(
            (slurm.partition.as_deref(), slurm.max_jobs),
            (Some("gpu"), 3)
        );
    }
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use super::*;
    use crate::packing::PackingRule;
    use crate::search::StopKind;
    use bocb_spec::BadFiles;
    use bocb_trial_runner::models::BackboneEntry;

    const GOOD: &str = "\
name: cnn-vs-vit
dataset: { format: cifar100-bin, path: . }
backbones: [resnet18_cifar@micro, vit_tiny_cifar]
optimizers:
  - sgd_m
  - adamw
epochs: 3
";

    fn parse(src: &str) -> Result<Experiment, ExperimentError> {
        Experiment::parse(src, "exp.yaml", Path::new("."), &Registries::builtin())
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn a_users_own_backbone_trains_with_its_own_default_recipe() {
        // A backbone registered by the user's program, not built in: its
        // recipe comes from the registry the experiment was parsed with.
        let mut registries = Registries::builtin();
        let resnet = registries.backbones.lookup("resnet18_cifar").unwrap().0;
        let mine = BackboneEntry {
            default_recipe: "deit",
            timm: None,
            ..*resnet
        };
        registries.backbones.register("my_net", mine);
        let e = Experiment::parse(
            &GOOD.replace("[resnet18_cifar@micro, vit_tiny_cifar]", "[my_net]"),
            "exp.yaml",
            Path::new("."),
            &registries,
        )
        .unwrap();
        let params = Hparams::from([("lr".into(), 0.1), ("weight_decay".into(), 0.0)]);
        let trial = e.trial_spec("my_net", "sgd_m", &params, 0, None);
        assert_eq!(trial.recipe.as_ref().unwrap().name, "deit");
        assert_eq!(e.stored_recipe("my_net").name, "deit");
    }

    #[test]
    fn parses_with_defaults() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.spec.seeds, 1);
        assert_eq!(e.spec.batch_size, None);
        assert_eq!(e.spec.recipe, None);
        assert_eq!(e.spec.device_list().devices(), [DeviceChoice::Auto]);
        assert_eq!(e.spec.trials_per_device, TrialsPerDevice::Fixed(1));
        assert_eq!(e.spec.packing, None);
        assert_eq!(e.optimizers, ["sgd_m", "adamw"]);
        assert_eq!(e.backbones, ["resnet18_cifar@micro", "vit_tiny_cifar"]);
        assert_eq!(e.dataset_dir, Path::new("./."));
    }

    #[test]
    fn names_that_are_no_safe_path_segment_are_refused() {
        for bad in [".", "..", ".hidden", "-x", "a/b", "a b", ""] {
            let err = error(&GOOD.replace("name: cnn-vs-vit", &format!("name: \"{bad}\"")));
            assert!(
                err.starts_with("exp.yaml:1:") && err.contains("must start with a letter or digit"),
                "{bad}: {err}"
            );
        }
        assert!(parse(&GOOD.replace("cnn-vs-vit", "v1.2_b-c")).is_ok());
    }

    #[test]
    fn an_experiments_launcher_reads_and_its_bad_fields_are_located() {
        let e = parse(&format!(
            "{GOOD}launcher: {{ slurm: {{ partition: gpu, gres: \"gpu:1\", mem: 64G, max_jobs: 8 }} }}\n"
        ))
        .unwrap();
        let slurm = &e.spec.launcher.as_ref().unwrap().slurm;
        assert_eq!(
            (
                slurm.partition.as_deref(),
                slurm.max_jobs,
                slurm.idle_exit_s
            ),
            (Some("gpu"), 8, 60)
        );
        assert_eq!(parse(GOOD).unwrap().spec.launcher, None);
        // Where workers start is no training setting.
        assert_eq!(
            e.spec.training_settings(),
            parse(GOOD).unwrap().spec.training_settings()
        );

        let line = GOOD.lines().count() + 1;
        let unknown = error(&format!(
            "{GOOD}launcher: {{ slurm: {{ partitio: gpu }} }}\n"
        ));
        assert!(
            unknown.starts_with(&format!("exp.yaml:{line}:"))
                && unknown.contains("unknown field `partitio`, expected one of `partition`"),
            "{unknown}"
        );
        let other = error(&format!("{GOOD}launcher: {{ pbs: {{}} }}\n"));
        assert!(other.contains("expected `slurm`"), "{other}");
        // A block form, after a top-level `device` the block's must not be confused with.
        let block = format!(
            "{GOOD}device: cpu\nlauncher:\n  slurm:\n    device: \"cuda 0\"\n    extra:\n      - --constraint=a100\n      - --array=0-3\n"
        );
        let device = error(&block.replace("--array=0-3", "--exclude=node13"));
        assert!(
            device.starts_with(&format!(
                "exp.yaml:{}:14: launcher.slurm.device must be one word",
                line + 3
            )),
            "{device}"
        );
        let extra = error(&block.replace("\"cuda 0\"", "cpu"));
        assert!(
            extra.starts_with(&format!(
                "exp.yaml:{}:9: launcher.slurm.extra[1] `--array=0-3`: bocb sets --array",
                line + 6
            )),
            "{extra}"
        );
        let max_jobs = error(&format!("{GOOD}launcher: {{ slurm: {{ max_jobs: 0 }} }}\n"));
        assert!(
            max_jobs.starts_with(&format!(
                "exp.yaml:{line}:32: launcher.slurm.max_jobs must be at least 1"
            )),
            "{max_jobs}"
        );
    }

    #[test]
    fn checkpoint_every_reaches_the_trials_and_is_refused_for_external_ones() {
        let e = parse(&format!("{GOOD}checkpoint_every: 2\n")).unwrap();
        let params = [("lr".to_string(), 0.1), ("weight_decay".to_string(), 0.0)].into();
        let trial = e.trial_spec("vit_tiny_cifar", "sgd_m", &params, 0, None);
        assert_eq!(trial.checkpoint_every, Some(2));
        assert_eq!(parse(GOOD).unwrap().spec.checkpoint_every, None);
        let err = error(&format!(
            "{GOOD}checkpoint_every: 2\ntrial:\n  command: python train.py\n"
        ));
        assert!(
            err.starts_with("exp.yaml:8:19: `checkpoint_every` paces bocb's own trainer")
                && err.contains("BOCB_CHECKPOINT_DIR"),
            "{err}"
        );
        let err = error(&format!("{GOOD}checkpoint_every: -1\n"));
        assert!(err.contains("checkpoint_every"), "{err}");
    }

    #[test]
    fn trial_timeouts_are_durations_refused_where_written() {
        let timed = |timeout: &str| {
            format!("{GOOD}trial:\n  command: python train.py\n  timeout: {timeout}\n")
        };
        let e = parse(&timed("2h")).unwrap();
        let timeout = e.spec.trial.unwrap().timeout.unwrap();
        assert_eq!(timeout.0, std::time::Duration::from_secs(7200));
        let e = parse(&timed("90")).unwrap();
        assert_eq!(e.spec.trial.unwrap().timeout.unwrap().to_string(), "90s");
        for bad in ["soon", "0", "-5m"] {
            let err = error(&timed(bad));
            assert!(
                err.starts_with(
                    "exp.yaml:10:12: trial.timeout: must be a positive duration such as `2h`"
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn all_expands_to_the_registries_and_preset_applies() {
        let src = GOOD
            .replace("[resnet18_cifar@micro, vit_tiny_cifar]", "all")
            .replace(
                "optimizers:\n  - sgd_m\n  - adamw",
                "optimizers: all\npreset: micro",
            );
        let e = parse(&src).unwrap();
        let registries = Registries::builtin();
        let expected: Vec<String> = registries
            .backbone_names()
            .iter()
            .map(|n| format!("{n}@micro"))
            .collect();
        assert_eq!(e.backbones, expected);
        assert_eq!(e.optimizers, registries.optimizer_names());
        let err = error(&GOOD.replace("[resnet18_cifar@micro, vit_tiny_cifar]", "every"));
        assert!(
            err.starts_with(
                "exp.yaml:3:12: backbones: `every` is neither a list of names nor `all`"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_backbone_is_located_and_lists_choices() {
        let err = error(&GOOD.replace("vit_tiny_cifar", "vit_huge"));
        assert!(
            err.starts_with("exp.yaml:3:35: unknown backbone `vit_huge`"),
            "{err}"
        );
        assert!(err.contains("resnet18_cifar, "), "{err}");
        assert!(err.contains(", vit_tiny_cifar"), "{err}");
        assert!(err.contains("torchscript:PATH"), "{err}");
    }

    #[test]
    fn unknown_optimizer_in_block_list_is_located() {
        let err = error(&GOOD.replace("  - adamw", "  - adamq"));
        assert!(
            err.starts_with("exp.yaml:6:5: unknown optimizer `adamq`; valid: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_reports_its_position_and_the_valid_keys() {
        let err = error(&format!("{GOOD}epoch_count: 4\n"));
        assert!(
            err.starts_with("exp.yaml:8:1: unknown field `epoch_count`"),
            "{err}"
        );
        assert!(err.contains("`epochs`"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(error(&GOOD.replace("epochs: 3", "epochs: 0"))
            .contains("exp.yaml:7:9: `epochs` must be at least 1"));
        let err = error(&GOOD.replace("cifar100-bin", "cifar1000"));
        assert!(err.starts_with("exp.yaml:2:"), "{err}");
        assert!(err.contains("cifar100-bin"), "{err}");
        let err = error(&format!("{GOOD}warmup_epochs: 3\n"));
        assert!(err.contains("must be below `epochs`"), "{err}");
        let err = error(&GOOD.replace("cnn-vs-vit", "cnn vs vit"));
        assert!(err.starts_with("exp.yaml:1:"), "{err}");
    }

    #[test]
    fn failure_gamma_must_be_positive() {
        assert_eq!(
            parse(&format!("{GOOD}failure_gamma: 1\n"))
                .unwrap()
                .spec
                .failure_gamma,
            Some(1.0)
        );
        let err = error(&format!("{GOOD}failure_gamma: -2\n"));
        assert!(
            err.contains("`failure_gamma` must be a positive number"),
            "{err}"
        );
    }

    #[test]
    fn search_settings_parse_and_are_checked() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.spec.strategy, StrategyKind::Grid);
        assert_eq!(e.spec.early_stop, StopKind::None);
        assert_eq!(e.spec.budget, Budget::default());
        assert!(!e.spec.search_extras);
        let src = format!(
            "{GOOD}strategy: tpe\nstrategy_seed: 4\nearly_stop: asha\nbudget: {{ trials: 10, hours: 1.5 }}\nsearch_extras: true\n"
        );
        let e = parse(&src).unwrap();
        assert_eq!(e.spec.strategy, StrategyKind::Tpe);
        assert_eq!(e.spec.strategy_seed, 4);
        assert_eq!(e.spec.early_stop, StopKind::Asha);
        assert_eq!(e.spec.budget.trials, Some(10));
        assert_eq!(e.spec.budget.hours, Some(1.5));
        assert!(e.spec.search_extras);

        let err = error(&format!("{GOOD}strategy: hyperopt\n"));
        assert!(
            err.contains("unknown variant `hyperopt`") && err.contains("tpe"),
            "{err}"
        );
        let err = error(&format!("{GOOD}budget: {{ trials: 30 }}\n"));
        assert!(
            err.contains("`budget.trials` must be between 1 and 25"),
            "{err}"
        );
        let err = error(&format!("{GOOD}budget: {{ hours: 0 }}\n"));
        assert!(err.contains("`budget.hours` must be a positive"), "{err}");
        let ending = parse(&format!(
            "{GOOD}strategy: bayes\nbudget: {{ trials: 8, min_expected_gain: 0.1 }}\n"
        ))
        .unwrap();
        assert_eq!(ending.spec.budget.min_expected_gain, Some(0.1));
        let err = error(&format!(
            "{GOOD}strategy: bayes\nbudget: {{ min_expected_gain: -1 }}\n"
        ));
        assert!(
            err.contains("`budget.min_expected_gain` must be a positive"),
            "{err}"
        );
        let err = error(&format!(
            "{GOOD}strategy: tpe\nbudget: {{ min_expected_gain: 0.1 }}\n"
        ));
        assert!(
            err.contains("only `strategy: bayes` has, but `strategy` is tpe"),
            "{err}"
        );

        assert!(!e.spec.transfer);
        let shared = parse(&format!("{GOOD}strategy: bayes\ntransfer: true\n")).unwrap();
        assert!(shared.spec.transfer);
        let err = error(&format!("{GOOD}transfer: true\n"));
        assert!(
            err.contains(
                "`transfer` guides the model-based strategies only, but `strategy` is grid"
            ) && err.contains("strategy: tpe"),
            "{err}"
        );

        let learning = parse(&format!(
            "{GOOD}strategy: bayes\ntransfer: true\ntransfer_from: [builtin-grid]\n"
        ))
        .unwrap();
        assert_eq!(learning.spec.transfer_from, ["builtin-grid"]);
        let err = error(&format!(
            "{GOOD}strategy: bayes\ntransfer_from: [builtin-grid]\n"
        ));
        assert!(
            err.contains("takes `transfer: true`") && err.contains("transfer_from"),
            "{err}"
        );
        let own_name = parse(GOOD).unwrap().spec.name;
        let err = error(&format!(
            "{GOOD}strategy: bayes\ntransfer: true\ntransfer_from: [{own_name}]\n"
        ));
        assert!(err.contains("this experiment itself"), "{err}");
    }

    #[test]
    fn grid_extension_is_on_for_model_based_strategies_unless_the_file_says() {
        let steps = |extra: &str| {
            parse(&format!("{GOOD}{extra}"))
                .unwrap()
                .spec
                .grid_extension_steps()
        };
        assert_eq!(steps(""), 0, "grid keeps the paper's 25 points");
        assert_eq!(steps("strategy: random\n"), 0);
        assert_eq!(steps("strategy: tpe\n"), 2);
        assert_eq!(steps("strategy: bayes\n"), 2);
        assert_eq!(
            steps("strategy: bayes\ngrid_extension: { max_steps: 0 }\n"),
            0
        );
        assert_eq!(steps("grid_extension: { max_steps: 3 }\n"), 3);

        let src = format!("{GOOD}grid_extension: {{ max_steps: 9 }}\n");
        let err = error(&src);
        let line = src.lines().count();
        assert!(err.starts_with(&format!("exp.yaml:{line}:")), "{err}");
        assert!(
            err.contains("`grid_extension.max_steps` must be between 0 (off) and 8"),
            "{err}"
        );
        let err = error(&format!("{GOOD}grid_extension: {{ steps: 2 }}\n"));
        assert!(
            err.contains("unknown field `steps`") && err.contains("max_steps"),
            "{err}"
        );
    }

    #[test]
    fn devices_parse_as_a_string_or_a_list_and_fill_slots() {
        let devices = |yaml: &str| {
            let e = parse(&format!("{GOOD}{yaml}")).unwrap();
            e.spec.device_list().devices().to_vec()
        };
        assert_eq!(devices("devices: cpu\n"), [DeviceChoice::Cpu]);
        assert_eq!(devices("devices: auto\n"), [DeviceChoice::Auto]);
        assert_eq!(
            devices("devices: cuda:0,1\n"),
            [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]
        );
        assert_eq!(
            devices("devices: [cuda:0, cuda:1]\n"),
            [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]
        );
        assert_eq!(
            devices("devices:\n  - cpu\n  - cuda:3\n"),
            [DeviceChoice::Cpu, DeviceChoice::Cuda(3)]
        );
        // The older single `device` still works, as in stored experiments.
        assert_eq!(devices("device: cpu\n"), [DeviceChoice::Cpu]);
        // What service workers are matched against; `auto` takes any.
        let named = |yaml: &str| {
            parse(&format!("{GOOD}{yaml}"))
                .unwrap()
                .spec
                .named_devices()
        };
        assert_eq!(named("devices: cuda:0,1\n").unwrap(), ["cuda:0", "cuda:1"]);
        assert_eq!(named("device: cpu\n").unwrap(), ["cpu"]);
        assert_eq!(named("devices: [auto, cpu]\n"), None);
        assert_eq!(named(""), None);

        let e = parse(&format!("{GOOD}devices: cpu\ntrials_per_device: 3\n")).unwrap();
        assert_eq!(e.spec.device_slots(), Ok(vec![DeviceChoice::Cpu; 3]));
        let trial = e.trial_spec(
            "vit_tiny_cifar",
            "adamw",
            &[("lr".to_string(), 0.01), ("weight_decay".to_string(), 0.0)].into(),
            0,
            None,
        );
        assert_eq!(trial.device, DeviceChoice::Cpu);
        let e = parse(&format!("{GOOD}device: cpu\ntrials_per_device: 2\n")).unwrap();
        assert_eq!(e.spec.device_slots(), Ok(vec![DeviceChoice::Cpu; 2]));
        // Where trials run is no training setting: a stored experiment may
        // resume on other devices.
        assert_eq!(
            e.spec.training_settings(),
            parse(GOOD).unwrap().spec.training_settings()
        );
    }

    #[test]
    fn data_on_device_is_checked_against_each_recipe_and_is_no_training_setting() {
        let params: Hparams = [("lr".to_string(), 0.01), ("weight_decay".to_string(), 0.0)].into();
        let trial = |e: &Experiment| {
            e.trial_spec("vit_tiny_cifar", "adamw", &params, 0, None)
                .data_on_device
        };
        assert_eq!(trial(&parse(GOOD).unwrap()), DataOnDevice::Auto);
        let off = parse(&format!(
            "{GOOD}data_on_device: false
"
        ))
        .unwrap();
        assert_eq!(trial(&off), DataOnDevice::Off);
        // The same batches either way: a stored experiment may change it.
        assert_eq!(
            off.spec.training_settings(),
            parse(GOOD).unwrap().spec.training_settings()
        );
        // `pytorch` crops and flips, which the device does.
        let on = parse(&format!(
            "{GOOD}recipe: pytorch
data_on_device: true
"
        ))
        .unwrap();
        assert_eq!(trial(&on), DataOnDevice::On);
        // vit_tiny_cifar trains with DeiT's RandAugment by default.
        let err = error(&format!(
            "{GOOD}data_on_device: true
"
        ));
        assert!(
            err.starts_with("exp.yaml:8:17: `data_on_device: true`, but backbone `vit_tiny_cifar` trains with recipe `deit`, whose RandAugment (`rand_augment`) has no on-device version; set `data_on_device: auto`"),
            "{err}"
        );
        assert!(
            err.ends_with("`recipe_overrides: { rand_augment: null }`"),
            "{err}"
        );
        let dropped = format!(
            "{GOOD}data_on_device: true
recipe_overrides: {{ rand_augment: null }}
"
        );
        assert_eq!(trial(&parse(&dropped).unwrap()), DataOnDevice::On);
        let err = error(&format!(
            "{GOOD}data_on_device: gpu
"
        ));
        assert!(
            err.starts_with("exp.yaml:8:17: data_on_device: unknown value `gpu`; valid: auto"),
            "{err}"
        );
    }

    #[test]
    fn trials_per_device_is_a_number_or_auto_with_packing_knobs() {
        let e = parse(&format!("{GOOD}devices: cpu\ntrials_per_device: auto\n")).unwrap();
        assert_eq!(e.spec.trials_per_device, TrialsPerDevice::Auto);
        // One slot per device: `bocb run` adds the packed ones.
        assert_eq!(e.spec.device_slots(), Ok(vec![DeviceChoice::Cpu]));
        assert_eq!(e.spec.packing_rule(), PackingRule::default());
        let e = parse(&format!(
            "{GOOD}trials_per_device: auto\npacking: {{ memory_fraction: 0.5, max_trials: 4 }}\n"
        ))
        .unwrap();
        let rule = e.spec.packing_rule();
        assert_eq!((rule.memory_fraction, rule.max_trials), (0.5, 4));
        assert_eq!(rule.min_gain, PackingRule::default().min_gain);
        // It round-trips as the store keeps it, and is no training setting.
        let yaml = serde_yaml::to_string(&e.spec).unwrap();
        let back: ExperimentSpec = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, e.spec);
        assert_eq!(
            e.spec.training_settings(),
            parse(GOOD).unwrap().spec.training_settings()
        );
        let e = parse(&format!("{GOOD}trials_per_device: 3\n")).unwrap();
        assert_eq!(e.spec.trials_per_device, TrialsPerDevice::Fixed(3));

        let err = error(&format!("{GOOD}trials_per_device: many\n"));
        assert!(
            err.starts_with("exp.yaml:8:20: trials_per_device: `trials_per_device` must be a number of trials (1, 2, ...) or `auto`, got `many`"),
            "{err}"
        );
        let err = error(&format!("{GOOD}trials_per_device: -1\n"));
        assert!(err.contains("or `auto`, got -1"), "{err}");
        let err = error(&format!(
            "{GOOD}trials_per_device: 2\npacking: {{ max_trials: 4 }}\n"
        ));
        assert!(
            err.starts_with("exp.yaml:9:1: `packing` tunes `trials_per_device: auto` only, but `trials_per_device` is 2"),
            "{err}"
        );
        let err = error(&format!(
            "{GOOD}trials_per_device: auto\npacking:\n  memory_fraction: 1.5\n"
        ));
        assert!(
            err.starts_with(
                "exp.yaml:10:3: `packing.memory_fraction` must be above 0 and at most 1"
            ),
            "{err}"
        );
        let err = error(&format!(
            "{GOOD}trials_per_device: auto\ntrial: {{ command: ./train.sh }}\n"
        ));
        assert!(
            err.starts_with(
                "exp.yaml:8:20: `trials_per_device: auto` measures bocb's own training step"
            ),
            "{err}"
        );
        let err = error(&format!(
            "{GOOD}trials_per_device: auto\npacking: {{ gain: 0.1 }}\n"
        ));
        assert!(
            err.contains("unknown field `gain`") && err.contains("min_gain"),
            "{err}"
        );
    }

    #[test]
    fn bad_devices_are_refused_with_the_field_and_the_valid_forms() {
        let err = error(&format!("{GOOD}devices: gpu\n"));
        assert!(
            err.starts_with("exp.yaml:8:10: devices: unknown device `gpu`"),
            "{err}"
        );
        assert!(
            err.contains("`cuda:0,1`") && err.contains("[cuda:0, cuda:1]"),
            "{err}"
        );
        let err = error(&format!("{GOOD}devices: [cpu, tpu]\n"));
        assert!(err.starts_with("exp.yaml:8:"), "{err}");
        assert!(err.contains("devices: unknown device `tpu`"), "{err}");
        let err = error(&format!("{GOOD}devices: [cuda:1, cuda:1]\n"));
        assert!(
            err.contains("devices: device `cuda:1` is named twice"),
            "{err}"
        );
        let err = error(&format!("{GOOD}devices: cpu\ndevice: cpu\n"));
        assert!(
            err.starts_with("exp.yaml:9:9: both `devices` (cpu) and the older `device`"),
            "{err}"
        );
        let err = error(&format!("{GOOD}devices: cpu\ntrials_per_device: 0\n"));
        assert!(
            err.starts_with("exp.yaml:9:20: `trials_per_device` must be at least 1"),
            "{err}"
        );
        // Devices this machine lacks are refused before a trial starts;
        // `auto` standing for a device the list names too is a duplicate.
        let missing = tch::Cuda::device_count() as usize;
        let e = parse(&format!("{GOOD}devices: cpu, cuda:{missing}\n")).unwrap();
        let err = e.spec.device_slots().unwrap_err();
        assert!(
            err.starts_with(&format!("`devices`: device cuda:{missing} was asked for")),
            "{err}"
        );
        assert!(err.contains("valid forms: `cpu`"), "{err}");
        let e = parse(&format!("{GOOD}device: cuda:{missing}\n")).unwrap();
        assert!(e.spec.device_slots().unwrap_err().starts_with("`device`: "));
        let here = DeviceChoice::Auto.resolve_choice().unwrap();
        let e = parse(&format!("{GOOD}devices: [{here}, auto]\n")).unwrap();
        let err = e.spec.device_slots().unwrap_err();
        assert!(
            err.contains(&format!("`auto` is `{here}` on this machine")),
            "{err}"
        );
    }

    #[test]
    fn each_backbone_trains_with_its_own_recipe_unless_the_experiment_names_one() {
        let e = parse(GOOD).unwrap();
        let registries = Registries::builtin();
        let params: Hparams = [("lr".to_string(), 0.01), ("weight_decay".to_string(), 0.0)].into();
        let cnn = e.trial_spec("resnet18_cifar@micro", "adamw", &params, 0, None);
        let vit = e.trial_spec("vit_tiny_cifar", "adamw", &params, 0, None);
        let (cnn_recipe, vit_recipe) = (cnn.recipe.unwrap(), vit.recipe.unwrap());
        assert_eq!(cnn_recipe.name, "pytorch");
        assert_eq!(vit_recipe.name, "deit");
        // Explicit `epochs` wins; absent `batch_size` is the recipe's, and
        // DeiT's 5 of 200 warm-up epochs scale to 0 of 3.
        assert_eq!((vit.epochs, vit.batch_size, vit.warmup_epochs), (3, 100, 0));
        assert_eq!(vit_recipe.epochs.0, 3);
        assert_eq!(vit_recipe.mixup_alpha.0, 0.8);
        // The optimizer is the trial's, whatever the recipe's default.
        assert_eq!(vit.optimizer, "adamw");
        assert_eq!(vit.hparams, params);
        let stored = e.stored_recipe("vit_tiny_cifar");
        assert_eq!(stored.name, "deit");
        assert_eq!(stored.settings.unwrap()["epochs"], 3);
        assert_eq!(
            e.spec
                .recipe_name("resnet18_cifar@micro", &registries)
                .unwrap(),
            "pytorch"
        );

        let src = format!(
            "{GOOD}recipe: rsb_a3\nbatch_size: 64\nwarmup_epochs: 1\nrecipe_overrides: {{ mixup_alpha: 0, rand_augment: null, ema_decay: 0.99, dropout: 0.1 }}\n"
        );
        let e = parse(&src).unwrap();
        let spec = e.trial_spec("vit_tiny_cifar", "sgd_m", &params, 1, None);
        let recipe = spec.recipe.unwrap();
        assert_eq!(recipe.name, "rsb_a3");
        assert_eq!((spec.batch_size, spec.warmup_epochs), (64, 1));
        assert_eq!((recipe.batch_size.0, recipe.warmup_epochs), (64, 1));
        assert_eq!(recipe.mixup_alpha.0, 0.0);
        assert_eq!(recipe.rand_augment, None);
        assert_eq!(recipe.ema_decay.map(|d| d.0), Some(0.99));
        assert_eq!(recipe.cutmix_alpha.0, 1.0);
        assert_eq!(recipe.dropout.map(|d| d.0), Some(0.1));
        let settings = e.spec.training_settings();
        assert!(
            settings.contains("recipe rsb_a3 with {") && settings.contains("\"mixup_alpha\":0.0"),
            "{settings}"
        );
    }

    #[test]
    fn bad_recipes_and_overrides_are_located_with_the_choices() {
        let err = error(&format!("{GOOD}recipe: deit3\n"));
        assert!(
            err.starts_with("exp.yaml:8:9: unknown recipe `deit3`; valid choices: convnext, deit"),
            "{err}"
        );
        let err = error(&format!("{GOOD}recipe_overrides: {{ mixup: 0.2 }}\n"));
        assert!(err.starts_with("exp.yaml:8:"), "{err}");
        assert!(err.contains("unknown field `mixup`"), "{err}");
        assert!(
            err.contains("mixup_alpha"),
            "the valid fields are listed: {err}"
        );
        let err = error(&format!("{GOOD}recipe_overrides:\n  hflip: 2\n"));
        assert!(err.starts_with("exp.yaml:9:"), "{err}");
        assert!(err.contains("between 0 and 1"), "{err}");
        let err = error(&format!("{GOOD}recipe_overrides:\n  layer_decay: 1.5\n"));
        assert!(err.starts_with("exp.yaml:9:"), "{err}");
        assert!(err.contains("layer_decay must be in (0, 1]"), "{err}");
        let e = parse(&format!(
            "{GOOD}recipe_overrides: {{ layer_decay: 0.75 }}\n"
        ))
        .unwrap();
        let spec = e.trial_spec("vit_tiny_cifar", "sgd_m", &Hparams::new(), 1, None);
        assert_eq!(spec.recipe.unwrap().layer_decay.map(|d| d.0), Some(0.75));
        let vgg = GOOD.replace("[resnet18_cifar@micro, vit_tiny_cifar]", "[vgg13_bn@micro]");
        let err = error(&format!("{vgg}recipe_overrides: {{ layer_decay: 0.75 }}\n"));
        assert!(
            err.contains("backbone `vgg13_bn@micro`")
                && err.contains("only for convnext_t, ")
                && err.contains("layer_decay: null"),
            "{err}"
        );
        let err = error(&format!("{GOOD}recipe_overrides: {{ epochs: 9 }}\n"));
        assert!(
            err.contains("`recipe_overrides.epochs`: set `epochs` at the top level"),
            "{err}"
        );
        // DeiT mixes pairs of images: an odd batch cannot be mixed.
        let err = error(&format!("{GOOD}batch_size: 33\n"));
        assert!(err.contains("backbone `vit_tiny_cifar`"), "{err}");
        assert!(err.contains("`batch_size` must be even, got 33"), "{err}");
        let odd_plain = format!("{GOOD}batch_size: 33\nrecipe: pytorch\n");
        assert_eq!(parse(&odd_plain).unwrap().spec.batch_size, Some(33));
    }

    #[test]
    fn missing_dataset_directory_says_how_to_make_one() {
        let err = error(&GOOD.replace("path: .", "path: no/such/dir"));
        assert!(err.starts_with("exp.yaml:2:"), "{err}");
        assert!(
            err.contains("bocb data synth --format cifar100-bin --out ./no/such/dir"),
            "{err}"
        );
    }

    #[test]
    fn a_resolution_is_for_image_folders_and_bad_files_default_to_fail() {
        let with = |dataset: &str| GOOD.replace("{ format: cifar100-bin, path: . }", dataset);
        let err = error(&with("{ format: cifar100-bin, path: ., resolution: 224 }"));
        assert!(
            err.contains("the cifar100-bin format is 32x32 images; drop `resolution: 224`"),
            "{err}"
        );
        let err = error(&with("{ format: image-folder, path: ., resolution: 8 }"));
        assert!(err.contains("resolution 8 is outside 16..=4096"), "{err}");
        let e = parse(&with("{ format: cifar100-bin, path: ., resolution: 32 }")).unwrap();
        assert_eq!(e.spec.dataset.resolution, Some(32));
        assert_eq!(e.spec.dataset.bad_files, BadFiles::Fail);
        let e = parse(&with("{ format: image-folder, path: ., bad_files: skip }")).unwrap();
        assert_eq!(e.spec.dataset.bad_files, BadFiles::Skip);
    }

    #[test]
    fn unknown_dataset_format_is_located_and_lists_the_formats() {
        let err = error(&GOOD.replace("cifar100-bin", "folder"));
        assert!(err.starts_with("exp.yaml:2:"), "{err}");
        assert!(err.contains("unknown dataset format \"folder\""), "{err}");
        assert!(
            err.contains(
                "image-folder, cifar100-bin, cifar10-bin, cifar100-pickle, cifar10-pickle"
            ),
            "{err}"
        );
    }

    #[test]
    fn torchscript_optimizers_are_resolved_from_the_file_and_checked_before_any_trial() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../trial-runner/tests/torchscript");
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        for name in ["sgd_m", "no_step", "wrong_signature", "no_load_state"] {
            std::fs::copy(
                fixtures.join(format!("{name}.pt")),
                dir.path().join(format!("opt/{name}.pt")),
            )
            .unwrap();
        }
        let space = |stem: &str| {
            format!("name: {stem}\ncategory: a\nweight_decay_style: coupled\nlr: [0.025, 0.05, 0.1, 0.2, 0.4]\nweight_decay: [1.25e-4, 2.5e-4, 5.0e-4, 1.0e-3, 2.0e-3]\nextras:\n  momentum: {{ default: 0.9, candidates: [0.8, 0.9] }}\n")
        };
        std::fs::write(dir.path().join("opt/sgd_m.pt.yaml"), space("sgd_m.pt")).unwrap();
        let parse_in = |optimizers: &str, extra: &str| {
            Experiment::parse(
                &format!("name: ts\ndataset: {{ format: cifar100-bin, path: . }}\nbackbones: [resnet18_cifar@micro]\noptimizers: {optimizers}\nepochs: 1\n{extra}"),
                "exp.yaml",
                dir.path(),
                &Registries::builtin(),
            )
        };
        // Beside the module, relative to the experiment file (not the cwd).
        let e = parse_in("[\"torchscript:opt/sgd_m.pt\", adamw]", "").unwrap();
        assert_eq!(e.optimizers, ["torchscript:opt/sgd_m.pt", "adamw"]);
        let catalog = Catalog::builtin();
        let space_of = e.space("torchscript:opt/sgd_m.pt", &catalog).unwrap();
        assert_eq!(space_of.name, "torchscript:opt/sgd_m.pt");
        assert_eq!(space_of.extras["momentum"].default, 0.9);
        assert!(e
            .catalog(&catalog)
            .optimizer("torchscript:opt/sgd_m.pt")
            .is_ok());
        let trial = e.trial_spec(
            "resnet18_cifar@micro",
            "torchscript:opt/sgd_m.pt",
            &Hparams::new(),
            0,
            None,
        );
        let built = trial.optimizer.strip_prefix("torchscript:").unwrap();
        assert!(
            Path::new(built).is_absolute() && Path::new(built).is_file(),
            "{built}"
        );
        assert_eq!(
            e.trial_spec("resnet18_cifar@micro", "adamw", &Hparams::new(), 0, None)
                .optimizer,
            "adamw"
        );

        // A space named in the experiment, validated as the built-in ones.
        std::fs::write(dir.path().join("opt/mine.yaml"), space("mine")).unwrap();
        let named = "optimizer_spaces: { \"torchscript:opt/sgd_m.pt\": opt/mine.yaml }\n";
        let e = parse_in("[\"torchscript:opt/sgd_m.pt\"]", named).unwrap();
        assert_eq!(e.user_spaces["torchscript:opt/sgd_m.pt"].lr.centre(), 0.1);
        std::fs::write(dir.path().join("opt/mine.yaml"), space("other")).unwrap();
        let err = parse_in("[\"torchscript:opt/sgd_m.pt\"]", named)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mine.yaml") && err.contains("file stem"),
            "{err}"
        );
        let err = parse_in("[adamw]", named).unwrap_err().to_string();
        assert!(
            err.contains("not a `torchscript:PATH` optimizer of `optimizers`"),
            "{err}"
        );

        // Refused before any trial, naming the file and what was expected.
        let err = parse_in("[\"torchscript:opt/no_step.pt\"]", "")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("exp.yaml:4:"), "{err}");
        assert!(
            err.contains("needs a search space") && err.contains("no_step.pt.yaml"),
            "{err}"
        );
        std::fs::write(dir.path().join("opt/no_step.pt.yaml"), space("no_step.pt")).unwrap();
        let err = parse_in("[\"torchscript:opt/no_step.pt\"]", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("opt/no_step.pt") && err.contains("no method `step`"),
            "{err}"
        );
        assert!(err.contains("step(self, params: List[Tensor]"), "{err}");
        std::fs::write(
            dir.path().join("opt/wrong_signature.pt.yaml"),
            space("wrong_signature.pt"),
        )
        .unwrap();
        let err = parse_in("[\"torchscript:opt/wrong_signature.pt\"]", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wrong_signature.pt") && err.contains("lr: float"),
            "{err}"
        );
        // Without `load_state` there are no checkpoints to ask for.
        std::fs::write(
            dir.path().join("opt/no_load_state.pt.yaml"),
            space("no_load_state.pt"),
        )
        .unwrap();
        parse_in("[\"torchscript:opt/no_load_state.pt\"]", "").unwrap();
        let err = parse_in(
            "[\"torchscript:opt/no_load_state.pt\"]",
            "checkpoint_every: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`checkpoint_every` is set") && err.contains("load_state(self"),
            "{err}"
        );
        parse_in("[\"torchscript:opt/sgd_m.pt\"]", "checkpoint_every: 1\n").unwrap();
        let err = parse_in("[\"torchscript:opt/none.pt\"]", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not exist") && err.contains("experiment file's directory"),
            "{err}"
        );
    }

    #[test]
    fn a_torchscript_path_is_taken_from_the_experiment_files_directory() {
        use bocb_trial_runner::data::{write_synthetic, CifarFormat, DatasetFormat, SynthConfig};
        // The file lives in dir/sub, the process runs in the crate's
        // directory: both paths must be found from dir/sub.
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let cfg = SynthConfig {
            classes: 4,
            train: 8,
            test: 4,
            seed: 1,
        };
        let format = DatasetFormat::Cifar(CifarFormat::Cifar100Bin);
        write_synthetic(&sub.join("data"), &cfg, format).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../trial-runner/tests/torchscript/small_cnn_4classes.pt"),
            sub.join("net.pt"),
        )
        .unwrap();
        let file = sub.join("exp.yaml");
        std::fs::write(
            &file,
            "name: ts\ndataset: { format: cifar100-bin, path: data }\nbackbones: [\"torchscript:net.pt\"]\noptimizers: [adamw]\nepochs: 1\n",
        )
        .unwrap();
        let e = Experiment::load(&file, &Registries::builtin()).unwrap();
        // The name as written is the backbone's name; the trial gets the file.
        assert_eq!(e.backbones, ["torchscript:net.pt"]);
        let params = [("lr".to_string(), 1e-3), ("weight_decay".to_string(), 0.0)].into();
        let trial = e.trial_spec("torchscript:net.pt", "adamw", &params, 0, None);
        let module = trial.backbone.strip_prefix(TORCHSCRIPT).unwrap();
        assert!(Path::new(module).is_absolute(), "{module}");
        assert_eq!(
            std::fs::canonicalize(module).unwrap(),
            std::fs::canonicalize(sub.join("net.pt")).unwrap()
        );
        // Built-in names pass through.
        assert_eq!(resolve_module(&sub, "resnet18_cifar"), "resnet18_cifar");
    }

    #[test]
    fn torchscript_backbones_are_checked_against_the_dataset_classes() {
        use bocb_trial_runner::data::{write_synthetic, CifarFormat, DatasetFormat, SynthConfig};
        let dir = tempfile::tempdir().unwrap();
        let module = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../trial-runner/tests/torchscript/small_cnn_4classes.pt");
        let src = |classes: usize, format: DatasetFormat| {
            let data = dir.path().join(format!("c{classes}-{format}"));
            let cfg = SynthConfig {
                classes,
                train: 8,
                test: 4,
                seed: 1,
            };
            write_synthetic(&data, &cfg, format).unwrap();
            format!(
                "name: ts\ndataset: {{ format: {format}, path: {} }}\nbackbones: [\"torchscript:{}\"]\npreset: micro\noptimizers: [adamw]\nepochs: 1\n",
                data.display(),
                module.display()
            )
        };
        for format in [
            DatasetFormat::Cifar(CifarFormat::Cifar100Bin),
            DatasetFormat::ImageFolder,
        ] {
            let e = parse(&src(4, format)).unwrap();
            assert_eq!(e.backbones, [format!("torchscript:{}", module.display())]);
            let err = error(&src(3, format));
            assert!(err.starts_with("exp.yaml:3:"), "{format}: {err}");
            assert!(err.contains("returned shape [2, 4]"), "{format}: {err}");
            assert!(err.contains("the dataset has 3 classes"), "{format}: {err}");
        }
    }

    /// `init` paths are the file's directory's, checked before any trial;
    /// `freeze` is checked against every backbone.
    #[test]
    fn init_weights_and_freeze_reach_the_trials_or_are_refused_first() {
        let dir = tempfile::tempdir().unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        Registries::builtin()
            .backbones
            .build("vit_tiny_cifar@micro", &vs.root(), 5, 0)
            .unwrap();
        std::fs::create_dir(dir.path().join("w")).unwrap();
        vs.save(dir.path().join("w/vit.safetensors")).unwrap();
        let head = "name: ft\ndataset: { format: cifar100-bin, path: . }\nbackbones: [vit_tiny_cifar, resnet18_cifar]\npreset: micro\noptimizers: [sgd_m]\nepochs: 1\n";
        let parse = |extra: &str| {
            Experiment::parse(
                &format!("{head}{extra}"),
                "ft.yaml",
                dir.path(),
                &Registries::builtin(),
            )
        };
        let e =
            parse("init: { vit_tiny_cifar: w/vit.safetensors }\nfreeze: [embedding]\n").unwrap();
        let params = [("lr".to_string(), 0.1)].into();
        let vit = e.trial_spec("vit_tiny_cifar@micro", "sgd_m", &params, 0, None);
        let want = std::path::absolute(dir.path().join("w/vit.safetensors")).unwrap();
        assert_eq!(vit.init_weights, Some(want));
        assert_eq!(vit.freeze, ["embedding"]);
        let resnet = e.trial_spec("resnet18_cifar@micro", "sgd_m", &params, 0, None);
        assert_eq!(resnet.init_weights, None);
        assert!(e.spec.training_settings().contains("freeze embedding"));

        let err = parse("init: { resnet18_cifar: w/vit.safetensors }\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ft.yaml:7:"), "{err}");
        assert!(
            err.contains("missing: conv1.weight")
                && err.contains("unexpected: patch_embed.proj.weight"),
            "{err}"
        );
        let err = parse("init: { deit_s: w/vit.safetensors }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not among `backbones`"), "{err}");
        let err = parse("freeze: [\"stages.0.*\"]\n").unwrap_err().to_string();
        assert!(
            err.contains("matches no parameter of `vit_tiny_cifar@micro`"),
            "{err}"
        );
    }
}

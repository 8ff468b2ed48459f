//! The training loop of one trial.

mod checkpoint;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bocb_search_spaces::Recipe;
use bocb_spec::{EpochMetrics, GradNorms, TrialObserver, TrialOutcome, TrialSpec, TrialStatus};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

pub use checkpoint::CheckpointError;
use checkpoint::Position;
use tch::nn;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use crate::augment::{AugmentError, RepeatAugSampler};
use crate::batches::on_device::{
    choose_batch_source, upload_bytes, DataOnDevice, DeviceSplit, DeviceTransform, NoDeviceVersion,
};
use crate::batches::stream::{for_each_file_batch, FullResTransform, StreamPlan};
use crate::batches::{
    batch_rng, batch_seed, default_workers, for_each_batch, for_each_batch_from, EpochPlan,
    ImageTransform, Normalizer, RawBatch,
};
use crate::data::stream::{FolderSplits, IMAGENET_MEAN, IMAGENET_STD};
use crate::data::{DataError, Dataset, LoadedData, Splits};
use crate::device::{device_name, ResolveDevice};
use crate::grad_norms::{self, GradGroups};
use crate::layer_decay::{self, LayerDecayError};
use crate::memory::PeakMemory;
use crate::models::{
    with_drop_path_rate, with_head_drop_rate, BackboneRegistry, Model, ModelError,
};
use crate::optim::{
    HessianNoise, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet, ScaledParams,
    StateReader,
};
use crate::precision::{resolve_precision, set_deterministic, Precision};
use crate::pretrained::{self, PretrainedError};
use crate::regime::{clip_grad_norm, Regime, WeightAverage};
use crate::schedule::WarmupCosine;

/// An epoch that takes longer than this makes checkpoints automatic (when
/// `checkpoint_every` is not set): losing one costs more than saving.
const LONG_EPOCH_S: f64 = 60.0;

#[derive(Debug, Error)]
pub enum TrialError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Optimizer(#[from] OptimError),
    #[error("{0}")]
    Device(String),
    #[error("the training split has {images} images, fewer than one batch of {batch_size}; lower `batch_size` or use more data")]
    TooLittleData { images: usize, batch_size: usize },
    #[error("the dataset has {dataset} classes but labels up to {label} were found")]
    BadLabels { dataset: usize, label: u16 },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Data(#[from] DataError),
    /// [`bocb_spec::cifar_form_at`]'s reason.
    #[error("{0}")]
    CifarFormAtFullResolution(String),
    #[error("saving the trained weights: {0}")]
    SaveWeights(String),
    #[error("recipe: {0}")]
    Augment(#[from] AugmentError),
    #[error("data_on_device is true, but {0}; set data_on_device to auto or false, or drop it with the recipe overrides {fix}", fix = .0.fix())]
    NoDeviceVersion(#[from] NoDeviceVersion),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Pretrained(#[from] PretrainedError),
    #[error(transparent)]
    LayerDecay(#[from] LayerDecayError),
    /// Stopped when asked ([`TrialObserver::checkpoint_requested`]) after
    /// `epochs_done` epochs and `batches_done` batches of the next.
    #[error("interrupted after {epochs_done} epoch(s) and {batches_done} batch(es) of the next ({})", if *.saved { "checkpoint saved" } else { "no checkpoint" })]
    Interrupted {
        epochs_done: u32,
        batches_done: usize,
        saved: bool,
    },
}

/// What a trial trains on: splits held in memory (CIFAR, small folders at
/// 32 pixels), or an image folder streamed from disk at full resolution.
#[derive(Clone, Copy)]
pub enum TrialData<'a> {
    Memory(&'a Splits),
    Stream(&'a FolderSplits),
}

impl<'a> From<&'a Splits> for TrialData<'a> {
    fn from(splits: &'a Splits) -> Self {
        TrialData::Memory(splits)
    }
}

impl<'a> From<&'a FolderSplits> for TrialData<'a> {
    fn from(folder: &'a FolderSplits) -> Self {
        TrialData::Stream(folder)
    }
}

impl<'a> From<&'a LoadedData> for TrialData<'a> {
    fn from(data: &'a LoadedData) -> Self {
        match data {
            LoadedData::Memory(splits) => TrialData::Memory(splits),
            LoadedData::Stream(folder) => TrialData::Stream(folder),
        }
    }
}

impl TrialData<'_> {
    /// Classes a model must output.
    pub fn classes(&self) -> usize {
        match self {
            TrialData::Memory(splits) => splits.train.classes,
            TrialData::Stream(folder) => folder.classes(),
        }
    }

    fn train_len(&self) -> usize {
        match self {
            TrialData::Memory(splits) => splits.train.len(),
            TrialData::Stream(folder) => folder.train.len(),
        }
    }
}

/// Trains `spec` on `data`, reporting each epoch to `observer`.
pub fn run_trial<'a>(
    spec: &TrialSpec,
    data: impl Into<TrialData<'a>>,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
    observer: &mut dyn TrialObserver,
) -> Result<TrialOutcome, TrialError> {
    let data = data.into();
    let started = Instant::now();
    let device = spec.device.resolve().map_err(TrialError::Device)?;
    // Trials in other threads of the same GPU overlap with this one.
    crate::device::use_own_stream(device).map_err(TrialError::Device)?;
    // Idle blocks of earlier trials would count towards this one's peak.
    crate::cpu_cache::empty();
    let peak_memory = PeakMemory::start(device);
    let train_len = data.train_len();
    if train_len < spec.batch_size {
        return Err(TrialError::TooLittleData {
            images: train_len,
            batch_size: spec.batch_size,
        });
    }
    if let TrialData::Memory(splits) = data {
        check_labels(&splits.train)?;
        check_labels(&splits.test)?;
    }

    if spec.deterministic {
        set_deterministic(true);
    }
    let classes = data.classes() as i64;
    let recipe = spec.recipe.as_ref();
    let (entry, preset) = backbones.lookup(&spec.backbone)?;
    let input_side = entry.input_size(preset);
    let side = match data {
        TrialData::Memory(_) => input_side,
        TrialData::Stream(folder) => {
            let side = folder.resolution.unwrap_or(input_side as usize);
            let known = |name: &str| backbones.lookup(name).is_ok();
            if let Some(reason) = bocb_spec::cifar_form_at(&spec.backbone, side as u32, known) {
                return Err(TrialError::CifarFormAtFullResolution(reason));
            }
            side as i64
        }
    };
    let mut learner = trial_learner(spec, classes, device, backbones, optimizers)?;

    let (mean, std) = match data {
        TrialData::Memory(splits) => splits.train.mean_std(),
        TrialData::Stream(_) => (IMAGENET_MEAN, IMAGENET_STD),
    };
    let normalizer =
        Normalizer::new(mean, std, side, device).with_channels_last(spec.channels_last);
    let (transform, regime) = match recipe {
        Some(r) => (
            ImageTransform::from_recipe(r, input_side, mean),
            Regime::from_recipe(r, classes),
        ),
        None => (ImageTransform::basic(), Regime::plain(classes)),
    };
    // A streamed folder's evaluation transform crops already.
    let test_crop_ratio = match data {
        TrialData::Memory(_) => recipe.map_or(1.0, |r| r.test_crop_ratio.0),
        TrialData::Stream(_) => 1.0,
    };
    let repeats = recipe.map_or(1, |r| r.repeated_augmentation.0 as usize);
    let sampler = RepeatAugSampler::new(train_len, repeats)?;
    let steps_per_epoch = sampler.epoch_len() / spec.batch_size;
    if steps_per_epoch == 0 {
        return Err(TrialError::TooLittleData {
            images: sampler.epoch_len(),
            batch_size: spec.batch_size,
        });
    }
    let workers = match spec.data_workers {
        0 => default_workers(),
        n => n,
    };
    let batches = match data {
        TrialData::Memory(splits) => {
            Batches::choose(spec.data_on_device, device, splits, transform, workers)?
        }
        TrialData::Stream(folder) => Batches::Stream {
            folder,
            train: FullResTransform::train(recipe, side as usize),
            test: FullResTransform::eval(recipe, side as usize),
            workers,
        },
    };
    let schedule = WarmupCosine {
        base_lr: spec.hparams["lr"],
        warmup_steps: spec.warmup_epochs as usize * steps_per_epoch,
        total_steps: spec.epochs as usize * steps_per_epoch,
    };
    let mut saver = Saver::new(spec);
    let mut resumed_loss = None;
    if let Some(dir) = &spec.checkpoint_dir {
        match checkpoint::load(dir, spec)? {
            Some(mut saved) => {
                learner
                    .restore(&saved.tensors, saved.position.step)
                    .map_err(|message| checkpoint::unusable(dir, message))?;
                tracing::info!(
                    dir = %dir.display(),
                    epochs_done = saved.position.epochs_done,
                    batches_done = saved.position.batches_done,
                    "resuming the trial from its checkpoint"
                );
                resumed_loss = saved.tensors.remove(LOSS_SUM);
                saver.position = saved.position;
            }
            None => tracing::debug!(dir = %dir.display(), "no checkpoint: the trial starts"),
        }
    }
    observer.on_start(saver.position.epochs_done);
    let wall_before = saver.position.wall_s;
    let finish = |status, final_accuracy, ema_accuracy, learner: &Learner, note| {
        if let Some(dir) = &spec.checkpoint_dir {
            checkpoint::remove(dir);
        }
        TrialOutcome {
            status,
            final_accuracy,
            wall_s: wall_before + started.elapsed().as_secs_f64(),
            device: device_name(device),
            optimizer_state_bytes: learner.optimizer.state_bytes(),
            note,
            ema_accuracy,
            precision: learner.precision.name().into(),
            peak_memory_bytes: peak_memory.read(device),
            classes: Some(classes as u32),
            grad_norms: learner.grads.as_ref().map(|(record, _)| record.clone()),
        }
    };

    let mut step = saver.position.step;
    let mut final_accuracy = None;
    let mut ema_accuracy = None;
    for epoch in saver.position.epochs_done + 1..=spec.epochs {
        let epoch_start = Instant::now();
        let epoch_seed = spec.seed ^ (u64::from(epoch) << 32);
        let mut order_rng = StdRng::seed_from_u64(epoch_seed);
        let order = if repeats > 1 {
            sampler.epoch(&mut order_rng)
        } else {
            let mut order: Vec<usize> = (0..train_len).collect();
            order.shuffle(&mut order_rng);
            order
        };
        // A resumed epoch continues where its checkpoint stands.
        let first = std::mem::take(&mut saver.position.batches_done);
        let mut loss_sum = match resumed_loss.take() {
            Some(sum) if first > 0 => sum.to_device(device),
            _ => Tensor::zeros([], (Kind::Float, device)),
        };
        let mut batch_index = first;
        let mut lr = schedule.lr(step);
        let stopped = batches.train_epoch(spec.batch_size, order, epoch_seed, first, |batch| {
            // Erasing and mixing, then dropout, stochastic depth and Hessian
            // noise draw from streams of this batch's own, so a resumed
            // epoch draws what an unbroken one does.
            let mut batch_rng = batch_rng(epoch_seed.rotate_left(17) ^ 0x5EED, batch_index);
            crate::seeding::start_stream(batch_seed(epoch_seed ^ 0xD2A3, batch_index));
            let images = normalizer.apply(&batch.images);
            let labels = batch.labels.to_device(device);
            let (images, targets) = regime.prepare(images, labels, &mut batch_rng)?;
            lr = schedule.lr(step);
            let last_of_epoch = batch_index + 1 == steps_per_epoch;
            if last_of_epoch || (step as u64) < grad_norms::FIRST_STEPS {
                learner.record_grads = Some((step as u64, epoch, last_of_epoch));
            }
            let loss = learner.step_with(&images, lr, |logits| regime.loss(logits, &targets))?;
            loss_sum += loss;
            step += 1;
            batch_index += 1;
            observer.on_batch(epoch, batch_index, steps_per_epoch);
            // Reading the loss syncs the device, so look only now and then.
            if batch_index.is_multiple_of(16) && !f64::try_from(&loss_sum)?.is_finite() {
                return Err(EpochStop::Diverged);
            }
            // After the last batch the epoch ends first, then stops.
            if batch_index < steps_per_epoch && observer.checkpoint_requested() {
                return Err(EpochStop::Requested);
            }
            Ok(())
        });
        match stopped {
            Err(EpochStop::Torch(e)) => return Err(e.into()),
            Err(EpochStop::Augment(e)) => return Err(e.into()),
            Err(EpochStop::Data(e)) => return Err(e.into()),
            Err(EpochStop::Requested) => {
                let at = saver.at(epoch - 1, batch_index, step, wall_before, started);
                return Err(saver.interrupt(at, &learner, Some(&loss_sum), observer));
            }
            _ => {}
        }
        let train_loss = f64::try_from(&loss_sum)? / batch_index.max(1) as f64;
        if stopped.is_err() || !train_loss.is_finite() {
            let note = format!("training loss became {train_loss} in epoch {epoch}");
            return Ok(finish(
                TrialStatus::Diverged,
                None,
                None,
                &learner,
                Some(note),
            ));
        }
        let train_s = epoch_start.elapsed().as_secs_f64();
        let eval = |model: &Model| {
            evaluate(
                model,
                &batches,
                &normalizer,
                spec.batch_size,
                test_crop_ratio,
                learner.precision,
            )
        };
        let (test_loss, test_accuracy) = eval(&learner.model)?;
        final_accuracy = Some(test_accuracy);
        if let Some((_, model, _)) = &learner.average {
            ema_accuracy = Some(eval(model)?.1);
        }
        let report = EpochMetrics {
            epoch,
            train_loss,
            test_loss,
            test_accuracy,
            lr,
            images_per_sec: ((batch_index - first) * spec.batch_size) as f64 / train_s,
            wall_s: epoch_start.elapsed().as_secs_f64(),
            ema_test_accuracy: ema_accuracy,
        };
        observer.on_epoch(&report);
        if epoch < spec.epochs && observer.stop_after_epoch(&report) {
            let note = format!("stopped early after epoch {epoch}");
            return Ok(finish(
                TrialStatus::Stopped,
                final_accuracy,
                ema_accuracy,
                &learner,
                Some(note),
            ));
        }
        if epoch < spec.epochs {
            saver.position.long_epochs |= report.wall_s > LONG_EPOCH_S;
            let at = saver.at(epoch, 0, step, wall_before, started);
            if observer.checkpoint_requested() {
                return Err(saver.interrupt(at, &learner, None, observer));
            }
            if saver.due(epoch) {
                saver.save(&at, &learner, None, observer);
            }
        }
    }
    if let Some(path) = &spec.save_weights {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                TrialError::SaveWeights(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        learner.vs.save(path)?;
        // Measured now, so every report reads them without libtorch.
        crate::patterns::keep_patterns(&learner.vs, path).map_err(TrialError::SaveWeights)?;
    }
    Ok(finish(
        TrialStatus::Done,
        final_accuracy,
        ema_accuracy,
        &learner,
        None,
    ))
}

/// The tensor of a checkpoint taken within an epoch: the epoch's loss so far.
const LOSS_SUM: &str = "epoch/loss_sum";

/// When and where a trial saves its checkpoint, and where it stands.
struct Saver<'a> {
    /// `None`: no checkpoints (none asked for, or the optimizer cannot).
    dir: Option<&'a Path>,
    every: Option<u32>,
    position: Position,
}

impl<'a> Saver<'a> {
    fn new(spec: &'a TrialSpec) -> Self {
        Saver {
            dir: spec.checkpoint_dir.as_deref(),
            every: spec.checkpoint_every,
            position: Position::start(spec),
        }
    }

    /// The position after `epochs_done` epochs and `batches_done` batches of the next.
    fn at(
        &self,
        epochs_done: u32,
        batches_done: usize,
        step: usize,
        wall_before: f64,
        started: Instant,
    ) -> Position {
        let wall_s = wall_before + started.elapsed().as_secs_f64();
        self.position
            .moved_to(epochs_done, batches_done, step, wall_s)
    }

    /// Whether a checkpoint is due after `epoch` (`checkpoint_every`).
    fn due(&self, epoch: u32) -> bool {
        self.dir.is_some()
            && match self.every {
                Some(0) => false,
                Some(n) => epoch.is_multiple_of(n),
                None => self.position.long_epochs,
            }
    }

    /// Saves `learner` at `at`, telling `observer`; whether it did. A
    /// checkpoint that cannot be written costs only the work since the last
    /// one, so training goes on.
    fn save(
        &mut self,
        at: &Position,
        learner: &Learner,
        loss_sum: Option<&Tensor>,
        observer: &mut dyn TrialObserver,
    ) -> bool {
        let Some(dir) = self.dir else {
            return false;
        };
        if !observer.may_checkpoint() {
            return false;
        }
        let mut tensors = match learner.checkpoint_tensors() {
            Ok(tensors) => tensors,
            Err(e) => {
                tracing::warn!("no checkpoints for this trial: {e}");
                self.dir = None;
                return false;
            }
        };
        if let Some(sum) = loss_sum {
            tensors.push((LOSS_SUM.into(), sum.detach()));
        }
        match checkpoint::save(dir, at, &tensors) {
            Ok(()) => {
                self.position = at.clone();
                observer.on_checkpoint(dir);
                true
            }
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }

    /// Saves at `at` and says the trial stopped there.
    fn interrupt(
        &mut self,
        at: Position,
        learner: &Learner,
        loss_sum: Option<&Tensor>,
        observer: &mut dyn TrialObserver,
    ) -> TrialError {
        let saved = self.save(&at, learner, loss_sum, observer);
        TrialError::Interrupted {
            epochs_done: at.epochs_done,
            batches_done: at.batches_done,
            saved,
        }
    }
}

/// The learner `spec` trains on `device`: its backbone and optimizer with
/// the recipe's regularisation rates, precision, gradient clipping and
/// moving average.
pub(crate) fn trial_learner(
    spec: &TrialSpec,
    classes: i64,
    device: Device,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
) -> Result<Learner, TrialError> {
    let recipe = spec.recipe.as_ref();
    let start = Start {
        init_weights: spec.init_weights.as_deref(),
        freeze: &spec.freeze,
        layer_decay: recipe.and_then(|r| r.layer_decay).map(|d| d.0),
    };
    let build = || {
        Learner::starting(
            backbones,
            &spec.backbone,
            optimizers,
            &spec.optimizer,
            &spec.hparams,
            classes,
            device,
            spec.decay_norm_and_bias,
            spec.seed,
            &start,
        )
    };
    let mut learner = match recipe {
        Some(r) => with_recipe_rates(r, build)?,
        None => build()?,
    };
    learner.precision = resolve_precision(spec.precision, device, recipe.is_none_or(|r| r.bf16));
    if let Some(recipe) = recipe {
        learner.clip_grad_norm = Some(recipe.grad_clip_norm.0).filter(|&n| n > 0.0);
        if let Some(decay) = recipe.ema_decay {
            learner.keep_average(backbones, &spec.backbone, classes, decay.0)?;
        }
    }
    // A backbone that cannot be grouped (a user's module built only for
    // its own class count) trains without the diagnostic.
    match GradGroups::new(backbones, &spec.backbone, &learner.vs, classes) {
        Ok(groups) => learner.grads = Some((groups.record(), groups)),
        Err(e) => tracing::debug!("no gradient norms for {}: {e}", spec.backbone),
    }
    Ok(learner)
}

/// Runs `build` (which builds models) with `recipe`'s regularisation
/// rates in place of the architectures' own: its stochastic depth, and its
/// dropout before the classifier when it gives one (`None` keeps each
/// architecture's own).
pub fn with_recipe_rates<T>(recipe: &Recipe, build: impl FnOnce() -> T) -> T {
    with_drop_path_rate(recipe.drop_path.0, || match recipe.dropout {
        Some(rate) => with_head_drop_rate(rate.0, build),
        None => build(),
    })
}

/// Where a learner's weights start: a file instead of the random
/// initialisation, and the parameters that stay as they start; and the
/// recipe's layer-wise lr decay over the rest.
#[derive(Default)]
pub struct Start<'a> {
    pub init_weights: Option<&'a Path>,
    pub freeze: &'a [String],
    pub layer_decay: Option<f64>,
}

/// A model and its optimizer, stepped one batch at a time: the body of
/// [`run_trial`]'s loop, which `bocb bench train` also times on its own.
pub struct Learner {
    /// Holds the model's variables.
    pub vs: nn::VarStore,
    pub model: Model,
    pub optimizer: Box<dyn Optimizer>,
    trainable: Vec<Tensor>,
    /// In ParamSet order, for optimizers that take a Hessian estimate.
    ordered: Vec<Tensor>,
    steps: usize,
    /// Clip the gradients' global L2 norm to this before each update.
    pub clip_grad_norm: Option<f64>,
    /// The arithmetic of forward passes (fp32 unless set).
    pub precision: Precision,
    /// The weights' moving average: its var store, model and updater.
    average: Option<(nn::VarStore, Model, WeightAverage)>,
    /// Gradient norms per layer group: what was recorded, and the groups.
    grads: Option<(GradNorms, GradGroups)>,
    /// Record the next step's gradient norms as (step, epoch, whether it
    /// is the epoch's last step).
    record_grads: Option<(u64, u32, bool)>,
}

impl Learner {
    /// Builds `backbone` for `classes` outputs on `device`, its weights drawn
    /// from `seed`, and `optimizer` over its parameters (biases, norms and the
    /// model's exemptions without weight decay unless `decay_norm_and_bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backbones: &BackboneRegistry,
        backbone: &str,
        optimizers: &OptimizerRegistry,
        optimizer: &str,
        hparams: &Hparams,
        classes: i64,
        device: Device,
        decay_norm_and_bias: bool,
        seed: u64,
    ) -> Result<Self, TrialError> {
        Self::starting(
            backbones,
            backbone,
            optimizers,
            optimizer,
            hparams,
            classes,
            device,
            decay_norm_and_bias,
            seed,
            &Start::default(),
        )
    }

    /// As [`Learner::new`], its weights started as `start` says: loaded
    /// from a file, some frozen (not handed to the optimizer at all).
    #[allow(clippy::too_many_arguments)]
    pub fn starting(
        backbones: &BackboneRegistry,
        backbone: &str,
        optimizers: &OptimizerRegistry,
        optimizer: &str,
        hparams: &Hparams,
        classes: i64,
        device: Device,
        decay_norm_and_bias: bool,
        seed: u64,
        start: &Start,
    ) -> Result<Self, TrialError> {
        crate::cpu_cache::install();
        let vs = nn::VarStore::new(device);
        let model = backbones.build(backbone, &vs.root(), classes, seed)?;
        if let Some(path) = start.init_weights {
            let weights = pretrained::read(path)?;
            let loaded = pretrained::load(backbones, backbone, classes, &vs, &weights, path)?;
            tracing::debug!(
                path = %path.display(),
                fresh = ?loaded.fresh,
                resampled = ?loaded.resampled,
                "started from pretrained weights"
            );
        }
        if !start.freeze.is_empty() {
            let frozen = pretrained::frozen(backbones, backbone, &vs, start.freeze)?;
            pretrained::freeze(&vs, &frozen);
        }
        let lr_scales = lr_scales(backbones, backbone, &vs, start.layer_decay)?;
        let params = param_set(&vs, &model, decay_norm_and_bias, &lr_scales);
        let ordered = params.tensors().map(Tensor::shallow_clone).collect();
        let optimizer = optimizers.build(optimizer, hparams, params)?;
        let trainable = vs
            .trainable_variables()
            .into_iter()
            .filter(Tensor::requires_grad)
            .collect();
        Ok(Learner {
            trainable,
            vs,
            model,
            optimizer,
            ordered,
            steps: 0,
            clip_grad_norm: None,
            precision: Precision::Fp32,
            average: None,
            grads: None,
            record_grads: None,
        })
    }

    /// Keeps a moving average of the weights with `decay` (timm's model
    /// EMA), in a second copy of `backbone` that evaluation can run.
    pub fn keep_average(
        &mut self,
        backbones: &BackboneRegistry,
        backbone: &str,
        classes: i64,
        decay: f64,
    ) -> Result<(), TrialError> {
        let mut vs = nn::VarStore::new(self.vs.device());
        // Its weights start as copies of the model's: any seed does.
        let model = backbones.build(backbone, &vs.root(), classes, 0)?;
        vs.freeze();
        let average = WeightAverage::track(&self.vs, &mut vs, decay);
        self.average = Some((vs, model, average));
        Ok(())
    }

    /// Its weights, moving average and optimizer state, by name, for a
    /// checkpoint.
    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>, OptimError> {
        let variables = |vs: &nn::VarStore, prefix: &str| {
            vs.variables()
                .into_iter()
                .map(|(name, t)| (format!("{prefix}/{name}"), t.detach()))
                .collect::<Vec<_>>()
        };
        let mut tensors = variables(&self.vs, "model");
        if let Some((vs, _, _)) = &self.average {
            tensors.extend(variables(vs, "ema"));
        }
        let optimizer = self.optimizer.export_state()?;
        tensors.extend(
            optimizer
                .into_iter()
                .map(|(name, t)| (format!("optimizer/{name}"), t)),
        );
        Ok(tensors)
    }

    /// Restores what [`checkpoint_tensors`](Self::checkpoint_tensors) saved,
    /// `steps` steps into training; the error says what does not fit.
    fn restore(&mut self, tensors: &BTreeMap<String, Tensor>, steps: usize) -> Result<(), String> {
        let restore = |vs: &nn::VarStore, prefix: &str| -> Result<(), String> {
            for (name, mut variable) in vs.variables() {
                let key = format!("{prefix}/{name}");
                let saved = tensors
                    .get(&key)
                    .ok_or_else(|| format!("`{key}` is missing"))?;
                if saved.size() != variable.size() {
                    return Err(format!(
                        "`{key}` has shape {:?}, the model's {:?}",
                        saved.size(),
                        variable.size()
                    ));
                }
                tch::no_grad(|| variable.f_copy_(saved)).map_err(|e| format!("`{key}`: {e}"))?;
            }
            Ok(())
        };
        restore(&self.vs, "model")?;
        if let Some((vs, _, _)) = &self.average {
            restore(vs, "ema")?;
        }
        let optimizer: BTreeMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(name, t)| {
                let name = name.strip_prefix("optimizer/")?;
                Some((name.to_string(), t.shallow_clone()))
            })
            .collect();
        self.optimizer
            .import_state(&StateReader::new(&optimizer, self.vs.device()))
            .map_err(|e| e.to_string())?;
        self.steps = steps;
        Ok(())
    }

    /// One training step at `lr`: forward in train mode, cross-entropy,
    /// backward (with a Hessian estimate when the optimizer asks for one)
    /// and the optimizer's update. Returns the detached loss, unsynced.
    pub fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        lr: f64,
    ) -> Result<Tensor, tch::TchError> {
        self.step_with(images, lr, |logits| logits.cross_entropy_for_logits(labels))
    }

    /// One training step at `lr` with the loss `loss` makes of the logits;
    /// then gradient clipping and the moving average, when kept.
    pub fn step_with(
        &mut self,
        images: &Tensor,
        lr: f64,
        loss: impl FnOnce(&Tensor) -> Tensor,
    ) -> Result<Tensor, tch::TchError> {
        let (net, device) = (&self.model.net, self.vs.device());
        let loss = self
            .precision
            .run(device, || loss(&net.forward_t(images, true)));
        self.trainable.iter_mut().for_each(Tensor::zero_grad);
        match self.optimizer.hessian_interval() {
            Some(k) if self.steps.is_multiple_of(k) => {
                let noise = self.optimizer.hessian_noise();
                let estimate = backward_with_hessian(&loss, &self.ordered, noise)?;
                self.optimizer.set_hessian(&estimate);
            }
            _ => loss.f_backward()?,
        }
        // Before clipping: the paper's norms are the raw gradients'.
        if let (Some((step, epoch, last)), Some((record, groups))) =
            (self.record_grads.take(), &mut self.grads)
        {
            grad_norms::keep(record, step, epoch, last, groups.norms()?);
        }
        if let Some(max_norm) = self.clip_grad_norm {
            let _ = clip_grad_norm(&self.trainable, max_norm);
        }
        // A user's module may fail where bocb's own cannot: the trial fails.
        self.optimizer
            .try_step(lr)
            .map_err(|e| tch::TchError::Torch(e.to_string()))?;
        self.steps += 1;
        if let Some((_, _, average)) = &mut self.average {
            average.update();
        }
        Ok(loss.detach())
    }
}

/// Hutchinson estimate of the Hessian diagonal, as pytorch_optimizer's
/// `compute_hutchinson_hessian`: the mean over `samples` noise vectors `z`
/// (Gaussian or Rademacher) of `z * Hz`, with `Hz` the gradient of `<g, z>`.
fn backward_with_hessian(
    loss: &Tensor,
    params: &[Tensor],
    (samples, noise): (usize, HessianNoise),
) -> Result<Vec<Tensor>, tch::TchError> {
    let grads = Tensor::f_run_backward(&[loss], params, true, true)?;
    let mut estimate: Vec<Tensor> = params.iter().map(Tensor::zeros_like).collect();
    for i in 0..samples {
        let zs: Vec<Tensor> = params
            .iter()
            .map(|p| {
                crate::seeding::draw(|| match noise {
                    HessianNoise::Gaussian => p.randn_like(),
                    HessianNoise::Rademacher => p.randint_like(2) * 2.0 - 1.0,
                })
            })
            .collect();
        let dot = grads
            .iter()
            .zip(&zs)
            .map(|(g, z)| (g * z).sum(g.kind()))
            .reduce(|a, b| a + b)
            .expect("at least one parameter");
        let hzs = Tensor::f_run_backward(&[dot], params, i + 1 < samples, false)?;
        tch::no_grad(|| {
            for ((h, hz), z) in estimate.iter_mut().zip(&hzs).zip(&zs) {
                // A parameter the gradient does not depend on has Hz = 0.
                if hz.defined() {
                    let _ = h.addcmul_(&(hz / samples as f64), z);
                }
            }
        });
    }
    // d/dp <p, g> = g: the ordinary gradients, into the zeroed `.grad`s.
    params
        .iter()
        .zip(&grads)
        .map(|(p, g)| (p * g.detach()).sum(g.kind()))
        .reduce(|a, b| a + b)
        .expect("at least one parameter")
        .f_backward()?;
    Ok(estimate)
}

/// Where a trial's batches are made (`data_on_device`): on CPU worker
/// threads from the splits in memory, or by tensor ops on the trial's
/// device from splits uploaded there. Both give the same batches.
enum Batches<'a> {
    Host {
        data: &'a Splits,
        transform: ImageTransform,
        workers: usize,
    },
    Device {
        train: DeviceSplit,
        test: DeviceSplit,
        transform: DeviceTransform,
    },
    /// Read from disk batch by batch at full resolution.
    Stream {
        folder: &'a FolderSplits,
        train: FullResTransform,
        test: FullResTransform,
        workers: usize,
    },
}

impl<'a> Batches<'a> {
    fn choose(
        setting: DataOnDevice,
        device: Device,
        data: &'a Splits,
        transform: ImageTransform,
        workers: usize,
    ) -> Result<Self, NoDeviceVersion> {
        Ok(
            match choose_batch_source(setting, device, &transform, upload_bytes(data))? {
                Some(transform) => {
                    tracing::debug!(
                        device = %device_name(device),
                        setting = setting.name(),
                        "batches made on the device"
                    );
                    Batches::Device {
                        train: DeviceSplit::upload(&data.train, device),
                        test: DeviceSplit::upload(&data.test, device),
                        transform,
                    }
                }
                None => Batches::Host {
                    data,
                    transform,
                    workers,
                },
            },
        )
    }

    /// One training epoch over `order` from batch `first` on, augmented
    /// with `seed`'s draws.
    fn train_epoch<E: From<DataError>>(
        &self,
        batch_size: usize,
        order: Vec<usize>,
        seed: u64,
        first: usize,
        consume: impl FnMut(RawBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Batches::Host {
                data,
                transform,
                workers,
            } => {
                let plan = EpochPlan {
                    order,
                    seed,
                    transform,
                };
                for_each_batch_from(
                    &data.train,
                    batch_size,
                    Some(plan),
                    first,
                    *workers,
                    consume,
                )
            }
            Batches::Device {
                train, transform, ..
            } => {
                let plan = EpochPlan {
                    order,
                    seed,
                    transform,
                };
                train.for_each_batch_from(batch_size, Some(plan), first, consume)
            }
            Batches::Stream {
                folder,
                train,
                workers,
                ..
            } => {
                let plan = StreamPlan {
                    order,
                    seed,
                    transform: train,
                    drop_last: true,
                };
                for_each_file_batch(
                    &folder.train,
                    batch_size,
                    plan,
                    first,
                    *workers,
                    folder.bad_files,
                    consume,
                )
            }
        }
    }

    /// The test split in order, unchanged.
    fn test<E: From<DataError>>(
        &self,
        batch_size: usize,
        consume: impl FnMut(RawBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Batches::Host { data, .. } => for_each_batch(&data.test, batch_size, None, 1, consume),
            Batches::Device { test, .. } => test.for_each_batch(batch_size, None, consume),
            Batches::Stream {
                folder,
                test,
                workers,
                ..
            } => {
                let plan = StreamPlan {
                    order: (0..folder.test.len()).collect(),
                    seed: 0,
                    transform: test,
                    drop_last: false,
                };
                for_each_file_batch(
                    &folder.test,
                    batch_size,
                    plan,
                    0,
                    *workers,
                    folder.bad_files,
                    consume,
                )
            }
        }
    }
}

/// Why an epoch's batch loop stopped early.
enum EpochStop {
    Diverged,
    /// The observer asked for a checkpoint.
    Requested,
    Torch(tch::TchError),
    Augment(AugmentError),
    Data(DataError),
}

impl From<DataError> for EpochStop {
    fn from(e: DataError) -> Self {
        EpochStop::Data(e)
    }
}

impl From<AugmentError> for EpochStop {
    fn from(e: AugmentError) -> Self {
        EpochStop::Augment(e)
    }
}

impl From<tch::TchError> for EpochStop {
    fn from(e: tch::TchError) -> Self {
        EpochStop::Torch(e)
    }
}

fn check_labels(split: &Dataset) -> Result<(), TrialError> {
    match split.labels.iter().max() {
        Some(&label) if usize::from(label) >= split.classes => Err(TrialError::BadLabels {
            dataset: split.classes,
            label,
        }),
        _ => Ok(()),
    }
}

/// Splits trainable variables as timm's `param_groups_weight_decay`: no decay
/// for 1-d tensors (biases, norm scales) and the model's own exemptions.
/// Each variable's lr scale under `layer_decay` (none without it).
fn lr_scales(
    backbones: &BackboneRegistry,
    backbone: &str,
    vs: &nn::VarStore,
    layer_decay: Option<f64>,
) -> Result<BTreeMap<String, f64>, LayerDecayError> {
    let Some(decay) = layer_decay else {
        return Ok(BTreeMap::new());
    };
    let rule = backbones
        .layer_rule(backbone)
        .ok_or_else(|| LayerDecayError::NoLayers {
            backbone: backbone.to_string(),
            known: backbones.names_with_layer_rules().join(", "),
        })?;
    let variables = vs.variables();
    let (ids, layers) = rule.layer_ids(variables.keys().map(String::as_str));
    Ok(layer_decay::lr_scales(&ids, layers, decay))
}

fn param_set(
    vs: &nn::VarStore,
    model: &Model,
    decay_all: bool,
    lr_scales: &BTreeMap<String, f64>,
) -> ParamSet {
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut params = ParamSet::default();
    // Layers below the full lr, lowest scale first (a positive f64's bits
    // order as its value).
    let mut lower: BTreeMap<u64, ScaledParams> = BTreeMap::new();
    for (name, tensor) in variables {
        if !tensor.requires_grad() {
            continue;
        }
        let exempt = !decay_all
            && (tensor.dim() <= 1
                || model
                    .no_weight_decay
                    .iter()
                    .any(|suffix| name.ends_with(suffix)));
        let (decay, no_decay) = match lr_scales.get(&name) {
            Some(&lr_scale) if lr_scale != 1.0 => {
                let layer = lower.entry(lr_scale.to_bits()).or_insert(ScaledParams {
                    lr_scale,
                    decay: Vec::new(),
                    no_decay: Vec::new(),
                });
                (&mut layer.decay, &mut layer.no_decay)
            }
            _ => (&mut params.decay, &mut params.no_decay),
        };
        if exempt {
            no_decay.push(tensor);
        } else {
            decay.push(tensor);
        }
    }
    params.lower_layers = lower.into_values().collect();
    params
}

/// Mean cross-entropy and top-1 accuracy (percent) over the test split, on
/// the centred `crop_ratio` of each image.
fn evaluate(
    model: &Model,
    batches: &Batches,
    normalizer: &Normalizer,
    batch_size: usize,
    crop_ratio: f64,
    precision: Precision,
) -> Result<(f64, f64), TrialError> {
    let device = normalizer.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    // Counted as seen: a streamed split may skip undecodable files.
    let mut images = 0;
    tch::no_grad(|| {
        batches.test(batch_size * 2, |batch| {
            images += batch.labels.size()[0] as usize;
            let labels = batch.labels.to_device(device);
            let images = normalizer.apply_test(&batch.images, crop_ratio);
            let logits = precision
                .run(device, || model.net.forward_t(&images, false))
                .to_kind(Kind::Float);
            loss_sum += logits
                .cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Sum, -100, 0.0)
                .to_kind(Kind::Double);
            correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64);
            Ok::<(), TrialError>(())
        })
    })?;
    let n = images.max(1) as f64;
    Ok((
        f64::try_from(&loss_sum)? / n,
        100.0 * i64::try_from(&correct)? as f64 / n,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, SynthConfig};
    use crate::layer_decay::LayerRule;
    use crate::optim::Optimizer;
    use crate::{DeviceChoice, PrecisionChoice};
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Collect(Vec<EpochMetrics>);

    impl TrialObserver for Collect {
        fn on_epoch(&mut self, report: &EpochMetrics) {
            self.0.push(*report);
        }
    }

    fn data(train: usize) -> Splits {
        generate(&SynthConfig {
            classes: 4,
            train,
            test: 64,
            seed: 5,
        })
        .unwrap()
    }

    fn spec(optimizer: &str, lr: f64, epochs: u32) -> TrialSpec {
        TrialSpec {
            backbone: "resnet18_cifar@micro".into(),
            optimizer: optimizer.into(),
            hparams: [("lr".to_string(), lr), ("weight_decay".to_string(), 5e-4)].into(),
            seed: 3,
            epochs,
            batch_size: 32,
            warmup_epochs: 1,
            decay_norm_and_bias: false,
            device: DeviceChoice::Cpu,
            save_weights: None,
            recipe: None,
            data_workers: 2,
            precision: Default::default(),
            deterministic: false,
            channels_last: false,
            data_on_device: DataOnDevice::Off,
            checkpoint_dir: None,
            checkpoint_every: None,
            init_weights: None,
            freeze: Vec::new(),
        }
    }

    fn run(
        spec: &TrialSpec,
        data: &Splits,
    ) -> (Result<TrialOutcome, TrialError>, Vec<EpochMetrics>) {
        let mut observer = Collect(Vec::new());
        let outcome = run_trial(
            spec,
            data,
            &BackboneRegistry::builtin(),
            &OptimizerRegistry::builtin(),
            &mut observer,
        );
        (outcome, observer.0)
    }

    /// Stops every trial after its first epoch.
    struct StopAfterOne(Vec<EpochMetrics>);

    impl TrialObserver for StopAfterOne {
        fn on_epoch(&mut self, report: &EpochMetrics) {
            self.0.push(*report);
        }
        fn stop_after_epoch(&mut self, report: &EpochMetrics) -> bool {
            report.epoch == 1
        }
    }

    /// The paper's diagnostic: per-group gradient norms on the first steps
    /// and each epoch's last; a freshly initialised CNN and ViT are not
    /// flagged, the same records with the embedding's norms 100x are.
    #[test]
    fn a_trial_records_gradient_norms_per_layer_group() {
        let data = data(192);
        for backbone in ["resnet18_cifar@micro", "vit_tiny_cifar@micro"] {
            let mut spec = spec("sgd_m", 0.05, 2);
            spec.backbone = backbone.into();
            let outcome = run(&spec, &data).0.unwrap();
            let norms = outcome.grad_norms.expect("recorded");
            assert_eq!(norms.groups.first().map(String::as_str), Some("embedding"));
            assert_eq!(norms.groups.last().map(String::as_str), Some("head"));
            assert!(norms.groups.len() >= 4, "{:?}", norms.groups);
            // 192 images in batches of 32: 6 steps an epoch, 12 in all.
            let steps: Vec<u64> = norms.steps.iter().map(|r| r.step).collect();
            assert_eq!(steps, (0..10).collect::<Vec<_>>());
            let epochs: Vec<(u64, u32)> = norms.epochs.iter().map(|r| (r.step, r.epoch)).collect();
            assert_eq!(epochs, [(5, 1), (11, 2)]);
            for row in norms.steps.iter().chain(&norms.epochs) {
                assert_eq!(row.norms.len(), norms.groups.len());
                assert!(
                    row.norms.iter().all(|n| n.is_finite() && *n > 0.0),
                    "{row:?}"
                );
            }
            let ratio = norms.embedding_ratio().unwrap();
            eprintln!(
                "{backbone}: embedding ratio {ratio:.3} over {:?}",
                norms.groups
            );
            assert!(
                ratio < bocb_spec::LARGE_EMBEDDING_RATIO,
                "{backbone}: {ratio}"
            );
            let mut scaled = norms.clone();
            for row in &mut scaled.steps {
                row.norms[0] *= 100.0;
            }
            let scaled = scaled.embedding_ratio().unwrap();
            assert!((scaled / ratio - 100.0).abs() < 1e-6);
            assert!(scaled > bocb_spec::LARGE_EMBEDDING_RATIO);
        }
        // A frozen embedding has no gradient: no ratio.
        let mut spec = spec("sgd_m", 0.05, 1);
        spec.freeze = vec!["embedding".into()];
        let norms = run(&spec, &data).0.unwrap().grad_norms.unwrap();
        assert!(!norms.groups.iter().any(|g| g == "embedding"));
        assert_eq!(norms.embedding_ratio(), None);
    }

    #[test]
    fn a_done_trial_saves_its_weights_when_asked() {
        let data = data(128);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w").join("trial.safetensors");
        let mut spec = spec("sgd_m", 0.1, 1);
        spec.save_weights = Some(path.clone());
        let (outcome, _) = run(&spec, &data);
        assert_eq!(outcome.unwrap().status, TrialStatus::Done);
        let saved = Tensor::read_safetensors(&path).unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        BackboneRegistry::builtin()
            .build(&spec.backbone, &vs.root(), 4, 0)
            .unwrap();
        let mut names: Vec<String> = saved.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        let mut want: Vec<String> = vs.variables().into_keys().collect();
        want.sort();
        assert_eq!(names, want);
        // Its layer patterns beside it, as the analyses compute them.
        let kept: Vec<crate::patterns::LayerPattern> =
            serde_json::from_slice(&std::fs::read(crate::patterns::patterns_path(&path)).unwrap())
                .unwrap();
        let measured = crate::patterns::file_patterns(&path).unwrap();
        assert_eq!(kept.len(), want.len());
        for (kept, measured) in kept.iter().zip(&measured) {
            assert_eq!(
                (&kept.name, &kept.shape, kept.alpha.is_some()),
                (&measured.name, &measured.shape, measured.alpha.is_some())
            );
            // JSON keeps each value to within a unit of its last digit.
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
            assert!(close(kept.l2_norm, measured.l2_norm), "{}", kept.name);
            assert!(close(kept.entropy, measured.entropy), "{}", kept.name);
        }
    }

    /// A ViT started from saved weights with its patch embedding frozen:
    /// those tensors end bit-identical to the file, everything else
    /// trains, and AdamW keeps no state for them (its two fp32 moments).
    #[test]
    fn a_frozen_embedding_stays_as_loaded_and_carries_no_optimizer_state() {
        let data = data(128);
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init.safetensors");
        let vs = nn::VarStore::new(tch::Device::Cpu);
        BackboneRegistry::builtin()
            .build("vit_tiny_cifar@micro", &vs.root(), 4, 11)
            .unwrap();
        vs.save(&init).unwrap();
        let run_from = |freeze: &[&str], out: &str| {
            let mut spec = spec("adamw", 1e-3, 1);
            spec.backbone = "vit_tiny_cifar@micro".into();
            spec.init_weights = Some(init.clone());
            spec.freeze = freeze.iter().map(|s| s.to_string()).collect();
            spec.save_weights = Some(dir.path().join(out));
            let (outcome, _) = run(&spec, &data);
            let outcome = outcome.unwrap();
            assert_eq!(outcome.status, TrialStatus::Done);
            let trained: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.path().join(out))
                .unwrap()
                .into_iter()
                .collect();
            (outcome.optimizer_state_bytes, trained)
        };
        let (frozen_bytes, frozen) = run_from(&["embedding"], "frozen.safetensors");
        let (all_bytes, all) = run_from(&[], "all.safetensors");
        let start: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut embedding_numel = 0;
        for (name, loaded) in &start {
            if name.starts_with("patch_embed.") {
                assert!(frozen[name].equal(loaded), "{name} moved while frozen");
                assert!(!all[name].equal(loaded), "{name} did not train unfrozen");
                embedding_numel += loaded.numel();
            } else {
                assert!(!frozen[name].equal(loaded), "{name} did not train");
            }
        }
        assert_eq!(all_bytes - frozen_bytes, 2 * 4 * embedding_numel);
    }

    #[test]
    fn a_file_that_does_not_fit_or_a_pattern_that_matches_nothing_fails_the_trial() {
        let data = data(64);
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("resnet.safetensors");
        let vs = nn::VarStore::new(tch::Device::Cpu);
        BackboneRegistry::builtin()
            .build("resnet18_cifar@micro", &vs.root(), 4, 0)
            .unwrap();
        vs.save(&init).unwrap();
        let mut spec = spec("sgd_m", 0.1, 1);
        spec.backbone = "vit_tiny_cifar@micro".into();
        spec.init_weights = Some(init);
        let err = run(&spec, &data).0.unwrap_err().to_string();
        assert!(err.contains("missing: patch_embed.proj.weight"), "{err}");
        assert!(err.contains("unexpected: conv1.weight"), "{err}");
        let mut spec = self::spec("sgd_m", 0.1, 1);
        spec.freeze = vec!["stages.0.*".into()];
        let err = run(&spec, &data).0.unwrap_err().to_string();
        assert!(err.contains("`stages.0.*` matches no parameter"), "{err}");
    }

    /// A folder of photograph-sized JPEGs (two classes, 8 per split), each
    /// a smooth gradient in its class's hue.
    fn jpeg_folder(dir: &Path) {
        for split in ["train", "val"] {
            for (c, class) in ["n01", "n02"].into_iter().enumerate() {
                let d = dir.join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..8u32 {
                    let (w, h) = (120 + 7 * i, 90 + 5 * i);
                    let image = image::RgbImage::from_fn(w, h, |x, y| {
                        let (x, y) = ((x * 255 / w) as u8, (y * 255 / h) as u8);
                        if c == 0 {
                            image::Rgb([x, y / 2, 30])
                        } else {
                            image::Rgb([40, y, x])
                        }
                    });
                    image.save(d.join(format!("{i}.JPEG"))).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_streamed_folder_trains_imagenet_forms_and_refuses_cifar_forms() {
        use crate::data::stream::{BadFiles, FolderSplits};
        let dir = tempfile::tempdir().unwrap();
        jpeg_folder(dir.path());
        let folder = FolderSplits::open(dir.path(), Some(64), BadFiles::Fail).unwrap();
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        for (backbone, recipe) in [("resnet50@micro", "rsb_a2"), ("deit_s@micro", "deit")] {
            let mut spec = spec("adamw", 1e-3, 1);
            spec.backbone = backbone.into();
            spec.batch_size = 8;
            spec.warmup_epochs = 0;
            spec.recipe = Some(
                bocb_search_spaces::RecipeBook::builtin()
                    .recipe(recipe)
                    .unwrap()
                    .clone(),
            );
            let mut reports = Collect(Vec::new());
            let outcome = run_trial(&spec, &folder, &backbones, &optimizers, &mut reports).unwrap();
            let reports = reports.0;
            assert_eq!(
                outcome.status,
                TrialStatus::Done,
                "{backbone}: {:?}",
                outcome.note
            );
            assert_eq!(outcome.classes, Some(2));
            assert_eq!(reports.len(), 1);
            assert!(reports[0].train_loss.is_finite(), "{backbone}");
        }
        let mut cifar = spec("adamw", 1e-3, 1);
        cifar.backbone = "resnet50_cifar@micro".into();
        cifar.batch_size = 8;
        let message = run_trial(
            &cifar,
            &folder,
            &backbones,
            &optimizers,
            &mut Collect(Vec::new()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("`resnet50_cifar@micro` is the CIFAR form")
                && message.contains("use `resnet50@micro`"),
            "{message}"
        );
    }

    #[test]
    fn an_observer_can_stop_a_trial_early() {
        let data = data(128);
        let spec = spec("sgd_m", 0.1, 3);
        let mut observer = StopAfterOne(Vec::new());
        let outcome = run_trial(
            &spec,
            &data,
            &BackboneRegistry::builtin(),
            &OptimizerRegistry::builtin(),
            &mut observer,
        )
        .unwrap();
        assert_eq!(outcome.status, TrialStatus::Stopped);
        assert_eq!(observer.0.len(), 1);
        assert_eq!(outcome.final_accuracy, Some(observer.0[0].test_accuracy));
        assert_eq!(outcome.note.as_deref(), Some("stopped early after epoch 1"));
    }

    #[test]
    fn trains_reports_every_epoch_and_is_reproducible() {
        let data = data(256);
        let mut spec = spec("sgd_m", 0.1, 3);
        spec.hparams.insert("momentum".into(), 0.9);
        let (outcome, reports) = run(&spec, &data);
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, TrialStatus::Done);
        assert_eq!(outcome.device, "cpu");
        assert_eq!(
            reports.iter().map(|r| r.epoch).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(outcome.final_accuracy, Some(reports[2].test_accuracy));
        assert!(reports
            .iter()
            .all(|r| (0.0..=100.0).contains(&r.test_accuracy)));
        assert!(reports[2].train_loss < reports[0].train_loss, "{reports:?}");
        // Warm-up ends at epoch 1's last step; cosine reaches ~0 at the end.
        assert!((reports[0].lr - 0.1).abs() < 1e-12, "{}", reports[0].lr);
        assert!(reports[2].lr < 0.01);
        let params = {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            BackboneRegistry::builtin()
                .build(&spec.backbone, &vs.root(), 4, 0)
                .unwrap();
            crate::models::parameter_count(&vs) as usize
        };
        // One float32 momentum buffer per parameter.
        assert_eq!(outcome.optimizer_state_bytes, 4 * params);
        let (again, again_reports) = run(&spec, &data);
        assert_eq!(again.unwrap().final_accuracy, outcome.final_accuracy);
        let losses = |r: &[EpochMetrics]| r.iter().map(|r| r.train_loss).collect::<Vec<_>>();
        assert_eq!(losses(&again_reports), losses(&reports));
    }

    #[test]
    fn biases_norms_and_model_exemptions_skip_weight_decay_unless_asked() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let model = BackboneRegistry::builtin()
            .build("vit_tiny_cifar@micro", &vs.root(), 4, 0)
            .unwrap();
        let total = vs.trainable_variables().len();
        let split = param_set(&vs, &model, false, &BTreeMap::new());
        assert!(split.no_decay.iter().all(|t| t.dim() <= 1 || t.dim() == 3));
        // pos_embed and cls_token are 3-d and exempt by the model's own list.
        assert_eq!(split.no_decay.iter().filter(|t| t.dim() == 3).count(), 2);
        assert!(split.decay.iter().all(|t| t.dim() >= 2));
        assert_eq!(split.decay.len() + split.no_decay.len(), total);
        let all = param_set(&vs, &model, true, &BTreeMap::new());
        assert_eq!((all.decay.len(), all.no_decay.len()), (total, 0));
    }

    /// Each parameter's lr scale and weight decay under `layer_decay` equal
    /// timm's `param_groups_layer_decay` on the same architecture
    /// (tests/layer_decay_scales.json, by scripts/record_layer_decay_scales.py).
    #[test]
    fn layer_decay_groups_equal_timms() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/layer_decay_scales.json");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let decay = fixture["layer_decay"].as_f64().unwrap();
        let classes = fixture["classes"].as_i64().unwrap();
        let registry = BackboneRegistry::builtin();
        let backbones = fixture["backbones"].as_object().unwrap();
        let rules = |names: Vec<&str>| -> BTreeSet<LayerRule> {
            names
                .into_iter()
                .filter_map(|name| registry.layer_rule(name))
                .collect()
        };
        assert_eq!(
            rules(backbones.keys().map(String::as_str).collect()),
            rules(registry.names()),
            "the fixture has a backbone of every layer rule"
        );
        for (backbone, want) in backbones {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = registry.build(backbone, &vs.root(), classes, 0).unwrap();
            let scales = lr_scales(&registry, backbone, &vs, Some(decay)).unwrap();
            let names: BTreeMap<usize, String> = vs
                .variables()
                .into_iter()
                .map(|(name, t)| (t.data_ptr() as usize, name))
                .collect();
            let mut got: BTreeMap<String, (f64, bool)> = BTreeMap::new();
            for group in param_set(&vs, &model, false, &scales).into_groups(0.05) {
                for t in &group.params {
                    let name = names[&(t.data_ptr() as usize)].clone();
                    got.insert(name, (group.lr_scale, group.weight_decay > 0.0));
                }
            }
            let want: BTreeMap<String, (f64, bool)> = want
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, v)| {
                    let scale = v["lr_scale"].as_f64().unwrap();
                    (name.clone(), (scale, v["decay"].as_bool().unwrap()))
                })
                .collect();
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{backbone}: bocb's parameter names are timm's"
            );
            for (name, &(scale, decayed)) in &want {
                let (got_scale, got_decayed) = got[name];
                assert!(
                    (got_scale - scale).abs() <= 1e-12 * scale,
                    "{backbone} {name}: lr scale {got_scale}, timm's {scale}"
                );
                assert_eq!(got_decayed, decayed, "{backbone} {name}: weight decay");
            }
        }
    }

    /// Without `layer_decay` (or at 1, which scales nothing) a trial trains
    /// bit for bit as before; a decay below 1 changes its course. A
    /// backbone without layers for it is refused by name.
    #[test]
    fn layer_decay_off_or_one_trains_as_before() {
        let data = data(128);
        let mut spec = spec("sgd_m", 0.1, 2);
        spec.hparams.insert("momentum".into(), 0.9);
        spec.hparams.insert("weight_decay".into(), 5e-4);
        spec.backbone = "resnet18_cifar@micro".into();
        let mut recipe = bocb_search_spaces::RecipeBook::builtin()
            .recipe("finetune")
            .unwrap()
            .clone();
        recipe.epochs = bocb_search_spaces::Count(2);
        let losses = |decay: Option<f64>| {
            let mut spec = spec.clone();
            let mut recipe = recipe.clone();
            recipe.layer_decay = decay.map(bocb_search_spaces::LayerDecay);
            spec.recipe = Some(recipe);
            let (outcome, reports) = run(&spec, &data);
            outcome.unwrap();
            reports
                .iter()
                .map(|r| r.train_loss.to_bits())
                .collect::<Vec<_>>()
        };
        let off = losses(None);
        assert_eq!(off.len(), 2);
        assert_eq!(losses(Some(1.0)), off);
        assert_ne!(losses(Some(0.5)), off);
        spec.backbone = "vgg13_bn@micro".into();
        recipe.layer_decay = Some(bocb_search_spaces::LayerDecay(0.75));
        spec.recipe = Some(recipe);
        let err = run(&spec, &data).0.unwrap_err().to_string();
        assert!(
            err.contains("`vgg13_bn@micro`")
                && err.contains("only for convnext_t, ")
                && err.contains("layer_decay: null"),
            "{err}"
        );
    }

    #[test]
    fn an_exploding_loss_ends_the_trial_as_diverged() {
        let (outcome, reports) = run(&spec("sgd_m", 1e12, 2), &data(128));
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, TrialStatus::Diverged);
        assert_eq!(outcome.final_accuracy, None);
        assert!(outcome.note.unwrap().contains("epoch 1"));
        assert!(reports.is_empty());
    }

    #[test]
    fn too_little_data_and_bad_configs_are_errors() {
        let err = run(&spec("adamw", 1e-3, 1), &data(16)).0.unwrap_err();
        assert!(
            matches!(
                err,
                TrialError::TooLittleData {
                    images: 16,
                    batch_size: 32
                }
            ),
            "{err}"
        );
        let mut bad = spec("adamw", 1e-3, 1);
        bad.hparams.insert("momentum".into(), 0.9);
        let err = run(&bad, &data(64)).0.unwrap_err();
        assert!(err.to_string().contains("`momentum`"), "{err}");
    }

    #[test]
    fn every_recipe_trains_end_to_end_on_synthetic_data() {
        let data = data(128);
        for name in [
            "pytorch", "deit", "convnext", "rsb_a2", "rsb_a3", "finetune",
        ] {
            let mut recipe = bocb_search_spaces::RecipeBook::builtin()
                .recipe(name)
                .unwrap()
                .clone();
            recipe.epochs = bocb_search_spaces::Count(2);
            recipe.warmup_epochs = 1;
            // A decay that moves the average within a few steps.
            recipe.ema_decay = recipe.ema_decay.map(|_| bocb_search_spaces::Fraction(0.5));
            for backbone in ["resnet18_cifar@micro", "vit_tiny_cifar@micro"] {
                let mut spec = spec("adamw", 1e-3, 2);
                spec.backbone = backbone.into();
                spec.recipe = Some(recipe.clone());
                let (outcome, reports) = run(&spec, &data);
                let outcome = outcome.unwrap_or_else(|e| panic!("{name} {backbone}: {e}"));
                assert_eq!(outcome.status, TrialStatus::Done, "{name} {backbone}");
                assert_eq!(reports.len(), 2);
                assert!(reports.iter().all(|r| r.train_loss.is_finite()));
                assert_eq!(outcome.precision, "fp32");
                assert!(outcome.peak_memory_bytes.is_some_and(|b| b > 0));
                let keeps_average = recipe.ema_decay.is_some();
                assert_eq!(outcome.ema_accuracy.is_some(), keeps_average, "{name}");
                assert_eq!(reports[1].ema_test_accuracy, outcome.ema_accuracy);
            }
        }
    }

    /// bf16 autocast runs on the CPU too: the trial learns in it, records it,
    /// and its arithmetic differs from fp32's. A deterministic trial turns
    /// deterministic kernels on; channels-last batches train as NCHW ones.
    #[test]
    fn precision_and_layout_options_train_and_are_recorded() {
        let data = data(256);
        let mut spec = spec("sgd_m", 0.1, 2);
        spec.hparams.insert("momentum".into(), 0.9);
        let (fp32, fp32_reports) = run(&spec, &data);
        assert_eq!(fp32.unwrap().precision, "fp32");
        spec.precision = PrecisionChoice::Bf16;
        spec.deterministic = true;
        let (bf16, reports) = run(&spec, &data);
        let bf16 = bf16.unwrap();
        assert_eq!(bf16.status, TrialStatus::Done);
        assert_eq!(bf16.precision, "bf16");
        assert!(crate::precision::deterministic());
        assert!(reports[1].train_loss < reports[0].train_loss, "{reports:?}");
        assert_ne!(reports[0].train_loss, fp32_reports[0].train_loss);
        // `auto` is fp32 on the CPU; channels-last batches change only the
        // kernels' summation order.
        spec.precision = PrecisionChoice::Auto;
        spec.channels_last = true;
        let (nhwc, nhwc_reports) = run(&spec, &data);
        assert_eq!(nhwc.unwrap().precision, "fp32");
        let (a, b) = (fp32_reports[0].train_loss, nhwc_reports[0].train_loss);
        assert!((a - b).abs() < 1e-3 * a.abs(), "{a} {b}");
    }

    /// ResNet has no dropout of its own: the recipe's rate adds one, which
    /// draws from the trial's stream (the same numbers on every run).
    #[test]
    fn a_recipe_dropout_trains_end_to_end_and_reproducibly() {
        let data = data(128);
        let mut recipe = bocb_search_spaces::RecipeBook::builtin()
            .recipe("pytorch")
            .unwrap()
            .clone();
        recipe.epochs = bocb_search_spaces::Count(2);
        let mut spec = spec("sgd_m", 0.05, 2);
        spec.hparams.insert("momentum".into(), 0.9);
        spec.recipe = Some(recipe.clone());
        let (outcome, plain) = run(&spec, &data);
        assert_eq!(outcome.unwrap().status, TrialStatus::Done);
        recipe.dropout = Some(bocb_search_spaces::Fraction(0.5));
        spec.recipe = Some(recipe);
        let (outcome, dropped) = run(&spec, &data);
        let outcome = outcome.unwrap();
        assert_eq!(outcome.status, TrialStatus::Done);
        assert!(outcome.final_accuracy.is_some());
        assert_eq!(dropped.len(), 2);
        assert!(dropped.iter().all(|r| r.train_loss.is_finite()));
        assert_ne!(plain[0].train_loss, dropped[0].train_loss);
        let (again, dropped_again) = run(&spec, &data);
        assert_eq!(again.unwrap().final_accuracy, outcome.final_accuracy);
        assert_eq!(dropped_again[0].train_loss, dropped[0].train_loss);
    }

    /// Also with another trial training beside it in the same process: the
    /// recipe's stochastic depth draws from torch's one generator.
    #[test]
    fn a_recipe_trial_is_reproducible_whatever_the_worker_count() {
        let data = data(128);
        let mut recipe = bocb_search_spaces::RecipeBook::builtin()
            .recipe("deit")
            .unwrap()
            .clone();
        recipe.epochs = bocb_search_spaces::Count(1);
        recipe.warmup_epochs = 0;
        let mut spec = spec("adamw", 1e-3, 1);
        spec.recipe = Some(recipe);
        spec.data_workers = 1;
        let (one, reports) = run(&spec, &data);
        spec.data_workers = 3;
        let mut neighbour = spec.clone();
        neighbour.seed += 1;
        let (three, again) = std::thread::scope(|scope| {
            scope.spawn(|| run(&neighbour, &data));
            run(&spec, &data)
        });
        assert_eq!(one.unwrap().final_accuracy, three.unwrap().final_accuracy);
        assert_eq!(reports[0].train_loss, again[0].train_loss);
        assert_eq!(reports[0].ema_test_accuracy, again[0].ema_test_accuracy);
    }

    /// Batches made on the device (the CPU here) are the pipeline's, so a
    /// trial trains to the same numbers either way: without a recipe, with
    /// `pytorch` (crop and flip), and with DeiT's batch-level Mixup/CutMix,
    /// erasing and EMA once its RandAugment is dropped. RandAugment itself
    /// has no device version: `true` refuses it, naming the override.
    #[test]
    fn batches_made_on_the_device_train_to_the_same_numbers() {
        let data = data(96);
        let book = bocb_search_spaces::RecipeBook::builtin();
        let mut pytorch = book.recipe("pytorch").unwrap().clone();
        pytorch.epochs = bocb_search_spaces::Count(2);
        let mut deit = book.recipe("deit").unwrap().clone();
        deit.epochs = bocb_search_spaces::Count(2);
        deit.warmup_epochs = 1;
        deit.ema_decay = Some(bocb_search_spaces::Fraction(0.5));
        let mut mixing = deit.clone();
        mixing.rand_augment = None;
        for recipe in [None, Some(pytorch), Some(mixing)] {
            let mut spec = spec("sgd_m", 0.05, 2);
            spec.hparams.insert("momentum".into(), 0.9);
            spec.recipe = recipe;
            let (host, host_reports) = run(&spec, &data);
            spec.data_on_device = DataOnDevice::On;
            let (device, device_reports) = run(&spec, &data);
            let (host, device) = (host.unwrap(), device.unwrap());
            assert_eq!(host.status, TrialStatus::Done);
            assert_eq!(device.final_accuracy, host.final_accuracy);
            assert_eq!(device.ema_accuracy, host.ema_accuracy);
            let numbers = |reports: &[EpochMetrics]| {
                reports
                    .iter()
                    .map(|r| {
                        (
                            r.train_loss,
                            r.test_loss,
                            r.test_accuracy,
                            r.ema_test_accuracy,
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(host_reports.len(), 2);
            assert_eq!(numbers(&device_reports), numbers(&host_reports));
        }
        let mut spec = spec("sgd_m", 0.05, 1);
        spec.recipe = Some(deit);
        spec.data_on_device = DataOnDevice::On;
        let err = run(&spec, &data).0.unwrap_err().to_string();
        assert!(
            err.contains("RandAugment (`rand_augment`) has no on-device version")
                && err.contains("{ rand_augment: null }"),
            "{err}"
        );
    }

    /// Collects reports and asks for a checkpoint after batch `at.1` of
    /// epoch `at.0` (its last: after the epoch); copies the checkpoint
    /// directory, as a kill would leave it, when `copy_at` epoch is reported.
    struct Interrupter {
        reports: Vec<EpochMetrics>,
        at: Option<(u32, usize)>,
        last: (u32, usize),
        copy_at: Option<(u32, PathBuf, PathBuf)>,
        /// The epochs done of each checkpoint it heard was saved, read back.
        saved: Vec<u32>,
        /// Refuses checkpoints once this epoch is reported.
        refuse_after: Option<u32>,
    }

    impl Interrupter {
        fn new(at: Option<(u32, usize)>) -> Self {
            Interrupter {
                reports: Vec::new(),
                at,
                last: (0, 0),
                copy_at: None,
                saved: Vec::new(),
                refuse_after: None,
            }
        }
    }

    impl TrialObserver for Interrupter {
        fn on_batch(&mut self, epoch: u32, batch: usize, _batches: usize) {
            self.last = (epoch, batch);
        }
        fn on_epoch(&mut self, report: &EpochMetrics) {
            self.reports.push(*report);
            if let Some((epoch, from, to)) = &self.copy_at {
                if *epoch == report.epoch {
                    std::fs::create_dir_all(to).unwrap();
                    for entry in std::fs::read_dir(from).unwrap() {
                        let entry = entry.unwrap();
                        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
                    }
                }
            }
        }
        fn checkpoint_requested(&mut self) -> bool {
            self.at == Some(self.last)
        }
        fn may_checkpoint(&mut self) -> bool {
            self.refuse_after
                .is_none_or(|epoch| self.reports.last().is_none_or(|r| r.epoch < epoch))
        }
        fn on_checkpoint(&mut self, dir: &Path) {
            let position: Position = serde_json::from_str(
                &std::fs::read_to_string(dir.join("checkpoint.json")).unwrap(),
            )
            .unwrap();
            self.saved.push(position.epochs_done);
        }
    }

    fn run_observed(
        spec: &TrialSpec,
        data: &Splits,
        observer: &mut Interrupter,
    ) -> Result<TrialOutcome, TrialError> {
        run_trial(
            spec,
            data,
            &BackboneRegistry::builtin(),
            &OptimizerRegistry::builtin(),
            observer,
        )
    }

    /// What an epoch measured, less its timings.
    fn numbers(reports: &[EpochMetrics]) -> Vec<(u32, f64, f64, f64, f64, Option<f64>)> {
        reports
            .iter()
            .map(|r| {
                (
                    r.epoch,
                    r.train_loss,
                    r.test_loss,
                    r.test_accuracy,
                    r.lr,
                    r.ema_test_accuracy,
                )
            })
            .collect()
    }

    /// DeiT (Mixup/CutMix, erasing, label smoothing, stochastic depth,
    /// repeated augmentation, RandAugment) with an EMA that moves, 4 epochs.
    fn resumable_spec(backbone: &str, dir: &Path) -> TrialSpec {
        let mut recipe = bocb_search_spaces::RecipeBook::builtin()
            .recipe("deit")
            .unwrap()
            .clone();
        recipe.epochs = bocb_search_spaces::Count(4);
        recipe.warmup_epochs = 1;
        recipe.ema_decay = Some(bocb_search_spaces::Fraction(0.5));
        let mut spec = spec("adamw", 1e-3, 4);
        spec.backbone = backbone.into();
        spec.recipe = Some(recipe);
        spec.deterministic = true;
        spec.checkpoint_dir = Some(dir.to_path_buf());
        spec
    }

    /// Stopped within epoch 2, resumed, stopped after epoch 3, resumed: the
    /// epochs measure exactly what an unbroken run measures. So does a run
    /// resumed from a periodic checkpoint, as a killed worker leaves it.
    #[test]
    fn a_resumed_trial_measures_exactly_what_an_unbroken_one_does() {
        let data = data(96);
        for backbone in ["resnet18_cifar@micro", "vit_tiny_cifar@micro"] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("trial");
            let spec = resumable_spec(backbone, &dir);
            let mut unbroken = Interrupter::new(None);
            let whole = run_observed(&spec, &data, &mut unbroken).unwrap();
            assert_eq!(whole.status, TrialStatus::Done);
            assert_eq!(unbroken.reports.len(), 4);
            assert!(!dir.exists(), "a finished trial leaves no checkpoint");
            let steps = unbroken.last.1;

            let mut first = Interrupter::new(Some((2, 1)));
            let err = run_observed(&spec, &data, &mut first).unwrap_err();
            assert!(
                matches!(
                    err,
                    TrialError::Interrupted {
                        epochs_done: 1,
                        batches_done: 1,
                        saved: true
                    }
                ),
                "{backbone}: {err}"
            );
            assert_eq!(first.saved, [1], "{backbone}");
            let mut second = Interrupter::new(Some((3, steps)));
            let err = run_observed(&spec, &data, &mut second).unwrap_err();
            assert!(
                matches!(
                    err,
                    TrialError::Interrupted {
                        epochs_done: 3,
                        batches_done: 0,
                        saved: true
                    }
                ),
                "{backbone}: {err}"
            );
            let mut third = Interrupter::new(None);
            let resumed = run_observed(&spec, &data, &mut third).unwrap();
            let pieces: Vec<EpochMetrics> = [first.reports, second.reports, third.reports].concat();
            assert_eq!(numbers(&pieces), numbers(&unbroken.reports), "{backbone}");
            assert_eq!(resumed.final_accuracy, whole.final_accuracy);
            assert_eq!(resumed.ema_accuracy, whole.ema_accuracy);
            assert!(resumed.ema_accuracy.is_some());
            assert!(!dir.exists());

            // Every other epoch; the copy after epoch 3 holds epoch 2's.
            let mut periodic = resumable_spec(backbone, &dir);
            periodic.checkpoint_every = Some(2);
            let mut killed = Interrupter::new(None);
            let kept = root.path().join("kept");
            killed.copy_at = Some((3, dir.clone(), kept.clone()));
            run_observed(&periodic, &data, &mut killed).unwrap();
            assert_eq!(killed.saved, [2], "{backbone}: the last epoch saves none");
            periodic.checkpoint_dir = Some(kept);
            // Another worker: other data threads, same numbers.
            periodic.data_workers = 1;
            let mut after_kill = Interrupter::new(None);
            run_observed(&periodic, &data, &mut after_kill).unwrap();
            assert_eq!(
                numbers(&after_kill.reports),
                numbers(&unbroken.reports[2..]),
                "{backbone}"
            );

            // Stopped after epoch 3, whose record failed: no checkpoint is
            // saved then, so the run resumes after epoch 2 and measures it again.
            let mut every = resumable_spec(backbone, &dir);
            every.checkpoint_every = Some(1);
            let mut unrecorded = Interrupter::new(Some((3, steps)));
            unrecorded.refuse_after = Some(3);
            let err = run_observed(&every, &data, &mut unrecorded).unwrap_err();
            assert!(
                matches!(err, TrialError::Interrupted { saved: false, .. }),
                "{backbone}: {err}"
            );
            assert_eq!(unrecorded.saved, [1, 2], "{backbone}");
            let mut rest = Interrupter::new(None);
            run_observed(&every, &data, &mut rest).unwrap();
            assert_eq!(
                numbers(&rest.reports),
                numbers(&unbroken.reports[2..]),
                "{backbone}"
            );
        }
    }

    #[test]
    fn a_checkpoint_of_another_trial_or_a_damaged_one_is_refused_naming_the_fix() {
        let data = data(64);
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("trial");
        let mut spec = spec("sgd_m", 0.05, 2);
        spec.checkpoint_dir = Some(dir.clone());
        let mut observer = Interrupter::new(Some((1, 1)));
        let err = run_observed(&spec, &data, &mut observer).unwrap_err();
        assert!(
            matches!(err, TrialError::Interrupted { saved: true, .. }),
            "{err}"
        );
        spec.seed += 1;
        let err = run_observed(&spec, &data, &mut Interrupter::new(None))
            .unwrap_err()
            .to_string();
        let json = dir.join("checkpoint.json");
        assert!(
            err.contains(&json.display().to_string())
                && err.contains("belongs to another trial")
                && err.contains(&format!("delete {} to start the trial over", dir.display())),
            "{err}"
        );
        std::fs::write(&json, "{ not json").unwrap();
        let err = run_observed(&spec, &data, &mut Interrupter::new(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&json.display().to_string()), "{err}");
        // Without a checkpoint directory a request stops the trial all the same.
        spec.checkpoint_dir = None;
        let err = run_observed(&spec, &data, &mut Interrupter::new(Some((1, 1)))).unwrap_err();
        assert!(
            matches!(
                err,
                TrialError::Interrupted {
                    epochs_done: 0,
                    batches_done: 1,
                    saved: false
                }
            ),
            "{err}"
        );
    }

    /// SophiaH, counting the Hessian estimates it is handed.
    struct HessianProbe(Box<dyn Optimizer>);

    static ESTIMATES: AtomicUsize = AtomicUsize::new(0);

    impl Optimizer for HessianProbe {
        fn step(&mut self, lr: f64) {
            self.0.step(lr)
        }
        fn state_bytes(&self) -> usize {
            self.0.state_bytes()
        }
        fn hessian_interval(&self) -> Option<usize> {
            self.0.hessian_interval()
        }
        fn hessian_noise(&self) -> (usize, HessianNoise) {
            self.0.hessian_noise()
        }
        fn set_hessian(&mut self, estimate: &[Tensor]) {
            let total: f64 = estimate
                .iter()
                .map(|h| f64::try_from(h.abs().sum(Kind::Double)).unwrap())
                .sum();
            assert!(total.is_finite() && total > 0.0, "{total}");
            ESTIMATES.fetch_add(1, Ordering::SeqCst);
            self.0.set_hessian(estimate)
        }
    }

    #[test]
    fn sophia_gets_a_hutchinson_estimate_every_update_period() {
        let mut optimizers = OptimizerRegistry::builtin();
        optimizers.register("sophia_probe", |h, p| {
            let sophia = OptimizerRegistry::builtin().build("sophia", h, p)?;
            Ok(Box::new(HessianProbe(sophia)))
        });
        let mut spec = spec("sophia_probe", 6e-2, 2);
        for (name, value) in [
            ("update_period", 3.0),
            ("num_samples", 2.0),
            ("hessian_distribution", 1.0),
        ] {
            spec.hparams.insert(name.into(), value);
        }
        let mut observer = Collect(Vec::new());
        let data = data(256);
        let backbones = BackboneRegistry::builtin();
        let outcome = run_trial(&spec, &data, &backbones, &optimizers, &mut observer).unwrap();
        assert_eq!(outcome.status, TrialStatus::Done);
        assert_eq!(observer.0.len(), 2);
        // 8 steps an epoch: estimates before steps 0, 3, 6, 9, 12 and 15.
        assert_eq!(ESTIMATES.load(Ordering::SeqCst), 6);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        backbones.build(&spec.backbone, &vs.root(), 4, 0).unwrap();
        let params = crate::models::parameter_count(&vs) as usize;
        // Float32 momentum and Hessian EMA per parameter.
        assert_eq!(outcome.optimizer_state_bytes, 2 * 4 * params);
    }

    /// For 0.5 * sum(c * x^2) the Hessian is diag(c), which Rademacher
    /// noise recovers exactly; the gradients are c * x.
    #[test]
    fn hutchinson_estimate_and_gradients_of_a_quadratic() {
        let x = [
            Tensor::from_slice(&[1.0f64, -2.0]).set_requires_grad(true),
            Tensor::from_slice(&[3.0f64]).set_requires_grad(true),
        ];
        let c = [
            Tensor::from_slice(&[2.0f64, 0.5]),
            Tensor::from_slice(&[4.0f64]),
        ];
        let loss = x
            .iter()
            .zip(&c)
            .map(|(x, c)| (c * x * x).sum(Kind::Double) * 0.5)
            .reduce(|a, b| a + b)
            .unwrap();
        let estimate = backward_with_hessian(&loss, &x, (3, HessianNoise::Rademacher)).unwrap();
        let values = |t: &Tensor| Vec::<f64>::try_from(t).unwrap();
        assert_eq!(values(&estimate[0]), [2.0, 0.5]);
        assert_eq!(values(&estimate[1]), [4.0]);
        assert_eq!(values(&x[0].grad()), [2.0, -1.0]);
        assert_eq!(values(&x[1].grad()), [12.0]);
    }
}

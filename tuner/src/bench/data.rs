//! `bocb bench data`: whether the input pipeline keeps a training step fed.
//! It times the pipeline alone (loading, cropping, flipping, RandAugment on
//! the worker threads, as a recipe trains) and a training step of a
//! backbone on the pipeline's batches (normalisation, random erasing,
//! Mixup/CutMix, forward, backward, SGD-M update), and reports the ratio.
//! Where the recipe's per-image transforms have device versions it also
//! times the same batches made on the device (`data_on_device`) and checks
//! that they equal the pipeline's.

use std::path::PathBuf;
use std::time::Instant;

use bocb_search_spaces::{Recipe, RecipeBook, SpaceError};
use bocb_trial_runner::augment::{AugmentError, RepeatAugSampler};
use bocb_trial_runner::batches::on_device::{DeviceSplit, DeviceTransform};
use bocb_trial_runner::batches::{for_each_batch, EpochPlan, ImageTransform, Normalizer, RawBatch};
use bocb_trial_runner::data::{self, DataError};
use bocb_trial_runner::models::{BackboneRegistry, ModelError};
use bocb_trial_runner::optim::{Hparams, OptimizerRegistry};
use bocb_trial_runner::regime::Regime;
use bocb_trial_runner::{with_recipe_rates, Learner, TrialError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tch::{Device, Tensor};
use thiserror::Error;

/// What `bocb bench data` measures.
pub struct DataBenchConfig {
    /// A CIFAR directory (any of the four formats) or an image folder.
    pub dataset: PathBuf,
    pub recipe: String,
    pub backbone: String,
    pub batch: usize,
    /// Pipeline threads (0: all cores but one).
    pub workers: usize,
    /// Batches the pipeline is timed over (at most one epoch).
    pub batches: usize,
    /// Timed training steps, after one untimed.
    pub steps: usize,
    pub device: Device,
}

#[derive(Debug, Error)]
pub enum DataBenchError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{}: no dataset found; give a directory in one of the formats {} (an image folder: train/CLASS/*.png, val/CLASS/...), e.g. one made by `bocb data synth --format image-folder --out DIR`", .0.display(), data::format_names())]
    NoDataset(PathBuf),
    #[error(transparent)]
    Recipe(#[from] SpaceError),
    #[error(transparent)]
    Backbone(#[from] ModelError),
    #[error(transparent)]
    Trial(#[from] TrialError),
    #[error("recipe: {0}")]
    Augment(#[from] AugmentError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("--batch {batch} is more than one epoch of {images} images; lower --batch")]
    BatchTooLarge { batch: usize, images: usize },
    #[error("--batches and --steps must be at least 1, and --batch at least 2")]
    NothingToTime,
}

/// Both rates and their ratio.
#[derive(Debug, Clone, Serialize)]
pub struct DataBenchReport {
    pub dataset: String,
    pub recipe: String,
    pub backbone: String,
    pub batch: usize,
    pub workers: usize,
    pub device: String,
    /// Images per second out of the CPU pipeline alone (raw batches in
    /// host memory).
    pub pipeline_images_per_sec: f64,
    /// Images per second of the same batches made on the device (raw
    /// batches in device memory, the split uploaded beforehand); `None`
    /// where a per-image transform of the recipe has no device version.
    pub device_pipeline_images_per_sec: Option<f64>,
    /// Why there is no device rate.
    pub device_pipeline_unavailable: Option<String>,
    /// Whether the device's first batch equals the pipeline's, images and labels.
    pub device_batch_matches_pipeline: Option<bool>,
    /// Images per second through a training step.
    pub step_images_per_sec: f64,
    /// Pipeline rate over step rate: above 1 the pipeline keeps up.
    pub ratio: f64,
    /// Device rate over step rate.
    pub device_ratio: Option<f64>,
}

/// The device side's rate and whether its first batch is `first`.
struct DeviceSide {
    images_per_sec: f64,
    matches: bool,
}

/// Times the pipeline and the training step of `config`.
pub fn bench_data(
    config: &DataBenchConfig,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
) -> Result<DataBenchReport, DataBenchError> {
    if config.batches == 0 || config.steps == 0 || config.batch < 2 {
        return Err(DataBenchError::NothingToTime);
    }
    let workers = match config.workers {
        0 => bocb_trial_runner::batches::default_workers(),
        n => n,
    };
    let recipe: Recipe = RecipeBook::builtin().recipe(&config.recipe)?.clone();
    let (entry, preset) = backbones.lookup(&config.backbone)?;
    let input_side = entry.input_size(preset);
    let dir = &config.dataset;
    let format = data::detect_format(dir).ok_or_else(|| DataBenchError::NoDataset(dir.clone()))?;
    let splits = data::load(dir, format, workers)?;
    let train = &splits.train;
    let (mean, std) = train.mean_std();
    let transform = ImageTransform::from_recipe(&recipe, input_side, mean);
    let sampler = RepeatAugSampler::new(train.len(), recipe.repeated_augmentation.0 as usize)?;
    let order = sampler.epoch(&mut StdRng::seed_from_u64(0));
    if order.len() < config.batch {
        return Err(DataBenchError::BatchTooLarge {
            batch: config.batch,
            images: order.len(),
        });
    }
    let batches = config.batches.min(order.len() / config.batch);

    // The pipeline alone: batches as fast as the workers make them.
    let plan = EpochPlan {
        order: order[..batches * config.batch].to_vec(),
        seed: 0,
        transform: &transform,
    };
    let mut first: Option<RawBatch> = None;
    let started = Instant::now();
    for_each_batch(train, config.batch, Some(plan), workers, |batch| {
        first.get_or_insert(batch);
        Ok::<(), DataBenchError>(())
    })?;
    let pipeline_images_per_sec = (batches * config.batch) as f64 / started.elapsed().as_secs_f64();
    let batch = first.expect("at least one batch");
    let (device_side, device_pipeline_unavailable) = match transform.on_device() {
        Ok(on_device) => {
            let order = &order[..batches * config.batch];
            let side = time_on_device(train, config, order, &on_device, &batch);
            (Some(side), None)
        }
        Err(missing) => (
            None,
            Some(format!(
                "{missing}; `--recipe pytorch` crops and flips, which the device does"
            )),
        ),
    };

    // A training step on the pipeline's batch, with the recipe's batch
    // transforms and loss; SGD-M, whose update costs little beside the model's.
    let classes = train.classes as i64;
    let hparams: Hparams = [
        ("lr".to_string(), 0.01),
        ("weight_decay".to_string(), 5e-4),
        ("momentum".to_string(), 0.9),
    ]
    .into();
    let mut learner = with_recipe_rates(&recipe, || {
        Learner::new(
            backbones,
            &config.backbone,
            optimizers,
            "sgd_m",
            &hparams,
            classes,
            config.device,
            false,
            0,
        )
    })?;
    learner.clip_grad_norm = Some(recipe.grad_clip_norm.0).filter(|&n| n > 0.0);
    let normalizer = Normalizer::new(mean, std, input_side, config.device);
    let regime = Regime::from_recipe(&recipe, classes);
    let mut rng = StdRng::seed_from_u64(1);
    let mut step = || -> Result<(), DataBenchError> {
        let images = normalizer.apply(&batch.images);
        let labels = batch.labels.to_device(config.device);
        let (images, targets) = regime.prepare(images, labels, &mut rng)?;
        let loss = learner.step_with(&images, 0.01, |logits| regime.loss(logits, &targets))?;
        // Wait for the device, so the time is the step's.
        f64::try_from(&loss)?;
        Ok(())
    };
    step()?;
    let started = Instant::now();
    for _ in 0..config.steps {
        step()?;
    }
    let step_images_per_sec =
        (config.steps * config.batch) as f64 / started.elapsed().as_secs_f64();
    Ok(DataBenchReport {
        dataset: config.dataset.display().to_string(),
        recipe: config.recipe.clone(),
        backbone: config.backbone.clone(),
        batch: config.batch,
        workers,
        device: bocb_trial_runner::device::device_name(config.device),
        pipeline_images_per_sec,
        device_pipeline_images_per_sec: device_side.as_ref().map(|d| d.images_per_sec),
        device_pipeline_unavailable,
        device_batch_matches_pipeline: device_side.as_ref().map(|d| d.matches),
        step_images_per_sec,
        ratio: pipeline_images_per_sec / step_images_per_sec,
        device_ratio: device_side.map(|d| d.images_per_sec / step_images_per_sec),
    })
}

/// Times the batches of `order` made on `config.device` from the uploaded
/// split (after one untimed batch, which loads the kernels), waiting for
/// the device at the end; and compares the first with the pipeline's.
fn time_on_device(
    train: &data::Dataset,
    config: &DataBenchConfig,
    order: &[usize],
    transform: &DeviceTransform,
    pipeline_first: &RawBatch,
) -> DeviceSide {
    let split = DeviceSplit::upload(train, config.device);
    let plan = |order: &[usize]| EpochPlan {
        order: order.to_vec(),
        seed: 0,
        transform,
    };
    let mut first: Option<RawBatch> = None;
    let _ = split.for_each_batch(config.batch, Some(plan(&order[..config.batch])), |batch| {
        first = Some(batch);
        Ok::<(), ()>(())
    });
    let wait = || bocb_trial_runner::device::synchronize(config.device);
    wait();
    let started = Instant::now();
    let _ = split.for_each_batch(config.batch, Some(plan(order)), |batch| {
        drop(batch);
        Ok::<(), ()>(())
    });
    wait();
    let images_per_sec = order.len() as f64 / started.elapsed().as_secs_f64();
    let first = first.expect("one batch");
    let on_host = |t: &Tensor| t.to_device(Device::Cpu);
    let matches = on_host(&first.images).equal(&pipeline_first.images)
        && on_host(&first.labels).equal(&pipeline_first.labels);
    DeviceSide {
        images_per_sec,
        matches,
    }
}

/// The report as text.
pub fn render_data(report: &DataBenchReport) -> String {
    let verdict = if report.ratio >= 3.0 {
        "the pipeline keeps the step fed (goal: at least 3x)"
    } else if report.ratio >= 1.0 {
        "the pipeline keeps up, with less than the 3x margin the goal asks; add --workers"
    } else {
        "the pipeline is the bottleneck; add --workers or lighten the recipe"
    };
    let device = match (
        report.device_pipeline_images_per_sec,
        report.device_ratio,
        report.device_batch_matches_pipeline,
        &report.device_pipeline_unavailable,
    ) {
        (Some(rate), Some(ratio), Some(matches), _) => format!(
            "batches made on {}: {rate:.0} images/s, {ratio:.1}x the step; {}\n",
            report.device,
            if matches {
                "the same batches as the pipeline"
            } else {
                "NOT the pipeline's batches"
            }
        ),
        (_, _, _, Some(why)) => {
            format!("batches made on {}: not available: {why}\n", report.device)
        }
        _ => String::new(),
    };
    format!(
        "data pipeline, recipe {} on {} ({} workers): {:.0} images/s\n\
         training step, {} at batch {} on {}: {:.1} images/s\n\
         pipeline / step: {:.1}x: {verdict}\n{device}",
        report.recipe,
        report.dataset,
        report.workers,
        report.pipeline_images_per_sec,
        report.backbone,
        report.batch,
        report.device,
        report.step_images_per_sec,
        report.ratio,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_trial_runner::data::{write_synthetic, DatasetFormat, SynthConfig};

    #[test]
    fn times_both_sides_on_an_image_folder_and_explains_bad_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            classes: 4,
            train: 96,
            test: 8,
            seed: 1,
        };
        write_synthetic(dir.path(), &cfg, DatasetFormat::ImageFolder).unwrap();
        let mut config = DataBenchConfig {
            dataset: dir.path().to_owned(),
            recipe: "deit".into(),
            backbone: "resnet18_cifar@micro".into(),
            batch: 32,
            workers: 2,
            batches: 10,
            steps: 2,
            device: Device::Cpu,
        };
        let backbones = BackboneRegistry::builtin();
        let optimizers = OptimizerRegistry::builtin();
        let report = bench_data(&config, &backbones, &optimizers).unwrap();
        assert!(report.pipeline_images_per_sec > 0.0 && report.step_images_per_sec > 0.0);
        let ratio = report.pipeline_images_per_sec / report.step_images_per_sec;
        assert!((report.ratio - ratio).abs() < 1e-9 * ratio);
        let text = render_data(&report);
        assert!(
            text.contains("recipe deit") && text.contains("pipeline / step"),
            "{text}"
        );
        // DeiT's RandAugment has no device version: no device rate, and why.
        assert_eq!(report.device_pipeline_images_per_sec, None);
        assert_eq!(report.device_ratio, None);
        assert!(
            text.contains("batches made on cpu: not available: RandAugment"),
            "{text}"
        );
        // `pytorch` crops and flips: both sides, the same batches.
        config.recipe = "pytorch".into();
        let report = bench_data(&config, &backbones, &optimizers).unwrap();
        let rate = report.device_pipeline_images_per_sec.unwrap();
        assert!(rate > 0.0);
        assert_eq!(report.device_batch_matches_pipeline, Some(true));
        assert_eq!(report.device_pipeline_unavailable, None);
        let ratio = rate / report.step_images_per_sec;
        assert!((report.device_ratio.unwrap() - ratio).abs() < 1e-9 * ratio);
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "pipeline_images_per_sec",
            "device_pipeline_images_per_sec",
            "step_images_per_sec",
            "ratio",
            "device_ratio",
        ] {
            assert!(json[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {json}");
        }
        assert_eq!(json["device_batch_matches_pipeline"], true);
        let text = render_data(&report);
        assert!(
            text.contains("batches made on cpu: ")
                && text.contains("the same batches as the pipeline"),
            "{text}"
        );

        config.recipe = "deit3".into();
        let err = bench_data(&config, &backbones, &optimizers)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown recipe `deit3`") && err.contains("rsb_a2"),
            "{err}"
        );
        config.recipe = "pytorch".into();
        config.dataset = dir.path().join("train");
        let err = bench_data(&config, &backbones, &optimizers)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no dataset found") && err.contains("image-folder, cifar100-bin"),
            "{err}"
        );
    }
}

//! `bocb bench data`: whether the input pipeline keeps a training step fed.
//! It times the pipeline alone (loading, cropping, flipping, RandAugment on
//! the worker threads, as a recipe trains) and a training step of a
//! backbone on the pipeline's batches (normalisation, random erasing,
//! Mixup/CutMix, forward, backward, SGD-M update), and reports the ratio.
//! Where the recipe's per-image transforms have device versions it also
//! times the same batches made on the device (`data_on_device`) and checks
//! that they equal the pipeline's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bocb_search_spaces::{Recipe, RecipeBook, SpaceError};
use bocb_trial_runner::augment::{AugmentError, Interpolation, RepeatAugSampler};
use bocb_trial_runner::batches::on_device::{DeviceSplit, DeviceTransform};
use bocb_trial_runner::batches::stream::{for_each_file_batch, FullResTransform, StreamPlan};
use bocb_trial_runner::batches::{for_each_batch, EpochPlan, ImageTransform, Normalizer, RawBatch};
use bocb_trial_runner::data::stream::{BadFiles, FolderSplits};
use bocb_trial_runner::data::{self, DataError};
use bocb_trial_runner::memory::PeakMemory;
use bocb_trial_runner::models::{BackboneRegistry, ModelError};
use bocb_trial_runner::optim::{Hparams, OptimizerRegistry};
use bocb_trial_runner::regime::Regime;
use bocb_trial_runner::{with_recipe_rates, Learner, TrialError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;
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
    #[error(
        "--resolution times the batches after the first: --batches and --batch must be at least 2"
    )]
    FullResNothingToTime,
    #[error("{}: --resolution streams an image folder (train/CLASS/*.jpg, val/CLASS/...); make one with `bocb data synth --format image-folder --side 500 --jpeg --out DIR`", .0.display())]
    NotAFolder(PathBuf),
    #[error("recipe `{0}` crops nothing, and timm's training transform always crops: choose a recipe with a crop")]
    NoCrop(String),
    #[error("timm's side ({}): {message}", .python.display())]
    Timm { python: PathBuf, message: String },
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

/// What `bocb bench data --resolution N` measures: bocb's streaming pipeline
/// against timm's on the same image folder.
pub struct FullResBenchConfig {
    /// An image folder (`train/CLASS/*.jpg`, ...).
    pub dataset: PathBuf,
    pub recipe: String,
    /// The side of the training crops.
    pub resolution: usize,
    pub batch: usize,
    /// Pipeline threads of bocb, `DataLoader` worker processes of timm (0:
    /// all cores but one).
    pub workers: usize,
    /// Batches each side is timed over (at most one epoch).
    pub batches: usize,
    /// A python with torch, torchvision and timm.
    pub python: PathBuf,
}

/// Both pipelines' rates at full resolution.
#[derive(Debug, Clone, Serialize)]
pub struct FullResBenchReport {
    pub dataset: String,
    pub recipe: String,
    pub resolution: usize,
    pub batch: usize,
    pub workers: usize,
    /// Images each side timed (the batches after the first: worker start-up
    /// is left out of both).
    pub images: usize,
    /// bocb: files read, decoded (zune-jpeg), cropped, resized, flipped and
    /// RandAugment-ed into `u8` batches.
    pub bocb_images_per_sec: f64,
    /// timm: `ImageFolder` + `create_transform(is_training=True)` (PIL) +
    /// `DataLoader`, float batches (ToTensor and Normalize included).
    pub timm_images_per_sec: f64,
    /// bocb over timm.
    pub ratio: f64,
    /// Images per second of CPU time over the whole pass (every thread or
    /// worker process, the first batch included): the rate per core, which
    /// other load on the machine moves far less than the wall-clock rates.
    pub bocb_images_per_cpu_sec: f64,
    pub timm_images_per_cpu_sec: f64,
    /// Peak resident memory of the bocb process during its pass (libtorch
    /// included), in MiB; `None` without `/proc`.
    pub bocb_peak_rss_mib: Option<f64>,
}

/// The reference side (see the script's docstring).
const TIMM_DATA_SCRIPT: &str = include_str!("../../../scripts/bench_data.py");

/// Times bocb's streamed training pipeline on `config.dataset` at
/// `config.resolution`, then timm's on the same folder.
pub fn bench_full_resolution(
    config: &FullResBenchConfig,
) -> Result<FullResBenchReport, DataBenchError> {
    if config.batches < 2 || config.batch < 2 {
        return Err(DataBenchError::FullResNothingToTime);
    }
    let workers = match config.workers {
        0 => bocb_trial_runner::batches::default_workers(),
        n => n,
    };
    let recipe: Recipe = RecipeBook::builtin().recipe(&config.recipe)?.clone();
    let dir = &config.dataset;
    if data::detect_format(dir) != Some(data::DatasetFormat::ImageFolder) {
        return Err(DataBenchError::NotAFolder(dir.clone()));
    }
    let splits = FolderSplits::open(dir, Some(config.resolution), BadFiles::Fail)?;
    let transform = FullResTransform::train(Some(&recipe), config.resolution);
    let FullResTransform::Train {
        crop: Some(crop),
        interpolation,
        hflip,
        rand_augment,
        ..
    } = &transform
    else {
        return Err(DataBenchError::NoCrop(config.recipe.clone()));
    };
    let mut order: Vec<usize> = (0..splits.train.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(0));
    let batches = config.batches.min(order.len() / config.batch);
    if batches < 2 {
        return Err(DataBenchError::BatchTooLarge {
            batch: config.batch,
            images: order.len() / 2,
        });
    }
    order.truncate(batches * config.batch);

    let peak = PeakMemory::start(Device::Cpu);
    let cpu_before = process_cpu_seconds();
    let plan = StreamPlan {
        order,
        seed: 0,
        transform: &transform,
        drop_last: true,
    };
    // As timm's: the clock starts at the first batch.
    let mut started: Option<Instant> = None;
    for_each_file_batch(
        &splits.train,
        config.batch,
        plan,
        0,
        workers,
        BadFiles::Fail,
        |batch| {
            std::hint::black_box(batch);
            started.get_or_insert_with(Instant::now);
            Ok::<(), DataBenchError>(())
        },
    )?;
    let images = (batches - 1) * config.batch;
    let seconds = started
        .expect("at least two batches")
        .elapsed()
        .as_secs_f64();
    let bocb_images_per_sec = images as f64 / seconds;
    let bocb_images_per_cpu_sec =
        (batches * config.batch) as f64 / (process_cpu_seconds() - cpu_before);
    let bocb_peak_rss_mib = peak.read(Device::Cpu).map(|b| b as f64 / (1 << 20) as f64);

    let interpolation = match interpolation {
        Interpolation::Bilinear => "bilinear",
        Interpolation::Bicubic => "bicubic",
    };
    let auto_augment = rand_augment.as_ref().map(|ra| {
        format!(
            "rand-m{}-n{}-mstd{}-inc1",
            ra.magnitude, ra.num_ops, ra.magnitude_std
        )
    });
    let request = json!({
        "train": dir.join("train"),
        "side": config.resolution,
        "scale": [crop.scale.0, crop.scale.1],
        "ratio": [crop.ratio.0, crop.ratio.1],
        "hflip": hflip,
        "auto_augment": auto_augment,
        "interpolation": interpolation,
        "batch": config.batch,
        "batches": batches,
        "workers": workers,
    });
    let (timm, timm_images_per_cpu_sec) = run_timm(&config.python, &request)?;
    Ok(FullResBenchReport {
        dataset: dir.display().to_string(),
        recipe: config.recipe.clone(),
        resolution: config.resolution,
        batch: config.batch,
        workers,
        images,
        bocb_images_per_sec,
        timm_images_per_sec: timm,
        ratio: bocb_images_per_sec / timm,
        bocb_images_per_cpu_sec,
        timm_images_per_cpu_sec,
        bocb_peak_rss_mib,
    })
}

/// User and system CPU time of this process so far, all threads.
fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs the reference script; its images per second of wall-clock time and
/// of CPU time.
fn run_timm(python: &Path, request: &serde_json::Value) -> Result<(f64, f64), DataBenchError> {
    let failed = |message: String| DataBenchError::Timm {
        python: python.to_owned(),
        message,
    };
    let output = Command::new(python)
        .arg("-c")
        .arg(TIMM_DATA_SCRIPT)
        .arg(request.to_string())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reply: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| {
            failed(format!(
                "no reply ({}; its messages are above)",
                output.status
            ))
        })?;
    if let Some(missing) = reply.get("missing") {
        return Err(failed(format!(
            "lacks {missing}; create the venv with `make venv`, or pass --python PATH of a python with torch, torchvision and timm"
        )));
    }
    if let Some(error) = reply.get("error").and_then(|e| e.as_str()) {
        return Err(failed(error.to_string()));
    }
    let rate = |key: &str| {
        reply[key]
            .as_f64()
            .filter(|&rate| rate > 0.0)
            .ok_or_else(|| failed(format!("replied `{reply}`")))
    };
    Ok((rate("images_per_sec")?, rate("images_per_cpu_sec")?))
}

/// The full-resolution report as text.
pub fn render_full_res(report: &FullResBenchReport) -> String {
    let per_worker = |rate: f64| rate / report.workers as f64;
    let rss = report
        .bocb_peak_rss_mib
        .map_or("unknown".to_string(), |mib| format!("{mib:.0} MiB"));
    format!(
        "training pipeline, recipe {} at {}px on {} ({} workers, {} images timed):\n\
         bocb: {:.0} images/s ({:.0} per worker, {:.0} per CPU-second), peak RSS {rss}\n\
         timm: {:.0} images/s ({:.0} per worker, {:.0} per CPU-second)\n\
         bocb / timm: {:.2}x (goal: 1.5x); per CPU-second {:.2}x\n",
        report.recipe,
        report.resolution,
        report.dataset,
        report.workers,
        report.images,
        report.bocb_images_per_sec,
        per_worker(report.bocb_images_per_sec),
        report.bocb_images_per_cpu_sec,
        report.timm_images_per_sec,
        per_worker(report.timm_images_per_sec),
        report.timm_images_per_cpu_sec,
        report.ratio,
        report.bocb_images_per_cpu_sec / report.timm_images_per_cpu_sec,
    )
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
    fn full_resolution_times_bocb_and_timm_on_the_same_jpeg_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            classes: 2,
            train: 24,
            test: 2,
            seed: 1,
        };
        let layout = bocb_trial_runner::data::PhotoLayout {
            side: 80,
            jpeg: true,
        };
        bocb_trial_runner::data::write_synthetic_photos(dir.path(), &cfg, layout).unwrap();
        let mut config = FullResBenchConfig {
            dataset: dir.path().to_owned(),
            recipe: "rsb_a2".into(),
            resolution: 48,
            batch: 4,
            workers: 2,
            batches: 6,
            python: super::super::BUILD_PYTHON.into(),
        };
        let report = bench_full_resolution(&config).unwrap();
        assert_eq!(report.images, 5 * 4);
        assert!(report.bocb_images_per_sec > 0.0 && report.timm_images_per_sec > 0.0);
        for per_cpu in [
            report.bocb_images_per_cpu_sec,
            report.timm_images_per_cpu_sec,
        ] {
            assert!(per_cpu.is_finite() && per_cpu > 0.0, "{report:?}");
        }
        let ratio = report.bocb_images_per_sec / report.timm_images_per_sec;
        assert!((report.ratio - ratio).abs() < 1e-9 * ratio);
        let text = render_full_res(&report);
        assert!(
            text.contains("bocb / timm: ")
                && text.contains("peak RSS")
                && text.contains("per CPU-second"),
            "{text}"
        );

        config.dataset = dir.path().join("train");
        let err = bench_full_resolution(&config).unwrap_err().to_string();
        assert!(
            err.contains("--resolution streams an image folder"),
            "{err}"
        );
    }

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

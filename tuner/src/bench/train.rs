//! `bocb bench train`: training images per second of a registry backbone
//! (forward in train mode, cross-entropy, backward, optimizer step on a
//! fixed random batch), bocb's against the PyTorch reference definition of
//! the same model at the same batch, input size, optimizer and thread count.
//!
//! The reference side is `scripts/bench_train.py`; its models come from
//! `scripts/reference_backbones.py` (full size) and
//! `scripts/export_backbone_fixtures.py` (`@micro`), and both sides use the
//! first case of the optimizer in `scripts/record_optim_cases.py`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use bocb_spec::UnknownName;
use bocb_trial_runner::batches::channels_last;
use bocb_trial_runner::device::device_name;
use bocb_trial_runner::models::{parameter_count, torchscript, BackboneRegistry, Preset};
use bocb_trial_runner::optim::replay::hparams_from_json;
use bocb_trial_runner::optim::{Hparams, OptimError, OptimizerRegistry};
use bocb_trial_runner::precision::Precision;
use bocb_trial_runner::Learner;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tch::{Device, Tensor};

use super::{median, BenchError, ReferencePython};
use bocb_trial_runner::device::synchronize;
use bocb_trial_runner::probe::random_batch;

const TRAIN_SCRIPT: &str = include_str!("../../../scripts/bench_train.py");

/// The scripts the reference side imports, by module name, in import order.
const REFERENCE_MODULES: [(&str, &str); 3] = [
    (
        "bench_optim",
        include_str!("../../../scripts/bench_optim.py"),
    ),
    (
        "reference_backbones",
        include_str!("../../../scripts/reference_backbones.py"),
    ),
    (
        "export_backbone_fixtures",
        include_str!("../../../scripts/export_backbone_fixtures.py"),
    ),
];

/// Which presets `--all` benches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetChoice {
    Micro,
    Full,
    Both,
}

impl FromStr for PresetChoice {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "micro" => Ok(PresetChoice::Micro),
            "full" => Ok(PresetChoice::Full),
            "both" => Ok(PresetChoice::Both),
            other => Err(UnknownName {
                what: "preset",
                given: other.to_string(),
                valid: "micro, full, both",
            }),
        }
    }
}

/// `--precision` of `bocb bench train`: `fp32` or `bf16` (both sides the
/// same, so no `auto`).
pub fn parse_bench_precision(text: &str) -> Result<Precision, UnknownName> {
    match text {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        other => Err(UnknownName {
            what: "precision",
            given: other.to_string(),
            valid: "fp32, bf16",
        }),
    }
}

/// Every registered backbone in `presets`, each `@micro` before its full
/// size (the quick result first).
pub fn select_backbones(registry: &BackboneRegistry, presets: PresetChoice) -> Vec<String> {
    let mut names = Vec::new();
    for name in registry.names() {
        if presets != PresetChoice::Full {
            names.push(format!("{name}@micro"));
        }
        if presets != PresetChoice::Micro {
            names.push(name.to_string());
        }
    }
    names
}

/// What `bocb bench train` runs.
#[derive(Debug, Clone)]
pub struct TrainBenchConfig {
    /// Registry names, `@micro` allowed.
    pub backbones: Vec<String>,
    pub batch: usize,
    pub classes: i64,
    pub device: Device,
    /// Untimed steps first (optimizer state and allocator caches fill up).
    pub warmup: usize,
    /// Timed steps; the median is reported.
    pub steps: usize,
    pub optimizer: String,
    /// Intra-op threads of both sides; None keeps libtorch's default.
    pub threads: Option<usize>,
    /// Both sides train on channels-last batches.
    pub channels_last: bool,
    /// The forward pass's arithmetic on both sides (bf16: autocast).
    pub precision: Precision,
    /// A python with torch, torchvision, timm and pytorch_optimizer.
    pub python: PathBuf,
}

impl TrainBenchConfig {
    /// Rejects what would fail only after the python has started.
    fn check(
        &self,
        backbones: &BackboneRegistry,
        optimizers: &OptimizerRegistry,
    ) -> Result<(), BenchError> {
        if self.steps == 0 {
            return Err(BenchError::NoSteps);
        }
        if self.batch == 0 {
            return Err(BenchError::NoBatch);
        }
        for name in &self.backbones {
            if name.starts_with(torchscript::PREFIX) {
                return Err(BenchError::NoReferenceModel(name.clone()));
            }
            backbones.lookup(name)?;
        }
        if !optimizers.contains(&self.optimizer) {
            return Err(BenchError::UnknownOptimizer {
                name: self.optimizer.clone(),
                valid: optimizers.names().join(", "),
            });
        }
        Ok(())
    }
}

/// One backbone's training speed on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct TrainRow {
    /// The registry name without its preset.
    pub backbone: String,
    /// `full` or `micro`.
    pub preset: &'static str,
    /// Trainable parameters of bocb's model.
    pub params: i64,
    /// Parameters of the reference model (equal unless a definition drifted).
    pub reference_params: i64,
    pub input_size: i64,
    /// Median milliseconds per training step.
    pub bocb_ms: f64,
    pub reference_ms: f64,
    pub bocb_images_per_sec: f64,
    pub reference_images_per_sec: f64,
    /// bocb's images per second over the reference's: above 1.0 is faster.
    pub ratio: f64,
}

impl TrainRow {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        preset: Preset,
        params: i64,
        reference_params: i64,
        input_size: i64,
        batch: usize,
        bocb_ms: f64,
        reference_ms: f64,
    ) -> Self {
        let per_sec = |ms: f64| batch as f64 * 1e3 / ms;
        TrainRow {
            backbone: name.split('@').next().unwrap_or(name).to_string(),
            preset: match preset {
                Preset::Full => "full",
                Preset::Micro => "micro",
            },
            params,
            reference_params,
            input_size,
            bocb_ms,
            reference_ms,
            bocb_images_per_sec: per_sec(bocb_ms),
            reference_images_per_sec: per_sec(reference_ms),
            ratio: reference_ms / bocb_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub device: String,
    /// Whether bocb's side used its caching CPU allocator.
    pub cpu_cache: bool,
    /// Intra-op threads, the same on both sides.
    pub threads: usize,
    pub batch: usize,
    pub classes: i64,
    pub optimizer: String,
    /// The reference optimizer class, e.g. `torch.optim.SGD`.
    pub reference_optimizer: String,
    /// `fp32` or `bf16` (autocast), the same on both sides.
    pub precision: String,
    pub warmup: usize,
    pub steps: usize,
    pub rows: Vec<TrainRow>,
}

/// Times training steps of every backbone of `config` against its
/// reference, alternating their steps so that both see the same load.
pub fn bench_training(
    config: &TrainBenchConfig,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
    show_progress: bool,
) -> Result<TrainReport, BenchError> {
    config.check(backbones, optimizers)?;
    let threads = config
        .threads
        .unwrap_or_else(|| tch::get_num_threads().max(1) as usize);
    tch::set_num_threads(threads as i32);

    let progress = if show_progress {
        ProgressBar::new((config.backbones.len() * (config.warmup + config.steps)) as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    progress.set_message("starting the reference python");
    let mut reference = ReferencePython::start(&config.python, TRAIN_SCRIPT)?;
    reference.request(&json!({ "modules": REFERENCE_MODULES }))?;
    let cases = reference.cases()?;
    let case = cases
        .get(&config.optimizer)
        .ok_or_else(|| BenchError::NoCase(config.optimizer.clone()))?;
    let optim_err = |source| BenchError::Optim {
        name: config.optimizer.clone(),
        source,
    };
    let hparams = hparams_from_json(&case.kwargs).map_err(optim_err)?;
    let lr = *hparams.get("lr").ok_or_else(|| {
        optim_err(OptimError::MissingHparam {
            optimizer: config.optimizer.clone(),
            name: "lr".into(),
        })
    })?;

    let mut rows = Vec::with_capacity(config.backbones.len());
    for name in &config.backbones {
        let (entry, preset) = backbones.lookup(name)?;
        let side = entry.input_size(preset);
        progress.set_message(format!("{name} against its PyTorch reference"));
        let reference_err = |e| match e {
            BenchError::Python { message, .. } => BenchError::Reference {
                name: name.clone(),
                class: case.class.clone(),
                message,
            },
            other => other,
        };
        let setup = reference
            .request(&json!({
                "setup": name,
                "classes": config.classes,
                "batch": config.batch,
                "optimizer": config.optimizer,
                "device": device_name(config.device),
                "threads": threads,
                "channels_last": config.channels_last,
                "precision": config.precision.name(),
            }))
            .map_err(reference_err)?;
        let reference_params = setup["params"].as_i64().unwrap_or(-1);
        let reference_side = setup["side"].as_i64().unwrap_or(-1);
        let reference_threads = setup["threads"].as_u64().unwrap_or(0) as usize;
        if reference_side != side || reference_threads != threads {
            return Err(reference_err(reference.error(format!(
                "set up {name} at input {reference_side} with {reference_threads} threads, \
                 where bocb uses input {side} with {threads} threads"
            ))));
        }
        let mut ours = BocbSide::new(backbones, name, optimizers, config, &hparams, side)?;
        let (mut bocb_ms, mut reference_ms) = (Vec::new(), Vec::new());
        for step in 0..config.warmup + config.steps {
            let bocb = ours.step(lr).map_err(|source| BenchError::Train {
                backbone: name.clone(),
                source: source.into(),
            })?;
            let theirs = reference.step().map_err(reference_err)?;
            if step >= config.warmup {
                bocb_ms.push(bocb);
                reference_ms.push(theirs);
            }
            progress.inc(1);
        }
        rows.push(TrainRow::new(
            name,
            preset,
            parameter_count(&ours.learner.vs),
            reference_params,
            side,
            config.batch,
            median(bocb_ms),
            median(reference_ms),
        ));
    }
    progress.finish_and_clear();
    Ok(TrainReport {
        device: device_name(config.device),
        cpu_cache: bocb_trial_runner::cpu_cache::install(),
        threads,
        batch: config.batch,
        classes: config.classes,
        optimizer: config.optimizer.clone(),
        reference_optimizer: case.class.clone(),
        precision: config.precision.name().into(),
        warmup: config.warmup,
        steps: config.steps,
        rows,
    })
}

/// bocb's model and optimizer on a fixed random batch.
struct BocbSide {
    learner: Learner,
    images: Tensor,
    labels: Tensor,
    device: Device,
}

impl BocbSide {
    fn new(
        backbones: &BackboneRegistry,
        name: &str,
        optimizers: &OptimizerRegistry,
        config: &TrainBenchConfig,
        hparams: &Hparams,
        side: i64,
    ) -> Result<Self, BenchError> {
        let mut learner = Learner::new(
            backbones,
            name,
            optimizers,
            &config.optimizer,
            hparams,
            config.classes,
            config.device,
            false,
            0,
        )
        .map_err(|source| BenchError::Train {
            backbone: name.to_string(),
            source,
        })?;
        learner.precision = config.precision;
        let (images, labels) = random_batch(config.batch, side, config.classes, config.device, 1);
        let images = if config.channels_last {
            channels_last(&images)
        } else {
            images
        };
        Ok(BocbSide {
            learner,
            images,
            labels,
            device: config.device,
        })
    }

    /// Milliseconds of one training step.
    fn step(&mut self, lr: f64) -> Result<f64, tch::TchError> {
        synchronize(self.device);
        let start = Instant::now();
        // Only the step is timed; its loss is not needed.
        let _loss = self.learner.step(&self.images, &self.labels, lr)?;
        synchronize(self.device);
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }
}

/// `bocb bench train`'s table and goal line.
pub fn render_train(report: &TrainReport) -> String {
    let mut out = format!(
        "training steps (forward, cross-entropy, backward, {} step as {}) at batch {} in {}, \
         {} classes, on {} with {} threads on both sides; median of {} steps after {} warm-up\n",
        report.optimizer,
        report.reference_optimizer,
        report.batch,
        report.precision,
        report.classes,
        report.device,
        report.threads,
        report.steps,
        report.warmup
    );
    if let Some(note) = super::allocator_note(&report.device, report.cpu_cache) {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(
        out,
        "{:<20} {:<6} {:>12} {:>6} {:>11} {:>14} {:>7}",
        "backbone", "preset", "params", "input", "bocb img/s", "PyTorch img/s", "ratio"
    );
    let mut missed = Vec::new();
    let mut drifted = Vec::new();
    for row in &report.rows {
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:>12} {:>6} {:>11.1} {:>14.1} {:>6.2}x",
            row.backbone,
            row.preset,
            row.params,
            row.input_size,
            row.bocb_images_per_sec,
            row.reference_images_per_sec,
            row.ratio
        );
        let label = match row.preset {
            "micro" => format!("{}@micro", row.backbone),
            _ => row.backbone.clone(),
        };
        if row.ratio < 1.0 {
            missed.push(format!("{label} ({:.2}x)", row.ratio));
        }
        if row.params != row.reference_params {
            drifted.push(format!("{label} ({})", row.reference_params));
        }
    }
    if !drifted.is_empty() {
        let _ = writeln!(
            out,
            "the reference has another parameter count for: {}",
            drifted.join(", ")
        );
    }
    let verdict = if missed.is_empty() {
        format!("met by all {}", report.rows.len())
    } else {
        format!("missed by {}", missed.join(", "))
    };
    let _ = writeln!(
        out,
        "goal: bocb at or above 1.0x PyTorch's images per second: {verdict}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backbones: &[&str]) -> TrainBenchConfig {
        TrainBenchConfig {
            backbones: backbones.iter().map(|b| b.to_string()).collect(),
            batch: 4,
            classes: 10,
            device: Device::Cpu,
            warmup: 1,
            steps: 2,
            optimizer: "sgd_m".into(),
            threads: None,
            channels_last: false,
            precision: Precision::Fp32,
            python: PathBuf::from("/nonexistent/python"),
        }
    }

    #[test]
    fn all_selects_every_registered_backbone_in_the_asked_presets() {
        let registry = BackboneRegistry::builtin();
        let count = registry.names().len();
        let micro = select_backbones(&registry, PresetChoice::Micro);
        let full = select_backbones(&registry, PresetChoice::Full);
        let both = select_backbones(&registry, PresetChoice::Both);
        assert_eq!(
            (micro.len(), full.len(), both.len()),
            (count, count, 2 * count)
        );
        assert!(micro.iter().all(|n| n.ends_with("@micro")));
        assert!(full.iter().all(|n| !n.contains('@')));
        assert_eq!(both[0], format!("{}@micro", full[0]));
        assert_eq!(both[1], full[0]);
        for name in &both {
            assert!(registry.lookup(name).is_ok(), "{name}");
        }
        assert!("tiny"
            .parse::<PresetChoice>()
            .unwrap_err()
            .to_string()
            .contains("micro, full, both"));
    }

    #[test]
    fn bad_configs_are_refused_before_the_python_starts() {
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        let run = |config: &TrainBenchConfig| {
            bench_training(config, &backbones, &optimizers, false).unwrap_err()
        };
        let err = run(&config(&["resnet19"]));
        assert!(err.to_string().contains("resnet18_cifar"), "{err}");
        let err = run(&config(&["resnet18_cifar@tiny"]));
        assert!(err.to_string().contains("@micro"), "{err}");
        let err = run(&config(&["torchscript:model.pt"]));
        assert!(matches!(err, BenchError::NoReferenceModel(_)), "{err}");
        let mut bad = config(&["resnet18_cifar@micro"]);
        bad.optimizer = "adamz".into();
        assert!(run(&bad).to_string().contains("adamw"));
        bad = config(&["resnet18_cifar@micro"]);
        bad.steps = 0;
        assert!(matches!(run(&bad), BenchError::NoSteps));
        // A good config gets as far as starting the python, which is missing.
        let err = run(&config(&["resnet18_cifar@micro"]));
        assert!(matches!(err, BenchError::PythonStart { .. }), "{err}");
        assert!(err.to_string().contains("make venv"), "{err}");
    }

    #[test]
    fn bocb_side_trains_its_model_on_the_fixed_batch() {
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        let config = config(&["resnet18_cifar@micro"]);
        let hparams = [("lr".to_string(), 0.1), ("momentum".to_string(), 0.9)]
            .into_iter()
            .collect();
        let mut side = BocbSide::new(
            &backbones,
            "resnet18_cifar@micro",
            &optimizers,
            &config,
            &hparams,
            32,
        )
        .unwrap();
        assert_eq!(side.images.size(), [4, 3, 32, 32]);
        let before: Vec<Tensor> = side
            .learner
            .vs
            .trainable_variables()
            .iter()
            .map(Tensor::copy)
            .collect();
        for _ in 0..3 {
            assert!(side.step(0.1).unwrap() > 0.0);
        }
        let after = side.learner.vs.trainable_variables();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| !b.equal(a))
            .count();
        assert_eq!(moved, after.len(), "every parameter is updated");
    }

    #[test]
    fn rows_and_table_put_bocb_over_pytorch() {
        // bocb 100 ms and PyTorch 200 ms per step of 64 images.
        let row = TrainRow::new(
            "vit_tiny_cifar@micro",
            Preset::Micro,
            1000,
            1000,
            32,
            64,
            100.0,
            200.0,
        );
        assert_eq!(row.backbone, "vit_tiny_cifar");
        assert_eq!(row.bocb_images_per_sec, 640.0);
        assert_eq!(row.reference_images_per_sec, 320.0);
        assert_eq!(row.ratio, 2.0);
        let slow = TrainRow::new("alexnet", Preset::Full, 5, 6, 224, 64, 400.0, 200.0);
        let report = TrainReport {
            device: "cpu".into(),
            threads: 2,
            batch: 64,
            classes: 100,
            optimizer: "sgd_m".into(),
            reference_optimizer: "torch.optim.SGD".into(),
            precision: "bf16".into(),
            warmup: 1,
            steps: 3,
            rows: vec![row, slow],
            cpu_cache: true,
        };
        let table = render_train(&report);
        assert!(table.contains("through its caching allocator"), "{table}");
        assert!(
            table.contains("2.00x") && table.contains("0.50x"),
            "{table}"
        );
        assert!(table.contains("missed by alexnet (0.50x)"), "{table}");
        assert!(
            table.contains("another parameter count for: alexnet (6)"),
            "{table}"
        );
        assert!(table.contains("2 threads on both sides"), "{table}");
        assert!(table.contains("at batch 64 in bf16"), "{table}");
        let without = render_train(&TrainReport {
            cpu_cache: false,
            ..report.clone()
        });
        assert!(
            without.contains("caching CPU allocator is off"),
            "{without}"
        );
        let cuda = render_train(&TrainReport {
            device: "cuda:0".into(),
            ..report
        });
        assert!(!cuda.contains("allocator"), "{cuda}");
    }
}

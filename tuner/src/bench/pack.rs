//! `bocb bench pack`: aggregate training images per second and peak memory
//! of N trials training at once on one device, each in its own thread and,
//! on CUDA, its own stream, as `trials_per_device` runs them. One trial's
//! images per second is the reference the others are measured against.

use std::fmt::Write as _;
use std::sync::Barrier;
use std::time::Instant;

use bocb_search_spaces::Catalog;
use bocb_trial_runner::device::{device_name, synchronize_own_stream, use_own_stream};
use bocb_trial_runner::memory::PeakMemory;
use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::optim::{Hparams, OptimizerRegistry};
use bocb_trial_runner::precision::Precision;
use bocb_trial_runner::{Learner, TrialError};
use serde::Serialize;
use tch::{Device, Tensor};

use super::BenchError;
use bocb_trial_runner::probe::random_batch;

/// What `bocb bench pack` runs.
#[derive(Debug, Clone)]
pub struct PackBenchConfig {
    /// A registry name, `@micro` allowed.
    pub backbone: String,
    pub batch: usize,
    pub classes: i64,
    pub device: Device,
    /// Numbers of trials training at once, each measured on its own.
    pub levels: Vec<usize>,
    /// Untimed steps of every trial first.
    pub warmup: usize,
    /// Timed steps of every trial.
    pub steps: usize,
    /// Every trial's optimizer, at its search space's grid centre.
    pub optimizer: String,
    pub precision: Precision,
}

/// One number of trials at once.
#[derive(Debug, Clone, Serialize)]
pub struct PackRow {
    pub trials: usize,
    /// Training images per second of all trials together.
    pub images_per_sec: f64,
    /// `images_per_sec` over that of the first row (one trial, by default).
    pub speedup: f64,
    /// Peak memory of all trials together: the CUDA allocator's peak of
    /// allocated bytes, or the process's resident high-water mark on the CPU.
    pub peak_memory_bytes: Option<u64>,
    /// Why this number of trials could not train (out of memory, say).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub device: String,
    pub backbone: String,
    pub batch: usize,
    pub optimizer: String,
    pub precision: String,
    pub warmup: usize,
    pub steps: usize,
    pub rows: Vec<PackRow>,
}

impl PackReport {
    /// The row of the highest aggregate images per second.
    pub fn best(&self) -> Option<&PackRow> {
        self.rows
            .iter()
            .filter(|r| r.error.is_none())
            .max_by(|a, b| a.images_per_sec.total_cmp(&b.images_per_sec))
    }
}

/// The aggregate speed-up that packing should reach on an H100-class GPU.
pub const PACK_GOAL: f64 = 3.0;

/// Trains `config.levels` numbers of trials at once, one level after the
/// other; a level that fails (out of memory) ends the bench with its error.
pub fn bench_packing(
    config: &PackBenchConfig,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
    catalog: &Catalog,
) -> Result<PackReport, BenchError> {
    if config.steps == 0 {
        return Err(BenchError::NoSteps);
    }
    if config.batch == 0 {
        return Err(BenchError::NoBatch);
    }
    if config.levels.contains(&0) || config.levels.is_empty() {
        return Err(BenchError::NoTrials);
    }
    backbones.lookup(&config.backbone)?;
    if !optimizers.contains(&config.optimizer) {
        return Err(BenchError::UnknownOptimizer {
            name: config.optimizer.clone(),
            valid: optimizers.names().join(", "),
        });
    }
    let space = catalog
        .optimizer(&config.optimizer)
        .map_err(|_| BenchError::NoSearchSpace(config.optimizer.clone()))?;
    let mut hparams: Hparams = space.default_params();
    hparams.insert("lr".into(), space.lr.centre());
    hparams.insert("weight_decay".into(), space.weight_decay.centre());

    // Libraries' one-time set-up (kernels chosen, handles made) stays out of
    // the first level's numbers.
    let warm_up = PackBenchConfig {
        steps: 1,
        ..config.clone()
    };
    let _ = train_at_once(&warm_up, 1, backbones, optimizers, &hparams);
    let mut rows: Vec<PackRow> = Vec::new();
    for &trials in &config.levels {
        let peak = PeakMemory::start(config.device);
        let measured = train_at_once(config, trials, backbones, optimizers, &hparams);
        let peak_memory_bytes = peak.read(config.device);
        let row = match measured {
            Ok(images_per_sec) => PackRow {
                trials,
                images_per_sec,
                speedup: rows
                    .first()
                    .map_or(1.0, |first| images_per_sec / first.images_per_sec),
                peak_memory_bytes,
                error: None,
            },
            Err(e) => PackRow {
                trials,
                images_per_sec: 0.0,
                speedup: 0.0,
                peak_memory_bytes,
                error: Some(e.to_string()),
            },
        };
        let failed = row.error.is_some();
        rows.push(row);
        if failed {
            break;
        }
    }
    Ok(PackReport {
        device: device_name(config.device),
        backbone: config.backbone.clone(),
        batch: config.batch,
        optimizer: config.optimizer.clone(),
        precision: config.precision.name().into(),
        warmup: config.warmup,
        steps: config.steps,
        rows,
    })
}

/// Aggregate images per second of `trials` learners stepping at once, each
/// in its own thread on its own stream, timed from the moment all are warm
/// until the last one's queued work is done.
fn train_at_once(
    config: &PackBenchConfig,
    trials: usize,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
    hparams: &Hparams,
) -> Result<f64, BenchError> {
    let lr = hparams["lr"];
    // The trials, then this thread, which starts the clock.
    let warm = Barrier::new(trials + 1);
    let train_err = |source: TrialError| BenchError::Train {
        backbone: config.backbone.clone(),
        source,
    };
    let (started, finished) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..trials)
            .map(|trial| {
                let warm = &warm;
                scope.spawn(move || {
                    // Every trial reaches the barrier, or the clock never starts.
                    let prepared = prepare(config, trial as u64, backbones, optimizers, hparams);
                    let warmed = prepared.and_then(|(mut learner, images, labels)| {
                        for _ in 0..config.warmup {
                            let _loss = learner.step(&images, &labels, lr)?;
                        }
                        synchronize_own_stream(config.device);
                        Ok((learner, images, labels))
                    });
                    warm.wait();
                    let (mut learner, images, labels) = warmed?;
                    for _ in 0..config.steps {
                        let _loss = learner.step(&images, &labels, lr)?;
                    }
                    synchronize_own_stream(config.device);
                    Ok::<_, TrialError>(Instant::now())
                })
            })
            .collect();
        warm.wait();
        let started = Instant::now();
        let finished: Result<Vec<Instant>, TrialError> = handles
            .into_iter()
            .map(|h| h.join().expect("a packed trial's thread panicked"))
            .collect();
        (started, finished)
    });
    let last = finished
        .map_err(train_err)?
        .into_iter()
        .max()
        .expect("at least one trial");
    let seconds = last.duration_since(started).as_secs_f64();
    Ok((trials * config.steps * config.batch) as f64 / seconds)
}

/// One trial's learner on its own stream and its fixed random batch.
fn prepare(
    config: &PackBenchConfig,
    seed: u64,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
    hparams: &Hparams,
) -> Result<(Learner, Tensor, Tensor), TrialError> {
    use_own_stream(config.device).map_err(TrialError::Device)?;
    let mut learner = Learner::new(
        backbones,
        &config.backbone,
        optimizers,
        &config.optimizer,
        hparams,
        config.classes,
        config.device,
        false,
        seed,
    )?;
    learner.precision = config.precision;
    let (entry, preset) = backbones.lookup(&config.backbone)?;
    let side = entry.input_size(preset);
    let (images, labels) = random_batch(config.batch, side, config.classes, config.device, seed);
    Ok((learner, images, labels))
}

/// `bocb bench pack`'s table and goal line.
pub fn render_pack(report: &PackReport) -> String {
    let mut out = format!(
        "{} trials of {} (batch {}, {}, {}) training at once on {}, each in its own thread \
         and stream; {} timed steps each after {} warm-up\n",
        report
            .rows
            .iter()
            .map(|r| r.trials.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        report.backbone,
        report.batch,
        report.optimizer,
        report.precision,
        report.device,
        report.steps,
        report.warmup,
    );
    let _ = writeln!(
        out,
        "{:>7} {:>13} {:>9} {:>13}",
        "trials", "images/s", "speed-up", "peak memory"
    );
    for row in &report.rows {
        let memory = row
            .peak_memory_bytes
            .map_or("-".into(), |b| format!("{:.2} GB", b as f64 / 1e9));
        match &row.error {
            None => {
                let _ = writeln!(
                    out,
                    "{:>7} {:>13.1} {:>8.2}x {:>13}",
                    row.trials, row.images_per_sec, row.speedup, memory
                );
            }
            Some(e) => {
                let _ = writeln!(out, "{:>7} failed: {e}", row.trials);
            }
        }
    }
    if let Some(best) = report.best() {
        let verdict = if best.speedup >= PACK_GOAL {
            "met"
        } else {
            "missed"
        };
        let _ = writeln!(
            out,
            "goal: packed trials at least {PACK_GOAL:.0}x one trial's images/s (on an H100-class \
             GPU): {verdict}, best {:.2}x with {} trials",
            best.speedup, best.trials
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(levels: &[usize]) -> PackBenchConfig {
        PackBenchConfig {
            backbone: "resnet18_cifar@micro".into(),
            batch: 8,
            classes: 10,
            device: Device::Cpu,
            levels: levels.to_vec(),
            warmup: 1,
            steps: 2,
            optimizer: "sgd_m".into(),
            precision: Precision::Fp32,
        }
    }

    #[test]
    fn trials_train_at_once_and_are_counted() {
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        let report = bench_packing(
            &config(&[1, 2]),
            &backbones,
            &optimizers,
            &Catalog::builtin(),
        )
        .unwrap();
        assert_eq!(report.rows.len(), 2);
        let (one, two) = (&report.rows[0], &report.rows[1]);
        assert_eq!((one.trials, two.trials), (1, 2));
        assert!(one.error.is_none() && two.error.is_none(), "{report:?}");
        assert!(one.images_per_sec > 0.0 && two.images_per_sec > 0.0);
        assert_eq!(one.speedup, 1.0);
        assert!((two.speedup - two.images_per_sec / one.images_per_sec).abs() < 1e-12);
        assert!(one.peak_memory_bytes.is_some_and(|b| b > 0));
        let table = render_pack(&report);
        assert!(
            table.contains("1, 2 trials of resnet18_cifar@micro"),
            "{table}"
        );
        assert!(table.contains("goal: packed trials at least 3x"), "{table}");
    }

    #[test]
    fn a_level_that_cannot_train_ends_the_bench_with_its_error() {
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        let mut bad = config(&[1, 2]);
        // No machine here has eight GPUs: every trial's stream is refused.
        bad.device = Device::Cuda(7);
        let report = bench_packing(&bad, &backbones, &optimizers, &Catalog::builtin());
        let report = match report {
            Ok(report) => report,
            Err(e) => panic!("a failing level is a row, not an error: {e}"),
        };
        assert_eq!(report.rows.len(), 1, "no level after a failed one");
        assert!(report.rows[0].error.is_some());
        assert!(report.best().is_none());
        assert!(render_pack(&report).contains("failed: "));
    }

    #[test]
    fn bad_configs_are_refused() {
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        let run = |c: &PackBenchConfig| {
            bench_packing(c, &backbones, &optimizers, &Catalog::builtin()).unwrap_err()
        };
        assert!(matches!(run(&config(&[0])), BenchError::NoTrials));
        assert!(matches!(run(&config(&[])), BenchError::NoTrials));
        let mut c = config(&[1]);
        c.optimizer = "adamz".into();
        assert!(run(&c).to_string().contains("adamw"));
        c = config(&[1]);
        c.backbone = "resnet19".into();
        assert!(run(&c).to_string().contains("resnet18_cifar"));
    }
}

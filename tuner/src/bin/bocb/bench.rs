//! `bocb bench`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use bocb_trial_runner::precision::Precision;
use bocb_trial_runner::{DeviceChoice, ResolveDevice};
use bocb_tuner::bench::{self, BenchConfig};
use bocb_tuner::registries::Registries;
use bocb_tuner::search::replay;
use bocb_tuner::service::bench::{
    bench_service, bench_ui, render_ui_bench, ServiceBenchConfig, UiBenchConfig,
};
use clap::Subcommand;

use crate::output::print_json_or;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time one step of each optimizer on a ResNet-50-shaped float32
    /// parameter set, and the reference PyTorch implementation on the same
    /// shapes, hyperparameters and device (through python).
    Optim {
        /// Parameter count (25M, 1.5M, 800k, 1000): ResNet-50, width-scaled to it.
        #[arg(long, default_value = "25M", value_parser = bench::parse_param_count)]
        params: usize,
        /// auto (CUDA if present), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Timed steps; the median is reported.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Only this optimizer (repeatable; default: all).
        #[arg(long = "optimizer")]
        optimizers: Vec<String>,
        #[arg(long)]
        json: bool,
        /// A python with torch, timm and pytorch_optimizer (default: the
        /// venv's whose libtorch bocb was built against).
        #[arg(long, default_value = bench::BUILD_PYTHON)]
        python: PathBuf,
    },
    /// Training images per second of a backbone (forward, backward,
    /// optimizer step on a random batch), and of its PyTorch reference
    /// definition at the same batch, input size, optimizer and threads.
    Train {
        /// A registry backbone, e.g. resnet18_cifar or resnet18_cifar@micro
        /// (repeatable: one reference python times them all).
        #[arg(
            long = "backbone",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        backbones: Vec<String>,
        /// Every registered backbone, in the presets of --preset.
        #[arg(long)]
        all: bool,
        /// micro, full or both (with --all).
        #[arg(long, default_value = "both", requires = "all")]
        preset: bench::PresetChoice,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 100)]
        classes: i64,
        /// auto (CUDA if present), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Timed steps; the median is reported.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// The optimizer of both sides, with its first reference case's
        /// hyperparameters.
        #[arg(long, default_value = "sgd_m")]
        optimizer: String,
        /// Intra-op threads of both sides (default: libtorch's).
        #[arg(long)]
        threads: Option<usize>,
        /// Both sides train on channels-last batches (experiment `channels_last`).
        #[arg(long)]
        channels_last: bool,
        /// fp32, or bf16 autocast on both sides (experiment `precision`).
        #[arg(long, default_value = "fp32", value_parser = bench::parse_bench_precision)]
        precision: Precision,
        #[arg(long)]
        json: bool,
        /// A python with torch, torchvision, timm and pytorch_optimizer
        /// (default: the venv's whose libtorch bocb was built against).
        #[arg(long, default_value = bench::BUILD_PYTHON)]
        python: PathBuf,
    },
    /// Aggregate training images per second and peak memory of several
    /// trials training at once on one device (each in its own thread and
    /// CUDA stream, as `trials_per_device` runs them), against one trial.
    Pack {
        /// A registry backbone, e.g. resnet18_cifar or resnet18_cifar@micro.
        #[arg(long, default_value = "resnet18_cifar")]
        backbone: String,
        /// Numbers of trials at once, each measured on its own.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
        trials: Vec<usize>,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 100)]
        classes: i64,
        /// auto (CUDA if present), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Timed steps of every trial.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed steps of every trial first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Every trial's optimizer, at its search space's grid centre.
        #[arg(long, default_value = "sgd_m")]
        optimizer: String,
        /// fp32, or bf16 autocast.
        #[arg(long, default_value = "fp32", value_parser = bench::parse_bench_precision)]
        precision: Precision,
        #[arg(long)]
        json: bool,
    },
    /// Images per second of the input pipeline alone (loading and a
    /// recipe's augmentation on worker threads) and of a training step of a
    /// backbone fed by it, and their ratio: whether the data keeps up. With
    /// --resolution: bocb's streaming pipeline on an image folder at that
    /// side against timm's (ImageFolder + create_transform + DataLoader with
    /// the same workers) in the same run, and bocb's peak RSS.
    Data {
        /// Stream the image folder at this side and compare with timm (no
        /// training step: --backbone, --steps and --device are not used).
        #[arg(long)]
        resolution: Option<usize>,
        /// With --resolution: a python with torch, torchvision and timm
        /// (default: the venv's whose libtorch bocb was built against).
        #[arg(long, default_value = bench::BUILD_PYTHON)]
        python: PathBuf,
        /// A CIFAR directory or an image folder (train/CLASS/*.png, val/...).
        #[arg(long)]
        dataset: PathBuf,
        /// The recipe whose augmentation runs (pytorch, deit, convnext,
        /// rsb_a2, rsb_a3).
        #[arg(long, default_value = "deit")]
        recipe: String,
        #[arg(long, default_value = "resnet50_cifar")]
        backbone: String,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Pipeline threads (0: all cores but one).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Batches the pipeline is timed over (at most one epoch).
        #[arg(long, default_value_t = 50)]
        batches: usize,
        /// Timed training steps, after one untimed.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// auto (CUDA if present), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        #[arg(long)]
        json: bool,
    },
    /// Replay recorded full grids (`bocb export --trials`) under every
    /// strategy and early-stopping rule: epochs spent, and whether each
    /// search found the grid's best config.
    Tuner {
        /// JSON of every trial with its per-epoch accuracies.
        #[arg(long)]
        recorded: PathBuf,
        /// Configs each search may start per pair (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "6,8,10,12,25")]
        budgets: Vec<usize>,
        /// Seeds per randomised strategy.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// Pairs searched at once in the searches with transfer, as a run
        /// with that many slots searches them (comma-separated; more than
        /// the recording's pairs means all of them).
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        concurrent_pairs: Vec<usize>,
        /// Also replay, for each optimizer (or backbone) of the recording
        /// in turn, the search of its pairs as new ones learning from an
        /// earlier experiment that holds the other pairs (`transfer_from`):
        /// optimizer, backbone or both (comma-separated; `--new ''` for neither).
        #[arg(long, value_delimiter = ',', default_value = "optimizer,backbone")]
        new: Vec<String>,
        /// Also replay `bayes` with these `budget.min_expected_gain`
        /// values, in accuracy points (comma-separated; `''` for none).
        #[arg(long, value_delimiter = ',', default_value = "0.1")]
        min_expected_gain: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Trial reports per second that `bocb serve` records with several
    /// workers, on external trials that print their reports at once.
    Service {
        /// Local CPU workers.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Backbone x optimizer pairs of 25 trials each (rounded up to a
        /// backbones x optimizers rectangle).
        #[arg(long, default_value_t = 8)]
        pairs: usize,
        /// Reports per trial.
        #[arg(long, default_value_t = 20)]
        epochs: u32,
        #[arg(long)]
        json: bool,
    },
    /// Time the web UI's views on generated stores (1,000 and 10,000
    /// trials of 200 epochs by default) or on a given one: the first
    /// screen of each view (goal: p95 under 300 ms), a trial-table page
    /// (under 100 ms), and the service's peak memory.
    Ui {
        /// Trials of each generated store, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
        trials: Vec<usize>,
        /// Epochs recorded per generated trial.
        #[arg(long, default_value_t = 200)]
        epochs: u32,
        /// Requests per view.
        #[arg(long, default_value_t = 40)]
        requests: usize,
        /// Measure this store (its experiment with the most trials) instead
        /// of generating one; it must not be in use by a service.
        #[arg(long)]
        store: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: BenchArgs, registries: &Registries) -> Result<()> {
    match args.command {
        BenchCommand::Optim {
            params,
            device,
            steps,
            warmup,
            optimizers,
            json,
            python,
        } => {
            let config = BenchConfig {
                params,
                device: device.resolve().map_err(anyhow::Error::msg)?,
                warmup,
                steps,
                optimizers,
                python,
            };
            let report = bench::bench_optimizers(
                &config,
                &registries.optimizers,
                &registries.catalog,
                std::io::stderr().is_terminal(),
            )?;
            print_json_or(&report, json, bench::render_bench)
        }
        BenchCommand::Train {
            backbones,
            all,
            preset,
            batch,
            classes,
            device,
            steps,
            warmup,
            optimizer,
            threads,
            channels_last,
            precision,
            json,
            python,
        } => {
            let backbones = if all {
                bench::select_backbones(&registries.backbones, preset)
            } else {
                // clap requires --backbone without --all.
                backbones
            };
            let config = bench::TrainBenchConfig {
                backbones,
                batch,
                classes,
                device: device.resolve().map_err(anyhow::Error::msg)?,
                warmup,
                steps,
                optimizer,
                threads,
                channels_last,
                precision,
                python,
            };
            let report = bench::bench_training(
                &config,
                &registries.backbones,
                &registries.optimizers,
                std::io::stderr().is_terminal(),
            )?;
            print_json_or(&report, json, bench::render_train)
        }
        BenchCommand::Pack {
            backbone,
            trials,
            batch,
            classes,
            device,
            steps,
            warmup,
            optimizer,
            precision,
            json,
        } => {
            let config = bench::PackBenchConfig {
                backbone,
                batch,
                classes,
                device: device.resolve().map_err(anyhow::Error::msg)?,
                levels: trials,
                warmup,
                steps,
                optimizer,
                precision,
            };
            let report = bench::bench_packing(
                &config,
                &registries.backbones,
                &registries.optimizers,
                &registries.catalog,
            )?;
            print_json_or(&report, json, bench::render_pack)
        }
        BenchCommand::Data {
            resolution: Some(resolution),
            python,
            dataset,
            recipe,
            batch,
            workers,
            batches,
            json,
            ..
        } => {
            let config = bench::FullResBenchConfig {
                dataset,
                recipe,
                resolution,
                batch,
                workers,
                batches,
                python,
            };
            let report = bench::bench_full_resolution(&config)?;
            print_json_or(&report, json, bench::render_full_res)
        }
        BenchCommand::Data {
            resolution: None,
            dataset,
            recipe,
            backbone,
            batch,
            workers,
            batches,
            steps,
            device,
            json,
            ..
        } => {
            let config = bench::DataBenchConfig {
                dataset,
                recipe,
                backbone,
                batch,
                workers,
                batches,
                steps,
                device: device.resolve().map_err(anyhow::Error::msg)?,
            };
            let report = bench::bench_data(&config, &registries.backbones, &registries.optimizers)?;
            print_json_or(&report, json, bench::render_data)
        }
        BenchCommand::Tuner {
            recorded,
            budgets,
            seeds,
            concurrent_pairs,
            new,
            min_expected_gain,
            json,
        } => {
            let new = new
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| n.parse().map_err(|e| anyhow::anyhow!("--new: {e}")))
                .collect::<anyhow::Result<_>>()?;
            let min_expected_gains = min_expected_gain
                .iter()
                .filter(|g| !g.is_empty())
                .map(|g| {
                    g.parse()
                        .map_err(|_| anyhow::anyhow!("--min-expected-gain: `{g}` is not a number"))
                })
                .collect::<anyhow::Result<_>>()?;
            let plan = replay::BenchPlan {
                budgets,
                seeds,
                concurrent_pairs,
                new,
                min_expected_gains,
            };
            let replayed = replay::bench_recorded(&recorded, &plan)?;
            print_json_or(&replayed.rows[..], json, |rows| {
                replay::render_bench(rows, replayed.pairs, &replayed.skipped)
            })
        }
        BenchCommand::Ui {
            trials,
            epochs,
            requests,
            store,
            json,
        } => {
            let report = bench_ui(&UiBenchConfig {
                trials,
                epochs,
                requests,
                store,
            })?;
            print_json_or(&report[..], json, render_ui_bench)
        }
        BenchCommand::Service {
            workers,
            pairs,
            epochs,
            json,
        } => {
            if workers == 0 || epochs == 0 {
                bail!("--workers and --epochs must be at least 1");
            }
            let report = bench_service(&ServiceBenchConfig {
                workers,
                pairs,
                epochs,
            })?;
            print_json_or(&report, json, |r| {
                format!(
                    "{} workers: {} trials, {} reports in {:.1}s: {:.0} reports/s, {:.1} trials/s\n",
                    r.workers, r.trials, r.reports, r.seconds, r.reports_per_second, r.trials_per_second
                )
            })
        }
    }
}

//! `bocb`: tune optimizers against vision backbones.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bocb_store::{unix_now_s, Store};
use bocb_trial_runner::data::{write_synthetic, DatasetFormat, SynthConfig};
use bocb_trial_runner::optim::replay::{replay, ReplayCase};
use bocb_trial_runner::optim::OptimizerRegistry;
use bocb_trial_runner::precision::Precision;
use bocb_trial_runner::{DeviceChoice, ResolveDevice};
use bocb_tuner::analysis::{import, FailureRuleChoice};
use bocb_tuner::bench::{self, BenchConfig};
use bocb_tuner::experiment::Experiment;
use bocb_tuner::reads::{
    self, ExportAs, ExportFormat, ExportQuery, PatternsQuery, Reader, ReportFormat, ReportQuery,
};
use bocb_tuner::registries::Registries;
use bocb_tuner::run::run_experiment;
use bocb_tuner::service::client::{Client, ClientError};
use bocb_tuner::service::{self, ExperimentStatus};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bocb",
    version,
    about = "Hyperparameter search of optimizers against vision backbones (BOCB)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run (or resume) an experiment: every backbone x optimizer pair over the
    /// optimizer's 5 x 5 lr x weight-decay grid, then print the report.
    Run {
        /// The experiment file (YAML).
        experiment: PathBuf,
        #[arg(long, default_value = "./bocb-data")]
        store: PathBuf,
        /// No progress bars (a line per finished trial still goes to stderr).
        #[arg(long)]
        quiet: bool,
    },
    /// Print the best config and the accuracy grid of every pair, and the
    /// BOCB analyses: Table 1 with top-4 and failures, per-optimizer
    /// statistics, hyperparameter robustness and the optimizer ranking.
    Report {
        /// Only this experiment (default: all in the store).
        #[arg(long)]
        experiment: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// Write the report to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// eq1: the paper's Eq. (1); tukey: r < Q25 - 1.5 IQR.
        #[arg(long, value_enum, default_value_t = FailureRuleChoice::Eq1)]
        failure_rule: FailureRuleChoice,
        /// γ of Eq. (1) (default: the experiment's, else 3 as for CIFAR).
        #[arg(long)]
        gamma: Option<f64>,
        #[arg(long, default_value = "./bocb-data")]
        store: PathBuf,
    },
    /// Load a published results table (the paper's Table 1 layout, tab
    /// separated) into the store as an experiment, without training.
    Import {
        /// The table: `Optimizer` then backbone names, one row per optimizer.
        #[arg(long)]
        table: PathBuf,
        /// Name to store it as.
        #[arg(long)]
        experiment: String,
        /// Best lr / weight-decay grid indices in the same layout
        /// (`LR/WD` cells, 0-4); enables the robustness analysis.
        #[arg(long)]
        grid: Option<PathBuf>,
        /// γ of Eq. (1) for this table: 3 for CIFAR, 1 for ImageNet.
        #[arg(long)]
        gamma: Option<f64>,
        #[arg(long, default_value = "./bocb-data")]
        store: PathBuf,
    },
    /// Export the best config of every pair, or every trial.
    Export {
        #[arg(long)]
        experiment: String,
        /// yaml, json or csv (default yaml; --trials writes json).
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
        /// timm-args: a command line of timm's train.py per pair.
        #[arg(long = "as", value_enum, conflicts_with_all = ["format", "trials"])]
        as_: Option<ExportAs>,
        /// Only this backbone.
        #[arg(long)]
        backbone: Option<String>,
        /// Only this optimizer.
        #[arg(long)]
        optimizer: Option<String>,
        /// Every trial with its per-epoch metrics (JSON).
        #[arg(long, conflicts_with_all = ["backbone", "optimizer"])]
        trials: bool,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "./bocb-data")]
        store: PathBuf,
    },
    /// Layer-wise parameter patterns (α, entropy, L2 norm, top-k PCA
    /// energy) of each pair's best config, from weights kept with
    /// `save_weights: true`.
    Patterns {
        #[arg(long)]
        experiment: String,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "./bocb-data")]
        store: PathBuf,
    },
    /// Datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Optimizers.
    Optim {
        #[command(subcommand)]
        command: OptimCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Backbones.
    Backbones {
        #[command(subcommand)]
        command: BackbonesCommand,
    },
    /// Run the tuning service: hold the store, run submitted experiments,
    /// hand their trials to workers over HTTP (see README, Service).
    Serve {
        #[arg(long, default_value = "./bocb-data")]
        store: PathBuf,
        /// Address to listen on (port 0: any free port; the URL is written
        /// to STORE/service-url).
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// The token clients must send (default: STORE/service-token, made
        /// at first start, readable by the owner only).
        #[arg(long)]
        token: Option<String>,
        /// Local workers to start, DEVICE[=COUNT] (cpu=2,cuda:0); `none`
        /// for remote workers only.
        #[arg(long, value_delimiter = ',', default_value = "auto")]
        workers: Vec<String>,
        /// Seconds without word from a worker before its trial is re-queued.
        #[arg(long, default_value_t = 30.0)]
        heartbeat_timeout: f64,
        /// Times a trial is re-queued after a lost worker before it fails.
        #[arg(long, default_value_t = 2)]
        retries: u32,
        /// Listen on an address beyond loopback although the service speaks
        /// plain HTTP (its token then crosses the network readable).
        #[arg(long)]
        insecure_listen: bool,
        /// Serve HTTPS with this certificate (PEM, leaf first); clients on
        /// this machine trust the copy in STORE/service-cert.pem.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Train trials for a service: claim, train, report, repeat.
    Worker {
        /// The service's URL (http://HOST:PORT, or https://).
        #[arg(long)]
        server: String,
        /// The HTTPS service's certificate or its CA (PEM; default: the
        /// BOCB_CA environment variable, else the system's roots).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The service's token (default: the BOCB_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Shown in the trial logs (default: HOST-PID).
        #[arg(long)]
        name: Option<String>,
        /// Seconds the service may stay unreachable before the worker exits.
        #[arg(long, default_value_t = 60.0)]
        patience: f64,
        /// Exit when standard input closes (how `bocb serve` ends its workers).
        #[arg(long)]
        exit_with_parent: bool,
    },
    /// Submit an experiment file to the service (again, to grow it).
    Submit {
        experiment: PathBuf,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Every experiment in the service's store, or one, with trial counts.
    Status {
        name: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Stop an experiment in the service (its running trials run again on resume).
    Stop {
        name: String,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Resume a stopped experiment in the service, or run one of its store's (made by `bocb run`).
    Resume {
        name: String,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// An experiment's trials in the service.
    Trials {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// A trial's log in the service (worker output and service events).
    Logs {
        trial: String,
        #[command(flatten)]
        service: ServiceArgs,
    },
}

/// Where the service is and its token.
#[derive(clap::Args)]
struct ServiceArgs {
    /// The service's URL (default: from STORE/service-url, else http://127.0.0.1:7878).
    #[arg(long)]
    server: Option<String>,
    /// The service's token (default: BOCB_TOKEN, else STORE/service-token).
    #[arg(long)]
    token: Option<String>,
    /// The HTTPS service's certificate or its CA (PEM; default: BOCB_CA,
    /// else STORE/service-cert.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The service's store directory, where its URL and token are found.
    #[arg(long, default_value = "./bocb-data")]
    store: PathBuf,
}

#[derive(Subcommand)]
enum BackbonesCommand {
    /// List every registered backbone with its parameter count (full size
    /// and `@micro`), input size, family and default training recipe.
    List {
        #[arg(long)]
        json: bool,
        /// Classes of the classifier head the parameters are counted with.
        #[arg(long, default_value_t = 100)]
        classes: i64,
    },
}

#[derive(Subcommand)]
enum OptimCommand {
    /// Replay a recorded case (initial parameters and per-step gradients)
    /// through bocb's optimizer in float64, writing the parameters after
    /// every step: compare your implementation with bocb's, or bocb's with
    /// a reference.
    Replay {
        /// Case JSON: optimizer, hparams, shapes, params0, grads[, hessians].
        #[arg(long)]
        input: PathBuf,
        /// Output JSON: {"trajectory": [step][tensor][values]}.
        #[arg(long)]
        output: PathBuf,
    },
    /// List every optimizer with its category, weight-decay style and state
    /// size in bytes per float32 parameter (measured after one step).
    Info {
        #[arg(long)]
        json: bool,
    },
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
    /// backbone fed by it, and their ratio: whether the data keeps up.
    Data {
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
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a synthetic dataset in a real CIFAR format or as an image folder
    /// (learnable, not trivial).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        classes: usize,
        #[arg(long, default_value_t = 50_000)]
        train: usize,
        #[arg(long, default_value_t = 10_000)]
        test: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A dataset format of experiment files: cifar100-bin, cifar10-bin,
        /// cifar100-pickle, cifar10-pickle, or image-folder (also `folder`:
        /// train/CLASS/*.png|jpg, val/CLASS/...).
        #[arg(long, default_value = "cifar100-bin", value_parser = parse_synth_format)]
        format: DatasetFormat,
    },
}

fn parse_synth_format(name: &str) -> Result<DatasetFormat, String> {
    match name {
        "folder" => Ok(DatasetFormat::ImageFolder),
        _ => name
            .parse()
            .map_err(|e: bocb_trial_runner::data::DataError| format!("{e} (or folder)")),
    }
}

/// Prints `report` as pretty JSON with `--json`, else as `render` lays it out.
fn print_json_or<T: serde::Serialize + ?Sized>(
    report: &T,
    json: bool,
    render: impl Fn(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

fn main() -> ExitCode {
    // Deterministic trials (`deterministic: true`) need cuBLAS's fixed
    // workspace, which CUDA reads once, before any thread of ours exists.
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOCB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every CPU tensor bocb makes, trials and benches alike, reuses freed
    // blocks rather than page-faulting them in again.
    bocb_trial_runner::cpu_cache::install();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            experiment,
            store,
            quiet,
        } => {
            let registries = Registries::builtin();
            let experiment = Experiment::load(
                &experiment,
                &registries.backbones,
                &registries.optimizers,
                &registries.catalog,
            )?;
            let store = open_store(&store)?;
            let show_progress = !quiet && std::io::stderr().is_terminal();
            let summary = run_experiment(&experiment, &store, &registries, show_progress)?;
            let stopped = if summary.stopped > 0 {
                format!(", {} stopped early", summary.stopped)
            } else {
                String::new()
            };
            eprintln!(
                "trained {} trial(s) ({} diverged, {} failed{stopped}); {} already finished in the store",
                summary.trained, summary.diverged, summary.failed, summary.skipped
            );
            if summary.out_of_time {
                eprintln!(
                    "budget.hours ran out: the search stopped early; run the same file again to continue"
                );
            }
            let query = ReportQuery {
                experiment: Some(experiment.spec.name.clone()),
                ..ReportQuery::default()
            };
            print!("{}", reads::report_text(&store, &registries, &query)?);
            Ok(())
        }
        Command::Patterns {
            experiment,
            json,
            store,
        } => {
            let query = PatternsQuery { experiment, json };
            print!("{}", reader(&store)?.patterns(&query)?);
            Ok(())
        }
        Command::Import {
            table,
            experiment,
            grid,
            gamma,
            store,
        } => import_table(&table, &experiment, grid.as_deref(), gamma, &store),
        Command::Export {
            experiment,
            format,
            as_,
            backbone,
            optimizer,
            trials,
            out,
            store,
        } => {
            let query = ExportQuery {
                experiment,
                format,
                as_,
                backbone,
                optimizer,
                trials,
            };
            let text = reader(&store)?.export(&Registries::builtin(), &query)?;
            write_output(out.as_deref(), &text)
        }
        Command::Report {
            experiment,
            format,
            out,
            failure_rule,
            gamma,
            store,
        } => {
            let query = ReportQuery {
                experiment,
                format,
                failure_rule,
                gamma,
            };
            reads::check_gamma(gamma)?;
            let text = reader(&store)?.report(&Registries::builtin(), &query)?;
            write_output(out.as_deref(), &text)
        }
        Command::Data {
            command:
                DataCommand::Synth {
                    out,
                    classes,
                    train,
                    test,
                    seed,
                    format,
                },
        } => {
            let config = SynthConfig {
                classes,
                train,
                test,
                seed,
            };
            write_synthetic(&out, &config, format)?;
            eprintln!(
                "wrote {train} training and {test} test images of {classes} classes ({format}) to {}",
                out.display()
            );
            Ok(())
        }
        Command::Optim {
            command: OptimCommand::Replay { input, output },
        } => replay_case(&input, &output),
        Command::Optim {
            command: OptimCommand::Info { json },
        } => {
            let registries = Registries::builtin();
            let infos = bench::optimizer_info(&registries.optimizers, &registries.catalog)?;
            print_json_or(&infos[..], json, bench::render_info)?;
            Ok(())
        }
        Command::Backbones {
            command: BackbonesCommand::List { json, classes },
        } => list_backbones(json, classes),
        Command::Serve {
            store,
            listen,
            token,
            workers,
            heartbeat_timeout,
            retries,
            insecure_listen,
            tls_cert,
            tls_key,
        } => {
            if !(heartbeat_timeout.is_finite() && heartbeat_timeout > 0.0) {
                bail!("--heartbeat-timeout must be a positive number of seconds, got {heartbeat_timeout}");
            }
            service::serve(
                &service::ServeConfig {
                    store_dir: store,
                    listen,
                    token,
                    workers: service::parse_workers(&workers)
                        .map_err(anyhow::Error::msg)
                        .context("--workers takes DEVICE[=COUNT],... (cpu=2,cuda:0) or `none`")?,
                    heartbeat_timeout: std::time::Duration::from_secs_f64(heartbeat_timeout),
                    retries,
                    insecure_listen,
                    // clap requires both or neither.
                    tls: tls_cert
                        .zip(tls_key)
                        .map(|(cert, key)| service::TlsFiles { cert, key }),
                },
                Registries::builtin(),
            )?;
            Ok(())
        }
        Command::Worker {
            server,
            ca,
            token,
            device,
            name,
            patience,
            exit_with_parent,
        } => worker(&server, ca, token, device, name, patience, exit_with_parent),
        Command::Submit {
            experiment,
            service,
        } => submit(&experiment, &service),
        Command::Status {
            name,
            json,
            service,
        } => status(name.as_deref(), json, &service),
        Command::Stop { name, service } => experiment_action(&name, "stop", &service),
        Command::Resume { name, service } => experiment_action(&name, "resume", &service),
        Command::Trials {
            name,
            json,
            service,
        } => trials(&name, json, &service),
        Command::Logs { trial, service } => {
            print!(
                "{}",
                service
                    .client()?
                    .get_text(&format!("/api/trials/{trial}/log"))?
            );
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Optim {
                    params,
                    device,
                    steps,
                    warmup,
                    optimizers,
                    json,
                    python,
                },
        } => {
            let config = BenchConfig {
                params,
                device: device.resolve().map_err(anyhow::Error::msg)?,
                warmup,
                steps,
                optimizers,
                python,
            };
            let registries = Registries::builtin();
            let report = bench::bench_optimizers(
                &config,
                &registries.optimizers,
                &registries.catalog,
                std::io::stderr().is_terminal(),
            )?;
            print_json_or(&report, json, bench::render_bench)?;
            Ok(())
        }
        Command::Bench {
            command:
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
                },
        } => {
            let registries = Registries::builtin();
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
            print_json_or(&report, json, bench::render_train)?;
            Ok(())
        }
        Command::Bench {
            command:
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
                },
        } => {
            let registries = Registries::builtin();
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
            print_json_or(&report, json, bench::render_pack)?;
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Data {
                    dataset,
                    recipe,
                    backbone,
                    batch,
                    workers,
                    batches,
                    steps,
                    device,
                    json,
                },
        } => {
            let registries = Registries::builtin();
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
            print_json_or(&report, json, bench::render_data)?;
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Tuner {
                    recorded,
                    budgets,
                    seeds,
                    json,
                },
        } => bench_tuner(&recorded, &budgets, seeds, json),
        Command::Bench {
            command:
                BenchCommand::Service {
                    workers,
                    pairs,
                    epochs,
                    json,
                },
        } => {
            if workers == 0 || epochs == 0 {
                bail!("--workers and --epochs must be at least 1");
            }
            let report = service::bench::bench_service(&service::bench::ServiceBenchConfig {
                workers,
                pairs,
                epochs,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} workers: {} trials, {} reports in {:.1}s: {:.0} reports/s, {:.1} trials/s",
                    report.workers,
                    report.trials,
                    report.reports,
                    report.seconds,
                    report.reports_per_second,
                    report.trials_per_second
                );
            }
            Ok(())
        }
    }
}

/// `bocb bench tuner`.
fn bench_tuner(recorded: &Path, budgets: &[usize], seeds: u64, json: bool) -> Result<()> {
    use bocb_tuner::search::replay;
    let text = std::fs::read_to_string(recorded)
        .with_context(|| format!("cannot read {}", recorded.display()))?;
    let trials: Vec<bocb_store::TrialRecord> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a trial list; write one with `bocb export --experiment NAME --trials`",
            recorded.display()
        )
    })?;
    let (pairs, skipped) = replay::recorded_pairs(&trials);
    if pairs.is_empty() {
        bail!(
            "{} holds no pair with all 25 stage-1 grid points finished; run a `strategy: grid` experiment to the end first",
            recorded.display()
        );
    }
    if let Some(bad) = budgets.iter().find(|&&b| b == 0 || b > 25) {
        bail!("--budgets: {bad} is not between 1 and 25 configs");
    }
    let rows = replay::bench(&pairs, budgets, seeds.max(1));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", replay::render_bench(&rows, pairs.len(), &skipped));
    }
    Ok(())
}

/// One row of `bocb backbones list`.
#[derive(serde::Serialize)]
struct BackboneInfo {
    name: String,
    params: i64,
    input_size: i64,
    family: bocb_trial_runner::models::Family,
    default_recipe: &'static str,
    micro_params: i64,
    micro_input_size: i64,
}

/// Posts `action` (`stop`, `resume`) for experiment `name` and prints the
/// status the service answers with.
fn experiment_action(name: &str, action: &str, service: &ServiceArgs) -> Result<()> {
    let status: ExperimentStatus = service
        .client()?
        .post(&format!("/api/experiments/{name}/{action}"), &())?
        .context("empty answer")?;
    print_statuses(&[status]);
    Ok(())
}

fn list_backbones(json: bool, classes: i64) -> Result<()> {
    use bocb_trial_runner::models::{parameter_count, BackboneRegistry, Preset};
    if classes < 1 {
        bail!("--classes must be at least 1, got {classes}");
    }
    let registry = BackboneRegistry::builtin();
    let count = |name: &str| -> Result<i64> {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        registry.build(name, &vs.root(), classes, 0)?;
        Ok(parameter_count(&vs))
    };
    let mut infos = Vec::new();
    for name in registry.names() {
        let (entry, _) = registry.lookup(name)?;
        infos.push(BackboneInfo {
            name: name.to_string(),
            params: count(name)?,
            input_size: entry.input_size(Preset::Full),
            family: entry.family,
            default_recipe: entry.default_recipe,
            micro_params: count(&format!("{name}@micro"))?,
            micro_input_size: entry.input_size(Preset::Micro),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>12} {:>6} {:<14} {:<8} {:>12} {:>6}",
        "backbone", "params", "input", "family", "recipe", "micro params", "input"
    );
    for i in &infos {
        println!(
            "{:<20} {:>12} {:>6} {:<14} {:<8} {:>12} {:>6}",
            i.name,
            i.params,
            i.input_size,
            i.family.to_string(),
            i.default_recipe,
            i.micro_params,
            i.micro_input_size
        );
    }
    println!(
        "(parameters for {classes} classes; `NAME@micro` is the reduced preset; `torchscript:PATH` loads your own module)"
    );
    Ok(())
}

fn replay_case(input: &Path, output: &Path) -> Result<()> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("reading the replay case {}", input.display()))?;
    let case: ReplayCase = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a replay case (fields: optimizer, hparams, shapes, params0, grads[, hessians])",
            input.display()
        )
    })?;
    let out = replay(&case, &OptimizerRegistry::builtin())
        .with_context(|| format!("replaying {}", input.display()))?;
    std::fs::write(output, serde_json::to_string(&out)? + "\n")
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "replayed {} step(s) of `{}` into {}",
        out.trajectory.len(),
        case.optimizer,
        output.display()
    );
    Ok(())
}

fn open_store(dir: &Path) -> Result<Store> {
    Store::open(dir).with_context(|| format!("opening the store at {}", dir.display()))
}

/// Writes `text` to `out`, or to standard output.
fn write_output(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn import_table(
    table: &Path,
    experiment: &str,
    grid: Option<&Path>,
    gamma: Option<f64>,
    store: &Path,
) -> Result<()> {
    bocb_tuner::experiment::check_experiment_name(experiment).map_err(anyhow::Error::msg)?;
    if let Some(g) = gamma.filter(|g| !(g.is_finite() && *g > 0.0)) {
        bail!("--gamma must be a positive number (3 for CIFAR, 1 for ImageNet), got {g}");
    }
    let imported = import::read_import(table, grid, experiment, gamma, unix_now_s())?;
    let store = open_store(store)?;
    store.put_imported(&imported)?;
    let located = imported.results.iter().filter(|r| r.grid.is_some()).count();
    eprintln!(
        "imported {} result(s) ({} backbone(s) x {} optimizer(s){}) from {} as experiment `{experiment}`; \
         see `bocb report --experiment {experiment}`",
        imported.results.len(),
        imported.backbones.len(),
        imported.optimizers.len(),
        if grid.is_some() {
            format!(", {located} with grid positions")
        } else {
            String::new()
        },
        table.display()
    );
    Ok(())
}

/// Where `bocb report|export|patterns|trials` read the store at `dir`:
/// itself, or the API of the service that holds it.
fn reader(dir: &Path) -> Result<Reader> {
    Ok(Reader::open(dir, || {
        Client::for_store(dir, None, None, None)
    })?)
}

impl ServiceArgs {
    /// A client of the service these arguments point at.
    fn client(&self) -> Result<Client, ClientError> {
        Client::for_store(
            &self.store,
            self.server.clone(),
            self.token.clone(),
            self.ca.clone(),
        )
    }
}

/// `bocb worker`.
fn worker(
    server: &str,
    ca: Option<PathBuf>,
    token: Option<String>,
    device: DeviceChoice,
    name: Option<String>,
    patience: f64,
    exit_with_parent: bool,
) -> Result<()> {
    let token = token
        .or_else(|| std::env::var("BOCB_TOKEN").ok())
        .context("no service token: pass --token or set BOCB_TOKEN (it is in the service's STORE/service-token)")?;
    if !(patience.is_finite() && patience >= 0.0) {
        bail!("--patience must be a number of seconds, got {patience}");
    }
    if exit_with_parent {
        std::thread::spawn(|| {
            // Standard input closes when the service that started us dies.
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            bocb_tuner::external::end_running_programs();
            std::process::exit(0);
        });
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_string());
    let config = service::worker::WorkerConfig {
        device,
        name: name.unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        patience: std::time::Duration::from_secs_f64(patience),
    };
    let ca = ca.or_else(|| std::env::var_os("BOCB_CA").map(PathBuf::from));
    service::worker::run_worker(
        &Client::new(server, &token, ca.as_deref())?,
        &config,
        &Registries::builtin(),
    )?;
    Ok(())
}

/// `bocb submit`.
fn submit(path: &Path, args: &ServiceArgs) -> Result<()> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let base = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the directory of {}", path.display()))?;
    let submission = serde_json::json!({
        "yaml": yaml,
        "base": base,
        "origin": path.display().to_string(),
    });
    let status: ExperimentStatus = args
        .client()?
        .post("/api/experiments", &submission)?
        .context("empty answer")?;
    eprintln!("submitted `{}`", status.name);
    print_statuses(&[status]);
    Ok(())
}

/// `bocb status`.
fn status(name: Option<&str>, json: bool, args: &ServiceArgs) -> Result<()> {
    let client = args.client()?;
    let statuses: Vec<ExperimentStatus> = match name {
        Some(name) => vec![client.get(&format!("/api/experiments/{name}"))?],
        None => client.get("/api/experiments")?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else if statuses.is_empty() {
        println!("no experiments; submit one with `bocb submit FILE`");
    } else {
        print_statuses(&statuses);
    }
    Ok(())
}

fn print_statuses(statuses: &[ExperimentStatus]) {
    println!(
        "{:<24} {:<8} {:>7}  trials",
        "experiment", "state", "epochs"
    );
    for s in statuses {
        let trials: Vec<String> = s.trials.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{:<24} {:<8} {:>7}  {}",
            s.name,
            serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            s.epochs_recorded,
            if trials.is_empty() {
                "none yet".to_string()
            } else {
                trials.join(", ")
            }
        );
        if let Some(error) = &s.error {
            println!("  error: {error}");
        }
    }
}

/// `bocb trials`.
/// `bocb trials`: from the store, or through the service that holds it
/// (or the one `--server` names).
fn trials(name: &str, json: bool, args: &ServiceArgs) -> Result<()> {
    let reader = if args.server.is_some() || !args.store.exists() {
        Reader::Service(reads::Served::new(args.client()?))
    } else {
        Reader::open(&args.store, || args.client())?
    };
    print!("{}", reads::trials_text(&reader.trials(name)?, json)?);
    Ok(())
}

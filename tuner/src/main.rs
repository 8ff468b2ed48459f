//! `bocb`: tune optimizers against vision backbones.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bocb_store::Store;
use bocb_trial_runner::data::{write_synthetic, DatasetFormat, SynthConfig};
use bocb_trial_runner::optim::replay::{replay, ReplayCase};
use bocb_trial_runner::optim::OptimizerRegistry;
use bocb_trial_runner::DeviceChoice;
use bocb_tuner::bench::{self, BenchConfig};
use bocb_tuner::experiment::Experiment;
use bocb_tuner::report;
use bocb_tuner::run::{run_experiment, Registries};
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Print the best config and the accuracy grid of every pair.
    Report {
        /// Only this experiment (default: all in the store).
        #[arg(long)]
        experiment: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
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
        /// A python with torch, timm and pytorch_optimizer (default: the
        /// venv's whose libtorch bocb was built against).
        #[arg(long, default_value = bench::BUILD_PYTHON)]
        python: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a synthetic dataset in a real CIFAR format (learnable, not trivial).
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
        /// cifar100-bin, cifar10-bin, cifar100-pickle or cifar10-pickle.
        #[arg(long, default_value = "cifar100-bin")]
        format: DatasetFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOCB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            eprintln!(
                "trained {} trial(s) ({} diverged, {} failed); {} already finished in the store",
                summary.trained, summary.diverged, summary.failed, summary.skipped
            );
            print_report(
                &store,
                &registries,
                Some(&experiment.spec.name),
                Format::Table,
            )
        }
        Command::Report {
            experiment,
            format,
            store,
        } => {
            if !store.exists() {
                bail!(
                    "no store at {}; run an experiment first (`bocb run FILE --store {}`)",
                    store.display(),
                    store.display()
                );
            }
            let store = open_store(&store)?;
            print_report(
                &store,
                &Registries::builtin(),
                experiment.as_deref(),
                format,
            )
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
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                print!("{}", bench::render_info(&infos));
            }
            Ok(())
        }
        Command::Backbones {
            command: BackbonesCommand::List { json, classes },
        } => list_backbones(json, classes),
        Command::Bench {
            command:
                BenchCommand::Optim {
                    params,
                    device,
                    steps,
                    warmup,
                    optimizers,
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
            print!("{}", bench::render_bench(&report));
            Ok(())
        }
    }
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

fn list_backbones(json: bool, classes: i64) -> Result<()> {
    use bocb_trial_runner::models::{parameter_count, BackboneRegistry, Preset};
    if classes < 1 {
        bail!("--classes must be at least 1, got {classes}");
    }
    let registry = BackboneRegistry::builtin();
    let count = |name: &str| -> Result<i64> {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        registry.build(name, &vs.root(), classes)?;
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

fn print_report(
    store: &Store,
    registries: &Registries,
    name: Option<&str>,
    format: Format,
) -> Result<()> {
    let names: Vec<String> = match name {
        Some(name) => vec![name.to_string()],
        None => store.experiments()?.into_iter().map(|e| e.name).collect(),
    };
    if names.is_empty() {
        bail!("the store holds no experiment yet; run one with `bocb run FILE`");
    }
    let mut reports = Vec::new();
    for name in &names {
        match report::build(store, &registries.catalog, name)? {
            Some(r) => reports.push(r),
            None => {
                let known: Vec<String> = store.experiments()?.into_iter().map(|e| e.name).collect();
                bail!(
                    "no experiment `{name}` in the store; it holds: {}",
                    known.join(", ")
                );
            }
        }
    }
    match format {
        Format::Table => {
            let text: Vec<String> = reports.iter().map(report::render_table).collect();
            print!("{}", text.join("\n"));
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
    }
    Ok(())
}

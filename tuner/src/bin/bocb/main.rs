//! `bocb`: tune optimizers against vision backbones.
//!
//! A thin door: each command family's arguments and printing sit in its
//! own module; the work is the `bocb_tuner` library's.

#[cfg(feature = "train")]
mod backbones;
#[cfg(feature = "train")]
mod bench;
#[cfg(feature = "train")]
mod data;
#[cfg(feature = "train")]
mod optim;
mod output;
mod report;
#[cfg(feature = "train")]
mod run;
mod service;

use std::process::ExitCode;

use anyhow::Result;
use bocb_tuner::registries::Registries;
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
    #[cfg(feature = "train")]
    Run(run::RunArgs),
    /// Print the best config and the accuracy grid of every pair, and the
    /// BOCB analyses: Table 1 with top-4 and failures, per-optimizer
    /// statistics, hyperparameter robustness and the optimizer ranking.
    Report(report::ReportArgs),
    /// Load a published results table (the paper's Table 1 layout, tab
    /// separated) into the store as an experiment, without training.
    Import(report::ImportArgs),
    /// Export the best config of every pair, or every trial.
    Export(report::ExportArgs),
    /// Layer-wise parameter patterns (α, entropy, L2 norm, top-k PCA
    /// energy) of each pair's best config, from weights kept with
    /// `save_weights: true`.
    Patterns(report::PatternsArgs),
    /// Datasets.
    #[cfg(feature = "train")]
    Data(data::DataArgs),
    /// Optimizers.
    #[cfg(feature = "train")]
    Optim(optim::OptimArgs),
    /// Benchmarks.
    #[cfg(feature = "train")]
    Bench(bench::BenchArgs),
    /// Backbones.
    #[cfg(feature = "train")]
    Backbones(backbones::BackbonesArgs),
    /// Run the tuning service: hold the store, run submitted experiments,
    /// hand their trials to workers over HTTP (see README, Service).
    Serve(service::ServeArgs),
    /// Train trials for a service: claim, train, report, repeat.
    #[cfg(feature = "train")]
    Worker(service::WorkerArgs),
    /// Submit an experiment file to the service (again, to grow it).
    Submit(service::SubmitArgs),
    /// Every experiment in the service's store, or one, with trial counts.
    Status(service::StatusArgs),
    /// Stop an experiment in the service (its running trials run again on resume).
    Stop(service::NameArgs),
    /// Resume a stopped experiment in the service, or run one of its store's (made by `bocb run`).
    Resume(service::NameArgs),
    /// An experiment's trials in the service.
    Trials(service::TrialsArgs),
    /// A trial's log in the service (worker output and service events).
    Logs(service::LogsArgs),
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
    #[cfg(feature = "train")]
    bocb_trial_runner::cpu_cache::install();
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; those that train, read or list get the registries
/// made here, once.
fn dispatch(command: Command) -> Result<()> {
    match command {
        #[cfg(feature = "train")]
        Command::Run(args) => run::run(args, &Registries::builtin()),
        Command::Report(args) => report::report(args, &Registries::builtin()),
        Command::Import(args) => report::import(args),
        Command::Export(args) => report::export(args, &Registries::builtin()),
        Command::Patterns(args) => report::patterns(args),
        #[cfg(feature = "train")]
        Command::Data(args) => data::run(args),
        #[cfg(feature = "train")]
        Command::Optim(args) => optim::run(args, &Registries::builtin()),
        #[cfg(feature = "train")]
        Command::Bench(args) => bench::run(args, &Registries::builtin()),
        #[cfg(feature = "train")]
        Command::Backbones(args) => backbones::run(args, &Registries::builtin()),
        Command::Serve(args) => service::serve(args, Registries::builtin()),
        #[cfg(feature = "train")]
        Command::Worker(args) => service::worker(args, &Registries::builtin()),
        Command::Submit(args) => service::submit(args),
        Command::Status(args) => service::status(args),
        Command::Stop(args) => service::experiment_action(args, "stop"),
        Command::Resume(args) => service::experiment_action(args, "resume"),
        Command::Trials(args) => service::trials(args),
        Command::Logs(args) => service::logs(args),
    }
}

//! `bocb report`, `export`, `patterns` (from the store, or through the
//! service that holds it) and `import`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use bocb_store::unix_now_s;
use bocb_tuner::analysis::{import, FailureRuleChoice};
use bocb_tuner::experiment::check_experiment_name;
use bocb_tuner::reads::{
    self, ExportAs, ExportFormat, ExportQuery, PatternsQuery, ReportFormat, ReportQuery,
};
use bocb_tuner::registries::Registries;
use bocb_tuner::service::client::Client;
use bocb_tuner::service::reader::Reader;

use crate::output::{open_store, write_output};

#[derive(clap::Args)]
pub struct ReportArgs {
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
    /// Leave the learning curves out of the HTML report: the one part that
    /// reads every epoch of every trial.
    #[arg(long)]
    no_curves: bool,
    #[arg(long, default_value = "./bocb-data")]
    store: PathBuf,
}

#[derive(clap::Args)]
pub struct ImportArgs {
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
}

#[derive(clap::Args)]
pub struct ExportArgs {
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
}

#[derive(clap::Args)]
pub struct PatternsArgs {
    #[arg(long)]
    experiment: String,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "./bocb-data")]
    store: PathBuf,
}

/// Where `bocb report|export|patterns` read the store at `dir`: itself, or
/// the API of the service that holds it.
fn reader(dir: &Path) -> Result<Reader> {
    Ok(Reader::open(dir, || {
        Client::for_store(dir, None, None, None)
    })?)
}

pub fn report(args: ReportArgs, registries: &Registries) -> Result<()> {
    let query = ReportQuery {
        experiment: args.experiment,
        format: args.format,
        failure_rule: args.failure_rule,
        gamma: args.gamma,
        curves: !args.no_curves,
    };
    reads::check_gamma(args.gamma)?;
    let text = reader(&args.store)?.report(registries, &query)?;
    write_output(args.out.as_deref(), &text)
}

pub fn export(args: ExportArgs, registries: &Registries) -> Result<()> {
    let query = ExportQuery {
        experiment: args.experiment,
        format: args.format,
        as_: args.as_,
        backbone: args.backbone,
        optimizer: args.optimizer,
        trials: args.trials,
    };
    let text = reader(&args.store)?.export(registries, &query)?;
    write_output(args.out.as_deref(), &text)
}

pub fn patterns(args: PatternsArgs) -> Result<()> {
    let query = PatternsQuery {
        experiment: args.experiment,
        json: args.json,
    };
    print!("{}", reader(&args.store)?.patterns(&query)?);
    Ok(())
}

pub fn import(args: ImportArgs) -> Result<()> {
    let ImportArgs {
        table,
        experiment,
        grid,
        gamma,
        store,
    } = args;
    check_experiment_name(&experiment)?;
    if let Some(g) = gamma.filter(|g| !(g.is_finite() && *g > 0.0)) {
        bail!("--gamma must be a positive number (3 for CIFAR, 1 for ImageNet), got {g}");
    }
    let imported = import::read_import(&table, grid.as_deref(), &experiment, gamma, unix_now_s())?;
    open_store(&store)?.put_imported(&imported)?;
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

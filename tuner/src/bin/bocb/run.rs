//! `bocb run`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use bocb_tuner::experiment::Experiment;
use bocb_tuner::local::run_experiment;
use bocb_tuner::reads::{self, ReportQuery};
use bocb_tuner::registries::Registries;

use crate::output::open_store;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The experiment file (YAML).
    experiment: PathBuf,
    #[arg(long, default_value = "./bocb-data")]
    store: PathBuf,
    /// No progress bars (a line per finished trial still goes to stderr).
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: RunArgs, registries: &Registries) -> Result<()> {
    let experiment = Experiment::load(&args.experiment, registries)?;
    if experiment.spec.launcher.is_some() {
        eprintln!(
            "note: `launcher:` is for a service (`bocb submit`); `bocb run` trains the trials here"
        );
    }
    let store = open_store(&args.store)?;
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let summary = run_experiment(&experiment, &store, registries, show_progress)?;
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
    print!("{}", reads::report_text(&store, registries, &query)?);
    Ok(())
}

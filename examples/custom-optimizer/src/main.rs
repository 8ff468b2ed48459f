//! Tune a new optimizer against every backbone with bocb.
//!
//! The whole recipe: implement `Optimizer` (src/signum.rs), write its search
//! space (optimizers/signum.yaml), register both, and run an experiment.
//!
//!     cargo run --release -p bocb-example-custom-optimizer -- [--full] [--store DIR]
//!
//! It writes a small synthetic dataset on first use, runs Signum against
//! SGD-M and prints bocb's report: by default experiment.yaml (two micro
//! backbones, a TPE budget; minutes on a CPU), with `--full`
//! experiment-full.yaml (every backbone's micro preset over the whole grid;
//! hours).

mod signum;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bocb_search_spaces::Catalog;
use bocb_store::Store;
use bocb_trial_runner::data::{write_synthetic, CifarFormat, SynthConfig};
use bocb_tuner::experiment::Experiment;
use bocb_tuner::local::run_experiment;
use bocb_tuner::registries::Registries;
use bocb_tuner::report;

fn main() -> Result<()> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let usage = "usage: bocb-example-custom-optimizer [--full] [--store DIR]";
    let mut file = "experiment.yaml";
    let mut store_dir = PathBuf::from("bocb-data");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--full" => file = "experiment-full.yaml",
            "--store" => store_dir = args.next().context(usage)?.into(),
            _ => anyhow::bail!(usage),
        }
    }

    // 1. bocb's registries and spaces, plus ours.
    let mut registries = Registries::builtin();
    registries
        .optimizers
        .register("signum", signum::Signum::build);
    registries.catalog.merge(Catalog::load_dir(here)?);

    // 2. Data for the demo (bring your own CIFAR directory instead).
    let data = here.join("../../data/synth-example");
    if !data.join("train.bin").exists() {
        let config = SynthConfig {
            classes: 10,
            train: 1000,
            test: 500,
            seed: 0,
        };
        write_synthetic(&data, &config, CifarFormat::Cifar100Bin.into())?;
    }

    // 3. The experiment, validated against the extended registries.
    let experiment = Experiment::load(&here.join(file), &registries)?;
    let store = Store::open(&store_dir)
        .with_context(|| format!("opening the store at {}", store_dir.display()))?;
    let summary = run_experiment(&experiment, &store, &registries, true)?;
    eprintln!(
        "trained {} trial(s); {} already done",
        summary.trained, summary.skipped
    );
    if let Some(report) = report::build(&store, &registries.catalog, &experiment.spec.name)? {
        print!("{}", report::render_table(&report));
    }
    Ok(())
}

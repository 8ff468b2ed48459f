//! `bocb backbones`.

use anyhow::{bail, Result};
use bocb_tuner::backbones;
use bocb_tuner::registries::Registries;
use clap::Subcommand;

use crate::output::print_json_or;

#[derive(clap::Args)]
pub struct BackbonesArgs {
    #[command(subcommand)]
    command: BackbonesCommand,
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

pub fn run(args: BackbonesArgs, registries: &Registries) -> Result<()> {
    let BackbonesCommand::List { json, classes } = args.command;
    if classes < 1 {
        bail!("--classes must be at least 1, got {classes}");
    }
    let infos = backbones::list(&registries.backbones, classes)?;
    print_json_or(&infos[..], json, |infos| {
        backbones::render_list(infos, classes)
    })
}

//! `bocb data`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use bocb_trial_runner::data::{
    write_synthetic, write_synthetic_photos, DatasetFormat, PhotoLayout, SynthConfig, UnknownFormat,
};
use clap::Subcommand;

#[derive(clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
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
        /// Full-size images for streaming at full resolution (image-folder
        /// only): the longer side in pixels, the shorter 3/4 of it.
        #[arg(long)]
        side: Option<usize>,
        /// With --side: JPEG files (quality 90) instead of PNG.
        #[arg(long, requires = "side")]
        jpeg: bool,
    },
}

fn parse_synth_format(name: &str) -> Result<DatasetFormat, String> {
    match name {
        "folder" => Ok(DatasetFormat::ImageFolder),
        _ => name
            .parse()
            .map_err(|e: UnknownFormat| format!("{e} (or folder)")),
    }
}

pub fn run(args: DataArgs) -> Result<()> {
    let DataCommand::Synth {
        out,
        classes,
        train,
        test,
        seed,
        format,
        side,
        jpeg,
    } = args.command;
    let config = SynthConfig {
        classes,
        train,
        test,
        seed,
    };
    let size = match side {
        Some(side) => {
            if format != DatasetFormat::ImageFolder {
                bail!("--side makes full-size images, which only --format image-folder holds");
            }
            write_synthetic_photos(&out, &config, PhotoLayout { side, jpeg })?;
            format!(
                " at {side}x{} ({})",
                side * 3 / 4,
                if jpeg { "JPEG" } else { "PNG" }
            )
        }
        None => {
            write_synthetic(&out, &config, format)?;
            String::new()
        }
    };
    eprintln!(
        "wrote {train} training and {test} test images of {classes} classes ({format}){size} to {}",
        out.display()
    );
    Ok(())
}

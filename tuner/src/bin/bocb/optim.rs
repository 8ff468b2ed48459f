//! `bocb optim`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bocb_trial_runner::optim::replay::{replay, ReplayCase};
use bocb_tuner::bench;
use bocb_tuner::registries::Registries;
use clap::Subcommand;

use crate::output::print_json_or;

#[derive(clap::Args)]
pub struct OptimArgs {
    #[command(subcommand)]
    command: OptimCommand,
}

#[derive(Subcommand)]
enum OptimCommand {
    /// Replay a recorded case (initial parameters and per-step gradients)
    /// through bocb's optimizer in float64, writing the parameters after
    /// every step: compare your implementation with bocb's, or bocb's with
    /// a reference. The case's `optimizer` may be `torchscript:PATH`.
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
        /// Only this optimizer (repeatable; default: all); `torchscript:PATH`
        /// measures your module's `state` tensors, with its space PATH.yaml.
        #[arg(long = "optimizer")]
        optimizers: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: OptimArgs, registries: &Registries) -> Result<()> {
    match args.command {
        OptimCommand::Replay { input, output } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading the replay case {}", input.display()))?;
            let case: ReplayCase = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a replay case (fields: optimizer, hparams, shapes, params0, grads[, hessians])",
                    input.display()
                )
            })?;
            let out = replay(&case, &registries.optimizers)
                .with_context(|| format!("replaying {}", input.display()))?;
            std::fs::write(&output, serde_json::to_string(&out)? + "\n")
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "replayed {} step(s) of `{}` into {}",
                out.trajectory.len(),
                case.optimizer,
                output.display()
            );
            Ok(())
        }
        OptimCommand::Info { optimizers, json } => {
            let infos = if optimizers.is_empty() {
                bench::optimizer_info(&registries.optimizers, &registries.catalog)?
            } else {
                bench::optimizers_info(&registries.optimizers, &registries.catalog, &optimizers)?
            };
            print_json_or(&infos[..], json, bench::render_info)
        }
    }
}

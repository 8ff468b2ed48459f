//! `bocb run`: an experiment's search with its trials trained in this
//! process, on the experiment's devices, from one loaded dataset, or run
//! as the experiment's own programs ([`ExternalPrograms`]).

use bocb_spec::TrialObserver;
use bocb_store::Store;
use bocb_trial_runner::data::LoadedData;
use bocb_trial_runner::{run_trial, TrialError};

use crate::executor::{RunError, TrialExecutor, TrialJob, TrialResult};
use crate::experiment::{DeviceSlots, Experiment, OpenDataset, TrialsPerDevice};
use crate::external::{stay_until_the_signal_ends_bocb, ExternalPrograms, SaveOnSignal};
use crate::packer::Packing;
use crate::registries::Registries;
use crate::run::{register_experiment, search_experiment, RunSummary, SearchOptions};

/// Trains trials in this process (`bocb run`) with bocb's own trainer, on
/// the device their spec names, as many at once as the search asks, all
/// from one loaded dataset.
pub struct InProcess<'a> {
    pub splits: &'a LoadedData,
    pub registries: &'a Registries,
}

impl TrialExecutor for InProcess<'_> {
    fn execute(
        &self,
        job: &TrialJob,
        observer: &mut dyn TrialObserver,
    ) -> Result<TrialResult, RunError> {
        let saving = SaveOnSignal::new();
        let result = run_trial(
            job.spec,
            self.splits,
            &self.registries.backbones,
            &self.registries.optimizers,
            observer,
        );
        drop(saving);
        Ok(match result {
            Ok(outcome) => TrialResult::from_outcome(outcome),
            // Stopped by a signal, its checkpoint saved: it stays unended.
            Err(TrialError::Interrupted { .. }) => stay_until_the_signal_ends_bocb(),
            Err(e) => TrialResult::failed(e.to_string()),
        })
    }
}

/// Trains every trial of `experiment` that the store does not hold finished
/// (done or diverged), in the experiment's device slots (`devices` x
/// `trials_per_device`): each slot searches one pair at a time, so a pair's
/// trials follow one another and its results do not depend on the number of
/// slots. With `trials_per_device: auto` the configs are probed first and
/// each device gets a slot per pair up to `packing.max_trials`, whose
/// trials start as the device's packer admits them. Progress bars go to
/// stderr when it is a terminal and `show_progress` is set.
pub fn run_experiment(
    experiment: &Experiment,
    store: &Store,
    registries: &Registries,
    show_progress: bool,
) -> Result<RunSummary, RunError> {
    let experiment = &experiment.with_pretrained(store)?;
    let spec = &experiment.spec;
    // Everything that can be refused is checked before the store is touched.
    let slots = spec.device_slots().map_err(RunError::Device)?;
    // External programs read their data themselves: none is loaded.
    let splits = match spec.trial {
        Some(_) => None,
        None => Some(spec.dataset.open(
            &experiment.dataset_dir,
            bocb_trial_runner::batches::default_workers(),
        )?),
    };
    let in_process;
    let executor: &dyn TrialExecutor = match &splits {
        None => &ExternalPrograms,
        Some(splits) => {
            in_process = InProcess { splits, registries };
            &in_process
        }
    };
    // `auto` is refused for external trials, so its data is loaded.
    let packing = match (spec.trials_per_device, &splits) {
        (TrialsPerDevice::Auto, Some(splits)) => {
            // A changed experiment is refused before anything is probed.
            register_experiment(experiment, store)?;
            let log = |line: &str| eprintln!("{line}");
            Some(Packing::prepare(
                experiment, store, registries, splits, &slots, &log,
            )?)
        }
        _ => None,
    };
    let slots = match packing {
        None => slots,
        Some(_) => {
            let pairs = experiment.backbones.len() * experiment.optimizers.len();
            let per_device = spec.packing_rule().max_trials.min(pairs);
            (0..per_device)
                .flat_map(|_| slots.iter().copied())
                .collect()
        }
    };
    let options = SearchOptions {
        concurrent_pairs: slots.len(),
        slots,
        show_progress,
        cancel: None,
        packing: packing.as_ref(),
    };
    search_experiment(experiment, store, &registries.catalog, executor, &options)
}

//! Runs an experiment's search for every pair, recording into the store.

use std::time::Duration;

use bocb_search_spaces::Catalog;
use bocb_store::{
    unix_now_s, EpochMetrics, ExperimentRecord, GridPos, Store, StoreError, TrialRecord,
    TrialStatus,
};
use bocb_trial_runner::data::{self, Splits};
use bocb_trial_runner::device::device_name;
use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::optim::{Hparams, OptimizerRegistry};
use bocb_trial_runner::{run_trial, EpochReport, TrialObserver, TrialSpec};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::experiment::{Experiment, ExperimentSpec};
use crate::strategy::{GridSearch, Strategy};

/// What a run needs besides the experiment: the registries and spaces.
pub struct Registries {
    pub backbones: BackboneRegistry,
    pub optimizers: OptimizerRegistry,
    pub catalog: Catalog,
}

impl Registries {
    pub fn builtin() -> Self {
        Registries {
            backbones: BackboneRegistry::builtin(),
            optimizers: OptimizerRegistry::builtin(),
            catalog: Catalog::builtin(),
        }
    }
}

/// Counts of one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunSummary {
    /// Trials trained in this run.
    pub trained: usize,
    /// Trials found finished in the store and not trained again.
    pub skipped: usize,
    pub diverged: usize,
    pub failed: usize,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("{0}")]
    Device(String),
    #[error("experiment `{name}` is already in the store with other training settings:\n  stored: {stored}\n  now:    {now}\nrename the experiment, or restore the stored settings to grow it")]
    SettingsChanged {
        name: String,
        stored: String,
        now: String,
    },
}

/// Trains every trial of `experiment` that the store does not hold finished
/// (done or diverged), one after another. Progress bars go to stderr when
/// it is a terminal and `show_progress` is set.
pub fn run_experiment(
    experiment: &Experiment,
    store: &Store,
    registries: &Registries,
    show_progress: bool,
) -> Result<RunSummary, RunError> {
    let spec = &experiment.spec;
    // Everything that can be refused is checked before the store is touched.
    let device = spec.device.resolve().map_err(RunError::Device)?;
    let splits = data::load(&experiment.dataset_dir, spec.dataset.format)?;
    register_experiment(experiment, store)?;

    let configs_per_pair = 25 * spec.seeds as usize;
    let total = experiment.backbones.len() * experiment.optimizers.len() * configs_per_pair;
    let progress = Progress::new(total as u64, show_progress);
    let mut summary = RunSummary::default();
    for backbone in &experiment.backbones {
        for optimizer in &experiment.optimizers {
            let pair = Pair {
                experiment,
                backbone,
                optimizer,
                device: device_name(device),
            };
            pair.search(store, registries, &splits, &progress, &mut summary)?;
        }
    }
    progress.finish();
    Ok(summary)
}

/// Creates the experiment record, or checks that a stored one has the same
/// training settings (it may grow, not change).
fn register_experiment(experiment: &Experiment, store: &Store) -> Result<(), RunError> {
    let now = unix_now_s();
    let spec = &experiment.spec;
    let created_unix_s = match store.experiment(&spec.name)? {
        Some(stored) => {
            let stored_spec: Option<ExperimentSpec> = serde_yaml::from_str(&stored.spec_yaml).ok();
            let stored_settings = stored_spec.as_ref().map(Experiment::training_settings);
            let settings = Experiment::training_settings(spec);
            if let Some(stored_settings) = stored_settings.filter(|s| *s != settings) {
                return Err(RunError::SettingsChanged {
                    name: spec.name.clone(),
                    stored: stored_settings,
                    now: settings,
                });
            }
            stored.created_unix_s
        }
        None => now,
    };
    store.put_experiment(&ExperimentRecord {
        name: spec.name.clone(),
        spec_yaml: experiment.source.clone(),
        created_unix_s,
        updated_unix_s: now,
    })?;
    Ok(())
}

/// The stable identity of a trial: re-running or growing an experiment
/// finds the same id for the same work.
pub fn trial_id(
    experiment: &str,
    backbone: &str,
    optimizer: &str,
    params: &Hparams,
    seed: u64,
) -> String {
    let key = serde_json::json!({
        "experiment": experiment,
        "backbone": backbone,
        "optimizer": optimizer,
        "params": params,
        "seed": seed,
    });
    let digest = Sha256::digest(key.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

struct Pair<'a> {
    experiment: &'a Experiment,
    backbone: &'a str,
    optimizer: &'a str,
    device: String,
}

impl Pair<'_> {
    fn search(
        &self,
        store: &Store,
        registries: &Registries,
        splits: &Splits,
        progress: &Progress,
        summary: &mut RunSummary,
    ) -> Result<(), RunError> {
        let spec = &self.experiment.spec;
        let space = registries
            .catalog
            .optimizer(self.optimizer)
            .expect("experiment validation checked the search space");
        let mut strategy = GridSearch;
        let mut tried: Vec<GridPos> = Vec::new();
        loop {
            let proposals = strategy.propose(space, &tried);
            if proposals.is_empty() {
                return Ok(());
            }
            for proposal in proposals {
                tried.push(proposal.grid);
                for seed in 0..u64::from(spec.seeds) {
                    let id = trial_id(
                        &spec.name,
                        self.backbone,
                        self.optimizer,
                        &proposal.params,
                        seed,
                    );
                    let finished = store.trial(&spec.name, &id)?.is_some_and(|t| {
                        matches!(t.status, TrialStatus::Done | TrialStatus::Diverged)
                    });
                    if finished {
                        summary.skipped += 1;
                        progress.trial_skipped();
                        continue;
                    }
                    let status = self.train(
                        store,
                        registries,
                        splits,
                        progress,
                        &id,
                        &proposal.params,
                        proposal.grid,
                        seed,
                    )?;
                    summary.trained += 1;
                    match status {
                        TrialStatus::Diverged => summary.diverged += 1,
                        TrialStatus::Failed => summary.failed += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Trains one trial, recording it before the first step, after every
    /// epoch, and at the end.
    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        store: &Store,
        registries: &Registries,
        splits: &Splits,
        progress: &Progress,
        id: &str,
        params: &Hparams,
        grid: GridPos,
        seed: u64,
    ) -> Result<TrialStatus, RunError> {
        let spec = &self.experiment.spec;
        let now = unix_now_s();
        store.put_trial(&TrialRecord {
            id: id.to_string(),
            experiment: spec.name.clone(),
            backbone: self.backbone.to_string(),
            optimizer: self.optimizer.to_string(),
            recipe: None,
            params: params.clone(),
            grid: Some(grid),
            stage: 1,
            seed,
            status: TrialStatus::Running,
            epochs: Vec::new(),
            final_accuracy: None,
            wall_time_s: None,
            device: Some(self.device.clone()),
            error: None,
            created_unix_s: now,
            updated_unix_s: now,
        })?;
        let trial_spec = TrialSpec {
            backbone: self.backbone.to_string(),
            optimizer: self.optimizer.to_string(),
            hparams: params.clone(),
            seed,
            epochs: spec.epochs,
            batch_size: spec.batch_size,
            warmup_epochs: spec.warmup_epochs,
            decay_norm_and_bias: spec.decay_norm_and_bias,
            device: spec.device,
        };
        let label = format!(
            "{} × {} lr={} wd={} seed={seed}",
            self.backbone,
            self.optimizer,
            crate::report::fmt_value(params["lr"]),
            crate::report::fmt_value(params["weight_decay"]),
        );
        let mut recorder = Recorder {
            store,
            experiment: &spec.name,
            id,
            bar: progress.start_trial(&label, spec.epochs),
            label: &label,
            images_per_sec: 0.0,
            store_error: None,
        };
        let result = run_trial(
            &trial_spec,
            splits,
            &registries.backbones,
            &registries.optimizers,
            &mut recorder,
        );
        recorder.bar.finish_and_clear();
        if let Some(e) = recorder.store_error {
            return Err(e.into());
        }
        let (status, accuracy, wall, error) = match result {
            Ok(outcome) => {
                let status = match outcome.status {
                    bocb_trial_runner::TrialStatus::Done => TrialStatus::Done,
                    bocb_trial_runner::TrialStatus::Diverged => TrialStatus::Diverged,
                };
                (
                    status,
                    outcome.final_accuracy,
                    Some(outcome.wall_s),
                    outcome.note,
                )
            }
            Err(e) => (TrialStatus::Failed, None, None, Some(e.to_string())),
        };
        store.finish_trial(&spec.name, id, status, accuracy, wall, error.clone())?;
        let result = match (status, accuracy) {
            (TrialStatus::Done, Some(acc)) => {
                format!("{acc:.2}% ({:.0} train images/s)", recorder.images_per_sec)
            }
            _ => format!(
                "{status}{}",
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        };
        progress.trial_finished(&format!("{label}: {result}"));
        Ok(status)
    }
}

/// Forwards the runner's reports to the store and the trial's progress bar.
struct Recorder<'a> {
    store: &'a Store,
    experiment: &'a str,
    id: &'a str,
    bar: ProgressBar,
    label: &'a str,
    /// Training throughput of the last epoch.
    images_per_sec: f64,
    /// A failed write ends the run after the trial; the runner cannot take errors.
    store_error: Option<StoreError>,
}

impl TrialObserver for Recorder<'_> {
    fn on_batch(&mut self, epoch: u32, batch: usize, batches: usize) {
        let fraction = (epoch - 1) as f64 + batch as f64 / batches as f64;
        self.bar.set_position((fraction * 100.0) as u64);
    }

    fn on_epoch(&mut self, r: &EpochReport) {
        self.bar.set_message(format!(
            "{}: epoch {} top-1 {:.2}%",
            self.label, r.epoch, r.test_accuracy
        ));
        let metrics = EpochMetrics {
            epoch: r.epoch,
            train_loss: r.train_loss,
            test_loss: r.test_loss,
            test_accuracy: r.test_accuracy,
            lr: r.lr,
            images_per_sec: r.images_per_sec,
            wall_s: r.wall_s,
        };
        self.images_per_sec = r.images_per_sec;
        if self.store_error.is_none() {
            if let Err(e) = self.store.record_epoch(self.experiment, self.id, metrics) {
                self.store_error = Some(e);
            }
        }
    }
}

/// Progress bars for the experiment and the running trial; hidden off a
/// terminal, where a line per finished trial goes to stderr instead.
struct Progress {
    bars: MultiProgress,
    experiment: ProgressBar,
}

impl Progress {
    fn new(total: u64, show: bool) -> Self {
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bars = MultiProgress::with_draw_target(target);
        let experiment = bars.add(ProgressBar::new(total));
        experiment.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} trials, {elapsed} elapsed, ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        experiment.set_prefix("experiment");
        experiment.enable_steady_tick(Duration::from_millis(500));
        Progress { bars, experiment }
    }

    fn start_trial(&self, label: &str, epochs: u32) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(u64::from(epochs) * 100));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {wide_msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix("trial");
        bar.set_message(label.to_string());
        bar
    }

    fn trial_skipped(&self) {
        self.experiment.inc(1);
    }

    fn trial_finished(&self, line: &str) {
        self.experiment.inc(1);
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    fn finish(&self) {
        self.experiment.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_ids_are_stable_and_distinguish_every_field() {
        let params: Hparams = [("lr".to_string(), 0.1), ("weight_decay".to_string(), 5e-4)].into();
        let id = trial_id("e", "b", "o", &params, 0);
        assert_eq!(id.len(), 16);
        assert_eq!(id, trial_id("e", "b", "o", &params.clone(), 0));
        let mut other = params.clone();
        other.insert("lr".into(), 0.2);
        let variants = [
            trial_id("e2", "b", "o", &params, 0),
            trial_id("e", "b2", "o", &params, 0),
            trial_id("e", "b", "o2", &params, 0),
            trial_id("e", "b", "o", &other, 0),
            trial_id("e", "b", "o", &params, 1),
        ];
        assert!(variants.iter().all(|v| *v != id));
    }
}

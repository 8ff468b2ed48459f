//! Runs an experiment's search for every pair, recording into the store;
//! trials go to an executor (`crate::local` trains them in this process, the
//! service's queue hands them to workers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bocb_search_spaces::{Catalog, OptimizerSpace};
use bocb_spec::{DeviceChoice, Hparams, TrialObserver};
use bocb_store::{
    best_per_pair_of, stored_spec, unix_now_s, EpochMetrics, ExperimentRecord, GridPos, Store,
    StoreError, TrialRecord, TrialStatus, TrialSummary, GRID_POINTS,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::executor::{RunError, TrialExecutor, TrialJob, TrialResult};
use crate::experiment::{Experiment, ExperimentSpec};
use crate::packer::{Packing, Ticket};
use crate::search::extension::next_extension;
use crate::search::{
    BuildEarlyStop, BuildStrategy, Curve, EarlyStop, Observation, Prior, Relative, RelativeMap,
};
use crate::transfer::no_such_experiment;
use crate::trial_command::DerivedLimit;

/// Counts of one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunSummary {
    /// Trials trained in this run.
    pub trained: usize,
    /// Trials found finished in the store and not trained again.
    pub skipped: usize,
    pub diverged: usize,
    /// Trials stopped by the early-stopping rule.
    pub stopped: usize,
    pub failed: usize,
    /// Whether `budget.hours` ran out before the search ended.
    pub out_of_time: bool,
}

/// How a search runs besides its experiment and executor.
#[derive(Default)]
pub struct SearchOptions<'a> {
    /// Pairs searched at once (at least one); each waits on its own trials.
    /// Ignored when `slots` names devices.
    pub concurrent_pairs: usize,
    /// When the search places trials itself (`bocb run`): the device of
    /// each slot, one pair-searching thread per slot, whose trials all run
    /// there. Empty when the executor places them (the service's workers).
    pub slots: Vec<DeviceChoice>,
    pub show_progress: bool,
    /// Set to end the search: no trial starts after it, and the executor
    /// answers `Cancelled` for those waiting.
    pub cancel: Option<&'a AtomicBool>,
    /// With `trials_per_device: auto`: the packers each slot's trials ask
    /// before they start.
    pub packing: Option<&'a Packing>,
}

/// Registers `experiment` in the store and searches its pairs, up to
/// `options.concurrent_pairs` (or one per slot) at once, training through
/// `executor`.
pub fn search_experiment(
    experiment: &Experiment,
    store: &Store,
    catalog: &Catalog,
    executor: &dyn TrialExecutor,
    options: &SearchOptions,
) -> Result<RunSummary, RunError> {
    // Each backbone once per pre-training optimizer of `from_experiment`.
    let experiment = &experiment.with_pretrained(store)?;
    let spec = &experiment.spec;
    let learnt_before = learnt_before(store, &spec.transfer_from)?;
    register_experiment(experiment, store)?;
    // The spaces of the experiment's own (TorchScript) optimizers too.
    let catalog = &experiment.catalog(catalog);

    let mut configs_per_pair = spec.budget.trials.unwrap_or(GRID_POINTS * GRID_POINTS);
    let mut total = 0;
    for optimizer in &experiment.optimizers {
        if spec.search_extras {
            let space = catalog
                .optimizer(optimizer)
                .expect("experiment validation checked the search space");
            configs_per_pair += space
                .extras
                .values()
                .map(|e| e.candidates.len())
                .sum::<usize>();
        }
        total += experiment.backbones.len() * configs_per_pair * spec.seeds as usize;
    }
    let not_cancelled = AtomicBool::new(false);
    let ctx = RunContext {
        store,
        catalog,
        executor,
        cancel: options.cancel.unwrap_or(&not_cancelled),
        packing: options.packing,
        progress: Progress::new(total as u64, options.show_progress),
        deadline: spec
            .budget
            .hours
            .map(|h| Instant::now() + Duration::from_secs_f64(h * 3600.0)),
        learnt_before,
    };
    let pairs: Vec<Pair> = experiment
        .backbones
        .iter()
        .flat_map(|backbone| {
            experiment.optimizers.iter().map(move |optimizer| Pair {
                experiment,
                backbone,
                optimizer,
                device: None,
            })
        })
        .collect();
    let next_pair = AtomicUsize::new(0);
    let summary = Mutex::new(RunSummary::default());
    let first_error: Mutex<Option<RunError>> = Mutex::new(None);
    let threads = if options.slots.is_empty() {
        options.concurrent_pairs
    } else {
        options.slots.len()
    };
    let threads = threads.clamp(1, pairs.len().max(1));
    crossbeam::scope(|scope| {
        for thread in 0..threads {
            let slot = options.slots.get(thread).copied();
            let (pairs, next_pair, summary, first_error, ctx) =
                (&pairs, &next_pair, &summary, &first_error, &ctx);
            scope.spawn(move |_| {
                while let Some(pair) = pairs.get(next_pair.fetch_add(1, Ordering::SeqCst)) {
                    let pair = Pair {
                        device: slot,
                        ..*pair
                    };
                    let mut pair_summary = RunSummary::default();
                    let result = pair.search(ctx, &mut pair_summary);
                    summary.lock().expect("summary lock").absorb(&pair_summary);
                    if let Err(e) = result {
                        // The other pairs stop at their next trial.
                        first_error.lock().expect("error lock").get_or_insert(e);
                        break;
                    }
                    if first_error.lock().expect("error lock").is_some() {
                        break;
                    }
                }
            });
        }
    })
    .expect("a pair's search panicked");
    ctx.progress.finish();
    if let Some(e) = first_error.into_inner().expect("error lock") {
        return Err(e);
    }
    let mut summary = summary.into_inner().expect("summary lock");
    summary.out_of_time = ctx.out_of_time();
    Ok(summary)
}

/// The stage-1 maps of the pairs of each earlier experiment in `names`
/// (`transfer_from`), read once: they do not change while this one runs.
fn learnt_before(store: &Store, names: &[String]) -> Result<Vec<(PairKey, RelativeMap)>, RunError> {
    let mut maps = Vec::new();
    for name in names {
        let Some(record) = store.experiment(name)? else {
            return Err(RunError::Transfer(format!(
                "`transfer_from` names `{name}`, but {}; run it first, or remove it from `transfer_from`",
                no_such_experiment(store, name)?
            )));
        };
        let seeds = stored_spec(store, &record)?.map_or(1, |spec| spec.seeds);
        maps.extend(stage1_maps(store, name, seeds)?);
    }
    Ok(maps)
}

/// What each pair of experiment `name` has found in stage 1 so far, as a
/// relative's map (pairs with too little to say are left out).
fn stage1_maps(
    store: &Store,
    name: &str,
    seeds: u32,
) -> Result<Vec<(PairKey, RelativeMap)>, RunError> {
    let mut by_pair: BTreeMap<PairKey, Vec<TrialRecord>> = BTreeMap::new();
    for trial in store.trials_where(name, |s| s.trial.stage == 1)? {
        by_pair
            .entry((trial.backbone.clone(), trial.optimizer.clone()))
            .or_default()
            .push(trial);
    }
    Ok(by_pair
        .into_iter()
        .filter_map(|(pair, trials)| {
            Some((pair, RelativeMap::of(&observations(&trials, seeds).0)?))
        })
        .collect())
}

impl RunSummary {
    /// Adds the counts of another part of the run.
    fn absorb(&mut self, other: &RunSummary) {
        self.trained += other.trained;
        self.skipped += other.skipped;
        self.diverged += other.diverged;
        self.stopped += other.stopped;
        self.failed += other.failed;
        self.out_of_time |= other.out_of_time;
    }
}

/// Creates the experiment record, or checks that a stored one has the same
/// training settings (it may grow, not change).
pub fn register_experiment(experiment: &Experiment, store: &Store) -> Result<(), RunError> {
    let now = unix_now_s();
    let spec = &experiment.spec;
    let created_unix_s = match store.experiment(&spec.name)? {
        Some(stored) => {
            if let Some(stored_spec) = stored_spec(store, &stored)? {
                let stored_settings = stored_spec.training_settings();
                let settings = spec.training_settings();
                if stored_settings != settings {
                    return Err(RunError::SettingsChanged {
                        name: spec.name.clone(),
                        stored: stored_settings,
                        now: settings,
                    });
                }
                check_grid_centres(experiment, &stored_spec, store)?;
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
        // Absolute, so the service can resume the experiment from anywhere.
        base_dir: Some(
            std::path::absolute(&experiment.base_dir)
                .unwrap_or_else(|_| experiment.base_dir.clone()),
        ),
    })?;
    Ok(())
}

/// Refuses a changed grid centre for a pair that has trials: their grid
/// positions would stop meaning the values they were trained with. Pairs
/// without trials (new backbones, optimizers) may get any centre.
fn check_grid_centres(
    experiment: &Experiment,
    stored_spec: &ExperimentSpec,
    store: &Store,
) -> Result<(), RunError> {
    let spec = &experiment.spec;
    let trials = store.trials(&spec.name)?;
    for backbone in &experiment.backbones {
        for optimizer in &experiment.optimizers {
            let (stored, now) = (
                stored_spec.grid_centre(backbone, optimizer),
                spec.grid_centre(backbone, optimizer),
            );
            let has_trials = || {
                trials
                    .iter()
                    .any(|t| t.backbone == *backbone && t.optimizer == *optimizer)
            };
            if stored != now && has_trials() {
                let pair = format!("grids of {backbone} × {optimizer}");
                return Err(RunError::SettingsChanged {
                    name: spec.name.clone(),
                    stored: format!("{pair}: {stored}"),
                    now: format!("{pair}: {now}"),
                });
            }
        }
    }
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

/// What every trial of a run shares.
struct RunContext<'a> {
    store: &'a Store,
    catalog: &'a Catalog,
    executor: &'a dyn TrialExecutor,
    cancel: &'a AtomicBool,
    packing: Option<&'a Packing>,
    progress: Progress,
    /// When `budget.hours` runs out.
    deadline: Option<Instant>,
    /// What the experiments of `transfer_from` learnt, per pair.
    learnt_before: Vec<(PairKey, RelativeMap)>,
}

/// A (backbone, optimizer) pair by name.
type PairKey = (String, String);

impl RunContext<'_> {
    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether no more trials may start, and why not when it is an error.
    fn must_end(&self) -> Result<bool, RunError> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(RunError::Cancelled);
        }
        Ok(self.out_of_time())
    }
}

/// Where a trial's checkpoint is kept while it has not ended: below the
/// store, by experiment and trial id, so any worker can continue it.
pub fn checkpoint_dir(store: &Store, experiment: &str, trial_id: &str) -> std::path::PathBuf {
    store
        .dir()
        .join("checkpoints")
        .join(experiment)
        .join(trial_id)
}

/// Whether a trial has its result: ended for a reason other than an error
/// (failed trials are retried by the next run).
fn finished(status: TrialStatus) -> bool {
    status.is_final() && status != TrialStatus::Failed
}

/// What the strategy knows of stage 1 from the pair's trials: one
/// observation per grid point whose seeds have all ended (failures
/// excepted), and the points some of whose seeds have not.
fn observations(trials: &[TrialRecord], seeds: u32) -> (Vec<Observation>, Vec<GridPos>) {
    let mut by_point: BTreeMap<GridPos, Vec<&TrialRecord>> = BTreeMap::new();
    for trial in trials {
        if let Some(grid) = trial.grid {
            by_point.entry(grid).or_default().push(trial);
        }
    }
    let mut history = Vec::new();
    let mut unfinished = Vec::new();
    for (point, trials) in by_point {
        let ended: Vec<&TrialRecord> = trials.into_iter().filter(|t| finished(t.status)).collect();
        if ended.len() < seeds as usize {
            unfinished.push(point);
            continue;
        }
        // A diverged seed scores 0; a stopped one its best epoch.
        let score = |t: &TrialRecord| match t.status {
            TrialStatus::Done => t.final_accuracy.unwrap_or(0.0),
            TrialStatus::Stopped => t
                .epochs
                .iter()
                .map(|e| e.test_accuracy)
                .filter(|a| a.is_finite())
                .fold(0.0, f64::max),
            _ => 0.0,
        };
        history.push(Observation {
            point,
            accuracy: ended.iter().map(|t| score(t)).sum::<f64>() / ended.len() as f64,
            complete: ended.iter().all(|t| t.status != TrialStatus::Stopped),
        });
    }
    (history, unfinished)
}

/// The best config of one pair's `trials` (among those with params `only`,
/// when given) by the store's rule, as the report shows it: the highest
/// mean final accuracy over seeds, equal means to the config created first
/// ([`Store::best_per_pair`]). Its grid position, params and mean.
fn best_config(
    trials: &[TrialRecord],
    only: Option<&Hparams>,
) -> Option<(Option<GridPos>, Hparams, f64)> {
    let kept = trials
        .iter()
        .filter(|t| only.is_none_or(|params| *params == t.params));
    let best = best_per_pair_of(kept).into_iter().next()?;
    Some((best.grid, best.params, best.mean_accuracy))
}

#[derive(Clone, Copy)]
struct Pair<'a> {
    experiment: &'a Experiment,
    backbone: &'a str,
    optimizer: &'a str,
    /// The slot's device the trials run on, when the search places them.
    device: Option<DeviceChoice>,
}

impl Pair<'_> {
    /// Stage 1 (the strategy's lr x weight-decay grid points, up to the
    /// budget), then stage 2 when the experiment searches extras.
    fn search(&self, ctx: &RunContext, summary: &mut RunSummary) -> Result<(), RunError> {
        let spec = &self.experiment.spec;
        let space = &spec.pair_space(
            self.backbone,
            ctx.catalog
                .optimizer(self.optimizer)
                .expect("experiment validation checked the search space"),
        );
        let budget = spec.budget.trials.unwrap_or(GRID_POINTS * GRID_POINTS);
        let mut strategy = spec
            .strategy
            .build_ending_below(self.strategy_seed(), spec.budget.min_expected_gain);
        // What earlier runs finished is not trained again; count it once, here.
        let done_before = ctx
            .store
            .trial_summaries(&spec.name)?
            .iter()
            .filter(|s| {
                let t = &s.trial;
                t.backbone == self.backbone && t.optimizer == self.optimizer && finished(t.status)
            })
            .count();
        summary.skipped += done_before;
        ctx.progress.trials_skipped(done_before as u64);
        // Points whose trials failed in this run: tried, but not retried
        // until the next run.
        let mut failed_now: Vec<GridPos> = Vec::new();
        loop {
            let trials = self.stage_trials(ctx.store, 1)?;
            let (mut history, unfinished) = observations(&trials, spec.seeds);
            let prior = if spec.transfer {
                self.prior(ctx)?
            } else {
                Prior::default()
            };
            history.extend(failed_now.iter().map(|&point| Observation {
                point,
                accuracy: 0.0,
                complete: false,
            }));
            // Finish what an interrupted run started before trying more.
            let next = unfinished
                .into_iter()
                .find(|p| !failed_now.contains(p))
                .or_else(|| {
                    (history.len() < budget)
                        .then(|| strategy.propose(&history, &prior))
                        .flatten()
                });
            let Some(point) = next else {
                let ended_early = history.len() < budget.min(GRID_POINTS * GRID_POINTS);
                if let Some(gain) = spec.budget.min_expected_gain.filter(|_| ended_early) {
                    ctx.progress.note(&format!(
                        "{} × {}: stage 1 ends after {} of {budget} configs: no untried one is expected to gain {gain} points (budget.min_expected_gain)",
                        self.backbone,
                        self.optimizer,
                        history.len()
                    ));
                }
                break;
            };
            if ctx.must_end()? {
                return Ok(());
            }
            let mut params = space.default_params();
            params.insert("lr".into(), space.lr.values()[usize::from(point.lr)]);
            params.insert(
                "weight_decay".into(),
                space.weight_decay.values()[usize::from(point.weight_decay)],
            );
            if !self.train_seeds(ctx, &params, Some(point), 1, summary)? {
                failed_now.push(point);
            }
        }
        self.extend_grid(ctx, space, summary)?;
        if spec.search_extras {
            self.search_extras(ctx, space, summary)?;
        }
        Ok(())
    }

    /// What the experiment's other pairs have found in stage 1 so far, and
    /// the pairs of the experiments it learns from (`transfer_from`).
    fn prior(&self, ctx: &RunContext) -> Result<Prior, RunError> {
        let spec = &self.experiment.spec;
        let maps = stage1_maps(ctx.store, &spec.name, spec.seeds)?;
        let own = maps.iter().map(|m| (m, false));
        let earlier = ctx.learnt_before.iter().map(|m| (m, true));
        let relatives: Vec<Relative> = own
            .chain(earlier)
            .map(|(((backbone, optimizer), map), earlier)| Relative {
                backbone,
                optimizer,
                map,
                earlier,
            })
            .collect();
        Ok(Prior::from_relatives(
            self.backbone,
            self.optimizer,
            &relatives,
        ))
    }

    /// Stage 1's grid extension (`grid_extension`): while the best config
    /// lies on an end of its lr or weight-decay axis, the next x2 step past
    /// it (see [`next_extension`]); trained as stage-1 trials off the grid.
    fn extend_grid(
        &self,
        ctx: &RunContext,
        space: &OptimizerSpace,
        summary: &mut RunSummary,
    ) -> Result<(), RunError> {
        let spec = &self.experiment.spec;
        let max_steps = spec.grid_extension_steps();
        if max_steps == 0 {
            return Ok(());
        }
        loop {
            let trials = self.stage_trials(ctx.store, 1)?;
            let Some((_, best, _)) = best_config(&trials, None) else {
                return Ok(());
            };
            // Tried: every seed ended (a failed one too, so a config that
            // fails is not retried in a loop).
            let tried = |params: &Hparams| {
                trials
                    .iter()
                    .filter(|t| t.params == *params && finished(t.status))
                    .count()
                    >= spec.seeds as usize
            };
            let Some(params) = next_extension(space, &best, max_steps, tried) else {
                return Ok(());
            };
            if ctx.must_end()? {
                return Ok(());
            }
            if !self.train_seeds(ctx, &params, None, 1, summary)? {
                return Ok(());
            }
        }
    }

    /// Stage 2: each extra in name order over its candidates, with lr,
    /// weight decay and the extras before it fixed at their best so far.
    fn search_extras(
        &self,
        ctx: &RunContext,
        space: &OptimizerSpace,
        summary: &mut RunSummary,
    ) -> Result<(), RunError> {
        let trials = self.stage_trials(ctx.store, 1)?;
        let Some((grid, mut best_params, mut best_accuracy)) = best_config(&trials, None) else {
            return Ok(());
        };
        for (name, extra) in &space.extras {
            let mut best_value = best_params[name];
            for &candidate in &extra.candidates {
                if candidate == best_params[name] {
                    continue;
                }
                if ctx.must_end()? {
                    return Ok(());
                }
                let mut params = best_params.clone();
                params.insert(name.clone(), candidate);
                self.train_seeds(ctx, &params, grid, 2, summary)?;
                let stage2 = self.stage_trials(ctx.store, 2)?;
                if let Some((_, _, accuracy)) = best_config(&stage2, Some(&params)) {
                    if accuracy > best_accuracy {
                        best_accuracy = accuracy;
                        best_value = candidate;
                    }
                }
            }
            best_params.insert(name.clone(), best_value);
        }
        Ok(())
    }

    /// Trains every seed of one config that the store does not hold
    /// finished; false when one of them failed.
    fn train_seeds(
        &self,
        ctx: &RunContext,
        params: &Hparams,
        grid: Option<GridPos>,
        stage: u8,
        summary: &mut RunSummary,
    ) -> Result<bool, RunError> {
        let spec = &self.experiment.spec;
        let mut all_ok = true;
        for seed in 0..u64::from(spec.seeds) {
            let id = trial_id(&spec.name, self.backbone, self.optimizer, params, seed);
            if ctx
                .store
                .trial(&spec.name, &id)?
                .is_some_and(|t| finished(t.status))
            {
                continue;
            }
            let ticket = match self.packer(ctx) {
                None => None,
                Some((packing, packer, device)) => {
                    let demand = packing.demand(self.backbone, self.optimizer, device);
                    let stop = || ctx.cancel.load(Ordering::SeqCst) || ctx.out_of_time();
                    let ticket = packer.admit(demand, &stop, &|line| ctx.progress.note(line));
                    if ticket.is_none() {
                        // Stopped or out of time while it waited.
                        ctx.must_end()?;
                        return Ok(all_ok);
                    }
                    ticket
                }
            };
            let status = self.train(ctx, &id, params, grid, stage, seed, ticket.as_ref())?;
            summary.trained += 1;
            match status {
                TrialStatus::Diverged => summary.diverged += 1,
                TrialStatus::Stopped => summary.stopped += 1,
                TrialStatus::Failed => {
                    summary.failed += 1;
                    all_ok = false;
                }
                _ => {}
            }
        }
        Ok(all_ok)
    }

    /// The packer this pair's trials ask before they start, with
    /// `trials_per_device: auto`.
    fn packer<'c>(
        &self,
        ctx: &RunContext<'c>,
    ) -> Option<(&'c Packing, &'c crate::packer::DevicePacker, DeviceChoice)> {
        let (packing, device) = (ctx.packing?, self.device?);
        Some((packing, packing.packer(device)?, device))
    }

    /// This pair's trials of every stage.
    fn pair_trials(&self, store: &Store) -> Result<Vec<TrialRecord>, RunError> {
        self.pair_trials_where(store, |_| true)
    }

    /// This pair's trials of one stage.
    fn stage_trials(&self, store: &Store, stage: u8) -> Result<Vec<TrialRecord>, RunError> {
        self.pair_trials_where(store, |s| s.trial.stage == stage)
    }

    /// This pair's trials whose summary `keep` accepts, read whole.
    fn pair_trials_where(
        &self,
        store: &Store,
        keep: impl Fn(&TrialSummary) -> bool,
    ) -> Result<Vec<TrialRecord>, RunError> {
        Ok(store.trials_where(&self.experiment.spec.name, |s| {
            s.trial.backbone == self.backbone && s.trial.optimizer == self.optimizer && keep(s)
        })?)
    }

    /// The strategy's seed for this pair: the experiment's, mixed with the
    /// pair so pairs do not all walk the grid in the same order.
    fn strategy_seed(&self) -> u64 {
        let digest = Sha256::digest(format!("{}\0{}", self.backbone, self.optimizer).as_bytes());
        let mut pair = [0u8; 8];
        pair.copy_from_slice(&digest[..8]);
        self.experiment.spec.strategy_seed ^ u64::from_le_bytes(pair)
    }

    /// Trains one trial, recording it before the first step, after every
    /// epoch, and at the end; `ticket` is its place on a packed device.
    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        ctx: &RunContext,
        id: &str,
        params: &Hparams,
        grid: Option<GridPos>,
        stage: u8,
        seed: u64,
        ticket: Option<&Ticket>,
    ) -> Result<TrialStatus, RunError> {
        let (store, progress) = (ctx.store, &ctx.progress);
        let spec = &self.experiment.spec;
        // Early stopping compares with the pair's other stage-1 trials.
        let others: Vec<(Vec<f64>, bool)> = if stage == 1 {
            self.stage_trials(store, 1)?
                .iter()
                .filter(|t| t.id != id)
                .map(|t| {
                    let curve = t.epochs.iter().map(|e| e.test_accuracy).collect();
                    (curve, t.status == TrialStatus::Done)
                })
                .collect()
        } else {
            Vec::new()
        };
        let rule = spec.early_stop.build();
        // An interrupted trial (still running) continues from its
        // checkpoint: its recorded epochs stay until its run starts, which
        // drops those after the checkpoint. A failed one starts over.
        let recorded = store
            .trial(&spec.name, id)?
            .filter(|t| t.status == TrialStatus::Running)
            .map(|t| t.epochs)
            .unwrap_or_default();
        let resume_epoch = recorded.last().map_or(0, |e| e.epoch);
        store.put_trial(&TrialRecord {
            epochs: recorded.clone(),
            recipe: Some(self.experiment.stored_recipe(self.backbone)),
            params: params.clone(),
            grid,
            stage,
            seed,
            status: TrialStatus::Running,
            device: self.device.map(|d| d.to_string()),
            ..TrialRecord::new(&spec.name, id, self.backbone, self.optimizer)
        })?;
        let mut trial_spec = self.experiment.trial_spec(
            self.backbone,
            self.optimizer,
            params,
            seed,
            spec.save_weights
                .then(|| store.weights_path(&spec.name, id)),
        );
        if let Some(device) = self.device {
            trial_spec.device = device;
        }
        let checkpoints = checkpoint_dir(store, &spec.name, id);
        trial_spec.checkpoint_dir = Some(checkpoints.clone());
        let label = format!(
            "{} × {} lr={} wd={} seed={seed}{}",
            self.backbone,
            self.optimizer,
            bocb_spec::fmt_value(params["lr"]),
            bocb_spec::fmt_value(params["weight_decay"]),
            self.device.map(|d| format!(" on {d}")).unwrap_or_default(),
        );
        let mut recorder = Recorder {
            store,
            experiment: &spec.name,
            id,
            bar: progress.start_trial(&label, spec.epochs),
            label: &label,
            images_per_sec: None,
            store_error: None,
            rule: rule.as_ref(),
            others: &others,
            curve: recorded.iter().map(|e| e.test_accuracy).collect(),
            max_epochs: spec.epochs as usize,
            ticket,
            batch_images: trial_spec.batch_size as u64,
        };
        let external = match &spec.trial {
            Some(trial) => Some(trial.with_derived_limit(&self.pair_trials(store)?)),
            None => None,
        };
        let job = TrialJob {
            experiment: &spec.name,
            id,
            spec: &trial_spec,
            external: external.as_ref(),
            work_dir: &self.experiment.base_dir,
            resume_epoch,
        };
        let result = ctx.executor.execute(&job, &mut recorder);
        recorder.bar.finish_and_clear();
        if let Some(e) = recorder.store_error {
            return Err(e.into());
        }
        let mut result = result?;
        if let Some(ticket) = ticket {
            result.peak_memory_bytes = ticket.own_peak(result.peak_memory_bytes);
        }
        store.finish_trial(&spec.name, id, result.status, &result.end())?;
        // Ended: a failed trial runs again from its start.
        remove_checkpoint(&checkpoints);
        let TrialResult {
            status,
            final_accuracy: accuracy,
            note: error,
            ..
        } = result;
        let result = match (status, accuracy) {
            (TrialStatus::Done, Some(acc)) => match recorder.images_per_sec {
                Some(speed) => format!("{acc:.2}% ({speed:.0} train images/s)"),
                None => format!("{acc:.2}%"),
            },
            (TrialStatus::Stopped, Some(acc)) => format!(
                "stopped early by `{}` after epoch {} at {acc:.2}%",
                spec.early_stop,
                recorder.curve.len()
            ),
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
    /// Training throughput of the last epoch, when measured (external
    /// trials report none).
    images_per_sec: Option<f64>,
    /// A failed write ends the run after the trial; the runner cannot take errors.
    store_error: Option<StoreError>,
    /// The early-stopping rule and the curves (and completeness) it
    /// compares with.
    rule: &'a dyn EarlyStop,
    others: &'a [(Vec<f64>, bool)],
    /// This trial's accuracies so far.
    curve: Vec<f64>,
    max_epochs: usize,
    /// Its place on a packed device, told of every batch of
    /// `batch_images` images.
    ticket: Option<&'a Ticket<'a>>,
    batch_images: u64,
}

impl TrialObserver for Recorder<'_> {
    fn on_start(&mut self, epochs_done: u32) {
        self.curve.truncate(epochs_done as usize);
        if self.store_error.is_none() {
            if let Err(e) = self
                .store
                .keep_epochs(self.experiment, self.id, epochs_done)
            {
                self.store_error = Some(e);
            }
        }
    }

    fn stop_after_epoch(&mut self, _: &EpochMetrics) -> bool {
        let others: Vec<Curve> = self
            .others
            .iter()
            .map(|(accuracies, complete)| Curve {
                accuracies,
                complete: *complete,
            })
            .collect();
        self.rule.should_stop(&self.curve, &others, self.max_epochs)
    }

    fn checkpoint_requested(&mut self) -> bool {
        crate::external::signalled()
    }

    fn on_batch(&mut self, epoch: u32, batch: usize, batches: usize) {
        let fraction = (epoch - 1) as f64 + batch as f64 / batches as f64;
        self.bar.set_position((fraction * 100.0) as u64);
        if let Some(ticket) = self.ticket {
            ticket.batch(self.batch_images);
        }
    }

    fn on_epoch(&mut self, r: &EpochMetrics) {
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
            ema_test_accuracy: r.ema_test_accuracy,
        };
        self.images_per_sec = measured(r.images_per_sec);
        // By epoch number: a trial re-run after a lost worker reports from epoch 1 again.
        self.curve.truncate(r.epoch.saturating_sub(1) as usize);
        self.curve.push(r.test_accuracy);
        if self.store_error.is_none() {
            if let Err(e) = self.store.record_epoch(self.experiment, self.id, metrics) {
                self.store_error = Some(e);
            }
        }
    }
}

/// Removes an ended trial's checkpoint directory, what a service that died
/// during an upload left beside it (`.TRIAL.upload-N`), and its
/// experiment's directory once empty.
fn remove_checkpoint(dir: &std::path::Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove the checkpoint {}: {e}", dir.display()),
    }
    let Some(experiment_dir) = dir.parent() else {
        return;
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(dir.file_name().unwrap_or_default());
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in std::fs::read_dir(experiment_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let _ = std::fs::remove_dir(experiment_dir);
}

/// A metric's value when it was measured: external trials report NaN for
/// what their program does not print (throughput, test loss).
fn measured(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// An epoch's numbers for a log line, leaving out those not measured.
pub fn epoch_summary(r: &EpochMetrics) -> String {
    let mut parts = vec![format!("epoch {}:", r.epoch)];
    if let Some(loss) = measured(r.train_loss) {
        parts.push(format!("train loss {loss:.4},"));
    }
    if let Some(loss) = measured(r.test_loss) {
        parts.push(format!("test loss {loss:.4},"));
    }
    parts.push(format!("top-1 {:.2}%", r.test_accuracy));
    if let Some(speed) = measured(r.images_per_sec) {
        parts.push(format!("at {speed:.0} train images/s"));
    }
    parts.join(" ")
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

    fn trials_skipped(&self, count: u64) {
        self.experiment.inc(count);
    }

    fn trial_finished(&self, line: &str) {
        self.experiment.inc(1);
        self.note(line);
    }

    /// A line above the bars, or on stderr without them.
    fn note(&self, line: &str) {
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
    use crate::registries::Registries;
    use std::path::Path;

    #[test]
    fn an_ended_trials_checkpoint_goes_with_an_unfinished_upload_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let experiment = tmp.path().join("checkpoints").join("e");
        for dir in ["t1", ".t1.upload-5", "t10", ".t10.upload-1"] {
            std::fs::create_dir_all(experiment.join(dir)).unwrap();
            std::fs::write(experiment.join(dir).join("checkpoint.json"), "{}").unwrap();
        }
        remove_checkpoint(&experiment.join("t1"));
        let mut left: Vec<_> = std::fs::read_dir(&experiment)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".t10.upload-1", "t10"]);
        remove_checkpoint(&experiment.join("t10"));
        assert!(!experiment.exists());
    }

    /// Trains nothing: every trial reaches the accuracy its lr gives, and
    /// the parameters each job carried are kept.
    #[derive(Default)]
    struct FakeTrainer {
        jobs: Mutex<Vec<Hparams>>,
    }

    impl TrialExecutor for FakeTrainer {
        fn execute(
            &self,
            job: &TrialJob,
            observer: &mut dyn TrialObserver,
        ) -> Result<TrialResult, RunError> {
            self.jobs.lock().unwrap().push(job.spec.hparams.clone());
            let accuracy = 10.0 * job.spec.hparams["lr"];
            observer.on_epoch(&EpochMetrics {
                epoch: 1,
                train_loss: 1.0,
                test_loss: 1.0,
                test_accuracy: accuracy,
                lr: job.spec.hparams["lr"],
                images_per_sec: f64::NAN,
                wall_s: 0.1,
                ema_test_accuracy: None,
            });
            Ok(TrialResult {
                status: TrialStatus::Done,
                final_accuracy: Some(accuracy),
                ema_accuracy: None,
                wall_s: Some(0.1),
                precision: None,
                peak_memory_bytes: None,
                optimizer_state_bytes: None,
                classes: Some(100),
                note: None,
                grad_norms: None,
            })
        }
    }

    /// Run `.0` of a trial: where it says it starts (`None`: it does not
    /// say, as an older worker), the epochs it reports (accuracy `10 run +
    /// epoch`), and how it ends (`None`: cut short, the trial left running
    /// as a crash leaves it).
    struct Rerun(u32, Option<u32>, Vec<u32>, Option<TrialStatus>);

    impl TrialExecutor for Rerun {
        fn execute(
            &self,
            _: &TrialJob,
            observer: &mut dyn TrialObserver,
        ) -> Result<TrialResult, RunError> {
            if let Some(start) = self.1 {
                observer.on_start(start);
            }
            for &epoch in &self.2 {
                observer.on_epoch(&EpochMetrics {
                    epoch,
                    train_loss: 1.0,
                    test_loss: 1.0,
                    test_accuracy: f64::from(10 * self.0 + epoch),
                    lr: 0.1,
                    images_per_sec: f64::NAN,
                    wall_s: 0.1,
                    ema_test_accuracy: None,
                });
            }
            let status = self.3.ok_or(RunError::Cancelled)?;
            Ok(TrialResult {
                status,
                ..TrialResult::failed("diverged".into())
            })
        }
    }

    const ONE_TRIAL: &str = "\
name: one
dataset: { format: cifar100-bin, path: . }
backbones: [resnet18_cifar]
optimizers: [sgd_m]
epochs: 5
budget: { trials: 1 }
";

    /// A trial trained again ends with exactly the epochs of the run that
    /// ended it: none of an earlier run that went further survive.
    #[test]
    fn the_stored_epochs_are_those_of_the_run_that_ended_the_trial() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let one = experiment(dir.path(), ONE_TRIAL);
        let options = one_slot();
        let search = |store: &Store, run: Rerun| {
            search_experiment(&one, store, &Catalog::builtin(), &run, &options)
        };
        let epochs = |store: &Store| -> Vec<(u32, f64)> {
            let trial = store.trials("one").unwrap().remove(0);
            trial
                .epochs
                .iter()
                .map(|e| (e.epoch, e.test_accuracy))
                .collect()
        };
        let cut = |run| assert!(matches!(search(&store, run), Err(RunError::Cancelled)));

        // Run 1 reaches epoch 4 and is cut; run 2 continues from a
        // checkpoint after epoch 2 and is cut before its first epoch ends.
        cut(Rerun(1, Some(0), vec![1, 2, 3, 4], None));
        cut(Rerun(2, Some(2), vec![], None));
        assert_eq!(epochs(&store), [(1, 11.0), (2, 12.0)]);
        // Run 3 starts over (no checkpoint) and diverges in epoch 2.
        search(
            &store,
            Rerun(3, Some(0), vec![1], Some(TrialStatus::Diverged)),
        )
        .unwrap();
        assert_eq!(epochs(&store), [(1, 31.0)]);
        assert_eq!(
            store.trials("one").unwrap()[0].status,
            TrialStatus::Diverged
        );

        // A run that does not say where it starts (an older worker):
        // reporting epoch 1 again drops the rest of the earlier run.
        let store = Store::open(dir.path().join("older")).unwrap();
        assert!(search(&store, Rerun(1, None, vec![1, 2, 3, 4], None)).is_err());
        search(
            &store,
            Rerun(2, None, vec![1, 2], Some(TrialStatus::Diverged)),
        )
        .unwrap();
        assert_eq!(epochs(&store), [(1, 21.0), (2, 22.0)]);
    }

    /// Trains nothing: accuracy peaks at lr 0.8, one x2 step past the top
    /// of SGD-M's lr grid (0.025 ... 0.4), and at weight decay 2.5e-4,
    /// inside its grid.
    struct PeakPastTheGrid;

    impl TrialExecutor for PeakPastTheGrid {
        fn execute(
            &self,
            job: &TrialJob,
            observer: &mut dyn TrialObserver,
        ) -> Result<TrialResult, RunError> {
            let h = &job.spec.hparams;
            let accuracy =
                50.0 - (h["lr"] / 0.8).log2().powi(2) - (h["weight_decay"] / 2.5e-4).log2().powi(2);
            observer.on_epoch(&EpochMetrics {
                epoch: 1,
                train_loss: 1.0,
                test_loss: 1.0,
                test_accuracy: accuracy,
                lr: h["lr"],
                images_per_sec: f64::NAN,
                wall_s: 0.1,
                ema_test_accuracy: None,
            });
            Ok(TrialResult {
                status: TrialStatus::Done,
                final_accuracy: Some(accuracy),
                ema_accuracy: None,
                wall_s: Some(0.1),
                precision: None,
                peak_memory_bytes: None,
                optimizer_state_bytes: None,
                classes: Some(100),
                note: None,
                grad_norms: None,
            })
        }
    }

    #[test]
    fn the_search_follows_a_best_past_the_grids_edge() {
        let dir = tempfile::tempdir().unwrap();
        let options = one_slot();
        let run = |name: &str, extra: &str| {
            let store = Store::open(dir.path().join(name)).unwrap();
            let yaml = ONE_TRIAL
                .replace("name: one", &format!("name: {name}"))
                .replace("budget: { trials: 1 }", "budget: { trials: 25 }")
                + extra;
            let e = experiment(dir.path(), &yaml);
            search_experiment(&e, &store, &Catalog::builtin(), &PeakPastTheGrid, &options).unwrap();
            let trials = store.trials(name).unwrap();
            let best = store.best_per_pair(name).unwrap().remove(0);
            let mut beyond: Vec<f64> = trials
                .iter()
                .filter(|t| t.grid.is_none())
                .map(|t| t.params["lr"])
                .collect();
            beyond.sort_by(f64::total_cmp);
            (trials.len(), beyond, best)
        };

        // The paper's grid: 25 points, its best on the lr grid's top end.
        let (count, beyond, best) = run("grid", "");
        assert_eq!((count, beyond.len()), (25, 0));
        assert_eq!(best.params["lr"], 0.4);
        assert!(best.grid.is_some());

        // TPE (extension on by default, 2 steps): lr 0.8 is better, 1.6
        // worse, so the search stops with its best inside what it tried.
        let (count, beyond, best) = run("tpe", "strategy: tpe\n");
        assert_eq!(count, 27);
        assert_eq!(beyond, [0.8, 1.6]);
        assert_eq!(
            (best.params["lr"], best.params["weight_decay"]),
            (0.8, 2.5e-4)
        );
        assert_eq!(best.grid, None);
        assert_eq!(best.mean_accuracy, 50.0);

        // The limit holds: one step at most.
        let (count, beyond, _) = run("one_step", "grid_extension: { max_steps: 1 }\n");
        assert_eq!((count, beyond), (26, vec![0.8]));

        // The report marks the cells past the grid and the best among them;
        // the robustness analysis counts the best at the grid's top lr
        // position and flags it.
        let store = Store::open(dir.path().join("tpe")).unwrap();
        let catalog = Catalog::builtin();
        let report = crate::report::build(&store, &catalog, "tpe")
            .unwrap()
            .unwrap();
        let text = crate::report::render_table(&report);
        assert!(text.contains("past the grid: lr +1"), "{text}");
        assert!(
            text.contains("lr 0.8 × wd 2.5e-4 (lr +1): *50.00"),
            "{text}"
        );
        assert!(text.contains("lr 1.6 × wd 2.5e-4 (lr +2): 49.00"), "{text}");
        let analysis = crate::analysis::analyse(
            &store,
            "tpe",
            crate::analysis::FailureRuleChoice::Eq1,
            None,
            &BTreeMap::new(),
            &catalog,
        )
        .unwrap()
        .unwrap();
        let group = &analysis.robustness.optimizers[0];
        assert_eq!(group.mode_lr, 4);
        assert_eq!(
            group.variations[0]
                .beyond_grid
                .map(|p| (p.lr, p.weight_decay)),
            Some((5, 1))
        );
        let rendered =
            crate::analysis::render::render(&analysis, crate::analysis::render::Style::Text);
        assert!(rendered.contains("resnet18_cifar (lr +1)"), "{rendered}");
        let csv = crate::analysis::render::render_csv(&[analysis]);
        assert!(
            csv.lines().nth(1).unwrap().contains(",5,1,true,0.8,"),
            "{csv}"
        );
    }

    /// Options of a run with one slot: the pairs searched one after another.
    fn one_slot() -> SearchOptions<'static> {
        SearchOptions {
            concurrent_pairs: 1,
            ..SearchOptions::default()
        }
    }

    fn experiment(dir: &Path, yaml: &str) -> Experiment {
        let registries = Registries::builtin();
        Experiment::parse(yaml, "exp.yaml", dir, &registries).unwrap()
    }

    const CENTRED: &str = "\
name: centred
dataset: { format: cifar100-bin, path: . }
backbones: [resnet18_cifar]
preset: micro
optimizers: [sgd_m]
epochs: 1
grid_centres: { resnet18_cifar: { sgd_m: { lr: 0.4, weight_decay: 1.0e-4 } } }
";

    #[test]
    fn trials_train_on_the_grid_centred_where_the_experiment_asks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let catalog = Catalog::builtin();
        let trainer = FakeTrainer::default();
        let options = one_slot();
        let centred = experiment(dir.path(), CENTRED);
        let summary = search_experiment(&centred, &store, &catalog, &trainer, &options).unwrap();
        assert_eq!(summary.trained, 25);

        let lr_grid = [0.1, 0.2, 0.4, 0.8, 1.6];
        let wd_grid = [2.5e-5, 5.0e-5, 1.0e-4, 2.0e-4, 4.0e-4];
        let trials = store.trials("centred").unwrap();
        assert_eq!(trials.len(), 25);
        for trial in &trials {
            let grid = trial.grid.unwrap();
            assert_eq!(trial.params["lr"], lr_grid[usize::from(grid.lr)]);
            assert_eq!(
                trial.params["weight_decay"],
                wd_grid[usize::from(grid.weight_decay)]
            );
        }
        // What the trainer was given is what the store recorded.
        let mut given: Vec<(f64, f64)> = trainer
            .jobs
            .lock()
            .unwrap()
            .iter()
            .map(|p| (p["lr"], p["weight_decay"]))
            .collect();
        let mut recorded: Vec<(f64, f64)> = trials
            .iter()
            .map(|t| (t.params["lr"], t.params["weight_decay"]))
            .collect();
        given.sort_by(|a, b| a.partial_cmp(b).unwrap());
        recorded.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(given, recorded);
        let best = store.best_per_pair("centred").unwrap();
        assert_eq!(best[0].params["lr"], 1.6);
        // The report's grid is the one searched.
        let report = crate::report::build(&store, &catalog, "centred")
            .unwrap()
            .unwrap();
        assert_eq!(report.pairs[0].lr_values, lr_grid);
        assert_eq!(report.pairs[0].weight_decay_values, wd_grid);
    }

    /// With `transfer`, a pair's search starts where its relative (same
    /// optimizer, searched first) did best; without, at the centre.
    #[test]
    fn a_pair_starts_where_its_relatives_did_best_with_transfer() {
        for transfer in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("store")).unwrap();
            let trainer = FakeTrainer::default();
            let options = one_slot();
            let yaml = format!(
                "name: shared\ndataset: {{ format: cifar100-bin, path: . }}\n\
                 backbones: [resnet18_cifar, vit_tiny_cifar]\noptimizers: [sgd_m]\nepochs: 1\n\
                 strategy: bayes\nbudget: {{ trials: 6 }}\ntransfer: {transfer}\n\
                 grid_extension: {{ max_steps: 0 }}\n"
            );
            let shared = experiment(dir.path(), &yaml);
            let catalog = Catalog::builtin();
            search_experiment(&shared, &store, &catalog, &trainer, &options).unwrap();
            let jobs = trainer.jobs.lock().unwrap();
            assert_eq!(jobs.len(), 12);
            let point = |p: &Hparams| (p["lr"], p["weight_decay"]);
            let (first_pair, second_pair) = jobs.split_at(6);
            // The fake's accuracy grows with lr alone: the relative did best
            // at the highest lr it tried, at any weight decay.
            let best_lr = first_pair.iter().map(|p| p["lr"]).fold(0.0, f64::max);
            let centre = point(&first_pair[0]);
            let start = point(&second_pair[0]);
            if transfer {
                assert_eq!(start.0, best_lr);
                assert_ne!(best_lr, centre.0);
            } else {
                assert_eq!(start, centre);
            }
        }
    }

    /// `budget.min_expected_gain` ends a pair's `bayes` search before its
    /// `trials` once no untried point is expected to gain that much, at
    /// the best the whole grid holds; without it the search goes on to
    /// its budget.
    #[test]
    fn a_bayes_search_ends_once_nothing_is_expected_to_gain_enough() {
        let top_lr = *Catalog::builtin()
            .optimizer("sgd_m")
            .unwrap()
            .lr
            .values()
            .last()
            .unwrap();
        for gain in ["", ", min_expected_gain: 0.05"] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("store")).unwrap();
            let trainer = FakeTrainer::default();
            let yaml = format!(
                "name: ending\ndataset: {{ format: cifar100-bin, path: . }}\n\
                 backbones: [resnet18_cifar]\noptimizers: [sgd_m]\nepochs: 1\n\
                 strategy: bayes\nbudget: {{ trials: 25{gain} }}\n\
                 grid_extension: {{ max_steps: 0 }}\n"
            );
            let ending = experiment(dir.path(), &yaml);
            let options = SearchOptions::default();
            search_experiment(&ending, &store, &Catalog::builtin(), &trainer, &options).unwrap();
            let jobs = trainer.jobs.lock().unwrap();
            if gain.is_empty() {
                assert_eq!(jobs.len(), 25);
            } else {
                // The fake's accuracy grows with lr alone.
                assert!((8..25).contains(&jobs.len()), "{jobs:?}");
                assert!(jobs.iter().any(|p| p["lr"] == top_lr), "{jobs:?}");
            }
        }
    }

    /// With `transfer_from`, a new optimizer's first config on each
    /// backbone is where an earlier experiment's other optimizers did best
    /// on it; an experiment the store lacks is named before any trial.
    #[test]
    fn a_new_optimizer_starts_where_an_earlier_experiments_optimizers_did_best() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let catalog = Catalog::builtin();
        let options = one_slot();
        let common = "dataset: { format: cifar100-bin, path: . }\n\
                      backbones: [resnet18_cifar, vit_tiny_cifar]\nepochs: 1\n\
                      grid_extension: { max_steps: 0 }\n";
        let new_optimizer = experiment(
            dir.path(),
            &format!(
                "name: new-optimizer\n{common}optimizers: [adamw]\nstrategy: bayes\n\
                 budget: {{ trials: 3 }}\ntransfer: true\ntransfer_from: [builtin]\n"
            ),
        );
        let missing = FakeTrainer::default();
        let err =
            search_experiment(&new_optimizer, &store, &catalog, &missing, &options).unwrap_err();
        assert!(
            err.to_string()
                .contains("the store holds no experiment `builtin` (it holds: none)"),
            "{err}"
        );
        assert!(missing.jobs.lock().unwrap().is_empty());

        let earlier = experiment(
            dir.path(),
            &format!("name: builtin\n{common}optimizers: [sgd_m, lamb]\nstrategy: grid\n"),
        );
        search_experiment(
            &earlier,
            &store,
            &catalog,
            &FakeTrainer::default(),
            &options,
        )
        .unwrap();
        let trainer = FakeTrainer::default();
        search_experiment(&new_optimizer, &store, &catalog, &trainer, &options).unwrap();
        // The fake's accuracy grows with lr alone: the earlier optimizers
        // did best at the top of their lr grids, so both pairs start at the
        // top of adamw's, not at its centre as a pair without relatives does.
        let adamw_top = *catalog
            .optimizer("adamw")
            .unwrap()
            .lr
            .values()
            .last()
            .unwrap();
        let jobs = trainer.jobs.lock().unwrap();
        assert_eq!(jobs.len(), 6);
        // Each pair's first config: the earlier experiment's relatives.
        assert_eq!(
            (jobs[0]["lr"], jobs[3]["lr"]),
            (adamw_top, adamw_top),
            "{jobs:?}"
        );
    }

    #[test]
    fn a_pairs_centre_cannot_change_once_it_has_trials_but_new_pairs_take_any() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let catalog = Catalog::builtin();
        let options = one_slot();
        let plain_yaml = CENTRED
            .lines()
            .filter(|l| !l.starts_with("grid_centres"))
            .collect::<Vec<_>>()
            .join("\n");
        let plain = experiment(dir.path(), &plain_yaml);
        search_experiment(&plain, &store, &catalog, &FakeTrainer::default(), &options).unwrap();

        // Without the field the stored experiment resumes as before.
        let again =
            search_experiment(&plain, &store, &catalog, &FakeTrainer::default(), &options).unwrap();
        assert_eq!((again.trained, again.skipped), (0, 25));

        let err = register_experiment(&experiment(dir.path(), CENTRED), &store).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RunError::SettingsChanged { .. }), "{text}");
        assert!(
            text.contains("stored: grids of resnet18_cifar@micro × sgd_m: lr centre the optimizer's, weight_decay centre the optimizer's")
                && text.contains("now:    grids of resnet18_cifar@micro × sgd_m: lr centre 0.4, weight_decay centre 1e-4"),
            "{text}"
        );
        assert_eq!(store.trials("centred").unwrap().len(), 25);

        // A new backbone with its own centre is growth.
        let grown = plain_yaml.replace("[resnet18_cifar]", "[resnet18_cifar, vit_tiny_cifar]")
            + "\ngrid_centres: { vit_tiny_cifar: { lr: 0.05 } }\n";
        let grown = experiment(dir.path(), &grown);
        let summary =
            search_experiment(&grown, &store, &catalog, &FakeTrainer::default(), &options).unwrap();
        assert_eq!((summary.trained, summary.skipped), (25, 25));
        let vit_lrs: std::collections::BTreeSet<String> = store
            .trials("centred")
            .unwrap()
            .iter()
            .filter(|t| t.backbone == "vit_tiny_cifar@micro")
            .map(|t| t.params["lr"].to_string())
            .collect();
        assert_eq!(
            vit_lrs.into_iter().collect::<Vec<_>>(),
            ["0.0125", "0.025", "0.05", "0.1", "0.2"]
        );
    }

    #[test]
    fn epoch_lines_leave_out_what_was_not_measured() {
        let trained = EpochMetrics {
            epoch: 2,
            train_loss: 1.5,
            test_loss: 1.25,
            test_accuracy: 61.234,
            lr: 0.1,
            images_per_sec: 1234.4,
            wall_s: 3.0,
            ema_test_accuracy: None,
        };
        assert_eq!(
            epoch_summary(&trained),
            "epoch 2: train loss 1.5000, test loss 1.2500, top-1 61.23% at 1234 train images/s"
        );
        // An external trial reports its accuracy and perhaps its loss only.
        let external = EpochMetrics {
            test_loss: f64::NAN,
            images_per_sec: f64::NAN,
            ..trained
        };
        assert_eq!(
            epoch_summary(&external),
            "epoch 2: train loss 1.5000, top-1 61.23%"
        );
    }

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

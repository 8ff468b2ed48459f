//! `bocb bench tuner`: replays recorded full grids (every stage-1 trial's
//! per-epoch accuracies, from `bocb export --trials`) under each strategy
//! and early-stopping rule, as if the trials were trained again, and
//! measures the epochs spent and whether the grid's best config was found.
//! A recording whose run had `grid_extension` holds the configs it tried
//! past the grid, so searches with grid extension replay too.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_search_spaces::Catalog;
use bocb_spec::ExtendedPos;
use bocb_store::{GridPos, TrialRecord, TrialStatus, GRID_POINTS};
use serde::Serialize;
use thiserror::Error;

use super::extension::next_position;
use super::{
    BuildEarlyStop, BuildStrategy, Curve, EarlyStop, Observation, Prior, Relative, RelativeMap,
    StopKind, Strategy, StrategyKind,
};

/// One grid point of a recorded pair: accuracy after each epoch, averaged
/// over the config's seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCell {
    pub curve: Vec<f64>,
}

/// A (backbone, optimizer) pair with every grid point recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedPair {
    pub backbone: String,
    pub optimizer: String,
    pub cells: BTreeMap<GridPos, RecordedCell>,
    /// The configs past the grid that the recording's run tried.
    pub beyond: BTreeMap<ExtendedPos, RecordedCell>,
}

impl RecordedPair {
    /// Epochs of a complete trial (the longest recorded curve).
    fn max_epochs(&self) -> usize {
        self.cells
            .values()
            .map(|c| c.curve.len())
            .max()
            .unwrap_or(0)
    }

    /// Epochs the exhaustive grid spent.
    fn grid_epochs(&self) -> usize {
        self.cells.values().map(|c| c.curve.len()).sum()
    }

    /// What the pair's whole grid says as a relative: an earlier
    /// experiment's pair (`transfer_from`).
    fn map(&self) -> Option<RelativeMap> {
        let history: Vec<Observation> = self
            .cells
            .iter()
            .filter_map(|(&point, cell)| {
                Some(Observation {
                    point,
                    accuracy: *cell.curve.last()?,
                    complete: true,
                })
            })
            .collect();
        RelativeMap::of(&history)
    }

    /// The best final accuracy of the grid, and of what was recorded past
    /// it too when `beyond`.
    fn best_accuracy(&self, beyond: bool) -> f64 {
        let past = self.beyond.values().filter(|_| beyond);
        self.cells
            .values()
            .chain(past)
            .filter_map(|c| c.curve.last().copied())
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Groups finished stage-1 trials into pairs, in the order the recording's
/// run started them, and averages seeds; pairs without all 25 grid points
/// are left out (they cannot be replayed) and named in the second result. Configs past the grid are placed on the
/// built-in search space of their optimizer.
pub fn recorded_pairs(trials: &[TrialRecord]) -> (Vec<RecordedPair>, Vec<String>) {
    type Key = (String, String, String);
    let catalog = Catalog::builtin();
    let mut grouped: BTreeMap<Key, BTreeMap<ExtendedPos, Vec<&TrialRecord>>> = BTreeMap::new();
    let mut started: BTreeMap<Key, u64> = BTreeMap::new();
    for trial in trials {
        let finished = matches!(trial.status, TrialStatus::Done | TrialStatus::Diverged);
        if !finished || trial.stage != 1 {
            continue;
        }
        let position = match trial.grid {
            Some(grid) => Some(ExtendedPos::from(grid)),
            None => catalog
                .optimizer(&trial.optimizer)
                .ok()
                .and_then(|space| ExtendedPos::of(space, &trial.params)),
        };
        if let Some(position) = position {
            let key = (
                trial.experiment.clone(),
                trial.backbone.clone(),
                trial.optimizer.clone(),
            );
            let first = started.entry(key.clone()).or_insert(trial.created_unix_s);
            *first = (*first).min(trial.created_unix_s);
            grouped
                .entry(key)
                .or_default()
                .entry(position)
                .or_default()
                .push(trial);
        }
    }
    let mut pairs = Vec::new();
    let mut incomplete = Vec::new();
    for (key, positions) in grouped {
        let first = started[&key];
        let (experiment, backbone, optimizer) = key;
        let mut cells = BTreeMap::new();
        let mut beyond = BTreeMap::new();
        for (position, seeds) in positions {
            let cell = RecordedCell {
                curve: mean_curve(&seeds),
            };
            match position.on_grid() {
                Some(grid) => cells.insert(grid, cell),
                None => beyond.insert(position, cell),
            };
        }
        if cells.len() < GRID_POINTS * GRID_POINTS {
            incomplete.push(format!(
                "{experiment}: {backbone} x {optimizer} ({} of 25 grid points)",
                cells.len()
            ));
            continue;
        }
        pairs.push((
            first,
            RecordedPair {
                backbone,
                optimizer,
                cells,
                beyond,
            },
        ));
    }
    // Stable: pairs started in the same second keep their names' order.
    pairs.sort_by_key(|&(first, _)| first);
    (
        pairs.into_iter().map(|(_, pair)| pair).collect(),
        incomplete,
    )
}

/// Per-epoch mean accuracy over seeds, as long as the shortest seed's
/// curve (a diverged seed ends the config there). A diverged epoch's
/// accuracy (`NaN`) counts as 0.
fn mean_curve(seeds: &[&TrialRecord]) -> Vec<f64> {
    let epochs = seeds.iter().map(|t| t.epochs.len()).min().unwrap_or(0);
    (0..epochs)
        .map(|e| {
            let sum: f64 = seeds
                .iter()
                .map(|t| {
                    let a = t.epochs[e].test_accuracy;
                    if a.is_finite() {
                        a
                    } else {
                        0.0
                    }
                })
                .sum();
            sum / seeds.len() as f64
        })
        .collect()
}

/// What one replayed search of one pair spent and found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOutcome {
    pub epochs: usize,
    /// The search's best complete config.
    pub found: Option<ExtendedPos>,
    /// Best accuracy the search could reach (the grid's, and with grid
    /// extension what was recorded past it) minus the found config's (0
    /// when found).
    pub regret: f64,
    /// Whether its grid extension asked for a config the recording lacks,
    /// and so ended there.
    pub unrecorded: bool,
}

/// How each pair is searched in a replay.
#[derive(Clone, Copy)]
pub struct Search<'a> {
    pub strategy: StrategyKind,
    pub stop: &'a dyn EarlyStop,
    /// Configs the strategy proposes.
    pub budget: usize,
    /// `grid_extension`'s `max_steps` after them (0: none).
    pub extension_steps: u8,
    /// `budget.min_expected_gain` (`bayes` only).
    pub min_expected_gain: Option<f64>,
}

/// One pair's search as it is replayed: its strategy, what it has tried
/// and the epochs it has spent.
struct Replaying<'a> {
    pair: &'a RecordedPair,
    search: Box<dyn Strategy>,
    history: Vec<Observation>,
    /// Configs tried past the grid, with their accuracy and completeness.
    extended: Vec<(ExtendedPos, f64, bool)>,
    runs: Vec<(Vec<f64>, bool)>,
    epochs: usize,
    unrecorded: bool,
    /// What `history` teaches the other pairs, and the history's length
    /// when it was drawn (kept: the fit is costly).
    map: Option<RelativeMap>,
    map_of: usize,
}

impl<'a> Replaying<'a> {
    fn new(pair: &'a RecordedPair, search: &Search, seed: u64) -> Self {
        Replaying {
            pair,
            search: search
                .strategy
                .build_ending_below(seed, search.min_expected_gain),
            history: Vec::new(),
            extended: Vec::new(),
            runs: Vec::new(),
            epochs: 0,
            unrecorded: false,
            map: None,
            map_of: 0,
        }
    }

    /// Draws this pair's map afresh when its history has grown.
    fn refresh_map(&mut self) {
        if self.map_of != self.history.len() {
            self.map = RelativeMap::of(&self.history);
            self.map_of = self.history.len();
        }
    }

    /// This pair as a relative of the others (its map as last refreshed).
    fn as_relative(&self) -> Option<Relative<'_>> {
        Some(Relative {
            backbone: &self.pair.backbone,
            optimizer: &self.pair.optimizer,
            map: self.map.as_ref()?,
            earlier: false,
        })
    }

    /// Trains the next config: the strategy's while its budget lasts, then
    /// the grid extension's; false when the search has ended.
    fn step(&mut self, search: &Search, prior: &Prior) -> bool {
        let proposal = (self.history.len() < search.budget)
            .then(|| self.search.propose(&self.history, prior))
            .flatten();
        if let Some(point) = proposal {
            let pair = self.pair;
            let (accuracy, complete) = self.train(&pair.cells[&point], search.stop);
            self.history.push(Observation {
                point,
                accuracy,
                complete,
            });
            return true;
        }
        self.extend(search)
    }

    /// One config of the grid extension, from the best so far.
    fn extend(&mut self, search: &Search) -> bool {
        if search.extension_steps == 0 || self.unrecorded {
            return false;
        }
        let Some((best, _)) = self.best() else {
            return false;
        };
        let tried = |p: ExtendedPos| self.extended.iter().any(|&(q, _, _)| q == p);
        let Some(next) = next_position(best, search.extension_steps, tried) else {
            return false;
        };
        let pair = self.pair;
        let Some(cell) = pair.beyond.get(&next) else {
            self.unrecorded = true;
            return false;
        };
        let (accuracy, complete) = self.train(cell, search.stop);
        self.extended.push((next, accuracy, complete));
        true
    }

    /// Trains `cell` epoch by epoch until `stop` stops it or it completes:
    /// its accuracy (the last, or the best seen when stopped) and whether
    /// it completed.
    fn train(&mut self, cell: &RecordedCell, stop: &dyn EarlyStop) -> (f64, bool) {
        let max_epochs = self.pair.max_epochs();
        let full = &cell.curve;
        let mut seen = Vec::with_capacity(full.len());
        for &accuracy in full {
            seen.push(accuracy);
            self.epochs += 1;
            if seen.len() < full.len() {
                let others: Vec<Curve> = self
                    .runs
                    .iter()
                    .map(|(accuracies, complete)| Curve {
                        accuracies,
                        complete: *complete,
                    })
                    .collect();
                if stop.should_stop(&seen, &others, max_epochs) {
                    break;
                }
            }
        }
        let complete = seen.len() == full.len();
        let accuracy = if complete {
            *seen.last().unwrap_or(&0.0)
        } else {
            seen.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        };
        self.runs.push((seen, complete));
        (accuracy, complete)
    }

    /// The best complete config so far, on the grid or past it (the first
    /// of equals).
    fn best(&self) -> Option<(ExtendedPos, f64)> {
        let on_grid = self
            .history
            .iter()
            .filter(|o| o.complete)
            .map(|o| (ExtendedPos::from(o.point), o.accuracy));
        let past = self
            .extended
            .iter()
            .filter(|&&(_, _, complete)| complete)
            .map(|&(p, accuracy, _)| (p, accuracy));
        on_grid
            .chain(past)
            .fold(None, |best: Option<(ExtendedPos, f64)>, o| match best {
                Some(b) if b.1 >= o.1 => Some(b),
                _ => Some(o),
            })
    }

    fn outcome(&self, search: &Search) -> ReplayOutcome {
        let found = self.best();
        let reachable = self.pair.best_accuracy(search.extension_steps > 0);
        ReplayOutcome {
            epochs: self.epochs,
            found: found.map(|(p, _)| p),
            regret: reachable - found.map_or(0.0, |(_, accuracy)| accuracy),
            unrecorded: self.unrecorded,
        }
    }
}

/// Replays one search of `pair`, `seed` drawing its random numbers.
pub fn replay(pair: &RecordedPair, search: &Search, seed: u64) -> ReplayOutcome {
    let mut replaying = Replaying::new(pair, search, seed);
    while replaying.step(search, &Prior::default()) {}
    replaying.outcome(search)
}

/// Replays the searches of all `pairs` of one experiment together, as a
/// run with `concurrent_pairs` slots trains them: the pairs in the
/// recording's order, each slot searching one pair to its end before it
/// takes the next, the slots training a config each in turn. With
/// `transfer`, each proposal uses the prior of what the other pairs have
/// found so far, those that ended and those still searching, and of the
/// `earlier` experiments' pairs (`transfer_from`).
pub fn replay_together(
    pairs: &[RecordedPair],
    search: &Search,
    seed: u64,
    transfer: bool,
    concurrent_pairs: usize,
    earlier: &[Relative],
) -> Vec<ReplayOutcome> {
    let mut searches: Vec<Replaying> = Vec::with_capacity(pairs.len());
    // Indices into `searches` of the pairs still searching.
    let mut active: Vec<usize> = Vec::new();
    let mut next_pair = pairs.iter();
    loop {
        while active.len() < concurrent_pairs.max(1) {
            let Some(pair) = next_pair.next() else { break };
            active.push(searches.len());
            searches.push(Replaying::new(pair, search, seed));
        }
        if active.is_empty() {
            break;
        }
        let mut ended = Vec::new();
        for &i in &active {
            let prior = if transfer {
                searches.iter_mut().for_each(Replaying::refresh_map);
                let own = &searches[i];
                let relatives: Vec<Relative> = searches
                    .iter()
                    .filter_map(Replaying::as_relative)
                    .chain(earlier.iter().copied())
                    .collect();
                Prior::from_relatives(&own.pair.backbone, &own.pair.optimizer, &relatives)
            } else {
                Prior::default()
            };
            if !searches[i].step(search, &prior) {
                ended.push(i);
            }
        }
        active.retain(|i| !ended.contains(i));
    }
    searches.iter().map(|s| s.outcome(search)).collect()
}

/// One row of the bench table: a strategy, a rule and a budget over every
/// pair (and several seeds for the randomised strategies).
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub strategy: StrategyKind,
    /// Whether each pair's search used what the other pairs found.
    pub transfer: bool,
    /// With transfer, how many pairs were searched at once (what the
    /// others have found when a pair proposes depends on it).
    pub concurrent_pairs: Option<usize>,
    /// With transfer, whether each optimizer (or backbone) of the
    /// recording was in turn the new one, its pairs searched with the
    /// others' whole grids known from an earlier experiment.
    pub new: Option<Newcomer>,
    /// `grid_extension`'s `max_steps` (0: none).
    pub extension_steps: u8,
    /// `budget.min_expected_gain`, in accuracy points.
    pub min_expected_gain: Option<f64>,
    pub early_stop: StopKind,
    /// Configs started per pair.
    pub budget: usize,
    /// Searches replayed (pairs x seeds).
    pub searches: usize,
    /// Epochs spent as a fraction of the exhaustive grid's (its 25
    /// configs: the paper's protocol).
    pub epochs_fraction: f64,
    /// Fraction of searches whose best config is the best they could
    /// reach: the grid's, and with grid extension what was recorded past it.
    pub found_best: f64,
    pub mean_regret: f64,
    pub max_regret: f64,
    /// Searches whose grid extension asked for a config the recording lacks.
    pub unrecorded: usize,
}

impl BenchRow {
    /// The share of the grid's epochs within which a search meets its goal
    /// (finding the grid's best in at least 90% of searches): 40% for a
    /// pair searched alone, 25% for pairs that learn from each other.
    pub fn goal_epochs(&self) -> f64 {
        if self.transfer {
            0.25
        } else {
            0.4
        }
    }

    pub fn meets_goal(&self) -> bool {
        self.found_best >= 0.9 && self.epochs_fraction <= self.goal_epochs()
    }
}

/// `grid_extension`'s default `max_steps` for the model-based strategies.
const EXTENSION_STEPS: u8 = 2;

/// What [`bench`] replays: the budgets, the seeds of the randomised
/// strategies (`0..seeds`) and, for searches with transfer, the numbers of
/// pairs searched at once and what is new to an earlier experiment.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub budgets: Vec<usize>,
    pub seeds: u64,
    pub concurrent_pairs: Vec<usize>,
    pub new: Vec<Newcomer>,
    /// `budget.min_expected_gain` values `bayes` is also replayed with.
    pub min_expected_gains: Vec<f64>,
}

/// What a replay tunes as new against an earlier experiment: each
/// optimizer of the recording against all its backbones, the other
/// optimizers' pairs known (`transfer_from`), or each backbone against all
/// optimizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Newcomer {
    Optimizer,
    Backbone,
}

impl Newcomer {
    /// The optimizer (or backbone) of `pair`.
    fn name_of(self, pair: &RecordedPair) -> &str {
        match self {
            Newcomer::Optimizer => &pair.optimizer,
            Newcomer::Backbone => &pair.backbone,
        }
    }

    /// Per optimizer (or backbone) of `pairs`, in their order: its pairs,
    /// and the others' whole grids (`maps`) as an earlier experiment's.
    fn cohorts<'a>(
        self,
        pairs: &'a [RecordedPair],
        maps: &'a [Option<RelativeMap>],
    ) -> Vec<Cohort<'a>> {
        let mut names: Vec<&str> = Vec::new();
        for name in pairs.iter().map(|pair| self.name_of(pair)) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
            .into_iter()
            .map(|name| {
                let (new, known): (Vec<_>, Vec<_>) = pairs
                    .iter()
                    .zip(maps)
                    .partition(|(pair, _)| self.name_of(pair) == name);
                Cohort {
                    new: new.into_iter().map(|(pair, _)| pair.clone()).collect(),
                    earlier: known
                        .into_iter()
                        .filter_map(|(pair, map)| {
                            Some(Relative {
                                backbone: &pair.backbone,
                                optimizer: &pair.optimizer,
                                map: map.as_ref()?,
                                earlier: true,
                            })
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// The pairs of one new optimizer (or backbone) and what the earlier
/// experiment they learn from holds.
struct Cohort<'a> {
    new: Vec<RecordedPair>,
    earlier: Vec<Relative<'a>>,
}

impl std::fmt::Display for Newcomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Newcomer::Optimizer => "optimizer",
            Newcomer::Backbone => "backbone",
        })
    }
}

impl std::str::FromStr for Newcomer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "optimizer" => Ok(Newcomer::Optimizer),
            "backbone" => Ok(Newcomer::Backbone),
            _ => Err(format!("`{s}` is not one of: optimizer, backbone")),
        }
    }
}

/// Replays every strategy x rule x budget over `pairs`, the model-based
/// strategies also with transfer across pairs (once per number of pairs
/// searched at once, and once per kind of newcomer to an earlier
/// experiment) and, where the recording went past the grid, with grid
/// extension.
pub fn bench(pairs: &[RecordedPair], plan: &BenchPlan) -> Vec<BenchRow> {
    let grid_epochs: usize = pairs.iter().map(RecordedPair::grid_epochs).sum();
    let recorded_beyond = pairs.iter().any(|p| !p.beyond.is_empty());
    let maps: Vec<Option<RelativeMap>> = pairs.iter().map(RecordedPair::map).collect();
    let cohorts: Vec<(Newcomer, Vec<Cohort>)> = plan
        .new
        .iter()
        .map(|&kind| (kind, kind.cohorts(pairs, &maps)))
        .collect();
    // How the pairs learn from each other: alone, all in one experiment
    // with N at once, or the new ones with N at once after the others.
    let mut sharing: Vec<(Option<usize>, Option<Newcomer>)> = Vec::new();
    let largest =
        std::iter::once((None, pairs.len())).chain(cohorts.iter().map(|(kind, of_kind)| {
            (
                Some(*kind),
                of_kind.iter().map(|c| c.new.len()).max().unwrap_or(0),
            )
        }));
    for (new, most) in largest {
        for n in &plan.concurrent_pairs {
            // More slots than pairs search them all at once.
            let mode = (Some((*n).clamp(1, most.max(1))), new);
            if !sharing.contains(&mode) {
                sharing.push(mode);
            }
        }
    }
    let mut rows = Vec::new();
    for strategy in StrategyKind::ALL {
        let seeds = if strategy == StrategyKind::Grid {
            1
        } else {
            plan.seeds
        };
        let model_based = matches!(strategy, StrategyKind::Tpe | StrategyKind::Bayes);
        // Without transfer the pairs' searches are independent: one row.
        let mut modes = vec![(None, None)];
        if model_based {
            modes.extend(&sharing);
        }
        let extensions: &[u8] = if model_based && recorded_beyond {
            &[0, EXTENSION_STEPS]
        } else {
            &[0]
        };
        let mut gains = vec![None];
        if strategy == StrategyKind::Bayes {
            gains.extend(plan.min_expected_gains.iter().copied().map(Some));
        }
        for &(concurrent_pairs, new) in &modes {
            let settings = extensions
                .iter()
                .flat_map(|&steps| gains.iter().map(move |&gain| (steps, gain)));
            for (extension_steps, min_expected_gain) in settings {
                for stop_kind in StopKind::ALL {
                    let stop = stop_kind.build();
                    for &budget in &plan.budgets {
                        let search = Search {
                            strategy,
                            stop: stop.as_ref(),
                            budget,
                            extension_steps,
                            min_expected_gain,
                        };
                        let outcomes: Vec<ReplayOutcome> = (0..seeds)
                            .flat_map(|seed| match new {
                                None => replay_together(
                                    pairs,
                                    &search,
                                    seed,
                                    concurrent_pairs.is_some(),
                                    concurrent_pairs.unwrap_or(pairs.len()),
                                    &[],
                                ),
                                Some(kind) => cohorts
                                    .iter()
                                    .filter(|(of, _)| *of == kind)
                                    .flat_map(|(_, of_kind)| of_kind)
                                    .flat_map(|cohort| {
                                        replay_together(
                                            &cohort.new,
                                            &search,
                                            seed,
                                            true,
                                            concurrent_pairs.unwrap_or(1),
                                            &cohort.earlier,
                                        )
                                    })
                                    .collect(),
                            })
                            .collect();
                        rows.push(BenchRow::of(
                            &search,
                            (concurrent_pairs, new),
                            stop_kind,
                            &outcomes,
                            grid_epochs * seeds as usize,
                        ));
                    }
                }
            }
        }
    }
    rows
}

impl BenchRow {
    /// The row of `outcomes`, searches of `search` (with transfer when
    /// `concurrent_pairs` says how many searched at once, and whether they
    /// were `new` to an earlier experiment) whose exhaustive grids spent
    /// `grid_epochs` in all.
    fn of(
        search: &Search,
        (concurrent_pairs, new): (Option<usize>, Option<Newcomer>),
        early_stop: StopKind,
        outcomes: &[ReplayOutcome],
        grid_epochs: usize,
    ) -> BenchRow {
        let epochs: usize = outcomes.iter().map(|o| o.epochs).sum();
        let hits = outcomes.iter().filter(|o| o.regret <= 1e-9).count();
        let searches = outcomes.len();
        BenchRow {
            strategy: search.strategy,
            transfer: concurrent_pairs.is_some(),
            concurrent_pairs,
            new,
            extension_steps: search.extension_steps,
            min_expected_gain: search.min_expected_gain,
            early_stop,
            budget: search.budget,
            searches,
            epochs_fraction: epochs as f64 / grid_epochs as f64,
            found_best: hits as f64 / searches as f64,
            mean_regret: outcomes.iter().map(|o| o.regret).sum::<f64>() / searches as f64,
            max_regret: outcomes.iter().map(|o| o.regret).fold(0.0, f64::max),
            unrecorded: outcomes.iter().filter(|o| o.unrecorded).count(),
        }
    }
}

/// Why a recorded file cannot be benched.
#[derive(Debug, Error)]
pub enum RecordedError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a trial list; write one with `bocb export --experiment NAME --trials`")]
    NotTrials {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} holds no pair with all 25 stage-1 grid points finished; run a `strategy: grid` experiment to the end first")]
    NoPairs { path: String },
    #[error("--budgets: {0} is not between 1 and 25 configs")]
    Budget(usize),
    #[error("--concurrent-pairs: 0 pairs at once searches nothing; give 1 or more")]
    NoPairsAtOnce,
    #[error("--min-expected-gain: {0} is not a positive number of accuracy points")]
    Gain(f64),
}

/// [`bench`] over the trials of a file written by `bocb export --trials`.
#[derive(Debug, Clone)]
pub struct RecordedBench {
    pub rows: Vec<BenchRow>,
    /// Pairs replayed.
    pub pairs: usize,
    /// Pairs left out for an incomplete grid.
    pub skipped: Vec<String>,
}

/// Reads the trial list at `recorded` and benches its complete pairs
/// (at least one seed).
pub fn bench_recorded(recorded: &Path, plan: &BenchPlan) -> Result<RecordedBench, RecordedError> {
    let path = recorded.display().to_string();
    let text = std::fs::read_to_string(recorded).map_err(|source| RecordedError::Read {
        path: path.clone(),
        source,
    })?;
    let trials: Vec<TrialRecord> =
        serde_json::from_str(&text).map_err(|source| RecordedError::NotTrials {
            path: path.clone(),
            source,
        })?;
    let (pairs, skipped) = recorded_pairs(&trials);
    if pairs.is_empty() {
        return Err(RecordedError::NoPairs { path });
    }
    if let Some(&bad) = plan
        .budgets
        .iter()
        .find(|&&b| b == 0 || b > GRID_POINTS * GRID_POINTS)
    {
        return Err(RecordedError::Budget(bad));
    }
    if plan.concurrent_pairs.contains(&0) {
        return Err(RecordedError::NoPairsAtOnce);
    }
    if let Some(&bad) = plan
        .min_expected_gains
        .iter()
        .find(|g| !(g.is_finite() && **g > 0.0))
    {
        return Err(RecordedError::Gain(bad));
    }
    let plan = BenchPlan {
        seeds: plan.seeds.max(1),
        ..plan.clone()
    };
    Ok(RecordedBench {
        rows: bench(&pairs, &plan),
        pairs: pairs.len(),
        skipped,
    })
}

/// The bench table, one row per strategy x rule x budget; rows meeting the
/// goal are marked.
pub fn render_bench(rows: &[BenchRow], pairs: usize, skipped: &[String]) -> String {
    let mut out = format!(
        "{pairs} recorded pair(s) replayed; goal: the best config in >= 90% of searches (the grid's; with grid extension, \
         the best recorded past it too) with <= 40% of the grid's epochs, <= 25% for searches that learn across pairs \
         (transfer: N at once, the pairs searched at once; new optimizer/backbone: each optimizer or backbone in turn \
         searched with the other pairs' grids known from an earlier experiment, as `transfer_from` gives them)\n"
    );
    for pair in skipped {
        out += &format!("skipped (incomplete grid): {pair}\n");
    }
    out += &format!(
        "{:<8} {:<24} {:<9} {:<10} {:>6} {:>8} {:>8} {:>9} {:>10} {:>11} {:>10}  {}\n",
        "strategy",
        "transfer",
        "extension",
        "early-stop",
        "budget",
        "min gain",
        "searches",
        "epochs %",
        "found best",
        "mean regret",
        "max regret",
        "goal"
    );
    for r in rows {
        out += &format!(
            "{:<8} {:<24} {:<9} {:<10} {:>6} {:>8} {:>8} {:>8.1}% {:>9.1}% {:>11.2} {:>10.2}  {}\n",
            r.strategy.to_string(),
            match (r.concurrent_pairs, r.new) {
                (None, _) => "-".to_string(),
                (Some(n), None) => format!("{n} at once"),
                (Some(n), Some(new)) => format!("new {new}, {n} at once"),
            },
            match r.extension_steps {
                0 => "-".to_string(),
                steps => format!("{steps} steps"),
            },
            r.early_stop.to_string(),
            r.budget,
            r.min_expected_gain
                .map_or_else(|| "-".to_string(), |g| g.to_string()),
            r.searches,
            100.0 * r.epochs_fraction,
            100.0 * r.found_best,
            r.mean_regret,
            r.max_regret,
            if r.meets_goal() { "met" } else { "" }
        );
    }
    let unrecorded: usize = rows.iter().map(|r| r.unrecorded).sum();
    if unrecorded > 0 {
        out += &format!(
            "{unrecorded} search(es) with grid extension asked for a config past the grid that the recording lacks, and ended there\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::all_points;
    use crate::search::tests::landscape;
    use bocb_store::EpochMetrics;

    /// A pair whose curves rise to `landscape` over `epochs` epochs.
    fn synthetic_pair(epochs: usize) -> RecordedPair {
        let cells = all_points()
            .map(|p| {
                let end = landscape(p);
                // Concave, rising from near 10% to `end` at the last epoch.
                let curve = (1..=epochs)
                    .map(|t| 10.0 + (end - 10.0) * (1.0 - (1.0 - t as f64 / epochs as f64).powi(2)))
                    .collect();
                (p, RecordedCell { curve })
            })
            .collect();
        RecordedPair {
            backbone: "b".into(),
            optimizer: "o".into(),
            cells,
            beyond: BTreeMap::new(),
        }
    }

    /// Replays of `budgets` with `seeds`, all pairs at once.
    fn plan(budgets: &[usize], seeds: u64) -> BenchPlan {
        BenchPlan {
            budgets: budgets.to_vec(),
            seeds,
            concurrent_pairs: vec![usize::MAX],
            new: Vec::new(),
            min_expected_gains: Vec::new(),
        }
    }

    /// A search of `budget` configs by `strategy`, without early stopping
    /// or grid extension.
    fn plain(strategy: StrategyKind, budget: usize) -> Search<'static> {
        Search {
            strategy,
            stop: &crate::search::stopping::NeverStop,
            budget,
            extension_steps: 0,
            min_expected_gain: None,
        }
    }

    #[test]
    fn exhaustive_grid_finds_the_best_with_every_epoch() {
        let pair = synthetic_pair(6);
        let outcome = replay(&pair, &plain(StrategyKind::Grid, 25), 0);
        assert_eq!(outcome.epochs, 25 * 6);
        assert_eq!(
            outcome.found,
            Some(ExtendedPos {
                lr: 1,
                weight_decay: 3
            })
        );
        assert_eq!(outcome.regret, 0.0);
        // The peak is the 9th point in lr-major order: a budget of 12 finds
        // it, one of 5 misses it and says by how much.
        let half = replay(&pair, &plain(StrategyKind::Grid, 12), 0);
        assert_eq!(half.epochs, 12 * 6);
        assert_eq!(half.regret, 0.0);
        let short = replay(&pair, &plain(StrategyKind::Grid, 5), 0);
        assert!(short.regret > 0.0);
    }

    /// Four backbones x four optimizers whose peaks move with the optimizer
    /// along lr and with the backbone along weight decay, as the BOCB modes do.
    fn related_pairs(epochs: usize) -> Vec<RecordedPair> {
        let mut pairs = Vec::new();
        for b in 0..4u8 {
            for o in 0..4u8 {
                let (peak_lr, peak_wd) = (f64::from(1 + o % 3), f64::from(1 + b % 3));
                let cells = all_points()
                    .map(|p| {
                        let dl = f64::from(p.lr) - peak_lr;
                        let dw = f64::from(p.weight_decay) - peak_wd;
                        let end = 70.0 + f64::from(b) - 5.0 * dl * dl - 2.0 * dw * dw - dl * dw;
                        let curve = (1..=epochs)
                            .map(|t| end * t as f64 / epochs as f64)
                            .collect();
                        (p, RecordedCell { curve })
                    })
                    .collect();
                pairs.push(RecordedPair {
                    backbone: format!("b{b}"),
                    optimizer: format!("o{o}"),
                    cells,
                    beyond: BTreeMap::new(),
                });
            }
        }
        pairs
    }

    #[test]
    fn pairs_that_learn_from_each_other_find_the_best_with_fewer_configs() {
        let pairs = related_pairs(4);
        let found = |strategy: StrategyKind, budget: usize, transfer: bool, at_once: usize| {
            (0..5)
                .flat_map(|seed| {
                    replay_together(
                        &pairs,
                        &plain(strategy, budget),
                        seed,
                        transfer,
                        at_once,
                        &[],
                    )
                })
                .filter(|o| o.regret <= 1e-9)
                .count()
        };
        // One pair at a time (a run with one slot): each pair starts from
        // the whole searches of those before it.
        for strategy in [StrategyKind::Tpe, StrategyKind::Bayes] {
            let (alone, together) = (found(strategy, 5, false, 1), found(strategy, 5, true, 1));
            assert!(
                together > alone,
                "{strategy}: {together} of 80 searches found the best with transfer, {alone} without"
            );
        }
        // Six configs of 25 per pair (the goal's share of the epochs): bayes
        // gains from its relatives however many pairs search at once, even
        // all 16 (whose first two configs see nobody's results).
        let alone = found(StrategyKind::Bayes, 6, false, 1);
        for at_once in [1, 4, 16] {
            let together = found(StrategyKind::Bayes, 6, true, at_once);
            assert!(
                together >= alone + 10,
                "bayes, {at_once} at once: {together} of 80 with transfer, {alone} without"
            );
        }
        // Without transfer, replaying together is replaying each pair alone.
        let bayes = plain(StrategyKind::Bayes, 4);
        let alone: Vec<ReplayOutcome> = pairs.iter().map(|p| replay(p, &bayes, 3)).collect();
        assert_eq!(replay_together(&pairs, &bayes, 3, false, 1, &[]), alone);
        // One at a time, the first pair has no relative yet.
        assert_eq!(
            replay_together(&pairs, &bayes, 3, true, 1, &[])[0],
            alone[0]
        );
    }

    /// The recorded 3 x 3 micro grid (tests/fixtures/grid3x3-micro.yaml):
    /// tpe finds the grid's best more often with transfer for the same
    /// epochs. (Its ViT pairs train to chance in 3 epochs, so their best
    /// is noise: no strategy reaches the 90% goal on it.)
    #[test]
    fn transfer_helps_tpe_on_the_recorded_micro_grid() {
        let recorded = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/grid3x3-micro-trials.json");
        let bench = bench_recorded(&recorded, &plan(&[6], 10)).unwrap();
        assert_eq!(bench.pairs, 9);
        let row = |transfer: bool| {
            bench
                .rows
                .iter()
                .find(|r| {
                    r.strategy == StrategyKind::Tpe
                        && r.early_stop == StopKind::None
                        && r.transfer == transfer
                })
                .unwrap()
                .clone()
        };
        let (alone, together) = (row(false), row(true));
        // The same configs per pair; diverged configs cut a few epochs short.
        assert!((alone.epochs_fraction - together.epochs_fraction).abs() < 0.005);
        assert!(
            together.found_best > alone.found_best + 0.1,
            "{together:?} vs {alone:?}"
        );
    }

    /// The synthetic pair with its peak moved past the lr grid's top end,
    /// and the configs a run with `grid_extension: { max_steps: 2 }` tried
    /// there recorded: lr +1 and +2 at the best weight decay.
    fn pair_peaking_past_the_grid(epochs: usize) -> RecordedPair {
        let landscape = |lr: i32, weight_decay: i32| {
            let dl = f64::from(lr) - 5.0;
            let dw = f64::from(weight_decay) - 3.0;
            80.0 - 2.0 * dl * dl - 3.0 * dw * dw
        };
        let curve = |end: f64| {
            (1..=epochs)
                .map(|t| end * t as f64 / epochs as f64)
                .collect()
        };
        let mut pair = synthetic_pair(epochs);
        for (p, cell) in pair.cells.iter_mut() {
            cell.curve = curve(landscape(i32::from(p.lr), i32::from(p.weight_decay)));
        }
        for lr in [5, 6] {
            pair.beyond.insert(
                ExtendedPos {
                    lr,
                    weight_decay: 3,
                },
                RecordedCell {
                    curve: curve(landscape(lr, 3)),
                },
            );
        }
        pair
    }

    #[test]
    fn grid_extension_replays_the_configs_recorded_past_the_grid() {
        let pair = pair_peaking_past_the_grid(4);
        let without = replay(&pair, &plain(StrategyKind::Grid, 25), 0);
        // Without extension the grid's best is the best it can reach.
        assert_eq!(
            (without.found, without.regret),
            (
                Some(ExtendedPos {
                    lr: 4,
                    weight_decay: 3
                }),
                0.0
            )
        );
        let extended = Search {
            extension_steps: 2,
            min_expected_gain: None,
            ..plain(StrategyKind::Grid, 25)
        };
        let with = replay(&pair, &extended, 0);
        // lr +1 is the peak; lr +2 is tried and is worse.
        assert_eq!(
            with.found,
            Some(ExtendedPos {
                lr: 5,
                weight_decay: 3
            })
        );
        assert_eq!((with.regret, with.unrecorded), (0.0, false));
        assert_eq!(with.epochs, 27 * 4);
        // One step allowed: lr +1 only.
        let one = replay(
            &pair,
            &Search {
                extension_steps: 1,
                ..extended
            },
            0,
        );
        assert_eq!((one.epochs, one.regret), (26 * 4, 0.0));
        // A search whose best is elsewhere asks for a config the recording
        // lacks: it ends there and says so.
        let short = replay(
            &pair,
            &Search {
                budget: 3,
                ..extended
            },
            0,
        );
        assert!(short.unrecorded && short.regret > 0.0, "{short:?}");
        let rows = bench(&[pair], &plan(&[25], 1));
        let row = |strategy, extension_steps| {
            rows.iter()
                .find(|r| {
                    r.strategy == strategy
                        && r.extension_steps == extension_steps
                        && r.early_stop == StopKind::None
                        && !r.transfer
                })
                .unwrap()
        };
        assert_eq!(row(StrategyKind::Bayes, 2).found_best, 1.0);
        assert!(!rows
            .iter()
            .any(|r| r.strategy == StrategyKind::Grid && r.extension_steps > 0));
    }

    #[test]
    fn configs_past_the_grid_are_placed_on_their_optimizers_space() {
        let mut trials: Vec<TrialRecord> =
            all_points().map(|p| trial(p, 0, &[10.0, 20.0])).collect();
        let sgd_m = Catalog::builtin().optimizer("sgd_m").unwrap().clone();
        let top = *sgd_m.lr.values().last().unwrap();
        let wd = sgd_m.weight_decay.values()[2];
        for seed in 0..2 {
            trials.push(TrialRecord {
                grid: None,
                params: BTreeMap::from([("lr".into(), top * 4.0), ("weight_decay".into(), wd)]),
                ..trial(
                    GridPos {
                        lr: 0,
                        weight_decay: 0,
                    },
                    seed,
                    &[30.0, 40.0 + seed as f64],
                )
            });
        }
        let (pairs, _) = recorded_pairs(&trials);
        let beyond: Vec<(&ExtendedPos, &RecordedCell)> = pairs[0].beyond.iter().collect();
        assert_eq!(
            beyond,
            [(
                &ExtendedPos {
                    lr: 6,
                    weight_decay: 2
                },
                &RecordedCell {
                    curve: vec![30.0, 40.5]
                }
            )]
        );
        assert_eq!(pairs[0].best_accuracy(false), 20.0);
        assert_eq!(pairs[0].best_accuracy(true), 40.5);
    }

    /// The bench rows of `plan` on the recorded 4 x 4 micro grid
    /// (tests/fixtures/grid4x4-micro.yaml).
    fn micro_grid_rows(plan: BenchPlan) -> Vec<BenchRow> {
        let recorded = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/grid4x4-micro-trials.json");
        bench_recorded(&recorded, &plan).unwrap().rows
    }

    /// The `bayes` row without early stopping or grid extension, searched
    /// with `concurrent_pairs` at once (`None`: alone) and `new` ones.
    fn plain_bayes_row(
        rows: &[BenchRow],
        concurrent_pairs: Option<usize>,
        new: Option<Newcomer>,
    ) -> BenchRow {
        rows.iter()
            .find(|r| {
                r.strategy == StrategyKind::Bayes
                    && r.early_stop == StopKind::None
                    && r.extension_steps == 0
                    && r.min_expected_gain.is_none()
                    && r.concurrent_pairs == concurrent_pairs
                    && r.new == new
            })
            .unwrap()
            .clone()
    }

    /// On the recorded 4 x 4 micro grid, bayes with transfer, one pair at
    /// a time (a run with one slot), finds the grid's best with 6 configs
    /// of 25 (24% of the epochs) far more often than alone, in 90% of its
    /// searches (the goal of `bocb bench tuner`). Its relatives are 6-config
    /// searches, not thorough, so `min_expected_gain` waits for 8 results
    /// and changes nothing at this budget.
    #[test]
    fn bayes_with_transfer_finds_the_recorded_grids_best_with_a_quarter_of_its_epochs() {
        let rows = micro_grid_rows(BenchPlan {
            budgets: vec![6],
            seeds: 20,
            concurrent_pairs: vec![1],
            new: Vec::new(),
            min_expected_gains: vec![0.1],
        });
        let row = |concurrent_pairs| plain_bayes_row(&rows, concurrent_pairs, None);
        let (alone, together) = (row(None), row(Some(1)));
        assert_eq!(together.searches, 320);
        assert!(together.epochs_fraction <= 0.25);
        assert!(
            together.found_best >= alone.found_best + 0.15,
            "{together:?} vs {alone:?}"
        );
        assert!(together.meets_goal(), "{together:?}");
        let with_floor = rows
            .iter()
            .find(|r| {
                r.min_expected_gain == Some(0.1)
                    && r.strategy == StrategyKind::Bayes
                    && r.concurrent_pairs == Some(1)
                    && r.early_stop == StopKind::None
                    && r.extension_steps == 0
            })
            .unwrap();
        assert_eq!(
            (with_floor.found_best, with_floor.epochs_fraction),
            (together.found_best, together.epochs_fraction)
        );
    }

    /// A new optimizer tuned against the recorded backbones, 4 pairs at
    /// once, learning from an earlier experiment that holds the other
    /// optimizers' grids (`transfer_from`): `bayes` finds the grid's best
    /// with 6 configs of 25 in 90% of searches, more often than the same
    /// pairs searched 4 at once within one experiment.
    #[test]
    fn a_new_optimizer_learning_from_an_earlier_experiment_finds_the_best_with_a_quarter_of_the_epochs(
    ) {
        let rows = micro_grid_rows(BenchPlan {
            budgets: vec![6],
            seeds: 20,
            concurrent_pairs: vec![4],
            new: vec![Newcomer::Optimizer],
            min_expected_gains: Vec::new(),
        });
        let row = |new| plain_bayes_row(&rows, Some(4), new);
        let (within, newcomer) = (row(None), row(Some(Newcomer::Optimizer)));
        assert_eq!(newcomer.searches, 320);
        assert!(newcomer.meets_goal(), "{newcomer:?}");
        assert!(
            newcomer.found_best > within.found_best,
            "{newcomer:?} vs {within:?}"
        );
    }

    /// The same new optimizer's pairs with `budget.min_expected_gain: 0.1`:
    /// each search ends once bayes expects no untried config to gain 0.1
    /// points, which leaves the epochs for the grid extension, so it meets
    /// the goal with extension too (the best recorded past the grid in 90%
    /// of searches within 25% of the grid's epochs), and without it spends
    /// less than the whole budget.
    #[test]
    fn a_new_optimizer_ending_its_searches_by_expected_gain_meets_the_goal_with_grid_extension() {
        let rows = micro_grid_rows(BenchPlan {
            budgets: vec![6],
            seeds: 20,
            concurrent_pairs: vec![4],
            new: vec![Newcomer::Optimizer],
            min_expected_gains: vec![0.1],
        });
        let row = |extension_steps, min_expected_gain| {
            rows.iter()
                .find(|r| {
                    r.strategy == StrategyKind::Bayes
                        && r.early_stop == StopKind::None
                        && r.new == Some(Newcomer::Optimizer)
                        && r.extension_steps == extension_steps
                        && r.min_expected_gain == min_expected_gain
                })
                .unwrap()
        };
        let (extended, ended) = (row(EXTENSION_STEPS, Some(0.1)), row(0, Some(0.1)));
        assert!(extended.meets_goal(), "{extended:?}");
        assert!(ended.meets_goal(), "{ended:?}");
        let (extended_full, full) = (row(EXTENSION_STEPS, None), row(0, None));
        assert!(!extended_full.meets_goal(), "{extended_full:?}");
        assert!(
            ended.epochs_fraction < full.epochs_fraction,
            "{ended:?} vs {full:?}"
        );
    }

    /// The recorded 4 x 4 micro grid (tests/fixtures/grid4x4-micro.yaml)
    /// was run with `grid_extension: { max_steps: 2 }`: replaying that
    /// protocol walks exactly the configs its run tried past the grid, to
    /// the same best, so the replay's extension (and its tie rule) is the
    /// run's.
    #[test]
    fn replaying_the_recorded_protocol_retraces_its_grid_extension() {
        let recorded = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/grid4x4-micro-trials.json");
        let text = std::fs::read_to_string(recorded).unwrap();
        let trials: Vec<TrialRecord> = serde_json::from_str(&text).unwrap();
        let (pairs, incomplete) = recorded_pairs(&trials);
        assert_eq!((pairs.len(), incomplete.len()), (16, 0));
        assert!(pairs.iter().any(|p| !p.beyond.is_empty()));
        // In the order the recording ran them: backbone by backbone, and
        // nadam's pairs last (recorded later, in a second store).
        let order: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| (p.backbone.as_str(), p.optimizer.as_str()))
            .collect();
        assert_eq!(
            order[..4],
            [
                ("convnext_t@micro", "sgd_m"),
                ("convnext_t@micro", "adamw"),
                ("convnext_t@micro", "lamb"),
                ("densenet121_cifar@micro", "sgd_m")
            ]
        );
        assert!(order[12..]
            .iter()
            .all(|&(_, optimizer)| optimizer == "nadam"));
        let protocol = Search {
            extension_steps: 2,
            min_expected_gain: None,
            ..plain(StrategyKind::Grid, 25)
        };
        for pair in &pairs {
            let outcome = replay(pair, &protocol, 0);
            let name = format!("{} x {}", pair.backbone, pair.optimizer);
            assert!(!outcome.unrecorded, "{name}: {outcome:?}");
            assert_eq!(outcome.regret, 0.0, "{name}");
            let walked = outcome.epochs - pair.grid_epochs();
            let recorded: usize = pair.beyond.values().map(|c| c.curve.len()).sum();
            assert_eq!(walked, recorded, "{name}");
        }
    }

    #[test]
    fn early_stopping_saves_epochs() {
        let pair = synthetic_pair(9);
        let none = replay(&pair, &plain(StrategyKind::Grid, 25), 0);
        for kind in [StopKind::Median, StopKind::Asha, StopKind::Curve] {
            let stop = kind.build();
            let search = Search {
                stop: stop.as_ref(),
                ..plain(StrategyKind::Grid, 25)
            };
            let outcome = replay(&pair, &search, 0);
            assert!(outcome.epochs < none.epochs, "{kind}: {}", outcome.epochs);
        }
    }

    /// A finished stage-1 trial of `e: r x sgd_m` with these accuracies.
    fn trial(grid: GridPos, seed: u64, accs: &[f64]) -> TrialRecord {
        TrialRecord {
            grid: Some(grid),
            seed,
            status: TrialStatus::Done,
            epochs: accs
                .iter()
                .enumerate()
                .map(|(i, &a)| EpochMetrics {
                    epoch: i as u32 + 1,
                    train_loss: 1.0,
                    test_loss: 1.0,
                    test_accuracy: a,
                    lr: 0.1,
                    images_per_sec: 1.0,
                    wall_s: 1.0,
                    ema_test_accuracy: None,
                })
                .collect(),
            final_accuracy: accs.last().copied(),
            ..TrialRecord::new("e", &format!("{grid:?}{seed}"), "r", "sgd_m")
        }
    }

    #[test]
    fn trials_become_pairs_with_seeds_averaged() {
        let mut trials: Vec<TrialRecord> = all_points()
            .flat_map(|p| [trial(p, 0, &[10.0, 20.0]), trial(p, 1, &[30.0, 40.0])])
            .collect();
        // A second pair with one grid point missing is reported, not replayed.
        trials.extend(all_points().skip(1).map(|p| TrialRecord {
            optimizer: "adamw".into(),
            ..trial(p, 0, &[1.0])
        }));
        let (pairs, incomplete) = recorded_pairs(&trials);
        assert_eq!(pairs.len(), 1);
        assert_eq!(
            pairs[0].cells[&GridPos {
                lr: 0,
                weight_decay: 0
            }]
                .curve,
            [20.0, 30.0]
        );
        assert_eq!(incomplete, ["e: r x adamw (24 of 25 grid points)"]);
    }

    #[test]
    fn a_recorded_file_is_checked_before_it_is_benched() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            bench_recorded(&missing, &plan(&[6], 1)),
            Err(RecordedError::Read { .. })
        ));
        let err = bench_recorded(&file("map.json", "{}"), &plan(&[6], 1)).unwrap_err();
        assert!(matches!(err, RecordedError::NotTrials { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("bocb export --experiment NAME --trials"));
        let empty = file("empty.json", "[]");
        assert!(matches!(
            bench_recorded(&empty, &plan(&[0], 1)),
            Err(RecordedError::NoPairs { .. })
        ));
        let trials: Vec<TrialRecord> = all_points().map(|p| trial(p, 0, &[10.0, 20.0])).collect();
        let full = file("full.json", &serde_json::to_string(&trials).unwrap());
        for bad in [0, 26] {
            let err = bench_recorded(&full, &plan(&[6, bad], 1)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--budgets: {bad} is not between 1 and 25 configs")
            );
        }
        let replayed = bench_recorded(&full, &plan(&[25], 0)).unwrap();
        assert_eq!((replayed.pairs, replayed.skipped.len()), (1, 0));
        let grid = replayed
            .rows
            .iter()
            .find(|r| r.strategy == StrategyKind::Grid && r.early_stop == StopKind::None)
            .unwrap();
        // A seed count of 0 runs one seed; the full grid spends every epoch.
        assert_eq!((grid.searches, grid.epochs_fraction), (1, 1.0));
    }
}

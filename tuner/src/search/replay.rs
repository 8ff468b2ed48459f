//! `bocb bench tuner`: replays recorded full grids (every stage-1 trial's
//! per-epoch accuracies, from `bocb export --trials`) under each strategy
//! and early-stopping rule, as if the trials were trained again, and
//! measures the epochs spent and whether the grid's best config was found.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_store::{GridPos, TrialRecord, TrialStatus, GRID_POINTS};
use serde::Serialize;
use thiserror::Error;

use super::{
    best_complete, BuildEarlyStop, BuildStrategy, Curve, EarlyStop, Observation, Prior, Relative,
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

    /// The best final accuracy of the grid.
    fn best_accuracy(&self) -> f64 {
        self.cells
            .values()
            .filter_map(|c| c.curve.last().copied())
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Groups finished stage-1 trials into pairs and averages seeds; pairs
/// without all 25 grid points are left out (they cannot be replayed) and
/// named in the second result.
pub fn recorded_pairs(trials: &[TrialRecord]) -> (Vec<RecordedPair>, Vec<String>) {
    type Key = (String, String, String);
    let mut grouped: BTreeMap<Key, BTreeMap<GridPos, Vec<&TrialRecord>>> = BTreeMap::new();
    for trial in trials {
        let finished = matches!(trial.status, TrialStatus::Done | TrialStatus::Diverged);
        if let (true, 1, Some(grid)) = (finished, trial.stage, trial.grid) {
            grouped
                .entry((
                    trial.experiment.clone(),
                    trial.backbone.clone(),
                    trial.optimizer.clone(),
                ))
                .or_default()
                .entry(grid)
                .or_default()
                .push(trial);
        }
    }
    let mut pairs = Vec::new();
    let mut incomplete = Vec::new();
    for ((experiment, backbone, optimizer), cells) in grouped {
        if cells.len() < GRID_POINTS * GRID_POINTS {
            incomplete.push(format!(
                "{experiment}: {backbone} x {optimizer} ({} of 25 grid points)",
                cells.len()
            ));
            continue;
        }
        let cells = cells
            .into_iter()
            .map(|(pos, seeds)| {
                (
                    pos,
                    RecordedCell {
                        curve: mean_curve(&seeds),
                    },
                )
            })
            .collect();
        pairs.push(RecordedPair {
            backbone,
            optimizer,
            cells,
        });
    }
    (pairs, incomplete)
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
    pub found: Option<GridPos>,
    /// Best grid accuracy minus the found config's (0 when found).
    pub regret: f64,
}

/// One pair's search as it is replayed: its strategy, what it has tried
/// and the epochs it has spent.
struct Replaying<'a> {
    pair: &'a RecordedPair,
    search: Box<dyn Strategy>,
    history: Vec<Observation>,
    runs: Vec<(Vec<f64>, bool)>,
    epochs: usize,
}

impl<'a> Replaying<'a> {
    fn new(pair: &'a RecordedPair, strategy: StrategyKind, seed: u64) -> Self {
        Replaying {
            pair,
            search: strategy.build(seed),
            history: Vec::new(),
            runs: Vec::new(),
            epochs: 0,
        }
    }

    /// Trains the next config the strategy proposes, epoch by epoch until
    /// `stop` stops it or it completes; false when the search has ended.
    fn step(&mut self, stop: &dyn EarlyStop, budget: usize, prior: &Prior) -> bool {
        if self.history.len() >= budget {
            return false;
        }
        let Some(point) = self.search.propose(&self.history, prior) else {
            return false;
        };
        let max_epochs = self.pair.max_epochs();
        let full = &self.pair.cells[&point].curve;
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
        self.history.push(Observation {
            point,
            accuracy,
            complete,
        });
        self.runs.push((seen, complete));
        true
    }

    fn outcome(&self) -> ReplayOutcome {
        let found = best_complete(&self.history);
        ReplayOutcome {
            epochs: self.epochs,
            found: found.map(|o| o.point),
            regret: self.pair.best_accuracy() - found.map_or(0.0, |o| o.accuracy),
        }
    }
}

/// Replays one search of `pair`: `budget` configs proposed by `strategy`,
/// each trained epoch by epoch until `stop` stops it or it completes.
pub fn replay(
    pair: &RecordedPair,
    strategy: StrategyKind,
    stop: &dyn EarlyStop,
    budget: usize,
    seed: u64,
) -> ReplayOutcome {
    let mut search = Replaying::new(pair, strategy, seed);
    while search.step(stop, budget, &Prior::default()) {}
    search.outcome()
}

/// Replays the searches of all `pairs` of one experiment together, as a
/// run with a slot per pair trains them: a config of each pair in turn.
/// With `transfer`, each proposal uses the prior of what the other pairs
/// have found so far.
pub fn replay_together(
    pairs: &[RecordedPair],
    strategy: StrategyKind,
    stop: &dyn EarlyStop,
    budget: usize,
    seed: u64,
    transfer: bool,
) -> Vec<ReplayOutcome> {
    let mut searches: Vec<Replaying> = pairs
        .iter()
        .map(|pair| Replaying::new(pair, strategy, seed))
        .collect();
    loop {
        let mut progressed = false;
        for i in 0..searches.len() {
            let prior = if transfer {
                let relatives: Vec<Relative> = searches
                    .iter()
                    .map(|s| Relative {
                        backbone: &s.pair.backbone,
                        optimizer: &s.pair.optimizer,
                        history: &s.history,
                    })
                    .collect();
                let pair = searches[i].pair;
                Prior::from_relatives(&pair.backbone, &pair.optimizer, &relatives)
            } else {
                Prior::default()
            };
            progressed |= searches[i].step(stop, budget, &prior);
        }
        if !progressed {
            break;
        }
    }
    searches.iter().map(Replaying::outcome).collect()
}

/// One row of the bench table: a strategy, a rule and a budget over every
/// pair (and several seeds for the randomised strategies).
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub strategy: StrategyKind,
    /// Whether each pair's search used what the other pairs found.
    pub transfer: bool,
    pub early_stop: StopKind,
    /// Configs started per pair.
    pub budget: usize,
    /// Searches replayed (pairs x seeds).
    pub searches: usize,
    /// Epochs spent as a fraction of the exhaustive grid's.
    pub epochs_fraction: f64,
    /// Fraction of searches whose best config is the grid's best.
    pub found_best: f64,
    pub mean_regret: f64,
    pub max_regret: f64,
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

/// Replays every strategy x rule x budget over `pairs`, the model-based
/// strategies also with transfer across pairs; strategies that draw
/// random numbers run with seeds `0..seeds`.
pub fn bench(pairs: &[RecordedPair], budgets: &[usize], seeds: u64) -> Vec<BenchRow> {
    let grid_epochs: usize = pairs.iter().map(RecordedPair::grid_epochs).sum();
    let mut rows = Vec::new();
    for strategy in StrategyKind::ALL {
        let seeds = if strategy == StrategyKind::Grid {
            1
        } else {
            seeds
        };
        let transfers: &[bool] = match strategy {
            StrategyKind::Tpe | StrategyKind::Bayes => &[false, true],
            StrategyKind::Grid | StrategyKind::Random => &[false],
        };
        for &transfer in transfers {
            for stop_kind in StopKind::ALL {
                let stop = stop_kind.build();
                for &budget in budgets {
                    let outcomes: Vec<ReplayOutcome> = (0..seeds)
                        .flat_map(|seed| {
                            replay_together(pairs, strategy, stop.as_ref(), budget, seed, transfer)
                        })
                        .collect();
                    let epochs: usize = outcomes.iter().map(|o| o.epochs).sum();
                    let hits = outcomes.iter().filter(|o| o.regret <= 1e-9).count();
                    let searches = outcomes.len();
                    rows.push(BenchRow {
                        strategy,
                        transfer,
                        early_stop: stop_kind,
                        budget,
                        searches,
                        epochs_fraction: epochs as f64 / (grid_epochs * seeds as usize) as f64,
                        found_best: hits as f64 / searches as f64,
                        mean_regret: outcomes.iter().map(|o| o.regret).sum::<f64>()
                            / searches as f64,
                        max_regret: outcomes.iter().map(|o| o.regret).fold(0.0, f64::max),
                    });
                }
            }
        }
    }
    rows
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
pub fn bench_recorded(
    recorded: &Path,
    budgets: &[usize],
    seeds: u64,
) -> Result<RecordedBench, RecordedError> {
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
    if let Some(&bad) = budgets
        .iter()
        .find(|&&b| b == 0 || b > GRID_POINTS * GRID_POINTS)
    {
        return Err(RecordedError::Budget(bad));
    }
    Ok(RecordedBench {
        rows: bench(&pairs, budgets, seeds.max(1)),
        pairs: pairs.len(),
        skipped,
    })
}

/// The bench table, one row per strategy x rule x budget; rows meeting the
/// goal are marked.
pub fn render_bench(rows: &[BenchRow], pairs: usize, skipped: &[String]) -> String {
    let mut out = format!(
        "{pairs} recorded pair(s) replayed; goal: the grid's best in >= 90% of searches with <= 40% of its epochs, \
         <= 25% for searches that learn across pairs (transfer: pairs)\n"
    );
    for pair in skipped {
        out += &format!("skipped (incomplete grid): {pair}\n");
    }
    out += &format!(
        "{:<8} {:<8} {:<10} {:>6} {:>8} {:>9} {:>10} {:>11} {:>10}  {}\n",
        "strategy",
        "transfer",
        "early-stop",
        "budget",
        "searches",
        "epochs %",
        "found best",
        "mean regret",
        "max regret",
        "goal"
    );
    for r in rows {
        out += &format!(
            "{:<8} {:<8} {:<10} {:>6} {:>8} {:>8.1}% {:>9.1}% {:>11.2} {:>10.2}  {}\n",
            r.strategy.to_string(),
            if r.transfer { "pairs" } else { "-" },
            r.early_stop.to_string(),
            r.budget,
            r.searches,
            100.0 * r.epochs_fraction,
            100.0 * r.found_best,
            r.mean_regret,
            r.max_regret,
            if r.meets_goal() { "met" } else { "" }
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
        }
    }

    #[test]
    fn exhaustive_grid_finds_the_best_with_every_epoch() {
        let pair = synthetic_pair(6);
        let stop = StopKind::None.build();
        let outcome = replay(&pair, StrategyKind::Grid, stop.as_ref(), 25, 0);
        assert_eq!(outcome.epochs, 25 * 6);
        assert_eq!(
            outcome.found,
            Some(GridPos {
                lr: 1,
                weight_decay: 3
            })
        );
        assert_eq!(outcome.regret, 0.0);
        // The peak is the 9th point in lr-major order: a budget of 12 finds
        // it, one of 5 misses it and says by how much.
        let half = replay(&pair, StrategyKind::Grid, stop.as_ref(), 12, 0);
        assert_eq!(half.epochs, 12 * 6);
        assert_eq!(half.regret, 0.0);
        let short = replay(&pair, StrategyKind::Grid, stop.as_ref(), 5, 0);
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
                });
            }
        }
        pairs
    }

    #[test]
    fn pairs_that_learn_from_each_other_find_the_best_with_fewer_configs() {
        let pairs = related_pairs(4);
        let stop = StopKind::None.build();
        let found = |strategy: StrategyKind, budget: usize, transfer: bool| -> usize {
            (0..5)
                .flat_map(|seed| {
                    replay_together(&pairs, strategy, stop.as_ref(), budget, seed, transfer)
                })
                .filter(|o| o.regret <= 1e-9)
                .count()
        };
        for strategy in [StrategyKind::Tpe, StrategyKind::Bayes] {
            let (alone, together) = (found(strategy, 5, false), found(strategy, 5, true));
            assert!(
                together > alone,
                "{strategy}: {together} of 80 searches found the best with transfer, {alone} without"
            );
        }
        // Six configs of 25 per pair: the goal's share of the epochs.
        let bayes = found(StrategyKind::Bayes, 6, true);
        assert!(
            bayes >= 72,
            "bayes with transfer found the best in {bayes} of 80"
        );
        // Without transfer, replaying together is replaying each pair alone.
        let alone: Vec<ReplayOutcome> = pairs
            .iter()
            .map(|p| replay(p, StrategyKind::Bayes, stop.as_ref(), 4, 3))
            .collect();
        assert_eq!(
            replay_together(&pairs, StrategyKind::Bayes, stop.as_ref(), 4, 3, false),
            alone
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
        let bench = bench_recorded(&recorded, &[6], 10).unwrap();
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

    #[test]
    fn early_stopping_saves_epochs() {
        let pair = synthetic_pair(9);
        let none = replay(
            &pair,
            StrategyKind::Grid,
            StopKind::None.build().as_ref(),
            25,
            0,
        );
        for kind in [StopKind::Median, StopKind::Asha, StopKind::Curve] {
            let outcome = replay(&pair, StrategyKind::Grid, kind.build().as_ref(), 25, 0);
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
            bench_recorded(&missing, &[6], 1),
            Err(RecordedError::Read { .. })
        ));
        let err = bench_recorded(&file("map.json", "{}"), &[6], 1).unwrap_err();
        assert!(matches!(err, RecordedError::NotTrials { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("bocb export --experiment NAME --trials"));
        let empty = file("empty.json", "[]");
        assert!(matches!(
            bench_recorded(&empty, &[0], 1),
            Err(RecordedError::NoPairs { .. })
        ));
        let trials: Vec<TrialRecord> = all_points().map(|p| trial(p, 0, &[10.0, 20.0])).collect();
        let full = file("full.json", &serde_json::to_string(&trials).unwrap());
        for bad in [0, 26] {
            let err = bench_recorded(&full, &[6, bad], 1).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--budgets: {bad} is not between 1 and 25 configs")
            );
        }
        let replayed = bench_recorded(&full, &[25], 0).unwrap();
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

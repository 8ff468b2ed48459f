//! Queries derived from trial records. Pure functions over records so the
//! store only has to load them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::TrialRecord;
use crate::TrialStatus;
use crate::{GridPos, GRID_POINTS};

/// The best hyperparameters found for one (backbone, optimizer) pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairBest {
    /// Vision backbone name.
    pub backbone: String,
    /// Optimizer name.
    pub optimizer: String,
    /// The winning hyperparameters.
    pub params: BTreeMap<String, f64>,
    /// Grid position of the winning trials, if they were on the grid.
    pub grid: Option<GridPos>,
    /// Mean final accuracy (percent) over the seeds.
    pub mean_accuracy: f64,
    /// Population standard deviation of the final accuracy over the seeds
    /// (0 for a single seed).
    pub std_accuracy: f64,
    /// Number of seeds averaged.
    pub seeds: usize,
    /// Ids of the averaged trials, in trial order.
    pub trial_ids: Vec<String>,
    /// The largest peak memory (bytes) of those trials, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// The largest optimizer state (bytes) of those trials, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_state_bytes: Option<u64>,
}

/// The outcome of the trials at one lr x weight-decay grid position.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GridCell {
    /// Mean final accuracy (percent) of the counted done trials; `None`
    /// when there are none.
    pub mean_accuracy: Option<f64>,
    /// Done trials with a final accuracy (the ones averaged).
    pub done: usize,
    /// Diverged trials.
    pub diverged: usize,
    /// Trials stopped early (never counted in the mean).
    pub stopped: usize,
    /// Failed trials.
    pub failed: usize,
}

/// The accuracy a trial counts with, if it counts at all: only done trials
/// with a finite final accuracy do.
fn counted_accuracy(trial: &TrialRecord) -> Option<f64> {
    match (trial.status, trial.final_accuracy) {
        (TrialStatus::Done, Some(acc)) if acc.is_finite() => Some(acc),
        _ => None,
    }
}

/// Trials sharing a pair and identical params: one hyperparameter setting
/// run with several seeds.
struct Group<'a> {
    first: &'a TrialRecord,
    created_unix_s: u64,
    accuracies: Vec<f64>,
    trial_ids: Vec<String>,
    peak_memory_bytes: Option<u64>,
    optimizer_state_bytes: Option<u64>,
}

impl Group<'_> {
    fn mean(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len() as f64
    }
}

/// See [`crate::Store::best_per_pair`]. `trials` must be in trial order so
/// the result is deterministic.
pub fn best_per_pair<'a>(trials: impl IntoIterator<Item = &'a TrialRecord>) -> Vec<PairBest> {
    // Params as bit patterns: f64 is not Ord, and "identical" means identical.
    type GroupKey<'a> = (&'a str, &'a str, Vec<(&'a str, u64)>);
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for trial in trials {
        let Some(acc) = counted_accuracy(trial) else {
            continue;
        };
        let params = trial
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_bits()))
            .collect();
        let group = groups
            .entry((&trial.backbone, &trial.optimizer, params))
            .or_insert_with(|| Group {
                first: trial,
                created_unix_s: trial.created_unix_s,
                accuracies: Vec::new(),
                trial_ids: Vec::new(),
                peak_memory_bytes: None,
                optimizer_state_bytes: None,
            });
        group.created_unix_s = group.created_unix_s.min(trial.created_unix_s);
        group.accuracies.push(acc);
        group.trial_ids.push(trial.id.clone());
        group.peak_memory_bytes = group.peak_memory_bytes.max(trial.peak_memory_bytes);
        group.optimizer_state_bytes = group.optimizer_state_bytes.max(trial.optimizer_state_bytes);
    }

    // Groups come in (backbone, optimizer, params) order, so the pairs come
    // out sorted and equal (mean, created) ties resolve the same way each time.
    let mut best: Vec<(Group, f64)> = Vec::new();
    for group in groups.into_values() {
        let mean = group.mean();
        match best.last_mut() {
            Some((current, current_mean))
                if current.first.backbone == group.first.backbone
                    && current.first.optimizer == group.first.optimizer =>
            {
                let better = mean > *current_mean
                    || (mean == *current_mean && group.created_unix_s < current.created_unix_s);
                if better {
                    *current = group;
                    *current_mean = mean;
                }
            }
            _ => best.push((group, mean)),
        }
    }

    best.into_iter()
        .map(|(group, mean)| {
            let variance = group
                .accuracies
                .iter()
                .map(|a| (a - mean).powi(2))
                .sum::<f64>()
                / group.accuracies.len() as f64;
            PairBest {
                backbone: group.first.backbone.clone(),
                optimizer: group.first.optimizer.clone(),
                params: group.first.params.clone(),
                grid: group.first.grid,
                mean_accuracy: mean,
                std_accuracy: variance.sqrt(),
                seeds: group.accuracies.len(),
                trial_ids: group.trial_ids,
                peak_memory_bytes: group.peak_memory_bytes,
                optimizer_state_bytes: group.optimizer_state_bytes,
            }
        })
        .collect()
}

/// See [`crate::Store::grid`]; on records already loaded (the web UI
/// filters one pair's from the experiment's, the report reads them once).
pub fn grid<'a>(
    trials: impl IntoIterator<Item = &'a TrialRecord>,
    backbone: &str,
    optimizer: &str,
    stage: u8,
) -> [[GridCell; GRID_POINTS]; GRID_POINTS] {
    let mut cells = [[GridCell::default(); GRID_POINTS]; GRID_POINTS];
    let mut sums = [[0.0_f64; GRID_POINTS]; GRID_POINTS];
    for trial in trials {
        if trial.backbone != backbone || trial.optimizer != optimizer || trial.stage != stage {
            continue;
        }
        let Some(pos) = trial.grid else { continue };
        let (lr, wd) = (usize::from(pos.lr), usize::from(pos.weight_decay));
        // put_trial rejects positions off the grid; skip rather than panic
        // should one slip in from an older writer.
        let Some(cell) = cells.get_mut(lr).and_then(|row| row.get_mut(wd)) else {
            continue;
        };
        match trial.status {
            TrialStatus::Diverged => cell.diverged += 1,
            TrialStatus::Stopped => cell.stopped += 1,
            TrialStatus::Failed => cell.failed += 1,
            _ => {
                if let Some(acc) = counted_accuracy(trial) {
                    cell.done += 1;
                    sums[lr][wd] += acc;
                }
            }
        }
    }
    for (row, sum_row) in cells.iter_mut().zip(&sums) {
        for (cell, sum) in row.iter_mut().zip(sum_row) {
            if cell.done > 0 {
                cell.mean_accuracy = Some(sum / cell.done as f64);
            }
        }
    }
    cells
}

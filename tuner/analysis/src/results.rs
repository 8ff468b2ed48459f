//! The result of every (backbone, optimizer) pair: its best config's mean
//! accuracy over seeds, with the config, the seed statistics, and whether
//! it is significantly below its backbone's best (Welch's t-test).

use std::collections::BTreeMap;

use bocb_store::{GridPos, ImportedTable, PairBest, TrialRecord};
use serde::Serialize;

use super::stats::{mean, sample_variance, student_t_cdf, student_t_quantile};
use bocb_spec::ExtendedPos;

/// Significance level of the one-sided Welch test against the backbone's best.
pub const SIGNIFICANCE: f64 = 0.05;

/// Where an experiment's results come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// Trials that bocb trained.
    Trained,
    /// A table loaded with `bocb import`.
    Imported {
        source: String,
        grid_source: Option<String>,
    },
}

/// The accuracies of a config's seeds and what they say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedStats {
    /// Final accuracy of each seed, in trial order.
    pub accuracies: Vec<f64>,
    /// Sample standard deviation (n - 1); `None` for one seed.
    pub std: Option<f64>,
    /// 95% confidence interval of the mean (Student's t); `None` for one seed.
    pub ci95: Option<[f64; 2]>,
}

impl SeedStats {
    pub fn new(accuracies: Vec<f64>) -> SeedStats {
        let n = accuracies.len() as f64;
        let variance = sample_variance(&accuracies);
        let ci95 = variance.map(|v| {
            let half = student_t_quantile(0.975, n - 1.0) * (v / n).sqrt();
            let m = mean(&accuracies);
            [m - half, m + half]
        });
        SeedStats {
            std: variance.map(f64::sqrt),
            ci95,
            accuracies,
        }
    }
}

/// One pair's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairResult {
    pub backbone: String,
    pub optimizer: String,
    /// Mean accuracy (percent) of the best config over its seeds.
    pub accuracy: f64,
    /// The best config's hyperparameters (empty for an imported table).
    pub params: BTreeMap<String, f64>,
    /// Grid position of the best lr and weight decay, when known.
    pub grid: Option<GridPos>,
    /// Where the best config lies on its grids' index scale when that is
    /// past their ends (`grid_extension`); `None` on the grid or unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beyond_grid: Option<ExtendedPos>,
    /// Seed statistics; `None` for an imported table (one number per pair).
    pub seeds: Option<SeedStats>,
    /// One-sided Welch p-value of "this pair is below its backbone's best";
    /// `None` where either side has fewer than two seeds.
    pub p_below_best: Option<f64>,
    /// Whether the difference from the backbone's best could be seed noise
    /// (p >= 0.05, or this is the best); `None` when untestable.
    pub within_noise_of_best: Option<bool>,
    /// Ids of the trials averaged (empty for an imported table).
    pub trial_ids: Vec<String>,
    /// The largest peak memory (bytes) of those trials, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// The largest optimizer state (bytes) of those trials, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer_state_bytes: Option<u64>,
}

/// Every pair's result, with the backbones and optimizers in table order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultSet {
    pub experiment: String,
    pub origin: Origin,
    pub backbones: Vec<String>,
    pub optimizers: Vec<String>,
    pub results: Vec<PairResult>,
}

impl ResultSet {
    /// Results of trained trials: `best` from the store's best per pair,
    /// `trials` for the per-seed accuracies. Backbones and optimizers come
    /// in `order` (the experiment file's), then any others in best order.
    pub fn from_trials(
        experiment: &str,
        best: &[PairBest],
        trials: &[TrialRecord],
        order: (Vec<String>, Vec<String>),
    ) -> ResultSet {
        let accuracy_of: BTreeMap<&str, f64> = trials
            .iter()
            .filter_map(|t| Some((t.id.as_str(), t.final_accuracy?)))
            .collect();
        let (mut backbones, mut optimizers) = order;
        let mut results = Vec::new();
        for pair in best {
            push_new(&mut backbones, &pair.backbone);
            push_new(&mut optimizers, &pair.optimizer);
            let accuracies = pair
                .trial_ids
                .iter()
                .filter_map(|id| accuracy_of.get(id.as_str()).copied())
                .collect();
            results.push(PairResult {
                backbone: pair.backbone.clone(),
                optimizer: pair.optimizer.clone(),
                accuracy: pair.mean_accuracy,
                params: pair.params.clone(),
                grid: pair.grid,
                beyond_grid: None,
                seeds: Some(SeedStats::new(accuracies)),
                p_below_best: None,
                within_noise_of_best: None,
                trial_ids: pair.trial_ids.clone(),
                peak_memory_bytes: pair.peak_memory_bytes,
                optimizer_state_bytes: pair.optimizer_state_bytes,
            });
        }
        let mut set = ResultSet {
            experiment: experiment.to_string(),
            origin: Origin::Trained,
            backbones,
            optimizers,
            results,
        };
        set.test_against_best();
        set
    }

    /// Results of an imported table.
    pub fn from_imported(table: &ImportedTable) -> ResultSet {
        ResultSet {
            experiment: table.experiment.clone(),
            origin: Origin::Imported {
                source: table.source.clone(),
                grid_source: table.grid_source.clone(),
            },
            backbones: table.backbones.clone(),
            optimizers: table.optimizers.clone(),
            results: table
                .results
                .iter()
                .map(|r| PairResult {
                    backbone: r.backbone.clone(),
                    optimizer: r.optimizer.clone(),
                    accuracy: r.accuracy,
                    params: BTreeMap::new(),
                    grid: r.grid,
                    beyond_grid: None,
                    seeds: None,
                    p_below_best: None,
                    within_noise_of_best: None,
                    trial_ids: Vec::new(),
                    peak_memory_bytes: None,
                    optimizer_state_bytes: None,
                })
                .collect(),
        }
    }

    /// The result of one pair, if there is one.
    pub fn get(&self, backbone: &str, optimizer: &str) -> Option<&PairResult> {
        self.results
            .iter()
            .find(|r| r.backbone == backbone && r.optimizer == optimizer)
    }

    /// Tests each result against its backbone's best (highest mean; the
    /// first in optimizer order on a tie).
    fn test_against_best(&mut self) {
        for backbone in &self.backbones {
            let best = self
                .results
                .iter()
                .filter(|r| &r.backbone == backbone)
                .reduce(|a, b| if b.accuracy > a.accuracy { b } else { a })
                .map(|r| (r.optimizer.clone(), r.seeds.clone()));
            let Some((best_optimizer, best_seeds)) = best else {
                continue;
            };
            for result in self.results.iter_mut().filter(|r| &r.backbone == backbone) {
                if result.optimizer == best_optimizer {
                    result.within_noise_of_best = Some(true);
                    continue;
                }
                let p = match (&result.seeds, &best_seeds) {
                    (Some(this), Some(best)) => welch_p_below(&this.accuracies, &best.accuracies),
                    _ => None,
                };
                result.p_below_best = p;
                result.within_noise_of_best = p.map(|p| p >= SIGNIFICANCE);
            }
        }
    }
}

fn push_new(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// One-sided Welch's t-test p-value for "mean of `sample` < mean of
/// `reference`"; `None` when either has fewer than two values. With no
/// spread on either side the difference is exact: p is 0 below, 1 otherwise.
pub fn welch_p_below(sample: &[f64], reference: &[f64]) -> Option<f64> {
    let (n1, n2) = (sample.len() as f64, reference.len() as f64);
    let (v1, v2) = (
        sample_variance(sample)? / n1,
        sample_variance(reference)? / n2,
    );
    let difference = mean(sample) - mean(reference);
    if v1 + v2 == 0.0 {
        return Some(if difference < 0.0 { 0.0 } else { 1.0 });
    }
    let t = difference / (v1 + v2).sqrt();
    let df = (v1 + v2).powi(2) / (v1 * v1 / (n1 - 1.0) + v2 * v2 / (n2 - 1.0));
    Some(student_t_cdf(t, df))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_store::TrialStatus;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn seed_stats_by_hand() {
        // Mean 71, sample variance (1 + 0 + 1) / 2 = 1, t(0.975, 2) = 4.3027.
        let stats = SeedStats::new(vec![70.0, 71.0, 72.0]);
        assert_eq!(stats.std, Some(1.0));
        let [lo, hi] = stats.ci95.unwrap();
        let half = 4.302_652_7 / 3.0_f64.sqrt();
        assert!(close(lo, 71.0 - half, 1e-6) && close(hi, 71.0 + half, 1e-6));
        let single = SeedStats::new(vec![70.0]);
        assert_eq!((single.std, single.ci95), (None, None));
    }

    #[test]
    fn welch_by_hand() {
        // Means 70 and 72, sample variances 1 and 1, n = 3 each:
        // t = -2 / sqrt(2/3) = -2.4495, df = (2/3)^2 / (2 (1/3)^2 / 2) = 4.
        // P(T4 <= -2.4495) = 0.0353 (t table: t(0.95, 4) = 2.132,
        // t(0.975, 4) = 2.776).
        let p = welch_p_below(&[69.0, 70.0, 71.0], &[71.0, 72.0, 73.0]).unwrap();
        assert!(close(p, 0.0353, 5e-4), "{p}");
        // Above the reference: far from significant.
        let p = welch_p_below(&[73.0, 74.0, 75.0], &[71.0, 72.0, 73.0]).unwrap();
        assert!(p > 0.9, "{p}");
        assert_eq!(welch_p_below(&[70.0], &[71.0, 72.0]), None);
        assert_eq!(welch_p_below(&[70.0, 70.0], &[71.0, 71.0]), Some(0.0));
        assert_eq!(welch_p_below(&[71.0, 71.0], &[71.0, 71.0]), Some(1.0));
    }

    fn trial(id: &str, backbone: &str, optimizer: &str, accuracy: f64) -> TrialRecord {
        TrialRecord {
            params: BTreeMap::from([("lr".into(), 0.1)]),
            status: TrialStatus::Done,
            final_accuracy: Some(accuracy),
            ..TrialRecord::new("e", id, backbone, optimizer)
        }
    }

    fn best(backbone: &str, optimizer: &str, ids: &[&str], mean: f64) -> PairBest {
        PairBest {
            backbone: backbone.into(),
            optimizer: optimizer.into(),
            params: BTreeMap::from([("lr".into(), 0.1)]),
            grid: Some(GridPos {
                lr: 2,
                weight_decay: 2,
            }),
            mean_accuracy: mean,
            std_accuracy: 0.0,
            seeds: ids.len(),
            trial_ids: ids.iter().map(|s| s.to_string()).collect(),
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
        }
    }

    #[test]
    fn trained_results_carry_seeds_and_noise_marks() {
        let trials = [
            trial("a1", "r18", "sgd", 71.0),
            trial("a2", "r18", "sgd", 72.0),
            trial("a3", "r18", "sgd", 73.0),
            trial("b1", "r18", "adam", 71.5),
            trial("b2", "r18", "adam", 72.5),
            trial("b3", "r18", "adam", 70.5),
            trial("c1", "r18", "lion", 60.0),
            trial("c2", "r18", "lion", 61.0),
            trial("c3", "r18", "lion", 59.0),
            trial("d1", "r18", "lars", 50.0),
        ];
        let bests = [
            best("r18", "adam", &["b1", "b2", "b3"], 71.5),
            best("r18", "lars", &["d1"], 50.0),
            best("r18", "lion", &["c1", "c2", "c3"], 60.0),
            best("r18", "sgd", &["a1", "a2", "a3"], 72.0),
        ];
        let set = ResultSet::from_trials(
            "e",
            &bests,
            &trials,
            (vec!["r18".into()], vec!["sgd".into(), "adam".into()]),
        );
        assert_eq!(set.optimizers, ["sgd", "adam", "lars", "lion"]);
        let sgd = set.get("r18", "sgd").unwrap();
        assert_eq!(sgd.seeds.as_ref().unwrap().accuracies, [71.0, 72.0, 73.0]);
        assert_eq!(sgd.within_noise_of_best, Some(true));
        assert_eq!(sgd.p_below_best, None);
        // Adam is 0.5 below with the same spread: noise.
        let adam = set.get("r18", "adam").unwrap();
        assert_eq!(adam.within_noise_of_best, Some(true));
        assert!(adam.p_below_best.unwrap() > SIGNIFICANCE);
        // LION is 12 below: significant.
        let lion = set.get("r18", "lion").unwrap();
        assert_eq!(lion.within_noise_of_best, Some(false));
        assert!(lion.p_below_best.unwrap() < 0.001);
        // One seed cannot be tested.
        let lars = set.get("r18", "lars").unwrap();
        assert_eq!((lars.p_below_best, lars.within_noise_of_best), (None, None));
    }
}

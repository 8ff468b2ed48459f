//! The optimizer ranking of Table 4 / App. C.5: performance (40%),
//! hyperparameter robustness (20%), BOCB (20%) and memory (20%) combined
//! into an overall rank.
//!
//! App. C.5 is vague in places; what bocb chose, checked against the paper's
//! own Table 1 and Table 4:
//! - Performance: the optimizer's mean over backbones after removing its
//!   single worst result (Table 1's statistic), higher is better, ranked
//!   1, 2, 2, 4 on ties. This reproduces 15 of Table 4's 20 performance
//!   ranks from Table 1 (the plain mean 9, the median 4).
//! - Hyperparameter robustness: "the median Manhattan distance ... to the
//!   maximum average distance" does not say what is divided by what; bocb
//!   ranks the median Manhattan variation of the optimizer's optimal
//!   (lr, weight decay) over backbones from its own mode, lower is better,
//!   ranked 1, 1, 2 on ties as Table 4's row is (shared ranks, no gaps).
//! - BOCB: 1 when the optimizer fails with any backbone (failures judged in
//!   each backbone's column, as Table 1 marks them), else 0; the flag itself
//!   enters the weighted sum, which reproduces 18 of Table 4's 20 overall
//!   ranks from its other rows (the two others are ties the paper broke).
//! - Memory: Table 4 ranks "computations" and C.5 says GPU memory; bocb
//!   ranks the measured optimizer state in bytes per parameter (`bocb optim
//!   info`), lower is better, shared ranks without gaps.
//! - Overall: 0.4 performance rank + 0.2 robustness rank + 0.2 BOCB flag +
//!   0.2 memory rank, lower is better. A component that cannot be computed
//!   (no grid positions, an optimizer bocb cannot measure) is left out and
//!   the other weights are scaled up to sum to 1; `components` says which
//!   were used.

use std::collections::BTreeMap;

use serde::Serialize;

use super::robustness::Robustness;
use super::table1::Table1Stats;

const PERFORMANCE_WEIGHT: f64 = 0.4;
const ROBUSTNESS_WEIGHT: f64 = 0.2;
const BOCB_WEIGHT: f64 = 0.2;
const MEMORY_WEIGHT: f64 = 0.2;

/// One optimizer's ranks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizerRank {
    pub optimizer: String,
    /// Mean accuracy over backbones after removing the worst.
    pub performance: f64,
    pub performance_rank: usize,
    /// Median Manhattan variation over backbones.
    pub robustness_variation: Option<f64>,
    pub robustness_rank: Option<usize>,
    /// Whether it fails with any backbone.
    pub bocb: bool,
    /// Optimizer state, bytes per float32 parameter.
    pub memory_bytes_per_param: Option<f64>,
    pub memory_rank: Option<usize>,
    /// The weighted score (lower is better).
    pub score: f64,
    pub overall_rank: usize,
    /// Which components entered the score.
    pub components: Vec<&'static str>,
}

/// Scores closer than this are equal: weighted sums of the same ranks can
/// differ in the last bits.
const SAME_SCORE: f64 = 1e-9;

/// Ranks 1, 2, 2, 4: one plus the number of strictly better scores.
pub fn competition_ranks(scores: &[f64], higher_is_better: bool) -> Vec<usize> {
    let better = |a: f64, b: f64| {
        if higher_is_better {
            a > b + SAME_SCORE
        } else {
            a < b - SAME_SCORE
        }
    };
    scores
        .iter()
        .map(|&s| 1 + scores.iter().filter(|&&o| better(o, s)).count())
        .collect()
}

/// Ranks 1, 2, 2, 3: one plus the number of distinct better scores.
pub fn dense_ranks(scores: &[f64], higher_is_better: bool) -> Vec<usize> {
    let mut distinct = scores.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup_by(|a, b| (*a - *b).abs() <= SAME_SCORE);
    if higher_is_better {
        distinct.reverse();
    }
    scores
        .iter()
        .map(|s| {
            1 + distinct
                .iter()
                .position(|d| (d - s).abs() <= SAME_SCORE)
                .expect("own score")
        })
        .collect()
}

/// Ranks every optimizer with a Table 1 row. `memory` maps the result
/// set's optimizer names to bytes per parameter.
pub fn rank_optimizers(
    table1: &Table1Stats,
    robustness: &Robustness,
    memory: &BTreeMap<String, f64>,
) -> Vec<OptimizerRank> {
    let names: Vec<&str> = table1.optimizers.iter().map(|g| g.name.as_str()).collect();
    let performance: Vec<f64> = table1.optimizers.iter().map(|g| g.mean).collect();
    let performance_ranks = competition_ranks(&performance, true);
    // Ranks among the optimizers that have the measure.
    let ranks_of = |values: Vec<Option<f64>>| -> Vec<Option<usize>> {
        let known: Vec<f64> = values.iter().flatten().copied().collect();
        let ranks = dense_ranks(&known, false);
        let mut next = ranks.into_iter();
        values.iter().map(|v| v.and_then(|_| next.next())).collect()
    };
    let variations: Vec<Option<f64>> = names
        .iter()
        .map(|n| robustness.optimizer(n).map(|r| r.median_manhattan))
        .collect();
    let robustness_ranks = ranks_of(variations.clone());
    let bytes: Vec<Option<f64>> = names.iter().map(|n| memory.get(*n).copied()).collect();
    let memory_ranks = ranks_of(bytes.clone());

    let mut ranked: Vec<OptimizerRank> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bocb = table1
                .backbones
                .iter()
                .any(|b| b.failures.iter().any(|f| f == name));
            let mut parts = vec![
                (
                    "performance",
                    PERFORMANCE_WEIGHT,
                    performance_ranks[i] as f64,
                ),
                ("bocb", BOCB_WEIGHT, f64::from(u8::from(bocb))),
            ];
            if let Some(rank) = robustness_ranks[i] {
                parts.push(("robustness", ROBUSTNESS_WEIGHT, rank as f64));
            }
            if let Some(rank) = memory_ranks[i] {
                parts.push(("memory", MEMORY_WEIGHT, rank as f64));
            }
            let total_weight: f64 = parts.iter().map(|(_, w, _)| w).sum();
            OptimizerRank {
                optimizer: name.to_string(),
                performance: performance[i],
                performance_rank: performance_ranks[i],
                robustness_variation: variations[i],
                robustness_rank: robustness_ranks[i],
                bocb,
                memory_bytes_per_param: bytes[i],
                memory_rank: memory_ranks[i],
                score: parts.iter().map(|(_, w, r)| w * r).sum::<f64>() / total_weight,
                overall_rank: 0,
                components: parts.iter().map(|(c, _, _)| *c).collect(),
            }
        })
        .collect();
    let scores: Vec<f64> = ranked.iter().map(|r| r.score).collect();
    for (rank, overall) in ranked.iter_mut().zip(competition_ranks(&scores, false)) {
        rank.overall_rank = overall;
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Origin, PairResult, ResultSet};
    use crate::table1::FailureRule;
    use bocb_store::GridPos;

    #[test]
    fn rank_styles() {
        assert_eq!(competition_ranks(&[3.0, 5.0, 5.0, 1.0], true), [3, 1, 1, 4]);
        assert_eq!(
            competition_ranks(&[3.0, 5.0, 5.0, 1.0], false),
            [2, 3, 3, 1]
        );
        assert_eq!(dense_ranks(&[3.0, 5.0, 5.0, 1.0], true), [2, 1, 1, 3]);
        assert_eq!(dense_ranks(&[3.0, 5.0, 5.0, 1.0], false), [2, 3, 3, 1]);
        // 0.4 * 17 + 0.2 * 2 + 0.2 and 0.4 * 16 + 0.2 * 4 + 0.2 differ only
        // in rounding.
        let scores = [0.4 * 17.0 + 0.2 * 2.0 + 0.2, 0.4 * 16.0 + 0.2 * 4.0 + 0.2];
        assert_eq!(competition_ranks(&scores, false), [1, 1]);
        assert_eq!(dense_ranks(&scores, false), [1, 1]);
    }

    fn result(backbone: &str, optimizer: &str, accuracy: f64, grid: (u8, u8)) -> PairResult {
        PairResult {
            backbone: backbone.into(),
            optimizer: optimizer.into(),
            accuracy,
            params: BTreeMap::new(),
            grid: Some(GridPos {
                lr: grid.0,
                weight_decay: grid.1,
            }),
            beyond_grid: None,
            seeds: None,
            p_below_best: None,
            within_noise_of_best: None,
            trial_ids: Vec::new(),
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
        }
    }

    #[test]
    fn overall_rank_by_hand() {
        // Three backbones x three optimizers.
        let results = ResultSet {
            experiment: "t".into(),
            origin: Origin::Trained,
            backbones: vec!["b1".into(), "b2".into(), "b3".into()],
            optimizers: vec!["sgd".into(), "adamw".into(), "lion".into()],
            results: vec![
                result("b1", "sgd", 70.0, (2, 2)),
                result("b2", "sgd", 72.0, (2, 2)),
                result("b3", "sgd", 40.0, (2, 2)),
                result("b1", "adamw", 71.0, (2, 2)),
                result("b2", "adamw", 71.0, (1, 2)),
                result("b3", "adamw", 69.0, (2, 2)),
                result("b1", "lion", 60.0, (0, 4)),
                result("b2", "lion", 73.0, (2, 2)),
                result("b3", "lion", 70.0, (4, 0)),
            ],
        };
        let table1 = Table1Stats::new(&results, FailureRule::Tukey);
        let robustness = Robustness::new(&results);
        let memory = BTreeMap::from([("sgd".into(), 4.0), ("adamw".into(), 8.0)]);
        let ranks = rank_optimizers(&table1, &robustness, &memory);
        // Worst-removed means: sgd (70 + 72) / 2 = 71, adamw 71, lion 71.5.
        let perf: Vec<usize> = ranks.iter().map(|r| r.performance_rank).collect();
        assert_eq!(perf, [2, 2, 1]);
        // Column b3 is 40, 69, 70: Q25 = 54.5, Q75 = 69.5, fence 32; nothing
        // fails. Column b1: 70, 71, 60: Q25 65, Q75 70.5, fence 56.75.
        assert!(ranks.iter().all(|r| !r.bocb));
        // Median variations: sgd 0 0 0 -> 0; adamw 0 2 0 -> 0; lion: modes
        // (2, 2) after ties at the centre -> 4 0 4 -> 4.
        let variation: Vec<Option<f64>> = ranks.iter().map(|r| r.robustness_variation).collect();
        assert_eq!(variation, [Some(0.0), Some(0.0), Some(4.0)]);
        let robust: Vec<Option<usize>> = ranks.iter().map(|r| r.robustness_rank).collect();
        assert_eq!(robust, [Some(1), Some(1), Some(2)]);
        // LION has no memory figure: ranked without that component.
        assert_eq!(ranks[2].memory_rank, None);
        assert_eq!(ranks[2].components, ["performance", "bocb", "robustness"]);
        // sgd: (0.4*2 + 0 + 0.2*1 + 0.2*1) = 1.2; adamw: 0.8 + 0.2 + 0.4 =
        // 1.4; lion: (0.4*1 + 0 + 0.2*2) / 0.8 = 1.0.
        let scores: Vec<f64> = ranks.iter().map(|r| r.score).collect();
        for (score, expected) in scores.iter().zip([1.2, 1.4, 1.0]) {
            assert!((score - expected).abs() < 1e-12, "{scores:?}");
        }
        let overall: Vec<usize> = ranks.iter().map(|r| r.overall_rank).collect();
        assert_eq!(overall, [2, 3, 1]);
    }
}

//! The BOCB analyses of an experiment (Sections 3-4, App. A.3 and C.5),
//! derived from the store: from trained trials or from an imported table.
//!
//! - [`results`]: each pair's best config, seed statistics, Welch's test;
//! - [`table1`]: Table 1's statistics and failures (Eq. (1) or Tukey);
//! - [`robustness`]: one-hot variation of the optimal lr / weight decay;
//! - [`ranking`]: Table 4's optimizer ranking;
//! - [`import`]: reading published tables; [`render`]: the report forms;
//!   [`html`] and [`plots`]: the HTML report and its SVG figures;
//! - [`report`]: `bocb report`'s per-experiment table; [`export`]: the best
//!   configs and the trials; [`trial_table`]: the service's trial list.
//!
//! Nothing here trains or links libtorch: what only training can do (measuring
//! the patterns of old saved weights) is passed in by the caller.

pub mod export;
pub mod finetune;
pub mod html;
pub mod import;
pub mod patterns;
pub mod plots;
pub mod ranking;
pub mod render;
pub mod report;
pub mod results;
pub mod robustness;
pub mod stats;
pub mod table1;
pub mod trial_table;

use std::collections::BTreeMap;

use bocb_search_spaces::Catalog;
use bocb_store::Store;
use serde::Serialize;

use bocb_spec::ExtendedPos;
use bocb_store::{stored_spec, StoredSpecError};
use ranking::{rank_optimizers, OptimizerRank};
use results::{Origin, ResultSet};
use robustness::{GroupRobustness, Robustness};
use table1::{FailureRule, GroupStats, Table1Stats, CIFAR_GAMMA};

/// Which rule marks failures; γ is resolved per experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureRuleChoice {
    /// The paper's Eq. (1).
    Eq1,
    /// r < Q25 - 1.5 IQR.
    Tukey,
}

/// Everything the analyses derive from one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub experiment: String,
    pub origin: Origin,
    pub failure_rule: FailureRule,
    /// The rule in words, for readers of the JSON.
    pub failure_rule_text: String,
    pub results: ResultSet,
    pub table1: Table1Stats,
    pub robustness: Robustness,
    /// Optimizers by their order in the table; see `overall_rank`.
    pub ranking: Vec<OptimizerRank>,
}

/// A backbone's statistics and robustness, as the JSON report shows them.
#[derive(Debug, Serialize)]
pub struct BackboneSummary<'a> {
    #[serde(flatten)]
    pub stats: &'a GroupStats,
    pub robustness: Option<&'a GroupRobustness>,
}

/// An optimizer's statistics, robustness and ranks.
#[derive(Debug, Serialize)]
pub struct OptimizerSummary<'a> {
    #[serde(flatten)]
    pub stats: &'a GroupStats,
    pub robustness: Option<&'a GroupRobustness>,
    pub ranking: Option<&'a OptimizerRank>,
}

/// The analysis as the JSON report writes it: per backbone and per
/// optimizer, then the pairs and the ranking.
#[derive(Debug, Serialize)]
pub struct AnalysisJson<'a> {
    pub origin: &'a Origin,
    pub failure_rule: &'a FailureRule,
    pub failure_rule_text: &'a str,
    pub backbones: Vec<BackboneSummary<'a>>,
    pub optimizers: Vec<OptimizerSummary<'a>>,
    pub pairs: &'a [results::PairResult],
    pub ranking: &'a [OptimizerRank],
}

impl Analysis {
    /// Derives every analysis from a result set.
    pub fn new(
        results: ResultSet,
        failure_rule: FailureRule,
        memory: &BTreeMap<String, f64>,
    ) -> Analysis {
        let table1 = Table1Stats::new(&results, failure_rule);
        let robustness = Robustness::new(&results);
        // Memory figures are keyed by bocb's optimizer names; a table may
        // spell them differently ("SGD-M" for sgd_m).
        let memory: BTreeMap<String, f64> = results
            .optimizers
            .iter()
            .filter_map(|name| {
                let key = comparable_name(name);
                memory
                    .iter()
                    .find(|(known, _)| comparable_name(known) == key)
                    .map(|(_, &bytes)| (name.clone(), bytes))
            })
            .collect();
        let ranking = rank_optimizers(&table1, &robustness, &memory);
        Analysis {
            experiment: results.experiment.clone(),
            origin: results.origin.clone(),
            failure_rule_text: failure_rule.to_string(),
            failure_rule,
            results,
            table1,
            robustness,
            ranking,
        }
    }

    /// The JSON report's view.
    pub fn json(&self) -> AnalysisJson<'_> {
        AnalysisJson {
            origin: &self.origin,
            failure_rule: &self.failure_rule,
            failure_rule_text: &self.failure_rule_text,
            backbones: self
                .table1
                .backbones
                .iter()
                .map(|stats| BackboneSummary {
                    stats,
                    robustness: robustness_of(&self.robustness.backbones, &stats.name),
                })
                .collect(),
            optimizers: self
                .table1
                .optimizers
                .iter()
                .map(|stats| OptimizerSummary {
                    stats,
                    robustness: robustness_of(&self.robustness.optimizers, &stats.name),
                    ranking: self.ranking.iter().find(|r| r.optimizer == stats.name),
                })
                .collect(),
            pairs: &self.results.results,
            ranking: &self.ranking,
        }
    }
}

fn robustness_of<'a>(groups: &'a [GroupRobustness], name: &str) -> Option<&'a GroupRobustness> {
    groups.iter().find(|g| g.name == name)
}

/// Lowercase letters and digits only: `SGD-M`, `sgd_m` and `SGDM` compare equal.
pub fn comparable_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The analysis of experiment `name` (trained or imported); `None` when
/// the store has no such experiment. γ is `gamma` when given, else the
/// experiment's own (the import's `--gamma`, the file's `failure_gamma`),
/// else 3 (CIFAR). `memory` maps optimizer names to state bytes per
/// parameter; `catalog`'s search spaces place bests past the grid.
pub fn analyse(
    store: &Store,
    name: &str,
    rule: FailureRuleChoice,
    gamma: Option<f64>,
    memory: &BTreeMap<String, f64>,
    catalog: &Catalog,
) -> Result<Option<Analysis>, StoredSpecError> {
    let Some(record) = store.experiment(name)? else {
        return Ok(None);
    };
    let (results, own_gamma) = match store.imported(name)? {
        Some(table) => (ResultSet::from_imported(&table), table.gamma),
        None => {
            let spec = stored_spec(store, &record)?;
            let order = spec.as_ref().map_or_else(Default::default, |s| {
                let backbones = s
                    .backbones
                    .listed()
                    .map(|names| names.iter().map(|b| s.with_preset(b)).collect())
                    .unwrap_or_default();
                let optimizers = s.optimizers.listed().map(<[_]>::to_vec).unwrap_or_default();
                (backbones, optimizers)
            });
            // Bests need no epochs: the summaries, not every epoch of every trial.
            let trials: Vec<_> = store
                .trial_summaries(name)?
                .iter()
                .map(|s| s.trial.clone())
                .collect();
            let best = store.best_per_pair(name)?;
            let mut results = ResultSet::from_trials(name, &best, &trials, order);
            // A best off the grid is placed on the pair's grids (moved by
            // `grid_centres` as its search moved them) when it lies past
            // their ends, as `grid_extension` searches.
            for r in results.results.iter_mut().filter(|r| r.grid.is_none()) {
                let Ok(space) = catalog.optimizer(&r.optimizer) else {
                    continue;
                };
                let space = match &spec {
                    Some(spec) => spec.pair_space(&r.backbone, space),
                    None => space.clone(),
                };
                r.beyond_grid = ExtendedPos::of(&space, &r.params).filter(|p| p.beyond());
            }
            // Names listed in the file but without any finished result
            // have nothing to analyse.
            let measured = &results.results;
            results
                .backbones
                .retain(|b| measured.iter().any(|r| &r.backbone == b));
            results
                .optimizers
                .retain(|o| measured.iter().any(|r| &r.optimizer == o));
            (results, spec.and_then(|s| s.failure_gamma))
        }
    };
    let failure_rule = match rule {
        FailureRuleChoice::Eq1 => FailureRule::Eq1 {
            gamma: gamma.or(own_gamma).unwrap_or(CIFAR_GAMMA),
        },
        FailureRuleChoice::Tukey => FailureRule::Tukey,
    };
    Ok(Some(Analysis::new(results, failure_rule, memory)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_names_compare_across_spellings() {
        assert_eq!(comparable_name("SGD-M"), comparable_name("sgd_m"));
        assert_eq!(comparable_name("AdaFactor"), "adafactor");
        assert_ne!(comparable_name("Adam"), comparable_name("AdamW"));
    }
}

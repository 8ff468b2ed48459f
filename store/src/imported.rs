//! Results tables that were imported (`bocb import`), not trained by bocb.
//!
//! They live in their own tree, one record per experiment, so that no query
//! over trials (best per pair, grids, resumption) can ever count a published
//! number as a trained trial, and so that a whole table is replaced at once.

use serde::{Deserialize, Serialize};

use crate::error::ImportError;
use crate::{GridPos, GRID_POINTS};

/// One imported (backbone, optimizer) result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedResult {
    /// Backbone name as the table writes it.
    pub backbone: String,
    /// Optimizer name as the table writes it.
    pub optimizer: String,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    /// Grid position of the best lr and weight decay, when a grid file came
    /// with the table.
    #[serde(default)]
    pub grid: Option<GridPos>,
}

/// A whole imported results table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedTable {
    /// The experiment the table is stored as.
    pub experiment: String,
    /// The file it was read from, as given on the command line.
    pub source: String,
    /// The grid-index file that came with it, if any.
    #[serde(default)]
    pub grid_source: Option<String>,
    /// γ of Eq. (1) for this table, when the import named one.
    #[serde(default)]
    pub gamma: Option<f64>,
    /// Backbones in the table's column order.
    pub backbones: Vec<String>,
    /// Optimizers in the table's row order.
    pub optimizers: Vec<String>,
    /// The results; a pair may be missing (an empty cell).
    pub results: Vec<ImportedResult>,
    /// When the table was imported.
    pub imported_unix_s: u64,
}

impl ImportedTable {
    /// Checks that every result can be analysed: a finite accuracy, a grid
    /// position on the grid, and names from the table's lists.
    pub(crate) fn validate(&self) -> Result<(), ImportError> {
        for result in &self.results {
            let bad = |problem: String| ImportError::BadResult {
                backbone: result.backbone.clone(),
                optimizer: result.optimizer.clone(),
                problem,
            };
            if !result.accuracy.is_finite() {
                return Err(bad(format!(
                    "accuracy {} is not a finite number",
                    result.accuracy
                )));
            }
            if let Some(grid) = result.grid {
                if usize::from(grid.lr) >= GRID_POINTS
                    || usize::from(grid.weight_decay) >= GRID_POINTS
                {
                    return Err(bad(format!(
                        "grid position lr={}, weight_decay={} is off the grid; indices run 0 to {}",
                        grid.lr,
                        grid.weight_decay,
                        GRID_POINTS - 1
                    )));
                }
            }
            if !self.backbones.contains(&result.backbone) {
                return Err(bad("the backbone is not in the table's columns".into()));
            }
            if !self.optimizers.contains(&result.optimizer) {
                return Err(bad("the optimizer is not in the table's rows".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExperimentRecord, Store, StoreError, TrialRecord, TrialStatus};

    fn table(experiment: &str) -> ImportedTable {
        let result = |backbone: &str, optimizer: &str, accuracy, grid| ImportedResult {
            backbone: backbone.into(),
            optimizer: optimizer.into(),
            accuracy,
            grid,
        };
        ImportedTable {
            experiment: experiment.into(),
            source: "table1.tsv".into(),
            grid_source: None,
            gamma: Some(3.0),
            backbones: vec!["R-50".into(), "DeiT-S".into()],
            optimizers: vec!["SGD-M".into(), "AdamW".into()],
            results: vec![
                result(
                    "R-50",
                    "SGD-M",
                    78.76,
                    Some(GridPos {
                        lr: 2,
                        weight_decay: 1,
                    }),
                ),
                result("R-50", "AdamW", 75.56, None),
                result("DeiT-S", "AdamW", 72.15, None),
            ],
            imported_unix_s: 1_700_000_000,
        }
    }

    fn trial(experiment: &str) -> TrialRecord {
        TrialRecord {
            params: Default::default(),
            status: TrialStatus::Done,
            final_accuracy: Some(50.0),
            created_unix_s: 1,
            updated_unix_s: 1,
            ..TrialRecord::new(experiment, "t1", "resnet18", "sgd_m")
        }
    }

    #[test]
    fn imported_tables_survive_reopening_and_stay_apart_from_trials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            store.put_imported(&table("paper")).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.imported("paper").unwrap(), Some(table("paper")));
        assert_eq!(store.imported("other").unwrap(), None);
        // Listed as an experiment, marked as imported in its record, and
        // with no trial for any trial query to pick up.
        let record = store.experiment("paper").unwrap().unwrap();
        assert!(record.spec_yaml.contains("imported from table1.tsv"));
        assert!(store.trials("paper").unwrap().is_empty());
        assert!(store.best_per_pair("paper").unwrap().is_empty());
        // Deleting the experiment deletes the table.
        assert!(store.delete_experiment("paper").unwrap());
        assert_eq!(store.imported("paper").unwrap(), None);
    }

    #[test]
    fn reimporting_replaces_the_table_and_keeps_the_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_imported(&table("paper")).unwrap();
        let created = store.experiment("paper").unwrap().unwrap().created_unix_s;
        let mut smaller = table("paper");
        smaller.results.truncate(1);
        smaller.imported_unix_s += 10;
        store.put_imported(&smaller).unwrap();
        assert_eq!(store.imported("paper").unwrap().unwrap().results.len(), 1);
        assert_eq!(
            store.experiment("paper").unwrap().unwrap().created_unix_s,
            created
        );
    }

    #[test]
    fn trained_and_imported_experiments_never_share_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_trial(&trial("trained")).unwrap();
        let err = store.put_imported(&table("trained")).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Import(ImportError::OverTrained { trials: 1, .. })
            ),
            "{err}"
        );
        assert_eq!(store.imported("trained").unwrap(), None);

        store.put_imported(&table("paper")).unwrap();
        let err = store
            .put_experiment(&ExperimentRecord {
                name: "paper".into(),
                spec_yaml: "name: paper\n".into(),
                created_unix_s: 1,
                updated_unix_s: 1,
                base_dir: None,
            })
            .unwrap_err();
        assert!(
            matches!(err, StoreError::ExperimentIsImported { .. }),
            "{err}"
        );
        let err = store.put_trial(&trial("paper")).unwrap_err();
        assert!(
            matches!(err, StoreError::ExperimentIsImported { .. }),
            "{err}"
        );
    }

    #[test]
    fn results_that_cannot_be_analysed_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut nan = table("paper");
        nan.results[0].accuracy = f64::NAN;
        let mut off_grid = table("paper");
        off_grid.results[0].grid = Some(GridPos {
            lr: 5,
            weight_decay: 0,
        });
        let mut unknown = table("paper");
        unknown.results[0].backbone = "VGG-13".into();
        for (bad, expected) in [
            (nan, "accuracy NaN is not a finite number"),
            (off_grid, "off the grid; indices run 0 to 4"),
            (unknown, "not in the table's columns"),
        ] {
            let err = store.put_imported(&bad).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        assert_eq!(store.imported("paper").unwrap(), None);
        assert!(store.experiments().unwrap().is_empty());
    }
}

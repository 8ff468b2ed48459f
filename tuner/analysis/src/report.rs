//! The report of an experiment: best config per pair and its 5 x 5 grid,
//! with the cells `grid_extension` tried past the grid's ends.

use std::fmt::Write as _;
use std::path::Path;

use bocb_search_spaces::Catalog;
use bocb_spec::experiment::ExperimentSpec;
use bocb_spec::{fmt_mib, fmt_value, ExtendedPos, TORCHSCRIPT_PREFIX};
use bocb_store::{
    stored_spec, GridCell, PairBest, Store, StoredSpecError, TrialRecord, TrialStatus, GRID_POINTS,
};
use serde::Serialize;

/// One pair: its grids' values, its best config and every cell.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub backbone: String,
    pub optimizer: String,
    pub lr_values: Vec<f64>,
    pub weight_decay_values: Vec<f64>,
    pub best: Option<PairBest>,
    /// `[lr][weight_decay]`.
    pub grid: Vec<Vec<CellReport>>,
    /// Stage-1 cells past the grid's ends (`grid_extension`), by position.
    pub beyond_grid: Vec<BeyondCell>,
}

/// A stage-1 config past the grid's ends and its trials.
#[derive(Debug, Clone, Serialize)]
pub struct BeyondCell {
    pub lr: f64,
    pub weight_decay: f64,
    pub position: ExtendedPos,
    #[serde(flatten)]
    pub cell: CellReport,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CellReport {
    pub mean_accuracy: Option<f64>,
    pub done: usize,
    pub diverged: usize,
    pub stopped: usize,
    pub failed: usize,
}

impl From<GridCell> for CellReport {
    fn from(c: GridCell) -> Self {
        CellReport {
            mean_accuracy: c.mean_accuracy,
            done: c.done,
            diverged: c.diverged,
            stopped: c.stopped,
            failed: c.failed,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrialCounts {
    pub done: usize,
    pub diverged: usize,
    pub stopped: usize,
    pub failed: usize,
    pub unfinished: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentReport {
    pub experiment: String,
    pub settings: String,
    pub trials: TrialCounts,
    pub pairs: Vec<PairReport>,
}

/// Builds the report of `name` from the store.
pub fn build(
    store: &Store,
    catalog: &Catalog,
    name: &str,
) -> Result<Option<ExperimentReport>, StoredSpecError> {
    let Some(record) = store.experiment(name)? else {
        return Ok(None);
    };
    // Nothing here needs the epochs.
    let trials: Vec<TrialRecord> = store
        .trial_summaries(name)?
        .iter()
        .map(|s| s.trial.clone())
        .collect();
    let best = store.best_per_pair(name)?;
    let spec = stored_spec(store, &record)?;
    let catalog = &match (&spec, &record.base_dir) {
        (Some(spec), Some(base)) => catalog_with_torchscript_spaces(catalog, spec, base),
        _ => catalog.clone(),
    };
    let mut pairs = Vec::new();
    for (backbone, optimizer) in pair_order(spec.as_ref(), &trials) {
        let Ok(space) = catalog.optimizer(&optimizer) else {
            continue;
        };
        let space = match &spec {
            Some(spec) => spec.pair_space(&backbone, space),
            None => space.clone(),
        };
        let cells = bocb_store::grid_of(&trials, &backbone, &optimizer, 1);
        let beyond_grid = beyond_cells(&trials, &backbone, &optimizer, &space);
        pairs.push(PairReport {
            beyond_grid,
            lr_values: space.lr.values().to_vec(),
            weight_decay_values: space.weight_decay.values().to_vec(),
            best: best
                .iter()
                .find(|b| b.backbone == backbone && b.optimizer == optimizer)
                .cloned(),
            grid: cells
                .iter()
                .map(|row| row.iter().map(|&c| c.into()).collect())
                .collect(),
            backbone,
            optimizer,
        });
    }
    let mut counts = TrialCounts::default();
    for t in &trials {
        match t.status {
            TrialStatus::Done => counts.done += 1,
            TrialStatus::Diverged => counts.diverged += 1,
            TrialStatus::Stopped => counts.stopped += 1,
            TrialStatus::Failed => counts.failed += 1,
            TrialStatus::Queued | TrialStatus::Running => counts.unfinished += 1,
        }
    }
    Ok(Some(ExperimentReport {
        experiment: name.to_string(),
        settings: spec
            .as_ref()
            .map(ExperimentSpec::training_settings)
            .unwrap_or_default(),
        trials: counts,
        pairs,
    }))
}

/// The pair's stage-1 configs past its grids' ends, each with the same
/// counts as a grid cell, in lr then weight-decay order.
fn beyond_cells(
    trials: &[TrialRecord],
    backbone: &str,
    optimizer: &str,
    space: &bocb_search_spaces::OptimizerSpace,
) -> Vec<BeyondCell> {
    let mut cells: Vec<BeyondCell> = Vec::new();
    let mut sums: Vec<f64> = Vec::new();
    for t in trials {
        if t.backbone != backbone || t.optimizer != optimizer || t.stage != 1 || t.grid.is_some() {
            continue;
        }
        let Some(position) = ExtendedPos::of(space, &t.params).filter(|p| p.beyond()) else {
            continue;
        };
        let k = match cells.iter().position(|c| c.position == position) {
            Some(k) => k,
            None => {
                cells.push(BeyondCell {
                    lr: t.params["lr"],
                    weight_decay: t.params["weight_decay"],
                    position,
                    cell: GridCell::default().into(),
                });
                sums.push(0.0);
                cells.len() - 1
            }
        };
        let cell = &mut cells[k].cell;
        match (t.status, t.final_accuracy) {
            (TrialStatus::Done, Some(acc)) => {
                cell.done += 1;
                sums[k] += acc;
                cell.mean_accuracy = Some(sums[k] / cell.done as f64);
            }
            (TrialStatus::Diverged, _) => cell.diverged += 1,
            (TrialStatus::Stopped, _) => cell.stopped += 1,
            (TrialStatus::Failed, _) => cell.failed += 1,
            _ => {}
        }
    }
    cells.sort_by_key(|c| (c.position.lr, c.position.weight_decay));
    cells
}

/// Pairs in the experiment file's order (when it lists names), then any
/// others found in the history.
fn pair_order(spec: Option<&ExperimentSpec>, trials: &[TrialRecord]) -> Vec<(String, String)> {
    let listed = spec.and_then(|s| {
        // Fine-tuned backbones are named by their pre-training optimizer
        // too (`transfer`): the trials give them.
        if s.transfer_source().is_some() {
            return None;
        }
        let backbones = s.backbones.listed()?.iter().map(|b| s.with_preset(b));
        let optimizers = s.optimizers.listed()?.to_vec();
        Some(
            backbones
                .flat_map(|b| optimizers.iter().map(move |o| (b.clone(), o.clone())))
                .collect::<Vec<_>>(),
        )
    });
    let mut pairs = listed.unwrap_or_default();
    for t in trials {
        let pair = (t.backbone.clone(), t.optimizer.clone());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    pairs
}

fn fmt_cell(cell: &CellReport) -> String {
    match (cell.mean_accuracy, cell.diverged, cell.failed) {
        (Some(acc), _, _) => format!("{acc:.2}"),
        (None, d, _) if d > 0 => "div".into(),
        (None, _, f) if f > 0 => "fail".into(),
        _ if cell.stopped > 0 => "stop".into(),
        _ => "-".into(),
    }
}

/// The report as text tables.
pub fn render_table(report: &ExperimentReport) -> String {
    let mut out = String::new();
    let t = &report.trials;
    let _ = writeln!(
        out,
        "Experiment {}: {} pairs; trials: {} done, {} diverged, {} stopped early, {} failed, {} unfinished",
        report.experiment,
        report.pairs.len(),
        t.done,
        t.diverged,
        t.stopped,
        t.failed,
        t.unfinished
    );
    if !report.settings.is_empty() {
        let _ = writeln!(out, "Settings: {}", report.settings);
    }
    let _ = writeln!(
        out,
        "\nBest config per pair (top-1 on the test split, mean over seeds; peak memory and optimizer state, the largest of its seeds)"
    );
    let name_width = report
        .pairs
        .iter()
        .map(|p| p.backbone.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<10}  {:>8}  {:>12}  {:>16}  {:>5}  {:>8}  {:>9}",
        "backbone",
        "optimizer",
        "lr",
        "weight_decay",
        "top-1 (%)",
        "seeds",
        "peak MiB",
        "state MiB"
    );
    for p in &report.pairs {
        match &p.best {
            Some(b) => {
                let past = best_beyond(p)
                    .map(|c| format!("  past the grid: {}", c.position.describe()))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:<name_width$}  {:<10}  {:>8}  {:>12}  {:>16}  {:>5}  {:>8}  {:>9}{past}",
                    p.backbone,
                    p.optimizer,
                    fmt_value(b.params["lr"]),
                    fmt_value(b.params["weight_decay"]),
                    format!("{:.2} ± {:.2}", b.mean_accuracy, b.std_accuracy),
                    b.seeds,
                    fmt_mib(b.peak_memory_bytes),
                    fmt_mib(b.optimizer_state_bytes)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<name_width$}  {:<10}  no finished trial",
                    p.backbone, p.optimizer
                );
            }
        }
    }
    for p in &report.pairs {
        let _ = writeln!(
            out,
            "\n{} × {}: top-1 (%) by lr (rows) and weight_decay (columns); * marks the best",
            p.backbone, p.optimizer
        );
        let accuracies: Vec<f64> = p
            .grid
            .iter()
            .flatten()
            .filter_map(|c| c.mean_accuracy)
            .collect();
        let _ = write!(out, "{:>10}", "lr \\ wd");
        for wd in &p.weight_decay_values {
            let _ = write!(out, " {:>9}", fmt_value(*wd));
        }
        out.push('\n');
        for (i, row) in p.grid.iter().enumerate() {
            let _ = write!(out, "{:>10}", fmt_value(p.lr_values[i]));
            for (j, cell) in row.iter().enumerate() {
                let is_best =
                    p.best.as_ref().and_then(|b| b.grid).is_some_and(|g| {
                        (usize::from(g.lr), usize::from(g.weight_decay)) == (i, j)
                    });
                let mark = if is_best { "*" } else { "" };
                let _ = write!(out, " {:>9}", format!("{mark}{}", fmt_cell(cell)));
            }
            out.push('\n');
        }
        if let (Some(lo), Some(hi)) = (
            accuracies.iter().copied().reduce(f64::min),
            accuracies.iter().copied().reduce(f64::max),
        ) {
            let _ = writeln!(
                out,
                "{:>10} {:.2} to {:.2} over {} of {} cells",
                "range",
                lo,
                hi,
                accuracies.len(),
                GRID_POINTS * GRID_POINTS
            );
        }
        if !p.beyond_grid.is_empty() {
            let best = best_beyond(p).map(|c| c.position);
            let _ = writeln!(
                out,
                "{:>10} (grid_extension; * marks the best):",
                "past grid"
            );
            for c in &p.beyond_grid {
                let mark = if best == Some(c.position) { "*" } else { "" };
                let _ = writeln!(
                    out,
                    "{:>10} lr {} × wd {} ({}): {mark}{}",
                    "",
                    fmt_value(c.lr),
                    fmt_value(c.weight_decay),
                    c.position.describe(),
                    fmt_cell(&c.cell)
                );
            }
        }
    }
    out
}

/// The cell past the grid that holds the pair's best, if it is there.
fn best_beyond(p: &PairReport) -> Option<&BeyondCell> {
    let best = p.best.as_ref().filter(|b| b.grid.is_none())?;
    p.beyond_grid.iter().find(|c| {
        best.params.get("lr") == Some(&c.lr)
            && best.params.get("weight_decay") == Some(&c.weight_decay)
    })
}

/// `catalog` with the spaces of experiment `name`'s `torchscript:PATH`
/// optimizers, as its stored file names them (`catalog` itself for an
/// experiment the store does not hold or that has none).
pub fn experiment_catalog(
    store: &Store,
    catalog: &Catalog,
    name: &str,
) -> Result<Catalog, StoredSpecError> {
    let Some(record) = store.experiment(name)? else {
        return Ok(catalog.clone());
    };
    let spec = stored_spec(store, &record)?;
    Ok(match (&spec, &record.base_dir) {
        (Some(spec), Some(base)) => catalog_with_torchscript_spaces(catalog, spec, base),
        _ => catalog.clone(),
    })
}

/// `catalog` with the spaces of a stored experiment's `torchscript:PATH`
/// optimizers, read from its directory `base` (those that no longer read
/// are left out, as optimizers without a space are).
fn catalog_with_torchscript_spaces(
    catalog: &Catalog,
    spec: &ExperimentSpec,
    base: &Path,
) -> Catalog {
    let mut all = catalog.clone();
    for name in spec.optimizers.listed().unwrap_or_default() {
        if name.starts_with(TORCHSCRIPT_PREFIX) {
            match spec.torchscript_space(name, base) {
                Ok(space) => all.insert(space),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_accuracy_or_why_there_is_none() {
        let cell = |mean_accuracy, diverged, failed| CellReport {
            mean_accuracy,
            done: usize::from(mean_accuracy.is_some()),
            diverged,
            stopped: 0,
            failed,
        };
        assert_eq!(fmt_cell(&cell(Some(41.234), 1, 0)), "41.23");
        assert_eq!(fmt_cell(&cell(None, 1, 0)), "div");
        assert_eq!(fmt_cell(&cell(None, 0, 2)), "fail");
        assert_eq!(fmt_cell(&cell(None, 0, 0)), "-");
        let stopped = CellReport {
            stopped: 1,
            ..cell(None, 0, 0)
        };
        assert_eq!(fmt_cell(&stopped), "stop");
    }
}

//! The JSON the page's views read, built from the store's records and the
//! analyses the HTML report runs ([`crate::analysis::analyse`]), so the page
//! and the report agree on every best and every failure.
//!
//! Views read trial summaries (no epochs, [`bocb_store::TrialSummary`]),
//! and what they derive from an experiment's summaries (counts, progress,
//! the matrix) is made once per store revision ([`Store::revision`]) and
//! kept in a [`Cache`] until the experiment is written again. Epochs are
//! read only for the trial shown, or the trials of the pair shown, so
//! neither a request's time nor the service's memory grows with the epochs
//! in the store.
//!
//! [`Store::revision`]: bocb_store::Store::revision

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bocb_store::{TrialRecord, TrialStatus, TrialSummary};
use serde_json::{json, Value};
use thiserror::Error;

use crate::analysis::{self, plots, FailureRuleChoice};
use crate::export;
use crate::reads::{self, ReadError};
use crate::service::{Service, ServiceError};
use bocb_store::stored_spec;

#[derive(Debug, Error)]
pub enum UiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Errors listed in the experiment view at most (the trials view filters
/// the rest by status).
const MAX_ERRORS: usize = 100;

/// What the views derive from one experiment's trials.
pub struct Trials {
    /// Every trial's summary, in the store's trial order: the store's
    /// copy, not one more.
    pub summaries: Arc<Vec<TrialSummary>>,
    pub progress: Progress,
    /// Every hyperparameter's name, for the table's columns.
    pub params: BTreeSet<String>,
}

/// Per experiment, what was derived at which store revision.
type ByRevision<T> = Mutex<HashMap<String, (u64, Arc<T>)>>;

/// What the views derived from each experiment at its last revision.
#[derive(Default)]
pub struct Cache {
    trials: ByRevision<Trials>,
    /// The experiment view's matrix, failures and errors.
    matrices: ByRevision<Value>,
}

/// The entry of `name` in `cache` if made at `revision`, else `make()`'s,
/// made outside the lock (two requests may both make it; either is right).
fn cached<T>(
    cache: &ByRevision<T>,
    name: &str,
    revision: u64,
    make: impl FnOnce() -> Result<T, UiError>,
) -> Result<Arc<T>, UiError> {
    if let Some((made_at, value)) = cache.lock().expect("UI cache lock").get(name) {
        if *made_at == revision {
            return Ok(Arc::clone(value));
        }
    }
    let value = Arc::new(make()?);
    cache
        .lock()
        .expect("UI cache lock")
        .insert(name.to_string(), (revision, Arc::clone(&value)));
    Ok(value)
}

/// The trials of experiment `name` and what is derived from them, at the
/// store's current revision; fails for an experiment the service lacks.
fn derived_trials(service: &Service, name: &str) -> Result<Arc<Trials>, UiError> {
    // Read before the records: a write in between makes the next request
    // read them again.
    let revision = service.store.revision(name);
    cached(&service.ui_cache.trials, name, revision, || {
        service.state(name)?;
        let summaries = service
            .store
            .trial_summaries(name)
            .map_err(ServiceError::from)?;
        let progress = progress(&summaries, planned_trials(service, name)?);
        let params = summaries
            .iter()
            .flat_map(|s| s.trial.params.keys().cloned())
            .collect();
        Ok(Trials {
            summaries,
            progress,
            params,
        })
    })
}

/// Rows a trial-table page holds at most.
pub const MAX_PAGE_ROWS: usize = 500;
/// Bytes of a trial's log one request returns at most.
const MAX_LOG_CHUNK: u64 = 256 << 10;
/// Stage-1 configs per pair when the budget names none (the whole grid).
const DEFAULT_STAGE1_TRIALS: usize = 25;

fn not_found(what: String) -> UiError {
    UiError::Read(ReadError::NotFound(what))
}

fn bad_query(what: String) -> UiError {
    UiError::Read(ReadError::BadQuery(what))
}

/// A finite number as JSON, anything else as `null`.
fn number(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// What an experiment's trials say about its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub pairs: usize,
    pub best_accuracy: Option<f64>,
    /// Finished trials over the planned stage-1 trials (at most 1).
    pub fraction: f64,
    /// Seconds left at the pace of the finished trials, while any remain.
    pub eta_s: Option<f64>,
}

/// The progress of `trials` when `planned` stage-1 trials are planned
/// (`None`: unknown, then the trials in the store are the plan).
pub fn progress(summaries: &[TrialSummary], planned: Option<usize>) -> Progress {
    let trials: Vec<&TrialRecord> = summaries.iter().map(|s| &s.trial).collect();
    let pairs: BTreeSet<(&str, &str)> = trials
        .iter()
        .map(|t| (t.backbone.as_str(), t.optimizer.as_str()))
        .collect();
    let finished: Vec<&&TrialRecord> = trials.iter().filter(|t| t.status.is_final()).collect();
    let best_accuracy = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Done)
        .filter_map(|t| t.final_accuracy)
        .filter(|a| a.is_finite())
        .reduce(f64::max);
    let planned = planned.unwrap_or(trials.len()).max(trials.len());
    let fraction = if planned == 0 {
        0.0
    } else {
        (finished.len() as f64 / planned as f64).min(1.0)
    };
    let remaining = planned.saturating_sub(finished.len());
    let walls: Vec<f64> = finished.iter().filter_map(|t| t.wall_time_s).collect();
    let running = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Running)
        .count()
        .max(1);
    let eta_s = (remaining > 0 && !walls.is_empty()).then(|| {
        let mean = walls.iter().sum::<f64>() / walls.len() as f64;
        mean * remaining as f64 / running as f64
    });
    Progress {
        pairs: pairs.len(),
        best_accuracy,
        fraction,
        eta_s,
    }
}

/// Stage-1 trials the experiment's file plans, where it lists its pairs.
fn planned_trials(service: &Service, name: &str) -> Result<Option<usize>, UiError> {
    let Some(record) = service.store.experiment(name).map_err(ReadError::from)? else {
        return Ok(None);
    };
    let Some(spec) = stored_spec(&service.store, &record).map_err(ReadError::from)? else {
        return Ok(None);
    };
    let (Some(backbones), Some(optimizers)) = (spec.backbones.listed(), spec.optimizers.listed())
    else {
        return Ok(None);
    };
    let per_pair = spec.budget.trials.unwrap_or(DEFAULT_STAGE1_TRIALS);
    Ok(Some(backbones.len() * optimizers.len() * per_pair))
}

/// `GET /api/ui/experiments`: every experiment with its progress.
pub fn overview(service: &Service) -> Result<Value, UiError> {
    let mut names: BTreeSet<String> = service.lock().keys().cloned().collect();
    names.extend(
        service
            .store
            .experiments()
            .map_err(ServiceError::from)?
            .into_iter()
            .map(|e| e.name),
    );
    let mut rows = Vec::new();
    for name in names {
        let trials = derived_trials(service, &name)?;
        let status = service.status_of(&name, service.state(&name)?, &trials.summaries);
        let p = &trials.progress;
        rows.push(json!({
            "name": status.name,
            "state": status.state,
            "error": status.error,
            "trials": status.trials,
            "epochs_recorded": status.epochs_recorded,
            "pairs": p.pairs,
            "best_accuracy": p.best_accuracy,
            "progress": p.fraction,
            "eta_s": p.eta_s,
        }));
    }
    Ok(json!({ "experiments": rows }))
}

/// `GET /api/ui/experiments/NAME`: the BOCB matrix with the report's
/// failures, the settings, the workers and the errors.
pub fn experiment(service: &Service, name: &str) -> Result<Value, UiError> {
    let revision = service.store.revision(name);
    let trials = derived_trials(service, name)?;
    let status = service.status_of(name, service.state(name)?, &trials.summaries);
    let record = service.store.experiment(name).map_err(ReadError::from)?;
    let matrix = cached(&service.ui_cache.matrices, name, revision, || {
        matrix(service, name, &trials.summaries)
    })?;
    let workers: Vec<_> = service
        .queue
        .workers()
        .into_iter()
        .filter(|w| w.experiment.as_ref().is_none_or(|e| e == name))
        .collect();
    let p = &trials.progress;
    let mut view = json!({
        "status": status,
        "settings": record.map(|r| r.spec_yaml),
        "workers": workers,
        "progress": p.fraction,
        "eta_s": p.eta_s,
        "best_accuracy": p.best_accuracy,
    });
    for (key, value) in matrix.as_object().expect("the matrix is an object") {
        view[key] = value.clone();
    }
    Ok(view)
}

/// The experiment view's part derived from the store: the matrix with the
/// report's failures, and the errors.
fn matrix(service: &Service, name: &str, summaries: &[TrialSummary]) -> Result<Value, UiError> {
    let trials: Vec<&TrialRecord> = summaries.iter().map(|s| &s.trial).collect();
    let memory = reads::state_memory(&service.registries);
    let analysis = analysis::analyse(
        &service.store,
        name,
        FailureRuleChoice::Eq1,
        None,
        &memory,
        &service.registries.catalog,
    )
    .map_err(ReadError::from)?;
    // Pairs by name: the analysed bests, then every pair with trials.
    let mut backbones: Vec<String> = Vec::new();
    let mut optimizers: Vec<String> = Vec::new();
    if let Some(a) = &analysis {
        backbones.extend(a.results.backbones.iter().cloned());
        optimizers.extend(a.results.optimizers.iter().cloned());
    }
    let mut counts: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for t in trials.iter().copied() {
        if !backbones.contains(&t.backbone) {
            backbones.push(t.backbone.clone());
        }
        if !optimizers.contains(&t.optimizer) {
            optimizers.push(t.optimizer.clone());
        }
        *counts
            .entry((t.backbone.clone(), t.optimizer.clone()))
            .or_default()
            .entry(t.status.to_string())
            .or_default() += 1;
    }
    let scale = analysis
        .as_ref()
        .map(|a| plots::ColourScale::of(&a.results, &a.table1));
    let mut cells = Vec::new();
    for b in &backbones {
        for o in &optimizers {
            let result = analysis.as_ref().and_then(|a| a.results.get(b, o));
            let fails = analysis.as_ref().is_some_and(|a| a.table1.fails(b, o));
            let trials = counts.get(&(b.clone(), o.clone()));
            if result.is_none() && trials.is_none() {
                continue;
            }
            // The report's colours: its scale, and its text colour on them.
            let colours = result.zip(scale).map(|(r, scale)| {
                let fill = scale.colour(r.accuracy);
                (plots::hex(fill), plots::hex(plots::text_colour_on(fill)))
            });
            cells.push(json!({
                "backbone": b,
                "optimizer": o,
                "accuracy": result.map(|r| r.accuracy),
                "fails": fails,
                "trials": trials,
                "fill": colours.as_ref().map(|c| &c.0),
                "text": colours.as_ref().map(|c| &c.1),
            }));
        }
    }
    let with_error: Vec<&&TrialRecord> = trials.iter().filter(|t| t.error.is_some()).collect();
    // The latest errors: older ones are a status filter away in the trials view.
    let mut errors: Vec<Value> = with_error
        .iter()
        .rev()
        .take(MAX_ERRORS)
        .map(|t| {
            json!({ "trial": t.id, "backbone": t.backbone, "optimizer": t.optimizer,
                    "status": t.status, "error": t.error })
        })
        .collect();
    errors.reverse();
    Ok(json!({
        "failure_rule": analysis.as_ref().map(|a| a.failure_rule_text.clone()),
        "backbones": backbones,
        "optimizers": optimizers,
        "cells": cells,
        "errors": errors,
        "errors_total": with_error.len(),
    }))
}

/// A trial without its epochs, as tables and lists show it.
fn trial_row(s: &TrialSummary) -> Value {
    let t = &s.trial;
    json!({
        "id": t.id,
        "backbone": t.backbone,
        "optimizer": t.optimizer,
        "stage": t.stage,
        "seed": t.seed,
        "status": t.status,
        "grid": t.grid,
        "params": t.params,
        "accuracy": t.final_accuracy.map(number),
        "epochs": s.epochs,
        "wall_time_s": t.wall_time_s,
        "device": t.device,
        "created_unix_s": t.created_unix_s,
    })
}

/// Test accuracy per epoch, `[epoch, accuracy]`.
fn curve(t: &TrialRecord, since: usize) -> Vec<Value> {
    t.epochs
        .iter()
        .skip(since)
        .map(|e| json!([e.epoch, number(e.test_accuracy), number(e.train_loss)]))
        .collect()
}

/// `GET /api/ui/experiments/NAME/pair?backbone=B&optimizer=O&cursor=S`:
/// the pair's grid, its trials, and the curves of the trials written at or
/// after second `cursor` (all at 0); `cursor` in the answer is the next one.
pub fn pair(
    service: &Service,
    name: &str,
    backbone: &str,
    optimizer: &str,
    cursor: u64,
) -> Result<Value, UiError> {
    let derived = derived_trials(service, name)?;
    let trials: Vec<&TrialSummary> = derived
        .summaries
        .iter()
        .filter(|s| s.trial.backbone == backbone && s.trial.optimizer == optimizer)
        .collect();
    if trials.is_empty() {
        return Err(not_found(format!(
            "experiment `{name}` has no trial of backbone `{backbone}` with optimizer `{optimizer}`"
        )));
    }
    let records: Vec<TrialRecord> = trials.iter().map(|s| s.trial.clone()).collect();
    let grid = bocb_store::grid_of(&records, backbone, optimizer, 1);
    let grid: Vec<Vec<Value>> = grid
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| {
                    json!({ "accuracy": c.mean_accuracy, "done": c.done, "diverged": c.diverged,
                            "stopped": c.stopped, "failed": c.failed })
                })
                .collect()
        })
        .collect();
    // Epochs only of this pair's trials written since the cursor.
    let mut curves = Vec::new();
    for s in records.iter().filter(|t| t.updated_unix_s >= cursor) {
        let Some(t) = service.store.trial(name, &s.id).map_err(ReadError::from)? else {
            continue;
        };
        curves.push(json!({ "id": t.id, "status": t.status, "points": curve(&t, 0) }));
    }
    let next = records.iter().map(|t| t.updated_unix_s).max().unwrap_or(0);
    Ok(json!({
        "grid": grid,
        "trials": trials.iter().map(|s| trial_row(s)).collect::<Vec<_>>(),
        "curves": curves,
        "cursor": next,
    }))
}

/// What a trial-table page asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TableQuery {
    pub page: usize,
    pub size: usize,
    /// A column: `id`, `backbone`, `optimizer`, `status`, `accuracy`,
    /// `epochs`, `stage`, `seed`, `created`, or `param:NAME`.
    pub sort: String,
    pub descending: bool,
    /// Only trials whose id, backbone, optimizer or status contains it.
    pub filter: String,
    pub status: Option<String>,
}

impl TableQuery {
    pub fn from_query(query: &str) -> Result<TableQuery, UiError> {
        let mut q = TableQuery {
            page: 0,
            size: 50,
            sort: "created".to_string(),
            descending: false,
            filter: String::new(),
            status: None,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let whole = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| bad_query(format!("`{key}={v}`: give a whole number")))
            };
            match key.as_ref() {
                "page" => q.page = whole(&value)?,
                "size" => q.size = whole(&value)?.clamp(1, MAX_PAGE_ROWS),
                "sort" => q.sort = value.into_owned(),
                "desc" => q.descending = value == "1" || value == "true",
                "filter" => q.filter = value.to_lowercase(),
                "status" if !value.is_empty() => q.status = Some(value.into_owned()),
                "status" => {}
                other => {
                    return Err(bad_query(format!(
                        "unknown parameter `{other}`; valid: page, size, sort, desc, filter, status"
                    )))
                }
            }
        }
        Ok(q)
    }
}

/// One page of `trials` as `query` sorts and filters them, with `params`,
/// every hyperparameter's name, for the columns.
pub fn table_page(trials: &[TrialSummary], params: &BTreeSet<String>, query: &TableQuery) -> Value {
    let rows = trials
        .iter()
        .filter(|s| {
            let t = &s.trial;
            query
                .status
                .as_ref()
                .is_none_or(|s| t.status.to_string() == *s)
        })
        .filter(|s| {
            let t = &s.trial;
            query.filter.is_empty()
                || [&t.id, &t.backbone, &t.optimizer]
                    .iter()
                    .any(|s| s.to_lowercase().contains(&query.filter))
        });
    // Each row's key once, not at every comparison.
    let key = |s: &TrialSummary| -> (Option<f64>, String) {
        let t = &s.trial;
        let num = |x: Option<f64>| (x.filter(|x| x.is_finite()), String::new());
        match query.sort.as_str() {
            "accuracy" => num(t.final_accuracy),
            "epochs" => num(Some(s.epochs as f64)),
            "stage" => num(Some(f64::from(t.stage))),
            "seed" => num(Some(t.seed as f64)),
            "created" => num(Some(t.created_unix_s as f64)),
            "wall" => num(t.wall_time_s),
            "id" => (None, t.id.clone()),
            "backbone" => (None, t.backbone.clone()),
            "optimizer" => (None, t.optimizer.clone()),
            "status" => (None, t.status.to_string()),
            other => num(other
                .strip_prefix("param:")
                .and_then(|p| t.params.get(p).copied())),
        }
    };
    let mut rows: Vec<((Option<f64>, String), &TrialSummary)> = rows.map(|s| (key(s), s)).collect();
    rows.sort_by(|(ka, a), (kb, b)| {
        // Missing numbers go last whichever the direction.
        let order = match (ka.0, kb.0) {
            (Some(x), Some(y)) => {
                let o = x.total_cmp(&y);
                if query.descending {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => {
                let o = ka.1.cmp(&kb.1);
                if query.descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        order.then_with(|| a.trial.id.cmp(&b.trial.id))
    });
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(query.page * query.size)
        .take(query.size)
        .map(|(_, s)| trial_row(s))
        .collect();
    json!({ "total": total, "page": query.page, "size": query.size, "params": params, "rows": page })
}

/// `GET /api/ui/experiments/NAME/trials?QUERY`.
pub fn trials(service: &Service, name: &str, query: &str) -> Result<Value, UiError> {
    let query = TableQuery::from_query(query)?;
    let trials = derived_trials(service, name)?;
    Ok(table_page(&trials.summaries, &trials.params, &query))
}

/// `GET /api/ui/experiments/NAME/trials/ID?since=N`: the trial with its
/// epochs after the first `since`.
pub fn trial(service: &Service, name: &str, id: &str, since: usize) -> Result<Value, UiError> {
    let t = service
        .store
        .trial(name, id)
        .map_err(ReadError::from)?
        .ok_or_else(|| {
            not_found(format!(
                "no trial `{id}` in experiment `{name}`; the trials view lists them"
            ))
        })?;
    // A person copies the config this trial trained with, not the pair's best.
    let catalog =
        analysis::report::experiment_catalog(&service.store, &service.registries.catalog, name)
            .map_err(ReadError::from)?;
    let timm_args = export::trial_config(&service.store, &service.registries, name, &t)
        .map(|c| export::render_timm_args(&[c], &catalog))
        .unwrap_or_else(|e| format!("# cannot export: {e}\n"));
    let mut row = trial_row(&TrialSummary::of(&t));
    row["error"] = json!(t.error);
    row["timm_args"] = json!(timm_args);
    row["recipe"] = json!(t.recipe.as_ref().map(|r| r.name.clone()));
    row["since"] = json!(since.min(t.epochs.len()));
    row["curve"] = json!(curve(&t, since));
    Ok(row)
}

/// `GET /api/ui/trials/ID/log?from=N`: the log's bytes from `from` on (at
/// most `MAX_LOG_CHUNK`), and where the next read starts.
pub fn log(service: &Service, id: &str, from: u64) -> Result<Value, UiError> {
    use std::io::{Read, Seek, SeekFrom};
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad_query(format!("`{id}` is not a trial id")));
    }
    let path = service.queue.log_path(id);
    let Ok(mut file) = std::fs::File::open(&path) else {
        return Ok(json!({ "text": "", "next": 0 }));
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = from.min(length);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(from))
        .and_then(|_| file.take(MAX_LOG_CHUNK).read_to_end(&mut bytes))
        .map_err(|e| bad_query(format!("cannot read the log of `{id}`: {e}")))?;
    // Cut at the last whole character; the rest comes with the next read.
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text.to_string(),
        Err(e) => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
    };
    Ok(json!({ "text": text, "next": from + text.len() as u64 }))
}

/// `GET /api/ui/experiments/NAME/points`: every done trial's
/// hyperparameters and accuracy, for the parallel coordinates.
pub fn points(service: &Service, name: &str) -> Result<Value, UiError> {
    let trials = derived_trials(service, name)?;
    let done: Vec<&TrialRecord> = trials
        .summaries
        .iter()
        .map(|s| &s.trial)
        .filter(|t| t.status == TrialStatus::Done && t.final_accuracy.is_some_and(f64::is_finite))
        .collect();
    let params: BTreeSet<&str> = done
        .iter()
        .flat_map(|t| t.params.keys().map(String::as_str))
        .collect();
    let rows: Vec<Value> = done
        .iter()
        .map(|t| {
            json!({ "id": t.id, "backbone": t.backbone, "optimizer": t.optimizer,
                    "params": t.params, "accuracy": t.final_accuracy })
        })
        .collect();
    Ok(json!({ "params": params, "points": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_store::EpochMetrics;

    fn record(id: &str, status: TrialStatus, acc: Option<f64>, lr: f64) -> TrialRecord {
        TrialRecord {
            status,
            final_accuracy: acc,
            wall_time_s: status.is_final().then_some(10.0),
            params: BTreeMap::from([("lr".to_string(), lr)]),
            ..TrialRecord::new("e", id, "resnet18_cifar", "adamw")
        }
    }

    fn trial(id: &str, status: TrialStatus, acc: Option<f64>, lr: f64) -> TrialSummary {
        TrialSummary::of(&record(id, status, acc, lr))
    }

    #[test]
    fn progress_counts_finished_trials_against_the_plan() {
        let trials = vec![
            trial("a", TrialStatus::Done, Some(50.0), 0.1),
            trial("b", TrialStatus::Diverged, None, 1.0),
            trial("c", TrialStatus::Running, None, 0.01),
        ];
        let p = progress(&trials, Some(10));
        assert_eq!(p.pairs, 1);
        assert_eq!(p.best_accuracy, Some(50.0));
        assert!((p.fraction - 0.2).abs() < 1e-12);
        // 8 left at 10 s each, one running.
        assert_eq!(p.eta_s, Some(80.0));
        assert_eq!(progress(&trials[..2], Some(2)).eta_s, None);
    }

    #[test]
    fn a_table_page_sorts_filters_and_pages_on_the_server() {
        let trials = vec![
            trial("a1", TrialStatus::Done, Some(50.0), 0.1),
            trial("b2", TrialStatus::Done, Some(70.0), 0.01),
            trial("c3", TrialStatus::Failed, None, 1.0),
        ];
        let params = BTreeSet::from(["lr".to_string()]);
        let table_page = |trials: &[TrialSummary], q: &TableQuery| table_page(trials, &params, q);
        let q = TableQuery::from_query("sort=accuracy&desc=1&size=2").unwrap();
        let page = table_page(&trials, &q);
        assert_eq!(page["total"], 3);
        let ids: Vec<&str> = page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b2", "a1"]);
        assert_eq!(page["params"], json!(["lr"]));
        let q = TableQuery::from_query("sort=param:lr&page=1&size=2").unwrap();
        assert_eq!(table_page(&trials, &q)["rows"][0]["id"], "c3");
        let q = TableQuery::from_query("status=failed").unwrap();
        assert_eq!(table_page(&trials, &q)["total"], 1);
        let q = TableQuery::from_query("filter=B2").unwrap();
        assert_eq!(table_page(&trials, &q)["rows"][0]["id"], "b2");
        assert!(TableQuery::from_query("pgae=1").is_err());
        assert!(TableQuery::from_query("page=x").is_err());
    }

    #[test]
    fn a_curve_starts_after_the_cursor() {
        let epoch = |n: u32| EpochMetrics {
            epoch: n,
            train_loss: 1.0,
            test_loss: f64::NAN,
            test_accuracy: 10.0 * f64::from(n),
            lr: 0.1,
            images_per_sec: 1.0,
            wall_s: 1.0,
            ema_test_accuracy: None,
        };
        let t = TrialRecord {
            epochs: vec![epoch(1), epoch(2), epoch(3)],
            ..record("a", TrialStatus::Running, None, 0.1)
        };
        assert_eq!(curve(&t, 2), vec![json!([3, 30.0, 1.0])]);
        assert!(curve(&t, 5).is_empty());
    }
}

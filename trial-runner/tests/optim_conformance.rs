//! Every optimizer against its reference implementation: the recorded cases
//! in `tests/optim_cases/` (made by `scripts/record_optim_cases.py` with
//! torch.optim, timm.optim and pytorch_optimizer) replayed through bocb.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_search_spaces::Catalog;
use bocb_trial_runner::optim::replay::{max_relative_error, replay, ReplayCase};
use bocb_trial_runner::optim::OptimizerRegistry;

const TOLERANCE: f64 = 1e-9;
const MIN_STEPS: usize = 10;
const MIN_CASES: usize = 2;

fn cases() -> Vec<(String, ReplayCase)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/optim_cases");
    let mut cases: Vec<(String, ReplayCase)> = std::fs::read_dir(&dir)
        .expect("tests/optim_cases exists")
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let case =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), case)
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

#[test]
fn every_recorded_case_matches_its_reference() {
    let registry = OptimizerRegistry::builtin();
    let mut failures = Vec::new();
    for (file, case) in cases() {
        let want = case
            .trajectory
            .as_ref()
            .expect("recorded cases hold a trajectory");
        assert!(want.len() >= MIN_STEPS, "{file}: only {} steps", want.len());
        match replay(&case, &registry) {
            Ok(out) => {
                let error = max_relative_error(&out.trajectory, want);
                if error.is_nan() || error > TOLERANCE {
                    failures.push(format!("{file}: max relative error {error:e}"));
                }
            }
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_optimizer_has_recorded_cases() {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, case) in cases() {
        *counts.entry(case.optimizer).or_default() += 1;
    }
    let registry = OptimizerRegistry::builtin();
    for name in registry.names() {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            n >= MIN_CASES,
            "`{name}` has {n} recorded case(s), needs {MIN_CASES}"
        );
    }
}

/// `NAME-defaults.json` constructs the reference with every argument of its
/// signature written out at its default (timm's Adafactor's `lr=None`
/// included), so each one is accepted and matched by bocb.
/// The signature is the one of the reference the search space names.
#[test]
fn every_optimizer_accepts_its_references_defaults() {
    let with_defaults: Vec<ReplayCase> = cases()
        .into_iter()
        .filter(|(file, _)| file.ends_with("-defaults.json"))
        .map(|(_, case)| case)
        .collect();
    let catalog = Catalog::builtin();
    for name in OptimizerRegistry::builtin().names() {
        let case = with_defaults
            .iter()
            .find(|c| c.optimizer == name)
            .unwrap_or_else(|| {
                panic!("`{name}` has no recorded NAME-defaults.json case (scripts/record_optim_cases.py --defaults {name})")
            });
        let reference = catalog.optimizer(name).unwrap().reference.clone();
        let reference = reference.unwrap_or_else(|| panic!("{name}.yaml names no `reference`"));
        let recorded = case.reference.as_deref().unwrap_or_default();
        assert!(
            recorded.starts_with(&format!("{reference} (")),
            "{name}: the defaults case was recorded from {recorded}, the search space names {reference}"
        );
    }
}

/// The layer-decay cases (timm's param groups with their `lr_scale`s) are
/// matched only because each group steps at its own lr: the same case with
/// every tensor at the full lr is far off.
#[test]
fn layer_decay_cases_step_each_group_at_its_scaled_lr() {
    let registry = OptimizerRegistry::builtin();
    let layered: Vec<(String, ReplayCase)> = cases()
        .into_iter()
        .filter(|(file, _)| file.ends_with("-layer_decay.json"))
        .collect();
    let names: Vec<&str> = layered.iter().map(|(_, c)| c.optimizer.as_str()).collect();
    assert_eq!(names, ["adamw", "lamb", "lion", "sgd_m"]);
    for (file, mut case) in layered {
        let scales = case.lr_scales.clone().expect("a layer-decay case");
        assert!(scales.iter().any(|&s| s < 1.0), "{file}");
        let want = case.trajectory.clone().unwrap();
        let error = max_relative_error(&replay(&case, &registry).unwrap().trajectory, &want);
        assert!(error <= TOLERANCE, "{file}: {error:e}");
        case.lr_scales = None;
        let error = max_relative_error(&replay(&case, &registry).unwrap().trajectory, &want);
        assert!(
            error > 1e-3,
            "{file}: full lr everywhere matched too ({error:e})"
        );
    }
}

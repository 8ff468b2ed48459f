//! Replays a recorded optimizer case: given initial parameters and the
//! gradient of every step, the parameters after every step, in float64.
//!
//! This is how bocb's optimizers are checked against their reference
//! implementations (`scripts/record_optim_cases.py` records the cases), and
//! how a user checks their own implementation against bocb's
//! (`bocb optim replay --input CASE.json --output OUT.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Kind, Tensor};

use super::{HessianNoise, Hparams, OptimError, OptimizerRegistry, ParamSet, ScaledParams};

/// One recorded case. `grads[step][tensor]` and `params0[tensor]` are
/// flattened row-major tensors of `shapes[tensor]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayCase {
    /// Registry name (`sgd_m`, `adamw`, ...; torch's `sgd` is accepted).
    pub optimizer: String,
    /// Constructor arguments by reference name. Numbers, booleans, `null`
    /// (the default), for `betas` a list (`beta1`, `beta2`[, `beta3`]) and,
    /// for `hessian_distribution`, a name (`gaussian` = 0, `rademacher` = 1).
    pub hparams: BTreeMap<String, Value>,
    pub shapes: Vec<Vec<i64>>,
    pub params0: Vec<Vec<f64>>,
    pub grads: Vec<Vec<Vec<f64>>>,
    /// Diagonal Hessian estimates for optimizers that use them (Sophia).
    #[serde(default)]
    pub hessians: Option<HessianSchedule>,
    /// Each tensor's lr scale (layer-wise lr decay: its param group's
    /// `lr_scale`, the group's lr being the scheduled one times it); all 1
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_scales: Option<Vec<f64>>,
    /// Which tensors are in a param group without weight decay (biases,
    /// norms); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_weight_decay: Option<Vec<bool>>,
    /// The reference's parameters after each step, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectory: Option<Vec<Vec<Vec<f64>>>>,
    /// Free-form provenance (which implementation and version recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// `values[k]` (per tensor, flattened) is handed to the optimizer just
/// before 0-based step `steps[k]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HessianSchedule {
    pub steps: Vec<usize>,
    pub values: Vec<Vec<Vec<f64>>>,
}

/// The replay's result: parameters after every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayOutput {
    pub trajectory: Vec<Vec<Vec<f64>>>,
}

/// Reference-style hyperparameters (JSON values) as bocb's numeric ones.
pub fn hparams_from_json(raw: &BTreeMap<String, Value>) -> Result<Hparams, OptimError> {
    let mut hparams = Hparams::new();
    for (name, value) in raw {
        match value {
            Value::Null => {}
            Value::Bool(b) => {
                hparams.insert(name.clone(), f64::from(u8::from(*b)));
            }
            Value::Number(n) => {
                let v = n.as_f64().ok_or_else(|| {
                    OptimError::Replay(format!("`{name}` = {n} is not a finite number"))
                })?;
                hparams.insert(name.clone(), v);
            }
            // SophiaH's choice of noise, by its position in the list.
            Value::String(s) if name == "hessian_distribution" => {
                let code = HessianNoise::NAMES
                    .iter()
                    .position(|n| n == s)
                    .ok_or_else(|| {
                        OptimError::Replay(format!(
                            "`{name}` = {s:?} is not one of {:?}",
                            HessianNoise::NAMES
                        ))
                    })?;
                hparams.insert(name.clone(), code as f64);
            }
            Value::Array(items) if name == "betas" && (2..=3).contains(&items.len()) => {
                for (i, item) in items.iter().enumerate() {
                    let v = item.as_f64().ok_or_else(|| {
                        OptimError::Replay(format!("`betas[{i}]` = {item} is not a number"))
                    })?;
                    hparams.insert(format!("beta{}", i + 1), v);
                }
            }
            other => {
                return Err(OptimError::Replay(format!(
                    "`{name}` = {other} is not a number, boolean or null (only `betas` may be a list of 2 or 3 numbers)"
                )))
            }
        }
    }
    Ok(hparams)
}

/// Runs `case` through bocb's optimizer, in float64 on the CPU.
pub fn replay(case: &ReplayCase, registry: &OptimizerRegistry) -> Result<ReplayOutput, OptimError> {
    check_layout(case)?;
    let hparams = hparams_from_json(&case.hparams)?;
    let params: Vec<Tensor> = case
        .shapes
        .iter()
        .zip(&case.params0)
        .map(|(shape, values)| {
            Tensor::from_slice(values)
                .to_kind(Kind::Double)
                .reshape(shape.as_slice())
                .set_requires_grad(true)
        })
        .collect();
    let mut optimizer = registry.build(&case.optimizer, &hparams, param_set(case, &params))?;
    // A case without `lr` (the reference's `lr=None`) replays only through
    // an optimizer that then sets its own step size.
    let lr = match (hparams.get("lr"), optimizer.external_lr()) {
        (Some(&lr), _) => lr,
        (None, false) => f64::NAN,
        (None, true) => {
            return Err(OptimError::Replay(format!(
                "`hparams` has no `lr`, and `{}` needs one here",
                case.optimizer
            )))
        }
    };
    let mut trajectory = Vec::with_capacity(case.grads.len());
    for (step, grads) in case.grads.iter().enumerate() {
        for (param, grad) in params.iter().zip(grads) {
            set_grad(param, grad);
        }
        if let Some(schedule) = &case.hessians {
            if let Some(k) = schedule.steps.iter().position(|&s| s == step) {
                let estimate: Vec<Tensor> = schedule.values[k]
                    .iter()
                    .zip(&params)
                    .map(|(values, p)| Tensor::from_slice(values).reshape(p.size()))
                    .collect();
                optimizer.set_hessian(&estimate);
            }
        }
        optimizer.try_step(lr)?;
        trajectory.push(params.iter().map(flat_values).collect());
    }
    Ok(ReplayOutput { trajectory })
}

/// The case's tensors in their param groups: by lr scale, then with or
/// without weight decay.
fn param_set(case: &ReplayCase, params: &[Tensor]) -> ParamSet {
    let mut set = ParamSet::default();
    let mut lower: BTreeMap<u64, ScaledParams> = BTreeMap::new();
    for (i, param) in params.iter().enumerate() {
        let lr_scale = case.lr_scales.as_ref().map_or(1.0, |s| s[i]);
        let no_decay = case.no_weight_decay.as_ref().is_some_and(|n| n[i]);
        let (decay, exempt) = if lr_scale == 1.0 {
            (&mut set.decay, &mut set.no_decay)
        } else {
            let layer = lower.entry(lr_scale.to_bits()).or_insert(ScaledParams {
                lr_scale,
                decay: Vec::new(),
                no_decay: Vec::new(),
            });
            (&mut layer.decay, &mut layer.no_decay)
        };
        match no_decay {
            true => exempt.push(param.shallow_clone()),
            false => decay.push(param.shallow_clone()),
        }
    }
    set.lower_layers = lower.into_values().collect();
    set
}

/// Sets `param.grad` to exactly `values`, whatever it held.
fn set_grad(param: &Tensor, values: &[f64]) {
    let mut param = param.shallow_clone();
    param.zero_grad();
    // d/dp <p, g> = g, accumulated onto a zeroed (or absent) gradient.
    let direction = Tensor::from_slice(values).reshape(param.size());
    (&param * direction).sum(Kind::Double).backward();
}

fn flat_values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().flatten(0, -1)).expect("float64 parameters")
}

fn check_layout(case: &ReplayCase) -> Result<(), OptimError> {
    let err = |m: String| Err(OptimError::Replay(m));
    if case.params0.len() != case.shapes.len() {
        return err(format!(
            "{} shapes but {} tensors in `params0`",
            case.shapes.len(),
            case.params0.len()
        ));
    }
    let sizes: Vec<usize> = case
        .shapes
        .iter()
        .map(|s| s.iter().product::<i64>().max(0) as usize)
        .collect();
    let check = |what: &str, tensors: &[Vec<f64>]| -> Result<(), OptimError> {
        if tensors.len() != sizes.len() {
            return err(format!(
                "{what} has {} tensors, expected {}",
                tensors.len(),
                sizes.len()
            ));
        }
        for (i, (t, &n)) in tensors.iter().zip(&sizes).enumerate() {
            if t.len() != n {
                return err(format!(
                    "{what} tensor {i} has {} values, but its shape {:?} holds {n}",
                    t.len(),
                    case.shapes[i]
                ));
            }
        }
        Ok(())
    };
    check("params0", &case.params0)?;
    let grouped = [
        ("lr_scales", case.lr_scales.as_ref().map(Vec::len)),
        (
            "no_weight_decay",
            case.no_weight_decay.as_ref().map(Vec::len),
        ),
    ];
    for (what, len) in grouped {
        match len {
            Some(n) if n != sizes.len() => {
                return err(format!(
                    "{what} has {n} entries, expected one per tensor ({})",
                    sizes.len()
                ))
            }
            // The estimates come in tensor order, which param groups reorder.
            Some(_) if case.hessians.is_some() => {
                return err(format!("{what} cannot be combined with hessians"))
            }
            _ => {}
        }
    }
    if let Some(bad) = case
        .lr_scales
        .iter()
        .flatten()
        .find(|s| !(**s > 0.0 && **s <= 1.0))
    {
        return err(format!("lr_scales holds {bad}; each must be in (0, 1]"));
    }
    for (step, grads) in case.grads.iter().enumerate() {
        check(&format!("grads[{step}]"), grads)?;
    }
    if let Some(h) = &case.hessians {
        if h.steps.len() != h.values.len() {
            return err(format!(
                "hessians: {} steps but {} estimates",
                h.steps.len(),
                h.values.len()
            ));
        }
        for (k, values) in h.values.iter().enumerate() {
            check(&format!("hessians.values[{k}]"), values)?;
        }
    }
    Ok(())
}

/// Largest deviation of `got` from `want` over all steps and tensors, each
/// relative to the largest magnitude of that reference tensor.
pub fn max_relative_error(got: &[Vec<Vec<f64>>], want: &[Vec<Vec<f64>>]) -> f64 {
    let mut worst = 0.0f64;
    for (g_step, w_step) in got.iter().zip(want) {
        for (g, w) in g_step.iter().zip(w_step) {
            let scale = w
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()))
                .max(f64::MIN_POSITIVE);
            let diff = g
                .iter()
                .zip(w)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(diff / scale);
        }
    }
    if got.len() != want.len() {
        f64::INFINITY
    } else {
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(optimizer: &str, hparams: Value) -> ReplayCase {
        serde_json::from_value(json!({
            "optimizer": optimizer,
            "hparams": hparams,
            "shapes": [[2]],
            "params0": [[1.0, -1.0]],
            "grads": [[[0.5, 0.5]], [[0.5, 0.5]]],
        }))
        .unwrap()
    }

    #[test]
    fn replays_plain_sgd_exactly() {
        let out = replay(
            &case("sgd", json!({"lr": 0.1, "momentum": 0, "nesterov": false})),
            &OptimizerRegistry::builtin(),
        )
        .unwrap();
        let want = vec![vec![vec![0.95, -1.05]], vec![vec![0.9, -1.1]]];
        assert!(
            max_relative_error(&out.trajectory, &want) < 1e-15,
            "{:?}",
            out.trajectory
        );
    }

    #[test]
    fn a_case_without_lr_needs_an_optimizer_that_sets_its_own() {
        let registry = OptimizerRegistry::builtin();
        // timm's Adafactor with lr=None: step 1 moves by min(1e-2, 1) times
        // max(1e-3, RMS([1, -1]) = 1) = 1e-2 against the gradient (the
        // RMS-clipped update is 1 per element on a first step).
        let out = replay(&case("adafactor", json!({"lr": null})), &registry).unwrap();
        let want = [0.99, -1.01];
        for (got, want) in out.trajectory[0][0].iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{:?}", out.trajectory[0]);
        }
        let err = replay(&case("lion", json!({})), &registry).unwrap_err();
        assert!(err.to_string().contains("no `lr`"), "{err}");
    }

    #[test]
    fn betas_lists_and_flags_translate() {
        let h = hparams_from_json(
            &serde_json::from_value(
                json!({"lr": 1e-3, "betas": [0.8, 0.9], "amsgrad": false, "foreach": null}),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(h["beta1"], 0.8);
        assert_eq!(h["beta2"], 0.9);
        assert_eq!(h["amsgrad"], 0.0);
        assert!(!h.contains_key("foreach"));
    }

    #[test]
    fn unimplemented_reference_arguments_are_named() {
        let err = replay(
            &case("adamw", json!({"lr": 1e-3, "maximize": true})),
            &OptimizerRegistry::builtin(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`maximize` = 0"), "{err}");
        let err = replay(
            &case("adamw", json!({"lr": 1e-3, "betas": "x"})),
            &OptimizerRegistry::builtin(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`betas`"), "{err}");
    }

    #[test]
    fn malformed_cases_are_explained() {
        let mut bad = case("sgd_m", json!({"lr": 0.1}));
        bad.grads[1][0].pop();
        let err = replay(&bad, &OptimizerRegistry::builtin()).unwrap_err();
        assert!(
            err.to_string().contains("grads[1] tensor 0 has 1 values"),
            "{err}"
        );
    }

    #[test]
    fn relative_error_scales_per_tensor() {
        let want = vec![vec![vec![100.0, 0.0]]];
        let got = vec![vec![vec![100.0 + 1e-7, 1e-7]]];
        assert!((max_relative_error(&got, &want) - 1e-9).abs() < 1e-15);
        assert_eq!(max_relative_error(&[], &want), f64::INFINITY);
    }
}

//! Optimizers written over tch tensors, behind one trait, found by name.
//!
//! Every optimizer takes its hyperparameters by their PyTorch names (`lr`,
//! `weight_decay`, `momentum`, `beta1`, `beta2`, `eps`, ...) with the reference
//! defaults, and rejects names it does not know, so a typo in an experiment
//! never silently trains with a default.

mod adabelief;
mod adabound;
mod adafactor;
mod adam;
mod adan;
mod adaptive;
mod caution;
mod fused;
mod lion;
mod novograd;
mod projection;
pub mod replay;
mod sgd;
mod slices;
mod sophia;
mod state;
pub mod torchscript;
mod trust_ratio;

use std::collections::BTreeMap;

use tch::Tensor;
use thiserror::Error;

pub use sophia::HessianNoise;
pub use state::{Saved, StateReader, StateTensors};

pub use bocb_spec::Hparams;

/// One optimizer update rule with its state.
pub trait Optimizer: Send {
    /// Updates every parameter that has a gradient, at learning rate `lr`
    /// (the schedule's value for this step; the configured `lr` is its base).
    fn step(&mut self, lr: f64);

    /// [`step`](Self::step) for optimizers that can fail at a step (a
    /// user's TorchScript module); bocb's own cannot.
    fn try_step(&mut self, lr: f64) -> Result<(), OptimError> {
        self.step(lr);
        Ok(())
    }

    /// Bytes of optimizer state currently held (measured from the tensors).
    fn state_bytes(&self) -> usize;

    /// False when the optimizer sets its own step size and ignores
    /// [`step`](Self::step)'s `lr` (Adafactor's relative step, timm's
    /// `lr=None`).
    fn external_lr(&self) -> bool {
        true
    }

    /// Optimizers preconditioned by a diagonal Hessian estimate (Sophia)
    /// return how many steps apart they want a fresh one; the trainer then
    /// computes it and hands it over with [`set_hessian`](Self::set_hessian).
    fn hessian_interval(&self) -> Option<usize> {
        None
    }

    /// How many noise vectors each Hutchinson estimate averages, and their
    /// distribution.
    fn hessian_noise(&self) -> (usize, HessianNoise) {
        (1, HessianNoise::Gaussian)
    }

    /// A fresh diagonal Hessian estimate, one tensor per parameter in
    /// [`ParamSet`] order (`decay` then `no_decay`).
    fn set_hessian(&mut self, _estimate: &[Tensor]) {}

    /// The state kept between steps (moments, step counts), by name, for a
    /// trial checkpoint; [`optimizer_state!`](crate::optimizer_state)
    /// writes this and [`import_state`](Self::import_state) from a list of
    /// fields. Without them, trials with this optimizer are not checkpointed.
    fn export_state(&self) -> Result<StateTensors, OptimError> {
        Err(OptimError::NoCheckpoint)
    }

    /// Restores what [`export_state`](Self::export_state) saved, into an
    /// optimizer built over the same parameters.
    fn import_state(&mut self, _from: &StateReader) -> Result<(), OptimError> {
        Err(OptimError::NoCheckpoint)
    }
}

/// The trainable tensors of a model, split as timm does: weight decay applies
/// to `decay` only; biases and normalisation parameters go to `no_decay`.
/// With layer-wise lr decay (a recipe's `layer_decay`), `decay` and
/// `no_decay` hold the layers at the full lr and `lower_layers` the rest.
/// An optimizer reads them all through [`into_groups`](Self::into_groups).
#[derive(Default)]
pub struct ParamSet {
    pub decay: Vec<Tensor>,
    pub no_decay: Vec<Tensor>,
    /// Layers trained below the scheduled lr; empty without layer decay.
    pub lower_layers: Vec<ScaledParams>,
}

/// Tensors whose lr is the scheduled one times `lr_scale`, split as
/// [`ParamSet`]'s own.
pub struct ScaledParams {
    pub lr_scale: f64,
    pub decay: Vec<Tensor>,
    pub no_decay: Vec<Tensor>,
}

/// One parameter group, as a `torch.optim` param group: its tensors, its
/// weight decay and its lr scale (timm's `lr_scale`).
pub struct Group {
    pub params: Vec<Tensor>,
    pub weight_decay: f64,
    pub lr_scale: f64,
}

impl Group {
    /// This group's lr when the schedule gives `lr` (timm's scheduler sets
    /// `group["lr"] = lr * group["lr_scale"]`); the one place a scale
    /// applies.
    pub fn lr(&self, lr: f64) -> f64 {
        lr * self.lr_scale
    }
}

impl ParamSet {
    /// The non-empty parameter groups with the weight decay and lr scale
    /// of each: `decay`, `no_decay`, then each lower layer's two.
    pub fn into_groups(self, weight_decay: f64) -> Vec<Group> {
        let top = ScaledParams {
            lr_scale: 1.0,
            decay: self.decay,
            no_decay: self.no_decay,
        };
        std::iter::once(top)
            .chain(self.lower_layers)
            .flat_map(|layer| {
                [
                    (layer.decay, weight_decay, layer.lr_scale),
                    (layer.no_decay, 0.0, layer.lr_scale),
                ]
            })
            .filter(|(params, _, _)| !params.is_empty())
            .map(|(params, weight_decay, lr_scale)| Group {
                params,
                weight_decay,
                lr_scale,
            })
            .collect()
    }

    /// Every tensor, in [`into_groups`](Self::into_groups) order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.decay.iter().chain(&self.no_decay).chain(
            self.lower_layers
                .iter()
                .flat_map(|layer| layer.decay.iter().chain(&layer.no_decay)),
        )
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum OptimError {
    #[error("unknown optimizer `{name}`; valid: {valid} (or `torchscript:PATH` for your own TorchScript module)")]
    UnknownOptimizer { name: String, valid: String },
    #[error("optimizer `{optimizer}` has no hyperparameter `{name}`; valid: {valid}")]
    UnknownHparam {
        optimizer: String,
        name: String,
        valid: String,
    },
    #[error("optimizer `{optimizer}` needs `{name}`")]
    MissingHparam { optimizer: String, name: String },
    #[error("optimizer `{optimizer}`: bocb implements only `{name}` = {default}, not {value}")]
    Unsupported {
        optimizer: String,
        name: String,
        value: f64,
        default: f64,
    },
    #[error("the optimizer cannot save its state (it implements no `export_state`/`import_state`; see `optimizer_state!`)")]
    NoCheckpoint,
    #[error("optimizer state in the checkpoint: {0}")]
    State(String),
    #[error("TorchScript optimizer `{path}`: {message}")]
    TorchScript { path: String, message: String },
    #[error("replay case: {0}")]
    Replay(String),
    #[error("optimizer `{optimizer}`: `{name}` = {value} is out of range: {expected}")]
    OutOfRange {
        optimizer: String,
        name: String,
        value: f64,
        expected: &'static str,
    },
}

/// A constructor: hyperparameters and parameters in, optimizer out.
pub type OptimizerCtor = fn(&Hparams, ParamSet) -> Result<Box<dyn Optimizer>, OptimError>;

/// Optimizers by registry name. Users add their own with [`register`](Self::register),
/// or name a TorchScript module with `torchscript:PATH` ([`torchscript`]).
#[derive(Clone)]
pub struct OptimizerRegistry {
    entries: BTreeMap<String, OptimizerCtor>,
    aliases: BTreeMap<String, String>,
}

impl OptimizerRegistry {
    /// The optimizers that ship with bocb.
    pub fn builtin() -> Self {
        let mut registry = OptimizerRegistry {
            entries: BTreeMap::new(),
            aliases: BTreeMap::new(),
        };
        adabelief::register(&mut registry);
        adabound::register(&mut registry);
        adafactor::register(&mut registry);
        adam::register(&mut registry);
        adan::register(&mut registry);
        adaptive::register(&mut registry);
        lion::register(&mut registry);
        novograd::register(&mut registry);
        projection::register(&mut registry);
        sgd::register(&mut registry);
        sophia::register(&mut registry);
        trust_ratio::register(&mut registry);
        registry.alias("sgd", "sgd_m");
        registry
    }

    /// Adds (or replaces) an optimizer under `name`.
    pub fn register(&mut self, name: &str, ctor: OptimizerCtor) {
        self.entries.insert(name.to_string(), ctor);
    }

    fn alias(&mut self, alias: &str, name: &str) {
        self.aliases.insert(alias.to_string(), name.to_string());
    }

    /// Registry names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// Whether `name` is registered, or is a `torchscript:PATH` name
    /// (whose file is checked when it is built).
    pub fn contains(&self, name: &str) -> bool {
        name.starts_with(torchscript::PREFIX) || self.resolve(name).is_some()
    }

    fn resolve(&self, name: &str) -> Option<&OptimizerCtor> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.entries.get(name)
    }

    /// Builds `name` over `params`.
    pub fn build(
        &self,
        name: &str,
        hparams: &Hparams,
        params: ParamSet,
    ) -> Result<Box<dyn Optimizer>, OptimError> {
        if let Some(path) = name.strip_prefix(torchscript::PREFIX) {
            return torchscript::build(path, hparams, params);
        }
        let ctor = self
            .resolve(name)
            .ok_or_else(|| OptimError::UnknownOptimizer {
                name: name.to_string(),
                valid: self.names().join(", "),
            })?;
        ctor(hparams, params)
    }
}

/// Reads hyperparameters against a declared list of `(name, default)`;
/// a `None` default means the value is required.
pub(crate) struct HparamReader<'a> {
    optimizer: &'static str,
    hparams: &'a Hparams,
}

impl<'a> HparamReader<'a> {
    pub(crate) fn new(
        optimizer: &'static str,
        hparams: &'a Hparams,
        known: &[&str],
    ) -> Result<Self, OptimError> {
        if let Some(name) = hparams.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(OptimError::UnknownHparam {
                optimizer: optimizer.to_string(),
                name: name.clone(),
                valid: known.join(", "),
            });
        }
        Ok(HparamReader { optimizer, hparams })
    }

    /// A reference argument bocb implements only at its default value (for
    /// example torch's `maximize`, or `amsgrad`): absent or equal is fine,
    /// anything else is an error naming it. Booleans are 0 and 1.
    pub(crate) fn only_default(&self, name: &str, default: f64) -> Result<(), OptimError> {
        match self.hparams.get(name) {
            Some(&value) if value != default => Err(OptimError::Unsupported {
                optimizer: self.optimizer.to_string(),
                name: name.to_string(),
                value,
                default,
            }),
            _ => Ok(()),
        }
    }

    /// The execution switches every `torch.optim` constructor takes. `foreach`,
    /// `fused` and `capturable` choose kernels, not results, so any value is
    /// accepted; `maximize` and `differentiable` change behaviour and only
    /// their defaults are implemented.
    pub(crate) fn torch_switches(&self) -> Result<(), OptimError> {
        self.only_default("maximize", 0.0)?;
        self.only_default("differentiable", 0.0)
    }

    /// `name`, or `default` when absent (`None` makes it required); checked
    /// against `valid`, whose description goes into the error.
    pub(crate) fn get(
        &self,
        name: &str,
        default: Option<f64>,
        valid: (fn(f64) -> bool, &'static str),
    ) -> Result<f64, OptimError> {
        let value = match (self.hparams.get(name), default) {
            (Some(v), _) => *v,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(OptimError::MissingHparam {
                    optimizer: self.optimizer.to_string(),
                    name: name.to_string(),
                })
            }
        };
        if valid.0(value) {
            Ok(value)
        } else {
            Err(OptimError::OutOfRange {
                optimizer: self.optimizer.to_string(),
                name: name.to_string(),
                value,
                expected: valid.1,
            })
        }
    }
}

/// Range checks shared by the optimizers.
pub(crate) const POSITIVE: (fn(f64) -> bool, &str) = (|v| v > 0.0 && v.is_finite(), "> 0");
pub(crate) const NON_NEGATIVE: (fn(f64) -> bool, &str) = (|v| v >= 0.0 && v.is_finite(), ">= 0");
pub(crate) const UNIT_INTERVAL: (fn(f64) -> bool, &str) =
    (|v| (0.0..1.0).contains(&v), "in [0, 1)");
pub(crate) const FLAG: (fn(f64) -> bool, &str) = (|v| v == 0.0 || v == 1.0, "0 or 1");

/// Names of [`HparamReader::torch_switches`], for optimizers' known lists.
pub(crate) const TORCH_SWITCHES: [&str; 5] = [
    "maximize",
    "differentiable",
    "foreach",
    "fused",
    "capturable",
];

/// pytorch_optimizer's `apply_weight_decay`: decoupled, the parameter
/// shrinks by `weight_decay` times `lr` (or times 1 with `fixed`); coupled,
/// the L2 term is added to the gradient in place, as the reference does.
pub(crate) fn pytorch_optimizer_weight_decay(
    param: &mut Tensor,
    grad: &mut Tensor,
    lr: f64,
    weight_decay: f64,
    decoupled: bool,
    fixed: bool,
) {
    if weight_decay == 0.0 {
        return;
    }
    if decoupled {
        let rate = if fixed { 1.0 } else { lr };
        let _ = param.g_mul_scalar_(1.0 - weight_decay * rate);
    } else {
        let _ = grad.g_add_(&(&*param * weight_decay));
    }
}

/// Bytes held by a list of state tensors.
pub(crate) fn tensor_bytes<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> usize {
    tensors
        .into_iter()
        .map(|t| t.numel() * t.kind().elt_size_in_bytes())
        .sum()
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use tch::{Device, Kind};

    /// A float64 parameter with a fixed gradient, as the replay cases use.
    pub fn param_with_grad(values: &[f64], grad: &[f64]) -> Tensor {
        let p = Tensor::from_slice(values)
            .to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .set_requires_grad(true);
        set_grad(&p, grad);
        p
    }

    pub fn set_grad(p: &Tensor, grad: &[f64]) {
        let mut g = p.grad();
        if !g.defined() {
            // Materialise .grad with a backward pass of <p, grad>.
            (p * Tensor::from_slice(grad)).sum(Kind::Double).backward();
        } else {
            tch::no_grad(|| {
                g.copy_(&Tensor::from_slice(grad));
            });
        }
    }

    pub fn values(p: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(p.detach().flatten(0, -1)).unwrap()
    }

    pub fn hp(pairs: &[(&str, f64)]) -> Hparams {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn unknown_optimizer_lists_choices() {
        let registry = OptimizerRegistry::builtin();
        let err = registry
            .build("adamx", &hp(&[("lr", 0.1)]), ParamSet::default())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "unknown optimizer `adamx`; valid: {} (or `torchscript:PATH` for your own TorchScript module)",
                registry.names().join(", ")
            )
        );
        assert!(err.to_string().contains("adamw, "), "{err}");
    }

    /// A step at lr 0, where a schedule such as cosine annealing ends,
    /// changes nothing, as in the references, where lr multiplies every
    /// update (NAdam's folded coefficients once made it 0/0, NaN).
    #[test]
    fn a_step_at_lr_zero_changes_nothing() {
        let registry = OptimizerRegistry::builtin();
        for name in registry.names() {
            let param = param_with_grad(&[1.0, -2.0, 0.5], &[0.3, -0.7, 0.1]);
            let params = ParamSet {
                decay: vec![param.shallow_clone()],
                no_decay: Vec::new(),
                lower_layers: Vec::new(),
            };
            let mut opt = registry
                .build(name, &hp(&[("lr", 0.01), ("weight_decay", 0.01)]), params)
                .unwrap();
            for _ in 0..3 {
                opt.step(0.01);
            }
            let before = Vec::<f64>::try_from(param.detach()).unwrap();
            opt.step(0.0);
            let after = Vec::<f64>::try_from(param.detach()).unwrap();
            assert_eq!(after, before, "{name}");
        }
    }

    #[test]
    fn sgd_is_torch_name_for_sgd_m() {
        assert!(OptimizerRegistry::builtin().contains("sgd"));
    }

    #[test]
    fn unknown_hparam_is_rejected_by_name() {
        let err = OptimizerRegistry::builtin()
            .build(
                "sgd_m",
                &hp(&[("lr", 0.1), ("beta2", 0.9)]),
                ParamSet::default(),
            )
            .err()
            .unwrap();
        assert!(
            matches!(&err, OptimError::UnknownHparam { name, .. } if name == "beta2"),
            "{err}"
        );
        assert!(err.to_string().contains("momentum"), "{err}");
    }

    #[test]
    fn out_of_range_and_missing_are_errors() {
        let registry = OptimizerRegistry::builtin();
        let err = registry
            .build(
                "adamw",
                &hp(&[("lr", 1e-3), ("beta2", 1.0)]),
                ParamSet::default(),
            )
            .err()
            .unwrap();
        assert!(matches!(err, OptimError::OutOfRange { .. }), "{err}");
        let err = registry
            .build("adamw", &hp(&[]), ParamSet::default())
            .err()
            .unwrap();
        assert_eq!(
            err,
            OptimError::MissingHparam {
                optimizer: "adamw".into(),
                name: "lr".into()
            }
        );
    }

    #[test]
    fn no_decay_group_gets_zero_weight_decay() {
        let params = ParamSet {
            decay: vec![param_with_grad(&[1.0], &[0.0])],
            no_decay: vec![param_with_grad(&[1.0], &[0.0])],
            lower_layers: Vec::new(),
        };
        let decayed = params.decay[0].shallow_clone();
        let kept = params.no_decay[0].shallow_clone();
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "sgd_m",
                &hp(&[("lr", 0.1), ("weight_decay", 0.5), ("momentum", 0.0)]),
                params,
            )
            .unwrap();
        opt.step(0.1);
        assert!((values(&decayed)[0] - 0.95).abs() < 1e-12);
        assert_eq!(values(&kept)[0], 1.0);
    }
}

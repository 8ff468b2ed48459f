//! Adafactor, as timm's `timm.optim.Adafactor` (timm 1.0.31): a second moment
//! factored into row and column averages for tensors with two large
//! dimensions, an RMS-clipped update and optional momentum.

use tch::Tensor;

use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    Saved, StateReader, StateTensors, FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("adafactor", Adafactor::build);
}

/// timm's `Adafactor`, with an external learning rate or timm's relative
/// step. The relative step is timm's `lr=None` (its default): it is on when
/// `relative_step` is 1 or when no `lr` is given, and then the step size of
/// each parameter is `min(1e-2, 1/sqrt(step))` (`min(1e-6 * step, ...)` with
/// `warmup_init`) times `max(eps_scale, RMS(param))` with `scale_parameter`,
/// and the trainer's `lr` and schedule are ignored, as timm ignores a
/// scheduler's. `scale_parameter`, `eps_scale` and `warmup_init` only shape
/// the relative step, as in timm. Momentum is used when `beta1` is given
/// (timm's `betas[0]`; timm ignores `betas[1]`). Weight decay shrinks the
/// weights by the step size times `weight_decay` (decoupled).
pub struct Adafactor {
    groups: Vec<Group>,
    eps: f64,
    clip_threshold: f64,
    decay_rate: f64,
    beta1: Option<f64>,
    min_dim_size_to_factor: i64,
    caution: bool,
    relative: Option<RelativeStep>,
    step: i32,
    /// Per parameter, created at its first step.
    state: Vec<Vec<Option<FactorState>>>,
}

struct FactorState {
    /// Only with `beta1`.
    exp_avg: Option<Tensor>,
    second: SecondMoment,
}

crate::saved_struct!(FactorState { exp_avg, second });

enum SecondMoment {
    /// Means over `dim_row` (`row`) and over `dim_col` (`col`).
    Factored {
        dim_col: i64,
        dim_row: i64,
        row: Tensor,
        col: Tensor,
    },
    Full(Tensor),
}

/// Factored moments as `key.factored` (the two dims) with `key.row` and
/// `key.col`; a full one as `key.full`.
impl Saved for SecondMoment {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        match self {
            SecondMoment::Factored {
                dim_col,
                dim_row,
                row,
                col,
            } => {
                (*dim_col, *dim_row).write_state(&format!("{key}.factored"), out);
                row.write_state(&format!("{key}.row"), out);
                col.write_state(&format!("{key}.col"), out);
            }
            SecondMoment::Full(full) => full.write_state(&format!("{key}.full"), out),
        }
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        match Option::<(i64, i64)>::read_state(&format!("{key}.factored"), from)? {
            Some((dim_col, dim_row)) => Ok(SecondMoment::Factored {
                dim_col,
                dim_row,
                row: Tensor::read_state(&format!("{key}.row"), from)?,
                col: Tensor::read_state(&format!("{key}.col"), from)?,
            }),
            None => Tensor::read_state(&format!("{key}.full"), from).map(SecondMoment::Full),
        }
    }
}

/// timm's step size when `lr` is None.
#[derive(Clone, Copy)]
struct RelativeStep {
    warmup_init: bool,
    /// `eps_scale` when `scale_parameter`, else `None` (no RMS scaling).
    scale_floor: Option<f64>,
}

impl RelativeStep {
    /// timm's `_get_lr` at 1-based `step` for a parameter of RMS `rms`.
    fn lr(self, step: i32, rms: f64) -> f64 {
        let step = f64::from(step);
        let cap = if self.warmup_init { 1e-6 * step } else { 1e-2 };
        let lr = cap.min(1.0 / step.sqrt());
        self.scale_floor.map_or(lr, |floor| lr * floor.max(rms))
    }
}

/// A whole number >= 0.
const SIZE: (fn(f64) -> bool, &str) = (
    |v| v >= 0.0 && v.fract() == 0.0 && v.is_finite(),
    "an integer >= 0",
);

impl Adafactor {
    const HPARAMS: [&'static str; 13] = [
        "lr",
        "relative_step",
        "eps",
        "eps_scale",
        "clip_threshold",
        "decay_rate",
        "beta1",
        "beta2",
        "weight_decay",
        "scale_parameter",
        "warmup_init",
        "min_dim_size_to_factor",
        "caution",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("adafactor", hparams, &Self::HPARAMS)?;
        // timm's relative step is `lr=None`; bocb's trainer always passes an
        // lr, so `relative_step` also selects it.
        let no_lr = if hparams.contains_key("lr") { 0.0 } else { 1.0 };
        let relative_step = h.get("relative_step", Some(no_lr), FLAG)? == 1.0;
        if !relative_step {
            h.get("lr", None, POSITIVE)?;
            // timm raises for warmup_init without the relative step.
            h.only_default("warmup_init", 0.0)?;
        }
        let warmup_init = h.get("warmup_init", Some(0.0), FLAG)? == 1.0;
        let scale_parameter = h.get("scale_parameter", Some(1.0), FLAG)? == 1.0;
        let eps_scale = h.get("eps_scale", Some(1e-3), NON_NEGATIVE)?;
        let relative = relative_step.then_some(RelativeStep {
            warmup_init,
            scale_floor: scale_parameter.then_some(eps_scale),
        });
        let eps = h.get("eps", Some(1e-30), NON_NEGATIVE)?;
        let clip_threshold = h.get("clip_threshold", Some(1.0), POSITIVE)?;
        let decay_rate = h.get(
            "decay_rate",
            Some(-0.8),
            (|v| v < 0.0 && v.is_finite(), "< 0"),
        )?;
        let beta1 = match hparams.get("beta1") {
            Some(_) => Some(h.get("beta1", None, UNIT_INTERVAL)?),
            None => None,
        };
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let min_dim_size_to_factor = h.get("min_dim_size_to_factor", Some(16.0), SIZE)? as i64;
        let caution = h.get("caution", Some(0.0), FLAG)? == 1.0;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(Adafactor {
            groups,
            eps,
            clip_threshold,
            decay_rate,
            beta1,
            min_dim_size_to_factor,
            caution,
            relative,
            step: 0,
            state,
        }))
    }

    /// timm's `_get_options` choice of `(dim_col, dim_row)`: the leading two
    /// dimensions of a conv kernel when both exceed `min_size`, else the
    /// trailing two when both do; `None` keeps the full second moment.
    fn factored_dims(shape: &[i64], min_size: i64) -> Option<(i64, i64)> {
        let n = shape.len();
        if n > 2 && shape[0] > min_size && shape[1] > min_size {
            Some((0, 1))
        } else if n >= 2 && shape[n - 2] > min_size && shape[n - 1] > min_size {
            Some((n as i64 - 2, n as i64 - 1))
        } else {
            None
        }
    }

    fn new_state(&self, grad: &Tensor) -> FactorState {
        let shape = grad.size();
        let zeros_without = |dim: i64| {
            let mut s = shape.clone();
            s.remove(dim as usize);
            Tensor::zeros(s, (grad.kind(), grad.device()))
        };
        let second = match Self::factored_dims(&shape, self.min_dim_size_to_factor) {
            Some((dim_col, dim_row)) => SecondMoment::Factored {
                dim_col,
                dim_row,
                row: zeros_without(dim_row),
                col: zeros_without(dim_col),
            },
            None => SecondMoment::Full(grad.zeros_like()),
        };
        FactorState {
            exp_avg: self.beta1.map(|_| grad.zeros_like()),
            second,
        }
    }
}

/// Root mean square of all elements, as a 0-dim tensor.
fn rms(t: &Tensor) -> Tensor {
    t.norm() / (t.numel() as f64).sqrt()
}

impl Optimizer for Adafactor {
    crate::optimizer_state!(step, state);

    fn step(&mut self, external_lr: f64) {
        self.step += 1;
        let beta2t = 1.0 - f64::from(self.step).powf(self.decay_rate);
        tch::no_grad(|| {
            for gi in 0..self.groups.len() {
                let weight_decay = self.groups[gi].weight_decay;
                for pi in 0..self.groups[gi].params.len() {
                    let grad = self.groups[gi].params[pi].grad();
                    if !grad.defined() {
                        continue;
                    }
                    if self.state[gi][pi].is_none() {
                        self.state[gi][pi] = Some(self.new_state(&grad));
                    }
                    let lr = match self.relative {
                        Some(relative) => {
                            let param = &self.groups[gi].params[pi];
                            relative.lr(self.step, rms(param).double_value(&[]))
                        }
                        // The relative step ignores the group's lr, as
                        // timm's does.
                        None => self.groups[gi].lr(external_lr),
                    };
                    let FactorState { exp_avg, second } =
                        self.state[gi][pi].as_mut().expect("created above");
                    let mut update = grad.square();
                    let _ = update.g_add_scalar_(self.eps);
                    let mut update = match second {
                        SecondMoment::Factored {
                            dim_col,
                            dim_row,
                            row,
                            col,
                        } => {
                            let mean = |dim: i64| update.mean_dim([dim].as_slice(), false, None);
                            let _ = row.lerp_(&mean(*dim_row), 1.0 - beta2t);
                            let _ = col.lerp_(&mean(*dim_col), 1.0 - beta2t);
                            // dim_col < dim_row, so dim_col indexes the row
                            // moment's own column dimension.
                            let row_mean = row.mean_dim([*dim_col].as_slice(), true, None);
                            let mut r_factor = &*row / row_mean;
                            let r_factor = r_factor.rsqrt_().unsqueeze(*dim_row);
                            let c_factor = col.unsqueeze(*dim_col).rsqrt();
                            r_factor * c_factor
                        }
                        SecondMoment::Full(exp_avg_sq) => {
                            let _ = exp_avg_sq.lerp_(&update, 1.0 - beta2t);
                            exp_avg_sq.rsqrt()
                        }
                    };
                    let _ = update.g_mul_(&grad);
                    let mut scale = rms(&update) / self.clip_threshold;
                    let _ = update.g_div_(&scale.clamp_min_(1.0));
                    let _ = update.g_mul_scalar_(lr);
                    if let (Some(exp_avg), Some(beta1)) = (exp_avg.as_mut(), self.beta1) {
                        let _ = exp_avg.lerp_(&update, 1.0 - beta1);
                        update = if self.caution {
                            // 'Cautious Optimizers': keep the components that
                            // agree in sign with the gradient, rescaled.
                            let mut mask = (&*exp_avg * &grad).gt(0.0).to_kind(grad.kind());
                            let mut norm = mask.mean(None);
                            let _ = mask.g_div_(&norm.clamp_min_(1e-3));
                            &*exp_avg * mask
                        } else {
                            exp_avg.shallow_clone()
                        };
                    }
                    let param = &mut self.groups[gi].params[pi];
                    if weight_decay != 0.0 {
                        let _ = param.g_mul_scalar_(1.0 - weight_decay * lr);
                    }
                    let _ = param.g_sub_(&update);
                }
            }
        });
    }

    fn external_lr(&self) -> bool {
        self.relative.is_none()
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.state.iter().flatten().flatten().flat_map(|s| {
            let second = match &s.second {
                SecondMoment::Factored { row, col, .. } => vec![row, col],
                SecondMoment::Full(v) => vec![v],
            };
            s.exp_avg.iter().chain(second)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{hp, param_with_grad, values};
    use super::*;

    /// Two steps from [3, -4] (RMS 3.54) with gradient [1, 1].
    fn two_steps(hparams: &Hparams, lr: f64) -> Vec<f64> {
        let p = param_with_grad(&[3.0, -4.0], &[1.0, 1.0]);
        let params = ParamSet {
            decay: vec![p.shallow_clone()],
            no_decay: Vec::new(),
            lower_layers: Vec::new(),
        };
        let mut opt = Adafactor::build(hparams, params).unwrap();
        opt.step(lr);
        opt.step(lr);
        values(&p)
    }

    /// The relative step sets its own size: the trainer's lr changes nothing,
    /// and step 1 moves by min(1e-2, 1) * RMS(param) (the clipped update is
    /// 1 per element).
    #[test]
    fn the_relative_step_ignores_the_trainers_lr() {
        let relative = hp(&[("lr", 1e-3), ("relative_step", 1.0)]);
        assert_eq!(two_steps(&relative, 1e-3), two_steps(&relative, 5.0));
        assert_eq!(two_steps(&relative, 1e-3), two_steps(&hp(&[]), 0.7));
        let p = param_with_grad(&[3.0, -4.0], &[1.0, 1.0]);
        let mut opt = Adafactor::build(
            &relative,
            ParamSet {
                decay: vec![p.shallow_clone()],
                no_decay: Vec::new(),
                lower_layers: Vec::new(),
            },
        )
        .unwrap();
        assert!(!opt.external_lr());
        opt.step(f64::NAN);
        let step = 1e-2 * (12.5f64).sqrt();
        let got = values(&p);
        assert!((got[0] - (3.0 - step)).abs() < 1e-12, "{got:?}");
        assert!((got[1] - (-4.0 - step)).abs() < 1e-12, "{got:?}");
    }

    #[test]
    fn warmup_init_needs_the_relative_step() {
        let params = || ParamSet {
            decay: vec![param_with_grad(&[1.0], &[1.0])],
            no_decay: Vec::new(),
            lower_layers: Vec::new(),
        };
        let err = Adafactor::build(&hp(&[("lr", 1e-3), ("warmup_init", 1.0)]), params())
            .err()
            .unwrap();
        assert!(err.to_string().contains("warmup_init"), "{err}");
        assert!(Adafactor::build(&hp(&[("warmup_init", 1.0)]), params()).is_ok());
    }

    /// The recorded cases factor a 2-d weight and the leading dims of a
    /// conv kernel; the trailing-dims fallback and the size cut-off are
    /// checked here.
    #[test]
    fn factors_the_dims_timm_picks() {
        assert_eq!(Adafactor::factored_dims(&[64, 32, 3, 3], 16), Some((0, 1)));
        assert_eq!(Adafactor::factored_dims(&[8, 3, 20, 20], 16), Some((2, 3)));
        assert_eq!(Adafactor::factored_dims(&[17, 16], 16), None);
        assert_eq!(Adafactor::factored_dims(&[17, 17], 16), Some((0, 1)));
        assert_eq!(Adafactor::factored_dims(&[100], 16), None);
    }
}

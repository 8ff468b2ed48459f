//! The Adam family of `torch.optim`: Adam and AdamW (one update rule; torch's
//! AdamW is its Adam with `decoupled_weight_decay=True`), Adamax, NAdam and
//! RAdam. Bias corrections use each parameter's own step count, as torch's
//! per-parameter `state["step"]` does.

use tch::{Kind, Tensor};

use super::fused::FusedAdam;
use super::slices::in_slices;
use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    Saved, StateReader, StateTensors, FLAG, NON_NEGATIVE, POSITIVE, TORCH_SWITCHES, UNIT_INTERVAL,
};

/// Parameter groups with one state per parameter, created at its first step
/// with a gradient (or up front), as torch's `self.state[p]`.
pub(super) struct PerParam<S> {
    groups: Vec<Group>,
    states: Vec<Vec<Option<S>>>,
}

impl<S> PerParam<S> {
    pub(super) fn new(params: ParamSet, weight_decay: f64) -> Self {
        let groups = params.into_groups(weight_decay);
        let states = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        PerParam { groups, states }
    }

    /// Creates every parameter's state now (torch's Adagrad does so in its
    /// constructor).
    pub(super) fn init_all(&mut self, init: impl Fn(&Tensor) -> S) {
        for (group, states) in self.groups.iter().zip(&mut self.states) {
            for (param, state) in group.params.iter().zip(states.iter_mut()) {
                *state = Some(init(param));
            }
        }
    }

    /// Calls `update(param, grad, weight_decay, lr, state)` under `no_grad`
    /// for every parameter that has a gradient, with its group's share of
    /// the scheduled `lr`.
    pub(super) fn update(
        &mut self,
        lr: f64,
        mut update: impl FnMut(&mut Tensor, Tensor, f64, f64, &mut Option<S>),
    ) {
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.states) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let grad = param.grad();
                    if grad.defined() {
                        update(param, grad, *weight_decay, lr, state);
                    }
                }
            }
        });
    }

    /// The states created so far.
    pub(super) fn states(&self) -> impl Iterator<Item = &S> {
        self.states.iter().flatten().flatten()
    }
}

/// The states only: the parameters are the model's, saved with it.
impl<S: Saved> Saved for PerParam<S> {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        self.states.write_state(key, out);
    }
    fn read_state(key: &str, _from: &StateReader) -> Result<Self, OptimError> {
        Err(OptimError::State(format!(
            "`{key}` is restored into an optimizer built over the parameters, never on its own"
        )))
    }
    fn read_state_into(&mut self, key: &str, from: &StateReader) -> Result<(), OptimError> {
        self.states.read_state_into(key, from)
    }
}

/// torch's coupled (L2) weight decay, `grad.add(param, alpha=weight_decay)`:
/// a new gradient, the parameter's own `.grad` is left alone.
pub(super) fn l2_grad(grad: Tensor, param: &Tensor, weight_decay: f64) -> Tensor {
    if weight_decay == 0.0 {
        return grad;
    }
    // One pass, as torch's `alpha`: grad + param * weight_decay.
    grad.addcmul(param, &scalar_like(weight_decay, param))
}

/// `value` as a 0-dim tensor of `like`'s dtype and device, a factor for
/// `addcmul` (torch's fused `alpha=`/`value=`, which tch does not expose).
pub(super) fn scalar_like(value: f64, like: &Tensor) -> Tensor {
    Tensor::scalar_tensor(value, (like.kind(), like.device()))
}

/// `exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`, torch's
/// second-moment update (tch's `addcmul_` has no `value`, so it is folded
/// into the first factor, which is how torch's kernel rounds it), with
/// `grad * (1 - beta)` written into `scratch` (`grad`'s shape), which the
/// caller may reuse afterwards.
pub(super) fn update_square_avg_in(
    square_avg: &mut Tensor,
    grad: &Tensor,
    beta: f64,
    scratch: &Tensor,
) {
    let _ = grad.mul_scalar_out(scratch, 1.0 - beta);
    let _ = square_avg.g_mul_scalar_(beta);
    let _ = square_avg.addcmul_(scratch, grad);
}

/// The argument torch's Adam, NAdam and RAdam take for AdamW-style decay.
const DECOUPLED: &str = "decoupled_weight_decay";

/// Reads `decoupled_weight_decay` (a 0/1 flag, default 0).
fn decoupled_flag(h: &HparamReader) -> Result<bool, OptimError> {
    Ok(h.get(DECOUPLED, Some(0.0), FLAG)? == 1.0)
}

/// Applies weight decay as torch's Adam family does: decoupled, the parameter
/// shrinks by `lr * weight_decay`; coupled, the returned gradient carries it.
fn apply_weight_decay(
    param: &mut Tensor,
    grad: Tensor,
    lr: f64,
    weight_decay: f64,
    decoupled: bool,
) -> Tensor {
    if decoupled {
        if weight_decay != 0.0 {
            let _ = param.g_mul_scalar_(1.0 - lr * weight_decay);
        }
        grad
    } else {
        l2_grad(grad, param, weight_decay)
    }
}

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("adamw", AdamW::build);
    registry.register("adam", Adam::build);
    registry.register("adamax", Adamax::build);
    registry.register("nadam", NAdam::build);
    registry.register("radam", RAdam::build);
}

/// Adam, as `torch.optim.Adam`: coupled (L2) weight decay, or decoupled with
/// `decoupled_weight_decay`; `amsgrad` keeps the running maximum of the
/// second moment. [`AdamW`] is the same rule with decoupled decay.
pub struct Adam {
    params: PerParam<AdamState>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    amsgrad: bool,
    decoupled: bool,
}

struct AdamState {
    step: i32,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// With `amsgrad` only.
    max_exp_avg_sq: Option<Tensor>,
}

crate::saved_struct!(AdamState {
    step,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq
});

/// AdamW, as `torch.optim.AdamW`: [`Adam`] with decoupled weight decay
/// (default 0.01) and no `decoupled_weight_decay` argument, which is how
/// torch's AdamW subclasses its Adam.
pub struct AdamW;

impl AdamW {
    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        Adam::build_as("adamw", hparams, params, true)
    }
}

impl Adam {
    const HPARAMS: [&'static str; 7] = [
        "lr",
        "weight_decay",
        "beta1",
        "beta2",
        "eps",
        "amsgrad",
        DECOUPLED,
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        Adam::build_as("adam", hparams, params, false)
    }

    /// torch's Adam (`adamw` false) or AdamW (true), under `name`.
    fn build_as(
        name: &'static str,
        hparams: &Hparams,
        params: ParamSet,
        adamw: bool,
    ) -> Result<Box<dyn Optimizer>, OptimError> {
        let own = if adamw {
            &Self::HPARAMS[..6]
        } else {
            &Self::HPARAMS[..]
        };
        let known = [own, &TORCH_SWITCHES].concat();
        let h = HparamReader::new(name, hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let default_decay = if adamw { 0.01 } else { 0.0 };
        let weight_decay = h.get("weight_decay", Some(default_decay), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let amsgrad = h.get("amsgrad", Some(0.0), FLAG)? == 1.0;
        let decoupled = adamw || decoupled_flag(&h)?;
        if super::fused::wanted(&params) {
            return Ok(Box::new(FusedAdam::new(
                params.into_groups(weight_decay),
                (beta1, beta2, eps),
                amsgrad,
                decoupled,
            )));
        }
        Ok(Box::new(Adam {
            params: PerParam::new(params, weight_decay),
            beta1,
            beta2,
            eps,
            amsgrad,
            decoupled,
        }))
    }
}

impl Optimizer for Adam {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let Adam {
            beta1,
            beta2,
            eps,
            amsgrad,
            decoupled,
            ..
        } = *self;
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.get_or_insert_with(|| AdamState {
                    step: 0,
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                    max_exp_avg_sq: amsgrad.then(|| param.zeros_like()),
                });
                s.step += 1;
                let step = f64::from(s.step);
                let bias_correction1 = 1.0 - beta1.powf(step);
                let bias_correction2_sqrt = (1.0 - beta2.powf(step)).sqrt();
                let step_size_neg = -(lr / bias_correction1);
                // Without amsgrad the second moment stands in for its maximum.
                let second = s.max_exp_avg_sq.as_ref().unwrap_or(&s.exp_avg_sq);
                let tensors = [&*param, &grad, &s.exp_avg, &s.exp_avg_sq, second];
                in_slices(
                    tensors,
                    |[mut param, grad, mut exp_avg, mut exp_avg_sq, second]| {
                        let grad =
                            apply_weight_decay(&mut param, grad, lr, weight_decay, decoupled);
                        let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                        // The scratch of the second-moment update becomes the denominator.
                        let mut denom = grad.empty_like();
                        update_square_avg_in(&mut exp_avg_sq, &grad, beta2, &denom);
                        if amsgrad {
                            let _ = second.maximum_out(&second, &exp_avg_sq);
                        }
                        // torch's capturable form of the update, which folds the step
                        // size into the denominator and so needs no scaled copy of
                        // exp_avg: param += exp_avg / (sqrt(v) / (c2 * -s) + eps / -s).
                        let _ = second.sqrt_out(&denom);
                        let _ = denom.g_div_scalar_(bias_correction2_sqrt * step_size_neg);
                        let _ = denom.g_add_scalar_(eps / step_size_neg);
                        let _ = param.addcdiv_(&exp_avg, &denom);
                    },
                );
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.params
                .states()
                .flat_map(|s| {
                    [
                        Some(&s.exp_avg),
                        Some(&s.exp_avg_sq),
                        s.max_exp_avg_sq.as_ref(),
                    ]
                })
                .flatten(),
        )
    }
}

/// Adamax, as `torch.optim.Adamax`: Adam with an exponentially weighted
/// infinity norm in place of the second moment; coupled weight decay.
pub struct Adamax {
    params: PerParam<AdamaxState>,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

struct AdamaxState {
    step: i32,
    exp_avg: Tensor,
    exp_inf: Tensor,
}

crate::saved_struct!(AdamaxState {
    step,
    exp_avg,
    exp_inf
});

impl Adamax {
    const HPARAMS: [&'static str; 5] = ["lr", "weight_decay", "beta1", "beta2", "eps"];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("adamax", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        Ok(Box::new(Adamax {
            params: PerParam::new(params, weight_decay),
            beta1,
            beta2,
            eps,
        }))
    }
}

impl Optimizer for Adamax {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let Adamax {
            beta1, beta2, eps, ..
        } = *self;
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.get_or_insert_with(|| AdamaxState {
                    step: 0,
                    exp_avg: param.zeros_like(),
                    exp_inf: param.zeros_like(),
                });
                s.step += 1;
                let clr = lr / (1.0 - beta1.powf(f64::from(s.step)));
                let tensors = [&*param, &grad, &s.exp_avg, &s.exp_inf];
                in_slices(tensors, |[mut param, grad, mut exp_avg, mut exp_inf]| {
                    let grad = l2_grad(grad, &param, weight_decay);
                    let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                    let mut norm = grad.abs();
                    let _ = norm.g_add_scalar_(eps);
                    let _ = exp_inf.g_mul_scalar_(beta2);
                    let _ = exp_inf.maximum_out(&exp_inf, &norm);
                    // torch's addcdiv_(exp_avg, exp_inf, value=-clr), rounded as
                    // torch does; `norm` is spent and takes the quotient.
                    let _ = exp_avg.div_out(&norm, &exp_inf);
                    let _ = param.addcmul_(&norm, &scalar_like(-clr, &param));
                });
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.params.states().flat_map(|s| [&s.exp_avg, &s.exp_inf]))
    }
}

/// NAdam, as `torch.optim.NAdam`: Adam with Nesterov momentum whose
/// coefficient `mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))` warms
/// up, the running product of the `mu_t` standing in for beta1's bias
/// correction; coupled weight decay, or decoupled with
/// `decoupled_weight_decay`.
pub struct NAdam {
    params: PerParam<NAdamState>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    momentum_decay: f64,
    decoupled: bool,
}

struct NAdamState {
    step: i32,
    /// torch keeps it as a 0-dim tensor of the default dtype: float64 in
    /// float64 runs, float32 in float32 training; rounded accordingly.
    mu_product: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

crate::saved_struct!(NAdamState {
    step,
    mu_product,
    exp_avg,
    exp_avg_sq
});

impl NAdam {
    const HPARAMS: [&'static str; 7] = [
        "lr",
        "weight_decay",
        "beta1",
        "beta2",
        "eps",
        "momentum_decay",
        DECOUPLED,
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("nadam", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let momentum_decay = h.get("momentum_decay", Some(4e-3), NON_NEGATIVE)?;
        let decoupled = decoupled_flag(&h)?;
        Ok(Box::new(NAdam {
            params: PerParam::new(params, weight_decay),
            beta1,
            beta2,
            eps,
            momentum_decay,
            decoupled,
        }))
    }
}

impl Optimizer for NAdam {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let NAdam {
            beta1,
            beta2,
            eps,
            momentum_decay,
            decoupled,
            ..
        } = *self;
        let mu_at = |step: f64| beta1 * (1.0 - 0.5 * 0.96f64.powf(step * momentum_decay));
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.get_or_insert_with(|| NAdamState {
                    step: 0,
                    mu_product: 1.0,
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                });
                s.step += 1;
                let step = f64::from(s.step);
                let bias_correction2 = 1.0 - beta2.powf(step);
                let mu = mu_at(step);
                let mu_next = mu_at(step + 1.0);
                s.mu_product = if param.kind() == Kind::Double {
                    s.mu_product * mu
                } else {
                    f64::from(s.mu_product as f32 * mu as f32)
                };
                let mu_product_next = s.mu_product * mu_next;
                let grad_coef = -lr * (1.0 - mu) / (1.0 - s.mu_product);
                let avg_coef = (-lr * mu_next) / (1.0 - mu_product_next);
                let tensors = [&*param, &grad, &s.exp_avg, &s.exp_avg_sq];
                in_slices(tensors, |[mut param, grad, mut exp_avg, mut exp_avg_sq]| {
                    let grad = apply_weight_decay(&mut param, grad, lr, weight_decay, decoupled);
                    let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                    // The scratch of the second-moment update becomes the denominator.
                    let mut denom = grad.empty_like();
                    update_square_avg_in(&mut exp_avg_sq, &grad, beta2, &denom);
                    let _ = exp_avg_sq.div_scalar_out(&denom, bias_correction2);
                    let _ = denom.sqrt_();
                    let _ = denom.g_add_scalar_(eps);
                    // torch's two addcdiv_(.., denom, value=coef), each coefficient
                    // folded into the denominator: param += grad / (denom / grad_coef),
                    // then += exp_avg / (denom / avg_coef). At lr 0 (the end of a
                    // cosine schedule) both are 0 and the fold would be 0/0: torch
                    // adds nothing, so neither does this.
                    if lr != 0.0 {
                        let _ = denom.g_div_scalar_(grad_coef);
                        let _ = param.addcdiv_(&grad, &denom);
                        let _ = denom.g_mul_scalar_(grad_coef / avg_coef);
                        let _ = param.addcdiv_(&exp_avg, &denom);
                    }
                });
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.params
                .states()
                .flat_map(|s| [&s.exp_avg, &s.exp_avg_sq]),
        )
    }
}

/// RAdam, as `torch.optim.RAdam`: Adam whose adaptive step is rectified by
/// the variance estimate; while its length `rho_t` is 5 or less the update
/// is bias-corrected momentum alone. Coupled weight decay, or decoupled with
/// `decoupled_weight_decay`.
pub struct RAdam {
    params: PerParam<RAdamState>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    decoupled: bool,
}

struct RAdamState {
    step: i32,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

crate::saved_struct!(RAdamState {
    step,
    exp_avg,
    exp_avg_sq
});

impl RAdam {
    const HPARAMS: [&'static str; 6] = ["lr", "weight_decay", "beta1", "beta2", "eps", DECOUPLED];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("radam", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let decoupled = decoupled_flag(&h)?;
        Ok(Box::new(RAdam {
            params: PerParam::new(params, weight_decay),
            beta1,
            beta2,
            eps,
            decoupled,
        }))
    }
}

impl Optimizer for RAdam {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let RAdam {
            beta1,
            beta2,
            eps,
            decoupled,
            ..
        } = *self;
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.get_or_insert_with(|| RAdamState {
                    step: 0,
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                });
                s.step += 1;
                let step = f64::from(s.step);
                let bias_correction1 = 1.0 - beta1.powf(step);
                let bias_correction2 = 1.0 - beta2.powf(step);
                let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bias_correction2;
                // The rectification, or None while the variance is intractable.
                let rect = (rho_t > 5.0).then(|| {
                    ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                        .sqrt()
                });
                let tensors = [&*param, &grad, &s.exp_avg, &s.exp_avg_sq];
                in_slices(tensors, |[mut param, grad, mut exp_avg, mut exp_avg_sq]| {
                    let grad = apply_weight_decay(&mut param, grad, lr, weight_decay, decoupled);
                    let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                    // The scratch of the second-moment update becomes the update.
                    let mut scratch = grad.empty_like();
                    update_square_avg_in(&mut exp_avg_sq, &grad, beta2, &scratch);
                    match rect {
                        Some(rect) => {
                            // param -= lr * rect * sqrt(c2) / c1 * exp_avg / (sqrt(v) + eps)
                            let mut denom = exp_avg_sq.sqrt();
                            let _ = denom.g_add_scalar_(eps);
                            let coef = -(lr * rect * bias_correction2.sqrt() / bias_correction1);
                            let _ = exp_avg.mul_scalar_out(&scratch, coef);
                            let _ = param.addcdiv_(&scratch, &denom);
                        }
                        None => {
                            let _ = exp_avg.div_scalar_out(&scratch, bias_correction1);
                            let _ = scratch.g_mul_scalar_(lr);
                            let _ = param.g_sub_(&scratch);
                        }
                    }
                });
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.params
                .states()
                .flat_map(|s| [&s.exp_avg, &s.exp_avg_sq]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::OptimizerRegistry;
    use super::*;

    /// torch.optim.AdamW(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    /// evaluated by hand for two steps.
    #[test]
    fn matches_torch_adamw_update() {
        let p = param_with_grad(&[1.0, -0.5], &[0.2, -0.4]);
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "adamw",
                &hp(&[
                    ("lr", 0.01),
                    ("beta1", 0.8),
                    ("beta2", 0.99),
                    ("eps", 1e-6),
                    ("weight_decay", 0.1),
                ]),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap();
        let (lr, b1, b2, eps, wd) = (0.01f64, 0.8f64, 0.99f64, 1e-6, 0.1);
        let g = [0.2f64, -0.4];
        let mut x = [1.0f64, -0.5];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            opt.step(lr);
            for i in 0..2 {
                x[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mhat = m[i] / (1.0 - b1.powi(t));
                let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
                x[i] -= lr * mhat / denom;
            }
            let got = values(&p);
            for i in 0..2 {
                assert!((got[i] - x[i]).abs() < 1e-12, "step {t}: {got:?} vs {x:?}");
            }
        }
        assert_eq!(opt.state_bytes(), 2 * 2 * 8);
    }

    /// torch's AdamW takes no `decoupled_weight_decay` (it is always on);
    /// its Adam, NAdam and RAdam do.
    #[test]
    fn only_adam_variants_take_decoupled_weight_decay() {
        let registry = OptimizerRegistry::builtin();
        let with_flag = hp(&[("lr", 1e-3), (DECOUPLED, 1.0)]);
        let err = registry
            .build("adamw", &with_flag, ParamSet::default())
            .err()
            .unwrap();
        assert!(
            matches!(&err, OptimError::UnknownHparam { name, .. } if name == DECOUPLED),
            "{err}"
        );
        for name in ["adam", "nadam", "radam"] {
            assert!(registry
                .build(name, &with_flag, ParamSet::default())
                .is_ok());
        }
    }

    /// In float32 training torch's NAdam keeps `mu_product` in float32; this
    /// trajectory is torch.optim.NAdam(lr=0.1, betas=(0.5, 0.999),
    /// momentum_decay=0.3) on a float32 parameter with a fixed gradient,
    /// default dtype float32.
    #[test]
    fn nadam_float32_matches_torch() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[0.3f32, -0.7]))
            .sum(Kind::Float)
            .backward();
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "nadam",
                &hp(&[("lr", 0.1), ("beta1", 0.5), ("momentum_decay", 0.3)]),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap();
        let torch: [[f32; 2]; 5] = [
            [0.8863106, -1.8863106],
            [0.78700346, -1.7870034],
            [0.6886186, -1.6886185],
            [0.58962935, -1.5896293],
            [0.4900859, -1.490086],
        ];
        for (t, want) in torch.iter().enumerate() {
            opt.step(0.1);
            let got = Vec::<f32>::try_from(p.detach()).unwrap();
            assert_eq!(got, want, "step {}", t + 1);
        }
    }
}

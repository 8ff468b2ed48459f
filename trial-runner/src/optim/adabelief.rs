//! AdaBelief, as timm's `timm.optim.AdaBelief` (timm 1.0.31): Adam whose
//! second moment tracks the variance of the gradient around its running
//! mean, with the RAdam-style rectified step by default.

use tch::Tensor;

use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("adabelief", AdaBelief::build);
}

/// timm's `AdaBelief` (single-tensor path; the foreach path computes the same
/// values). Weight decay is decoupled (`decoupled_decay`, the default) or an
/// L2 term added to the gradient; `fixed_decay` drops the `lr` factor of the
/// decoupled decay.
pub struct AdaBelief {
    groups: Vec<Group>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    amsgrad: bool,
    decoupled_decay: bool,
    fixed_decay: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    step: i32,
    /// Per parameter, created at its first step.
    state: Vec<Vec<Option<BeliefState>>>,
}

struct BeliefState {
    exp_avg: Tensor,
    exp_avg_var: Tensor,
    /// Only with `amsgrad`.
    max_exp_avg_var: Option<Tensor>,
}

crate::saved_struct!(BeliefState {
    exp_avg,
    exp_avg_var,
    max_exp_avg_var
});

/// The rectified update of one step: the adaptive one (`num_sma >= 5`), the
/// momentum-only one (`step_size > 0`), or none at all.
enum Rectified {
    Adaptive(f64),
    Momentum(f64),
    Skip,
}

impl AdaBelief {
    const HPARAMS: [&'static str; 11] = [
        "lr",
        "weight_decay",
        "beta1",
        "beta2",
        "eps",
        "amsgrad",
        "decoupled_decay",
        "fixed_decay",
        "rectify",
        "degenerated_to_sgd",
        "foreach",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        // `foreach` picks timm's multi-tensor kernels, not different results.
        let h = HparamReader::new("adabelief", hparams, &Self::HPARAMS)?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-16), NON_NEGATIVE)?;
        let flag = |name, default| Ok::<_, OptimError>(h.get(name, Some(default), FLAG)? == 1.0);
        let amsgrad = flag("amsgrad", 0.0)?;
        let decoupled_decay = flag("decoupled_decay", 1.0)?;
        let fixed_decay = flag("fixed_decay", 0.0)?;
        let rectify = flag("rectify", 1.0)?;
        let degenerated_to_sgd = flag("degenerated_to_sgd", 1.0)?;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(AdaBelief {
            groups,
            beta1,
            beta2,
            eps,
            amsgrad,
            decoupled_decay,
            fixed_decay,
            rectify,
            degenerated_to_sgd,
            step: 0,
            state,
        }))
    }

    /// The RAdam rectification of step `t` (timm's `(num_sma, step_size)`),
    /// with the same operation order as timm.
    fn rectified(&self, t: f64, bias_correction1: f64) -> Rectified {
        let beta2_t = self.beta2.powf(t);
        let num_sma_max = 2.0 / (1.0 - self.beta2) - 1.0;
        let num_sma = num_sma_max - 2.0 * t * beta2_t / (1.0 - beta2_t);
        if num_sma >= 5.0 {
            let r = (1.0 - beta2_t) * (num_sma - 4.0) / (num_sma_max - 4.0) * (num_sma - 2.0)
                / num_sma
                * num_sma_max
                / (num_sma_max - 2.0);
            Rectified::Adaptive(r.sqrt() / bias_correction1)
        } else if self.degenerated_to_sgd {
            Rectified::Momentum(1.0 / bias_correction1)
        } else {
            Rectified::Skip
        }
    }
}

impl Optimizer for AdaBelief {
    crate::optimizer_state!(step, state);

    fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = f64::from(self.step);
        let bias_correction1 = 1.0 - self.beta1.powf(t);
        let bias_correction2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        let rectified = self.rectify.then(|| self.rectified(t, bias_correction1));
        let (beta1, beta2, eps, amsgrad) = (self.beta1, self.beta2, self.eps, self.amsgrad);
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.state) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                let weight_decay = *weight_decay;
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let mut grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    if self.decoupled_decay {
                        if weight_decay != 0.0 {
                            let decay = if self.fixed_decay {
                                weight_decay
                            } else {
                                lr * weight_decay
                            };
                            let _ = param.g_mul_scalar_(1.0 - decay);
                        }
                    } else if weight_decay != 0.0 {
                        // Out of place: p.grad itself is left as it was.
                        grad = &grad + &*param * weight_decay;
                    }
                    let BeliefState {
                        exp_avg,
                        exp_avg_var,
                        max_exp_avg_var,
                    } = state.get_or_insert_with(|| BeliefState {
                        exp_avg: param.zeros_like(),
                        exp_avg_var: param.zeros_like(),
                        max_exp_avg_var: amsgrad.then(|| param.zeros_like()),
                    });
                    let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                    let residual = &grad - &*exp_avg;
                    let _ = exp_avg_var.g_mul_scalar_(beta2);
                    let _ = exp_avg_var.addcmul_(&(&residual * (1.0 - beta2)), &residual);
                    // timm adds eps to the stored variance itself, every step.
                    let _ = exp_avg_var.g_add_scalar_(eps);
                    if let Some(max) = max_exp_avg_var.as_ref() {
                        let _ = max.maximum_out(max, exp_avg_var);
                    }
                    match rectified {
                        None => {
                            let mut denom = max_exp_avg_var.as_ref().unwrap_or(exp_avg_var).sqrt();
                            let _ = denom.g_div_scalar_(bias_correction2_sqrt);
                            let _ = denom.g_add_scalar_(eps);
                            let step_size = lr / bias_correction1;
                            let _ = param.addcdiv_(&(&*exp_avg * -step_size), &denom);
                        }
                        // The rectified update normalises by the variance
                        // itself, also with amsgrad (as timm does).
                        Some(Rectified::Adaptive(step_size)) => {
                            let mut denom = exp_avg_var.sqrt();
                            let _ = denom.g_add_scalar_(eps);
                            let _ = param.addcdiv_(&(&*exp_avg * (-step_size * lr)), &denom);
                        }
                        Some(Rectified::Momentum(step_size)) => {
                            let _ = param.g_add_(&(&*exp_avg * (-step_size * lr)));
                        }
                        Some(Rectified::Skip) => {}
                    }
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.state.iter().flatten().flatten().flat_map(|s| {
            [&s.exp_avg, &s.exp_avg_var]
                .into_iter()
                .chain(s.max_exp_avg_var.as_ref())
        }))
    }
}

//! Adan (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster
//! Optimizing Deep Models", TPAMI 2023): moments of the gradient, of the
//! gradient difference and of the squared Nesterov-corrected gradient, with
//! proximal (or, with `no_prox`, decoupled) weight decay.

use tch::Tensor;

use super::caution::apply_caution;
use super::slices::in_slices;
use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// Per-parameter state, created at the parameter's first step.
struct AdanState {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    exp_avg_diff: Tensor,
    /// Minus the previous gradient between steps; a scratch value within one.
    neg_pre_grad: Tensor,
}

crate::saved_struct!(AdanState {
    exp_avg,
    exp_avg_sq,
    exp_avg_diff,
    neg_pre_grad
});

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("adan", Adan::build);
}

/// Adan, as `timm.optim.Adan` (timm 1.0.31; its single-tensor path).
/// `betas: [b1, b2, b3]` arrives as `beta1` (gradient), `beta2` (gradient
/// difference) and `beta3` (second moment), each the weight of the old value.
pub struct Adan {
    groups: Vec<Group>,
    beta1: f64,
    beta2: f64,
    beta3: f64,
    eps: f64,
    no_prox: bool,
    caution: bool,
    step: i32,
    state: Vec<Vec<Option<AdanState>>>,
}

impl Adan {
    const HPARAMS: [&'static str; 9] = [
        "lr",
        "beta1",
        "beta2",
        "beta3",
        "eps",
        "weight_decay",
        "no_prox",
        "caution",
        "foreach",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("adan", hparams, &Self::HPARAMS)?;
        // `foreach` picks timm's kernels, not the result: any value is fine.
        h.get("lr", Some(1e-3), POSITIVE)?;
        let beta1 = h.get("beta1", Some(0.98), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.92), UNIT_INTERVAL)?;
        let beta3 = h.get("beta3", Some(0.99), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let no_prox = h.get("no_prox", Some(0.0), FLAG)? == 1.0;
        let caution = h.get("caution", Some(0.0), FLAG)? == 1.0;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(Adan {
            groups,
            beta1,
            beta2,
            beta3,
            eps,
            no_prox,
            caution,
            step: 0,
            state,
        }))
    }
}

impl Optimizer for Adan {
    crate::optimizer_state!(step, state);

    fn step(&mut self, lr: f64) {
        self.step += 1;
        let (beta1, beta2, beta3) = (self.beta1, self.beta2, self.beta3);
        let step = f64::from(self.step);
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let bias_correction3_sqrt = (1.0 - beta3.powf(step)).sqrt();
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.state) {
                let lr = group.lr(lr);
                let step_size_diff = lr * beta2 / bias_correction2;
                let step_size = lr / bias_correction1;
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let AdanState {
                        exp_avg,
                        exp_avg_sq,
                        exp_avg_diff,
                        neg_pre_grad,
                    } = state.get_or_insert_with(|| AdanState {
                        exp_avg: param.zeros_like(),
                        exp_avg_sq: param.zeros_like(),
                        exp_avg_diff: param.zeros_like(),
                        neg_pre_grad: grad.neg(),
                    });
                    let (eps, no_prox, caution) = (self.eps, self.no_prox, self.caution);
                    let decay = lr * *weight_decay;
                    let tensors = [
                        &*param,
                        &grad,
                        &*exp_avg,
                        &*exp_avg_sq,
                        &*exp_avg_diff,
                        &*neg_pre_grad,
                    ];
                    let update = |[mut param, grad, mut exp_avg, mut exp_avg_sq, mut exp_avg_diff, mut neg_pre_grad]: [Tensor; 6]| {
                        // The gradient difference, then the Nesterov-corrected
                        // gradient, in the same buffer.
                        let _ = neg_pre_grad.g_add_(&grad);
                        let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                        let _ = exp_avg_diff.g_mul_scalar_(beta2);
                        let _ = exp_avg_diff.g_add_(&(&neg_pre_grad * (1.0 - beta2)));
                        let _ = neg_pre_grad.g_mul_scalar_(beta2);
                        let _ = neg_pre_grad.g_add_(&grad);
                        let _ = exp_avg_sq.g_mul_scalar_(beta3);
                        let _ = exp_avg_sq.addcmul_(&(&neg_pre_grad * (1.0 - beta3)), &neg_pre_grad);

                        let mut denom = exp_avg_sq.sqrt();
                        let _ = denom.g_div_scalar_(bias_correction3_sqrt);
                        let _ = denom.g_add_scalar_(eps);

                        let momentum_step = if caution {
                            let mut masked = exp_avg.copy();
                            apply_caution(&mut masked, &grad);
                            masked.g_mul_scalar_(-step_size)
                        } else {
                            &exp_avg * -step_size
                        };
                        if no_prox && decay != 0.0 {
                            let _ = param.g_mul_scalar_(1.0 - decay);
                        }
                        let _ = param.addcdiv_(&momentum_step, &denom);
                        let _ = param.addcdiv_(&(&exp_avg_diff * -step_size_diff), &denom);
                        if !no_prox && decay != 0.0 {
                            let _ = param.g_div_scalar_(1.0 + decay);
                        }
                        let _ = grad.neg_out(&neg_pre_grad);
                    };
                    // Caution's rescaling takes the mean over the whole tensor.
                    if caution {
                        update(tensors.map(Tensor::shallow_clone));
                    } else {
                        in_slices(tensors, update);
                    }
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.state
                .iter()
                .flatten()
                .flatten()
                .flat_map(|s| [&s.exp_avg, &s.exp_avg_sq, &s.exp_avg_diff, &s.neg_pre_grad]),
        )
    }
}

//! NovoGrad (Ginsburg et al., "Stochastic Gradient Methods with Layer-wise
//! Adaptive Moments for Training of Deep Networks", 2019): the gradient is
//! normalised by a running average of its squared norm (one scalar per
//! tensor), weight decay is added to the normalised gradient, and the sum
//! goes through momentum.

use tch::Tensor;

use super::adam::scalar_like;
use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// Per-parameter state, created at the parameter's first step.
struct NovoGradState {
    exp_avg: Tensor,
    /// Running average of the squared gradient norm (a 0-dim tensor, zero
    /// until a gradient with a non-zero norm arrives).
    exp_avg_sq: Tensor,
    /// Its running maximum, with `amsgrad`.
    max_exp_avg_sq: Option<Tensor>,
}

crate::saved_struct!(NovoGradState {
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq
});

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("novograd", NovoGrad::build);
}

/// NovoGrad, as `timm.optim.NvNovoGrad` (timm 1.0.31), `amsgrad`,
/// `grad_averaging`, `decoupled_decay` and `corrected_weight_decay`
/// included.
pub struct NovoGrad {
    groups: Vec<Group>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    grad_averaging: bool,
    amsgrad: bool,
    decoupled_decay: bool,
    /// The configured (peak) lr when `corrected_weight_decay` is on with
    /// `decoupled_decay`: the decay is then scaled by `lr^2 / max_lr`.
    max_lr: Option<f64>,
    state: Vec<Vec<Option<NovoGradState>>>,
}

impl NovoGrad {
    const HPARAMS: [&'static str; 9] = [
        "lr",
        "beta1",
        "beta2",
        "eps",
        "weight_decay",
        "grad_averaging",
        "amsgrad",
        "decoupled_decay",
        "corrected_weight_decay",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("novograd", hparams, &Self::HPARAMS)?;
        let lr = h.get("lr", Some(1e-3), POSITIVE)?;
        let beta1 = h.get("beta1", Some(0.95), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.98), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let grad_averaging = h.get("grad_averaging", Some(0.0), FLAG)? == 1.0;
        let amsgrad = h.get("amsgrad", Some(0.0), FLAG)? == 1.0;
        let decoupled_decay = h.get("decoupled_decay", Some(0.0), FLAG)? == 1.0;
        let corrected = h.get("corrected_weight_decay", Some(0.0), FLAG)? == 1.0;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(NovoGrad {
            groups,
            beta1,
            beta2,
            eps,
            grad_averaging,
            amsgrad,
            decoupled_decay,
            max_lr: corrected.then_some(lr),
            state,
        }))
    }
}

impl Optimizer for NovoGrad {
    crate::optimizer_state!(state);

    fn step(&mut self, lr: f64) {
        let (beta1, beta2) = (self.beta1, self.beta2);
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.state) {
                let lr = group.lr(lr);
                // timm keeps the unscaled peak lr as every group's max_lr.
                let wd_scale = self.max_lr.map_or(lr, |max_lr| lr * lr / max_lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let scalar = || Tensor::zeros([], (param.kind(), param.device()));
                    let state = state.get_or_insert_with(|| NovoGradState {
                        exp_avg: param.zeros_like(),
                        exp_avg_sq: scalar(),
                        max_exp_avg_sq: self.amsgrad.then(scalar),
                    });
                    let norm = grad.pow_tensor_scalar(2).sum(None);
                    // timm: copy the norm while the average is 0, else blend;
                    // chosen on the device to avoid a synchronisation.
                    let blended = &state.exp_avg_sq * beta2 + &norm * (1.0 - beta2);
                    state.exp_avg_sq = blended.where_self(&state.exp_avg_sq.ne(0.0), &norm);
                    let second_moment = match &mut state.max_exp_avg_sq {
                        Some(max) => {
                            *max = max.maximum(&state.exp_avg_sq);
                            &*max
                        }
                        None => &state.exp_avg_sq,
                    };
                    let denom = second_moment.sqrt() + self.eps;
                    let mut update = &grad / denom;
                    if *weight_decay != 0.0 {
                        if self.decoupled_decay {
                            let _ = param.g_mul_scalar_(1.0 - wd_scale * *weight_decay);
                        } else {
                            let _ = update.addcmul_(param, &scalar_like(*weight_decay, param));
                        }
                    }
                    let _ = state.exp_avg.g_mul_scalar_(beta1);
                    if self.grad_averaging {
                        // timm's update.mul_(1 - beta1) then add_, in one pass.
                        let _ = state
                            .exp_avg
                            .addcmul_(&update, &scalar_like(1.0 - beta1, param));
                    } else {
                        let _ = state.exp_avg.g_add_(&update);
                    }
                    let _ = param.addcmul_(&state.exp_avg, &scalar_like(-lr, param));
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.state.iter().flatten().flatten().flat_map(|s| {
            [&s.exp_avg, &s.exp_avg_sq]
                .into_iter()
                .chain(s.max_exp_avg_sq.as_ref())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::OptimizerRegistry;
    use super::*;

    /// With a zero gradient only the decay moves the weights; below the
    /// configured lr, corrected decay scales by lr^2 / max_lr, not lr.
    #[test]
    fn corrected_decoupled_decay_follows_the_schedule() {
        let p = param_with_grad(&[2.0, 1.0], &[0.0, 0.0]);
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "novograd",
                &hp(&[
                    ("lr", 0.1),
                    ("weight_decay", 0.5),
                    ("decoupled_decay", 1.0),
                    ("corrected_weight_decay", 1.0),
                    ("amsgrad", 1.0),
                ]),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap();
        opt.step(0.05);
        let v = values(&p);
        assert!((v[0] - 2.0 * (1.0 - 0.025 * 0.5)).abs() < 1e-15, "{v:?}");
        // exp_avg (2 values) plus the 0-dim second moment and its maximum
        assert_eq!(opt.state_bytes(), (2 + 1 + 1) * 8);
    }
}

//! AdaBound, as pytorch_optimizer's `AdaBound` (pytorch_optimizer 4.1.0):
//! Adam whose per-element step size is clipped into bounds that converge to
//! `final_lr`, turning it into SGD late in training.

use tch::Tensor;

use super::{
    pytorch_optimizer_weight_decay, tensor_bytes, Group, HparamReader, Hparams, OptimError,
    Optimizer, OptimizerRegistry, ParamSet, FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("adabound", AdaBound::build);
}

/// pytorch_optimizer's `AdaBound`. `final_lr` follows the schedule: at
/// learning rate `lr` the bounds converge to `final_lr * lr / base_lr`, where
/// `base_lr` is the configured `lr`.
pub struct AdaBound {
    groups: Vec<Group>,
    base_lr: f64,
    final_lr: f64,
    beta1: f64,
    beta2: f64,
    gamma: f64,
    weight_decouple: bool,
    fixed_decay: bool,
    ams_bound: bool,
    eps: f64,
    step: i32,
    /// Per parameter, created at its first step.
    state: Vec<Vec<Option<BoundState>>>,
}

struct BoundState {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Only with `ams_bound`.
    max_exp_avg_sq: Option<Tensor>,
}

crate::saved_struct!(BoundState {
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq
});

impl AdaBound {
    const HPARAMS: [&'static str; 13] = [
        "lr",
        "final_lr",
        "beta1",
        "beta2",
        "gamma",
        "weight_decay",
        "weight_decouple",
        "fixed_decay",
        "ams_bound",
        "eps",
        "maximize",
        "foreach",
        "adam_debias",
    ];

    /// pytorch_optimizer's `apply_ams_bound` adds this to the second moment
    /// before its square root.
    const EXP_AVG_SQ_EPS: f64 = 1e-15;

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("adabound", hparams, &Self::HPARAMS)?;
        h.only_default("maximize", 0.0)?;
        // The constructor swallows `adam_debias` into `**kwargs` without
        // storing it, so the reference never debiases only the denominator.
        h.only_default("adam_debias", 0.0)?;
        let base_lr = h.get("lr", None, POSITIVE)?;
        let final_lr = h.get("final_lr", Some(0.1), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let gamma = h.get("gamma", Some(1e-3), POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let weight_decouple = h.get("weight_decouple", Some(1.0), FLAG)? == 1.0;
        let fixed_decay = h.get("fixed_decay", Some(0.0), FLAG)? == 1.0;
        let ams_bound = h.get("ams_bound", Some(0.0), FLAG)? == 1.0;
        let eps = h.get("eps", Some(1e-8), NON_NEGATIVE)?;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(AdaBound {
            groups,
            base_lr,
            final_lr,
            beta1,
            beta2,
            gamma,
            weight_decouple,
            fixed_decay,
            ams_bound,
            eps,
            step: 0,
            state,
        }))
    }
}

impl Optimizer for AdaBound {
    crate::optimizer_state!(step, state);

    fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = f64::from(self.step);
        let bias_correction1 = 1.0 - self.beta1.powf(t);
        let bias_correction2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        let (beta1, beta2, eps, ams_bound) = (self.beta1, self.beta2, self.eps, self.ams_bound);
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.state) {
                let lr = group.lr(lr);
                let final_lr = self.final_lr * lr / self.base_lr;
                let lower_bound = final_lr * (1.0 - 1.0 / (self.gamma * t + 1.0));
                let upper_bound = final_lr * (1.0 + 1.0 / (self.gamma * t));
                // A 0-dim tensor, so `step_size / denom` is one division as in the
                // reference (its dtype follows the parameters', as a scalar's would).
                let step_size = Tensor::from(lr * bias_correction2_sqrt / bias_correction1);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                let weight_decay = *weight_decay;
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let mut grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    pytorch_optimizer_weight_decay(
                        param,
                        &mut grad,
                        lr,
                        weight_decay,
                        self.weight_decouple,
                        self.fixed_decay,
                    );
                    let BoundState {
                        exp_avg,
                        exp_avg_sq,
                        max_exp_avg_sq,
                    } = state.get_or_insert_with(|| BoundState {
                        exp_avg: param.zeros_like(),
                        exp_avg_sq: param.zeros_like(),
                        max_exp_avg_sq: ams_bound.then(|| param.zeros_like()),
                    });
                    let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                    let _ = exp_avg_sq.g_mul_scalar_(beta2);
                    let _ = exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                    let second = match max_exp_avg_sq.as_ref() {
                        Some(max) => max.maximum_out(max, exp_avg_sq),
                        None => exp_avg_sq.shallow_clone(),
                    };
                    // sqrt(v + 1e-15) + eps, then the bounded step size.
                    let mut update = second.g_add_scalar(Self::EXP_AVG_SQ_EPS);
                    let _ = update.sqrt_();
                    let _ = update.g_add_scalar_(eps);
                    let _ = step_size.div_out(&update, &update);
                    let _ = update.clamp_(lower_bound, upper_bound);
                    let _ = update.g_mul_(exp_avg);
                    let _ = param.g_sub_(&update);
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

    /// The recorded cases keep `lr` fixed; under a schedule the bounds scale
    /// with `lr / base_lr`, as the reference's `final_lr * lr / base_lr`.
    #[test]
    fn bounds_follow_the_scheduled_lr() {
        let p = param_with_grad(&[1.0], &[1.0]);
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "adabound",
                &hp(&[("lr", 1.0), ("final_lr", 0.1), ("gamma", 1.0)]),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap();
        // Step 1 at lr 0.5: the Adam step 0.5 * sqrt(1e-3) / 0.1 / sqrt(1e-3)
        // = 5 is clipped to the upper bound 0.05 * (1 + 1 / 1) = 0.1, times
        // the first moment 0.1.
        opt.step(0.5);
        assert!(
            (values(&p)[0] - (1.0 - 0.1 * 0.1)).abs() < 1e-12,
            "{:?}",
            values(&p)
        );
    }
}

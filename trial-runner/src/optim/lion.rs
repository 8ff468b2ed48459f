//! Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms",
//! NeurIPS 2023): the sign of an interpolated momentum, with decoupled
//! weight decay.

use tch::Tensor;

use super::caution::apply_caution;
use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("lion", Lion::build);
}

/// Lion, as `timm.optim.Lion` (timm 1.0.31), `caution` and
/// `corrected_weight_decay` included.
pub struct Lion {
    groups: Vec<Group>,
    beta1: f64,
    beta2: f64,
    caution: bool,
    /// The configured (peak) lr when `corrected_weight_decay` is on: the
    /// decay is then scaled by `lr^2 / max_lr` instead of `lr`.
    max_lr: Option<f64>,
    /// Momentum per parameter, zero-initialised at its first step.
    exp_avgs: Vec<Vec<Option<Tensor>>>,
}

impl Lion {
    const HPARAMS: [&'static str; 8] = [
        "lr",
        "beta1",
        "beta2",
        "weight_decay",
        "caution",
        "corrected_weight_decay",
        "maximize",
        "foreach",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("lion", hparams, &Self::HPARAMS)?;
        // `foreach` picks timm's kernels, not the result: any value is fine.
        h.only_default("maximize", 0.0)?;
        let lr = h.get("lr", Some(1e-4), POSITIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.99), UNIT_INTERVAL)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let caution = h.get("caution", Some(0.0), FLAG)? == 1.0;
        let corrected = h.get("corrected_weight_decay", Some(0.0), FLAG)? == 1.0;
        let groups = params.into_groups(weight_decay);
        let exp_avgs = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(Lion {
            groups,
            beta1,
            beta2,
            caution,
            max_lr: corrected.then_some(lr),
            exp_avgs,
        }))
    }
}

impl Optimizer for Lion {
    crate::optimizer_state!(exp_avgs);

    fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (group, exp_avgs) in self.groups.iter_mut().zip(&mut self.exp_avgs) {
                let lr = group.lr(lr);
                // timm keeps the unscaled peak lr as every group's max_lr.
                let wd_scale = self.max_lr.map_or(lr, |max_lr| lr * lr / max_lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, exp_avg) in params.iter_mut().zip(exp_avgs.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let exp_avg = exp_avg.get_or_insert_with(|| param.zeros_like());
                    if *weight_decay != 0.0 {
                        let _ = param.g_mul_scalar_(1.0 - wd_scale * *weight_decay);
                    }
                    let mut update = exp_avg.lerp(&grad, 1.0 - self.beta1);
                    let _ = update.sign_();
                    if self.caution {
                        apply_caution(&mut update, &grad);
                    }
                    let _ = update.g_mul_scalar_(-lr);
                    let _ = param.g_add_(&update);
                    let _ = exp_avg.lerp_(&grad, 1.0 - self.beta2);
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.exp_avgs.iter().flatten().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::OptimizerRegistry;
    use super::*;

    fn lion(hparams: &[(&str, f64)], p: &Tensor) -> Result<Box<dyn Optimizer>, OptimError> {
        OptimizerRegistry::builtin().build(
            "lion",
            &hp(hparams),
            ParamSet {
                decay: vec![p.shallow_clone()],
                no_decay: vec![],
                lower_layers: Vec::new(),
            },
        )
    }

    /// With a zero gradient only the decay moves the weights; below the
    /// configured lr, corrected decay scales by lr^2 / max_lr, not lr.
    #[test]
    fn corrected_weight_decay_scales_with_lr_over_peak() {
        let p = param_with_grad(&[2.0], &[0.0]);
        let hparams = [("lr", 0.1), ("weight_decay", 0.5)];
        let mut opt = lion(
            &[hparams[0], hparams[1], ("corrected_weight_decay", 1.0)],
            &p,
        )
        .unwrap();
        opt.step(0.05);
        assert!((values(&p)[0] - 2.0 * (1.0 - 0.025 * 0.5)).abs() < 1e-15);
        let q = param_with_grad(&[2.0], &[0.0]);
        let mut opt = lion(&hparams, &q).unwrap();
        opt.step(0.05);
        assert!((values(&q)[0] - 2.0 * (1.0 - 0.05 * 0.5)).abs() < 1e-15);
        assert_eq!(opt.state_bytes(), 8);
    }

    #[test]
    fn maximize_is_rejected_by_name() {
        let p = param_with_grad(&[1.0], &[1.0]);
        let err = lion(&[("lr", 1e-4), ("maximize", 1.0)], &p).err().unwrap();
        assert!(err.to_string().contains("`maximize` = 0"), "{err}");
        assert!(lion(&[("lr", 1e-4), ("foreach", 1.0)], &p).is_ok());
    }
}

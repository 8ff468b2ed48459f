//! AdamW, as `torch.optim.AdamW` (decoupled weight decay, bias correction).

use tch::Tensor;

use super::{
    tensor_bytes, HparamReader, Hparams, OptimError, Optimizer, ParamSet, NON_NEGATIVE, POSITIVE,
    TORCH_SWITCHES, UNIT_INTERVAL,
};

pub struct AdamW {
    groups: Vec<(Vec<Tensor>, f64)>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i32,
    /// First and second moments per parameter, zero-initialised lazily.
    moments: Vec<Vec<Option<(Tensor, Tensor)>>>,
}

impl AdamW {
    const HPARAMS: [&'static str; 6] = ["lr", "weight_decay", "beta1", "beta2", "eps", "amsgrad"];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("adamw", hparams, &known)?;
        h.torch_switches()?;
        h.only_default("amsgrad", 0.0)?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.01), NON_NEGATIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let groups = params.into_groups(weight_decay);
        let moments = groups
            .iter()
            .map(|(p, _)| p.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(AdamW {
            groups,
            beta1,
            beta2,
            eps,
            step: 0,
            moments,
        }))
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, lr: f64) {
        self.step += 1;
        let bias_correction1 = 1.0 - self.beta1.powi(self.step);
        let bias_correction2_sqrt = (1.0 - self.beta2.powi(self.step)).sqrt();
        let step_size = lr / bias_correction1;
        tch::no_grad(|| {
            for ((params, weight_decay), moments) in self.groups.iter_mut().zip(&mut self.moments) {
                for (param, moment) in params.iter_mut().zip(moments.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    if *weight_decay != 0.0 {
                        let _ = param.g_mul_scalar_(1.0 - lr * *weight_decay);
                    }
                    let (exp_avg, exp_avg_sq) =
                        moment.get_or_insert_with(|| (param.zeros_like(), param.zeros_like()));
                    let _ = exp_avg.lerp_(&grad, 1.0 - self.beta1);
                    let _ = exp_avg_sq.g_mul_scalar_(self.beta2);
                    let _ = exp_avg_sq.addcmul_(&(&grad * (1.0 - self.beta2)), &grad);
                    let denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + self.eps;
                    let _ = param.addcdiv_(&(&*exp_avg * -step_size), &denom);
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.moments
                .iter()
                .flatten()
                .flatten()
                .flat_map(|(m, v)| [m, v]),
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
}

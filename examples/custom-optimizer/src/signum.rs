//! The optimizer: one file implementing bocb's `Optimizer` trait.

use bocb_trial_runner::optim::{Group, Hparams, OptimError, Optimizer, ParamSet};
use tch::Tensor;

/// m = momentum * m + (1 - momentum) * g;  p = p * (1 - lr * wd) - lr * sign(m).
pub struct Signum {
    groups: Vec<Group>,
    momentum: f64,
    averages: Vec<Vec<Tensor>>,
}

impl Signum {
    /// The constructor bocb's registry calls with the trial's hyperparameters.
    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = ["lr", "weight_decay", "momentum"];
        if let Some(name) = hparams.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(OptimError::UnknownHparam {
                optimizer: "signum".into(),
                name: name.clone(),
                valid: known.join(", "),
            });
        }
        let weight_decay = hparams.get("weight_decay").copied().unwrap_or(0.0);
        let momentum = hparams.get("momentum").copied().unwrap_or(0.9);
        // The weight decay and lr scale of each group (decay and no-decay,
        // per layer under a recipe's `layer_decay`).
        let groups = params.into_groups(weight_decay);
        let averages = groups
            .iter()
            .map(|g| g.params.iter().map(Tensor::zeros_like).collect())
            .collect();
        Ok(Box::new(Signum {
            groups,
            momentum,
            averages,
        }))
    }
}

impl Optimizer for Signum {
    // The state a trial checkpoint saves, so interrupted trials continue.
    bocb_trial_runner::optimizer_state!(averages);

    fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (group, averages) in self.groups.iter_mut().zip(&mut self.averages) {
                let (lr, wd) = (group.lr(lr), &group.weight_decay);
                for (p, m) in group.params.iter_mut().zip(averages.iter_mut()) {
                    let g = p.grad();
                    if !g.defined() {
                        continue;
                    }
                    let _ = m.lerp_(&g, 1.0 - self.momentum);
                    if *wd != 0.0 {
                        let _ = p.g_mul_scalar_(1.0 - lr * *wd);
                    }
                    let _ = p.g_sub_(&(m.sign() * lr));
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        self.averages
            .iter()
            .flatten()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn steps_by_the_sign_of_the_momentum_average() {
        let p = Tensor::from_slice(&[1.0f64, -1.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[2.0f64, -0.5]))
            .sum(Kind::Double)
            .backward();
        let hparams = [("lr".to_string(), 0.1), ("weight_decay".to_string(), 0.5)].into();
        let params = ParamSet {
            decay: vec![p.shallow_clone()],
            no_decay: vec![],
            lower_layers: Vec::new(),
        };
        let mut opt = Signum::build(&hparams, params).unwrap();
        opt.step(0.1);
        // p * (1 - 0.05) - 0.1 * sign(0.1 * g)
        let got = Vec::<f64>::try_from(&p.detach()).unwrap();
        assert!(
            (got[0] - 0.85).abs() < 1e-12 && (got[1] + 0.85).abs() < 1e-12,
            "{got:?}"
        );
        assert_eq!(opt.state_bytes(), 16);
    }

    #[test]
    fn unknown_hyperparameters_are_named() {
        let hparams = [("beta2".to_string(), 0.9)].into();
        let err = Signum::build(&hparams, ParamSet::default()).err().unwrap();
        assert!(err.to_string().contains("`beta2`"), "{err}");
    }
}

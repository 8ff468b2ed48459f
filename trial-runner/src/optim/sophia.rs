//! Sophia with Hutchinson Hessian estimates, as pytorch_optimizer's `SophiaH`
//! (pytorch_optimizer 4.1.0): momentum divided element-wise by an EMA of the
//! Hessian diagonal, clipped to `[-p, p]`.

use tch::Tensor;

use super::{
    pytorch_optimizer_weight_decay, tensor_bytes, Group, HparamReader, Hparams, OptimError,
    Optimizer, OptimizerRegistry, ParamSet, FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// The noise of a Hutchinson estimate (`hessian_distribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HessianNoise {
    Gaussian,
    Rademacher,
}

impl HessianNoise {
    /// pytorch_optimizer's names, in the order of their numeric codes:
    /// `hessian_distribution` is 0 (`gaussian`) or 1 (`rademacher`).
    pub const NAMES: [&'static str; 2] = ["gaussian", "rademacher"];
}

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("sophia", SophiaH::build);
}

/// pytorch_optimizer's `SophiaH`. The reference estimates the Hessian itself
/// inside `step()` every `update_period` steps; here the trainer does (see
/// [`Optimizer::hessian_interval`]) and hands the estimate over with
/// [`Optimizer::set_hessian`], the equivalent of the reference's
/// `step(hessian=...)`: the Hessian EMA moves at the next step only.
/// `hessian_distribution` is numeric here: 0 (`gaussian`, the default) or
/// 1 (`rademacher`).
pub struct SophiaH {
    groups: Vec<Group>,
    beta1: f64,
    beta2: f64,
    weight_decouple: bool,
    fixed_decay: bool,
    p: f64,
    eps: f64,
    update_period: usize,
    num_samples: usize,
    noise: HessianNoise,
    /// A fresh estimate for the next step, flat in parameter order.
    pending: Option<Vec<Tensor>>,
    /// Per parameter, created at its first step.
    state: Vec<Vec<Option<SophiaState>>>,
}

struct SophiaState {
    momentum: Tensor,
    hessian_moment: Tensor,
}

crate::saved_struct!(SophiaState {
    momentum,
    hessian_moment
});

/// A whole number >= 1.
const COUNT: (fn(f64) -> bool, &str) = (
    |v| v >= 1.0 && v.fract() == 0.0 && v.is_finite(),
    "an integer >= 1",
);

impl SophiaH {
    const HPARAMS: [&'static str; 13] = [
        "lr",
        "beta1",
        "beta2",
        "weight_decay",
        "weight_decouple",
        "fixed_decay",
        "p",
        "update_period",
        "num_samples",
        "hessian_distribution",
        "eps",
        "maximize",
        "foreach",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("sophia", hparams, &Self::HPARAMS)?;
        h.only_default("maximize", 0.0)?;
        h.get("lr", None, POSITIVE)?;
        let beta1 = h.get("beta1", Some(0.96), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.99), UNIT_INTERVAL)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let weight_decouple = h.get("weight_decouple", Some(1.0), FLAG)? == 1.0;
        let fixed_decay = h.get("fixed_decay", Some(0.0), FLAG)? == 1.0;
        let p = h.get("p", Some(1e-2), NON_NEGATIVE)?;
        let update_period = h.get("update_period", Some(10.0), COUNT)? as usize;
        let num_samples = h.get("num_samples", Some(1.0), COUNT)? as usize;
        let noise = match h.get("hessian_distribution", Some(0.0), FLAG)? {
            0.0 => HessianNoise::Gaussian,
            _ => HessianNoise::Rademacher,
        };
        let eps = h.get("eps", Some(1e-12), NON_NEGATIVE)?;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(SophiaH {
            groups,
            beta1,
            beta2,
            weight_decouple,
            fixed_decay,
            p,
            eps,
            update_period,
            num_samples,
            noise,
            pending: None,
            state,
        }))
    }
}

impl Optimizer for SophiaH {
    crate::optimizer_state!(pending, state);

    fn step(&mut self, lr: f64) {
        let mut hessians = self.pending.take().map(Vec::into_iter);
        let (beta1, beta2, clip, eps) = (self.beta1, self.beta2, self.p, self.eps);
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.state) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                let weight_decay = *weight_decay;
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let hessian = hessians.as_mut().and_then(Iterator::next);
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
                    let SophiaState {
                        momentum,
                        hessian_moment,
                    } = state.get_or_insert_with(|| SophiaState {
                        momentum: grad.zeros_like(),
                        hessian_moment: grad.zeros_like(),
                    });
                    let _ = momentum.lerp_(&grad, 1.0 - beta1);
                    if let Some(hessian) = hessian {
                        let _ = hessian_moment.lerp_(&hessian, 1.0 - beta2);
                    }
                    let update = hessian_moment.clamp_min(eps);
                    let mut update = momentum.div_out(&update, &update);
                    let _ = update.clamp_(-clip, clip);
                    let _ = update.g_mul_scalar_(-lr);
                    let _ = param.g_add_(&update);
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        let moments = self
            .state
            .iter()
            .flatten()
            .flatten()
            .flat_map(|s| [&s.momentum, &s.hessian_moment]);
        tensor_bytes(moments.chain(self.pending.iter().flatten()))
    }

    fn hessian_interval(&self) -> Option<usize> {
        Some(self.update_period)
    }

    fn hessian_noise(&self) -> (usize, HessianNoise) {
        (self.num_samples, self.noise)
    }

    fn set_hessian(&mut self, estimate: &[Tensor]) {
        self.pending = Some(estimate.iter().map(Tensor::shallow_clone).collect());
    }
}

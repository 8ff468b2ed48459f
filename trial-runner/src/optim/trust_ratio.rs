//! Layer-wise trust-ratio optimizers: LAMB (You et al., ICLR 2020) and LARS
//! (You et al. 2017, with LARC clipping), as timm writes them. Each scales a
//! tensor's update by a ratio of the weight norm to the update (LAMB) or
//! gradient (LARS) norm; by default only tensors with weight decay are
//! adapted (`always_adapt` adapts all of them).

use tch::Tensor;

use super::adam::{scalar_like, update_square_avg_in};
use super::caution::apply_caution;
use super::slices::in_slices;
use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// `max_grad_norm`: timm's `None` (no clipping) is written as infinity.
const CLIP_NORM: (fn(f64) -> bool, &str) =
    (|v| v > 0.0, "> 0 (inf turns clipping off, as timm's None)");

/// `ratio` where both norms are positive, else 1 (timm's nested `where`).
fn guarded(ratio: Tensor, w_norm: &Tensor, g_norm: &Tensor) -> Tensor {
    ratio
        .where_scalarother(&g_norm.gt(0.0), 1.0)
        .where_scalarother(&w_norm.gt(0.0), 1.0)
}

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("lamb", Lamb::build);
    registry.register("lars", Lars::build);
}

/// LAMB, as `timm.optim.Lamb` (timm 1.0.31; its single-tensor path): Adam
/// moments of the globally clipped gradient, weight decay added to the
/// Adam step (or, with `decoupled_decay`, applied to the weights), and the
/// step scaled by `||w|| / ||step||`.
pub struct Lamb {
    groups: Vec<Group>,
    bias_correction: bool,
    beta1: f64,
    beta2: f64,
    eps: f64,
    grad_averaging: bool,
    /// Global gradient-norm clip; infinite when off.
    max_grad_norm: f64,
    trust_clip: bool,
    always_adapt: bool,
    caution: bool,
    decoupled_decay: bool,
    /// The configured (peak) lr when `corrected_weight_decay` is on with
    /// `decoupled_decay`: the decay is then scaled by `lr^2 / max_lr`.
    max_lr: Option<f64>,
    step: i32,
    /// First and second moments per parameter, zero-initialised lazily.
    moments: Vec<Vec<Option<(Tensor, Tensor)>>>,
}

impl Lamb {
    const HPARAMS: [&'static str; 14] = [
        "lr",
        "bias_correction",
        "beta1",
        "beta2",
        "eps",
        "weight_decay",
        "grad_averaging",
        "max_grad_norm",
        "trust_clip",
        "always_adapt",
        "caution",
        "decoupled_decay",
        "corrected_weight_decay",
        "foreach",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("lamb", hparams, &Self::HPARAMS)?;
        // `foreach` picks timm's kernels, not the result: any value is fine.
        let flag = |name: &str, default: f64| h.get(name, Some(default), FLAG).map(|v| v == 1.0);
        let lr = h.get("lr", Some(1e-3), POSITIVE)?;
        let bias_correction = flag("bias_correction", 1.0)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-6), POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.01), NON_NEGATIVE)?;
        let grad_averaging = flag("grad_averaging", 1.0)?;
        let max_grad_norm = h.get("max_grad_norm", Some(1.0), CLIP_NORM)?;
        let trust_clip = flag("trust_clip", 0.0)?;
        let always_adapt = flag("always_adapt", 0.0)?;
        let caution = flag("caution", 0.0)?;
        let decoupled_decay = flag("decoupled_decay", 0.0)?;
        let corrected = flag("corrected_weight_decay", 0.0)?;
        let groups = params.into_groups(weight_decay);
        let moments = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(Lamb {
            groups,
            bias_correction,
            beta1,
            beta2,
            eps,
            grad_averaging,
            max_grad_norm,
            trust_clip,
            always_adapt,
            caution,
            decoupled_decay,
            max_lr: (decoupled_decay && corrected).then_some(lr),
            step: 0,
            moments,
        }))
    }

    /// `max(||all gradients|| / max_grad_norm, 1)`, the divisor of every
    /// gradient; `None` when clipping is off or nothing has a gradient.
    fn clip_divisor(&self) -> Option<Tensor> {
        if self.max_grad_norm.is_infinite() {
            return None;
        }
        let norms: Vec<Tensor> = self
            .groups
            .iter()
            .flat_map(|group| &group.params)
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .map(|g| g.norm())
            .collect();
        if norms.is_empty() {
            return None;
        }
        Some((Tensor::stack(&norms, 0).norm() / self.max_grad_norm).clamp_min(1.0))
    }
}

impl Optimizer for Lamb {
    crate::optimizer_state!(step, moments);

    fn step(&mut self, lr: f64) {
        self.step += 1;
        let (beta1, beta2) = (self.beta1, self.beta2);
        let (bias_correction1, bias_correction2) = if self.bias_correction {
            let step = f64::from(self.step);
            (1.0 - beta1.powf(step), 1.0 - beta2.powf(step))
        } else {
            (1.0, 1.0)
        };
        let beta3 = if self.grad_averaging {
            1.0 - beta1
        } else {
            1.0
        };
        tch::no_grad(|| {
            let clip = self.clip_divisor();
            for (group, moments) in self.groups.iter_mut().zip(&mut self.moments) {
                let lr = group.lr(lr);
                // timm keeps the unscaled peak lr as every group's max_lr.
                let wd_scale = self.max_lr.map_or(lr, |max_lr| lr * lr / max_lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, moment) in params.iter_mut().zip(moments.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let (exp_avg, exp_avg_sq) =
                        moment.get_or_insert_with(|| (param.zeros_like(), param.zeros_like()));
                    let (eps, caution, decoupled_decay) =
                        (self.eps, self.caution, self.decoupled_decay);
                    let weight_decay = *weight_decay;
                    let mut update = param.empty_like();
                    let tensors = [&*param, &grad, &*exp_avg, &*exp_avg_sq, &update];
                    // Everything up to the trust ratio, whose norms need the
                    // whole update.
                    let adam_step =
                        |[mut param, grad, mut exp_avg, mut exp_avg_sq, mut update]: [Tensor;
                             5]| {
                            // Out of place: param.grad stays as it is.
                            let grad = match &clip {
                                Some(clip) => grad / clip,
                                None => grad,
                            };
                            if beta3 == 1.0 - beta1 {
                                let _ = exp_avg.lerp_(&grad, beta3);
                            } else {
                                // beta3 is 1 here
                                let _ = exp_avg.g_mul_scalar_(beta1);
                                let _ = exp_avg.g_add_(&grad);
                            }
                            // One buffer: the scratch of the second-moment update,
                            // then the denominator, then the update.
                            update_square_avg_in(&mut exp_avg_sq, &grad, beta2, &update);
                            let _ = exp_avg_sq.sqrt_out(&update);
                            // (exp_avg / bc1) / (sqrt / sqrt(bc2) + eps), with bc1
                            // folded into the denominator.
                            let _ =
                                update.g_mul_scalar_(bias_correction1 / bias_correction2.powf(0.5));
                            let _ = update.g_add_scalar_(eps * bias_correction1);
                            let _ = exp_avg.div_out(&update, &update);
                            if caution {
                                apply_caution(&mut update, &grad);
                            }
                            if weight_decay != 0.0 {
                                if decoupled_decay {
                                    let decay = scalar_like(-wd_scale * weight_decay, &param);
                                    let _ = param.addcmul_(&param.shallow_clone(), &decay);
                                } else {
                                    let _ =
                                        update.addcmul_(&param, &scalar_like(weight_decay, &param));
                                }
                            }
                        };
                    // Caution's rescaling takes the mean over the whole tensor.
                    if caution {
                        adam_step(tensors.map(Tensor::shallow_clone));
                    } else {
                        in_slices(tensors, adam_step);
                    }
                    if weight_decay != 0.0 || self.always_adapt {
                        let (w_norm, u_norm) = (param.norm(), update.norm());
                        let mut ratio = guarded(&w_norm / &u_norm, &w_norm, &u_norm);
                        if self.trust_clip {
                            ratio = ratio.clamp_max(1.0);
                        }
                        let _ = update.g_mul_(&ratio);
                    }
                    let _ = param.addcmul_(&update, &scalar_like(-lr, param));
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

/// LARS with optional LARC clipping, as `timm.optim.Lars` (timm 1.0.31; its
/// single-tensor path): the gradient plus L2 weight decay is scaled by
/// `trust_coeff * ||w|| / (||g|| + weight_decay * ||w|| + eps)` (with
/// `trust_clip`, by `min(that / lr, 1)`), then goes through SGD momentum.
pub struct Lars {
    groups: Vec<Group>,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    trust_coeff: f64,
    eps: f64,
    trust_clip: bool,
    always_adapt: bool,
    /// Momentum buffer per parameter, created at its first step from the
    /// adapted gradient.
    buffers: Vec<Vec<Option<Tensor>>>,
}

impl Lars {
    const HPARAMS: [&'static str; 10] = [
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "trust_coeff",
        "eps",
        "trust_clip",
        "always_adapt",
        "foreach",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let h = HparamReader::new("lars", hparams, &Self::HPARAMS)?;
        // `foreach` picks timm's kernels, not the result: any value is fine.
        h.get("lr", Some(1.0), POSITIVE)?;
        let momentum = h.get("momentum", Some(0.0), UNIT_INTERVAL)?;
        let dampening = h.get("dampening", Some(0.0), UNIT_INTERVAL)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let nesterov = h.get("nesterov", Some(0.0), FLAG)? == 1.0;
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(OptimError::OutOfRange {
                optimizer: "lars".into(),
                name: "nesterov".into(),
                value: 1.0,
                expected: "0 unless momentum > 0 and dampening = 0 (as timm's Lars)",
            });
        }
        let trust_coeff = h.get("trust_coeff", Some(0.001), POSITIVE)?;
        let eps = h.get("eps", Some(1e-8), NON_NEGATIVE)?;
        let trust_clip = h.get("trust_clip", Some(0.0), FLAG)? == 1.0;
        let always_adapt = h.get("always_adapt", Some(0.0), FLAG)? == 1.0;
        let groups = params.into_groups(weight_decay);
        let buffers = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(Lars {
            groups,
            momentum,
            dampening,
            nesterov,
            trust_coeff,
            eps,
            trust_clip,
            always_adapt,
            buffers,
        }))
    }
}

impl Optimizer for Lars {
    crate::optimizer_state!(buffers);

    fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (group, buffers) in self.groups.iter_mut().zip(&mut self.buffers) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                let weight_decay = *weight_decay;
                for (param, buffer) in params.iter_mut().zip(buffers.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    // LARS adaptation, out of place: param.grad stays as it is.
                    let adapted = (weight_decay != 0.0 || self.always_adapt).then(|| {
                        let (w_norm, g_norm) = (param.norm(), grad.norm());
                        let ratio = &w_norm * self.trust_coeff
                            / (&g_norm + &w_norm * weight_decay + self.eps);
                        let mut ratio = guarded(ratio, &w_norm, &g_norm);
                        if self.trust_clip {
                            ratio = ratio.g_div_scalar(lr).clamp_max(1.0);
                        }
                        // torch's grad.add_(p, alpha=weight_decay), one pass.
                        let mut adapted = grad.addcmul(param, &scalar_like(weight_decay, param));
                        let _ = adapted.g_mul_(&ratio);
                        adapted
                    });
                    let grad = adapted.as_ref().unwrap_or(&grad);
                    let direction = if self.momentum != 0.0 {
                        let buf = match buffer {
                            Some(buf) => {
                                let _ = buf.g_mul_scalar_(self.momentum);
                                if self.dampening == 0.0 {
                                    let _ = buf.g_add_(grad);
                                } else {
                                    let _ = buf
                                        .addcmul_(grad, &scalar_like(1.0 - self.dampening, param));
                                }
                                buf
                            }
                            None => buffer.insert(grad.copy()),
                        };
                        if self.nesterov {
                            grad.addcmul(buf, &scalar_like(self.momentum, param))
                        } else {
                            buf.shallow_clone()
                        }
                    } else {
                        grad.shallow_clone()
                    };
                    // torch's p.add_(direction, alpha=-lr), one pass.
                    let _ = param.addcmul_(&direction, &scalar_like(-lr, param));
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.buffers.iter().flatten().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::OptimizerRegistry;
    use super::*;

    fn run_lamb(max_grad_norm: f64, decay_lr: f64) -> Vec<f64> {
        let p = param_with_grad(&[1.0, -2.0, 0.5], &[30.0, -40.0, 5.0]);
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "lamb",
                &hp(&[
                    ("lr", 0.1),
                    ("max_grad_norm", max_grad_norm),
                    ("decoupled_decay", 1.0),
                    ("corrected_weight_decay", 1.0),
                ]),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap();
        for _ in 0..3 {
            opt.step(decay_lr);
        }
        values(&p)
    }

    /// timm's `max_grad_norm=None` is infinity here: the same as a bound
    /// above the gradient norm (50), and different from one below it.
    #[test]
    fn infinite_max_grad_norm_turns_clipping_off() {
        assert_eq!(run_lamb(f64::INFINITY, 0.1), run_lamb(1e6, 0.1));
        assert_ne!(run_lamb(f64::INFINITY, 0.1), run_lamb(10.0, 0.1));
    }

    /// Corrected decoupled decay depends on the scheduled lr squared.
    #[test]
    fn corrected_decay_follows_the_schedule() {
        let p = param_with_grad(&[2.0], &[0.0]);
        let mut opt = OptimizerRegistry::builtin()
            .build(
                "lamb",
                &hp(&[
                    ("lr", 0.1),
                    ("weight_decay", 0.5),
                    ("decoupled_decay", 1.0),
                    ("corrected_weight_decay", 1.0),
                ]),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap();
        // zero gradient: a zero Adam step, so only the decay moves w
        opt.step(0.05);
        assert!((values(&p)[0] - 2.0 * (1.0 - 0.025 * 0.5)).abs() < 1e-15);
    }
}

//! SGDP and AdamP (Heo et al., "Slowing Down the Weight Norm Increase in
//! Momentum-based Optimizers", ICLR 2021), as timm's `SGDP` and `AdamP`:
//! SGD-momentum and Adam whose update of a matrix or conv kernel loses its
//! radial component (along the weights) when the gradient is nearly
//! orthogonal to the weights, as happens for scale-invariant weights (those
//! followed by a normalisation layer). Such weights also get only
//! `wd_ratio` of the weight decay.

use tch::Tensor;

use super::adam::{scalar_like, update_square_avg_in};
use super::caution::apply_caution;
use super::slices::in_slices;
use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,
};

/// How a parameter is split into vectors whose directions are compared
/// with the gradient's: one per output channel, or the whole tensor.
#[derive(Clone, Copy)]
enum View {
    Channel,
    Layer,
}

/// The dot product of each row of two `[rows, len]` matrices.
fn row_dots(a: &Tensor, b: &Tensor) -> Tensor {
    (a * b).sum_dim_intlist(1, false, None)
}

/// The radial direction of a parameter in the view timm's test picked: the
/// parameter itself, and per view row `1 / (|row| + eps)^2`, shaped to
/// broadcast over it.
struct Radial {
    view: View,
    param: Tensor,
    inv_norm_sq: Tensor,
}

impl Radial {
    /// `x - unit * <unit, x>` per view row, `unit = row / (|row| + eps)`:
    /// `x` without its radial part. Computed as `x - row * <row, x> /
    /// (|row| + eps)^2`, which needs no unit-vector tensor.
    fn remove_from(&self, x: &mut Tensor) {
        let rows = |t: &Tensor| match self.view {
            View::Channel => t.reshape([t.size()[0], -1]),
            View::Layer => t.reshape([1, -1]),
        };
        let dots = row_dots(&rows(&self.param), &rows(x));
        let coef = -(dots.reshape(self.inv_norm_sq.size()) * &self.inv_norm_sq);
        let _ = x.addcmul_(&self.param, &coef);
    }
}

/// timm's `projection` (shared by SGDP and AdamP): `delta`, `wd_ratio` and
/// `eps` of the constructor.
struct Projection {
    delta: f64,
    wd_ratio: f64,
    eps: f64,
}

impl Projection {
    const HPARAMS: [&'static str; 3] = ["delta", "wd_ratio", "eps"];

    fn read(h: &HparamReader) -> Result<Self, OptimError> {
        Ok(Projection {
            delta: h.get("delta", Some(0.1), POSITIVE)?,
            wd_ratio: h.get("wd_ratio", Some(0.1), NON_NEGATIVE)?,
            eps: h.get("eps", Some(1e-8), POSITIVE)?,
        })
    }

    /// The first view (channel, then layer) in which every row's
    /// gradient-weight cosine is below `delta / sqrt(row length)`; only
    /// matrices and kernels are tested. The layer's dot product and norms
    /// are summed from the channels', so each tensor is read once.
    fn radial(&self, param: &Tensor, grad: &Tensor) -> Option<Radial> {
        if param.dim() <= 1 {
            return None;
        }
        let channels = param.size()[0];
        let param_rows = param.reshape([channels, -1]);
        let grad_rows = grad.reshape([channels, -1]);
        let dots = row_dots(&grad_rows, &param_rows);
        let param_sq = param_rows.square().sum_dim_intlist(1, false, None);
        let grad_sq = grad_rows.square().sum_dim_intlist(1, false, None);
        let numel = param.numel() as f64;
        let mut shape = vec![1i64; param.dim()];
        [
            (View::Channel, numel / channels as f64),
            (View::Layer, numel),
        ]
        .into_iter()
        .find_map(|(view, row_len)| {
            let (dots, param_sq, grad_sq) = match view {
                View::Channel => (
                    dots.shallow_clone(),
                    param_sq.shallow_clone(),
                    grad_sq.shallow_clone(),
                ),
                View::Layer => (dots.sum(None), param_sq.sum(None), grad_sq.sum(None)),
            };
            // torch's cosine_similarity: each norm clamped at eps.
            let param_norm = param_sq.sqrt();
            let norms = grad_sq.sqrt().clamp_min(self.eps) * param_norm.clamp_min(self.eps);
            let cosine = (dots / norms).abs();
            if cosine
                .max()
                .lt(self.delta / row_len.sqrt())
                .int64_value(&[])
                == 0
            {
                return None;
            }
            shape[0] = if matches!(view, View::Channel) {
                channels
            } else {
                1
            };
            let inv_norm_sq = (param_norm + self.eps).square().reciprocal();
            Some(Radial {
                view,
                param: param.shallow_clone(),
                inv_norm_sq: inv_norm_sq.reshape(shape.as_slice()),
            })
        })
    }

    /// Applies timm's `projection` (and caution) to `update` in place; the
    /// factor on the weight decay comes back.
    fn apply(
        &self,
        radial: Option<&Radial>,
        update: &mut Tensor,
        grad: &Tensor,
        caution: bool,
    ) -> f64 {
        match radial {
            Some(radial) => {
                radial.remove_from(update);
                if caution {
                    // Spherical caution: compare with the tangential gradient,
                    // then project again for numerical stability.
                    let mut tangential = grad.copy();
                    radial.remove_from(&mut tangential);
                    apply_caution(update, &tangential);
                    radial.remove_from(update);
                }
                self.wd_ratio
            }
            None => {
                if caution {
                    apply_caution(update, grad);
                }
                1.0
            }
        }
    }
}

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("sgdp", Sgdp::build);
    registry.register("adamp", AdamP::build);
}

/// SGDP, as `timm.optim.SGDP` (timm 1.0.31): SGD with momentum (zero-
/// initialised buffer), projection, and decoupled weight decay
/// `lr * weight_decay * wd_ratio / (1 - momentum)`.
pub struct Sgdp {
    groups: Vec<Group>,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    caution: bool,
    projection: Projection,
    /// Momentum buffer per parameter, zero-initialised at its first step.
    buffers: Vec<Vec<Option<Tensor>>>,
}

impl Sgdp {
    const HPARAMS: [&'static str; 6] = [
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "caution",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &Projection::HPARAMS].concat();
        let h = HparamReader::new("sgdp", hparams, &known)?;
        h.get("lr", None, POSITIVE)?;
        let momentum = h.get("momentum", Some(0.0), UNIT_INTERVAL)?;
        let dampening = h.get("dampening", Some(0.0), UNIT_INTERVAL)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let nesterov = h.get("nesterov", Some(0.0), FLAG)? == 1.0;
        let caution = h.get("caution", Some(0.0), FLAG)? == 1.0;
        let projection = Projection::read(&h)?;
        let groups = params.into_groups(weight_decay);
        let buffers = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(Sgdp {
            groups,
            momentum,
            dampening,
            nesterov,
            caution,
            projection,
            buffers,
        }))
    }
}

impl Optimizer for Sgdp {
    crate::optimizer_state!(buffers);

    fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (group, buffers) in self.groups.iter_mut().zip(&mut self.buffers) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, buffer) in params.iter_mut().zip(buffers.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let buf = buffer.get_or_insert_with(|| param.zeros_like());
                    let _ = buf.g_mul_scalar_(self.momentum);
                    if self.dampening == 0.0 {
                        let _ = buf.g_add_(&grad);
                    } else {
                        let _ = buf.addcmul_(&grad, &scalar_like(1.0 - self.dampening, param));
                    }
                    let radial = self.projection.radial(param, &grad);
                    // The buffer itself is the update unless something is
                    // about to change the update in place.
                    let mut update = if self.nesterov {
                        grad.addcmul(buf, &scalar_like(self.momentum, param))
                    } else if radial.is_some() || self.caution {
                        buf.copy()
                    } else {
                        buf.shallow_clone()
                    };
                    let wd_ratio =
                        self.projection
                            .apply(radial.as_ref(), &mut update, &grad, self.caution);
                    if *weight_decay != 0.0 {
                        let _ = param.g_mul_scalar_(
                            1.0 - lr * *weight_decay * wd_ratio / (1.0 - self.momentum),
                        );
                    }
                    let _ = param.addcmul_(&update, &scalar_like(-lr, param));
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.buffers.iter().flatten().flatten())
    }
}

/// AdamP, as `timm.optim.AdamP` (timm 1.0.31): Adam with bias correction,
/// optional Nesterov momentum, projection, and decoupled weight decay
/// `lr * weight_decay * wd_ratio`.
pub struct AdamP {
    groups: Vec<Group>,
    beta1: f64,
    beta2: f64,
    nesterov: bool,
    caution: bool,
    projection: Projection,
    /// Step count and first and second moments per parameter, created at
    /// its first step.
    state: Vec<Vec<Option<(i32, Tensor, Tensor)>>>,
}

impl AdamP {
    const HPARAMS: [&'static str; 6] = [
        "lr",
        "beta1",
        "beta2",
        "weight_decay",
        "nesterov",
        "caution",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &Projection::HPARAMS].concat();
        let h = HparamReader::new("adamp", hparams, &known)?;
        h.get("lr", Some(1e-3), POSITIVE)?;
        let beta1 = h.get("beta1", Some(0.9), UNIT_INTERVAL)?;
        let beta2 = h.get("beta2", Some(0.999), UNIT_INTERVAL)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let nesterov = h.get("nesterov", Some(0.0), FLAG)? == 1.0;
        let caution = h.get("caution", Some(0.0), FLAG)? == 1.0;
        let projection = Projection::read(&h)?;
        let groups = params.into_groups(weight_decay);
        let state = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(AdamP {
            groups,
            beta1,
            beta2,
            nesterov,
            caution,
            projection,
            state,
        }))
    }
}

impl Optimizer for AdamP {
    crate::optimizer_state!(state);

    fn step(&mut self, lr: f64) {
        let (beta1, beta2) = (self.beta1, self.beta2);
        tch::no_grad(|| {
            for (group, states) in self.groups.iter_mut().zip(&mut self.state) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                for (param, state) in params.iter_mut().zip(states.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let (step, exp_avg, exp_avg_sq) =
                        state.get_or_insert_with(|| (0, param.zeros_like(), param.zeros_like()));
                    *step += 1;
                    let bias_correction1 = 1.0 - beta1.powf(f64::from(*step));
                    let bias_correction2 = 1.0 - beta2.powf(f64::from(*step));

                    let step_size = lr / bias_correction1;
                    let (eps, nesterov) = (self.projection.eps, self.nesterov);
                    let mut update = param.empty_like();
                    // The Adam step; the projection that follows needs all of it.
                    let tensors = [&grad, &*exp_avg, &*exp_avg_sq, &update];
                    in_slices(tensors, |[grad, mut exp_avg, mut exp_avg_sq, mut update]| {
                        let one_minus_beta1 = scalar_like(1.0 - beta1, &grad);
                        let _ = exp_avg.g_mul_scalar_(beta1);
                        let _ = exp_avg.addcmul_(&grad, &one_minus_beta1);
                        // The scratch of the second-moment update becomes the
                        // denominator.
                        let mut denom = grad.empty_like();
                        update_square_avg_in(&mut exp_avg_sq, &grad, beta2, &denom);
                        let _ = exp_avg_sq.sqrt_out(&denom);
                        let _ = denom.g_div_scalar_(bias_correction2.sqrt());
                        let _ = denom.g_add_scalar_(eps);
                        if nesterov {
                            let _ = exp_avg.mul_scalar_out(&update, beta1);
                            let _ = update.addcmul_(&grad, &one_minus_beta1);
                            let _ = update.g_div_(&denom);
                        } else {
                            let _ = exp_avg.div_out(&update, &denom);
                        }
                    });
                    let radial = self.projection.radial(param, &grad);
                    let wd_ratio =
                        self.projection
                            .apply(radial.as_ref(), &mut update, &grad, self.caution);
                    if *weight_decay > 0.0 {
                        let _ = param.g_mul_scalar_(1.0 - lr * *weight_decay * wd_ratio);
                    }
                    let _ = param.addcmul_(&update, &scalar_like(-step_size, param));
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
                .flat_map(|(_, m, v)| [m, v]),
        )
    }
}

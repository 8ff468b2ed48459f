//! Adaptive learning rate without momentum (the paper's category d), as
//! `torch.optim`: Adagrad, Adadelta and RMSprop, all with coupled (L2)
//! weight decay.

use tch::Tensor;

use super::adam::{l2_grad, scalar_like, update_square_avg_in, PerParam};
use super::slices::in_slices;
use super::{
    tensor_bytes, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet, FLAG,
    NON_NEGATIVE, POSITIVE, TORCH_SWITCHES, UNIT_INTERVAL,
};

/// torch's range for Adadelta's `rho` and (with its `alpha >= 0`, capped at
/// 1 here where the average would stop being one) RMSprop's `alpha`.
const CLOSED_UNIT_INTERVAL: (fn(f64) -> bool, &str) = (|v| (0.0..=1.0).contains(&v), "in [0, 1]");

/// torch's `param.addcdiv_(grad, denom, value=value)`, rounded as torch
/// does (`param + value * (grad / denom)`); `denom` is overwritten with the
/// quotient.
fn addcdiv_value(param: &mut Tensor, grad: &Tensor, denom: &Tensor, value: f64) {
    let _ = grad.div_out(denom, denom);
    let _ = param.addcmul_(denom, &scalar_like(value, param));
}

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("adagrad", Adagrad::build);
    registry.register("adadelta", Adadelta::build);
    registry.register("rmsprop", RmsProp::build);
}

/// Adagrad, as `torch.optim.Adagrad`: the step is divided by the root of the
/// summed squared gradients (which start at `initial_accumulator_value`), at
/// a learning rate decayed as `lr / (1 + (t - 1) * lr_decay)`.
pub struct Adagrad {
    params: PerParam<AdagradState>,
    lr_decay: f64,
    eps: f64,
}

struct AdagradState {
    step: i32,
    sum: Tensor,
}

crate::saved_struct!(AdagradState { step, sum });

impl Adagrad {
    const HPARAMS: [&'static str; 5] = [
        "lr",
        "weight_decay",
        "lr_decay",
        "initial_accumulator_value",
        "eps",
    ];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("adagrad", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let lr_decay = h.get("lr_decay", Some(0.0), NON_NEGATIVE)?;
        let initial = h.get("initial_accumulator_value", Some(0.0), NON_NEGATIVE)?;
        let eps = h.get("eps", Some(1e-10), POSITIVE)?;
        // torch fills the sums in its constructor.
        let mut params = PerParam::new(params, weight_decay);
        params.init_all(|p| AdagradState {
            step: 0,
            sum: p.full_like(initial),
        });
        Ok(Box::new(Adagrad {
            params,
            lr_decay,
            eps,
        }))
    }
}

impl Optimizer for Adagrad {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let Adagrad { lr_decay, eps, .. } = *self;
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.as_mut().expect("Adagrad state is created at build");
                s.step += 1;
                let clr = lr / (1.0 + (f64::from(s.step) - 1.0) * lr_decay);
                in_slices([&*param, &grad, &s.sum], |[mut param, grad, mut sum]| {
                    let grad = l2_grad(grad, &param, weight_decay);
                    let _ = sum.addcmul_(&grad, &grad);
                    let mut std = sum.sqrt();
                    let _ = std.g_add_scalar_(eps);
                    addcdiv_value(&mut param, &grad, &std, -clr);
                });
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.params.states().map(|s| &s.sum))
    }
}

/// Adadelta, as `torch.optim.Adadelta`: the step is the gradient scaled by
/// the ratio of the running RMS of past updates to that of the gradients,
/// times `lr` (torch's default 1).
pub struct Adadelta {
    params: PerParam<AdadeltaState>,
    rho: f64,
    eps: f64,
}

struct AdadeltaState {
    square_avg: Tensor,
    acc_delta: Tensor,
}

crate::saved_struct!(AdadeltaState {
    square_avg,
    acc_delta
});

impl Adadelta {
    const HPARAMS: [&'static str; 4] = ["lr", "weight_decay", "rho", "eps"];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("adadelta", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let rho = h.get("rho", Some(0.9), CLOSED_UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-6), POSITIVE)?;
        Ok(Box::new(Adadelta {
            params: PerParam::new(params, weight_decay),
            rho,
            eps,
        }))
    }
}

impl Optimizer for Adadelta {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let Adadelta { rho, eps, .. } = *self;
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.get_or_insert_with(|| AdadeltaState {
                    square_avg: param.zeros_like(),
                    acc_delta: param.zeros_like(),
                });
                let tensors = [&*param, &grad, &s.square_avg, &s.acc_delta];
                in_slices(
                    tensors,
                    |[mut param, grad, mut square_avg, mut acc_delta]| {
                        let grad = l2_grad(grad, &param, weight_decay);
                        let mut std = grad.empty_like();
                        update_square_avg_in(&mut square_avg, &grad, rho, &std);
                        let _ = square_avg.add_scalar_out(&std, eps);
                        let _ = std.sqrt_();
                        let mut delta = &acc_delta + eps;
                        let _ = delta.sqrt_();
                        let _ = delta.g_div_(&std);
                        let _ = delta.g_mul_(&grad);
                        // `std` is spent; it takes the scaled delta.
                        update_square_avg_in(&mut acc_delta, &delta, rho, &std);
                        let _ = param.addcmul_(&delta, &scalar_like(-lr, &param));
                    },
                );
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.params
                .states()
                .flat_map(|s| [&s.square_avg, &s.acc_delta]),
        )
    }
}

/// RMSprop, as `torch.optim.RMSprop`: the gradient divided by the running RMS
/// of gradients (`alpha` its smoothing); `centered` subtracts the squared
/// running mean first, `momentum` > 0 adds a heavy-ball buffer.
pub struct RmsProp {
    params: PerParam<RmsPropState>,
    alpha: f64,
    eps: f64,
    momentum: f64,
    centered: bool,
}

struct RmsPropState {
    square_avg: Tensor,
    /// With `momentum` > 0 only.
    momentum_buffer: Option<Tensor>,
    /// With `centered` only.
    grad_avg: Option<Tensor>,
}

crate::saved_struct!(RmsPropState {
    square_avg,
    momentum_buffer,
    grad_avg
});

impl RmsProp {
    const HPARAMS: [&'static str; 6] =
        ["lr", "weight_decay", "alpha", "eps", "momentum", "centered"];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("rmsprop", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let alpha = h.get("alpha", Some(0.99), CLOSED_UNIT_INTERVAL)?;
        let eps = h.get("eps", Some(1e-8), POSITIVE)?;
        let momentum = h.get("momentum", Some(0.0), UNIT_INTERVAL)?;
        let centered = h.get("centered", Some(0.0), FLAG)? == 1.0;
        Ok(Box::new(RmsProp {
            params: PerParam::new(params, weight_decay),
            alpha,
            eps,
            momentum,
            centered,
        }))
    }
}

impl Optimizer for RmsProp {
    crate::optimizer_state!(params);

    fn step(&mut self, lr: f64) {
        let RmsProp {
            alpha,
            eps,
            momentum,
            centered,
            ..
        } = *self;
        self.params
            .update(lr, |param, grad, weight_decay, lr, state| {
                let s = state.get_or_insert_with(|| RmsPropState {
                    square_avg: param.zeros_like(),
                    momentum_buffer: (momentum > 0.0).then(|| param.zeros_like()),
                    grad_avg: centered.then(|| param.zeros_like()),
                });
                // Absent buffers are stood in for by `square_avg`, never touched.
                let buffer = s.momentum_buffer.as_ref().unwrap_or(&s.square_avg);
                let grad_avg = s.grad_avg.as_ref().unwrap_or(&s.square_avg);
                let tensors = [&*param, &grad, &s.square_avg, buffer, grad_avg];
                in_slices(
                    tensors,
                    |[mut param, grad, mut square_avg, mut buffer, mut grad_avg]| {
                        let grad = l2_grad(grad, &param, weight_decay);
                        // The scratch of the square_avg update becomes `avg`.
                        let mut avg = grad.empty_like();
                        update_square_avg_in(&mut square_avg, &grad, alpha, &avg);
                        if centered {
                            let _ = grad_avg.lerp_(&grad, 1.0 - alpha);
                            // square_avg - grad_avg^2, as torch's addcmul(value=-1)
                            let _ = grad_avg.square_out(&avg);
                            let _ = square_avg.sub_out(&avg, &avg);
                            let _ = avg.sqrt_();
                        } else {
                            let _ = square_avg.sqrt_out(&avg);
                        }
                        let _ = avg.g_add_scalar_(eps);
                        if momentum > 0.0 {
                            let _ = buffer.g_mul_scalar_(momentum);
                            let _ = buffer.addcdiv_(&grad, &avg);
                            let _ = param.addcmul_(&buffer, &scalar_like(-lr, &param));
                        } else {
                            addcdiv_value(&mut param, &grad, &avg, -lr);
                        }
                    },
                );
            });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.params
                .states()
                .flat_map(|s| {
                    [
                        Some(&s.square_avg),
                        s.momentum_buffer.as_ref(),
                        s.grad_avg.as_ref(),
                    ]
                })
                .flatten(),
        )
    }
}

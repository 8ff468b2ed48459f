//! SGD with momentum, as `torch.optim.SGD` (coupled weight decay, optional
//! dampening and Nesterov momentum).

use tch::{Device, Kind, Tensor};

use super::{
    tensor_bytes, Group, HparamReader, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
    FLAG, NON_NEGATIVE, POSITIVE, TORCH_SWITCHES, UNIT_INTERVAL,
};

/// Registers this file's optimizers under their registry names.
pub(super) fn register(registry: &mut OptimizerRegistry) {
    registry.register("sgd_m", SgdMomentum::build);
}

pub struct SgdMomentum {
    groups: Vec<Group>,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    /// One buffer per parameter, created at its first step from the gradient.
    buffers: Vec<Vec<Option<Tensor>>>,
    /// libtorch's fused kernel instead of the per-tensor ops (on CUDA).
    fused: bool,
}

impl SgdMomentum {
    const HPARAMS: [&'static str; 5] = ["lr", "weight_decay", "momentum", "dampening", "nesterov"];

    pub fn build(hparams: &Hparams, params: ParamSet) -> Result<Box<dyn Optimizer>, OptimError> {
        let known = [Self::HPARAMS.as_slice(), &TORCH_SWITCHES].concat();
        let h = HparamReader::new("sgd_m", hparams, &known)?;
        h.torch_switches()?;
        h.get("lr", None, POSITIVE)?;
        let weight_decay = h.get("weight_decay", Some(0.0), NON_NEGATIVE)?;
        let momentum = h.get("momentum", Some(0.0), UNIT_INTERVAL)?;
        let dampening = h.get("dampening", Some(0.0), UNIT_INTERVAL)?;
        let nesterov = h.get("nesterov", Some(0.0), FLAG)? == 1.0;
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(OptimError::OutOfRange {
                optimizer: "sgd_m".into(),
                name: "nesterov".into(),
                value: 1.0,
                expected: "0 unless momentum > 0 and dampening = 0 (as torch.optim.SGD)",
            });
        }
        let fused = super::fused::wanted(&params);
        let groups = params.into_groups(weight_decay);
        let buffers = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        Ok(Box::new(SgdMomentum {
            groups,
            momentum,
            dampening,
            nesterov,
            buffers,
            fused,
        }))
    }
}

impl Optimizer for SgdMomentum {
    crate::optimizer_state!(buffers);

    fn step(&mut self, lr: f64) {
        if self.fused {
            for (group, buffers) in self.groups.iter().zip(&mut self.buffers) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&group.params, &group.weight_decay);
                super::fused::sgd_step(
                    params,
                    buffers,
                    *weight_decay,
                    self.momentum,
                    self.dampening,
                    self.nesterov,
                    lr,
                );
            }
            return;
        }
        tch::no_grad(|| {
            for (group, buffers) in self.groups.iter_mut().zip(&mut self.buffers) {
                let lr = group.lr(lr);
                let (params, weight_decay) = (&mut group.params, &group.weight_decay);
                let mut factors: Option<Factors> = None;
                for (param, buffer) in params.iter_mut().zip(buffers.iter_mut()) {
                    let grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let key = (param.kind(), param.device());
                    let f = match factors {
                        Some(ref f) if f.key == key => f,
                        _ => factors.insert(Factors::new(
                            key,
                            lr,
                            *weight_decay,
                            self.momentum,
                            self.dampening,
                        )),
                    };
                    // torch: grad.add(param, alpha=weight_decay), a new
                    // tensor; the parameter's own .grad is left alone.
                    let mut update = if *weight_decay != 0.0 {
                        grad.addcmul(param, &f.weight_decay)
                    } else {
                        grad
                    };
                    if self.momentum != 0.0 {
                        let buf = match buffer {
                            Some(buf) => {
                                let _ = buf.g_mul_scalar_(self.momentum);
                                let _ = if self.dampening == 0.0 {
                                    buf.g_add_(&update)
                                } else {
                                    buf.addcmul_(&update, &f.one_minus_dampening)
                                };
                                buf
                            }
                            None => buffer.insert(update.detach().copy()),
                        };
                        update = if self.nesterov {
                            update.addcmul(buf, &f.momentum)
                        } else {
                            buf.shallow_clone()
                        };
                    }
                    let _ = param.addcmul_(&update, &f.neg_lr);
                }
            }
        });
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(self.buffers.iter().flatten().flatten())
    }
}

/// One step's scalar factors as 0-dim tensors of the parameters' dtype and
/// device. `x.addcmul_(y, factor)` is torch's fused `x.add_(y, alpha=a)`,
/// whose `alpha` tch does not expose: one pass over memory and no temporary,
/// where `x.sub_(y * a)` takes two and allocates. They live on the
/// parameters' device, filled there (no host-to-device copy), because torch
/// accepts a CPU scalar beside CUDA tensors in binary ops only.
struct Factors {
    key: (Kind, Device),
    neg_lr: Tensor,
    weight_decay: Tensor,
    one_minus_dampening: Tensor,
    momentum: Tensor,
}

impl Factors {
    fn new(key: (Kind, Device), lr: f64, weight_decay: f64, momentum: f64, dampening: f64) -> Self {
        let scalar = |value: f64| Tensor::scalar_tensor(value, key);
        Factors {
            key,
            neg_lr: scalar(-lr),
            weight_decay: scalar(weight_decay),
            one_minus_dampening: scalar(1.0 - dampening),
            momentum: scalar(momentum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::OptimizerRegistry;
    use super::*;

    fn sgd(hparams: &[(&str, f64)], p: &Tensor) -> Box<dyn Optimizer> {
        OptimizerRegistry::builtin()
            .build(
                "sgd_m",
                &hp(hparams),
                ParamSet {
                    decay: vec![p.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                },
            )
            .unwrap()
    }

    /// Hand-computed torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01).
    #[test]
    fn matches_torch_momentum_with_weight_decay() {
        let p = param_with_grad(&[1.0, -2.0], &[0.5, 0.25]);
        let mut opt = sgd(
            &[("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.01)],
            &p,
        );
        // step 1: d = g + 0.01 p = [0.51, 0.23]; buf = d; p -= 0.1 d
        opt.step(0.1);
        let p1 = [1.0 - 0.051, -2.0 - 0.023];
        let v = values(&p);
        assert!((v[0] - p1[0]).abs() < 1e-12 && (v[1] - p1[1]).abs() < 1e-12);
        // step 2 (same grad): d = g + 0.01 p1; buf = 0.9 [0.51, 0.23] + d
        opt.step(0.1);
        let d = [0.5 + 0.01 * p1[0], 0.25 + 0.01 * p1[1]];
        let buf = [0.9 * 0.51 + d[0], 0.9 * 0.23 + d[1]];
        let v = values(&p);
        assert!((v[0] - (p1[0] - 0.1 * buf[0])).abs() < 1e-12);
        assert!((v[1] - (p1[1] - 0.1 * buf[1])).abs() < 1e-12);
        assert_eq!(opt.state_bytes(), 2 * 8);
    }

    #[test]
    fn nesterov_adds_momentum_lookahead() {
        let p = param_with_grad(&[0.0], &[1.0]);
        let mut opt = sgd(&[("lr", 1.0), ("momentum", 0.5), ("nesterov", 1.0)], &p);
        opt.step(1.0); // buf = 1; update = 1 + 0.5 = 1.5
        assert!((values(&p)[0] + 1.5).abs() < 1e-12);
        opt.step(1.0); // buf = 1.5; update = 1 + 0.75
        assert!((values(&p)[0] + 3.25).abs() < 1e-12);
    }

    #[test]
    fn nesterov_without_momentum_is_rejected() {
        let err = OptimizerRegistry::builtin()
            .build(
                "sgd_m",
                &hp(&[("lr", 1.0), ("nesterov", 1.0)]),
                ParamSet::default(),
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("nesterov"), "{err}");
    }
}

//! libtorch's fused optimizer kernels, what `torch.optim` runs with
//! `fused=True`: one launch updates a whole parameter group. On CUDA the
//! per-tensor path costs several kernel launches per parameter, which is
//! most of a small model's optimizer step, so SGD and the Adam family (Adam,
//! AdamW) take this path there. On the CPU the per-tensor path stays: it is
//! the one the recorded reference cases check to float64 precision.

use std::ffi::CStr;

use tch::{Device, Tensor};
use torch_sys::C_tensor;

use super::{
    tensor_bytes, Group, OptimError, Optimizer, ParamSet, Saved, StateReader, StateTensors,
};

extern "C" {
    fn bocb_fused_sgd(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        buffers: *const *const C_tensor,
        n: usize,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        dampening: f64,
        nesterov: bool,
        first_step: bool,
    ) -> i32;
    fn bocb_fused_adam(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        exp_avgs: *const *const C_tensor,
        exp_avg_sqs: *const *const C_tensor,
        max_exp_avg_sqs: *const *const C_tensor,
        steps: *const *const C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        amsgrad: bool,
        decoupled: bool,
    ) -> i32;
    fn bocb_fused_last_error() -> *const std::ffi::c_char;
}

/// Whether `params` take the fused path: on CUDA.
pub(super) fn wanted(params: &ParamSet) -> bool {
    let mut tensors = params.tensors().peekable();
    tensors.peek().is_some() && tensors.all(|p| matches!(p.device(), Device::Cuda(_)))
}

fn handles(tensors: &[Tensor]) -> Vec<*const C_tensor> {
    tensors.iter().map(Tensor::as_ptr).collect()
}

/// Panics with the kernel's message, as tch's own ops do on failure.
fn check(status: i32, what: &str) {
    if status != 0 {
        // SAFETY: the shim keeps a NUL-terminated message per thread.
        let message = unsafe { CStr::from_ptr(bocb_fused_last_error()) };
        panic!("{what}: {}", message.to_string_lossy());
    }
}

/// torch.optim.SGD's step over one group, fused; `buffers` are its
/// momentum buffers (filled from the gradients at their first step).
#[allow(clippy::too_many_arguments)]
pub(super) fn sgd_step(
    params: &[Tensor],
    buffers: &mut [Option<Tensor>],
    weight_decay: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    lr: f64,
) {
    // The parameters with a gradient, split by whether their buffer exists:
    // torch's kernel takes a first step for all of a call's buffers or none.
    let (mut fresh, mut later) = (Vec::new(), Vec::new());
    for (i, param) in params.iter().enumerate() {
        let grad = param.grad();
        if grad.defined() {
            if buffers[i].is_some() || momentum == 0.0 {
                later.push((i, grad));
            } else {
                fresh.push((i, grad));
            }
        }
    }
    for (with_grads, first_step) in [(fresh, true), (later, false)] {
        if with_grads.is_empty() {
            continue;
        }
        let (indices, grads): (Vec<usize>, Vec<Tensor>) = with_grads.into_iter().unzip();
        let group: Vec<Tensor> = indices.iter().map(|&i| params[i].shallow_clone()).collect();
        let bufs: Vec<Tensor> = if momentum == 0.0 {
            Vec::new()
        } else {
            indices
                .iter()
                .map(|&i| {
                    buffers[i]
                        .get_or_insert_with(|| params[i].empty_like())
                        .shallow_clone()
                })
                .collect()
        };
        // SAFETY: every handle lives until the call returns; lengths match
        // (the shim reads no buffer when momentum is 0).
        let status = tch::no_grad(|| unsafe {
            bocb_fused_sgd(
                handles(&group).as_ptr(),
                handles(&grads).as_ptr(),
                handles(&bufs).as_ptr(),
                group.len(),
                weight_decay,
                momentum,
                lr,
                dampening,
                nesterov,
                first_step,
            )
        });
        check(status, "fused SGD step");
    }
}

/// torch.optim.Adam (coupled weight decay) or AdamW (`decoupled`) with
/// `fused=True`: per parameter its moments and a float step count on its
/// device, as torch keeps them.
pub(super) struct FusedAdam {
    pub(super) groups: Vec<Group>,
    pub(super) beta1: f64,
    pub(super) beta2: f64,
    pub(super) eps: f64,
    pub(super) amsgrad: bool,
    pub(super) decoupled: bool,
    states: Vec<Vec<Option<FusedAdamState>>>,
}

/// The key of [`Adam`](super::adam::Adam)'s state, which the fused state
/// is saved under as well.
const PORTABLE_KEY: &str = "params";

struct FusedAdamState {
    step: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor,
}

/// Saved as the per-tensor [`Adam`](super::adam::Adam) saves its state
/// (a whole step count, the maximum only with amsgrad), so that a
/// checkpoint taken on CUDA resumes on the CPU and the other way round.
impl Saved for FusedAdamState {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        // torch counts in float32, exact up to 2^24 steps.
        let step = f64::try_from(&self.step).expect("a 0-dim step count") as i32;
        step.write_state(&format!("{key}.step"), out);
        self.exp_avg.write_state(&format!("{key}.exp_avg"), out);
        self.exp_avg_sq
            .write_state(&format!("{key}.exp_avg_sq"), out);
        if self.max_exp_avg_sq.numel() > 0 {
            self.max_exp_avg_sq
                .write_state(&format!("{key}.max_exp_avg_sq"), out);
        }
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        let step = i32::read_state(&format!("{key}.step"), from)?;
        let exp_avg = Tensor::read_state(&format!("{key}.exp_avg"), from)?;
        let exp_avg_sq = Tensor::read_state(&format!("{key}.exp_avg_sq"), from)?;
        let max_exp_avg_sq = Option::<Tensor>::read_state(&format!("{key}.max_exp_avg_sq"), from)?
            .unwrap_or_else(|| Tensor::empty([0], (exp_avg.kind(), exp_avg.device())));
        Ok(FusedAdamState {
            step: Tensor::from(step as f32).to_device(exp_avg.device()),
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
        })
    }
}

impl FusedAdam {
    pub(super) fn new(
        groups: Vec<Group>,
        (beta1, beta2, eps): (f64, f64, f64),
        amsgrad: bool,
        decoupled: bool,
    ) -> Self {
        let states = groups
            .iter()
            .map(|g| g.params.iter().map(|_| None).collect())
            .collect();
        FusedAdam {
            groups,
            beta1,
            beta2,
            eps,
            amsgrad,
            decoupled,
            states,
        }
    }
}

impl Optimizer for FusedAdam {
    // Under the per-tensor Adam's key too.
    fn export_state(&self) -> Result<StateTensors, OptimError> {
        let mut out = Vec::new();
        self.states.write_state(PORTABLE_KEY, &mut out);
        Ok(out)
    }

    fn import_state(&mut self, from: &StateReader) -> Result<(), OptimError> {
        self.states.read_state_into(PORTABLE_KEY, from)
    }

    fn step(&mut self, lr: f64) {
        for (group, states) in self.groups.iter().zip(&mut self.states) {
            let lr = group.lr(lr);
            let (params, weight_decay) = (&group.params, &group.weight_decay);
            let mut lists: [Vec<Tensor>; 6] = Default::default();
            for (param, state) in params.iter().zip(states.iter_mut()) {
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let s = state.get_or_insert_with(|| FusedAdamState {
                    step: Tensor::zeros([], (tch::Kind::Float, param.device())),
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                    // Unread without amsgrad: an empty tensor costs nothing.
                    max_exp_avg_sq: if self.amsgrad {
                        param.zeros_like()
                    } else {
                        Tensor::empty([0], (param.kind(), param.device()))
                    },
                });
                for (list, tensor) in lists.iter_mut().zip([
                    param,
                    &grad,
                    &s.exp_avg,
                    &s.exp_avg_sq,
                    &s.max_exp_avg_sq,
                    &s.step,
                ]) {
                    list.push(tensor.shallow_clone());
                }
            }
            if lists[0].is_empty() {
                continue;
            }
            let h = lists.each_ref().map(|l| handles(l));
            // SAFETY: every handle lives until the call returns; all six
            // lists have one entry per parameter.
            let status = tch::no_grad(|| unsafe {
                bocb_fused_adam(
                    h[0].as_ptr(),
                    h[1].as_ptr(),
                    h[2].as_ptr(),
                    h[3].as_ptr(),
                    h[4].as_ptr(),
                    h[5].as_ptr(),
                    lists[0].len(),
                    lr,
                    self.beta1,
                    self.beta2,
                    *weight_decay,
                    self.eps,
                    self.amsgrad,
                    self.decoupled,
                )
            });
            check(status, "fused Adam step");
        }
    }

    fn state_bytes(&self) -> usize {
        tensor_bytes(
            self.states
                .iter()
                .flatten()
                .flatten()
                .flat_map(|s| [&s.exp_avg, &s.exp_avg_sq, &s.max_exp_avg_sq]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::OptimizerRegistry;
    use super::*;
    use tch::Kind;

    /// Two float64 parameters (one with decay, one without) and their copies.
    /// Values come from `seed` alone, not libtorch's global generator, which
    /// tests running beside this one draw from too.
    fn twin_params(seed: i64) -> ([Tensor; 2], [Tensor; 2]) {
        let make = |n: i64| {
            let values: Vec<f64> = (0..n)
                .map(|k| (((k + 1) * (seed + 5) * 37) % 23) as f64 / 11.5 - 1.0)
                .collect();
            let p = Tensor::from_slice(&values).set_requires_grad(true);
            let twin = p.detach().copy().set_requires_grad(true);
            (p, twin)
        };
        let ((a, a2), (b, b2)) = (make(12), make(5));
        ([a, b], [a2, b2])
    }

    fn set_same_grads(step: usize, params: &[&Tensor]) {
        for (i, p) in params.iter().enumerate() {
            let n = p.numel();
            let grad: Vec<f64> = (0..n)
                .map(|k| ((k * 7 + i * 3 + step * 11) % 13) as f64 / 6.5 - 1.0)
                .collect();
            set_grad(p, &grad);
        }
    }

    fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
        let (a, b) = (values(a), values(b));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                "{what}: {a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn fused_sgd_matches_the_per_tensor_path() {
        for (momentum, dampening, nesterov) in [
            (0.9, 0.0, 0.0),
            (0.9, 0.1, 0.0),
            (0.8, 0.0, 1.0),
            (0.0, 0.0, 0.0),
        ] {
            let (ours, fused) = twin_params(1);
            let hparams = hp(&[
                ("lr", 0.1),
                ("weight_decay", 0.01),
                ("momentum", momentum),
                ("dampening", dampening),
                ("nesterov", nesterov),
            ]);
            let set = |p: &[Tensor; 2]| ParamSet {
                decay: vec![p[0].shallow_clone()],
                no_decay: vec![p[1].shallow_clone()],
                lower_layers: Vec::new(),
            };
            let mut per_tensor = OptimizerRegistry::builtin()
                .build("sgd_m", &hparams, set(&ours))
                .unwrap();
            let mut buffers = [vec![None], vec![None]];
            for step in 0..4 {
                set_same_grads(step, &[&ours[0], &ours[1]]);
                set_same_grads(step, &[&fused[0], &fused[1]]);
                let lr = 0.1 / (step + 1) as f64;
                per_tensor.step(lr);
                for (i, weight_decay) in [(0, 0.01), (1, 0.0)] {
                    let group = [fused[i].shallow_clone()];
                    sgd_step(
                        &group,
                        &mut buffers[i],
                        weight_decay,
                        momentum,
                        dampening,
                        nesterov == 1.0,
                        lr,
                    );
                }
            }
            for i in 0..2 {
                assert_close(
                    &ours[i],
                    &fused[i],
                    &format!("momentum {momentum}, nesterov {nesterov}"),
                );
            }
        }
    }

    #[test]
    fn fused_adam_and_adamw_match_the_per_tensor_path() {
        for (name, amsgrad, decoupled) in [
            ("adam", 0.0, false),
            ("adam", 1.0, false),
            ("adamw", 0.0, true),
            ("adamw", 1.0, true),
        ] {
            let (ours, fused) = twin_params(2);
            let hparams = hp(&[
                ("lr", 1e-2),
                ("weight_decay", 0.05),
                ("amsgrad", amsgrad),
                ("beta1", 0.8),
            ]);
            let set = |p: &[Tensor; 2]| ParamSet {
                decay: vec![p[0].shallow_clone()],
                no_decay: vec![p[1].shallow_clone()],
                lower_layers: Vec::new(),
            };
            let mut per_tensor = OptimizerRegistry::builtin()
                .build(name, &hparams, set(&ours))
                .unwrap();
            let groups = set(&fused).into_groups(0.05);
            let mut fused_opt =
                FusedAdam::new(groups, (0.8, 0.999, 1e-8), amsgrad == 1.0, decoupled);
            for step in 0..4 {
                set_same_grads(step, &[&ours[0], &ours[1]]);
                set_same_grads(step, &[&fused[0], &fused[1]]);
                let lr = 1e-2 / (step + 1) as f64;
                per_tensor.step(lr);
                fused_opt.step(lr);
            }
            for i in 0..2 {
                assert_close(&ours[i], &fused[i], &format!("{name}, amsgrad {amsgrad}"));
            }
            assert_eq!(fused_opt.state_bytes(), per_tensor.state_bytes(), "{name}");
        }
    }

    /// A checkpoint's optimizer state moves between the fused path (CUDA)
    /// and the per-tensor one (CPU) both ways: saved after two steps on one
    /// and restored into the other, four steps end where four steps on the
    /// per-tensor path alone do. (libtorch's fused kernel runs on the CPU
    /// too, which this test uses.)
    #[test]
    fn fused_adam_state_resumes_on_the_per_tensor_path_and_back() {
        for (name, amsgrad, decoupled) in [("adam", 1.0, false), ("adamw", 0.0, true)] {
            let hparams = hp(&[("lr", 1e-2), ("weight_decay", 0.05), ("amsgrad", amsgrad)]);
            let set = |p: &[Tensor; 2]| ParamSet {
                decay: vec![p[0].shallow_clone()],
                no_decay: vec![p[1].shallow_clone()],
                lower_layers: Vec::new(),
            };
            let per_tensor = |p: &[Tensor; 2]| {
                OptimizerRegistry::builtin()
                    .build(name, &hparams, set(p))
                    .unwrap()
            };
            let fused = |p: &[Tensor; 2]| -> Box<dyn Optimizer> {
                Box::new(FusedAdam::new(
                    set(p).into_groups(0.05),
                    (0.9, 0.999, 1e-8),
                    amsgrad == 1.0,
                    decoupled,
                ))
            };
            let steps = |opt: &mut Box<dyn Optimizer>, p: &[Tensor; 2], range| {
                for step in range {
                    set_same_grads(step, &[&p[0], &p[1]]);
                    opt.step(1e-2);
                }
            };
            let (whole, _) = twin_params(3);
            let mut alone = per_tensor(&whole);
            steps(&mut alone, &whole, 0..4);
            type Build<'a> = &'a dyn Fn(&[Tensor; 2]) -> Box<dyn Optimizer>;
            let ways: [(Build, Build); 2] = [(&fused, &per_tensor), (&per_tensor, &fused)];
            for (first, then) in ways {
                let (p, _) = twin_params(3);
                let mut before = first(&p);
                steps(&mut before, &p, 0..2);
                let saved: std::collections::BTreeMap<String, Tensor> =
                    before.export_state().unwrap().into_iter().collect();
                let mut after = then(&p);
                after
                    .import_state(&StateReader::new(&saved, Device::Cpu))
                    .unwrap();
                let again: std::collections::BTreeSet<String> = after
                    .export_state()
                    .unwrap()
                    .into_iter()
                    .map(|(key, _)| key)
                    .collect();
                assert!(again.iter().eq(saved.keys()), "{name}: {again:?}");
                steps(&mut after, &p, 2..4);
                for i in 0..2 {
                    assert_close(&p[i], &whole[i], &format!("{name}, amsgrad {amsgrad}"));
                }
            }
        }
    }

    #[test]
    fn only_cuda_parameters_take_the_fused_path() {
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let set = ParamSet {
            decay: vec![p],
            no_decay: vec![],
            lower_layers: Vec::new(),
        };
        assert!(!wanted(&set));
        assert!(!wanted(&ParamSet {
            decay: vec![],
            no_decay: vec![],
            lower_layers: Vec::new(),
        }));
        if tch::Cuda::is_available() {
            let q = Tensor::zeros([2], (Kind::Float, Device::Cuda(0)));
            assert!(wanted(&ParamSet {
                decay: vec![q],
                no_decay: vec![],
                lower_layers: Vec::new(),
            }));
        }
    }
}

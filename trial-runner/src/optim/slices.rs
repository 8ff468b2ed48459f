//! Elementwise updates run slice by slice on CPU. An update of several
//! passes over a large tensor streams every intermediate through main memory;
//! over slices small enough for the cache only the parameter, its gradient
//! and its state are read and written from memory, once per step. The
//! arithmetic of each element is unchanged, so results are identical.

use tch::{Device, Tensor};

/// Elements per slice on CPU: the handful of tensors an update touches, at
/// 256Ki elements each, stay in a server CPU's last-level cache; each op
/// still splits over ATen's threads (grain 32Ki), and a 25M-parameter step
/// makes about a hundred slices, so per-op overhead stays small.
const CPU_SLICE: i64 = 1 << 18;

/// Calls `update` with matching slices of `tensors` (views, so in-place
/// changes land in the tensors). On CPU, when all are contiguous and of one
/// size, the slices are flat runs of [`CPU_SLICE`] elements; otherwise (on
/// an accelerator, where every op is a kernel launch, or with strided
/// tensors) `update` runs once with the whole tensors.
pub(super) fn in_slices<const N: usize>(
    tensors: [&Tensor; N],
    mut update: impl FnMut([Tensor; N]),
) {
    let numel = tensors[0].numel();
    let sliceable = tensors[0].device() == Device::Cpu
        && numel > CPU_SLICE as usize
        && tensors
            .iter()
            .all(|t| t.numel() == numel && t.is_contiguous());
    if !sliceable {
        update(tensors.map(Tensor::shallow_clone));
        return;
    }
    let flat = tensors.map(|t| t.view(-1));
    let numel = numel as i64;
    let mut start = 0;
    while start < numel {
        let len = CPU_SLICE.min(numel - start);
        update(std::array::from_fn(|i| flat[i].narrow(0, start, len)));
        start += len;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hp;
    use super::super::{OptimizerRegistry, ParamSet};
    use super::*;
    use tch::Kind;

    /// A three-slice tensor and a small one: each element is updated once,
    /// through views, whatever the slicing.
    #[test]
    fn updates_every_element_once_in_place() {
        for numel in [3 * CPU_SLICE + 17, 5] {
            let target = Tensor::zeros([numel], (Kind::Double, Device::Cpu));
            let source = Tensor::arange(numel, (Kind::Double, Device::Cpu));
            let mut calls = 0;
            in_slices([&target, &source], |[mut t, s]| {
                let _ = t.g_add_(&s);
                let _ = t.g_add_scalar_(1.0);
                calls += 1;
            });
            assert_eq!(calls, (numel + CPU_SLICE - 1) / CPU_SLICE);
            let expected = Tensor::arange(numel, (Kind::Double, Device::Cpu)) + 1.0;
            assert!(target.equal(&expected));
        }
    }

    /// A transposed (strided) tensor cannot be sliced flat: it is updated whole.
    #[test]
    fn strided_tensors_are_updated_whole() {
        let rows = CPU_SLICE / 256 + 3;
        let base = Tensor::zeros([rows, 384], (Kind::Float, Device::Cpu));
        let target = base.tr();
        let source = Tensor::ones([384, rows], (Kind::Float, Device::Cpu));
        let mut calls = 0;
        in_slices([&target, &source], |[mut t, s]| {
            let _ = t.g_add_(&s);
            calls += 1;
        });
        assert_eq!(calls, 1);
        assert!(base.equal(&Tensor::ones([rows, 384], (Kind::Float, Device::Cpu))));
    }

    /// The optimizers that update in slices give what they give on the same
    /// values stored transposed (which they update whole), up to rounding.
    #[test]
    fn sliced_updates_match_whole_ones() {
        let registry = OptimizerRegistry::builtin();
        // More than one slice, and not a whole number of them.
        let shape = [CPU_SLICE / 256 + 3, 384];
        let start = crate::seeding::draw(|| Tensor::randn(shape, (Kind::Double, Device::Cpu)));
        let grads: Vec<Tensor> = (0..3)
            .map(|_| crate::seeding::draw(|| Tensor::randn(shape, (Kind::Double, Device::Cpu))))
            .collect();
        for name in [
            "adam", "adamw", "adamax", "nadam", "radam", "adamp", "lamb", "adan", "adagrad",
            "adadelta", "rmsprop",
        ] {
            let contiguous = start.copy().set_requires_grad(true);
            // Same values and shape, column-major storage.
            let strided = start.tr().contiguous().tr().set_requires_grad(true);
            assert!(!strided.is_contiguous());
            // Adadelta's steps are about sqrt(eps) times lr.
            let lr = if name == "adadelta" { 1.0 } else { 1e-2 };
            let mut finals = Vec::new();
            for param in [contiguous, strided] {
                let hparams = hp(&[("lr", lr), ("weight_decay", 0.1)]);
                let set = ParamSet {
                    decay: vec![param.shallow_clone()],
                    no_decay: vec![],
                    lower_layers: Vec::new(),
                };
                let mut optimizer = registry.build(name, &hparams, set).unwrap();
                for grad in &grads {
                    // Materialise .grad with the parameter's layout, then set it.
                    (&param * grad).sum(Kind::Double).backward();
                    tch::no_grad(|| param.grad().copy_(grad));
                    optimizer.step(lr);
                }
                finals.push(param.detach());
            }
            let moved = (&finals[0] - &start).abs().max().double_value(&[]);
            let gap = (&finals[0] - &finals[1]).abs().max().double_value(&[]);
            assert!(moved > 1e-3, "{name} did not move the parameter");
            assert!(
                gap <= 1e-12 * moved,
                "{name}: sliced and whole differ by {gap}"
            );
        }
    }
}

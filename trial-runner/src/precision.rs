//! The arithmetic a trial trains in (fp32, or bf16 autocast) and
//! deterministic kernels: ATen settings tch does not expose, reached through
//! the small C shim in `csrc/aten_settings.cpp`.

use std::fmt;

pub use bocb_spec::PrecisionChoice;
use tch::Device;

extern "C" {
    fn bocb_autocast_enter(cuda: bool) -> i32;
    fn bocb_autocast_exit(cuda: bool, was_enabled: bool) -> i32;
    fn bocb_set_deterministic(on: bool) -> i32;
    fn bocb_deterministic() -> bool;
}

/// What a trial trains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// Forward passes under autocast to bfloat16; weights, gradients and
    /// optimizer state stay float32 (no loss scaling needed, unlike fp16).
    Bf16,
}

impl Precision {
    /// The name trials record (`fp32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Runs `f` (a forward pass, and the loss) in this precision on `device`.
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> T {
        if self == Precision::Fp32 {
            return f();
        }
        let cuda = device.is_cuda();
        // SAFETY: plain C functions of the shim, touching thread-local state.
        let was_enabled = unsafe { bocb_autocast_enter(cuda) };
        assert!(was_enabled >= 0, "libtorch refused to enter bf16 autocast");
        let result = f();
        let exited = unsafe { bocb_autocast_exit(cuda, was_enabled == 1) };
        assert_eq!(exited, 0, "libtorch refused to leave bf16 autocast");
        result
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `choice` trains in on `device`: `auto` is bf16 on CUDA where the
/// recipe allows it.
pub fn resolve_precision(
    choice: PrecisionChoice,
    device: Device,
    recipe_allows_bf16: bool,
) -> Precision {
    match choice {
        PrecisionChoice::Fp32 => Precision::Fp32,
        PrecisionChoice::Bf16 => Precision::Bf16,
        PrecisionChoice::Auto if device.is_cuda() && recipe_allows_bf16 => Precision::Bf16,
        PrecisionChoice::Auto => Precision::Fp32,
    }
}

/// Switches deterministic algorithms on or off for the whole process
/// (`torch.use_deterministic_algorithms`, deterministic cuDNN). On CUDA,
/// cuBLAS also needs `CUBLAS_WORKSPACE_CONFIG=:4096:8` in the environment
/// before the first CUDA call, which `bocb` sets at start.
pub fn set_deterministic(on: bool) {
    // SAFETY: a plain C function of the shim; ATen's context is thread-safe.
    let status = unsafe { bocb_set_deterministic(on) };
    assert_eq!(
        status, 0,
        "libtorch refused to set deterministic algorithms"
    );
}

/// Whether deterministic algorithms are on.
pub fn deterministic() -> bool {
    // SAFETY: a plain C getter of the shim.
    unsafe { bocb_deterministic() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn bf16_runs_matmuls_in_bfloat16_and_only_inside() {
        let a = Tensor::ones([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([8, 2], (Kind::Float, Device::Cpu));
        let inside = Precision::Bf16.run(Device::Cpu, || a.matmul(&b));
        assert_eq!(inside.kind(), Kind::BFloat16);
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        // Nested regions leave autocast as they found it.
        let nested = Precision::Bf16.run(Device::Cpu, || {
            Precision::Bf16.run(Device::Cpu, || ());
            a.matmul(&b)
        });
        assert_eq!(nested.kind(), Kind::BFloat16);
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        let fp32 = Precision::Fp32.run(Device::Cpu, || a.matmul(&b));
        assert_eq!(fp32.kind(), Kind::Float);
    }

    #[test]
    fn auto_means_bf16_on_cuda_when_the_recipe_allows_it() {
        let cuda = Device::Cuda(0);
        assert_eq!(
            resolve_precision(PrecisionChoice::Auto, cuda, true),
            Precision::Bf16
        );
        assert_eq!(
            resolve_precision(PrecisionChoice::Auto, cuda, false),
            Precision::Fp32
        );
        assert_eq!(
            resolve_precision(PrecisionChoice::Auto, Device::Cpu, true),
            Precision::Fp32
        );
        assert_eq!(
            resolve_precision(PrecisionChoice::Bf16, Device::Cpu, false),
            Precision::Bf16
        );
    }
}

//! Where a trial runs.

use std::cell::RefCell;

pub use bocb_spec::device::{DeviceChoice, DeviceList, DEVICE_LIST_FORMS};
use tch::Device;

/// What a [`DeviceChoice`] stands for on this machine (only libtorch knows
/// which devices exist).
pub trait ResolveDevice: Sized {
    /// The tch device, or an error when CUDA was asked for and is not there.
    fn resolve(self) -> Result<Device, String>;

    /// The concrete choice this one stands for on this machine: `auto`
    /// becomes `cuda:0` or `cpu`; an error as [`ResolveDevice::resolve`]'s.
    fn resolve_choice(self) -> Result<DeviceChoice, String>;
}

impl ResolveDevice for DeviceChoice {
    fn resolve(self) -> Result<Device, String> {
        match self {
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(index) => {
                let available = tch::Cuda::device_count() as usize;
                if index < available {
                    Ok(Device::Cuda(index))
                } else if available == 0 {
                    Err(format!(
                        "device cuda:{index} was asked for but libtorch sees no CUDA device; use `cpu` or `auto`"
                    ))
                } else {
                    Err(format!(
                        "device cuda:{index} was asked for but only {available} CUDA device(s) exist (cuda:0..cuda:{})",
                        available - 1
                    ))
                }
            }
        }
    }

    fn resolve_choice(self) -> Result<DeviceChoice, String> {
        Ok(match self.resolve()? {
            Device::Cuda(index) => DeviceChoice::Cuda(index),
            _ => DeviceChoice::Cpu,
        })
    }
}

extern "C" {
    fn bocb_cuda_use_pool_stream(index: i8) -> i64;
    fn bocb_cuda_synchronize_current_stream(index: i8) -> i32;
}

/// Where a thread's device work is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkStream {
    /// The CPU has no queue: work runs in the calling thread.
    Inline,
    /// A stream of libtorch's CUDA pool (by its id), current for this thread.
    Cuda { device: usize, id: i64 },
}

thread_local! {
    /// The pool stream this thread took on each CUDA device.
    static OWN_STREAMS: RefCell<Vec<(usize, i64)>> = const { RefCell::new(Vec::new()) };
}

/// Gives this thread its own stream on `device`, so that trials training in
/// different threads of one GPU overlap: on libtorch's default stream their
/// kernels would run one after another. A thread keeps its stream for good
/// (later calls return it), so tensors a trial thread made earlier are never
/// read from another stream. The CPU needs none.
pub fn use_own_stream(device: Device) -> Result<WorkStream, String> {
    let Device::Cuda(index) = device else {
        return Ok(WorkStream::Inline);
    };
    OWN_STREAMS.with_borrow_mut(|streams| {
        if let Some(&(_, id)) = streams.iter().find(|(d, _)| *d == index) {
            return Ok(WorkStream::Cuda { device: index, id });
        }
        let ordinal = i8::try_from(index).map_err(|_| format!("no CUDA device {index}"))?;
        // SAFETY: a plain C function of the shim; it reports failure as -1.
        let id = unsafe { bocb_cuda_use_pool_stream(ordinal) };
        if id < 0 {
            return Err(format!("libtorch gave no CUDA stream on cuda:{index}"));
        }
        streams.push((index, id));
        Ok(WorkStream::Cuda { device: index, id })
    })
}

/// Waits until all work queued on `device` is done, every stream's
/// (`torch.cuda.synchronize`); nothing to wait for on the CPU.
pub fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Waits until the work this thread queued on `device` is done: its current
/// stream on CUDA (other threads' streams run on), nothing on the CPU.
pub fn synchronize_own_stream(device: Device) {
    if let Device::Cuda(index) = device {
        if let Ok(ordinal) = i8::try_from(index) {
            // SAFETY: a plain C function of the shim; failure is -1 and only
            // means there was nothing to wait for on a device we cannot use.
            unsafe { bocb_cuda_synchronize_current_stream(ordinal) };
        }
    }
}

/// A device's name as bocb prints and records it (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        Device::Cpu => "cpu".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_work_runs_inline_in_every_thread() {
        assert_eq!(use_own_stream(Device::Cpu), Ok(WorkStream::Inline));
        assert_eq!(use_own_stream(Device::Cpu), Ok(WorkStream::Inline));
        let other = std::thread::spawn(|| use_own_stream(Device::Cpu)).join();
        assert_eq!(other.unwrap(), Ok(WorkStream::Inline));
        synchronize_own_stream(Device::Cpu);
        if tch::Cuda::is_available() {
            let first = use_own_stream(Device::Cuda(0)).unwrap();
            assert!(matches!(first, WorkStream::Cuda { device: 0, id } if id != 0));
            assert_eq!(
                use_own_stream(Device::Cuda(0)),
                Ok(first),
                "a thread keeps its stream"
            );
        }
    }

    #[test]
    fn cpu_always_resolves() {
        assert_eq!(DeviceChoice::Cpu.resolve(), Ok(Device::Cpu));
        assert_eq!(DeviceChoice::Cpu.resolve_choice(), Ok(DeviceChoice::Cpu));
        let auto = DeviceChoice::Auto.resolve_choice().unwrap();
        assert_eq!(auto.resolve(), Ok(Device::cuda_if_available()));
    }
}

//! Peak memory of a trial: on the CPU the process's resident-set high-water
//! mark (`VmHWM` of `/proc/self/status`), on CUDA the caching allocator's
//! peak of allocated bytes (`torch.cuda.max_memory_allocated`), read through
//! the shim in `csrc/aten_settings.cpp`; and a CUDA device's free memory
//! (`csrc/device_memory.cpp`).

use std::fs;

use tch::{Cuda, Device};

extern "C" {
    fn bocb_cuda_reset_peak(index: i8) -> i32;
    fn bocb_cuda_peak_allocated(index: i8) -> i64;
    fn bocb_cuda_free_bytes(index: i8, release_idle: bool) -> i64;
}

/// Measures the peak memory of a device from the moment it is started.
/// Trials sharing a device or the process at once share the reading.
pub struct PeakMemory;

impl PeakMemory {
    /// Starts the peak of `device` afresh: the allocator's statistics on
    /// CUDA; the process's high-water mark on the CPU (Linux's `clear_refs`
    /// value 5; where the kernel refuses, the reading covers the whole
    /// process).
    pub fn start(device: Device) -> Self {
        match cuda_index(device) {
            // SAFETY: a plain C function of the shim, for a device that exists.
            Some(index) => unsafe {
                bocb_cuda_reset_peak(index);
            },
            None => {
                let _ = fs::write("/proc/self/clear_refs", "5");
            }
        }
        PeakMemory
    }

    /// The peak in bytes since `start`; `None` where it cannot be read (no
    /// `/proc`, a CUDA device this machine lacks, other devices).
    pub fn read(&self, device: Device) -> Option<u64> {
        match (device, cuda_index(device)) {
            (Device::Cpu, _) => resident_high_water_mark(),
            // SAFETY: a plain C function of the shim, for a device that exists.
            (_, Some(index)) => u64::try_from(unsafe { bocb_cuda_peak_allocated(index) }).ok(),
            _ => None,
        }
    }
}

/// Bytes free on a CUDA device as its driver reports them
/// (`torch.cuda.mem_get_info()[0]`), once the caching allocator has returned
/// its idle blocks when `release_idle`; `None` on other devices, a CUDA
/// device this machine lacks, or a failed reading.
pub fn free_bytes(device: Device, release_idle: bool) -> Option<u64> {
    let index = cuda_index(device)?;
    // SAFETY: a plain C function of the shim, for a device that exists.
    u64::try_from(unsafe { bocb_cuda_free_bytes(index, release_idle) }).ok()
}

/// The index of a CUDA device this machine has.
pub(crate) fn cuda_index(device: Device) -> Option<i8> {
    match device {
        Device::Cuda(index) if Cuda::is_available() && index < Cuda::device_count() as usize => {
            i8::try_from(index).ok()
        }
        _ => None,
    }
}

/// `VmHWM` in bytes.
fn resident_high_water_mark() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn the_peak_covers_memory_touched_after_the_start() {
        let peak = PeakMemory::start(Device::Cpu);
        let Some(before) = peak.read(Device::Cpu) else {
            return; // no /proc on this system
        };
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = peak.read(Device::Cpu).unwrap();
        assert!(after >= before && after >= 64 << 20, "{before} {after}");
        assert_eq!(block.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 << 20);
    }

    /// On a machine with a GPU, a 64 MiB tensor raises the allocator's
    /// peak by that much; without one, CUDA readings are `None`.
    #[test]
    fn the_cuda_peak_is_the_allocators() {
        let cuda = Device::Cuda(0);
        let peak = PeakMemory::start(cuda);
        if !Cuda::is_available() {
            assert_eq!(peak.read(cuda), None);
            return;
        }
        let before = peak.read(cuda).unwrap();
        let block = Tensor::zeros([16 << 20], (Kind::Float, cuda));
        let after = peak.read(cuda).unwrap();
        assert!(after >= before + (64 << 20), "{before} {after}");
        drop(block);
        assert_eq!(peak.read(cuda), Some(after));
    }

    /// Free memory is a CUDA reading: `None` on the CPU and without a GPU,
    /// at most the card's size with one.
    #[test]
    fn free_memory_is_read_on_cuda_only() {
        assert_eq!(free_bytes(Device::Cpu, false), None);
        let cuda = Device::Cuda(0);
        match free_bytes(cuda, false) {
            None => assert!(!Cuda::is_available()),
            Some(free) => assert!(free > 0 && free < 1 << 50, "{free}"),
        }
    }
}

//! Peak memory of a trial: the process's resident-set high-water mark
//! (`VmHWM` of `/proc/self/status`) on the CPU.

use std::fs;

use tch::Device;

/// Measures the peak resident set from the moment it is started.
pub struct PeakMemory;

impl PeakMemory {
    /// Resets the process's high-water mark (Linux's `clear_refs` value 5),
    /// so the reading belongs to this trial; where the kernel refuses, the
    /// reading covers the whole process.
    pub fn start() -> Self {
        let _ = fs::write("/proc/self/clear_refs", "5");
        PeakMemory
    }

    /// The peak resident set in bytes since `start`, on the CPU; `None` on
    /// CUDA, whose allocator statistics libtorch's C API does not expose,
    /// or where `/proc` is missing.
    pub fn read(&self, device: Device) -> Option<u64> {
        if device != Device::Cpu {
            return None;
        }
        resident_high_water_mark()
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

    #[test]
    fn the_peak_covers_memory_touched_after_the_start() {
        let peak = PeakMemory::start();
        let Some(before) = peak.read(Device::Cpu) else {
            return; // no /proc on this system
        };
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = peak.read(Device::Cpu).unwrap();
        assert!(after >= before && after >= 64 << 20, "{before} {after}");
        assert_eq!(block.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 << 20);
        assert_eq!(peak.read(Device::Cuda(0)), None);
    }
}

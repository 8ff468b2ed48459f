//! Where a trial runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

/// The device a trial asks for: `auto` (CUDA when present, else CPU), `cpu`,
/// `cuda` (the first GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// The tch device, or an error when CUDA was asked for and is not there.
    pub fn resolve(self) -> Result<Device, String> {
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

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device `{other}`; valid: auto, cpu, cuda, cuda:N")),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        for name in ["auto", "cpu", "cuda:1"] {
            assert_eq!(name.parse::<DeviceChoice>().unwrap().to_string(), name);
        }
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        let err = "gpu".parse::<DeviceChoice>().unwrap_err();
        assert!(err.contains("gpu") && err.contains("cuda:N"), "{err}");
    }

    #[test]
    fn cpu_always_resolves() {
        assert_eq!(DeviceChoice::Cpu.resolve(), Ok(Device::Cpu));
    }
}

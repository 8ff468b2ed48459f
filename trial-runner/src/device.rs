//! Where a trial runs.

use std::cell::RefCell;
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

    /// The concrete choice this one stands for on this machine: `auto`
    /// becomes `cuda:0` or `cpu`; an error as [`DeviceChoice::resolve`]'s.
    pub fn resolve_choice(self) -> Result<DeviceChoice, String> {
        Ok(match self.resolve()? {
            Device::Cuda(index) => DeviceChoice::Cuda(index),
            _ => DeviceChoice::Cpu,
        })
    }
}

/// The forms a list of devices may take, for error messages.
pub const DEVICE_LIST_FORMS: &str =
    "`cpu`, `auto`, `cuda:0`, `cuda:0,1` (CUDA devices 0 and 1), or a list such as `[cuda:0, cuda:1]`";

/// The devices trials are spread over: `cuda:0,1` (indices after a CUDA
/// device name more CUDA devices), `cpu, cuda:0`, or a list of single
/// devices. Never empty, no device twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(Vec<DeviceChoice>);

impl DeviceList {
    /// The devices in the order written; never empty, no device twice.
    pub fn devices(&self) -> &[DeviceChoice] {
        &self.0
    }

    /// Checks a list that was parsed item by item.
    fn from_devices(devices: Vec<DeviceChoice>) -> Result<Self, String> {
        if devices.is_empty() {
            return Err(format!("no device given; valid forms: {DEVICE_LIST_FORMS}"));
        }
        for (i, device) in devices.iter().enumerate() {
            if devices[..i].contains(device) {
                return Err(format!(
                    "device `{device}` is named twice; to run more trials on it at once, set `trials_per_device`"
                ));
            }
        }
        Ok(DeviceList(devices))
    }
}

impl From<DeviceChoice> for DeviceList {
    fn from(device: DeviceChoice) -> Self {
        DeviceList(vec![device])
    }
}

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut devices = Vec::new();
        for item in s.split(',').map(str::trim) {
            let continues_cuda = matches!(devices.last(), Some(DeviceChoice::Cuda(_)));
            let device = match item.parse::<usize>() {
                Ok(index) if continues_cuda => DeviceChoice::Cuda(index),
                _ => item.parse().map_err(|_| {
                    format!("unknown device `{item}` in `{s}`; valid forms: {DEVICE_LIST_FORMS}")
                })?,
            };
            devices.push(device);
        }
        DeviceList::from_devices(devices)
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(", "))
    }
}

impl Serialize for DeviceList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

// Hand-written so a string and a list both fit, and a wrong value keeps
// the YAML location and says what fits.
impl<'de> Deserialize<'de> for DeviceList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeviceListVisitor;
        impl<'de> serde::de::Visitor<'de> for DeviceListVisitor {
            type Value = DeviceList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "devices: {DEVICE_LIST_FORMS}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DeviceList, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<DeviceList, A::Error> {
                use serde::de::Error;
                let mut devices = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    devices.push(name.parse().map_err(|_| {
                        A::Error::custom(format!(
                            "unknown device `{name}`; valid forms: {DEVICE_LIST_FORMS}"
                        ))
                    })?);
                }
                DeviceList::from_devices(devices).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_any(DeviceListVisitor)
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

    #[test]
    fn device_lists_parse_strings_with_cuda_index_shorthand() {
        let parse = |s: &str| s.parse::<DeviceList>().map(|l| l.devices().to_vec());
        assert_eq!(parse("cpu"), Ok(vec![DeviceChoice::Cpu]));
        assert_eq!(parse("auto"), Ok(vec![DeviceChoice::Auto]));
        assert_eq!(parse("cuda:0"), Ok(vec![DeviceChoice::Cuda(0)]));
        assert_eq!(
            parse("cuda:0,1"),
            Ok(vec![DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)])
        );
        assert_eq!(
            parse("cpu, cuda:2, 3"),
            Ok(vec![
                DeviceChoice::Cpu,
                DeviceChoice::Cuda(2),
                DeviceChoice::Cuda(3)
            ])
        );
        let err = parse("1,2").unwrap_err();
        assert!(
            err.contains("unknown device `1`") && err.contains("`cuda:0,1`"),
            "{err}"
        );
        let err = parse("cpu,gpu").unwrap_err();
        assert!(err.contains("unknown device `gpu`"), "{err}");
        let err = parse("cuda:0,0").unwrap_err();
        assert!(
            err.contains("`cuda:0` is named twice") && err.contains("trials_per_device"),
            "{err}"
        );
        let err = parse("").unwrap_err();
        assert!(err.contains("unknown device ``"), "{err}");
    }

    #[test]
    fn device_lists_deserialize_from_a_string_or_a_list() {
        let list: DeviceList = serde_yaml::from_str("[cuda:0, cuda:1]").unwrap();
        assert_eq!(
            list.devices(),
            [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]
        );
        let list: DeviceList = serde_yaml::from_str("cuda:0,1").unwrap();
        assert_eq!(
            list.devices(),
            [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]
        );
        assert_eq!(list.to_string(), "cuda:0, cuda:1");
        let err = serde_yaml::from_str::<DeviceList>("[]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no device given"), "{err}");
        let err = serde_yaml::from_str::<DeviceList>("[cpu, cpu]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cpu` is named twice"), "{err}");
        let err = serde_yaml::from_str::<DeviceList>("[tpu]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown device `tpu`") && err.contains("[cuda:0, cuda:1]"),
            "{err}"
        );
        let err = serde_yaml::from_str::<DeviceList>("3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cuda:0,1`"), "{err}");
    }
}

//! Where a trial runs, as an experiment names it: the choice, not the device
//! (resolving `auto` or checking `cuda:N` needs libtorch: the trial runner's
//! `ResolveDevice`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::UnknownName;

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

/// The forms a list of devices may take, for error messages.
pub const DEVICE_LIST_FORMS: &str =
    "`cpu`, `auto`, `cuda:0`, `cuda:0,1` (CUDA devices 0 and 1), or a list such as `[cuda:0, cuda:1]`";

/// What is wrong with a list of devices, with the forms that fit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeviceListError {
    #[error("unknown device `{item}` in `{list}`; valid forms: {forms}", forms = DEVICE_LIST_FORMS)]
    UnknownIn { item: String, list: String },
    #[error("unknown device `{item}`; valid forms: {forms}", forms = DEVICE_LIST_FORMS)]
    Unknown { item: String },
    #[error("no device given; valid forms: {forms}", forms = DEVICE_LIST_FORMS)]
    Empty,
    #[error(
        "device `{0}` is named twice; to run more trials on it at once, set `trials_per_device`"
    )]
    Twice(DeviceChoice),
}

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
    fn from_devices(devices: Vec<DeviceChoice>) -> Result<Self, DeviceListError> {
        if devices.is_empty() {
            return Err(DeviceListError::Empty);
        }
        for (i, device) in devices.iter().enumerate() {
            if devices[..i].contains(device) {
                return Err(DeviceListError::Twice(*device));
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
    type Err = DeviceListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut devices = Vec::new();
        for item in s.split(',').map(str::trim) {
            let continues_cuda = matches!(devices.last(), Some(DeviceChoice::Cuda(_)));
            let device = match item.parse::<usize>() {
                Ok(index) if continues_cuda => DeviceChoice::Cuda(index),
                _ => item.parse().map_err(|_| DeviceListError::UnknownIn {
                    item: item.to_string(),
                    list: s.to_string(),
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
                        A::Error::custom(DeviceListError::Unknown { item: name.clone() })
                    })?);
                }
                DeviceList::from_devices(devices).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_any(DeviceListVisitor)
    }
}

impl FromStr for DeviceChoice {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| UnknownName {
                    what: "device",
                    given: other.to_string(),
                    valid: "auto, cpu, cuda, cuda:N",
                }),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = UnknownName;
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
        let err = "gpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("gpu") && err.contains("cuda:N"), "{err}");
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
        let err = parse("1,2").unwrap_err().to_string();
        assert!(
            err.contains("unknown device `1`") && err.contains("`cuda:0,1`"),
            "{err}"
        );
        let err = parse("cpu,gpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `gpu`"), "{err}");
        let err = parse("cuda:0,0").unwrap_err().to_string();
        assert!(
            err.contains("`cuda:0` is named twice") && err.contains("trials_per_device"),
            "{err}"
        );
        let err = parse("").unwrap_err().to_string();
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

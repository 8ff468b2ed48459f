//! Where a trial makes its training batches: `data_on_device`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Where a trial makes its training batches (experiment `data_on_device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DataOnDevice {
    /// On a CUDA device, when the recipe's per-image transforms all have
    /// device versions and the splits fit (see the trial runner's `auto_on_device`).
    #[default]
    Auto,
    /// On the trial's device, whatever it is (the CPU too); a recipe with a
    /// transform that has no device version is refused.
    On,
    /// The CPU pipeline.
    Off,
}

impl DataOnDevice {
    /// The name experiment YAML uses.
    pub fn name(self) -> &'static str {
        match self {
            DataOnDevice::Auto => "auto",
            DataOnDevice::On => "true",
            DataOnDevice::Off => "false",
        }
    }

    /// Whether this is the default, `auto`.
    pub fn is_auto(&self) -> bool {
        *self == DataOnDevice::Auto
    }
}

impl Serialize for DataOnDevice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DataOnDevice::Auto => serializer.serialize_str("auto"),
            DataOnDevice::On => serializer.serialize_bool(true),
            DataOnDevice::Off => serializer.serialize_bool(false),
        }
    }
}

// Hand-written: YAML gives `true`/`false` as booleans and `auto` as a string.
impl<'de> Deserialize<'de> for DataOnDevice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Choice;
        impl Visitor<'_> for Choice {
            type Value = DataOnDevice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`auto`, `true` or `false`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<DataOnDevice, E> {
                Ok(if v {
                    DataOnDevice::On
                } else {
                    DataOnDevice::Off
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DataOnDevice, E> {
                match v {
                    "auto" => Ok(DataOnDevice::Auto),
                    "true" => Ok(DataOnDevice::On),
                    "false" => Ok(DataOnDevice::Off),
                    other => Err(E::custom(format!(
                        "unknown value `{other}`; valid: auto (on a GPU when the recipe allows), true, false"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_and_writes_auto_true_and_false() {
        for (yaml, choice) in [
            ("auto", DataOnDevice::Auto),
            ("true", DataOnDevice::On),
            ("false", DataOnDevice::Off),
        ] {
            let read: DataOnDevice = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(read, choice);
            assert_eq!(serde_yaml::to_string(&choice).unwrap().trim(), yaml);
            assert_eq!(choice.name(), yaml);
        }
        let err = serde_yaml::from_str::<DataOnDevice>("gpu").unwrap_err();
        assert!(err.to_string().contains("valid: auto"), "{err}");
        let err = serde_yaml::from_str::<DataOnDevice>("1").unwrap_err();
        assert!(
            err.to_string().contains("`auto`, `true` or `false`"),
            "{err}"
        );
    }
}

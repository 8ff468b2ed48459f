//! The dataset an experiment names: its on-disk format and what a trial does
//! with a file it cannot read. Plain names here; the runner loads them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which CIFAR distribution a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarFormat {
    /// `cifar-100-binary/`: `train.bin`, `test.bin`.
    Cifar100Bin,
    /// `cifar-10-batches-bin/`: `data_batch_{1..5}.bin`, `test_batch.bin`.
    Cifar10Bin,
    /// `cifar-100-python/`: pickles `train`, `test`, `meta`.
    Cifar100Pickle,
    /// `cifar-10-batches-py/`: pickles `data_batch_{1..5}`, `test_batch`, `batches.meta`.
    Cifar10Pickle,
}

impl CifarFormat {
    /// All CIFAR formats, in the order the runner's format detection tries them.
    pub const ALL: [CifarFormat; 4] = [
        CifarFormat::Cifar100Bin,
        CifarFormat::Cifar10Bin,
        CifarFormat::Cifar100Pickle,
        CifarFormat::Cifar10Pickle,
    ];

    /// The name used in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CifarFormat::Cifar100Bin => "cifar100-bin",
            CifarFormat::Cifar10Bin => "cifar10-bin",
            CifarFormat::Cifar100Pickle => "cifar100-pickle",
            CifarFormat::Cifar10Pickle => "cifar10-pickle",
        }
    }

    /// Number of classes of the real dataset (an upper bound for synthetic ones).
    pub fn classes(self) -> usize {
        match self {
            CifarFormat::Cifar100Bin | CifarFormat::Cifar100Pickle => 100,
            CifarFormat::Cifar10Bin | CifarFormat::Cifar10Pickle => 10,
        }
    }

    /// The folder the official archive extracts to.
    pub fn subfolder(self) -> &'static str {
        match self {
            CifarFormat::Cifar100Bin => "cifar-100-binary",
            CifarFormat::Cifar10Bin => "cifar-10-batches-bin",
            CifarFormat::Cifar100Pickle => "cifar-100-python",
            CifarFormat::Cifar10Pickle => "cifar-10-batches-py",
        }
    }

    /// The official archive that holds this format.
    pub fn archive(self) -> &'static str {
        match self {
            CifarFormat::Cifar100Bin => "cifar-100-binary.tar.gz",
            CifarFormat::Cifar10Bin => "cifar-10-binary.tar.gz",
            CifarFormat::Cifar100Pickle => "cifar-100-python.tar.gz",
            CifarFormat::Cifar10Pickle => "cifar-10-python.tar.gz",
        }
    }

    /// What the directory must contain, for error messages.
    pub fn layout(self) -> &'static str {
        match self {
            CifarFormat::Cifar100Bin => {
                "train.bin (50000 records) and test.bin (10000 records) of 3074 bytes each: \
                 coarse label byte, fine label byte, 3072 pixel bytes (1024 red, 1024 green, \
                 1024 blue, each row-major 32x32); optionally fine_label_names.txt"
            }
            CifarFormat::Cifar10Bin => {
                "data_batch_1.bin .. data_batch_5.bin (10000 records each) and test_batch.bin \
                 (10000 records) of 3073 bytes each: label byte, 3072 pixel bytes (1024 red, \
                 1024 green, 1024 blue, each row-major 32x32); optionally batches.meta.txt"
            }
            CifarFormat::Cifar100Pickle => {
                "pickle files train (50000 images) and test (10000 images), each a dict with \
                 b'fine_labels' (list of int) and b'data' (uint8 numpy array of shape (N, 3072)); \
                 optionally meta (b'fine_label_names')"
            }
            CifarFormat::Cifar10Pickle => {
                "pickle files data_batch_1 .. data_batch_5 (10000 images each) and test_batch \
                 (10000 images), each a dict with b'labels' (list of int) and b'data' (uint8 \
                 numpy array of shape (N, 3072)); optionally batches.meta (b'label_names')"
            }
        }
    }
}

impl fmt::Display for CifarFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The on-disk layout of an experiment's dataset: one of the CIFAR distributions,
/// or an image folder. The serde and `FromStr` names are the ones experiment YAML
/// and `bocb data synth --format` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetFormat {
    Cifar(CifarFormat),
    /// `train/CLASS/*.png|jpg|jpeg` and `val/CLASS/...` (or `test/CLASS/...`), as
    /// torchvision's `ImageFolder` reads them.
    ImageFolder,
}

impl DatasetFormat {
    /// Every format, in the order the runner's format detection tries them.
    pub const ALL: [DatasetFormat; 5] = [
        DatasetFormat::ImageFolder,
        DatasetFormat::Cifar(CifarFormat::Cifar100Bin),
        DatasetFormat::Cifar(CifarFormat::Cifar10Bin),
        DatasetFormat::Cifar(CifarFormat::Cifar100Pickle),
        DatasetFormat::Cifar(CifarFormat::Cifar10Pickle),
    ];

    /// The name used in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetFormat::Cifar(format) => format.name(),
            DatasetFormat::ImageFolder => "image-folder",
        }
    }
}

impl From<CifarFormat> for DatasetFormat {
    fn from(format: CifarFormat) -> Self {
        DatasetFormat::Cifar(format)
    }
}

impl fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is none of [`DatasetFormat::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dataset format {name:?}; valid formats are {}",
    format_names()
)]
pub struct UnknownFormat {
    pub name: String,
}

impl FromStr for DatasetFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        DatasetFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat { name: s.to_owned() })
    }
}

impl Serialize for DatasetFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

// By name, so that an unknown name gets the error listing the valid ones.
impl<'de> Deserialize<'de> for DatasetFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The names of every format, comma-separated, for error messages.
pub fn format_names() -> String {
    DatasetFormat::ALL.map(DatasetFormat::name).join(", ")
}

/// What a trial does with a file that cannot be read or decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadFiles {
    /// The trial fails with an error naming the file.
    #[default]
    Fail,
    /// The file is left out of its batch with a warning naming it.
    Skip,
}

/// Side of CIFAR's images, which the `_cifar` backbones' stems take.
pub const CIFAR_SIDE: u32 = 32;

/// Why `backbone`, a CIFAR form (`resnet18_cifar`: a 32-pixel stem), cannot
/// train at `side` pixels, naming its ImageNet form (the name without
/// `_cifar`, preset kept) where `known` has it; `None` for any other
/// backbone or side. Both the experiment file's check and the trainer's.
pub fn cifar_form_at(backbone: &str, side: u32, known: impl Fn(&str) -> bool) -> Option<String> {
    if side <= CIFAR_SIDE {
        return None;
    }
    let name = backbone.split('@').next().unwrap_or(backbone);
    let imagenet = name.strip_suffix("_cifar")?;
    let instead = format!("{imagenet}{}", &backbone[name.len()..]);
    let instead = if known(&instead) {
        format!("`{instead}`, its ImageNet form")
    } else {
        "a backbone without `_cifar` (see `bocb backbones list`)".into()
    };
    Some(format!(
        "backbone `{backbone}` is the CIFAR form (a 32-pixel stem) but the dataset is at {side} pixels; use {instead}, or set the dataset's `resolution: 32`"
    ))
}

//! Image classification data in the on-disk formats of CIFAR-10 and CIFAR-100.
//!
//! The loaders read the official binary and python-pickle distributions unchanged, and
//! [`write_synthetic`] writes a synthetic dataset in exactly the same layouts, so the
//! same code path serves real data and the synthetic data used where CIFAR cannot be
//! downloaded. Nothing here depends on tch: images stay `u8` CHW as stored.

mod cifar;
mod folder;
pub mod pickle;
mod synth;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use cifar::{detect_format, load};
pub use folder::{is_image_folder, load_image_folder, write_image_folder};
pub use synth::{generate, write_synthetic, SynthConfig};

/// Image side in pixels.
pub const SIDE: usize = 32;
/// Colour channels (red, green, blue planes).
pub const CHANNELS: usize = 3;
/// Bytes of one image: 3 planes of 32x32, row-major, as CIFAR stores them.
pub const IMAGE_BYTES: usize = CHANNELS * SIDE * SIDE;

/// Labelled images of one split.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    /// N x 3 x 32 x 32 bytes, CHW, as stored in the files.
    pub images: Vec<u8>,
    /// One label per image, each `< classes`.
    pub labels: Vec<u16>,
    /// Number of classes a model must output: the length of the dataset's class-name
    /// list when it has one, else the format's class count.
    pub classes: usize,
    /// Class names from the dataset's metadata; may be empty (the files are optional).
    pub class_names: Vec<String>,
}

impl fmt::Debug for Dataset {
    // The derived form would print every pixel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("classes", &self.classes)
            .field("class_names", &self.class_names.len())
            .finish()
    }
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `IMAGE_BYTES` bytes of image `i` (CHW). Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// Per-channel mean and population standard deviation of the pixels on a 0..1
    /// scale, for normalising inputs with the dataset's own statistics (synthetic data
    /// does not share CIFAR's). An empty dataset gives mean 0 and std 1 (identity).
    pub fn mean_std(&self) -> ([f64; 3], [f64; 3]) {
        if self.is_empty() {
            return ([0.0; 3], [1.0; 3]);
        }
        // Exact integer sums: 255^2 * 3072 * 50000 is far below u64::MAX.
        let mut sum = [0u64; CHANNELS];
        let mut sum_sq = [0u64; CHANNELS];
        for image in self.images.chunks_exact(IMAGE_BYTES) {
            for (c, plane) in image.chunks_exact(SIDE * SIDE).enumerate() {
                for &p in plane {
                    sum[c] += u64::from(p);
                    sum_sq[c] += u64::from(p) * u64::from(p);
                }
            }
        }
        let n = (self.len() * SIDE * SIDE) as f64;
        let mut mean = [0.0; CHANNELS];
        let mut std = [0.0; CHANNELS];
        for c in 0..CHANNELS {
            let m = sum[c] as f64 / n;
            let var = (sum_sq[c] as f64 / n - m * m).max(0.0);
            mean[c] = m / 255.0;
            std[c] = var.sqrt() / 255.0;
        }
        (mean, std)
    }
}

/// The train and test splits of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// Which CIFAR distribution a directory holds. The serde and `FromStr` names are the
/// ones experiment YAML uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatasetFormat {
    /// `cifar-100-binary/`: `train.bin`, `test.bin`.
    #[serde(rename = "cifar100-bin")]
    Cifar100Bin,
    /// `cifar-10-batches-bin/`: `data_batch_{1..5}.bin`, `test_batch.bin`.
    #[serde(rename = "cifar10-bin")]
    Cifar10Bin,
    /// `cifar-100-python/`: pickles `train`, `test`, `meta`.
    #[serde(rename = "cifar100-pickle")]
    Cifar100Pickle,
    /// `cifar-10-batches-py/`: pickles `data_batch_{1..5}`, `test_batch`, `batches.meta`.
    #[serde(rename = "cifar10-pickle")]
    Cifar10Pickle,
}

impl DatasetFormat {
    /// All formats, in the order [`detect_format`] tries them.
    pub const ALL: [DatasetFormat; 4] = [
        DatasetFormat::Cifar100Bin,
        DatasetFormat::Cifar10Bin,
        DatasetFormat::Cifar100Pickle,
        DatasetFormat::Cifar10Pickle,
    ];

    /// The name used in YAML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetFormat::Cifar100Bin => "cifar100-bin",
            DatasetFormat::Cifar10Bin => "cifar10-bin",
            DatasetFormat::Cifar100Pickle => "cifar100-pickle",
            DatasetFormat::Cifar10Pickle => "cifar10-pickle",
        }
    }

    /// Number of classes of the real dataset (an upper bound for synthetic ones).
    pub fn classes(self) -> usize {
        match self {
            DatasetFormat::Cifar100Bin | DatasetFormat::Cifar100Pickle => 100,
            DatasetFormat::Cifar10Bin | DatasetFormat::Cifar10Pickle => 10,
        }
    }

    /// The folder the official archive extracts to.
    pub fn subfolder(self) -> &'static str {
        match self {
            DatasetFormat::Cifar100Bin => "cifar-100-binary",
            DatasetFormat::Cifar10Bin => "cifar-10-batches-bin",
            DatasetFormat::Cifar100Pickle => "cifar-100-python",
            DatasetFormat::Cifar10Pickle => "cifar-10-batches-py",
        }
    }

    /// The official archive that holds this format.
    fn archive(self) -> &'static str {
        match self {
            DatasetFormat::Cifar100Bin => "cifar-100-binary.tar.gz",
            DatasetFormat::Cifar10Bin => "cifar-10-binary.tar.gz",
            DatasetFormat::Cifar100Pickle => "cifar-100-python.tar.gz",
            DatasetFormat::Cifar10Pickle => "cifar-10-python.tar.gz",
        }
    }

    /// What the directory must contain, for error messages.
    fn layout(self) -> &'static str {
        match self {
            DatasetFormat::Cifar100Bin => {
                "train.bin (50000 records) and test.bin (10000 records) of 3074 bytes each: \
                 coarse label byte, fine label byte, 3072 pixel bytes (1024 red, 1024 green, \
                 1024 blue, each row-major 32x32); optionally fine_label_names.txt"
            }
            DatasetFormat::Cifar10Bin => {
                "data_batch_1.bin .. data_batch_5.bin (10000 records each) and test_batch.bin \
                 (10000 records) of 3073 bytes each: label byte, 3072 pixel bytes (1024 red, \
                 1024 green, 1024 blue, each row-major 32x32); optionally batches.meta.txt"
            }
            DatasetFormat::Cifar100Pickle => {
                "pickle files train (50000 images) and test (10000 images), each a dict with \
                 b'fine_labels' (list of int) and b'data' (uint8 numpy array of shape (N, 3072)); \
                 optionally meta (b'fine_label_names')"
            }
            DatasetFormat::Cifar10Pickle => {
                "pickle files data_batch_1 .. data_batch_5 (10000 images each) and test_batch \
                 (10000 images), each a dict with b'labels' (list of int) and b'data' (uint8 \
                 numpy array of shape (N, 3072)); optionally batches.meta (b'label_names')"
            }
        }
    }
}

impl fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetFormat {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        DatasetFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| DataError::UnknownFormat { name: s.to_owned() })
    }
}

/// Everything that can go wrong loading or writing a dataset. Messages name the file
/// or directory so that a failed trial says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "{dir}: no {format} dataset here ({reason}). Expected {}, directly in this directory \
         or in its {}/ subfolder. Get the real data by extracting {} from \
         https://www.cs.toronto.edu/~kriz/cifar.html, or make a synthetic dataset with \
         `bocb data synth --out DIR`.",
        format.layout(), format.subfolder(), format.archive()
    )]
    MissingData {
        dir: PathBuf,
        format: DatasetFormat,
        reason: String,
    },
    #[error("{file}: size {size} bytes is not a multiple of the {record}-byte record size (truncated or not {format}?)")]
    BadSize {
        file: PathBuf,
        size: u64,
        record: usize,
        format: DatasetFormat,
    },
    #[error("{file}: record {index} has label {label}, but the dataset has {classes} classes")]
    LabelOutOfRange {
        file: PathBuf,
        index: usize,
        label: i64,
        classes: usize,
    },
    #[error("{file}: cannot read pickle: {source}")]
    Pickle {
        file: PathBuf,
        source: pickle::PickleError,
    },
    #[error("{file}: {reason}")]
    Malformed { file: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "unknown dataset format {name:?}; valid formats are cifar100-bin, cifar10-bin, \
         cifar100-pickle, cifar10-pickle"
    )]
    UnknownFormat { name: String },
    #[error("invalid synthetic dataset config: {0}")]
    InvalidSynthConfig(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_through_from_str_display_and_serde() {
        for format in DatasetFormat::ALL {
            let name = format.to_string();
            assert_eq!(name.parse::<DatasetFormat>().unwrap(), format);
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<DatasetFormat>(&json).unwrap(),
                format
            );
        }
        assert_eq!(DatasetFormat::Cifar100Pickle.name(), "cifar100-pickle");
        assert_eq!(DatasetFormat::Cifar100Bin.classes(), 100);
        assert_eq!(DatasetFormat::Cifar10Pickle.classes(), 10);
    }

    #[test]
    fn unknown_format_error_lists_valid_names() {
        let message = "cifar1000"
            .parse::<DatasetFormat>()
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"cifar1000\""), "{message}");
        for format in DatasetFormat::ALL {
            assert!(message.contains(format.name()), "{message}");
        }
    }

    fn dataset(images: Vec<u8>) -> Dataset {
        let n = images.len() / IMAGE_BYTES;
        Dataset {
            images,
            labels: vec![0; n],
            classes: 1,
            class_names: Vec::new(),
        }
    }

    #[test]
    fn image_returns_one_chw_image() {
        let images: Vec<u8> = (0..2 * IMAGE_BYTES)
            .map(|i| (i / IMAGE_BYTES) as u8 + 7)
            .collect();
        let data = dataset(images);
        assert_eq!(data.len(), 2);
        assert!(!data.is_empty());
        assert_eq!(data.image(1).len(), IMAGE_BYTES);
        assert!(data.image(0).iter().all(|&p| p == 7));
        assert!(data.image(1).iter().all(|&p| p == 8));
    }

    #[test]
    fn mean_std_is_per_channel_on_unit_scale() {
        // Red is all 0 in one image and all 255 in the other: mean 0.5, std 0.5.
        // Green is constant 51 (0.2, std 0); blue alternates 0/255 inside each image.
        let mut images = Vec::new();
        for red in [0u8, 255] {
            images.extend([red; SIDE * SIDE]);
            images.extend([51; SIDE * SIDE]);
            images.extend((0..SIDE * SIDE).map(|i| if i % 2 == 0 { 0 } else { 255 }));
        }
        let (mean, std) = dataset(images).mean_std();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(
            close(mean[0], 0.5) && close(std[0], 0.5),
            "{mean:?} {std:?}"
        );
        assert!(
            close(mean[1], 0.2) && close(std[1], 0.0),
            "{mean:?} {std:?}"
        );
        assert!(
            close(mean[2], 0.5) && close(std[2], 0.5),
            "{mean:?} {std:?}"
        );
        assert_eq!(dataset(Vec::new()).mean_std(), ([0.0; 3], [1.0; 3]));
    }
}

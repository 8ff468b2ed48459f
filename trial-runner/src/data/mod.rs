//! Image classification data in the on-disk formats of CIFAR-10 and CIFAR-100, and
//! image folders.
//!
//! The loaders read the official binary and python-pickle distributions unchanged, and
//! [`write_synthetic`] writes a synthetic dataset in exactly the same layouts (or as an
//! image folder), so the same code path serves real data and the synthetic data used
//! where CIFAR cannot be downloaded. [`load`] reads every format. Nothing here depends
//! on tch: images stay `u8` CHW as stored.

mod cifar;
mod folder;
pub mod pickle;
pub mod stream;
mod synth;

use std::fmt;
use std::path::{Path, PathBuf};

pub use bocb_spec::dataset::{format_names, CifarFormat, DatasetFormat, UnknownFormat};
pub use folder::PhotoLayout;
pub use synth::{generate, write_synthetic, write_synthetic_photos, SynthConfig};

/// Image side in pixels.
pub const SIDE: usize = 32;
/// Colour channels (red, green, blue planes).
pub const CHANNELS: usize = 3;
/// Bytes of one image: 3 planes of 32x32, row-major, as CIFAR stores them.
pub const IMAGE_BYTES: usize = CHANNELS * SIDE * SIDE;

/// The largest side an image file may declare: bigger headers are refused
/// before any allocation (a damaged header must not exhaust a worker's
/// memory).
pub(crate) const MAX_SIDE: usize = 1 << 14;

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

/// The format of the dataset in `dir`: an image folder (a `train/` directory), else
/// the first CIFAR format whose files are all there (in `dir` or its standard
/// subfolder); `None` if none matches.
pub fn detect_format(dir: &Path) -> Option<DatasetFormat> {
    if folder::is_image_folder(dir) {
        return Some(DatasetFormat::ImageFolder);
    }
    cifar::detect(dir).map(DatasetFormat::Cifar)
}

/// Loads the train and test splits of the `format` dataset in `dir`; image folders
/// are decoded on `workers` threads. When `dir` holds a dataset of another format,
/// the error says which, so that a wrong `format:` is one edit away.
pub fn load(dir: &Path, format: DatasetFormat, workers: usize) -> Result<Splits, DataError> {
    let loaded = match format {
        DatasetFormat::Cifar(cifar_format) => cifar::load(dir, cifar_format),
        DatasetFormat::ImageFolder => folder::load_image_folder(dir, workers),
    };
    // What is wrong inside a directory of another format does not matter.
    loaded.map_err(|error| match detect_format(dir) {
        Some(found) if found != format => DataError::OtherFormat {
            dir: dir.to_owned(),
            format,
            found,
        },
        _ => error,
    })
}

/// A dataset as trials read it: held in memory at 32x32, or an image folder
/// streamed from disk at full resolution.
#[derive(Debug)]
pub enum LoadedData {
    Memory(Splits),
    Stream(stream::FolderSplits),
}

impl LoadedData {
    /// Classes a model must output.
    pub fn classes(&self) -> usize {
        match self {
            LoadedData::Memory(splits) => splits.train.classes,
            LoadedData::Stream(folder) => folder.classes(),
        }
    }
}

/// Opens the `format` dataset in `dir` for training: CIFAR formats, and
/// image folders at `resolution: 32`, are loaded into memory (see
/// [`load`]); other image folders are listed, to be streamed at
/// `resolution` (`None`: each backbone's input size).
pub fn open(
    dir: &Path,
    format: DatasetFormat,
    resolution: Option<usize>,
    bad_files: stream::BadFiles,
    workers: usize,
) -> Result<LoadedData, DataError> {
    match (format, resolution) {
        (DatasetFormat::ImageFolder, resolution) if resolution != Some(SIDE) => {
            stream::FolderSplits::open(dir, resolution, bad_files)
                .map(LoadedData::Stream)
                .map_err(|error| match detect_format(dir) {
                    Some(found) if found != format => DataError::OtherFormat {
                        dir: dir.to_owned(),
                        format,
                        found,
                    },
                    _ => error,
                })
        }
        _ => load(dir, format, workers).map(LoadedData::Memory),
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
         `bocb data synth --format {format} --out DIR`.",
        format.layout(), format.subfolder(), format.archive()
    )]
    MissingData {
        dir: PathBuf,
        format: CifarFormat,
        reason: String,
    },
    #[error("{file}: size {size} bytes is not a multiple of the {record}-byte record size (truncated or not {format}?)")]
    BadSize {
        file: PathBuf,
        size: u64,
        record: usize,
        format: CifarFormat,
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
    #[error(transparent)]
    UnknownFormat(#[from] UnknownFormat),
    #[error(
        "{dir} holds a dataset in the {found} format, not {format}: set `format: {found}` \
         in the experiment's `dataset:`, or point its `path` at {format} data"
    )]
    OtherFormat {
        dir: PathBuf,
        format: DatasetFormat,
        found: DatasetFormat,
    },
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
        assert_eq!(CifarFormat::Cifar100Pickle.name(), "cifar100-pickle");
        assert_eq!(DatasetFormat::ImageFolder.name(), "image-folder");
        assert_eq!(CifarFormat::Cifar100Bin.classes(), 100);
        assert_eq!(CifarFormat::Cifar10Pickle.classes(), 10);
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

    #[test]
    fn an_unknown_yaml_name_lists_the_valid_ones() {
        let message = serde_json::from_str::<DatasetFormat>("\"folder\"")
            .unwrap_err()
            .to_string();
        assert!(message.contains("image-folder, cifar100-bin"), "{message}");
    }

    #[test]
    fn load_reads_every_format_that_write_synthetic_writes() {
        let cfg = SynthConfig {
            classes: 3,
            train: 9,
            test: 6,
            seed: 1,
        };
        let expected = generate(&cfg).unwrap();
        for format in DatasetFormat::ALL {
            let dir = tempfile::tempdir().unwrap();
            write_synthetic(dir.path(), &cfg, format).unwrap();
            assert_eq!(detect_format(dir.path()), Some(format));
            let loaded = load(dir.path(), format, 2).unwrap();
            match format {
                DatasetFormat::Cifar(_) => assert_eq!(loaded, expected, "{format}"),
                // Grouped by class, and JPEG is lossy: the folder's own tests
                // compare pixels.
                DatasetFormat::ImageFolder => {
                    for (split, source) in [
                        (&loaded.train, &expected.train),
                        (&loaded.test, &expected.test),
                    ] {
                        assert_eq!(split.class_names, source.class_names);
                        let mut labels = source.labels.clone();
                        labels.sort();
                        assert_eq!(split.labels, labels);
                    }
                }
            }
        }
    }

    #[test]
    fn loading_the_wrong_format_names_the_one_the_directory_holds() {
        let cfg = SynthConfig {
            classes: 2,
            train: 4,
            test: 2,
            seed: 0,
        };
        let folder = tempfile::tempdir().unwrap();
        write_synthetic(folder.path(), &cfg, DatasetFormat::ImageFolder).unwrap();
        let cifar = tempfile::tempdir().unwrap();
        let cifar10 = DatasetFormat::Cifar(CifarFormat::Cifar10Bin);
        write_synthetic(cifar.path(), &cfg, cifar10).unwrap();
        for (dir, asked, held) in [
            (
                &folder,
                DatasetFormat::Cifar(CifarFormat::Cifar100Pickle),
                DatasetFormat::ImageFolder,
            ),
            (&cifar, DatasetFormat::ImageFolder, cifar10),
        ] {
            let message = load(dir.path(), asked, 1).unwrap_err().to_string();
            for needle in [
                dir.path().to_str().unwrap(),
                &format!("in the {held} format, not {asked}"),
                &format!("set `format: {held}`"),
            ] {
                assert!(message.contains(needle), "{needle:?} not in {message}");
            }
        }
        let absent = folder.path().join("absent");
        let message = load(&absent, DatasetFormat::ImageFolder, 1)
            .unwrap_err()
            .to_string();
        for needle in [
            absent.to_str().unwrap(),
            "does not exist",
            "train/CLASS/*.png",
            "bocb data synth --format image-folder",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
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

//! Image folders as torchvision's `ImageFolder` reads them:
//! `train/CLASS/*.png|jpg|jpeg` and `val/CLASS/...` (or `test/CLASS/...`),
//! classes in sorted name order. Files are decoded with the `image` crate on
//! worker threads and resized (bicubic, Catmull-Rom) to the 32x32 side the
//! rest of the pipeline works at, as the CIFAR adaptation trains (App. A.1).

use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};

use super::{DataError, Dataset, Splits, IMAGE_BYTES, SIDE};

/// File extensions read as images (lower case).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `dir` holds an image folder (a `train/` directory of class folders).
pub fn is_image_folder(dir: &Path) -> bool {
    dir.join("train").is_dir()
}

/// What an image folder holds and how to make one, for error messages.
const LAYOUT: &str = "an image folder needs `train/CLASS/*.png|jpg|jpeg` and `val/CLASS/...` \
     (or `test/CLASS/...`); make a synthetic one with \
     `bocb data synth --format image-folder --out DIR`";

/// The files of an image folder: its class names (sorted) and each split's
/// `(path, label)` list, checked to have the ImageNet layout.
pub(crate) struct FolderFiles {
    pub class_names: Vec<String>,
    pub train: Vec<(PathBuf, u16)>,
    pub test: Vec<(PathBuf, u16)>,
}

/// Lists `dir/train` and `dir/val` (or `dir/test`); both splits take the
/// training split's class list.
pub(crate) fn list_image_folder(dir: &Path) -> Result<FolderFiles, DataError> {
    let not_a_folder = |problem: &str| DataError::Malformed {
        file: dir.to_owned(),
        reason: format!("{problem}; {LAYOUT}"),
    };
    if !dir.is_dir() {
        return Err(not_a_folder(if dir.exists() {
            "not a directory"
        } else {
            "the directory does not exist"
        }));
    }
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Err(not_a_folder("no train/ directory"));
    }
    let test_dir = ["val", "test"]
        .map(|name| dir.join(name))
        .into_iter()
        .find(|d| d.is_dir())
        .ok_or_else(|| not_a_folder("no val/ or test/ directory"))?;
    let class_names = class_folders(&train_dir)?;
    if class_names.len() < 2 {
        return Err(DataError::Malformed {
            file: train_dir,
            reason: format!(
                "{} class folder(s); an image folder needs at least two (train/CLASS/*.png)",
                class_names.len()
            ),
        });
    }
    let train = list_split(&train_dir, &class_names)?;
    let test = list_split(&test_dir, &class_names)?;
    Ok(FolderFiles {
        class_names,
        train,
        test,
    })
}

/// Loads `dir/train` and `dir/val` (or `dir/test`) into memory at 32x32,
/// decoding on `workers` threads.
pub fn load_image_folder(dir: &Path, workers: usize) -> Result<Splits, DataError> {
    let files = list_image_folder(dir)?;
    let train = read_split(&files.train, &files.class_names, workers)?;
    let test = read_split(&files.test, &files.class_names, workers)?;
    Ok(Splits { train, test })
}

/// Sorted names of the sub-directories of `dir`.
fn class_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Every image of `dir/CLASS/` for the given classes, labelled by position,
/// in class then file-name order (as torchvision's `ImageFolder`).
fn list_split(dir: &Path, class_names: &[String]) -> Result<Vec<(PathBuf, u16)>, DataError> {
    let mut files: Vec<(PathBuf, u16)> = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        let io = |source| DataError::Io {
            path: class_dir.clone(),
            source,
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&class_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if is_image {
                paths.push(path);
            }
        }
        paths.sort();
        files.extend(paths.into_iter().map(|p| (p, label as u16)));
    }
    if files.is_empty() {
        return Err(DataError::Malformed {
            file: dir.to_owned(),
            reason: "no .png, .jpg or .jpeg images in its class folders".into(),
        });
    }
    Ok(files)
}

/// Decodes `files` into 32x32 images on `workers` threads.
fn read_split(
    files: &[(PathBuf, u16)],
    class_names: &[String],
    workers: usize,
) -> Result<Dataset, DataError> {
    let mut images = vec![0u8; files.len() * IMAGE_BYTES];
    let workers = workers.clamp(1, files.len());
    let per_worker = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let jobs: Vec<_> = images
            .chunks_mut(per_worker * IMAGE_BYTES)
            .zip(files.chunks(per_worker))
            .map(|(slots, files)| {
                scope.spawn(move || {
                    for (slot, (path, _)) in slots.chunks_exact_mut(IMAGE_BYTES).zip(files) {
                        decode_into(path, slot)?;
                    }
                    Ok::<(), DataError>(())
                })
            })
            .collect();
        jobs.into_iter()
            .try_for_each(|job| job.join().expect("a decoding thread panicked"))
    })?;
    Ok(Dataset {
        images,
        labels: files.iter().map(|(_, label)| *label).collect(),
        classes: class_names.len(),
        class_names: class_names.to_vec(),
    })
}

/// Decodes `path` into 32x32 CHW bytes.
fn decode_into(path: &Path, slot: &mut [u8]) -> Result<(), DataError> {
    let decoded = image::open(path).map_err(|e| DataError::Malformed {
        file: path.to_owned(),
        reason: format!("cannot decode the image: {e}"),
    })?;
    let rgb = decoded.to_rgb8();
    let rgb = if rgb.dimensions() == (SIDE as u32, SIDE as u32) {
        rgb
    } else {
        image::imageops::resize(&rgb, SIDE as u32, SIDE as u32, FilterType::CatmullRom)
    };
    let plane = SIDE * SIDE;
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            slot[c * plane + i] = pixel.0[c];
        }
    }
    Ok(())
}

/// Writes `splits` as an image folder in `out`: `train/CLASS/00000.png`,
/// ..., `val/...`; every third image a JPEG (quality 95), so both decoders
/// are exercised.
pub fn save(out: &Path, splits: &Splits) -> Result<(), DataError> {
    for (name, split) in [("train", &splits.train), ("val", &splits.test)] {
        for class in &split.class_names {
            let dir = out.join(name).join(class);
            fs::create_dir_all(&dir).map_err(|source| DataError::Io { path: dir, source })?;
        }
        for i in 0..split.len() {
            let class = &split.class_names[usize::from(split.labels[i])];
            let (extension, format) = if i % 3 == 2 {
                ("jpg", ImageFormat::Jpeg)
            } else {
                ("png", ImageFormat::Png)
            };
            let path = out
                .join(name)
                .join(class)
                .join(format!("{i:05}.{extension}"));
            let image = chw_to_rgb(split.image(i));
            image
                .save_with_format(&path, format)
                .map_err(|e| DataError::Malformed {
                    file: path.clone(),
                    reason: format!("cannot write the image: {e}"),
                })?;
        }
    }
    Ok(())
}

/// The files [`save_photos`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoLayout {
    /// The longer side of every image, in pixels (the shorter is 3/4 of it,
    /// as most photographs are; every fourth image is portrait).
    pub side: usize,
    /// JPEG (quality 90, as photographs are stored) or PNG.
    pub jpeg: bool,
}

/// Writes `splits` as an image folder of full-size images: each 32x32
/// image up-sampled (bilinear) to `layout`'s size, with per-pixel grain so
/// that the files compress like photographs rather than like flat
/// gradients; `train/CLASS/00000.jpg`, ..., `val/...`. Deterministic given
/// `splits`; written by all cores.
pub fn save_photos(out: &Path, splits: &Splits, layout: PhotoLayout) -> Result<(), DataError> {
    if !(16..=super::MAX_SIDE).contains(&layout.side) {
        return Err(DataError::InvalidSynthConfig(format!(
            "--side must be 16 to {}, got {}",
            super::MAX_SIDE,
            layout.side
        )));
    }
    let extension = if layout.jpeg { "jpg" } else { "png" };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, split) in [("train", &splits.train), ("val", &splits.test)] {
        for class in &split.class_names {
            let dir = out.join(name).join(class);
            fs::create_dir_all(&dir).map_err(|source| DataError::Io { path: dir, source })?;
        }
        let write = |i: usize| -> Result<(), DataError> {
            let class = &split.class_names[usize::from(split.labels[i])];
            let path = out
                .join(name)
                .join(class)
                .join(format!("{i:05}.{extension}"));
            let (long, short) = (layout.side as u32, (layout.side * 3 / 4) as u32);
            let (width, height) = if i % 4 == 3 {
                (short, long)
            } else {
                (long, short)
            };
            let mut image = image::imageops::resize(
                &chw_to_rgb(split.image(i)),
                width,
                height,
                FilterType::Triangle,
            );
            grain(&mut image, i as u64);
            let bad = |e: String| DataError::Malformed {
                file: path.clone(),
                reason: format!("cannot write the image: {e}"),
            };
            if layout.jpeg {
                let file = fs::File::create(&path).map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?;
                image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    90,
                )
                .encode_image(&image)
                .map_err(|e| bad(e.to_string()))
            } else {
                image
                    .save_with_format(&path, ImageFormat::Png)
                    .map_err(|e| bad(e.to_string()))
            }
        };
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let write = &write;
                    scope.spawn(move || (t..split.len()).step_by(threads).try_for_each(write))
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("a writer thread panicked"))
        })?;
    }
    Ok(())
}

/// Adds +-12 levels of hashed per-pixel noise (a pure function of `seed`
/// and the position).
fn grain(image: &mut RgbImage, seed: u64) {
    for (i, value) in image.iter_mut().enumerate() {
        let mut h = (seed << 32 ^ i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        let noise = (h % 25) as i16 - 12;
        *value = (i16::from(*value) + noise).clamp(0, 255) as u8;
    }
}

fn chw_to_rgb(chw: &[u8]) -> RgbImage {
    let plane = SIDE * SIDE;
    RgbImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
        let i = y as usize * SIDE + x as usize;
        image::Rgb([chw[i], chw[plane + i], chw[2 * plane + i]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_sizes_are_resized_and_bad_folders_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        for split in ["train", "val"] {
            for class in ["a", "b"] {
                let d = dir.path().join(split).join(class);
                fs::create_dir_all(&d).unwrap();
                RgbImage::from_pixel(64, 48, image::Rgb([200, 100, 50]))
                    .save(d.join("x.png"))
                    .unwrap();
            }
        }
        let loaded = load_image_folder(dir.path(), 2).unwrap();
        assert_eq!(loaded.train.class_names, ["a", "b"]);
        assert_eq!(loaded.train.labels, [0, 1]);
        let image = loaded.train.image(0);
        assert!(image[..SIDE * SIDE].iter().all(|&p| p == 200));
        assert!(image[2 * SIDE * SIDE..].iter().all(|&p| p == 50));

        fs::write(dir.path().join("train/a/broken.png"), b"not a png").unwrap();
        let err = load_image_folder(dir.path(), 2).unwrap_err().to_string();
        assert!(
            err.contains("broken.png") && err.contains("cannot decode"),
            "{err}"
        );
        fs::remove_dir_all(dir.path().join("val")).unwrap();
        let err = load_image_folder(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("no val/ or test/ directory"), "{err}");
    }
}

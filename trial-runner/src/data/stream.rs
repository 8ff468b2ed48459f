//! Image folders read from disk while training, at full resolution: only the
//! file list is held in memory; each batch's files are read and decoded on
//! worker threads (`crate::batches::stream`).
//!
//! JPEGs are decoded by zune-jpeg (SIMD IDCT and colour conversion, pure
//! Rust, so a clean clone builds with no system libjpeg-turbo, cmake or nasm),
//! PNGs by the `image` crate. Neither decoder can decode at a reduced scale
//! (libjpeg's DCT scaling), so every file is decoded at its full size: the
//! crops then resize with PIL's own filters, which keeps them equal to
//! torchvision's on the same decoded pixels.

use std::path::{Path, PathBuf};

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::folder::list_image_folder;
use super::{DataError, MAX_SIDE};
use crate::augment::ImageSize;

/// timm's `IMAGENET_DEFAULT_MEAN`: streamed folders normalise with it, as
/// timm does, since their pixels are never all in memory to measure.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

pub use bocb_spec::dataset::BadFiles;

/// One split of a streamed folder: file paths and their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSplit {
    pub files: Vec<PathBuf>,
    pub labels: Vec<u16>,
}

impl FileSplit {
    fn new(files: Vec<(PathBuf, u16)>) -> Self {
        let (files, labels) = files.into_iter().unzip();
        FileSplit { files, labels }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// An image folder as a trial streams it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderSplits {
    pub train: FileSplit,
    pub test: FileSplit,
    /// Class names in sorted order; a label is a position here.
    pub class_names: Vec<String>,
    /// The side of the square crops a trial trains and tests on; `None`:
    /// the backbone's own input size.
    pub resolution: Option<usize>,
    pub bad_files: BadFiles,
}

impl FolderSplits {
    /// Lists the image folder in `dir` (`train/CLASS/*`, `val/CLASS/*`).
    pub fn open(
        dir: &Path,
        resolution: Option<usize>,
        bad_files: BadFiles,
    ) -> Result<Self, DataError> {
        let files = list_image_folder(dir)?;
        Ok(FolderSplits {
            train: FileSplit::new(files.train),
            test: FileSplit::new(files.test),
            class_names: files.class_names,
            resolution,
            bad_files,
        })
    }

    pub fn classes(&self) -> usize {
        self.class_names.len()
    }
}

/// The encoded bytes one worker reuses from file to file.
#[derive(Default)]
pub struct DecodeBuffers {
    bytes: Vec<u8>,
}

/// Reads and decodes `path` into interleaved RGB (HWC, as decoders write it;
/// the transforms resample from it) in `out`, returning the image's size. Greyscale and CMYK JPEGs come out as RGB, as PIL's
/// `convert("RGB")` gives them.
pub fn decode_file(
    path: &Path,
    buffers: &mut DecodeBuffers,
    out: &mut Vec<u8>,
) -> Result<ImageSize, DataError> {
    let bad = |reason: String| DataError::Malformed {
        file: path.to_owned(),
        reason: format!("cannot decode the image: {reason}"),
    };
    buffers.bytes.clear();
    std::io::Read::read_to_end(
        &mut std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.to_owned(),
            source,
        })?,
        &mut buffers.bytes,
    )
    .map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    // A decoder that panics on a hostile file must not take the worker down.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_bytes(&buffers.bytes, out)
    }))
    .map_err(|_| bad("the decoder panicked on this file".into()))?
    .map_err(bad)?;
    Ok(decoded)
}

/// Decodes an encoded JPEG or PNG into interleaved RGB.
fn decode_bytes(bytes: &[u8], rgb: &mut Vec<u8>) -> Result<ImageSize, String> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_max_width(MAX_SIDE)
            .set_max_height(MAX_SIDE);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        decoder.decode_headers().map_err(|e| e.to_string())?;
        let (width, height) = decoder
            .dimensions()
            .ok_or("the JPEG header has no dimensions")?;
        rgb.resize(decoder.output_buffer_size().ok_or("no output size")?, 0);
        decoder.decode_into(rgb).map_err(|e| e.to_string())?;
        Ok(ImageSize::new(height, width))
    } else {
        let image = image::load_from_memory(bytes)
            .map_err(|e| e.to_string())?
            .into_rgb8();
        let size = ImageSize::new(image.height() as usize, image.width() as usize);
        if size.width > MAX_SIDE || size.height > MAX_SIDE {
            return Err(format!(
                "{}x{} is larger than {MAX_SIDE} pixels a side",
                size.width, size.height
            ));
        }
        rgb.clear();
        rgb.extend_from_slice(image.as_raw());
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn folder(dir: &Path) {
        for split in ["train", "val"] {
            for (class, colour) in [("b", [10, 200, 30]), ("a", [250, 5, 120])] {
                let d = dir.join(split).join(class);
                fs::create_dir_all(&d).unwrap();
                let image = image::RgbImage::from_pixel(40, 30, image::Rgb(colour));
                image.save(d.join("x.jpg")).unwrap();
                image.save(d.join("y.png")).unwrap();
            }
        }
    }

    #[test]
    fn a_folder_is_listed_in_sorted_class_order_and_decoded_to_rgb() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path());
        let splits = FolderSplits::open(dir.path(), Some(224), BadFiles::Skip).unwrap();
        assert_eq!(splits.class_names, ["a", "b"]);
        assert_eq!(splits.train.labels, [0, 0, 1, 1]);
        assert_eq!(splits.test.len(), 4);
        let (mut buffers, mut pixels) = (DecodeBuffers::default(), Vec::new());
        for (file, colour) in [(0, [250u8, 5, 120]), (1, [250, 5, 120]), (3, [10, 200, 30])] {
            let size = decode_file(&splits.train.files[file], &mut buffers, &mut pixels).unwrap();
            assert_eq!(size, ImageSize::new(30, 40));
            assert_eq!(pixels.len(), size.bytes());
            for pixel in pixels.chunks_exact(3) {
                // JPEG is lossy: within a few levels of the flat colour.
                assert!(
                    pixel.iter().zip(colour).all(|(&p, c)| p.abs_diff(c) <= 3),
                    "{pixel:?}"
                );
            }
        }
    }

    #[test]
    fn an_undecodable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffers, mut pixels) = (DecodeBuffers::default(), Vec::new());
        for (name, bytes) in [
            ("cut.jpg", &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J'][..]),
            ("text.png", b"not a png"),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            let message = decode_file(&path, &mut buffers, &mut pixels)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(name) && message.contains("cannot decode"),
                "{message}"
            );
        }
        let message = decode_file(&dir.path().join("absent.jpg"), &mut buffers, &mut pixels)
            .unwrap_err()
            .to_string();
        assert!(message.contains("absent.jpg"), "{message}");
    }
}

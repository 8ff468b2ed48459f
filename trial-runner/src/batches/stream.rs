//! Batches of a streamed image folder ([`FolderSplits`]): each batch's files
//! are read, decoded and transformed at full resolution on worker threads,
//! each a few batches ahead of the training step, so memory holds a few
//! batches whatever the size of the folder.
//!
//! As for in-memory splits, batch `i` of an epoch draws from its own RNG
//! (the epoch's seed and `i`), and the consumer takes batches in order, so a
//! batch's content depends on neither the number of workers nor the order
//! they finish in.

use bocb_search_spaces::{Crop, Recipe};
use rand::Rng;
use tch::Tensor;

use super::{batch_rng, image_batch, RawBatch};
use crate::augment::crop::{horizontal_flip, resize_center_crop};
use crate::augment::{ImageSize, Interpolation, PixelLayout, RandAugment, RandomResizedCrop};
use crate::data::stream::{decode_file, BadFiles, DecodeBuffers, FileSplit, IMAGENET_MEAN};
use crate::data::DataError;

/// The ImageNet column of Table A3 that the recipe files (the CIFAR
/// column) do not carry: the test-time crop fraction (timm's `crop_pct`)
/// and the resampling filter of `recipe`. Recipes not in the table get
/// timm's defaults (0.875, bicubic).
pub fn imagenet_eval(recipe: Option<&Recipe>) -> (f64, Interpolation) {
    match recipe.map(|r| r.name.as_str()) {
        // torchvision's reference scripts: Resize(256) + CenterCrop(224), bilinear.
        None | Some("pytorch") => (0.875, Interpolation::Bilinear),
        Some("rsb_a2" | "rsb_a3") => (0.95, Interpolation::Bicubic),
        Some(_) => (0.875, Interpolation::Bicubic),
    }
}

/// What happens to each image of a streamed folder before it is batched.
#[derive(Clone, Debug, PartialEq)]
pub enum FullResTransform {
    /// timm's training transform: `RandomResizedCrop` (torchvision's
    /// sampling), horizontal flip, RandAugment at the crop's size. Erasing
    /// and Mixup/CutMix follow on the device (the trainer's regime).
    Train {
        /// `None`: the recipe crops nothing; the image's centred square is
        /// resized to the output.
        crop: Option<RandomResizedCrop>,
        interpolation: Interpolation,
        hflip: f64,
        rand_augment: Option<RandAugment>,
        side: usize,
    },
    /// timm's evaluation transform: the shorter side resized to
    /// `side / crop_pct`, then the centred `side` square.
    Eval {
        crop_pct: f64,
        interpolation: Interpolation,
        side: usize,
    },
}

impl FullResTransform {
    /// The training transform of `recipe` at `side` pixels (torchvision's
    /// `RandomResizedCrop` + flip without one). A recipe without a crop
    /// gets the evaluation transform's view, then flip and RandAugment.
    pub fn train(recipe: Option<&Recipe>, side: usize) -> Self {
        let (_, interpolation) = imagenet_eval(recipe);
        let crop = RandomResizedCrop {
            interpolation,
            ..RandomResizedCrop::default()
        };
        let Some(recipe) = recipe else {
            return FullResTransform::Train {
                crop: Some(crop),
                interpolation,
                hflip: 0.5,
                rand_augment: None,
                side,
            };
        };
        // At full resolution every crop setting but `none` is the
        // random-resized crop (`random_padded` is CIFAR's 32-pixel crop).
        let crop = (recipe.crop != Crop::None).then_some(crop);
        let rand_augment = recipe.rand_augment.map(|config| {
            let mut augment = RandAugment::from_config("rand-m9-mstd0.5-inc1")
                .expect("a valid timm config")
                .with_fill_from_mean(IMAGENET_MEAN);
            augment.num_ops = config.ops.0 as usize;
            augment.magnitude = config.magnitude.0;
            augment.magnitude_std = config.magnitude_std.0;
            augment
        });
        FullResTransform::Train {
            crop,
            interpolation,
            hflip: recipe.hflip.0,
            rand_augment,
            side,
        }
    }

    /// The evaluation transform of `recipe` at `side` pixels.
    pub fn eval(recipe: Option<&Recipe>, side: usize) -> Self {
        let (crop_pct, interpolation) = imagenet_eval(recipe);
        FullResTransform::Eval {
            crop_pct,
            interpolation,
            side,
        }
    }

    /// The side of the square images this transform makes.
    pub fn side(&self) -> usize {
        match self {
            FullResTransform::Train { side, .. } | FullResTransform::Eval { side, .. } => *side,
        }
    }

    /// Transforms `src` (`size`, interleaved RGB as decoded) into `dst`
    /// (`side` x `side`, CHW).
    pub fn apply(
        &self,
        src: &[u8],
        size: ImageSize,
        dst: &mut [u8],
        scratch: &mut Vec<u8>,
        rng: &mut impl Rng,
    ) {
        let out = ImageSize::new(self.side(), self.side());
        match self {
            FullResTransform::Train {
                crop,
                interpolation,
                hflip,
                rand_augment,
                ..
            } => {
                match crop {
                    Some(crop) => {
                        crop.apply((src, PixelLayout::Interleaved), size, dst, out, rng);
                    }
                    None => resize_center_crop(
                        (src, PixelLayout::Interleaved),
                        size,
                        dst,
                        out.width,
                        1.0,
                        *interpolation,
                    )
                    .expect("1 is a valid crop fraction"),
                }
                if *hflip > 0.0 && rng.random::<f64>() < *hflip {
                    horizontal_flip(dst, out);
                }
                if let Some(augment) = rand_augment {
                    augment.apply(dst, out, scratch, rng);
                }
            }
            FullResTransform::Eval {
                crop_pct,
                interpolation,
                side,
            } => resize_center_crop(
                (src, PixelLayout::Interleaved),
                size,
                dst,
                *side,
                *crop_pct,
                *interpolation,
            )
            .expect("the table's crop fractions lie in (0, 1]"),
        }
    }
}

/// One pass over a streamed split: the order and seed of a training epoch,
/// or the split in order for evaluation.
pub struct StreamPlan<'a> {
    pub order: Vec<usize>,
    pub seed: u64,
    pub transform: &'a FullResTransform,
    /// Training drops the last partial batch (a batch of one would break
    /// batch norm); evaluation keeps it.
    pub drop_last: bool,
}

/// Runs `consume` on every batch of `plan` over `split` from batch `first`
/// on, in order, the files decoded by `workers` threads `PREFETCH` batches
/// ahead. A file that cannot be decoded fails the pass, or with
/// [`BadFiles::Skip`] is left out of its batch with a warning (a training
/// batch then also drops its last image if that leaves it odd, as
/// Mixup/CutMix pair images).
pub fn for_each_file_batch<E: From<DataError>>(
    split: &FileSplit,
    batch_size: usize,
    plan: StreamPlan<'_>,
    first: usize,
    workers: usize,
    bad_files: BadFiles,
    mut consume: impl FnMut(RawBatch) -> Result<(), E>,
) -> Result<(), E> {
    let chunks: Vec<&[usize]> = if plan.drop_last {
        plan.order.chunks_exact(batch_size).collect()
    } else {
        plan.order.chunks(batch_size).collect()
    };
    let (chunks, plan) = (&chunks, &plan);
    super::in_order(
        first,
        chunks.len(),
        workers,
        |index, buffers: &mut WorkerBuffers| {
            assemble(split, chunks[index], plan, index, bad_files, buffers)
        },
        |batch| batch.map_err(E::from).and_then(&mut consume),
    )
}

/// What one worker reuses from batch to batch.
#[derive(Default)]
struct WorkerBuffers {
    decode: DecodeBuffers,
    pixels: Vec<u8>,
    scratch: Vec<u8>,
}

/// Reads, decodes and transforms the files of batch `index`.
fn assemble(
    split: &FileSplit,
    indices: &[usize],
    plan: &StreamPlan<'_>,
    index: usize,
    bad_files: BadFiles,
    buffers: &mut WorkerBuffers,
) -> Result<RawBatch, DataError> {
    let side = plan.transform.side();
    let bytes = 3 * side * side;
    let mut rng = batch_rng(plan.seed, index);
    let (images, labels) = image_batch(indices.len(), side, |pixels| {
        let mut labels: Vec<i64> = Vec::with_capacity(indices.len());
        for &i in indices {
            let path = &split.files[i];
            match decode_file(path, &mut buffers.decode, &mut buffers.pixels) {
                Ok(size) => {
                    let slot = &mut pixels[labels.len() * bytes..][..bytes];
                    plan.transform.apply(
                        &buffers.pixels,
                        size,
                        slot,
                        &mut buffers.scratch,
                        &mut rng,
                    );
                    labels.push(i64::from(split.labels[i]));
                }
                Err(error) if bad_files == BadFiles::Skip => {
                    tracing::warn!(%error, "skipping a file that cannot be read (bad_files: skip)");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(labels)
    });
    let mut labels = labels?;
    if plan.drop_last && labels.len() < indices.len() && labels.len() % 2 == 1 {
        labels.pop();
    }
    Ok(RawBatch {
        images: images.narrow(0, 0, labels.len() as i64),
        labels: Tensor::from_slice(&labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::stream::FolderSplits;
    use std::path::Path;

    /// A folder of `n` images per class of two classes, sized 50..80 x 40..70.
    fn folder(dir: &Path, n: usize) {
        for split in ["train", "val"] {
            for (c, class) in ["cat", "dog"].into_iter().enumerate() {
                let d = dir.join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..n {
                    let (w, h) = (50 + 3 * i as u32, 40 + 5 * i as u32);
                    let image = image::RgbImage::from_fn(w, h, |x, y| {
                        image::Rgb([(x * 4) as u8, (y * 5) as u8, (40 * c + i) as u8])
                    });
                    image.save(d.join(format!("{i:03}.jpg"))).unwrap();
                }
            }
        }
    }

    fn deit() -> Recipe {
        bocb_search_spaces::RecipeBook::builtin()
            .recipe("deit")
            .unwrap()
            .clone()
    }

    fn pass(splits: &FolderSplits, transform: &FullResTransform, workers: usize) -> Vec<u8> {
        let mut seen = Vec::new();
        let plan = StreamPlan {
            order: (0..splits.train.len()).rev().collect(),
            seed: 5,
            transform,
            drop_last: true,
        };
        for_each_file_batch(
            &splits.train,
            4,
            plan,
            0,
            workers,
            splits.bad_files,
            |batch| {
                assert_eq!(batch.images.size(), [4, 3, 32, 32]);
                seen.extend(Vec::<u8>::try_from(batch.images.flatten(0, -1)).unwrap());
                seen.extend(
                    Vec::<i64>::try_from(batch.labels)
                        .unwrap()
                        .iter()
                        .map(|&l| l as u8),
                );
                Ok::<(), DataError>(())
            },
        )
        .unwrap();
        seen
    }

    #[test]
    fn streamed_batches_depend_on_the_seed_alone_not_on_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), 7);
        let splits = FolderSplits::open(dir.path(), Some(32), BadFiles::Fail).unwrap();
        let transform = FullResTransform::train(Some(&deit()), 32);
        let one = pass(&splits, &transform, 1);
        // 14 images: 3 full batches of 4, images and labels.
        assert_eq!(one.len(), 3 * 4 * (3 * 32 * 32 + 1));
        assert_eq!(pass(&splits, &transform, 3), one);
        assert_eq!(pass(&splits, &transform, 8), one);
    }

    #[test]
    fn a_bad_file_fails_the_pass_or_is_skipped_by_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), 4);
        std::fs::write(dir.path().join("train/cat/002.jpg"), b"\xFF\xD8 cut short").unwrap();
        let mut splits = FolderSplits::open(dir.path(), Some(32), BadFiles::Fail).unwrap();
        let transform = FullResTransform::eval(None, 32);
        let run = |splits: &FolderSplits, drop_last: bool| {
            let plan = StreamPlan {
                order: (0..splits.train.len()).collect(),
                seed: 1,
                transform: &transform,
                drop_last,
            };
            let mut sizes = Vec::new();
            for_each_file_batch(&splits.train, 4, plan, 0, 2, splits.bad_files, |batch| {
                sizes.push(batch.labels.size()[0]);
                Ok::<(), DataError>(())
            })
            .map(|()| sizes)
        };
        let message = run(&splits, false).unwrap_err().to_string();
        assert!(
            message.contains("002.jpg") && message.contains("cannot decode"),
            "{message}"
        );
        splits.bad_files = BadFiles::Skip;
        assert_eq!(run(&splits, false).unwrap(), [3, 4]);
        // A training batch stays even for Mixup/CutMix.
        assert_eq!(run(&splits, true).unwrap(), [2, 4]);
    }

    #[test]
    fn the_imagenet_column_sets_the_test_crop_and_filter() {
        let book = bocb_search_spaces::RecipeBook::builtin();
        let recipe = |name: &str| book.recipe(name).unwrap().clone();
        assert_eq!(imagenet_eval(None), (0.875, Interpolation::Bilinear));
        assert_eq!(
            imagenet_eval(Some(&recipe("pytorch"))),
            (0.875, Interpolation::Bilinear)
        );
        assert_eq!(
            imagenet_eval(Some(&recipe("rsb_a2"))),
            (0.95, Interpolation::Bicubic)
        );
        assert_eq!(
            imagenet_eval(Some(&recipe("deit"))),
            (0.875, Interpolation::Bicubic)
        );
    }
}

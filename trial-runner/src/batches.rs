//! The input pipeline: mini-batches assembled and augmented on worker
//! threads, ahead of the training step.
//!
//! Each batch draws its random numbers from its own RNG, seeded by the
//! epoch's seed and the batch's position, so a batch's content depends on
//! neither the number of workers nor the order they finish in: the same
//! seed always gives the same batches.
//!
//! [`on_device`] makes the same batches from a split held on the trial's
//! device, for recipes whose per-image transforms all have tensor versions.

pub mod on_device;
pub mod stream;

use bocb_search_spaces::{Crop, Recipe};
use crossbeam::channel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::augment::crop::horizontal_flip;
use crate::augment::{ImageSize, PixelLayout, RandAugment, RandomResizedCrop};
use crate::data::{Dataset, IMAGE_BYTES, SIDE};

/// How many batches each worker may run ahead of the consumer.
const PREFETCH: usize = 4;

/// Zero padding of the CIFAR recipes' `RandomCrop(32, padding=4)`.
const CROP_PADDING: usize = 4;

/// Per-channel normalisation with the training split's own statistics, and
/// bicubic up-sampling to the backbone's input side where it differs
/// (CIFAR at 224x224, App. A.1).
pub struct Normalizer {
    mean: Tensor,
    std: Tensor,
    side: i64,
    channels_last: bool,
}

impl Normalizer {
    pub fn new(mean: [f64; 3], std: [f64; 3], side: i64, device: Device) -> Self {
        let column = |v: [f64; 3]| {
            Tensor::from_slice(&v.map(|x| x as f32))
                .view([1, 3, 1, 1])
                .to_device(device)
        };
        Normalizer {
            mean: column(mean),
            std: column(std),
            side,
            channels_last: false,
        }
    }

    /// Hands batches over in channels-last memory order (NHWC strides,
    /// NCHW shape), which convolutions then keep: the layout cuDNN's and
    /// oneDNN's fastest kernels use. The weights keep theirs.
    pub fn with_channels_last(mut self, on: bool) -> Self {
        self.channels_last = on;
        self
    }

    fn laid_out(&self, x: Tensor) -> Tensor {
        if self.channels_last {
            channels_last(&x)
        } else {
            x
        }
    }

    pub fn device(&self) -> Device {
        self.mean.device()
    }

    /// `u8` images `[n, 3, h, w]` to normalised floats on the device.
    pub fn apply(&self, images: &Tensor) -> Tensor {
        let x = (images.to_device(self.mean.device()).to_kind(Kind::Float) / 255.0 - &self.mean)
            / &self.std;
        if x.size()[2] == self.side {
            self.laid_out(x)
        } else {
            // Bicubic is affine, so resizing after normalising equals resizing first.
            self.laid_out(x.upsample_bicubic2d([self.side, self.side], false, None, None))
        }
    }

    /// The test-time view: the centred `crop_ratio` of each image (timm's
    /// `crop_pct`: resize to `side / crop_ratio`, keep the central `side`),
    /// brought to the input side. A ratio of 1 is [`Normalizer::apply`].
    pub fn apply_test(&self, images: &Tensor, crop_ratio: f64) -> Tensor {
        let stored = images.size()[2];
        let kept = ((stored as f64 * crop_ratio).round() as i64).clamp(1, stored);
        if kept == stored {
            return self.apply(images);
        }
        let offset = (stored - kept) / 2;
        let centre = images
            .narrow(2, offset, kept)
            .narrow(3, offset, kept)
            .contiguous();
        let x = (centre.to_device(self.mean.device()).to_kind(Kind::Float) / 255.0 - &self.mean)
            / &self.std;
        self.laid_out(x.upsample_bicubic2d([self.side, self.side], false, None, None))
    }
}

/// `x` (NCHW) in channels-last memory order: the same shape and values,
/// NHWC strides (`x.contiguous(memory_format=torch.channels_last)`).
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// The training crop of one image, at the stored side.
#[derive(Clone, Debug, PartialEq)]
enum TrainCrop {
    /// `RandomCrop(side, padding)`.
    Padded(usize),
    /// `RandomResizedCrop` back to the stored side; the device then
    /// up-samples to the backbone's input.
    Resized(RandomResizedCrop),
    None,
}

/// The per-image part of a recipe: crop, horizontal flip and RandAugment,
/// on `u8` CHW images at the stored side. Random erasing and Mixup/CutMix
/// work on the normalised batch in the trainer.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTransform {
    crop: TrainCrop,
    hflip: f64,
    rand_augment: Option<RandAugment>,
}

impl ImageTransform {
    /// The CIFAR baseline of a trial without a recipe: `RandomCrop(32,
    /// padding=4)` and a horizontal flip with probability one half.
    pub fn basic() -> Self {
        ImageTransform {
            crop: TrainCrop::Padded(CROP_PADDING),
            hflip: 0.5,
            rand_augment: None,
        }
    }

    /// `recipe`'s per-image augmentation for a backbone whose input side is
    /// `input_side`: `crop: auto` pads and crops when the backbone takes
    /// the stored side and takes random-resized crops when the images are
    /// up-sampled to it (App. A.1). RandAugment fills with the dataset
    /// `mean`, as timm does.
    pub fn from_recipe(recipe: &Recipe, input_side: i64, mean: [f64; 3]) -> Self {
        let crop = match recipe.crop {
            Crop::Auto if input_side == SIDE as i64 => TrainCrop::Padded(CROP_PADDING),
            Crop::Auto | Crop::RandomResized => TrainCrop::Resized(RandomResizedCrop::default()),
            Crop::RandomPadded => TrainCrop::Padded(CROP_PADDING),
            Crop::None => TrainCrop::None,
        };
        let rand_augment = recipe.rand_augment.map(|config| {
            let mut augment = RandAugment::from_config("rand-m9-mstd0.5-inc1")
                .expect("a valid timm config")
                .with_fill_from_mean(mean);
            augment.num_ops = config.ops.0 as usize;
            augment.magnitude = config.magnitude.0;
            augment.magnitude_std = config.magnitude_std.0;
            augment
        });
        ImageTransform {
            crop,
            hflip: recipe.hflip.0,
            rand_augment,
        }
    }

    /// Augments `src` into `dst` (both [`IMAGE_BYTES`]); `scratch` is reused.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], scratch: &mut Vec<u8>, rng: &mut impl Rng) {
        let size = ImageSize::new(SIDE, SIDE);
        match &self.crop {
            TrainCrop::Padded(pad) => padded_crop(src, dst, SIDE, draw_crop_offset(*pad, rng)),
            TrainCrop::Resized(crop) => {
                crop.apply((src, PixelLayout::Planes), size, dst, size, rng);
            }
            TrainCrop::None => dst.copy_from_slice(src),
        }
        if draw_flip(self.hflip, rng) {
            horizontal_flip(dst, size);
        }
        if let Some(augment) = &self.rand_augment {
            augment.apply(dst, size, scratch, rng);
        }
    }
}

/// The window offset of torchvision's `RandomCrop(side, padding=pad)`:
/// rows, then columns, each uniform in `-pad..=pad`. The on-device crop
/// draws through here too, so both make the same crops.
fn draw_crop_offset(pad: usize, rng: &mut impl Rng) -> (isize, isize) {
    let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
    (dy, dx)
}

/// Whether to flip an image horizontally with probability `p` (no draw at
/// all when `p` is 0); shared with the on-device flip like the crop offset.
fn draw_flip(p: f64, rng: &mut impl Rng) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// torchvision's `RandomCrop(side, padding)`: the `side`x`side` window
/// shifted by `(dy, dx)` (from [`draw_crop_offset`]) of the zero-padded image.
fn padded_crop(src: &[u8], dst: &mut [u8], side: usize, (dy, dx): (isize, isize)) {
    let plane = side * side;
    for (src, dst) in src.chunks_exact(plane).zip(dst.chunks_exact_mut(plane)) {
        for (y, row) in dst.chunks_exact_mut(side).enumerate() {
            let sy = y as isize + dy;
            if !(0..side as isize).contains(&sy) {
                row.fill(0);
                continue;
            }
            let src_row = &src[sy as usize * side..][..side];
            for (x, out) in row.iter_mut().enumerate() {
                let sx = x as isize + dx;
                *out = if (0..side as isize).contains(&sx) {
                    src_row[sx as usize]
                } else {
                    0
                };
            }
        }
    }
}

/// One batch as it leaves the pipeline: raw `u8` images and `i64` labels,
/// on the CPU (worker threads) or on the device ([`on_device`]).
pub struct RawBatch {
    pub images: Tensor,
    pub labels: Tensor,
}

/// What one training epoch reads: the image order (shuffled, maybe with
/// repeats) and how to augment: an [`ImageTransform`] on the CPU, an
/// [`on_device::DeviceTransform`] on the device.
pub struct EpochPlan<'a, T = ImageTransform> {
    pub order: Vec<usize>,
    pub seed: u64,
    pub transform: &'a T,
}

/// The seed of batch `index` of an epoch seeded `seed` (SplitMix64 of the
/// pair, so neighbouring batches get unrelated streams).
pub(crate) fn batch_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of batch `index` of an epoch seeded `seed`.
pub(crate) fn batch_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(batch_seed(seed, index))
}

/// A new `[n, 3, side, side]` `u8` batch tensor, its bytes (zeroed) handed
/// to `fill` to write the images into. Writing straight into the tensor
/// spares `Tensor::from_slice` a second copy of the batch and its zeroing
/// through an OpenMP fill, whose threads then spin beside the workers.
pub(crate) fn image_batch<R>(
    n: usize,
    side: usize,
    fill: impl FnOnce(&mut [u8]) -> R,
) -> (Tensor, R) {
    let images = Tensor::empty(
        [n as i64, 3, side as i64, side as i64],
        (Kind::Uint8, Device::Cpu),
    );
    let len = n * 3 * side * side;
    let data = images.data_ptr().cast::<u8>();
    // SAFETY: `images` was just allocated here: contiguous `u8` on the CPU
    // with `len` elements, which nothing else refers to while `bytes`
    // lives; they are zeroed before the slice is made.
    let bytes = unsafe {
        std::ptr::write_bytes(data, 0, len);
        std::slice::from_raw_parts_mut(data, len)
    };
    let outcome = fill(bytes);
    (images, outcome)
}

/// Assembles one batch of `indices`, augmenting each image when `plan` is set.
fn assemble(
    data: &Dataset,
    indices: &[usize],
    augment: Option<(&ImageTransform, StdRng)>,
) -> RawBatch {
    let (images, ()) = image_batch(indices.len(), SIDE, |images| match augment {
        Some((transform, mut rng)) => {
            let mut scratch = Vec::new();
            for (slot, &i) in images.chunks_exact_mut(IMAGE_BYTES).zip(indices) {
                transform.apply(data.image(i), slot, &mut scratch, &mut rng);
            }
        }
        None => {
            for (slot, &i) in images.chunks_exact_mut(IMAGE_BYTES).zip(indices) {
                slot.copy_from_slice(data.image(i));
            }
        }
    });
    let labels: Vec<i64> = indices.iter().map(|&i| i64::from(data.labels[i])).collect();
    RawBatch {
        images,
        labels: Tensor::from_slice(&labels),
    }
}

/// Worker threads for the pipeline when a trial does not say: all cores
/// but one (the training step's), at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Runs `consume` on every batch of one pass over `data`, in order. With a
/// `plan` (training), batches follow `plan.order`, drop the last partial
/// batch (a batch of one would break batch norm) and are augmented by
/// `workers` threads, each `PREFETCH` batches ahead; without one
/// (evaluation), the split is visited in order, unchanged, the last
/// partial batch kept.
pub fn for_each_batch<E>(
    data: &Dataset,
    batch_size: usize,
    plan: Option<EpochPlan<'_>>,
    workers: usize,
    consume: impl FnMut(RawBatch) -> Result<(), E>,
) -> Result<(), E> {
    for_each_batch_from(data, batch_size, plan, 0, workers, consume)
}

/// [`for_each_batch`] from batch `first` on: the rest of an epoch a trial
/// resumes in, the same batches as in an unbroken pass.
pub fn for_each_batch_from<E>(
    data: &Dataset,
    batch_size: usize,
    plan: Option<EpochPlan<'_>>,
    first: usize,
    workers: usize,
    mut consume: impl FnMut(RawBatch) -> Result<(), E>,
) -> Result<(), E> {
    let chunks: Vec<&[usize]>;
    let indices: Vec<usize>;
    let (chunks, augment) = match &plan {
        Some(plan) => {
            chunks = plan.order.chunks_exact(batch_size).collect();
            (chunks, Some((plan.transform, plan.seed)))
        }
        None => {
            indices = (0..data.len()).collect();
            (indices.chunks(batch_size).collect(), None)
        }
    };
    in_order(
        first,
        chunks.len(),
        workers,
        |index, _: &mut ()| {
            let augment = augment.map(|(t, seed)| (t, batch_rng(seed, index)));
            Ok::<_, std::convert::Infallible>(assemble(data, chunks[index], augment))
        },
        |batch| consume(batch.unwrap_or_else(|never| match never {})),
    )
}

/// Makes items `first..count` on `workers` threads (each with its own
/// `S`, each `PREFETCH` items ahead, item `i` on thread `i % workers`) and
/// hands them to `consume` in order, until it fails. A thread stops at
/// the first item it fails to make; that failure reaches `consume` in its turn.
pub(crate) fn in_order<S: Default, T: Send, F: Send, E>(
    first: usize,
    count: usize,
    workers: usize,
    make: impl Fn(usize, &mut S) -> Result<T, F> + Sync,
    mut consume: impl FnMut(Result<T, F>) -> Result<(), E>,
) -> Result<(), E> {
    let first = first.min(count);
    let workers = workers.clamp(1, (count - first).max(1));
    let make = &make;
    std::thread::scope(|scope| {
        let receivers: Vec<_> = (0..workers)
            .map(|worker| {
                let (sender, receiver) = channel::bounded(PREFETCH);
                scope.spawn(move || {
                    let mut state = S::default();
                    for index in (first + worker..count).step_by(workers) {
                        let item = make(index, &mut state);
                        let failed = item.is_err();
                        // The consumer hung up (it hit an error): stop producing.
                        if sender.send(item).is_err() || failed {
                            return;
                        }
                    }
                });
                receiver
            })
            .collect();
        let mut result = Ok(());
        for index in first..count {
            let item = receivers[(index - first) % workers]
                .recv()
                .expect("a worker sends every item of its share, or stops after a failed one");
            result = consume(item);
            if result.is_err() {
                break;
            }
        }
        // Hang up before the scope joins the workers, which may be blocked on a full channel.
        drop(receivers);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, SynthConfig};

    #[test]
    fn normalises_with_the_given_statistics_and_resizes_to_the_backbone() {
        let images = Tensor::full([2, 3, 32, 32], 51, (Kind::Uint8, Device::Cpu));
        let same = Normalizer::new([0.2; 3], [0.5; 3], 32, Device::Cpu).apply(&images);
        assert_eq!(same.size(), [2, 3, 32, 32]);
        // (51 / 255 - 0.2) / 0.5 = 0 everywhere.
        assert!(same.abs().max().double_value(&[]) < 1e-6);
        let up = Normalizer::new([0.0; 3], [1.0; 3], 64, Device::Cpu).apply(&images);
        assert_eq!(up.size(), [2, 3, 64, 64]);
        // A constant image stays constant under bicubic up-sampling.
        let (lo, hi) = (up.min().double_value(&[]), up.max().double_value(&[]));
        assert!(
            (lo - 0.2).abs() < 1e-5 && (hi - 0.2).abs() < 1e-5,
            "{lo} {hi}"
        );
    }

    #[test]
    fn channels_last_batches_hold_the_same_values_in_nhwc_order() {
        let images = Tensor::arange(2 * 3 * 4 * 4, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8)
            .view([2, 3, 4, 4]);
        let plain = Normalizer::new([0.1; 3], [0.3; 3], 4, Device::Cpu);
        let nhwc = Normalizer::new([0.1; 3], [0.3; 3], 4, Device::Cpu).with_channels_last(true);
        for (a, b) in [
            (plain.apply(&images), nhwc.apply(&images)),
            (
                plain.apply_test(&images, 0.5),
                nhwc.apply_test(&images, 0.5),
            ),
        ] {
            assert_eq!(a, b);
            assert_eq!(b.size()[1], 3);
            // The channel stride is 1: channels are innermost in memory.
            assert_eq!(b.stride()[1], 1);
            assert_ne!(a.stride()[1], 1);
        }
    }

    #[test]
    fn the_test_crop_keeps_the_centre_of_each_image() {
        // Row y holds the value y: the centred half keeps rows 8..24.
        let rows = Tensor::arange(32, (Kind::Uint8, Device::Cpu)).view([1, 1, 32, 1]);
        let images = rows.expand([1, 3, 32, 32], false).contiguous();
        let normalizer = Normalizer::new([0.0; 3], [1.0 / 255.0; 3], 16, Device::Cpu);
        let centre = normalizer.apply_test(&images, 0.5);
        assert_eq!(centre.size(), [1, 3, 16, 16]);
        let column: Vec<f32> = Vec::try_from(centre.get(0).get(0).select(1, 0)).unwrap();
        let column: Vec<f32> = column.iter().map(|v| v.round()).collect();
        let want: Vec<f32> = (8..24).map(|y| y as f32).collect();
        assert_eq!(column, want);
        assert_eq!(
            normalizer.apply_test(&images, 1.0),
            normalizer.apply(&images)
        );
    }

    fn epoch(data: &Dataset, workers: usize, seed: u64, transform: &ImageTransform) -> Vec<u8> {
        let mut seen = Vec::new();
        let plan = EpochPlan {
            order: (0..data.len()).rev().collect(),
            seed,
            transform,
        };
        for_each_batch(data, 16, Some(plan), workers, |batch| {
            seen.extend(Vec::<u8>::try_from(batch.images.flatten(0, -1)).unwrap());
            seen.extend(
                Vec::<i64>::try_from(batch.labels)
                    .unwrap()
                    .iter()
                    .map(|&l| l as u8),
            );
            Ok::<(), ()>(())
        })
        .unwrap();
        seen
    }

    fn deit() -> Recipe {
        bocb_search_spaces::RecipeBook::builtin()
            .recipe("deit")
            .unwrap()
            .clone()
    }

    #[test]
    fn batches_depend_on_the_seed_alone_not_on_the_workers() {
        let data = generate(&SynthConfig {
            classes: 4,
            train: 100,
            test: 1,
            seed: 2,
        })
        .unwrap()
        .train;
        let transform = ImageTransform::from_recipe(&deit(), 32, data.mean_std().0);
        let one = epoch(&data, 1, 7, &transform);
        // 6 full batches of 16 (the last 4 images dropped), images and labels.
        assert_eq!(one.len(), 6 * 16 * (IMAGE_BYTES + 1));
        assert_eq!(epoch(&data, 1, 7, &transform), one);
        assert_eq!(epoch(&data, 3, 7, &transform), one);
        assert_eq!(epoch(&data, 8, 7, &transform), one);
        assert_ne!(epoch(&data, 3, 8, &transform), one);
        // The labels follow the plan's order: images 99, 98, ... first.
        let labels = &one[16 * IMAGE_BYTES..16 * (IMAGE_BYTES + 1)];
        let want: Vec<u8> = (84..100).rev().map(|i| data.labels[i] as u8).collect();
        assert_eq!(labels, want);
    }

    #[test]
    fn evaluation_batches_are_the_images_unchanged_with_the_last_partial_one() {
        let data = generate(&SynthConfig {
            classes: 4,
            train: 40,
            test: 1,
            seed: 2,
        })
        .unwrap()
        .train;
        let mut sizes = Vec::new();
        let mut images = Vec::new();
        for_each_batch(&data, 16, None, 2, |batch| {
            sizes.push(batch.labels.size()[0]);
            images.extend(Vec::<u8>::try_from(batch.images.flatten(0, -1)).unwrap());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(sizes, [16, 16, 8]);
        assert_eq!(images, data.images);
    }

    #[test]
    fn padded_crop_shifts_the_image_and_fills_with_zeros() {
        let src: Vec<u8> = (0..3 * 16).map(|i| 1 + (i % 16) as u8).collect();
        let mut dst = vec![0u8; 3 * 16];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            padded_crop(&src, &mut dst, 4, draw_crop_offset(1, &mut rng));
            // Every kept pixel is a source pixel; at most one row and one
            // column (of each 4x4 plane) are padding.
            let zeros = dst.iter().filter(|&&p| p == 0).count();
            assert!(zeros <= 3 * 7, "{zeros}");
            assert!(dst.iter().all(|&p| p == 0 || src.contains(&p)));
        }
    }

    #[test]
    fn a_recipe_without_augmentation_leaves_images_unchanged() {
        let mut recipe = deit();
        recipe.crop = Crop::None;
        recipe.hflip = bocb_search_spaces::Fraction(0.0);
        recipe.rand_augment = None;
        let transform = ImageTransform::from_recipe(&recipe, 32, [0.5; 3]);
        let src: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; IMAGE_BYTES];
        transform.apply(
            &src,
            &mut dst,
            &mut Vec::new(),
            &mut StdRng::seed_from_u64(3),
        );
        assert_eq!(dst, src);
        recipe.hflip = bocb_search_spaces::Fraction(1.0);
        let flip = ImageTransform::from_recipe(&recipe, 32, [0.5; 3]);
        flip.apply(
            &src,
            &mut dst,
            &mut Vec::new(),
            &mut StdRng::seed_from_u64(3),
        );
        assert_eq!(
            dst[..SIDE],
            src[..SIDE].iter().rev().copied().collect::<Vec<_>>()
        );
    }
}

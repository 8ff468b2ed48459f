//! Augmentation and regularisation building blocks of the training recipes
//! (the paper's Table A3): crops and flips, RandAugment, Mixup/CutMix, random
//! erasing, label smoothing and BCE targets with their losses, and repeated
//! augmentation.
//!
//! Per-image operations work on raw RGB images in CHW order, one byte per
//! sample (three planes of `height * width` bytes), before they become
//! tensors; batch operations (mixing, erasing, targets) work on tch tensors.
//! Every random choice comes from a caller-supplied `rand` RNG, so a seeded
//! RNG reproduces a pipeline exactly.

pub mod crop;
pub mod erasing;
pub mod mix;
pub mod rand_augment;
pub mod sampler;
pub mod targets;

pub use crop::{random_crop_flip, CropBox, PixelLayout, RandomResizedCrop};
pub use erasing::RandomErasing;
pub use mix::{MixOutcome, MixedBatch, Mixup};
pub use rand_augment::RandAugment;
pub use sampler::RepeatAugSampler;

/// Colour planes of every image the per-image operations accept.
pub const CHANNELS: usize = 3;

/// Height and width of a CHW RGB image of [`CHANNELS`] planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

impl ImageSize {
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }

    /// Samples in one colour plane.
    pub fn plane(self) -> usize {
        self.height * self.width
    }

    /// Bytes of the whole image.
    pub fn bytes(self) -> usize {
        CHANNELS * self.plane()
    }
}

/// Resampling filter of resizes and geometric operations, as PIL implements them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// Invalid augmentation settings or inputs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AugmentError {
    #[error("RandAugment config {config:?}: {problem} (expected timm's form, e.g. \"rand-m9-mstd0.5-inc1\")")]
    RandAugmentConfig { config: String, problem: String },
    #[error("{name} = {value} is outside {range}; choose a value in that range")]
    OutOfRange {
        name: &'static str,
        value: f64,
        range: &'static str,
    },
    #[error("Mixup/CutMix needs an even batch (timm pairs each image with its mirror in the batch); got {0}: drop the last incomplete batch or use an even batch size")]
    OddMixBatch(i64),
    #[error("expected a {expected} tensor, got shape {got:?}")]
    Shape {
        expected: &'static str,
        got: Vec<i64>,
    },
    #[error("repeated augmentation needs a non-empty dataset and at least one repeat (got {len} images, {repeats} repeats)")]
    EmptySampler { len: usize, repeats: usize },
}

/// Python's `random.uniform(low, high)`.
fn uniform(rng: &mut impl rand::Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

#[cfg(test)]
pub(crate) mod tests_support {
    use tch::{Kind, Tensor};

    use crate::data::{generate, SynthConfig};

    /// `n` synthetic CIFAR-sized images normalised by their own mean and std,
    /// (N, 3, 32, 32) float, with their (N) labels out of 10 classes.
    pub fn synthetic_batch(n: usize, seed: u64) -> (Tensor, Tensor) {
        let config = SynthConfig {
            classes: 10,
            train: n,
            test: 1,
            seed,
        };
        let data = generate(&config).expect("a valid synthetic config").train;
        let (mean, std) = data.mean_std();
        let channel = |v: [f64; 3]| Tensor::from_slice(&v.map(|x| x as f32)).view([1, 3, 1, 1]);
        let images = Tensor::from_slice(&data.images)
            .view([n as i64, 3, 32, 32])
            .to_kind(Kind::Float)
            / 255.0;
        let labels: Vec<i64> = data.labels.iter().map(|&l| i64::from(l)).collect();
        (
            (images - channel(mean)) / channel(std),
            Tensor::from_slice(&labels),
        )
    }
}

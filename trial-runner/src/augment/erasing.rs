//! timm's `RandomErasing` on a normalised batch: per sample, with some
//! probability, boxes of random area and aspect ratio are overwritten with
//! standard normal noise (mode `pixel`, what DeiT's `--remode pixel` uses), a
//! random colour per box (`rand`) or zeros (`const`, the mean after
//! normalisation).

use rand::Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use super::crop::CropBox;
use super::{uniform, AugmentError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasingMode {
    Const,
    Rand,
    Pixel,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomErasing {
    pub probability: f64,
    /// Range of a box's area as a fraction of the image (split over the boxes).
    pub min_area: f64,
    pub max_area: f64,
    /// Range of a box's height / width, sampled log-uniformly.
    pub min_aspect: f64,
    pub max_aspect: f64,
    pub mode: ErasingMode,
    /// Boxes per erased image, uniform in `min_count..=max_count`.
    pub min_count: usize,
    pub max_count: usize,
}

impl RandomErasing {
    /// timm's defaults (area 0.02 to 1/3, aspect 0.3 to 1/0.3, one box) in
    /// `pixel` mode.
    pub fn new(probability: f64) -> Self {
        Self {
            probability,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            min_aspect: 0.3,
            max_aspect: 1.0 / 0.3,
            mode: ErasingMode::Pixel,
            min_count: 1,
            max_count: 1,
        }
    }

    pub fn validate(&self) -> Result<(), AugmentError> {
        let checks = [
            (
                "erasing probability",
                self.probability,
                (0.0..=1.0).contains(&self.probability),
                "[0, 1]",
            ),
            (
                "erasing min area",
                self.min_area,
                self.min_area > 0.0 && self.min_area <= self.max_area,
                "(0, max area]",
            ),
            (
                "erasing max area",
                self.max_area,
                self.max_area <= 1.0,
                "[min area, 1]",
            ),
            (
                "erasing min aspect",
                self.min_aspect,
                self.min_aspect > 0.0 && self.min_aspect <= self.max_aspect,
                "(0, max aspect]",
            ),
            (
                "erasing min count",
                self.min_count as f64,
                self.min_count >= 1 && self.min_count <= self.max_count,
                "[1, max count]",
            ),
        ];
        for (name, value, ok, range) in checks {
            if !ok {
                return Err(AugmentError::OutOfRange { name, value, range });
            }
        }
        Ok(())
    }

    /// Erases in place in `images` (N, C, H, W, normalised float); returns the
    /// boxes of each sample.
    pub fn apply(
        &self,
        images: &mut Tensor,
        rng: &mut impl Rng,
    ) -> Result<Vec<Vec<CropBox>>, AugmentError> {
        self.validate()?;
        let size = images.size();
        let &[n, channels, height, width] = size.as_slice() else {
            return Err(AugmentError::Shape {
                expected: "(N, C, H, W) image",
                got: size,
            });
        };
        let (height, width) = (height as usize, width as usize);
        let mut erased = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut boxes = Vec::new();
            if rng.random::<f64>() <= self.probability {
                let count = rng.random_range(self.min_count..=self.max_count);
                for _ in 0..count {
                    if let Some(b) = self.sample_box(height, width, count, rng) {
                        let mut region = images
                            .get(i)
                            .narrow(1, b.top as i64, b.height as i64)
                            .narrow(2, b.left as i64, b.width as i64);
                        let fill = self
                            .fill(channels, b, rng)
                            .to_kind(region.kind())
                            .to_device(region.device());
                        region.copy_(&fill);
                        boxes.push(b);
                    }
                }
            }
            erased.push(boxes);
        }
        Ok(erased)
    }

    /// Ten tries at a box that fits strictly inside the image, as timm does.
    fn sample_box(
        &self,
        height: usize,
        width: usize,
        count: usize,
        rng: &mut impl Rng,
    ) -> Option<CropBox> {
        let area = (height * width) as f64;
        let log_aspect = (self.min_aspect.ln(), self.max_aspect.ln());
        for _ in 0..10 {
            let target_area = uniform(rng, self.min_area, self.max_area) * area / count as f64;
            let aspect = uniform(rng, log_aspect.0, log_aspect.1).exp();
            let h = (target_area * aspect).sqrt().round_ties_even() as usize;
            let w = (target_area / aspect).sqrt().round_ties_even() as usize;
            if w < width && h < height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return Some(CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                });
            }
        }
        None
    }

    /// The values that replace a box, drawn on the CPU so that they do not
    /// depend on the device.
    fn fill(&self, channels: i64, b: CropBox, rng: &mut impl Rng) -> Tensor {
        let (h, w) = (b.height as i64, b.width as i64);
        let normal = |count: i64, rng: &mut dyn rand::RngCore| -> Vec<f32> {
            (0..count).map(|_| rng.sample(StandardNormal)).collect()
        };
        match self.mode {
            ErasingMode::Pixel => {
                Tensor::from_slice(&normal(channels * h * w, rng)).view([channels, h, w])
            }
            ErasingMode::Rand => Tensor::from_slice(&normal(channels, rng))
                .view([channels, 1, 1])
                .expand([channels, h, w], false),
            ErasingMode::Const => Tensor::zeros([channels, h, w], (Kind::Float, tch::Device::Cpu)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::tests_support::synthetic_batch;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn region(t: &Tensor, i: i64, b: CropBox) -> Tensor {
        t.get(i)
            .narrow(1, b.top as i64, b.height as i64)
            .narrow(2, b.left as i64, b.width as i64)
    }

    #[test]
    fn erased_boxes_hold_normal_noise_and_the_rest_is_untouched() {
        let (original, _) = synthetic_batch(16, 0);
        let mut images = original.copy();
        let mut rng = StdRng::seed_from_u64(2);
        let erasing = RandomErasing::new(0.25);
        let boxes = erasing.apply(&mut images, &mut rng).unwrap();
        assert_eq!(boxes.len(), 16);
        let erased = boxes.iter().filter(|b| !b.is_empty()).count();
        assert!((1..=10).contains(&erased), "{erased} of 16 at p = 0.25");
        let mut noise = Vec::new();
        for (i, sample_boxes) in boxes.iter().enumerate() {
            let i = i as i64;
            let keep = Tensor::ones([1, 1, 32, 32], (Kind::Float, tch::Device::Cpu));
            for &b in sample_boxes {
                let area = (b.height * b.width) as f64 / 1024.0;
                // Rounding the sides moves the area a little past [0.02, 1/3].
                assert!((0.015..0.36).contains(&area), "{b:?}");
                assert!(b.top + b.height <= 32 && b.left + b.width <= 32);
                let _ = region(&keep, 0, b).fill_(0.0);
                let values = Vec::<f32>::try_from(&region(&images, i, b).flatten(0, -1)).unwrap();
                noise.extend(values);
            }
            let changed = (images.get(i) - original.get(i)) * keep.get(0);
            assert_eq!(changed.abs().max().double_value(&[]), 0.0);
        }
        // Pixel mode: fresh standard normal values, mean near 0 and variance near 1.
        assert!(noise.len() > 100);
        let mean = noise.iter().map(|&v| v as f64).sum::<f64>() / noise.len() as f64;
        let var = noise
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / noise.len() as f64;
        assert!(
            mean.abs() < 0.2 && (var - 1.0).abs() < 0.2,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn modes_rand_and_const_fill_boxes_with_one_colour_per_channel() {
        let (original, _) = synthetic_batch(4, 1);
        for mode in [ErasingMode::Rand, ErasingMode::Const] {
            let mut images = original.copy();
            let mut erasing = RandomErasing::new(1.0);
            erasing.mode = mode;
            let mut rng = StdRng::seed_from_u64(3);
            let boxes = erasing.apply(&mut images, &mut rng).unwrap();
            for (i, sample_boxes) in boxes.iter().enumerate() {
                assert_eq!(sample_boxes.len(), 1, "probability 1 erases every image");
                let r = region(&images, i as i64, sample_boxes[0]);
                let per_channel_spread = (r.amax([1, 2], false) - r.amin([1, 2], false)).max();
                assert_eq!(per_channel_spread.double_value(&[]), 0.0);
                if mode == ErasingMode::Const {
                    assert_eq!(r.abs().max().double_value(&[]), 0.0);
                }
            }
        }
    }

    #[test]
    fn probability_zero_erases_nothing_and_seeds_reproduce() {
        let (original, _) = synthetic_batch(8, 2);
        let mut images = original.copy();
        let mut rng = StdRng::seed_from_u64(0);
        let boxes = RandomErasing::new(0.0)
            .apply(&mut images, &mut rng)
            .unwrap();
        assert!(boxes.iter().all(|b| b.is_empty()));
        assert_eq!((&images - &original).abs().max().double_value(&[]), 0.0);
        let run = |seed| {
            let mut images = original.copy();
            let mut rng = StdRng::seed_from_u64(seed);
            let boxes = RandomErasing::new(0.5)
                .apply(&mut images, &mut rng)
                .unwrap();
            (boxes, images)
        };
        let (boxes_a, images_a) = run(7);
        let (boxes_b, images_b) = run(7);
        assert_eq!(boxes_a, boxes_b);
        assert_eq!((&images_a - &images_b).abs().max().double_value(&[]), 0.0);
        let mut bad = RandomErasing::new(0.5);
        bad.max_area = 2.0;
        assert!(matches!(
            bad.validate(),
            Err(AugmentError::OutOfRange { .. })
        ));
        let mut flat = Tensor::zeros([3, 8, 8], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(
            RandomErasing::new(0.5).apply(&mut flat, &mut rng),
            Err(AugmentError::Shape { .. })
        ));
    }
}

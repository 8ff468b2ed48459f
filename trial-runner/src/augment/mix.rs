//! timm's `Mixup` in its batch mode (the one DeiT and RSB train with): with
//! probability `prob` the whole batch is mixed with its reverse, by a convex
//! blend (Mixup) or by pasting a box of the reversed batch (CutMix), chosen
//! with `switch_prob` when both are enabled; λ comes from Beta(α, α). The
//! targets become the matching mixture of smoothed one-hot labels.

use rand::Rng;
use rand_distr::{Beta, Distribution};
use tch::Tensor;

use super::crop::CropBox;
use super::targets::mixed_targets;
use super::AugmentError;

/// Mixup/CutMix settings (timm's names). An α of 0 disables that kind of
/// mixing; both at 0 leaves batches unmixed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mixup {
    pub mixup_alpha: f64,
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all.
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are enabled.
    pub switch_prob: f64,
    /// Recompute λ from the box's area once it is clipped to the image.
    pub correct_lam: bool,
    pub label_smoothing: f64,
    pub num_classes: i64,
}

/// What one call did to the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mixing {
    Unmixed,
    Blend,
    /// The box of every image replaced by the reversed batch's.
    Cut(CropBox),
}

/// λ is the weight of each sample's own label in its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixOutcome {
    pub lambda: f64,
    pub mixing: Mixing,
}

/// A mixed batch and its (N, classes) float targets.
#[derive(Debug)]
pub struct MixedBatch {
    pub images: Tensor,
    pub targets: Tensor,
    pub outcome: MixOutcome,
}

impl Mixup {
    /// Always mix, switch with probability one half and correct λ (timm's
    /// defaults); no label smoothing (timm's `Mixup` defaults to 0.1, which
    /// recipes set explicitly).
    pub fn new(mixup_alpha: f64, cutmix_alpha: f64, num_classes: i64) -> Self {
        Self {
            mixup_alpha,
            cutmix_alpha,
            prob: 1.0,
            switch_prob: 0.5,
            correct_lam: true,
            label_smoothing: 0.0,
            num_classes,
        }
    }

    pub fn validate(&self) -> Result<(), AugmentError> {
        let checks = [
            (
                "mixup alpha",
                self.mixup_alpha,
                self.mixup_alpha >= 0.0 && self.mixup_alpha.is_finite(),
                "[0, inf)",
            ),
            (
                "cutmix alpha",
                self.cutmix_alpha,
                self.cutmix_alpha >= 0.0 && self.cutmix_alpha.is_finite(),
                "[0, inf)",
            ),
            (
                "mix probability",
                self.prob,
                (0.0..=1.0).contains(&self.prob),
                "[0, 1]",
            ),
            (
                "mix switch probability",
                self.switch_prob,
                (0.0..=1.0).contains(&self.switch_prob),
                "[0, 1]",
            ),
            (
                "label smoothing",
                self.label_smoothing,
                (0.0..1.0).contains(&self.label_smoothing),
                "[0, 1)",
            ),
        ];
        for (name, value, ok, range) in checks {
            if !ok {
                return Err(AugmentError::OutOfRange { name, value, range });
            }
        }
        Ok(())
    }

    /// timm's `_params_per_batch`: λ and whether to cut.
    fn sample(&self, rng: &mut impl Rng) -> (f64, bool) {
        let beta = |alpha: f64, rng: &mut dyn rand::RngCore| {
            Beta::new(alpha, alpha)
                .expect("a positive alpha")
                .sample(rng)
        };
        if rng.random::<f64>() >= self.prob {
            return (1.0, false);
        }
        match (self.mixup_alpha > 0.0, self.cutmix_alpha > 0.0) {
            (true, true) => {
                let cut = rng.random::<f64>() < self.switch_prob;
                let alpha = if cut {
                    self.cutmix_alpha
                } else {
                    self.mixup_alpha
                };
                (beta(alpha, rng), cut)
            }
            (true, false) => (beta(self.mixup_alpha, rng), false),
            (false, true) => (beta(self.cutmix_alpha, rng), true),
            (false, false) => (1.0, false),
        }
    }

    /// Mixes `images` (N, C, H, W float, N even) with labels (N class indices).
    pub fn apply(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut impl Rng,
    ) -> Result<MixedBatch, AugmentError> {
        self.validate()?;
        let size = images.size();
        if size.len() != 4 {
            return Err(AugmentError::Shape {
                expected: "(N, C, H, W) image",
                got: size,
            });
        }
        if labels.size() != [size[0]] {
            return Err(AugmentError::Shape {
                expected: "(N) label",
                got: labels.size(),
            });
        }
        if size[0] % 2 != 0 {
            return Err(AugmentError::OddMixBatch(size[0]));
        }
        let (lambda, cut) = self.sample(rng);
        let (images, outcome) = if lambda == 1.0 {
            (
                images.shallow_clone(),
                MixOutcome {
                    lambda,
                    mixing: Mixing::Unmixed,
                },
            )
        } else if cut {
            let (height, width) = (size[2] as usize, size[3] as usize);
            let (cut_box, lambda) = self.cut_box(height, width, lambda, rng);
            let mixed = images.copy();
            let narrow = |t: &Tensor| {
                t.narrow(2, cut_box.top as i64, cut_box.height as i64)
                    .narrow(3, cut_box.left as i64, cut_box.width as i64)
            };
            narrow(&mixed).copy_(&narrow(&images.flip([0])));
            (
                mixed,
                MixOutcome {
                    lambda,
                    mixing: Mixing::Cut(cut_box),
                },
            )
        } else {
            (
                images * lambda + images.flip([0]) * (1.0 - lambda),
                MixOutcome {
                    lambda,
                    mixing: Mixing::Blend,
                },
            )
        };
        let targets = mixed_targets(
            labels,
            self.num_classes,
            outcome.lambda,
            self.label_smoothing,
        )
        .to_device(images.device());
        Ok(MixedBatch {
            images,
            targets,
            outcome,
        })
    }

    /// timm's `rand_bbox` + λ correction: a box of `sqrt(1 - λ)` of each side
    /// centred at a uniform pixel, clipped to the image.
    fn cut_box(
        &self,
        height: usize,
        width: usize,
        lambda: f64,
        rng: &mut impl Rng,
    ) -> (CropBox, f64) {
        let ratio = (1.0 - lambda).sqrt();
        let (cut_h, cut_w) = (
            (height as f64 * ratio) as i64,
            (width as f64 * ratio) as i64,
        );
        let cy = rng.random_range(0..height) as i64;
        let cx = rng.random_range(0..width) as i64;
        let span = |centre: i64, cut: i64, extent: usize| {
            let low = (centre - cut / 2).clamp(0, extent as i64) as usize;
            let high = (centre + (cut + 1) / 2).clamp(0, extent as i64) as usize;
            (low, high - low)
        };
        let (top, box_h) = span(cy, cut_h, height);
        let (left, box_w) = span(cx, cut_w, width);
        let cut_box = CropBox {
            top,
            left,
            height: box_h,
            width: box_w,
        };
        let lambda = if self.correct_lam {
            1.0 - (box_h * box_w) as f64 / (height * width) as f64
        } else {
            lambda
        };
        (cut_box, lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::tests_support::synthetic_batch;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use tch::Kind;

    const CLASSES: i64 = 10;

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    fn assert_targets_sum_to_one(targets: &Tensor) {
        let sums = targets.sum_dim_intlist(-1, false, Kind::Double);
        assert!(max_abs(&(sums - 1.0)) < 1e-5);
    }

    #[test]
    fn mixup_blends_images_and_targets_by_the_same_lambda() {
        let (images, labels) = synthetic_batch(8, 0);
        let mut mixup = Mixup::new(0.8, 0.0, CLASSES);
        mixup.label_smoothing = 0.1;
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..5 {
            let out = mixup.apply(&images, &labels, &mut rng).unwrap();
            assert_eq!(out.outcome.mixing, Mixing::Blend);
            let lambda = out.outcome.lambda;
            assert!(lambda > 0.0 && lambda < 1.0);
            let want = &images * lambda + images.flip([0]) * (1.0 - lambda);
            assert!(max_abs(&(&out.images - want)) < 1e-5);
            assert_targets_sum_to_one(&out.targets);
            // Each target is λ on its own smoothed label plus 1-λ on its mirror's.
            let own = crate::augment::targets::smoothed_one_hot(&labels, CLASSES, 0.1);
            let want = &own * lambda + own.flip([0]) * (1.0 - lambda);
            assert!(max_abs(&(&out.targets - want)) < 1e-6);
            // Where the two labels differ, the own label's weight reads λ back.
            for i in 0..8i64 {
                let (a, b) = (labels.int64_value(&[i]), labels.int64_value(&[7 - i]));
                if a != b {
                    let weight = out.targets.double_value(&[i, a]) - 0.1 / CLASSES as f64;
                    assert!((weight - 0.9 * lambda).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn cutmix_pastes_the_mirrored_box_and_lambda_is_the_kept_area() {
        let (images, labels) = synthetic_batch(6, 1);
        let mixup = Mixup::new(0.0, 1.0, CLASSES);
        let mut rng = StdRng::seed_from_u64(9);
        let flipped = images.flip([0]);
        let mut cuts = 0;
        for _ in 0..20 {
            let out = mixup.apply(&images, &labels, &mut rng).unwrap();
            let Mixing::Cut(b) = out.outcome.mixing else {
                panic!("cutmix alone always cuts: {:?}", out.outcome);
            };
            cuts += 1;
            let (h, w) = (32, 32);
            assert!(b.top + b.height <= h && b.left + b.width <= w);
            let kept = 1.0 - (b.height * b.width) as f64 / (h * w) as f64;
            assert!((out.outcome.lambda - kept).abs() < 1e-12);
            // Inside the box: the mirror's pixels; elsewhere: the original's.
            let inside = |t: &Tensor| {
                t.narrow(2, b.top as i64, b.height as i64)
                    .narrow(3, b.left as i64, b.width as i64)
            };
            assert!(max_abs(&(inside(&out.images) - inside(&flipped))) == 0.0);
            let mask = Tensor::ones([1, 1, 32, 32], (Kind::Float, tch::Device::Cpu));
            let _ = inside(&mask).fill_(0.0);
            assert!(max_abs(&((&out.images - &images) * &mask)) == 0.0);
            assert_targets_sum_to_one(&out.targets);
            let own = labels.int64_value(&[0]);
            let other = labels.int64_value(&[5]);
            if own != other {
                assert!((out.targets.double_value(&[0, own]) - kept).abs() < 1e-6);
            }
        }
        assert_eq!(cuts, 20);
    }

    #[test]
    fn both_kinds_are_drawn_with_the_switch_probability() {
        let (images, labels) = synthetic_batch(4, 2);
        let mixup = Mixup::new(0.8, 1.0, CLASSES);
        let mut rng = StdRng::seed_from_u64(0);
        let mut cuts = 0;
        for _ in 0..200 {
            match mixup
                .apply(&images, &labels, &mut rng)
                .unwrap()
                .outcome
                .mixing
            {
                Mixing::Cut(_) => cuts += 1,
                Mixing::Blend => {}
                Mixing::Unmixed => panic!("prob 1 always mixes"),
            }
        }
        assert!((70..130).contains(&cuts), "{cuts}");
    }

    #[test]
    fn zero_alphas_or_probability_disable_mixing() {
        let (images, labels) = synthetic_batch(4, 3);
        let mut rng = StdRng::seed_from_u64(1);
        let mut never = Mixup::new(0.0, 0.0, CLASSES);
        never.label_smoothing = 0.1;
        let mut no_prob = Mixup::new(0.8, 1.0, CLASSES);
        no_prob.prob = 0.0;
        for mixup in [never, no_prob] {
            let out = mixup.apply(&images, &labels, &mut rng).unwrap();
            assert_eq!(out.outcome.mixing, Mixing::Unmixed);
            assert!(max_abs(&(&out.images - &images)) == 0.0);
            let want =
                crate::augment::targets::smoothed_one_hot(&labels, CLASSES, mixup.label_smoothing);
            assert!(max_abs(&(&out.targets - want)) < 1e-7);
        }
        // Mixup alone never cuts.
        let blend_only = Mixup::new(1.0, 0.0, CLASSES);
        for _ in 0..20 {
            let out = blend_only.apply(&images, &labels, &mut rng).unwrap();
            assert_eq!(out.outcome.mixing, Mixing::Blend);
        }
    }

    #[test]
    fn odd_batches_and_bad_settings_are_refused() {
        let (images, labels) = synthetic_batch(3, 4);
        let mut rng = StdRng::seed_from_u64(0);
        let err = Mixup::new(0.8, 1.0, CLASSES)
            .apply(&images, &labels, &mut rng)
            .unwrap_err();
        assert_eq!(err, AugmentError::OddMixBatch(3));
        assert!(err.to_string().contains("even batch"));
        let mut bad = Mixup::new(0.8, 1.0, CLASSES);
        bad.switch_prob = 1.5;
        assert!(matches!(
            bad.validate(),
            Err(AugmentError::OutOfRange { .. })
        ));
    }

    #[test]
    fn the_same_seed_mixes_the_same_way() {
        let (images, labels) = synthetic_batch(4, 5);
        let mixup = Mixup::new(0.8, 1.0, CLASSES);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10)
                .map(|_| mixup.apply(&images, &labels, &mut rng).unwrap().outcome)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}

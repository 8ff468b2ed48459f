//! The batch-level part of a training recipe: random erasing, Mixup/CutMix,
//! soft or binary targets and their loss, gradient clipping by global norm,
//! and the exponential moving average of the weights.

use std::collections::BTreeMap;

use bocb_search_spaces::{Loss, Recipe};
use rand::Rng;
use tch::{nn, Kind, Tensor};

use crate::augment::targets::{smoothed_one_hot, soft_target_cross_entropy, BceLoss};
use crate::augment::{AugmentError, Mixup, RandomErasing};

/// timm's `--bce-target-thresh 0.2` of the RSB recipes: after Mixup/CutMix
/// both classes of a mixed pair become positives.
const BCE_TARGET_THRESHOLD: f64 = 0.2;

/// What a batch trains against.
pub enum Targets {
    /// Class indices (N): plain cross-entropy.
    Labels(Tensor),
    /// Soft targets (N, classes): smoothed and/or mixed.
    Dense(Tensor),
}

/// A recipe's batch transforms and loss for `classes` outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Regime {
    erasing: Option<RandomErasing>,
    mixup: Option<Mixup>,
    label_smoothing: f64,
    loss: Loss,
    classes: i64,
}

impl Regime {
    /// Cross-entropy on the labels and nothing else: a trial without a recipe.
    pub fn plain(classes: i64) -> Self {
        Regime {
            erasing: None,
            mixup: None,
            label_smoothing: 0.0,
            loss: Loss::CrossEntropy,
            classes,
        }
    }

    /// `recipe`'s random erasing (timm's pixel mode), Mixup/CutMix with its
    /// probabilities, label smoothing and loss.
    pub fn from_recipe(recipe: &Recipe, classes: i64) -> Self {
        let mixes = recipe.mixup_alpha.0 > 0.0 || recipe.cutmix_alpha.0 > 0.0;
        let mixup = (mixes && recipe.mix_prob.0 > 0.0).then(|| Mixup {
            prob: recipe.mix_prob.0,
            switch_prob: recipe.mix_switch_prob.0,
            label_smoothing: recipe.label_smoothing.0,
            ..Mixup::new(recipe.mixup_alpha.0, recipe.cutmix_alpha.0, classes)
        });
        Regime {
            erasing: (recipe.random_erasing.0 > 0.0)
                .then(|| RandomErasing::new(recipe.random_erasing.0)),
            mixup,
            label_smoothing: recipe.label_smoothing.0,
            loss: recipe.loss,
            classes,
        }
    }

    /// Erases and mixes normalised `images` (in place when erasing) and
    /// returns the images to train on with their targets.
    pub fn prepare(
        &self,
        mut images: Tensor,
        labels: Tensor,
        rng: &mut impl Rng,
    ) -> Result<(Tensor, Targets), AugmentError> {
        if let Some(erasing) = &self.erasing {
            erasing.apply(&mut images, rng)?;
        }
        if let Some(mixup) = &self.mixup {
            let mixed = mixup.apply(&images, &labels, rng)?;
            return Ok((mixed.images, Targets::Dense(mixed.targets)));
        }
        if self.label_smoothing > 0.0 {
            let targets = smoothed_one_hot(&labels, self.classes, self.label_smoothing);
            return Ok((images, Targets::Dense(targets)));
        }
        Ok((images, Targets::Labels(labels)))
    }

    /// The training loss of `logits` against `targets`.
    pub fn loss(&self, logits: &Tensor, targets: &Targets) -> Tensor {
        match (self.loss, targets) {
            (Loss::CrossEntropy, Targets::Labels(labels)) => {
                logits.cross_entropy_for_logits(labels)
            }
            (Loss::CrossEntropy, Targets::Dense(dense)) => soft_target_cross_entropy(logits, dense),
            (Loss::BinaryCrossEntropy, Targets::Labels(t) | Targets::Dense(t)) => BceLoss {
                smoothing: self.label_smoothing,
                target_threshold: Some(BCE_TARGET_THRESHOLD),
            }
            .loss(logits, t),
        }
    }
}

/// Scales the gradients of `params` so that their global L2 norm is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` (coefficient
/// `max_norm / (norm + 1e-6)`, capped at 1, applied without a device sync).
/// Returns the norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Tensor {
    let grads: Vec<Tensor> = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
    }
    // As torch's clip_grad_norm_: the norm of the per-tensor norms, each
    // taken in one read of its gradient (no squared copy).
    let norms: Vec<Tensor> = grads
        .iter()
        .map(|g| g.norm().to_kind(Kind::Float))
        .collect();
    let norm = Tensor::stack(&norms, 0).norm();
    let coefficient = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
    tch::no_grad(|| {
        for g in &grads {
            let _ = g.shallow_clone().g_mul_(&coefficient.to_kind(g.kind()));
        }
    });
    norm
}

/// timm's `ModelEmaV2`: after every step each variable of the average
/// becomes `decay * average + (1 - decay) * live`; integer buffers (batch
/// norm's step counters) are copied.
pub struct WeightAverage {
    decay: f64,
    /// (average, live) pairs, matched by variable name.
    pairs: Vec<(Tensor, Tensor)>,
}

impl WeightAverage {
    /// Starts `average` (a var store of the same model) at `live`'s values.
    pub fn track(live: &nn::VarStore, average: &mut nn::VarStore, decay: f64) -> Self {
        let live_vars: BTreeMap<String, Tensor> = live.variables().into_iter().collect();
        let average_vars: BTreeMap<String, Tensor> = average.variables().into_iter().collect();
        let pairs = average_vars
            .into_iter()
            .filter_map(|(name, a)| live_vars.get(&name).map(|l| (a, l.shallow_clone())))
            .collect();
        let mut average = WeightAverage { decay, pairs };
        average.copy_live();
        average
    }

    fn copy_live(&mut self) {
        tch::no_grad(|| {
            for (a, l) in &mut self.pairs {
                a.copy_(l);
            }
        });
    }

    /// One update after an optimizer step.
    pub fn update(&mut self) {
        let weight = 1.0 - self.decay;
        tch::no_grad(|| {
            for (a, l) in &mut self.pairs {
                if a.is_floating_point() {
                    let _ = a.lerp_(l, weight);
                } else {
                    a.copy_(l);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::tests_support::synthetic_batch;
    use bocb_search_spaces::RecipeBook;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use tch::Device;

    fn recipe(name: &str) -> Recipe {
        RecipeBook::builtin().recipe(name).unwrap().clone()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
    }

    #[test]
    fn deit_mixes_a_real_batch_into_convex_combinations_with_targets_summing_to_one() {
        let (images, labels) = synthetic_batch(16, 4);
        let mut deit = recipe("deit");
        deit.random_erasing = bocb_search_spaces::Fraction(0.0);
        // Mixup only, so the image is one blend of the batch and its mirror.
        deit.cutmix_alpha = bocb_search_spaces::NonNegative(0.0);
        let regime = Regime::from_recipe(&deit, 10);
        let mut rng = StdRng::seed_from_u64(3);
        let (mixed, targets) = regime
            .prepare(images.shallow_clone(), labels.shallow_clone(), &mut rng)
            .unwrap();
        let Targets::Dense(targets) = targets else {
            panic!("deit trains on soft targets")
        };
        let sums = values(&targets.sum_dim_intlist(-1, false, Kind::Float));
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        // The weight of each image's own label: (1 - s) λ + s / K, s = 0.1.
        let own = values(&targets.gather(1, &labels.view([-1, 1]), false));
        let lambda = (f64::from(own[0]) - 0.1 / 10.0) / 0.9;
        assert!(lambda > 0.0 && lambda < 1.0, "{lambda}");
        let expected = &images * lambda + images.flip([0]) * (1.0 - lambda);
        let gap = (mixed - expected).abs().max().double_value(&[]);
        assert!(gap < 1e-4, "{gap}");
        // Its cross-entropy reads the soft targets.
        let logits = crate::seeding::draw(|| Tensor::randn([16, 10], (Kind::Float, Device::Cpu)));
        let by_hand = (-&targets * logits.log_softmax(-1, Kind::Float))
            .sum(Kind::Float)
            .double_value(&[])
            / 16.0;
        let loss = regime.loss(&logits, &Targets::Dense(targets));
        assert!((loss.double_value(&[]) - by_hand).abs() < 1e-4);
    }

    #[test]
    fn rsb_trains_on_binary_targets_with_the_threshold() {
        let (images, labels) = synthetic_batch(8, 5);
        let mut a3 = recipe("rsb_a3");
        a3.mix_prob = bocb_search_spaces::Fraction(0.0);
        let regime = Regime::from_recipe(&a3, 10);
        let (_, targets) = regime
            .prepare(
                images,
                labels.shallow_clone(),
                &mut StdRng::seed_from_u64(1),
            )
            .unwrap();
        let logits = crate::seeding::draw(|| Tensor::randn([8, 10], (Kind::Float, Device::Cpu)));
        let one_hot = smoothed_one_hot(&labels, 10, 0.0);
        let by_hand = logits.binary_cross_entropy_with_logits::<Tensor>(
            &one_hot,
            None,
            None,
            tch::Reduction::Mean,
        );
        let loss = regime.loss(&logits, &targets);
        assert!((loss.double_value(&[]) - by_hand.double_value(&[])).abs() < 1e-6);
        // A mixed pair at λ = 0.7 makes both labels positives (0.7 and 0.3 > 0.2).
        let mixed = crate::augment::targets::mixed_targets(&labels, 10, 0.7, 0.0);
        let positives = values(
            &crate::augment::targets::binarized_targets(&mixed, BCE_TARGET_THRESHOLD)
                .sum_dim_intlist(-1, false, Kind::Float),
        );
        let distinct = values(&labels.ne_tensor(&labels.flip([0])).to_kind(Kind::Float));
        for (p, d) in positives.iter().zip(distinct) {
            assert_eq!(*p, 1.0 + d);
        }
    }

    #[test]
    fn label_smoothing_alone_gives_smoothed_targets_and_erasing_changes_the_batch() {
        let (images, labels) = synthetic_batch(8, 6);
        let mut deit = recipe("deit");
        deit.mix_prob = bocb_search_spaces::Fraction(0.0);
        deit.random_erasing = bocb_search_spaces::Fraction(1.0);
        let regime = Regime::from_recipe(&deit, 10);
        let (erased, targets) = regime
            .prepare(
                images.copy(),
                labels.shallow_clone(),
                &mut StdRng::seed_from_u64(2),
            )
            .unwrap();
        let Targets::Dense(targets) = targets else {
            panic!("label smoothing gives soft targets")
        };
        assert_eq!(targets, smoothed_one_hot(&labels, 10, 0.1));
        // Every image has an erased box somewhere.
        let changed = values(
            &erased
                .ne_tensor(&images)
                .flatten(1, -1)
                .any_dim(1, false)
                .to_kind(Kind::Float),
        );
        assert!(changed.iter().all(|&c| c == 1.0), "{changed:?}");
        // Without a recipe: hard labels and plain cross-entropy.
        let (_, plain) = Regime::plain(10)
            .prepare(images, labels, &mut StdRng::seed_from_u64(2))
            .unwrap();
        assert!(matches!(plain, Targets::Labels(_)));
    }

    #[test]
    fn clipping_bounds_the_global_norm_and_leaves_small_gradients_alone() {
        let params = [
            Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true),
        ];
        // Gradients (3, 4) and (12): global norm 13.
        let loss = (&params[0] * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float)
            + (&params[1] * 12.0).sum(Kind::Float);
        loss.backward();
        let norm = clip_grad_norm(&params, 6.5);
        assert!((norm.double_value(&[]) - 13.0).abs() < 1e-5);
        let g0 = values(&params[0].grad());
        let g1 = values(&params[1].grad());
        let clipped = (g0.iter().chain(&g1).map(|g| g * g).sum::<f32>()).sqrt();
        assert!((clipped - 6.5).abs() < 1e-4, "{clipped}");
        // Directions are kept: half of each.
        assert!((g0[0] - 1.5).abs() < 1e-4 && (g1[0] - 6.0).abs() < 1e-4);
        let before = values(&params[0].grad());
        let _ = clip_grad_norm(&params, 100.0);
        assert_eq!(values(&params[0].grad()), before);
    }

    #[test]
    fn the_average_after_k_steps_is_the_hand_computed_one() {
        let live = nn::VarStore::new(Device::Cpu);
        let mut w = live.root().zeros("w", &[2]);
        let mut average_vs = nn::VarStore::new(Device::Cpu);
        let _ = average_vs.root().zeros("w", &[2]);
        let decay = 0.9;
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[1.0f32, -1.0])));
        let mut average = WeightAverage::track(&live, &mut average_vs, decay);
        let mut expected = [1.0f64, -1.0];
        for k in 1..=3 {
            let step = [2.0 * k as f64, 10.0 * k as f64];
            tch::no_grad(|| w.copy_(&Tensor::from_slice(&step.map(|v| v as f32))));
            average.update();
            for (e, s) in expected.iter_mut().zip(step) {
                *e = decay * *e + (1.0 - decay) * s;
            }
        }
        let got = values(&average_vs.variables()["w"]);
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-5, "{got:?} {expected:?}");
        }
        // The live weights are untouched.
        assert_eq!(values(&w), [6.0, 30.0]);
    }
}

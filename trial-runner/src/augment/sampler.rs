//! Repeated augmentation: timm's `RepeatAugSampler` (from DeiT) in its
//! single-process form. An epoch shuffles the dataset, repeats each index
//! `repeats` times in a row (so the copies land in one batch, each augmented
//! differently), and keeps the first `len` indices, rounded down to a multiple
//! of 256 when the dataset has at least 256 images: the epoch has as many
//! steps as without repetition but sees a third of the images, three times.

use rand::seq::SliceRandom;
use rand::Rng;

use super::AugmentError;

/// timm's `selected_round`: epochs are cut to a multiple of this.
const SELECTED_ROUND: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatAugSampler {
    len: usize,
    repeats: usize,
}

impl RepeatAugSampler {
    /// A sampler over a dataset of `len` images; DeiT repeats each 3 times.
    pub fn new(len: usize, repeats: usize) -> Result<Self, AugmentError> {
        if len == 0 || repeats == 0 {
            return Err(AugmentError::EmptySampler { len, repeats });
        }
        Ok(Self { len, repeats })
    }

    /// Indices per epoch.
    pub fn epoch_len(&self) -> usize {
        let selected = if self.len >= SELECTED_ROUND {
            self.len / SELECTED_ROUND * SELECTED_ROUND
        } else {
            self.len
        };
        selected.min(self.len * self.repeats)
    }

    /// One epoch's indices; the same RNG state gives the same epoch.
    pub fn epoch(&self, rng: &mut impl Rng) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        order.shuffle(rng);
        order
            .iter()
            .flat_map(|&i| std::iter::repeat_n(i, self.repeats))
            .take(self.epoch_len())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn indices_come_in_runs_of_three_and_the_epoch_keeps_its_length() {
        let sampler = RepeatAugSampler::new(100, 3).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let epoch = sampler.epoch(&mut rng);
        assert_eq!(epoch.len(), 100);
        // 100 = 33 full runs and one run cut to a single index.
        for run in epoch[..99].chunks(3) {
            assert!(run.iter().all(|&i| i == run[0]));
        }
        let mut distinct = epoch.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 34);
        assert!(epoch.iter().all(|&i| i < 100));
        // Shuffled, not the first 34 images in order.
        assert_ne!(distinct, (0..34).collect::<Vec<_>>());
    }

    #[test]
    fn large_datasets_round_the_epoch_down_to_a_multiple_of_256() {
        let sampler = RepeatAugSampler::new(1000, 3).unwrap();
        assert_eq!(sampler.epoch_len(), 768);
        let epoch = sampler.epoch(&mut StdRng::seed_from_u64(1));
        assert_eq!(epoch.len(), 768);
        assert_eq!(RepeatAugSampler::new(1024, 3).unwrap().epoch_len(), 1024);
        // One repeat is a plain shuffle of the (rounded) dataset.
        let plain = RepeatAugSampler::new(300, 1)
            .unwrap()
            .epoch(&mut StdRng::seed_from_u64(2));
        let mut sorted = plain.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn epochs_are_deterministic_given_the_seed_and_differ_between_seeds() {
        let sampler = RepeatAugSampler::new(50, 3).unwrap();
        let epoch = |seed| sampler.epoch(&mut StdRng::seed_from_u64(seed));
        assert_eq!(epoch(5), epoch(5));
        assert_ne!(epoch(5), epoch(6));
        assert_eq!(
            RepeatAugSampler::new(0, 3).unwrap_err(),
            AugmentError::EmptySampler { len: 0, repeats: 3 }
        );
    }
}

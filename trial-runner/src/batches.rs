//! Mini-batches assembled on a producer thread, ahead of the training step.

use crossbeam::channel;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::augment::random_crop_flip;
use crate::data::{Dataset, IMAGE_BYTES, SIDE};

/// How many batches the producer may run ahead of the consumer.
const PREFETCH: usize = 4;

/// Per-channel normalisation with the training split's own statistics, and
/// bicubic up-sampling to the backbone's input side where it differs
/// (CIFAR at 224x224, App. A.1).
pub struct Normalizer {
    mean: Tensor,
    std: Tensor,
    side: i64,
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
            x
        } else {
            // Bicubic is affine, so resizing after normalising equals resizing first.
            x.upsample_bicubic2d([self.side, self.side], false, None, None)
        }
    }
}

/// One batch as it leaves the producer: raw images and labels on the CPU.
pub struct RawBatch {
    pub images: Tensor,
    pub labels: Tensor,
}

/// Runs `consume` on every batch of one epoch. With `augment_seed` set, the
/// order is shuffled and images augmented (deterministically in the seed);
/// without it, the split is visited in order, unchanged, and the last
/// partial batch is kept.
pub fn for_each_batch<E>(
    data: &Dataset,
    batch_size: usize,
    augment_seed: Option<u64>,
    mut consume: impl FnMut(RawBatch) -> Result<(), E>,
) -> Result<(), E> {
    let (side, image_len) = (SIDE, IMAGE_BYTES);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = augment_seed.map(StdRng::seed_from_u64);
    let chunks: Vec<Vec<usize>> = match rng.as_mut() {
        Some(rng) => {
            order.shuffle(rng);
            // Training drops the last partial batch, as timm does: a batch of
            // one would break batch norm.
            order
                .chunks_exact(batch_size)
                .map(<[usize]>::to_vec)
                .collect()
        }
        None => order.chunks(batch_size).map(<[usize]>::to_vec).collect(),
    };
    let (sender, receiver) = channel::bounded(PREFETCH);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for indices in chunks {
                let mut images = vec![0u8; indices.len() * image_len];
                for (slot, &i) in images.chunks_exact_mut(image_len).zip(&indices) {
                    match rng.as_mut() {
                        Some(rng) => random_crop_flip(data.image(i), slot, side, 4, rng),
                        None => slot.copy_from_slice(data.image(i)),
                    }
                }
                let labels: Vec<i64> = indices.iter().map(|&i| i64::from(data.labels[i])).collect();
                let batch = RawBatch {
                    images: Tensor::from_slice(&images).view([
                        indices.len() as i64,
                        3,
                        side as i64,
                        side as i64,
                    ]),
                    labels: Tensor::from_slice(&labels),
                };
                // The consumer hung up (it hit an error): stop producing.
                if sender.send(batch).is_err() {
                    return;
                }
            }
        });
        let result = receiver.iter().try_for_each(&mut consume);
        // Hang up before the scope joins the producer, which may be blocked on a full channel.
        drop(receiver);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Training and evaluation batches made on the trial's device: the split is
//! uploaded once as `u8` images, and each batch is gathered by index and
//! cropped and flipped there by tensor ops, so many trials on one GPU do
//! not wait on the CPU pipeline (`data_on_device`).
//!
//! The random draws are the CPU pipeline's: the same per-batch RNG, the
//! same draws in the same order ([`draw_crop_offset`], [`draw_flip`]), so
//! both sources give the same batches for the same seed.

use rand::Rng;
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use super::{
    batch_rng, draw_crop_offset, draw_flip, EpochPlan, ImageTransform, RawBatch, TrainCrop,
};
use crate::data::{Dataset, Splits, CHANNELS, SIDE};
pub use bocb_spec::DataOnDevice;

/// `auto` puts the data on the device only while the uploaded splits take
/// at most this share (1/4) of the device's free memory: the rest is the
/// trials'.
const FREE_MEMORY_SHARE: u64 = 4;

/// The device version of `transform` when a trial on `device` makes its
/// batches there, `None` for the CPU pipeline. `bytes` is what the
/// upload takes ([`upload_bytes`]).
pub fn choose_batch_source(
    setting: DataOnDevice,
    device: Device,
    transform: &ImageTransform,
    bytes: u64,
) -> Result<Option<DeviceTransform>, NoDeviceVersion> {
    match setting {
        DataOnDevice::Off => Ok(None),
        DataOnDevice::On => transform.on_device().map(Some),
        DataOnDevice::Auto => {
            let on_device = transform.on_device().ok();
            let free = crate::memory::free_bytes(device, false);
            let on = auto_on_device(device.is_cuda(), on_device.is_some(), bytes, free);
            Ok(on_device.filter(|_| on))
        }
    }
}

/// `auto`'s rule: the device is CUDA, the recipe's per-image transforms
/// all have device versions, and the uploaded splits (`bytes`) take at
/// most a quarter of the device's free memory (`None`: unknown, so no).
pub fn auto_on_device(
    cuda: bool,
    transforms_on_device: bool,
    bytes: u64,
    free_bytes: Option<u64>,
) -> bool {
    cuda && transforms_on_device && free_bytes.is_some_and(|free| bytes <= free / FREE_MEMORY_SHARE)
}

/// Per-image transforms of a recipe that have no device version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{} {} no on-device version", names(.missing), if .missing.len() == 1 { "has" } else { "have" })]
pub struct NoDeviceVersion {
    /// (transform, the recipe override that removes it)
    missing: Vec<(&'static str, &'static str)>,
}

fn names(missing: &[(&str, &str)]) -> String {
    missing
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" and ")
}

impl NoDeviceVersion {
    /// The recipe overrides that leave only transforms with device
    /// versions (`{ rand_augment: null }`).
    pub fn fix(&self) -> String {
        let fields: Vec<&str> = self.missing.iter().map(|(_, fix)| *fix).collect();
        format!("{{ {} }}", fields.join(", "))
    }
}

impl ImageTransform {
    /// The device version of this transform: the padded crop and the flip
    /// have one; the random-resized crop and RandAugment do not.
    pub fn on_device(&self) -> Result<DeviceTransform, NoDeviceVersion> {
        let mut missing = Vec::new();
        let padding = match &self.crop {
            TrainCrop::Padded(pad) => Some(*pad),
            TrainCrop::None => None,
            TrainCrop::Resized(_) => {
                missing.push((
                    "the random-resized crop (`crop: random_resized`, or `crop: auto` on an up-sampling backbone)",
                    "crop: random_padded",
                ));
                None
            }
        };
        if self.rand_augment.is_some() {
            missing.push(("RandAugment (`rand_augment`)", "rand_augment: null"));
        }
        if !missing.is_empty() {
            return Err(NoDeviceVersion { missing });
        }
        Ok(DeviceTransform {
            padding,
            hflip: self.hflip,
        })
    }
}

/// The device version of an [`ImageTransform`]: `RandomCrop(side, padding)`
/// and the horizontal flip, on a `u8` batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTransform {
    padding: Option<usize>,
    hflip: f64,
}

impl DeviceTransform {
    /// One image's draws, as [`ImageTransform::apply`] makes them:
    /// `(dy, dx, flipped)`.
    fn draw(&self, rng: &mut impl Rng) -> [i64; 3] {
        let (dy, dx) = self
            .padding
            .map_or((0, 0), |pad| draw_crop_offset(pad, rng));
        [dy as i64, dx as i64, i64::from(draw_flip(self.hflip, rng))]
    }

    /// Whether the transform leaves images unchanged.
    fn is_identity(&self) -> bool {
        self.padding.is_none() && self.hflip == 0.0
    }

    /// Crops and flips `images` (`u8`, `[n, 3, side, side]`) by `draws`
    /// (`[n, 3]`: row and column offset, flipped or not), by two gathers
    /// from the zero-padded batch: output row `y` reads padded row
    /// `y + dy + pad`, column `x` reads `x + dx + pad`, or `side - 1 - x +
    /// dx + pad` when flipped.
    fn apply(&self, images: Tensor, draws: &Tensor) -> Tensor {
        if self.is_identity() {
            return images;
        }
        let pad = self.padding.unwrap_or(0) as i64;
        let (n, side) = (images.size()[0], images.size()[2]);
        let padded = if pad > 0 {
            images.constant_pad_nd([pad, pad, pad, pad])
        } else {
            images
        };
        let wide = side + 2 * pad;
        let column = |i: i64| draws.select(1, i).view([n, 1]);
        let along = Tensor::arange(side, (Kind::Int64, draws.device())).view([1, side]);
        let rows = column(0) + pad + &along;
        let mirrored: Tensor = (side - 1) - &along * 2;
        let cols = column(1) + pad + &along + column(2) * mirrored;
        let rows = rows
            .view([n, 1, side, 1])
            .expand([n, CHANNELS as i64, side, wide], false);
        let cols = cols
            .view([n, 1, 1, side])
            .expand([n, CHANNELS as i64, side, side], false);
        padded.gather(2, &rows, false).gather(3, &cols, false)
    }
}

/// Bytes that uploading both splits takes on the device: `u8` images and
/// `i64` labels.
pub fn upload_bytes(splits: &Splits) -> u64 {
    [&splits.train, &splits.test]
        .iter()
        .map(|split| (split.images.len() + 8 * split.len()) as u64)
        .sum()
}

/// A split held on a device: `u8` images `[n, 3, 32, 32]`, `i64` labels.
pub struct DeviceSplit {
    images: Tensor,
    labels: Tensor,
}

impl DeviceSplit {
    /// Copies `split` to `device`, once.
    pub fn upload(split: &Dataset, device: Device) -> Self {
        let side = SIDE as i64;
        let labels: Vec<i64> = split.labels.iter().map(|&l| i64::from(l)).collect();
        DeviceSplit {
            images: Tensor::from_slice(&split.images)
                .view([split.len() as i64, CHANNELS as i64, side, side])
                .to_device(device),
            labels: Tensor::from_slice(&labels).to_device(device),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `consume` on every batch of one pass, in order, as
    /// [`super::for_each_batch`] makes them: with a `plan`, batches follow
    /// `plan.order`, drop the last partial one and are cropped and flipped;
    /// without one, the split in order, unchanged, the last partial batch
    /// kept. Batches are on the split's device.
    pub fn for_each_batch<E>(
        &self,
        batch_size: usize,
        plan: Option<EpochPlan<'_, DeviceTransform>>,
        consume: impl FnMut(RawBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_batch_from(batch_size, plan, 0, consume)
    }

    /// [`for_each_batch`](Self::for_each_batch) from training batch `first`
    /// on, as [`crate::batches::for_each_batch_from`].
    pub fn for_each_batch_from<E>(
        &self,
        batch_size: usize,
        plan: Option<EpochPlan<'_, DeviceTransform>>,
        first: usize,
        mut consume: impl FnMut(RawBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(plan) = plan else {
            for start in (0..self.len()).step_by(batch_size.max(1)) {
                let length = batch_size.min(self.len() - start) as i64;
                consume(RawBatch {
                    images: self.images.narrow(0, start as i64, length),
                    labels: self.labels.narrow(0, start as i64, length),
                })?;
            }
            return Ok(());
        };
        let batches = plan.order.len() / batch_size;
        let used = &plan.order[..batches * batch_size];
        // The epoch's order and draws reach the device in one copy each.
        let order: Vec<i64> = used.iter().map(|&i| i as i64).collect();
        let order = Tensor::from_slice(&order).to_device(self.images.device());
        let mut draws = Vec::with_capacity(3 * used.len());
        for index in 0..batches {
            let mut rng = batch_rng(plan.seed, index);
            for _ in 0..batch_size {
                draws.extend(plan.transform.draw(&mut rng));
            }
        }
        let draws = Tensor::from_slice(&draws)
            .view([used.len() as i64, 3])
            .to_device(self.images.device());
        for index in first..batches {
            let start = (index * batch_size) as i64;
            let picked = order.narrow(0, start, batch_size as i64);
            let images = self.images.index_select(0, &picked);
            consume(RawBatch {
                images: plan
                    .transform
                    .apply(images, &draws.narrow(0, start, batch_size as i64)),
                labels: self.labels.index_select(0, &picked),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batches::{for_each_batch, Normalizer};
    use crate::data::{generate, SynthConfig};
    use bocb_search_spaces::{Crop, Fraction, Recipe, RecipeBook};

    fn splits(train: usize, test: usize) -> Splits {
        generate(&SynthConfig {
            classes: 5,
            train,
            test,
            seed: 9,
        })
        .unwrap()
    }

    fn recipe(name: &str) -> Recipe {
        RecipeBook::builtin().recipe(name).unwrap().clone()
    }

    /// Normalised images and labels of every batch of one pass.
    type Batches = Vec<(Tensor, Tensor)>;

    fn collect(
        normalizer: &Normalizer,
        run: impl FnOnce(&mut dyn FnMut(RawBatch) -> Result<(), ()>),
    ) -> Batches {
        let mut seen = Vec::new();
        run(&mut |batch| {
            seen.push((normalizer.apply(&batch.images), batch.labels));
            Ok(())
        });
        seen
    }

    fn assert_same(host: &Batches, device: &Batches) {
        assert_eq!(host.len(), device.len());
        for ((hi, hl), (di, dl)) in host.iter().zip(device) {
            assert_eq!(hi.size(), di.size());
            assert!(hi.equal(di), "images differ");
            assert!(hl.equal(dl), "labels differ");
        }
    }

    /// Both sources over one epoch of `transform` and over the test split.
    fn compare(transform: &ImageTransform, splits: &Splits, batch_size: usize) {
        let (mean, std) = splits.train.mean_std();
        let normalizer = Normalizer::new(mean, std, 32, Device::Cpu);
        let device_transform = transform.on_device().unwrap();
        // A shuffled order with repeats, as repeated augmentation makes.
        let order: Vec<usize> = (0..3 * splits.train.len())
            .map(|i| (i * 7919) % splits.train.len())
            .collect();
        let train = DeviceSplit::upload(&splits.train, Device::Cpu);
        for seed in [0, 41] {
            let host = collect(&normalizer, |consume| {
                let plan = EpochPlan {
                    order: order.clone(),
                    seed,
                    transform,
                };
                for_each_batch(&splits.train, batch_size, Some(plan), 3, consume).unwrap()
            });
            let device = collect(&normalizer, |consume| {
                let plan = EpochPlan {
                    order: order.clone(),
                    seed,
                    transform: &device_transform,
                };
                train
                    .for_each_batch(batch_size, Some(plan), consume)
                    .unwrap()
            });
            assert_eq!(host.len(), order.len() / batch_size);
            assert_same(&host, &device);
        }
        let test = DeviceSplit::upload(&splits.test, Device::Cpu);
        let host = collect(&normalizer, |consume| {
            for_each_batch(&splits.test, batch_size, None, 2, consume).unwrap()
        });
        let device = collect(&normalizer, |consume| {
            test.for_each_batch(batch_size, None, consume).unwrap()
        });
        assert_eq!(host.len(), splits.test.len().div_ceil(batch_size));
        assert_same(&host, &device);
    }

    #[test]
    fn the_device_makes_the_cpu_pipelines_batches_for_the_same_seed() {
        let splits = splits(70, 37);
        compare(&ImageTransform::basic(), &splits, 16);
        // `pytorch` at the stored side: the padded crop and the flip.
        let pytorch = ImageTransform::from_recipe(&recipe("pytorch"), 32, [0.5; 3]);
        assert_eq!(pytorch, ImageTransform::basic());
        compare(&pytorch, &splits, 10);
        // Flip only, crop only, and always flipped.
        let mut flip_only = recipe("pytorch");
        flip_only.crop = Crop::None;
        compare(
            &ImageTransform::from_recipe(&flip_only, 32, [0.5; 3]),
            &splits,
            16,
        );
        let mut crop_only = recipe("pytorch");
        crop_only.hflip = Fraction(0.0);
        compare(
            &ImageTransform::from_recipe(&crop_only, 32, [0.5; 3]),
            &splits,
            16,
        );
        crop_only.hflip = Fraction(1.0);
        compare(
            &ImageTransform::from_recipe(&crop_only, 32, [0.5; 3]),
            &splits,
            16,
        );
    }

    #[test]
    fn the_device_crop_shifts_pads_with_zeros_and_mirrors() {
        // Pixel value = 1 + column: a shift shows in the first row.
        let row: Vec<u8> = (1..=32).collect();
        let image: Vec<u8> = row.repeat(3 * 32);
        let images = Tensor::from_slice(&image).view([1, 3, 32, 32]);
        let transform = DeviceTransform {
            padding: Some(4),
            hflip: 0.5,
        };
        let first_row = |draws: [i64; 3]| {
            let out = transform.apply(
                images.shallow_clone(),
                &Tensor::from_slice(&draws).view([1, 3]),
            );
            Vec::<u8>::try_from(out.get(0).get(1).get(0)).unwrap()
        };
        // dx = 3: columns 3.. of the source, then 3 zero columns.
        let mut want: Vec<u8> = (4..=32).collect();
        want.extend([0; 3]);
        assert_eq!(first_row([0, 3, 0]), want);
        want.reverse();
        assert_eq!(first_row([0, 3, 1]), want);
        // dy = -4: the first four rows are padding.
        assert_eq!(first_row([-4, 0, 0]), vec![0; 32]);
        assert_eq!(first_row([0, 0, 0]), row);
    }

    #[test]
    fn transforms_without_a_device_version_are_named_with_the_override_that_drops_them() {
        let deit = ImageTransform::from_recipe(&recipe("deit"), 32, [0.5; 3]);
        let err = deit.on_device().unwrap_err();
        assert_eq!(
            err.to_string(),
            "RandAugment (`rand_augment`) has no on-device version"
        );
        assert_eq!(err.fix(), "{ rand_augment: null }");
        // At 224 px, `crop: auto` is the random-resized crop.
        let up = ImageTransform::from_recipe(&recipe("deit"), 224, [0.5; 3]);
        let err = up.on_device().unwrap_err();
        assert!(
            err.to_string().starts_with("the random-resized crop")
                && err
                    .to_string()
                    .ends_with("and RandAugment (`rand_augment`) have no on-device version"),
            "{err}"
        );
        assert_eq!(err.fix(), "{ crop: random_padded, rand_augment: null }");
        let mut plain = recipe("deit");
        plain.rand_augment = None;
        assert!(ImageTransform::from_recipe(&plain, 32, [0.5; 3])
            .on_device()
            .is_ok());
    }

    #[test]
    fn auto_needs_cuda_device_transforms_and_a_quarter_of_the_free_memory() {
        let gib = 1 << 30;
        assert!(auto_on_device(true, true, gib, Some(4 * gib)));
        assert!(!auto_on_device(true, true, gib + 1, Some(4 * gib)));
        assert!(!auto_on_device(true, true, gib, None));
        assert!(!auto_on_device(true, false, 1, Some(4 * gib)));
        assert!(!auto_on_device(false, true, 1, Some(4 * gib)));
        // On the CPU `auto` is the CPU pipeline; `true` and `false` are as told.
        let splits = splits(8, 4);
        let bytes = upload_bytes(&splits);
        assert_eq!(bytes, (12 * 3072 + 12 * 8) as u64);
        let basic = ImageTransform::basic();
        let choose = |choice: DataOnDevice, transform: &ImageTransform| {
            choose_batch_source(choice, Device::Cpu, transform, bytes)
        };
        assert_eq!(choose(DataOnDevice::Auto, &basic), Ok(None));
        assert_eq!(choose(DataOnDevice::Off, &basic), Ok(None));
        assert_eq!(
            choose(DataOnDevice::On, &basic),
            Ok(Some(basic.on_device().unwrap()))
        );
        let deit = ImageTransform::from_recipe(&recipe("deit"), 32, [0.5; 3]);
        assert!(choose(DataOnDevice::On, &deit).is_err());
        assert_eq!(choose(DataOnDevice::Auto, &deit), Ok(None));
    }
}

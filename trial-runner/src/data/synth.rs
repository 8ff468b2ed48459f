//! Synthetic CIFAR-like data: learnable, but not trivially.
//!
//! Each class is a prototype made of 3 patterns drawn from a pool shared by all classes
//! (full-field oriented gratings, colour blobs and Gabor patches), so classes differ in
//! their combination of patterns rather than in any one of them. Every pattern has its
//! own colour and zero mean per channel, so that the average colour of an image says
//! nothing about its class. A sample is its class prototype shifted by up to 4 pixels
//! (with wrap-around) with per-pattern weight jitter, plus 2 random distractor patterns
//! common to all classes, a random brightness and tint, and strong Gaussian pixel noise.
//! The shift scrambles the phase of the gratings, so a template matcher on raw pixels
//! does only moderately well while a convolutional network can pick up orientation and
//! frequency: how fast it does so depends on the optimiser's settings, which is what
//! the trials tune.

use std::f32::consts::TAU;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::{
    cifar, folder, CifarFormat, DataError, Dataset, DatasetFormat, Splits, CHANNELS, IMAGE_BYTES,
    SIDE,
};

/// What [`generate`] and [`write_synthetic`] make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of classes: 2 to 100 for the CIFAR-100 formats, to 10 for CIFAR-10.
    pub classes: usize,
    /// Images in the training split (labels balanced round-robin, then shuffled).
    pub train: usize,
    /// Images in the test split.
    pub test: usize,
    /// The output is a pure function of the config, seed included (for the `rand`
    /// version in Cargo.lock, whose `StdRng` it uses).
    pub seed: u64,
}

impl Default for SynthConfig {
    /// The size of the real CIFAR-100.
    fn default() -> Self {
        SynthConfig {
            classes: 100,
            train: 50_000,
            test: 10_000,
            seed: 0,
        }
    }
}

/// Patterns that make up one class prototype.
const COMPONENTS: usize = 3;
/// Size of the pattern pool the prototypes draw from, per 2 classes, and at least
/// `MIN_POOL` so that there are enough distinct combinations for 2 or 3 classes.
const POOL_PER_CLASS: usize = 3;
const MIN_POOL: usize = 6;
/// Distractor patterns shared by all classes, and how many each image gets.
const DISTRACTORS: usize = 8;
const DISTRACTORS_PER_IMAGE: usize = 2;
/// Largest shift of the prototype, in pixels, each way.
const MAX_SHIFT: i32 = 4;
/// Largest magnitude of a unit-RMS pattern: caps blob peaks, which would otherwise
/// clip at 0 or 255 and shift the image's mean colour with the class.
const PEAK: f32 = 2.5;
/// Pixel-value scale (out of 255) of the prototype, of a distractor, and of the noise.
const SIGNAL: f32 = 25.0;
const DISTRACTOR: f32 = 40.0;
const NOISE: f32 = 50.0;
/// Standard deviations of the per-image brightness and per-channel tint.
const BRIGHTNESS: f32 = 15.0;
const TINT: f32 = 6.0;

const PLANE: usize = SIDE * SIDE;
/// A pattern over the image, CHW, zero mean per channel, unit RMS unless that would
/// make its peak exceed `PEAK`.
type Pattern = Vec<f32>;

/// Distance from `a` to `b` on a circle of circumference `SIDE`, so that patterns wrap
/// seamlessly when shifted.
fn wrapped(a: f32, b: f32) -> f32 {
    let d = (a - b).abs();
    d.min(SIDE as f32 - d)
}

/// A random pattern of the given kind: 0 an oriented grating, 1 a colour blob, 2 a
/// Gabor patch (a grating under a blob).
fn random_pattern(kind: usize, rng: &mut StdRng) -> Pattern {
    // A colour direction not too close to grey, so every pattern has some colour.
    let color = loop {
        let c: [f32; CHANNELS] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.3 {
            break c.map(|v| v / norm);
        }
    };
    // Integer cycles per image keep gratings seamless under wrap-around shifts.
    let (kx, ky) = loop {
        let k: (i32, i32) = (rng.random_range(-5..=5), rng.random_range(-5..=5));
        if k != (0, 0) {
            break k;
        }
    };
    let phase = rng.random_range(0.0..TAU);
    let center = (
        rng.random_range(0.0..SIDE as f32),
        rng.random_range(0.0..SIDE as f32),
    );
    let sigma: f32 = rng.random_range(2.5..6.0);
    let mut shape = [0f32; PLANE];
    for (i, v) in shape.iter_mut().enumerate() {
        let (x, y) = ((i % SIDE) as f32, (i / SIDE) as f32);
        let grating = (TAU * (kx as f32 * x + ky as f32 * y) / SIDE as f32 + phase).cos();
        let (dx, dy) = (wrapped(x, center.0), wrapped(y, center.1));
        let blob = (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
        *v = match kind {
            0 => grating,
            1 => blob,
            _ => grating * blob,
        };
    }
    let mean = shape.iter().sum::<f32>() / PLANE as f32;
    let mut pattern: Pattern = color
        .iter()
        .flat_map(|&c| shape.iter().map(move |&v| c * (v - mean)))
        .collect();
    let rms = (pattern.iter().map(|v| v * v).sum::<f32>() / IMAGE_BYTES as f32).sqrt();
    let peak = pattern.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = (1.0 / rms).min(PEAK / peak);
    pattern.iter_mut().for_each(|v| *v *= scale);
    pattern
}

/// Adds `weight * pattern` shifted by (`dx`, `dy`) pixels, wrapping, to `acc`.
fn add_shifted(acc: &mut [f32], pattern: &[f32], weight: f32, dx: usize, dy: usize) {
    for c in 0..CHANNELS {
        for y in 0..SIDE {
            let src = &pattern[c * PLANE + ((y + dy) % SIDE) * SIDE..][..SIDE];
            let dst = &mut acc[c * PLANE + y * SIDE..][..SIDE];
            let (head, tail) = src.split_at(dx % SIDE);
            for (d, s) in dst.iter_mut().zip(tail.iter().chain(head)) {
                *d += weight * s;
            }
        }
    }
}

struct Generator {
    /// Per class: its patterns with their base weights.
    prototypes: Vec<Vec<(Pattern, f32)>>,
    distractors: Vec<Pattern>,
}

impl Generator {
    fn new(classes: usize, rng: &mut StdRng) -> Self {
        // Equal shares of each kind, so that the difficulty varies little with the seed.
        let pool: Vec<Pattern> = (0..(classes * POOL_PER_CLASS / 2).max(MIN_POOL))
            .map(|i| random_pattern(i % 3, rng))
            .collect();
        let mut used = std::collections::HashSet::new();
        let prototypes = (0..classes)
            .map(|_| loop {
                let mut pick = rand::seq::index::sample(rng, pool.len(), COMPONENTS).into_vec();
                pick.sort_unstable();
                if used.insert(pick.clone()) {
                    break pick
                        .into_iter()
                        .map(|i| (pool[i].clone(), rng.random_range(0.7..1.3)))
                        .collect();
                }
            })
            .collect();
        let distractors = (0..DISTRACTORS)
            .map(|i| random_pattern(i % 3, rng))
            .collect();
        Generator {
            prototypes,
            distractors,
        }
    }

    /// Writes one sample of class `label` into `out` (`IMAGE_BYTES` bytes).
    fn sample(&self, label: usize, rng: &mut StdRng, acc: &mut [f32], out: &mut [u8]) {
        let brightness = BRIGHTNESS * rng.sample::<f32, _>(StandardNormal);
        for plane in acc.chunks_exact_mut(PLANE) {
            plane.fill(128.0 + brightness + TINT * rng.sample::<f32, _>(StandardNormal));
        }
        let shift = |rng: &mut StdRng| {
            rng.random_range(-MAX_SHIFT..=MAX_SHIFT)
                .rem_euclid(SIDE as i32) as usize
        };
        let (dx, dy) = (shift(rng), shift(rng));
        let contrast = SIGNAL * rng.random_range(0.7..1.3);
        for (pattern, weight) in &self.prototypes[label] {
            let jitter = rng.random_range(0.6..1.4);
            add_shifted(acc, pattern, contrast * weight * jitter, dx, dy);
        }
        for _ in 0..DISTRACTORS_PER_IMAGE {
            let distractor = &self.distractors[rng.random_range(0..DISTRACTORS)];
            let weight = DISTRACTOR * rng.random_range(0.5..1.0);
            let (ddx, ddy) = (rng.random_range(0..SIDE), rng.random_range(0..SIDE));
            add_shifted(acc, distractor, weight, ddx, ddy);
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            let v = a + NOISE * rng.sample::<f32, _>(StandardNormal);
            *o = v.round().clamp(0.0, 255.0) as u8;
        }
    }

    fn split(&self, n: usize, class_names: &[String], rng: &mut StdRng) -> Dataset {
        let classes = self.prototypes.len();
        let mut labels: Vec<u16> = (0..n).map(|i| (i % classes) as u16).collect();
        labels.shuffle(rng);
        let mut images = vec![0; n * IMAGE_BYTES];
        let mut acc = vec![0f32; IMAGE_BYTES];
        for (out, &label) in images.chunks_exact_mut(IMAGE_BYTES).zip(&labels) {
            self.sample(label.into(), rng, &mut acc, out);
        }
        Dataset {
            images,
            labels,
            classes,
            class_names: class_names.to_vec(),
        }
    }
}

/// Generates a synthetic dataset in memory (see the module docs for what it looks like).
/// Class names are `class_000`, `class_001`, ...
pub fn generate(cfg: &SynthConfig) -> Result<Splits, DataError> {
    let max = CifarFormat::Cifar100Bin.classes();
    if !(2..=max).contains(&cfg.classes) {
        return Err(DataError::InvalidSynthConfig(format!(
            "classes must be 2 to {max}, got {}",
            cfg.classes
        )));
    }
    if cfg.train == 0 || cfg.test == 0 {
        return Err(DataError::InvalidSynthConfig(format!(
            "train and test must be at least 1, got {} and {}",
            cfg.train, cfg.test
        )));
    }
    // Independent streams, so the test images do not change with the train size.
    let mut master = StdRng::seed_from_u64(cfg.seed);
    let mut proto_rng = StdRng::from_rng(&mut master);
    let mut train_rng = StdRng::from_rng(&mut master);
    let mut test_rng = StdRng::from_rng(&mut master);
    let generator = Generator::new(cfg.classes, &mut proto_rng);
    let names: Vec<String> = (0..cfg.classes).map(|i| format!("class_{i:03}")).collect();
    Ok(Splits {
        train: generator.split(cfg.train, &names, &mut train_rng),
        test: generator.split(cfg.test, &names, &mut test_rng),
    })
}

/// Writes a synthetic dataset into `out` in exactly the files and record layout of
/// `format` (not into the archive's subfolder; [`super::load`] reads either), including
/// the class-name files, with CIFAR-100 coarse labels `fine / 5`; or as an image folder.
/// Deterministic given the config.
pub fn write_synthetic(
    out: &Path,
    cfg: &SynthConfig,
    format: DatasetFormat,
) -> Result<(), DataError> {
    let format = match format {
        DatasetFormat::Cifar(format) => format,
        DatasetFormat::ImageFolder => return folder::save(out, &generate(cfg)?),
    };
    if cfg.classes > format.classes() {
        return Err(DataError::InvalidSynthConfig(format!(
            "{format} holds at most {} classes, got {}",
            format.classes(),
            cfg.classes
        )));
    }
    cifar::save(out, &generate(cfg)?, format)
}

/// Writes a synthetic image folder of full-size images (see
/// [`folder::save_photos`]): the images of [`generate`], up-sampled with
/// grain, for streaming at full resolution.
pub fn write_synthetic_photos(
    out: &Path,
    cfg: &SynthConfig,
    layout: folder::PhotoLayout,
) -> Result<(), DataError> {
    folder::save_photos(out, &generate(cfg)?, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn folder_config() -> SynthConfig {
        SynthConfig {
            classes: 3,
            train: 12,
            test: 6,
            seed: 4,
        }
    }

    #[test]
    fn full_size_jpeg_folders_stream_at_their_size_and_keep_each_image() {
        use crate::augment::ImageSize;
        use crate::data::stream::{decode_file, BadFiles, DecodeBuffers, FolderSplits};
        let dir = tempfile::tempdir().unwrap();
        let layout = folder::PhotoLayout {
            side: 96,
            jpeg: true,
        };
        write_synthetic_photos(dir.path(), &folder_config(), layout).unwrap();
        let splits = FolderSplits::open(dir.path(), Some(64), BadFiles::Fail).unwrap();
        let expected = generate(&folder_config()).unwrap();
        assert_eq!(splits.class_names, expected.train.class_names);
        assert_eq!((splits.train.len(), splits.test.len()), (12, 6));
        let (mut buffers, mut pixels) = (DecodeBuffers::default(), Vec::new());
        for (path, &label) in splits.train.files.iter().zip(&splits.train.labels) {
            assert_eq!(path.extension().unwrap(), "jpg");
            let i: usize = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            assert_eq!(expected.train.labels[i], label);
            let size = decode_file(path, &mut buffers, &mut pixels).unwrap();
            let landscape = ImageSize::new(72, 96);
            let portrait = ImageSize::new(96, 72);
            assert_eq!(size, if i % 4 == 3 { portrait } else { landscape });
            // Block means of the up-sampled image follow its own source's
            // pixels far more closely than another image's: the grain and
            // JPEG's loss do not drown the content.
            let distance = |source: &[u8]| {
                let mut error = 0.0;
                for c in 0..CHANNELS {
                    for by in 0..size.height / 3 {
                        for bx in 0..size.width / 3 {
                            let mean: f64 = (0..9)
                                .map(|k| {
                                    let (y, x) = (by * 3 + k / 3, bx * 3 + k % 3);
                                    f64::from(pixels[(y * size.width + x) * CHANNELS + c])
                                })
                                .sum::<f64>()
                                / 9.0;
                            let sy = (by * 3 + 1) * SIDE / size.height;
                            let sx = (bx * 3 + 1) * SIDE / size.width;
                            error += (mean - f64::from(source[c * PLANE + sy * SIDE + sx])).abs();
                        }
                    }
                }
                error
            };
            let own = distance(expected.train.image(i));
            let other = distance(expected.train.image((i + 1) % 12));
            assert!(own < 0.6 * other, "{i}: {own:.0} vs {other:.0}");
        }
        let small = folder::PhotoLayout {
            side: 8,
            jpeg: true,
        };
        let err = write_synthetic_photos(dir.path(), &folder_config(), small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--side must be 16"), "{err}");
    }

    #[test]
    fn a_written_image_folder_reads_back_with_its_labels_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path(), &folder_config(), DatasetFormat::ImageFolder).unwrap();
        assert!(folder::is_image_folder(dir.path()));
        let jpegs = std::fs::read_dir(dir.path().join("train/class_000"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "jpg")
            .count();
        assert!(jpegs > 0);
        let expected = generate(&folder_config()).unwrap();
        for workers in [1, 4] {
            let loaded = folder::load_image_folder(dir.path(), workers).unwrap();
            assert_eq!(loaded.train.classes, 3);
            assert_eq!(loaded.train.class_names, expected.train.class_names);
            assert_eq!(loaded.train.len(), 12);
            assert_eq!(loaded.test.len(), 6);
            // Images come grouped by class; each matches its source image,
            // exactly for PNG (two of every three), within JPEG's loss (on
            // noisy synthetic images) otherwise.
            let mut labels = loaded.train.labels.clone();
            labels.sort();
            assert_eq!(loaded.train.labels, labels);
            for (split, source) in [
                (&loaded.train, &expected.train),
                (&loaded.test, &expected.test),
            ] {
                let mut exact = 0;
                for i in 0..split.len() {
                    let (best, distance) = (0..source.len())
                        .map(|j| {
                            let d: u64 = split
                                .image(i)
                                .iter()
                                .zip(source.image(j))
                                .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                                .sum();
                            (j, d)
                        })
                        .min_by_key(|&(_, d)| d)
                        .unwrap();
                    assert_eq!(split.labels[i], source.labels[best]);
                    assert!(
                        distance < (IMAGE_BYTES as u64) * 32,
                        "image {i}: {distance}"
                    );
                    exact += usize::from(distance == 0);
                }
                assert_eq!(exact, (0..source.len()).filter(|i| i % 3 != 2).count());
            }
        }
    }

    fn config(classes: usize, train: usize, test: usize, seed: u64) -> SynthConfig {
        SynthConfig {
            classes,
            train,
            test,
            seed,
        }
    }

    #[test]
    fn generation_is_deterministic_given_the_seed() {
        let a = generate(&config(10, 50, 20, 7)).unwrap();
        assert_eq!(generate(&config(10, 50, 20, 7)).unwrap(), a);
        let b = generate(&config(10, 50, 20, 8)).unwrap();
        assert_ne!(a.train.images, b.train.images);
        assert_ne!(a.test.images, b.test.images);
        // The test split does not depend on the size of the train split.
        assert_eq!(generate(&config(10, 70, 20, 7)).unwrap().test, a.test);
    }

    #[test]
    fn two_classes_are_enough() {
        let data = generate(&config(2, 6, 4, 0)).unwrap();
        assert_eq!(data.train.labels.iter().filter(|&&l| l == 1).count(), 3);
        assert_eq!(data.test.images.len(), 4 * IMAGE_BYTES);
    }

    #[test]
    fn labels_are_balanced_and_shuffled() {
        let data = generate(&config(7, 100, 30, 1)).unwrap();
        let mut counts = [0; 7];
        data.train
            .labels
            .iter()
            .for_each(|&l| counts[usize::from(l)] += 1);
        assert!(counts.iter().all(|&c| c == 14 || c == 15), "{counts:?}");
        let round_robin: Vec<u16> = (0..100).map(|i| (i % 7) as u16).collect();
        assert_ne!(data.train.labels, round_robin);
        assert_eq!(data.train.classes, 7);
        assert_eq!(data.test.class_names[6], "class_006");
    }

    #[test]
    fn writes_the_real_layout_of_each_format() {
        let cfg = config(10, 23, 9, 3);
        let expected = generate(&cfg).unwrap();
        let size = |dir: &Path, file: &str| fs_size(&dir.join(file));
        for format in CifarFormat::ALL {
            let dir = tempfile::tempdir().unwrap();
            write_synthetic(dir.path(), &cfg, format.into()).unwrap();
            assert_eq!(
                cifar::load(dir.path(), format).unwrap(),
                expected,
                "{format}"
            );
            let again = tempfile::tempdir().unwrap();
            write_synthetic(again.path(), &cfg, format.into()).unwrap();
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let name = entry.unwrap().file_name();
                let a = std::fs::read(dir.path().join(&name)).unwrap();
                assert_eq!(
                    a,
                    std::fs::read(again.path().join(&name)).unwrap(),
                    "{name:?}"
                );
            }
            match format {
                CifarFormat::Cifar100Bin => {
                    assert_eq!(size(dir.path(), "train.bin"), 23 * 3074);
                    assert_eq!(size(dir.path(), "test.bin"), 9 * 3074);
                    let coarse = std::fs::read_to_string(dir.path().join("coarse_label_names.txt"));
                    assert_eq!(coarse.unwrap().lines().count(), 2);
                    let train = std::fs::read(dir.path().join("train.bin")).unwrap();
                    for record in train.chunks(3074) {
                        assert_eq!(record[0], record[1] / 5, "coarse label is fine / 5");
                    }
                }
                CifarFormat::Cifar10Bin => {
                    let batches: Vec<u64> = (1..=5)
                        .map(|i| size(dir.path(), &format!("data_batch_{i}.bin")))
                        .collect();
                    assert_eq!(batches, [4, 5, 4, 5, 5].map(|n| n * 3073));
                    assert_eq!(size(dir.path(), "test_batch.bin"), 9 * 3073);
                    let names = std::fs::read_to_string(dir.path().join("batches.meta.txt"));
                    assert_eq!(names.unwrap().lines().count(), 10);
                }
                CifarFormat::Cifar100Pickle => {
                    for file in ["train", "test", "meta"] {
                        assert!(dir.path().join(file).is_file(), "{file}");
                    }
                }
                CifarFormat::Cifar10Pickle => {
                    for i in 1..=5 {
                        assert!(dir.path().join(format!("data_batch_{i}")).is_file());
                    }
                    assert!(dir.path().join("batches.meta").is_file());
                }
            }
        }
    }

    fn fs_size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn rejects_impossible_configs() {
        let dir = tempfile::tempdir().unwrap();
        for (cfg, format, needle) in [
            (
                config(1, 10, 10, 0),
                CifarFormat::Cifar100Bin,
                "classes must be 2 to 100",
            ),
            (
                config(101, 10, 10, 0),
                CifarFormat::Cifar100Pickle,
                "at most 100 classes",
            ),
            (
                config(11, 10, 10, 0),
                CifarFormat::Cifar10Bin,
                "cifar10-bin holds at most 10",
            ),
            (
                config(10, 0, 10, 0),
                CifarFormat::Cifar10Pickle,
                "at least 1",
            ),
        ] {
            let message = write_synthetic(dir.path(), &cfg, format.into())
                .unwrap_err()
                .to_string();
            assert!(message.contains(needle), "{message}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Accuracy on the test split of a nearest-class-centroid classifier on `features`.
    fn nearest_centroid(data: &Splits, features: impl Fn(&[u8]) -> Vec<f32>) -> f64 {
        let dims = features(data.train.image(0)).len();
        let mut centroids = vec![vec![0f32; dims]; data.train.classes];
        let mut counts = vec![0f32; data.train.classes];
        for i in 0..data.train.len() {
            let label = usize::from(data.train.labels[i]);
            let x = features(data.train.image(i));
            centroids[label]
                .iter_mut()
                .zip(x)
                .for_each(|(c, v)| *c += v);
            counts[label] += 1.0;
        }
        for (c, n) in centroids.iter_mut().zip(counts) {
            c.iter_mut().for_each(|v| *v /= n);
        }
        let distance =
            |c: &[f32], x: &[f32]| -> f32 { c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum() };
        let correct = (0..data.test.len())
            .filter(|&i| {
                let x = features(data.test.image(i));
                let best = (0..centroids.len())
                    .min_by(|&a, &b| {
                        distance(&centroids[a], &x).total_cmp(&distance(&centroids[b], &x))
                    })
                    .unwrap();
                best == usize::from(data.test.labels[i])
            })
            .count();
        correct as f64 / data.test.len() as f64
    }

    #[test]
    fn learnable_but_not_trivially() {
        for (classes, train) in [(10, 1000), (100, 2000)] {
            let data = generate(&config(classes, train, 500, 0)).unwrap();
            let chance = 1.0 / classes as f64;
            let pixels = |image: &[u8]| image.iter().map(|&p| f32::from(p)).collect();
            let accuracy = nearest_centroid(&data, pixels);
            assert!(
                accuracy > 2.0 * chance && accuracy < 0.9,
                "{classes} classes: {accuracy}"
            );
            // The mean colour of an image carries (almost) no class information.
            let colour = |image: &[u8]| {
                let mean = |plane: &[u8]| plane.iter().map(|&p| f32::from(p)).sum::<f32>() / 1024.0;
                image.chunks(1024).map(mean).collect()
            };
            let accuracy = nearest_centroid(&data, colour);
            // Chance plus 4 binomial standard deviations of the 500 test images.
            let bound = chance + 4.0 * (chance * (1.0 - chance) / 500.0).sqrt();
            assert!(
                accuracy < bound,
                "{classes} classes, colour only: {accuracy}"
            );
            // Pixels span the range without piling up at the clamps.
            let (mean, std) = data.train.mean_std();
            assert!(mean.iter().all(|m| (0.45..0.55).contains(m)), "{mean:?}");
            assert!(std.iter().all(|s| (0.2..0.3).contains(s)), "{std:?}");
        }
    }
}

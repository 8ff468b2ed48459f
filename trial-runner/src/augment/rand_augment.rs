//! timm's RandAugment (`timm/data/auto_augment.py`) on CHW RGB bytes, with
//! each PIL operation it calls written out: lookup-table ops (invert,
//! posterize, solarize), histogram ops (autocontrast, equalize), the
//! `ImageEnhance` blends (brightness, contrast, colour, sharpness) and the
//! affine ops (rotate, shear, translate) with PIL's bilinear and bicubic
//! filters and fill colour. PIL's integer and single-precision arithmetic is
//! kept, so outputs match PIL's bytes (see `tests/augment_pil_conformance.rs`).

use multiversion::multiversion;
use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::{uniform, AugmentError, ImageSize, Interpolation, CHANNELS};

/// The operations of timm's RandAugment lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// timm's `_RAND_TRANSFORMS` (config without `inc1`).
pub const RAND_TRANSFORMS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// timm's `_RAND_INCREASING_TRANSFORMS` (config with `inc1`, as DeiT and RSB use).
pub const RAND_INCREASING_TRANSFORMS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::PosterizeIncreasing,
    Op::SolarizeIncreasing,
    Op::SolarizeAdd,
    Op::ColorIncreasing,
    Op::ContrastIncreasing,
    Op::BrightnessIncreasing,
    Op::SharpnessIncreasing,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// timm's magnitude scale: magnitudes run from 0 to this.
const LEVEL_DENOM: f64 = 10.0;

/// timm's fill colour when none is given (`_FILL`).
pub const DEFAULT_FILL: [u8; 3] = [128, 128, 128];

/// How geometric ops pick their filter: timm's default picks bilinear or
/// bicubic at random per op; recipes that name an interpolation fix it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpInterpolation {
    Fixed(Interpolation),
    RandomBilinearOrBicubic,
}

/// timm's `RandAugment` built by `rand_augment_transform`: per image,
/// `num_ops` ops drawn uniformly with replacement, each applied with
/// probability `prob` at a magnitude drawn from N(`magnitude`,
/// `magnitude_std`) (uniform in [0, magnitude] when the std is infinite),
/// clipped to [0, `magnitude_max`].
#[derive(Clone, Debug, PartialEq)]
pub struct RandAugment {
    pub ops: Vec<Op>,
    pub num_ops: usize,
    pub magnitude: f64,
    pub magnitude_std: f64,
    pub magnitude_max: f64,
    pub prob: f64,
    /// Colour of the pixels geometric ops uncover; timm's pipelines use the
    /// dataset mean, `round(255 * mean)` per channel.
    pub fill: [u8; 3],
    pub interpolation: OpInterpolation,
    /// Largest translation as a fraction of the side (timm's `translate_pct`).
    pub translate_pct: f64,
}

impl RandAugment {
    /// Parses timm's config string, e.g. `rand-m9-mstd0.5-inc1` (DeiT) or
    /// `rand-m7-mstd0.5-inc1` (RSB A2): sections `m` (magnitude), `n` (ops per
    /// image, default 2), `p` (op probability, default 0.5), `mstd`
    /// (magnitude noise; above 100 means uniform), `mmax` (magnitude ceiling,
    /// default 10) and `inc` (1: the increasing op list).
    pub fn from_config(config: &str) -> Result<Self, AugmentError> {
        let problem = |problem: String| AugmentError::RandAugmentConfig {
            config: config.to_string(),
            problem,
        };
        let mut sections = config.split('-');
        if sections.next() != Some("rand") {
            return Err(problem("it must start with \"rand\"".into()));
        }
        let mut augment = Self {
            ops: RAND_TRANSFORMS.to_vec(),
            num_ops: 2,
            magnitude: LEVEL_DENOM,
            magnitude_std: 0.0,
            magnitude_max: LEVEL_DENOM,
            prob: 0.5,
            fill: DEFAULT_FILL,
            interpolation: OpInterpolation::RandomBilinearOrBicubic,
            translate_pct: 0.45,
        };
        for section in sections {
            let split = section
                .find(|c: char| c.is_ascii_digit())
                .ok_or_else(|| problem(format!("section {section:?} has no number")))?;
            let (key, value) = section.split_at(split);
            let number: f64 = value
                .parse()
                .map_err(|_| problem(format!("section {section:?}: {value:?} is not a number")))?;
            let whole = || -> Result<usize, AugmentError> {
                if number.fract() == 0.0 {
                    Ok(number as usize)
                } else {
                    Err(problem(format!("section {section:?} needs a whole number")))
                }
            };
            match key {
                "m" => augment.magnitude = whole()? as f64,
                "n" => augment.num_ops = whole()?,
                "p" => augment.prob = number,
                "mstd" => {
                    augment.magnitude_std = if number > 100.0 {
                        f64::INFINITY
                    } else {
                        number
                    }
                }
                "mmax" => augment.magnitude_max = whole()? as f64,
                "inc" => {
                    augment.ops = if whole()? != 0 {
                        RAND_INCREASING_TRANSFORMS.to_vec()
                    } else {
                        RAND_TRANSFORMS.to_vec()
                    }
                }
                _ => {
                    return Err(problem(format!(
                        "unknown section {key:?}; known: m, n, p, mstd, mmax, inc"
                    )))
                }
            }
        }
        if !(0.0..=1.0).contains(&augment.prob) {
            return Err(problem(format!("p{} is not a probability", augment.prob)));
        }
        Ok(augment)
    }

    /// Sets the fill colour from a dataset mean in [0, 1], as timm does.
    pub fn with_fill_from_mean(mut self, mean: [f64; 3]) -> Self {
        self.fill = mean.map(|m| (255.0 * m).round_ties_even().clamp(0.0, 255.0) as u8);
        self
    }

    /// Augments `image` in place. `scratch` is reused between calls so that
    /// geometric ops allocate nothing once it has grown to the image size.
    pub fn apply(
        &self,
        image: &mut [u8],
        size: ImageSize,
        scratch: &mut Vec<u8>,
        rng: &mut impl Rng,
    ) {
        debug_assert_eq!(image.len(), size.bytes());
        if self.ops.is_empty() {
            return;
        }
        for _ in 0..self.num_ops {
            let op = self.ops[rng.random_range(0..self.ops.len())];
            if self.prob < 1.0 && rng.random::<f64>() > self.prob {
                continue;
            }
            let magnitude = self.sample_magnitude(rng);
            self.apply_op(op, magnitude, image, size, scratch, rng);
        }
    }

    fn sample_magnitude(&self, rng: &mut impl Rng) -> f64 {
        let magnitude = if self.magnitude_std == f64::INFINITY {
            uniform(rng, 0.0, self.magnitude)
        } else if self.magnitude_std > 0.0 {
            Normal::new(self.magnitude, self.magnitude_std)
                .expect("a finite positive std")
                .sample(rng)
        } else {
            self.magnitude
        };
        // timm's order: cap at the ceiling, then floor at zero.
        magnitude.min(self.magnitude_max).max(0.0)
    }

    /// One op at a given magnitude, with timm's level-to-argument mapping.
    pub fn apply_op(
        &self,
        op: Op,
        magnitude: f64,
        image: &mut [u8],
        size: ImageSize,
        scratch: &mut Vec<u8>,
        rng: &mut impl Rng,
    ) {
        let level = magnitude / LEVEL_DENOM;
        // timm negates signed arguments with probability one half.
        let signed = |value: f64, rng: &mut dyn rand::RngCore| {
            if rng.random::<f64>() > 0.5 {
                -value
            } else {
                value
            }
        };
        let enhance = |level: f64| level * 1.8 + 0.1;
        let enhance_increasing =
            |level: f64, rng: &mut dyn rand::RngCore| (1.0 + signed(level * 0.9, rng)).max(0.1);
        let posterize_bits = |level: f64| (level * 4.0) as u32;
        let solarize_threshold = |level: f64| ((level * 256.0) as u32).min(256);
        match op {
            Op::AutoContrast => auto_contrast(image),
            Op::Equalize => equalize(image),
            Op::Invert => invert(image),
            Op::Posterize => posterize(image, posterize_bits(level)),
            Op::PosterizeIncreasing => posterize(image, 4 - posterize_bits(level)),
            Op::Solarize => solarize(image, solarize_threshold(level)),
            Op::SolarizeIncreasing => solarize(image, 256 - solarize_threshold(level)),
            Op::SolarizeAdd => solarize_add(image, ((level * 110.0) as u32).min(128) as u8, 128),
            Op::Color => color(image, enhance(level) as f32),
            Op::ColorIncreasing => color(image, enhance_increasing(level, rng) as f32),
            Op::Contrast => contrast(image, enhance(level) as f32),
            Op::ContrastIncreasing => contrast(image, enhance_increasing(level, rng) as f32),
            Op::Brightness => brightness(image, enhance(level) as f32),
            Op::BrightnessIncreasing => brightness(image, enhance_increasing(level, rng) as f32),
            Op::Sharpness | Op::SharpnessIncreasing => {
                let factor = if op == Op::Sharpness {
                    enhance(level)
                } else {
                    enhance_increasing(level, rng)
                };
                scratch.resize(image.len(), 0);
                sharpness(image, scratch, size, factor as f32);
                image.copy_from_slice(scratch);
            }
            Op::Rotate | Op::ShearX | Op::ShearY | Op::TranslateXRel | Op::TranslateYRel => {
                let argument = match op {
                    Op::Rotate => signed(level * 30.0, rng),
                    Op::ShearX | Op::ShearY => signed(level * 0.3, rng),
                    _ => signed(level * self.translate_pct, rng),
                };
                let interpolation = match self.interpolation {
                    OpInterpolation::Fixed(interpolation) => interpolation,
                    OpInterpolation::RandomBilinearOrBicubic => {
                        if rng.random_bool(0.5) {
                            Interpolation::Bilinear
                        } else {
                            Interpolation::Bicubic
                        }
                    }
                };
                scratch.resize(image.len(), 0);
                let geometry = Geometry {
                    size,
                    interpolation,
                    fill: self.fill,
                };
                match op {
                    Op::Rotate => geometry.rotate(image, scratch, argument),
                    Op::ShearX => geometry.shear_x(image, scratch, argument),
                    Op::ShearY => geometry.shear_y(image, scratch, argument),
                    Op::TranslateXRel => geometry.translate_x_rel(image, scratch, argument),
                    _ => geometry.translate_y_rel(image, scratch, argument),
                }
                image.copy_from_slice(scratch);
            }
        }
    }
}

/// Applies one 256-entry lookup table to every byte.
fn apply_lut(image: &mut [u8], lut: &[u8; 256]) {
    for v in image.iter_mut() {
        *v = lut[*v as usize];
    }
}

/// Applies a lookup table per colour plane.
fn apply_plane_luts(image: &mut [u8], luts: &[[u8; 256]; CHANNELS]) {
    let plane = image.len() / CHANNELS;
    for (pixels, lut) in image.chunks_exact_mut(plane).zip(luts) {
        apply_lut(pixels, lut);
    }
}

fn histogram(pixels: &[u8]) -> [u64; 256] {
    let mut counts = [0u64; 256];
    for &v in pixels {
        counts[v as usize] += 1;
    }
    counts
}

/// `ImageOps.invert`.
pub fn invert(image: &mut [u8]) {
    for v in image.iter_mut() {
        *v = 255 - *v;
    }
}

/// `ImageOps.posterize`: keep the `bits` high bits. Eight or more bits is the
/// identity; zero bits makes the image black (PIL before 13; PIL 13 refuses 0,
/// which timm's PosterizeIncreasing asks for at magnitude 10).
pub fn posterize(image: &mut [u8], bits: u32) {
    if bits >= 8 {
        return;
    }
    let mask = !(((1u32 << (8 - bits)) - 1) as u8);
    for v in image.iter_mut() {
        *v &= mask;
    }
}

/// `ImageOps.solarize`: invert values at or above `threshold` (0 to 256).
pub fn solarize(image: &mut [u8], threshold: u32) {
    for v in image.iter_mut() {
        if u32::from(*v) >= threshold {
            *v = 255 - *v;
        }
    }
}

/// timm's `solarize_add`: add `addend` (saturating) to values below `threshold`.
pub fn solarize_add(image: &mut [u8], addend: u8, threshold: u32) {
    for v in image.iter_mut() {
        if u32::from(*v) < threshold {
            *v = v.saturating_add(addend);
        }
    }
}

/// `ImageOps.autocontrast` (no cutoff): stretch each plane's range to 0..255.
pub fn auto_contrast(image: &mut [u8]) {
    let plane = image.len() / CHANNELS;
    let mut luts = [[0u8; 256]; CHANNELS];
    for (pixels, lut) in image.chunks_exact(plane).zip(luts.iter_mut()) {
        let counts = histogram(pixels);
        let low = counts.iter().position(|&n| n > 0).unwrap_or(0);
        let high = counts.iter().rposition(|&n| n > 0).unwrap_or(0);
        for (i, entry) in lut.iter_mut().enumerate() {
            *entry = if high <= low {
                i as u8
            } else {
                let scale = 255.0 / (high - low) as f64;
                let offset = -(low as f64) * scale;
                // Python's int() truncates toward zero; negatives clip to 0 anyway.
                (i as f64 * scale + offset).clamp(0.0, 255.0) as u8
            };
        }
    }
    apply_plane_luts(image, &luts);
}

/// `ImageOps.equalize`: per plane, map values through the cumulative histogram.
pub fn equalize(image: &mut [u8]) {
    let plane = image.len() / CHANNELS;
    let mut luts = [[0u8; 256]; CHANNELS];
    for (pixels, lut) in image.chunks_exact(plane).zip(luts.iter_mut()) {
        let counts = histogram(pixels);
        let used: Vec<u64> = counts.iter().copied().filter(|&n| n > 0).collect();
        let step = if used.len() <= 1 {
            0
        } else {
            (used.iter().sum::<u64>() - used[used.len() - 1]) / 255
        };
        if step == 0 {
            for (i, entry) in lut.iter_mut().enumerate() {
                *entry = i as u8;
            }
            continue;
        }
        let mut cumulative = step / 2;
        for (entry, &count) in lut.iter_mut().zip(counts.iter()) {
            // PIL clips table entries to 255 when it loads the table.
            *entry = (cumulative / step).min(255) as u8;
            cumulative += count;
        }
    }
    apply_plane_luts(image, &luts);
}

/// PIL's `Image.blend(degenerate, image, alpha)` for one sample: single
/// precision, truncated toward zero, clipped to 0..255.
#[inline]
fn blend(degenerate: u8, pixel: u8, alpha: f32) -> u8 {
    (f32::from(degenerate) + alpha * (i32::from(pixel) - i32::from(degenerate)) as f32) as u8
}

/// PIL's RGB to L conversion (ITU-R 601-2 luma in 16-bit fixed point).
#[inline]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

fn split_planes(image: &mut [u8]) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let plane = image.len() / CHANNELS;
    let (r, rest) = image.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    (r, g, b)
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(image: &mut [u8], factor: f32) {
    blend_with_constant(image, 0, factor);
}

/// `ImageEnhance.Contrast`: blend with the mean grey level of the image.
pub fn contrast(image: &mut [u8], factor: f32) {
    let (r, g, b) = split_planes(image);
    let total: u64 = r
        .iter()
        .zip(g.iter())
        .zip(b.iter())
        .map(|((&r, &g), &b)| u64::from(luma(r, g, b)))
        .sum();
    let mean = (total as f64 / r.len().max(1) as f64 + 0.5) as u8;
    blend_with_constant(image, mean, factor);
}

fn blend_with_constant(image: &mut [u8], degenerate: u8, factor: f32) {
    for v in image.iter_mut() {
        *v = blend(degenerate, *v, factor);
    }
}

/// `ImageEnhance.Color`: blend with the image's own greyscale version.
pub fn color(image: &mut [u8], factor: f32) {
    let (r, g, b) = split_planes(image);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let grey = luma(*r, *g, *b);
        *r = blend(grey, *r, factor);
        *g = blend(grey, *g, factor);
        *b = blend(grey, *b, factor);
    }
}

/// `ImageEnhance.Sharpness`: blend `src` with its `ImageFilter.SMOOTH`
/// version (3x3 kernel, 5 in the centre and 1 around, over 13; PIL leaves the
/// one-pixel border unfiltered) into `dst`.
pub fn sharpness(src: &[u8], dst: &mut [u8], size: ImageSize, factor: f32) {
    let (h, w) = (size.height, size.width);
    debug_assert!(src.len() == size.bytes() && dst.len() == size.bytes());
    let edge = 1.0f32 / 13.0;
    let centre = 5.0f32 / 13.0;
    for (src, dst) in src
        .chunks_exact(size.plane())
        .zip(dst.chunks_exact_mut(size.plane()))
    {
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let smooth = if y == 0 || x == 0 || y + 1 == h || x + 1 == w {
                    src[i]
                } else {
                    let row = |yy: usize, k: [f32; 3]| {
                        let r = &src[yy * w + x - 1..][..3];
                        f32::from(r[0]) * k[0] + f32::from(r[1]) * k[1] + f32::from(r[2]) * k[2]
                    };
                    let mut sum = 0.0f32;
                    sum += row(y + 1, [edge; 3]);
                    sum += row(y, [edge, centre, edge]);
                    sum += row(y - 1, [edge; 3]);
                    clip8(sum)
                };
                dst[i] = blend(smooth, src[i], factor);
            }
        }
    }
}

/// PIL's filter output rounding: nearest, clipped to 0..255.
#[inline]
fn clip8(value: f32) -> u8 {
    if value <= 0.0 {
        0
    } else if value >= 255.0 {
        255
    } else {
        (value + 0.5) as u8
    }
}

/// Settings shared by the affine ops: PIL's `Image.transform(AFFINE)` with a
/// filter and `fillcolor`.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub size: ImageSize,
    pub interpolation: Interpolation,
    pub fill: [u8; 3],
}

/// Input index of output pixel (y, x) of an h x w plane.
type SourceIndex = fn(usize, usize, usize, usize) -> usize;

impl Geometry {
    /// `Image.rotate(degrees)` about the centre, counter-clockwise for positive
    /// angles, without expanding. Like PIL, multiples of 90 degrees (on square
    /// images for 90 and 270) are exact pixel permutations.
    pub fn rotate(&self, src: &[u8], dst: &mut [u8], degrees: f64) {
        let angle = degrees.rem_euclid(360.0);
        let (h, w) = (self.size.height, self.size.width);
        let square = h == w;
        let permutation: Option<SourceIndex> = match angle {
            0.0 => Some(|y, x, _h, w| y * w + x),
            180.0 => Some(|y, x, h, w| (h - 1 - y) * w + (w - 1 - x)),
            90.0 if square => Some(|y, x, _h, w| x * w + (w - 1 - y)),
            270.0 if square => Some(|y, x, h, w| (h - 1 - x) * w + y),
            _ => None,
        };
        if let Some(source_index) = permutation {
            for (src, dst) in src
                .chunks_exact(self.size.plane())
                .zip(dst.chunks_exact_mut(self.size.plane()))
            {
                for y in 0..h {
                    for x in 0..w {
                        dst[y * w + x] = src[source_index(y, x, h, w)];
                    }
                }
            }
            return;
        }
        // PIL rounds the rotation matrix to 15 decimals and rotates about (w/2, h/2).
        let radians = -angle.to_radians();
        let round15 = |v: f64| (v * 1e15).round() / 1e15;
        let (cos, sin) = (round15(radians.cos()), round15(radians.sin()));
        let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
        let matrix = [
            cos,
            sin,
            cos * -cx + sin * -cy + cx,
            -sin,
            cos,
            -sin * -cx + cos * -cy + cy,
        ];
        self.affine(src, dst, matrix);
    }

    /// timm's `shear_x`: the output pixel at x samples the input at x + factor * y.
    pub fn shear_x(&self, src: &[u8], dst: &mut [u8], factor: f64) {
        self.affine(src, dst, [1.0, factor, 0.0, 0.0, 1.0, 0.0]);
    }

    /// timm's `shear_y`: the output pixel at y samples the input at y + factor * x.
    pub fn shear_y(&self, src: &[u8], dst: &mut [u8], factor: f64) {
        self.affine(src, dst, [1.0, 0.0, 0.0, factor, 1.0, 0.0]);
    }

    /// timm's `translate_x_rel`: content moves left by `fraction` of the width.
    pub fn translate_x_rel(&self, src: &[u8], dst: &mut [u8], fraction: f64) {
        let pixels = fraction * self.size.width as f64;
        self.affine(src, dst, [1.0, 0.0, pixels, 0.0, 1.0, 0.0]);
    }

    /// timm's `translate_y_rel`: content moves up by `fraction` of the height.
    pub fn translate_y_rel(&self, src: &[u8], dst: &mut [u8], fraction: f64) {
        let pixels = fraction * self.size.height as f64;
        self.affine(src, dst, [1.0, 0.0, 0.0, 0.0, 1.0, pixels]);
    }

    /// PIL's generic affine transform: output pixel centre (x + 0.5, y + 0.5)
    /// maps to input (a x + b y + c, d x + e y + f); outside the input the
    /// fill colour shows.
    pub fn affine(&self, src: &[u8], dst: &mut [u8], coefficients: [f64; 6]) {
        affine(self, src, dst, coefficients);
    }
}

/// [`Geometry::affine`], compiled for AVX2 as well (the same arithmetic:
/// Rust never fuses a multiply and an add by itself, so results are equal).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
fn affine(geometry: &Geometry, src: &[u8], dst: &mut [u8], coefficients: [f64; 6]) {
    let [a, b, c, d, e, f] = coefficients;
    let (h, w) = (geometry.size.height, geometry.size.width);
    let plane = geometry.size.plane();
    debug_assert!(src.len() == geometry.size.bytes() && dst.len() == geometry.size.bytes());
    let planes: [&[u8]; CHANNELS] = std::array::from_fn(|ch| &src[ch * plane..][..plane]);
    for y in 0..h {
        let yc = y as f64 + 0.5;
        for x in 0..w {
            let xc = x as f64 + 0.5;
            let xin = a * xc + b * yc + c;
            let yin = d * xc + e * yc + f;
            let inside = xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64;
            let pixel = if !inside {
                geometry.fill
            } else {
                match geometry.interpolation {
                    Interpolation::Bilinear => bilinear(&planes, geometry.size, xin, yin),
                    Interpolation::Bicubic => bicubic(&planes, geometry.size, xin, yin),
                }
            };
            for (channel, value) in pixel.into_iter().enumerate() {
                dst[channel * plane + y * w + x] = value;
            }
        }
    }
}

/// Clamps a neighbour index to the image, as PIL's `XCLIP`/`YCLIP` do.
#[inline(always)]
fn clip_index(i: isize, extent: usize) -> usize {
    i.clamp(0, extent as isize - 1) as usize
}

/// Start of row `y` if it lies in the image. Below the last row PIL repeats
/// the row above instead of clipping, so callers fall back to that one.
#[inline(always)]
fn row_start(y: isize, size: ImageSize) -> Option<usize> {
    (y >= 0 && (y as usize) < size.height).then(|| y as usize * size.width)
}

/// PIL's `bilinear_filter32RGB` at input point (xin, yin), every channel.
/// Plain loops over the channels rather than array `map`s: the closures
/// of those were not inlined and cost more than the arithmetic.
#[inline(always)]
fn bilinear(planes: &[&[u8]; CHANNELS], size: ImageSize, xin: f64, yin: f64) -> [u8; CHANNELS] {
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (xf, yf) = (xin.floor(), yin.floor());
    let (dx, dy) = (xin - xf, yin - yf);
    let (x, y) = (xf as isize, yf as isize);
    let (x0, x1) = (clip_index(x, size.width), clip_index(x + 1, size.width));
    let top = clip_index(y, size.height) * size.width;
    let bottom = row_start(y + 1, size);
    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
    let mut pixel = [0; CHANNELS];
    for (value, p) in pixel.iter_mut().zip(planes) {
        let row = |r: usize| lerp(f64::from(p[r + x0]), f64::from(p[r + x1]), dx);
        let v1 = row(top);
        let v2 = match bottom {
            Some(r) => row(r),
            None => v1,
        };
        *value = lerp(v1, v2, dy) as u8;
    }
    pixel
}

/// PIL's cubic convolution of four samples at offset `d` from the second.
#[inline(always)]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// PIL's `bicubic_filter32RGB` at input point (xin, yin), every channel
/// (plain loops, as in [`bilinear`]).
#[inline(always)]
fn bicubic(planes: &[&[u8]; CHANNELS], size: ImageSize, xin: f64, yin: f64) -> [u8; CHANNELS] {
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (xf, yf) = (xin.floor(), yin.floor());
    let (dx, dy) = (xin - xf, yin - yf);
    let (x, y) = (xf as isize - 1, yf as isize - 1);
    let xs = [
        clip_index(x, size.width),
        clip_index(x + 1, size.width),
        clip_index(x + 2, size.width),
        clip_index(x + 3, size.width),
    ];
    let first = clip_index(y, size.height) * size.width;
    let below = [
        row_start(y + 1, size),
        row_start(y + 2, size),
        row_start(y + 3, size),
    ];
    let mut pixel = [0; CHANNELS];
    for (value, p) in pixel.iter_mut().zip(planes) {
        let row = |r: usize| {
            let s = |k: usize| f64::from(p[r + xs[k]]);
            cubic(s(0), s(1), s(2), s(3), dx)
        };
        let v1 = row(first);
        let v2 = match below[0] {
            Some(r) => row(r),
            None => v1,
        };
        let v3 = match below[1] {
            Some(r) => row(r),
            None => v2,
        };
        let v4 = match below[2] {
            Some(r) => row(r),
            None => v3,
        };
        *value = cubic(v1, v2, v3, v4, dy).clamp(0.0, 255.0) as u8;
    }
    pixel
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Distinct, textured planes so that any misplaced pixel shows.
    fn image(size: ImageSize) -> Vec<u8> {
        (0..size.bytes())
            .map(|i| ((i * 37 + (i / size.width) * 11) % 251) as u8)
            .collect()
    }

    fn geometry(size: ImageSize, interpolation: Interpolation) -> Geometry {
        Geometry {
            size,
            interpolation,
            fill: [124, 116, 104],
        }
    }

    const FILTERS: [Interpolation; 2] = [Interpolation::Bilinear, Interpolation::Bicubic];

    #[test]
    fn configs_parse_like_timm() {
        let deit = RandAugment::from_config("rand-m9-mstd0.5-inc1").unwrap();
        assert_eq!(deit.magnitude, 9.0);
        assert_eq!(deit.magnitude_std, 0.5);
        assert_eq!(deit.num_ops, 2);
        assert_eq!(deit.prob, 0.5);
        assert_eq!(deit.magnitude_max, 10.0);
        assert_eq!(deit.ops, RAND_INCREASING_TRANSFORMS.to_vec());
        let other = RandAugment::from_config("rand-n3-m7-mstd101-p0.7-mmax12").unwrap();
        assert_eq!(other.num_ops, 3);
        assert_eq!(other.magnitude_std, f64::INFINITY);
        assert_eq!(other.prob, 0.7);
        assert_eq!(other.magnitude_max, 12.0);
        assert_eq!(other.ops, RAND_TRANSFORMS.to_vec());
        for bad in [
            "augmix-m9",
            "rand-q3",
            "rand-m9.5",
            "rand-mstd",
            "rand-p2",
            "rand-tweights",
        ] {
            let err = RandAugment::from_config(bad).unwrap_err();
            assert!(
                matches!(err, AugmentError::RandAugmentConfig { .. }),
                "{bad}"
            );
        }
        let filled = deit.with_fill_from_mean([0.485, 0.456, 0.406]);
        assert_eq!(filled.fill, [124, 116, 104]);
    }

    #[test]
    fn geometric_ops_at_zero_are_the_identity() {
        let size = ImageSize::new(7, 9);
        let src = image(size);
        for filter in FILTERS {
            let g = geometry(size, filter);
            let mut dst = vec![0; src.len()];
            for op in [
                Geometry::rotate as fn(&Geometry, &[u8], &mut [u8], f64),
                Geometry::shear_x,
                Geometry::shear_y,
                Geometry::translate_x_rel,
                Geometry::translate_y_rel,
            ] {
                dst.fill(0);
                op(&g, &src, &mut dst, 0.0);
                assert_eq!(dst, src, "{filter:?}");
            }
            g.rotate(&src, &mut dst, 360.0);
            assert_eq!(dst, src);
        }
    }

    #[test]
    fn quarter_turn_is_a_transpose_and_a_vertical_flip() {
        let n = 6;
        let size = ImageSize::new(n, n);
        let src = image(size);
        let mut turned = vec![0; src.len()];
        geometry(size, Interpolation::Bilinear).rotate(&src, &mut turned, 90.0);
        for c in 0..CHANNELS {
            let (s, t) = (&src[c * n * n..][..n * n], &turned[c * n * n..][..n * n]);
            for y in 0..n {
                for x in 0..n {
                    // Transpose, then flip rows: counter-clockwise.
                    assert_eq!(t[y * n + x], s[x * n + (n - 1 - y)]);
                }
            }
        }
        // Four quarter turns, and a quarter turn back, restore the image.
        let g = geometry(size, Interpolation::Bicubic);
        let mut again = turned.clone();
        let mut tmp = vec![0; src.len()];
        for _ in 0..3 {
            g.rotate(&again, &mut tmp, 90.0);
            again.copy_from_slice(&tmp);
        }
        assert_eq!(again, src);
        g.rotate(&turned, &mut tmp, -90.0);
        assert_eq!(tmp, src);
    }

    #[test]
    fn the_general_rotation_turns_the_same_way_as_the_exact_one() {
        // Just off 90 degrees the interpolating path runs; it must agree with the
        // exact permutation up to interpolation rounding.
        let n = 8;
        let size = ImageSize::new(n, n);
        let src: Vec<u8> = (0..size.bytes())
            .map(|i| ((i % n) * 20 + (i / n % n) * 3) as u8)
            .collect();
        let mut exact = vec![0; src.len()];
        let mut general = vec![0; src.len()];
        for filter in FILTERS {
            let g = geometry(size, filter);
            g.rotate(&src, &mut exact, 90.0);
            g.rotate(&src, &mut general, 90.0 + 1e-9);
            for (a, b) in exact.iter().zip(&general) {
                assert!(a.abs_diff(*b) <= 1, "{filter:?}: {a} vs {b}");
            }
            g.rotate(&src, &mut general, 180.0 + 1e-9);
            g.rotate(&src, &mut exact, 180.0);
            for (a, b) in exact.iter().zip(&general) {
                assert!(a.abs_diff(*b) <= 1, "{filter:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn translation_shifts_pixels_and_fills_what_it_uncovers() {
        let size = ImageSize::new(5, 10);
        let src = image(size);
        let plane = size.plane();
        for filter in FILTERS {
            let g = geometry(size, filter);
            let mut dst = vec![0; src.len()];
            // 0.3 of 10 columns: content moves 3 columns left.
            g.translate_x_rel(&src, &mut dst, 0.3);
            for c in 0..CHANNELS {
                for y in 0..5 {
                    for x in 0..10 {
                        let got = dst[c * plane + y * 10 + x];
                        let want = if x + 3 < 10 {
                            src[c * plane + y * 10 + x + 3]
                        } else {
                            g.fill[c]
                        };
                        assert_eq!(got, want, "{filter:?} c{c} y{y} x{x}");
                    }
                }
            }
            // -0.4 of 5 rows: content moves 2 rows down.
            g.translate_y_rel(&src, &mut dst, -0.4);
            for c in 0..CHANNELS {
                for y in 0..5 {
                    for x in 0..10 {
                        let got = dst[c * plane + y * 10 + x];
                        let want = if y >= 2 {
                            src[c * plane + (y - 2) * 10 + x]
                        } else {
                            g.fill[c]
                        };
                        assert_eq!(got, want, "{filter:?} c{c} y{y} x{x}");
                    }
                }
            }
        }
    }

    #[test]
    fn rotation_and_shear_fill_the_uncovered_corners() {
        let size = ImageSize::new(16, 16);
        let src = vec![255u8; size.bytes()];
        let plane = size.plane();
        for filter in FILTERS {
            let g = geometry(size, filter);
            let mut dst = vec![0; src.len()];
            g.rotate(&src, &mut dst, 30.0);
            for corner in [0, 15, 15 * 16, 16 * 16 - 1] {
                for c in 0..CHANNELS {
                    assert_eq!(dst[c * plane + corner], g.fill[c]);
                }
            }
            // The centre stays covered by the white input.
            assert_eq!(dst[8 * 16 + 8], 255);
            g.shear_x(&src, &mut dst, 0.3);
            // Output (x, y) reads input x + 0.3 y: the bottom-right corner falls outside.
            assert_eq!(dst[16 * 16 - 1], g.fill[0]);
            assert_eq!(dst[0], 255);
            g.shear_y(&src, &mut dst, -0.3);
            // Output (x, y) reads input y - 0.3 x: the top-right corner falls outside.
            assert_eq!(dst[15], g.fill[0]);
            assert_eq!(dst[15 * 16], 255);
        }
    }

    #[test]
    fn magnitudes_map_to_timm_arguments() {
        let size = ImageSize::new(4, 5);
        let src = image(size);
        let augment = RandAugment::from_config("rand-m10-inc1").unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let mut scratch = Vec::new();
        let run = |op, magnitude, rng: &mut StdRng, scratch: &mut Vec<u8>| {
            let mut out = src.clone();
            augment.apply_op(op, magnitude, &mut out, size, scratch, rng);
            out
        };
        // Full magnitude: solarize at threshold 0 inverts everything, posterize keeps no bits.
        let inverted: Vec<u8> = src.iter().map(|v| 255 - v).collect();
        assert_eq!(
            run(Op::SolarizeIncreasing, 10.0, &mut rng, &mut scratch),
            inverted
        );
        assert!(run(Op::PosterizeIncreasing, 10.0, &mut rng, &mut scratch)
            .iter()
            .all(|&v| v == 0));
        // Zero magnitude: posterize keeps 4 bits, solarize at 256 and factor-1 blends do nothing.
        let four_bits: Vec<u8> = src.iter().map(|v| v & 0xf0).collect();
        assert_eq!(
            run(Op::PosterizeIncreasing, 0.0, &mut rng, &mut scratch),
            four_bits
        );
        for op in [
            Op::SolarizeIncreasing,
            Op::ColorIncreasing,
            Op::ContrastIncreasing,
            Op::BrightnessIncreasing,
            Op::SharpnessIncreasing,
            Op::Rotate,
            Op::ShearX,
            Op::TranslateYRel,
            Op::SolarizeAdd,
        ] {
            assert_eq!(run(op, 0.0, &mut rng, &mut scratch), src, "{op:?}");
        }
        // Solarize-add at magnitude 10 adds 110 below 128.
        let added: Vec<u8> = src
            .iter()
            .map(|&v| if v < 128 { v.saturating_add(110) } else { v })
            .collect();
        assert_eq!(run(Op::SolarizeAdd, 10.0, &mut rng, &mut scratch), added);
        // Brightness at magnitude 10 is a factor of 1.9 or 0.1, whichever sign came up.
        let out = run(Op::BrightnessIncreasing, 10.0, &mut rng, &mut scratch);
        let up: Vec<u8> = src.iter().map(|&v| blend(0, v, 1.9)).collect();
        let down: Vec<u8> = src.iter().map(|&v| blend(0, v, 0.1)).collect();
        assert!(out == up || out == down);
    }

    #[test]
    fn probability_zero_leaves_images_alone_and_seeds_reproduce() {
        let size = ImageSize::new(12, 10);
        let src = image(size);
        let mut scratch = Vec::new();
        let never = RandAugment::from_config("rand-m9-mstd0.5-inc1-p0").unwrap();
        let mut out = src.clone();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            never.apply(&mut out, size, &mut scratch, &mut rng);
        }
        assert_eq!(out, src);

        let deit = RandAugment::from_config("rand-m9-mstd0.5-inc1").unwrap();
        let augmented = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut scratch = Vec::new();
            (0..30)
                .map(|_| {
                    let mut out = src.clone();
                    deit.apply(&mut out, size, &mut scratch, &mut rng);
                    out
                })
                .collect::<Vec<_>>()
        };
        let first = augmented(5);
        assert_eq!(first, augmented(5));
        assert_ne!(first, augmented(6));
        // With two ops at probability one half, about a quarter of images stay untouched.
        let untouched = first.iter().filter(|out| **out == src).count();
        assert!((1..20).contains(&untouched), "{untouched}");
    }

    #[test]
    fn deit_policy_on_a_synthetic_batch() {
        let config = crate::data::SynthConfig {
            classes: 10,
            train: 64,
            test: 1,
            seed: 0,
        };
        let data = crate::data::generate(&config).unwrap().train;
        let size = ImageSize::new(32, 32);
        let deit = RandAugment::from_config("rand-m9-mstd0.5-inc1")
            .unwrap()
            .with_fill_from_mean(data.mean_std().0);
        let mut rng = StdRng::seed_from_u64(8);
        let mut scratch = Vec::new();
        let mut untouched = 0;
        let mut total_change = 0u64;
        for i in 0..data.len() {
            let mut image = data.image(i).to_vec();
            deit.apply(&mut image, size, &mut scratch, &mut rng);
            let change: u64 = image
                .iter()
                .zip(data.image(i))
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            if change == 0 {
                untouched += 1;
            }
            total_change += change;
        }
        // Both ops skipped with probability 1/4 (a few applied ops change nothing more).
        assert!((5..=35).contains(&untouched), "{untouched} of 64 untouched");
        let mean_change = total_change as f64 / (64 * size.bytes()) as f64;
        assert!(mean_change > 5.0, "mean change {mean_change} grey levels");
    }

    #[test]
    fn every_op_handles_tiny_images() {
        let augment = RandAugment::from_config("rand-m10-inc0-p1").unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut scratch = Vec::new();
        for (h, w) in [(1, 1), (1, 3), (2, 2), (3, 1)] {
            let size = ImageSize::new(h, w);
            for op in RAND_TRANSFORMS.iter().chain(&RAND_INCREASING_TRANSFORMS) {
                let mut out = image(size);
                augment.apply_op(*op, 7.5, &mut out, size, &mut scratch, &mut rng);
                assert_eq!(out.len(), size.bytes());
            }
        }
    }
}

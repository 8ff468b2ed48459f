//! Crops, flips and resizes: torchvision's `RandomCrop` + `RandomHorizontalFlip`
//! of the CIFAR recipes, `RandomResizedCrop` of the ImageNet-style recipes, and
//! the test-time resize + centre crop. Resizing follows PIL's antialiased
//! resampler (what torchvision calls on PIL images), fixed-point rounding
//! included, so outputs match PIL's bytes.

use multiversion::multiversion;
use rand::Rng;

use super::{uniform, AugmentError, ImageSize, Interpolation, CHANNELS};

/// torchvision's `RandomCrop(side, padding=pad)` followed by
/// `RandomHorizontalFlip()`: the image is zero-padded by `pad` on every side,
/// a `side`x`side` window is taken at a uniformly random offset, and mirrored
/// with probability one half. `src` and `dst` hold `3 * side * side` bytes.
pub fn random_crop_flip(src: &[u8], dst: &mut [u8], side: usize, pad: usize, rng: &mut impl Rng) {
    let plane = side * side;
    debug_assert!(src.len() == 3 * plane && dst.len() == 3 * plane);
    // Offsets of the window in padded coordinates, shifted back to the source.
    let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let flip = rng.random_bool(0.5);
    for c in 0..3 {
        let (src, dst) = (&src[c * plane..][..plane], &mut dst[c * plane..][..plane]);
        for y in 0..side {
            let sy = y as isize + dy;
            let row = &mut dst[y * side..][..side];
            if sy < 0 || sy >= side as isize {
                row.fill(0);
                continue;
            }
            let src_row = &src[sy as usize * side..][..side];
            for (x, out) in row.iter_mut().enumerate() {
                let x = if flip { side - 1 - x } else { x };
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

/// Mirrors an image left to right in place (torchvision's `hflip`).
pub fn horizontal_flip(image: &mut [u8], size: ImageSize) {
    debug_assert_eq!(image.len(), size.bytes());
    for row in image.chunks_exact_mut(size.width) {
        row.reverse();
    }
}

/// How a source image's bytes are laid out: three planes (CHW, the layout
/// of batches), or interleaved RGB (HWC, as decoders write it), which a
/// streamed image is resampled from without a full-size copy into planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelLayout {
    Planes,
    Interleaved,
}

/// A rectangle of an image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl CropBox {
    /// The whole of an image.
    pub fn whole(size: ImageSize) -> Self {
        Self {
            top: 0,
            left: 0,
            height: size.height,
            width: size.width,
        }
    }
}

/// torchvision's `RandomResizedCrop`: a box of random area (a `scale` fraction
/// of the image) and random aspect ratio (log-uniform in `ratio`), resized to
/// the output size. Ten tries to fit such a box; then the largest centred box
/// whose aspect ratio lies in `ratio`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    pub interpolation: Interpolation,
}

impl Default for RandomResizedCrop {
    /// torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3), bilinear.
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: Interpolation::Bilinear,
        }
    }
}

impl RandomResizedCrop {
    /// Checks that `0 < scale min <= scale max <= 1` and `0 < ratio min <= ratio max`.
    pub fn validate(&self) -> Result<(), AugmentError> {
        let (scale, ratio) = (self.scale, self.ratio);
        if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
            return Err(AugmentError::OutOfRange {
                name: "random-resized-crop scale",
                value: if scale.0 > 0.0 { scale.1 } else { scale.0 },
                range: "0 < min <= max <= 1",
            });
        }
        if !(ratio.0 > 0.0 && ratio.0 <= ratio.1) {
            return Err(AugmentError::OutOfRange {
                name: "random-resized-crop ratio",
                value: ratio.0,
                range: "0 < min <= max",
            });
        }
        Ok(())
    }

    /// The box torchvision's `RandomResizedCrop.get_params` would draw.
    pub fn sample_box(&self, size: ImageSize, rng: &mut impl Rng) -> CropBox {
        let (height, width) = (size.height, size.width);
        let area = (height * width) as f64;
        let log_ratio = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
            let w = (target_area * aspect).sqrt().round_ties_even() as usize;
            let h = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (h, w) = if in_ratio < self.ratio.0 {
            (
                (width as f64 / self.ratio.0).round_ties_even() as usize,
                width,
            )
        } else if in_ratio > self.ratio.1 {
            (
                height,
                (height as f64 * self.ratio.1).round_ties_even() as usize,
            )
        } else {
            (height, width)
        };
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    /// Crops `src` (laid out as `layout`) at a random box and resizes it
    /// into `dst` (`out` sized, planes); returns the box.
    pub fn apply(
        &self,
        (src, layout): (&[u8], PixelLayout),
        src_size: ImageSize,
        dst: &mut [u8],
        out: ImageSize,
        rng: &mut impl Rng,
    ) -> CropBox {
        let crop = self.sample_box(src_size, rng);
        resized_crop((src, layout), src_size, crop, dst, out, self.interpolation);
        crop
    }
}

/// torchvision's `resized_crop` on a PIL image: the `crop` box of `src`,
/// resized to `out` (planes) with PIL's antialiased filter.
pub fn resized_crop(
    src: (&[u8], PixelLayout),
    src_size: ImageSize,
    crop: CropBox,
    dst: &mut [u8],
    out: ImageSize,
    interpolation: Interpolation,
) {
    resample(
        src,
        src_size,
        crop,
        out,
        CropBox::whole(out),
        dst,
        interpolation,
    );
}

/// The test-time transform of timm's recipes: resize the shorter side to
/// `floor(side / crop_pct)` (torchvision's `Resize(int)`), then take the
/// centred `side`x`side` crop (torchvision's `CenterCrop`). `dst` holds
/// `3 * side * side` bytes, as planes.
pub fn resize_center_crop(
    src: (&[u8], PixelLayout),
    src_size: ImageSize,
    dst: &mut [u8],
    side: usize,
    crop_pct: f64,
    interpolation: Interpolation,
) -> Result<(), AugmentError> {
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(AugmentError::OutOfRange {
            name: "test crop ratio",
            value: crop_pct,
            range: "(0, 1]",
        });
    }
    let short_side = (side as f64 / crop_pct).floor() as usize;
    let (short, long) = if src_size.width <= src_size.height {
        (src_size.width, src_size.height)
    } else {
        (src_size.height, src_size.width)
    };
    let long_side = (short_side as f64 * long as f64 / short as f64) as usize;
    let resized = if src_size.width <= src_size.height {
        ImageSize::new(long_side, short_side)
    } else {
        ImageSize::new(short_side, long_side)
    };
    let centred = |extent: usize| ((extent - side) as f64 / 2.0).round_ties_even() as usize;
    let window = CropBox {
        top: centred(resized.height),
        left: centred(resized.width),
        height: side,
        width: side,
    };
    resample(
        src,
        src_size,
        CropBox::whole(src_size),
        resized,
        window,
        dst,
        interpolation,
    );
    Ok(())
}

/// Fixed-point fraction bits of PIL's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's resampling kernels (`Resample.c`): support radius and weight.
fn filter_support(interpolation: Interpolation) -> f64 {
    match interpolation {
        Interpolation::Bilinear => 1.0,
        Interpolation::Bicubic => 2.0,
    }
}

fn filter_weight(interpolation: Interpolation, x: f64) -> f64 {
    let x = x.abs();
    match interpolation {
        Interpolation::Bilinear => (1.0 - x).max(0.0),
        Interpolation::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
    }
}

/// The input taps of each output position along one axis, as PIL's
/// `precompute_coeffs` + `normalize_coeffs_8bpc` compute them.
struct Taps {
    /// First input index and tap count of each output position.
    bounds: Vec<(usize, usize)>,
    /// `stride` fixed-point weights per output position.
    weights: Vec<i32>,
    stride: usize,
}

impl Taps {
    fn new(in_size: usize, out_size: usize, interpolation: Interpolation) -> Self {
        let scale = in_size as f64 / out_size as f64;
        // Downscaling widens the kernel: that is PIL's antialiasing.
        let filter_scale = scale.max(1.0);
        let support = filter_support(interpolation) * filter_scale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0; out_size * stride];
        let mut raw = vec![0.0; stride];
        for (xx, fixed) in weights.chunks_exact_mut(stride).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as `as i64` does.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = end - first;
            let mut total = 0.0;
            for (x, w) in raw[..count].iter_mut().enumerate() {
                *w = filter_weight(
                    interpolation,
                    ((x + first) as f64 - center + 0.5) / filter_scale,
                );
                total += *w;
            }
            for (w, k) in raw[..count].iter().zip(fixed.iter_mut()) {
                let w = if total != 0.0 { w / total } else { *w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *k = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            bounds.push((first, count));
        }
        Self {
            bounds,
            weights,
            stride,
        }
    }

    /// The first input index and the weights of output position `out_index`.
    fn taps(&self, out_index: usize) -> (usize, &[i32]) {
        let (first, count) = self.bounds[out_index];
        (first, &self.weights[out_index * self.stride..][..count])
    }
}

/// Rounds a fixed-point sum and clips it like PIL's `clip8`.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL's rounding offset, where every fixed-point sum starts.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// PIL's `Image.resize` of the `crop` box of `src` to `full` size, two
/// separable passes (horizontal, then vertical, through 8-bit intermediates),
/// computing only the `window` of the result, which lands in `dst` (planes).
/// Compiled for AVX2 as well, whose wider integer multiplies the loops use.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
fn resample(
    source: (&[u8], PixelLayout),
    src_size: ImageSize,
    crop: CropBox,
    full: ImageSize,
    window: CropBox,
    dst: &mut [u8],
    interpolation: Interpolation,
) {
    let (src, layout) = source;
    debug_assert_eq!(src.len(), src_size.bytes());
    debug_assert_eq!(dst.len(), CHANNELS * window.height * window.width);
    let horizontal = Taps::new(crop.width, full.width, interpolation);
    let vertical = Taps::new(crop.height, full.height, interpolation);
    // Crop rows the window's vertical taps read.
    let rows_needed = window.top..window.top + window.height;
    let first_row = rows_needed
        .clone()
        .map(|y| vertical.bounds[y].0)
        .min()
        .unwrap_or(0);
    let end_row = rows_needed
        .map(|y| vertical.bounds[y].0 + vertical.bounds[y].1)
        .max()
        .unwrap_or(0);
    let rows = end_row - first_row;
    // i32 sums, as PIL's 8-bit resampler keeps them (8-bit samples times
    // 22-bit weights cannot overflow), so the loops vectorise.
    let mut wide = vec![0u8; CHANNELS * rows * window.width];
    let wide_at = |c: usize, r: usize| (c * rows + r) * window.width;
    match layout {
        PixelLayout::Planes => {
            for c in 0..CHANNELS {
                let plane = &src[c * src_size.plane()..][..src_size.plane()];
                for r in 0..rows {
                    let row = &plane[(crop.top + first_row + r) * src_size.width + crop.left..]
                        [..crop.width];
                    let out = &mut wide[wide_at(c, r)..][..window.width];
                    for (x, value) in out.iter_mut().enumerate() {
                        let (first, weights) = horizontal.taps(window.left + x);
                        let sum = row[first..][..weights.len()]
                            .iter()
                            .zip(weights)
                            .fold(HALF, |sum, (&p, &k)| sum + i32::from(p) * k);
                        *value = clip8(sum);
                    }
                }
            }
        }
        // One pass per row for all three channels: each tap's weight is
        // looked up once and the pixel's bytes are adjacent.
        PixelLayout::Interleaved => {
            for r in 0..rows {
                let row = &src
                    [((crop.top + first_row + r) * src_size.width + crop.left) * CHANNELS..]
                    [..crop.width * CHANNELS];
                for x in 0..window.width {
                    let (first, weights) = horizontal.taps(window.left + x);
                    let mut sums = [HALF; CHANNELS];
                    let pixels =
                        row[first * CHANNELS..][..weights.len() * CHANNELS].chunks_exact(CHANNELS);
                    for (pixel, &k) in pixels.zip(weights) {
                        for (sum, &p) in sums.iter_mut().zip(pixel) {
                            *sum += i32::from(p) * k;
                        }
                    }
                    for (c, &sum) in sums.iter().enumerate() {
                        wide[wide_at(c, r) + x] = clip8(sum);
                    }
                }
            }
        }
    }
    // Row by row: each tap adds a weighted input row to the output row's sums.
    let mut sums = vec![0i32; window.width];
    for c in 0..CHANNELS {
        let plane = &wide[c * rows * window.width..][..rows * window.width];
        for y in 0..window.height {
            let (first, weights) = vertical.taps(window.top + y);
            sums.fill(HALF);
            for (i, &k) in weights.iter().enumerate() {
                let row = &plane[(first + i - first_row) * window.width..][..window.width];
                for (sum, &p) in sums.iter_mut().zip(row) {
                    *sum += i32::from(p) * k;
                }
            }
            let out = &mut dst[(c * window.height + y) * window.width..][..window.width];
            for (value, &sum) in out.iter_mut().zip(&sums) {
                *value = clip8(sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn image(side: usize) -> Vec<u8> {
        (0..3 * side * side).map(|i| (i % 251 + 1) as u8).collect()
    }

    #[test]
    fn zero_padding_means_identity_or_mirror() {
        let side = 6;
        let src = image(side);
        let mut rng = StdRng::seed_from_u64(1);
        let (mut same, mut mirrored) = (false, false);
        for _ in 0..50 {
            let mut dst = vec![0; src.len()];
            random_crop_flip(&src, &mut dst, side, 0, &mut rng);
            if dst == src {
                same = true;
            } else {
                for (row_dst, row_src) in dst.chunks(side).zip(src.chunks(side)) {
                    let rev: Vec<u8> = row_src.iter().rev().copied().collect();
                    assert_eq!(row_dst, rev.as_slice());
                }
                mirrored = true;
            }
        }
        assert!(same && mirrored);
    }

    #[test]
    fn crops_are_shifted_windows_with_black_borders() {
        let side = 8;
        let pad = 2;
        let src = image(side);
        let mut rng = StdRng::seed_from_u64(7);
        let mut shifted = 0;
        for _ in 0..200 {
            let mut dst = vec![7; src.len()];
            random_crop_flip(&src, &mut dst, side, pad, &mut rng);
            // Every output pixel is either a border zero or a source pixel of the same channel.
            let plane = side * side;
            for c in 0..3 {
                let source = &src[c * plane..][..plane];
                for &v in &dst[c * plane..][..plane] {
                    assert!(v == 0 || source.contains(&v));
                }
            }
            let zeros = dst.iter().filter(|&&v| v == 0).count();
            assert!(zeros <= 3 * (2 * pad * side + 2 * pad * side));
            if zeros > 0 {
                shifted += 1;
            }
        }
        // A zero-offset crop has probability 1/25; most crops show a border.
        assert!(shifted > 150, "{shifted}");
    }

    /// A colour image whose planes are distinct ramps.
    fn ramp(size: ImageSize) -> Vec<u8> {
        let mut pixels = Vec::with_capacity(size.bytes());
        for c in 0..CHANNELS {
            for y in 0..size.height {
                for x in 0..size.width {
                    pixels.push(((7 * x + 13 * y + 60 * c) % 256) as u8);
                }
            }
        }
        pixels
    }

    #[test]
    fn horizontal_flip_mirrors_every_row_and_twice_is_identity() {
        let size = ImageSize::new(3, 5);
        let original = ramp(size);
        let mut flipped = original.clone();
        horizontal_flip(&mut flipped, size);
        assert_eq!(flipped[0], original[4]);
        assert_eq!(flipped[size.plane() + 5], original[size.plane() + 9]);
        horizontal_flip(&mut flipped, size);
        assert_eq!(flipped, original);
    }

    #[test]
    fn random_resized_boxes_respect_scale_and_ratio() {
        let crop = RandomResizedCrop::default();
        let size = ImageSize::new(120, 160);
        let mut rng = StdRng::seed_from_u64(3);
        let mut areas = Vec::new();
        for _ in 0..500 {
            let b = crop.sample_box(size, &mut rng);
            assert!(b.top + b.height <= size.height && b.left + b.width <= size.width);
            let area = (b.height * b.width) as f64 / size.plane() as f64;
            let ratio = b.width as f64 / b.height as f64;
            // Rounding the sides to whole pixels moves area and ratio a little.
            assert!((0.07..=1.0).contains(&area), "{b:?}");
            assert!((0.70..=1.43).contains(&ratio), "{b:?}");
            areas.push(area);
        }
        let mean = areas.iter().sum::<f64>() / areas.len() as f64;
        // Uniform area in [0.08, 1] has mean 0.54; boxes that do not fit are retried,
        // which favours small ones.
        assert!((0.3..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn impossible_boxes_fall_back_to_the_central_crop() {
        // A 4x200 strip: no box of ratio <= 4/3 and area >= 8% fits in ten tries,
        // so the fallback takes the full height and a 4/3-wide centred box.
        let crop = RandomResizedCrop {
            scale: (0.5, 1.0),
            ..RandomResizedCrop::default()
        };
        let size = ImageSize::new(4, 200);
        let mut rng = StdRng::seed_from_u64(0);
        let b = crop.sample_box(size, &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 0,
                left: (200 - 5) / 2,
                height: 4,
                width: 5
            }
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_boxes() {
        let crop = RandomResizedCrop::default();
        let size = ImageSize::new(50, 70);
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| crop.sample_box(size, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(11), draw(11));
        assert_ne!(draw(11), draw(12));
    }

    #[test]
    fn resizing_to_the_same_size_is_the_identity() {
        let size = ImageSize::new(9, 13);
        let src = ramp(size);
        for interpolation in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let mut dst = vec![0; size.bytes()];
            resized_crop(
                (&src, PixelLayout::Planes),
                size,
                CropBox::whole(size),
                &mut dst,
                size,
                interpolation,
            );
            assert_eq!(dst, src);
        }
    }

    #[test]
    fn resizing_keeps_a_flat_image_flat_and_a_crop_of_one_colour_that_colour() {
        let size = ImageSize::new(10, 12);
        let mut src = vec![0u8; size.bytes()];
        for (c, plane) in src.chunks_exact_mut(size.plane()).enumerate() {
            plane.fill([200, 17, 90][c]);
        }
        let out = ImageSize::new(7, 23);
        for interpolation in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let mut dst = vec![0; out.bytes()];
            let crop = CropBox {
                top: 2,
                left: 1,
                height: 5,
                width: 9,
            };
            resized_crop(
                (&src, PixelLayout::Planes),
                size,
                crop,
                &mut dst,
                out,
                interpolation,
            );
            for (c, plane) in dst.chunks_exact(out.plane()).enumerate() {
                assert!(plane.iter().all(|&v| v == [200, 17, 90][c]));
            }
        }
    }

    #[test]
    fn interleaved_sources_resample_as_their_planes_do() {
        let size = ImageSize::new(37, 52);
        let mut rng = StdRng::seed_from_u64(3);
        let planes: Vec<u8> = (0..size.bytes()).map(|_| rng.random()).collect();
        let plane = size.plane();
        let interleaved: Vec<u8> = (0..size.bytes())
            .map(|i| planes[(i % CHANNELS) * plane + i / CHANNELS])
            .collect();
        let crop = CropBox {
            top: 3,
            left: 5,
            height: 30,
            width: 41,
        };
        for interpolation in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for out in [ImageSize::new(16, 16), ImageSize::new(45, 60)] {
                let resize = |layout, src: &[u8]| {
                    let mut dst = vec![0; out.bytes()];
                    resized_crop((src, layout), size, crop, &mut dst, out, interpolation);
                    dst
                };
                assert_eq!(
                    resize(PixelLayout::Interleaved, &interleaved),
                    resize(PixelLayout::Planes, &planes)
                );
            }
            let centre = |layout, src: &[u8]| {
                let mut dst = vec![0; 3 * 24 * 24];
                resize_center_crop((src, layout), size, &mut dst, 24, 0.875, interpolation)
                    .unwrap();
                dst
            };
            assert_eq!(
                centre(PixelLayout::Interleaved, &interleaved),
                centre(PixelLayout::Planes, &planes)
            );
        }
    }

    #[test]
    fn halving_a_bilinear_image_averages_pixel_pairs() {
        // Antialiased bilinear at scale 2 weighs the four nearest inputs 1/8, 3/8, 3/8, 1/8.
        let size = ImageSize::new(1, 8);
        let row = [0u8, 16, 32, 48, 64, 80, 96, 112];
        let src: Vec<u8> = row.iter().cycle().take(size.bytes()).copied().collect();
        let out = ImageSize::new(1, 4);
        let mut dst = vec![0; out.bytes()];
        resized_crop(
            (&src, PixelLayout::Planes),
            size,
            CropBox::whole(size),
            &mut dst,
            out,
            Interpolation::Bilinear,
        );
        // Interior outputs: (x0 + 3 x1 + 3 x2 + x3) / 8; the first output loses
        // its left tap and renormalises (3 x0 + 3 x1 + x2) / 7, with x0 = 0.
        assert_eq!(dst[1], ((16 + 3 * 32 + 3 * 48 + 64) / 8) as u8);
        assert_eq!(dst[2], ((48 + 3 * 64 + 3 * 80 + 96) / 8) as u8);
        assert_eq!(dst[0], ((3 * 16 + 32) as f64 / 7.0).round() as u8);
    }

    #[test]
    fn centre_crop_at_ratio_one_takes_the_middle_of_the_short_side() {
        // A 6x10 image, side 6, ratio 1: no resize, the crop starts at column 2.
        let size = ImageSize::new(6, 10);
        let src = ramp(size);
        let mut dst = vec![0; 3 * 36];
        resize_center_crop(
            (&src, PixelLayout::Planes),
            size,
            &mut dst,
            6,
            1.0,
            Interpolation::Bicubic,
        )
        .unwrap();
        for c in 0..CHANNELS {
            for y in 0..6 {
                for x in 0..6 {
                    assert_eq!(dst[c * 36 + y * 6 + x], src[c * 60 + y * 10 + x + 2]);
                }
            }
        }
    }

    #[test]
    fn centre_crop_window_equals_a_crop_of_the_full_resize() {
        let size = ImageSize::new(31, 40);
        let src = ramp(size);
        let (side, crop_pct) = (16, 0.875);
        let mut dst = vec![0; 3 * side * side];
        resize_center_crop(
            (&src, PixelLayout::Planes),
            size,
            &mut dst,
            side,
            crop_pct,
            Interpolation::Bilinear,
        )
        .unwrap();
        // floor(16 / 0.875) = 18 on the short side, int(18 * 40 / 31) = 23 on the long one.
        let resized_size = ImageSize::new(18, 23);
        let mut resized = vec![0; resized_size.bytes()];
        resized_crop(
            (&src, PixelLayout::Planes),
            size,
            CropBox::whole(size),
            &mut resized,
            resized_size,
            Interpolation::Bilinear,
        );
        let (top, left) = (1, 4); // round(2 / 2), round(7 / 2) with halves to even
        for c in 0..CHANNELS {
            for y in 0..side {
                for x in 0..side {
                    let want = resized[c * resized_size.plane() + (y + top) * 23 + x + left];
                    assert_eq!(dst[c * side * side + y * side + x], want);
                }
            }
        }
        let err = resize_center_crop(
            (&src, PixelLayout::Planes),
            size,
            &mut dst,
            side,
            1.5,
            Interpolation::Bilinear,
        );
        assert!(matches!(err, Err(AugmentError::OutOfRange { .. })));
    }
}

//! Augmentations on raw CHW `u8` images, before they become tensors.

use rand::Rng;

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
}

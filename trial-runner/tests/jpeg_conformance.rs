//! Streamed folders against PIL and timm: the cases in `tests/jpeg_cases`
//! were recorded by `scripts/record_jpeg_cases.py` (photograph-like JPEGs,
//! PIL's decode of each, and timm's evaluation transform of that decode).

use std::path::{Path, PathBuf};

use bocb_trial_runner::augment::ImageSize;
use bocb_trial_runner::batches::stream::FullResTransform;
use bocb_trial_runner::data::stream::{decode_file, DecodeBuffers};
use rand::rngs::StdRng;
use rand::SeedableRng;

const SIDE: usize = 64;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jpeg_cases")
        .join(name)
}

/// A recorded PNG as interleaved RGB (as decoders write it) and its size.
fn interleaved(path: &Path) -> (Vec<u8>, ImageSize) {
    let image = image::open(path).unwrap().into_rgb8();
    let size = ImageSize::new(image.height() as usize, image.width() as usize);
    (image.into_raw(), size)
}

/// A recorded PNG as RGB planes (CHW, as transforms write them) and its size.
fn planes(path: &Path) -> (Vec<u8>, ImageSize) {
    let image = image::open(path).unwrap().into_rgb8();
    let size = ImageSize::new(image.height() as usize, image.width() as usize);
    let mut out = vec![0u8; size.bytes()];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * size.plane() + i] = pixel.0[c];
        }
    }
    (out, size)
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

#[test]
fn jpegs_decode_as_pil_decodes_them() {
    for name in ["landscape", "portrait"] {
        let mut ours = Vec::new();
        let size = decode_file(
            &case(&format!("{name}.jpg")),
            &mut DecodeBuffers::default(),
            &mut ours,
        )
        .unwrap();
        let (pil, pil_size) = interleaved(&case(&format!("{name}.decoded.png")));
        assert_eq!(size, pil_size, "{name}");
        let db = psnr(&ours, &pil);
        assert!(db > 40.0, "{name}: {db:.1} dB");
    }
}

#[test]
fn the_evaluation_transform_equals_timms() {
    let book = bocb_search_spaces::RecipeBook::builtin();
    for name in ["landscape", "portrait"] {
        let (pil, size) = interleaved(&case(&format!("{name}.decoded.png")));
        for recipe in ["pytorch", "rsb_a2"] {
            let transform = FullResTransform::eval(Some(book.recipe(recipe).unwrap()), SIDE);
            let mut ours = vec![0u8; 3 * SIDE * SIDE];
            let mut rng = StdRng::seed_from_u64(0);
            transform.apply(&pil, size, &mut ours, &mut Vec::new(), &mut rng);
            let (timm, timm_size) = planes(&case(&format!("{name}.eval-{recipe}.png")));
            assert_eq!(timm_size, ImageSize::new(SIDE, SIDE));
            // PIL's resampler, reproduced: at most one level apart.
            let worst = ours.iter().zip(&timm).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(worst <= Some(1), "{name} {recipe}: {worst:?}");
        }
    }
}

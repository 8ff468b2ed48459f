//! bocb's `RandomResizedCrop` draws its boxes from torchvision's
//! distribution: the distribution functions of the box's area fraction,
//! aspect, relative top and left, and the share of centred fallback boxes,
//! each within the sampling error of both sides of the distributions
//! `scripts/record_crop_cases.py` recorded from `get_params`.

use bocb_trial_runner::augment::{ImageSize, Interpolation, RandomResizedCrop};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    draws: usize,
    /// top, left, height, width
    fallback_box: [usize; 4],
    fallback_share: f64,
    statistics: std::collections::BTreeMap<String, Cdf>,
}

#[derive(Deserialize)]
struct Cdf {
    points: Vec<f64>,
    cdf: Vec<f64>,
}

const DRAWS: usize = 100_000;
/// Chance that an exact sampler fails one comparison.
const ALPHA: f64 = 1e-6;

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/crop_cases.json");
    serde_json::from_str::<Cases>(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .cases
}

/// The case's statistics of `DRAWS` boxes of `crop`, and the share of
/// fallback boxes.
fn draw(case: &Case, crop: &RandomResizedCrop, seed: u64) -> (Vec<[f64; 4]>, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let size = ImageSize::new(case.height, case.width);
    let mut fallbacks = 0;
    let stats = (0..DRAWS)
        .map(|_| {
            let b = crop.sample_box(size, &mut rng);
            fallbacks += usize::from([b.top, b.left, b.height, b.width] == case.fallback_box);
            let relative = |pos: usize, extent: usize, side: usize| {
                if side > extent {
                    pos as f64 / (side - extent) as f64
                } else {
                    0.5
                }
            };
            [
                (b.height * b.width) as f64 / (case.height * case.width) as f64,
                (b.width as f64 / b.height as f64).ln(),
                relative(b.top, b.height, case.height),
                relative(b.left, b.width, case.width),
            ]
        })
        .collect();
    (stats, fallbacks as f64 / DRAWS as f64)
}

/// The largest gap between bocb's and torchvision's distribution functions
/// over the recorded points of any statistic, with its name; and the
/// tolerance: the Dvoretzky-Kiefer-Wolfowitz bound of both samples at `ALPHA`.
fn largest_gap(case: &Case, stats: &[[f64; 4]]) -> (f64, String, f64) {
    let dkw = |n: usize| ((2.0 / ALPHA).ln() / (2.0 * n as f64)).sqrt();
    let tolerance = dkw(DRAWS) + dkw(case.draws);
    let mut worst = (0.0, String::new(), tolerance);
    for (k, key) in ["area", "log_aspect", "top", "left"]
        .into_iter()
        .enumerate()
    {
        let recorded = &case.statistics[key];
        for (&point, &reference) in recorded.points.iter().zip(&recorded.cdf) {
            // A hair of slack for float32 (torch) against float64 (bocb)
            // arithmetic on values that land on a grid point.
            let ours = stats.iter().filter(|s| s[k] <= point + 1e-9).count() as f64 / DRAWS as f64;
            let gap = (ours - reference).abs();
            if gap > worst.0 {
                worst = (
                    gap,
                    format!("{key} <= {point:.4}: {ours:.4} vs {reference:.4}"),
                    tolerance,
                );
            }
        }
    }
    worst
}

#[test]
fn boxes_follow_torchvisions_distribution_fallback_included() {
    for (seed, case) in cases().iter().enumerate() {
        let crop = RandomResizedCrop {
            scale: case.scale,
            ratio: case.ratio,
            interpolation: Interpolation::Bilinear,
        };
        let (stats, fallback_share) = draw(case, &crop, seed as u64);
        let (gap, at, tolerance) = largest_gap(case, &stats);
        assert!(
            gap <= tolerance,
            "{}: {at} (gap {gap:.4} > {tolerance:.4})",
            case.name
        );
        // Binomial shares: five standard errors of the difference, and at
        // least a few draws' worth where the reference share is near zero.
        let p = case.fallback_share;
        let se = (p * (1.0 - p) * (1.0 / DRAWS as f64 + 1.0 / case.draws as f64)).sqrt();
        assert!(
            (fallback_share - p).abs() <= 5.0 * se + 1e-3,
            "{}: fallback share {fallback_share:.4} vs torchvision's {p:.4}",
            case.name
        );
    }
}

#[test]
fn the_comparison_tells_a_different_scale_range_apart() {
    // The test has power: a sampler whose scale starts at 0.15 rather than
    // 0.08 is caught on the default case.
    let cases = cases();
    let case = cases.iter().find(|c| c.name == "photo_default").unwrap();
    let crop = RandomResizedCrop {
        scale: (0.15, case.scale.1),
        ratio: case.ratio,
        interpolation: Interpolation::Bilinear,
    };
    let (stats, _) = draw(case, &crop, 7);
    let (gap, at, tolerance) = largest_gap(case, &stats);
    assert!(gap > tolerance, "{at}: gap {gap:.4} within {tolerance:.4}");
}

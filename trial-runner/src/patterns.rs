//! Layer-wise parameter patterns of a trained network (the paper's App. A.3):
//! the power-law exponent α of the empirical spectral density of WᵀW, the
//! entropy of the weight values, the L2 norm, and the top-k PCA energy.
//!
//! A weight of rank > 2 (a conv kernel `out x in x kh x kw`) is read as the
//! matrix `out x (in * kh * kw)`; vectors (biases, norm scales) get only the
//! entropy and the norm.

use std::path::Path;

use tch::{Kind, Tensor};

/// Histogram bins of the entropy.
pub const ENTROPY_BINS: usize = 256;
/// Fewest tail eigenvalues a power-law fit may use.
const MIN_TAIL: usize = 5;

pub use bocb_spec::{patterns_path, LayerPattern, TOP_K};

/// A power law `p(x) ∝ x^(-alpha)` for `x >= xmin`, and its KS distance to
/// the data it was fitted to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLawFit {
    pub alpha: f64,
    pub xmin: f64,
    pub ks: f64,
}

/// Every pattern of one tensor.
pub fn layer_pattern(name: &str, weight: &Tensor) -> LayerPattern {
    let values = weight.to_kind(Kind::Double).flatten(0, -1);
    let flat: Vec<f64> = Vec::try_from(&values).unwrap_or_default();
    let matrix = (weight.dim() >= 2).then(|| as_matrix(weight));
    let fit = matrix.as_ref().and_then(|m| fit_power_law(&eigenvalues(m)));
    LayerPattern {
        name: name.to_string(),
        shape: weight.size(),
        alpha: fit.map(|f| f.alpha),
        alpha_xmin: fit.map(|f| f.xmin),
        alpha_ks: fit.map(|f| f.ks),
        entropy: histogram_entropy(&flat, ENTROPY_BINS),
        l2_norm: flat.iter().map(|v| v * v).sum::<f64>().sqrt(),
        top_k_energy: matrix.as_ref().map(|m| top_k_energy(m, TOP_K)),
    }
}

/// The patterns of every named tensor, by name (files and var stores give
/// them in no fixed order).
fn named_patterns(mut tensors: Vec<(String, Tensor)>) -> Vec<LayerPattern> {
    tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
    tensors
        .iter()
        .map(|(name, weight)| layer_pattern(name, weight))
        .collect()
}

/// The patterns of every tensor in a safetensors file, by name.
pub fn file_patterns(path: &Path) -> Result<Vec<LayerPattern>, tch::TchError> {
    Ok(named_patterns(Tensor::read_safetensors(path)?))
}

/// Writes the patterns of `vs`, whose weights were just saved at `weights`,
/// beside them ([`patterns_path`]), whole or not at all (temporary file,
/// rename).
pub fn keep_patterns(vs: &tch::nn::VarStore, weights: &Path) -> Result<(), String> {
    let patterns = named_patterns(vs.variables().into_iter().collect());
    let path = patterns_path(weights);
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_vec(&patterns).expect("patterns serialize");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `weight` as a float64 matrix `rows x (everything else)`.
fn as_matrix(weight: &Tensor) -> Tensor {
    let rows = weight.size()[0];
    weight.to_kind(Kind::Double).reshape([rows, -1])
}

/// Eigenvalues of WᵀW (the squared singular values of W), ascending.
pub fn eigenvalues(matrix: &Tensor) -> Vec<f64> {
    let (_, singular, _) = matrix.svd(true, false);
    let mut evals: Vec<f64> = Vec::try_from(&(&singular * &singular)).unwrap_or_default();
    evals.sort_by(f64::total_cmp);
    evals
}

/// The maximum-likelihood exponent of a continuous power law over the
/// values `>= xmin`: `1 + n / Σ ln(x / xmin)`.
pub fn alpha_at(values: &[f64], xmin: f64) -> Option<f64> {
    let tail: Vec<f64> = values.iter().copied().filter(|&x| x >= xmin).collect();
    let log_sum: f64 = tail.iter().map(|x| (x / xmin).ln()).sum();
    (tail.len() >= 2 && log_sum > 0.0).then(|| 1.0 + tail.len() as f64 / log_sum)
}

/// Kolmogorov-Smirnov distance between the values `>= xmin` and the power
/// law with `alpha` from `xmin`.
fn ks_distance(sorted: &[f64], xmin: f64, alpha: f64) -> f64 {
    let tail: Vec<f64> = sorted.iter().copied().filter(|&x| x >= xmin).collect();
    let n = tail.len() as f64;
    tail.iter()
        .enumerate()
        .map(|(i, &x)| {
            let model = 1.0 - (x / xmin).powf(1.0 - alpha);
            // The empirical CDF jumps at x: compare both sides of the step.
            let below = i as f64 / n;
            let above = (i + 1) as f64 / n;
            (model - below).abs().max((model - above).abs())
        })
        .fold(0.0, f64::max)
}

/// WeightWatcher's fit (after Clauset et al., 2009): every eigenvalue that
/// leaves at least `MIN_TAIL` values above it is tried as `xmin`, α is the
/// maximum-likelihood exponent of the tail from it, and the `xmin` of the
/// smallest KS distance wins.
pub fn fit_power_law(values: &[f64]) -> Option<PowerLawFit> {
    let mut sorted: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.len() < MIN_TAIL {
        return None;
    }
    let mut candidates = sorted[..=sorted.len() - MIN_TAIL].to_vec();
    candidates.dedup();
    candidates
        .into_iter()
        .filter_map(|xmin| {
            let alpha = alpha_at(&sorted, xmin)?;
            Some(PowerLawFit {
                alpha,
                xmin,
                ks: ks_distance(&sorted, xmin, alpha),
            })
        })
        .min_by(|a, b| a.ks.total_cmp(&b.ks))
}

/// Shannon entropy (nats) of a `bins`-bin histogram over the values' range;
/// 0 for a constant tensor.
pub fn histogram_entropy(values: &[f64], bins: usize) -> f64 {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if values.is_empty() || hi <= lo {
        return 0.0;
    }
    let mut counts = vec![0usize; bins];
    for &v in values {
        let bin = (((v - lo) / (hi - lo)) * bins as f64) as usize;
        counts[bin.min(bins - 1)] += 1;
    }
    let n = values.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Share of the variance in the `k` largest principal components of the
/// matrix's rows (the covariance of its centred columns).
pub fn top_k_energy(matrix: &Tensor, k: usize) -> f64 {
    let centred = matrix - matrix.mean_dim(0, true, Kind::Double);
    let evals = eigenvalues(&centred);
    let total: f64 = evals.iter().sum();
    if total <= 0.0 {
        return 1.0;
    }
    evals.iter().rev().take(k).sum::<f64>() / total
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn alpha_is_the_maximum_likelihood_exponent() {
        // 1 + 3 / (ln 1 + ln 2 + ln 4) = 1 + 1 / ln 2.
        let alpha = alpha_at(&[1.0, 2.0, 4.0, 0.5], 1.0).unwrap();
        assert!((alpha - (1.0 + 1.0 / 2f64.ln())).abs() < 1e-12);
        assert_eq!(alpha_at(&[1.0, 1.0], 1.0), None);
    }

    #[test]
    fn power_law_fit_recovers_a_pareto_tail() {
        // Inverse-CDF samples of p(x) ∝ x^-3 from 1, below a uniform bulk
        // the KS search must cut away.
        let mut rng = StdRng::seed_from_u64(9);
        let mut values: Vec<f64> = (0..4000)
            .map(|_| (1.0 - rng.random::<f64>()).powf(-1.0 / 2.0))
            .collect();
        values.extend((0..1000).map(|_| 0.2 + 0.7 * rng.random::<f64>()));
        let fit = fit_power_law(&values).unwrap();
        assert!((fit.alpha - 3.0).abs() < 0.2, "{fit:?}");
        // Any start within the Pareto part is a true tail; the bulk is cut.
        assert!(fit.xmin >= 0.9 && fit.xmin < 2.0, "{fit:?}");
        assert!(fit.ks < 0.05, "{fit:?}");
        assert_eq!(fit_power_law(&[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn entropy_counts_occupied_bins() {
        // Four values equally often in four separate bins: ln 4.
        let values = [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0];
        assert!((histogram_entropy(&values, 4) - 4f64.ln()).abs() < 1e-12);
        // Three quarters in one bin, a quarter in another.
        let skewed = [0.0, 0.0, 0.0, 1.0];
        let want = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((histogram_entropy(&skewed, 8) - want).abs() < 1e-12);
        assert_eq!(histogram_entropy(&[2.0; 5], 8), 0.0);
    }

    #[test]
    fn top_k_energy_is_the_variance_share_of_the_leading_components() {
        // Rows ±3e1, ±2e2, ±e3: centred, with variances 9 : 4 : 1 along the axes.
        let rows = [
            3.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
            -1.0,
        ];
        let m = Tensor::from_slice(&rows).reshape([6, 3]);
        assert!((top_k_energy(&m, 1) - 9.0 / 14.0).abs() < 1e-12);
        assert!((top_k_energy(&m, 3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn conv_kernels_are_read_as_matrices_and_vectors_get_no_spectrum() {
        let conv =
            crate::seeding::draw(|| Tensor::randn([8, 4, 3, 3], (Kind::Float, tch::Device::Cpu)));
        let p = layer_pattern("features.0.weight", &conv);
        assert_eq!(p.shape, [8, 4, 3, 3]);
        let norm = f64::try_from(conv.to_kind(Kind::Double).norm()).unwrap();
        assert!((p.l2_norm - norm).abs() < 1e-6);
        assert!(p.alpha.is_some() && p.top_k_energy.is_some());
        // WᵀW of an 8 x 36 matrix has 8 non-zero eigenvalues.
        assert_eq!(eigenvalues(&as_matrix(&conv)).len(), 8);
        let bias = layer_pattern(
            "features.0.bias",
            &Tensor::ones([8], (Kind::Float, tch::Device::Cpu)),
        );
        assert_eq!((bias.alpha, bias.top_k_energy), (None, None));
        assert_eq!(bias.entropy, 0.0);
        assert!((bias.l2_norm - 8f64.sqrt()).abs() < 1e-12);
    }
}

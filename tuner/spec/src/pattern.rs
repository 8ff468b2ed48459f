//! What the runner measures of a trained weight tensor (the paper's App.
//! A.3), as the store keeps it and the analyses read it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Components counted by the top-k PCA energy.
pub const TOP_K: usize = 10;

/// The patterns of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPattern {
    pub name: String,
    pub shape: Vec<i64>,
    /// Power-law exponent of the ESD tail; `None` for vectors and for
    /// matrices with too few eigenvalues to fit.
    pub alpha: Option<f64>,
    /// The tail's start chosen by the Kolmogorov-Smirnov distance.
    pub alpha_xmin: Option<f64>,
    /// That distance: how well the power law fits the tail.
    pub alpha_ks: Option<f64>,
    /// Shannon entropy (nats) of the weight values' histogram.
    pub entropy: f64,
    /// Frobenius norm.
    pub l2_norm: f64,
    /// Share of the covariance's variance in its `TOP_K` largest
    /// components; `None` for vectors.
    pub top_k_energy: Option<f64>,
}

/// Where the runner keeps the layer patterns of weights it saved at
/// `weights` (`TRIAL.safetensors`): beside them, as `TRIAL.patterns.json`,
/// so that reports read them without libtorch.
pub fn patterns_path(weights: &Path) -> PathBuf {
    weights.with_extension("patterns.json")
}

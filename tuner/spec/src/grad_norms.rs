//! Per-layer-group gradient norms of a trial, and the fine-tuning paper's
//! embedding-to-rest ratio read from them.

use serde::{Deserialize, Deserializer, Serialize};

/// The group that holds a backbone's embedding layer.
pub const EMBEDDING_GROUP: &str = "embedding";

/// An embedding-to-rest ratio above this flags a pair: the fine-tuning
/// paper (Kumar et al., "How to fine-tune vision models with SGD") finds
/// AdamW ahead of SGD exactly where the embedding's gradients are "much
/// larger" than the rest's, without giving a number; 5 is bocb's reading
/// of "much", well above the 0.1-2 that freshly initialised micro CNNs and
/// ViTs show (trial-runner's trainer tests).
pub const LARGE_EMBEDDING_RATIO: f64 = 5.0;

/// L2 norms of the gradients per layer group (`embedding`, each stage or
/// block, `head`), after backward and before clipping, on the first
/// training steps and on each epoch's last step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GradNorms {
    /// Group names in network order: `embedding` first (when the backbone
    /// has one and it is trained), `head` last.
    pub groups: Vec<String>,
    /// The first steps of training, one row each.
    pub steps: Vec<GradNormRow>,
    /// Each epoch's last step.
    pub epochs: Vec<GradNormRow>,
}

/// One recorded step: its group norms, in [`GradNorms::groups`] order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradNormRow {
    /// 0-based step of the whole run.
    pub step: u64,
    /// 1-based epoch it belongs to.
    pub epoch: u32,
    /// A diverging step's non-finite norms are stored as `null`.
    #[serde(deserialize_with = "nan_for_null")]
    pub norms: Vec<f64>,
}

/// serde_json writes NaN and infinities as `null`; read them back as NaN.
fn nan_for_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(deserializer)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

impl GradNorms {
    /// The embedding's gradient norm over the median of the other groups'
    /// norms, averaged over the first recorded steps (the fine-tuning
    /// paper measures at the start of fine-tuning). The median keeps small
    /// groups (a class token, a final norm) from deciding it. `None`
    /// without a trained embedding group or another group.
    pub fn embedding_ratio(&self) -> Option<f64> {
        let at = self.groups.iter().position(|g| g == EMBEDDING_GROUP)?;
        let ratios: Vec<f64> = self
            .steps
            .iter()
            .filter_map(|row| {
                let mut rest: Vec<f64> = row
                    .norms
                    .iter()
                    .enumerate()
                    .filter(|&(i, n)| i != at && n.is_finite())
                    .map(|(_, &n)| n)
                    .collect();
                rest.sort_by(f64::total_cmp);
                let median = match rest.len() {
                    0 => return None,
                    n if n % 2 == 1 => rest[n / 2],
                    n => (rest[n / 2 - 1] + rest[n / 2]) / 2.0,
                };
                let ratio = row.norms.get(at)? / median;
                ratio.is_finite().then_some(ratio)
            })
            .collect();
        (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_the_embedding_over_the_median_of_the_rest() {
        let row = |step, norms: &[f64]| GradNormRow {
            step,
            epoch: 1,
            norms: norms.to_vec(),
        };
        let norms = GradNorms {
            groups: ["embedding", "layer1", "layer2", "norm", "head"]
                .map(String::from)
                .to_vec(),
            // Medians of the rest: (2 + 2) / 2 and (4 + 4) / 2.
            steps: vec![
                row(0, &[8.0, 2.0, 3.0, 0.01, 2.0]),
                row(1, &[8.0, 4.0, 5.0, 0.01, 4.0]),
            ],
            epochs: Vec::new(),
        };
        assert_eq!(norms.embedding_ratio(), Some((4.0 + 2.0) / 2.0));
        let frozen = GradNorms {
            groups: ["layer1", "head"].map(String::from).to_vec(),
            ..norms
        };
        assert_eq!(frozen.embedding_ratio(), None);
    }

    #[test]
    fn a_non_finite_norm_reads_back_as_nan() {
        let row = GradNormRow {
            step: 3,
            epoch: 1,
            norms: vec![1.0, f64::NAN, f64::INFINITY],
        };
        let text = serde_json::to_string(&row).unwrap();
        let back: GradNormRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back.norms[0], 1.0);
        assert!(back.norms[1].is_nan() && back.norms[2].is_nan());
    }
}

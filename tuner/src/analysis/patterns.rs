//! Parameter patterns (App. A.3) of each pair's best trained config: the
//! layer-wise α, entropy, L2 norm and top-k PCA energy of the weights its
//! first seed saved (experiments with `save_weights: true`).

use std::fmt::Write as _;

use bocb_spec::{LayerPattern, TOP_K};
use bocb_store::{Store, StoreError};
#[cfg(feature = "train")]
use bocb_trial_runner::patterns::file_patterns;
use serde::Serialize;

/// The patterns of one pair's best config.
#[derive(Debug, Clone, Serialize)]
pub struct PairPatterns {
    pub backbone: String,
    pub optimizer: String,
    pub trial_id: String,
    pub layers: Vec<LayerPattern>,
    /// The pre-trained weights it was fine-tuned from, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained_from: Option<String>,
    /// Layers that started fresh (not in those weights with their shape,
    /// as a new classifier): the paper's Fig. A5 tells them apart from the
    /// pre-trained ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fresh: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PatternsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "experiment `{experiment}` kept no trained weights; add `save_weights: true` to its file and run it again (done trials are retrained only if you delete them, so name a new experiment)"
    )]
    NoWeights { experiment: String },
    #[cfg(feature = "train")]
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: tch::TchError },
    #[error(
        "cannot read the weights {path} that experiment `{experiment}` started from: {message}"
    )]
    Init {
        experiment: String,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Spec(#[from] crate::experiment::StoredSpecError),
}

/// The patterns of every pair whose best config has saved weights.
#[cfg(feature = "train")]
pub fn best_pair_patterns(
    store: &Store,
    experiment: &str,
) -> Result<Vec<PairPatterns>, PatternsError> {
    let mut pairs = Vec::new();
    for best in store.best_per_pair(experiment)? {
        let Some(id) = best.trial_ids.first() else {
            continue;
        };
        let path = store.weights_path(experiment, id);
        if !path.exists() {
            continue;
        }
        let layers = file_patterns(&path).map_err(|error| PatternsError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let start = super::finetune::starting_weights(store, experiment, &best.backbone)?;
        let fresh = match &start {
            Some(init) => {
                let shapes = super::finetune::safetensors_shapes(init).map_err(|message| {
                    PatternsError::Init {
                        experiment: experiment.to_string(),
                        path: init.display().to_string(),
                        message,
                    }
                })?;
                layers
                    .iter()
                    .filter(|l| shapes.get(&l.name) != Some(&l.shape))
                    .map(|l| l.name.clone())
                    .collect()
            }
            None => Vec::new(),
        };
        pairs.push(PairPatterns {
            backbone: best.backbone,
            optimizer: best.optimizer,
            trial_id: id.clone(),
            layers,
            pretrained_from: start.map(|p| p.display().to_string()),
            fresh,
        });
    }
    if pairs.is_empty() {
        return Err(PatternsError::NoWeights {
            experiment: experiment.to_string(),
        });
    }
    Ok(pairs)
}

/// A text table per pair: one row per layer with a weight matrix, then the
/// means over those layers.
pub fn render_patterns(pairs: &[PairPatterns]) -> String {
    let mut out = String::new();
    for pair in pairs {
        let start = |l: &LayerPattern| match &pair.pretrained_from {
            Some(_) if pair.fresh.contains(&l.name) => " fresh",
            Some(_) => " pre-trained",
            None => "",
        };
        let _ = writeln!(
            out,
            "{} × {} (trial {}){}\n{:<48} {:>7} {:>8} {:>9} {:>10}{}",
            pair.backbone,
            pair.optimizer,
            pair.trial_id,
            pair.pretrained_from
                .as_ref()
                .map(|p| format!(", fine-tuned from {p}"))
                .unwrap_or_default(),
            "layer",
            "alpha",
            "entropy",
            "L2 norm",
            format!("top-{TOP_K} PCA"),
            if pair.pretrained_from.is_some() {
                " start"
            } else {
                ""
            }
        );
        let matrices: Vec<&LayerPattern> = pair
            .layers
            .iter()
            .filter(|l| l.top_k_energy.is_some())
            .collect();
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        for l in &matrices {
            let _ = writeln!(
                out,
                "{:<48} {:>7} {:>8.3} {:>9.3} {:>10}{}",
                l.name,
                show(l.alpha),
                l.entropy,
                l.l2_norm,
                show(l.top_k_energy),
                start(l)
            );
        }
        let mean_line = |label: &str, layers: &[&&LayerPattern]| {
            let mean = |f: &dyn Fn(&LayerPattern) -> Option<f64>| {
                let values: Vec<f64> = layers.iter().filter_map(|l| f(l)).collect();
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            };
            format!(
                "{:<48} {:>7} {:>8} {:>9} {:>10}\n",
                format!("mean over {} {label}", layers.len()),
                show(mean(&|l| l.alpha)),
                show(mean(&|l| Some(l.entropy))),
                show(mean(&|l| Some(l.l2_norm))),
                show(mean(&|l| l.top_k_energy)),
            )
        };
        let all: Vec<&&LayerPattern> = matrices.iter().collect();
        out += &mean_line("weight matrices", &all);
        // Fig. A5: the pre-trained part keeps its pre-training pattern, the
        // fresh part (a new head) does not.
        if pair.pretrained_from.is_some() {
            let (fresh, pretrained): (Vec<&&LayerPattern>, Vec<&&LayerPattern>) = all
                .iter()
                .copied()
                .partition(|l| pair.fresh.contains(&l.name));
            out += &mean_line("pre-trained weight matrices", &pretrained);
            out += &mean_line("fresh weight matrices", &fresh);
        }
        out.push('\n');
    }
    out
}

/// Without training (libtorch) no patterns are computed: `None`, with a
/// warning where the experiment kept weights to compute them from.
#[cfg(not(feature = "train"))]
pub fn saved_patterns(
    store: &Store,
    experiment: &str,
) -> Result<Option<Vec<PairPatterns>>, PatternsError> {
    let kept = store.best_per_pair(experiment)?.into_iter().any(|best| {
        best.trial_ids
            .first()
            .is_some_and(|id| store.weights_path(experiment, id).exists())
    });
    if kept {
        tracing::warn!(
            "experiment `{experiment}` kept trained weights, but this bocb was built without training (libtorch), which computes their layer patterns: the report leaves them out; a bocb built with default features shows them"
        );
    }
    Ok(None)
}

/// The patterns of every pair with saved weights, or `None` when the
/// experiment kept none (not trained with `save_weights: true`, or imported).
#[cfg(feature = "train")]
pub fn saved_patterns(
    store: &Store,
    experiment: &str,
) -> Result<Option<Vec<PairPatterns>>, PatternsError> {
    match best_pair_patterns(store, experiment) {
        Ok(pairs) => Ok(Some(pairs)),
        Err(PatternsError::NoWeights { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

//! Parameter patterns (App. A.3) of each pair's best trained config: the
//! layer-wise α, entropy, L2 norm and top-k PCA energy of the weights its
//! first seed saved (experiments with `save_weights: true`), as the runner
//! measured them when it saved them (`TRIAL.patterns.json`). Weights saved
//! before the runner kept their patterns are measured now by the
//! [`MeasurePatterns`] the caller passes: a bocb built with training has one.

use std::path::Path;

use std::fmt::Write as _;

use bocb_spec::{patterns_path, LayerPattern, TOP_K};
use bocb_store::{Store, StoreError, StoredSpecError};
use serde::Serialize;

use crate::finetune::{safetensors_shapes, SafetensorsError};

/// Measures the layer patterns of the weights saved at a path (libtorch's
/// work, so the training build passes it in).
pub type MeasurePatterns =
    fn(&Path) -> Result<Vec<LayerPattern>, Box<dyn std::error::Error + Send + Sync>>;

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
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "experiment `{experiment}` kept trained weights without their layer patterns (saved by an older bocb), and this bocb was built without training (libtorch), which measures them; run `bocb patterns {experiment}` once with a default build"
    )]
    NotMeasured { experiment: String },
    #[error(
        "cannot read the weights {path} that experiment `{experiment}` started from: {source}"
    )]
    Init {
        experiment: String,
        path: String,
        source: SafetensorsError,
    },
    #[error(transparent)]
    Spec(#[from] StoredSpecError),
}

/// The patterns of every pair whose best config has saved weights.
pub fn best_pair_patterns(
    store: &Store,
    experiment: &str,
    measure: Option<MeasurePatterns>,
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
        let layers = weights_patterns(&path, measure).and_then(|layers| {
            layers.ok_or_else(|| PatternsError::NotMeasured {
                experiment: experiment.to_string(),
            })
        })?;
        let start = super::finetune::starting_weights(store, experiment, &best.backbone)?;
        let fresh = match &start {
            Some(init) => {
                let shapes = safetensors_shapes(init).map_err(|source| PatternsError::Init {
                    experiment: experiment.to_string(),
                    path: init.display().to_string(),
                    source,
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

/// The layer patterns the runner kept beside the weights at `weights`;
/// where it kept none (weights of an older bocb), measured from them now
/// by `measure`, or `None` without one.
fn weights_patterns(
    weights: &Path,
    measure: Option<MeasurePatterns>,
) -> Result<Option<Vec<LayerPattern>>, PatternsError> {
    match (kept_patterns(weights)?, measure) {
        (Some(layers), _) => Ok(Some(layers)),
        (None, Some(measure)) => measure(weights).map(Some).map_err(|e| PatternsError::Read {
            path: weights.display().to_string(),
            message: e.to_string(),
        }),
        (None, None) => Ok(None),
    }
}

/// The patterns in `TRIAL.patterns.json` beside the weights, if there.
fn kept_patterns(weights: &Path) -> Result<Option<Vec<LayerPattern>>, PatternsError> {
    let path = patterns_path(weights);
    let read_error = |message: String| PatternsError::Read {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| read_error(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(e.to_string())),
    }
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

/// The patterns of every pair with saved weights, or `None` when the
/// experiment kept none (not trained with `save_weights: true`, or imported).
pub fn saved_patterns(
    store: &Store,
    experiment: &str,
    measure: Option<MeasurePatterns>,
) -> Result<Option<Vec<PairPatterns>>, PatternsError> {
    match best_pair_patterns(store, experiment, measure) {
        Ok(pairs) => Ok(Some(pairs)),
        Err(PatternsError::NoWeights { .. }) => Ok(None),
        Err(e @ PatternsError::NotMeasured { .. }) => {
            tracing::warn!("{e}; the report leaves the patterns out");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use bocb_store::{ExperimentRecord, TrialRecord, TrialStatus};

    use super::*;

    /// The patterns the runner kept beside a pair's best weights are read;
    /// where it kept none, only a caller with a measure has them.
    #[test]
    fn a_pairs_patterns_are_those_kept_beside_its_weights() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        store
            .put_experiment(&ExperimentRecord {
                name: "e".into(),
                spec_yaml: "name: e\ndataset: { format: cifar100-bin, path: . }\nbackbones: [resnet18]\noptimizers: [sgd_m]\nepochs: 1\nsave_weights: true\n".into(),
                created_unix_s: 0,
                updated_unix_s: 0,
                base_dir: None,
            })
            .unwrap();
        store
            .put_trial(&TrialRecord {
                status: TrialStatus::Done,
                final_accuracy: Some(50.0),
                params: [("lr".to_string(), 0.1), ("weight_decay".to_string(), 5e-4)].into(),
                ..TrialRecord::new("e", "t1", "resnet18", "sgd_m")
            })
            .unwrap();
        let weights = store.weights_path("e", "t1");
        std::fs::create_dir_all(weights.parent().unwrap()).unwrap();
        // Not weights a build with training could measure.
        std::fs::write(&weights, b"not safetensors").unwrap();
        let kept = vec![LayerPattern {
            name: "fc.weight".into(),
            shape: vec![10, 512],
            alpha: Some(3.5),
            alpha_xmin: Some(0.1),
            alpha_ks: Some(0.05),
            entropy: 4.2,
            l2_norm: 7.0,
            top_k_energy: Some(0.6),
        }];
        std::fs::write(patterns_path(&weights), serde_json::to_vec(&kept).unwrap()).unwrap();
        let pairs = best_pair_patterns(&store, "e", None).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(
            (pairs[0].trial_id.as_str(), &pairs[0].layers),
            ("t1", &kept)
        );

        std::fs::remove_file(patterns_path(&weights)).unwrap();
        let err = best_pair_patterns(&store, "e", None).unwrap_err();
        assert!(matches!(err, PatternsError::NotMeasured { .. }), "{err}");
        // The report goes on without them.
        assert!(saved_patterns(&store, "e", None).unwrap().is_none());
        let unreadable: MeasurePatterns = |_| Err("not safetensors".into());
        let err = best_pair_patterns(&store, "e", Some(unreadable)).unwrap_err();
        assert!(matches!(err, PatternsError::Read { .. }), "{err}");
    }
}

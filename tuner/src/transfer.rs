//! `init: { from_experiment: NAME }`: fine-tuning from bocb's own runs.
//! Each backbone of the experiment starts from the saved weights of NAME's
//! best trial of that backbone, once per pre-training optimizer: the
//! backbone `resnet18_cifar@micro` pre-trained with `sgd_m` trains here as
//! `resnet18_cifar@micro~sgd_m`, a backbone of its own in the store, the
//! search and the report, so the pre-training optimizer is part of every
//! trial's identity.

use std::path::PathBuf;

use bocb_store::Store;

use crate::executor::RunError;
use crate::experiment::Experiment;

pub use bocb_spec::{split_pretrained as split, FROM_EXPERIMENT, PRETRAINED_WITH};

/// The architecture a backbone of the experiment builds: its name without
/// the pre-training optimizer.
pub fn base(backbone: &str) -> &str {
    split(backbone).0
}

/// One pre-trained starting point: the source's best trial of a backbone
/// with one optimizer, and where its weights are.
#[derive(Debug, Clone, PartialEq)]
pub struct Pretrained {
    pub backbone: String,
    pub optimizer: String,
    /// Its mean final accuracy over the best config's seeds (percent).
    pub accuracy: f64,
    pub weights: PathBuf,
}

/// Every starting point `source` holds for `backbone`, by optimizer: its
/// pairs' best configs with saved weights (the first seed that kept them).
pub fn pretrained(
    store: &Store,
    source: &str,
    backbone: &str,
) -> Result<Vec<Pretrained>, RunError> {
    let best = store.best_per_pair(source)?;
    Ok(best
        .iter()
        .filter(|b| b.backbone == backbone)
        .filter_map(|b| {
            let weights = b
                .trial_ids
                .iter()
                .map(|id| store.weights_path(source, id))
                .find(|path| path.is_file())?;
            Some(Pretrained {
                backbone: b.backbone.clone(),
                optimizer: b.optimizer.clone(),
                accuracy: b.mean_accuracy,
                weights,
            })
        })
        .collect())
}

/// "the store holds no experiment `NAME` (it holds: ...)", for an error
/// about an earlier experiment the store lacks.
pub(crate) fn no_such_experiment(store: &Store, name: &str) -> Result<String, RunError> {
    let known: Vec<String> = store.experiments()?.into_iter().map(|e| e.name).collect();
    Ok(format!(
        "the store holds no experiment `{name}` (it holds: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    ))
}

impl Experiment {
    /// The experiment with each backbone replaced by one per pre-training
    /// optimizer of its `from_experiment` (`backbone~optimizer`), each
    /// starting from that pair's best saved weights; itself when it
    /// fine-tunes from no experiment or is resolved already. Errors name
    /// the missing experiment or backbone and the fix.
    pub fn with_pretrained(&self, store: &Store) -> Result<Experiment, RunError> {
        let Some(source) = self.spec.transfer_source() else {
            return Ok(self.clone());
        };
        if self.backbones.iter().any(|b| split(b).1.is_some()) {
            return Ok(self.clone());
        }
        let transfer = |message: String| RunError::Transfer(message);
        if store.experiment(&source)?.is_none() {
            return Err(transfer(format!(
                "`init: {{ {FROM_EXPERIMENT}: {source} }}`: {}; run the pre-training experiment first, with `save_weights: true`",
                no_such_experiment(store, &source)?
            )));
        }
        let mut resolved = self.clone();
        resolved.backbones.clear();
        for backbone in &self.backbones {
            let found = pretrained(store, &source, backbone)?;
            if found.is_empty() {
                return Err(transfer(format!(
                    "`init: {{ {FROM_EXPERIMENT}: {source} }}`: experiment `{source}` has no saved weights for `{backbone}` (no done trial of it kept its weights); run `{source}` with `save_weights: true` and `{backbone}` among its backbones, or drop `{backbone}` here"
                )));
            }
            let recipe = self.recipe(backbone).clone();
            for start in found {
                let name = format!("{backbone}{PRETRAINED_WITH}{}", start.optimizer);
                resolved.init_weights.insert(name.clone(), start.weights);
                resolved.recipes.insert(name.clone(), recipe.clone());
                resolved.backbones.push(name);
            }
        }
        Ok(resolved)
    }
}

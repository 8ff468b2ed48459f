//! A backbone's starting weights from a file, and the parameters a trial
//! keeps frozen.
//!
//! Files use the reference implementations' own state-dict names, which are
//! bocb's variable names (timm's, torchvision's, the architecture
//! repositories'), so a checkpoint a user holds loads as it is. What cannot
//! carry over is adapted as timm's fine-tuning does: a classifier for another
//! class count starts fresh, absolute position embeddings for another input
//! size are resampled (bicubic over the grid, prefix tokens kept); anything
//! else that does not fit is refused, every name listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};
use thiserror::Error;

use crate::models::{BackboneRegistry, ModelError};

/// Counters PyTorch keeps beside batch-norm statistics; bocb has none and
/// they carry no weights.
const IGNORED_SUFFIX: &str = ".num_batches_tracked";

/// The freeze entry that names each backbone's embedding layer.
pub const EMBEDDING: &str = "embedding";

#[derive(Debug, Error)]
pub enum PretrainedError {
    #[error("cannot read pretrained weights {path}: {message}; give a safetensors file (scripts/pth_to_safetensors.py converts a PyTorch .pth)")]
    Read { path: String, message: String },
    #[error("pretrained weights {path} do not fit `{backbone}` (names and shapes are the reference implementation's state dict):\n{problems}")]
    Mismatch {
        path: String,
        backbone: String,
        problems: String,
    },
    #[error("`freeze`: {0}")]
    Freeze(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// What loading did beyond copying.
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    /// Variables left at their fresh initialisation: the classifier, when
    /// the file's is for another class count or absent.
    pub fresh: Vec<String>,
    /// Position embeddings resampled to the model's grid.
    pub resampled: Vec<String>,
}

/// The tensors of a safetensors file by name (PyTorch's batch counters left
/// out).
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>, PretrainedError> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| PretrainedError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with(IGNORED_SUFFIX))
        .collect())
}

/// Variables of `backbone` whose shape depends on the class count: its
/// classifier, found by building it once more for one class more.
pub(crate) fn classifier(
    registry: &BackboneRegistry,
    backbone: &str,
    ours: &BTreeMap<String, Tensor>,
    classes: i64,
) -> Result<BTreeSet<String>, PretrainedError> {
    let vs = nn::VarStore::new(Device::Cpu);
    registry.build(backbone, &vs.root(), classes + 1, 0)?;
    Ok(vs
        .variables()
        .into_iter()
        .filter(|(name, t)| ours.get(name).is_none_or(|o| o.size() != t.size()))
        .map(|(name, _)| name)
        .collect())
}

/// `weights` (from `path`) into `vs`, which holds `backbone` built for
/// `classes`; the error lists every missing, unexpected and mis-shaped tensor.
pub fn load(
    registry: &BackboneRegistry,
    backbone: &str,
    classes: i64,
    vs: &nn::VarStore,
    weights: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<Loaded, PretrainedError> {
    let ours: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let head = classifier(registry, backbone, &ours, classes)?;
    let mut loaded = Loaded::default();
    let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
    let mut copies = Vec::new();
    for (name, var) in &ours {
        match weights.get(name) {
            None if head.contains(name) => loaded.fresh.push(name.clone()),
            None => missing.push(format!("  missing: {name} {:?}", var.size())),
            Some(theirs) if theirs.size() == var.size() => {
                copies.push((var, theirs.shallow_clone()))
            }
            Some(_) if head.contains(name) => loaded.fresh.push(name.clone()),
            Some(theirs) => match resample_position_embedding(name, theirs, &var.size())? {
                Some(resampled) => {
                    loaded.resampled.push(name.clone());
                    copies.push((var, resampled));
                }
                None => misshaped.push(format!(
                    "  mis-shaped: {name} is {:?} in the file, {:?} in bocb",
                    theirs.size(),
                    var.size()
                )),
            },
        }
    }
    let unexpected = weights
        .iter()
        .filter(|(name, _)| !ours.contains_key(*name))
        .map(|(name, t)| format!("  unexpected: {name} {:?}", t.size()));
    let problems: Vec<String> = missing
        .into_iter()
        .chain(misshaped)
        .chain(unexpected)
        .collect();
    if !problems.is_empty() {
        return Err(PretrainedError::Mismatch {
            path: path.display().to_string(),
            backbone: backbone.to_string(),
            problems: problems.join("\n"),
        });
    }
    tch::no_grad(|| {
        for (var, value) in copies {
            let mut var = var.shallow_clone();
            var.f_copy_(&value)?;
        }
        Ok::<_, tch::TchError>(())
    })?;
    Ok(loaded)
}

/// Checks before any trial that `path` loads into `backbone` (built on the
/// CPU; the class count only decides the classifier, which may differ).
pub fn check(
    registry: &BackboneRegistry,
    backbone: &str,
    path: &Path,
) -> Result<Loaded, PretrainedError> {
    let weights = read(path)?;
    let vs = nn::VarStore::new(Device::Cpu);
    let classes = 10;
    registry.build(backbone, &vs.root(), classes, 0)?;
    load(registry, backbone, classes, &vs, &weights, path)
}

/// timm's `resample_abs_pos_embed` for a `[1, tokens, dim]` position
/// embedding whose grid differs from the model's: the prefix tokens (class,
/// distillation) kept, the grid resampled bicubically (antialiased) to the
/// model's. `None` when `name` is no absolute position embedding or the
/// shapes admit no such reading.
fn resample_position_embedding(
    name: &str,
    theirs: &Tensor,
    want: &[i64],
) -> Result<Option<Tensor>, tch::TchError> {
    let have = theirs.size();
    if !name.ends_with("pos_embed") || have.len() != 3 || want.len() != 3 {
        return Ok(None);
    }
    if have[0] != 1 || want[0] != 1 || have[2] != want[2] {
        return Ok(None);
    }
    let side = |tokens: i64| {
        let s = (tokens as f64).sqrt().round() as i64;
        (s > 0 && s * s == tokens).then_some(s)
    };
    let Some((prefix, old, new)) = (0..=2.min(have[1]).min(want[1]))
        .find_map(|p| Some((p, side(have[1] - p)?, side(want[1] - p)?)))
    else {
        return Ok(None);
    };
    let dim = want[2];
    let grid = theirs
        .f_narrow(1, prefix, old * old)?
        .f_to_kind(Kind::Float)?
        .f_reshape([1, old, old, dim])?
        .f_permute([0, 3, 1, 2])?
        .f_internal_upsample_bicubic2d_aa([new, new], false, None, None)?
        .f_permute([0, 2, 3, 1])?
        .f_reshape([1, new * new, dim])?;
    let prefix = theirs.f_narrow(1, 0, prefix)?.f_to_kind(Kind::Float)?;
    Ok(Some(Tensor::f_cat(&[prefix, grid], 1)?))
}

/// Whether `name` matches `pattern`: `*` stands for any run of characters,
/// and a pattern without one also names the module it spells
/// (`stages.0` is `stages.0.*`).
fn matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name == pattern
            || name
                .strip_prefix(pattern)
                .is_some_and(|rest| rest.starts_with('.'));
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The trainable variables of `backbone` (in `vs`) that `patterns` freeze:
/// `embedding` for its embedding layer, or name patterns. A pattern that
/// matches nothing is an error naming what there is.
pub fn frozen(
    registry: &BackboneRegistry,
    backbone: &str,
    vs: &nn::VarStore,
    patterns: &[String],
) -> Result<BTreeSet<String>, PretrainedError> {
    let trainable: Vec<String> = {
        let mut names: Vec<String> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names
    };
    let mut frozen = BTreeSet::new();
    for pattern in patterns {
        let globs: Vec<String> = if pattern == EMBEDDING {
            let prefixes = registry.embedding(backbone).ok_or_else(|| {
                PretrainedError::Freeze(format!(
                    "`{backbone}` has no known embedding layer; freeze it by name patterns instead (e.g. \"{}\")",
                    trainable.first().map_or("stem.*", String::as_str)
                ))
            })?;
            prefixes.iter().map(|p| format!("{p}*")).collect()
        } else {
            vec![pattern.clone()]
        };
        let hit: Vec<&String> = trainable
            .iter()
            .filter(|name| globs.iter().any(|g| matches(g, name)))
            .collect();
        if hit.is_empty() {
            let some: Vec<&str> = trainable.iter().take(6).map(String::as_str).collect();
            return Err(PretrainedError::Freeze(format!(
                "`{pattern}` matches no parameter of `{backbone}`; its parameters are named like {}, ... (`*` matches any characters)",
                some.join(", ")
            )));
        }
        frozen.extend(hit.into_iter().cloned());
    }
    Ok(frozen)
}

/// Stops gradients to `names` in `vs`: the optimizer never sees them.
pub fn freeze(vs: &nn::VarStore, names: &BTreeSet<String>) {
    for (name, tensor) in vs.variables() {
        if names.contains(&name) {
            let _ = tensor.set_requires_grad(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_and_modules() {
        assert!(matches("stages.0.*", "stages.0.blocks.0.weight"));
        assert!(matches("stages.0", "stages.0.blocks.0.weight"));
        assert!(!matches("stages.0", "stages.01.weight"));
        assert!(matches("*.norm.weight", "stages.1.norm.weight"));
        assert!(matches("head.*", "head.fc.bias"));
        assert!(!matches("head.*", "stem.0.weight"));
        assert!(matches("a*b*c", "a__b__c"));
        assert!(!matches("a*b*c", "a__c"));
    }

    #[test]
    fn embedding_freezes_the_patch_embedding_and_bad_patterns_are_explained() {
        let registry = BackboneRegistry::builtin();
        let vs = nn::VarStore::new(Device::Cpu);
        registry
            .build("vit_tiny_cifar@micro", &vs.root(), 3, 0)
            .unwrap();
        let names = frozen(
            &registry,
            "vit_tiny_cifar@micro",
            &vs,
            &["embedding".into()],
        )
        .unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["patch_embed.proj.bias", "patch_embed.proj.weight"]
        );
        let err = frozen(
            &registry,
            "vit_tiny_cifar@micro",
            &vs,
            &["stages.0.*".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("matches no parameter") && err.contains("blocks."),
            "{err}"
        );
    }

    #[test]
    fn every_builtin_backbone_has_an_embedding_that_matches() {
        let registry = BackboneRegistry::builtin();
        for name in registry.names() {
            let micro = format!("{name}@micro");
            let vs = nn::VarStore::new(Device::Cpu);
            registry.build(&micro, &vs.root(), 3, 0).unwrap();
            let names = frozen(&registry, &micro, &vs, &["embedding".into()]).unwrap();
            let all = vs.trainable_variables().len();
            assert!(names.len() * 4 < all, "{micro}: {names:?}");
        }
    }
}

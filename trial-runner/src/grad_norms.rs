//! Per-layer-group gradient norms (the fine-tuning paper's diagnostic):
//! the embedding, each stage or block, the head.

use std::collections::{BTreeMap, BTreeSet};

use bocb_spec::{GradNormRow, GradNorms, EMBEDDING_GROUP};
use tch::{nn, Device, Kind, Tensor};

use crate::models::BackboneRegistry;
use crate::pretrained::{self, PretrainedError};

/// Steps recorded from the start of training; after them, each epoch's
/// last step only. Reading the norms syncs the device, so only a few.
pub const FIRST_STEPS: u64 = 10;

/// The group of the classifier's variables.
pub const HEAD_GROUP: &str = "head";

/// A model's trainable parameters by layer group.
pub struct GradGroups {
    names: Vec<String>,
    params: Vec<Vec<Tensor>>,
}

/// The group of a variable that is neither embedding nor head: its
/// module's first name part, with the index that follows it
/// unless it has a number of its own (`layer1`, `blocks.3`, `stages.0`,
/// `features.4`, `norm`).
fn group_of(name: &str) -> String {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or(name);
    match parts.next() {
        // `stages.0`, `blocks.3`; `layer1` names its stage already.
        Some(index)
            if index.parse::<u32>().is_ok() && !first.chars().any(|c| c.is_ascii_digit()) =>
        {
            format!("{first}.{index}")
        }
        _ => first.to_string(),
    }
}

/// Natural order: `blocks.2` before `blocks.10`.
fn order_key(group: &str) -> (String, u32) {
    match group.rsplit_once('.') {
        Some((stem, index)) => (stem.to_string(), index.parse().unwrap_or(0)),
        None => (group.to_string(), 0),
    }
}

impl GradGroups {
    /// The groups of `backbone`'s trainable variables in `vs` (built for
    /// `classes`): `embedding` by the registry's table, `head` by the
    /// variables whose shape follows the class count, the rest by module.
    pub fn new(
        registry: &BackboneRegistry,
        backbone: &str,
        vs: &nn::VarStore,
        classes: i64,
    ) -> Result<Self, PretrainedError> {
        let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let head: BTreeSet<String> =
            pretrained::classifier(registry, backbone, &variables, classes)?;
        let embedding = registry.embedding(backbone).unwrap_or_default();
        let mut groups: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
        for (name, tensor) in variables.iter().filter(|(_, t)| t.requires_grad()) {
            let group = if embedding.iter().any(|p| name.starts_with(p)) {
                EMBEDDING_GROUP.to_string()
            } else if head.contains(name) {
                HEAD_GROUP.to_string()
            } else {
                group_of(name)
            };
            groups
                .entry(group)
                .or_default()
                .push(tensor.shallow_clone());
        }
        let mut ordered: Vec<(String, Vec<Tensor>)> = groups.into_iter().collect();
        ordered.sort_by_key(|(name, _)| match name.as_str() {
            EMBEDDING_GROUP => (0, (String::new(), 0)),
            HEAD_GROUP => (2, (String::new(), 0)),
            other => (1, order_key(other)),
        });
        let (names, params) = ordered.into_iter().unzip();
        Ok(GradGroups { names, params })
    }

    /// Each group's gradient L2 norm now (after backward), in one read from
    /// the device; a parameter without a gradient counts as zero.
    pub fn norms(&self) -> Result<Vec<f64>, tch::TchError> {
        let squares: Vec<Tensor> = self
            .params
            .iter()
            .map(|group| {
                let parts: Vec<Tensor> = group
                    .iter()
                    .map(Tensor::grad)
                    .filter(Tensor::defined)
                    .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
                    .collect();
                match parts.is_empty() {
                    true => Tensor::from(0f32),
                    false => Tensor::stack(&parts, 0).sum(Kind::Float),
                }
            })
            .collect();
        let squares: Vec<Tensor> = squares.iter().map(|s| s.to_device(Device::Cpu)).collect();
        Vec::<f64>::try_from(Tensor::f_stack(&squares, 0)?.sqrt().to_kind(Kind::Double))
    }

    /// An empty record with these groups' names.
    pub fn record(&self) -> GradNorms {
        GradNorms {
            groups: self.names.clone(),
            ..GradNorms::default()
        }
    }
}

/// Where a step's norms go: the first steps, and each epoch's last step.
pub fn keep(record: &mut GradNorms, step: u64, epoch: u32, last_of_epoch: bool, norms: Vec<f64>) {
    let row = GradNormRow { step, epoch, norms };
    if last_of_epoch {
        record.epochs.push(row.clone());
    }
    if step < FIRST_STEPS {
        record.steps.push(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_take_the_module_and_its_index() {
        assert_eq!(group_of("layer1.0.conv1.weight"), "layer1");
        assert_eq!(group_of("blocks.3.attn.qkv.weight"), "blocks.3");
        assert_eq!(group_of("cls_token"), "cls_token");
        let mut groups = vec!["blocks.10", "blocks.2", "norm"];
        groups.sort_by_key(|g| order_key(g));
        assert_eq!(groups, ["blocks.2", "blocks.10", "norm"]);
    }
}

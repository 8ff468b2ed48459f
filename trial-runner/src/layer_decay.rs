//! Layer-wise learning-rate decay (timm's `param_groups_layer_decay` with
//! its models' `group_matcher(coarse=False)`): each parameter gets a layer
//! id, layer `i` of `n` trains at `lr * decay^(n - 1 - i)`, so the head keeps
//! the scheduled lr and the embedding gets the least.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// How a family's parameter names map to layers, as its timm
/// `group_matcher(coarse=False)` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerRule {
    /// ViT/DeiT: `cls_token`, `reg_token`, `pos_embed`, `patch_embed`,
    /// `norm_pre` are layer 0, `blocks.N` layer N + 1, the final `norm`
    /// joins the last block (timm's `MATCH_PREV_GROUP`), the rest (the
    /// head) is the last layer.
    Vit,
    /// ResNet: `conv1`, `bn1` are layer 0, each block `layerS.B` its own
    /// layer in order, the rest (`fc`) the last.
    ResNet,
    /// ConvNeXt: `stem` is layer 0, `stages.S.blocks.B` one layer each in
    /// order, a stage's `downsample` joins its first block, `norm_pre`
    /// joins the last block, the rest (`head`) the last layer.
    ConvNext,
}

#[derive(Debug, Error, PartialEq)]
pub enum LayerDecayError {
    #[error("the recipe's `layer_decay` needs the layers of `{backbone}`, which bocb knows only for ViT/DeiT, ResNet and ConvNeXt (timm's group_matcher); set `layer_decay: null` for it")]
    NoLayers { backbone: String },
}

/// Where a parameter falls, before ids are numbered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Stem,
    Block(Vec<u32>),
    /// With the block before it.
    Previous,
    Rest,
}

fn index(part: Option<&str>) -> Option<u32> {
    part?.parse().ok()
}

impl LayerRule {
    fn key(self, name: &str) -> Key {
        let parts: Vec<&str> = name.split('.').collect();
        let first = parts[0];
        match self {
            LayerRule::Vit => match first {
                "cls_token" | "reg_token" | "pos_embed" | "patch_embed" | "norm_pre" => Key::Stem,
                "blocks" => index(parts.get(1).copied()).map_or(Key::Rest, |b| Key::Block(vec![b])),
                "norm" => Key::Previous,
                _ => Key::Rest,
            },
            LayerRule::ResNet => match first {
                "conv1" | "bn1" => Key::Stem,
                _ => match (
                    first.strip_prefix("layer").and_then(|s| s.parse().ok()),
                    index(parts.get(1).copied()),
                ) {
                    (Some(stage), Some(block)) => Key::Block(vec![stage, block]),
                    _ => Key::Rest,
                },
            },
            LayerRule::ConvNext => match first {
                "stem" => Key::Stem,
                "norm_pre" => Key::Previous,
                "stages" => match (index(parts.get(1).copied()), parts.get(2).copied()) {
                    (Some(stage), Some("downsample")) => Key::Block(vec![stage, 0]),
                    (Some(stage), Some("blocks")) => index(parts.get(3).copied())
                        .map_or(Key::Rest, |block| Key::Block(vec![stage, block])),
                    _ => Key::Rest,
                },
                _ => Key::Rest,
            },
        }
    }

    /// Each name's layer id and the number of layers (the largest id plus
    /// one, as timm counts): the stem 0, the blocks numbered in order from
    /// 1, the rest one past the last block.
    pub fn layer_ids<'a>(
        self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeMap<String, usize>, usize) {
        let keys: BTreeMap<String, Key> = names
            .into_iter()
            .map(|name| (name.to_string(), self.key(name)))
            .collect();
        let blocks: BTreeSet<&Vec<u32>> = keys
            .values()
            .filter_map(|k| match k {
                Key::Block(ordinal) => Some(ordinal),
                _ => None,
            })
            .collect();
        let block_ids: BTreeMap<&Vec<u32>, usize> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (*b, i + 1))
            .collect();
        let last_block = blocks.len();
        let rest = last_block + 1;
        let ids = keys
            .iter()
            .map(|(name, key)| {
                let id = match key {
                    Key::Stem => 0,
                    Key::Block(ordinal) => block_ids[ordinal],
                    Key::Previous => last_block,
                    Key::Rest => rest,
                };
                (name.clone(), id)
            })
            .collect::<BTreeMap<String, usize>>();
        let layers = ids.values().max().map_or(0, |&id| id + 1);
        (ids, layers)
    }
}

/// Each name's lr scale: `decay^(layers - 1 - id)` (timm's `layer_scales`).
pub fn lr_scales(
    ids: &BTreeMap<String, usize>,
    layers: usize,
    decay: f64,
) -> BTreeMap<String, f64> {
    ids.iter()
        .map(|(name, &id)| (name.clone(), decay.powf((layers - 1 - id) as f64)))
        .collect()
}

//! Layer-wise learning-rate decay (timm's `param_groups_layer_decay` with
//! its models' `group_matcher(coarse=False)`): each parameter gets a layer
//! id, layer `i` of `n` trains at `lr * decay^(n - 1 - i)`, so the head keeps
//! the scheduled lr and the embedding gets the least.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// How a family's parameter names map to layers, as its timm
/// `group_matcher(coarse=False)` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerRule {
    /// ViT/DeiT: `cls_token`, `reg_token`, `pos_embed`, `patch_embed`,
    /// `norm_pre` are layer 0, `blocks.N` layer N + 1, the final `norm`
    /// joins the last block (timm's `MATCH_PREV_GROUP`), the rest (the
    /// head) is the last layer.
    Vit,
    /// MLP-Mixer: as ViT with `stem` as layer 0.
    Mixer,
    /// ResNet: `conv1`, `bn1` are layer 0, each block `layerS.B` its own
    /// layer in order, the rest (`fc`) the last.
    ResNet,
    /// ConvNeXt: `stem` is layer 0, `stages.S.blocks.B` one layer each in
    /// order, a stage's `downsample` joins its first block, `norm_pre`
    /// joins the last block, the rest (`head`) the last layer.
    ConvNext,
    /// Swin: `patch_embed` is layer 0, `layers.S.blocks.B` one layer each
    /// in order, a stage's `downsample` joins its first block, the final
    /// `norm` the last block, the rest (`head`) the last layer.
    Swin,
    /// EfficientNet: `conv_stem`, `bn1` are layer 0, `blocks.S.B` one
    /// layer each in order, `conv_head` and `bn2` join the last block, the
    /// rest (`classifier`) the last layer.
    EfficientNet,
    /// timm's ByobNet (RepVGG): `stem` is layer 0, `stages.S.B` one layer
    /// each in order, `final_conv` joins the last block, the rest (`head`)
    /// the last layer.
    ByobNet,
    /// DenseNet: the stem (`features.conv0`, `norm0`; timm's pattern takes
    /// conv, norm and pool 0 to 2) is layer 0,
    /// `features.denseblockD.denselayerL` one layer each in order, a
    /// `transitionD` joins the last layer of dense block D, the rest
    /// (`features.norm5`, `classifier`) the last layer.
    DenseNet,
}

#[derive(Debug, Error, PartialEq)]
pub enum LayerDecayError {
    #[error("the recipe's `layer_decay` needs the layers of `{backbone}`, which bocb knows (from timm's group_matcher) only for {known}; set `layer_decay: null` for it")]
    NoLayers { backbone: String, known: String },
}

/// Where a parameter falls, before ids are numbered: timm's sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Stem,
    /// A block by its indices.
    Block(Vec<u32>),
    Rest,
}

/// A block's last index that sorts after every other at its place and
/// joins the block sorted before it (timm's `MATCH_PREV_GROUP`).
const PREVIOUS: u32 = u32::MAX;

fn index(part: Option<&str>) -> Option<u32> {
    part?.parse().ok()
}

/// `part`'s number after `prefix` (`denseblock3` -> 3).
fn numbered(part: Option<&str>, prefix: &str) -> Option<u32> {
    part?.strip_prefix(prefix)?.parse().ok()
}

/// A block of two indices, or the rest where either is missing.
fn block2(first: Option<u32>, second: Option<u32>) -> Key {
    match (first, second) {
        (Some(a), Some(b)) => Key::Block(vec![a, b]),
        _ => Key::Rest,
    }
}

impl LayerRule {
    fn key(self, name: &str) -> Key {
        let parts: Vec<&str> = name.split('.').collect();
        let part = |i: usize| parts.get(i).copied();
        let first = parts[0];
        match self {
            LayerRule::Vit | LayerRule::Mixer => {
                let stem: &[&str] = match self {
                    LayerRule::Vit => &[
                        "cls_token",
                        "reg_token",
                        "pos_embed",
                        "patch_embed",
                        "norm_pre",
                    ],
                    _ => &["stem"],
                };
                match first {
                    _ if stem.contains(&first) => Key::Stem,
                    "blocks" => index(part(1)).map_or(Key::Rest, |b| Key::Block(vec![b])),
                    "norm" => Key::Block(vec![PREVIOUS]),
                    _ => Key::Rest,
                }
            }
            LayerRule::ResNet => match first {
                "conv1" | "bn1" => Key::Stem,
                _ => block2(numbered(Some(first), "layer"), index(part(1))),
            },
            LayerRule::ConvNext => match first {
                "stem" => Key::Stem,
                "norm_pre" => Key::Block(vec![PREVIOUS]),
                "stages" => match (index(part(1)), part(2)) {
                    (Some(stage), Some("downsample")) => Key::Block(vec![stage, 0]),
                    (stage, Some("blocks")) => block2(stage, index(part(3))),
                    _ => Key::Rest,
                },
                _ => Key::Rest,
            },
            LayerRule::Swin => match first {
                "patch_embed" => Key::Stem,
                "norm" => Key::Block(vec![PREVIOUS]),
                "layers" => match (index(part(1)), part(2)) {
                    (Some(stage), Some("downsample")) => Key::Block(vec![stage, 0]),
                    (stage, Some(_)) => block2(stage, index(part(3))),
                    _ => Key::Rest,
                },
                _ => Key::Rest,
            },
            LayerRule::EfficientNet => match first {
                "conv_stem" | "bn1" => Key::Stem,
                "blocks" => block2(index(part(1)), index(part(2))),
                "conv_head" | "bn2" => Key::Block(vec![PREVIOUS]),
                _ => Key::Rest,
            },
            LayerRule::ByobNet => match first {
                "stem" => Key::Stem,
                "stages" => block2(index(part(1)), index(part(2))),
                "final_conv" => Key::Block(vec![PREVIOUS]),
                _ => Key::Rest,
            },
            LayerRule::DenseNet if first == "features" => {
                let feature = part(1);
                if ["conv", "norm", "pool"]
                    .iter()
                    .any(|kind| numbered(feature, kind).is_some_and(|n| n <= 2))
                {
                    Key::Stem
                } else if let Some(transition) = numbered(feature, "transition") {
                    Key::Block(vec![transition, PREVIOUS])
                } else {
                    block2(
                        numbered(feature, "denseblock"),
                        numbered(part(2), "denselayer"),
                    )
                }
            }
            LayerRule::DenseNet => Key::Rest,
        }
    }

    /// Each name's layer id and the number of layers (the largest id plus
    /// one, as timm counts): ids rise by one from 0 along the sorted keys
    /// (the stem, the blocks in order, the rest), a key ending in
    /// [`PREVIOUS`] keeping the id before it.
    pub fn layer_ids<'a>(
        self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeMap<String, usize>, usize) {
        let keys: BTreeMap<String, Key> = names
            .into_iter()
            .map(|name| (name.to_string(), self.key(name)))
            .collect();
        let mut key_ids: BTreeMap<&Key, usize> = BTreeMap::new();
        let mut next = 0;
        for key in keys.values().collect::<BTreeSet<_>>() {
            let joins = matches!(key, Key::Block(indices) if indices.last() == Some(&PREVIOUS));
            if joins && next > 0 {
                key_ids.insert(key, next - 1);
            } else {
                key_ids.insert(key, next);
                next += 1;
            }
        }
        let ids = keys
            .iter()
            .map(|(name, key)| (name.clone(), key_ids[key]))
            .collect();
        (ids, next)
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

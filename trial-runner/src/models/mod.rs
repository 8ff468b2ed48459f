//! Backbones by registry name, one family per file (as timm's registry).
//!
//! A name may carry a preset: `resnet18_cifar` is the full architecture,
//! `resnet18_cifar@micro` the same blocks narrower and shallower, small enough
//! to train in seconds on a CPU for tests and demos.

mod alexnet;
mod convnext;
mod densenet;
mod efficientnet;
mod layers;
mod metaformer;
mod mlp_mixer;
mod mobilenet;
mod moganet;
pub mod repvgg;
mod resnet;
mod swin;
pub mod torchscript;
mod transnext;
pub mod unireplknet;
mod vgg;
mod vit;

use std::collections::BTreeMap;
use std::fmt;

pub use layers::{with_drop_path_rate, with_head_drop_rate};

use serde::Serialize;

use crate::layer_decay::LayerRule;
use tch::nn::{self, ModuleT};
use thiserror::Error;

/// Size variant of an architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Full,
    Micro,
}

/// The paper's backbone families (Table A1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    PrimaryCnn,
    ClassicalCnn,
    ModernDnn,
    MetaFormer,
    /// A user's own module (`torchscript:PATH`).
    User,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::PrimaryCnn => "primary CNN",
            Family::ClassicalCnn => "classical CNN",
            Family::ModernDnn => "modern DNN",
            Family::MetaFormer => "MetaFormer",
            Family::User => "user TorchScript",
        })
    }
}

/// A built network plus what the optimizer needs to know about it.
pub struct Model {
    pub net: Box<dyn ModuleT + Send>,
    /// Variable-name suffixes exempt from weight decay beyond biases and
    /// norm parameters (timm's `no_weight_decay()`, e.g. position embeddings).
    pub no_weight_decay: Vec<&'static str>,
}

impl BackboneEntry {
    /// Input side for `preset`.
    pub fn input_size(&self, preset: Preset) -> i64 {
        match preset {
            Preset::Full => self.input_size,
            Preset::Micro => self.micro_input_size,
        }
    }
}

/// Builds a model under a var-store path for `classes` outputs.
pub type BackboneCtor = fn(&nn::Path, i64, Preset) -> Model;

/// A registered architecture.
#[derive(Clone)]
pub struct BackboneEntry {
    pub family: Family,
    /// Side of the square input the full architecture is defined for
    /// (Table A1); CIFAR images are up-sampled to it (bicubic, App. A.1).
    pub input_size: i64,
    /// Input side of the `@micro` preset (smaller, so it trains in seconds).
    pub micro_input_size: i64,
    /// The training recipe the paper used for it (Table A1).
    pub default_recipe: &'static str,
    /// timm's model of the same architecture (its ImageNet layout; bocb's
    /// `_cifar` variants differ in the stem), for `bocb export --as
    /// timm-args`; `None` where timm has none.
    pub timm: Option<&'static str>,
    pub ctor: BackboneCtor,
}

#[derive(Debug, Error, PartialEq)]
pub enum ModelError {
    #[error("unknown backbone `{name}`; valid: {valid} (or `torchscript:PATH` for your own TorchScript module)")]
    UnknownBackbone { name: String, valid: String },
    #[error("unknown preset `@{preset}` in backbone `{name}`; valid presets: @micro (or none for full size)")]
    UnknownPreset { name: String, preset: String },
    #[error("TorchScript backbone `{path}`: {message}")]
    TorchScript { path: String, message: String },
}

/// Parameter-name prefixes of a backbone's embedding layer.
pub type Embedding = &'static [&'static str];

/// A family file's registration of its architectures.
type Register = fn(&mut BackboneRegistry);

/// Backbones by registry name.
#[derive(Clone)]
pub struct BackboneRegistry {
    entries: BTreeMap<String, BackboneEntry>,
    /// Embedding-layer name prefixes by architecture name.
    embeddings: BTreeMap<String, Embedding>,
    /// How layer-wise lr decay numbers the layers, by architecture name.
    layer_rules: BTreeMap<String, LayerRule>,
}

impl BackboneRegistry {
    /// The backbones that ship with bocb.
    pub fn builtin() -> Self {
        let mut registry = BackboneRegistry {
            entries: BTreeMap::new(),
            embeddings: BTreeMap::new(),
            layer_rules: BTreeMap::new(),
        };
        // Each family with its embedding, the parameter-name prefixes of the
        // layer that first meets the pixels (`freeze: [embedding]`, the
        // fine-tuning paper's "embedding layer"): the patch embedding of
        // ViT/DeiT/Swin/Mixer/MogaNet/TransNeXt, the stem of ConvNeXt,
        // MetaFormer, RepVGG and UniRepLKNet, a CNN's first convolution
        // with its norm. Third, the layers of layer-wise lr decay as the
        // family's timm group_matcher numbers them; none where timm lacks
        // the model (AlexNet, MogaNet, TransNeXt, UniRepLKNet) or its
        // group_matcher (MetaFormer: timm then groups every 12 parameters in
        // definition order), or where bocb names parameters as torchvision
        // does (MobileNetV2, VGG).
        let families: [(Register, Embedding, Option<LayerRule>); 15] = [
            (alexnet::register, &["features.0."], None),
            (convnext::register, &["stem."], Some(LayerRule::ConvNext)),
            (
                densenet::register,
                &["features.conv0.", "features.norm0."],
                Some(LayerRule::DenseNet),
            ),
            (
                efficientnet::register,
                &["conv_stem.", "bn1."],
                Some(LayerRule::EfficientNet),
            ),
            (mlp_mixer::register, &["stem."], Some(LayerRule::Mixer)),
            (metaformer::register, &["stem."], None),
            (mobilenet::register, &["features.0."], None),
            (moganet::register, &["patch_embed1."], None),
            (
                resnet::register,
                &["conv1.", "bn1."],
                Some(LayerRule::ResNet),
            ),
            (unireplknet::register, &["downsample_layers.0."], None),
            (swin::register, &["patch_embed."], Some(LayerRule::Swin)),
            (transnext::register, &["patch_embed1."], None),
            (repvgg::register, &["stem."], Some(LayerRule::ByobNet)),
            (vgg::register, &["features.0.", "features.1."], None),
            (vit::register, &["patch_embed."], Some(LayerRule::Vit)),
        ];
        for (register, embedding, layer_rule) in families {
            let before: Vec<String> = registry.entries.keys().cloned().collect();
            register(&mut registry);
            let added: Vec<String> = registry
                .entries
                .keys()
                .filter(|name| !before.contains(name))
                .cloned()
                .collect();
            for name in added {
                if let Some(rule) = layer_rule {
                    registry.layer_rules.insert(name.clone(), rule);
                }
                registry.embeddings.insert(name, embedding);
            }
        }
        registry
    }

    /// The parameter-name prefixes of `name`'s embedding layer (presets
    /// share their architecture's), or `None` for a backbone registered
    /// without one.
    pub fn embedding(&self, name: &str) -> Option<Embedding> {
        let base = name.split('@').next().unwrap_or(name);
        self.embeddings.get(base).copied()
    }

    /// How layer-wise lr decay numbers `name`'s layers (presets share
    /// their architecture's), or `None` where bocb has no rule for it.
    pub fn layer_rule(&self, name: &str) -> Option<LayerRule> {
        let base = name.split('@').next().unwrap_or(name);
        self.layer_rules.get(base).copied()
    }

    /// The architectures with a layer rule, sorted (without presets).
    pub fn names_with_layer_rules(&self) -> Vec<&str> {
        self.layer_rules.keys().map(String::as_str).collect()
    }

    /// Adds (or replaces) an architecture under `name`.
    pub fn register(&mut self, name: &str, entry: BackboneEntry) {
        self.entries.insert(name.to_string(), entry);
    }

    /// Architecture names, sorted (without presets).
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The entry and preset for a name such as `vit_tiny_cifar@micro`.
    pub fn lookup(&self, name: &str) -> Result<(&BackboneEntry, Preset), ModelError> {
        if name.starts_with(torchscript::PREFIX) {
            return Ok((&torchscript::ENTRY, Preset::Full));
        }
        let (base, preset) = match name.split_once('@') {
            None => (name, Preset::Full),
            Some((base, "micro")) => (base, Preset::Micro),
            Some((_, other)) => {
                return Err(ModelError::UnknownPreset {
                    name: name.to_string(),
                    preset: other.to_string(),
                })
            }
        };
        let entry = self
            .entries
            .get(base)
            .ok_or_else(|| ModelError::UnknownBackbone {
                name: name.to_string(),
                valid: self.names().join(", "),
            })?;
        Ok((entry, preset))
    }

    /// Builds `name` under `path` with its initial weights drawn from `seed`.
    pub fn build(
        &self,
        name: &str,
        path: &nn::Path,
        classes: i64,
        seed: u64,
    ) -> Result<Model, ModelError> {
        if let Some(file) = name.strip_prefix(torchscript::PREFIX) {
            return torchscript::build(file, path, classes);
        }
        let (entry, preset) = self.lookup(name)?;
        Ok(crate::seeding::with_torch_seed(seed, || {
            (entry.ctor)(path, classes, preset)
        }))
    }

    /// Checks that `name` can be built for `classes` outputs: a registered
    /// name, or a `torchscript:PATH` module that takes 3x32x32 images and
    /// returns `[batch, classes]` logits (loaded and run once on the CPU).
    pub fn check(&self, name: &str, classes: i64) -> Result<(), ModelError> {
        match name.strip_prefix(torchscript::PREFIX) {
            Some(file) => torchscript::check(file, classes),
            None => self.lookup(name).map(|_| ()),
        }
    }
}

/// Number of trainable scalars in a var store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// search-spaces/backbones.yaml, which a bocb without training reads in
    /// place of the registry, says of every built-in backbone what its
    /// registration says.
    #[test]
    fn the_backbone_facts_file_matches_the_registry() {
        let registry = BackboneRegistry::builtin();
        let expected: Vec<bocb_search_spaces::BackboneFacts> = registry
            .names()
            .into_iter()
            .map(|name| {
                let (entry, _) = registry.lookup(name).unwrap();
                bocb_search_spaces::BackboneFacts {
                    name: name.to_string(),
                    input_size: entry.input_size as u32,
                    micro_input_size: entry.micro_input_size as u32,
                    default_recipe: entry.default_recipe.to_string(),
                    timm: entry.timm.map(str::to_string),
                    layer_decay: registry.layer_rule(name).is_some(),
                }
            })
            .collect();
        assert!(
            bocb_search_spaces::builtin_backbones() == expected,
            "search-spaces/backbones.yaml differs from the registry; write it as:\n{}",
            serde_yaml::to_string(&expected).unwrap()
        );
    }

    fn build(name: &str, classes: i64) -> (nn::VarStore, Model) {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = BackboneRegistry::builtin()
            .build(name, &vs.root(), classes, 0)
            .unwrap();
        (vs, model)
    }

    /// Counts of the reference definitions for 100 classes: the CIFAR
    /// ResNet-18 (3x3 stem, no max-pool, 1x1 projection shortcuts) and a
    /// timm `VisionTransformer(img_size=32, patch_size=4, embed_dim=192,
    /// depth=12, num_heads=3)`.
    #[test]
    fn full_size_parameter_counts_match_references() {
        assert_eq!(parameter_count(&build("resnet18_cifar", 100).0), 11_220_132);
        // timm.create_model("resnet50", num_classes=100) with
        // conv1 = Conv2d(3, 64, 3, 1, 1, bias=False) and maxpool = Identity()
        assert_eq!(parameter_count(&build("resnet50_cifar", 100).0), 23_705_252);
        // The ImageNet forms at timm's 1000 classes (timm.create_model).
        assert_eq!(parameter_count(&build("resnet18", 1000).0), 11_689_512);
        assert_eq!(parameter_count(&build("resnet50", 1000).0), 25_557_032);
        // timm.create_model("densenet121"): the ImageNet stem's 7x7 conv0.
        assert_eq!(parameter_count(&build("densenet121", 1000).0), 7_978_856);
        // timm.create_model("vit_tiny_patch16_224")
        assert_eq!(parameter_count(&build("vit_tiny", 1000).0), 5_717_416);
        // timm.create_model("swin_tiny_patch4_window7_224", num_classes=100)
        assert_eq!(parameter_count(&build("swin_t", 100).0), 27_596_254);
        // transnext_tiny(num_classes=100) of the TransNeXt repository
        assert_eq!(parameter_count(&build("transnext_t", 100).0), 27_739_660);
        // torchvision.models.mobilenet_v2(num_classes=100)
        assert_eq!(parameter_count(&build("mobilenet_v2", 100).0), 2_351_972);
        // MogaNet(arch='small', num_classes=100) of the MogaNet repository
        assert_eq!(parameter_count(&build("moganet_s", 100).0), 24_873_975);
        // unireplknet_t(num_classes=100) of the UniRepLKNet repository, in
        // training form (dilated branches and BNs before re-parameterisation)
        assert_eq!(parameter_count(&build("unireplknet_t", 100).0), 31_116_520);
        // timm.create_model("efficientnet_b0", num_classes=100)
        assert_eq!(parameter_count(&build("efficientnet_b0", 100).0), 4_135_648);
        // timm.create_model("repvgg_a1", num_classes=100)
        assert_eq!(parameter_count(&build("repvgg_a1", 100).0), 12_939_364);
        assert_eq!(parameter_count(&build("vit_tiny_cifar", 100).0), 5_380_132);
        // torchvision.models.alexnet(num_classes=100)
        assert_eq!(parameter_count(&build("alexnet", 100).0), 57_413_540);
        // torchvision.models.vgg13_bn(num_classes=100)
        assert_eq!(parameter_count(&build("vgg13_bn", 100).0), 129_366_436);
        // torchvision.models.densenet121(num_classes=100) with
        // features.conv0 = Conv2d(3, 64, 3, 1, 1, bias=False) and
        // features.pool0 = Identity()
        assert_eq!(
            parameter_count(&build("densenet121_cifar", 100).0),
            7_048_676
        );
        // timm.create_model("poolformerv2_s12", num_classes=100); the other
        // MetaFormer S12 models as scripts/reference_backbones.py builds them
        assert_eq!(
            parameter_count(&build("poolformerv2_s12", 100).0),
            11_430_012
        );
        assert_eq!(
            parameter_count(&build("identityformer_s12", 100).0),
            11_430_012
        );
        assert_eq!(parameter_count(&build("convformer_s12", 100).0), 17_683_092);
        assert_eq!(
            parameter_count(&build("attenformer_s12", 100).0),
            17_356_924
        );
        assert_eq!(parameter_count(&build("caformer_s12", 100).0), 17_394_564);
        // timm.create_model("convnext_tiny", num_classes=100, patch_size=2)
        assert_eq!(parameter_count(&build("convnext_t", 100).0), 27_930_724);
        // timm.create_model("convnextv2_tiny", num_classes=100, patch_size=2)
        assert_eq!(parameter_count(&build("convnextv2_t", 100).0), 27_977_092);
        // timm.create_model("deit_small_patch16_224", num_classes=100)
        assert_eq!(parameter_count(&build("deit_s", 100).0), 21_704_164);
        // timm.create_model("mixer_s16_224", num_classes=100)
        assert_eq!(parameter_count(&build("mlp_mixer_s", 100).0), 18_066_564);
    }

    #[test]
    fn micro_presets_give_logits_of_the_right_shape() {
        let registry = BackboneRegistry::builtin();
        for name in registry.names() {
            let micro = format!("{name}@micro");
            let (vs, model) = build(&micro, 7);
            let (full_vs, _) = build(name, 7);
            assert!(
                parameter_count(&vs) * 10 < parameter_count(&full_vs),
                "{micro}"
            );
            let (entry, preset) = registry.lookup(&micro).unwrap();
            let size = entry.input_size(preset);
            let x = crate::seeding::draw(|| {
                Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu))
            });
            let logits = model.net.forward_t(&x, true);
            assert_eq!(logits.size(), vec![2, 7], "{micro}");
            logits.sum(Kind::Float).backward();
            let with_grad = vs
                .trainable_variables()
                .iter()
                .filter(|t| t.grad().defined())
                .count();
            assert_eq!(with_grad, vs.trainable_variables().len(), "{micro}");
        }
    }

    /// A rate of 1 drops every pooled feature in training, so the logits no
    /// longer depend on the image: what reaches the classifier is the head
    /// dropout, nothing after it.
    #[test]
    fn every_backbone_applies_the_recipe_dropout_right_before_its_classifier() {
        let registry = BackboneRegistry::builtin();
        for name in registry.names() {
            let micro = format!("{name}@micro");
            let vs = nn::VarStore::new(Device::Cpu);
            let model =
                with_head_drop_rate(1.0, || registry.build(&micro, &vs.root(), 3, 0)).unwrap();
            // Mixer's head starts at zero (timm's init), blind to its input.
            tch::no_grad(|| {
                for mut v in vs.trainable_variables() {
                    let nudge = crate::seeding::draw(|| v.randn_like()) * 0.01;
                    let _ = v.g_add_(&nudge);
                }
            });
            let (entry, preset) = registry.lookup(&micro).unwrap();
            let size = entry.input_size(preset);
            // Pooling averages noise away: the second image is brighter.
            let noise = crate::seeding::draw(|| {
                Tensor::randn([1, 3, size, size], (Kind::Float, Device::Cpu))
            });
            let x = Tensor::cat(&[&noise, &(&noise + 2.0)], 0);
            let gap = |logits: Tensor| {
                f64::try_from((logits.get(0) - logits.get(1)).abs().max()).unwrap()
            };
            // Exactly: both rows are the same computation on zeros.
            assert_eq!(gap(model.net.forward_t(&x, true)), 0.0, "{micro}");
            assert!(gap(model.net.forward_t(&x, false)) > 0.0, "{micro}");
        }
    }

    #[test]
    fn unknown_names_and_presets_are_explained() {
        let registry = BackboneRegistry::builtin();
        let err = registry.lookup("resnet19").err().unwrap();
        assert!(err.to_string().contains("resnet18_cifar"), "{err}");
        let err = registry.lookup("resnet18_cifar@tiny").err().unwrap();
        assert!(err.to_string().contains("@micro"), "{err}");
    }
}

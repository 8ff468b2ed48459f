//! What the reads (reports, exports) need of a backbone, and where they
//! look it up: the tuner's registries, or the built-in backbones' facts.

use bocb_search_spaces::BackboneFacts;

use crate::TORCHSCRIPT_PREFIX;

/// What the reads need of a backbone as an experiment names it (preset
/// applied), without building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackboneSummary {
    pub default_recipe: String,
    /// timm's model of its architecture, where timm has one.
    pub timm: Option<String>,
    /// Side of its square input.
    pub input_size: u32,
    /// Whether bocb knows its layers for layer-wise lr decay.
    pub layer_decay: bool,
}

/// Input side of a user's `torchscript:PATH` backbone: CIFAR's (the
/// runner's `models::torchscript` entry).
const TORCHSCRIPT_INPUT_SIZE: u32 = 32;

/// Looks up backbones as an experiment names them (a preset applied, as in
/// `vit_tiny_cifar@micro`).
pub trait KnownBackbones {
    /// `backbone` as the reads see it, or `None` for a name no registry knows.
    fn backbone(&self, backbone: &str) -> Option<BackboneSummary>;
}

/// The built-in backbones' facts, as a build without the trial runner's
/// registry knows them.
impl KnownBackbones for Vec<BackboneFacts> {
    fn backbone(&self, backbone: &str) -> Option<BackboneSummary> {
        if backbone.starts_with(TORCHSCRIPT_PREFIX) {
            return Some(BackboneSummary {
                default_recipe: "pytorch".to_string(),
                timm: None,
                input_size: TORCHSCRIPT_INPUT_SIZE,
                layer_decay: false,
            });
        }
        let (base, micro) = match backbone.split_once('@') {
            None => (backbone, false),
            Some((base, "micro")) => (base, true),
            Some(_) => return None,
        };
        let facts = self.iter().find(|f| f.name == base)?;
        Some(BackboneSummary {
            default_recipe: facts.default_recipe.clone(),
            timm: facts.timm.clone(),
            input_size: if micro {
                facts.micro_input_size
            } else {
                facts.input_size
            },
            layer_decay: facts.layer_decay,
        })
    }
}

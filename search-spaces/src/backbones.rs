//! What is known of each built-in backbone without building it (a test of
//! the trial runner checks every entry against its registration): where a
//! bocb without training (libtorch) validates and exports, it reads these.

use serde::{Deserialize, Serialize};

static BUILTIN: &str = include_str!("../backbones.yaml");

/// One built-in architecture, by registry name (without preset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneFacts {
    pub name: String,
    /// Side of the square input of the full architecture.
    pub input_size: u32,
    /// Input side of the `@micro` preset.
    pub micro_input_size: u32,
    /// The training recipe it runs with when the experiment names none.
    pub default_recipe: String,
    /// timm's model of the same architecture, where timm has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timm: Option<String>,
    /// Whether layer-wise lr decay (`layer_decay`) knows its layers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_decay: bool,
}

/// The built-in backbones, sorted by name.
pub fn builtin_backbones() -> Vec<BackboneFacts> {
    serde_yaml::from_str(BUILTIN).expect("backbones.yaml is checked by the trial runner's tests")
}

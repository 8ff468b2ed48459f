//! `bocb backbones list`: every registered backbone with its parameter
//! counts (full size and `@micro`), input sizes, family and default recipe.

use bocb_trial_runner::models::{parameter_count, BackboneRegistry, Family, ModelError, Preset};
use serde::Serialize;

/// One row of the listing.
#[derive(Debug, Clone, Serialize)]
pub struct BackboneInfo {
    pub name: String,
    pub params: i64,
    pub input_size: i64,
    pub family: Family,
    pub default_recipe: &'static str,
    pub micro_params: i64,
    pub micro_input_size: i64,
}

/// Builds every backbone of `registry` on the CPU, in both presets, with a
/// `classes`-way head, and counts its trainable parameters.
pub fn list(registry: &BackboneRegistry, classes: i64) -> Result<Vec<BackboneInfo>, ModelError> {
    let count = |name: &str| -> Result<i64, ModelError> {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        registry.build(name, &vs.root(), classes, 0)?;
        Ok(parameter_count(&vs))
    };
    let mut infos = Vec::new();
    for name in registry.names() {
        let (entry, _) = registry.lookup(name)?;
        infos.push(BackboneInfo {
            name: name.to_string(),
            params: count(name)?,
            input_size: entry.input_size(Preset::Full),
            family: entry.family,
            default_recipe: entry.default_recipe,
            micro_params: count(&format!("{name}@micro"))?,
            micro_input_size: entry.input_size(Preset::Micro),
        });
    }
    Ok(infos)
}

/// The listing as a table, with a footnote on the counts' head size.
pub fn render_list(infos: &[BackboneInfo], classes: i64) -> String {
    let mut out = format!(
        "{:<20} {:>12} {:>6} {:<14} {:<8} {:>12} {:>6}\n",
        "backbone", "params", "input", "family", "recipe", "micro params", "input"
    );
    for i in infos {
        out += &format!(
            "{:<20} {:>12} {:>6} {:<14} {:<8} {:>12} {:>6}\n",
            i.name,
            i.params,
            i.input_size,
            i.family.to_string(),
            i.default_recipe,
            i.micro_params,
            i.micro_input_size
        );
    }
    out += &format!(
        "(parameters for {classes} classes; `NAME@micro` is the reduced preset; `torchscript:PATH` loads your own module)\n"
    );
    out
}

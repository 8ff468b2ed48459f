//! The registries a run trains from: backbones, optimizers and the search
//! spaces and recipes. One value is made at the edge (the CLI, an embedding
//! program) and passed down, so a user's own registrations reach every part.

use bocb_search_spaces::Catalog;
#[cfg(not(feature = "train"))]
use bocb_search_spaces::{builtin_backbones, BackboneFacts};
pub use bocb_spec::{BackboneSummary, KnownBackbones};
#[cfg(feature = "train")]
use bocb_trial_runner::{models::BackboneRegistry, optim::OptimizerRegistry};

/// What a run needs besides the experiment: the registries and spaces. A
/// build without training has the built-in backbones' facts in place of
/// the backbone registry, and no optimizer registry.
pub struct Registries {
    #[cfg(feature = "train")]
    pub backbones: BackboneRegistry,
    #[cfg(feature = "train")]
    pub optimizers: OptimizerRegistry,
    #[cfg(not(feature = "train"))]
    pub backbones: Vec<BackboneFacts>,
    pub catalog: Catalog,
}

impl Registries {
    pub fn builtin() -> Self {
        Registries {
            #[cfg(feature = "train")]
            backbones: BackboneRegistry::builtin(),
            #[cfg(feature = "train")]
            optimizers: OptimizerRegistry::builtin(),
            #[cfg(not(feature = "train"))]
            backbones: builtin_backbones(),
            catalog: Catalog::builtin(),
        }
    }

    /// `backbone` (a preset applied, as in `vit_tiny_cifar@micro`) as the
    /// reads see it, or `None` for a name no registry knows.
    #[cfg(feature = "train")]
    pub fn backbone(&self, backbone: &str) -> Option<BackboneSummary> {
        let (entry, preset) = self.backbones.lookup(backbone).ok()?;
        Some(BackboneSummary {
            default_recipe: entry.default_recipe.to_string(),
            timm: entry.timm.map(str::to_string),
            input_size: entry.input_size(preset) as u32,
            layer_decay: self.backbones.layer_rule(backbone).is_some(),
        })
    }

    /// `backbone` as [`Registries::backbone`] gives it, or why not.
    #[cfg(feature = "train")]
    pub fn known_backbone(&self, backbone: &str) -> Result<BackboneSummary, String> {
        self.backbones.lookup(backbone).map_err(|e| e.to_string())?;
        Ok(self
            .backbone(backbone)
            .expect("a backbone the registry looks up"))
    }

    /// Every registered backbone, as `backbones: all` runs them.
    #[cfg(feature = "train")]
    pub fn backbone_names(&self) -> Vec<String> {
        self.backbones
            .names()
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// Every registered optimizer, as `optimizers: all` runs them.
    #[cfg(feature = "train")]
    pub fn optimizer_names(&self) -> Vec<String> {
        self.optimizers
            .names()
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[cfg(feature = "train")]
    pub fn has_optimizer(&self, optimizer: &str) -> bool {
        self.optimizers.contains(optimizer)
    }

    /// `backbone` (a preset applied, as in `vit_tiny_cifar@micro`) as the
    /// reads see it, or `None` for a name no registry knows.
    #[cfg(not(feature = "train"))]
    pub fn backbone(&self, backbone: &str) -> Option<BackboneSummary> {
        KnownBackbones::backbone(&self.backbones, backbone)
    }

    /// `backbone` as [`Registries::backbone`] gives it, or why not.
    #[cfg(not(feature = "train"))]
    pub fn known_backbone(&self, backbone: &str) -> Result<BackboneSummary, String> {
        self.backbone(backbone).ok_or_else(|| {
            format!(
                "unknown backbone `{backbone}`; valid: {} (each with `@micro` for its small preset, or `all`)",
                self.backbone_names().join(", ")
            )
        })
    }

    /// Every built-in backbone, as `backbones: all` runs them.
    #[cfg(not(feature = "train"))]
    pub fn backbone_names(&self) -> Vec<String> {
        self.backbones.iter().map(|f| f.name.clone()).collect()
    }

    /// Every optimizer with a built-in search space, as `optimizers: all`
    /// runs them (the trial runner's test keeps spaces and optimizers equal).
    #[cfg(not(feature = "train"))]
    pub fn optimizer_names(&self) -> Vec<String> {
        self.catalog.optimizer_names().map(String::from).collect()
    }

    #[cfg(not(feature = "train"))]
    pub fn has_optimizer(&self, optimizer: &str) -> bool {
        self.catalog.optimizer(optimizer).is_ok()
    }

    /// Whether layer-wise lr decay knows `backbone`'s layers.
    pub fn has_layers(&self, backbone: &str) -> bool {
        self.backbone(backbone).is_some_and(|b| b.layer_decay)
    }

    /// The backbones whose layers layer-wise lr decay knows, by name.
    pub fn backbones_with_layers(&self) -> Vec<String> {
        let mut names = self.backbone_names();
        names.retain(|name| self.has_layers(name));
        names
    }
}

impl KnownBackbones for Registries {
    fn backbone(&self, backbone: &str) -> Option<BackboneSummary> {
        Registries::backbone(self, backbone)
    }
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use super::*;

    /// The build without training runs `optimizers: all` from the catalog's
    /// spaces: they must be the optimizers the runner builds.
    #[test]
    fn every_optimizer_has_a_space_and_every_space_an_optimizer() {
        let registries = Registries::builtin();
        let mut spaces: Vec<&str> = registries.catalog.optimizer_names().collect();
        spaces.sort_unstable();
        let mut optimizers = registries.optimizers.names();
        optimizers.sort_unstable();
        assert_eq!(spaces, optimizers);
    }
}

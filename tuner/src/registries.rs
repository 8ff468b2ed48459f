//! The registries a run trains from: backbones, optimizers and the search
//! spaces and recipes. One value is made at the edge (the CLI, an embedding
//! program) and passed down, so a user's own registrations reach every part.

use bocb_search_spaces::Catalog;
#[cfg(feature = "train")]
use bocb_trial_runner::{models::BackboneRegistry, optim::OptimizerRegistry};

/// What a run needs besides the experiment: the registries and spaces.
/// A build without training has the search spaces only.
pub struct Registries {
    #[cfg(feature = "train")]
    pub backbones: BackboneRegistry,
    #[cfg(feature = "train")]
    pub optimizers: OptimizerRegistry,
    pub catalog: Catalog,
}

impl Registries {
    pub fn builtin() -> Self {
        Registries {
            #[cfg(feature = "train")]
            backbones: BackboneRegistry::builtin(),
            #[cfg(feature = "train")]
            optimizers: OptimizerRegistry::builtin(),
            catalog: Catalog::builtin(),
        }
    }
}

//! The registries a run trains from: backbones, optimizers and the search
//! spaces and recipes. One value is made at the edge (the CLI, an embedding
//! program) and passed down, so a user's own registrations reach every part.

use bocb_search_spaces::Catalog;
use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::optim::OptimizerRegistry;

/// What a run needs besides the experiment: the registries and spaces.
pub struct Registries {
    pub backbones: BackboneRegistry,
    pub optimizers: OptimizerRegistry,
    pub catalog: Catalog,
}

impl Registries {
    pub fn builtin() -> Self {
        Registries {
            backbones: BackboneRegistry::builtin(),
            optimizers: OptimizerRegistry::builtin(),
            catalog: Catalog::builtin(),
        }
    }
}

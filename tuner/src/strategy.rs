//! Search strategies: what to try next for one pair, given what was tried.

use bocb_search_spaces::OptimizerSpace;
use bocb_store::GridPos;
use bocb_trial_runner::optim::Hparams;

/// A config to train (with every seed of the experiment).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub params: Hparams,
    pub grid: GridPos,
}

/// Proposes configs for one (backbone, optimizer) pair in stage 1, the
/// lr x weight-decay grid. The runner calls [`propose`](Strategy::propose)
/// until it returns nothing; `tried` holds every grid position with a
/// finished trial, this run's and earlier runs' alike, so a resumed search
/// picks up where it stopped.
pub trait Strategy {
    fn propose(&mut self, space: &OptimizerSpace, tried: &[GridPos]) -> Vec<Proposal>;
}

/// The paper's search: every point of the 5 x 5 grid, extras at their defaults.
#[derive(Debug, Default)]
pub struct GridSearch;

impl Strategy for GridSearch {
    fn propose(&mut self, space: &OptimizerSpace, tried: &[GridPos]) -> Vec<Proposal> {
        let mut proposals = Vec::new();
        for (i, &lr) in space.lr.values().iter().enumerate() {
            for (j, &weight_decay) in space.weight_decay.values().iter().enumerate() {
                let grid = GridPos {
                    lr: i as u8,
                    weight_decay: j as u8,
                };
                if tried.contains(&grid) {
                    continue;
                }
                let mut params = space.default_params();
                params.insert("lr".into(), lr);
                params.insert("weight_decay".into(), weight_decay);
                proposals.push(Proposal { params, grid });
            }
        }
        proposals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_search_spaces::Catalog;

    #[test]
    fn grid_proposes_every_untried_point_once() {
        let catalog = Catalog::builtin();
        let space = catalog.optimizer("adamw").unwrap();
        let mut grid = GridSearch;
        let all = grid.propose(space, &[]);
        assert_eq!(all.len(), 25);
        let centre = &all[12];
        assert_eq!(
            centre.grid,
            GridPos {
                lr: 2,
                weight_decay: 2
            }
        );
        assert_eq!(centre.params["lr"], space.lr.centre());
        assert_eq!(centre.params["weight_decay"], space.weight_decay.centre());
        assert_eq!(centre.params["beta2"], 0.999);
        let tried: Vec<GridPos> = all.iter().take(20).map(|p| p.grid).collect();
        let rest = grid.propose(space, &tried);
        assert_eq!(rest.len(), 5);
        assert!(rest.iter().all(|p| !tried.contains(&p.grid)));
        let tried: Vec<GridPos> = all.iter().map(|p| p.grid).collect();
        assert!(grid.propose(space, &tried).is_empty());
    }
}

//! The two model-free strategies: the paper's exhaustive grid and random
//! search.

use bocb_store::GridPos;
use rand::seq::IndexedRandom;

use super::{step_rng, untried, Observation, Prior, Strategy};

/// Every grid point, lr-major: the paper's search.
#[derive(Debug, Default)]
pub struct GridSearch;

impl Strategy for GridSearch {
    fn propose(&mut self, history: &[Observation], _prior: &Prior) -> Option<GridPos> {
        untried(history).first().copied()
    }
}

/// A uniformly random untried point at each step.
#[derive(Debug)]
pub struct RandomSearch {
    seed: u64,
}

impl RandomSearch {
    pub fn new(seed: u64) -> Self {
        RandomSearch { seed }
    }
}

impl Strategy for RandomSearch {
    fn propose(&mut self, history: &[Observation], _prior: &Prior) -> Option<GridPos> {
        untried(history)
            .choose(&mut step_rng(self.seed, history))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::super::all_points;
    use super::super::tests::run;
    use super::*;

    #[test]
    fn grid_goes_in_the_papers_order() {
        let order: Vec<GridPos> = run(&mut GridSearch, 25).iter().map(|o| o.point).collect();
        assert_eq!(order, all_points().collect::<Vec<_>>());
    }

    #[test]
    fn random_orders_differ_between_seeds() {
        let a: Vec<GridPos> = run(&mut RandomSearch::new(1), 25)
            .iter()
            .map(|o| o.point)
            .collect();
        let b: Vec<GridPos> = run(&mut RandomSearch::new(2), 25)
            .iter()
            .map(|o| o.point)
            .collect();
        assert_ne!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, all_points().collect::<Vec<_>>());
    }
}

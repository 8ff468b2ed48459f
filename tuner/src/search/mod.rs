//! Stage-1 search over an optimizer's 5 x 5 learning-rate x weight-decay
//! grid, split as Optuna splits it: a [`Strategy`] (sampler) picks the next
//! grid point of a (backbone, optimizer) pair from the pair's history, an
//! [`EarlyStop`] rule (pruner) decides after each epoch whether a running
//! trial is worth finishing. Both see only accuracies, so the same code
//! drives real runs and the replay of a recorded grid (`bocb bench tuner`).

mod basic;
mod bayes;
pub mod extension;
mod prior;
pub mod replay;
mod stopping;
mod tpe;

use bocb_store::{GridPos, GRID_POINTS};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use basic::{GridSearch, RandomSearch};
pub use bayes::BayesSearch;
pub use prior::{Prior, Relative, RelativeMap};
pub use stopping::{AshaStop, CurveStop, MedianStop, NeverStop};
pub use tpe::TpeSearch;

/// One trained (or stopped) grid point of a pair, as strategies see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub point: GridPos,
    /// Top-1 test accuracy (%): the final one when `complete`, else the
    /// last one reached before the trial was stopped.
    pub accuracy: f64,
    /// Whether the trial ran every epoch. Only complete trials can be the
    /// pair's best config.
    pub complete: bool,
}

/// Picks the next grid point of one pair to train.
pub trait Strategy: Send {
    /// The next point, never one already in `history`; `None` when the
    /// strategy has nothing left to try. Model-based strategies also use
    /// what `prior` says of the pair's relatives; the others ignore it.
    fn propose(&mut self, history: &[Observation], prior: &Prior) -> Option<GridPos>;

    /// [`Strategy::propose`] from the pair's own history alone.
    fn next(&mut self, history: &[Observation]) -> Option<GridPos> {
        self.propose(history, &Prior::default())
    }
}

/// The accuracies of one trial so far, as early-stopping rules see them.
#[derive(Debug, Clone, Copy)]
pub struct Curve<'a> {
    /// Test accuracy after each epoch, from the first.
    pub accuracies: &'a [f64],
    /// Whether the trial ran every epoch.
    pub complete: bool,
}

/// Decides after each epoch whether a running trial should stop.
pub trait EarlyStop: Send + Sync {
    /// Whether the trial whose accuracies so far are `curve` (one per
    /// finished epoch, at least one) should stop now, given the pair's
    /// other trials and the number of epochs a complete trial runs.
    fn should_stop(&self, curve: &[f64], others: &[Curve], max_epochs: usize) -> bool;
}

pub use bocb_spec::{StopKind, StrategyKind, UnknownChoice};

/// Makes the strategy an experiment's `strategy:` names.
pub trait BuildStrategy {
    /// A fresh strategy of this kind; `seed` makes it reproducible.
    fn build(self, seed: u64) -> Box<dyn Strategy>;

    /// [`BuildStrategy::build`], ending a pair's search early where the
    /// strategy can tell that no untried point is expected to gain more
    /// than `min_expected_gain` accuracy points (`bayes`; validation
    /// refuses it for the others).
    fn build_ending_below(self, seed: u64, min_expected_gain: Option<f64>) -> Box<dyn Strategy>;
}

impl BuildStrategy for StrategyKind {
    fn build(self, seed: u64) -> Box<dyn Strategy> {
        self.build_ending_below(seed, None)
    }

    fn build_ending_below(self, seed: u64, min_expected_gain: Option<f64>) -> Box<dyn Strategy> {
        match self {
            StrategyKind::Grid => Box::new(GridSearch),
            StrategyKind::Random => Box::new(RandomSearch::new(seed)),
            StrategyKind::Tpe => Box::new(TpeSearch::new(seed)),
            StrategyKind::Bayes => Box::new(BayesSearch::new(seed).ending_below(min_expected_gain)),
        }
    }
}

/// Makes the rule an experiment's `early_stop:` names.
pub trait BuildEarlyStop {
    /// The rule with its default settings.
    fn build(self) -> Box<dyn EarlyStop>;
}

impl BuildEarlyStop for StopKind {
    fn build(self) -> Box<dyn EarlyStop> {
        match self {
            StopKind::None => Box::new(NeverStop),
            StopKind::Median => Box::new(MedianStop::default()),
            StopKind::Asha => Box::new(AshaStop::default()),
            StopKind::Curve => Box::new(CurveStop::default()),
        }
    }
}
/// Every grid point, lr-major (the order of the paper's grid).
pub fn all_points() -> impl Iterator<Item = GridPos> {
    (0..GRID_POINTS as u8)
        .flat_map(|lr| (0..GRID_POINTS as u8).map(move |weight_decay| GridPos { lr, weight_decay }))
}

/// The middle of the grid: the usual defaults each grid is centred on.
pub const CENTRE: GridPos = GridPos {
    lr: (GRID_POINTS / 2) as u8,
    weight_decay: (GRID_POINTS / 2) as u8,
};

/// Grid points not in `history`, lr-major.
fn untried(history: &[Observation]) -> Vec<GridPos> {
    all_points()
        .filter(|p| history.iter().all(|o| o.point != *p))
        .collect()
}

/// The random numbers of one step: a function of the seed and how much
/// history there is, so a resumed search proposes what the uninterrupted
/// one would have.
fn step_rng(seed: u64, history: &[Observation]) -> StdRng {
    StdRng::seed_from_u64(seed ^ (history.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The warm-up of a model-based strategy, before its model has enough to
/// go on: the grid centre (the usual defaults) first, then random untried
/// points until `startup` observations exist; `None` once the model takes
/// over. `open` holds the untried points (not empty).
fn warm_up(
    history: &[Observation],
    open: &[GridPos],
    startup: usize,
    rng: &mut StdRng,
) -> Option<GridPos> {
    use rand::seq::IndexedRandom;
    match history.len() {
        0 if open.contains(&CENTRE) => Some(CENTRE),
        n if n < startup => open.choose(rng).copied(),
        _ => None,
    }
}

/// The best complete observation (highest accuracy; the earlier one on ties).
pub fn best_complete(history: &[Observation]) -> Option<&Observation> {
    history
        .iter()
        .filter(|o| o.complete)
        .fold(None, |best: Option<&Observation>, o| match best {
            Some(b) if b.accuracy >= o.accuracy => Some(b),
            _ => Some(o),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth accuracy landscape with its peak at (1, 3).
    pub(crate) fn landscape(p: GridPos) -> f64 {
        let dl = p.lr as f64 - 1.0;
        let dw = p.weight_decay as f64 - 3.0;
        80.0 - 6.0 * dl * dl - 3.0 * dw * dw - 2.0 * dl * dw
    }

    /// Runs `strategy` for `budget` points on `landscape`, every trial complete.
    pub(crate) fn run(strategy: &mut dyn Strategy, budget: usize) -> Vec<Observation> {
        let mut history = Vec::new();
        for _ in 0..budget {
            let Some(point) = strategy.next(&history) else {
                break;
            };
            assert!(
                history.iter().all(|o: &Observation| o.point != point),
                "{point:?} proposed twice"
            );
            history.push(Observation {
                point,
                accuracy: landscape(point),
                complete: true,
            });
        }
        history
    }

    #[test]
    fn every_strategy_covers_the_grid_without_repeats_and_then_stops() {
        for kind in StrategyKind::ALL {
            let mut strategy = kind.build(7);
            let history = run(strategy.as_mut(), 30);
            assert_eq!(history.len(), 25, "{kind}");
            assert_eq!(strategy.next(&history), None, "{kind}");
        }
    }

    #[test]
    fn strategies_are_reproducible_from_their_seed() {
        for kind in StrategyKind::ALL {
            let a: Vec<GridPos> = run(kind.build(3).as_mut(), 12)
                .iter()
                .map(|o| o.point)
                .collect();
            let b: Vec<GridPos> = run(kind.build(3).as_mut(), 12)
                .iter()
                .map(|o| o.point)
                .collect();
            assert_eq!(a, b, "{kind}");
        }
    }

    #[test]
    fn a_fresh_strategy_continues_a_history_as_the_original_would() {
        for kind in StrategyKind::ALL {
            let history = run(kind.build(11).as_mut(), 8);
            let resumed = kind.build(11).next(&history[..7]);
            assert_eq!(resumed, Some(history[7].point), "{kind}");
        }
    }

    #[test]
    fn model_based_strategies_find_a_smooth_peak_early() {
        let peak = GridPos {
            lr: 1,
            weight_decay: 3,
        };
        for kind in [StrategyKind::Tpe, StrategyKind::Bayes] {
            let mut found = 0;
            for seed in 0..10 {
                let history = run(kind.build(seed).as_mut(), 10);
                if best_complete(&history).unwrap().point == peak {
                    found += 1;
                }
            }
            assert!(found >= 8, "{kind} found the peak in {found} of 10 runs");
        }
    }

    #[test]
    fn best_complete_ignores_stopped_trials() {
        let at = |lr, accuracy, complete| Observation {
            point: GridPos {
                lr,
                weight_decay: 0,
            },
            accuracy,
            complete,
        };
        let history = [at(0, 50.0, true), at(1, 90.0, false), at(2, 60.0, true)];
        assert_eq!(best_complete(&history).unwrap().point.lr, 2);
        assert!(best_complete(&history[1..2]).is_none());
    }
}

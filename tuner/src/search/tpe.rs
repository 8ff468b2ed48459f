//! Tree-structured Parzen estimator (Bergstra et al., 2011) over the 5 x 5
//! grid, in Optuna's multivariate form: the observations are split into
//! the best quarter and the rest, each group becomes a mixture of discrete
//! Gaussian kernels (one per observation, over both grid axes jointly, so
//! the lr x weight-decay coupling is kept) plus a uniform prior, and the
//! next point is the candidate with the highest good/bad density ratio
//! among candidates drawn from the good density. With a [`Prior`] from the
//! pair's relatives, the search starts at the point they favour and the
//! good density's prior follows their map instead of being uniform.

use bocb_store::{GridPos, GRID_POINTS};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;

use super::{step_rng, untried, warm_up, Observation, Prior, Strategy};

/// Observations before the model is used: the centre, then random points.
const STARTUP: usize = 4;
/// Fraction of observations in the good group (at least one).
const GAMMA: f64 = 0.25;
/// Kernel width in grid steps.
const BANDWIDTH: f64 = 1.0;
/// Weight of the uniform prior, in observations (Optuna's `prior_weight`).
const PRIOR_WEIGHT: f64 = 1.0;
/// Candidates drawn from the good density per step (Optuna's default).
const CANDIDATES: usize = 24;
/// Weight, in observations, of the relatives' map in the good density.
const RELATIVES_WEIGHT: f64 = 2.0;
/// Sharpness of the relatives' map as a distribution: its best point is
/// e^SHARPNESS times as likely as its worst.
const SHARPNESS: f64 = 3.0;

#[derive(Debug)]
pub struct TpeSearch {
    seed: u64,
}

impl TpeSearch {
    pub fn new(seed: u64) -> Self {
        TpeSearch { seed }
    }
}

impl Strategy for TpeSearch {
    fn propose(&mut self, history: &[Observation], prior: &Prior) -> Option<GridPos> {
        let mut rng = step_rng(self.seed, history);
        let open = untried(history);
        if open.is_empty() {
            return None;
        }
        if prior.is_empty() {
            if let Some(point) = warm_up(history, &open, STARTUP, &mut rng) {
                return Some(point);
            }
        } else if history.is_empty() {
            return prior.best_of(&open);
        }
        let mut ranked: Vec<&Observation> = history.iter().collect();
        ranked.sort_by(|a, b| b.accuracy.total_cmp(&a.accuracy));
        let good_count = ((GAMMA * ranked.len() as f64).ceil() as usize).max(1);
        let (good, bad) = ranked.split_at(good_count);
        let relatives = relatives_distribution(prior);
        let good_density: Vec<f64> = open
            .iter()
            .map(|&p| density(p, good, relatives.as_ref().map(|map| map(p))))
            .collect();
        let pick = WeightedIndex::new(&good_density).expect("densities are positive");
        (0..CANDIDATES)
            .map(|_| pick.sample(&mut rng))
            .max_by(|&a, &b| {
                let ratio = |i: usize| good_density[i] / density(open[i], bad, None);
                ratio(a).total_cmp(&ratio(b))
            })
            .map(|i| open[i])
    }
}

/// Discrete Gaussian kernel weight of `offset` grid steps on one axis,
/// normalised over the axis' points around `centre`.
fn kernel(centre: u8, at: u8) -> f64 {
    let weight = |x: u8| {
        let d = (x as f64 - centre as f64) / BANDWIDTH;
        (-0.5 * d * d).exp()
    };
    let total: f64 = (0..GRID_POINTS as u8).map(weight).sum();
    weight(at) / total
}

/// The relatives' map as a distribution over the grid (`None` without one).
fn relatives_distribution(prior: &Prior) -> Option<impl Fn(GridPos) -> f64 + '_> {
    if prior.is_empty() {
        return None;
    }
    let total: f64 = super::all_points()
        .map(|p| (SHARPNESS * prior.score(p)).exp())
        .sum();
    Some(move |p: GridPos| (SHARPNESS * prior.score(p)).exp() / total)
}

/// The Parzen density of `point` under `group` plus the uniform prior.
/// With `relatives` (the relatives' distribution at `point`), their map
/// joins the mixture with weight [`RELATIVES_WEIGHT`].
fn density(point: GridPos, group: &[&Observation], relatives: Option<f64>) -> f64 {
    let prior = PRIOR_WEIGHT / (GRID_POINTS * GRID_POINTS) as f64;
    let kernels: f64 = group
        .iter()
        .map(|o| kernel(o.point.lr, point.lr) * kernel(o.point.weight_decay, point.weight_decay))
        .sum();
    let (shared, shared_weight) =
        relatives.map_or((0.0, 0.0), |r| (RELATIVES_WEIGHT * r, RELATIVES_WEIGHT));
    (prior + shared + kernels) / (PRIOR_WEIGHT + shared_weight + group.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::super::{all_points, CENTRE};
    use super::*;

    #[test]
    fn kernels_are_distributions_peaked_at_their_centre() {
        for centre in 0..GRID_POINTS as u8 {
            let total: f64 = (0..GRID_POINTS as u8).map(|x| kernel(centre, x)).sum();
            assert!((total - 1.0).abs() < 1e-12);
            for x in 0..GRID_POINTS as u8 {
                assert!(kernel(centre, x) <= kernel(centre, centre));
            }
        }
        let obs = Observation {
            point: GridPos {
                lr: 0,
                weight_decay: 4,
            },
            accuracy: 1.0,
            complete: true,
        };
        let total: f64 = all_points().map(|p| density(p, &[&obs], None)).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        // The density is highest at the observation, and the prior keeps
        // the far corner possible.
        let far = density(
            GridPos {
                lr: 4,
                weight_decay: 0,
            },
            &[&obs],
            None,
        );
        assert!(far > 0.0 && far < density(obs.point, &[&obs], None));
    }

    #[test]
    fn starts_at_the_centre() {
        assert_eq!(TpeSearch::new(0).next(&[]), Some(CENTRE));
    }
}

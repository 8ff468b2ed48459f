//! What an experiment has learnt about a pair before searching it: the
//! other pairs' results so far, on the grid's index scale. The BOCB
//! analyses find an optimizer's good lr and weight decay related across
//! backbones (and a backbone's across optimizers, whose grids are each
//! centred on the optimizer's own defaults), so a pair's model-based
//! search may start where its relatives did well and expect their shape:
//! which axis matters, and how fast accuracy falls away from the best.

use bocb_store::{GridPos, GRID_POINTS};

use super::bayes::smoothed;
use super::Observation;

/// Weight of a pair that shares the optimizer: the same grid values.
const SAME_OPTIMIZER: f64 = 1.0;
/// Weight of a pair that shares the backbone: the same network, another
/// optimizer's grid around that optimizer's defaults.
const SAME_BACKBONE: f64 = 0.5;
/// Weight of a pair that shares neither (the grid-wide modes).
const UNRELATED: f64 = 0.1;
/// Observations a relative needs before it counts.
const MIN_OBSERVATIONS: usize = 2;
/// Observations at which a relative counts half: a map drawn from few
/// points is mostly guesswork between them.
const HALF_TRUST: f64 = 3.0;

/// What one other pair's stage-1 history says of the whole grid: its
/// accuracies standardised and smoothed by a Gaussian process fitted to
/// them. Built once per history (the fit is the costly part).
#[derive(Debug, Clone, PartialEq)]
pub struct RelativeMap {
    tried: usize,
    /// Per grid point, lr-major.
    scores: Vec<f64>,
    /// The fitted kernel's log-parameters (length scales, signal, noise).
    kernel: [f64; 4],
}

impl RelativeMap {
    /// The map of `history`; `None` when it is too thin (fewer than
    /// [`MIN_OBSERVATIONS`]) or flat to say anything.
    pub fn of(history: &[Observation]) -> Option<RelativeMap> {
        let (lo, hi) = history
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), o| {
                (lo.min(o.accuracy), hi.max(o.accuracy))
            });
        if history.len() < MIN_OBSERVATIONS || hi - lo < 1e-9 {
            return None;
        }
        let (scores, kernel) = smoothed(history)?;
        Some(RelativeMap {
            tried: history.len(),
            scores,
            kernel,
        })
    }
}

/// One other pair of the experiment, or a pair of an earlier one, and what
/// its history says.
#[derive(Debug, Clone, Copy)]
pub struct Relative<'a> {
    pub backbone: &'a str,
    pub optimizer: &'a str,
    pub map: &'a RelativeMap,
    /// From an earlier experiment (`transfer_from`): the pair being
    /// searched counts too there (a pilot run with fewer epochs, say), as
    /// a relative sharing the optimizer.
    pub earlier: bool,
}

/// A score in [0, 1] per grid point (higher: where the relatives did better) and
/// the weight of evidence behind the whole map; an empty prior has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prior {
    scores: Vec<f64>,
    evidence: f64,
    /// The relatives' kernel log-parameters, averaged with their weights.
    kernel: Option<[f64; 4]>,
    /// Configs the relatives tried, averaged with their weights.
    mean_tried: f64,
}

impl Prior {
    /// The prior of pair (`backbone`, `optimizer`) from its relatives:
    /// their maps averaged, each weighted by how the relative is related
    /// and by how much it has tried, then scaled so that the best point
    /// scores 1 and the worst 0.
    pub fn from_relatives(backbone: &str, optimizer: &str, relatives: &[Relative]) -> Prior {
        let mut scores = [0.0; GRID_POINTS * GRID_POINTS];
        let mut evidence = 0.0;
        let mut kernel = [0.0; 4];
        let mut tried_sum = 0.0;
        for relative in relatives {
            if relative.backbone == backbone && relative.optimizer == optimizer && !relative.earlier
            {
                continue;
            }
            let relation = if relative.optimizer == optimizer {
                SAME_OPTIMIZER
            } else if relative.backbone == backbone {
                SAME_BACKBONE
            } else {
                UNRELATED
            };
            let tried = relative.map.tried as f64;
            let weight = relation * tried / (tried + HALF_TRUST);
            evidence += weight;
            tried_sum += weight * tried;
            for (k, relative_k) in kernel.iter_mut().zip(relative.map.kernel) {
                *k += weight * relative_k;
            }
            for (score, relative_score) in scores.iter_mut().zip(&relative.map.scores) {
                *score += weight * relative_score;
            }
        }
        let (lo, hi) = scores
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
                (lo.min(s), hi.max(s))
            });
        if evidence == 0.0 || hi - lo < 1e-12 {
            return Prior::default();
        }
        Prior {
            scores: scores.iter().map(|s| (s - lo) / (hi - lo)).collect(),
            evidence,
            kernel: Some(kernel.map(|k| k / evidence)),
            mean_tried: tried_sum / evidence,
        }
    }

    /// The relatives' Gaussian-process kernel (log-parameters), for a
    /// pair with too few results to fit its own.
    pub fn kernel(&self) -> Option<[f64; 4]> {
        self.kernel
    }

    /// Whether any relative contributed.
    pub fn is_empty(&self) -> bool {
        self.evidence == 0.0
    }

    /// The weight of the relatives behind the map (a pair sharing the
    /// optimizer counts 1).
    pub fn evidence(&self) -> f64 {
        self.evidence
    }

    /// How many configs the relatives tried, on average (by weight): 25
    /// or more for an earlier experiment's whole grids, the budget for
    /// pairs searched like this one; 0 for an empty prior.
    pub fn mean_tried(&self) -> f64 {
        self.mean_tried
    }

    /// The score of `point`, in [0, 1]; 0 for an empty prior.
    pub fn score(&self, point: GridPos) -> f64 {
        self.scores.get(index(point)).copied().unwrap_or(0.0)
    }

    /// The point of `open` the relatives favour most (the first of ties).
    pub fn best_of(&self, open: &[GridPos]) -> Option<GridPos> {
        open.iter()
            .copied()
            .fold(None, |best: Option<GridPos>, p| match best {
                Some(b) if self.score(b) >= self.score(p) => Some(b),
                _ => Some(p),
            })
    }
}

fn index(p: GridPos) -> usize {
    usize::from(p.lr) * GRID_POINTS + usize::from(p.weight_decay)
}

#[cfg(test)]
mod tests {
    use super::super::all_points;
    use super::*;

    fn at(lr: u8, weight_decay: u8, accuracy: f64) -> Observation {
        Observation {
            point: GridPos { lr, weight_decay },
            accuracy,
            complete: true,
        }
    }

    fn point(lr: u8, weight_decay: u8) -> GridPos {
        GridPos { lr, weight_decay }
    }

    /// A pair of the same experiment as a relative.
    fn relative<'a>(backbone: &'a str, optimizer: &'a str, map: &'a RelativeMap) -> Relative<'a> {
        Relative {
            backbone,
            optimizer,
            map,
            earlier: false,
        }
    }

    #[test]
    fn relatives_sharing_the_optimizer_outweigh_the_others() {
        // The same optimizer did best at (1, 1); an unrelated pair at (3, 3).
        let same = RelativeMap::of(&[at(1, 1, 60.0), at(3, 3, 20.0), at(2, 2, 40.0)]).unwrap();
        let unrelated = RelativeMap::of(&[at(3, 3, 90.0), at(1, 1, 10.0), at(2, 2, 50.0)]).unwrap();
        let prior = Prior::from_relatives(
            "vit",
            "adamw",
            &[
                relative("resnet", "adamw", &same),
                relative("convnext", "sgd_m", &unrelated),
            ],
        );
        // Each relative tried 3 points: it counts half.
        assert!((prior.evidence() - 0.5 * (SAME_OPTIMIZER + UNRELATED)).abs() < 1e-12);
        assert!((prior.mean_tried() - 3.0).abs() < 1e-12);
        assert_eq!(Prior::default().mean_tried(), 0.0);
        // Relatives that tried more count more, in the mean too: 3 configs
        // weigh 3/6, 5 weigh 5/8.
        let wider = RelativeMap::of(&[
            at(1, 1, 60.0),
            at(3, 3, 20.0),
            at(2, 2, 40.0),
            at(0, 0, 30.0),
            at(4, 4, 10.0),
        ])
        .unwrap();
        let mixed = Prior::from_relatives(
            "vit",
            "adamw",
            &[
                relative("resnet", "adamw", &same),
                relative("deit", "adamw", &wider),
            ],
        );
        let (narrow, wide) = (3.0 / 6.0, 5.0 / 8.0);
        let expected = (narrow * 3.0 + wide * 5.0) / (narrow + wide);
        assert!((mixed.mean_tried() - expected).abs() < 1e-12, "{mixed:?}");
        let best = prior.best_of(&all_points().collect::<Vec<_>>()).unwrap();
        assert_eq!(prior.score(best), 1.0);
        assert!(best.lr <= 1 && best.weight_decay <= 1, "{best:?}");
        let scores = |p| (prior.score(p), same.scores[index(p)]);
        // The unrelated pair pulls (3, 3) up from where the same optimizer
        // alone would put it, but not above (1, 1).
        let (far, far_alone) = scores(point(3, 3));
        assert!(far < prior.score(point(1, 1)));
        let lo = same.scores.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = same
            .scores
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(far > (far_alone - lo) / (hi - lo), "{far} vs {far_alone}");
    }

    #[test]
    fn a_relatives_map_follows_its_history_and_stays_between_its_points() {
        // Accuracy rises with lr and does not depend on weight decay.
        let history: Vec<Observation> = [(0, 0, 20.0), (2, 4, 40.0), (4, 1, 60.0), (1, 3, 30.0)]
            .iter()
            .map(|&(lr, wd, a)| at(lr, wd, a))
            .collect();
        let map = RelativeMap::of(&history).unwrap();
        assert_eq!(map.tried, 4);
        for weight_decay in 0..GRID_POINTS as u8 {
            let row: Vec<f64> = (0..GRID_POINTS as u8)
                .map(|lr| map.scores[index(point(lr, weight_decay))])
                .collect();
            assert!(
                row.windows(2).all(|w| w[0] < w[1]),
                "wd {weight_decay}: {row:?}"
            );
        }
    }

    #[test]
    fn the_pair_itself_and_thin_or_flat_histories_teach_nothing_but_an_earlier_run_of_it_does() {
        assert_eq!(RelativeMap::of(&[at(1, 1, 20.0)]), None);
        assert_eq!(
            RelativeMap::of(&[at(0, 0, 10.0), at(1, 1, 10.0), at(2, 2, 10.0)]),
            None
        );
        let own = RelativeMap::of(&[at(0, 0, 10.0), at(1, 1, 20.0), at(2, 2, 30.0)]).unwrap();
        let of_itself = |earlier| {
            Prior::from_relatives(
                "vit",
                "adamw",
                &[Relative {
                    backbone: "vit",
                    optimizer: "adamw",
                    map: &own,
                    earlier,
                }],
            )
        };
        let prior = of_itself(false);
        assert!(prior.is_empty());
        assert_eq!(prior.score(point(2, 2)), 0.0);
        assert_eq!(prior.best_of(&[]), None);
        // The same pair in an earlier experiment teaches as much as one
        // sharing the optimizer.
        let pilot = of_itself(true);
        assert!((pilot.evidence() - 0.5 * SAME_OPTIMIZER).abs() < 1e-12);
        assert!((pilot.mean_tried() - 3.0).abs() < 1e-12);
        assert_eq!(
            pilot.best_of(&[point(0, 0), point(2, 2)]),
            Some(point(2, 2))
        );
    }
}

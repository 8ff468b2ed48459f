//! What an experiment has learnt about a pair before searching it: the
//! other pairs' best configs so far, on the grid's index scale. The BOCB
//! analyses find an optimizer's good lr and weight decay related across
//! backbones (and a backbone's across optimizers, whose grids are each
//! centred on the optimizer's own defaults), so a pair's model-based
//! search may start where its relatives did well.

use bocb_store::{GridPos, GRID_POINTS};

use super::{all_points, best_complete, Observation};

/// Weight of a pair that shares the optimizer: the same grid values.
const SAME_OPTIMIZER: f64 = 1.0;
/// Weight of a pair that shares the backbone: the same network, another
/// optimizer's grid around that optimizer's defaults.
const SAME_BACKBONE: f64 = 0.5;
/// Weight of a pair that shares neither (the grid-wide modes).
const UNRELATED: f64 = 0.1;
/// Width, in grid steps, of the bump a relative's best config puts on the
/// grid: its neighbours are likely good too.
const BANDWIDTH: f64 = 1.0;
/// Observations a relative needs before its best counts.
const MIN_OBSERVATIONS: usize = 2;
/// Observations at which a relative's best counts half: one that has
/// tried little may not have found its best.
const HALF_TRUST: f64 = 3.0;

/// One other pair's stage-1 history.
#[derive(Debug, Clone, Copy)]
pub struct Relative<'a> {
    pub backbone: &'a str,
    pub optimizer: &'a str,
    pub history: &'a [Observation],
}

/// A score in [0, 1] per grid point (higher: where the relatives did better) and
/// the weight of evidence behind the whole map; an empty prior has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prior {
    scores: Vec<f64>,
    evidence: f64,
}

impl Prior {
    /// The prior of pair (`backbone`, `optimizer`) from its relatives:
    /// each relative's best config so far is a bump on the grid, weighted
    /// by how the relative is related and by how much it has tried; the
    /// scores are the bumps' sum, scaled so that the best point scores 1.
    pub fn from_relatives(backbone: &str, optimizer: &str, relatives: &[Relative]) -> Prior {
        let mut scores = [0.0; GRID_POINTS * GRID_POINTS];
        let mut evidence = 0.0;
        for relative in relatives {
            if relative.backbone == backbone && relative.optimizer == optimizer {
                continue;
            }
            let history = relative.history;
            let lo = history
                .iter()
                .map(|o| o.accuracy)
                .fold(f64::INFINITY, f64::min);
            let Some(best) = best_complete(history) else {
                continue;
            };
            if history.len() < MIN_OBSERVATIONS || best.accuracy - lo < 1e-9 {
                continue;
            }
            let relation = if relative.optimizer == optimizer {
                SAME_OPTIMIZER
            } else if relative.backbone == backbone {
                SAME_BACKBONE
            } else {
                UNRELATED
            };
            let tried = history.len() as f64;
            let weight = relation * tried / (tried + HALF_TRUST);
            evidence += weight;
            for point in all_points() {
                scores[index(point)] += weight * bump(point, best.point);
            }
        }
        let top = scores.iter().copied().fold(0.0, f64::max);
        if evidence == 0.0 || top <= 0.0 {
            return Prior::default();
        }
        Prior {
            scores: scores.iter().map(|s| s / top).collect(),
            evidence,
        }
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

/// Gaussian weight of `b` seen from `a`, over both grid axes.
fn bump(a: GridPos, b: GridPos) -> f64 {
    let dl = (f64::from(a.lr) - f64::from(b.lr)) / BANDWIDTH;
    let dw = (f64::from(a.weight_decay) - f64::from(b.weight_decay)) / BANDWIDTH;
    (-0.5 * (dl * dl + dw * dw)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lr: u8, weight_decay: u8, accuracy: f64) -> Observation {
        Observation {
            point: GridPos { lr, weight_decay },
            accuracy,
            complete: true,
        }
    }

    #[test]
    fn relatives_sharing_the_optimizer_outweigh_the_others() {
        // The same optimizer did best at (1, 1); an unrelated pair at (3, 3).
        let same = [at(1, 1, 60.0), at(3, 3, 20.0), at(2, 2, 40.0)];
        let unrelated = [at(3, 3, 90.0), at(1, 1, 10.0), at(2, 2, 50.0)];
        let prior = Prior::from_relatives(
            "vit",
            "adamw",
            &[
                Relative {
                    backbone: "resnet",
                    optimizer: "adamw",
                    history: &same,
                },
                Relative {
                    backbone: "convnext",
                    optimizer: "sgd_m",
                    history: &unrelated,
                },
            ],
        );
        // Each relative tried 3 points: it counts half.
        assert!((prior.evidence() - 0.5 * (SAME_OPTIMIZER + UNRELATED)).abs() < 1e-12);
        let best = prior.best_of(&all_points().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            best,
            GridPos {
                lr: 1,
                weight_decay: 1
            }
        );
        assert_eq!(prior.score(best), 1.0);
        let unrelated_best = prior.score(GridPos {
            lr: 3,
            weight_decay: 3,
        });
        let between = prior.score(GridPos {
            lr: 2,
            weight_decay: 2,
        });
        assert!(unrelated_best > 0.0 && unrelated_best < between && between < 1.0);
    }

    #[test]
    fn the_pair_itself_and_thin_or_flat_histories_teach_nothing() {
        let own = [at(0, 0, 10.0), at(1, 1, 20.0), at(2, 2, 30.0)];
        let thin = [at(1, 1, 20.0)];
        let flat = [at(0, 0, 10.0), at(1, 1, 10.0), at(2, 2, 10.0)];
        let relatives = [
            Relative {
                backbone: "vit",
                optimizer: "adamw",
                history: &own,
            },
            Relative {
                backbone: "resnet",
                optimizer: "adamw",
                history: &thin,
            },
            Relative {
                backbone: "resnet",
                optimizer: "adamw",
                history: &flat,
            },
        ];
        let prior = Prior::from_relatives("vit", "adamw", &relatives);
        assert!(prior.is_empty());
        assert_eq!(
            prior.score(GridPos {
                lr: 2,
                weight_decay: 2
            }),
            0.0
        );
        assert_eq!(prior.best_of(&[]), None);
    }
}

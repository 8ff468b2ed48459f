//! Hyperparameter robustness (Sec. 3.1 B, App. A.3): each pair's optimal lr
//! and weight decay as one-hot codes over the optimizer's grid positions,
//! the mode per backbone (over optimizers) and per optimizer (over
//! backbones), and each pair's variation from its group's mode.
//!
//! Grids differ per optimizer, but every grid is five points centred on the
//! optimizer's usual value, so a position (not a value) is what compares
//! across optimizers. A best that `grid_extension` found past a grid's end
//! counts at that end, as the paper's five positions have it, and is
//! flagged.

use bocb_store::{GridPos, GRID_POINTS};
use serde::Serialize;

use super::results::{PairResult, ResultSet};
use super::stats::quantile_linear;
use bocb_spec::ExtendedPos;

/// The grid position in the middle, where ties in a mode go.
const CENTRE: usize = GRID_POINTS / 2;

/// A grid index as a one-hot code over the grid's positions.
pub fn one_hot(index: usize) -> [u8; GRID_POINTS] {
    let mut code = [0; GRID_POINTS];
    code[index] = 1;
    code
}

/// The Manhattan distance between two codes.
pub fn manhattan(a: &[u8; GRID_POINTS], b: &[u8; GRID_POINTS]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| u32::from(x.abs_diff(y)))
        .sum()
}

/// The most common index (the histogram's mode). Ties go to the position
/// nearest the centre, then to the lower one, so the mode never depends on
/// the order of the results. `None` for no indices.
pub fn mode_index(indices: &[usize]) -> Option<usize> {
    let mut counts = [0usize; GRID_POINTS];
    for &i in indices {
        counts[i] += 1;
    }
    (0..GRID_POINTS)
        .filter(|&i| counts[i] > 0)
        .max_by_key(|&i| {
            (
                counts[i],
                std::cmp::Reverse(i.abs_diff(CENTRE)),
                std::cmp::Reverse(i),
            )
        })
}

/// One pair's distance from its group's mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variation {
    /// The other member of the pair (an optimizer in a backbone's group).
    pub name: String,
    pub grid: GridPos,
    /// Where the best lies when it is past the grid's ends (`grid` is then
    /// the nearest end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beyond_grid: Option<ExtendedPos>,
    /// Manhattan distance of the one-hot lr and weight-decay codes from the
    /// mode's: 0, 2 or 4.
    pub manhattan: u32,
    /// |lr index - mode| + |weight-decay index - mode|: how far, not only
    /// whether, the optimum moved.
    pub grid_steps: u32,
}

/// The robustness of one backbone (or optimizer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRobustness {
    pub name: String,
    pub mode_lr: usize,
    pub mode_weight_decay: usize,
    pub variations: Vec<Variation>,
    pub mean_manhattan: f64,
    pub median_manhattan: f64,
    pub mean_grid_steps: f64,
    pub median_grid_steps: f64,
}

/// One member of a group: its name, its optimal grid position, and where
/// that lies when it is past the grid's ends.
pub type Member<'a> = (&'a str, GridPos, Option<ExtendedPos>);

/// Robustness of a group given its members' optimal positions in table
/// order; `None` when no member has a known position.
pub fn group_robustness(name: &str, members: &[Member]) -> Option<GroupRobustness> {
    let lr: Vec<usize> = members.iter().map(|(_, g, _)| usize::from(g.lr)).collect();
    let wd: Vec<usize> = members
        .iter()
        .map(|(_, g, _)| usize::from(g.weight_decay))
        .collect();
    let (mode_lr, mode_wd) = (mode_index(&lr)?, mode_index(&wd)?);
    let variations: Vec<Variation> = members
        .iter()
        .map(|&(member, grid, beyond_grid)| {
            let (l, w) = (usize::from(grid.lr), usize::from(grid.weight_decay));
            Variation {
                name: member.to_string(),
                grid,
                beyond_grid,
                manhattan: manhattan(&one_hot(l), &one_hot(mode_lr))
                    + manhattan(&one_hot(w), &one_hot(mode_wd)),
                grid_steps: (l.abs_diff(mode_lr) + w.abs_diff(mode_wd)) as u32,
            }
        })
        .collect();
    let summary = |values: Vec<f64>| {
        (
            values.iter().sum::<f64>() / values.len() as f64,
            quantile_linear(&values, 0.5),
        )
    };
    let (mean_manhattan, median_manhattan) =
        summary(variations.iter().map(|v| f64::from(v.manhattan)).collect());
    let (mean_grid_steps, median_grid_steps) =
        summary(variations.iter().map(|v| f64::from(v.grid_steps)).collect());
    Some(GroupRobustness {
        name: name.to_string(),
        mode_lr,
        mode_weight_decay: mode_wd,
        variations,
        mean_manhattan,
        median_manhattan,
        mean_grid_steps,
        median_grid_steps,
    })
}

/// Robustness per backbone and per optimizer; pairs without a known grid
/// position are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Robustness {
    pub backbones: Vec<GroupRobustness>,
    pub optimizers: Vec<GroupRobustness>,
}

impl Robustness {
    pub fn new(results: &ResultSet) -> Robustness {
        let position = |b: &str, o: &str| results.get(b, o).and_then(member_position);
        Robustness {
            backbones: results
                .backbones
                .iter()
                .filter_map(|b| {
                    let members: Vec<Member> = results
                        .optimizers
                        .iter()
                        .filter_map(|o| {
                            let (grid, beyond) = position(b, o)?;
                            Some((o.as_str(), grid, beyond))
                        })
                        .collect();
                    group_robustness(b, &members)
                })
                .collect(),
            optimizers: results
                .optimizers
                .iter()
                .filter_map(|o| {
                    let members: Vec<Member> = results
                        .backbones
                        .iter()
                        .filter_map(|b| {
                            let (grid, beyond) = position(b, o)?;
                            Some((b.as_str(), grid, beyond))
                        })
                        .collect();
                    group_robustness(o, &members)
                })
                .collect(),
        }
    }

    pub fn optimizer(&self, name: &str) -> Option<&GroupRobustness> {
        self.optimizers.iter().find(|g| g.name == name)
    }
}

/// A pair's position for the one-hot codes: its grid position, or the
/// nearest end of a best past the grid (flagged).
fn member_position(result: &PairResult) -> Option<(GridPos, Option<ExtendedPos>)> {
    match (result.grid, result.beyond_grid) {
        (Some(grid), _) => Some((grid, None)),
        (None, Some(beyond)) => Some((beyond.clamped(), Some(beyond))),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(lr: u8, weight_decay: u8) -> GridPos {
        GridPos { lr, weight_decay }
    }

    #[test]
    fn one_hot_codes_and_their_distance() {
        assert_eq!(one_hot(0), [1, 0, 0, 0, 0]);
        assert_eq!(one_hot(3), [0, 0, 0, 1, 0]);
        assert_eq!(manhattan(&one_hot(1), &one_hot(1)), 0);
        assert_eq!(manhattan(&one_hot(0), &one_hot(4)), 2);
    }

    #[test]
    fn mode_ties_go_nearest_the_centre_then_lower() {
        assert_eq!(mode_index(&[]), None);
        assert_eq!(mode_index(&[0, 0, 4]), Some(0));
        // 1 and 4 twice each: 1 is nearer the centre (2).
        assert_eq!(mode_index(&[4, 1, 4, 1]), Some(1));
        // 1 and 3 are equally near: the lower wins, whatever the order.
        assert_eq!(mode_index(&[3, 1]), Some(1));
        assert_eq!(mode_index(&[1, 3]), Some(1));
        assert_eq!(mode_index(&[0, 4, 2]), Some(2));
    }

    #[test]
    fn variations_from_the_mode_by_hand() {
        // lr indices 2 2 3 0 -> mode 2; wd indices 1 3 3 1 -> tie between 1
        // and 3, equally near the centre -> 1.
        let members = [
            ("sgd", pos(2, 1), None),
            ("adam", pos(2, 3), None),
            ("lion", pos(3, 3), None),
            ("lars", pos(0, 1), None),
        ];
        let r = group_robustness("r50", &members).unwrap();
        assert_eq!((r.mode_lr, r.mode_weight_decay), (2, 1));
        let manhattan: Vec<u32> = r.variations.iter().map(|v| v.manhattan).collect();
        let steps: Vec<u32> = r.variations.iter().map(|v| v.grid_steps).collect();
        assert_eq!(manhattan, [0, 2, 4, 2]);
        assert_eq!(steps, [0, 2, 3, 2]);
        assert_eq!(r.mean_manhattan, 2.0);
        assert_eq!(r.median_manhattan, 2.0);
        assert_eq!(r.mean_grid_steps, 1.75);
        assert_eq!(r.median_grid_steps, 2.0);
        assert_eq!(group_robustness("none", &[]), None);
    }

    #[test]
    fn a_best_past_the_grid_counts_at_its_end_and_is_flagged() {
        let result = |optimizer: &str, grid, beyond_grid| PairResult {
            backbone: "r18".into(),
            optimizer: optimizer.into(),
            accuracy: 70.0,
            params: Default::default(),
            grid,
            beyond_grid,
            seeds: None,
            p_below_best: None,
            within_noise_of_best: None,
            trial_ids: Vec::new(),
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
        };
        let past = ExtendedPos {
            lr: 5,
            weight_decay: 2,
        };
        let results = ResultSet {
            experiment: "e".into(),
            origin: super::super::results::Origin::Trained,
            backbones: vec!["r18".into()],
            optimizers: vec!["sgd".into(), "adamw".into()],
            results: vec![
                result("sgd", Some(pos(4, 2)), None),
                result("adamw", None, Some(past)),
            ],
        };
        let r = Robustness::new(&results);
        let group = &r.backbones[0];
        // Both at lr position 4, the grid's top: no variation.
        assert_eq!((group.mode_lr, group.mode_weight_decay), (4, 2));
        let adamw = &group.variations[1];
        assert_eq!((adamw.grid, adamw.manhattan), (pos(4, 2), 0));
        assert_eq!(adamw.beyond_grid, Some(past));
        assert_eq!(group.variations[0].beyond_grid, None);
    }
}

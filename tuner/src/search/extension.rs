//! Grids that follow the optimum (`grid_extension`): when a pair's stage-1
//! best lies on an end of its lr or weight-decay grid, the search tries the
//! next x2 step past that end, with the best's other values, until the best
//! is inside what was tried or the steps allowed run out. The configs past
//! the grid are stage-1 trials without a grid position; [`ExtendedPos`]
//! places them on the grid's index scale for the reports.

use std::collections::BTreeMap;

use bocb_search_spaces::OptimizerSpace;
use bocb_store::{GridPos, GRID_POINTS};
use serde::Serialize;

/// The last index of a grid.
const LAST: i32 = GRID_POINTS as i32 - 1;

/// A config's position on its lr and weight-decay grids' index scale,
/// extended past their ends: -1 is one x2 step below index 0, 5 one x2
/// step above index 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExtendedPos {
    pub lr: i32,
    pub weight_decay: i32,
}

impl ExtendedPos {
    /// Where `params` lie on `space`'s grids; `None` when lr or weight decay
    /// is missing or neither a grid value nor a whole number of x2 steps
    /// past an end.
    pub fn of(space: &OptimizerSpace, params: &BTreeMap<String, f64>) -> Option<ExtendedPos> {
        Some(ExtendedPos {
            lr: axis_position(space.lr.values(), *params.get("lr")?)?,
            weight_decay: axis_position(space.weight_decay.values(), *params.get("weight_decay")?)?,
        })
    }

    /// Whether either value lies past its grid's ends.
    pub fn beyond(self) -> bool {
        self.on_grid().is_none()
    }

    /// The grid position, when both values are on the grid.
    pub fn on_grid(self) -> Option<GridPos> {
        let index = |i: i32| u8::try_from(i).ok().filter(|&i| i32::from(i) <= LAST);
        Some(GridPos {
            lr: index(self.lr)?,
            weight_decay: index(self.weight_decay)?,
        })
    }

    /// The nearest grid position (a value past an end goes to that end):
    /// what the one-hot analyses, which keep the grid's five positions, use.
    pub fn clamped(self) -> GridPos {
        let clamp = |i: i32| i.clamp(0, LAST) as u8;
        GridPos {
            lr: clamp(self.lr),
            weight_decay: clamp(self.weight_decay),
        }
    }

    /// `lr +1` / `wd -2`: the steps past the grid's ends, for reports.
    pub fn describe(self) -> String {
        let axis = |name: &str, i: i32| match i {
            i if i > LAST => Some(format!("{name} +{}", i - LAST)),
            i if i < 0 => Some(format!("{name} {i}")),
            _ => None,
        };
        [axis("lr", self.lr), axis("wd", self.weight_decay)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `value`'s index on `grid`, or past its ends in x2 steps.
fn axis_position(grid: &[f64; GRID_POINTS], value: f64) -> Option<i32> {
    if let Some(i) = grid.iter().position(|&g| g == value) {
        return Some(i as i32);
    }
    // A whole number (>= 1) of doublings from `from` to `to`.
    let steps = |from: f64, to: f64| {
        let k = (to / from).log2();
        ((k - k.round()).abs() < 1e-9 && k.round() >= 1.0).then_some(k.round() as i32)
    };
    let last = grid[GRID_POINTS - 1];
    if value > last {
        steps(last, value).map(|k| LAST + k)
    } else if value > 0.0 && value < grid[0] {
        steps(value, grid[0]).map(|k| -k)
    } else {
        None
    }
}

/// The next config past the grid to try for a pair whose stage-1 best so
/// far is `best`: its lr, else its weight decay, one x2 step further out
/// when that value is at an end of what the axis holds, within `max_steps`
/// of the grid's end and not `tried` yet; `None` when there is none (the
/// best is inside, or its side is exhausted).
pub fn next_extension(
    space: &OptimizerSpace,
    best: &BTreeMap<String, f64>,
    max_steps: u8,
    tried: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> Option<BTreeMap<String, f64>> {
    let position = ExtendedPos::of(space, best)?;
    let max_steps = i32::from(max_steps);
    [("lr", position.lr), ("weight_decay", position.weight_decay)]
        .into_iter()
        .find_map(|(axis, index)| {
            let value = best[axis];
            let (next, steps_out) = if index >= LAST {
                (value * 2.0, index + 1 - LAST)
            } else if index <= 0 {
                (value / 2.0, 1 - index)
            } else {
                return None;
            };
            if steps_out > max_steps {
                return None;
            }
            let mut candidate = best.clone();
            candidate.insert(axis.to_string(), next);
            (!tried(&candidate)).then_some(candidate)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_search_spaces::Catalog;

    fn adamw() -> OptimizerSpace {
        Catalog::builtin().optimizer("adamw").unwrap().clone()
    }

    fn params(lr: f64, weight_decay: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("lr".into(), lr), ("weight_decay".into(), weight_decay)])
    }

    #[test]
    fn positions_past_the_ends_count_x2_steps() {
        // AdamW: lr 2.5e-4 ... 4e-3, weight decay 0.0125 ... 0.2.
        let space = adamw();
        let at = |lr, wd| ExtendedPos::of(&space, &params(lr, wd)).unwrap();
        assert_eq!(
            at(1e-3, 0.05).on_grid(),
            Some(GridPos {
                lr: 2,
                weight_decay: 2
            })
        );
        let beyond = at(1.6e-2, 0.0125 / 2.0);
        assert_eq!((beyond.lr, beyond.weight_decay), (6, -1));
        assert!(beyond.beyond());
        assert_eq!(
            beyond.clamped(),
            GridPos {
                lr: 4,
                weight_decay: 0
            }
        );
        assert_eq!(beyond.describe(), "lr +2, wd -1");
        // Off the lattice: not placed.
        assert_eq!(ExtendedPos::of(&space, &params(5e-3, 0.05)), None);
        assert_eq!(ExtendedPos::of(&space, &params(1e-3, 0.03)), None);
    }

    #[test]
    fn extends_the_axis_whose_best_is_on_an_end_until_the_limit() {
        let space = adamw();
        let none_tried = |_: &BTreeMap<String, f64>| false;
        // Inside on both axes: nothing to extend.
        assert_eq!(
            next_extension(&space, &params(1e-3, 0.05), 2, none_tried),
            None
        );
        // lr on the top end: one step up, weight decay kept.
        assert_eq!(
            next_extension(&space, &params(4e-3, 0.05), 2, none_tried),
            Some(params(8e-3, 0.05))
        );
        // Two steps up is the limit of max_steps 2.
        assert_eq!(
            next_extension(&space, &params(8e-3, 0.05), 2, none_tried),
            Some(params(1.6e-2, 0.05))
        );
        assert_eq!(
            next_extension(&space, &params(1.6e-2, 0.05), 2, none_tried),
            None
        );
        // lr's next step tried already: weight decay on its low end goes down.
        let tried = |p: &BTreeMap<String, f64>| p["lr"] == 8e-3;
        assert_eq!(
            next_extension(&space, &params(4e-3, 0.0125), 2, tried),
            Some(params(4e-3, 0.00625))
        );
        assert_eq!(
            next_extension(&space, &params(4e-3, 0.05), 0, none_tried),
            None
        );
    }
}

//! Positions on an optimizer's lr x weight-decay grids, and past their ends.

use std::collections::BTreeMap;

use bocb_search_spaces::OptimizerSpace;
use serde::{Deserialize, Serialize};

/// Number of points on each of an optimizer's lr and weight-decay grids.
pub const GRID_POINTS: usize = 5;

/// A trial's position on its optimizer's lr and weight-decay grids, each
/// index in `0..GRID_POINTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GridPos {
    /// Index on the learning-rate grid.
    pub lr: u8,
    /// Index on the weight-decay grid.
    pub weight_decay: u8,
}

/// The last index of a grid.
pub const LAST_GRID_INDEX: i32 = GRID_POINTS as i32 - 1;

/// A config's position on its lr and weight-decay grids' index scale,
/// extended past their ends: -1 is one x2 step below index 0, 5 one x2
/// step above index 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ExtendedPos {
    pub lr: i32,
    pub weight_decay: i32,
}

impl From<GridPos> for ExtendedPos {
    fn from(p: GridPos) -> Self {
        ExtendedPos {
            lr: i32::from(p.lr),
            weight_decay: i32::from(p.weight_decay),
        }
    }
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
        let index = |i: i32| {
            u8::try_from(i)
                .ok()
                .filter(|&i| i32::from(i) <= LAST_GRID_INDEX)
        };
        Some(GridPos {
            lr: index(self.lr)?,
            weight_decay: index(self.weight_decay)?,
        })
    }

    /// The nearest grid position (a value past an end goes to that end):
    /// what the one-hot analyses, which keep the grid's five positions, use.
    pub fn clamped(self) -> GridPos {
        let clamp = |i: i32| i.clamp(0, LAST_GRID_INDEX) as u8;
        GridPos {
            lr: clamp(self.lr),
            weight_decay: clamp(self.weight_decay),
        }
    }

    /// `lr +1` / `wd -2`: the steps past the grid's ends, for reports.
    pub fn describe(self) -> String {
        let axis = |name: &str, i: i32| match i {
            i if i > LAST_GRID_INDEX => Some(format!("{name} +{}", i - LAST_GRID_INDEX)),
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
        steps(last, value).map(|k| LAST_GRID_INDEX + k)
    } else if value > 0.0 && value < grid[0] {
        steps(value, grid[0]).map(|k| -k)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_search_spaces::Catalog;

    fn params(lr: f64, weight_decay: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("lr".into(), lr), ("weight_decay".into(), weight_decay)])
    }

    #[test]
    fn positions_past_the_ends_count_x2_steps() {
        // AdamW: lr 2.5e-4 ... 4e-3, weight decay 0.0125 ... 0.2.
        let space = Catalog::builtin().optimizer("adamw").unwrap().clone();
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
}

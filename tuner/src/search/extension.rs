//! Grids that follow the optimum (`grid_extension`): when a pair's stage-1
//! best lies on an end of its lr or weight-decay grid, the search tries the
//! next x2 step past that end, with the best's other values, until the best
//! is inside what was tried or the steps allowed run out. The configs past
//! the grid are stage-1 trials without a grid position; [`ExtendedPos`]
//! places them on the grid's index scale for the reports.

use std::collections::BTreeMap;

use bocb_search_spaces::OptimizerSpace;
pub use bocb_spec::ExtendedPos;
use bocb_spec::LAST_GRID_INDEX;

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
    let from = ExtendedPos::of(space, best)?;
    let params_at = |to: ExtendedPos| {
        let mut params = best.clone();
        for (axis, steps) in [
            ("lr", to.lr - from.lr),
            ("weight_decay", to.weight_decay - from.weight_decay),
        ] {
            params.insert(axis.to_string(), best[axis] * 2f64.powi(steps));
        }
        params
    };
    next_position(from, max_steps, |to| tried(&params_at(to))).map(params_at)
}

/// [`next_extension`] on the grids' index scale: the position to try after
/// a best at `best`.
pub fn next_position(
    best: ExtendedPos,
    max_steps: u8,
    tried: impl Fn(ExtendedPos) -> bool,
) -> Option<ExtendedPos> {
    let max_steps = i32::from(max_steps);
    // One step further out from an end, within the limit.
    let out = |index: i32| {
        let (next, steps_out) = if index >= LAST_GRID_INDEX {
            (index + 1, index + 1 - LAST_GRID_INDEX)
        } else if index <= 0 {
            (index - 1, 1 - index)
        } else {
            return None;
        };
        (steps_out <= max_steps).then_some(next)
    };
    let lr = out(best.lr).map(|lr| ExtendedPos { lr, ..best });
    let weight_decay = out(best.weight_decay).map(|weight_decay| ExtendedPos {
        weight_decay,
        ..best
    });
    [lr, weight_decay]
        .into_iter()
        .flatten()
        .find(|&candidate| !tried(candidate))
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

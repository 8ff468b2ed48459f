//! Early-stopping rules: after each epoch a running trial is compared with
//! the pair's other trials and stopped when it is unlikely to become the
//! pair's best. A stopped trial is recorded as such and never counts as a
//! pair's best config.

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::brent::BrentOpt;

use super::{Curve, EarlyStop};

/// Every trial runs to the end.
#[derive(Debug, Default)]
pub struct NeverStop;

impl EarlyStop for NeverStop {
    fn should_stop(&self, _: &[f64], _: &[Curve], _: usize) -> bool {
        false
    }
}

/// Optuna's `MedianPruner`: stop a trial whose best accuracy so far is
/// below the median accuracy of the complete trials at the same epoch.
#[derive(Debug)]
pub struct MedianStop {
    /// Complete trials needed before anything is stopped.
    pub startup_trials: usize,
    /// Epochs every trial runs before it can be stopped.
    pub warmup_epochs: usize,
}

impl Default for MedianStop {
    fn default() -> Self {
        MedianStop {
            startup_trials: 3,
            warmup_epochs: 1,
        }
    }
}

impl EarlyStop for MedianStop {
    fn should_stop(&self, curve: &[f64], others: &[Curve], max_epochs: usize) -> bool {
        let epoch = curve.len();
        if epoch <= self.warmup_epochs || epoch >= max_epochs {
            return false;
        }
        let at_epoch: Vec<f64> = others
            .iter()
            .filter(|c| c.complete && c.accuracies.len() >= epoch)
            .map(|c| c.accuracies[epoch - 1])
            .collect();
        if at_epoch.len() < self.startup_trials {
            return false;
        }
        let best_so_far = curve.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        best_so_far < quantile(&at_epoch, 0.5)
    }
}

/// Asynchronous successive halving (Li et al., 2020) as Ray Tune runs it:
/// rungs at `min_epochs * reduction^k` epochs; a trial reaching a rung
/// stops unless it is in the top `1 / reduction` of the accuracies other
/// trials recorded at that rung.
#[derive(Debug)]
pub struct AshaStop {
    pub min_epochs: usize,
    pub reduction: f64,
}

impl Default for AshaStop {
    fn default() -> Self {
        AshaStop {
            min_epochs: 1,
            reduction: 3.0,
        }
    }
}

impl AshaStop {
    /// Whether `epoch` is a rung below `max_epochs`.
    fn is_rung(&self, epoch: usize, max_epochs: usize) -> bool {
        let mut rung = self.min_epochs.max(1) as f64;
        while (rung.round() as usize) < max_epochs {
            if rung.round() as usize == epoch {
                return true;
            }
            rung *= self.reduction;
        }
        false
    }
}

impl EarlyStop for AshaStop {
    fn should_stop(&self, curve: &[f64], others: &[Curve], max_epochs: usize) -> bool {
        let epoch = curve.len();
        if !self.is_rung(epoch, max_epochs) {
            return false;
        }
        let recorded: Vec<f64> = others
            .iter()
            .filter(|c| c.accuracies.len() >= epoch)
            .map(|c| c.accuracies[epoch - 1])
            .collect();
        if recorded.is_empty() {
            return false;
        }
        curve[epoch - 1] < quantile(&recorded, 1.0 - 1.0 / self.reduction)
    }
}

/// Learning-curve extrapolation (in the spirit of Domhan et al., 2015):
/// fits the power law `y(t) = a - b * t^(-c)` to the accuracies so far by
/// least squares (`a`, `b` in closed form for each `c`, `c` by argmin's
/// Brent search) and stops the trial when the curve predicts a final
/// accuracy below the best complete trial's by more than `margin`.
#[derive(Debug)]
pub struct CurveStop {
    /// Epochs observed before a curve is fitted.
    pub min_epochs: usize,
    /// Accuracy points of slack below the best before a trial is stopped.
    pub margin: f64,
}

impl Default for CurveStop {
    fn default() -> Self {
        CurveStop {
            min_epochs: 3,
            margin: 1.0,
        }
    }
}

impl EarlyStop for CurveStop {
    fn should_stop(&self, curve: &[f64], others: &[Curve], max_epochs: usize) -> bool {
        let epoch = curve.len();
        if epoch < self.min_epochs || epoch >= max_epochs {
            return false;
        }
        let Some(best) = others
            .iter()
            .filter(|c| c.complete)
            .filter_map(|c| c.accuracies.last().copied())
            .reduce(f64::max)
        else {
            return false;
        };
        if curve.iter().any(|&a| a >= best) {
            return false;
        }
        match PowerLaw::fit(curve) {
            Some(law) => law.at(max_epochs as f64) < best - self.margin,
            None => false,
        }
    }
}

/// `y(t) = a - b * t^(-c)`.
#[derive(Debug, Clone, Copy)]
struct PowerLaw {
    a: f64,
    b: f64,
    c: f64,
}

impl PowerLaw {
    fn at(&self, t: f64) -> f64 {
        self.a - self.b * t.powf(-self.c)
    }

    /// Least-squares fit to `ys` at t = 1, 2, ...
    fn fit(ys: &[f64]) -> Option<PowerLaw> {
        let solver = BrentOpt::new(-4.0, 2.0);
        let result = Executor::new(PowerLawError { ys }, solver)
            .configure(|state| state.max_iters(100))
            .run()
            .ok()?;
        let log_c = *result.state().get_best_param()?;
        linear_part(ys, log_c.exp())
    }
}

/// For a fixed exponent `c` the law is linear in `a` and `b`: ordinary
/// least squares of `y` on `x = t^(-c)`.
fn linear_part(ys: &[f64], c: f64) -> Option<PowerLaw> {
    let n = ys.len() as f64;
    let xs: Vec<f64> = (1..=ys.len()).map(|t| (t as f64).powf(-c)).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx < 1e-12 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    Some(PowerLaw {
        a: my - slope * mx,
        b: -slope,
        c,
    })
}

/// Squared error of the best power law with exponent `exp(log_c)`.
struct PowerLawError<'a> {
    ys: &'a [f64],
}

impl CostFunction for PowerLawError<'_> {
    type Param = f64;
    type Output = f64;

    fn cost(&self, log_c: &f64) -> Result<f64, ArgminError> {
        Ok(match linear_part(self.ys, log_c.exp()) {
            Some(law) => self
                .ys
                .iter()
                .enumerate()
                .map(|(i, y)| (law.at((i + 1) as f64) - y).powi(2))
                .sum(),
            None => f64::MAX,
        })
    }
}

/// The `q` quantile of `values` by linear interpolation (NumPy's default).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(accuracies: &[f64]) -> Curve<'_> {
        Curve {
            accuracies,
            complete: true,
        }
    }

    #[test]
    fn quantiles_interpolate_linearly() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[10.0], 0.9), 10.0);
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 2.0 / 3.0) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn median_stops_below_the_median_after_warmup_and_startup() {
        let rule = MedianStop::default();
        let done = [
            [20.0, 40.0, 50.0, 55.0],
            [30.0, 45.0, 52.0, 60.0],
            [10.0, 20.0, 30.0, 35.0],
        ];
        let others: Vec<Curve> = done.iter().map(|c| complete(c)).collect();
        // Median at epoch 2 is 40.
        assert!(rule.should_stop(&[15.0, 35.0], &others, 4));
        assert!(!rule.should_stop(&[15.0, 41.0], &others, 4));
        // The best so far counts, not the last epoch (median at epoch 3: 50).
        assert!(!rule.should_stop(&[15.0, 51.0, 20.0], &others, 4));
        assert!(rule.should_stop(&[15.0, 41.0, 20.0], &others, 4));
        // Never in the warm-up epoch, with too few complete trials, or at the end.
        assert!(!rule.should_stop(&[1.0], &others, 4));
        assert!(!rule.should_stop(&[15.0, 35.0], &others[..2], 4));
        assert!(!rule.should_stop(&[1.0, 1.0, 1.0, 1.0], &others, 4));
        // Stopped trials are not part of the median.
        let stopped = [Curve {
            accuracies: &[99.0, 99.0],
            complete: false,
        }];
        let mut mixed = others.clone();
        mixed.extend(stopped);
        assert!(rule.should_stop(&[15.0, 35.0], &mixed, 4));
    }

    #[test]
    fn asha_keeps_the_top_third_at_each_rung() {
        let rule = AshaStop::default();
        // 9 epochs: rungs at 1 and 3 (9 is the end).
        assert!(rule.is_rung(1, 9) && rule.is_rung(3, 9));
        assert!(!rule.is_rung(2, 9) && !rule.is_rung(9, 9));
        let seen = [[10.0, 20.0, 30.0], [20.0, 30.0, 40.0], [30.0, 40.0, 50.0]];
        let others: Vec<Curve> = seen
            .iter()
            .map(|c| Curve {
                accuracies: c,
                complete: false,
            })
            .collect();
        // Cutoff at rung 1: the 2/3 quantile of 10, 20, 30 is 23.33.
        assert!(rule.should_stop(&[23.0], &others, 9));
        assert!(!rule.should_stop(&[24.0], &others, 9));
        // Epoch 2 is not a rung.
        assert!(!rule.should_stop(&[24.0, 0.0], &others, 9));
        // The first trial at a rung always continues.
        assert!(!rule.should_stop(&[0.0], &[], 9));
    }

    #[test]
    fn power_law_fit_recovers_a_clean_curve() {
        let truth = PowerLaw {
            a: 70.0,
            b: 50.0,
            c: 0.8,
        };
        let ys: Vec<f64> = (1..=6).map(|t| truth.at(t as f64)).collect();
        let law = PowerLaw::fit(&ys).unwrap();
        assert!((law.at(50.0) - truth.at(50.0)).abs() < 0.1, "{law:?}");
    }

    #[test]
    fn curve_stops_trials_predicted_to_end_below_the_best() {
        let rule = CurveStop::default();
        let best = [40.0, 55.0, 62.0, 66.0, 68.0, 69.0, 70.0, 70.5, 71.0, 71.0];
        let others = [complete(&best)];
        // Flattening out near 40: predicted far below 71.
        assert!(rule.should_stop(&[30.0, 37.0, 39.0, 40.0], &others, 10));
        // Rising steeply: predicted to pass the best.
        assert!(!rule.should_stop(&[20.0, 45.0, 60.0, 68.0], &others, 10));
        // Too few epochs, no complete trial, or already above the best.
        assert!(!rule.should_stop(&[30.0, 37.0], &others, 10));
        assert!(!rule.should_stop(&[30.0, 37.0, 39.0, 40.0], &[], 10));
        assert!(!rule.should_stop(&[30.0, 72.0, 39.0], &others, 10));
    }
}

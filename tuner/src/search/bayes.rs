//! Bayesian optimisation over the 5 x 5 grid: a Gaussian-process surrogate
//! (Matérn-5/2 kernel with one length scale per axis) of accuracy over the
//! grid coordinates, its kernel hyperparameters fitted to the history by
//! maximising the log marginal likelihood with argmin's Nelder-Mead, and
//! the untried point of highest expected improvement (of the accuracy a
//! trial would record) trained next. With a [`Prior`] from the pair's
//! relatives, the search starts at the point they favour, the surrogate's
//! mean follows their map, scaled to the pair's own results (a fitted,
//! non-negative slope), so the process models only where the pair departs
//! from its relatives, and until the pair has a few results of its own the
//! kernel is the relatives' (how far accuracy carries along each axis, how
//! noisy it is).

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::neldermead::NelderMead;
use bocb_store::{GridPos, GRID_POINTS};
use rand::seq::IndexedRandom;

use super::{all_points, step_rng, untried, warm_up, Observation, Prior, Strategy};

/// Observations before the surrogate is used: the centre, then random.
const STARTUP: usize = 3;
/// Exploration margin of expected improvement, in standard deviations of
/// the observed accuracies.
const XI: f64 = 0.01;
/// Nelder-Mead iterations for the kernel fit; the problem has 4 unknowns.
const FIT_ITERATIONS: u64 = 300;
/// Observations before the slope of the prior mean is fitted; until then
/// the relatives' map is taken at face value.
const SLOPE_AFTER: usize = 2;
/// Observations before a pair with relatives fits its own kernel; until
/// then it uses theirs.
const OWN_KERNEL_AFTER: usize = 4;
/// Results a pair has before its expected improvement may end its search
/// (`min_expected_gain`), unless its relatives are thorough: a model
/// fitted to a pair's own first few results, or guided by relatives that
/// tried as few, is sure of itself too soon (on the recorded micro grid,
/// one pair at a time with transfer at budget 6, ending from the 3rd
/// result found the best in 76.2% of searches, against 90.6% without
/// ending; `bayes` alone at budget 12, ending from the 8th found it in 90%).
const LEAST_BEFORE_ENDING: usize = 8;
/// Configs the relatives tried on average (by weight) for them to count
/// as thorough, so that a pair's search may end from its [`STARTUP`]th
/// result: about half the grid, as an earlier experiment's whole grids
/// are and a budgeted search's are not.
const THOROUGH_RELATIVES: f64 = 12.0;
/// The largest slope of the prior mean, in standardised accuracy per
/// standard deviation of the prior's scores.
const MAX_SLOPE: f64 = 1.5;

#[derive(Debug)]
pub struct BayesSearch {
    seed: u64,
    min_expected_gain: Option<f64>,
}

impl BayesSearch {
    pub fn new(seed: u64) -> Self {
        BayesSearch {
            seed,
            min_expected_gain: None,
        }
    }

    /// Ends the pair's search, once it has [`LEAST_BEFORE_ENDING`] results
    /// ([`STARTUP`] with thorough relatives), when no untried point is
    /// expected to beat its best by more than `gain` accuracy points
    /// (`budget: { min_expected_gain }`).
    pub fn ending_below(mut self, gain: Option<f64>) -> Self {
        self.min_expected_gain = gain;
        self
    }
}

impl Strategy for BayesSearch {
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
        let Some(gp) = Surrogate::fit(history, prior) else {
            // A singular kernel matrix even with the largest noise: fall
            // back to exploring.
            return open.choose(&mut rng).copied();
        };
        let best = gp.targets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let scores: Vec<f64> = open
            .iter()
            .map(|&p| gp.expected_improvement(p, best))
            .collect();
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if let Some(gain) = self.min_expected_gain {
            let least = if prior.mean_tried() >= THOROUGH_RELATIVES {
                STARTUP
            } else {
                LEAST_BEFORE_ENDING
            };
            if history.len() >= least && top * gp.scale < gain {
                return None;
            }
        }
        let ties: Vec<GridPos> = open
            .iter()
            .zip(&scores)
            .filter(|(_, &s)| s >= top)
            .map(|(&p, _)| p)
            .collect();
        ties.choose(&mut rng).copied()
    }
}

/// `history`'s accuracies, standardised, as a Gaussian process fitted to
/// them alone sees them: its posterior mean at every grid point
/// (lr-major); `None` when the kernel matrix is singular.
pub(super) fn smoothed(history: &[Observation]) -> Option<(Vec<f64>, [f64; 4])> {
    let gp = Surrogate::fit(history, &Prior::default())?;
    Some((
        all_points().map(|p| gp.predict(p).0).collect(),
        gp.kernel.to_log(),
    ))
}

/// A grid point's coordinates in the unit square.
fn coords(p: GridPos) -> [f64; 2] {
    let scale = (GRID_POINTS - 1) as f64;
    [p.lr as f64 / scale, p.weight_decay as f64 / scale]
}

/// Kernel hyperparameters: length scales per axis, signal and noise
/// standard deviations (of the standardised accuracies).
#[derive(Debug, Clone, Copy)]
struct Kernel {
    length: [f64; 2],
    signal: f64,
    noise: f64,
}

impl Kernel {
    /// From unconstrained log-parameters, clamped to sensible ranges so the
    /// optimiser cannot wander into degenerate kernels: no length scale
    /// below one grid step (0.25; shorter ones say nothing between the
    /// points) and some noise (repeated trainings differ).
    fn from_log(theta: &[f64]) -> Kernel {
        let clamp = |v: f64, lo: f64, hi: f64| v.exp().clamp(lo, hi);
        Kernel {
            length: [clamp(theta[0], 0.25, 5.0), clamp(theta[1], 0.25, 5.0)],
            signal: clamp(theta[2], 0.1, 10.0),
            noise: clamp(theta[3], 0.05, 1.0),
        }
    }

    fn to_log(self) -> [f64; 4] {
        [
            self.length[0].ln(),
            self.length[1].ln(),
            self.signal.ln(),
            self.noise.ln(),
        ]
    }

    /// Matérn-5/2 covariance of two points.
    fn cov(&self, a: [f64; 2], b: [f64; 2]) -> f64 {
        let r = ((a[0] - b[0]) / self.length[0]).hypot((a[1] - b[1]) / self.length[1]);
        let s = 5f64.sqrt() * r;
        self.signal * self.signal * (1.0 + s + s * s / 3.0) * (-s).exp()
    }
}

/// The surrogate's mean before the process: `offset + slope * feature`,
/// where the feature is the prior's score standardised over the grid (0
/// everywhere without a prior).
#[derive(Debug, Clone)]
struct PriorMean {
    prior: Prior,
    /// Mean and standard deviation of the prior's scores over the grid;
    /// `None` when they do not vary (no prior).
    scale: Option<(f64, f64)>,
    offset: f64,
    slope: f64,
}

impl PriorMean {
    fn feature(&self, p: GridPos) -> f64 {
        self.scale
            .map_or(0.0, |(mean, std)| (self.prior.score(p) - mean) / std)
    }

    fn at(&self, p: GridPos) -> f64 {
        self.offset + self.slope * self.feature(p)
    }

    /// Fitted to the standardised `targets` of `points`: the slope once
    /// there are [`SLOPE_AFTER`] of them (1 before), the offset always.
    fn fit(prior: &Prior, points: &[GridPos], targets: &[f64]) -> PriorMean {
        let n = (GRID_POINTS * GRID_POINTS) as f64;
        let mean = all_points().map(|p| prior.score(p)).sum::<f64>() / n;
        let std = (all_points()
            .map(|p| (prior.score(p) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let mut fitted = PriorMean {
            prior: prior.clone(),
            scale: (std > 1e-9).then_some((mean, std)),
            offset: 0.0,
            slope: 0.0,
        };
        if fitted.scale.is_none() {
            return fitted;
        }
        let xs: Vec<f64> = points.iter().map(|&p| fitted.feature(p)).collect();
        let m = xs.len() as f64;
        let (x_mean, y_mean) = (xs.iter().sum::<f64>() / m, targets.iter().sum::<f64>() / m);
        let sxx: f64 = xs.iter().map(|x| (x - x_mean).powi(2)).sum();
        let sxy: f64 = xs
            .iter()
            .zip(targets)
            .map(|(x, y)| (x - x_mean) * (y - y_mean))
            .sum();
        fitted.slope = match (xs.len() >= SLOPE_AFTER, sxx > 1e-9) {
            (false, _) => 1.0,
            (true, true) => (sxy / sxx).clamp(0.0, MAX_SLOPE),
            (true, false) => 0.0,
        };
        fitted.offset = y_mean - fitted.slope * x_mean;
        fitted
    }
}

/// A fitted Gaussian process over standardised accuracies, around a mean
/// that follows the prior.
struct Surrogate {
    kernel: Kernel,
    inputs: Vec<[f64; 2]>,
    /// Standardised accuracies of `inputs`.
    targets: Vec<f64>,
    /// Accuracy points per standardised unit.
    scale: f64,
    mean: PriorMean,
    /// Cholesky factor of the kernel matrix (with noise).
    chol: Vec<Vec<f64>>,
    /// K⁻¹ (y - mean).
    alpha: Vec<f64>,
}

impl Surrogate {
    fn fit(history: &[Observation], prior: &Prior) -> Option<Surrogate> {
        let points: Vec<GridPos> = history.iter().map(|o| o.point).collect();
        let inputs: Vec<[f64; 2]> = points.iter().map(|&p| coords(p)).collect();
        let raw: Vec<f64> = history.iter().map(|o| o.accuracy).collect();
        let n = raw.len() as f64;
        let mean = raw.iter().sum::<f64>() / n;
        let std = (raw.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n).sqrt();
        let std = if std > 1e-9 { std } else { 1.0 };
        let targets: Vec<f64> = raw.iter().map(|a| (a - mean) / std).collect();
        let prior_mean = PriorMean::fit(prior, &points, &targets);
        let residuals: Vec<f64> = points
            .iter()
            .zip(&targets)
            .map(|(&p, y)| y - prior_mean.at(p))
            .collect();

        // Four kernel parameters cannot be fitted to fewer results; the
        // relatives' fits (the same experiment) are the better guess.
        let kernel = match prior.kernel() {
            Some(theta) if history.len() < OWN_KERNEL_AFTER => Kernel::from_log(&theta),
            _ => {
                let start = [(0.5f64).ln(), (0.5f64).ln(), 0.0, (0.1f64).ln()];
                fit_kernel(&inputs, &residuals, &start).unwrap_or(Kernel::from_log(&start))
            }
        };
        let (chol, alpha) = factor(&kernel, &inputs, &residuals)?;
        Some(Surrogate {
            kernel,
            inputs,
            targets,
            scale: std,
            mean: prior_mean,
            chol,
            alpha,
        })
    }

    /// Posterior mean and standard deviation of the latent function at `p`.
    fn predict(&self, p: GridPos) -> (f64, f64) {
        let x = coords(p);
        let k: Vec<f64> = self
            .inputs
            .iter()
            .map(|&xi| self.kernel.cov(x, xi))
            .collect();
        let mean = self.mean.at(p) + k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum::<f64>();
        let v = forward_substitute(&self.chol, &k);
        let var = self.kernel.cov(x, x) - v.iter().map(|v| v * v).sum::<f64>();
        (mean, var.max(1e-12).sqrt())
    }

    /// Expected improvement of the accuracy a trial at `p` would record,
    /// noise included: the grid's best is the best recorded accuracy, so a
    /// row of equally good points is worth sweeping for its luckiest one.
    fn expected_improvement(&self, p: GridPos, best: f64) -> f64 {
        let (mean, sd) = self.predict(p);
        let sd = sd.hypot(self.kernel.noise);
        let gain = mean - best - XI;
        let z = gain / sd;
        let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        gain * cdf + sd * pdf
    }
}

/// The negative log marginal likelihood of the targets under a kernel.
struct NegLogLikelihood<'a> {
    inputs: &'a [[f64; 2]],
    targets: &'a [f64],
}

impl CostFunction for NegLogLikelihood<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, ArgminError> {
        let kernel = Kernel::from_log(theta);
        let Some((chol, alpha)) = factor(&kernel, self.inputs, self.targets) else {
            return Ok(f64::MAX);
        };
        let fit: f64 = self.targets.iter().zip(&alpha).map(|(y, a)| y * a).sum();
        let log_det: f64 = chol.iter().enumerate().map(|(i, row)| row[i].ln()).sum();
        Ok(0.5 * fit + log_det)
    }
}

fn fit_kernel(inputs: &[[f64; 2]], targets: &[f64], start: &[f64]) -> Option<Kernel> {
    // The initial simplex: the start and one step of 1 (a factor e) along each axis.
    let mut simplex = vec![start.to_vec()];
    for axis in 0..start.len() {
        let mut vertex = start.to_vec();
        vertex[axis] += 1.0;
        simplex.push(vertex);
    }
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-6).ok()?;
    let result = Executor::new(NegLogLikelihood { inputs, targets }, solver)
        .configure(|state| state.max_iters(FIT_ITERATIONS))
        .run()
        .ok()?;
    result.state().get_best_param().map(|p| Kernel::from_log(p))
}

/// Cholesky factor of the noisy kernel matrix and K⁻¹ y, or `None` when the
/// matrix is not positive definite.
fn factor(
    kernel: &Kernel,
    inputs: &[[f64; 2]],
    targets: &[f64],
) -> Option<(Vec<Vec<f64>>, Vec<f64>)> {
    let n = inputs.len();
    let mut matrix: Vec<Vec<f64>> = inputs
        .iter()
        .map(|&a| inputs.iter().map(|&b| kernel.cov(a, b)).collect())
        .collect();
    for (i, row) in matrix.iter_mut().enumerate() {
        row[i] += kernel.noise * kernel.noise;
    }
    let chol = cholesky(&matrix)?;
    let z = forward_substitute(&chol, targets);
    // Back substitution with Lᵀ.
    let mut alpha = vec![0.0; n];
    for i in (0..n).rev() {
        let tail: f64 = (i + 1..n).map(|j| chol[j][i] * alpha[j]).sum();
        alpha[i] = (z[i] - tail) / chol[i][i];
    }
    Some((chol, alpha))
}

/// Lower-triangular L with L Lᵀ = `matrix`, or `None` if it is not
/// positive definite.
fn cholesky(matrix: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = matrix.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = matrix[i][i] - dot;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (matrix[i][j] - dot) / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves L z = b for lower-triangular L.
fn forward_substitute(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut z = vec![0.0; b.len()];
    for i in 0..b.len() {
        let head: f64 = (0..i).map(|k| l[i][k] * z[k]).sum();
        z[i] = (b[i] - head) / l[i][i];
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        let m = vec![
            vec![4.0, 2.0, 0.4],
            vec![2.0, 5.0, 1.0],
            vec![0.4, 1.0, 3.0],
        ];
        let l = cholesky(&m).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i][k] * l[j][k]).sum();
                assert!((v - m[i][j]).abs() < 1e-12);
            }
        }
        assert!(cholesky(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_none());
    }

    /// With a gain floor the search proposes what it would without one,
    /// and ends once nothing untried is expected to beat its best by the
    /// floor, having found the peak.
    #[test]
    fn a_gain_floor_ends_the_search_once_nothing_is_expected_to_beat_the_best() {
        use crate::search::best_complete;
        use crate::search::tests::run;
        let endless = run(&mut BayesSearch::new(1), 25);
        let ended = run(&mut BayesSearch::new(1).ending_below(Some(0.5)), 25);
        assert_eq!(endless.len(), 25);
        assert!(
            (LEAST_BEFORE_ENDING..25).contains(&ended.len()),
            "{}",
            ended.len()
        );
        assert_eq!(ended[..], endless[..ended.len()]);
        assert_eq!(
            best_complete(&ended).unwrap().point,
            GridPos {
                lr: 1,
                weight_decay: 3
            }
        );
    }

    #[test]
    fn surrogate_interpolates_and_is_uncertain_far_from_data() {
        let at = |lr, weight_decay, accuracy| Observation {
            point: GridPos { lr, weight_decay },
            accuracy,
            complete: true,
        };
        let history = [
            at(0, 0, 40.0),
            at(2, 2, 70.0),
            at(4, 4, 45.0),
            at(2, 0, 60.0),
            at(0, 4, 50.0),
        ];
        let gp = Surrogate::fit(&history, &Prior::default()).unwrap();
        let (m_hi, sd_seen) = gp.predict(history[1].point);
        let (m_lo, _) = gp.predict(history[0].point);
        assert!(m_hi > m_lo, "the fit keeps the observed order");
        let (_, sd_far) = gp.predict(GridPos {
            lr: 4,
            weight_decay: 0,
        });
        assert!(sd_far > sd_seen, "{sd_far} vs {sd_seen}");
        // Expected improvement is never negative and is highest away from
        // the worst observations.
        let best = gp.targets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ei_near_best = gp.expected_improvement(
            GridPos {
                lr: 2,
                weight_decay: 1,
            },
            best,
        );
        let ei_near_worst = gp.expected_improvement(
            GridPos {
                lr: 0,
                weight_decay: 1,
            },
            best,
        );
        assert!(ei_near_worst >= 0.0);
        assert!(ei_near_best > ei_near_worst);
    }
}

//! The few statistics the analyses share: means, spreads, quantiles and
//! Student's t distribution (for seed confidence intervals and Welch's test).

/// Arithmetic mean; NaN for no values.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Population standard deviation (divides by n), as Table 1's Std row.
pub fn population_std(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

/// Sample variance (divides by n - 1); `None` below two values.
pub fn sample_variance(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values);
    Some(values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64)
}

/// Quantile `q` in [0, 1] by linear interpolation between closest ranks
/// (numpy's default): position `q (n - 1)` in the sorted values. NaN for
/// no values.
pub fn quantile_linear(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    sorted[below] + (position - below as f64) * (sorted[above] - sorted[below])
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, nine coefficients;
/// about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |sum, (i, c)| {
            sum + c / (x + i as f64 + 1.0)
        });
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The regularized incomplete beta function I_x(a, b), by its continued
/// fraction (modified Lentz), on the side where it converges fast.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut fraction = d;
    for m in 1..300 {
        let m = f64::from(m);
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            fraction *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * fraction / a
}

/// P(T <= t) for Student's t with `df` degrees of freedom (df > 0, not
/// necessarily whole: Welch's test gives fractional ones).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5);
    if t > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p` quantile of Student's t with `df` degrees of freedom, by
/// bisection on the CDF (monotone, so this cannot miss).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (-1e7_f64, 1e7_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn spreads_and_quantiles_match_hand_computation() {
        let values = [1.0, 2.0, 4.0, 7.0];
        assert_eq!(mean(&values), 3.5);
        // Squared deviations 6.25 + 2.25 + 0.25 + 12.25 = 21.
        assert!(close(
            population_std(&values),
            (21.0_f64 / 4.0).sqrt(),
            1e-12
        ));
        assert!(close(sample_variance(&values).unwrap(), 7.0, 1e-12));
        assert_eq!(sample_variance(&[3.0]), None);
        // Positions q (n - 1) in [1, 2, 4, 7]: 0.75 -> 1.75, 2.25, 0 and 3.
        assert!(close(quantile_linear(&values, 0.25), 1.75, 1e-12));
        assert!(close(quantile_linear(&values, 0.75), 4.75, 1e-12));
        assert_eq!(quantile_linear(&[7.0, 1.0, 4.0, 2.0], 0.0), 1.0);
        assert_eq!(quantile_linear(&values, 1.0), 7.0);
        assert_eq!(quantile_linear(&[5.0], 0.25), 5.0);
    }

    #[test]
    fn student_t_matches_printed_tables() {
        // Cauchy (df 1): P(T <= 1) = 3/4 exactly.
        assert!(close(student_t_cdf(1.0, 1.0), 0.75, 1e-12));
        assert!(close(student_t_cdf(-1.0, 1.0), 0.25, 1e-12));
        assert!(close(student_t_cdf(0.0, 5.0), 0.5, 1e-12));
        // df 2 has the closed form 1/2 + t / (2 sqrt(2 + t^2)).
        let t = 1.3;
        let closed = 0.5 + t / (2.0 * (2.0_f64 + t * t).sqrt());
        assert!(close(student_t_cdf(t, 2.0), closed, 1e-12));
        // Two-sided 95% critical values from any t table.
        assert!(close(student_t_quantile(0.975, 1.0), 12.7062, 1e-4));
        assert!(close(student_t_quantile(0.975, 2.0), 4.3027, 1e-4));
        assert!(close(student_t_quantile(0.975, 10.0), 2.2281, 1e-4));
        assert!(close(student_t_quantile(0.05, 4.0), -2.1318, 1e-4));
    }
}

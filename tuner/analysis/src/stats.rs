//! The few statistics the analyses share: means, spreads, quantiles and
//! Student's t distribution (for seed confidence intervals and Welch's test).

use statrs::distribution::{ContinuousCDF, StudentsT};

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

/// P(T <= t) for Student's t with `df` degrees of freedom (df > 0, not
/// necessarily whole: Welch's test gives fractional ones).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    students_t(df).cdf(t)
}

/// The `p` quantile of Student's t with `df` degrees of freedom.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    students_t(df).inverse_cdf(p)
}

fn students_t(df: f64) -> StudentsT {
    // Callers pass df > 0 (n - 1 for n >= 2, or Welch's positive estimate).
    StudentsT::new(0.0, 1.0, df).expect("Student's t needs degrees of freedom > 0")
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

//! Table 1's statistics: per backbone over optimizers (its columns) and per
//! optimizer over backbones (its rows), the mean, std and range after
//! removing the single worst result, the top-4, and the failures.

use std::fmt;

use serde::Serialize;

use super::results::ResultSet;
use super::stats::{mean, population_std, quantile_linear};

/// γ of Eq. (1) on CIFAR (App. A.1; 1 on ImageNet).
pub const CIFAR_GAMMA: f64 = 3.0;

/// How failures (BOCB cases) are told apart from ordinary results.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum FailureRule {
    /// Eq. (1): r < max(R) - min(Q75(R) - Q25(R), γ).
    Eq1 { gamma: f64 },
    /// Tukey's outlier fence: r < Q25(R) - 1.5 (Q75(R) - Q25(R)).
    Tukey,
}

impl FailureRule {
    /// The accuracy below which a result of a group with these quartiles
    /// and best fails.
    pub fn threshold(self, q25: f64, q75: f64, best: f64) -> f64 {
        let iqr = q75 - q25;
        match self {
            FailureRule::Eq1 { gamma } => best - iqr.min(gamma),
            FailureRule::Tukey => q25 - 1.5 * iqr,
        }
    }
}

impl fmt::Display for FailureRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureRule::Eq1 { gamma } => write!(
                f,
                "Eq. (1): r < max(R) - min(Q75(R) - Q25(R), γ) with γ = {gamma}"
            ),
            FailureRule::Tukey => f.write_str("Tukey: r < Q25(R) - 1.5 (Q75(R) - Q25(R))"),
        }
    }
}

/// The statistics of one backbone's (or optimizer's) results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    pub name: String,
    /// Results in the group.
    pub count: usize,
    /// Mean after removing the single worst result (of all when only one).
    pub mean: f64,
    /// Population std after removing the worst.
    pub std: f64,
    /// Max - min after removing the worst.
    pub range: f64,
    /// The member whose result was removed (the first in table order when
    /// several share the lowest); `None` for a single result.
    pub worst_removed: Option<String>,
    /// The best four members, best first (table order breaks ties).
    pub top4: Vec<String>,
    /// Members whose result fails under the report's rule.
    pub failures: Vec<String>,
    /// Quartiles over all results of the group (linear interpolation).
    pub q25: f64,
    pub q75: f64,
    /// Results below this fail.
    pub failure_threshold: f64,
}

/// Statistics of a group given its members' results in table order.
/// `None` for an empty group.
pub fn group_stats(name: &str, members: &[(&str, f64)], rule: FailureRule) -> Option<GroupStats> {
    let values: Vec<f64> = members.iter().map(|&(_, v)| v).collect();
    let best = values.iter().copied().reduce(f64::max)?;
    let worst_index = (members.len() > 1).then(|| {
        (0..values.len())
            .reduce(|w, i| if values[i] < values[w] { i } else { w })
            .expect("non-empty")
    });
    let kept: Vec<f64> = values
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != worst_index)
        .map(|(_, &v)| v)
        .collect();
    let mut ranked: Vec<usize> = (0..members.len()).collect();
    // Stable: table order breaks ties.
    ranked.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let (q25, q75) = (
        quantile_linear(&values, 0.25),
        quantile_linear(&values, 0.75),
    );
    let failure_threshold = rule.threshold(q25, q75, best);
    Some(GroupStats {
        name: name.to_string(),
        count: members.len(),
        mean: mean(&kept),
        std: population_std(&kept),
        range: kept.iter().copied().fold(f64::MIN, f64::max)
            - kept.iter().copied().fold(f64::MAX, f64::min),
        worst_removed: worst_index.map(|i| members[i].0.to_string()),
        top4: ranked
            .iter()
            .take(4)
            .map(|&i| members[i].0.to_string())
            .collect(),
        failures: members
            .iter()
            .filter(|&&(_, v)| v < failure_threshold)
            .map(|&(n, _)| n.to_string())
            .collect(),
        q25,
        q75,
        failure_threshold,
    })
}

/// Table 1's statistics of a result set under one failure rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table1Stats {
    pub failure_rule: FailureRule,
    /// Per backbone, over its optimizers (the table's columns).
    pub backbones: Vec<GroupStats>,
    /// Per optimizer, over its backbones (the table's rows).
    pub optimizers: Vec<GroupStats>,
}

impl Table1Stats {
    pub fn new(results: &ResultSet, rule: FailureRule) -> Table1Stats {
        let column = |backbone: &String| {
            let members: Vec<(&str, f64)> = results
                .optimizers
                .iter()
                .filter_map(|o| Some((o.as_str(), results.get(backbone, o)?.accuracy)))
                .collect();
            group_stats(backbone, &members, rule)
        };
        let row = |optimizer: &String| {
            let members: Vec<(&str, f64)> = results
                .backbones
                .iter()
                .filter_map(|b| Some((b.as_str(), results.get(b, optimizer)?.accuracy)))
                .collect();
            group_stats(optimizer, &members, rule)
        };
        Table1Stats {
            failure_rule: rule,
            backbones: results.backbones.iter().filter_map(column).collect(),
            optimizers: results.optimizers.iter().filter_map(row).collect(),
        }
    }

    pub fn backbone(&self, name: &str) -> Option<&GroupStats> {
        self.backbones.iter().find(|g| g.name == name)
    }

    /// Whether `optimizer` fails with `backbone` (judged in the backbone's
    /// column, as Table 1 marks failures).
    pub fn fails(&self, backbone: &str, optimizer: &str) -> bool {
        self.backbone(backbone)
            .is_some_and(|g| g.failures.iter().any(|f| f == optimizer))
    }

    /// Whether `optimizer` is among `backbone`'s top-4.
    pub fn in_top4(&self, backbone: &str, optimizer: &str) -> bool {
        self.backbone(backbone)
            .is_some_and(|g| g.top4.iter().any(|f| f == optimizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: [(&str, f64); 6] = [
        ("a", 80.0),
        ("b", 78.0),
        ("c", 50.0),
        ("d", 79.0),
        ("e", 76.0),
        ("f", 80.0),
    ];

    #[test]
    fn statistics_after_removing_the_worst_by_hand() {
        let stats = group_stats("bb", &GROUP, FailureRule::Eq1 { gamma: 3.0 }).unwrap();
        assert_eq!(stats.worst_removed.as_deref(), Some("c"));
        // Kept: 80 78 79 76 80 -> mean 393 / 5 = 78.6; squared deviations
        // 1.96 + 0.36 + 0.16 + 6.76 + 1.96 = 11.2, / 5 = 2.24.
        assert!((stats.mean - 78.6).abs() < 1e-12);
        assert!((stats.std - 2.24_f64.sqrt()).abs() < 1e-12);
        assert_eq!(stats.range, 4.0);
        // a and f tie at 80: table order keeps a first.
        assert_eq!(stats.top4, ["a", "f", "d", "b"]);
        // Sorted 50 76 78 79 80 80: Q25 at position 1.25 = 76 + 0.25 * 2 =
        // 76.5, Q75 at 3.75 = 79 + 0.75 * 1 = 79.75; IQR 3.25.
        assert!((stats.q25 - 76.5).abs() < 1e-12);
        assert!((stats.q75 - 79.75).abs() < 1e-12);
        // Eq. (1): 80 - min(3.25, 3) = 77, so 76 fails too, not only 50.
        assert_eq!(stats.failure_threshold, 77.0);
        assert_eq!(stats.failures, ["c", "e"]);
        // A larger γ uses the IQR: 80 - 3.25 = 76.75, same failures.
        let wide = group_stats("bb", &GROUP, FailureRule::Eq1 { gamma: 10.0 }).unwrap();
        assert_eq!(wide.failure_threshold, 76.75);
        // Tukey: 76.5 - 1.5 * 3.25 = 71.625, only the outlier.
        let tukey = group_stats("bb", &GROUP, FailureRule::Tukey).unwrap();
        assert_eq!(tukey.failure_threshold, 71.625);
        assert_eq!(tukey.failures, ["c"]);
    }

    #[test]
    fn small_groups() {
        assert_eq!(group_stats("x", &[], FailureRule::Tukey), None);
        let one = group_stats("x", &[("a", 70.0)], FailureRule::Tukey).unwrap();
        assert_eq!(one.worst_removed, None);
        assert_eq!((one.mean, one.std, one.range), (70.0, 0.0, 0.0));
        assert_eq!(one.top4, ["a"]);
        assert!(one.failures.is_empty());
        // Two equal lowest: the first in table order is removed.
        let tied = group_stats(
            "x",
            &[("a", 70.0), ("b", 60.0), ("c", 60.0)],
            FailureRule::Eq1 { gamma: 3.0 },
        )
        .unwrap();
        assert_eq!(tied.worst_removed.as_deref(), Some("b"));
        assert_eq!(tied.mean, 65.0);
        assert_eq!(tied.std, 5.0);
        assert_eq!(tied.range, 10.0);
    }
}

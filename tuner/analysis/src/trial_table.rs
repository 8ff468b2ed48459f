//! `bocb trials NAME`: one line per trial with its config, how it ended and
//! what it ran with (recipe, precision, peak memory).

use std::fmt::Write as _;

use bocb_store::TrialRecord;

use bocb_spec::{fmt_mib, fmt_value};

/// The table of `trials`, a header line first; `-` where a value is unknown
/// (an unfinished trial, an external program's precision and memory, a
/// recipe without a weight average).
pub fn render_trial_table(trials: &[TrialRecord]) -> String {
    let mut out = format!(
        "{:<16} {:<24} {:<12} {:>10} {:>10} {:>4} {:>5} {:<8} {:>6} {:>8} {:>8} {:<8} {:<5} {:>8}\n",
        "trial",
        "backbone",
        "optimizer",
        "lr",
        "wd",
        "seed",
        "stage",
        "status",
        "epochs",
        "top-1",
        "ema",
        "recipe",
        "prec",
        "peak MiB"
    );
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    for t in trials {
        let param = |key: &str| or_dash(t.params.get(key).map(|v| fmt_value(*v)));
        let accuracy = |a: Option<f64>| or_dash(a.map(|a| format!("{a:.2}")));
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<12} {:>10} {:>10} {:>4} {:>5} {:<8} {:>6} {:>8} {:>8} {:<8} {:<5} {:>8}",
            t.id,
            t.backbone,
            t.optimizer,
            param("lr"),
            param("weight_decay"),
            t.seed,
            t.stage,
            t.status.to_string(),
            t.epochs.len(),
            accuracy(t.final_accuracy),
            accuracy(t.ema_accuracy),
            or_dash(t.recipe.as_ref().map(|r| r.name.clone())),
            or_dash(t.precision.clone()),
            fmt_mib(t.peak_memory_bytes),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bocb_store::{TrialRecipe, TrialStatus};

    use super::*;

    fn trial(id: &str) -> TrialRecord {
        TrialRecord {
            params: BTreeMap::from([("lr".into(), 1e-3), ("weight_decay".into(), 0.05)]),
            status: TrialStatus::Running,
            ..TrialRecord::new("e", id, "resnet18_cifar@micro", "adamw")
        }
    }

    #[test]
    fn shows_what_each_trial_ran_with_and_dashes_what_is_unknown() {
        let trained = TrialRecord {
            status: TrialStatus::Done,
            final_accuracy: Some(61.234),
            ema_accuracy: Some(62.5),
            recipe: Some(TrialRecipe::from("deit")),
            precision: Some("fp32".into()),
            peak_memory_bytes: Some(700 << 20),
            ..trial("trained")
        };
        let table = render_trial_table(&[trained, trial("external")]);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert_eq!(
            lines[0][9..],
            ["top-1", "ema", "recipe", "prec", "peak", "MiB"]
        );
        assert_eq!(lines[1][7], "done");
        assert_eq!(lines[1][9..], ["61.23", "62.50", "deit", "fp32", "700"]);
        assert_eq!(lines[2][3..5], ["1e-3", "0.05"]);
        assert_eq!(lines[2][9..], ["-"; 5]);
    }
}

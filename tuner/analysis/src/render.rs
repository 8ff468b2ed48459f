//! The analysis as text, markdown and CSV: Table 1 as the paper prints it
//! (top-4 and failures marked, the Mean and Std/Range rows at the bottom),
//! then the per-optimizer statistics, the robustness and the ranking.

use std::fmt::Write as _;

use super::ranking::OptimizerRank;
use super::results::Origin;
use super::robustness::GroupRobustness;
use super::Analysis;

/// Text (aligned columns) or GitHub-flavoured markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    Markdown,
}

/// Header and rows as aligned columns (first column left, others right) or
/// as a markdown table.
pub(crate) fn grid(header: &[String], rows: &[Vec<String>], style: Style) -> String {
    let mut out = String::new();
    match style {
        Style::Markdown => {
            let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
            out.push_str(&line(header));
            let rule: Vec<String> = (0..header.len())
                .map(|i| if i == 0 { ":--".into() } else { "--:".into() })
                .collect();
            out.push_str(&line(&rule));
            for row in rows {
                out.push_str(&line(row));
            }
        }
        Style::Text => {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for cells in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
                let line: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(i, (cell, &w))| {
                        let pad = " ".repeat(w - cell.chars().count());
                        if i == 0 {
                            format!("{cell}{pad}")
                        } else {
                            format!("{pad}{cell}")
                        }
                    })
                    .collect();
                out.push_str(line.join("  ").trim_end());
                out.push('\n');
            }
        }
    }
    out
}

pub(crate) fn heading(out: &mut String, text: &str, style: Style) {
    match style {
        Style::Text => {
            let _ = writeln!(out, "\n{text}");
        }
        Style::Markdown => {
            let _ = writeln!(out, "\n### {text}\n");
        }
    }
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

/// Table 1: optimizers as rows, backbones as columns, marked cells, and the
/// Mean and Std/Range rows (after removing each column's worst result).
fn table1(analysis: &Analysis, style: Style) -> String {
    let results = &analysis.results;
    let stats = &analysis.table1;
    let mut header = vec!["Optimizer".to_string()];
    header.extend(results.backbones.iter().cloned());
    let mut rows: Vec<Vec<String>> = results
        .optimizers
        .iter()
        .map(|optimizer| {
            let mut row = vec![optimizer.clone()];
            for backbone in &results.backbones {
                let Some(result) = results.get(backbone, optimizer) else {
                    row.push("-".into());
                    continue;
                };
                let value = format!("{:.2}", result.accuracy);
                let top = stats.in_top4(backbone, optimizer);
                let fail = stats.fails(backbone, optimizer);
                let noise =
                    result.within_noise_of_best == Some(true) && result.p_below_best.is_some();
                row.push(match style {
                    Style::Text => format!(
                        "{value}{}{}{}",
                        if top { "*" } else { "" },
                        if fail { "!" } else { "" },
                        if noise { "~" } else { "" }
                    ),
                    Style::Markdown => format!(
                        "{}{}{}",
                        if top { format!("**{value}**") } else { value },
                        if fail { " ✗" } else { "" },
                        if noise { " ~" } else { "" }
                    ),
                });
            }
            row
        })
        .collect();
    let column = |b: &String| stats.backbone(b);
    let mut mean = vec!["Mean".to_string()];
    let mut spread = vec!["Std/Range".to_string()];
    for backbone in &results.backbones {
        match column(backbone) {
            Some(g) => {
                mean.push(format!("{:.2}", g.mean));
                spread.push(format!("{:.1}/{:.0}", g.std, g.range));
            }
            None => {
                mean.push("-".into());
                spread.push("-".into());
            }
        }
    }
    rows.push(mean);
    rows.push(spread);
    grid(&header, &rows, style)
}

/// The robustness table's cells, one row per backbone or optimizer (shared
/// by the text and HTML reports).
pub(super) fn robustness_rows(groups: &[GroupRobustness]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.variations.len().to_string(),
                g.mode_lr.to_string(),
                g.mode_weight_decay.to_string(),
                format!("{:.2}", g.mean_manhattan),
                format!("{:.1}", g.median_manhattan),
                format!("{:.2}", g.mean_grid_steps),
                format!("{:.1}", g.median_grid_steps),
                beyond_grid_cell(g),
            ]
        })
        .collect()
}

/// The members whose best lies past the grid's ends, with how far
/// (`adamw (lr +1)`); `-` for none.
fn beyond_grid_cell(group: &GroupRobustness) -> String {
    let beyond: Vec<String> = group
        .variations
        .iter()
        .filter_map(|v| Some(format!("{} ({})", v.name, v.beyond_grid?.describe())))
        .collect();
    if beyond.is_empty() {
        "-".into()
    } else {
        beyond.join(", ")
    }
}

/// The ranking table's cells, in the order given (shared by the text and
/// HTML reports).
pub(super) fn ranking_rows(ranking: &[&OptimizerRank]) -> Vec<Vec<String>> {
    let rank_cell = |value: Option<String>, rank: Option<usize>| match (value, rank) {
        (Some(v), Some(r)) => format!("{v} (#{r})"),
        _ => "-".into(),
    };
    ranking
        .iter()
        .map(|r| {
            vec![
                r.optimizer.clone(),
                r.overall_rank.to_string(),
                format!("{:.2}", r.score),
                rank_cell(
                    Some(format!("{:.2}", r.performance)),
                    Some(r.performance_rank),
                ),
                rank_cell(
                    r.robustness_variation.map(|v| format!("{v:.1}")),
                    r.robustness_rank,
                ),
                if r.bocb { "1".into() } else { "0".into() },
                rank_cell(
                    r.memory_bytes_per_param.map(|b| format!("{b:.1}")),
                    r.memory_rank,
                ),
            ]
        })
        .collect()
}

/// The whole analysis in text or markdown.
pub fn render(analysis: &Analysis, style: Style) -> String {
    let mut out = String::new();
    let title = match &analysis.origin {
        Origin::Trained => format!("Table 1 of experiment {}: top-1 accuracy (%)", analysis.experiment),
        Origin::Imported {
            source,
            grid_source,
        } => format!(
            "Table 1 of experiment {} (imported from {source}{}; not trained by bocb): top-1 accuracy (%)",
            analysis.experiment,
            grid_source
                .as_ref()
                .map(|g| format!(", grid positions from {g}"))
                .unwrap_or_default()
        ),
    };
    heading(&mut out, &title, style);
    let (top, fail) = match style {
        Style::Text => ("*", "!"),
        Style::Markdown => ("bold", "✗"),
    };
    let _ = writeln!(
        out,
        "{top}: top-4 of the backbone; {fail}: failure by {}; ~: within seed noise of the \
         backbone's best (one-sided Welch's t-test, p >= 0.05). Mean and Std/Range (population \
         std) are over each backbone's optimizers after removing its worst result.\n",
        analysis.failure_rule
    );
    out.push_str(&table1(analysis, style));

    heading(
        &mut out,
        "Per optimizer over backbones (worst result removed)",
        style,
    );
    let header: Vec<String> = [
        "optimizer",
        "n",
        "mean",
        "std",
        "range",
        "worst removed",
        "top-4",
        "failures",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = analysis
        .table1
        .optimizers
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.count.to_string(),
                format!("{:.2}", g.mean),
                format!("{:.2}", g.std),
                format!("{:.2}", g.range),
                g.worst_removed.clone().unwrap_or_else(|| "-".into()),
                names(&g.top4),
                names(&g.failures),
            ]
        })
        .collect();
    out.push_str(&grid(&header, &rows, style));

    heading(&mut out, "Failures per backbone", style);
    let header: Vec<String> = ["backbone", "Q25", "Q75", "fails below", "failures"]
        .map(String::from)
        .to_vec();
    let rows: Vec<Vec<String>> = analysis
        .table1
        .backbones
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                format!("{:.2}", g.q25),
                format!("{:.2}", g.q75),
                format!("{:.2}", g.failure_threshold),
                names(&g.failures),
            ]
        })
        .collect();
    out.push_str(&grid(&header, &rows, style));

    heading(
        &mut out,
        "Hyperparameter robustness: optimal grid positions (0-4, 2 = centre) and their variation from the mode",
        style,
    );
    if analysis.robustness.backbones.is_empty() {
        out.push_str(
            "No grid positions are known (an imported table needs a grid file: `bocb import --grid FILE`).\n",
        );
    } else {
        let header = |first: &str| -> Vec<String> {
            [
                first,
                "pairs",
                "mode lr",
                "mode wd",
                "mean Manhattan",
                "median",
                "mean steps",
                "median",
                "best beyond the grid",
            ]
            .map(String::from)
            .to_vec()
        };
        out.push_str(&grid(
            &header("backbone"),
            &robustness_rows(&analysis.robustness.backbones),
            style,
        ));
        out.push('\n');
        out.push_str(&grid(
            &header("optimizer"),
            &robustness_rows(&analysis.robustness.optimizers),
            style,
        ));
    }

    heading(
        &mut out,
        "Optimizer ranking (Table 4: 40% performance, 20% robustness, 20% BOCB, 20% memory)",
        style,
    );
    let mut ranking: Vec<_> = analysis.ranking.iter().collect();
    ranking.sort_by_key(|r| r.overall_rank);
    let header: Vec<String> = [
        "optimizer",
        "overall",
        "score",
        "performance",
        "robustness",
        "BOCB",
        "memory B/param",
    ]
    .map(String::from)
    .to_vec();
    out.push_str(&grid(&header, &ranking_rows(&ranking), style));
    out
}

/// A CSV table (RFC 4180: fields quoted where they need it): the header,
/// then one record per row. Every row has the header's length.
pub fn csv_table<R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail, and fixed-width rows cannot be ragged.
    writer.write_record(header).expect("CSV header into memory");
    for row in rows {
        writer.write_record(row).expect("CSV row into memory");
    }
    let bytes = writer.into_inner().expect("CSV flush into memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields")
}

const ANALYSIS_CSV_HEADER: [&str; 22] = [
    "experiment",
    "backbone",
    "optimizer",
    "accuracy",
    "seeds",
    "seed_std",
    "ci95_low",
    "ci95_high",
    "p_below_best",
    "within_noise_of_best",
    "top4",
    "failure",
    "failure_rule",
    "lr_index",
    "weight_decay_index",
    "beyond_grid",
    "lr",
    "weight_decay",
    "backbone_manhattan",
    "backbone_grid_steps",
    "optimizer_manhattan",
    "optimizer_grid_steps",
];

/// One row per pair of every analysis, with its result, marks and
/// variations, under one header.
pub fn render_csv(analyses: &[Analysis]) -> String {
    csv_table(
        &ANALYSIS_CSV_HEADER,
        analyses.iter().flat_map(analysis_csv_rows),
    )
}

fn analysis_csv_rows(analysis: &Analysis) -> Vec<[String; 22]> {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let variation = |groups: &[GroupRobustness], group: &str, member: &str| {
        groups
            .iter()
            .find(|g| g.name == group)
            .and_then(|g| g.variations.iter().find(|v| v.name == member))
            .map(|v| (v.manhattan.to_string(), v.grid_steps.to_string()))
            .unwrap_or_default()
    };
    let rule = match analysis.failure_rule {
        super::table1::FailureRule::Eq1 { gamma } => format!("eq1 gamma={gamma}"),
        super::table1::FailureRule::Tukey => "tukey".into(),
    };
    let index = |r: &super::results::PairResult,
                 on: fn(bocb_store::GridPos) -> i32,
                 beyond: fn(bocb_spec::ExtendedPos) -> i32| {
        r.grid
            .map(on)
            .or(r.beyond_grid.map(beyond))
            .map(|i| i.to_string())
            .unwrap_or_default()
    };
    let mut rows = Vec::new();
    for r in &analysis.results.results {
        let seeds = r.seeds.as_ref();
        let (bm, bs) = variation(&analysis.robustness.backbones, &r.backbone, &r.optimizer);
        let (om, os) = variation(&analysis.robustness.optimizers, &r.optimizer, &r.backbone);
        rows.push([
            analysis.experiment.clone(),
            r.backbone.clone(),
            r.optimizer.clone(),
            r.accuracy.to_string(),
            seeds
                .map(|s| s.accuracies.len().to_string())
                .unwrap_or_default(),
            opt(seeds.and_then(|s| s.std)),
            opt(seeds.and_then(|s| s.ci95).map(|c| c[0])),
            opt(seeds.and_then(|s| s.ci95).map(|c| c[1])),
            opt(r.p_below_best),
            r.within_noise_of_best
                .map(|b| b.to_string())
                .unwrap_or_default(),
            analysis
                .table1
                .in_top4(&r.backbone, &r.optimizer)
                .to_string(),
            analysis.table1.fails(&r.backbone, &r.optimizer).to_string(),
            rule.clone(),
            // A best past the grid on the index scale extended by x2 steps
            // (-1, 5, ...).
            index(r, |g| g.lr.into(), |p| p.lr),
            index(r, |g| g.weight_decay.into(), |p| p.weight_decay),
            r.beyond_grid.is_some().to_string(),
            opt(r.params.get("lr").copied()),
            opt(r.params.get("weight_decay").copied()),
            bm,
            bs,
            om,
            os,
        ]);
    }
    rows
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::results::{PairResult, ResultSet};
    use crate::table1::FailureRule;

    fn analysis() -> Analysis {
        let result = |b: &str, o: &str, accuracy| PairResult {
            backbone: b.into(),
            optimizer: o.into(),
            accuracy,
            params: BTreeMap::new(),
            grid: None,
            beyond_grid: None,
            seeds: None,
            p_below_best: None,
            within_noise_of_best: None,
            trial_ids: Vec::new(),
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
        };
        let optimizers = ["o1", "o2", "o3", "o4", "o5", "o6"];
        let accuracies = [80.0, 78.0, 50.0, 79.0, 76.0, 80.0];
        let results = ResultSet {
            experiment: "t".into(),
            origin: Origin::Imported {
                source: "t.tsv".into(),
                grid_source: None,
            },
            backbones: vec!["bb".into()],
            optimizers: optimizers.iter().map(|o| o.to_string()).collect(),
            results: optimizers
                .iter()
                .zip(accuracies)
                .map(|(o, a)| result("bb", o, a))
                .collect(),
        };
        Analysis::new(results, FailureRule::Eq1 { gamma: 3.0 }, &BTreeMap::new())
    }

    #[test]
    fn table1_marks_top4_and_failures_and_ends_with_the_summary_rows() {
        let text = render(&analysis(), Style::Text);
        assert!(
            text.contains("imported from t.tsv; not trained by bocb"),
            "{text}"
        );
        assert!(
            text.contains("failure by Eq. (1)") && text.contains("γ = 3"),
            "{text}"
        );
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Optimizer"))
            .take(9)
            .collect();
        assert_eq!(
            table,
            [
                "Optimizer      bb",
                "o1         80.00*",
                "o2         78.00*",
                "o3         50.00!",
                "o4         79.00*",
                "o5         76.00!",
                "o6         80.00*",
                "Mean        78.60",
                "Std/Range   1.5/4",
            ]
        );
        assert!(text.contains("No grid positions are known"), "{text}");
        let md = render(&analysis(), Style::Markdown);
        assert!(md.contains("| o1 | **80.00** |"), "{md}");
        assert!(md.contains("| o3 | 50.00 ✗ |"), "{md}");
        assert!(md.contains("| Std/Range | 1.5/4 |"), "{md}");
    }

    #[test]
    fn csv_has_one_row_per_pair_and_quotes_when_needed() {
        let csv = render_csv(&[analysis(), analysis()]);
        let lines: Vec<&str> = csv.lines().collect();
        // One header for both analyses, then their 6 + 6 rows.
        assert_eq!(lines.len(), 13);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("experiment,"))
                .count(),
            1
        );
        assert!(
            lines[3].starts_with("t,bb,o3,50,,,,,,,false,true,eq1 gamma=3,"),
            "{}",
            lines[3]
        );
        let quoted = csv_table(&["a", "b"], [["x,y", "say \"hi\""]]);
        assert_eq!(quoted, "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n");
    }
}

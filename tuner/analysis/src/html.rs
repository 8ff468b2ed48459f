//! The HTML report: one self-contained file (inline CSS and SVG, no
//! scripts, nothing fetched) per call, a part per experiment with the
//! Table 1 heat map, the accuracy violins, the hyperparameter-variation box
//! plots, the parameter-pattern ridges, the learning curves and the
//! analysis tables. Parts that need trials or saved weights are replaced by
//! a one-line note saying how to get them.

use std::fmt::Write as _;

use bocb_store::{Store, StoreError, TrialRecord};

use super::patterns::{saved_patterns, MeasurePatterns, PairPatterns, PatternsError};
use super::plots::{self, hex, text_colour_on, ColourScale, PlotError};
use super::render::{self, escape};
use super::results::Origin;
use super::robustness::GroupRobustness;
use super::Analysis;
use bocb_spec::{fmt_mib, fmt_value};

/// The section headings of every experiment's part, in order.
pub const SECTIONS: [&str; 6] = [
    "Table 1 heat map",
    "Accuracy per backbone over optimizers",
    "Hyperparameter robustness",
    "Layer-wise parameter patterns",
    "Learning curves",
    "Tables",
];

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Patterns(#[from] PatternsError),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// What one experiment's part is drawn from.
pub struct ExperimentView<'a> {
    pub analysis: &'a Analysis,
    /// How many trials the experiment has (none for an imported table).
    pub trial_count: usize,
    /// Every trial with its epochs, for the learning curves; `None` leaves
    /// the curves out.
    pub curves: Option<&'a [TrialRecord]>,
    /// Layer-wise patterns of the best pairs, when weights were saved.
    pub patterns: Option<&'a [PairPatterns]>,
}

/// The HTML report of `analyses`, with their trials and saved weights read
/// from `store`. Only the learning curves read every epoch of every trial:
/// without `curves` the report reads the trials' summaries alone.
pub fn render_report(
    store: &Store,
    analyses: &[Analysis],
    curves: bool,
    measure: Option<MeasurePatterns>,
) -> Result<String, HtmlError> {
    let mut loaded = Vec::new();
    for analysis in analyses {
        let name = &analysis.experiment;
        let (count, trials) = if curves {
            let trials = store.trials(name)?;
            (trials.len(), Some(trials))
        } else {
            (store.trial_summaries(name)?.len(), None)
        };
        loaded.push((count, trials, saved_patterns(store, name, measure)?));
    }
    let views: Vec<ExperimentView> = analyses
        .iter()
        .zip(&loaded)
        .map(|(analysis, (count, trials, patterns))| ExperimentView {
            analysis,
            trial_count: *count,
            curves: trials.as_deref(),
            patterns: patterns.as_deref(),
        })
        .collect();
    render_document(&views)
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', 'Liberation Sans', sans-serif; margin: 24px 32px; color: #222; }
h1 { font-size: 26px; }
h2 { font-size: 22px; border-bottom: 2px solid #bbb; padding-bottom: 4px; margin-top: 40px; }
h3 { font-size: 18px; margin-top: 28px; }
h4 { font-size: 15px; margin: 18px 0 4px; }
p, figcaption { max-width: 75em; line-height: 1.4; }
figure { margin: 0 0 20px; }
figcaption { color: #555; font-size: 14px; }
.plot, .table { overflow-x: auto; }
.plot svg { display: block; }
.note { background: #fff8e1; border-left: 4px solid #e0a800; padding: 6px 10px; max-width: 75em; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 16px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
th:first-child, td:first-child { text-align: left; }
tr.summary td { background: #f6f6f6; font-weight: bold; }
td.names { text-align: left; white-space: normal; min-width: 16em; max-width: 40em; }
code { background: #f2f2f2; padding: 0 3px; }
";

/// The whole document, a part per experiment.
pub fn render_document(views: &[ExperimentView]) -> Result<String, HtmlError> {
    let title = match views {
        [one] => format!("bocb report: {}", one.analysis.experiment),
        _ => "bocb report".to_string(),
    };
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    for view in views {
        experiment(&mut out, view)?;
    }
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

fn figure(out: &mut String, svg: &str, caption: &str) {
    let _ = write!(
        out,
        "<figure>\n<div class=\"plot\">\n{svg}</div>\n<figcaption>{caption}</figcaption>\n</figure>\n"
    );
}

fn note(out: &mut String, text: &str) {
    let _ = writeln!(out, "<p class=\"note\">{text}</p>");
}

fn experiment(out: &mut String, view: &ExperimentView) -> Result<(), HtmlError> {
    let analysis = view.analysis;
    let results = &analysis.results;
    let rule = escape(&analysis.failure_rule.to_string());
    let imported = match &analysis.origin {
        Origin::Trained => None,
        Origin::Imported {
            source,
            grid_source,
        } => Some((source, grid_source)),
    };
    let _ = writeln!(
        out,
        "<section>\n<h2>Experiment {}</h2>",
        escape(&analysis.experiment)
    );
    let origin = match imported {
        None => format!("Trained by bocb: {} trial(s).", view.trial_count),
        Some((source, grid)) => format!(
            "Imported from <code>{}</code>{}; not trained by bocb.",
            escape(source),
            grid.as_ref()
                .map(|g| format!(", grid positions from <code>{}</code>", escape(g)))
                .unwrap_or_default()
        ),
    };
    let _ = writeln!(
        out,
        "<p>{origin} {} backbone(s) × {} optimizer(s), {} pair result(s). \
         Failures are marked by {rule}.</p>",
        results.backbones.len(),
        results.optimizers.len(),
        results.results.len()
    );

    let _ = writeln!(out, "<h3>1. {}</h3>", SECTIONS[0]);
    figure(
        out,
        &plots::heat_map(results, &analysis.table1)?,
        &format!(
            "Top-1 accuracy (%) of each pair's best config: optimizers as rows, backbones as \
             columns. Bold: among the backbone's top-4; ✗: failure by {rule}, judged in the \
             backbone's column. The colour scale runs from the lowest result that is not a \
             failure to the highest; failures below it take its darkest colour."
        ),
    );

    let _ = writeln!(out, "<h3>2. {}</h3>", SECTIONS[1]);
    figure(
        out,
        &plots::violins(results, &analysis.table1)?,
        "Per backbone, the distribution of its accuracy over optimizers (the paper's Fig. 3): \
         a Gaussian kernel density estimate (Scott's bandwidth, cut two bandwidths past the \
         extremes), mirrored and scaled to the row. The black bar spans the quartiles with the \
         whiskers at 1.5 IQR, the white dot is the median; the dots above are the optimizers' \
         results, red where they fail. A backbone with one result or no spread has no density.",
    );

    let _ = writeln!(out, "<h3>3. {}</h3>", SECTIONS[2]);
    let robustness = &analysis.robustness;
    if robustness.backbones.is_empty() {
        note(
            out,
            "No optimal grid positions are known, so there is no robustness analysis: an \
             imported table needs a grid file (<code>bocb import --grid FILE</code>).",
        );
    } else {
        let caption = |over: &str, fig: &str| {
            format!(
                "Variation of each pair's optimal lr and weight decay from the {over} mode \
                 (the paper's {fig}): the Manhattan distance of the one-hot grid codes (0, 2 or \
                 4) and the finer grid-step distance |index − mode index| summed over both. \
                 Boxes span the quartiles, whiskers reach 1.5 IQR, dots are the pairs."
            )
        };
        figure(
            out,
            &plots::variation_boxes(&robustness.backbones, "variation per backbone")?,
            &caption("backbone's (over its optimizers)", "Fig. 4"),
        );
        figure(
            out,
            &plots::variation_boxes(&robustness.optimizers, "variation per optimizer")?,
            &caption("optimizer's (over its backbones)", "Fig. 5"),
        );
    }

    let _ = writeln!(out, "<h3>4. {}</h3>", SECTIONS[3]);
    match (view.patterns, imported) {
        (Some(pairs), _) => figure(
            out,
            &plots::ridges(pairs)?,
            "Layer-wise patterns of each pair's best trained weights (the paper's Fig. 6 and \
             App. A.3), one ridge per pair over its weight matrices in layer order: the \
             power-law exponent α of the spectral density of WᵀW, the entropy of the weight \
             values' histogram, the L2 (Frobenius) norm and the top-k PCA energy ratio. Each \
             panel's ridges share its scale (range in the title). <code>bocb patterns</code> \
             prints the numbers.",
        ),
        (None, Some(_)) => note(
            out,
            "An imported table has no trained weights, so there are no parameter patterns.",
        ),
        (None, None) => note(
            out,
            "This experiment kept no trained weights: add <code>save_weights: true</code> to its \
             file and run it as a new experiment to get these ridge plots (and \
             <code>bocb patterns</code>).",
        ),
    }

    let _ = writeln!(out, "<h3>5. {}</h3>", SECTIONS[4]);
    match view.curves {
        _ if imported.is_some() => note(
            out,
            "An imported table has no trials, so there are no learning curves.",
        ),
        _ if view.trial_count == 0 => note(
            out,
            "No trial has been recorded yet, so there are no learning curves.",
        ),
        None => note(
            out,
            "Learning curves left out of this report (<code>bocb report --no-curves</code>): \
             each pair's page in the web UI draws its trials' curves.",
        ),
        Some(trials) => figure(
            out,
            &plots::learning_curves(results, trials)?,
            "Test top-1 accuracy (%) per epoch of every trial of each pair (blue), the seeds of \
             the pair's best config in red; the title gives the best config's mean accuracy. \
             Stopped trials end early; diverged epochs are left out.",
        ),
    }

    let _ = writeln!(out, "<h3>6. {}</h3>", SECTIONS[5]);
    tables(out, view);
    out.push_str("</section>\n");
    Ok(())
}

/// Header and rows as an HTML table; cells are HTML already.
fn table(out: &mut String, header: &[&str], rows: &[(Vec<String>, &str)]) {
    out.push_str("<div class=\"table\"><table>\n<tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for (cells, class) in rows {
        if class.is_empty() {
            out.push_str("<tr>");
        } else {
            let _ = write!(out, "<tr class=\"{class}\">");
        }
        for cell in cells {
            if cell.starts_with("<td") {
                out.push_str(cell);
            } else {
                let _ = write!(out, "<td>{cell}</td>");
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
}

/// A cell listing names, left-aligned and wrapping.
fn names(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        format!("<td class=\"names\">{}</td>", escape(&list.join(", ")))
    }
}

fn tables(out: &mut String, view: &ExperimentView) {
    let analysis = view.analysis;
    let results = &analysis.results;
    let stats = &analysis.table1;
    let scale = ColourScale::of(results, stats);

    let _ = writeln!(
        out,
        "<h4>Table 1: top-1 accuracy (%)</h4>\n<p>Bold: top-4 of the backbone; ✗: failure by {}; \
         ~: within seed noise of the backbone's best (one-sided Welch's t-test, p ≥ 0.05). Mean \
         and Std/Range (population std) are over each backbone's optimizers after removing its \
         worst result.</p>",
        escape(&analysis.failure_rule.to_string())
    );
    let mut header = vec!["Optimizer"];
    header.extend(results.backbones.iter().map(String::as_str));
    let mut rows: Vec<(Vec<String>, &str)> = results
        .optimizers
        .iter()
        .map(|optimizer| {
            let mut row = vec![escape(optimizer)];
            for backbone in &results.backbones {
                let Some(result) = results.get(backbone, optimizer) else {
                    row.push("-".into());
                    continue;
                };
                let fill = scale.colour(result.accuracy);
                let value = format!("{:.2}", result.accuracy);
                let noise =
                    result.within_noise_of_best == Some(true) && result.p_below_best.is_some();
                row.push(format!(
                    "<td style=\"background:{};color:{}\" data-accuracy=\"{}\">{}{}{}</td>",
                    hex(fill),
                    hex(text_colour_on(fill)),
                    result.accuracy,
                    if stats.in_top4(backbone, optimizer) {
                        format!("<b>{value}</b>")
                    } else {
                        value
                    },
                    if stats.fails(backbone, optimizer) {
                        " ✗"
                    } else {
                        ""
                    },
                    if noise { " ~" } else { "" }
                ));
            }
            (row, "")
        })
        .collect();
    let summary = |label: &str, cell: &dyn Fn(&super::table1::GroupStats) -> String| {
        let mut row = vec![label.to_string()];
        row.extend(
            results
                .backbones
                .iter()
                .map(|b| stats.backbone(b).map_or("-".into(), cell)),
        );
        row
    };
    rows.push((summary("Mean", &|g| format!("{:.2}", g.mean)), "summary"));
    rows.push((
        summary("Std/Range", &|g| format!("{:.1}/{:.0}", g.std, g.range)),
        "summary",
    ));
    table(out, &header, &rows);

    out.push_str("<h4>Failures per backbone</h4>\n");
    let rows: Vec<(Vec<String>, &str)> = stats
        .backbones
        .iter()
        .map(|g| {
            (
                vec![
                    escape(&g.name),
                    format!("{:.2}", g.q25),
                    format!("{:.2}", g.q75),
                    format!("{:.2}", g.failure_threshold),
                    names(&g.failures),
                ],
                "",
            )
        })
        .collect();
    table(
        out,
        &["backbone", "Q25", "Q75", "fails below", "failures"],
        &rows,
    );

    out.push_str("<h4>Per optimizer over backbones (worst result removed)</h4>\n");
    let rows: Vec<(Vec<String>, &str)> = stats
        .optimizers
        .iter()
        .map(|g| {
            (
                vec![
                    escape(&g.name),
                    g.count.to_string(),
                    format!("{:.2}", g.mean),
                    format!("{:.2}", g.std),
                    format!("{:.2}", g.range),
                    g.worst_removed.as_deref().map_or("-".into(), escape),
                    names(&g.top4),
                    names(&g.failures),
                ],
                "",
            )
        })
        .collect();
    table(
        out,
        &[
            "optimizer",
            "n",
            "mean",
            "std",
            "range",
            "worst removed",
            "top-4",
            "failures",
        ],
        &rows,
    );

    if !analysis.robustness.backbones.is_empty() {
        out.push_str(
            "<h4>Hyperparameter robustness: optimal grid positions (0-4, 2 = centre) and their \
             variation from the mode</h4>\n",
        );
        for (first, groups) in [
            ("backbone", &analysis.robustness.backbones),
            ("optimizer", &analysis.robustness.optimizers),
        ] {
            table(
                out,
                &[
                    first,
                    "pairs",
                    "mode lr",
                    "mode wd",
                    "mean Manhattan",
                    "median",
                    "mean steps",
                    "median",
                    "best beyond the grid",
                ],
                &robustness_rows(groups),
            );
        }
    }

    out.push_str(
        "<h4>Optimizer ranking (Table 4: 40% performance, 20% robustness, 20% BOCB, 20% \
         memory)</h4>\n",
    );
    let mut ranking: Vec<_> = analysis.ranking.iter().collect();
    ranking.sort_by_key(|r| r.overall_rank);
    let rows: Vec<(Vec<String>, &str)> = render::ranking_rows(&ranking)
        .into_iter()
        .map(|cells| (escaped(cells), ""))
        .collect();
    table(
        out,
        &[
            "optimizer",
            "overall",
            "score",
            "performance",
            "robustness",
            "BOCB",
            "memory B/param",
        ],
        &rows,
    );

    if matches!(analysis.origin, Origin::Trained) {
        out.push_str("<h4>Best config per pair</h4>\n");
        let rows: Vec<(Vec<String>, &str)> = results
            .results
            .iter()
            .map(|r| {
                let seeds = r.seeds.as_ref();
                let extras: Vec<String> = r
                    .params
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "lr" | "weight_decay"))
                    .map(|(k, v)| format!("{k}={}", fmt_value(*v)))
                    .collect();
                let param = |name: &str| r.params.get(name).map_or("-".into(), |v| fmt_value(*v));
                (
                    vec![
                        escape(&r.backbone),
                        escape(&r.optimizer),
                        format!("{:.2}", r.accuracy),
                        seeds.map_or("-".into(), |s| s.accuracies.len().to_string()),
                        seeds
                            .and_then(|s| s.std)
                            .map_or("-".into(), |s| format!("{s:.2}")),
                        seeds
                            .and_then(|s| s.ci95)
                            .map_or("-".into(), |[lo, hi]| format!("{lo:.2} to {hi:.2}")),
                        param("lr"),
                        param("weight_decay"),
                        escape(&extras.join(", ")),
                        r.grid
                            .map_or("-".into(), |g| format!("{}/{}", g.lr, g.weight_decay)),
                        fmt_mib(r.peak_memory_bytes),
                        fmt_mib(r.optimizer_state_bytes),
                    ],
                    "",
                )
            })
            .collect();
        table(
            out,
            &[
                "backbone",
                "optimizer",
                "top-1 (%)",
                "seeds",
                "std",
                "95% CI",
                "lr",
                "weight decay",
                "other",
                "grid lr/wd",
                "peak MiB",
                "optimizer state MiB",
            ],
            &rows,
        );
    }
}

fn robustness_rows(groups: &[GroupRobustness]) -> Vec<(Vec<String>, &'static str)> {
    render::robustness_rows(groups)
        .into_iter()
        .map(|cells| (escaped(cells), ""))
        .collect()
}

/// Text cells made safe for the page.
fn escaped(cells: Vec<String>) -> Vec<String> {
    cells.iter().map(|c| escape(c)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bocb_spec::LayerPattern;
    use bocb_store::{EpochMetrics, GridPos, TrialStatus};

    use super::*;
    use crate::plots::relative_luminance;
    use crate::results::{PairResult, ResultSet, SeedStats};
    use crate::table1::FailureRule;

    const BACKBONES: [&str; 2] = ["resnet18_cifar@micro", "vit_tiny_cifar@micro"];
    const OPTIMIZERS: [&str; 5] = ["sgd_m", "adamw", "lion", "lamb", "adan"];

    /// Accuracy of pair (b, o): a spread with one clear failure per backbone.
    fn accuracy(b: usize, o: usize) -> f64 {
        [
            [70.0, 72.5, 71.0, 69.0, 40.0],
            [30.0, 80.0, 79.5, 78.0, 77.0],
        ][b][o]
    }

    fn analysis(origin: Origin, with_grid: bool) -> Analysis {
        let trained = origin == Origin::Trained;
        let results = BACKBONES
            .iter()
            .enumerate()
            .flat_map(|(b, backbone)| {
                OPTIMIZERS.iter().enumerate().map(move |(o, optimizer)| {
                    let a = accuracy(b, o);
                    PairResult {
                        backbone: backbone.to_string(),
                        optimizer: optimizer.to_string(),
                        accuracy: a,
                        params: if trained {
                            BTreeMap::from([("lr".into(), 0.1), ("weight_decay".into(), 5e-4)])
                        } else {
                            BTreeMap::new()
                        },
                        grid: with_grid.then_some(GridPos {
                            lr: ((b + o) % 5) as u8,
                            weight_decay: 2,
                        }),
                        beyond_grid: None,
                        seeds: trained.then(|| SeedStats::new(vec![a - 0.5, a + 0.5])),
                        p_below_best: None,
                        within_noise_of_best: None,
                        trial_ids: if trained {
                            vec![format!("{b}-{o}-best-0"), format!("{b}-{o}-best-1")]
                        } else {
                            Vec::new()
                        },
                        peak_memory_bytes: trained.then_some(300 << 20),
                        optimizer_state_bytes: trained.then_some(2 << 20),
                    }
                })
            })
            .collect();
        let set = ResultSet {
            experiment: "tiny".into(),
            origin,
            backbones: BACKBONES.map(String::from).to_vec(),
            optimizers: OPTIMIZERS.map(String::from).to_vec(),
            results,
        };
        Analysis::new(set, FailureRule::Tukey, &BTreeMap::new())
    }

    fn trials() -> Vec<TrialRecord> {
        let mut trials = Vec::new();
        for (b, backbone) in BACKBONES.iter().enumerate() {
            for (o, optimizer) in OPTIMIZERS.iter().enumerate() {
                for (id, top) in [
                    (format!("{b}-{o}-best-0"), accuracy(b, o) - 0.5),
                    (format!("{b}-{o}-best-1"), accuracy(b, o) + 0.5),
                    (format!("{b}-{o}-other"), accuracy(b, o) / 2.0),
                ] {
                    let epochs = (1..=3)
                        .map(|e| EpochMetrics {
                            epoch: e,
                            train_loss: 1.0,
                            test_loss: 1.0,
                            test_accuracy: top * f64::from(e) / 3.0,
                            lr: 0.1,
                            images_per_sec: 100.0,
                            wall_s: 1.0,
                            ema_test_accuracy: None,
                        })
                        .collect();
                    trials.push(TrialRecord {
                        status: TrialStatus::Done,
                        epochs,
                        final_accuracy: Some(top),
                        ..TrialRecord::new("tiny", &id, backbone, optimizer)
                    });
                }
            }
        }
        trials
    }

    fn patterns() -> Vec<PairPatterns> {
        let layer = |i: usize| LayerPattern {
            name: format!("layer{i}.weight"),
            shape: vec![16, 16],
            alpha: (i != 1).then_some(2.0 + i as f64 * 0.3),
            alpha_xmin: None,
            alpha_ks: None,
            entropy: 3.0 - i as f64 * 0.1,
            l2_norm: 4.0 + i as f64,
            top_k_energy: Some(0.2 + 0.05 * i as f64),
        };
        vec![PairPatterns {
            backbone: BACKBONES[0].into(),
            optimizer: "adamw".into(),
            trial_id: "0-1-best-0".into(),
            layers: (0..6).map(layer).collect(),
            pretrained_from: None,
            fresh: Vec::new(),
        }]
    }

    fn parse(html: &str) -> roxmltree::Document<'_> {
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        roxmltree::Document::parse_with_options(html, options)
            .unwrap_or_else(|e| panic!("the report is not one well-formed document: {e}"))
    }

    fn elements<'a>(doc: &'a roxmltree::Document, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == name)
            .collect()
    }

    fn text_of(node: roxmltree::Node) -> String {
        node.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect()
    }

    /// No fetched resource and no script anywhere.
    fn assert_self_contained(html: &str, doc: &roxmltree::Document) {
        for reference in [
            "src=\"http",
            "href=\"http",
            "<script",
            "url(",
            "@import",
            "<link",
        ] {
            assert!(!html.contains(reference), "found {reference}");
        }
        assert!(elements(doc, "script").is_empty());
    }

    /// The text of every note: what a part says in place of its figure.
    fn notes(doc: &roxmltree::Document) -> Vec<String> {
        elements(doc, "p")
            .into_iter()
            .filter(|p| p.attribute("class") == Some("note"))
            .map(text_of)
            .collect()
    }

    #[test]
    fn a_trained_experiment_has_every_figure_and_table() {
        let analysis = analysis(Origin::Trained, true);
        let trials = trials();
        let patterns = patterns();
        let html = render_document(&[ExperimentView {
            analysis: &analysis,
            trial_count: trials.len(),
            curves: Some(&trials),
            patterns: Some(&patterns),
        }])
        .unwrap();
        let doc = parse(&html);
        assert_eq!(doc.root_element().tag_name().name(), "html");
        assert_self_contained(&html, &doc);
        // Heat map, violins, two box plots, ridges, learning curves.
        assert_eq!(elements(&doc, "svg").len(), 6);
        let headings: Vec<String> = elements(&doc, "h3").into_iter().map(text_of).collect();
        let expected: Vec<String> = SECTIONS
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        assert_eq!(headings, expected);
        let text = text_of(doc.root_element());
        for name in BACKBONES.iter().chain(&OPTIMIZERS) {
            assert!(text.contains(name), "{name} missing");
        }
        // Tukey marks the one outlier of each backbone, and the report says so.
        assert!(text.contains("Tukey: r < Q25(R) - 1.5 (Q75(R) - Q25(R))"));
        assert!(
            text.contains("40.00 ✗") && text.contains("30.00 ✗"),
            "{text}"
        );
        assert!(notes(&doc).is_empty());
        // The learning curves have a panel per pair, titled with its best.
        assert!(
            text.contains("vit_tiny_cifar@micro × adamw: 80.00"),
            "{text}"
        );
        // Memory beside accuracy in the best configs' table, every row.
        let best = elements(&doc, "table")
            .into_iter()
            .find(|t| text_of(*t).contains("optimizer state MiB"))
            .expect("the best configs' table");
        let rows: Vec<Vec<String>> = best
            .descendants()
            .filter(|n| n.has_tag_name("tr"))
            .map(|tr| {
                tr.children()
                    .filter(|n| n.has_tag_name("td"))
                    .map(text_of)
                    .collect()
            })
            .filter(|cells: &Vec<String>| !cells.is_empty())
            .collect();
        assert_eq!(rows.len(), BACKBONES.len() * OPTIMIZERS.len());
        for row in rows {
            assert_eq!(row[row.len() - 2..], ["300", "2.0"], "{row:?}");
        }
    }

    /// Table 1's cells and their background colours, by accuracy.
    fn cell_colours(doc: &roxmltree::Document) -> Vec<(f64, RGBColor)> {
        let mut cells: Vec<(f64, RGBColor)> = elements(doc, "td")
            .into_iter()
            .filter_map(|td| {
                let accuracy: f64 = td.attribute("data-accuracy")?.parse().ok()?;
                let style = td.attribute("style")?;
                let colour = style.strip_prefix("background:#")?;
                let channel = |i: usize| u8::from_str_radix(&colour[i..i + 2], 16).unwrap();
                Some((accuracy, RGBColor(channel(0), channel(2), channel(4))))
            })
            .collect();
        cells.sort_by(|a, b| a.0.total_cmp(&b.0));
        cells
    }

    use plotters::style::RGBColor;

    #[test]
    fn table1_cells_brighten_with_accuracy() {
        let analysis = analysis(Origin::Trained, true);
        let html = render_document(&[ExperimentView {
            analysis: &analysis,
            trial_count: 0,
            curves: None,
            patterns: None,
        }])
        .unwrap();
        let doc = parse(&html);
        let cells = cell_colours(&doc);
        assert_eq!(cells.len(), BACKBONES.len() * OPTIMIZERS.len());
        for pair in cells.windows(2) {
            assert!(
                relative_luminance(pair[1].1) >= relative_luminance(pair[0].1),
                "{pair:?}"
            );
        }
        // The scale spans the results that are not failures: the best is
        // brighter than the lowest of those.
        assert!(relative_luminance(cells[cells.len() - 1].1) > relative_luminance(cells[2].1));
    }

    #[test]
    fn an_imported_table_notes_what_it_cannot_show() {
        let origin = Origin::Imported {
            source: "table1.tsv".into(),
            grid_source: None,
        };
        let analysis = analysis(origin, false);
        let html = render_document(&[ExperimentView {
            analysis: &analysis,
            trial_count: 0,
            curves: None,
            patterns: None,
        }])
        .unwrap();
        let doc = parse(&html);
        assert_self_contained(&html, &doc);
        // The heat map and the violins only.
        assert_eq!(elements(&doc, "svg").len(), 2);
        assert_eq!(elements(&doc, "h3").len(), SECTIONS.len());
        let notes = notes(&doc);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("bocb import --grid FILE"));
        assert!(notes[1].contains("no trained weights"));
        assert!(notes[2].contains("no learning curves"));
        let text = text_of(doc.root_element());
        assert!(text.contains("Imported from table1.tsv"));
        assert!(!text.contains("Best config per pair"));
    }

    #[test]
    fn a_trained_experiment_without_weights_says_how_to_keep_them() {
        let analysis = analysis(Origin::Trained, true);
        let trials = trials();
        let html = render_document(&[ExperimentView {
            analysis: &analysis,
            trial_count: trials.len(),
            curves: Some(&trials),
            patterns: None,
        }])
        .unwrap();
        let doc = parse(&html);
        assert_eq!(elements(&doc, "svg").len(), 5);
        assert!(html.contains("add <code>save_weights: true</code>"));
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }

    /// Without curves (what the web UI's analyses view asks for) section 5
    /// says where the curves are, and every other part is drawn.
    #[test]
    fn a_report_without_curves_says_where_they_are() {
        let analysis = analysis(Origin::Trained, true);
        let patterns = patterns();
        let html = render_document(&[ExperimentView {
            analysis: &analysis,
            trial_count: 40,
            curves: None,
            patterns: Some(&patterns),
        }])
        .unwrap();
        let doc = parse(&html);
        assert_self_contained(&html, &doc);
        // Heat map, violins, two box plots, ridges: no learning curves.
        assert_eq!(elements(&doc, "svg").len(), 5);
        assert_eq!(elements(&doc, "h3").len(), SECTIONS.len());
        let notes = notes(&doc);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("bocb report --no-curves"), "{notes:?}");
        assert!(text_of(doc.root_element()).contains("Trained by bocb: 40 trial(s)."));
    }
}

//! The fine-tuning parts of the report: the gradient diagnostic (each
//! pair's embedding-to-rest gradient ratio beside its backbone's SGD-vs-
//! AdamW gap, large ratios flagged) and the transfer table (pre-training
//! optimizer x fine-tuning optimizer, as the BOCB paper's Table 3 reads).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use bocb_spec::{split_pretrained, FROM_EXPERIMENT, LARGE_EMBEDDING_RATIO};
use bocb_store::{PairBest, Store, TrialSummary};
use serde::Serialize;

use super::render::{csv_table, escape, grid, heading, Style};
use bocb_store::{stored_spec, StoredSpecError};

/// The optimizers whose best results make a backbone's SGD-vs-AdamW gap.
const ADAMW: &str = "adamw";
const SGD: [&str; 2] = ["sgd_m", "sgd"];

/// The gradient diagnostic of one experiment.
#[derive(Debug, Clone, Serialize)]
pub struct GradientDiagnostic {
    /// Ratios above it are flagged.
    pub threshold: f64,
    pub pairs: Vec<PairGradients>,
}

/// One pair's ratio, its backbone's gap, and whether it is flagged.
#[derive(Debug, Clone, Serialize)]
pub struct PairGradients {
    pub backbone: String,
    pub optimizer: String,
    /// The embedding's gradient norm over the median of the other layer
    /// groups', on the first steps; the median over the pair's trials.
    pub embedding_ratio: Option<f64>,
    /// Trials that recorded gradient norms.
    pub trials: usize,
    /// Best AdamW accuracy minus best SGD-M (else SGD) accuracy of the
    /// backbone, in points.
    pub sgd_adamw_gap: Option<f64>,
    /// The ratio is above the threshold: freezing the embedding should let
    /// SGD catch up with AdamW.
    pub flagged: bool,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The diagnostic of an experiment's trials; `None` when none recorded
/// gradient norms (external or older trials).
pub fn gradient_diagnostic(
    trials: &[TrialSummary],
    best: &[PairBest],
) -> Option<GradientDiagnostic> {
    let mut pairs: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for s in trials {
        if let Some(gradients) = &s.gradients {
            let ratios = pairs
                .entry((&s.trial.backbone, &s.trial.optimizer))
                .or_default();
            ratios.extend(gradients.embedding_ratio);
        }
    }
    if pairs.is_empty() {
        return None;
    }
    let accuracy = |backbone: &str, optimizer: &str| {
        best.iter()
            .find(|b| b.backbone == backbone && b.optimizer == optimizer)
            .map(|b| b.mean_accuracy)
    };
    let pairs = pairs
        .into_iter()
        .map(|((backbone, optimizer), ratios)| {
            let sgd = SGD.iter().find_map(|o| accuracy(backbone, o));
            let trials = trials
                .iter()
                .filter(|s| s.trial.backbone == backbone && s.trial.optimizer == optimizer)
                .filter(|s| s.gradients.is_some())
                .count();
            let embedding_ratio = median(ratios);
            PairGradients {
                backbone: backbone.to_string(),
                optimizer: optimizer.to_string(),
                embedding_ratio,
                trials,
                sgd_adamw_gap: accuracy(backbone, ADAMW).zip(sgd).map(|(a, s)| a - s),
                flagged: embedding_ratio.is_some_and(|r| r > LARGE_EMBEDDING_RATIO),
            }
        })
        .collect();
    Some(GradientDiagnostic {
        threshold: LARGE_EMBEDDING_RATIO,
        pairs,
    })
}

/// Fine-tuning from one experiment's pre-trained backbones: per backbone
/// and pre-training optimizer, the best fine-tuned accuracy per
/// fine-tuning optimizer (of every reported experiment that fine-tunes
/// from it; an experiment that freezes names its columns so).
#[derive(Debug, Clone, Serialize)]
pub struct TransferTable {
    /// The pre-training experiment.
    pub source: String,
    /// The fine-tuning experiments.
    pub experiments: Vec<String>,
    /// Fine-tuning optimizers, `+ freeze ...` where the experiment froze.
    pub columns: Vec<String>,
    pub rows: Vec<TransferRow>,
}

/// One backbone pre-trained with one optimizer.
#[derive(Debug, Clone, Serialize)]
pub struct TransferRow {
    pub backbone: String,
    pub pretraining_optimizer: String,
    /// The pre-training pair's best accuracy (percent); `None` once the
    /// source experiment is gone.
    pub pretraining_accuracy: Option<f64>,
    /// Best fine-tuned accuracy by column; `None` where nothing finished.
    pub finetuned: Vec<Option<f64>>,
}

/// The transfer tables of the experiments `names`: one per pre-training
/// experiment they fine-tune from (`init: { from_experiment }`), in order
/// of first mention.
pub fn transfer_tables(
    store: &Store,
    names: &[String],
) -> Result<Vec<TransferTable>, StoredSpecError> {
    let mut tables: Vec<TransferTable> = Vec::new();
    for name in names {
        let Some(record) = store.experiment(name)? else {
            continue;
        };
        let Some(spec) = stored_spec(store, &record)? else {
            continue;
        };
        let Some(source) = spec.init.get(FROM_EXPERIMENT) else {
            continue;
        };
        let source = source.to_string_lossy().into_owned();
        let at = match tables.iter().position(|t| t.source == source) {
            Some(at) => at,
            None => {
                tables.push(TransferTable {
                    source: source.clone(),
                    experiments: Vec::new(),
                    columns: Vec::new(),
                    rows: Vec::new(),
                });
                tables.len() - 1
            }
        };
        let pretraining = store.best_per_pair(&source)?;
        let table = &mut tables[at];
        table.experiments.push(name.clone());
        let suffix = match spec.freeze.is_empty() {
            true => String::new(),
            false => format!(" + freeze {}", spec.freeze.join(" ")),
        };
        for best in store.best_per_pair(name)? {
            let (backbone, Some(pretrained_with)) = split_pretrained(&best.backbone) else {
                continue;
            };
            let column = format!("{}{suffix}", best.optimizer);
            let col = match table.columns.iter().position(|c| *c == column) {
                Some(col) => col,
                None => {
                    table.columns.push(column);
                    table.rows.iter_mut().for_each(|r| r.finetuned.push(None));
                    table.columns.len() - 1
                }
            };
            let row =
                match table.rows.iter().position(|r| {
                    r.backbone == backbone && r.pretraining_optimizer == pretrained_with
                }) {
                    Some(row) => row,
                    None => {
                        table.rows.push(TransferRow {
                            backbone: backbone.to_string(),
                            pretraining_optimizer: pretrained_with.to_string(),
                            pretraining_accuracy: pretraining
                                .iter()
                                .find(|p| p.backbone == backbone && p.optimizer == pretrained_with)
                                .map(|p| p.mean_accuracy),
                            finetuned: vec![None; table.columns.len()],
                        });
                        table.rows.len() - 1
                    }
                };
            table.rows[row].finetuned[col] = Some(best.mean_accuracy);
        }
    }
    Ok(tables)
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.2}"))
}

impl TransferTable {
    fn header(&self) -> Vec<String> {
        ["backbone", "pre-trained with", "pre-training"]
            .map(String::from)
            .into_iter()
            .chain(self.columns.iter().cloned())
            .collect()
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                [
                    r.backbone.clone(),
                    r.pretraining_optimizer.clone(),
                    percent(r.pretraining_accuracy),
                ]
                .into_iter()
                .chain(r.finetuned.iter().map(|&v| percent(v)))
                .collect()
            })
            .collect()
    }

    fn title(&self) -> String {
        format!(
            "Transfer from experiment {} (fine-tuned in {}): best top-1 accuracy (%)",
            self.source,
            self.experiments.join(", ")
        )
    }

    /// As text or markdown, under its heading.
    pub fn render(&self, style: Style) -> String {
        let mut out = String::new();
        heading(&mut out, &self.title(), style);
        let _ = writeln!(
            out,
            "Rows: the backbone pre-trained with each optimizer (its pre-training accuracy); \
             columns: fine-tuning optimizers; cells: the best fine-tuned accuracy.\n"
        );
        out.push_str(&grid(&self.header(), &self.cells(), style));
        out
    }

    /// One CSV record per row and fine-tuning column.
    pub fn csv(tables: &[TransferTable]) -> String {
        let rows = tables.iter().flat_map(|t| {
            t.rows.iter().flat_map(move |r| {
                t.columns.iter().zip(&r.finetuned).map(move |(column, v)| {
                    [
                        t.source.clone(),
                        r.backbone.clone(),
                        r.pretraining_optimizer.clone(),
                        r.pretraining_accuracy
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        column.clone(),
                        v.map(|a| a.to_string()).unwrap_or_default(),
                    ]
                })
            })
        });
        csv_table(
            &[
                "pretraining_experiment",
                "backbone",
                "pretraining_optimizer",
                "pretraining_accuracy",
                "finetuning",
                "finetuned_accuracy",
            ],
            rows,
        )
    }

    /// An HTML section.
    pub fn html(&self) -> String {
        html_table(&self.title(), &self.header(), &self.cells())
    }
}

fn html_table(title: &str, header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<h3>{}</h3>\n<div class=\"table\"><table>\n<tr>",
        escape(title)
    );
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
    out
}

impl GradientDiagnostic {
    fn header() -> Vec<String> {
        [
            "backbone",
            "optimizer",
            "embedding/rest",
            "AdamW - SGD",
            "trials",
            "flag",
        ]
        .map(String::from)
        .to_vec()
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.pairs
            .iter()
            .map(|p| {
                vec![
                    p.backbone.clone(),
                    p.optimizer.clone(),
                    p.embedding_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    p.sgd_adamw_gap.map_or("-".into(), |g| format!("{g:+.2}")),
                    p.trials.to_string(),
                    if p.flagged {
                        "large: try `freeze: [embedding]`".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect()
    }

    fn title(experiment: &str) -> String {
        format!("Gradient diagnostic of experiment {experiment}: embedding-to-rest gradient ratio")
    }

    fn explanation(&self) -> String {
        format!(
            "The embedding's gradient norm over the median of the other layer groups' (first steps, \
             median over the pair's trials), beside the backbone's best AdamW minus best SGD-M \
             accuracy. Above {} the embedding's gradients are much larger than the rest's, where the \
             fine-tuning paper (Kumar et al.) finds AdamW ahead of SGD and freezing the embedding \
             closes the gap.",
            self.threshold
        )
    }

    /// As text or markdown, under its heading.
    pub fn render(&self, experiment: &str, style: Style) -> String {
        let mut out = String::new();
        heading(&mut out, &Self::title(experiment), style);
        let _ = writeln!(out, "{}\n", self.explanation());
        out.push_str(&grid(&Self::header(), &self.cells(), style));
        out
    }

    /// One CSV record per pair.
    pub fn csv(diagnostics: &[(String, GradientDiagnostic)]) -> String {
        let rows = diagnostics.iter().flat_map(|(experiment, d)| {
            d.pairs.iter().map(move |p| {
                [
                    experiment.clone(),
                    p.backbone.clone(),
                    p.optimizer.clone(),
                    p.embedding_ratio.map(|r| r.to_string()).unwrap_or_default(),
                    p.sgd_adamw_gap.map(|g| g.to_string()).unwrap_or_default(),
                    p.trials.to_string(),
                    p.flagged.to_string(),
                ]
            })
        });
        csv_table(
            &[
                "experiment",
                "backbone",
                "optimizer",
                "embedding_ratio",
                "sgd_adamw_gap",
                "trials",
                "flagged",
            ],
            rows,
        )
    }

    /// An HTML section.
    pub fn html(&self, experiment: &str) -> String {
        format!(
            "{}<p>{}</p>\n",
            html_table(&Self::title(experiment), &Self::header(), &self.cells()),
            escape(&self.explanation())
        )
    }
}

/// Every fine-tuning section of the report of `names`: their gradient
/// diagnostics and transfer tables.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneReport {
    pub gradients: Vec<(String, GradientDiagnostic)>,
    pub transfer: Vec<TransferTable>,
}

impl FinetuneReport {
    pub fn build(store: &Store, names: &[String]) -> Result<Self, StoredSpecError> {
        let mut gradients = Vec::new();
        for name in names {
            let trials = store.trial_summaries(name)?;
            let best = store.best_per_pair(name)?;
            if let Some(d) = gradient_diagnostic(&trials, &best) {
                gradients.push((name.clone(), d));
            }
        }
        Ok(FinetuneReport {
            gradients,
            transfer: transfer_tables(store, names)?,
        })
    }

    /// The sections as text or markdown (empty when there are none).
    pub fn render(&self, style: Style) -> String {
        let mut out = String::new();
        for (experiment, d) in &self.gradients {
            out.push_str(&d.render(experiment, style));
        }
        for t in &self.transfer {
            out.push_str(&t.render(style));
        }
        out
    }

    /// The sections as CSV tables after the analysis's, each after a blank
    /// line (empty when there are none).
    pub fn csv(&self) -> String {
        let mut out = String::new();
        if !self.gradients.is_empty() {
            out += "\n";
            out += &GradientDiagnostic::csv(&self.gradients);
        }
        if !self.transfer.is_empty() {
            out += "\n";
            out += &TransferTable::csv(&self.transfer);
        }
        out
    }

    /// The sections as HTML (empty when there are none).
    pub fn html(&self) -> String {
        let mut out = String::new();
        for (experiment, d) in &self.gradients {
            out += &d.html(experiment);
        }
        for t in &self.transfer {
            out += &t.html();
        }
        match out.is_empty() {
            true => out,
            false => format!("<h2>Fine-tuning</h2>\n{out}"),
        }
    }
}

/// The file a fine-tuned backbone of `experiment` started from: its `init`
/// file, or for `init: { from_experiment }` the pre-training pair's best
/// saved weights; `None` for a backbone trained from scratch.
pub fn starting_weights(
    store: &Store,
    experiment: &str,
    backbone: &str,
) -> Result<Option<PathBuf>, StoredSpecError> {
    let Some(record) = store.experiment(experiment)? else {
        return Ok(None);
    };
    let Some(spec) = stored_spec(store, &record)? else {
        return Ok(None);
    };
    if let Some(source) = spec.init.get(FROM_EXPERIMENT) {
        let source = source.to_string_lossy();
        let (base, Some(pretrained_with)) = split_pretrained(backbone) else {
            return Ok(None);
        };
        return Ok(store
            .best_per_pair(&source)?
            .into_iter()
            .filter(|b| b.backbone == base && b.optimizer == pretrained_with)
            .flat_map(|b| b.trial_ids)
            .map(|id| store.weights_path(&source, &id))
            .find(|path| path.is_file()));
    }
    let base_dir = record.base_dir.unwrap_or_default();
    Ok(spec
        .init
        .iter()
        .find(|(key, _)| spec.with_preset(key) == backbone)
        .map(|(_, path)| base_dir.join(path)))
}

/// Why a safetensors file's header does not read.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a safetensors file: {0}")]
    Truncated(std::io::Error),
    #[error("not a safetensors header: {0}")]
    Header(serde_json::Error),
    #[error("`{name}`: {source}")]
    Entry {
        name: String,
        source: serde_json::Error,
    },
}

/// Tensor names and shapes of a safetensors file, read from its JSON
/// header alone (no tensor data, no libtorch).
pub fn safetensors_shapes(path: &Path) -> Result<BTreeMap<String, Vec<i64>>, SafetensorsError> {
    let mut file = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    file.read_exact(&mut header)
        .map_err(SafetensorsError::Truncated)?;
    #[derive(serde::Deserialize)]
    struct Entry {
        shape: Vec<i64>,
    }
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(SafetensorsError::Header)?;
    entries
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, value)| {
            let entry: Entry =
                serde_json::from_value(value).map_err(|source| SafetensorsError::Entry {
                    name: name.clone(),
                    source,
                })?;
            Ok((name, entry.shape))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bocb_spec::{GradNormRow, GradNorms, TrialStatus};
    use bocb_store::TrialRecord;

    /// A trial whose first steps had these group norms, embedding first.
    fn trial(id: &str, backbone: &str, optimizer: &str, norms: &[f64]) -> TrialSummary {
        TrialSummary::of(&TrialRecord {
            status: TrialStatus::Done,
            final_accuracy: Some(50.0),
            grad_norms: Some(GradNorms {
                groups: ["embedding", "layer1", "layer2", "head"]
                    .map(String::from)
                    .to_vec(),
                steps: (0..3)
                    .map(|step| GradNormRow {
                        step,
                        epoch: 1,
                        norms: norms.to_vec(),
                    })
                    .collect(),
                epochs: Vec::new(),
            }),
            ..TrialRecord::new("e", id, backbone, optimizer)
        })
    }

    #[test]
    fn a_pair_with_100x_embedding_gradients_is_flagged_and_a_normal_one_is_not() {
        // The micro ResNet's first steps: the embedding's norm near the rest's.
        let normal = [0.8, 1.1, 0.9, 0.6];
        let mut large = normal;
        large[0] *= 100.0;
        let trials = [
            trial("a", "resnet", "sgd_m", &normal),
            trial("b", "resnet", "adamw", &normal),
            trial("c", "vit", "sgd_m", &large),
            trial("d", "vit", "adamw", &large),
        ];
        let best = |backbone: &str, optimizer: &str, acc: f64| PairBest {
            backbone: backbone.into(),
            optimizer: optimizer.into(),
            params: BTreeMap::new(),
            grid: None,
            mean_accuracy: acc,
            std_accuracy: 0.0,
            seeds: 1,
            trial_ids: Vec::new(),
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
        };
        let best = [
            best("resnet", "sgd_m", 60.0),
            best("resnet", "adamw", 59.0),
            best("vit", "sgd_m", 40.0),
            best("vit", "adamw", 52.5),
        ];
        let d = gradient_diagnostic(&trials, &best).unwrap();
        let find = |b: &str, o: &str| {
            d.pairs
                .iter()
                .find(|p| p.backbone == b && p.optimizer == o)
                .unwrap()
        };
        let resnet = find("resnet", "sgd_m");
        assert!(!resnet.flagged);
        assert!((resnet.embedding_ratio.unwrap() - 0.8 / 0.9).abs() < 1e-9);
        assert_eq!(resnet.sgd_adamw_gap, Some(-1.0));
        let vit = find("vit", "sgd_m");
        assert!(vit.flagged);
        assert!((vit.embedding_ratio.unwrap() - 80.0 / 0.9).abs() < 1e-6);
        assert_eq!(vit.sgd_adamw_gap, Some(12.5));
        let text = d.render("e", Style::Text);
        let flagged: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("freeze: [embedding]"))
            .collect();
        assert_eq!(flagged.len(), 2, "{text}");
        assert!(flagged.iter().all(|l| l.starts_with("vit")), "{text}");
        // Trials that recorded nothing give no diagnostic.
        let bare = TrialSummary::of(&TrialRecord::new("e", "x", "resnet", "sgd_m"));
        assert!(gradient_diagnostic(&[bare], &best).is_none());
    }
}

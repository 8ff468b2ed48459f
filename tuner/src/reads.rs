//! What the read commands print (`report`, `export`, `patterns`, `trials`),
//! computed from a store in one place: the CLI on a store it opened, and the
//! service's `/api/report`, `/api/export` and `/api/patterns` on the store it
//! holds, so both give the same bytes. [`Reader`] picks the way: the store
//! itself, or the service's API when a service holds the store's lock.

use std::collections::BTreeMap;

use bocb_store::{Store, StoreError, TrialRecord};
use clap::ValueEnum;
use thiserror::Error;

use crate::analysis::patterns::{MeasurePatterns, PatternsError};
use crate::analysis::{self, html::HtmlError, render, FailureRuleChoice};
use crate::export::{self, ExportError};
use crate::registries::Registries;
use crate::report;
use bocb_store::StoredSpecError;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] StoredSpecError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Patterns(#[from] PatternsError),
    #[error(transparent)]
    Html(#[from] HtmlError),
    /// An experiment the store lacks, or a store without any.
    #[error("{0}")]
    NotFound(String),
    /// A query or option that makes no sense.
    #[error("{0}")]
    BadQuery(String),
    #[error("cannot write the output: {0}")]
    Encode(String),
}

/// `bocb report --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Md,
    Json,
    Csv,
    Html,
}

/// `bocb export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Yaml,
    Json,
    Csv,
}

/// `bocb export --as`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportAs {
    TimmArgs,
}

/// What `bocb report` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    /// Only this experiment (default: all in the store).
    pub experiment: Option<String>,
    pub format: ReportFormat,
    pub failure_rule: FailureRuleChoice,
    /// γ of Eq. (1) (default: the experiment's, else 3).
    pub gamma: Option<f64>,
    /// The HTML report's learning curves, the one part that reads every
    /// epoch of every trial.
    pub curves: bool,
}

impl Default for ReportQuery {
    fn default() -> Self {
        ReportQuery {
            experiment: None,
            format: ReportFormat::Table,
            failure_rule: FailureRuleChoice::Eq1,
            gamma: None,
            curves: true,
        }
    }
}

/// What `bocb export` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportQuery {
    pub experiment: String,
    /// Default: yaml (json with `trials`).
    pub format: Option<ExportFormat>,
    pub as_: Option<ExportAs>,
    pub backbone: Option<String>,
    pub optimizer: Option<String>,
    /// Every trial with its per-epoch metrics, as JSON.
    pub trials: bool,
}

/// What `bocb patterns` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternsQuery {
    pub experiment: String,
    pub json: bool,
}

fn name<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .expect("no value is skipped")
        .get_name()
        .to_string()
}

fn parse_enum<T: ValueEnum>(key: &str, text: &str) -> Result<T, ReadError> {
    T::from_str(text, false).map_err(|_| {
        let valid: Vec<String> = T::value_variants().iter().map(name).collect();
        ReadError::BadQuery(format!(
            "`{key}={text}`: valid values are {}",
            valid.join(", ")
        ))
    })
}

fn parse_bool(key: &str, text: &str) -> Result<bool, ReadError> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ReadError::BadQuery(format!(
            "`{key}={text}`: valid values are true, false"
        ))),
    }
}

/// Decodes a query string into its pairs, refusing keys outside `known`
/// and repeated keys.
fn query_pairs(query: &str, known: &[&str]) -> Result<BTreeMap<String, String>, ReadError> {
    let mut pairs = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if !known.contains(&key.as_ref()) {
            return Err(ReadError::BadQuery(format!(
                "unknown query parameter `{key}`; valid: {}",
                known.join(", ")
            )));
        }
        if pairs.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(ReadError::BadQuery(format!(
                "query parameter `{key}` given twice"
            )));
        }
    }
    Ok(pairs)
}

fn required(pairs: &mut BTreeMap<String, String>, key: &str) -> Result<String, ReadError> {
    pairs
        .remove(key)
        .ok_or_else(|| ReadError::BadQuery(format!("the query parameter `{key}` is missing")))
}

fn encode(pairs: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    query.finish()
}

/// Refuses a γ that Eq. (1) cannot use.
pub fn check_gamma(gamma: Option<f64>) -> Result<(), ReadError> {
    match gamma.filter(|g| !(g.is_finite() && *g > 0.0)) {
        Some(g) => Err(ReadError::BadQuery(format!(
            "--gamma must be a positive number (3 for CIFAR, 1 for ImageNet), got {g}"
        ))),
        None => Ok(()),
    }
}

impl ReportQuery {
    /// The query string of `GET /api/report`.
    pub fn to_query(&self) -> String {
        encode(&[
            ("experiment", self.experiment.clone()),
            ("format", Some(name(&self.format))),
            ("failure_rule", Some(name(&self.failure_rule))),
            ("gamma", self.gamma.map(|g| g.to_string())),
            ("curves", (!self.curves).then(|| "false".to_string())),
        ])
    }

    pub fn from_query(query: &str) -> Result<Self, ReadError> {
        let mut pairs = query_pairs(
            query,
            &["experiment", "format", "failure_rule", "gamma", "curves"],
        )?;
        let default = ReportQuery::default();
        let gamma = match pairs.remove("gamma") {
            Some(text) => Some(
                text.parse::<f64>()
                    .map_err(|_| ReadError::BadQuery(format!("`gamma={text}` is not a number")))?,
            ),
            None => None,
        };
        check_gamma(gamma)?;
        Ok(ReportQuery {
            experiment: pairs.remove("experiment"),
            format: match pairs.remove("format") {
                Some(text) => parse_enum("format", &text)?,
                None => default.format,
            },
            failure_rule: match pairs.remove("failure_rule") {
                Some(text) => parse_enum("failure_rule", &text)?,
                None => default.failure_rule,
            },
            gamma,
            curves: pairs
                .remove("curves")
                .map(|text| parse_bool("curves", &text))
                .transpose()?
                .unwrap_or(default.curves),
        })
    }
}

impl ExportQuery {
    /// The query string of `GET /api/export`.
    pub fn to_query(&self) -> String {
        encode(&[
            ("experiment", Some(self.experiment.clone())),
            ("format", self.format.map(|f| name(&f))),
            ("as", self.as_.map(|a| name(&a))),
            ("backbone", self.backbone.clone()),
            ("optimizer", self.optimizer.clone()),
            ("trials", self.trials.then(|| "true".to_string())),
        ])
    }

    pub fn from_query(query: &str) -> Result<Self, ReadError> {
        let mut pairs = query_pairs(
            query,
            &[
                "experiment",
                "format",
                "as",
                "backbone",
                "optimizer",
                "trials",
            ],
        )?;
        Ok(ExportQuery {
            experiment: required(&mut pairs, "experiment")?,
            format: pairs
                .remove("format")
                .map(|text| parse_enum("format", &text))
                .transpose()?,
            as_: pairs
                .remove("as")
                .map(|text| parse_enum("as", &text))
                .transpose()?,
            backbone: pairs.remove("backbone"),
            optimizer: pairs.remove("optimizer"),
            trials: pairs
                .remove("trials")
                .map(|text| parse_bool("trials", &text))
                .transpose()?
                .unwrap_or(false),
        })
    }
}

impl PatternsQuery {
    /// The query string of `GET /api/patterns`.
    pub fn to_query(&self) -> String {
        encode(&[
            ("experiment", Some(self.experiment.clone())),
            ("json", self.json.then(|| "true".to_string())),
        ])
    }

    pub fn from_query(query: &str) -> Result<Self, ReadError> {
        let mut pairs = query_pairs(query, &["experiment", "json"])?;
        Ok(PatternsQuery {
            experiment: required(&mut pairs, "experiment")?,
            json: pairs
                .remove("json")
                .map(|text| parse_bool("json", &text))
                .transpose()?
                .unwrap_or(false),
        })
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, ReadError> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|e| ReadError::Encode(e.to_string()))
}

/// The ranking's memory component: state bytes per parameter, as each
/// search space records the runner's measurement.
pub fn state_memory(registries: &Registries) -> BTreeMap<String, f64> {
    registries
        .catalog
        .optimizer_names()
        .filter_map(|name| {
            let space = registries.catalog.optimizer(name).ok()?;
            Some((name.to_string(), space.state_bytes_per_param?))
        })
        .collect()
}

/// `bocb report`'s text.
pub fn report_text(
    store: &Store,
    registries: &Registries,
    query: &ReportQuery,
) -> Result<String, ReadError> {
    check_gamma(query.gamma)?;
    let names: Vec<String> = match &query.experiment {
        Some(name) => vec![name.clone()],
        None => store.experiments()?.into_iter().map(|e| e.name).collect(),
    };
    if names.is_empty() {
        return Err(ReadError::NotFound(
            "the store holds no experiment yet; run one with `bocb run FILE`".to_string(),
        ));
    }
    let mut reports = Vec::new();
    for name in &names {
        match report::build(store, &registries.catalog, name)? {
            Some(r) => reports.push(r),
            None => {
                let known: Vec<String> = store.experiments()?.into_iter().map(|e| e.name).collect();
                return Err(ReadError::NotFound(format!(
                    "no experiment `{name}` in the store; it holds: {}",
                    known.join(", ")
                )));
            }
        }
    }
    let memory = state_memory(registries);
    let mut analyses = Vec::new();
    for name in &names {
        let analysis = analysis::analyse(
            store,
            name,
            query.failure_rule,
            query.gamma,
            &memory,
            &registries.catalog,
        )?
        .ok_or_else(|| {
            ReadError::NotFound(format!("experiment `{name}` vanished from the store"))
        })?;
        analyses.push(analysis);
    }
    let finetune = analysis::finetune::FinetuneReport::build(store, &names)?;
    Ok(match query.format {
        ReportFormat::Table | ReportFormat::Md => {
            let style = if query.format == ReportFormat::Table {
                render::Style::Text
            } else {
                render::Style::Markdown
            };
            let parts: Vec<String> = reports
                .iter()
                .zip(&analyses)
                .map(|(report, analysis)| {
                    let trained = matches!(analysis.origin, analysis::results::Origin::Trained);
                    match (style, trained) {
                        (render::Style::Text, true) => {
                            format!(
                                "{}{}",
                                report::render_table(report),
                                render::render(analysis, style)
                            )
                        }
                        (render::Style::Markdown, _) => format!(
                            "## Experiment {}\n{}",
                            analysis.experiment,
                            render::render(analysis, style)
                        ),
                        (render::Style::Text, false) => render::render(analysis, style),
                    }
                })
                .collect();
            parts.join("\n") + &finetune.render(style)
        }
        ReportFormat::Json => {
            #[derive(serde::Serialize)]
            struct Full<'a> {
                #[serde(flatten)]
                report: &'a report::ExperimentReport,
                analysis: analysis::AnalysisJson<'a>,
                /// Layer-wise patterns of the best pairs' saved weights.
                #[serde(skip_serializing_if = "Option::is_none")]
                patterns: Option<Vec<analysis::patterns::PairPatterns>>,
                /// Per pair, the embedding-to-rest gradient ratio and flag.
                #[serde(skip_serializing_if = "Option::is_none")]
                gradients: Option<&'a analysis::finetune::GradientDiagnostic>,
                /// The transfer table this experiment fine-tunes into.
                #[serde(skip_serializing_if = "Option::is_none")]
                transfer: Option<&'a analysis::finetune::TransferTable>,
            }
            let full = reports
                .iter()
                .zip(&analyses)
                .map(|(report, analysis)| {
                    Ok(Full {
                        report,
                        analysis: analysis.json(),
                        patterns: analysis::patterns::saved_patterns(
                            store,
                            &analysis.experiment,
                            MEASURE_PATTERNS,
                        )?,
                        gradients: finetune
                            .gradients
                            .iter()
                            .find(|(name, _)| *name == analysis.experiment)
                            .map(|(_, d)| d),
                        transfer: finetune
                            .transfer
                            .iter()
                            .find(|t| t.experiments.contains(&analysis.experiment)),
                    })
                })
                .collect::<Result<Vec<Full>, ReadError>>()?;
            to_json(&full)?
        }
        ReportFormat::Html => {
            let html =
                analysis::html::render_report(store, &analyses, query.curves, MEASURE_PATTERNS)?;
            html.replace("</body>", &(finetune.html() + "</body>"))
        }
        ReportFormat::Csv => render::render_csv(&analyses) + &finetune.csv(),
    })
}

/// `bocb export`'s text.
pub fn export_text(
    store: &Store,
    registries: &Registries,
    query: &ExportQuery,
) -> Result<String, ReadError> {
    if query.trials {
        if query.format.is_some_and(|f| f != ExportFormat::Json) {
            return Err(ReadError::BadQuery(
                "--trials writes JSON only; drop --format or use --format json".to_string(),
            ));
        }
        if query.as_.is_some() || query.backbone.is_some() || query.optimizer.is_some() {
            return Err(ReadError::BadQuery(
                "--trials exports every trial: it takes no --as, --backbone or --optimizer"
                    .to_string(),
            ));
        }
        return to_json(&export::trials(store, &query.experiment)?);
    }
    let configs = export::best_configs(
        store,
        registries,
        &query.experiment,
        query.backbone.as_deref(),
        query.optimizer.as_deref(),
    )?;
    Ok(match (query.as_, query.format) {
        (Some(ExportAs::TimmArgs), None) => {
            // A TorchScript optimizer's space may name its timm equivalent.
            let catalog =
                report::experiment_catalog(store, &registries.catalog, &query.experiment)?;
            export::render_timm_args(&configs, &catalog)
        }
        (Some(ExportAs::TimmArgs), Some(_)) => {
            return Err(ReadError::BadQuery(
                "--as timm-args writes command lines: drop --format".to_string(),
            ))
        }
        (None, None | Some(ExportFormat::Yaml)) => {
            serde_yaml::to_string(&configs).map_err(|e| ReadError::Encode(e.to_string()))?
        }
        (None, Some(ExportFormat::Json)) => to_json(&configs)?,
        (None, Some(ExportFormat::Csv)) => export::render_csv(&configs),
    })
}

/// How this build measures the patterns of weights an older bocb saved
/// without them: with libtorch where it trains, not at all where it does not.
#[cfg(feature = "train")]
const MEASURE_PATTERNS: Option<MeasurePatterns> =
    Some(|weights| bocb_trial_runner::patterns::file_patterns(weights).map_err(Into::into));
#[cfg(not(feature = "train"))]
const MEASURE_PATTERNS: Option<MeasurePatterns> = None;

/// `bocb patterns`' text.
pub fn patterns_text(store: &Store, query: &PatternsQuery) -> Result<String, ReadError> {
    let pairs = analysis::patterns::best_pair_patterns(store, &query.experiment, MEASURE_PATTERNS)?;
    if query.json {
        to_json(&pairs[..])
    } else {
        Ok(analysis::patterns::render_patterns(&pairs))
    }
}

/// The trials of experiment `name`, refusing one the store lacks.
pub fn trial_records(store: &Store, name: &str) -> Result<Vec<TrialRecord>, ReadError> {
    if store.experiment(name)?.is_none() {
        return Err(ReadError::NotFound(format!(
            "no experiment `{name}` in the store; `bocb status` or `bocb report` lists them"
        )));
    }
    Ok(store.trials(name)?)
}

/// `bocb trials`' text.
pub fn trials_text(trials: &[TrialRecord], json: bool) -> Result<String, ReadError> {
    if json {
        to_json(trials)
    } else {
        Ok(crate::trial_table::render_trial_table(trials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_survive_their_query_strings() {
        let report = ReportQuery {
            experiment: Some("a b&c".to_string()),
            format: ReportFormat::Html,
            failure_rule: FailureRuleChoice::Tukey,
            gamma: Some(1.5),
            curves: false,
        };
        assert_eq!(ReportQuery::from_query(&report.to_query()).unwrap(), report);
        assert!(report.to_query().ends_with("&curves=false"));
        assert_eq!(ReportQuery::from_query("").unwrap(), ReportQuery::default());
        let export = ExportQuery {
            experiment: "e".to_string(),
            format: None,
            as_: Some(ExportAs::TimmArgs),
            backbone: Some("resnet18_cifar".to_string()),
            optimizer: None,
            trials: false,
        };
        assert_eq!(
            export.to_query(),
            "experiment=e&as=timm-args&backbone=resnet18_cifar"
        );
        assert_eq!(ExportQuery::from_query(&export.to_query()).unwrap(), export);
        let patterns = PatternsQuery {
            experiment: "e".to_string(),
            json: true,
        };
        assert_eq!(
            PatternsQuery::from_query(&patterns.to_query()).unwrap(),
            patterns
        );
    }

    #[test]
    fn bad_queries_say_what_is_valid() {
        let error = |q: &str| ReportQuery::from_query(q).unwrap_err().to_string();
        assert!(error("format=pdf").contains("valid values are table, md, json, csv, html"));
        assert!(error("gamma=-1").contains("positive number"));
        assert!(error("gamma=x").contains("not a number"));
        assert!(error("colour=red").contains("unknown query parameter `colour`"));
        assert!(error("format=md&format=csv").contains("given twice"));
        let missing = ExportQuery::from_query("format=csv")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("`experiment` is missing"), "{missing}");
    }
}

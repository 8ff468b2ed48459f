//! End-to-end: `bocb report --format html` on the paper's imported Table 1
//! and on a real tiny experiment trained on synthetic data. They drive the
//! release binary (`cargo build --release -p bocb-tuner --bin bocb` first;
//! `make test` does).

mod common;

use std::path::Path;

use common::{bocb, synth};

fn ok(args: &[&str]) -> String {
    let out = bocb(args);
    assert!(
        out.status.success(),
        "bocb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The report parsed as one XML document (the report is polyglot XHTML).
fn parse(html: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, options)
        .unwrap_or_else(|e| panic!("the report is not one well-formed document: {e}"))
}

fn count(doc: &roxmltree::Document, name: &str) -> usize {
    doc.descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == name)
        .count()
}

fn text(doc: &roxmltree::Document) -> String {
    doc.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

fn assert_self_contained(html: &str) {
    for reference in [
        "src=\"http",
        "href=\"http",
        "<script",
        "url(",
        "@import",
        "<link",
    ] {
        assert!(
            !html.contains(reference),
            "the report refers out: {reference}"
        );
    }
}

#[test]
fn the_papers_table_reports_as_html() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let table =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bocb-table1-cifar100.tsv");
    ok(&[
        "import",
        "--table",
        table.to_str().unwrap(),
        "--experiment",
        "paper",
        "--store",
        store,
    ]);
    let out = tmp.path().join("paper.html");
    ok(&[
        "report",
        "--experiment",
        "paper",
        "--format",
        "html",
        "--failure-rule",
        "tukey",
        "--out",
        out.to_str().unwrap(),
        "--store",
        store,
    ]);
    let html = std::fs::read_to_string(&out).unwrap();
    let doc = parse(&html);
    assert_self_contained(&html);
    // The heat map and the violins; no grid file, trials or weights.
    assert_eq!(count(&doc, "svg"), 2);
    assert_eq!(count(&doc, "h3"), 6);
    let words = text(&doc);
    let fixture = std::fs::read_to_string(&table).unwrap();
    let rows: Vec<Vec<&str>> = fixture.lines().map(|l| l.split('\t').collect()).collect();
    for backbone in &rows[0][1..] {
        assert!(words.contains(backbone), "{backbone} missing");
    }
    for row in &rows[1..] {
        assert!(words.contains(row[0]), "{} missing", row[0]);
    }
    assert!(words.contains("failure by Tukey"), "the rule is named");
    assert!(words.contains("bocb import --grid FILE"));
    assert!(words.contains("no learning curves"));
}

const TINY: &str = "\
name: tiny
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar@micro]
optimizers: [sgd_m, adamw]
epochs: 2
seeds: 1
batch_size: 32
device: cpu
strategy: tpe
budget: { trials: 3 }
save_weights: true
";

#[test]
fn a_trained_experiment_reports_every_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 256, 64, 3);
    let experiment = tmp.path().join("exp.yaml");
    std::fs::write(&experiment, TINY).unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    ok(&[
        "run",
        experiment.to_str().unwrap(),
        "--store",
        store,
        "--quiet",
    ]);

    let html = ok(&[
        "report",
        "--experiment",
        "tiny",
        "--format",
        "html",
        "--store",
        store,
    ]);
    let doc = parse(&html);
    assert_self_contained(&html);
    // Heat map, violins, variation per backbone and per optimizer, ridges,
    // learning curves; bocb trained the trials, so it recorded their
    // gradient norms and the gradient diagnostic is a seventh section.
    assert_eq!(count(&doc, "svg"), 6);
    assert_eq!(count(&doc, "h3"), 7);
    let words = text(&doc);
    assert!(
        words.contains("Gradient diagnostic of experiment tiny"),
        "{words}"
    );
    for name in ["resnet18_cifar@micro", "sgd_m", "adamw"] {
        assert!(words.contains(name), "{name} missing");
    }
    // A learning-curve panel per pair.
    assert!(words.contains("resnet18_cifar@micro × sgd_m: "), "{words}");
    assert!(words.contains("resnet18_cifar@micro × adamw: "), "{words}");
    assert!(words.contains("PL exponent α"));

    // The JSON report carries the same patterns.
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "report",
        "--experiment",
        "tiny",
        "--format",
        "json",
        "--store",
        store,
    ]))
    .unwrap();
    let patterns = json[0]["patterns"].as_array().expect("a patterns key");
    assert_eq!(patterns.len(), 2);
    assert!(patterns
        .iter()
        .all(|p| !p["layers"].as_array().unwrap().is_empty()));
}

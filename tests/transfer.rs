//! Fine-tuning from bocb's own runs end to end through the binary:
//! `init: { from_experiment }` starts each trial from the pre-training
//! experiment's best saved weights, once per pre-training optimizer, and
//! `bocb report --format json` carries the transfer table and the gradient
//! diagnostic.

mod common;

use std::path::Path;
use std::process::Output;

use common::{bocb, synth};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(dir: &Path, store: &str, name: &str, body: &str) -> Output {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, body).unwrap();
    bocb(&["run", file.to_str().unwrap(), "--store", store, "--quiet"])
}

/// One config per pair, one epoch of a micro backbone on tiny data.
fn experiment(name: &str, data: &str, backbones: &str, extra: &str) -> String {
    format!(
        "name: {name}
dataset: {{ format: cifar100-bin, path: {data} }}
backbones: [{backbones}]
optimizers: [sgd_m, adamw]
epochs: 1
batch_size: 16
budget: {{ trials: 1 }}
device: cpu
{extra}"
    )
}

#[test]
fn fine_tuning_from_an_experiment_fills_the_transfer_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(&dir.join("pre"), 96, 32, 1);
    // Another task: other images and 6 classes, so the head starts fresh.
    let down = dir.join("down");
    let out = bocb(&[
        "data",
        "synth",
        "--out",
        down.to_str().unwrap(),
        "--format",
        "cifar100-bin",
        "--classes",
        "6",
        "--train",
        "96",
        "--test",
        "32",
        "--seed",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let store = dir.join("store");
    let store = store.to_str().unwrap();

    // Before the pre-training exists: refused, naming it and the fix.
    let ft = experiment(
        "ft",
        "down",
        "resnet18_cifar@micro",
        "init: { from_experiment: pre }\nsave_weights: true\n",
    );
    let out = run(dir, store, "ft", &ft);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no experiment `pre`") && err.contains("save_weights: true"),
        "{err}"
    );

    let pre = experiment("pre", "pre", "resnet18_cifar@micro", "save_weights: true\n");
    let out = run(dir, store, "pre", &pre);
    assert!(out.status.success(), "{}", stderr(&out));

    // A backbone the pre-training did not train has no weights to start from.
    let other = experiment(
        "other",
        "down",
        "vit_tiny_cifar@micro",
        "init: { from_experiment: pre }\n",
    );
    let out = run(dir, store, "other", &other);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no saved weights for `vit_tiny_cifar@micro`"),
        "{err}"
    );

    let out = run(dir, store, "ft", &ft);
    assert!(out.status.success(), "{}", stderr(&out));

    // Each fine-tuning trial is its backbone pre-trained with one optimizer.
    let export = bocb(&["export", "--experiment", "ft", "--trials", "--store", store]);
    assert!(export.status.success(), "{}", stderr(&export));
    let trials: Vec<serde_json::Value> = serde_json::from_slice(&export.stdout).unwrap();
    let mut pairs: Vec<(String, String)> = trials
        .iter()
        .map(|t| {
            assert_eq!(t["status"], "done", "{t}");
            (
                t["backbone"].as_str().unwrap().to_string(),
                t["optimizer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    let pair = |b: &str, o: &str| (format!("resnet18_cifar@micro~{b}"), o.to_string());
    assert_eq!(
        pairs,
        [
            pair("adamw", "adamw"),
            pair("adamw", "sgd_m"),
            pair("sgd_m", "adamw"),
            pair("sgd_m", "sgd_m")
        ]
    );

    let report = bocb(&[
        "report",
        "--experiment",
        "ft",
        "--format",
        "json",
        "--store",
        store,
    ]);
    assert!(report.status.success(), "{}", stderr(&report));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let report = &report[0];
    let table = &report["transfer"];
    assert_eq!(table["source"], "pre");
    assert_eq!(table["experiments"], serde_json::json!(["ft"]));
    let columns: Vec<&str> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let rows = table["rows"].as_array().unwrap();
    let pre_export = bocb(&[
        "export",
        "--experiment",
        "pre",
        "--trials",
        "--store",
        store,
    ]);
    let pre_trials: Vec<serde_json::Value> = serde_json::from_slice(&pre_export.stdout).unwrap();
    let accuracy = |trials: &[serde_json::Value], backbone: &str, optimizer: &str| {
        trials
            .iter()
            .find(|t| t["backbone"] == backbone && t["optimizer"] == optimizer)
            .unwrap()["final_accuracy"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(rows.len(), 2, "{table}");
    for row in rows {
        assert_eq!(row["backbone"], "resnet18_cifar@micro");
        let pre_optimizer = row["pretraining_optimizer"].as_str().unwrap();
        assert_eq!(
            row["pretraining_accuracy"].as_f64().unwrap(),
            accuracy(&pre_trials, "resnet18_cifar@micro", pre_optimizer)
        );
        let cells = row["finetuned"].as_array().unwrap();
        assert_eq!(cells.len(), columns.len());
        for (column, cell) in columns.iter().zip(cells) {
            let backbone = format!("resnet18_cifar@micro~{pre_optimizer}");
            assert_eq!(cell.as_f64().unwrap(), accuracy(&trials, &backbone, column));
        }
    }
    let mut sorted = columns.clone();
    sorted.sort();
    assert_eq!(sorted, ["adamw", "sgd_m"]);

    // Memory beside accuracy: AdamW keeps two moments per parameter where
    // SGD-M keeps one buffer; both measured their peak.
    let best = |backbone: &str, optimizer: &str| {
        report["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["backbone"] == backbone && p["optimizer"] == optimizer)
            .unwrap()["best"]
            .clone()
    };
    for pre_optimizer in ["adamw", "sgd_m"] {
        let backbone = format!("resnet18_cifar@micro~{pre_optimizer}");
        let state = |o: &str| {
            best(&backbone, o)["optimizer_state_bytes"]
                .as_u64()
                .unwrap()
        };
        assert!(state("sgd_m") > 0);
        assert_eq!(state("adamw"), 2 * state("sgd_m"));
        assert!(
            best(&backbone, "adamw")["peak_memory_bytes"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    // Every trial recorded its gradient norms: each pair has a ratio.
    let gradients = report["gradients"]["pairs"].as_array().unwrap();
    assert_eq!(gradients.len(), 4);
    assert!(gradients
        .iter()
        .all(|p| p["embedding_ratio"].as_f64().is_some()));

    // Fig. A5: the patterns tell the pre-trained layers from the fresh head.
    let patterns = bocb(&["patterns", "--experiment", "ft", "--json", "--store", store]);
    assert!(patterns.status.success(), "{}", stderr(&patterns));
    let patterns: Vec<serde_json::Value> = serde_json::from_slice(&patterns.stdout).unwrap();
    assert_eq!(patterns.len(), 4);
    for pair in &patterns {
        let from = pair["pretrained_from"].as_str().unwrap();
        assert!(from.contains("/weights/pre/"), "{from}");
        let mut fresh: Vec<&str> = pair["fresh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        fresh.sort();
        assert_eq!(fresh, ["fc.bias", "fc.weight"], "{}", pair["backbone"]);
    }
    let text = bocb(&["patterns", "--experiment", "ft", "--store", store]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("mean over 1 fresh weight matrices"), "{text}");
}

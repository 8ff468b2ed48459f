//! End-to-end: `bocb import`, `bocb report` and `bocb export` on the paper's
//! Table 1 and on a small trained history whose statistics are worked out
//! by hand below. They drive the release binary (`cargo build --release -p
//! bocb-tuner --bin bocb` first; `make test` does).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bocb_store::{EpochMetrics, ExperimentRecord, GridPos, Store, TrialRecord, TrialStatus};
use common::bocb;
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let out = bocb(args);
    assert!(
        out.status.success(),
        "bocb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = bocb(args);
    assert!(!out.status.success(), "bocb {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn paper_table() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bocb-table1-cifar100.tsv")
}

/// The paper's own Mean and Std/Range rows, by backbone.
fn paper_summary() -> BTreeMap<String, (f64, f64, f64)> {
    let text = std::fs::read_to_string(paper_table()).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let find = |name: &str| rows.iter().find(|r| r[0] == name).unwrap().clone();
    let (mean, spread) = (find("Mean"), find("Std/Range"));
    rows[0][1..]
        .iter()
        .enumerate()
        .map(|(i, backbone)| {
            let (std, range) = spread[i + 1].split_once('/').unwrap();
            (
                backbone.to_string(),
                (
                    mean[i + 1].parse().unwrap(),
                    std.parse().unwrap(),
                    range.parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// Table 1's Mean / population Std / Range after removing each column's
/// worst result, computed from the fixture with numpy (independently of
/// bocb), in hundredths.
const EXPECTED: [(&str, i64, i64, i64); 20] = [
    ("AlexNet", 6403, 240, 797),
    ("VGG-13", 7496, 124, 426),
    ("R-50", 7670, 189, 628),
    ("DN-121", 7719, 154, 581),
    ("MobV2", 7592, 170, 750),
    ("Eff-B0", 7798, 129, 565),
    ("RVGG-A1", 7541, 105, 412),
    ("DeiT-S", 7135, 317, 1280),
    ("MLP-S", 7240, 184, 748),
    ("Swin-T", 8092, 132, 595),
    ("CNX-T", 7908, 698, 2340),
    ("CNXV2-T", 8312, 97, 303),
    ("Moga-S", 8382, 278, 1053),
    ("URLK-T", 8284, 534, 2561),
    ("TNX-T", 8646, 63, 235),
    ("IF-12", 7828, 106, 468),
    ("PFV2-12", 7931, 161, 683),
    ("CF-12", 8441, 82, 285),
    ("AF-12", 8213, 91, 379),
    ("CAF-12", 8253, 110, 530),
];

#[test]
fn the_papers_table1_imports_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let table = paper_table();
    ok(&[
        "import",
        "--table",
        table.to_str().unwrap(),
        "--experiment",
        "paper",
        "--store",
        store,
    ]);
    let json: Value = serde_json::from_str(&ok(&[
        "report",
        "--experiment",
        "paper",
        "--format",
        "json",
        "--failure-rule",
        "tukey",
        "--store",
        store,
    ]))
    .unwrap();
    let analysis = &json[0]["analysis"];
    assert_eq!(analysis["origin"]["kind"], "imported");
    assert_eq!(analysis["failure_rule"]["rule"], "tukey");
    let backbones = analysis["backbones"].as_array().unwrap();
    assert_eq!(backbones.len(), 20);
    let paper = paper_summary();
    let (mut std_as_paper, mut range_as_paper) = (Vec::new(), Vec::new());
    for (column, (name, mean, std, range)) in backbones.iter().zip(EXPECTED) {
        assert_eq!(column["name"], name);
        let got = |key: &str| column[key].as_f64().unwrap();
        // Rounded to hundredths, as the expected values are.
        let hundredths = |key: &str| (got(key) * 100.0).round() as i64;
        assert_eq!(hundredths("mean"), mean, "{name} mean {}", got("mean"));
        assert_eq!(hundredths("std"), std, "{name} std {}", got("std"));
        assert_eq!(hundredths("range"), range, "{name} range {}", got("range"));
        // The paper's rows, as printed, are below bocb's means in every
        // column (by 0.12 to 0.95): they were not computed from the table
        // as printed (see README, "Importing a results table").
        let (paper_mean, paper_std, paper_range) = paper[name];
        let gap = got("mean") - paper_mean;
        assert!(
            (0.1..1.0).contains(&gap),
            "{name}: bocb {} paper {paper_mean}",
            got("mean")
        );
        if format!("{:.1}", got("std")) == format!("{paper_std:.1}") {
            std_as_paper.push(name);
        }
        if got("range").round() == paper_range {
            range_as_paper.push(name);
        }
    }
    // Ranges agree after rounding except in two columns; the population
    // std agrees to the printed digit in four.
    let all: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    let differ: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| !range_as_paper.contains(n))
        .collect();
    assert_eq!(differ, ["MLP-S", "CNX-T"]);
    assert_eq!(std_as_paper, ["Moga-S", "TNX-T", "CF-12", "AF-12"]);

    // Tukey's fence finds the paper's headline BOCB cases.
    let failures = |name: &str| -> Vec<String> {
        backbones.iter().find(|b| b["name"] == name).unwrap()["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(failures("DeiT-S"), ["SGD-M", "SGDP", "AdaDelta"]);
    assert_eq!(failures("CNX-T"), ["SGD-M", "SGDP", "LARS"]);
    assert_eq!(failures("R-50"), Vec::<String>::new());
    // LAMB's worst is AlexNet; its top-4 and the ranking are present.
    let lamb = analysis["optimizers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "LAMB")
        .unwrap();
    assert_eq!(lamb["worst_removed"], "AlexNet");
    assert_eq!(lamb["top4"].as_array().unwrap().len(), 4);
    assert!(lamb["ranking"]["overall_rank"].as_u64().unwrap() >= 1);
    assert_eq!(analysis["ranking"].as_array().unwrap().len(), 20);

    // The table form prints the paper's layout and says which rule marked.
    let text = ok(&["report", "--experiment", "paper", "--store", store]);
    assert!(text.contains("failure by Eq. (1)"), "{text}");
    assert!(text.contains("γ = 3"), "{text}");
    let mean_row = text.lines().find(|l| l.starts_with("Mean ")).unwrap();
    assert!(
        mean_row.contains("64.03") && mean_row.ends_with("82.53"),
        "{mean_row}"
    );
    let spread_row = text.lines().find(|l| l.starts_with("Std/Range")).unwrap();
    assert!(spread_row.contains("7.0/23"), "{spread_row}");
    let md = ok(&[
        "report",
        "--experiment",
        "paper",
        "--format",
        "md",
        "--gamma",
        "1",
        "--store",
        store,
    ]);
    assert!(md.contains("| Optimizer | AlexNet |"), "{md}");
    assert!(md.contains("γ = 1"), "{md}");

    // Imported results have no configs or trials to export.
    let err = fails(&["export", "--experiment", "paper", "--store", store]);
    assert!(err.contains("was imported from a results table"), "{err}");
}

#[test]
fn import_errors_name_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("t.tsv");
    std::fs::write(&table, "Optimizer\tR-50\tDeiT-S\nSGD\t78.1\t6x.2\n").unwrap();
    let store = tmp.path().join("store");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "import",
            "--table",
            table.to_str().unwrap(),
            "--experiment",
            "t",
            "--store",
            store.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |extra: &[&str]| {
        let owned = args(extra);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        bocb(&refs)
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t.tsv:2: `6x.2` (SGD x DeiT-S) is not an accuracy"),
        "{err}"
    );

    std::fs::write(
        &table,
        "Optimizer\tR-50\tDeiT-S\nSGD\t78.1\t62.2\nAdamW\t75.5\t72.1\n",
    )
    .unwrap();
    let grid = tmp.path().join("g.tsv");
    std::fs::write(&grid, "Optimizer\tR-50\tDeiT-S\nSGD\t2/2\t2/9\n").unwrap();
    let out = run(&["--grid", grid.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("g.tsv:2: `2/9` (SGD x DeiT-S) is not a grid position"),
        "{err}"
    );

    // A good grid file: robustness is reported.
    std::fs::write(
        &grid,
        "Optimizer\tR-50\tDeiT-S\nSGD\t2/2\t2/3\nAdamW\t1/2\t2/2\n",
    )
    .unwrap();
    let out = run(&["--grid", grid.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_str(&ok(&[
        "report",
        "--experiment",
        "t",
        "--format",
        "json",
        "--store",
        store.to_str().unwrap(),
    ]))
    .unwrap();
    // SGD (2, 2), AdamW (1, 2): lr tie between 1 and 2 -> centre 2.
    let r50 = &json[0]["analysis"]["backbones"][0]["robustness"];
    assert_eq!(
        (r50["mode_lr"].as_u64(), r50["mode_weight_decay"].as_u64()),
        (Some(2), Some(2))
    );
    let manhattan: Vec<u64> = r50["variations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["manhattan"].as_u64().unwrap())
        .collect();
    assert_eq!(manhattan, [0, 2]);
}

const SPEC: &str = "\
name: hand
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar@micro, vit_tiny_cifar@micro]
optimizers: [sgd_m, adamw, lion]
epochs: 2
seeds: 2
failure_gamma: 5
";

/// (backbone, optimizer, grid position, lr, weight decay, extras, the
/// accuracies of its two seeds)
type PlantedConfig<'a> = (
    &'a str,
    &'a str,
    (u8, u8),
    f64,
    f64,
    &'a [(&'a str, f64)],
    [f64; 2],
);

/// A small trained history: per pair, configs at grid positions with two
/// seeds each.
fn plant_history(store: &Store) {
    store
        .put_experiment(&ExperimentRecord {
            name: "hand".into(),
            spec_yaml: SPEC.into(),
            created_unix_s: 1,
            updated_unix_s: 1,
            base_dir: None,
        })
        .unwrap();
    let r18 = "resnet18_cifar@micro";
    let vit = "vit_tiny_cifar@micro";
    let configs: [PlantedConfig; 7] = [
        (
            r18,
            "sgd_m",
            (2, 2),
            0.1,
            5e-4,
            &[("momentum", 0.9)],
            [70.0, 72.0],
        ),
        (
            r18,
            "sgd_m",
            (1, 2),
            0.05,
            5e-4,
            &[("momentum", 0.9)],
            [60.0, 62.0],
        ),
        (
            r18,
            "adamw",
            (3, 1),
            2e-3,
            0.025,
            &[("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)],
            [74.0, 76.0],
        ),
        (
            r18,
            "lion",
            (2, 2),
            1e-4,
            0.5,
            &[("beta1", 0.9), ("beta2", 0.99)],
            [40.0, 44.0],
        ),
        (
            vit,
            "sgd_m",
            (2, 2),
            0.1,
            5e-4,
            &[("momentum", 0.9)],
            [30.0, 34.0],
        ),
        (
            vit,
            "adamw",
            (2, 2),
            1e-3,
            0.05,
            &[("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)],
            [80.0, 80.5],
        ),
        (
            vit,
            "lion",
            (2, 3),
            1e-4,
            1.0,
            &[("beta1", 0.9), ("beta2", 0.99)],
            [79.0, 81.0],
        ),
    ];
    let mut n = 0;
    for (backbone, optimizer, grid, lr, wd, extras, accuracies) in configs {
        let mut params: BTreeMap<String, f64> =
            extras.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        params.insert("lr".into(), lr);
        params.insert("weight_decay".into(), wd);
        for (seed, accuracy) in accuracies.into_iter().enumerate() {
            n += 1;
            let epoch = |e: u32, acc: f64| EpochMetrics {
                epoch: e,
                train_loss: 1.0 / f64::from(e),
                test_loss: 1.5 / f64::from(e),
                test_accuracy: acc,
                lr,
                images_per_sec: 1000.0,
                wall_s: 1.0,
                ema_test_accuracy: None,
            };
            store
                .put_trial(&TrialRecord {
                    params: params.clone(),
                    grid: Some(GridPos {
                        lr: grid.0,
                        weight_decay: grid.1,
                    }),
                    seed: seed as u64,
                    status: TrialStatus::Done,
                    epochs: vec![epoch(1, accuracy / 2.0), epoch(2, accuracy)],
                    final_accuracy: Some(accuracy),
                    wall_time_s: Some(2.0),
                    device: Some("cpu".into()),
                    created_unix_s: n,
                    updated_unix_s: n,
                    ..TrialRecord::new("hand", &format!("t{n:02}"), backbone, optimizer)
                })
                .unwrap();
        }
    }
}

#[test]
fn a_trained_history_reports_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    plant_history(&Store::open(&dir).unwrap());
    let store = dir.to_str().unwrap();

    let json: Value = serde_json::from_str(&ok(&[
        "report",
        "--experiment",
        "hand",
        "--format",
        "json",
        "--store",
        store,
    ]))
    .unwrap();
    // The report's existing part is still there.
    assert_eq!(json[0]["pairs"].as_array().unwrap().len(), 6);
    let analysis = &json[0]["analysis"];
    // γ = 5 from the experiment file.
    assert_eq!(analysis["failure_rule"]["gamma"], 5.0);
    let r18 = &analysis["backbones"][0];
    assert_eq!(r18["name"], "resnet18_cifar@micro");
    // Results 71 (sgd_m), 75 (adamw), 42 (lion): LION removed, mean 73,
    // std 2, range 4; Q25 = 56.5, Q75 = 73, threshold 75 - min(16.5, 5) = 70.
    assert_eq!(r18["worst_removed"], "lion");
    assert_eq!(
        (
            r18["mean"].as_f64(),
            r18["std"].as_f64(),
            r18["range"].as_f64()
        ),
        (Some(73.0), Some(2.0), Some(4.0))
    );
    assert_eq!(r18["top4"], serde_json::json!(["adamw", "sgd_m", "lion"]));
    assert_eq!(r18["failure_threshold"], 70.0);
    assert_eq!(r18["failures"], serde_json::json!(["lion"]));
    // Robustness: sgd_m (2,2), adamw (3,1), lion (2,2): mode (2,2); adamw is
    // 4 away in one-hot terms and 2 grid steps.
    let variations: Vec<(u64, u64)> = r18["robustness"]["variations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["manhattan"].as_u64().unwrap(),
                v["grid_steps"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(variations, [(0, 0), (4, 2), (0, 0)]);
    // Seeds and Welch, by hand: sgd_m [70, 72] against adamw [74, 76]:
    // t = -4 / sqrt(1 + 1) = -2.828 with df 2, p = 1/2 - 2.828 / (2 sqrt(10))
    // = 0.0528: not significant at 0.05. LION [40, 44] is.
    let pair = |b: &str, o: &str| {
        analysis["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["backbone"] == b && p["optimizer"] == o)
            .unwrap()
            .clone()
    };
    let sgd = pair("resnet18_cifar@micro", "sgd_m");
    let p = sgd["p_below_best"].as_f64().unwrap();
    let expected = 0.5 - 8.0_f64.sqrt() / (2.0 * 10.0_f64.sqrt());
    assert!((p - expected).abs() < 1e-9, "{p} vs {expected}");
    assert_eq!(sgd["within_noise_of_best"], true);
    assert_eq!(sgd["seeds"]["accuracies"], serde_json::json!([70.0, 72.0]));
    assert_eq!(
        pair("resnet18_cifar@micro", "lion")["within_noise_of_best"],
        false
    );
    // --gamma overrides the file: 75 - 1 = 74, so sgd_m fails too.
    let json: Value = serde_json::from_str(&ok(&[
        "report",
        "--experiment",
        "hand",
        "--format",
        "json",
        "--gamma",
        "1",
        "--store",
        store,
    ]))
    .unwrap();
    assert_eq!(
        json[0]["analysis"]["backbones"][0]["failures"],
        serde_json::json!(["sgd_m", "lion"])
    );
    // The table form keeps the per-pair report and adds Table 1.
    let text = ok(&["report", "--experiment", "hand", "--store", store]);
    assert!(text.contains("resnet18_cifar@micro × sgd_m"), "{text}");
    assert!(text.contains("71.00*~"), "{text}");
    // CSV to a file.
    let csv_path = tmp.path().join("report.csv");
    ok(&[
        "report",
        "--experiment",
        "hand",
        "--format",
        "csv",
        "--out",
        csv_path.to_str().unwrap(),
        "--store",
        store,
    ]);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(csv.lines().count(), 7);

    // Export: best configs with their accuracy and recipe.
    let configs: Value = serde_json::from_str(&ok(&[
        "export",
        "--experiment",
        "hand",
        "--format",
        "json",
        "--store",
        store,
    ]))
    .unwrap();
    let configs = configs.as_array().unwrap();
    assert_eq!(configs.len(), 6);
    let sgd = configs
        .iter()
        .find(|c| c["backbone"] == "resnet18_cifar@micro" && c["optimizer"] == "sgd_m")
        .unwrap();
    assert_eq!(sgd["lr"], 0.1);
    assert_eq!(sgd["weight_decay"], 5e-4);
    assert_eq!(sgd["extras"], serde_json::json!({"momentum": 0.9}));
    assert_eq!(
        (sgd["accuracy_mean"].as_f64(), sgd["accuracy_std"].as_f64()),
        (Some(71.0), Some(1.0))
    );
    assert_eq!(
        (sgd["seeds"].as_u64(), sgd["epochs"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(sgd["recipe"].is_string());
    let yaml = ok(&[
        "export",
        "--experiment",
        "hand",
        "--backbone",
        "vit_tiny_cifar@micro",
        "--optimizer",
        "adamw",
        "--store",
        store,
    ]);
    assert!(
        yaml.contains("optimizer: adamw") && yaml.contains("accuracy_mean: 80.25"),
        "{yaml}"
    );
    assert!(!yaml.contains("sgd_m"), "{yaml}");
    let csv = ok(&[
        "export",
        "--experiment",
        "hand",
        "--format",
        "csv",
        "--optimizer",
        "lion",
        "--store",
        store,
    ]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let timm = ok(&[
        "export",
        "--experiment",
        "hand",
        "--as",
        "timm-args",
        "--optimizer",
        "adamw",
        "--store",
        store,
    ]);
    assert!(
        timm.contains("python train.py --model resnet18 --opt adamw --lr 0.002 --weight-decay 0.025 --epochs 2"),
        "{timm}"
    );
    assert!(timm.contains("--opt-betas 0.9 0.999"), "{timm}");
    let err = fails(&[
        "export",
        "--experiment",
        "hand",
        "--optimizer",
        "sophia",
        "--store",
        store,
    ]);
    assert!(
        err.contains("no finished pair with optimizer `sophia`"),
        "{err}"
    );

    // Every trial with its epochs.
    let trials: Value = serde_json::from_str(&ok(&[
        "export",
        "--experiment",
        "hand",
        "--trials",
        "--store",
        store,
    ]))
    .unwrap();
    let trials = trials.as_array().unwrap();
    assert_eq!(trials.len(), 14);
    assert_eq!(trials[0]["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(
        trials[0]["epochs"][1]["test_accuracy"],
        trials[0]["final_accuracy"]
    );
}

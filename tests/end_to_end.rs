//! End-to-end: the `bocb` binary on synthetic CIFAR-format data, on CPU.
//!
//! These drive the release binary that `make test` builds first, run with no
//! LD_LIBRARY_PATH so its rpath to libtorch is exercised too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use bocb_store::{Store, TrialStatus};
use common::{bocb, synth};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_experiment(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("exp.yaml");
    std::fs::write(&path, body).unwrap();
    path
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
";

#[test]
fn tunes_grid_records_history_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 512, 128, 3);
    let experiment = write_experiment(tmp.path(), TINY);
    let store_dir = tmp.path().join("store");
    let store_arg = store_dir.to_str().unwrap();

    let first = bocb(&["run", experiment.to_str().unwrap(), "--store", store_arg]);
    assert!(first.status.success(), "{}", stderr(&first));
    let report = stdout(&first);
    assert!(report.contains("resnet18_cifar@micro × sgd_m"), "{report}");
    assert!(report.contains("resnet18_cifar@micro × adamw"), "{report}");
    assert!(
        stderr(&first).contains("trained 50 trial(s)"),
        "{}",
        stderr(&first)
    );

    let trials = {
        let store = Store::open(&store_dir).unwrap();
        store.trials("tiny").unwrap()
    };
    assert_eq!(trials.len(), 50);
    for optimizer in ["sgd_m", "adamw"] {
        let mine: Vec<_> = trials.iter().filter(|t| t.optimizer == optimizer).collect();
        assert_eq!(mine.len(), 25);
        let mut positions: Vec<_> = mine.iter().map(|t| t.grid.unwrap()).collect();
        positions.sort();
        positions.dedup();
        assert_eq!(positions.len(), 25, "every grid point once");
    }
    for t in &trials {
        assert!(
            matches!(t.status, TrialStatus::Done | TrialStatus::Diverged),
            "{t:?}"
        );
        assert_eq!(t.device.as_deref(), Some("cpu"));
        if t.status == TrialStatus::Done {
            // The 4-class synthetic set, though its format is CIFAR-100's.
            assert_eq!(t.classes, Some(4), "{t:?}");
            assert_eq!(t.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(t.final_accuracy, Some(t.epochs[1].test_accuracy));
            assert!(t.epochs.iter().all(|e| e.images_per_sec > 0.0));
        }
    }
    // Accuracy depends on the config: the grid is not flat.
    let accuracies: Vec<f64> = trials.iter().filter_map(|t| t.final_accuracy).collect();
    let spread = accuracies.iter().copied().fold(f64::MIN, f64::max)
        - accuracies.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread > 5.0, "accuracies barely vary: {accuracies:?}");

    // A second run trains nothing and leaves the history as it was.
    let second = bocb(&["run", experiment.to_str().unwrap(), "--store", store_arg]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("trained 0 trial(s) (0 diverged, 0 failed); 50 already finished"),
        "{}",
        stderr(&second)
    );
    let again = Store::open(&store_dir).unwrap().trials("tiny").unwrap();
    assert_eq!(again, trials);
    // Without `save_weights` there are no patterns to show, and bocb says why.
    let patterns = bocb(&["patterns", "--experiment", "tiny", "--store", store_arg]);
    assert!(!patterns.status.success());
    assert!(
        stderr(&patterns).contains("save_weights: true"),
        "{}",
        stderr(&patterns)
    );

    // The JSON report agrees with the store.
    let json = bocb(&[
        "report",
        "--experiment",
        "tiny",
        "--format",
        "json",
        "--store",
        store_arg,
    ]);
    assert!(json.status.success(), "{}", stderr(&json));
    let reports: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let pairs = reports[0]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2);
    for pair in pairs {
        let grid = pair["grid"].as_array().unwrap();
        assert_eq!(grid.len(), 5);
        assert!(grid.iter().all(|row| row.as_array().unwrap().len() == 5));
        let best = pair["best"]["mean_accuracy"].as_f64().unwrap();
        let optimizer = pair["optimizer"].as_str().unwrap();
        let max = trials
            .iter()
            .filter(|t| t.optimizer == optimizer)
            .filter_map(|t| t.final_accuracy)
            .fold(f64::MIN, f64::max);
        assert_eq!(best, max);
    }

    // timm's command line gets the head the trials trained, not the format's 100.
    let timm = bocb(&[
        "export",
        "--experiment",
        "tiny",
        "--as",
        "timm-args",
        "--store",
        store_arg,
    ]);
    assert!(timm.status.success(), "{}", stderr(&timm));
    let lines = stdout(&timm);
    assert!(
        lines.contains("--dataset torch/cifar100 --num-classes 4 "),
        "{lines}"
    );

    // A stored experiment file that no longer parses is an error naming the
    // experiment, for every reader; never a silent skip.
    {
        let store = Store::open(&store_dir).unwrap();
        let mut record = store.experiment("tiny").unwrap().unwrap();
        record.spec_yaml = "name: tiny\nbackbones: [".into();
        store.put_experiment(&record).unwrap();
    }
    for args in [
        vec!["report", "--experiment", "tiny"],
        vec!["export", "--experiment", "tiny"],
        vec!["run", experiment.to_str().unwrap()],
    ] {
        let out = bocb(&[args.as_slice(), &["--store", store_arg]].concat());
        assert!(!out.status.success(), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out)
                .contains("experiment `tiny`: the experiment file stored with it does not parse"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn trials_on_several_device_slots_at_once_match_one_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 128, 32, 4);
    // TPE depends on the pair's earlier trials; a ViT's
    // recipe mixes images and drops paths: all must come out the same.
    let body = TINY
        .replace(
            "backbones: [resnet18_cifar@micro]",
            "backbones: [resnet18_cifar@micro, vit_tiny_cifar@micro]",
        )
        .replace("device: cpu\n", "")
        + "strategy: tpe\nbudget: { trials: 2 }\ngrid_extension: { max_steps: 0 }\n";
    let run = |devices: &str, store: &str| {
        let experiment = write_experiment(tmp.path(), &format!("{body}{devices}"));
        let store_dir = tmp.path().join(store);
        let out = bocb(&[
            "run",
            experiment.to_str().unwrap(),
            "--store",
            store_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        (stderr(&out), store_dir)
    };

    let (log, slots_store) = run("devices: cpu\ntrials_per_device: 2\n", "slots");
    assert!(log.contains("trained 8 trial(s)"), "{log}");
    assert!(log.contains("seed=0 on cpu: "), "{log}");
    let in_slots = Store::open(&slots_store).unwrap().trials("tiny").unwrap();
    assert_eq!(in_slots.len(), 8, "4 pairs x 2 configs");
    for t in &in_slots {
        assert_eq!(t.status, TrialStatus::Done, "{t:?}");
        assert_eq!(t.device.as_deref(), Some("cpu"));
    }

    let (_, alone_store) = run("devices: [cpu]\n", "alone");
    let alone = Store::open(&alone_store).unwrap().trials("tiny").unwrap();
    let outcome = |trials: &[bocb_store::TrialRecord]| -> Vec<_> {
        trials
            .iter()
            .map(|t| {
                let curve: Vec<f64> = t.epochs.iter().map(|e| e.test_accuracy).collect();
                (t.id.clone(), t.status, t.final_accuracy, curve)
            })
            .collect()
    };
    assert_eq!(outcome(&in_slots), outcome(&alone));

    // Packed: each config is probed once, alone, and kept in the store;
    // levels are measured over two batches, so trials do run together.
    let (log, packed_store) = run(
        "devices: cpu\ntrials_per_device: auto\npacking: { measure_seconds: 0, measure_batches: 2 }\n",
        "packed",
    );
    assert!(log.contains("trained 8 trial(s)"), "{log}");
    assert_eq!(log.matches("probe of ").count(), 4, "{log}");
    assert!(
        log.contains("probe of vit_tiny_cifar@micro × adamw at batch 32 on cpu: peak "),
        "{log}"
    );
    assert!(
        log.contains("cpu: ") && log.contains(" free; trials packed while"),
        "{log}"
    );
    let packed_db = Store::open(&packed_store).unwrap();
    let probes = packed_db.probes().unwrap();
    assert_eq!(probes.len(), 4, "{probes:?}");
    for probe in &probes {
        assert_eq!(probe.device, "cpu");
        assert!(probe.images_per_sec > 0.0, "{probe:?}");
    }
    let packed = packed_db.trials("tiny").unwrap();
    drop(packed_db);
    assert_eq!(outcome(&packed), outcome(&alone));
    assert!(packed.iter().all(|t| t.peak_memory_bytes.is_some()));
    // A resumed run probes nothing again.
    let (log, _) = run("devices: cpu\ntrials_per_device: auto\n", "packed");
    assert!(log.contains("trained 0 trial(s)"), "{log}");
    assert!(!log.contains("probe of "), "{log}");

    // Devices are no training setting: the stored experiment resumes with
    // the older single `device` and finds everything done.
    let (log, _) = run("device: cpu\n", "slots");
    assert!(log.contains("trained 0 trial(s)"), "{log}");
    assert!(log.contains("8 already finished"), "{log}");
}

#[test]
fn budgeted_tpe_with_early_stopping_then_searches_the_extras() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 512, 128, 3);
    let body = TINY
        .replace("optimizers: [sgd_m, adamw]", "optimizers: [adamw]")
        .replace("epochs: 2", "epochs: 3")
        + "strategy: tpe\nbudget: { trials: 5 }\nearly_stop: asha\nsearch_extras: true\nsave_weights: true\n"
        // The grid's own 5 points only: the extension past it is tested in
        // tuner's run tests.
        + "grid_extension: { max_steps: 0 }\n";
    let experiment = write_experiment(tmp.path(), &body);
    let store_dir = tmp.path().join("store");
    let store_arg = store_dir.to_str().unwrap();

    let first = bocb(&["run", experiment.to_str().unwrap(), "--store", store_arg]);
    assert!(first.status.success(), "{}", stderr(&first));
    let store = Store::open(&store_dir).unwrap();
    let trials = store.trials("tiny").unwrap();
    let (stage1, stage2): (Vec<_>, Vec<_>) = trials.iter().partition(|t| t.stage == 1);

    // Stage 1: the budget's 5 distinct grid points, the centre first.
    let mut points: Vec<_> = stage1.iter().map(|t| t.grid.unwrap()).collect();
    points.sort();
    points.dedup();
    assert_eq!((stage1.len(), points.len()), (5, 5), "{stage1:?}");
    assert!(points.iter().any(|p| (p.lr, p.weight_decay) == (2, 2)));
    for t in &stage1 {
        match t.status {
            TrialStatus::Done => assert_eq!(t.epochs.len(), 3),
            TrialStatus::Stopped => assert!(t.epochs.len() < 3, "{t:?}"),
            TrialStatus::Diverged => {}
            other => panic!("stage-1 trial ended {other}: {t:?}"),
        }
    }

    // Stage 2: AdamW's three extras, each over its 3 candidates other than
    // the current value, at the stage-1 best lr and weight decay.
    assert_eq!(stage2.len(), 9, "{stage2:?}");
    let best1 = stage1
        .iter()
        .filter(|t| t.status == TrialStatus::Done)
        .max_by(|a, b| a.final_accuracy.partial_cmp(&b.final_accuracy).unwrap())
        .unwrap();
    for t in &stage2 {
        assert_eq!(t.grid, best1.grid);
        assert_eq!(t.params["lr"], best1.params["lr"]);
        assert_eq!(t.params["weight_decay"], best1.params["weight_decay"]);
        assert_ne!(t.status, TrialStatus::Stopped, "stage 2 runs every epoch");
    }

    // The pair's best is a complete trial, never a stopped one.
    let best = &store.best_per_pair("tiny").unwrap()[0];
    for id in &best.trial_ids {
        let t = store.trial("tiny", id).unwrap().unwrap();
        assert_eq!(t.status, TrialStatus::Done);
    }
    let best_id = best.trial_ids[0].clone();
    drop(store);

    // The best config's saved weights give its layer-wise patterns.
    let patterns = bocb(&[
        "patterns",
        "--experiment",
        "tiny",
        "--json",
        "--store",
        store_arg,
    ]);
    assert!(patterns.status.success(), "{}", stderr(&patterns));
    let pairs: serde_json::Value = serde_json::from_slice(&patterns.stdout).unwrap();
    let pair = &pairs.as_array().unwrap()[0];
    assert_eq!(pair["trial_id"], best_id.as_str());
    let layers = pair["layers"].as_array().unwrap();
    let conv = layers
        .iter()
        .find(|l| l["name"] == "conv1.weight")
        .expect("the stem conv's patterns");
    assert_eq!(conv["shape"].as_array().unwrap().len(), 4);
    assert!(conv["l2_norm"].as_f64().unwrap() > 0.0);
    assert!(conv["top_k_energy"].as_f64().unwrap() <= 1.0);

    // Resuming trains nothing more.
    let second = bocb(&["run", experiment.to_str().unwrap(), "--store", store_arg]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("trained 0 trial(s)"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        Store::open(&store_dir)
            .unwrap()
            .trials("tiny")
            .unwrap()
            .len(),
        14
    );
}

/// Every path in an experiment file is taken from the file's directory:
/// run from another directory, the TorchScript backbone and the dataset
/// beside the file are both found.
#[test]
fn paths_in_the_experiment_file_are_relative_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("project");
    synth(&sub.join("data"), 64, 32, 5);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("trial-runner/tests/torchscript/small_cnn_4classes.pt"),
        sub.join("net.pt"),
    )
    .unwrap();
    let body = TINY
        .replace("[resnet18_cifar@micro]", "[\"torchscript:net.pt\"]")
        .replace("optimizers: [sgd_m, adamw]", "optimizers: [adamw]")
        .replace("epochs: 2", "epochs: 1")
        + "strategy: random\nbudget: { trials: 1 }\n";
    let experiment = write_experiment(&sub, &body);
    let store_dir = tmp.path().join("store");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = std::process::Command::new(common::bocb_binary())
        .args(["run", experiment.to_str().unwrap(), "--store"])
        .arg(&store_dir)
        .current_dir(&elsewhere)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = Store::open(&store_dir).unwrap().trials("tiny").unwrap();
    assert_eq!(trials.len(), 1, "{trials:?}");
    assert_eq!(trials[0].backbone, "torchscript:net.pt");
    assert_eq!(trials[0].status, TrialStatus::Done, "{:?}", trials[0]);
}

#[test]
fn bad_inputs_get_located_errors_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store_arg = store.to_str().unwrap();

    // Missing data directory: says where it looked and how to make data.
    let exp = write_experiment(tmp.path(), TINY);
    let out = bocb(&["run", exp.to_str().unwrap(), "--store", store_arg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("exp.yaml:2:"), "{err}");
    assert!(
        err.contains("bocb data synth --format cifar100-bin --out"),
        "{err}"
    );

    // A directory without CIFAR files: the expected layout is described.
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    let out = bocb(&["run", exp.to_str().unwrap(), "--store", store_arg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("train.bin") && err.contains("test.bin"),
        "{err}"
    );

    // Unknown backbone: file, line, column and the valid names.
    let exp = write_experiment(
        tmp.path(),
        &TINY.replace("resnet18_cifar@micro", "resnet181"),
    );
    let out = bocb(&["run", exp.to_str().unwrap(), "--store", store_arg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("exp.yaml:3:13: unknown backbone `resnet181`"),
        "{err}"
    );
    assert!(err.contains("vit_tiny_cifar"), "{err}");

    // Unknown key.
    let exp = write_experiment(tmp.path(), &format!("{TINY}learning_rate: 0.1\n"));
    let out = bocb(&["run", exp.to_str().unwrap(), "--store", store_arg]);
    let err = stderr(&out);
    assert!(
        err.contains("exp.yaml:9:1: unknown field `learning_rate`"),
        "{err}"
    );

    // Nothing was recorded by the rejected runs.
    if store.exists() {
        assert!(Store::open(&store)
            .unwrap()
            .experiments()
            .unwrap()
            .is_empty());
    }

    // A report of a store that does not exist.
    let out = bocb(&[
        "report",
        "--store",
        tmp.path().join("nowhere").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no store at"), "{}", stderr(&out));
}

#[test]
fn changed_training_settings_are_refused_not_mixed() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 64, 32, 3);
    let small = TINY.replace("optimizers: [sgd_m, adamw]", "optimizers: [adamw]");
    let exp = write_experiment(tmp.path(), &small);
    let store_arg = tmp.path().join("store");
    let store_arg = store_arg.to_str().unwrap();
    let out = bocb(&["run", exp.to_str().unwrap(), "--store", store_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exp = write_experiment(tmp.path(), &small.replace("epochs: 2", "epochs: 3"));
    let out = bocb(&["run", exp.to_str().unwrap(), "--store", store_arg]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("other training settings") && err.contains("epochs 2"),
        "{err}"
    );
}

#[test]
fn optim_replay_reproduces_a_recorded_reference_case() {
    let tmp = tempfile::tempdir().unwrap();
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("trial-runner/tests/optim_cases/adamw-2.json");
    let output = tmp.path().join("out.json");
    let out = bocb(&[
        "optim",
        "replay",
        "--input",
        case.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&case).unwrap()).unwrap();
    let replayed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let trajectory = |v: &serde_json::Value| -> Vec<Vec<Vec<f64>>> {
        serde_json::from_value(v["trajectory"].clone()).unwrap()
    };
    let (want, got) = (trajectory(&recorded), trajectory(&replayed));
    assert_eq!(got.len(), 12);
    let pairs = want
        .iter()
        .flatten()
        .flatten()
        .zip(got.iter().flatten().flatten());
    for (a, b) in pairs {
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
    }

    // A case naming an argument bocb does not implement is refused by name.
    let text =
        std::fs::read_to_string(&case)
            .unwrap()
            .replacen("\"lr\"", "\"maximize\": true, \"lr\"", 1);
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, text).unwrap();
    let out = bocb(&[
        "optim",
        "replay",
        "--input",
        bad.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`maximize` = 0"), "{}", stderr(&out));
}

#[test]
fn optim_info_lists_every_optimizer_with_measured_state() {
    use std::collections::BTreeSet;

    let out = bocb(&["optim", "info", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let infos: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: BTreeSet<&str> = infos.iter().map(|i| i["name"].as_str().unwrap()).collect();
    // The conformance test requires cases (NAME-K.json) for every registered
    // optimizer and replays each through the registry, so their names are it.
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("trial-runner/tests/optim_cases");
    let registered: BTreeSet<String> = std::fs::read_dir(cases)
        .unwrap()
        .map(|entry| {
            let file = entry.unwrap().file_name().into_string().unwrap();
            file.rsplit_once('-').unwrap().0.to_string()
        })
        .collect();
    assert_eq!(
        listed,
        registered
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    let bytes = |name: &str| {
        let info = infos.iter().find(|i| i["name"] == name).unwrap();
        info["state_bytes_per_param"].as_f64().unwrap()
    };
    assert_eq!(bytes("sgd_m"), 4.0);
    assert_eq!(bytes("adamw"), 8.0);
    for info in &infos {
        assert!(["a", "b", "c", "d"].contains(&info["category"].as_str().unwrap()));
        assert!(["coupled", "decoupled"].contains(&info["weight_decay_style"].as_str().unwrap()));
    }
}

#[test]
fn backbones_list_counts_every_registered_backbone() {
    use std::collections::BTreeSet;

    let out = bocb(&["backbones", "list", "--json", "--classes", "100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let infos: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: BTreeSet<&str> = infos.iter().map(|i| i["name"].as_str().unwrap()).collect();
    // The equivalence test builds every fixture (NAME+micro.safetensors) and
    // requires one for every registered backbone, so their names are it.
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("trial-runner/tests/backbone_fixtures");
    let registered: BTreeSet<String> = std::fs::read_dir(fixtures)
        .unwrap()
        .map(|entry| {
            let file = entry.unwrap().file_name().into_string().unwrap();
            file.split(['+', '.']).next().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        listed,
        registered
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    for info in &infos {
        let params = info["params"].as_i64().unwrap();
        let micro = info["micro_params"].as_i64().unwrap();
        assert!(params > 0 && micro > 0 && micro < params, "{info}");
        assert!(
            [32, 224].contains(&info["input_size"].as_i64().unwrap()),
            "{info}"
        );
        assert!(!info["family"].as_str().unwrap().is_empty(), "{info}");
        assert!(
            !info["default_recipe"].as_str().unwrap().is_empty(),
            "{info}"
        );
    }
    let resnet = infos
        .iter()
        .find(|i| i["name"] == "resnet18_cifar")
        .unwrap();
    assert_eq!(resnet["params"], 11_220_132);
    assert_eq!(resnet["family"], "classical_cnn");
    assert_eq!(resnet["input_size"], 32);
    assert_eq!(resnet["default_recipe"], "pytorch");

    let table = bocb(&["backbones", "list", "--classes", "10"]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(
        stdout(&table).contains("resnet18_cifar"),
        "{}",
        stdout(&table)
    );
}

#[test]
fn bench_train_explains_unknown_backbones_and_a_missing_python() {
    let out = bocb(&[
        "bench",
        "train",
        "--backbone",
        "resnet19",
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown backbone `resnet19`"), "{err}");
    assert!(
        err.contains("resnet18_cifar") && err.contains("vit_tiny_cifar"),
        "{err}"
    );

    let out = bocb(&[
        "bench",
        "train",
        "--backbone",
        "resnet18_cifar@micro",
        "--device",
        "cpu",
        "--python",
        "/nonexistent/python",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/python") && err.contains("make venv"),
        "{err}"
    );
}

#[test]
fn a_recipe_is_stored_with_each_trial_and_bench_data_reads_an_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 64, 32, 3);
    let exp = write_experiment(
        tmp.path(),
        &TINY
            .replace("optimizers: [sgd_m, adamw]", "optimizers: [adamw]")
            .replace("epochs: 2", "epochs: 1\nbudget: { trials: 1 }\nrecipe: rsb_a3\nrecipe_overrides: { rand_augment: { ops: 1, magnitude: 5, magnitude_std: 0 }, ema_decay: 0.9, dropout: 0.2 }"),
    );
    let store_dir = tmp.path().join("store");
    let out = bocb(&[
        "run",
        exp.to_str().unwrap(),
        "--store",
        store_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = Store::open(&store_dir).unwrap().trials("tiny").unwrap();
    assert_eq!(trials.len(), 1);
    assert_eq!(trials[0].status, TrialStatus::Done);
    let recipe = trials[0].recipe.as_ref().unwrap();
    assert_eq!(recipe.name, "rsb_a3");
    let settings = recipe.settings.as_ref().unwrap();
    assert_eq!(settings["loss"], "binary_cross_entropy");
    assert_eq!(settings["rand_augment"]["ops"], 1);
    assert_eq!(settings["ema_decay"], 0.9);
    assert_eq!(settings["dropout"], 0.2);
    assert_eq!(
        (settings["epochs"].as_u64(), settings["batch_size"].as_u64()),
        (Some(1), Some(32))
    );

    // A bad override names the field and the valid ones.
    let bad = write_experiment(
        tmp.path(),
        &format!("{TINY}recipe_overrides: {{ mixup: 1 }}\n"),
    );
    let out = bocb(&[
        "run",
        bad.to_str().unwrap(),
        "--store",
        store_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("exp.yaml:9:") && err.contains("unknown field `mixup`"),
        "{err}"
    );
    assert!(err.contains("mixup_alpha"), "{err}");

    // The pipeline bench reads an image folder that `data synth` writes.
    let folder = tmp.path().join("folder");
    let out = bocb(&[
        "data",
        "synth",
        "--out",
        folder.to_str().unwrap(),
        "--format",
        "folder",
        "--classes",
        "4",
        "--train",
        "64",
        "--test",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(folder.join("train/class_003").is_dir());
    let out = bocb(&[
        "bench",
        "data",
        "--dataset",
        folder.to_str().unwrap(),
        "--recipe",
        "deit",
        "--backbone",
        "resnet18_cifar@micro",
        "--batch",
        "16",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(report["pipeline_images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["step_images_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["recipe"], "deit");
    // DeiT's RandAugment has no device version; `pytorch`'s crop and flip
    // do, and the batches made on the device are the pipeline's.
    assert!(report["device_pipeline_images_per_sec"].is_null());
    assert!(report["device_pipeline_unavailable"]
        .as_str()
        .unwrap()
        .contains("RandAugment"));
    let out = bocb(&[
        "bench",
        "data",
        "--dataset",
        folder.to_str().unwrap(),
        "--recipe",
        "pytorch",
        "--backbone",
        "resnet18_cifar@micro",
        "--batch",
        "16",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(report["device_pipeline_images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["device_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(report["device_batch_matches_pipeline"], true);
}

//! End-to-end: every registered backbone trains through `bocb run` (its
//! micro preset, the grid centre of AdamW, on synthetic CIFAR-format data)
//! and its history lands in the store. The recipe is PyTorch's without
//! augmentation, so the check is on the backbone, not on augmentation
//! noise (the recipes have their own tests).

mod common;

use bocb_store::{Store, TrialStatus};
use common::{bocb, synth};

const EVERY_BACKBONE: &str = "\
name: every-backbone
dataset: { format: cifar100-bin, path: data }
backbones: all
preset: micro
optimizers: [adamw]
epochs: 3
batch_size: 32
device: cpu
strategy: tpe
budget: { trials: 1 }
recipe: pytorch
recipe_overrides: { crop: none, hflip: 0.0 }
";

#[test]
fn every_backbone_trains_through_bocb_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 256, 64, 5);
    let experiment = tmp.path().join("exp.yaml");
    std::fs::write(&experiment, EVERY_BACKBONE).unwrap();
    let store_dir = tmp.path().join("store");
    let run = bocb(&[
        "run",
        experiment.to_str().unwrap(),
        "--store",
        store_dir.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");

    let list = bocb(&["backbones", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}@micro", b["name"].as_str().unwrap()))
        .collect();
    assert!(names.len() >= 20, "{names:?}");

    let trials = Store::open(&store_dir)
        .unwrap()
        .trials("every-backbone")
        .unwrap();
    for name in &names {
        let mine: Vec<_> = trials.iter().filter(|t| &t.backbone == name).collect();
        assert_eq!(mine.len(), 1, "{name}: {mine:?}\n{log}");
        let trial = mine[0];
        // The grid centre is AdamW's usual default: every backbone learns
        // with it, so its training loss falls over three epochs.
        assert_eq!(trial.status, TrialStatus::Done, "{name}: {trial:?}");
        let losses: Vec<f64> = trial.epochs.iter().map(|e| e.train_loss).collect();
        assert_eq!(losses.len(), 3, "{name}");
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        assert!(losses[2] < losses[0], "{name} did not learn: {losses:?}");
    }
}

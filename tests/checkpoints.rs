//! End-to-end: `bocb run` stopped by SIGTERM in the middle of a trial saves
//! the trial's checkpoint and leaves it unended; the next run continues it
//! from there, and its epochs equal those of an unbroken run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bocb_store::{EpochMetrics, Store, TrialRecord, TrialStatus};
use common::{bocb, bocb_binary, synth, wait_for};

const EXPERIMENT: &str = "\
name: resumable
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar@micro]
optimizers: [sgd_m]
epochs: 5
budget: { trials: 1 }
batch_size: 32
device: cpu
deterministic: true
checkpoint_every: 1
";

fn run_to_the_end(experiment: &Path, store: &Path) {
    let out = bocb(&[
        "run",
        experiment.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one trial as the store holds it. The store is opened waiting: a
/// handle dropped just before keeps sled's lock until its flusher's next
/// tick.
fn the_trial(store: &Path) -> TrialRecord {
    let trials = Store::open_waiting(store, Duration::from_secs(10))
        .unwrap()
        .trials("resumable")
        .unwrap();
    assert_eq!(trials.len(), 1);
    trials[0].clone()
}

fn epochs(store: &Path) -> Vec<EpochMetrics> {
    the_trial(store).epochs
}

/// The one trial's checkpoint file, once there is one.
fn checkpoint_file(store: &Path) -> Option<PathBuf> {
    let dir = store.join("checkpoints").join("resumable");
    let trial = std::fs::read_dir(dir).ok()?.next()?.ok()?.path();
    Some(trial.join("checkpoint.json")).filter(|f| f.exists())
}

#[test]
fn a_run_stopped_by_sigterm_continues_its_trial_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 512, 64, 7);
    let experiment = tmp.path().join("exp.yaml");
    std::fs::write(&experiment, EXPERIMENT).unwrap();

    let unbroken = tmp.path().join("unbroken");
    run_to_the_end(&experiment, &unbroken);
    let whole = epochs(&unbroken);
    assert_eq!(whole.len(), 5);

    let store = tmp.path().join("store");
    let mut first = Command::new(bocb_binary())
        .args(["run", experiment.to_str().unwrap(), "--store"])
        .arg(&store)
        .arg("--quiet")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Epoch 1's checkpoint is there: the trial is training epoch 2.
    wait_for("a checkpoint", || {
        assert!(first.try_wait().unwrap().is_none(), "bocb run ended early");
        checkpoint_file(&store).is_some()
    });
    let killed = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = first.wait().unwrap();
    assert!(!status.success(), "bocb run ends on the signal: {status}");

    let trial = the_trial(&store);
    assert_eq!(
        trial.status,
        TrialStatus::Running,
        "the trial stays unended"
    );
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint_file(&store).unwrap()).unwrap())
            .unwrap();
    let saved_epochs = checkpoint["epochs_done"].as_u64().unwrap() as usize;
    assert!(
        (1..5).contains(&saved_epochs),
        "{checkpoint}: saved after epoch 1 at least"
    );
    let before = trial.epochs;
    assert!(before.len() >= saved_epochs);

    run_to_the_end(&experiment, &store);
    let after = epochs(&store);
    // Epochs up to the checkpoint were not trained again: their records,
    // timings included, are the first run's.
    assert_eq!(after[..saved_epochs], before[..saved_epochs]);
    let numbers = |epochs: &[EpochMetrics]| {
        epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss, e.test_loss, e.test_accuracy, e.lr))
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&after), numbers(&whole));
    let trial = the_trial(&store);
    assert_eq!(trial.status, TrialStatus::Done);
    assert_eq!(trial.final_accuracy, Some(whole[4].test_accuracy));
    assert!(
        !store.join("checkpoints").join("resumable").exists(),
        "an ended trial's checkpoint is removed"
    );
}

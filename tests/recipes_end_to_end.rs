//! End-to-end: every built-in recipe trains one tiny trial through `bocb
//! run` on synthetic data in the image-folder format (as `bocb data synth
//! --format folder` writes it), and one in a CIFAR format; each stored
//! trial says what it ran with: its recipe, precision, peak memory, and
//! the accuracy of its weight average exactly when the recipe keeps one.

mod common;

use std::path::Path;
use std::process::Output;

use common::{bocb, synth, synth_as};

/// Every built-in recipe, and whether it keeps an EMA of the weights.
const RECIPES: [(&str, bool); 6] = [
    ("pytorch", false),
    ("deit", true),
    ("convnext", true),
    ("rsb_a2", false),
    ("rsb_a3", false),
    ("finetune", false),
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One config of one tiny backbone for one epoch, trained with `recipe`.
fn experiment(name: &str, format: &str, recipe: &str) -> String {
    format!(
        "name: {name}
dataset: {{ format: {format}, path: data }}
backbones: [resnet18_cifar@micro]
optimizers: [adamw]
epochs: 1
batch_size: 16
budget: {{ trials: 1 }}
device: cpu
recipe: {recipe}
"
    )
}

/// Runs the experiment in `dir/NAME.yaml` into `store`, then reads its
/// trials back as `bocb export --trials` writes them.
fn run_and_export(dir: &Path, name: &str, body: &str, store: &Path) -> Vec<serde_json::Value> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, body).unwrap();
    let store = store.to_str().unwrap();
    let run = bocb(&["run", file.to_str().unwrap(), "--store", store, "--quiet"]);
    assert!(run.status.success(), "{name}: {}", stderr(&run));
    let export = bocb(&["export", "--experiment", name, "--trials", "--store", store]);
    assert!(export.status.success(), "{name}: {}", stderr(&export));
    serde_json::from_slice::<Vec<serde_json::Value>>(&export.stdout).unwrap()
}

/// The one trial of an experiment trained with `recipe`, done and carrying
/// what it ran with.
fn check_trial(trials: &[serde_json::Value], recipe: &str, keeps_ema: bool) {
    assert_eq!(trials.len(), 1, "{recipe}: {trials:?}");
    let trial = &trials[0];
    assert_eq!(trial["status"], "done", "{recipe}: {trial}");
    assert_eq!(trial["recipe"]["name"], recipe, "{trial}");
    // The stored recipe agrees with the expectation above.
    assert_eq!(
        !trial["recipe"]["settings"]["ema_decay"].is_null(),
        keeps_ema,
        "{trial}"
    );
    assert_eq!(trial["device"], "cpu", "{trial}");
    assert_eq!(trial["precision"], "fp32", "{recipe}: {trial}");
    let peak = trial["peak_memory_bytes"].as_u64();
    assert!(peak.is_some_and(|b| b > 0), "{recipe}: {trial}");
    let accuracy = trial["final_accuracy"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&accuracy), "{trial}");
    match trial["ema_accuracy"].as_f64() {
        Some(ema) => {
            assert!(keeps_ema, "{recipe} keeps no EMA, yet: {trial}");
            assert!((0.0..=100.0).contains(&ema), "{trial}");
        }
        None => {
            assert!(!keeps_ema, "{recipe} keeps an EMA, but: {trial}");
            assert!(trial["ema_accuracy"].is_null(), "{trial}");
        }
    }
    // Every epoch records the average's accuracy where there is one; the
    // last one is the trial's.
    let epochs = trial["epochs"].as_array().unwrap();
    assert!(!epochs.is_empty(), "{trial}");
    for epoch in epochs {
        assert_eq!(epoch["ema_test_accuracy"].is_number(), keeps_ema, "{epoch}");
    }
    assert_eq!(
        epochs.last().unwrap()["ema_test_accuracy"].as_f64(),
        trial["ema_accuracy"].as_f64()
    );
}

#[test]
fn every_recipe_trains_on_an_image_folder_and_its_trial_records_what_it_ran_with() {
    let tmp = tempfile::tempdir().unwrap();
    // `folder` is `bocb data synth`'s short name of `image-folder`.
    synth_as(&tmp.path().join("data"), "folder", 32, 8, 2);
    let store = tmp.path().join("store");
    for (recipe, keeps_ema) in RECIPES {
        let name = format!("folder-{recipe}");
        let body = experiment(&name, "image-folder", recipe);
        let trials = run_and_export(tmp.path(), &name, &body, &store);
        check_trial(&trials, recipe, keeps_ema);
    }

    // The wrong format for the directory is refused before any training,
    // naming the format the directory holds.
    let file = tmp.path().join("wrong.yaml");
    std::fs::write(&file, experiment("wrong", "cifar100-bin", "pytorch")).unwrap();
    let run = bocb(&[
        "run",
        file.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("in the image-folder format, not cifar100-bin")
            && err.contains("set `format: image-folder`"),
        "{err}"
    );
}

#[test]
fn a_recipe_with_an_ema_trains_on_cifar_data_and_records_what_it_ran_with() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 32, 8, 2);
    let store = tmp.path().join("store");
    let body = experiment("cifar-deit", "cifar100-bin", "deit");
    let trials = run_and_export(tmp.path(), "cifar-deit", &body, &store);
    check_trial(&trials, "deit", true);
}

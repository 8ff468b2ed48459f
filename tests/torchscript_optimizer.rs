//! End-to-end: `bocb run` tunes a user's TorchScript optimizer
//! (`torchscript:PATH`, torch.optim.SGD written against bocb's interface by
//! `scripts/make_torchscript_optimizers.py`) on bocb's own trainer, its path
//! and search space taken from the experiment file's directory; a module
//! that does not fit the interface is refused before any trial.

mod common;

use std::path::Path;
use std::process::Output;

use bocb_store::{Store, TrialStatus};
use common::{bocb, synth};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("trial-runner/tests/torchscript/{name}.pt"))
}

/// The experiment's directory: data, `opt/NAME.pt` with `opt/NAME.pt.yaml`
/// (SGD-M's grid, and timm's name of SGD-M), and `exp.yaml` tuning
/// `torchscript:opt/NAME.pt`.
fn experiment(dir: &Path, module: &str) -> std::path::PathBuf {
    synth(&dir.join("data"), 256, 64, 5);
    std::fs::create_dir_all(dir.join("opt")).unwrap();
    std::fs::copy(fixture(module), dir.join(format!("opt/{module}.pt"))).unwrap();
    std::fs::write(
        dir.join(format!("opt/{module}.pt.yaml")),
        format!(
            "name: {module}.pt\ncategory: a\nweight_decay_style: coupled\ntimm: momentum\n\
             lr: [0.025, 0.05, 0.1, 0.2, 0.4]\n\
             weight_decay: [1.25e-4, 2.5e-4, 5.0e-4, 1.0e-3, 2.0e-3]\n\
             extras:\n  momentum: {{ default: 0.9, candidates: [0.8, 0.9] }}\n"
        ),
    )
    .unwrap();
    let path = dir.join("exp.yaml");
    std::fs::write(
        &path,
        format!(
            "name: ts-opt\ndataset: {{ format: cifar100-bin, path: data }}\n\
             backbones: [resnet18_cifar@micro]\noptimizers: [\"torchscript:opt/{module}.pt\"]\n\
             epochs: 2\nseeds: 1\nbatch_size: 32\ndevice: cpu\nrecipe: pytorch\n\
             strategy: random\nbudget: {{ trials: 2 }}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn bocb_run_tunes_a_torchscript_optimizer_and_its_loss_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "sgd_m");
    let store_dir = tmp.path().join("store");
    // Run from elsewhere: the module and its space are found from the file.
    let out = bocb(&[
        "run",
        exp.to_str().unwrap(),
        "--store",
        store_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("resnet18_cifar@micro × torchscript:opt/sgd_m.pt"),
        "{report}"
    );
    let trials = Store::open(&store_dir).unwrap().trials("ts-opt").unwrap();
    assert_eq!(trials.len(), 2, "{trials:?}");
    for t in &trials {
        assert_eq!(t.optimizer, "torchscript:opt/sgd_m.pt");
        assert_eq!(t.status, TrialStatus::Done, "{t:?}");
        assert_eq!(t.epochs.len(), 2, "{t:?}");
        assert!(
            t.epochs[1].train_loss < t.epochs[0].train_loss,
            "the loss did not fall: {t:?}"
        );
        // The grid is the module's own space (SGD-M's lr grid).
        assert!(
            [0.025, 0.05, 0.1, 0.2, 0.4].contains(&t.params["lr"]),
            "{t:?}"
        );
        assert_eq!(t.params["momentum"], 0.9);
    }
    // The best config as a timm command line, under the name its space gives.
    let out = bocb(&[
        "export",
        "--experiment",
        "ts-opt",
        "--as",
        "timm-args",
        "--store",
        store_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let args = String::from_utf8_lossy(&out.stdout);
    assert!(args.contains("--opt momentum --lr "), "{args}");
    assert!(args.contains("--momentum 0.9"), "{args}");
}

#[test]
fn bocb_run_refuses_a_module_without_step_before_any_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "no_step");
    let store_dir = tmp.path().join("store");
    let out = bocb(&[
        "run",
        exp.to_str().unwrap(),
        "--store",
        store_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("opt/no_step.pt"), "{err}");
    assert!(err.contains("no method `step`"), "{err}");
    assert!(
        err.contains("step(self, params: List[Tensor], grads: List[Tensor]"),
        "{err}"
    );
    assert!(
        !store_dir.exists()
            || Store::open(&store_dir)
                .unwrap()
                .trials("ts-opt")
                .unwrap()
                .is_empty()
    );
}

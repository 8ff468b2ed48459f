//! `scripts/gpu-check` on the CPU at its quick sizes: every step it runs on
//! a GPU machine (the benches against their PyTorch references, packed
//! trials, the data pipelines, a short deterministic bf16 `bocb run` twice)
//! runs here and writes its JSON and markdown.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn gpu_check_runs_every_step_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; `make test` creates the venv (`make venv bench-deps`)",
        python.display()
    );
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(&python)
        .arg(root.join("scripts/gpu-check"))
        .args(["--device", "cpu", "--quick", "--bocb"])
        .arg(common::bocb_binary())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap())
            .unwrap();
    let steps = results["steps"].as_object().unwrap();
    let names: Vec<&str> = steps.keys().map(String::as_str).collect();
    for step in [
        "env",
        "train-fp32",
        "train-bf16",
        "optim",
        "pack",
        "data",
        "run",
    ] {
        assert!(names.contains(&step), "{step} missing from {names:?}");
        assert_eq!(steps[step]["ok"], true, "{step}: {}", steps[step]);
    }
    let train = &steps["train-bf16"]["result"]["rows"];
    assert_eq!(train.as_array().unwrap().len(), 2, "{train}");
    assert!(train[0]["bocb_images_per_sec"].as_f64().unwrap() > 0.0);
    let optim = steps["optim"]["result"]["rows"].as_array().unwrap();
    assert_eq!(optim.len(), 3);
    assert!(optim.iter().all(|r| r["reference_path"] == "default"));
    for precision in ["fp32", "bf16"] {
        let pack = steps["pack"]["result"][precision]["rows"]
            .as_array()
            .unwrap();
        let trials: Vec<u64> = pack.iter().map(|r| r["trials"].as_u64().unwrap()).collect();
        assert_eq!(trials, [1, 2], "{precision}");
    }
    let checks = &steps["run"]["result"]["checks"];
    for check in [
        "trained",
        "bit_equal_reruns",
        "bf16_trains_like_fp32",
        "peak_memory_plausible",
    ] {
        assert_eq!(checks[check], true, "{check}: {checks}");
    }
    let markdown = std::fs::read_to_string(out.path().join("gpu-check.md")).unwrap();
    assert!(markdown.contains("7 of 7 steps passed"), "{markdown}");
    assert!(markdown.contains("| resnet18_cifar@micro |"), "{markdown}");
}

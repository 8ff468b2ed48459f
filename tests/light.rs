//! The bocb built without training (`make light` leaves it in
//! target/light): it serves an experiment to a worker of the default build,
//! its client commands and reads work against that service, and it links
//! no libtorch.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{bocb_binary, synth, wait_for};

fn light_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/light/release/bocb");
    assert!(
        bin.exists(),
        "{} is missing; build it with `make light` (`make test` does)",
        bin.display()
    );
    bin
}

fn light(store: &Path, args: &[&str]) -> Output {
    Command::new(light_binary())
        .args(args)
        .args(["--store", store.to_str().unwrap()])
        .output()
        .expect("the light bocb runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A child process killed when dropped, so a failing test leaves none behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const EXPERIMENT: &str = "\
name: light
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
preset: micro
optimizers: [sgd_m]
epochs: 2
batch_size: 16
budget: { trials: 2 }
";

#[test]
fn a_service_without_training_runs_an_experiment_on_a_default_builds_worker() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 64, 32, 3);
    let experiment = tmp.path().join("exp.yaml");
    std::fs::write(&experiment, EXPERIMENT).unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    // No --workers: this build has none of its own.
    let mut service = Killed(
        Command::new(light_binary())
            .args(["serve", "--store", store.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let serve_log = || std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    wait_for("the light service's URL", || {
        assert!(
            service.0.try_wait().unwrap().is_none(),
            "the light service exited: {}",
            serve_log()
        );
        store.join("service-url").exists() && store.join("service-token").exists()
    });
    let out = light(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let url = std::fs::read_to_string(store.join("service-url")).unwrap();
    let token = std::fs::read_to_string(store.join("service-token")).unwrap();
    let worker_log = std::fs::File::create(tmp.path().join("worker.log")).unwrap();
    let _worker = Killed(
        Command::new(bocb_binary())
            .args(["worker", "--server", url.trim(), "--device", "cpu"])
            .args(["--checkpoints", "checkpoints", "--exit-when-idle", "60"])
            .current_dir(tmp.path())
            .env("BOCB_TOKEN", token.trim())
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::null())
            .stderr(worker_log)
            .spawn()
            .unwrap(),
    );
    wait_for("the experiment to end", || {
        assert!(service.0.try_wait().unwrap().is_none(), "{}", serve_log());
        let out = light(&store, &["status", "light", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let state = status[0]["state"].as_str().unwrap().to_string();
        assert!(
            state == "running" || state == "done",
            "{status}\nworker: {}",
            std::fs::read_to_string(tmp.path().join("worker.log")).unwrap_or_default()
        );
        state == "done"
    });

    let out = light(&store, &["trials", "light", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trials.len(), 2, "{trials:?}");
    for trial in &trials {
        assert_eq!(trial["status"], "done", "{trial}");
        let epochs: Vec<u64> = trial["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs, [1, 2], "{trial}");
    }
    // Reads go through the running service.
    let out = light(&store, &["report", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report.to_string().contains("resnet18_cifar@micro"),
        "{report}"
    );
    let out = light(&store, &["logs", trials[0]["id"].as_str().unwrap()]);
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_build_without_training_links_no_libtorch_and_starts_no_workers() {
    let ldd = Command::new("ldd").arg(light_binary()).output().unwrap();
    let libraries = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.status.success(), "{}", stderr(&ldd));
    assert!(
        !libraries.contains("libtorch") && !libraries.contains("libc10"),
        "{libraries}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = Command::new(light_binary())
        .args(["serve", "--store", store.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--workers", "cpu=2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("built without training") && err.contains("--workers none"),
        "{err}"
    );
    assert!(!store.exists(), "nothing is created for a refused service");
}

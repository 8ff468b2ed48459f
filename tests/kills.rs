//! End-to-end: `bocb serve` with local workers, the service killed with
//! SIGKILL and workers with SIGKILL and SIGTERM at seeded random moments,
//! while it runs external trials and trials of bocb's own trainer, all
//! checkpointing every epoch. Nothing is lost or duplicated, bocb's trials
//! measure what an unbroken run does, and at most one epoch per kill is
//! trained again.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bocb_store::{Store, TrialRecord, TrialStatus};
use common::{bocb, start_service, synth, wait_for};

const TRAINED: &str = "\
name: trained
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar@micro]
optimizers: [sgd_m]
epochs: 4
budget: { trials: 2 }
batch_size: 32
device: cpu
deterministic: true
checkpoint_every: 1
";
const TRAINED_EPOCHS: u32 = 4;

const PROGRAMS: &str = "\
name: programs
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
optimizers: [sgd_m, adamw]
epochs: 8
budget: { trials: 2 }
trial: { command: \"python3 epochs.py\" }
";
const PROGRAM_EPOCHS: u32 = 8;

/// An external trial that keeps its own checkpoint (the last epoch done)
/// in BOCB_CHECKPOINT_DIR, continues after BOCB_RESUME_EPOCH when its
/// checkpoint has it, and appends every epoch it trains to `trained.txt`.
/// Its last epoch waits for the test's `release` file, so that the
/// experiments cannot end before every kill, however fast the machine; it
/// logs while it waits, which ends it once nobody reads its output.
const PROGRAM: &str = r#"
import json, os, time
params = json.loads(os.environ["BOCB_PARAMS"])
checkpoint = os.path.join(os.environ["BOCB_CHECKPOINT_DIR"], "epoch")
resume = int(os.environ["BOCB_RESUME_EPOCH"])
try:
    with open(checkpoint) as f:
        saved = int(f.read())
except FileNotFoundError:
    saved = 0
start = resume if saved >= resume else 0
lr = params["params"]["lr"]
for epoch in range(start + 1, params["epochs"] + 1):
    if epoch == params["epochs"]:
        open("gate-reached", "a").close()
        while not os.path.exists("release"):
            print("waiting for the release of the last epoch", flush=True)
            time.sleep(0.2)
    time.sleep(0.4)
    with open("trained.txt", "a") as f:
        f.write(f"{params['trial']} {epoch}\n")
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    with open(checkpoint + ".tmp", "w") as f:
        f.write(str(epoch))
    os.replace(checkpoint + ".tmp", checkpoint)
    print("BOCB_REPORT " + json.dumps({"epoch": epoch, "accuracy": 50 + 100 * lr * epoch}), flush=True)
"#;

fn cli(store: &Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--store", store.to_str().unwrap()]);
    let out = bocb(&all);
    assert!(
        out.status.success(),
        "bocb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn trials(store: &Path, experiment: &str) -> Vec<TrialRecord> {
    serde_json::from_slice(&cli(store, &["trials", experiment, "--json"]).stdout).unwrap()
}

fn state(store: &Path, experiment: &str) -> String {
    let out = cli(store, &["status", experiment, "--json"]);
    let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    statuses[0]["state"].as_str().unwrap().to_string()
}

/// Whether process `pid` is gone (or a zombie awaiting its reaper).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

/// The local workers alive now, from the pids their logs name.
fn live_workers(store: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(logs) = std::fs::read_dir(store.join("logs/workers")) else {
        return pids;
    };
    for entry in logs {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.split("(pid ").nth(1) {
                let pid: u32 = rest.split(')').next().unwrap().parse().unwrap();
                if !gone(pid) {
                    pids.push(pid);
                }
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// Epochs the workers trained with bocb's trainer: each logs a line per
/// epoch (`epoch N: train loss ...`) in its own log, kept across restarts.
fn trainer_epochs(store: &Path) -> usize {
    std::fs::read_dir(store.join("logs/workers"))
        .unwrap()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            text.lines()
                .filter(|l| l.starts_with("epoch ") && l.contains(": train loss "))
                .count()
        })
        .sum()
}

/// Epochs recorded so far, over both experiments (read from the store
/// through the service).
fn recorded_epochs(store: &Path) -> usize {
    ["trained", "programs"]
        .iter()
        .flat_map(|e| trials(store, e))
        .map(|t| t.epochs.len())
        .sum()
}

/// SplitMix64: the kills' moments and targets, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Kill {
    Service,
    WorkerSigkill,
    WorkerSigterm,
}

/// The finished trials of both experiments, by id.
fn finished(store: &Path) -> BTreeMap<String, TrialRecord> {
    ["trained", "programs"]
        .iter()
        .flat_map(|e| trials(store, e))
        .filter(|t| t.status.is_final())
        .map(|t| (t.id.clone(), t))
        .collect()
}

fn epoch_numbers(trial: &TrialRecord) -> Vec<u32> {
    trial.epochs.iter().map(|e| e.epoch).collect()
}

#[test]
fn killed_services_and_workers_lose_nothing_and_train_at_most_an_epoch_again_per_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(&dir.join("data"), 256, 64, 5);
    let trained = dir.join("trained.yaml");
    std::fs::write(&trained, TRAINED).unwrap();
    let programs = dir.join("programs.yaml");
    std::fs::write(&programs, PROGRAMS).unwrap();
    std::fs::write(dir.join("epochs.py"), PROGRAM).unwrap();

    // What an unbroken run of bocb's trials measures.
    let unbroken = dir.join("unbroken");
    cli(&unbroken, &["run", trained.to_str().unwrap(), "--quiet"]);
    let whole = Store::open(&unbroken).unwrap().trials("trained").unwrap();
    assert_eq!(whole.len(), 2);

    let store = dir.join("store");
    let mut service = start_service(
        &store,
        &[
            "--workers",
            "cpu=2",
            "--heartbeat-timeout",
            "3",
            "--retries",
            "20",
        ],
    );
    for experiment in [&trained, &programs] {
        cli(&store, &["submit", experiment.to_str().unwrap()]);
    }

    let mut rng = Rng(16);
    let mut plan = vec![
        Kill::Service,
        Kill::Service,
        Kill::Service,
        Kill::Service,
        Kill::WorkerSigkill,
        Kill::WorkerSigkill,
        Kill::WorkerSigterm,
        Kill::WorkerSigterm,
    ];
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let all_done =
        |store: &Path| state(store, "trained") == "done" && state(store, "programs") == "done";
    let mut kills = Vec::new();
    let mut seen_finished: BTreeMap<String, TrialRecord> = BTreeMap::new();
    for kill in plan {
        // Each kill comes after some progress (or once a program waits for
        // its release, when nothing else may be left to run), at a random
        // moment of an epoch.
        let before = recorded_epochs(&store);
        wait_for("progress between kills", || {
            assert!(service.0.try_wait().unwrap().is_none(), "bocb serve exited");
            recorded_epochs(&store) > before || dir.join("gate-reached").exists()
        });
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        seen_finished.extend(finished(&store));
        match kill {
            Kill::Service => {
                let workers = live_workers(&store);
                drop(service);
                // The workers end with their service.
                for pid in workers {
                    wait_for("a worker of the killed service to exit", || gone(pid));
                }
                service = start_service(
                    &store,
                    &[
                        "--workers",
                        "cpu=2",
                        "--heartbeat-timeout",
                        "3",
                        "--retries",
                        "20",
                    ],
                );
            }
            Kill::WorkerSigkill | Kill::WorkerSigterm => {
                let mut workers = Vec::new();
                wait_for("a live worker", || {
                    workers = live_workers(&store);
                    !workers.is_empty()
                });
                let pid = workers[rng.below(workers.len() as u64) as usize];
                let signal = if matches!(kill, Kill::WorkerSigkill) {
                    "-KILL"
                } else {
                    "-TERM"
                };
                let sent = Command::new("kill")
                    .args([signal, &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(sent.success());
                wait_for("the signalled worker to exit", || gone(pid));
            }
        }
        kills.push(kill);
    }
    std::fs::write(dir.join("release"), "").unwrap();
    wait_for("both experiments to finish", || {
        assert!(service.0.try_wait().unwrap().is_none(), "bocb serve exited");
        all_done(&store)
    });
    drop(service);

    let store_dir = store;
    let store = Store::open(&store_dir).unwrap();
    let ran = store.trials("trained").unwrap();
    let run_programs = store.trials("programs").unwrap();
    assert_eq!(
        (ran.len(), run_programs.len()),
        (2, 4),
        "no trial lost or duplicated"
    );
    for trial in &ran {
        assert_eq!(trial.status, TrialStatus::Done, "{trial:?}");
        assert_eq!(
            epoch_numbers(trial),
            (1..=TRAINED_EPOCHS).collect::<Vec<_>>()
        );
        let unbroken = whole.iter().find(|t| t.id == trial.id).unwrap();
        let numbers = |t: &TrialRecord| {
            t.epochs
                .iter()
                .map(|e| (e.epoch, e.train_loss, e.test_loss, e.test_accuracy))
                .collect::<Vec<_>>()
        };
        assert_eq!(numbers(trial), numbers(unbroken), "trial {}", trial.id);
        assert_eq!(trial.final_accuracy, unbroken.final_accuracy);
    }
    for trial in &run_programs {
        assert_eq!(trial.status, TrialStatus::Done, "{trial:?}");
        assert_eq!(
            epoch_numbers(trial),
            (1..=PROGRAM_EPOCHS).collect::<Vec<_>>()
        );
        for e in &trial.epochs {
            let expected = 50.0 + 100.0 * trial.params["lr"] * f64::from(e.epoch);
            assert!((e.test_accuracy - expected).abs() < 1e-9, "{trial:?}");
        }
    }
    // A trial finished before a kill stayed as it was (compared as JSON,
    // where the metrics a program does not report, NaN, are equal nulls).
    let json = |t: &TrialRecord| serde_json::to_value(t).unwrap();
    for (id, before) in &seen_finished {
        let now = ran.iter().chain(&run_programs).find(|t| &t.id == id);
        assert_eq!(
            now.map(json),
            Some(json(before)),
            "finished trial {id} changed"
        );
    }
    assert!(
        !store_dir.join("checkpoints").join("trained").exists()
            && !store_dir.join("checkpoints").join("programs").exists(),
        "ended trials leave no checkpoint"
    );

    // Epochs trained again: those trained beyond the experiments' own.
    let program_lines = std::fs::read_to_string(dir.join("trained.txt")).unwrap();
    let trained_epochs = program_lines.lines().count() + trainer_epochs(&store_dir);
    let needed =
        (ran.len() as u32 * TRAINED_EPOCHS + run_programs.len() as u32 * PROGRAM_EPOCHS) as usize;
    assert!(trained_epochs >= needed);
    let extra = trained_epochs - needed;
    eprintln!(
        "kills: {kills:?}; epochs trained again: {extra} on {needed} with {} kills",
        kills.len()
    );
    assert!(
        extra <= kills.len(),
        "{extra} epochs trained again after {} kills",
        kills.len()
    );
}

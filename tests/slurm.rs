//! End-to-end: `bocb serve --launcher`, and an experiment's own
//! `launcher:`, on a single-node Slurm cluster
//! (`make test-slurm` starts one with scripts/slurm-loopback, with
//! MaxArraySize=4 and no accounting storage, and sets BOCB_SLURM_TESTS=1).
//! Without it these tests say so and pass without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bocb_store::{Store, TrialRecord};
use common::{bocb, start_service, start_service_with_env, synth};

/// One test at a time: they share the cluster's two CPUs.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Long enough for a requeued job's hold (about 121 s) and its rerun.
const SLURM_PATIENCE: Duration = Duration::from_secs(600);

/// Whether a cluster is up for these tests; says how to run them when not.
fn cluster_up() -> bool {
    if std::env::var_os("BOCB_SLURM_TESTS").is_some() {
        return true;
    }
    eprintln!(
        "skipped: no Slurm cluster for these tests; run `make test-slurm` (as root it installs and starts a single-node cluster with scripts/slurm-loopback, runs them, and stops it)"
    );
    false
}

fn wait_long(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SLURM_PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cli(store: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--store", store.to_str().unwrap()]);
    bocb(&all)
}

fn status(store: &Path, name: &str) -> serde_json::Value {
    let out = cli(store, &["status", name, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

fn jobs(store: &Path, name: &str) -> Vec<serde_json::Value> {
    status(store, name)["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn trials(store: &Path, name: &str) -> Vec<TrialRecord> {
    let out = cli(store, &["trials", name, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// This user's jobs named `bocb-…-NAME`, as squeue lists them now.
fn squeue_jobs(name: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["--me", "--noheader", "--array", "--format=%i|%T|%j"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(char::is_numeric) && l.ends_with(&format!("-{name}")))
        .map(str::to_string)
        .collect()
}

fn launcher_file(dir: &Path, max_jobs: usize, more: &str) -> PathBuf {
    let path = dir.join("launcher.yaml");
    std::fs::write(
        &path,
        format!("slurm: {{ cpus_per_task: 1, mem: 1G, gres: \"gpu:1\", device: cpu, max_jobs: {max_jobs}, idle_exit_s: 5{more} }}\n"),
    )
    .unwrap();
    path
}

fn serve(store: &Path, launcher: &Path) -> common::Service {
    start_service(
        store,
        &[
            "--workers",
            "none",
            "--heartbeat-timeout",
            "20",
            "--launcher",
            launcher.to_str().unwrap(),
        ],
    )
}

const MICRO: &str = "\
name: slurm_micro
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
preset: micro
optimizers: [sgd_m, adamw, adam, lamb, rmsprop]
epochs: 2
batch_size: 16
budget: { trials: 2 }
device: cpu
";

/// An experiment of micro trials runs to completion through Slurm with two
/// workers; with more jobs wanted than MaxArraySize (4) the arrays are
/// split; accounting storage is off; `bocb stop` leaves no job behind.
#[test]
fn micro_trials_complete_through_slurm_arrays_split_and_stop_cancels() {
    if !cluster_up() {
        return;
    }
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let config = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .unwrap();
    let config = text(&config);
    assert!(config.contains("accounting_storage/none"), "{config}");
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("MaxArraySize") && l.ends_with("= 4")),
        "{config}"
    );

    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 64, 32, 5);
    let experiment = tmp.path().join("exp.yaml");
    std::fs::write(&experiment, MICRO).unwrap();
    let store = tmp.path().join("store");
    let launcher = launcher_file(tmp.path(), 6, "");
    let _service = serve(&store, &launcher);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    // Five pairs queue five trials at once: more than one array of at most 4.
    let mut most = 0;
    let mut seen_running = false;
    let mut seen_in_text = false;
    wait_long("the experiment to finish", || {
        // The text status lists each job with its reason or node.
        let out = cli(&store, &["status", "slurm_micro"]);
        assert!(out.status.success(), "{}", text(&out));
        seen_in_text |= text(&out).lines().any(|l| {
            let l = l.trim();
            l.starts_with("slurm job ")
                && (l.contains(" running on localhost") || l.contains(" pending"))
        });
        let jobs = jobs(&store, "slurm_micro");
        most = most.max(jobs.len());
        for job in &jobs {
            let id = job["id"].as_str().unwrap();
            let index: usize = id.split('_').nth(1).unwrap().parse().unwrap();
            assert!(
                index < 4,
                "array index {index} beyond MaxArraySize 4: {jobs:?}"
            );
            if job["state"] == "RUNNING" {
                seen_running = true;
                assert_eq!(job["node"], "localhost", "{job}");
            }
        }
        assert!(jobs.len() <= 6, "more jobs than max_jobs: {jobs:?}");
        status(&store, "slurm_micro")["state"] == "done"
    });
    assert!(
        most > 4,
        "at most {most} jobs at once: the arrays were never split"
    );
    assert!(seen_running);
    assert!(seen_in_text, "`bocb status` never listed a job");
    let done = trials(&store, "slurm_micro");
    assert_eq!(done.len(), 10, "{done:?}");
    assert!(done.iter().all(|t| t.epochs.len() == 2), "{done:?}");
    // Every trial was trained by a Slurm worker.
    let logs: Vec<PathBuf> = std::fs::read_dir(store.join("slurm/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!logs.is_empty());
    let token = std::fs::metadata(store.join("slurm/token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&token.permissions()) & 0o777,
        0o600
    );

    // Idle workers leave; a resubmitted experiment gets jobs again, which stop cancels.
    wait_long("idle workers to exit", || {
        squeue_jobs("slurm_micro").is_empty()
    });
    let grown = MICRO.replace("trials: 2", "trials: 4");
    std::fs::write(&experiment, grown).unwrap();
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("jobs for the grown experiment", || {
        !squeue_jobs("slurm_micro").is_empty()
    });
    let out = cli(&store, &["stop", "slurm_micro"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("no job left after stop", || {
        squeue_jobs("slurm_micro").is_empty()
    });
}

const RESUMABLE: &str = "\
name: resumable
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
preset: micro
optimizers: [sgd_m]
epochs: EPOCHS
budget: { trials: 1 }
batch_size: 32
device: cpu
deterministic: true
checkpoint_every: 1
";

/// Writes the resumable experiment of `epochs` and its data into `dir`;
/// returns the file and the trial an unbroken `bocb run` of it records.
fn resumable_and_unbroken(dir: &Path, epochs: u32) -> (PathBuf, TrialRecord) {
    synth(&dir.join("data"), 512, 64, 5);
    let experiment = dir.join("exp.yaml");
    std::fs::write(
        &experiment,
        RESUMABLE.replace("EPOCHS", &epochs.to_string()),
    )
    .unwrap();
    let unbroken = dir.join("unbroken");
    let out = cli(&unbroken, &["run", experiment.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", text(&out));
    let whole = Store::open(&unbroken).unwrap().trials("resumable").unwrap()[0].clone();
    (experiment, whole)
}

fn numbers(t: &TrialRecord) -> Vec<(u32, f64, f64, f64)> {
    t.epochs
        .iter()
        .map(|e| (e.epoch, e.train_loss, e.test_loss, e.test_accuracy))
        .collect()
}

/// The trial's checkpoint in the store, once a worker sent one.
fn has_checkpoint(store: &Path) -> bool {
    std::fs::read_dir(store.join("checkpoints").join("resumable"))
        .is_ok_and(|mut d| d.next().is_some())
}

fn job_logs(store: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(store.join("slurm/logs")).unwrap() {
        all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    all
}

/// `scontrol requeue` of the running worker mid-trial: the worker saves,
/// releases its trial and exits; the trial continues from its checkpoint
/// on the requeued job (held about two minutes) or on one the launcher
/// submits meanwhile (while Slurm lists the requeued one as completing),
/// and ends with the epochs of an unbroken run, none lost or repeated.
#[test]
fn a_requeued_worker_job_continues_its_trial_from_the_checkpoint() {
    if !cluster_up() {
        return;
    }
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (experiment, whole) = resumable_and_unbroken(tmp.path(), 8);
    let store = tmp.path().join("store");
    let launcher = launcher_file(tmp.path(), 1, "");
    let _service = serve(&store, &launcher);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("a checkpoint", || has_checkpoint(&store));
    // The service learns job states from its last `squeue`: the job that
    // sent the checkpoint may still be listed as pending for a poll or two.
    let mut job = None;
    wait_long("the service to list the job as running", || {
        job = jobs(&store, "resumable")
            .into_iter()
            .find(|j| j["state"] == "RUNNING")
            .and_then(|j| j["id"].as_str().map(str::to_string));
        job.is_some()
    });
    let job = job.expect("a running job");
    let out = Command::new("scontrol")
        .args(["requeue", &job])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_long("the experiment to finish", || {
        status(&store, "resumable")["state"] == "done"
    });
    let trial = trials(&store, "resumable")[0].clone();
    assert_eq!(numbers(&trial), numbers(&whole));
    let log = text(&cli(&store, &["logs", &trial.id]));
    let logs = job_logs(&store);
    if log.contains("released by worker") {
        assert!(
            log.contains("fetched the trial's checkpoint"),
            "the trial started over: {log}"
        );
        assert!(logs.contains("saved and released; exiting"), "{logs}");
        assert_worker_exited_cleanly(&store);
    } else {
        // The requeue came as the trial ended: nothing to continue.
        assert!(log.contains("ended done"), "{log}");
    }
}

/// The job script logs the worker's exit status after the worker's own last
/// line, so wait for it rather than read the log once.
fn assert_worker_exited_cleanly(store: &Path) {
    wait_long("the job script to log the worker's exit", || {
        job_logs(store).contains("worker exited with status")
    });
    let logs = job_logs(store);
    assert!(logs.contains("worker exited with status 0"), "{logs}");
}

/// A job's time limit with `--signal` reaches the worker, which saves its
/// checkpoint, releases the trial and exits with status 0; another job
/// continues the trial from the checkpoint. The trial is long enough that
/// the one-minute limit always falls inside it; it is stopped once it moved on.
#[test]
fn a_time_limit_signal_makes_the_worker_checkpoint_and_exit_cleanly() {
    if !cluster_up() {
        return;
    }
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 512, 64, 5);
    let experiment = tmp.path().join("exp.yaml");
    std::fs::write(&experiment, RESUMABLE.replace("EPOCHS", "500")).unwrap();
    let store = tmp.path().join("store");
    let launcher = launcher_file(tmp.path(), 1, ", time: \"1\", signal_before_s: 45");
    let _service = serve(&store, &launcher);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("a worker to leave on the signal", || {
        job_logs(&store).contains("saved and released; exiting")
    });
    assert_worker_exited_cleanly(&store);
    let trial_log = || {
        let trial = &trials(&store, "resumable")[0];
        text(&cli(&store, &["logs", &trial.id]))
    };
    wait_long("another job to continue the trial", || {
        trial_log().contains("fetched the trial's checkpoint")
    });
    assert!(
        trial_log().contains("released by worker"),
        "{}",
        trial_log()
    );
    // On a loaded machine the signal may come before the first epoch ends.
    wait_long("an epoch recorded", || {
        !trials(&store, "resumable")[0].epochs.is_empty()
    });
    let out = cli(&store, &["stop", "resumable"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("no job left after stop", || {
        squeue_jobs("resumable").is_empty()
    });
    // Nothing lost or trained twice: the epochs run 1, 2, ... without a gap.
    let trial = trials(&store, "resumable")[0].clone();
    let epochs: Vec<u32> = trial.epochs.iter().map(|e| e.epoch).collect();
    assert!(!epochs.is_empty());
    assert_eq!(epochs, (1..=epochs.len() as u32).collect::<Vec<_>>());
}

/// The micro experiment, smaller, with its own `launcher:` block.
fn own_launcher_experiment(dir: &Path) -> PathBuf {
    synth(&dir.join("data"), 64, 32, 5);
    let path = dir.join("exp.yaml");
    let text = MICRO
        .replace("slurm_micro", "own_launcher")
        .replace("sgd_m, adamw, adam, lamb, rmsprop", "sgd_m, adamw, adam")
        + "launcher: { slurm: { cpus_per_task: 1, mem: 1G, gres: \"gpu:1\", device: cpu, max_jobs: 2, idle_exit_s: 5 } }\n";
    std::fs::write(&path, text).unwrap();
    path
}

/// A service started without `--launcher` runs an experiment through Slurm
/// because the experiment's own `launcher:` says so: under its own job
/// script and its own `max_jobs`, to completion; `bocb stop` cancels its jobs.
#[test]
fn an_experiments_own_launcher_runs_its_trials_through_slurm() {
    if !cluster_up() {
        return;
    }
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let experiment = own_launcher_experiment(tmp.path());
    let store = tmp.path().join("store");
    let _service = start_service(&store, &["--workers", "none", "--heartbeat-timeout", "20"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Its workers idle for `idle_exit_s` after the last trial, so watching
    // until none runs sees them even where the trials end within a tick.
    let mut most = 0;
    wait_long("the experiment to finish and its workers to leave", || {
        let jobs = jobs(&store, "own_launcher");
        let running = |j: &&serde_json::Value| {
            ["PENDING", "RUNNING"].contains(&j["state"].as_str().unwrap_or(""))
        };
        let active = jobs.iter().filter(running).count();
        assert!(active <= 2, "more jobs than its max_jobs: {jobs:?}");
        most = most.max(active);
        status(&store, "own_launcher")["state"] == "done" && active == 0
    });
    assert!(most > 0, "`bocb status` never listed a job");
    let done = trials(&store, "own_launcher");
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(done.iter().all(|t| t.epochs.len() == 2), "{done:?}");
    let slurm = store.join("slurm");
    assert!(slurm.join("worker-own_launcher.sh").exists());
    assert!(
        !slurm.join("worker.sh").exists(),
        "the service has no config"
    );
    let token = std::fs::metadata(slurm.join("token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&token.permissions()) & 0o777,
        0o600
    );
    // Its idle workers leave on their own, cleanly.
    assert_worker_exited_cleanly(&store);

    let grown = std::fs::read_to_string(&experiment)
        .unwrap()
        .replace("trials: 2", "trials: 4");
    std::fs::write(&experiment, grown).unwrap();
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("jobs for the grown experiment", || {
        !squeue_jobs("own_launcher").is_empty()
    });
    let out = cli(&store, &["stop", "own_launcher"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_long("no job left after stop", || {
        squeue_jobs("own_launcher").is_empty()
    });
}

/// Where the service cannot run Slurm's commands, an experiment whose
/// `launcher:` asks for Slurm is refused at submit, saying so, and nothing
/// is stored. Needs no cluster.
#[test]
fn an_experiments_launcher_without_slurm_is_refused_at_submit() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = own_launcher_experiment(tmp.path());
    let store = tmp.path().join("store");
    let empty = tmp.path().join("no-slurm");
    std::fs::create_dir_all(&empty).unwrap();
    let _service = start_service_with_env(
        &store,
        &["--workers", "none"],
        &[("PATH", empty.to_str().unwrap())],
    );
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("exp.yaml: `launcher: { slurm }` asks this service to start the experiment's workers through Slurm")
            && said.contains("cannot run `scontrol show config`")
            && said.contains("on the service's PATH"),
        "{said}"
    );
    let out = cli(&store, &["status", "own_launcher"]);
    assert!(!out.status.success(), "stored after all: {}", text(&out));
}

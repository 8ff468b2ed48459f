//! End-to-end: `bocb serve` with local worker processes, killed with
//! SIGKILL mid-experiment and restarted; growing an experiment; the token;
//! reading results while it serves; HTTPS.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bocb_store::{Store, TrialRecord, TrialStatus};
use common::{bocb, bocb_binary, start_service, synth, wait_for, Service, PATIENCE};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const EXPERIMENT: &str = "\
name: svc
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
preset: micro
optimizers: [sgd_m, adamw]
epochs: 2
batch_size: 16
budget: { trials: 3 }
device: cpu
";

/// A store with a tiny synthetic dataset and the experiment file beside it.
fn setup(dir: &Path, experiment: &str) -> PathBuf {
    let data = dir.join("data");
    synth(&data, 64, 32, 5);
    let path = dir.join("exp.yaml");
    std::fs::write(&path, experiment).unwrap();
    path
}

fn cli(store: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--store", store.to_str().unwrap()]);
    bocb(&all)
}

fn service_trials(store: &Path, name: &str) -> Vec<TrialRecord> {
    let out = cli(store, &["trials", name, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn experiment_state(store: &Path, name: &str) -> String {
    let out = cli(store, &["status", name, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    statuses[0]["state"].as_str().unwrap().to_string()
}

/// Polls until `done` holds, failing if the service exits meanwhile.
fn wait_until(service: &mut Service, mut done: impl FnMut() -> bool) {
    wait_for("the service's trials", || {
        assert!(service.0.try_wait().unwrap().is_none(), "bocb serve exited");
        done()
    });
}

/// The process ids the local workers logged at start.
fn worker_pids(store: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(store.join("logs/workers")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.split("(pid ").nth(1) {
                pids.push(rest.split(')').next().unwrap().parse().unwrap());
            }
        }
    }
    pids
}

/// SIGKILL, at whatever moment the service is in.
fn kill(service: Service) {
    drop(service);
}

fn done_with_all_epochs(trial: &TrialRecord) -> bool {
    done_with_all_epochs_of(trial, 2)
}

#[test]
fn service_survives_sigkill_and_grows_without_repeating_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = setup(tmp.path(), EXPERIMENT);
    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "cpu=2", "--heartbeat-timeout", "20"]);

    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || {
        service_trials(&store, "svc")
            .iter()
            .filter(|t| t.status == TrialStatus::Done)
            .count()
            >= 2
    });
    kill(service);
    let finished_before: Vec<TrialRecord> = {
        let store = Store::open(&store).unwrap();
        store.trials("svc").unwrap()
    }
    .into_iter()
    .filter(|t| t.status == TrialStatus::Done)
    .collect();
    assert!(finished_before.len() >= 2);

    // The workers notice that their service died and exit.
    let pids = worker_pids(&store);
    assert_eq!(pids.len(), 2, "two local workers were started");
    for pid in &pids {
        wait_for("a worker of the killed service to exit", || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        });
    }

    let mut service = start_service(&store, &["--workers", "cpu=2", "--heartbeat-timeout", "20"]);
    wait_until(&mut service, || experiment_state(&store, "svc") == "done");
    let listed = service_trials(&store, "svc");
    let table = cli(&store, &["trials", "svc"]);
    kill(service);
    assert!(table.status.success(), "{}", stderr(&table));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.starts_with("trial ") && table.contains(" peak MiB"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 7, "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains(" done ") && l.contains(" pytorch ") && l.contains(" fp32 ")),
        "{table}"
    );
    let trials = Store::open(&store).unwrap().trials("svc").unwrap();
    assert_eq!(trials, listed, "`bocb trials` shows the store");
    assert_eq!(trials.len(), 6, "2 optimizers x 3 configs x 1 seed");
    for trial in &trials {
        assert!(done_with_all_epochs(trial), "{trial:?}");
        // The worker reported what the trial ran with (PyTorch's recipe
        // keeps no weight average).
        assert_eq!(trial.precision.as_deref(), Some("fp32"), "{trial:?}");
        assert!(trial.peak_memory_bytes.is_some_and(|b| b > 0), "{trial:?}");
        assert_eq!(trial.ema_accuracy, None, "{trial:?}");
    }
    // Trials finished before the kill were not trained again.
    for before in &finished_before {
        let after = trials.iter().find(|t| t.id == before.id).unwrap();
        assert_eq!(after, before);
    }

    // Growing: a second seed adds 6 trials; the first 6 stay as they were.
    std::fs::write(
        &experiment,
        EXPERIMENT.replace("epochs: 2", "epochs: 2\nseeds: 2"),
    )
    .unwrap();
    let mut service = start_service(&store, &["--workers", "cpu=2", "--heartbeat-timeout", "20"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || experiment_state(&store, "svc") == "done");
    let grown = service_trials(&store, "svc");
    // A trial's log tells which worker trained it and how each epoch went.
    let out = cli(&store, &["logs", &grown[0].id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(log.contains("claimed by worker `local-cpu-"), "{log}");
    assert!(log.contains("epoch 2: train loss"), "{log}");
    kill(service);
    assert_eq!(grown, Store::open(&store).unwrap().trials("svc").unwrap());
    assert_eq!(grown.len(), 12);
    assert!(grown.iter().all(done_with_all_epochs));
    for old in &trials {
        assert_eq!(grown.iter().find(|t| t.id == old.id), Some(old));
    }
    assert_eq!(grown.iter().filter(|t| t.seed == 1).count(), 6);
}

#[test]
fn the_service_starts_workers_for_an_experiments_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let body = EXPERIMENT
        .replace("epochs: 2", "epochs: 1")
        .replace("budget: { trials: 3 }", "budget: { trials: 1 }")
        .replace("device: cpu", "devices: cpu\ntrials_per_device: 2");
    let experiment = setup(tmp.path(), &body);
    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "cpu=1"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The one of `--workers` and the one the experiment's second slot
    // asked for, whose log the service opened before answering.
    let mut logs: Vec<_> = std::fs::read_dir(store.join("logs/workers"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    logs.sort();
    assert_eq!(logs, ["local-cpu-0.log", "local-cpu-1.log"]);
    wait_until(&mut service, || experiment_state(&store, "svc") == "done");
    wait_until(&mut service, || worker_pids(&store).len() == 2);
    let trials = service_trials(&store, "svc");
    kill(service);
    assert_eq!(trials.len(), 2, "2 optimizers x 1 config");
    for trial in &trials {
        assert!(done_with_all_epochs_of(trial, 1), "{trial:?}");
        assert_eq!(trial.device.as_deref(), Some("cpu"), "the worker's device");
    }
}

#[test]
fn requests_need_the_token_and_bad_experiments_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = setup(tmp.path(), EXPERIMENT);
    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "none"]);

    // The token was made at first start, readable by its owner only.
    let token_file = store.join("service-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&token_file.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.len() >= 32);

    // No header, and a wrong token: 401, and nothing is created.
    let url = std::fs::read_to_string(store.join("service-url")).unwrap();
    let address = url.trim().trim_start_matches("http://").to_string();
    let body = r#"{"yaml": "name: x", "base": "/", "origin": "x"}"#;
    for auth in ["", "Authorization: Bearer wrong\r\n"] {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "POST /api/experiments HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let out = cli(
        &store,
        &["submit", experiment.to_str().unwrap(), "--token", "wrong"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));

    // Bad experiments are refused with the reason.
    let bad = [
        (
            "optimizers: [sgd_m, adamw]",
            "optimizers: [sgd_m, adamq]",
            "unknown optimizer `adamq`",
        ),
        (
            "backbones: [resnet18_cifar]",
            "backbones: [resnet_huge]",
            "unknown backbone `resnet_huge",
        ),
        ("path: data", "path: no-such-data", "does not exist"),
        (
            "budget: { trials: 3 }",
            "budget: { trials: 30 }",
            "`budget.trials` must be between 1 and 25",
        ),
    ];
    for (from, to, reason) in bad {
        std::fs::write(&experiment, EXPERIMENT.replace(from, to)).unwrap();
        let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(reason), "{}", stderr(&out));
    }
    let out = cli(&store, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(statuses, serde_json::json!([]), "nothing was created");

    // With the token, a good one is taken.
    std::fs::write(&experiment, EXPERIMENT).unwrap();
    let out = cli(
        &store,
        &[
            "submit",
            experiment.to_str().unwrap(),
            "--token",
            token.trim(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(experiment_state(&store, "svc"), "running");
    let out = cli(&store, &["stop", "svc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(experiment_state(&store, "svc"), "stopped");
    let out = cli(&store, &["resume", "svc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(experiment_state(&store, "svc"), "running");
    assert!(service.0.try_wait().unwrap().is_none());
    kill(service);
}

/// An external trial: reads its parameters from BOCB_PARAMS and the file
/// BOCB_PARAMS_FILE, reports three epochs; as adamw it kills the worker
/// running it (a worker that dies mid-trial).
const EXTERNAL_TRIAL: &str = r#"
import json, os, sys, time
params = json.loads(os.environ["BOCB_PARAMS"])
with open(os.environ["BOCB_PARAMS_FILE"]) as f:
    assert json.load(f) == params
if params["optimizer"] == "adamw":
    print("about to kill my worker", flush=True)
    time.sleep(1)  # the worker logs the line before it dies
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"worker" in f.read().split(b"\0"):
                os.kill(pid, 9)
                sys.exit(0)
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
lr = params["params"]["lr"]
for epoch in range(1, params["epochs"] + 1):
    print("BOCB_REPORT " + json.dumps({"epoch": epoch, "accuracy": 50 + 100 * lr * epoch}), flush=True)
"#;

const EXTERNAL_EXPERIMENT: &str = "\
name: ext
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
optimizers: [sgd_m, adamw]
epochs: 3
budget: { trials: 2 }
trial: { command: \"python3 train.py\" }
";

#[test]
fn external_trials_report_through_stdout_and_lost_workers_are_retried_then_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = setup(tmp.path(), EXTERNAL_EXPERIMENT);
    std::fs::write(tmp.path().join("train.py"), EXTERNAL_TRIAL).unwrap();
    let store = tmp.path().join("store");
    let mut service = start_service(
        &store,
        &[
            "--workers",
            "cpu=2",
            "--retries",
            "1",
            "--heartbeat-timeout",
            "3",
        ],
    );
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || experiment_state(&store, "ext") == "done");
    let trials = service_trials(&store, "ext");
    let failed_log = trials
        .iter()
        .find(|t| t.optimizer == "adamw")
        .map(|t| cli(&store, &["logs", &t.id]))
        .unwrap();
    kill(service);

    assert_eq!(trials.len(), 4, "2 optimizers x 2 configs");
    for trial in trials.iter().filter(|t| t.optimizer == "sgd_m") {
        assert!(done_with_all_epochs_of(trial, 3), "{trial:?}");
        // bocb knows neither the program's precision nor its memory.
        assert_eq!(
            (
                &trial.precision,
                trial.peak_memory_bytes,
                trial.ema_accuracy
            ),
            (&None, None, None),
            "{trial:?}"
        );
        let expected = 50.0 + 100.0 * trial.params["lr"] * 3.0;
        assert!(
            (trial.final_accuracy.unwrap() - expected).abs() < 1e-9,
            "{trial:?}"
        );
        assert!((trial.epochs[0].test_accuracy - (50.0 + 100.0 * trial.params["lr"])).abs() < 1e-9);
    }
    // Each adamw trial killed its worker twice: re-queued once, then failed
    // with the end of its log.
    for trial in trials.iter().filter(|t| t.optimizer == "adamw") {
        assert_eq!(trial.status, TrialStatus::Failed, "{trial:?}");
        let error = trial.error.as_deref().unwrap();
        assert!(
            error.contains("lost 2 worker(s) (retry limit 1)"),
            "{error}"
        );
        assert!(error.contains("about to kill my worker"), "{error}");
    }
    let log = String::from_utf8_lossy(&failed_log.stdout).into_owned();
    assert_eq!(log.matches("is taken as lost").count(), 2, "{log}");
    assert_eq!(log.matches("trial re-queued").count(), 1, "{log}");

    // `bocb run` runs the same program in-process.
    let only_sgd = EXTERNAL_EXPERIMENT.replace("[sgd_m, adamw]", "[sgd_m]");
    std::fs::write(&experiment, only_sgd).unwrap();
    let run_store = tmp.path().join("run-store");
    let out = bocb(&[
        "run",
        experiment.to_str().unwrap(),
        "--store",
        run_store.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = Store::open(&run_store).unwrap().trials("ext").unwrap();
    let served: Vec<_> = trials.iter().filter(|t| t.optimizer == "sgd_m").collect();
    assert_eq!(ran.len(), 2);
    for (ran, served) in ran.iter().zip(served) {
        assert_eq!(ran.id, served.id);
        assert_eq!(ran.final_accuracy, served.final_accuracy);
        assert_eq!((&ran.precision, ran.peak_memory_bytes), (&None, None));
    }
}

fn done_with_all_epochs_of(trial: &TrialRecord, epochs: u32) -> bool {
    trial.status == TrialStatus::Done
        && trial.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>()
            == (1..=epochs).collect::<Vec<_>>()
}

/// An external trial that fails while a file `fail` exists beside it.
const REPORTING_SCRIPT: &str = r#"test -e fail && { echo "told to fail" >&2; exit 1; }
echo 'BOCB_REPORT {"epoch": 1, "accuracy": 40}'
echo 'BOCB_REPORT {"epoch": 2, "accuracy": 60.5}'
"#;

const RUN_EXPERIMENT: &str = "\
name: ran
dataset: { format: cifar100-bin, path: data }
backbones: [resnet18_cifar]
optimizers: [sgd_m]
epochs: 2
budget: { trials: 2 }
trial: { command: \"sh report.sh\" }
";

#[test]
fn experiments_made_by_bocb_run_are_listed_and_resumed_by_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let failing = setup(tmp.path(), RUN_EXPERIMENT);
    std::fs::write(tmp.path().join("report.sh"), REPORTING_SCRIPT).unwrap();
    let finishing = tmp.path().join("ok.yaml");
    std::fs::write(&finishing, RUN_EXPERIMENT.replace("name: ran", "name: ok")).unwrap();
    let store = tmp.path().join("store");
    let run = |file: &Path| {
        let out = bocb(&[
            "run",
            file.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    std::fs::write(tmp.path().join("fail"), "").unwrap();
    run(&failing);
    std::fs::remove_file(tmp.path().join("fail")).unwrap();
    // External trials measure no throughput, so none is shown.
    let log = run(&finishing);
    assert_eq!(log.matches(": 60.50%\n").count(), 2, "{log}");
    assert!(!log.contains("images/s"), "{log}");

    let mut service = start_service(&store, &["--workers", "cpu=1"]);
    let out = cli(&store, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<(&str, &str, &serde_json::Value)> = statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
                &s["trials"],
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("ok", "idle", &serde_json::json!({ "done": 2 })),
            ("ran", "idle", &serde_json::json!({ "failed": 2 })),
        ]
    );
    let out = cli(&store, &["status"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains("idle") && l.contains("2 done")),
        "{table}"
    );
    assert_eq!(service_trials(&store, "ok").len(), 2);
    let out = cli(&store, &["stop", "ok"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Resuming retries the failed trials, in the directory of the file.
    let out = cli(&store, &["resume", "ran"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || experiment_state(&store, "ran") == "done");
    let trials = service_trials(&store, "ran");
    assert_eq!(trials.len(), 2);
    assert!(
        trials.iter().all(|t| done_with_all_epochs_of(t, 2)),
        "{trials:?}"
    );
    assert_eq!(experiment_state(&store, "ok"), "idle");
    kill(service);
}

/// Every read command, each as (arguments, whether it succeeds).
const READS: &[(&[&str], bool)] = &[
    (&["report"], true),
    (&["report", "--format", "md"], true),
    (&["report", "--format", "json"], true),
    (&["report", "--format", "csv"], true),
    (&["report", "--format", "html"], true),
    (
        &["report", "--experiment", "ran", "--failure-rule", "tukey"],
        true,
    ),
    (&["report", "--experiment", "ran", "--gamma", "1"], true),
    (&["report", "--experiment", "nope"], false),
    (&["export", "--experiment", "ran"], true),
    (&["export", "--experiment", "ran", "--format", "json"], true),
    (&["export", "--experiment", "ran", "--format", "csv"], true),
    (
        &["export", "--experiment", "ran", "--as", "timm-args"],
        true,
    ),
    (
        &["export", "--experiment", "ran", "--optimizer", "adamw"],
        true,
    ),
    (&["export", "--experiment", "ran", "--trials"], true),
    (&["export", "--experiment", "nope"], false),
    (&["patterns", "--experiment", "ran"], false),
    (&["trials", "ran"], true),
    (&["trials", "ran", "--json"], true),
];

#[test]
fn read_commands_work_while_serving_and_print_what_they_print_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = setup(
        tmp.path(),
        &RUN_EXPERIMENT.replace("[sgd_m]", "[sgd_m, adamw]"),
    );
    std::fs::write(tmp.path().join("report.sh"), REPORTING_SCRIPT).unwrap();
    let store = tmp.path().join("store");
    let out = cli(&store, &["run", experiment.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let service = start_service(&store, &["--workers", "none"]);
    let served: Vec<Output> = READS.iter().map(|(args, _)| cli(&store, args)).collect();
    // A store locked by something that wrote no URL: the lock is the error.
    let url = std::fs::read(store.join("service-url")).unwrap();
    std::fs::remove_file(store.join("service-url")).unwrap();
    let locked = cli(&store, &["report"]);
    // A URL where no service answers: the lock, and the silence.
    std::fs::write(store.join("service-url"), "http://127.0.0.1:1\n").unwrap();
    let silent = cli(&store, &["export", "--experiment", "ran"]);
    std::fs::write(store.join("service-url"), url).unwrap();
    kill(service);
    assert!(!locked.status.success());
    assert!(stderr(&locked).contains("is locked"), "{}", stderr(&locked));
    assert!(!silent.status.success());
    assert!(
        stderr(&silent).contains("is locked") && stderr(&silent).contains("did not answer"),
        "{}",
        stderr(&silent)
    );

    for ((args, succeeds), served) in READS.iter().zip(&served) {
        let local = cli(&store, args);
        assert_eq!(
            served.status.success(),
            *succeeds,
            "{args:?}: {}",
            stderr(served)
        );
        assert_eq!(
            local.status.success(),
            *succeeds,
            "{args:?}: {}",
            stderr(&local)
        );
        assert_eq!(
            String::from_utf8_lossy(&served.stdout),
            String::from_utf8_lossy(&local.stdout),
            "{args:?}: the same bytes through the service and from the store"
        );
        assert!(
            stderr(served).contains("reading through its API"),
            "{args:?}: {}",
            stderr(served)
        );
        assert!(!stderr(&local).contains("through its API"), "{args:?}");
        // Errors read the same both ways, after the one line about the API.
        let served_error = stderr(served);
        let served_error = served_error.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(served_error, stderr(&local).trim_end(), "{args:?}");
    }
    let table = String::from_utf8_lossy(&served[0].stdout).into_owned();
    assert!(
        table.contains("resnet18_cifar") && table.contains("adamw"),
        "{table}"
    );
    let html = String::from_utf8_lossy(&served[4].stdout).into_owned();
    assert!(
        html.starts_with("<!DOCTYPE html>"),
        "{}",
        &html[..80.min(html.len())]
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as
/// `cert.pem` and `key.pem` in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn an_https_service_serves_workers_and_reads_and_refuses_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let experiment = setup(tmp.path(), RUN_EXPERIMENT);
    std::fs::write(tmp.path().join("report.sh"), REPORTING_SCRIPT).unwrap();
    let (cert, key) = self_signed(tmp.path());
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());

    // A certificate that is not there is named, before anything is made.
    let missing = tmp.path().join("missing.pem");
    let refused = tmp.path().join("refused");
    let out = bocb(&[
        "serve",
        "--store",
        refused.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "none",
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        key_arg,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missing.pem") && stderr(&out).contains("--tls-cert"),
        "{}",
        stderr(&out)
    );
    // A key in place of the certificate, likewise.
    let out = bocb(&[
        "serve",
        "--store",
        refused.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        key_arg,
        "--tls-key",
        key_arg,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no PEM certificate in"),
        "{}",
        stderr(&out)
    );
    assert!(!refused.exists(), "nothing is created before the bind");

    let store = tmp.path().join("store");
    let mut service = start_service(
        &store,
        &[
            "--workers",
            "cpu=1",
            "--tls-cert",
            cert_arg,
            "--tls-key",
            key_arg,
        ],
    );
    let url = std::fs::read_to_string(store.join("service-url")).unwrap();
    let url = url.trim();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(
        std::fs::read(store.join("service-cert.pem")).unwrap(),
        std::fs::read(&cert).unwrap(),
        "clients on this machine trust the service's copy"
    );

    // A client that connects and says nothing holds up no other (the
    // handshake of each connection is bounded).
    let _silent = TcpStream::connect(url.trim_start_matches("https://")).unwrap();
    let out = cli(&store, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The local worker trains through HTTPS; the CLI submits and reads.
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || experiment_state(&store, "ran") == "done");
    let trials = service_trials(&store, "ran");
    assert_eq!(trials.len(), 2);
    assert!(
        trials.iter().all(|t| done_with_all_epochs_of(t, 2)),
        "{trials:?}"
    );
    let report = cli(&store, &["report", "--format", "csv"]);
    assert!(report.status.success(), "{}", stderr(&report));
    assert!(
        stderr(&report).contains(&format!("service at {url}")),
        "{}",
        stderr(&report)
    );

    // Elsewhere (no store at hand), the certificate is given with --ca.
    let elsewhere = tmp.path().join("elsewhere");
    let token = std::fs::read_to_string(store.join("service-token")).unwrap();
    let remote = |extra: &[&str]| {
        let mut args = vec!["status", "--server", url, "--token", token.trim()];
        args.extend(extra);
        args.extend(["--store", elsewhere.to_str().unwrap()]);
        bocb(&args)
    };
    let out = remote(&["--ca", cert_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca PEM"), "{}", stderr(&out));

    // A plain-HTTP client is refused, and told why.
    let plain = url.replace("https://", "http://");
    let out = cli(&store, &["status", "--server", &plain]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("speaks HTTPS only"),
        "{}",
        stderr(&out)
    );
    assert!(
        service.0.try_wait().unwrap().is_none(),
        "the service lives on"
    );
    kill(service);

    // Locally, after the service: the same report.
    let local = cli(&store, &["report", "--format", "csv"]);
    assert!(local.status.success(), "{}", stderr(&local));
    assert_eq!(local.stdout, report.stdout);
}

#[test]
fn with_tls_the_service_may_listen_beyond_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(tmp.path());
    let store = tmp.path().join("store");
    let url_file = store.join("service-url");
    let child = Command::new(bocb_binary())
        .args(["serve", "--store", store.to_str().unwrap()])
        .args(["--listen", "0.0.0.0:0", "--workers", "none"])
        .args(["--tls-cert", cert.to_str().unwrap()])
        .args(["--tls-key", key.to_str().unwrap()])
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed when dropped, should the test fail.
    let mut service = Service(child);
    wait_for("bocb serve --listen 0.0.0.0:0 to start", || {
        assert!(service.0.try_wait().unwrap().is_none(), "bocb serve exited");
        url_file.exists()
    });
    let url = std::fs::read_to_string(&url_file).unwrap();
    assert!(url.starts_with("https://0.0.0.0:"), "{url}");
    // The URL names no host the certificate lists; the store's copy of the
    // certificate is what a client on this machine trusts.
    let out = cli(&store, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    kill(service);
}

const RESUMABLE: &str = "\
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

/// Writes the resumable experiment and its data into `dir`; returns the
/// file and the trial an unbroken `bocb run` of it records.
fn resumable_and_unbroken(dir: &Path) -> (PathBuf, TrialRecord) {
    synth(&dir.join("data"), 512, 64, 5);
    let experiment = dir.join("exp.yaml");
    std::fs::write(&experiment, RESUMABLE).unwrap();
    let unbroken = dir.join("unbroken");
    let out = cli(&unbroken, &["run", experiment.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let whole = Store::open(&unbroken).unwrap().trials("resumable").unwrap()[0].clone();
    (experiment, whole)
}

/// The one trial's checkpoint position, once there is one.
fn checkpoint_position(store: &Path) -> Option<serde_json::Value> {
    let dir = store.join("checkpoints").join("resumable");
    let trial = std::fs::read_dir(dir).ok()?.next()?.ok()?.path();
    let text = std::fs::read_to_string(trial.join("checkpoint.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A worker stopped by SIGTERM saves its trial's checkpoint and exits; the
/// service gives the trial to the worker started in its place, which
/// continues it: the epochs equal those of an unbroken `bocb run`, and
/// those before the checkpoint are not trained again.
#[test]
fn a_worker_stopped_by_sigterm_hands_its_trial_on_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (experiment, whole) = resumable_and_unbroken(tmp.path());

    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "cpu=1", "--heartbeat-timeout", "3"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || checkpoint_position(&store).is_some());
    let pid = worker_pids(&store)[0];
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until(&mut service, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
    });
    let saved_epochs = checkpoint_position(&store).unwrap()["epochs_done"]
        .as_u64()
        .unwrap() as usize;
    let before = service_trials(&store, "resumable")[0].epochs.clone();
    assert!((1..5).contains(&saved_epochs) && before.len() >= saved_epochs);

    wait_until(&mut service, || {
        experiment_state(&store, "resumable") == "done"
    });
    let trial = service_trials(&store, "resumable")[0].clone();
    let log = cli(&store, &["logs", &trial.id]);
    kill(service);
    assert!(done_with_all_epochs_of(&trial, 5), "{trial:?}");
    assert_eq!(trial.epochs[..saved_epochs], before[..saved_epochs]);
    let numbers = |t: &TrialRecord| {
        t.epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss, e.test_loss, e.test_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&trial), numbers(&whole));
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(log.contains("trial re-queued"), "{log}");
    assert!(
        !store.join("checkpoints").join("resumable").exists(),
        "an ended trial's checkpoint is removed"
    );
}

/// Epochs the local workers trained with bocb's trainer, from the line
/// each logs per epoch in its own log (kept across restarts).
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

/// `bocb stop` drops the running trial, which saves its checkpoint first;
/// `bocb resume` continues it from there: the epochs equal those of an
/// unbroken run, and at most the epoch in flight is trained again.
#[test]
fn a_stopped_experiment_resumes_its_trials_from_their_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let (experiment, whole) = resumable_and_unbroken(tmp.path());

    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "cpu=1", "--heartbeat-timeout", "3"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || {
        service_trials(&store, "resumable")
            .first()
            .is_some_and(|t| t.epochs.len() >= 2)
    });
    let out = cli(&store, &["stop", "resumable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || {
        experiment_state(&store, "resumable") == "stopped"
    });
    // The dropped trial saves its checkpoint when it hears of the stop;
    // when it hears through a refused epoch report instead, that epoch is
    // not recorded, so it keeps the checkpoint before it.
    wait_until(&mut service, || {
        std::fs::read_to_string(store.join("logs/workers/local-cpu-0.log")).is_ok_and(|log| {
            log.contains("checkpoint saved") || log.contains("epoch report of attempt")
        })
    });
    let saved = checkpoint_position(&store).expect("the stopped trial's checkpoint stays");
    let saved_epochs = saved["epochs_done"].as_u64().unwrap() as usize;
    assert!(saved_epochs >= 2, "{saved}");
    let stopped = service_trials(&store, "resumable")[0].clone();
    assert_eq!(
        stopped.status,
        TrialStatus::Running,
        "not ended: {stopped:?}"
    );

    let out = cli(&store, &["resume", "resumable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(&mut service, || {
        experiment_state(&store, "resumable") == "done"
    });
    let trial = service_trials(&store, "resumable")[0].clone();
    kill(service);
    assert!(done_with_all_epochs_of(&trial, 5), "{trial:?}");
    assert_eq!(trial.epochs[..saved_epochs], stopped.epochs[..saved_epochs]);
    let numbers = |t: &TrialRecord| {
        t.epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss, e.test_loss, e.test_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&trial), numbers(&whole));
    let trained = trainer_epochs(&store);
    assert!((5..=6).contains(&trained), "{trained} epochs trained for 5");
}

/// A `bocb worker` started by hand, as on another machine: its own working
/// and checkpoint directory `home`, logging to `home/worker.log`; killed
/// when dropped.
struct RemoteWorker {
    child: std::process::Child,
    home: PathBuf,
}

impl RemoteWorker {
    fn start(store: &Path, home: &Path, name: &str) -> Self {
        std::fs::create_dir_all(home).unwrap();
        let url = std::fs::read_to_string(store.join("service-url")).unwrap();
        let token = std::fs::read_to_string(store.join("service-token")).unwrap();
        let log = std::fs::File::create(home.join("worker.log")).unwrap();
        let child = Command::new(bocb_binary())
            .args(["worker", "--server", url.trim(), "--device", "cpu"])
            .args(["--name", name, "--checkpoints", "checkpoints"])
            .current_dir(home)
            .env("BOCB_TOKEN", token.trim())
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        RemoteWorker {
            child,
            home: home.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("worker.log")).unwrap_or_default()
    }

    /// Sends SIGTERM, as a preempted job's worker hears, and waits for the exit.
    fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        wait_for("the worker to exit", || {
            self.child.try_wait().unwrap().is_some()
        });
    }

    /// The epochs it trained, from the line it logs per epoch.
    fn epochs_trained(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("epoch ") && l.contains(": train loss "))
            .count()
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Workers that share no directory with the service (nor each other): the
/// first sends its checkpoints to the service, is stopped by SIGTERM
/// mid-trial after sending the one it saves then, and the second fetches
/// that one and continues: the epochs equal those of an unbroken run, and
/// at most the epoch in flight is trained again.
#[test]
fn a_trial_continues_on_another_worker_from_the_checkpoint_sent_to_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let (experiment, whole) = resumable_and_unbroken(tmp.path());

    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "none", "--heartbeat-timeout", "3"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut first = RemoteWorker::start(&store, &tmp.path().join("first"), "first");
    // Only an upload puts a checkpoint in the service's store.
    wait_until(&mut service, || checkpoint_position(&store).is_some());
    let own = first.home.join("checkpoints").join("resumable");
    assert!(own.exists(), "the first worker trains in its own directory");
    first.terminate();
    let log = first.log();
    assert!(!log.contains("cannot send"), "{log}");
    assert!(
        !own.exists(),
        "the first worker leaves no checkpoint behind"
    );
    let saved = checkpoint_position(&store).unwrap();
    let saved_epochs = saved["epochs_done"].as_u64().unwrap() as usize;
    let before = service_trials(&store, "resumable")[0].epochs.clone();
    assert!((1..5).contains(&saved_epochs) && before.len() >= saved_epochs);

    let second = RemoteWorker::start(&store, &tmp.path().join("second"), "second");
    wait_until(&mut service, || {
        experiment_state(&store, "resumable") == "done"
    });
    let trial = service_trials(&store, "resumable")[0].clone();
    let trial_log = cli(&store, &["logs", &trial.id]);
    kill(service);
    assert!(done_with_all_epochs_of(&trial, 5), "{trial:?}");
    let trial_log = String::from_utf8_lossy(&trial_log.stdout).into_owned();
    assert_eq!(
        trial.epochs[..saved_epochs],
        before[..saved_epochs],
        "{trial_log}\nsecond worker:\n{}",
        second.log()
    );
    let numbers = |t: &TrialRecord| {
        t.epochs
            .iter()
            .map(|e| (e.epoch, e.train_loss, e.test_loss, e.test_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&trial), numbers(&whole));
    assert!(
        trial_log.contains("checkpoint stored")
            && trial_log.contains("fetched the trial's checkpoint from the service"),
        "{trial_log}"
    );
    // The second continued where the checkpoint stands.
    assert_eq!(
        second.epochs_trained(),
        5 - saved_epochs,
        "{}",
        second.log()
    );
    let trained = first.epochs_trained() + second.epochs_trained();
    assert!((5..=6).contains(&trained), "{trained} epochs trained for 5");
    assert!(
        !store.join("checkpoints").join("resumable").exists()
            && !second.home.join("checkpoints").join("resumable").exists(),
        "an ended trial's checkpoints are removed"
    );
}

/// A program that keeps its own checkpoint: it saves `epoch` before each
/// report, waits at epoch 3 until `release` exists in its directory, and
/// on SIGTERM saves a `term` mark as it ends.
const CHECKPOINTING_PROGRAM: &str = r#"dir="$BOCB_CHECKPOINT_DIR"
mkdir -p "$dir"
trap 'echo saved-on-term > "$dir/term.tmp" && mv "$dir/term.tmp" "$dir/term"; exit 0' TERM
e=1
if [ -f "$dir/epoch" ]; then
  e=$(( $(cat "$dir/epoch") + 1 ))
  echo "resuming after epoch $(cat "$dir/epoch"), term mark: $(cat "$dir/term" 2>/dev/null)"
fi
while [ $e -le 4 ]; do
  while [ $e -eq 3 ] && [ ! -f release ]; do sleep 0.2; done
  echo $e > "$dir/epoch.tmp" && mv "$dir/epoch.tmp" "$dir/epoch"
  echo "BOCB_REPORT {\"epoch\": $e, \"accuracy\": $(( 10 * e ))}"
  e=$(( e + 1 ))
done
"#;

/// An external trial's checkpoint goes through the service too: the
/// program's directory is sent after each reported epoch it changed, and
/// once more after the program ends on the worker's SIGTERM; a worker in
/// another directory fetches it and the program continues from it.
#[test]
fn an_external_trial_continues_on_another_worker_from_its_program_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    std::fs::write(tmp.path().join("train.sh"), CHECKPOINTING_PROGRAM).unwrap();
    let experiment = tmp.path().join("ext.yaml");
    std::fs::write(
        &experiment,
        "name: ext\ndataset: { format: cifar100-bin, path: data }\nbackbones: [resnet18_cifar]\noptimizers: [sgd_m]\nepochs: 4\nbudget: { trials: 1 }\ntrial: { command: sh train.sh }\n",
    )
    .unwrap();
    let store = tmp.path().join("store");
    let mut service = start_service(&store, &["--workers", "none", "--heartbeat-timeout", "3"]);
    let out = cli(&store, &["submit", experiment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = |file: &str| {
        let dir = store.join("checkpoints").join("ext");
        let trial = std::fs::read_dir(dir).ok()?.next()?.ok()?.path();
        std::fs::read_to_string(trial.join(file)).ok()
    };
    let mut first = RemoteWorker::start(&store, &tmp.path().join("first"), "first");
    // Only an upload puts a checkpoint in the service's store.
    wait_until(&mut service, || stored("epoch").as_deref() == Some("2\n"));
    assert!(stored("term").is_none());
    first.terminate();
    assert!(
        first.child.try_wait().unwrap().unwrap().success(),
        "{}",
        first.log()
    );
    let log = first.log();
    assert!(!log.contains("cannot send"), "{log}");
    assert_eq!(
        stored("term").as_deref(),
        Some("saved-on-term\n"),
        "the checkpoint the program saved as it ended reached the service: {log}"
    );

    std::fs::write(tmp.path().join("release"), "").unwrap();
    let second = RemoteWorker::start(&store, &tmp.path().join("second"), "second");
    wait_until(&mut service, || experiment_state(&store, "ext") == "done");
    let trial = service_trials(&store, "ext")[0].clone();
    kill(service);
    let accuracies: Vec<(u32, f64)> = trial
        .epochs
        .iter()
        .map(|e| (e.epoch, e.test_accuracy))
        .collect();
    assert_eq!(accuracies, [(1, 10.0), (2, 20.0), (3, 30.0), (4, 40.0)]);
    assert!(
        second
            .log()
            .contains("resuming after epoch 2, term mark: saved-on-term"),
        "{}",
        second.log()
    );
    assert!(
        !store.join("checkpoints").join("ext").exists()
            && !second.home.join("checkpoints").join("ext").exists(),
        "an ended trial's checkpoints are removed"
    );
}

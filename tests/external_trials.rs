//! End-to-end: external trials that cannot lie or hang, and what the
//! service exposes: a bare experiment file name, no dataset loaded for
//! programs, 8 MiB of output under the service, `bocb stop` and time limits
//! ending a silent program's whole process group, no token in its
//! environment, and `bocb serve` refusing to expose plain HTTP or to create
//! a store before its port is bound.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bocb_store::{TrialRecord, TrialStatus};
use common::{bocb, bocb_binary, wait_for, PATIENCE};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether process `pid` (as a pid file holds it) is gone or a zombie.
fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map_or(true, |stat| stat.contains(") Z "))
}

/// Reports `epochs` epochs after 8 MiB of output in 1 KiB lines and the
/// program's environment.
const LOUD: &str = r#"head -c 8388608 /dev/zero | tr '\0' y | fold -w 1024
echo
env
echo 'BOCB_REPORT {"epoch": 1, "accuracy": 40}'
echo 'BOCB_REPORT {"epoch": 2, "accuracy": 60.5}'
"#;

/// Reports one epoch, starts a helper, writes both pids to `$1-*.pid`,
/// then waits in silence.
const SILENT: &str = r#"sleep 1000 &
echo $! > "$1-helper.pid"
echo $$ > "$1-main.pid"
echo 'BOCB_REPORT {"epoch": 1, "accuracy": 10}'
wait
"#;

fn experiment(name: &str, trial: &str) -> String {
    format!(
        "name: {name}\ndataset: {{ format: cifar100-bin, path: data }}\nbackbones: [resnet18_cifar]\noptimizers: [sgd_m]\nepochs: 2\nbudget: {{ trials: 1 }}\ntrial: {trial}\n"
    )
}

/// A directory with the scripts, an empty dataset directory (programs
/// bring their own data) and the experiment files.
fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("loud.sh"), LOUD).unwrap();
    std::fs::write(dir.join("silent.sh"), SILENT).unwrap();
}

#[test]
fn bocb_run_takes_a_bare_file_name_and_loads_no_dataset_for_programs() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    std::fs::write(
        tmp.path().join("exp.yaml"),
        experiment("bare", r#"{ command: "sh loud.sh" }"#),
    )
    .unwrap();
    let out = Command::new(bocb_binary())
        .args(["run", "exp.yaml", "--store", "store", "--quiet"])
        .current_dir(tmp.path())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = bocb_store::Store::open(tmp.path().join("store")).unwrap();
    let trials = store.trials("bare").unwrap();
    assert_eq!(trials.len(), 1);
    assert_eq!(trials[0].status, TrialStatus::Done, "{:?}", trials[0]);
    assert_eq!(trials[0].final_accuracy, Some(60.5));
}

#[test]
fn interrupting_bocb_run_ends_the_programs_group_and_records_no_end() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    std::fs::write(
        tmp.path().join("exp.yaml"),
        experiment("cut", r#"{ command: "sh silent.sh cut" }"#),
    )
    .unwrap();
    let mut run = Command::new(bocb_binary())
        .args(["run", "exp.yaml", "--store", "store", "--quiet"])
        .current_dir(tmp.path())
        .env_remove("LD_LIBRARY_PATH")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = |which: &str| tmp.path().join(format!("cut-{which}.pid"));
    wait_for("the program's pids", || {
        pid_file("helper").exists() && pid_file("main").exists()
    });
    // As Ctrl-C would, which the program in its own group does not hear.
    let kill = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for("bocb run to end", || run.try_wait().unwrap().is_some());
    let status = run.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(2),
        "bocb dies of the signal"
    );
    for which in ["helper", "main"] {
        let pid = std::fs::read_to_string(pid_file(which)).unwrap();
        assert!(gone(&pid), "{which} {pid} outlived bocb");
    }
    // Left running in the store: the next run trains it again.
    let store = bocb_store::Store::open(tmp.path().join("store")).unwrap();
    let trials = store.trials("cut").unwrap();
    assert_eq!(trials[0].status, TrialStatus::Running, "{:?}", trials[0]);
}

/// A running `bocb serve` with local workers on 127.0.0.1, killed when dropped.
struct Service {
    child: Child,
    store: std::path::PathBuf,
}

impl Service {
    fn start(store: &Path) -> Service {
        std::fs::create_dir_all(store).unwrap();
        let log = std::fs::File::create(store.join("serve-test.log")).unwrap();
        let child = Command::new(bocb_binary())
            .args(["serve", "--store", store.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--workers", "cpu=1"])
            .args(["--heartbeat-timeout", "8"])
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut service = Service {
            child,
            store: store.to_path_buf(),
        };
        wait_for("the service's URL", || {
            assert!(
                service.child.try_wait().unwrap().is_none(),
                "bocb serve exited"
            );
            store.join("service-url").exists()
        });
        service
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--store", self.store.to_str().unwrap()]);
        let out = bocb(&all);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    fn state(&self, name: &str) -> String {
        let out = self.cli(&["status", name, "--json"]);
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        statuses[0]["state"].as_str().unwrap().to_string()
    }

    fn trials(&self, name: &str) -> Vec<TrialRecord> {
        serde_json::from_slice(&self.cli(&["trials", name, "--json"]).stdout).unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn under_the_service_programs_write_megabytes_time_out_and_end_on_stop() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let service = Service::start(&tmp.path().join("store"));
    let token = std::fs::read_to_string(tmp.path().join("store/service-token")).unwrap();
    let submit = |name: &str, trial: &str| {
        let file = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&file, experiment(name, trial)).unwrap();
        service.cli(&["submit", file.to_str().unwrap()]);
    };

    // 8 MiB of output: the trial ends done, with all of it in its log and
    // no token in the program's environment.
    submit("loud", r#"{ command: "sh loud.sh" }"#);
    wait_for("`loud` to finish", || service.state("loud") == "done");
    let trials = service.trials("loud");
    assert_eq!(trials[0].status, TrialStatus::Done, "{:?}", trials[0]);
    assert_eq!(trials[0].final_accuracy, Some(60.5));
    let log = String::from_utf8_lossy(&service.cli(&["logs", &trials[0].id]).stdout).into_owned();
    let full_lines = log
        .lines()
        .filter(|l| l.len() == 1024 && l.bytes().all(|b| b == b'y'));
    assert_eq!(
        full_lines.count(),
        8192,
        "every 1 KiB line of 8 MiB is in the log"
    );
    assert!(log.contains("BOCB_PARAMS="), "the environment was printed");
    assert!(!log.contains("BOCB_TOKEN"));
    assert!(!log.contains(token.trim()));

    // A silent program past its time limit fails, and its group is ended.
    submit("late", r#"{ command: "sh silent.sh late", timeout: 2s }"#);
    wait_for("`late` to finish", || service.state("late") == "done");
    let trials = service.trials("late");
    assert_eq!(trials[0].status, TrialStatus::Failed, "{:?}", trials[0]);
    let error = trials[0].error.as_deref().unwrap();
    assert!(
        error.contains("timed out") && error.contains("time limit of 2s"),
        "{error}"
    );
    for pid in ["late-helper.pid", "late-main.pid"] {
        let pid = std::fs::read_to_string(tmp.path().join(pid)).unwrap();
        assert!(gone(&pid), "{pid} outlived its trial");
    }

    // `bocb stop` ends a silent program and its helper.
    submit("hang", r#"{ command: "sh silent.sh hang" }"#);
    let pid_file = |which: &str| tmp.path().join(format!("hang-{which}.pid"));
    wait_for("the program's pids", || {
        pid_file("helper").exists() && pid_file("main").exists()
    });
    let pids: Vec<String> = ["helper", "main"]
        .map(|which| std::fs::read_to_string(pid_file(which)).unwrap())
        .into();
    assert!(!gone(&pids[1]), "the program waits until it is ended");
    service.cli(&["stop", "hang"]);
    wait_for("the stopped program's group to end", || {
        pids.iter().all(|pid| gone(pid))
    });
    assert_eq!(service.state("hang"), "stopped");
}

#[test]
fn serve_refuses_plain_http_beyond_loopback_and_creates_nothing_before_binding() {
    let tmp = tempfile::tempdir().unwrap();
    // `bocb serve` that exits (refusing), else is killed and fails the test.
    let serve = |store: &str, listen: &str| {
        let mut child = Command::new(bocb_binary())
            .args(["serve", "--store", tmp.path().join(store).to_str().unwrap()])
            .args(["--listen", listen, "--workers", "none"])
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bocb serve --listen {listen} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    };
    let out = serve("exposed", "0.0.0.0:0");
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains("plain HTTP")
            && error.contains("run any command on every worker")
            && error.contains("--insecure-listen"),
        "{error}"
    );
    assert!(!tmp.path().join("exposed").exists());

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let out = serve("busy", &address);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
    assert!(
        !tmp.path().join("busy").exists(),
        "no store before the bind"
    );
}

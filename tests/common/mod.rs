//! What the end-to-end tests share: running the release `bocb` binary that
//! `make test` builds first, with no LD_LIBRARY_PATH so its rpath to
//! libtorch is exercised too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any wait in these tests may take before the test fails
/// instead of hanging CI.
#[allow(dead_code)] // not every test file waits
pub const PATIENCE: Duration = Duration::from_secs(180);

/// Polls `done` every 100 ms until it holds; panics after [`PATIENCE`],
/// naming `what`.
#[allow(dead_code)] // not every test file waits
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The release `bocb` binary next to the test executable.
pub fn bocb_binary() -> PathBuf {
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("bocb");
    assert!(
        bin.exists(),
        "{} is missing; build it first with `cargo build --release -p bocb-tuner --bin bocb` (`make test` does)",
        bin.display()
    );
    bin
}

/// Runs `bocb ARGS`.
pub fn bocb(args: &[&str]) -> Output {
    Command::new(bocb_binary())
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("bocb runs")
}

/// Writes a synthetic 4-class dataset in CIFAR-100 binary format to `dir`
/// (`bocb data synth`), `train` and `test` images, from `seed`.
#[allow(dead_code)] // the analysis tests import tables and make no data
pub fn synth(dir: &Path, train: usize, test: usize, seed: u64) {
    synth_as(dir, "cifar100-bin", train, test, seed);
}

/// Writes a synthetic 4-class dataset in `format` (a `bocb data synth
/// --format` name) to `dir`, `train` and `test` images, from `seed`.
#[allow(dead_code)] // the analysis tests import tables and make no data
pub fn synth_as(dir: &Path, format: &str, train: usize, test: usize, seed: u64) {
    let (train, test, seed) = (train.to_string(), test.to_string(), seed.to_string());
    let out = bocb(&[
        "data",
        "synth",
        "--out",
        dir.to_str().expect("UTF-8 path"),
        "--format",
        format,
        "--classes",
        "4",
        "--train",
        &train,
        "--test",
        &test,
        "--seed",
        &seed,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[allow(dead_code)] // not every test file serves
/// A running `bocb serve`, killed with SIGKILL when dropped (a failing
/// test leaves no service behind).
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bocb serve` on a free port with `extra` arguments, logging to
/// STORE/serve-test.log; returns once it has written its URL.
#[allow(dead_code)] // not every test file serves
pub fn start_service(store: &Path, extra: &[&str]) -> Service {
    start_service_with_env(store, extra, &[])
}

/// [`start_service`] with `env` set in the service's environment.
#[allow(dead_code)]
pub fn start_service_with_env(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Service {
    let url_file = store.join("service-url");
    let _ = std::fs::remove_file(&url_file);
    std::fs::create_dir_all(store).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(store.join("serve-test.log"))
        .unwrap();
    let mut child = Command::new(bocb_binary())
        .args(["serve", "--store", store.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("bocb serve starts");
    wait_for("the service's URL file", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "bocb serve exited: {}",
            std::fs::read_to_string(store.join("serve-test.log")).unwrap_or_default()
        );
        url_file.exists()
    });
    Service(child)
}

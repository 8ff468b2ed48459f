//! `bocb bench service`: how many trial reports per second the service
//! records, with external trials that print their reports as fast as they
//! can so the service, not training, is what is measured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::Client;
use super::http::Submission;
use super::{io_error, ExperimentState, ExperimentStatus, ServiceError, TOKEN_FILE, URL_FILE};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ServiceBenchConfig {
    /// Local CPU workers of the service.
    pub workers: usize,
    /// Backbone x optimizer pairs, each searching the whole 5 x 5 grid.
    pub pairs: usize,
    /// Reports each trial prints.
    pub epochs: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceBenchReport {
    pub workers: usize,
    pub trials: usize,
    pub reports: usize,
    pub seconds: f64,
    pub reports_per_second: f64,
    pub trials_per_second: f64,
}

const BACKBONES: [&str; 4] = [
    "resnet18_cifar",
    "vit_tiny_cifar",
    "resnet50_cifar",
    "deit_s",
];
const OPTIMIZERS: [&str; 4] = ["sgd_m", "adamw", "adam", "lamb"];

/// Kills the service it holds when dropped, and removes its directory.
struct Scratch {
    dir: PathBuf,
    service: Option<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `bocb serve` with `config.workers` CPU workers in a scratch store,
/// submits an experiment of external trials, and times it to the end.
pub fn bench_service(config: &ServiceBenchConfig) -> Result<ServiceBenchReport, ServiceError> {
    let max_pairs = BACKBONES.len() * OPTIMIZERS.len();
    if config.pairs == 0 || config.pairs > max_pairs {
        return Err(ServiceError::BadRequest(format!(
            "--pairs must be between 1 and {max_pairs}, got {}",
            config.pairs
        )));
    }
    let mut scratch = Scratch {
        dir: std::env::temp_dir().join(format!("bocb-bench-service-{}", std::process::id())),
        service: None,
    };
    let dir = scratch.dir.clone();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(io_error("cannot create", &data))?;
    let optimizers = config.pairs.div_ceil(BACKBONES.len()).min(OPTIMIZERS.len());
    let backbones = config.pairs.div_ceil(optimizers);
    let list = |names: &[&str]| names.join(", ");
    let script = dir.join("report.sh");
    let body = format!(
        "for e in $(seq 1 {}); do echo \"BOCB_REPORT {{\\\"epoch\\\": $e, \\\"accuracy\\\": 50}}\"; done\n",
        config.epochs
    );
    std::fs::write(&script, body).map_err(io_error("cannot write", &script))?;
    let yaml = format!(
        "name: bench-service\n\
         dataset: {{ format: cifar100-bin, path: data }}\n\
         backbones: [{}]\n\
         optimizers: [{}]\n\
         epochs: {}\n\
         trial: {{ command: sh report.sh }}\n",
        list(&BACKBONES[..backbones]),
        list(&OPTIMIZERS[..optimizers]),
        config.epochs,
    );
    let exe = std::env::current_exe().map_err(io_error("cannot find", Path::new("bocb")))?;
    let store = dir.join("store");
    scratch.service = Some(
        Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--store")
            .arg(&store)
            .args(["--workers", &format!("cpu={}", config.workers)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("cannot start", Path::new("bocb serve")))?,
    );
    let url_path = store.join(URL_FILE);
    while !url_path.exists() {
        let service = scratch.service.as_mut().expect("started above");
        if let Ok(Some(status)) = service.try_wait() {
            return Err(ServiceError::BadRequest(format!(
                "bocb serve exited at start ({status})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let read =
        |path: PathBuf| std::fs::read_to_string(&path).map_err(io_error("cannot read", &path));
    let client = Client::new(&read(url_path)?, &read(store.join(TOKEN_FILE))?, None)
        .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    let submission = Submission {
        yaml,
        base: dir.clone(),
        origin: "bench-service.yaml".to_string(),
    };
    let started = Instant::now();
    client
        .post::<_, ExperimentStatus>("/api/experiments", &submission)
        .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    let status = loop {
        std::thread::sleep(Duration::from_millis(50));
        let status: ExperimentStatus = client
            .get("/api/experiments/bench-service")
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        match status.state {
            ExperimentState::Running => continue,
            ExperimentState::Done => break status,
            other => {
                return Err(ServiceError::BadRequest(format!(
                    "the benchmark experiment ended {other:?}: {}",
                    status.error.unwrap_or_default()
                )))
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let trials = status.trials.values().sum();
    Ok(ServiceBenchReport {
        workers: config.workers,
        trials,
        reports: status.epochs_recorded,
        seconds,
        reports_per_second: status.epochs_recorded as f64 / seconds,
        trials_per_second: trials as f64 / seconds,
    })
}

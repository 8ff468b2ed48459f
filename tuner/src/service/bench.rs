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
/// Starts `bocb serve` on `store` with `--workers workers` (kept in
/// `scratch`, so it ends with the bench) and connects once it wrote its URL.
fn start_service(
    scratch: &mut Scratch,
    store: &Path,
    workers: &str,
) -> Result<Client, ServiceError> {
    let exe = std::env::current_exe().map_err(io_error("cannot find", Path::new("bocb")))?;
    let url_path = store.join(URL_FILE);
    let _ = std::fs::remove_file(&url_path);
    let service = scratch.service.insert(
        Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", workers])
            .arg("--store")
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("cannot start", Path::new("bocb serve")))?,
    );
    while !url_path.exists() {
        if let Ok(Some(status)) = service.try_wait() {
            return Err(ServiceError::BadRequest(format!(
                "bocb serve exited at start ({status})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let read =
        |path: PathBuf| std::fs::read_to_string(&path).map_err(io_error("cannot read", &path));
    Client::new(&read(url_path)?, &read(store.join(TOKEN_FILE))?, None)
        .map_err(|e| ServiceError::BadRequest(e.to_string()))
}

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
    let store = dir.join("store");
    let client = start_service(&mut scratch, &store, &format!("cpu={}", config.workers))?;
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

/// What `bocb bench ui` measures.
#[derive(Debug, Clone)]
pub struct UiBenchConfig {
    /// Trials of the generated experiments: the service is measured on a
    /// store of each (the first is the small one memory is compared with).
    pub trials: Vec<usize>,
    /// Epochs recorded per trial.
    pub epochs: u32,
    /// Requests per view.
    pub requests: usize,
    /// A store to measure instead of generated ones (it is not changed).
    pub store: Option<PathBuf>,
}

/// One view's request times.
#[derive(Debug, Clone, Serialize)]
pub struct ViewTimes {
    pub view: String,
    /// The first request after the service started, before anything was
    /// derived and cached.
    pub cold_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// The goal of its 95th percentile.
    pub goal_ms: f64,
}

/// The views of one store.
#[derive(Debug, Clone, Serialize)]
pub struct UiBenchStore {
    pub trials: usize,
    pub epochs_recorded: usize,
    /// Bytes on disk.
    pub store_bytes: u64,
    pub views: Vec<ViewTimes>,
    /// The service's peak resident memory (VmHWM) once started, before any
    /// request: libtorch, the open store.
    pub start_rss_bytes: u64,
    /// Its peak after every request.
    pub peak_rss_bytes: u64,
    /// Its peak after then reading every trial's page and every pair's,
    /// so every epoch of the store: what bounds its memory as the history
    /// grows.
    pub peak_rss_after_every_epoch_bytes: u64,
    /// Seconds that reading took.
    pub every_epoch_s: f64,
}

/// Goals: the first screen of a view under 300 ms, a trial-table page
/// under 100 ms, at the 95th percentile.
const VIEW_GOAL_MS: f64 = 300.0;
const TABLE_GOAL_MS: f64 = 100.0;
/// Trials per generated pair: the 5 x 5 grid, 4 seeds each.
const BENCH_PAIR_TRIALS: usize = 100;
/// Trials written per store transaction while generating.
const GENERATE_CHUNK: usize = 250;

/// Generates a store per `config.trials` (or takes `config.store`), starts
/// `bocb serve` on it, and times every view of the web UI.
pub fn bench_ui(config: &UiBenchConfig) -> Result<Vec<UiBenchStore>, ServiceError> {
    if config.requests < 2 {
        return Err(ServiceError::BadRequest(
            "--requests must be at least 2 (the first is reported apart, as the cold one)".into(),
        ));
    }
    let scratch = Scratch {
        dir: std::env::temp_dir().join(format!("bocb-bench-ui-{}", std::process::id())),
        service: None,
    };
    let mut reports = Vec::new();
    match &config.store {
        Some(store) => {
            let name = first_experiment(store)?;
            reports.push(bench_store(store, &name, config.requests)?);
        }
        None => {
            for &trials in &config.trials {
                if trials < BENCH_PAIR_TRIALS {
                    return Err(ServiceError::BadRequest(format!(
                        "--trials {trials}: give at least {BENCH_PAIR_TRIALS} (one pair's grid of 4 seeds)"
                    )));
                }
                let store = scratch.dir.join(format!("store-{trials}"));
                eprintln!(
                    "generating {trials} trials x {} epochs in {}",
                    config.epochs,
                    store.display()
                );
                generate_store(&store, trials, config.epochs)?;
                reports.push(bench_store(&store, "bench-ui", config.requests)?);
                let _ = std::fs::remove_dir_all(&store);
            }
        }
    }
    Ok(reports)
}

/// The name of the experiment with the most trials in the store at `dir`.
fn first_experiment(dir: &Path) -> Result<String, ServiceError> {
    let store = bocb_store::Store::open(dir)?;
    let mut best: Option<(usize, String)> = None;
    for e in store.experiments()? {
        let n = store.trial_summaries(&e.name)?.len();
        if best.as_ref().is_none_or(|(m, _)| n > *m) {
            best = Some((n, e.name));
        }
    }
    best.map(|(_, name)| name).ok_or_else(|| {
        ServiceError::BadRequest(format!(
            "the store at {} holds no experiment",
            dir.display()
        ))
    })
}

/// Writes experiment `bench-ui`: pairs of 100 trials (the 5 x 5 grid, 4
/// seeds), a few diverged, stopped and failed, each with `epochs` epochs.
pub fn generate_store(dir: &Path, trials: usize, epochs: u32) -> Result<(), ServiceError> {
    use bocb_store::{EpochMetrics, ExperimentRecord, GridPos, TrialRecord, TrialStatus};
    let pairs = trials.div_ceil(BENCH_PAIR_TRIALS);
    let optimizers = (pairs as f64).sqrt().ceil() as usize;
    let backbones = pairs.div_ceil(optimizers);
    // Built-in names while they last, so that the report's work per pair
    // (search spaces, grids) runs as on a real store.
    let builtin_backbones: Vec<String> = bocb_search_spaces::builtin_backbones()
        .into_iter()
        .map(|b| b.name)
        .collect();
    let catalog = bocb_search_spaces::Catalog::builtin();
    let builtin_optimizers: Vec<&str> = catalog.optimizer_names().collect();
    let backbone = |b: usize| {
        builtin_backbones
            .get(b)
            .cloned()
            .unwrap_or_else(|| format!("backbone_{b:02}"))
    };
    let optimizer = |o: usize| {
        builtin_optimizers
            .get(o)
            .map_or_else(|| format!("optimizer_{o:02}"), |o| o.to_string())
    };
    let list =
        |n: usize, name: &dyn Fn(usize) -> String| (0..n).map(name).collect::<Vec<_>>().join(", ");
    let store = bocb_store::Store::open(dir)?;
    store.put_experiment(&ExperimentRecord {
        name: "bench-ui".into(),
        spec_yaml: format!(
            "name: bench-ui\ndataset: {{ format: cifar100-bin, path: data }}\nbackbones: [{}]\noptimizers: [{}]\nepochs: {epochs}\nbudget: {{ trials: 25 }}\nseeds: 4\n",
            list(backbones, &backbone),
            list(optimizers, &optimizer),
        ),
        created_unix_s: 1_700_000_000,
        updated_unix_s: 1_700_000_000,
        base_dir: None,
    })?;
    let mut chunk = Vec::with_capacity(GENERATE_CHUNK);
    for n in 0..trials {
        let pair = n / BENCH_PAIR_TRIALS;
        let (b, o) = (pair / optimizers, pair % optimizers);
        let k = n % BENCH_PAIR_TRIALS;
        let (i, j, seed) = ((k / 20) as u8, ((k / 4) % 5) as u8, (k % 4) as u64);
        let top = 50.0 + 0.3 * b as f64
            - 0.2 * o as f64
            - 3.0 * ((f64::from(i) - 2.0).powi(2) + (f64::from(j) - 2.0).powi(2)).sqrt()
            + 0.1 * seed as f64;
        let status = match (i, j, n % 97) {
            (4, 4, _) => TrialStatus::Diverged,
            (_, _, 13) => TrialStatus::Failed,
            (0, _, _) => TrialStatus::Stopped,
            _ => TrialStatus::Done,
        };
        let kept = match status {
            TrialStatus::Done => epochs,
            _ => epochs / 4,
        };
        let curve = (1..=kept)
            .map(|e| EpochMetrics {
                epoch: e,
                train_loss: 4.0 / f64::from(e),
                test_loss: 4.2 / f64::from(e),
                test_accuracy: top * (1.0 - (-5.0 * f64::from(e) / f64::from(epochs)).exp()),
                lr: 0.1,
                images_per_sec: 5000.0,
                wall_s: 12.5,
                ema_test_accuracy: None,
            })
            .collect::<Vec<_>>();
        chunk.push(TrialRecord {
            params: [
                ("lr".to_string(), 1e-4 * 4f64.powi(i32::from(i))),
                ("weight_decay".to_string(), 1e-3 * 4f64.powi(i32::from(j))),
            ]
            .into(),
            grid: Some(GridPos {
                lr: i,
                weight_decay: j,
            }),
            seed,
            status,
            final_accuracy: (status == TrialStatus::Done)
                .then(|| curve.last().map_or(0.0, |e| e.test_accuracy)),
            wall_time_s: Some(600.0),
            device: Some(format!("cuda:{}", n % 8)),
            error: match status {
                TrialStatus::Diverged => Some("loss became NaN".into()),
                TrialStatus::Failed => Some("CUDA out of memory".into()),
                _ => None,
            },
            epochs: curve,
            created_unix_s: 1_700_000_000 + n as u64,
            ..TrialRecord::new("bench-ui", &format!("t{n:05}"), &backbone(b), &optimizer(o))
        });
        if chunk.len() == GENERATE_CHUNK {
            store.put_trials(&chunk)?;
            chunk.clear();
        }
    }
    store.put_trials(&chunk)?;
    Ok(())
}

/// Bytes below `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The `VmHWM` (peak resident memory) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> Result<u64, ServiceError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(io_error("cannot read", &path))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| ServiceError::BadRequest(format!("no VmHWM in {}", path.display())))
}

/// Starts `bocb serve` (no workers) on the store at `store` and times
/// each view of experiment `name` over `requests` requests.
fn bench_store(store: &Path, name: &str, requests: usize) -> Result<UiBenchStore, ServiceError> {
    let (trials, epochs_recorded) = {
        // `generate_store` closed it a moment ago.
        let opened = bocb_store::Store::open_waiting(store, bocb_store::RELEASE_WAIT)?;
        let summaries = opened.trial_summaries(name)?;
        let epochs = summaries.iter().map(|s| s.epochs).sum();
        (summaries, epochs)
    };
    let store_bytes = dir_bytes(store);
    let mut scratch = Scratch {
        // Nothing of its own to remove: the store is the caller's.
        dir: store.join("bench-none"),
        service: None,
    };
    let client = start_service(&mut scratch, store, "none")?;
    let pid = scratch.service.as_ref().expect("just started").id();
    let start_rss_bytes = peak_rss(pid)?;
    let e = urlencode(name);
    let pairs: Vec<(String, String)> = {
        let mut pairs: Vec<(String, String)> = trials
            .iter()
            .map(|s| (s.trial.backbone.clone(), s.trial.optimizer.clone()))
            .collect();
        pairs.dedup();
        pairs
    };
    let ids: Vec<&str> = trials.iter().map(|s| s.trial.id.as_str()).collect();
    let pair_page = |(b, o): &(String, String)| {
        format!(
            "/api/ui/experiments/{e}/pair?backbone={}&optimizer={}&cursor=0",
            urlencode(b),
            urlencode(o)
        )
    };
    if ids.is_empty() {
        return Err(ServiceError::BadRequest(format!(
            "experiment `{name}` has no trial to show"
        )));
    }
    let sorts = ["accuracy", "param:lr", "id", "created", "status"];
    // Each view's first screen: the requests its page makes when opened.
    type Paths<'a> = Box<dyn Fn(usize) -> Vec<String> + 'a>;
    let views: Vec<(&str, f64, Paths)> = vec![
        (
            "experiments",
            VIEW_GOAL_MS,
            Box::new(|_| vec!["/api/ui/experiments".into()]),
        ),
        (
            "experiment (matrix)",
            VIEW_GOAL_MS,
            Box::new(|_| vec![format!("/api/ui/experiments/{e}")]),
        ),
        (
            "pair",
            VIEW_GOAL_MS,
            Box::new(|k| vec![pair_page(&pairs[k % pairs.len()])]),
        ),
        (
            "trials (table page)",
            TABLE_GOAL_MS,
            Box::new(|k| {
                vec![format!(
                    "/api/ui/experiments/{e}/trials?page={}&size=50&sort={}&desc={}",
                    k % 7,
                    sorts[k % sorts.len()],
                    k % 2
                )]
            }),
        ),
        (
            "trial",
            VIEW_GOAL_MS,
            Box::new(|k| {
                let id = ids[(k * 7919) % ids.len()];
                vec![
                    format!("/api/ui/experiments/{e}/trials/{id}?since=0"),
                    format!("/api/ui/trials/{id}/log?from=0"),
                ]
            }),
        ),
        (
            "parallel coordinates",
            VIEW_GOAL_MS,
            Box::new(|_| vec![format!("/api/ui/experiments/{e}/points")]),
        ),
        (
            "analyses (HTML report)",
            VIEW_GOAL_MS,
            Box::new(|_| {
                vec![format!(
                    "/api/report?experiment={e}&format=html&curves=false"
                )]
            }),
        ),
    ];
    let mut times = Vec::new();
    for (view, goal_ms, paths) in &views {
        let mut took = Vec::with_capacity(requests);
        for k in 0..requests {
            let started = Instant::now();
            for path in paths(k) {
                client
                    .get_text(&path)
                    .map_err(|e| ServiceError::BadRequest(format!("GET {path}: {e}")))?;
            }
            took.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let cold_ms = took[0];
        took.sort_by(f64::total_cmp);
        let at = |q: f64| took[((q * took.len() as f64).ceil() as usize).clamp(1, took.len()) - 1];
        times.push(ViewTimes {
            view: view.to_string(),
            cold_ms,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            goal_ms: *goal_ms,
        });
    }
    let peak_rss_bytes = peak_rss(pid)?;
    let started = Instant::now();
    let pages = pairs.iter().map(pair_page).chain(
        ids.iter()
            .map(|id| format!("/api/ui/experiments/{e}/trials/{id}?since=0")),
    );
    for path in pages {
        client
            .get_text(&path)
            .map_err(|e| ServiceError::BadRequest(format!("GET {path}: {e}")))?;
    }
    Ok(UiBenchStore {
        trials: trials.len(),
        epochs_recorded,
        store_bytes,
        views: times,
        start_rss_bytes,
        peak_rss_bytes,
        peak_rss_after_every_epoch_bytes: peak_rss(pid)?,
        every_epoch_s: started.elapsed().as_secs_f64(),
    })
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The table `bocb bench ui` prints.
pub fn render_ui_bench(stores: &[UiBenchStore]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in stores {
        let _ = writeln!(
            out,
            "{} trials, {} epochs, store {:.0} MiB: service peak RSS {:.0} MiB at start, {:.0} MiB after the views, {:.0} MiB after reading every epoch ({:.1} s)",
            s.trials,
            s.epochs_recorded,
            mib(s.store_bytes),
            mib(s.start_rss_bytes),
            mib(s.peak_rss_bytes),
            mib(s.peak_rss_after_every_epoch_bytes),
            s.every_epoch_s,
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>9} {:>9} {:>7}  ",
            "view", "cold ms", "p50 ms", "p95 ms", "goal"
        );
        for v in &s.views {
            let _ = writeln!(
                out,
                "  {:<24} {:>9.1} {:>9.1} {:>9.1} {:>7}  {}",
                v.view,
                v.cold_ms,
                v.p50_ms,
                v.p95_ms,
                format!("<{:.0}", v.goal_ms),
                if v.p95_ms < v.goal_ms { "ok" } else { "MISSED" }
            );
        }
    }
    out
}

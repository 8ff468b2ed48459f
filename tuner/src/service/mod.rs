//! `bocb serve`: holds the store, runs submitted experiments, and hands
//! their trials to worker processes over HTTP (see `http` for the API).
//!
//! What the service must not lose lives in the store (experiments, trials,
//! epochs) and in `STORE/service-experiments.json` (which experiments are
//! running or stopped), both written before any reply. A restarted service
//! resumes the running experiments; their searches skip finished trials
//! and re-queue the ones that were in flight.

#[cfg(feature = "train")]
pub mod bench;
pub mod checkpoints;
pub mod client;
pub mod http;
pub mod launcher;
#[cfg(feature = "train")]
mod local_workers;
pub mod queue;
pub mod reader;
pub mod ui;
#[cfg(feature = "train")]
pub mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bocb_spec::{DeviceChoice, UnknownName};
use bocb_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::executor::RunError;
use crate::experiment::{Experiment, ExperimentError};
use crate::registries::Registries;
use crate::run::{register_experiment, search_experiment, SearchOptions};
use launcher::slurm::{LaunchSettings, Pool, SlurmConfig, SlurmError, SlurmJob, SlurmLauncher};
#[cfg(feature = "train")]
use local_workers::LocalWorkers;
use queue::{DatasetLocation, Queue, QueueConfig, QueueExecutor};

pub use client::{CERT_FILE, DEFAULT_PORT, TOKEN_FILE, URL_FILE};

const EXPERIMENTS_FILE: &str = "service-experiments.json";

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Experiment(#[from] ExperimentError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {listen}: {reason}; pick another address with --listen HOST:PORT")]
    Listen { listen: String, reason: String },
    #[error("--listen {0} reaches beyond this machine, and the service speaks plain HTTP: its token, which lets its holder run any command on every worker (an experiment's `trial: {{ command }}`), would cross the network readable. Serve HTTPS with --tls-cert PEM --tls-key PEM, or listen on 127.0.0.1 and reach it through an SSH tunnel, or pass --insecure-listen on a network you trust")]
    Exposed(String),
    #[error("{what} {}: {reason}", path.display())]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("no experiment `{0}` in the service; `bocb status` lists them")]
    UnknownExperiment(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Launcher(#[from] SlurmError),
    #[error("this bocb was built without training (`--no-default-features`), so it starts no workers of its own: serve with `--workers none` and start `bocb worker --server URL` from the default build where the devices are, or give the service a `--launcher`")]
    NoTraining,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError {
    let path = path.to_path_buf();
    move |source| ServiceError::Io { what, path, source }
}

/// Local workers to start: a device and how many on it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerGroup {
    pub device: DeviceChoice,
    pub count: usize,
}

/// A `--workers` group that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BadWorkerGroup {
    #[error("`{0}`: the count after `=` must be a whole number, as in `cpu=2`")]
    Count(String),
    #[error(transparent)]
    Device(#[from] UnknownName),
}

/// Parses `DEVICE[=COUNT]` (`cpu=2`, `cuda:0`).
pub fn parse_worker_group(text: &str) -> Result<WorkerGroup, BadWorkerGroup> {
    let (device, count) = match text.split_once('=') {
        Some((device, count)) => (
            device,
            count
                .parse::<usize>()
                .map_err(|_| BadWorkerGroup::Count(text.to_string()))?,
        ),
        None => (text, 1),
    };
    Ok(WorkerGroup {
        device: device.parse()?,
        count,
    })
}

/// Parses `--workers`: `DEVICE[=COUNT]` groups, or `none` for remote
/// workers only.
pub fn parse_workers(list: &[String]) -> Result<Vec<WorkerGroup>, BadWorkerGroup> {
    if list == ["none"] {
        return Ok(Vec::new());
    }
    list.iter().map(|w| parse_worker_group(w)).collect()
}

/// How `bocb serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub store_dir: PathBuf,
    pub listen: String,
    pub token: Option<String>,
    pub workers: Vec<WorkerGroup>,
    pub heartbeat_timeout: Duration,
    pub retries: u32,
    /// Listen beyond loopback on plain HTTP (after a warning).
    pub insecure_listen: bool,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// The URL path the service is reached under behind a reverse proxy
    /// (`/bocb`; empty at the root), as [`ui::normalize_base_path`] makes it.
    pub base_path: String,
    /// Start workers as Slurm jobs as trials queue, for the experiments
    /// without a `launcher:` of their own.
    pub launcher: Option<SlurmConfig>,
}

/// The PEM files of an HTTPS service.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate (chain), leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Both files, read and checked to be a certificate and its key, so
    /// that a wrong file is named before anything is bound or created.
    fn load(&self) -> Result<tiny_http::SslConfig, ServiceError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|e| ServiceError::Tls {
                what,
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let certificate = read("cannot read the TLS certificate (--tls-cert)", &self.cert)?;
        let private_key = read("cannot read the TLS key (--tls-key)", &self.key)?;
        let chain = openssl::x509::X509::stack_from_pem(&certificate)
            .ok()
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| ServiceError::Tls {
                what: "no PEM certificate in",
                path: self.cert.clone(),
                reason: "--tls-cert takes a file of `-----BEGIN CERTIFICATE-----` blocks"
                    .to_string(),
            })?;
        let key = openssl::pkey::PKey::private_key_from_pem(&private_key).map_err(|_| {
            ServiceError::Tls {
                what: "no PEM private key in",
                path: self.key.clone(),
                reason: "--tls-key takes an unencrypted `-----BEGIN PRIVATE KEY-----` file"
                    .to_string(),
            }
        })?;
        let matches = chain[0]
            .public_key()
            .is_ok_and(|public| public.public_eq(&key));
        if !matches {
            return Err(ServiceError::Tls {
                what: "the TLS key does not belong to the certificate",
                path: self.key.clone(),
                reason: format!("give the key of {}", self.cert.display()),
            });
        }
        Ok(tiny_http::SslConfig {
            certificate,
            private_key,
        })
    }
}

/// Where an experiment is in the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentState {
    Running,
    Done,
    Stopped,
    Failed,
    /// In the store but not run by this service (made by `bocb run`, or
    /// before the service's state file existed); `bocb resume` runs it.
    Idle,
    /// An imported results table: nothing to run.
    Imported,
}

/// What the service keeps about an experiment besides the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Persisted {
    state: ExperimentState,
    /// Relative dataset paths are taken from here (the submitter's file directory).
    base: PathBuf,
    /// The file name it was submitted from, for error messages.
    origin: String,
    #[serde(default)]
    error: Option<String>,
}

/// An experiment in the service, with its search thread while it runs.
struct Managed {
    persisted: Persisted,
    cancel: Arc<AtomicBool>,
    run: Option<JoinHandle<()>>,
    /// Which run is current: a run that ends after a newer one started
    /// must not overwrite its state.
    generation: u64,
}

/// An experiment as `GET /api/experiments` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStatus {
    pub name: String,
    pub state: ExperimentState,
    #[serde(default)]
    pub error: Option<String>,
    /// Trials by status (`done`, `running`, ...).
    pub trials: BTreeMap<String, usize>,
    pub epochs_recorded: usize,
    /// Its worker jobs, when the service launches workers through Slurm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<SlurmJob>,
}

/// The running service.
pub struct Service {
    store: Store,
    registries: Registries,
    queue: Arc<Queue>,
    experiments: Mutex<BTreeMap<String, Managed>>,
    /// Pairs each experiment searches at once (more when its device
    /// slots are more).
    concurrent_pairs: usize,
    token: String,
    /// Every path starts with it (`--base-path`).
    base_path: String,
    /// The worker processes this service started; `None` when it takes
    /// remote workers only (`--workers none`).
    #[cfg(feature = "train")]
    local_workers: Option<Arc<Mutex<LocalWorkers>>>,
    /// Submits workers to Slurm as trials queue (`--launcher`, or an
    /// experiment's own `launcher:`).
    launcher: Arc<SlurmLauncher>,
    /// What the web UI's views derive from the store, by revision.
    ui_cache: ui::views::Cache,
}

/// How often the launcher compares the queue with the cluster's jobs.
const LAUNCH_INTERVAL: Duration = Duration::from_secs(2);

impl Service {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Managed>> {
        self.experiments.lock().expect("experiments lock")
    }

    fn state_path(&self) -> PathBuf {
        self.store.dir().join(EXPERIMENTS_FILE)
    }

    /// Writes every experiment's state, atomically (temporary file, fsync, rename).
    fn persist(&self, experiments: &BTreeMap<String, Managed>) -> Result<(), ServiceError> {
        let states: BTreeMap<&String, &Persisted> = experiments
            .iter()
            .map(|(name, m)| (name, &m.persisted))
            .collect();
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&states).expect("states serialize");
        let mut file = std::fs::File::create(&tmp).map_err(io_error("cannot write", &tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(io_error("cannot write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error("cannot replace", &path))?;
        if let Ok(dir) = std::fs::File::open(self.store.dir()) {
            // Makes the rename itself durable.
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The experiment's device slots as this machine resolves them, when
    /// the service starts local workers (with remote workers only, the
    /// devices are theirs to have).
    #[cfg(feature = "train")]
    fn local_slots(
        &self,
        experiment: &Experiment,
        origin: &str,
    ) -> Result<Option<Vec<DeviceChoice>>, ServiceError> {
        if self.local_workers.is_none() {
            return Ok(None);
        }
        crate::experiment::DeviceSlots::device_slots(&experiment.spec)
            .map(Some)
            .map_err(|e| ServiceError::BadRequest(format!("{origin}: {e}")))
    }

    /// A service without training has remote workers only.
    #[cfg(not(feature = "train"))]
    fn local_slots(
        &self,
        _: &Experiment,
        _: &str,
    ) -> Result<Option<Vec<DeviceChoice>>, ServiceError> {
        Ok(None)
    }

    /// Starts the local workers that `slots` lack.
    #[cfg(feature = "train")]
    fn ensure_workers(&self, name: &str, slots: &[DeviceChoice]) -> Result<(), ServiceError> {
        let Some(workers) = &self.local_workers else {
            return Ok(());
        };
        let started = workers.lock().expect("workers lock").ensure(slots)?;
        if started > 0 {
            tracing::info!("started {started} local worker(s) for the devices of `{name}`");
        }
        Ok(())
    }

    /// The experiment's own Slurm config, readied (the cluster reached, its
    /// job script written), when it has a `launcher:`.
    fn own_launcher(
        &self,
        experiment: &Experiment,
        origin: &str,
    ) -> Result<Option<Pool>, ServiceError> {
        let own = experiment.spec.launcher.as_ref().map(|l| &l.slurm);
        self.launcher
            .prepare(&experiment.spec.name, own)
            .map_err(|e| {
                ServiceError::BadRequest(format!(
                    "{origin}: `launcher: {{ slurm }}` asks this service to start the experiment's workers through Slurm, but {e}; run the service where Slurm's commands work (a login node), or remove `launcher:` and start workers otherwise"
                ))
            })
    }

    /// Without training there are no local workers to start.
    #[cfg(not(feature = "train"))]
    fn ensure_workers(&self, _: &str, _: &[DeviceChoice]) -> Result<(), ServiceError> {
        Ok(())
    }

    fn parse(&self, source: &str, persisted: &Persisted) -> Result<Experiment, ExperimentError> {
        Experiment::parse(source, &persisted.origin, &persisted.base, &self.registries)
    }

    /// Validates and registers an experiment, then (re)starts its search. A
    /// running experiment with the same name is stopped first and resumes
    /// with the new file: finished trials are kept, only new ones run.
    pub fn submit(
        self: &Arc<Self>,
        source: &str,
        origin: &str,
        base: &Path,
    ) -> Result<ExperimentStatus, ServiceError> {
        let persisted = Persisted {
            state: ExperimentState::Running,
            base: base.to_path_buf(),
            origin: origin.to_string(),
            error: None,
        };
        // Everything that can be refused is checked before anything is written.
        let experiment = self.parse(source, &persisted)?;
        let slots = self.local_slots(&experiment, origin)?;
        let name = experiment.spec.name.clone();
        let pool = self.own_launcher(&experiment, origin)?;
        // Refuses changed training settings before a running search is touched.
        register_experiment(&experiment, &self.store)?;
        if let Some(slots) = slots {
            self.ensure_workers(&name, &slots)?;
        }
        self.end_run(&name);
        self.launcher.assign(&name, pool);
        {
            let mut experiments = self.lock();
            let generation = experiments.get(&name).map_or(0, |m| m.generation + 1);
            experiments.insert(
                name.clone(),
                Managed {
                    persisted,
                    cancel: Arc::new(AtomicBool::new(false)),
                    run: None,
                    generation,
                },
            );
            self.persist(&experiments)?;
            self.start_run(&mut experiments, experiment);
        }
        self.status(&name)
    }

    /// Stops an experiment's search: waiting trials leave the queue, running
    /// ones are abandoned (they run again on resume).
    pub fn stop(self: &Arc<Self>, name: &str) -> Result<ExperimentStatus, ServiceError> {
        if !self.lock().contains_key(name) {
            // A stored experiment the service does not run has nothing to stop.
            return self.status(name);
        }
        self.end_run(name);
        {
            let mut experiments = self.lock();
            if let Some(managed) = experiments.get_mut(name) {
                if managed.persisted.state == ExperimentState::Running {
                    managed.persisted.state = ExperimentState::Stopped;
                }
            }
            self.persist(&experiments)?;
        }
        self.launcher.cancel(name)?;
        self.status(name)
    }

    /// Runs a stopped, failed or done experiment's search again (finishing
    /// what it had not).
    pub fn resume(self: &Arc<Self>, name: &str) -> Result<ExperimentStatus, ServiceError> {
        let record = self
            .store
            .experiment(name)?
            .ok_or_else(|| ServiceError::UnknownExperiment(name.to_string()))?;
        let mut experiments = self.lock();
        if !experiments.contains_key(name) {
            let persisted = self.adopt(&record)?;
            // Refused before it is listed as the service's.
            self.parse(&record.spec_yaml, &persisted)?;
            experiments.insert(
                name.to_string(),
                Managed {
                    persisted,
                    cancel: Arc::new(AtomicBool::new(false)),
                    run: None,
                    generation: 0,
                },
            );
        }
        let managed = experiments
            .get_mut(name)
            .expect("an experiment the service runs, or just adopted");
        if managed.run.as_ref().is_some_and(|r| !r.is_finished()) {
            drop(experiments);
            return self.status(name);
        }
        let experiment = self.parse(&record.spec_yaml, &managed.persisted)?;
        // Another machine may lack the devices the experiment was submitted with.
        let slots = self
            .local_slots(&experiment, &managed.persisted.origin)
            .map_err(|e| {
                ServiceError::BadRequest(format!(
                    "{e}\nsubmit the experiment's file again with devices this machine has; its trials are kept, as devices are no training setting"
                ))
            })?;
        let pool = self.own_launcher(&experiment, &managed.persisted.origin)?;
        if let Some(slots) = slots {
            self.ensure_workers(name, &slots)?;
        }
        self.launcher.assign(name, pool);
        managed.persisted.state = ExperimentState::Running;
        managed.persisted.error = None;
        managed.generation += 1;
        managed.cancel = Arc::new(AtomicBool::new(false));
        self.persist(&experiments)?;
        self.start_run(&mut experiments, experiment);
        drop(experiments);
        self.status(name)
    }

    /// What the service needs to run a stored experiment it did not start:
    /// the directory its file was in, as the store recorded it.
    fn adopt(&self, record: &bocb_store::ExperimentRecord) -> Result<Persisted, ServiceError> {
        let name = &record.name;
        if self.store.imported(name)?.is_some() {
            return Err(ServiceError::BadRequest(format!(
                "experiment `{name}` is an imported results table; there is nothing to run"
            )));
        }
        let base = record.base_dir.clone().ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "experiment `{name}` was stored by an older bocb, which did not record its file's directory; submit its file with `bocb submit FILE` to run it"
            ))
        })?;
        Ok(Persisted {
            state: ExperimentState::Running,
            origin: format!("experiment `{name}` as stored"),
            base,
            error: None,
        })
    }

    /// Cancels the experiment's search, if running, and waits for it to end.
    fn end_run(&self, name: &str) {
        let run = {
            let mut experiments = self.lock();
            let Some(managed) = experiments.get_mut(name) else {
                return;
            };
            managed.cancel.store(true, Ordering::SeqCst);
            managed.run.take()
        };
        self.queue.cancel_experiment(name);
        if let Some(run) = run {
            // Outside the lock: the run's last act is to take it.
            let _ = run.join();
        }
    }

    /// Starts the search thread of `experiment`, already in `experiments`.
    fn start_run(
        self: &Arc<Self>,
        experiments: &mut BTreeMap<String, Managed>,
        experiment: Experiment,
    ) {
        let name = experiment.spec.name.clone();
        let managed = experiments
            .get_mut(&name)
            .expect("registered before its run");
        let cancel = managed.cancel.clone();
        let generation = managed.generation;
        let service = Arc::clone(self);
        managed.run = Some(std::thread::spawn(move || {
            let executor = QueueExecutor {
                queue: Arc::clone(&service.queue),
                dataset: DatasetLocation {
                    format: experiment.spec.dataset.format,
                    dir: std::path::absolute(&experiment.dataset_dir)
                        .unwrap_or_else(|_| experiment.dataset_dir.clone()),
                    resolution: experiment.spec.dataset.resolution,
                    bad_files: experiment.spec.dataset.bad_files,
                },
                devices: experiment.spec.named_devices(),
                cancel: Arc::clone(&cancel),
            };
            let spec = &experiment.spec;
            // `auto` packs trials in `bocb run` only: here one slot per device.
            let slots =
                spec.device_list().devices().len() * spec.trials_per_device.fixed_slots() as usize;
            // An experiment's own Slurm jobs are fed as many trials as they may be.
            let own_jobs = spec.launcher.as_ref().map_or(0, |l| l.slurm.max_jobs);
            let options = SearchOptions {
                concurrent_pairs: service.concurrent_pairs.max(slots).max(own_jobs),
                slots: Vec::new(),
                show_progress: false,
                cancel: Some(&cancel),
                packing: None,
            };
            let result = search_experiment(
                &experiment,
                &service.store,
                &service.registries.catalog,
                &executor,
                &options,
            );
            let (state, error) = match result {
                Ok(summary) => {
                    tracing::info!("experiment `{name}` finished: {summary:?}");
                    (ExperimentState::Done, None)
                }
                Err(RunError::Cancelled) => return,
                Err(e) => (ExperimentState::Failed, Some(e.to_string())),
            };
            let mut experiments = service.lock();
            if let Some(managed) = experiments.get_mut(&name) {
                if managed.generation == generation {
                    managed.persisted.state = state;
                    managed.persisted.error = error;
                    if let Err(e) = service.persist(&experiments) {
                        tracing::error!("cannot record that `{name}` ended: {e}");
                    }
                }
            }
        }));
    }

    /// One experiment's state and trial counts.
    pub fn status(&self, name: &str) -> Result<ExperimentStatus, ServiceError> {
        let state = self.state(name)?;
        Ok(self.status_of(name, state, &self.store.trial_summaries(name)?))
    }

    /// An experiment's state and the error it ended with.
    fn state(&self, name: &str) -> Result<(ExperimentState, Option<String>), ServiceError> {
        let managed = self
            .lock()
            .get(name)
            .map(|m| (m.persisted.state, m.persisted.error.clone()));
        Ok(match managed {
            Some(managed) => managed,
            None if self.store.imported(name)?.is_some() => (ExperimentState::Imported, None),
            None if self.store.experiment(name)?.is_some() => (ExperimentState::Idle, None),
            None => return Err(ServiceError::UnknownExperiment(name.to_string())),
        })
    }

    /// The status of experiment `name` in `state`, with `trials` its
    /// trials' summaries.
    fn status_of(
        &self,
        name: &str,
        (state, error): (ExperimentState, Option<String>),
        trials: &[bocb_store::TrialSummary],
    ) -> ExperimentStatus {
        let mut counts = BTreeMap::new();
        let mut epochs_recorded = 0;
        for summary in trials {
            *counts.entry(summary.trial.status.to_string()).or_insert(0) += 1;
            epochs_recorded += summary.epochs;
        }
        ExperimentStatus {
            name: name.to_string(),
            state,
            error,
            trials: counts,
            epochs_recorded,
            jobs: self.launcher.jobs(name),
        }
    }

    /// Stops one waiting or running trial of experiment `name` (recorded
    /// as stopped); its experiment goes on with the others.
    pub fn stop_trial(&self, name: &str, trial: &str) -> Result<(), ServiceError> {
        self.state(name)?;
        self.queue.stop_trial(name, trial).map_err(|_| {
            ServiceError::Conflict(format!(
                "trial `{trial}` of `{name}` is neither waiting nor running in this service, so there is nothing to stop"
            ))
        })
    }

    /// Every experiment's status, by name: those the service runs and the
    /// others in its store.
    pub fn statuses(&self) -> Result<Vec<ExperimentStatus>, ServiceError> {
        let mut names: std::collections::BTreeSet<String> = self.lock().keys().cloned().collect();
        names.extend(self.store.experiments()?.into_iter().map(|e| e.name));
        names.iter().map(|name| self.status(name)).collect()
    }

    /// The trials of experiment `name`.
    pub fn trials(&self, name: &str) -> Result<Vec<bocb_store::TrialRecord>, ServiceError> {
        if !self.lock().contains_key(name) && self.store.experiment(name)?.is_none() {
            return Err(ServiceError::UnknownExperiment(name.to_string()));
        }
        Ok(self.store.trials(name)?)
    }

    /// Resumes the experiments that were running when the service last stopped.
    fn resume_interrupted(self: &Arc<Self>) -> Result<(), ServiceError> {
        let running: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, m)| m.persisted.state == ExperimentState::Running)
            .map(|(name, _)| name.clone())
            .collect();
        for name in running {
            if let Err(e) = self.resume(&name) {
                tracing::error!("cannot resume experiment `{name}`: {e}");
                let mut experiments = self.lock();
                if let Some(managed) = experiments.get_mut(&name) {
                    managed.persisted.state = ExperimentState::Failed;
                    managed.persisted.error = Some(e.to_string());
                }
                self.persist(&experiments)?;
            }
        }
        Ok(())
    }
}

/// The service's token: `given`, else the one in `STORE/service-token`,
/// else a new random one written there readable by the owner only.
pub fn service_token(store_dir: &Path, given: Option<&str>) -> Result<String, ServiceError> {
    if let Some(token) = given {
        if token.trim().is_empty() {
            return Err(ServiceError::BadRequest(
                "--token must not be empty".to_string(),
            ));
        }
        return Ok(token.trim().to_string());
    }
    let path = store_dir.join(TOKEN_FILE);
    if path.exists() {
        let token = std::fs::read_to_string(&path).map_err(io_error("cannot read", &path))?;
        if !token.trim().is_empty() {
            return Ok(token.trim().to_string());
        }
        // No client could send an empty token; a new one is made.
        tracing::warn!("{} is empty; writing a new token", path.display());
    }
    let token: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    // Written whole under another name first, so the file is never empty.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .map_err(io_error("cannot create", &tmp))?;
    file.write_all(token.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(io_error("cannot write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error("cannot replace", &path))?;
    Ok(token)
}

/// Names this service's Slurm jobs apart from other services' of the same
/// user: a digest of its store's path.
fn service_id(store_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(store_dir).unwrap_or_else(|_| store_dir.to_path_buf());
    let digest = Sha256::digest(path.to_string_lossy().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether every address `listen` names is this machine's loopback.
fn loopback_only(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    listen
        .to_socket_addrs()
        .map(|mut addresses| addresses.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

/// How long a TLS handshake (and then a silence within a connection) may last.
const TLS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets a socket option of `listener`; Linux copies it to the sockets the
/// listener accepts.
fn set_listener_option<T>(
    listener: &std::net::TcpListener,
    level: libc::c_int,
    option: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a value of the size passed.
    let status = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            level,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bounds how long a connection may stay silent on `listener`'s accepted
/// sockets. tiny_http makes the TLS handshake of each connection on its one
/// accepting thread: without the bound, one client that connects and sends
/// nothing would stall every other for good.
fn bound_handshakes(listener: &std::net::TcpListener) -> std::io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: TLS_READ_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    set_listener_option(listener, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
}

/// Sends each write at once: tiny_http writes a response's head and body
/// apart, and Nagle's algorithm would hold the body until the client's
/// delayed acknowledgement of the head, about 40 ms per response.
fn no_delay(listener: &std::net::TcpListener) -> std::io::Result<()> {
    set_listener_option(
        listener,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        &1 as &libc::c_int,
    )
}

/// Keeps glibc's malloc from holding on to the freed peaks of large
/// answers (a report, the parallel coordinates of 10,000 trials): each of
/// the 16 handler threads would get an arena of its own (up to 8 per
/// core), each keeping its own freed peak; and freeing a large block
/// raises glibc's trim threshold to twice its size (up to 64 MiB), free
/// memory it then keeps at the top of every arena. Two arenas and a fixed
/// 1 MiB trim threshold (which also keeps large blocks mmapped, given
/// back when freed) give it back, in no slower times (docs/ui.md,
/// "Scale"). Training runs in worker processes, which keep glibc's
/// defaults.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets parameters of glibc's malloc, under its lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// Runs the service until the process is killed, validating submitted
/// experiments against `registries`.
pub fn serve(config: &ServeConfig, registries: Registries) -> Result<(), ServiceError> {
    return_freed_memory();
    #[cfg(not(feature = "train"))]
    if !config.workers.is_empty() {
        return Err(ServiceError::NoTraining);
    }
    let exposed = !loopback_only(&config.listen);
    if exposed && !config.insecure_listen && config.tls.is_none() {
        return Err(ServiceError::Exposed(config.listen.clone()));
    }
    let ssl = config.tls.as_ref().map(TlsFiles::load).transpose()?;
    // Bound before anything is created: a busy port leaves no store behind.
    let listen_error = |reason: String| ServiceError::Listen {
        listen: config.listen.clone(),
        reason,
    };
    let listener =
        std::net::TcpListener::bind(&config.listen).map_err(|e| listen_error(e.to_string()))?;
    no_delay(&listener).map_err(|e| listen_error(e.to_string()))?;
    if ssl.is_some() {
        bound_handshakes(&listener).map_err(|e| listen_error(e.to_string()))?;
    }
    let server = tiny_http::Server::from_listener(listener, ssl.clone())
        .map_err(|e| listen_error(e.to_string()))?;
    if exposed && ssl.is_none() {
        eprintln!(
            "WARNING: --insecure-listen: serving {} on plain HTTP beyond this machine; anyone who can read the traffic gets the token, and with it a shell on every worker",
            config.listen
        );
    }
    // `bocb run` or a bench may have closed it a moment ago.
    let store = Store::open_waiting(&config.store_dir, bocb_store::RELEASE_WAIT)?;
    let token = service_token(&config.store_dir, config.token.as_deref())?;
    let address = server
        .server_addr()
        .to_ip()
        .expect("an HTTP server listens on an IP address");
    let url = match &ssl {
        Some(ssl) => {
            let cert_path = config.store_dir.join(CERT_FILE);
            std::fs::write(&cert_path, &ssl.certificate)
                .map_err(io_error("cannot write", &cert_path))?;
            format!("https://{address}{}", config.base_path)
        }
        None => format!("http://{address}{}", config.base_path),
    };
    let url_path = config.store_dir.join(URL_FILE);
    std::fs::write(&url_path, format!("{url}\n")).map_err(io_error("cannot write", &url_path))?;

    let queue = Arc::new(Queue::new(
        store.clone(),
        QueueConfig {
            heartbeat_timeout: config.heartbeat_timeout,
            retries: config.retries,
            logs_dir: config.store_dir.join("logs"),
        },
    ));
    let launcher = Arc::new(SlurmLauncher::new(
        config.launcher.clone(),
        LaunchSettings {
            dir: config.store_dir.join("slurm"),
            program: std::env::current_exe().map_err(io_error("cannot find", Path::new("bocb")))?,
            server: url.clone(),
            token: token.clone(),
            ca: ssl.is_some().then(|| config.store_dir.join(CERT_FILE)),
            service_id: service_id(&config.store_dir),
        },
    )?);
    let local_worker_count: usize =
        config.workers.iter().map(|g| g.count).sum::<usize>() + launcher.max_jobs();
    let mut experiments = BTreeMap::new();
    let state_path = config.store_dir.join(EXPERIMENTS_FILE);
    if state_path.exists() {
        let text =
            std::fs::read_to_string(&state_path).map_err(io_error("cannot read", &state_path))?;
        let states: BTreeMap<String, Persisted> = serde_json::from_str(&text).map_err(|e| {
            ServiceError::BadRequest(format!(
                "{} is corrupt ({e}); remove it to forget which experiments were running",
                state_path.display()
            ))
        })?;
        for (name, persisted) in states {
            experiments.insert(
                name,
                Managed {
                    persisted,
                    cancel: Arc::new(AtomicBool::new(false)),
                    run: None,
                    generation: 0,
                },
            );
        }
    }
    // Started before experiments resume, which may add workers for their devices.
    #[cfg(feature = "train")]
    let local_workers = if config.workers.is_empty() {
        None
    } else {
        let workers = LocalWorkers::start(
            &config.workers,
            &url,
            &token,
            &config.store_dir,
            ssl.is_some(),
        )?;
        let workers = Arc::new(Mutex::new(workers));
        let supervised = Arc::clone(&workers);
        std::thread::spawn(move || LocalWorkers::supervise(&supervised));
        Some(workers)
    };
    let service = Arc::new(Service {
        store,
        registries,
        queue: Arc::clone(&queue),
        experiments: Mutex::new(experiments),
        // Remote workers may join a service with no local ones.
        concurrent_pairs: if local_worker_count == 0 {
            4
        } else {
            local_worker_count
        },
        token,
        base_path: config.base_path.clone(),
        #[cfg(feature = "train")]
        local_workers,
        launcher: Arc::clone(&launcher),
        ui_cache: ui::views::Cache::default(),
    });
    service.resume_interrupted()?;
    // Idle until an experiment uses Slurm, where the service has no --launcher.
    let demand_queue = Arc::clone(&queue);
    std::thread::spawn(move || loop {
        if let Err(e) = launcher.reconcile(&demand_queue.demand()) {
            tracing::warn!("Slurm launcher: {e}");
        }
        std::thread::sleep(LAUNCH_INTERVAL);
    });

    let reaper_queue = Arc::clone(&queue);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(250));
        reaper_queue.reap_lost();
    });
    eprintln!(
        "bocb service listening on {url} (store {})",
        config.store_dir.display()
    );
    eprintln!(
        "web UI: {} (the link holds the token; keep it private)",
        ui::login_link(&url, &service.token)
    );
    http::handle_requests(&service, server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_groups_parse_device_and_count() {
        assert_eq!(
            parse_worker_group("cpu=2"),
            Ok(WorkerGroup {
                device: DeviceChoice::Cpu,
                count: 2
            })
        );
        assert_eq!(
            parse_worker_group("cuda:1"),
            Ok(WorkerGroup {
                device: DeviceChoice::Cuda(1),
                count: 1
            })
        );
        assert!(parse_worker_group("cpu=two")
            .unwrap_err()
            .to_string()
            .contains("whole number"));
        assert!(parse_worker_group("tpu")
            .unwrap_err()
            .to_string()
            .contains("valid: auto, cpu"));
    }

    #[test]
    fn the_token_is_made_once_owner_only_or_taken_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let token = service_token(dir.path(), None).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &dir.path()
                .join(TOKEN_FILE)
                .metadata()
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(service_token(dir.path(), None).unwrap(), token);
        assert_eq!(service_token(dir.path(), Some("mine")).unwrap(), "mine");
        assert!(service_token(dir.path(), Some(" ")).is_err());

        // An empty token file (a crash mid-write by an older bocb) is replaced.
        std::fs::write(dir.path().join(TOKEN_FILE), "\n").unwrap();
        let renewed = service_token(dir.path(), None).unwrap();
        assert_eq!(renewed.len(), 64);
        assert_ne!(renewed, token);
        let stored = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(stored, renewed);
    }

    #[test]
    fn only_loopback_addresses_count_as_private() {
        for private in ["127.0.0.1:0", "localhost:7878", "[::1]:80"] {
            assert!(loopback_only(private), "{private}");
        }
        for exposed in ["0.0.0.0:7878", "[::]:7878", "8.8.8.8:80", "nonsense"] {
            assert!(!loopback_only(exposed), "{exposed}");
        }
    }
}

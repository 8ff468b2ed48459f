//! `bocb worker`: claims trials from a service, trains them, reports every
//! epoch (the answer says whether to stop early) and the end, with
//! heartbeats from a thread while an epoch runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bocb_trial_runner::data::{self, LoadedData};
use bocb_trial_runner::device::device_name;
use bocb_trial_runner::device::ResolveDevice;
use bocb_trial_runner::{
    run_trial, DeviceChoice, EpochMetrics, TrialError, TrialObserver, TrialSpec,
};
use thiserror::Error;

use super::checkpoints;
use super::client::{Client, ClientError};
use super::http::{
    ClaimRequest, EpochAnswer, EpochRequest, FinishRequest, HeartbeatRequest, ReleaseRequest,
    StartRequest,
};
use super::queue::Assignment;
use crate::executor::TrialResult;
use crate::external::{run_external, stay_until_the_signal_ends_bocb, SaveOnSignal};
use crate::registries::Registries;
use crate::service::queue::DatasetLocation;
use crate::trial_command::ExternalTrial;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Device(String),
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub device: DeviceChoice,
    /// Shown in the service's trial logs.
    pub name: String,
    /// How long the service may be unreachable (a restart) before the
    /// worker gives up and exits.
    pub patience: Duration,
    /// Where its trials keep their checkpoints while they train, each sent
    /// to the service once saved and fetched from it when a trial resumes;
    /// `None`: in the service's store directory itself, which this worker
    /// shares (the service's local workers, or a shared filesystem).
    pub checkpoints: Option<PathBuf>,
    /// Only this experiment's trials (a worker a launcher started for it).
    pub experiment: Option<String>,
    /// Exit once the service has had no trial for the worker this long (a
    /// launcher's worker frees its job); `None`: wait for work for good.
    pub exit_when_idle: Option<Duration>,
}

/// Bytes of log one request carries at most: JSON escaping may grow them
/// up to six times, and the service takes bodies of up to 4 MiB.
const LOG_CHUNK_BYTES: usize = 512 << 10;
/// Log not yet sent beyond this is left out (the worker's own log keeps it).
const MAX_PENDING_LOG_BYTES: usize = 32 << 20;

/// What the heartbeat thread sends: the attempt in hand and the log lines
/// written since the last beat.
#[derive(Default)]
struct Beat {
    attempt: Option<u64>,
    log: String,
    /// Lines left out since the log last fit.
    left_out: usize,
    /// The service dropped the attempt: stop training it.
    gone: bool,
    interval: Duration,
}

impl Beat {
    /// The next piece of log for a request: at most [`LOG_CHUNK_BYTES`],
    /// cut after a line where one ends in it.
    fn take_log_chunk(&mut self) -> String {
        if self.log.len() <= LOG_CHUNK_BYTES {
            return std::mem::take(&mut self.log);
        }
        let mut cut = LOG_CHUNK_BYTES;
        while !self.log.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(line_end) = self.log[..cut].rfind('\n') {
            cut = line_end + 1;
        }
        let rest = self.log.split_off(cut);
        std::mem::replace(&mut self.log, rest)
    }
}

/// Claims and trains trials until the service stays unreachable for
/// `config.patience` (or refuses the token), or has nothing for the
/// worker for `config.exit_when_idle`. On a signal the trial in hand saves
/// its checkpoint, goes back to the queue, and the worker exits cleanly.
/// Trains with `registries`.
pub fn run_worker(
    client: &Client,
    config: &WorkerConfig,
    registries: &Registries,
) -> Result<(), WorkerError> {
    let device = config.device.resolve().map_err(WorkerError::Device)?;
    let beat = Arc::new(Mutex::new(Beat {
        interval: Duration::from_secs(1),
        ..Beat::default()
    }));
    spawn_heartbeats(client.clone(), Arc::clone(&beat));
    let (leaving, in_hand) = (client.clone(), Arc::clone(&beat));
    crate::external::leave_cleanly_on_signals(move || {
        let attempt = in_hand.lock().expect("beat lock").attempt;
        if let Some(attempt) = attempt {
            // Else the heartbeat timeout re-queues it, later.
            let released = leaving
                .post::<_, serde_json::Value>("/api/worker/release", &ReleaseRequest { attempt });
            match released {
                Ok(_) => eprintln!("signalled: attempt {attempt} saved and released; exiting"),
                Err(e) => eprintln!("signalled: cannot release attempt {attempt} ({e}); exiting"),
            }
        } else {
            eprintln!("signalled with no trial in hand; exiting");
        }
    });
    let mut datasets: HashMap<DatasetLocation, LoadedData> = HashMap::new();
    let mut unreachable_since: Option<Instant> = None;
    let claim = ClaimRequest {
        worker: config.name.clone(),
        device: Some(device_name(device)),
        experiment: config.experiment.clone(),
    };
    let mut idle_since = Instant::now();
    eprintln!(
        "worker {} (pid {}) on {} serving {}",
        config.name,
        std::process::id(),
        String::from(config.device),
        client.base()
    );
    loop {
        let assignment = match client.post::<_, Assignment>("/api/worker/claim", &claim) {
            Ok(assignment) => {
                unreachable_since = None;
                assignment
            }
            Err(ClientError::Unreachable { .. }) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > config.patience {
                    eprintln!(
                        "the service at {} has been unreachable for {:.0}s; exiting",
                        client.base(),
                        config.patience.as_secs_f64()
                    );
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(assignment) = assignment else {
            if config
                .exit_when_idle
                .is_some_and(|idle| idle_since.elapsed() >= idle)
            {
                eprintln!(
                    "worker {}: no trial for {:.0}s; exiting",
                    config.name,
                    idle_since.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            continue;
        };
        eprintln!(
            "worker {}: trial {} of `{}` (attempt {})",
            config.name, assignment.trial, assignment.experiment, assignment.attempt
        );
        {
            let mut beat = beat.lock().expect("beat lock");
            *beat = Beat {
                attempt: Some(assignment.attempt),
                interval: Duration::from_secs_f64(assignment.heartbeat_s),
                ..Beat::default()
            };
        }
        let result = match &assignment.external {
            Some(external) => run_program(client, config, &assignment, external, &beat),
            None => train_on_its_data(
                client,
                config,
                registries,
                &assignment,
                &mut datasets,
                &beat,
            ),
        };
        // The heartbeats stop; the log's rest goes in pieces, the last
        // with the end.
        beat.lock().expect("beat lock").attempt = None;
        let (gone, log) = loop {
            let (gone, chunk, last) = {
                let mut beat = beat.lock().expect("beat lock");
                let chunk = beat.take_log_chunk();
                (beat.gone, chunk, beat.gone || beat.log.is_empty())
            };
            if last {
                break (gone, chunk);
            }
            let request = HeartbeatRequest {
                attempt: assignment.attempt,
                log: chunk,
            };
            if let Err(ClientError::Gone) =
                client.post::<_, serde_json::Value>("/api/worker/heartbeat", &request)
            {
                beat.lock().expect("beat lock").gone = true;
            }
        };
        idle_since = Instant::now();
        if gone {
            eprintln!(
                "worker {}: the service dropped trial {}",
                config.name, assignment.trial
            );
            continue;
        }
        let finish = FinishRequest {
            attempt: assignment.attempt,
            result,
            log,
        };
        match client.post::<_, serde_json::Value>("/api/worker/finish", &finish) {
            // Gone or unreachable: the service re-queues the trial itself.
            Ok(_) | Err(ClientError::Gone | ClientError::Unreachable { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends a heartbeat with the new log lines while an attempt is in hand.
fn spawn_heartbeats(client: Client, beat: Arc<Mutex<Beat>>) {
    std::thread::spawn(move || loop {
        let (attempt, log, interval) = {
            let mut beat = beat.lock().expect("beat lock");
            // Between attempts the trial's last lines go with its end.
            let log = if beat.attempt.is_some() {
                beat.take_log_chunk()
            } else {
                String::new()
            };
            // More to send goes at once.
            let interval = if beat.log.is_empty() {
                beat.interval
            } else {
                Duration::ZERO
            };
            (beat.attempt, log, interval)
        };
        if let Some(attempt) = attempt {
            let request = HeartbeatRequest { attempt, log };
            if let Err(ClientError::Gone) =
                client.post::<_, serde_json::Value>("/api/worker/heartbeat", &request)
            {
                let mut beat = beat.lock().expect("beat lock");
                if beat.attempt == Some(attempt) {
                    beat.gone = true;
                }
            }
        }
        std::thread::sleep(interval);
    });
}

/// The assignment's own program, run here, its reports and checkpoints
/// sent to the service.
fn run_program(
    client: &Client,
    config: &WorkerConfig,
    assignment: &Assignment,
    external: &ExternalTrial,
    beat: &Arc<Mutex<Beat>>,
) -> TrialResult {
    let mut spec = assignment.spec.clone();
    let local = local_checkpoint(client, config, assignment, &mut spec, beat);
    let mut observer = Reporter::new(client, assignment, beat, local.is_some());
    let log = |line: &str| append_log(beat, line);
    // Heard by the heartbeats: the program ends without waiting
    // for its next report.
    let dropped = || beat.lock().expect("beat lock").gone;
    let result = run_external(
        external,
        &assignment.trial,
        &spec,
        &assignment.work_dir,
        assignment.resume_epoch,
        &mut observer,
        &log,
        &dropped,
    );
    if let Some(local) = &local {
        remove_local_checkpoint(local);
    }
    result
}

/// The assignment trained by bocb's trainer on its dataset, loaded here once
/// per dataset and kept in `datasets` for the trials after it.
fn train_on_its_data(
    client: &Client,
    config: &WorkerConfig,
    registries: &Registries,
    assignment: &Assignment,
    datasets: &mut HashMap<DatasetLocation, LoadedData>,
    beat: &Arc<Mutex<Beat>>,
) -> TrialResult {
    let key = assignment.dataset.clone();
    if !datasets.contains_key(&key) {
        let opened = data::open(
            &key.dir,
            key.format,
            key.resolution.map(|r| r as usize),
            key.bad_files,
            bocb_trial_runner::batches::default_workers(),
        );
        match opened {
            Ok(splits) => {
                datasets.insert(key.clone(), splits);
            }
            Err(e) => append_log(beat, &format!("cannot load the dataset: {e}")),
        }
    }
    match datasets.get(&key) {
        Some(splits) => train(client, config, registries, assignment, splits, beat),
        None => TrialResult::failed(format!(
            "worker {} cannot load the dataset {}",
            config.name,
            assignment.dataset.dir.display()
        )),
    }
}

/// Trains one claimed trial on this worker's device.
fn train(
    client: &Client,
    config: &WorkerConfig,
    registries: &Registries,
    assignment: &Assignment,
    splits: &LoadedData,
    beat: &Arc<Mutex<Beat>>,
) -> TrialResult {
    let mut spec = assignment.spec.clone();
    spec.device = config.device;
    // Trials of other experiments may have left deterministic kernels on;
    // this worker trains one trial at a time.
    bocb_trial_runner::precision::set_deterministic(spec.deterministic);
    let local = local_checkpoint(client, config, assignment, &mut spec, beat);
    let mut observer = Reporter::new(client, assignment, beat, local.is_some());
    let saving = SaveOnSignal::new();
    let result = run_trial(
        &spec,
        splits,
        &registries.backbones,
        &registries.optimizers,
        &mut observer,
    );
    if let Some(local) = &local {
        // The service holds what was sent; what could not be sent goes too.
        remove_local_checkpoint(local);
    }
    drop(saving);
    let result = match result {
        Ok(outcome) => TrialResult::from_outcome(outcome),
        // Stopped by a signal, its checkpoint saved: the service gives the
        // trial to another worker once this one's heartbeats stop.
        Err(TrialError::Interrupted { .. }) if crate::external::signalled() => {
            stay_until_the_signal_ends_bocb()
        }
        // Dropped by the service (its experiment stopped, or re-queued),
        // its checkpoint saved for whoever continues it; the service hears
        // no more of this attempt.
        Err(e @ TrialError::Interrupted { .. }) => TrialResult::failed(e.to_string()),
        Err(e) => TrialResult::failed(e.to_string()),
    };
    observer.log(&format!(
        "[worker {}] ended {}{}",
        config.name,
        result.status,
        result
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default()
    ));
    result
}

/// For a worker with checkpoints of its own (`--checkpoints`): points
/// `spec` at a directory of this attempt's own, holding the checkpoint the
/// service has for the trial, and returns it. A worker lost but still
/// running on this machine cannot write into it.
fn local_checkpoint(
    client: &Client,
    config: &WorkerConfig,
    assignment: &Assignment,
    spec: &mut TrialSpec,
    beat: &Mutex<Beat>,
) -> Option<PathBuf> {
    let root = config
        .checkpoints
        .as_ref()
        .filter(|_| spec.checkpoint_dir.is_some())?;
    // Absolute: an external program runs in another directory.
    let local = std::path::absolute(root)
        .unwrap_or_else(|_| root.clone())
        .join(&assignment.experiment)
        .join(format!("{}.{}", assignment.trial, assignment.attempt));
    fetch_checkpoint(client, assignment.attempt, &local, beat);
    spec.checkpoint_dir = Some(local.clone());
    Some(local)
}

/// Puts the checkpoint the service holds for `attempt`'s trial in `local`
/// (which must not hold another): the trial then resumes from it. Without
/// one, or when it cannot be fetched, the trial starts over, which costs
/// time but no correctness.
fn fetch_checkpoint(client: &Client, attempt: u64, local: &Path, beat: &Mutex<Beat>) {
    remove_local_checkpoint(local);
    let fetched = client
        .get_stream(&format!("/api/worker/checkpoint?attempt={attempt}"))
        .map_err(|e| e.to_string())
        .and_then(|archive| match archive {
            Some((body, length)) => {
                let parent = local.parent().expect("below the checkpoints directory");
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                checkpoints::unpack(body, length, local)
                    .map(|()| Some(length))
                    .map_err(|e| e.to_string())
            }
            None => Ok(None),
        });
    match fetched {
        Ok(Some(length)) => append_log(
            beat,
            &format!("[worker] fetched the trial's checkpoint from the service ({length} bytes)"),
        ),
        Ok(None) => {}
        Err(e) => {
            remove_local_checkpoint(local);
            append_log(
                beat,
                &format!("[worker] cannot fetch the trial's checkpoint, so it starts over: {e}"),
            );
        }
    }
}

/// Removes a trial's local checkpoint directory, and its experiment's once empty.
fn remove_local_checkpoint(local: &Path) {
    match std::fs::remove_dir_all(local) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("cannot remove the checkpoint {}: {e}", local.display()),
    }
    if let Some(experiment) = local.parent() {
        let _ = std::fs::remove_dir(experiment);
    }
}

/// Forwards epochs to the service and takes its early-stop answer.
struct Reporter<'a> {
    client: &'a Client,
    attempt: u64,
    beat: &'a Arc<Mutex<Beat>>,
    stop: bool,
    /// The trial's checkpoints are this worker's own: each is sent to the service.
    sends_checkpoints: bool,
    /// An epoch's report failed: the store may lack that epoch.
    unrecorded: bool,
}

impl<'a> Reporter<'a> {
    /// Reports `assignment`'s progress; `sends_checkpoints` when the
    /// trial's checkpoints are kept here, apart from the service's store.
    fn new(
        client: &'a Client,
        assignment: &Assignment,
        beat: &'a Arc<Mutex<Beat>>,
        sends_checkpoints: bool,
    ) -> Self {
        Reporter {
            client,
            attempt: assignment.attempt,
            beat,
            stop: false,
            sends_checkpoints,
            unrecorded: false,
        }
    }
}

/// Queues a line for the trial's log, sent with the next heartbeat.
fn append_log(beat: &Mutex<Beat>, line: &str) {
    // Also on standard error: the worker's own log keeps what a dying
    // worker could not send.
    eprintln!("{line}");
    let mut beat = beat.lock().expect("beat lock");
    if beat.log.len() + line.len() > MAX_PENDING_LOG_BYTES {
        beat.left_out += 1;
        return;
    }
    if beat.left_out > 0 {
        let note = format!(
            "[worker] {} line(s) left out here: the trial wrote faster than the service took its log (the worker's own log has them)\n",
            beat.left_out
        );
        beat.log.push_str(&note);
        beat.left_out = 0;
    }
    beat.log.push_str(line);
    beat.log.push('\n');
}

impl Reporter<'_> {
    fn log(&self, line: &str) {
        append_log(self.beat, line);
    }

    fn gone(&self) -> bool {
        self.beat.lock().expect("beat lock").gone
    }
}

impl TrialObserver for Reporter<'_> {
    fn on_start(&mut self, epochs_done: u32) {
        let request = StartRequest {
            attempt: self.attempt,
            epochs_done,
        };
        if let Err(e) = self
            .client
            .post::<_, serde_json::Value>("/api/worker/start", &request)
        {
            // As for an epoch: the trial is trained again elsewhere.
            eprintln!("start report of attempt {} failed: {e}", self.attempt);
            self.beat.lock().expect("beat lock").gone = true;
        }
    }

    fn on_epoch(&mut self, report: &EpochMetrics) {
        self.log(&crate::run::epoch_summary(report));
        let request = EpochRequest {
            attempt: self.attempt,
            report: *report,
        };
        match self
            .client
            .post::<_, EpochAnswer>("/api/worker/epoch", &request)
        {
            Ok(Some(answer)) => self.stop = answer.stop,
            Ok(None) => {}
            Err(e) => {
                // The service restarted or dropped the trial: it will be
                // trained again from its checkpoint, so stop this one.
                eprintln!("epoch report of attempt {} failed: {e}", self.attempt);
                self.unrecorded = true;
                self.beat.lock().expect("beat lock").gone = true;
            }
        }
    }

    fn stop_after_epoch(&mut self, _: &EpochMetrics) -> bool {
        self.stop
    }

    /// A dropped trial saves its checkpoint and stops, as on a signal:
    /// `bocb resume` (or the worker it was re-queued to) continues it.
    fn checkpoint_requested(&mut self) -> bool {
        crate::external::signalled() || self.gone()
    }

    fn may_checkpoint(&mut self) -> bool {
        !self.unrecorded
    }

    /// Sends the checkpoint just saved to the service, training waiting:
    /// the directory must not change while it goes. Not once the service
    /// dropped the attempt: it would refuse it.
    fn on_checkpoint(&mut self, dir: &Path) {
        if !self.sends_checkpoints || self.gone() {
            return;
        }
        let scratch = checkpoints::beside(dir, "upload", self.attempt);
        let sent = checkpoints::pack(dir, &scratch)
            .map_err(|e| e.to_string())
            .and_then(|(file, length)| {
                let path = format!("/api/worker/checkpoint?attempt={}", self.attempt);
                match self.client.put_stream(&path, file, length) {
                    Err(ClientError::Gone) => {
                        self.beat.lock().expect("beat lock").gone = true;
                        Err(ClientError::Gone.to_string())
                    }
                    sent => sent.map_err(|e| e.to_string()),
                }
            });
        if let Err(e) = sent {
            self.log(&format!(
                "[worker] cannot send the checkpoint to the service (a trial resumed elsewhere continues from the one sent before): {e}"
            ));
        }
    }
}

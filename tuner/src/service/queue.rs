//! The trials waiting for a worker and those being trained, and the
//! executor through which the service's searches train.
//!
//! A search thread blocks in [`QueueExecutor::execute`] while its trial is
//! queued, claimed and trained; the HTTP handlers forward the worker's
//! reports to it over a channel and wait for its answer, so every epoch is
//! in the store before the worker hears whether to go on.

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bocb_spec::{BadFiles, DatasetFormat, EpochMetrics, TrialObserver, TrialSpec};
use bocb_store::{Store, TrialStatus};
use crossbeam::channel::{bounded, unbounded, Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::executor::{RunError, TrialExecutor, TrialJob, TrialResult};
use crate::trial_command::ExternalTrial;

/// Lines of a trial's log kept in the error of a trial that failed because
/// its workers kept getting lost.
const LOG_TAIL_LINES: usize = 20;

/// Where a worker finds a trial's dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DatasetLocation {
    pub format: DatasetFormat,
    pub dir: PathBuf,
    /// The experiment's `dataset.resolution`.
    #[serde(default)]
    pub resolution: Option<u32>,
    /// The experiment's `dataset.bad_files`.
    #[serde(default)]
    pub bad_files: BadFiles,
}

/// A trial as a worker gets it when it claims one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// This claim's number: every later report names it, and one that the
    /// service no longer knows (lost, stopped, or before a restart) is
    /// answered 410 Gone.
    pub attempt: u64,
    pub experiment: String,
    pub trial: String,
    pub spec: TrialSpec,
    pub dataset: DatasetLocation,
    /// The program to run instead of bocb's trainer, and where.
    #[serde(default)]
    pub external: Option<ExternalTrial>,
    pub work_dir: PathBuf,
    /// The last epoch the store holds (0: none): an external program
    /// continues after it from its checkpoint (older services send none).
    #[serde(default)]
    pub resume_epoch: u32,
    /// Seconds between the heartbeats the service expects.
    pub heartbeat_s: f64,
}

/// The attempt is unknown to the service: the worker drops the trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// What a waiting search thread hears about its trial.
enum Event {
    /// The run starts after this many epochs; answered once recorded.
    Start(u32, Sender<()>),
    /// An epoch to record; the answer is whether to stop the trial.
    Epoch(EpochMetrics, Sender<bool>),
    Finished(TrialResult),
    Cancelled,
}

/// A trial and where to tell its search thread what happens to it.
struct Work {
    experiment: String,
    trial: String,
    spec: TrialSpec,
    dataset: DatasetLocation,
    external: Option<ExternalTrial>,
    work_dir: PathBuf,
    /// The devices its experiment names; `None` takes any worker.
    devices: Option<Vec<String>>,
    events: Sender<Event>,
    /// Attempts lost so far.
    lost: u32,
}

impl Work {
    /// Whether a worker on `device` may train it (a worker that names no
    /// device, an older one, may train anything).
    fn runs_on(&self, device: Option<&str>) -> bool {
        match (&self.devices, device) {
            (Some(devices), Some(device)) => devices.iter().any(|d| d == device),
            _ => true,
        }
    }
}

struct Running {
    work: Work,
    worker: String,
    /// Where the worker said it trains.
    device: Option<String>,
    last_contact: Instant,
}

/// A worker as the web UI shows it: idle, or holding a trial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    pub worker: String,
    pub device: Option<String>,
    /// The trial it holds and its experiment; `None` while it is idle.
    pub experiment: Option<String>,
    pub trial: Option<String>,
    /// Seconds since the worker's last word (a claim, a report).
    pub silent_s: f64,
}

/// A worker not heard from for this long is no longer listed.
const FORGET_WORKER: Duration = Duration::from_secs(600);

/// When a worker last asked for work, and on which device.
struct Seen {
    device: Option<String>,
    at: Instant,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Work>,
    running: HashMap<u64, Running>,
    next_attempt: u64,
    /// Every worker by name, as of its last claim (idle workers keep
    /// claiming, so they show here).
    seen: HashMap<String, Seen>,
}

/// Settings of the queue's fault handling.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// A claimed trial with no word from its worker for this long is lost.
    pub heartbeat_timeout: Duration,
    /// Times a trial is re-queued after a lost worker before it fails.
    pub retries: u32,
    /// Per-trial logs go here, as `TRIAL.log`.
    pub logs_dir: PathBuf,
}

/// The service's queue of trials.
pub struct Queue {
    state: Mutex<State>,
    work_arrived: Condvar,
    store: Store,
    config: QueueConfig,
}

impl Queue {
    pub fn new(store: Store, config: QueueConfig) -> Self {
        let state = State {
            // Attempt numbers differ across restarts, so a worker still
            // holding a trial from before one is told it is gone.
            next_attempt: u64::from(rand::random::<u32>()) << 20,
            ..State::default()
        };
        Queue {
            state: Mutex::new(state),
            work_arrived: Condvar::new(),
            store,
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }

    /// Where trial `id`'s log is kept.
    pub fn log_path(&self, trial: &str) -> PathBuf {
        self.config.logs_dir.join(format!("{trial}.log"))
    }

    /// Appends `text` to trial `id`'s log; a log that cannot be written is
    /// reported and otherwise ignored, as it holds no result.
    pub fn log(&self, trial: &str, text: &str) {
        let path = self.log_path(trial);
        let written = std::fs::create_dir_all(&self.config.logs_dir).and_then(|_| {
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                file.write_all(b"\n")?;
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!("cannot write the trial log {}: {e}", path.display());
        }
    }

    /// Queues a trial unless `cancel` is set; checked under the lock that
    /// [`Queue::cancel_experiment`] takes, so no trial slips in after it.
    fn push(&self, work: Work, cancel: &AtomicBool) -> bool {
        let mut state = self.lock();
        if cancel.load(Ordering::SeqCst) {
            return false;
        }
        state.waiting.push_back(work);
        // Waiting workers may be on devices this trial is not for.
        self.work_arrived.notify_all();
        true
    }

    /// The next waiting trial `worker` on `device` may train (one whose
    /// experiment names that device or none, of `experiment` when given),
    /// waiting up to `wait` for one. The trial's record takes the worker's
    /// `device` (older workers name none).
    pub fn claim(
        &self,
        worker: &str,
        device: Option<&str>,
        experiment: Option<&str>,
        wait: Duration,
    ) -> Option<Assignment> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        state.seen.insert(
            worker.to_string(),
            Seen {
                device: device.map(str::to_string),
                at: Instant::now(),
            },
        );
        loop {
            let next = state
                .waiting
                .iter()
                .position(|w| w.runs_on(device) && experiment.is_none_or(|e| e == w.experiment));
            if let Some(work) = next.and_then(|i| state.waiting.remove(i)) {
                let attempt = state.next_attempt;
                state.next_attempt += 1;
                // A worker lost mid-trial left epochs (and maybe a checkpoint).
                let resume_epoch = match self.store.trial(&work.experiment, &work.trial) {
                    Ok(record) => record
                        .and_then(|t| t.epochs.last().map(|e| e.epoch))
                        .unwrap_or(0),
                    Err(e) => {
                        tracing::warn!("cannot read trial {}: {e}", work.trial);
                        0
                    }
                };
                let assignment = Assignment {
                    attempt,
                    resume_epoch,
                    experiment: work.experiment.clone(),
                    trial: work.trial.clone(),
                    spec: work.spec.clone(),
                    dataset: work.dataset.clone(),
                    external: work.external.clone(),
                    work_dir: work.work_dir.clone(),
                    heartbeat_s: (self.config.heartbeat_timeout.as_secs_f64() / 4.0).max(0.2),
                };
                self.log(
                    &work.trial,
                    &format!(
                        "[service] attempt {attempt} claimed by worker `{worker}` (try {})",
                        work.lost + 1
                    ),
                );
                state.running.insert(
                    attempt,
                    Running {
                        work,
                        worker: worker.to_string(),
                        device: device.map(str::to_string),
                        last_contact: Instant::now(),
                    },
                );
                drop(state);
                if let Some(device) = device {
                    let recorded = self.store.set_trial_device(
                        &assignment.experiment,
                        &assignment.trial,
                        device,
                    );
                    if let Err(e) = recorded {
                        // Only where it trains is lost; the trial goes on.
                        tracing::warn!("cannot record trial {}'s device: {e}", assignment.trial);
                    }
                }
                return Some(assignment);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .work_arrived
                .wait_timeout(state, deadline - now)
                .expect("queue lock")
                .0;
        }
    }

    /// Notes that `attempt`'s worker is alive, appending `log` to the trial's log.
    pub fn heartbeat(&self, attempt: u64, log: &str) -> Result<(), Gone> {
        let mut state = self.lock();
        let running = state.running.get_mut(&attempt).ok_or(Gone)?;
        running.last_contact = Instant::now();
        if !log.is_empty() {
            self.log(&running.work.trial, log);
        }
        Ok(())
    }

    /// Tells the trial's search thread where its run starts, and returns
    /// once the store dropped the epochs recorded after that.
    pub fn report_start(&self, attempt: u64, epochs_done: u32) -> Result<(), Gone> {
        let (reply, answer) = bounded(1);
        self.send(attempt, Event::Start(epochs_done, reply))?;
        answer.recv().map_err(|_| Gone)
    }

    /// Hands an epoch to the trial's search thread, which records it, and
    /// returns its answer: whether to stop the trial.
    pub fn report_epoch(&self, attempt: u64, report: EpochMetrics) -> Result<bool, Gone> {
        let (reply, answer) = bounded(1);
        self.send(attempt, Event::Epoch(report, reply))?;
        answer.recv().map_err(|_| Gone)
    }

    /// Sends `event` to `attempt`'s search thread (outside the lock, which
    /// its answer may need), noting that the worker is alive.
    fn send(&self, attempt: u64, event: Event) -> Result<(), Gone> {
        let events = {
            let mut state = self.lock();
            let running = state.running.get_mut(&attempt).ok_or(Gone)?;
            running.last_contact = Instant::now();
            running.work.events.clone()
        };
        events.send(event).map_err(|_| Gone)
    }

    /// Ends `attempt` with `result`: recorded in the store before this
    /// returns, then handed to the trial's search thread.
    pub fn finish(&self, attempt: u64, result: TrialResult, log: &str) -> Result<(), Gone> {
        let running = self.lock().running.remove(&attempt).ok_or(Gone)?;
        let work = running.work;
        if !log.is_empty() {
            self.log(&work.trial, log);
        }
        self.log(
            &work.trial,
            &format!("[service] attempt {attempt} ended {}", result.status),
        );
        let recorded =
            self.store
                .finish_trial(&work.experiment, &work.trial, result.status, &result.end());
        if let Err(e) = recorded {
            // The search thread records it again and reports the failure.
            tracing::error!("cannot record the end of trial {}: {e}", work.trial);
        }
        // A search thread that is gone was stopped; the stored result stands.
        let _ = work.events.send(Event::Finished(result));
        Ok(())
    }

    /// Puts `attempt`'s trial back at the head of the queue, its worker
    /// leaving on a signal (preempted, at its time limit) with its
    /// checkpoint sent: not a lost worker, so no retry is spent.
    pub fn release(&self, attempt: u64) -> Result<(), Gone> {
        let mut state = self.lock();
        let running = state.running.remove(&attempt).ok_or(Gone)?;
        self.log(
            &running.work.trial,
            &format!(
                "[service] attempt {attempt} released by worker `{}` (it was signalled to leave); trial re-queued",
                running.worker
            ),
        );
        state.waiting.push_front(running.work);
        self.work_arrived.notify_all();
        Ok(())
    }

    /// Stops trial `trial` of `experiment`, waiting or running, at a
    /// person's word: recorded as stopped (never a result), its search
    /// thread told so, its worker answered `Gone` at its next report.
    /// `Err(Gone)` when the queue does not hold it (it ended, or its
    /// experiment is not running).
    pub fn stop_trial(&self, experiment: &str, trial: &str) -> Result<(), Gone> {
        let work = {
            let mut state = self.lock();
            let is_it = |w: &Work| w.experiment == experiment && w.trial == trial;
            if let Some(i) = state.waiting.iter().position(is_it) {
                state.waiting.remove(i).expect("found above")
            } else {
                let attempt = state
                    .running
                    .iter()
                    .find(|(_, r)| is_it(&r.work))
                    .map(|(&attempt, _)| attempt)
                    .ok_or(Gone)?;
                state.running.remove(&attempt).expect("found above").work
            }
        };
        self.log(trial, "[service] trial stopped by hand (web UI or API)");
        let result = TrialResult::ended_without_metrics(
            TrialStatus::Stopped,
            "stopped by hand from the web UI or API".to_string(),
        );
        // Recorded before the search thread hears it, as `finish` does.
        if let Err(e) = self
            .store
            .finish_trial(experiment, trial, result.status, &result.end())
        {
            tracing::error!("cannot record that trial {trial} was stopped: {e}");
        }
        let _ = work.events.send(Event::Finished(result));
        Ok(())
    }

    /// Ends every waiting and running trial of `experiment`: their search
    /// threads hear `Cancelled`, their workers `Gone` at their next report.
    pub fn cancel_experiment(&self, experiment: &str) {
        let mut state = self.lock();
        let waiting = std::mem::take(&mut state.waiting);
        for work in waiting {
            if work.experiment == experiment {
                let _ = work.events.send(Event::Cancelled);
            } else {
                state.waiting.push_back(work);
            }
        }
        let attempts: Vec<u64> = state
            .running
            .iter()
            .filter(|(_, r)| r.work.experiment == experiment)
            .map(|(&attempt, _)| attempt)
            .collect();
        for attempt in attempts {
            if let Some(running) = state.running.remove(&attempt) {
                self.log(
                    &running.work.trial,
                    &format!("[service] attempt {attempt} cancelled: the experiment was stopped"),
                );
                let _ = running.work.events.send(Event::Cancelled);
            }
        }
    }

    /// Re-queues the trials whose workers have not been heard from within
    /// the heartbeat timeout, or fails those lost too often.
    pub fn reap_lost(&self) {
        let mut state = self.lock();
        let timeout = self.config.heartbeat_timeout;
        let lost: Vec<u64> = state
            .running
            .iter()
            .filter(|(_, r)| r.last_contact.elapsed() > timeout)
            .map(|(&attempt, _)| attempt)
            .collect();
        for attempt in lost {
            let Some(running) = state.running.remove(&attempt) else {
                continue;
            };
            let mut work = running.work;
            work.lost += 1;
            let why = format!(
                "[service] attempt {attempt}: worker `{}` sent nothing for {:.1}s; it is taken as lost",
                running.worker,
                timeout.as_secs_f64()
            );
            self.log(&work.trial, &why);
            // A local worker's own log holds what it could not send before dying.
            let worker_log = self
                .config
                .logs_dir
                .join("workers")
                .join(format!("{}.log", running.worker));
            if worker_log.exists() {
                self.log(
                    &work.trial,
                    &format!(
                        "[service] last lines of worker `{}`'s own log:\n{}",
                        running.worker,
                        tail(&worker_log, LOG_TAIL_LINES / 2)
                    ),
                );
            }
            if work.lost <= self.config.retries {
                self.log(&work.trial, "[service] trial re-queued");
                state.waiting.push_front(work);
                self.work_arrived.notify_all();
            } else {
                let error = format!(
                    "lost {} worker(s) (retry limit {}); last lines of its log:\n{}",
                    work.lost,
                    self.config.retries,
                    tail(&self.log_path(&work.trial), LOG_TAIL_LINES)
                );
                let _ = work
                    .events
                    .send(Event::Finished(TrialResult::failed(error)));
            }
        }
    }

    /// The experiment and trial that `attempt` trains, while it holds the
    /// trial (not ended, lost or cancelled).
    pub fn leased(&self, attempt: u64) -> Result<(String, String), Gone> {
        let state = self.lock();
        let running = state.running.get(&attempt).ok_or(Gone)?;
        Ok((running.work.experiment.clone(), running.work.trial.clone()))
    }

    /// Runs `f` if `attempt` still holds its trial, under the queue's lock:
    /// the trial cannot end meanwhile, so nothing `f` puts in its
    /// checkpoint directory outlives the removal at its end.
    pub fn while_leased<T>(&self, attempt: u64, f: impl FnOnce() -> T) -> Result<T, Gone> {
        let state = self.lock();
        state.running.get(&attempt).ok_or(Gone)?;
        let answer = f();
        drop(state);
        Ok(answer)
    }

    /// Where `trial`'s checkpoint is kept in the store.
    pub fn checkpoint_dir(&self, experiment: &str, trial: &str) -> PathBuf {
        crate::run::checkpoint_dir(&self.store, experiment, trial)
    }

    /// The workers heard from in the last ten minutes, by name: those
    /// holding a trial with it, the others idle.
    pub fn workers(&self) -> Vec<WorkerView> {
        let mut state = self.lock();
        state.seen.retain(|_, s| s.at.elapsed() < FORGET_WORKER);
        let mut workers: Vec<WorkerView> = state
            .running
            .values()
            .map(|r| WorkerView {
                worker: r.worker.clone(),
                device: r.device.clone(),
                experiment: Some(r.work.experiment.clone()),
                trial: Some(r.work.trial.clone()),
                silent_s: r.last_contact.elapsed().as_secs_f64(),
            })
            .collect();
        for (name, seen) in &state.seen {
            if !workers.iter().any(|w| &w.worker == name) {
                workers.push(WorkerView {
                    worker: name.clone(),
                    device: seen.device.clone(),
                    experiment: None,
                    trial: None,
                    silent_s: seen.at.elapsed().as_secs_f64(),
                });
            }
        }
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        workers
    }

    /// Trials waiting or being trained, by experiment.
    pub fn demand(&self) -> std::collections::BTreeMap<String, usize> {
        let state = self.lock();
        let mut demand = std::collections::BTreeMap::new();
        let experiments = state
            .waiting
            .iter()
            .chain(state.running.values().map(|r| &r.work))
            .map(|w| &w.experiment);
        for experiment in experiments {
            *demand.entry(experiment.clone()).or_insert(0) += 1;
        }
        demand
    }

    /// Trials waiting and being trained.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiting.len(), state.running.len())
    }
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Trains an experiment's trials through the queue.
pub struct QueueExecutor {
    pub queue: Arc<Queue>,
    pub dataset: DatasetLocation,
    /// The devices the experiment names (`None`: `auto`, any worker).
    pub devices: Option<Vec<String>>,
    pub cancel: Arc<AtomicBool>,
}

impl TrialExecutor for QueueExecutor {
    fn execute(
        &self,
        job: &TrialJob,
        observer: &mut dyn TrialObserver,
    ) -> Result<TrialResult, RunError> {
        let (events, heard): (Sender<Event>, Receiver<Event>) = unbounded();
        let work = Work {
            experiment: job.experiment.to_string(),
            trial: job.id.to_string(),
            spec: job.spec.clone(),
            dataset: self.dataset.clone(),
            external: job.external.cloned(),
            work_dir: job.work_dir.to_path_buf(),
            devices: self.devices.clone(),
            events,
            lost: 0,
        };
        if !self.queue.push(work, &self.cancel) {
            return Err(RunError::Cancelled);
        }
        loop {
            match heard.recv() {
                Ok(Event::Start(epochs_done, reply)) => {
                    observer.on_start(epochs_done);
                    let _ = reply.send(());
                }
                Ok(Event::Epoch(report, reply)) => {
                    observer.on_epoch(&report);
                    let _ = reply.send(observer.stop_after_epoch(&report));
                }
                Ok(Event::Finished(result)) => return Ok(result),
                // Every sender is gone only if the queue dropped the trial,
                // which it does only when cancelling it.
                Ok(Event::Cancelled) | Err(_) => return Err(RunError::Cancelled),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Experiment;
    use crate::registries::Registries;
    use crate::service::checkpoints::{self, TransferError};
    use crate::test_support::wait_for;
    use bocb_spec::CifarFormat;

    /// A trial spec from a parsed experiment, as the search makes them.
    fn spec(dir: &Path) -> TrialSpec {
        let registries = Registries::builtin();
        let source = "name: q\ndataset: { format: cifar100-bin, path: . }\nbackbones: [resnet18_cifar]\noptimizers: [sgd_m]\nepochs: 3\n";
        let experiment = Experiment::parse(source, "q.yaml", dir, &registries).unwrap();
        let params = [("lr".to_string(), 0.1), ("weight_decay".to_string(), 0.0)].into();
        experiment.trial_spec("resnet18_cifar", "sgd_m", &params, 0, None)
    }

    fn queue(dir: &Path, heartbeat_timeout: Duration) -> Arc<Queue> {
        Arc::new(Queue::new(
            Store::open(dir.join("store")).unwrap(),
            QueueConfig {
                heartbeat_timeout,
                retries: 1,
                logs_dir: dir.join("logs"),
            },
        ))
    }

    /// Records the starts and accuracies it hears; asks to stop below 50%.
    #[derive(Default)]
    struct Listener {
        heard: Vec<String>,
    }

    impl TrialObserver for Listener {
        fn on_start(&mut self, epochs_done: u32) {
            self.heard.push(format!("start after {epochs_done}"));
        }
        fn on_epoch(&mut self, report: &EpochMetrics) {
            self.heard.push(format!("{}%", report.test_accuracy));
        }
        fn stop_after_epoch(&mut self, report: &EpochMetrics) -> bool {
            report.test_accuracy < 50.0
        }
    }

    fn report(epoch: u32, accuracy: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            test_loss: 1.0,
            test_accuracy: accuracy,
            lr: 0.1,
            images_per_sec: 1.0,
            wall_s: 1.0,
            ema_test_accuracy: None,
        }
    }

    /// Runs one trial through a `QueueExecutor` on a thread.
    fn execute(
        queue: &Arc<Queue>,
        spec: TrialSpec,
        cancel: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<(Result<TrialResult, RunError>, Vec<String>)> {
        execute_on(queue, spec, cancel, "t1", None)
    }

    /// Runs trial `id` of an experiment naming `devices` through a
    /// `QueueExecutor` on a thread.
    fn execute_on(
        queue: &Arc<Queue>,
        spec: TrialSpec,
        cancel: Arc<AtomicBool>,
        id: &'static str,
        devices: Option<&[&str]>,
    ) -> std::thread::JoinHandle<(Result<TrialResult, RunError>, Vec<String>)> {
        let executor = QueueExecutor {
            queue: Arc::clone(queue),
            dataset: DatasetLocation {
                format: DatasetFormat::Cifar(CifarFormat::Cifar100Bin),
                dir: PathBuf::from("."),
                resolution: None,
                bad_files: BadFiles::Fail,
            },
            devices: devices.map(|d| d.iter().map(|s| s.to_string()).collect()),
            cancel,
        };
        std::thread::spawn(move || {
            let job = TrialJob {
                experiment: "q",
                id,
                spec: &spec,
                external: None,
                work_dir: Path::new("."),
                resume_epoch: 0,
            };
            let mut listener = Listener::default();
            let result = executor.execute(&job, &mut listener);
            (result, listener.heard)
        })
    }

    #[test]
    fn epochs_reach_the_search_and_its_stop_answer_reaches_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), Duration::from_secs(3600));
        // The search records the trial before queueing it, not knowing
        // where it will run.
        let record: bocb_store::TrialRecord = serde_json::from_value(serde_json::json!({
            "id": "t1", "experiment": "q", "backbone": "resnet18_cifar", "optimizer": "sgd_m",
            "stage": 1, "seed": 0, "status": "running", "created_unix_s": 1, "updated_unix_s": 1,
        }))
        .unwrap();
        queue.store.put_trial(&record).unwrap();
        let running = execute(&queue, spec(dir.path()), Arc::default());
        let assignment = queue
            .claim("w", Some("cuda:1"), None, Duration::from_secs(3600))
            .unwrap();
        assert_eq!(
            (assignment.trial.as_str(), assignment.spec.epochs),
            ("t1", 3)
        );
        let stored = queue.store.trial("q", "t1").unwrap().unwrap();
        assert_eq!(stored.device.as_deref(), Some("cuda:1"));
        assert_eq!(queue.report_start(assignment.attempt, 0), Ok(()));
        assert_eq!(
            queue.report_epoch(assignment.attempt, report(1, 60.0)),
            Ok(false)
        );
        assert_eq!(
            queue.report_epoch(assignment.attempt, report(2, 40.0)),
            Ok(true)
        );
        let stopped = TrialResult {
            status: TrialStatus::Stopped,
            final_accuracy: Some(40.0),
            ema_accuracy: Some(41.0),
            wall_s: Some(2.0),
            precision: Some("fp32".into()),
            peak_memory_bytes: Some(1 << 20),
            optimizer_state_bytes: None,
            classes: Some(10),
            note: None,
            grad_norms: None,
        };
        queue
            .finish(assignment.attempt, stopped.clone(), "bye")
            .unwrap();
        let (result, heard) = running.join().unwrap();
        assert_eq!(result.unwrap(), stopped.clone());
        assert_eq!(heard, ["start after 0", "60%", "40%"]);
        // The attempt is over: anything more about it is refused.
        assert_eq!(queue.heartbeat(assignment.attempt, ""), Err(Gone));
        assert_eq!(queue.report_start(assignment.attempt, 0), Err(Gone));
        assert_eq!(queue.finish(assignment.attempt, stopped, ""), Err(Gone));
        let log = std::fs::read_to_string(queue.log_path("t1")).unwrap();
        assert!(
            log.contains("claimed by worker `w`") && log.contains("bye"),
            "{log}"
        );
    }

    #[test]
    fn a_trial_stopped_by_hand_is_recorded_stopped_and_its_worker_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), Duration::from_secs(3600));
        let record = bocb_store::TrialRecord {
            status: TrialStatus::Running,
            ..bocb_store::TrialRecord::new("q", "t1", "resnet18_cifar", "sgd_m")
        };
        queue.store.put_trial(&record).unwrap();
        let running = execute(&queue, spec(dir.path()), Arc::default());
        // An idle worker is listed with its device and no trial.
        assert!(queue
            .claim("idle", Some("cpu"), Some("other"), Duration::ZERO)
            .is_none());
        let assignment = queue
            .claim("w", Some("cuda:0"), None, Duration::from_secs(3600))
            .unwrap();
        let workers = queue.workers();
        let names: Vec<(&str, Option<&str>)> = workers
            .iter()
            .map(|w| (w.worker.as_str(), w.trial.as_deref()))
            .collect();
        assert_eq!(names, [("idle", None), ("w", Some("t1"))]);
        assert_eq!(workers[0].device.as_deref(), Some("cpu"));
        assert_eq!(
            queue.report_epoch(assignment.attempt, report(1, 90.0)),
            Ok(false)
        );
        queue.stop_trial("q", "t1").unwrap();
        let (result, _) = running.join().unwrap();
        let result = result.unwrap();
        assert_eq!(result.status, TrialStatus::Stopped);
        assert_eq!(result.final_accuracy, None);
        let stored = queue.store.trial("q", "t1").unwrap().unwrap();
        assert_eq!(stored.status, TrialStatus::Stopped);
        assert_eq!(stored.final_accuracy, None);
        assert!(queue.store.best_per_pair("q").unwrap().is_empty());
        assert_eq!(
            queue.report_epoch(assignment.attempt, report(2, 91.0)),
            Err(Gone)
        );
        // Nothing holds it any more.
        assert_eq!(queue.stop_trial("q", "t1"), Err(Gone));
        assert_eq!(queue.workers()[1].trial, None);
    }

    #[test]
    fn workers_take_only_trials_of_experiments_that_name_their_device() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), Duration::from_secs(3600));
        let cancel = Arc::new(AtomicBool::new(false));
        let on_gpu = execute_on(
            &queue,
            spec(dir.path()),
            cancel.clone(),
            "gpu",
            Some(&["cuda:1"]),
        );
        // Queued first, so a worker that takes it out of order proves routing.
        wait_for(|| queue.counts().0 >= 1);
        let anywhere = execute_on(&queue, spec(dir.path()), cancel.clone(), "any", None);
        let wait = Duration::from_secs(3600);
        assert_eq!(
            queue.claim("c", Some("cpu"), None, wait).unwrap().trial,
            "any"
        );
        // Nothing else is for the CPU worker.
        assert!(queue
            .claim("c", Some("cpu"), None, Duration::ZERO)
            .is_none());
        assert_eq!(
            queue.claim("g", Some("cuda:1"), None, wait).unwrap().trial,
            "gpu"
        );
        queue.cancel_experiment("q");
        for thread in [on_gpu, anywhere] {
            assert!(matches!(thread.join().unwrap().0, Err(RunError::Cancelled)));
        }
    }

    #[test]
    fn an_older_workers_finish_message_still_reads() {
        let old = r#"{"status": "done", "final_accuracy": 50.0, "wall_s": 1.5, "note": null}"#;
        let result = serde_json::from_str::<TrialResult>(old).unwrap();
        assert_eq!(
            (result.status, result.final_accuracy, result.wall_s),
            (TrialStatus::Done, Some(50.0), Some(1.5))
        );
        assert_eq!(
            (
                result.ema_accuracy,
                result.precision,
                result.peak_memory_bytes
            ),
            (None, None, None)
        );
    }

    #[test]
    fn lost_attempts_are_requeued_up_to_the_retry_limit_then_fail() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), Duration::ZERO);
        let running = execute(&queue, spec(dir.path()), Arc::default());
        let first = queue
            .claim("w1", None, None, Duration::from_secs(3600))
            .unwrap();
        queue
            .heartbeat(first.attempt, "first try says hello")
            .unwrap();
        queue.reap_lost();
        assert_eq!(queue.heartbeat(first.attempt, ""), Err(Gone));
        let second = queue
            .claim("w2", None, None, Duration::from_secs(3600))
            .unwrap();
        assert_ne!(first.attempt, second.attempt);
        queue.reap_lost();
        let (result, _) = running.join().unwrap();
        let result = result.unwrap();
        assert_eq!(result.status, TrialStatus::Failed);
        let note = result.note.unwrap();
        assert!(note.contains("lost 2 worker(s) (retry limit 1)"), "{note}");
        assert!(note.contains("first try says hello"), "{note}");
        assert_eq!(queue.counts(), (0, 0));
    }

    /// A checkpoint directory holding `epoch`, packed as a worker sends it.
    fn archive(dir: &Path, epoch: u32) -> Vec<u8> {
        use std::io::Read;
        let source = dir.join("source");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("checkpoint.json"), epoch.to_string()).unwrap();
        std::fs::write(source.join("state.safetensors"), vec![7u8; 3000]).unwrap();
        let (mut file, _) = checkpoints::pack(&source, &dir.join("scratch")).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_checkpoint_is_stored_only_whole_and_only_from_the_attempt_holding_the_trial() {
        let dir = tempfile::tempdir().unwrap();
        // Every attempt is lost at the first reaping.
        let queue = queue(dir.path(), Duration::ZERO);
        let running = execute(&queue, spec(dir.path()), Arc::default());
        let first = queue
            .claim("w1", None, None, Duration::from_secs(3600))
            .unwrap();
        let stored = queue.checkpoint_dir("q", "t1");
        let epoch_stored = || std::fs::read_to_string(stored.join("checkpoint.json")).unwrap();
        let send = |attempt: u64, bytes: &[u8], length: usize| {
            checkpoints::receive(&queue, attempt, bytes, Some(length as u64))
        };
        assert!(checkpoints::send(&queue, first.attempt).unwrap().is_none());

        let one = archive(dir.path(), 1);
        send(first.attempt, &one, one.len()).unwrap();
        assert_eq!(epoch_stored(), "1");
        // Cut short, or without its length: refused, the stored one stays,
        // and nothing of the upload is left beside it.
        let two = archive(dir.path(), 2);
        for cut in [two.len() / 2, two.len() - 1] {
            let error = send(first.attempt, &two[..cut], two.len()).unwrap_err();
            assert!(matches!(error, TransferError::Damaged(_)), "{error}");
        }
        let error = checkpoints::receive(&queue, first.attempt, &two[..], None).unwrap_err();
        assert!(matches!(error, TransferError::NoLength), "{error}");
        assert_eq!(epoch_stored(), "1");
        let beside: Vec<_> = std::fs::read_dir(stored.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, ["t1"]);
        // What a resuming worker fetches is what was stored.
        let (file, length) = checkpoints::send(&queue, first.attempt).unwrap().unwrap();
        let fetched = dir.path().join("fetched");
        checkpoints::unpack(file, length, &fetched).unwrap();
        assert_eq!(
            std::fs::read_to_string(fetched.join("checkpoint.json")).unwrap(),
            "1"
        );

        // Lost and claimed again: the stale attempt's uploads are refused.
        queue.reap_lost();
        let second = queue
            .claim("w2", None, None, Duration::from_secs(3600))
            .unwrap();
        let error = send(first.attempt, &two, two.len()).unwrap_err();
        assert!(matches!(error, TransferError::Gone), "{error}");
        assert!(matches!(
            checkpoints::send(&queue, first.attempt),
            Err(TransferError::Gone)
        ));
        assert_eq!(epoch_stored(), "1");
        send(second.attempt, &two, two.len()).unwrap();
        assert_eq!(epoch_stored(), "2");
        // Ended: none is taken any more.
        queue
            .finish(second.attempt, TrialResult::failed("over".into()), "")
            .unwrap();
        let error = send(second.attempt, &one, one.len()).unwrap_err();
        assert!(matches!(error, TransferError::Gone), "{error}");
        assert_eq!(epoch_stored(), "2");
        running.join().unwrap().0.unwrap();
        let log = std::fs::read_to_string(queue.log_path("t1")).unwrap();
        assert_eq!(log.matches("checkpoint stored").count(), 2, "{log}");
    }

    #[test]
    fn cancelling_ends_waiting_trials_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), Duration::from_secs(3600));
        let cancel = Arc::new(AtomicBool::new(false));
        let waiting = execute(&queue, spec(dir.path()), Arc::clone(&cancel));
        wait_for(|| queue.counts() == (1, 0));
        cancel.store(true, Ordering::SeqCst);
        queue.cancel_experiment("q");
        assert!(matches!(
            waiting.join().unwrap().0,
            Err(RunError::Cancelled)
        ));
        let refused = execute(&queue, spec(dir.path()), cancel);
        assert!(matches!(
            refused.join().unwrap().0,
            Err(RunError::Cancelled)
        ));
        assert_eq!(queue.counts(), (0, 0));
    }
}

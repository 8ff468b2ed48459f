//! External trials, as in NNI: the experiment's `trial: { command: ... }`
//! is run once per trial with its parameters as JSON in `BOCB_PARAMS` and
//! in the file named by `BOCB_PARAMS_FILE`; it reports by printing lines
//! `BOCB_REPORT {"epoch": 3, "accuracy": 71.2}` (optionally `"loss"`).
//!
//! The program runs in its own process group, which bocb ends as a whole
//! (SIGTERM, then SIGKILL after [`STOP_GRACE`]) when the trial stops for any
//! reason: early stopping, a bad report, its time limit, the service
//! dropping it, or a signal ending bocb itself.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use bocb_spec::{EpochMetrics, Hparams, TrialObserver, TrialSpec};
use bocb_store::TrialStatus;
use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::executor::{RunError, TrialExecutor, TrialJob, TrialResult};
use crate::trial_command::{ExternalTrial, TimeLimit, DERIVED_LIMIT_FACTOR, MIN_DERIVED_LIMIT};

/// The prefix of a report line on the program's standard output.
pub const REPORT_PREFIX: &str = "BOCB_REPORT ";
/// Lines of the program's output kept in a failed trial's error.
const OUTPUT_TAIL_LINES: usize = 10;
/// Characters of each of those lines kept.
const TAIL_LINE_CHARS: usize = 500;
/// Output is passed to the log in pieces of at most this many bytes, so a
/// line without end cannot grow without bound.
pub const MAX_PIECE_BYTES: usize = 64 << 10;
/// How long a stopped program's process group has after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the trial looks whether it must end while the program is silent.
const POLL: Duration = Duration::from_millis(50);
/// After the program exits, how long processes it left behind may hold
/// its output open before they are killed.
const LINGER: Duration = Duration::from_secs(1);
/// One report line as the program prints it. Non-finite numbers arrive as
/// the names Python's `json.dumps` writes for them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    epoch: u32,
    #[serde(deserialize_with = "number")]
    accuracy: f64,
    #[serde(default, deserialize_with = "optional_number")]
    loss: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Value(f64),
    Named(String),
}

fn number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    match Number::deserialize(deserializer)? {
        Number::Value(v) => Ok(v),
        Number::Named(name) => match name.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not a number"
            ))),
        },
    }
}

fn optional_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<f64>, D::Error> {
    number(deserializer).map(Some)
}

/// `json` with Python's bare `NaN`, `Infinity` and `-Infinity` (outside
/// strings) quoted, so that serde_json reads them as strings.
fn quote_non_finite(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(name) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|name| rest.starts_with(name))
        {
            out.push('"');
            out.push_str(name);
            out.push('"');
            rest = &rest[name.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What `BOCB_PARAMS` carries.
#[derive(Debug, Serialize)]
struct Params<'a> {
    trial: &'a str,
    backbone: &'a str,
    optimizer: &'a str,
    seed: u64,
    epochs: u32,
    batch_size: usize,
    /// lr, weight_decay and the optimizer's extras.
    params: &'a Hparams,
}

/// Runs each trial's own program, in this process's care (`bocb run` of an
/// experiment with `trial:`): the search gives every such trial its command
/// with its time limit.
pub struct ExternalPrograms;

impl TrialExecutor for ExternalPrograms {
    fn execute(
        &self,
        job: &TrialJob,
        observer: &mut dyn TrialObserver,
    ) -> Result<TrialResult, RunError> {
        let program = job
            .external
            .expect("the search gives every trial of an experiment with `trial:` its program");
        let log = |line: &str| tracing::info!("trial {}: {line}", job.id);
        Ok(run_external(
            program,
            job.id,
            job.spec,
            job.work_dir,
            job.resume_epoch,
            observer,
            &log,
            &|| false,
        ))
    }
}

/// Runs `trial.command` for one trial in `work_dir`, forwarding its reports
/// to `observer` and ending it when the observer says stop, when its time
/// limit passes, or when `dropped` turns true (checked while the program is
/// silent too). Its output goes to `log` in pieces of at most
/// [`MAX_PIECE_BYTES`]. A program that keeps a checkpoint in
/// `BOCB_CHECKPOINT_DIR` may continue from it: the store holds its epochs
/// up to `resume_epoch` (`BOCB_RESUME_EPOCH`), and its reports may start
/// after it or from epoch 1. Whenever that directory has changed after a
/// reported epoch, and once the program has ended on a signal to bocb, it
/// goes to `observer.on_checkpoint` (a worker sends it to its service).
#[allow(clippy::too_many_arguments)]
pub fn run_external(
    trial: &ExternalTrial,
    trial_id: &str,
    spec: &TrialSpec,
    work_dir: &Path,
    resume_epoch: u32,
    observer: &mut dyn TrialObserver,
    log: &dyn Fn(&str),
    dropped: &dyn Fn() -> bool,
) -> TrialResult {
    let params = serde_json::to_string(&Params {
        trial: trial_id,
        backbone: &spec.backbone,
        optimizer: &spec.optimizer,
        seed: spec.seed,
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        params: &spec.hparams,
    })
    .expect("params serialize");
    let params_file = std::env::temp_dir().join(format!(
        "bocb-params-{trial_id}-{}.json",
        std::process::id()
    ));
    if let Err(e) = std::fs::write(&params_file, &params) {
        return TrialResult::failed(format!(
            "cannot write the parameters file {}: {e}",
            params_file.display()
        ));
    }
    // An empty parent (a bare file name) is the current directory.
    let work_dir = if work_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        work_dir
    };
    let mut command = Command::new("sh");
    if let Some(dir) = &spec.checkpoint_dir {
        command.env("BOCB_CHECKPOINT_DIR", dir);
    }
    let spawned = command
        .args(["-c", &trial.command])
        .current_dir(work_dir)
        .env("BOCB_PARAMS", &params)
        .env("BOCB_PARAMS_FILE", &params_file)
        .env("BOCB_RESUME_EPOCH", resume_epoch.to_string())
        // The service's token lets its holder run commands on every worker.
        .env_remove("BOCB_TOKEN")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    // A signal to bocb waits for the checkpoint the program saves as it ends.
    let saving = spec.checkpoint_dir.as_ref().map(|_| SaveOnSignal::new());
    let mut checkpoint = CheckpointWatch {
        dir: spec.checkpoint_dir.clone(),
        offered: None,
    };
    let result = match spawned {
        Ok(child) => {
            let mut program = Program::start(child);
            let result = Trial {
                trial,
                spec,
                observer: &mut *observer,
                checkpoint: &mut checkpoint,
                log,
                tail: Vec::new(),
                resume_epoch,
                last_epoch: 0,
                last_accuracy: None,
                last_epoch_at: Instant::now(),
            }
            .follow(&mut program, dropped);
            program.end(log);
            result
        }
        Err(e) => TrialResult::failed(format!(
            "cannot run `{}` in {}: {e}",
            trial.command,
            work_dir.display()
        )),
    };
    let _ = std::fs::remove_file(&params_file);
    if signalled() {
        // bocb is ending on a signal, which ended the program: the trial
        // is not recorded as ended by it (it runs again next time, from
        // what the program saved as it ended).
        checkpoint.offer(observer);
        drop(saving);
        stay_until_the_signal_ends_bocb();
    }
    result
}

/// What a file in a checkpoint directory looked like: path, length, mtime.
type FileMark = (PathBuf, u64, Option<SystemTime>);

/// The program's checkpoint directory and what it held when last offered.
struct CheckpointWatch {
    dir: Option<PathBuf>,
    offered: Option<Vec<FileMark>>,
}

impl CheckpointWatch {
    /// Offers the directory to `observer` if it holds files that changed
    /// since the last offer, and if the observer may take a checkpoint now.
    fn offer(&mut self, observer: &mut dyn TrialObserver) {
        let Some(dir) = &self.dir else {
            return;
        };
        let mut marks = Vec::new();
        file_marks(dir, &mut marks);
        marks.sort();
        if marks.is_empty() || self.offered.as_ref() == Some(&marks) || !observer.may_checkpoint() {
            return;
        }
        observer.on_checkpoint(dir);
        self.offered = Some(marks);
    }
}

/// The marks of every file below `dir` (none when it does not exist).
fn file_marks(dir: &Path, marks: &mut Vec<FileMark>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            file_marks(&entry.path(), marks);
        } else {
            marks.push((entry.path(), meta.len(), meta.modified().ok()));
        }
    }
}

/// A piece of the program's output, as its reader threads pass it on.
enum Output {
    Piece {
        from_stderr: bool,
        text: String,
        /// Whether the piece is a whole line (not part of a longer one).
        whole_line: bool,
    },
    Unreadable(String),
    Closed,
}

/// Reads `stream` on its own thread, so that the trial can end while the
/// program is silent; the thread ends when the stream closes or nobody
/// listens.
fn spawn_reader(stream: impl Read + Send + 'static, from_stderr: bool, to: Sender<Output>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut piece = Vec::new();
        let mut at_line_start = true;
        loop {
            piece.clear();
            let read = (&mut reader)
                .take(MAX_PIECE_BYTES as u64)
                .read_until(b'\n', &mut piece);
            let output = match read {
                Ok(0) => break,
                Ok(_) => {
                    let ends_line = piece.last() == Some(&b'\n');
                    let whole_line = at_line_start && (ends_line || piece.len() < MAX_PIECE_BYTES);
                    at_line_start = ends_line;
                    if ends_line {
                        piece.pop();
                        if piece.last() == Some(&b'\r') {
                            piece.pop();
                        }
                    }
                    Output::Piece {
                        from_stderr,
                        // Not UTF-8: kept as lossy text, and reading goes on.
                        text: String::from_utf8_lossy(&piece).into_owned(),
                        whole_line,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let stream = if from_stderr { "error" } else { "output" };
                    let _ = to.send(Output::Unreadable(format!(
                        "cannot read the program's standard {stream}: {e}"
                    )));
                    return;
                }
            };
            if to.send(output).is_err() {
                return;
            }
        }
        let _ = to.send(Output::Closed);
    });
}

/// The running program: its process (leader of its own group) and output.
struct Program {
    child: Child,
    group: i32,
    output: Receiver<Output>,
    open_streams: usize,
    exit: Option<std::io::Result<ExitStatus>>,
}

impl Program {
    fn start(mut child: Child) -> Program {
        let group = i32::try_from(child.id()).expect("process ids fit in pid_t");
        register_group(group);
        // Bounded: a program that writes faster than the trial reads waits.
        let (sender, output) = bounded(1024);
        spawn_reader(
            child.stdout.take().expect("piped stdout"),
            false,
            sender.clone(),
        );
        spawn_reader(child.stderr.take().expect("piped stderr"), true, sender);
        Program {
            child,
            group,
            output,
            open_streams: 2,
            exit: None,
        }
    }

    /// Notes the program's exit once it has happened.
    fn poll_exit(&mut self) {
        if self.exit.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exit = Some(Ok(status)),
                Ok(None) => {}
                Err(e) => self.exit = Some(Err(e)),
            }
        }
    }

    /// The next piece of output within `wait`; `None` when there is none yet.
    fn next(&mut self, wait: Duration) -> Option<Output> {
        match self.output.recv_timeout(wait) {
            Ok(Output::Closed) => {
                self.open_streams -= 1;
                Some(Output::Closed)
            }
            Ok(output) => Some(output),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.open_streams = 0;
                None
            }
        }
    }

    /// Ends the program's whole process group (SIGTERM, then SIGKILL after
    /// [`STOP_GRACE`]), logging what it writes meanwhile.
    fn end(&mut self, log: &dyn Fn(&str)) {
        let mut drain = |program: &mut Program, wait: Duration| {
            if let Some(Output::Piece { text, .. }) = program.next(wait) {
                log(&text);
            }
            program.poll_exit();
        };
        end_group(self, self.group, &mut drain);
        unregister_group(self.group);
        if self.exit.is_none() {
            self.exit = Some(self.child.wait());
        }
        // What was written before the end; processes that left the group
        // may hold the pipes open, so this waits a moment only.
        let until = Instant::now() + LINGER;
        while self.open_streams > 0 && Instant::now() < until {
            drain(self, POLL);
        }
    }
}

/// How a trial ended early, by bocb's decision.
enum Verdict {
    Stopped,
    Diverged(String),
    Failed(String),
    TimedOut(TimeLimit),
    Dropped,
}

/// One trial's reading of its program's output.
struct Trial<'a> {
    trial: &'a ExternalTrial,
    spec: &'a TrialSpec,
    observer: &'a mut dyn TrialObserver,
    checkpoint: &'a mut CheckpointWatch,
    log: &'a dyn Fn(&str),
    tail: Vec<String>,
    /// The last epoch the store holds: a resumed program reports from the next.
    resume_epoch: u32,
    last_epoch: u32,
    last_accuracy: Option<f64>,
    /// When the last epoch was reported (or the program started).
    last_epoch_at: Instant,
}

impl Trial<'_> {
    /// Follows the program until it ends or must be ended; returns the
    /// trial's result (the program still has to be ended).
    fn follow(mut self, program: &mut Program, dropped: &dyn Fn() -> bool) -> TrialResult {
        let started = Instant::now();
        let deadline = self.trial.timeout.map(|limit| (started + limit.0, limit));
        let mut exited_at: Option<Instant> = None;
        let verdict = loop {
            if dropped() || RECEIVED_SIGNAL.load(Ordering::SeqCst) != 0 {
                break Some(Verdict::Dropped);
            }
            if let Some((_, limit)) = deadline.filter(|(at, _)| Instant::now() >= *at) {
                break Some(Verdict::TimedOut(limit));
            }
            program.poll_exit();
            if program.exit.is_some() {
                if program.open_streams == 0 {
                    break None;
                }
                // Processes the program left behind hold its output open:
                // they end with it.
                let exited = *exited_at.get_or_insert_with(Instant::now);
                if exited.elapsed() > LINGER {
                    kill_group(program.group, libc::SIGKILL);
                }
                if exited.elapsed() > 3 * LINGER {
                    break None;
                }
            }
            match program.next(POLL) {
                Some(Output::Piece {
                    from_stderr,
                    text,
                    whole_line,
                }) => {
                    let report = (!from_stderr && whole_line)
                        .then(|| text.strip_prefix(REPORT_PREFIX))
                        .flatten();
                    let verdict = report.and_then(|json| self.report(&text, json));
                    self.keep(text);
                    if verdict.is_some() {
                        break verdict;
                    }
                }
                Some(Output::Unreadable(problem)) => break Some(Verdict::Failed(problem)),
                Some(Output::Closed) | None => {}
            }
        };
        let wall_s = Some(started.elapsed().as_secs_f64());
        let command = &self.trial.command;
        let tail = self.tail.join("\n");
        // The program's precision and memory are its own business: not recorded.
        let ended = |status, final_accuracy, note| TrialResult {
            status,
            final_accuracy,
            ema_accuracy: None,
            wall_s,
            precision: None,
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
            classes: None,
            note,
            grad_norms: None,
        };
        match verdict {
            Some(Verdict::Stopped) => ended(TrialStatus::Stopped, self.last_accuracy, None),
            Some(Verdict::Diverged(note)) => ended(TrialStatus::Diverged, None, Some(note)),
            Some(Verdict::Failed(problem)) => TrialResult::failed(problem),
            Some(Verdict::TimedOut(limit)) => TrialResult::failed(format!(
                "timed out: `{command}` ran longer than its time limit of {limit} (`trial.timeout`, or without it {DERIVED_LIMIT_FACTOR}x the longest done trial of its pair, at least {}) and was ended; its last output:\n{tail}",
                TimeLimit(MIN_DERIVED_LIMIT)
            )),
            Some(Verdict::Dropped) => TrialResult::failed(format!(
                "`{command}` was ended: the trial was dropped (its experiment stopped, or the service re-queued it)"
            )),
            None => match &program.exit {
                Some(Ok(exit)) if exit.success() => match self.last_epoch {
                    0 => TrialResult::failed(format!(
                        "`{command}` exited without printing a `{REPORT_PREFIX}{{...}}` line; its last output:\n{tail}"
                    )),
                    epoch if epoch < self.spec.epochs => TrialResult::failed(format!(
                        "`{command}` exited after reporting epoch {epoch} of {}; report every epoch up to `epochs` (in BOCB_PARAMS); its last output:\n{tail}",
                        self.spec.epochs
                    )),
                    _ => ended(TrialStatus::Done, self.last_accuracy, None),
                },
                Some(Ok(exit)) => TrialResult::failed(format!(
                    "`{command}` failed ({exit}); its last output:\n{tail}"
                )),
                Some(Err(e)) => TrialResult::failed(format!("cannot wait for `{command}`: {e}")),
                None => TrialResult::failed(format!(
                    "`{command}` closed its output but did not exit"
                )),
            },
        }
    }

    /// Logs a piece of output and keeps it for a failed trial's error.
    fn keep(&mut self, text: String) {
        (self.log)(&text);
        let mut kept: String = text.chars().take(TAIL_LINE_CHARS).collect();
        if kept.len() < text.len() {
            kept.push_str(" [...]");
        }
        self.tail.push(kept);
        if self.tail.len() > OUTPUT_TAIL_LINES {
            self.tail.remove(0);
        }
    }

    /// Takes one report line; a verdict when the trial must end now.
    fn report(&mut self, line: &str, json: &str) -> Option<Verdict> {
        let report: Report = match serde_json::from_str(&quote_non_finite(json)) {
            Ok(report) => report,
            Err(e) => {
                return Some(Verdict::Failed(format!(
                    "bad report line `{line}`: {e}; print `{REPORT_PREFIX}{{\"epoch\": 1, \"accuracy\": 71.2}}` (accuracy in percent, optional \"loss\")"
                )))
            }
        };
        let expected = self.last_epoch + 1;
        let resumed = self.last_epoch == 0 && report.epoch == self.resume_epoch + 1;
        if (report.epoch != expected && !resumed) || report.epoch > self.spec.epochs {
            let reported = if self.last_epoch == 0 {
                "no epoch yet".to_string()
            } else {
                format!("epochs 1 to {}", self.last_epoch)
            };
            return Some(Verdict::Failed(format!(
                "bad report line `{line}`: after {reported}, epoch {} is out of order; epochs must run 1, 2, ... up to `epochs` ({}), one report each",
                report.epoch, self.spec.epochs
            )));
        }
        if self.last_epoch == 0 {
            // The first report tells where the program started: from
            // its checkpoint, or over from epoch 1.
            self.observer.on_start(report.epoch - 1);
        }
        self.last_epoch = report.epoch;
        if let Some(value) = [Some(report.accuracy), report.loss]
            .into_iter()
            .flatten()
            .find(|v| !v.is_finite())
        {
            return Some(Verdict::Diverged(format!(
                "the program reported {value} in epoch {}: `{line}`",
                report.epoch
            )));
        }
        let epoch = EpochMetrics {
            epoch: report.epoch,
            train_loss: report.loss.unwrap_or(f64::NAN),
            test_loss: f64::NAN,
            test_accuracy: report.accuracy,
            lr: self.spec.hparams.get("lr").copied().unwrap_or(f64::NAN),
            // Not measured: the program reports no throughput.
            images_per_sec: f64::NAN,
            wall_s: self.last_epoch_at.elapsed().as_secs_f64(),
            ema_test_accuracy: None,
        };
        self.last_epoch_at = Instant::now();
        self.last_accuracy = Some(report.accuracy);
        self.observer.on_epoch(&epoch);
        self.checkpoint.offer(&mut *self.observer);
        (report.epoch < self.spec.epochs && self.observer.stop_after_epoch(&epoch))
            .then_some(Verdict::Stopped)
    }
}

/// Sends `signal` to every process of `group`; false when none is left.
fn kill_group(group: i32, signal: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; a negative pid names a group.
    unsafe { libc::kill(-group, signal) == 0 }
}

/// Ends `group`: SIGTERM, then SIGKILL if it outlives [`STOP_GRACE`].
/// `wait(program, d)` waits up to `d` doing the program's chores (reaping
/// its leader, reading its output), so that the group can empty.
fn end_group(program: &mut Program, group: i32, wait: &mut dyn FnMut(&mut Program, Duration)) {
    let alive = |program: &mut Program| {
        program.poll_exit();
        kill_group(group, 0)
    };
    if !kill_group(group, libc::SIGTERM) {
        return;
    }
    for signal_after in [STOP_GRACE, STOP_GRACE] {
        let until = Instant::now() + signal_after;
        while alive(program) && Instant::now() < until {
            wait(program, POLL);
        }
        if !alive(program) {
            return;
        }
        kill_group(group, libc::SIGKILL);
    }
}

/// The process groups of the programs running in this process, ended
/// when a signal ends it.
static RUNNING_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// The signal received, 0 before one.
static RECEIVED_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// bocb's own trials training in this process, each saving its checkpoint
/// and stopping at its next batch once a signal came.
static SAVING_TRIALS: AtomicUsize = AtomicUsize::new(0);
/// How long a signal waits for those trials before it ends bocb anyway.
const SAVE_GRACE: Duration = Duration::from_secs(300);

fn install_signal_handlers() {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(end_programs_on_signals);
}

fn register_group(group: i32) {
    install_signal_handlers();
    RUNNING_GROUPS.lock().expect("groups lock").push(group);
}

/// Whether bocb is ending on a signal: running trials save and stop.
pub fn signalled() -> bool {
    RECEIVED_SIGNAL.load(Ordering::SeqCst) != 0
}

/// What a worker does on a signal once its trial saved its checkpoint,
/// before it exits with status 0 instead of dying of the signal.
type Leave = Box<dyn FnOnce() + Send>;
static LEAVE: Mutex<Option<Leave>> = Mutex::new(None);

/// From now on a signal (SIGINT, SIGTERM, SIGHUP, SIGUSR1), once the
/// running trials saved their checkpoints, runs `leave` and exits cleanly:
/// a preempted or timed-out job's worker ends as a finished one.
pub fn leave_cleanly_on_signals(leave: impl FnOnce() + Send + 'static) {
    *LEAVE.lock().expect("leave lock") = Some(Box::new(leave));
    install_signal_handlers();
}

/// Held while one of bocb's own trials trains in this process: a signal
/// then waits (up to [`SAVE_GRACE`]) for the trial to see [`signalled`],
/// save its checkpoint and drop this, before it ends bocb.
pub struct SaveOnSignal(());

impl SaveOnSignal {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        install_signal_handlers();
        SAVING_TRIALS.fetch_add(1, Ordering::SeqCst);
        SaveOnSignal(())
    }
}

impl Drop for SaveOnSignal {
    fn drop(&mut self) {
        SAVING_TRIALS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// For a trial stopped by the signal that ends bocb: nothing is recorded
/// (it runs again next time, from its checkpoint); the signal ends the process.
pub fn stay_until_the_signal_ends_bocb() -> ! {
    loop {
        std::thread::park();
    }
}

fn unregister_group(group: i32) {
    RUNNING_GROUPS
        .lock()
        .expect("groups lock")
        .retain(|&g| g != group);
}

/// Ends the running programs' groups, as a stopped trial's.
pub fn end_running_programs() {
    let groups = RUNNING_GROUPS.lock().expect("groups lock").clone();
    for group in &groups {
        kill_group(*group, libc::SIGTERM);
    }
    let until = Instant::now() + STOP_GRACE;
    while groups.iter().any(|&g| kill_group(g, 0)) && Instant::now() < until {
        std::thread::sleep(POLL);
    }
    for group in groups {
        kill_group(group, libc::SIGKILL);
    }
}

extern "C" fn note_signal(signal: libc::c_int) {
    RECEIVED_SIGNAL.store(signal, Ordering::SeqCst);
}

/// A program in its own group no longer hears the terminal's Ctrl-C, nor
/// dies with bocb: on SIGINT, SIGTERM, SIGHUP or SIGUSR1 bocb ends the
/// running programs' groups, lets its own trials save their checkpoints,
/// then dies of the signal as it would have.
fn end_programs_on_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(signal, note_signal as *const () as libc::sighandler_t);
        }
    }
    std::thread::spawn(|| loop {
        let signal = RECEIVED_SIGNAL.load(Ordering::SeqCst);
        if signal != 0 {
            end_running_programs();
            let until = Instant::now() + SAVE_GRACE;
            while SAVING_TRIALS.load(Ordering::SeqCst) > 0 && Instant::now() < until {
                std::thread::sleep(POLL);
            }
            let leave = LEAVE.lock().expect("leave lock").take();
            if let Some(leave) = leave {
                leave();
                std::process::exit(0);
            }
            // SAFETY: restores the default action and raises the signal again.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
        }
        std::thread::sleep(POLL);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Experiment;
    use crate::registries::Registries;

    fn spec(dir: &Path, epochs: u32) -> TrialSpec {
        let registries = Registries::builtin();
        let source = format!("name: x\ndataset: {{ format: cifar100-bin, path: . }}\nbackbones: [resnet18_cifar]\noptimizers: [sgd_m]\nepochs: {epochs}\n");
        let experiment = Experiment::parse(&source, "x.yaml", dir, &registries).unwrap();
        let params = [("lr".to_string(), 0.1), ("weight_decay".to_string(), 0.0)].into();
        experiment.trial_spec("resnet18_cifar", "sgd_m", &params, 0, None)
    }

    /// Hears every start and epoch; asks to stop after `stop_after` when given.
    #[derive(Default)]
    struct Listener {
        started: Vec<u32>,
        epochs: Vec<(u32, f64)>,
        stop_after: Option<u32>,
    }

    impl TrialObserver for Listener {
        fn on_start(&mut self, epochs_done: u32) {
            self.started.push(epochs_done);
        }
        fn on_epoch(&mut self, report: &EpochMetrics) {
            self.epochs.push((report.epoch, report.test_accuracy));
        }
        fn stop_after_epoch(&mut self, report: &EpochMetrics) -> bool {
            self.stop_after == Some(report.epoch)
        }
    }

    struct Ran {
        result: TrialResult,
        epochs: Vec<(u32, f64)>,
        log: Vec<String>,
    }

    /// Runs `script` (written to `trial.sh` in `dir`) as a trial of `epochs`
    /// epochs on a thread; a run that does not end within a minute fails
    /// the test instead of hanging it.
    fn run_in(
        dir: &Path,
        script: &str,
        epochs: u32,
        timeout: Option<Duration>,
        stop_after: Option<u32>,
        dropped: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    ) -> Ran {
        std::fs::write(dir.join("trial.sh"), script).unwrap();
        let trial = ExternalTrial {
            command: "sh trial.sh".into(),
            timeout: timeout.map(TimeLimit),
        };
        let spec = spec(dir, epochs);
        let dir = dir.to_path_buf();
        let (done, ran) = bounded(1);
        std::thread::spawn(move || {
            let mut listener = Listener {
                stop_after,
                ..Listener::default()
            };
            let lines = Mutex::new(Vec::new());
            let log = |line: &str| lines.lock().unwrap().push(line.to_string());
            let is_dropped = || dropped.as_ref().is_some_and(|d| d.load(Ordering::SeqCst));
            let result = run_external(
                &trial,
                "t",
                &spec,
                &dir,
                0,
                &mut listener,
                &log,
                &is_dropped,
            );
            let _ = done.send(Ran {
                result,
                epochs: listener.epochs,
                log: lines.into_inner().unwrap(),
            });
        });
        ran.recv_timeout(Duration::from_secs(60))
            .expect("the trial ended within a minute")
    }

    fn run(script: &str, epochs: u32) -> Ran {
        let dir = tempfile::tempdir().unwrap();
        run_in(dir.path(), script, epochs, None, None, None)
    }

    fn report(epoch: u32, accuracy: &str) -> String {
        format!("echo 'BOCB_REPORT {{\"epoch\": {epoch}, \"accuracy\": {accuracy}}}'\n")
    }

    /// Whether process `pid` is gone (or a zombie awaiting its reaper).
    fn gone(pid: &str) -> bool {
        // An empty pid file: the shell was ended between `>` and the write.
        if pid.trim().is_empty() {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        stat.map_or(true, |s| s.contains(") Z "))
    }

    /// A program run again after an interruption finds its checkpoint
    /// directory and the last stored epoch, and reports from the next one.
    #[test]
    fn a_resumed_program_gets_its_checkpoint_dir_and_reports_after_the_stored_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"echo "dir=$BOCB_CHECKPOINT_DIR resume=$BOCB_RESUME_EPOCH"
echo 'BOCB_REPORT {"epoch": 3, "accuracy": 30}'
echo 'BOCB_REPORT {"epoch": 4, "accuracy": 40}'
"#;
        std::fs::write(dir.path().join("trial.sh"), script).unwrap();
        let trial = ExternalTrial {
            command: "sh trial.sh".into(),
            // Also the test's deadline.
            timeout: Some(TimeLimit(Duration::from_secs(60))),
        };
        let mut spec = spec(dir.path(), 4);
        let checkpoints = dir.path().join("ckpt");
        spec.checkpoint_dir = Some(checkpoints.clone());
        let run = |resume_epoch| {
            let mut listener = Listener::default();
            let lines = Mutex::new(Vec::new());
            let log = |line: &str| lines.lock().unwrap().push(line.to_string());
            let result = run_external(
                &trial,
                "t",
                &spec,
                dir.path(),
                resume_epoch,
                &mut listener,
                &log,
                &|| false,
            );
            let log = lines.into_inner().unwrap();
            (result, listener.epochs, log, listener.started)
        };
        let (result, epochs, log, started) = run(2);
        assert_eq!(result.status, TrialStatus::Done, "{:?}", result.note);
        assert_eq!(epochs, [(3, 30.0), (4, 40.0)]);
        assert_eq!(started, [2], "its run starts after the stored epochs");
        let expected = format!("dir={} resume=2", checkpoints.display());
        assert!(log.iter().any(|l| l.contains(&expected)), "{log:?}");
        // Without stored epochs, epoch 3 first is out of order.
        let (result, _, _, _) = run(0);
        assert_eq!(result.status, TrialStatus::Failed);
        assert!(result.note.unwrap().contains("out of order"));
        // A program that starts over instead reports epoch 1 first: its run
        // starts after no epoch, even when it diverges at once.
        std::fs::write(dir.path().join("trial.sh"), report(1, "NaN")).unwrap();
        let (result, epochs, _, started) = run(2);
        assert_eq!(result.status, TrialStatus::Diverged, "{:?}", result.note);
        assert_eq!((epochs, started), (vec![], vec![0]));
    }

    #[test]
    fn a_non_utf8_line_is_logged_lossily_and_reading_goes_on() {
        let script = format!(
            "{}printf 'bad \\377\\376 bytes\\n'\n{}{}",
            report(1, "10"),
            report(2, "20"),
            report(3, "30.5")
        );
        let ran = run(&script, 3);
        assert_eq!(ran.result.status, TrialStatus::Done, "{:?}", ran.result);
        assert_eq!(ran.result.final_accuracy, Some(30.5));
        assert_eq!(ran.epochs, [(1, 10.0), (2, 20.0), (3, 30.5)]);
        assert!(
            ran.log.contains(&"bad \u{fffd}\u{fffd} bytes".to_string()),
            "{:?}",
            ran.log
        );
    }

    #[test]
    fn a_program_that_stops_reporting_early_is_not_done() {
        let ran = run(&format!("{}{}", report(1, "10"), report(2, "20")), 3);
        assert_eq!(ran.result.status, TrialStatus::Failed);
        let note = ran.result.note.unwrap();
        assert!(note.contains("after reporting epoch 2 of 3"), "{note}");
    }

    #[test]
    fn python_nan_and_infinity_mean_diverged() {
        for value in ["NaN", "Infinity", "-Infinity"] {
            let ran = run(&format!("{}{}", report(1, "10"), report(2, value)), 3);
            assert_eq!(ran.result.status, TrialStatus::Diverged, "{:?}", ran.result);
            let note = ran.result.note.unwrap();
            assert!(note.contains("in epoch 2"), "{note}");
            assert_eq!(ran.epochs, [(1, 10.0)]);
        }
        let loss = "echo 'BOCB_REPORT {\"epoch\": 1, \"accuracy\": 5, \"loss\": NaN}'\n";
        assert_eq!(run(loss, 2).result.status, TrialStatus::Diverged);
        // Inside a string the names are text, and the line is refused.
        let quoted = "echo 'BOCB_REPORT {\"epoch\": 1, \"accuracy\": \"x NaN\"}'\n";
        assert_eq!(run(quoted, 1).result.status, TrialStatus::Failed);
        assert_eq!(
            quote_non_finite(r#"{"a": NaN, "b": "Infinity \" NaN", "c": -Infinity}"#),
            r#"{"a": "NaN", "b": "Infinity \" NaN", "c": "-Infinity"}"#
        );
    }

    #[test]
    fn epochs_must_run_from_one_to_epochs_in_order() {
        let cases = [
            (report(0, "10"), "epoch 0 is out of order"),
            (
                format!("{}{}", report(1, "10"), report(1, "11")),
                "epoch 1 is out of order",
            ),
            (
                format!("{}{}", report(1, "10"), report(3, "11")),
                "epoch 3 is out of order",
            ),
            (
                format!("{}{}{}", report(1, "10"), report(2, "11"), report(3, "12")),
                "epoch 3 is out of order; epochs must run 1, 2, ... up to `epochs` (2)",
            ),
        ];
        for (script, problem) in cases {
            let ran = run(&script, 2);
            assert_eq!(ran.result.status, TrialStatus::Failed);
            let note = ran.result.note.unwrap();
            assert!(note.contains(problem), "{note}");
            // The offending line is quoted.
            assert!(
                note.contains("bad report line `BOCB_REPORT {\"epoch\""),
                "{note}"
            );
        }
    }

    /// A program that reports epoch 1, starts a helper in the background
    /// and then hangs without a word; both write their pids.
    const HANGING: &str = "echo 'BOCB_REPORT {\"epoch\": 1, \"accuracy\": 10}'\nsleep 1000 &\necho $! > helper.pid\necho $$ > main.pid\nwait\n";

    #[test]
    fn early_stopping_ends_the_programs_whole_group_while_it_is_silent() {
        let dir = tempfile::tempdir().unwrap();
        let ran = run_in(dir.path(), HANGING, 3, None, Some(1), None);
        assert_eq!(ran.result.status, TrialStatus::Stopped, "{:?}", ran.result);
        assert_eq!(ran.result.final_accuracy, Some(10.0));
        for pid in ["helper.pid", "main.pid"] {
            // Written before the trial could stop only if the program got
            // that far; the helper may not have started yet.
            if let Ok(pid) = std::fs::read_to_string(dir.path().join(pid)) {
                assert!(gone(&pid), "process {pid} outlived its trial");
            }
        }
    }

    #[test]
    fn a_hanging_program_times_out_and_its_group_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let script = HANGING.replace("wait", "echo ready\nwait");
        let ran = run_in(
            dir.path(),
            &script,
            3,
            Some(Duration::from_secs(1)),
            None,
            None,
        );
        assert_eq!(ran.result.status, TrialStatus::Failed);
        let note = ran.result.note.unwrap();
        assert!(
            note.starts_with("timed out: `sh trial.sh` ran longer than its time limit of 1s"),
            "{note}"
        );
        assert!(note.contains("ready"), "{note}");
        for pid in ["helper.pid", "main.pid"] {
            let pid = std::fs::read_to_string(dir.path().join(pid)).unwrap();
            assert!(gone(&pid), "process {pid} outlived its trial");
        }
    }

    #[test]
    fn a_dropped_trial_ends_its_program_and_a_term_ignoring_one_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&dropped);
        let ready = dir.path().join("main.pid");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !ready.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            flag.store(true, Ordering::SeqCst);
        });
        let script = format!("trap '' TERM\n{HANGING}");
        let ran = run_in(dir.path(), &script, 3, None, None, Some(dropped));
        assert_eq!(ran.result.status, TrialStatus::Failed);
        assert!(ran.result.note.unwrap().contains("the trial was dropped"));
        for pid in ["helper.pid", "main.pid"] {
            let pid = std::fs::read_to_string(dir.path().join(pid)).unwrap();
            assert!(gone(&pid), "process {pid} outlived its trial");
        }
    }

    #[test]
    fn long_output_reaches_the_log_in_bounded_pieces_and_no_token_leaks() {
        // 1 MiB without a line break, then the environment and a report.
        let script = format!(
            "head -c 1048576 /dev/zero | tr '\\0' x\necho\nenv\n{}",
            report(1, "12")
        );
        std::env::set_var("BOCB_TOKEN", "secret-token-value");
        let ran = run(&script, 1);
        assert_eq!(ran.result.status, TrialStatus::Done, "{:?}", ran.result);
        assert!(ran.log.iter().all(|piece| piece.len() <= MAX_PIECE_BYTES));
        let xs: usize = ran.log.iter().map(|p| p.matches('x').count()).sum();
        assert!(xs >= 1 << 20, "{xs}");
        assert!(ran.log.iter().any(|l| l.starts_with("BOCB_PARAMS=")));
        assert!(!ran.log.iter().any(|l| l.contains("secret-token-value")));
    }
}

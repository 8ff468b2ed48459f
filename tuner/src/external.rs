//! External trials, as in NNI: the experiment's `trial: { command: ... }`
//! is run once per trial with its parameters as JSON in `BOCB_PARAMS` and
//! in the file named by `BOCB_PARAMS_FILE`; it reports by printing lines
//! `BOCB_REPORT {"epoch": 3, "accuracy": 71.2}` (optionally `"loss"`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Instant;

use bocb_store::TrialStatus;
use bocb_trial_runner::{EpochReport, TrialObserver, TrialSpec};
use serde::{Deserialize, Serialize};

use crate::run::TrialResult;

/// The prefix of a report line on the program's standard output.
pub const REPORT_PREFIX: &str = "BOCB_REPORT ";
/// Lines of the program's output kept in a failed trial's error.
const OUTPUT_TAIL_LINES: usize = 10;

/// The experiment's `trial:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTrial {
    /// Run with `sh -c` in the experiment file's directory.
    pub command: String,
}

/// One report line as the program prints it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    epoch: u32,
    accuracy: f64,
    #[serde(default)]
    loss: Option<f64>,
}

/// What the program finds in `BOCB_PARAMS`.
#[derive(Debug, Serialize)]
struct Params<'a> {
    trial: &'a str,
    backbone: &'a str,
    optimizer: &'a str,
    seed: u64,
    epochs: u32,
    batch_size: usize,
    /// lr, weight_decay and the optimizer's extras.
    params: &'a bocb_trial_runner::optim::Hparams,
}

/// Runs `trial.command` for one trial in `work_dir`, forwarding its reports
/// to `observer` and killing it when the observer says stop. Every line it
/// writes goes to `log`.
pub fn run_external(
    trial: &ExternalTrial,
    trial_id: &str,
    spec: &TrialSpec,
    work_dir: &std::path::Path,
    observer: &mut dyn TrialObserver,
    log: &(dyn Fn(&str) + Sync),
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
    let result = run_command(trial, &params, &params_file, spec, work_dir, observer, log);
    let _ = std::fs::remove_file(&params_file);
    result
}

fn run_command(
    trial: &ExternalTrial,
    params: &str,
    params_file: &std::path::Path,
    spec: &TrialSpec,
    work_dir: &std::path::Path,
    observer: &mut dyn TrialObserver,
    log: &(dyn Fn(&str) + Sync),
) -> TrialResult {
    let started = Instant::now();
    let spawned = Command::new("sh")
        .args(["-c", &trial.command])
        .current_dir(work_dir)
        .env("BOCB_PARAMS", params)
        .env("BOCB_PARAMS_FILE", params_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return TrialResult::failed(format!("cannot run `{}`: {e}", trial.command));
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut tail: Vec<String> = Vec::new();
    let mut last_accuracy: Option<f64> = None;
    let mut last_epoch_at = Instant::now();
    let mut stopped = false;
    let mut bad_report: Option<String> = None;
    std::thread::scope(|scope| {
        let stderr_lines = scope.spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            for line in text.lines() {
                log(line);
            }
            text
        });
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            log(&line);
            tail.push(line.clone());
            if tail.len() > OUTPUT_TAIL_LINES {
                tail.remove(0);
            }
            let Some(json) = line.strip_prefix(REPORT_PREFIX) else {
                continue;
            };
            let report: Report = match serde_json::from_str(json) {
                Ok(report) => report,
                Err(e) => {
                    bad_report = Some(format!(
                        "bad report line `{line}`: {e}; print `{REPORT_PREFIX}{{\"epoch\": 1, \"accuracy\": 71.2}}` (accuracy in percent, optional \"loss\")"
                    ));
                    break;
                }
            };
            let epoch = EpochReport {
                epoch: report.epoch,
                train_loss: report.loss.unwrap_or(f64::NAN),
                test_loss: f64::NAN,
                test_accuracy: report.accuracy,
                lr: spec.hparams.get("lr").copied().unwrap_or(f64::NAN),
                // Not measured: the program reports no throughput.
                images_per_sec: f64::NAN,
                wall_s: last_epoch_at.elapsed().as_secs_f64(),
                ema_test_accuracy: None,
            };
            last_epoch_at = Instant::now();
            last_accuracy = Some(report.accuracy);
            observer.on_epoch(&epoch);
            if report.epoch < spec.epochs && observer.stop_after_epoch(&epoch) {
                stopped = true;
                break;
            }
        }
        if stopped || bad_report.is_some() {
            let _ = child.kill();
        }
        let stderr_text = stderr_lines.join().unwrap_or_default();
        for line in stderr_text.lines() {
            tail.push(line.to_string());
        }
    });
    let status = child.wait();
    let wall_s = Some(started.elapsed().as_secs_f64());
    // The program's precision and memory are its own business: not recorded.
    let ended = |status: TrialStatus, note: Option<String>| TrialResult {
        status,
        final_accuracy: last_accuracy,
        ema_accuracy: None,
        wall_s,
        precision: None,
        peak_memory_bytes: None,
        note,
    };
    if let Some(problem) = bad_report {
        return TrialResult::failed(problem);
    }
    if stopped {
        return ended(TrialStatus::Stopped, None);
    }
    let tail_text = tail[tail.len().saturating_sub(OUTPUT_TAIL_LINES)..].join("\n");
    match status {
        Ok(exit) if exit.success() => match last_accuracy {
            Some(accuracy) if accuracy.is_finite() => ended(TrialStatus::Done, None),
            Some(_) => ended(
                TrialStatus::Diverged,
                Some("the program reported a non-finite accuracy".to_string()),
            ),
            None => TrialResult::failed(format!(
                "`{}` exited without printing a `{REPORT_PREFIX}{{...}}` line; its last output:\n{tail_text}",
                trial.command
            )),
        },
        Ok(exit) => TrialResult::failed(format!(
            "`{}` failed ({exit}); its last output:\n{tail_text}",
            trial.command
        )),
        Err(e) => TrialResult::failed(format!("cannot wait for `{}`: {e}", trial.command)),
    }
}

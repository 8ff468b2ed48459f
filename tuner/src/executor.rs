//! What the search hands a trial to and gets back: the executor seam
//! (in-process, external program, service queue) and its job, result and
//! error types.

use std::path::Path;

use bocb_spec::{ExternalTrial, TrialObserver, TrialOutcome, TrialSpec};
use bocb_store::{StoreError, StoredSpecError, TrialEnd, TrialStatus};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StoredSpec(#[from] StoredSpecError),
    #[cfg(feature = "train")]
    #[error(transparent)]
    Data(#[from] bocb_trial_runner::data::DataError),
    #[error("{0}")]
    Device(String),
    /// An earlier experiment that `init: { from_experiment }` or
    /// `transfer_from` names cannot be found or used.
    #[error("{0}")]
    Transfer(String),
    /// The experiment was stopped (`bocb stop`) while the trial waited or ran.
    #[error("the experiment was stopped")]
    Cancelled,
    #[error("experiment `{name}` is already in the store with other training settings:\n  stored: {stored}\n  now:    {now}\nrename the experiment, or restore the stored settings to grow it")]
    SettingsChanged {
        name: String,
        stored: String,
        now: String,
    },
}

/// One trial to train, as an executor gets it.
pub struct TrialJob<'a> {
    pub experiment: &'a str,
    pub id: &'a str,
    pub spec: &'a TrialSpec,
    /// The program to run instead of bocb's trainer, and where.
    pub external: Option<&'a ExternalTrial>,
    pub work_dir: &'a Path,
    /// The last epoch the store holds (0: none), where a program resumes.
    pub resume_epoch: u32,
}

/// How a trial ended, as an executor reports it (and a worker sends it;
/// what the trial ran with is absent from older workers' messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub status: TrialStatus,
    pub final_accuracy: Option<f64>,
    /// Accuracy of the weights' moving average, when the recipe keeps one.
    #[serde(default)]
    pub ema_accuracy: Option<f64>,
    pub wall_s: Option<f64>,
    /// The arithmetic of the training step; `None` where bocb did not
    /// train (an external trial).
    #[serde(default)]
    pub precision: Option<String>,
    /// Peak memory in bytes, where it was measured.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Bytes of optimizer state, where bocb trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_state_bytes: Option<u64>,
    /// Classes of the data bocb trained on; `None` for an external trial.
    #[serde(default)]
    pub classes: Option<u32>,
    /// Why the trial failed, diverged or stopped.
    pub note: Option<String>,
    /// Gradient norms per layer group, where bocb trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norms: Option<bocb_store::GradNorms>,
}

impl TrialResult {
    /// The result of a trial that ran to an error.
    pub fn failed(error: String) -> Self {
        Self::ended_without_metrics(TrialStatus::Failed, error)
    }

    /// A trial that ended as `status` before reporting any result, with why.
    pub fn ended_without_metrics(status: TrialStatus, note: String) -> Self {
        TrialResult {
            status,
            final_accuracy: None,
            ema_accuracy: None,
            wall_s: None,
            precision: None,
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
            classes: None,
            note: Some(note),
            grad_norms: None,
        }
    }

    /// What the store records beside the status.
    pub fn end(&self) -> TrialEnd {
        TrialEnd {
            final_accuracy: self.final_accuracy,
            ema_accuracy: self.ema_accuracy,
            wall_time_s: self.wall_s,
            precision: self.precision.clone(),
            peak_memory_bytes: self.peak_memory_bytes,
            optimizer_state_bytes: self.optimizer_state_bytes,
            classes: self.classes,
            error: self.note.clone(),
            grad_norms: self.grad_norms.clone(),
        }
    }

    /// The store's view of the trial runner's outcome.
    pub fn from_outcome(outcome: TrialOutcome) -> Self {
        TrialResult {
            status: outcome.status,
            final_accuracy: outcome.final_accuracy,
            ema_accuracy: outcome.ema_accuracy,
            wall_s: Some(outcome.wall_s),
            precision: Some(outcome.precision).filter(|p| !p.is_empty()),
            peak_memory_bytes: outcome.peak_memory_bytes,
            optimizer_state_bytes: Some(outcome.optimizer_state_bytes as u64),
            classes: outcome.classes,
            note: outcome.note,
            grad_norms: outcome.grad_norms,
        }
    }
}

/// Where trials are trained: in this process, or by workers of the service.
/// The search blocks in `execute` until the trial has ended, forwarding each
/// epoch report to `observer` and its early-stop answer back to the trainer.
pub trait TrialExecutor: Sync {
    fn execute(
        &self,
        job: &TrialJob,
        observer: &mut dyn TrialObserver,
    ) -> Result<TrialResult, RunError>;
}

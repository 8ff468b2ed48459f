//! A trial's checkpoint: everything its training loop needs to continue as
//! if never stopped, in one directory per trial.
//!
//! `state-<epoch>-<batch>.safetensors` holds the tensors (weights, moving
//! average, optimizer state, the epoch's running loss); `checkpoint.json`
//! holds the position and names that file. Each is written under a
//! temporary name, synced and renamed, the JSON last: a reader sees the old
//! checkpoint or the new one, never half of one. Random streams need no
//! saving: every draw of an epoch derives from the trial's seed, the epoch
//! and the batch.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bocb_spec::TrialSpec;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use thiserror::Error;

/// Bumped when what a checkpoint holds changes meaning.
const FORMAT: u32 = 1;

/// The commit point of a checkpoint directory.
const POSITION_FILE: &str = "checkpoint.json";

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("cannot write the checkpoint {}: {message}", .path.display())]
    Write { path: PathBuf, message: String },
    #[error("the checkpoint {} cannot be used: {message}; delete {} to start the trial over", .path.display(), .dir.display())]
    Unusable {
        path: PathBuf,
        dir: PathBuf,
        message: String,
    },
}

/// Where a checkpointed trial stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Position {
    format: u32,
    /// The trial it belongs to ([`identity`]): another trial's is refused.
    trial: serde_json::Value,
    /// Epochs trained and evaluated.
    pub epochs_done: u32,
    /// Batches trained of the next epoch (0 at an epoch's end).
    pub batches_done: usize,
    /// Optimizer steps so far, the schedule's position.
    pub step: usize,
    /// Whether an epoch has taken long enough for automatic checkpoints.
    pub long_epochs: bool,
    /// Training time before this checkpoint, over all runs.
    pub wall_s: f64,
    /// The file with the tensors, in the same directory.
    tensors: String,
}

impl Position {
    /// The start of `spec`'s training.
    pub fn start(spec: &TrialSpec) -> Self {
        Position {
            format: FORMAT,
            trial: identity(spec),
            epochs_done: 0,
            batches_done: 0,
            step: 0,
            long_epochs: false,
            wall_s: 0.0,
            tensors: String::new(),
        }
    }

    /// This position moved on to `epochs_done` epochs and `batches_done`
    /// batches of the next, after `step` steps and `wall_s` seconds.
    pub fn moved_to(
        &self,
        epochs_done: u32,
        batches_done: usize,
        step: usize,
        wall_s: f64,
    ) -> Self {
        Position {
            epochs_done,
            batches_done,
            step,
            wall_s,
            tensors: format!("state-{epochs_done}-{batches_done}.safetensors"),
            ..self.clone()
        }
    }
}

/// What decides a trial's numbers: its spec without where it runs, how
/// many threads make its batches, where its batches are made (the same
/// either way) and where its outputs go.
fn identity(spec: &TrialSpec) -> serde_json::Value {
    let spec = TrialSpec {
        device: Default::default(),
        data_workers: 0,
        data_on_device: Default::default(),
        save_weights: None,
        checkpoint_dir: None,
        checkpoint_every: None,
        init_weights: None,
        freeze: Vec::new(),
        ..spec.clone()
    };
    serde_json::to_value(&spec).expect("a trial spec serializes")
}

/// A checkpoint read back: its position and tensors (on the CPU) by name.
pub(crate) struct Checkpoint {
    pub position: Position,
    pub tensors: BTreeMap<String, Tensor>,
}

/// The checkpoint of `spec` in `dir`, if there is one.
pub(crate) fn load(dir: &Path, spec: &TrialSpec) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = dir.join(POSITION_FILE);
    let unusable = |path: &Path, message: String| CheckpointError::Unusable {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        message,
    };
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unusable(&path, e.to_string())),
    };
    let position: Position =
        serde_json::from_str(&text).map_err(|e| unusable(&path, e.to_string()))?;
    if position.format != FORMAT {
        return Err(unusable(
            &path,
            format!(
                "it is in format {}, this bocb reads {FORMAT}",
                position.format
            ),
        ));
    }
    if position.trial != identity(spec) {
        return Err(unusable(
            &path,
            "it belongs to another trial (backbone, optimizer, hyperparameters, seed or recipe differ)".into(),
        ));
    }
    let tensors_path = dir.join(&position.tensors);
    let tensors = Tensor::read_safetensors(&tensors_path)
        .map_err(|e| unusable(&tensors_path, e.to_string()))?
        .into_iter()
        .collect();
    Ok(Some(Checkpoint { position, tensors }))
}

/// The checkpoint in `dir` does not fit its trial: `message` says why.
pub(crate) fn unusable(dir: &Path, message: String) -> CheckpointError {
    CheckpointError::Unusable {
        path: dir.join(POSITION_FILE),
        dir: dir.to_path_buf(),
        message,
    }
}

/// Saves `tensors` at `position` in `dir`, replacing the checkpoint there.
pub(crate) fn save(
    dir: &Path,
    position: &Position,
    tensors: &[(String, Tensor)],
) -> Result<(), CheckpointError> {
    let failed = |path: &Path, message: String| CheckpointError::Write {
        path: path.to_path_buf(),
        message,
    };
    fs::create_dir_all(dir).map_err(|e| failed(dir, e.to_string()))?;
    let tensors_path = dir.join(&position.tensors);
    let on_cpu: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(name, t)| (name.as_str(), t.to_device(Device::Cpu).contiguous()))
        .collect();
    let temporary = temporary_name(&tensors_path);
    Tensor::write_safetensors(&on_cpu, &temporary)
        .map_err(|e| failed(&tensors_path, e.to_string()))?;
    commit(&temporary, &tensors_path).map_err(|e| failed(&tensors_path, e.to_string()))?;
    let path = dir.join(POSITION_FILE);
    let json = serde_json::to_vec_pretty(position).expect("a position serializes");
    let temporary = temporary_name(&path);
    File::create(&temporary)
        .and_then(|mut file| file.write_all(&json))
        .and_then(|()| commit(&temporary, &path))
        .map_err(|e| failed(&path, e.to_string()))?;
    // The earlier checkpoint's tensors are no longer named by the position.
    for entry in fs::read_dir(dir).map_err(|e| failed(dir, e.to_string()))? {
        let entry = entry.map_err(|e| failed(dir, e.to_string()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("state-") && name != position.tensors {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes the written `temporary` durable and puts it at `path` in one step.
fn commit(temporary: &Path, path: &Path) -> std::io::Result<()> {
    File::open(temporary)?.sync_all()?;
    fs::rename(temporary, path)?;
    if let Some(dir) = path.parent() {
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes `dir` and the checkpoint in it, once its trial has ended.
pub(crate) fn remove(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), "cannot remove the trial's checkpoint: {e}"),
    }
}

//! Speed against the PyTorch references: `bocb bench optim` times optimizer
//! steps ([`optim`]), `bocb bench train` whole training steps of a backbone
//! ([`train`]); `bocb optim info` measures each optimizer's state size.
//!
//! Each bench runs its reference side as an embedded python script (started
//! as `PYTHON -c SOURCE`, spoken to in JSON lines) and the two sides take
//! their steps in turn, so that both see the same machine load.

mod data;
mod optim;
mod pack;
mod train;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use bocb_trial_runner::models::ModelError;
use bocb_trial_runner::optim::OptimError;
use bocb_trial_runner::TrialError;
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

pub use data::{
    bench_data, bench_full_resolution, render_data, render_full_res, DataBenchConfig,
    DataBenchError, DataBenchReport, FullResBenchConfig, FullResBenchReport,
};
pub use optim::{
    bench_optimizers, optimizer_info, optimizers_info, parse_param_count, render_bench,
    render_info, resnet50_shapes, resnet50_shapes_for, BenchConfig, BenchReport, BenchRow,
    OptimizerInfo, ParamShape, RESNET50_PARAMS,
};
pub use pack::{bench_packing, render_pack, PackBenchConfig, PackReport, PackRow, PACK_GOAL};
pub use train::{
    bench_training, parse_bench_precision, render_train, select_backbones, PresetChoice,
    TrainBenchConfig, TrainReport, TrainRow,
};

/// What a CPU bench's ratio includes on bocb's side: its caching CPU
/// allocator (`cpu_cache`) where installed; nothing on other devices.
fn allocator_note(device: &str, cpu_cache: bool) -> Option<&'static str> {
    (device == "cpu").then_some(if cpu_cache {
        "bocb's CPU tensors reuse freed blocks through its caching allocator; the reference \
         uses PyTorch's allocator (BOCB_CPU_CACHE_MIB=0 times bocb without the cache)"
    } else {
        "bocb's caching CPU allocator is off (BOCB_CPU_CACHE_MIB=0): both sides use libtorch's"
    })
}

/// The python whose torch the binary was built against (the venv's).
pub const BUILD_PYTHON: &str = env!("BOCB_BUILD_PYTHON");

const RECORDER_SCRIPT: &str = include_str!("../../../scripts/record_optim_cases.py");

/// The install line of `scripts/record_optim_cases.py`: torch stays pinned
/// to the libtorch bocb links, which pip would otherwise upgrade for timm.
const PIP_INSTALL: &str = "torch==2.11.0 torchvision==0.26.0 timm==1.0.31 pytorch_optimizer==4.1.0";

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("`{0}` is not a parameter count; write e.g. 25M, 1.5M, 800k or 1000")]
    ParamCount(String),
    #[error(
        "{requested} parameters are too few for a ResNet-50-shaped set; the smallest has {min}"
    )]
    TooFewParams { requested: usize, min: usize },
    #[error("the number of timed steps must be at least 1")]
    NoSteps,
    #[error("the batch size must be at least 1")]
    NoBatch,
    #[error("every number of trials at once must be at least 1, e.g. --trials 1,2,4,8,16")]
    NoTrials,
    #[error("unknown optimizer `{name}`; valid: {valid}")]
    UnknownOptimizer { name: String, valid: String },
    #[error(
        "optimizer `{0}` is registered but has no search space (search-spaces/optimizers/{0}.yaml)"
    )]
    NoSearchSpace(String),
    #[error("TorchScript optimizer `{name}` needs its search space {file} (the format of search-spaces/optimizers/*.yaml): {message}")]
    TorchScriptSpace {
        name: String,
        file: String,
        message: String,
    },
    #[error("optimizer `{name}`: {source}")]
    Optim { name: String, source: OptimError },
    #[error(transparent)]
    Backbone(#[from] ModelError),
    #[error("`{0}` has no PyTorch reference to compare with; bench a registered backbone")]
    NoReferenceModel(String),
    #[error("{backbone}: {source}")]
    Train {
        backbone: String,
        source: TrialError,
    },
    #[error("cannot run {}: {error}; create the venv with `make venv`, or pass --python PATH of a python that has torch", .python.display())]
    PythonStart { python: PathBuf, error: io::Error },
    #[error("{} lacks {missing}; create the venv with `make venv` and install the references with `{} -m pip install {PIP_INSTALL}`, or pass --python PATH of a python that has them", .python.display(), .python.display())]
    MissingModules { python: PathBuf, missing: String },
    #[error("the reference python {}: {message}", .python.display())]
    Python { python: PathBuf, message: String },
    #[error("no reference case for `{0}` in CASES of scripts/record_optim_cases.py")]
    NoCase(String),
    #[error("reference `{class}` for `{name}` failed: {message}")]
    Reference {
        name: String,
        class: String,
        message: String,
    },
}

/// A reference case as the python side reports it.
#[derive(Debug, Deserialize)]
struct ReferenceCase {
    class: String,
    kwargs: BTreeMap<String, Value>,
}

/// A running reference script, spoken to in JSON lines. It first replies
/// `{"ready": TORCH_VERSION}`, or `{"missing": [MODULE, ...]}`; any later
/// reply may be `{"error": MESSAGE}`.
struct ReferencePython {
    python: PathBuf,
    child: Child,
    /// Closed on drop, which ends the script.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ReferencePython {
    fn start(python: &Path, script: &str) -> Result<Self, BenchError> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| BenchError::PythonStart {
                python: python.to_path_buf(),
                error,
            })?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut reference = ReferencePython {
            python: python.to_path_buf(),
            child,
            stdin,
            stdout,
        };
        let hello = reference.read()?;
        if let Some(missing) = hello.get("missing").and_then(Value::as_array) {
            let missing: Vec<&str> = missing.iter().filter_map(Value::as_str).collect();
            return Err(BenchError::MissingModules {
                python: python.to_path_buf(),
                missing: missing.join(", "),
            });
        }
        Ok(reference)
    }

    /// The first case of every optimizer in the embedded recorder's CASES.
    fn cases(&mut self) -> Result<BTreeMap<String, ReferenceCase>, BenchError> {
        let reply = self.request(&json!({ "cases": RECORDER_SCRIPT }))?;
        serde_json::from_value(reply["cases"].clone()).map_err(|e| self.error(e))
    }

    /// Milliseconds of one step of what was set up last.
    fn step(&mut self) -> Result<f64, BenchError> {
        let reply = self.request(&json!({ "step": true }))?;
        reply["ms"]
            .as_f64()
            .ok_or_else(|| self.error(format!("replied `{reply}` to a step")))
    }

    /// Sends one request; a reply with `error` becomes [`BenchError::Python`].
    fn request(&mut self, request: &Value) -> Result<Value, BenchError> {
        let stdin = self.stdin.as_mut().expect("open until drop");
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| self.error(e))?;
        let reply = self.read()?;
        match reply.get("error").and_then(Value::as_str) {
            Some(message) => Err(self.error(message)),
            None => Ok(reply),
        }
    }

    fn read(&mut self) -> Result<Value, BenchError> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(self.error("exited early (its messages are above)")),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| self.error(format!("replied `{}`: {e}", line.trim()))),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, message: impl ToString) -> BenchError {
        BenchError::Python {
            python: self.python.clone(),
            message: message.to_string(),
        }
    }
}

impl Drop for ReferencePython {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}

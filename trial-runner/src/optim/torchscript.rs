//! A user's own optimizer: `torchscript:PATH` names a `torch.nn.Module`
//! saved with `torch.jit.script(module).save(PATH)` that exports
//!
//! - [`STEP`]: updates `params` in place from `grads` (called under
//!   `no_grad`). `weight_decays[i]` is the decay of parameter `i` (the
//!   trial's `weight_decay`, or 0 for biases and norm parameters),
//!   `lr` the schedule's value for this step, `iteration` 1 at the first
//!   call, and `hparams` every hyperparameter of the trial (`lr` as
//!   configured, `weight_decay`, the search space's extras) as 0-dim float64
//!   tensors (libtorch cannot hand over a typed `Dict[str, float]`).
//! - [`STATE`]: the tensors it keeps between steps (measured for `bocb optim
//!   info`, saved in checkpoints).
//! - optionally [`LOAD_STATE`]: restores what `state` returned, into a fresh
//!   module, before its first step; without it trials are not checkpointed.
//!
//! Parameters come in the same order at every call, so the module keeps
//! its state in list attributes (`List[Tensor]`) indexed like `params`.

use tch::{CModule, Device, IValue, Kind, Tensor};

use super::{tensor_bytes, Hparams, OptimError, Optimizer, ParamSet, StateReader, StateTensors};

/// The prefix of user optimizer names.
pub const PREFIX: &str = bocb_spec::TORCHSCRIPT_PREFIX;

/// The exported method bocb calls every training step.
pub const STEP: &str = "step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: float, iteration: int, hparams: Dict[str, Tensor]) -> None";
/// The exported method that returns the optimizer's state.
pub const STATE: &str = "state(self) -> List[Tensor]";
/// The optional exported method that restores it (for checkpoints).
pub const LOAD_STATE: &str = "load_state(self, state: List[Tensor]) -> None";

fn error(path: &str, message: impl Into<String>) -> OptimError {
    OptimError::TorchScript {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The first lines of a libtorch error: its message and the declaration
/// it names, without the C++ backtrace that follows.
fn torch_message(e: &tch::TchError) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .take_while(|l| !l.starts_with("Exception raised from") && !l.starts_with("frame #"))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n")
}

/// Whether libtorch's error says the module has no method `name`.
fn is_missing(e: &tch::TchError, name: &str) -> bool {
    e.to_string()
        .contains(&format!("Method '{name}' is not defined"))
}

fn load(path: &str, device: Device) -> Result<CModule, OptimError> {
    if !std::path::Path::new(path).is_file() {
        return Err(error(path, "no such file"));
    }
    CModule::load_on_device(path, device).map_err(|e| {
        error(
            path,
            format!(
                "cannot load it as a TorchScript module (save it with torch.jit.script(module).save(PATH)): {}",
                torch_message(&e)
            ),
        )
    })
}

/// What [`check`] found the module can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It exports `load_state`, so its trials can be checkpointed.
    pub checkpoints: bool,
}

/// Loads the module at `path` and takes one step with `hparams` on two
/// small float32 parameters (one with weight decay, one without), so a
/// module without the methods, with other signatures, or failing on its
/// first step is refused before any trial, with what was expected.
pub fn check(path: &str, hparams: &Hparams) -> Result<Capabilities, OptimError> {
    let decay = Tensor::from_slice(&[0.5f32, -0.25, 1.0, -1.5, 0.75, 2.0])
        .reshape([2, 3])
        .set_requires_grad(true);
    let no_decay = Tensor::from_slice(&[0.1f32, -0.2, 0.3]).set_requires_grad(true);
    let grads: [&[f32]; 2] = [&[0.3, -0.1, 0.2, 0.05, -0.4, 0.1], &[0.2, 0.1, -0.3]];
    for (p, g) in [&decay, &no_decay].into_iter().zip(grads) {
        // d/dp <p, g> = g.
        (p * Tensor::from_slice(g).reshape(p.size()))
            .sum(Kind::Float)
            .backward();
    }
    let mut optimizer = TorchScriptOptimizer::new(
        path,
        hparams,
        ParamSet {
            decay: vec![decay.shallow_clone()],
            no_decay: vec![no_decay.shallow_clone()],
            lower_layers: Vec::new(),
        },
    )?;
    let lr = optimizer.lr;
    optimizer.call_step(lr).map_err(|e| {
        error(
            path,
            format!("its first step on two small float32 parameters failed; it must export `{STEP}`: {e}"),
        )
    })?;
    for p in [&decay, &no_decay] {
        let finite = p.isfinite().all().int64_value(&[]) == 1;
        if !finite {
            return Err(error(
                path,
                format!("its first step (lr {lr}) left a parameter that is not finite: {p}"),
            ));
        }
    }
    if optimizer.checkpoints {
        // What a resumed trial does: its state after a step, back in.
        let state = optimizer.state()?;
        optimizer.load_state(state).map_err(|e| {
            error(
                path,
                format!("`load_state` failed on what `state` returned after the first step: {e}"),
            )
        })?;
    }
    Ok(Capabilities {
        checkpoints: optimizer.checkpoints,
    })
}

/// Builds the module at `path` over `params` (see the module docs).
pub fn build(
    path: &str,
    hparams: &Hparams,
    params: ParamSet,
) -> Result<Box<dyn Optimizer>, OptimError> {
    Ok(Box::new(TorchScriptOptimizer::new(path, hparams, params)?))
}

/// The loaded module and what bocb hands it every step.
pub struct TorchScriptOptimizer {
    path: String,
    module: CModule,
    params: Vec<Tensor>,
    weight_decays: Vec<f64>,
    /// The configured (base) learning rate.
    lr: f64,
    hparams: Vec<(String, f64)>,
    /// Steps taken so far; the next call gets one more.
    iteration: i64,
    /// It exports `load_state`, so checkpoints can be restored.
    checkpoints: bool,
}

impl TorchScriptOptimizer {
    fn new(path: &str, hparams: &Hparams, params: ParamSet) -> Result<Self, OptimError> {
        let get = |name: &str| hparams.get(name).copied();
        let lr = get("lr").ok_or_else(|| OptimError::MissingHparam {
            optimizer: format!("{PREFIX}{path}"),
            name: "lr".into(),
        })?;
        for (name, value, valid) in [
            ("lr", lr, lr > 0.0 && lr.is_finite()),
            (
                "weight_decay",
                get("weight_decay").unwrap_or(0.0),
                get("weight_decay").is_none_or(|w| w >= 0.0 && w.is_finite()),
            ),
        ] {
            if !valid {
                return Err(OptimError::OutOfRange {
                    optimizer: format!("{PREFIX}{path}"),
                    name: name.into(),
                    value,
                    expected: if name == "lr" { "> 0" } else { ">= 0" },
                });
            }
        }
        if !params.lower_layers.is_empty() {
            return Err(error(
                path,
                "its `step` takes one lr for every parameter, so it cannot train with the recipe's `layer_decay`; set `layer_decay: null` in the recipe overrides",
            ));
        }
        let device = params.tensors().next().map_or(Device::Cpu, Tensor::device);
        let module = load(path, device)?;
        let mut weight_decays = Vec::new();
        let mut all = Vec::new();
        for group in params.into_groups(get("weight_decay").unwrap_or(0.0)) {
            weight_decays.extend(std::iter::repeat_n(group.weight_decay, group.params.len()));
            all.extend(group.params);
        }
        let mut optimizer = TorchScriptOptimizer {
            path: path.to_string(),
            module,
            params: all,
            weight_decays,
            lr,
            hparams: hparams.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            iteration: 0,
            checkpoints: true,
        };
        // Handing a fresh module its own (initial) state back changes
        // nothing, and tells whether it exports `load_state`.
        let initial = optimizer.state()?;
        optimizer.checkpoints = match optimizer.module.method_is("load_state", &[IValue::TensorList(initial)]) {
            Err(e) if is_missing(&e, "load_state") => false,
            Ok(IValue::None) => true,
            Ok(other) => {
                return Err(error(
                    path,
                    format!("`load_state` returned {}; it must be `{LOAD_STATE}`", describe(&other)),
                ))
            }
            Err(e) => {
                return Err(error(
                    path,
                    format!("`load_state` failed on the state of a fresh module; it must be `{LOAD_STATE}`: {}", torch_message(&e)),
                ))
            }
        };
        Ok(optimizer)
    }

    /// Calls the module's `load_state`.
    fn load_state(&mut self, state: Vec<Tensor>) -> Result<(), String> {
        match self
            .module
            .method_is("load_state", &[IValue::TensorList(state)])
        {
            Ok(IValue::None) => Ok(()),
            Ok(other) => Err(format!(
                "`load_state` returned {}, not None",
                describe(&other)
            )),
            Err(e) => Err(torch_message(&e)),
        }
    }

    /// What the module's `state` returns.
    fn state(&self) -> Result<Vec<Tensor>, OptimError> {
        match self.module.method_is::<IValue>("state", &[]) {
            Ok(IValue::TensorList(state)) => Ok(state),
            Ok(other) => Err(error(
                &self.path,
                format!("`state` returned {}; it must be `{STATE}`", describe(&other)),
            )),
            Err(e) if is_missing(&e, "state") => Err(error(
                &self.path,
                format!("it has no method `state`; export `{STATE}` (with @torch.jit.export), the tensors it keeps between steps, and `{STEP}`"),
            )),
            Err(e) => Err(error(
                &self.path,
                format!("`state` failed; it must be `{STATE}`: {}", torch_message(&e)),
            )),
        }
    }

    /// One call of the module's `step` at learning rate `lr`.
    fn call_step(&mut self, lr: f64) -> Result<(), String> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| {
                let grad = p.grad();
                // A parameter without a gradient this step gets zeros, so
                // the lists keep their positions.
                if grad.defined() {
                    grad
                } else {
                    p.zeros_like()
                }
            })
            .collect();
        let hparams = self
            .hparams
            .iter()
            .map(|(k, v)| {
                (
                    IValue::String(k.clone()),
                    IValue::Tensor(Tensor::from(*v).to_kind(Kind::Double)),
                )
            })
            .collect();
        let args = [
            IValue::TensorList(self.params.iter().map(Tensor::shallow_clone).collect()),
            IValue::TensorList(grads),
            IValue::DoubleList(self.weight_decays.clone()),
            IValue::Double(lr),
            IValue::Int(self.iteration + 1),
            IValue::GenericDict(hparams),
        ];
        match tch::no_grad(|| self.module.method_is("step", &args)) {
            Ok(IValue::None) => {
                self.iteration += 1;
                Ok(())
            }
            Ok(other) => Err(format!("`step` returned {}, not None", describe(&other))),
            Err(e) if is_missing(&e, "step") => {
                Err("it has no method `step` (export it with @torch.jit.export)".to_string())
            }
            Err(e) => Err(torch_message(&e)),
        }
    }
}

/// Why a module without `load_state` is not checkpointed.
pub fn no_load_state(path: &str) -> OptimError {
    error(
        path,
        format!("its trials cannot be checkpointed: it exports no `{LOAD_STATE}`"),
    )
}

/// A returned value's kind, for errors.
fn describe(value: &IValue) -> String {
    let text = format!("{value:?}");
    match text.find('(') {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

impl Optimizer for TorchScriptOptimizer {
    fn step(&mut self, lr: f64) {
        if let Err(e) = Optimizer::try_step(self, lr) {
            panic!("{e}");
        }
    }

    fn try_step(&mut self, lr: f64) -> Result<(), OptimError> {
        self.call_step(lr).map_err(|e| {
            error(
                &self.path,
                format!("step {} failed: {e}", self.iteration + 1),
            )
        })
    }

    fn state_bytes(&self) -> usize {
        self.state().map_or(0, |state| tensor_bytes(&state))
    }

    fn export_state(&self) -> Result<StateTensors, OptimError> {
        if !self.checkpoints {
            return Err(no_load_state(&self.path));
        }
        let mut out = Vec::new();
        super::Saved::write_state(&self.iteration, "iteration", &mut out);
        super::Saved::write_state(&self.state()?, "state", &mut out);
        Ok(out)
    }

    fn import_state(&mut self, from: &StateReader) -> Result<(), OptimError> {
        if !self.checkpoints {
            return Err(no_load_state(&self.path));
        }
        let iteration: i64 = super::Saved::read_state("iteration", from)?;
        let state: Vec<Tensor> = super::Saved::read_state("state", from)?;
        self.load_state(state)
            .map_err(|e| error(&self.path, format!("`load_state` failed: {e}")))?;
        self.iteration = iteration;
        Ok(())
    }
}

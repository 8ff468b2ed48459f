//! A user's own backbone: `torchscript:PATH` names a module saved with
//! `torch.jit.script(model).save(PATH)` (an experiment file's relative
//! paths are taken from the file's directory, the tuner resolves them; on
//! the command line, from the directory bocb runs in). Its parameters are loaded into the trial's
//! VarStore, so any bocb optimizer trains them; its forward must take a batch
//! of 3x32x32 images and return logits `[batch, classes]`.

use std::sync::Mutex;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor, TrainableCModule};

use super::{BackboneEntry, Family, Model, ModelError, Preset};

/// The prefix of user backbone names.
pub const PREFIX: &str = bocb_spec::TORCHSCRIPT_PREFIX;

/// Input side a TorchScript backbone is fed (CIFAR's own size).
pub const INPUT_SIZE: i64 = 32;

/// What [`super::BackboneRegistry::lookup`] answers for `torchscript:` names.
pub(super) static ENTRY: BackboneEntry = BackboneEntry {
    family: Family::User,
    input_size: INPUT_SIZE,
    micro_input_size: INPUT_SIZE,
    default_recipe: "pytorch",
    timm: None,
    ctor: unreachable_ctor,
};

fn unreachable_ctor(_: &nn::Path, _: i64, _: Preset) -> Model {
    unreachable!("TorchScript backbones are built from their file by BackboneRegistry::build")
}

fn error(path: &str, message: String) -> ModelError {
    ModelError::TorchScript {
        path: path.to_string(),
        message,
    }
}

fn load(path: &str, vs_path: nn::Path) -> Result<TrainableCModule, ModelError> {
    if !std::path::Path::new(path).is_file() {
        let cwd = std::env::current_dir().map_or_else(|_| "?".into(), |d| d.display().to_string());
        return Err(error(
            path,
            format!(
                "no such file (relative paths are taken from the directory bocb runs in, {cwd})"
            ),
        ));
    }
    TrainableCModule::load(path, vs_path).map_err(|e| {
        error(
            path,
            format!("cannot load it as a TorchScript module (save it with torch.jit.script(model).save(PATH)): {e}"),
        )
    })
}

/// Checks that the module at `path` takes a batch of 3x32x32 images and
/// returns logits `[batch, classes]`, on a throw-away CPU copy.
pub fn check(path: &str, classes: i64) -> Result<(), ModelError> {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut module = load(path, vs.root())?;
    if vs.trainable_variables().is_empty() {
        return Err(error(path, "the module has no trainable parameters".into()));
    }
    module.set_eval();
    let batch = 2;
    let x = Tensor::zeros(
        [batch, 3, INPUT_SIZE, INPUT_SIZE],
        (Kind::Float, Device::Cpu),
    );
    let expected = format!(
        "its forward must take a batch of 3x{INPUT_SIZE}x{INPUT_SIZE} images ([{batch}, 3, {INPUT_SIZE}, {INPUT_SIZE}]) and return logits [batch, classes] = [{batch}, {classes}] (the dataset has {classes} classes)"
    );
    let out = tch::no_grad(|| module.forward_ts(&[x]))
        .map_err(|e| error(path, format!("{expected}, but the forward failed: {e}")))?;
    if out.size() != [batch, classes] {
        return Err(error(
            path,
            format!("{expected}, but it returned shape {:?}", out.size()),
        ));
    }
    if !matches!(out.kind(), Kind::Float) {
        return Err(error(
            path,
            format!("{expected} as float32, but it returned {:?}", out.kind()),
        ));
    }
    Ok(())
}

/// Loads the module at `path` under `vs_path` after [`check`]ing it.
pub(super) fn build(path: &str, vs_path: &nn::Path, classes: i64) -> Result<Model, ModelError> {
    check(path, classes)?;
    let module = load(path, vs_path.clone())?;
    Ok(Model {
        net: Box::new(TorchScriptNet {
            module: Mutex::new((module, None)),
        }),
        no_weight_decay: vec![],
    })
}

/// The loaded module and the mode (train or eval) it was last set to.
struct TorchScriptNet {
    module: Mutex<(TrainableCModule, Option<bool>)>,
}

impl std::fmt::Debug for TorchScriptNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TorchScriptNet")
    }
}

impl ModuleT for TorchScriptNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut guard = self.module.lock().unwrap_or_else(|e| e.into_inner());
        let (module, mode) = &mut *guard;
        if *mode != Some(train) {
            if train {
                module.set_train();
            } else {
                module.set_eval();
            }
            *mode = Some(train);
        }
        // The module's own random layers draw from torch's generator.
        let forward = || module.forward_ts(&[xs]);
        if train {
            crate::seeding::draw(forward)
        } else {
            forward()
        }
        .expect("the TorchScript backbone's forward failed")
    }
}

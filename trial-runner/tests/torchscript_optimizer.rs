//! A user's own optimizer through TorchScript (`torchscript:PATH`): the
//! modules in `tests/torchscript/` were written by
//! `scripts/make_torchscript_optimizers.py` (no python needed here).
//! torch.optim.SGD and AdamW written against bocb's interface replay equal
//! to bocb's `sgd_m` and `adamw`, train a model, continue from a checkpoint,
//! and modules that do not fit the interface are refused with what was
//! expected.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_search_spaces::Catalog;
use bocb_trial_runner::data::{generate, SynthConfig};
use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::optim::replay::{max_relative_error, replay, ReplayCase};
use bocb_trial_runner::optim::torchscript::{check, Capabilities, STEP};
use bocb_trial_runner::optim::{Optimizer, OptimizerRegistry, ParamSet, StateReader};
use bocb_trial_runner::{
    run_trial, DeviceChoice, EpochMetrics, TrialObserver, TrialSpec, TrialStatus,
};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn module(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/torchscript")
        .join(format!("{name}.pt"))
        .display()
        .to_string()
}

fn cases(optimizer: &str) -> Vec<(String, ReplayCase)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/optim_cases");
    let mut cases: Vec<(String, ReplayCase)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{optimizer}-"))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

#[test]
fn torchscript_sgd_m_and_adamw_replay_equal_to_bocbs_own() {
    let registry = OptimizerRegistry::builtin();
    let mut replayed = 0;
    for optimizer in ["sgd_m", "adamw"] {
        for (file, mut case) in cases(optimizer) {
            // The scripted AdamW implements no amsgrad.
            if case.hparams.get("amsgrad") == Some(&json!(true)) {
                continue;
            }
            // A module's `step` takes one lr: layer-wise lr decay is refused.
            if case.lr_scales.is_some() {
                case.optimizer = format!("torchscript:{}", module(optimizer));
                let err = replay(&case, &registry).unwrap_err().to_string();
                assert!(err.contains("`layer_decay`"), "{file}: {err}");
                continue;
            }
            // bocb hands a module the weight decay it is given (0 when
            // absent); torch.optim.AdamW's default is 0.01.
            if optimizer == "adamw" {
                case.hparams
                    .entry("weight_decay".into())
                    .or_insert(json!(0.01));
            }
            let own = replay(&case, &registry).unwrap();
            let recorded = case.trajectory.clone().unwrap();
            case.optimizer = format!("torchscript:{}", module(optimizer));
            let scripted = replay(&case, &registry).unwrap_or_else(|e| panic!("{file}: {e}"));
            let to_own = max_relative_error(&scripted.trajectory, &own.trajectory);
            let to_torch = max_relative_error(&scripted.trajectory, &recorded);
            assert!(to_own <= 1e-9, "{file}: {to_own:e} from bocb's {optimizer}");
            assert!(to_torch <= 1e-9, "{file}: {to_torch:e} from torch's");
            replayed += 1;
        }
    }
    assert!(replayed >= 4, "only {replayed} cases replayed");
}

/// Three float64 parameters (two with weight decay) and a gradient for
/// step `k` that does not depend on the optimizer's state.
fn params() -> Vec<Tensor> {
    [vec![3, 4], vec![5], vec![2]]
        .into_iter()
        .enumerate()
        .map(|(i, shape)| {
            let n: i64 = shape.iter().product();
            (Tensor::arange(n, (Kind::Double, Device::Cpu)) * 0.1 - i as f64)
                .reshape(shape)
                .set_requires_grad(true)
        })
        .collect()
}

fn set_grads(params: &[Tensor], k: i64) {
    for p in params {
        let mut p = p.shallow_clone();
        p.zero_grad();
        let g = (p.detach() * (k as f64 + 1.0)).sin();
        (&p * g).sum(Kind::Double).backward();
    }
}

fn build(name: &str, params: &[Tensor]) -> Box<dyn Optimizer> {
    let mut hparams: BTreeMap<String, f64> =
        [("lr".to_string(), 0.01), ("weight_decay".to_string(), 0.05)].into();
    if name.contains("sgd_m") {
        hparams.insert("momentum".into(), 0.9);
    }
    OptimizerRegistry::builtin()
        .build(
            name,
            &hparams,
            ParamSet {
                decay: params[..2].iter().map(Tensor::shallow_clone).collect(),
                no_decay: params[2..].iter().map(Tensor::shallow_clone).collect(),
                lower_layers: Vec::new(),
            },
        )
        .unwrap()
}

#[test]
fn weight_decay_groups_state_bytes_and_checkpoints_match_bocbs_own() {
    for optimizer in ["sgd_m", "adamw"] {
        let name = format!("torchscript:{}", module(optimizer));
        let (own_params, scripted_params) = (params(), params());
        let mut own = build(optimizer, &own_params);
        let mut scripted = build(&name, &scripted_params);
        assert_eq!(
            scripted.state_bytes(),
            0,
            "{optimizer}: no state before a step"
        );
        for k in 0..3 {
            set_grads(&own_params, k);
            set_grads(&scripted_params, k);
            own.step(0.01);
            scripted.step(0.01);
        }
        assert_eq!(own.state_bytes(), scripted.state_bytes(), "{optimizer}");
        // A resumed trial: a fresh module over copies of the parameters.
        let saved: BTreeMap<String, Tensor> =
            scripted.export_state().unwrap().into_iter().collect();
        let resumed_params = params();
        tch::no_grad(|| {
            for (r, s) in resumed_params.iter().zip(&scripted_params) {
                r.shallow_clone().copy_(s);
            }
        });
        let mut resumed = build(&name, &resumed_params);
        resumed
            .import_state(&StateReader::new(&saved, Device::Cpu))
            .unwrap();
        for k in 3..6 {
            for (ps, opt) in [
                (&own_params, &mut own),
                (&scripted_params, &mut scripted),
                (&resumed_params, &mut resumed),
            ] {
                set_grads(ps, k);
                opt.step(0.01);
            }
        }
        for ((o, s), r) in own_params.iter().zip(&scripted_params).zip(&resumed_params) {
            let diff = (o - s).abs().max().double_value(&[]);
            assert!(diff < 1e-12, "{optimizer}: {diff:e} from bocb's own");
            assert!(s.equal(r), "{optimizer}: the resumed run differs");
        }
    }
}

#[test]
fn modules_that_do_not_fit_the_interface_are_refused_with_what_was_expected() {
    let hparams = [("lr".to_string(), 0.1), ("weight_decay".to_string(), 0.0)].into();
    assert_eq!(
        check(&module("sgd_m"), &hparams).unwrap(),
        Capabilities { checkpoints: true }
    );
    assert_eq!(
        check(&module("no_load_state"), &hparams).unwrap(),
        Capabilities { checkpoints: false }
    );
    let params = params();
    let no_checkpoints = build(&format!("torchscript:{}", module("no_load_state")), &params);
    let err = no_checkpoints.export_state().unwrap_err().to_string();
    assert!(
        err.contains("load_state(self, state: List[Tensor])"),
        "{err}"
    );
    let refused = |name: &str| check(&module(name), &hparams).unwrap_err().to_string();

    let err = refused("no_step");
    assert!(err.contains(&module("no_step")), "{err}");
    assert!(err.contains("no method `step`"), "{err}");
    assert!(err.contains(STEP), "{err}");

    let err = refused("wrong_signature");
    assert!(err.contains(STEP), "{err}");
    assert!(err.contains("List[float]"), "{err}");
    assert!(!err.contains("frame #"), "no C++ backtrace: {err}");

    let err = refused("fails_first_step");
    assert!(err.contains("first step"), "{err}");
    assert!(err.contains("momentun"), "{err}");

    let err = check("no/such.pt", &hparams).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
    let not_a_module = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = check(not_a_module.to_str().unwrap(), &hparams)
        .unwrap_err()
        .to_string();
    assert!(err.contains("torch.jit.script"), "{err}");
}

struct Losses(Vec<f64>);

impl TrialObserver for Losses {
    fn on_epoch(&mut self, report: &EpochMetrics) {
        self.0.push(report.train_loss);
    }
}

#[test]
fn a_trial_trains_with_a_torchscript_optimizer() {
    let data = generate(&SynthConfig {
        classes: 4,
        train: 256,
        test: 64,
        seed: 11,
    })
    .unwrap();
    let space = Catalog::builtin().optimizer("adamw").unwrap().clone();
    let mut hparams = space.default_params();
    hparams.insert("lr".into(), 4e-3);
    hparams.insert("weight_decay".into(), space.weight_decay.centre());
    let spec = TrialSpec {
        backbone: "resnet18_cifar@micro".into(),
        optimizer: format!("torchscript:{}", module("adamw")),
        hparams,
        seed: 1,
        epochs: 2,
        batch_size: 32,
        warmup_epochs: 0,
        decay_norm_and_bias: false,
        device: DeviceChoice::Cpu,
        save_weights: None,
        recipe: None,
        data_workers: 0,
        precision: Default::default(),
        deterministic: false,
        channels_last: false,
        data_on_device: Default::default(),
        checkpoint_dir: None,
        checkpoint_every: None,
        init_weights: None,
        freeze: Vec::new(),
    };
    let mut losses = Losses(Vec::new());
    let outcome = run_trial(
        &spec,
        &data,
        &BackboneRegistry::builtin(),
        &OptimizerRegistry::builtin(),
        &mut losses,
    )
    .unwrap();
    assert_eq!(outcome.status, TrialStatus::Done);
    assert!(losses.0[1] < losses.0[0], "{:?}", losses.0);
    assert!(outcome.optimizer_state_bytes > 0, "{outcome:?}");

    // A module failing at a step fails its trial (with its error), not bocb.
    let failing = TrialSpec {
        optimizer: format!("torchscript:{}", module("fails_first_step")),
        ..spec
    };
    let err = run_trial(
        &failing,
        &data,
        &BackboneRegistry::builtin(),
        &OptimizerRegistry::builtin(),
        &mut Losses(Vec::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("step 1 failed") && err.contains("momentun"),
        "{err}"
    );
}

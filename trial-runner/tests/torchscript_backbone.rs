//! A user's own backbone through TorchScript (`torchscript:PATH`): the module
//! in `tests/torchscript/` was made by `examples/torchscript-backbone/
//! make_backbone.py tests/torchscript/small_cnn_4classes.pt --classes 4
//! --width 8` (no python needed here). bocb's optimizers train its
//! parameters, and a module whose output does not fit the data is rejected
//! with an explanation before training.

use std::path::Path;

use bocb_search_spaces::Catalog;
use bocb_trial_runner::data::{generate, SynthConfig};
use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::optim::{OptimizerRegistry, ParamSet};
use bocb_trial_runner::{
    run_trial, DeviceChoice, EpochMetrics, TrialObserver, TrialSpec, TrialStatus,
};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn module_name() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchscript/small_cnn_4classes.pt");
    format!("torchscript:{}", path.display())
}

struct Losses(Vec<f64>);

impl TrialObserver for Losses {
    fn on_epoch(&mut self, report: &EpochMetrics) {
        self.0.push(report.train_loss);
    }
}

fn spec(optimizer: &str) -> TrialSpec {
    let catalog = Catalog::builtin();
    let space = catalog.optimizer(optimizer).unwrap();
    let mut hparams = space.default_params();
    hparams.insert("lr".into(), space.lr.centre());
    hparams.insert("weight_decay".into(), space.weight_decay.centre());
    TrialSpec {
        backbone: module_name(),
        optimizer: optimizer.to_string(),
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
    }
}

#[test]
fn a_torchscript_backbone_trains_with_bocb_optimizers() {
    let data = generate(&SynthConfig {
        classes: 4,
        train: 256,
        test: 64,
        seed: 11,
    })
    .unwrap();
    let backbones = BackboneRegistry::builtin();
    let optimizers = OptimizerRegistry::builtin();
    for optimizer in ["sgd_m", "adamw"] {
        let mut losses = Losses(Vec::new());
        let outcome = run_trial(
            &spec(optimizer),
            &data,
            &backbones,
            &optimizers,
            &mut losses,
        )
        .unwrap();
        assert_eq!(outcome.status, TrialStatus::Done, "{optimizer}");
        assert!(losses.0[1] < losses.0[0], "{optimizer}: {:?}", losses.0);
        if optimizer == "adamw" {
            // Two moments per parameter of the 6,220 in the module.
            assert!(
                outcome.optimizer_state_bytes >= 2 * 6_220 * 4,
                "{outcome:?}"
            );
        }
    }
}

#[test]
fn the_module_parameters_are_in_the_var_store_and_move_with_a_step() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BackboneRegistry::builtin()
        .build(&module_name(), &vs.root(), 4, 0)
        .unwrap();
    let names: Vec<String> = vs.variables().into_keys().collect();
    assert!(names.iter().any(|n| n == "head_weight"), "{names:?}");
    assert_eq!(
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel())
            .sum::<usize>(),
        6_220
    );
    let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| model.net.forward_t(&x, false));
    let params = ParamSet {
        decay: vs.trainable_variables(),
        no_decay: vec![],
        lower_layers: Vec::new(),
    };
    let mut hparams = Catalog::builtin()
        .optimizer("adamw")
        .unwrap()
        .default_params();
    hparams.insert("lr".into(), 1e-2);
    hparams.insert("weight_decay".into(), 0.0);
    let mut optimizer = OptimizerRegistry::builtin()
        .build("adamw", &hparams, params)
        .unwrap();
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3]);
    let loss = model
        .net
        .forward_t(&x, true)
        .cross_entropy_for_logits(&labels);
    loss.backward();
    optimizer.step(1e-2);
    let after = tch::no_grad(|| model.net.forward_t(&x, false));
    let moved = (&after - &before).abs().max().double_value(&[]);
    assert!(moved > 1e-4, "the module's output did not change: {moved}");
}

#[test]
fn a_module_with_the_wrong_output_size_is_rejected_with_an_explanation() {
    let registry = BackboneRegistry::builtin();
    // The module returns 4 logits; a 3-class dataset needs 3.
    let err = registry.check(&module_name(), 3).unwrap_err().to_string();
    assert!(err.contains("[2, 3]"), "{err}");
    assert!(err.contains("returned shape [2, 4]"), "{err}");
    assert!(err.contains("3 classes"), "{err}");
    assert!(err.contains("3x32x32"), "{err}");
    registry.check(&module_name(), 4).unwrap();
    // run_trial refuses it before training too.
    let data = generate(&SynthConfig {
        classes: 3,
        train: 64,
        test: 32,
        seed: 2,
    })
    .unwrap();
    let mut losses = Losses(Vec::new());
    let err = run_trial(
        &spec("sgd_m"),
        &data,
        &registry,
        &OptimizerRegistry::builtin(),
        &mut losses,
    )
    .expect_err("rejected")
    .to_string();
    assert!(err.contains("returned shape [2, 4]"), "{err}");
    assert!(losses.0.is_empty());
    // A file that is not a TorchScript module.
    let bogus = format!(
        "torchscript:{}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("Cargo.toml")
            .display()
    );
    let err = registry.check(&bogus, 3).unwrap_err().to_string();
    assert!(err.contains("torch.jit.script"), "{err}");
    let err = registry
        .check("torchscript:no/such.pt", 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
}

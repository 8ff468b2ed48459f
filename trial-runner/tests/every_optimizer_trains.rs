//! Every registered optimizer trains a small network: at its search space's
//! centre (lr, weight decay, default extras), the training loss falls from
//! the first epoch to the third, or the trial ends as diverged.

use bocb_search_spaces::Catalog;
use bocb_trial_runner::data::{generate, SynthConfig};
use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::optim::OptimizerRegistry;
use bocb_trial_runner::{
    run_trial, DeviceChoice, EpochMetrics, TrialObserver, TrialSpec, TrialStatus,
};

struct Losses(Vec<f64>);

impl TrialObserver for Losses {
    fn on_epoch(&mut self, report: &EpochMetrics) {
        self.0.push(report.train_loss);
    }
}

#[test]
fn every_optimizer_lowers_the_loss_or_is_recorded_as_diverged() {
    let data = generate(&SynthConfig {
        classes: 4,
        train: 512,
        test: 64,
        seed: 11,
    })
    .unwrap();
    let catalog = Catalog::builtin();
    let optimizers = OptimizerRegistry::builtin();
    let backbones = BackboneRegistry::builtin();
    let mut failures = Vec::new();
    for name in optimizers.names() {
        let space = catalog
            .optimizer(name)
            .unwrap_or_else(|e| panic!("`{name}` has no search space: {e}"));
        let mut hparams = space.default_params();
        hparams.insert("lr".into(), space.lr.centre());
        hparams.insert("weight_decay".into(), space.weight_decay.centre());
        let spec = TrialSpec {
            backbone: "resnet18_cifar@micro".into(),
            optimizer: name.to_string(),
            hparams,
            seed: 1,
            epochs: 3,
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
        match run_trial(&spec, &data, &backbones, &optimizers, &mut losses) {
            Ok(outcome) if outcome.status == TrialStatus::Diverged => {}
            Ok(_) if losses.0[2] < losses.0[0] => {}
            Ok(_) => failures.push(format!("{name}: loss did not fall: {:?}", losses.0)),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

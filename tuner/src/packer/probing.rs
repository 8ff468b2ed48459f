//! The probes of `trials_per_device: auto`: each config of the experiment
//! trained alone for a few steps on its device (kept in the store), and the
//! packers that start from them and the devices' free memory.

use std::collections::BTreeMap;

use bocb_spec::{DeviceChoice, Hparams, TrialSpec};
use bocb_store::{unix_now_s, ProbeRecord, Store};
use bocb_trial_runner::{
    data::LoadedData,
    device::ResolveDevice,
    probe::{free_memory_bytes, probe_trial},
};
use sha2::{Digest, Sha256};

use super::{bytes, kind, DevicePacker, Packing};
use crate::executor::RunError;
use crate::experiment::Experiment;
use crate::packing::Demand;
use crate::registries::Registries;

impl Packing {
    /// Probes every backbone x optimizer config of `experiment` not yet in
    /// the store, one at a time on the first of `devices` of each kind,
    /// before any trial runs; then reads each device's free memory. Each
    /// probe and device gets a line through `log`.
    pub fn prepare(
        experiment: &Experiment,
        store: &Store,
        registries: &Registries,
        splits: &LoadedData,
        devices: &[DeviceChoice],
        log: &dyn Fn(&str),
    ) -> Result<Packing, RunError> {
        let spec = &experiment.spec;
        let rule = spec.packing_rule();
        let classes = splits.classes();
        let mut probes = BTreeMap::new();
        for (i, &device) in devices.iter().enumerate() {
            if devices[..i].iter().any(|&d| kind(d) == kind(device)) {
                continue;
            }
            for backbone in &experiment.backbones {
                for optimizer in &experiment.optimizers {
                    let mut trial = experiment.trial_spec(
                        backbone,
                        optimizer,
                        &probe_params(registries, experiment, backbone, optimizer),
                        0,
                        None,
                    );
                    trial.device = device;
                    let demand = probe(store, registries, &trial, classes, log)?;
                    probes.insert((backbone.clone(), optimizer.clone(), kind(device)), demand);
                }
            }
        }
        let packers = devices
            .iter()
            .map(|&device| {
                let free = device.resolve().ok().and_then(free_memory_bytes);
                log(&format!(
                    "{device}: {} free; trials packed while their peaks fit {:.0}% of it and one more adds {:.0}% throughput (up to {} at once)",
                    free.map_or("unknown memory".into(), bytes),
                    rule.memory_fraction * 100.0,
                    rule.min_gain * 100.0,
                    rule.max_trials
                ));
                DevicePacker::new(device, rule, free)
            })
            .collect();
        Ok(Packing { packers, probes })
    }
}

/// The probe of `trial`'s config: the store's, or measured now and stored.
/// A probe that fails is logged and not stored (the next run tries again).
fn probe(
    store: &Store,
    registries: &Registries,
    trial: &TrialSpec,
    classes: usize,
    log: &dyn Fn(&str),
) -> Result<Option<Demand>, RunError> {
    let key = probe_key(trial, classes);
    let config = format!(
        "{} × {} at batch {}{}",
        trial.backbone,
        trial.optimizer,
        trial.batch_size,
        if trial.channels_last {
            ", channels-last"
        } else {
            ""
        }
    );
    let record = match store.probe(&key)? {
        Some(record) => record,
        None => {
            let reading = probe_trial(
                trial,
                classes,
                &registries.backbones,
                &registries.optimizers,
            );
            let reading = match reading {
                Ok(reading) => reading,
                Err(e) => {
                    log(&format!(
                        "probe of {config} on {} failed ({e}); its trials run alone",
                        trial.device
                    ));
                    return Ok(None);
                }
            };
            let record = ProbeRecord {
                key,
                config: config.clone(),
                device: trial.device.to_string(),
                peak_memory_bytes: reading.peak_memory_bytes,
                images_per_sec: reading.images_per_sec,
                measured_unix_s: unix_now_s(),
            };
            store.put_probe(&record)?;
            log(&format!(
                "probe of {config} on {}: peak {}, {:.0} images/s",
                record.device,
                record
                    .peak_memory_bytes
                    .map_or("not measured".into(), bytes),
                record.images_per_sec
            ));
            record
        }
    };
    Ok(Some(Demand {
        peak_bytes: record.peak_memory_bytes,
        solo_images_per_sec: Some(record.images_per_sec).filter(|s| *s > 0.0),
    }))
}

/// The pair's hyperparameters for its probe: the optimizer's defaults at
/// the centre of the pair's grids.
fn probe_params(
    registries: &Registries,
    experiment: &Experiment,
    backbone: &str,
    optimizer: &str,
) -> Hparams {
    let space = experiment
        .space(optimizer, &registries.catalog)
        .expect("experiment validation checked the search space");
    let space = experiment.spec.pair_space(backbone, space);
    let mut params = space.default_params();
    params.insert("lr".into(), space.lr.centre());
    params.insert("weight_decay".into(), space.weight_decay.centre());
    params
}

/// What a probe's readings depend on, hashed: the trial's shape and
/// training step (backbone, optimizer, batch, classes, precision, recipe,
/// memory order, determinism) and the kind of device.
fn probe_key(trial: &TrialSpec, classes: usize) -> String {
    let config = serde_json::json!({
        "backbone": trial.backbone,
        "optimizer": trial.optimizer,
        "batch_size": trial.batch_size,
        "classes": classes,
        "precision": trial.precision,
        "recipe": trial.recipe,
        "channels_last": trial.channels_last,
        "deterministic": trial.deterministic,
        "device": kind(trial.device),
    });
    let digest = Sha256::digest(config.to_string().as_bytes());
    let hash: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}/{}/{}/{hash}",
        kind(trial.device),
        trial.backbone,
        trial.optimizer
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_keys_follow_what_the_probe_depends_on() {
        let trial = TrialSpec {
            backbone: "resnet18_cifar".into(),
            optimizer: "sgd_m".into(),
            hparams: [("lr".to_string(), 0.1)].into(),
            seed: 0,
            epochs: 1,
            batch_size: 128,
            warmup_epochs: 0,
            decay_norm_and_bias: false,
            device: DeviceChoice::Cuda(0),
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
        let key = probe_key(&trial, 100);
        assert!(key.starts_with("cuda/resnet18_cifar/sgd_m/"), "{key}");
        // Another GPU, seed or lr is the same probe.
        let same = TrialSpec {
            device: DeviceChoice::Cuda(1),
            seed: 3,
            hparams: [("lr".to_string(), 0.4)].into(),
            ..trial.clone()
        };
        assert_eq!(probe_key(&same, 100), key);
        for other in [
            TrialSpec {
                batch_size: 256,
                ..trial.clone()
            },
            TrialSpec {
                channels_last: true,
                ..trial.clone()
            },
            TrialSpec {
                device: DeviceChoice::Cpu,
                ..trial.clone()
            },
            TrialSpec {
                optimizer: "adamw".into(),
                ..trial.clone()
            },
        ] {
            assert_ne!(probe_key(&other, 100), key, "{other:?}");
        }
        assert_ne!(probe_key(&trial, 10), key);
    }
}

//! What a trial costs before it trains: the peak memory and images per
//! second of a few of its training steps on a synthetic batch of its shape,
//! and the memory a device has free. `trials_per_device: auto` packs trials
//! onto a device from these readings.

use std::fs;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::batches::channels_last;
use crate::device::{synchronize, ResolveDevice};
use crate::memory::{cuda_index, PeakMemory};
use crate::models::BackboneRegistry;
use crate::optim::OptimizerRegistry;
use crate::precision::set_deterministic;
use crate::regime::Regime;
use crate::seeding::with_torch_seed;
use crate::trainer::{trial_learner, TrialError};
use crate::TrialSpec;

/// Untimed steps first: the optimizer's state, cuDNN's choices and the
/// allocator's caches fill up, as in a trial's first step.
const WARMUP_STEPS: usize = 2;
/// Timed steps after the warm-up.
const TIMED_STEPS: usize = 3;

/// What a probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeReading {
    /// The steps' peak memory in bytes above what the device (CUDA: the
    /// caching allocator's allocated bytes) or the process (CPU: its
    /// resident set) held before the probe; `None` where it cannot be read.
    pub peak_memory_bytes: Option<u64>,
    /// Training images per second of the timed steps, the device to itself.
    pub images_per_sec: f64,
}

/// Builds `spec`'s learner on its device as [`crate::run_trial`] does
/// (recipe rates, precision, clipping, moving average), then trains a warm-up
/// step and timed steps on a random batch of the trial's shape and classes,
/// through the recipe's batch transforms and loss. Nothing else may run on
/// the device meanwhile: the CUDA peak is the device's.
pub fn probe_trial(
    spec: &TrialSpec,
    classes: usize,
    backbones: &BackboneRegistry,
    optimizers: &OptimizerRegistry,
) -> Result<ProbeReading, TrialError> {
    let device = spec.device.resolve().map_err(TrialError::Device)?;
    crate::cpu_cache::empty();
    let peak = PeakMemory::start(device);
    let before = peak.read(device);
    crate::seeding::start_stream(spec.seed);
    if spec.deterministic {
        set_deterministic(true);
    }
    let classes = classes as i64;
    let mut learner = trial_learner(spec, classes, device, backbones, optimizers)?;
    let regime = match &spec.recipe {
        Some(recipe) => Regime::from_recipe(recipe, classes),
        None => Regime::plain(classes),
    };
    let (entry, preset) = backbones.lookup(&spec.backbone)?;
    let side = entry.input_size(preset);
    let (images, labels) = random_batch(spec.batch_size, side, classes, device, spec.seed);
    let images = if spec.channels_last {
        channels_last(&images)
    } else {
        images
    };
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let lr = spec.hparams.get("lr").copied().unwrap_or(0.0);
    let mut timed_from = Instant::now();
    for step in 0..WARMUP_STEPS + TIMED_STEPS {
        if step == WARMUP_STEPS {
            synchronize(device);
            timed_from = Instant::now();
        }
        let (images, targets) = regime.prepare(images.copy(), labels.copy(), &mut rng)?;
        let _loss = learner.step_with(&images, lr, |logits| regime.loss(logits, &targets))?;
    }
    synchronize(device);
    let seconds = timed_from.elapsed().as_secs_f64();
    let peak_memory_bytes = match (before, peak.read(device)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(ProbeReading {
        peak_memory_bytes,
        images_per_sec: (TIMED_STEPS * spec.batch_size) as f64 / seconds.max(f64::MIN_POSITIVE),
    })
}

/// The memory `device` has free for trials: on CUDA the driver's free bytes
/// once the caching allocator has returned its idle blocks
/// (`torch.cuda.empty_cache(); torch.cuda.mem_get_info()[0]`), on the CPU
/// the kernel's `MemAvailable`; `None` where it cannot be read.
pub fn free_memory_bytes(device: Device) -> Option<u64> {
    match (device, cuda_index(device)) {
        (_, Some(_)) => crate::memory::free_bytes(device, true),
        (Device::Cpu, _) => {
            crate::cpu_cache::empty();
            let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
            let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }
        _ => None,
    }
}

/// A fixed batch of `batch` random images of `side` pixels and labels below
/// `classes`, drawn from `seed`: what probes and benches train on.
pub fn random_batch(
    batch: usize,
    side: i64,
    classes: i64,
    device: Device,
    seed: u64,
) -> (Tensor, Tensor) {
    let batch = batch as i64;
    with_torch_seed(seed, || {
        (
            Tensor::randn([batch, 3, side, side], (Kind::Float, device)),
            Tensor::randint(classes, [batch], (Kind::Int64, device)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceChoice;

    fn spec(backbone: &str, batch_size: usize) -> TrialSpec {
        TrialSpec {
            backbone: backbone.into(),
            optimizer: "adamw".into(),
            hparams: [("lr".to_string(), 1e-3), ("weight_decay".to_string(), 0.05)].into(),
            seed: 0,
            epochs: 1,
            batch_size,
            warmup_epochs: 0,
            decay_norm_and_bias: false,
            device: DeviceChoice::Cpu,
            save_weights: None,
            recipe: None,
            data_workers: 1,
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
    fn a_probe_measures_speed_and_memory_and_names_a_bad_config() {
        let (backbones, optimizers) = (BackboneRegistry::builtin(), OptimizerRegistry::builtin());
        let reading = probe_trial(
            &spec("resnet18_cifar@micro", 256),
            10,
            &backbones,
            &optimizers,
        )
        .unwrap();
        assert!(reading.images_per_sec > 0.0, "{reading:?}");
        // Other tests of this process may run beside it, so only a floor:
        // the batch's activations alone pass 1 MiB.
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(
                reading.peak_memory_bytes.is_some_and(|b| b > 1 << 20),
                "{reading:?}"
            );
        }
        let err =
            probe_trial(&spec("resnet18_cifar@tiny", 8), 10, &backbones, &optimizers).unwrap_err();
        assert!(err.to_string().contains("tiny"), "{err}");
    }

    #[test]
    fn the_cpu_has_free_memory_and_a_missing_gpu_has_none() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(free_memory_bytes(Device::Cpu).is_some_and(|b| b > 0));
        }
        let missing = Device::Cuda(tch::Cuda::device_count() as usize);
        assert_eq!(free_memory_bytes(missing), None);
    }
}

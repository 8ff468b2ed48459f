//! `bocb bench optim`: one optimizer step on a parameter set shaped like a
//! ResNet-50, bocb's against the reference PyTorch implementation on the same
//! shapes, hyperparameters and device; and `bocb optim info`'s state sizes.
//!
//! Both sides run the first case of each optimizer in
//! `scripts/record_optim_cases.py` (the same reference class and constructor
//! arguments the conformance cases are recorded with). The reference side is
//! `scripts/bench_optim.py`, run by a python that has torch, timm and
//! pytorch_optimizer. A user's `torchscript:PATH` optimizer (its space
//! `PATH.yaml`) is timed against the same module called from python.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bocb_search_spaces::{Catalog, Category, OptimizerSpace, WeightDecayStyle};
use bocb_trial_runner::device::device_name;
use bocb_trial_runner::optim::replay::hparams_from_json;
use bocb_trial_runner::optim::{
    torchscript, Hparams, OptimError, Optimizer, OptimizerRegistry, ParamSet,
};
use bocb_trial_runner::seeding::with_torch_seed;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::{median, BenchError, ReferencePython};
use bocb_trial_runner::device::synchronize;

/// Parameters of torchvision's ResNet-50 at 1000 classes.
pub const RESNET50_PARAMS: usize = 25_557_032;

const BENCH_SCRIPT: &str = include_str!("../../../scripts/bench_optim.py");

/// One parameter tensor of a benchmark set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamShape {
    pub dims: Vec<i64>,
    /// In the weight-decay group (kernels and matrices; not biases or norms).
    pub decay: bool,
}

impl ParamShape {
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<i64>() as usize
    }
}

fn total_params(shapes: &[ParamShape]) -> usize {
    shapes.iter().map(ParamShape::numel).sum()
}

/// torchvision's ResNet-50 parameter tensors at 1000 classes, in module order.
pub fn resnet50_shapes() -> Vec<ParamShape> {
    resnet50_at_width(1.0)
}

/// ResNet-50 with every channel count (and the class count) times `width`,
/// rounded, at least 1.
fn resnet50_at_width(width: f64) -> Vec<ParamShape> {
    let scaled = |c: i64| ((c as f64 * width).round() as i64).max(1);
    let mut shapes = Vec::new();
    let mut conv_bn = |out: i64, inp: i64, k: i64| {
        shapes.push(ParamShape {
            dims: vec![out, inp, k, k],
            decay: true,
        });
        for _ in 0..2 {
            shapes.push(ParamShape {
                dims: vec![out],
                decay: false,
            });
        }
    };
    let stem = scaled(64);
    conv_bn(stem, 3, 7);
    let mut inp = stem;
    for (blocks, width) in [(3, 64), (4, 128), (6, 256), (3, 512)] {
        let w = scaled(width);
        let out = 4 * w;
        for block in 0..blocks {
            conv_bn(w, inp, 1);
            conv_bn(w, w, 3);
            conv_bn(out, w, 1);
            if block == 0 {
                // The projection shortcut.
                conv_bn(out, inp, 1);
            }
            inp = out;
        }
    }
    let classes = scaled(1000);
    shapes.push(ParamShape {
        dims: vec![classes, inp],
        decay: true,
    });
    shapes.push(ParamShape {
        dims: vec![classes],
        decay: false,
    });
    shapes
}

/// A ResNet-50-shaped set of exactly `params` parameters: the widest
/// uniformly width-scaled ResNet-50 that fits, the rest in extra classes,
/// and what remains spread over the 1-d tensors (biases and norm
/// parameters, which every optimizer treats elementwise), so kernels and
/// matrices keep the shapes of a real narrower network.
pub fn resnet50_shapes_for(params: usize) -> Result<Vec<ParamShape>, BenchError> {
    let total_at = |width: f64| total_params(&resnet50_at_width(width));
    let min = total_at(0.0);
    if params < min {
        return Err(BenchError::TooFewParams {
            requested: params,
            min,
        });
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while total_at(hi) <= params {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if total_at(mid) <= params {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut shapes = resnet50_at_width(lo);
    let mut left = params - total_params(&shapes);
    let n = shapes.len();
    let features = shapes[n - 2].dims[1];
    let extra_classes = left as i64 / (features + 1);
    shapes[n - 2].dims[0] += extra_classes;
    shapes[n - 1].dims[0] += extra_classes;
    left -= (extra_classes * (features + 1)) as usize;
    let vectors: Vec<&mut ParamShape> = shapes.iter_mut().filter(|s| s.dims.len() == 1).collect();
    let (each, rest) = (left / vectors.len(), left % vectors.len());
    for (i, shape) in vectors.into_iter().enumerate() {
        shape.dims[0] += (each + usize::from(i < rest)) as i64;
    }
    Ok(shapes)
}

/// Parses a parameter count: `25M`, `1.5M`, `800k`, `2G` or `1000`.
pub fn parse_param_count(text: &str) -> Result<usize, BenchError> {
    let err = || BenchError::ParamCount(text.to_string());
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let value: f64 = number.trim().parse().map_err(|_| err())?;
    let count = value * scale;
    let rounded = count.round();
    // Tolerates the binary rounding of decimals like 0.1M, not fractions.
    if !(rounded >= 1.0 && rounded < u64::MAX as f64) || (count - rounded).abs() > 1e-6 * rounded {
        return Err(err());
    }
    Ok(rounded as usize)
}

/// One optimizer as `bocb optim info` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizerInfo {
    pub name: String,
    pub category: Category,
    pub weight_decay_style: WeightDecayStyle,
    /// Bytes of state per float32 parameter after one step, measured from
    /// the state tensors on a small conv/norm/linear set.
    pub state_bytes_per_param: f64,
}

/// Every optimizer of `registry`, with its search space's category and
/// weight-decay style and its measured state size. Each is built with its
/// search space's centre lr and weight decay and default extras.
pub fn optimizer_info(
    registry: &OptimizerRegistry,
    catalog: &Catalog,
) -> Result<Vec<OptimizerInfo>, BenchError> {
    let names: Vec<String> = registry.names().into_iter().map(String::from).collect();
    optimizers_info(registry, catalog, &names)
}

/// [`optimizer_info`] of the named optimizers only; a `torchscript:PATH`
/// module is measured from the tensors its `state` returns, with its
/// space `PATH.yaml`.
pub fn optimizers_info(
    registry: &OptimizerRegistry,
    catalog: &Catalog,
    names: &[String],
) -> Result<Vec<OptimizerInfo>, BenchError> {
    // Channel counts above 16, so that Adafactor factors the kernel and the
    // matrix as it does on a real network.
    let shapes = [
        (vec![32, 24, 3, 3], true),
        (vec![32], false),
        (vec![32], false),
        (vec![20, 48], true),
        (vec![20], false),
    ]
    .map(|(dims, decay)| ParamShape { dims, decay });
    names
        .iter()
        .map(|name| {
            let space = search_space(catalog, name)?;
            let space = space.as_ref();
            let mut hparams = space.default_params();
            let lr = space.lr.centre();
            hparams.insert("lr".into(), lr);
            hparams.insert("weight_decay".into(), space.weight_decay.centre());
            let params = BenchParams::new(&shapes, Device::Cpu);
            let mut optimizer = params.build(registry, name, &hparams)?;
            if optimizer.hessian_interval().is_some() {
                optimizer.set_hessian(&params.hessian());
            }
            optimizer.try_step(lr).map_err(|source| BenchError::Optim {
                name: name.to_string(),
                source,
            })?;
            Ok(OptimizerInfo {
                name: name.to_string(),
                category: space.category,
                weight_decay_style: space.weight_decay_style,
                state_bytes_per_param: optimizer.state_bytes() as f64
                    / total_params(&shapes) as f64,
            })
        })
        .collect()
}

/// `name`'s search space: the catalog's, or a `torchscript:PATH` module's
/// `PATH.yaml`.
fn search_space<'a>(
    catalog: &'a Catalog,
    name: &str,
) -> Result<Cow<'a, OptimizerSpace>, BenchError> {
    if let Some(path) = name.strip_prefix(torchscript::PREFIX) {
        let file = format!("{path}.yaml");
        let mut space = bocb_search_spaces::load_optimizer_file(&file).map_err(|e| {
            BenchError::TorchScriptSpace {
                name: name.to_string(),
                file,
                message: e.to_string(),
            }
        })?;
        space.name = name.to_string();
        return Ok(Cow::Owned(space));
    }
    catalog
        .optimizer(name)
        .map(Cow::Borrowed)
        .map_err(|_| BenchError::NoSearchSpace(name.to_string()))
}

/// A `torchscript:PATH` optimizer's hyperparameters: its space's centre and
/// default extras (it has no recorded reference case).
fn centre_hparams(space: &OptimizerSpace) -> Hparams {
    let mut hparams = space.default_params();
    hparams.insert("lr".into(), space.lr.centre());
    hparams.insert("weight_decay".into(), space.weight_decay.centre());
    hparams
}

/// `bocb optim info`'s table.
pub fn render_info(infos: &[OptimizerInfo]) -> String {
    // `torchscript:PATH` names are longer than the built-in ones.
    let width = infos
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let mut out = format!(
        "{:<width$} {:<44} {:<13} {:>17}\n",
        "optimizer", "category", "weight decay", "state bytes/param"
    );
    for info in infos {
        let category = format!(
            "{} ({})",
            info.category.as_str(),
            info.category.description()
        );
        let style = match info.weight_decay_style {
            WeightDecayStyle::Coupled => "coupled",
            WeightDecayStyle::Decoupled => "decoupled",
        };
        let bytes = info.state_bytes_per_param;
        let bytes = if bytes.fract() == 0.0 {
            format!("{bytes:.0}")
        } else {
            format!("{bytes:.2}")
        };
        let _ = writeln!(
            out,
            "{:<width$} {category:<44} {style:<13} {bytes:>17}",
            info.name
        );
    }
    out
}

/// Random float32 parameters with random gradients, split as `ParamSet`.
struct BenchParams {
    /// `ParamSet` order: the decay group, then the others.
    ordered: Vec<Tensor>,
    decay_count: usize,
}

impl BenchParams {
    fn new(shapes: &[ParamShape], device: Device) -> Self {
        let group = |decay: bool| {
            shapes.iter().filter(move |s| s.decay == decay).map(|s| {
                let p =
                    Tensor::randn(s.dims.as_slice(), (Kind::Float, device)).set_requires_grad(true);
                // d/dp <p, g> = g: sets a random gradient through autograd.
                (&p * p.randn_like()).sum(Kind::Float).backward();
                p
            })
        };
        let decay_count = shapes.iter().filter(|s| s.decay).count();
        BenchParams {
            ordered: group(true).chain(group(false)).collect(),
            decay_count,
        }
    }

    fn build(
        &self,
        registry: &OptimizerRegistry,
        name: &str,
        hparams: &Hparams,
    ) -> Result<Box<dyn Optimizer>, BenchError> {
        let (decay, no_decay) = self.ordered.split_at(self.decay_count);
        let set = ParamSet {
            decay: decay.iter().map(Tensor::shallow_clone).collect(),
            no_decay: no_decay.iter().map(Tensor::shallow_clone).collect(),
            lower_layers: Vec::new(),
        };
        registry
            .build(name, hparams, set)
            .map_err(|source| BenchError::Optim {
                name: name.to_string(),
                source,
            })
    }

    /// A positive diagonal Hessian estimate, as Sophia takes.
    fn hessian(&self) -> Vec<Tensor> {
        self.ordered.iter().map(|p| p.rand_like() + 0.1).collect()
    }
}

/// What `bocb bench optim` runs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Size of the ResNet-50-shaped parameter set.
    pub params: usize,
    pub device: Device,
    /// Untimed steps first (optimizer state is created at the first step).
    pub warmup: usize,
    /// Timed steps; the median is reported.
    pub steps: usize,
    /// Registry names; empty means every registered optimizer.
    pub optimizers: Vec<String>,
    /// A python with torch, timm and pytorch_optimizer ([`BUILD_PYTHON`] by default).
    pub python: PathBuf,
}

/// One optimizer's step time, bocb's and its reference's.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub optimizer: String,
    pub category: Category,
    /// The reference class, e.g. `torch.optim.AdamW`.
    pub reference: String,
    /// The reference's execution path: on CUDA the fastest of `fused`,
    /// `foreach` and the class's `default`, elsewhere `default`.
    pub reference_path: String,
    /// Median milliseconds per step.
    pub bocb_ms: f64,
    pub reference_ms: f64,
    /// The largest ratio that meets the goal.
    pub goal: f64,
}

impl BenchRow {
    /// bocb's time over the reference's.
    pub fn ratio(&self) -> f64 {
        self.bocb_ms / self.reference_ms
    }
}

/// The ratio an optimizer must stay within: on CUDA 1.0 against the
/// reference's fastest path; on the CPU 1.0 for the Adam family (category
/// b) and 1.5 for the others.
pub fn goal(device: Device, category: Category) -> f64 {
    if device.is_cuda() || category == Category::B {
        1.0
    } else {
        1.5
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub device: String,
    /// Whether bocb's side used its caching CPU allocator.
    pub cpu_cache: bool,
    pub params: usize,
    pub tensors: usize,
    pub warmup: usize,
    pub steps: usize,
    pub rows: Vec<BenchRow>,
}

/// Times every optimizer of `config` against its reference, alternating
/// their steps so that both see the same machine load.
pub fn bench_optimizers(
    config: &BenchConfig,
    registry: &OptimizerRegistry,
    catalog: &Catalog,
    show_progress: bool,
) -> Result<BenchReport, BenchError> {
    if config.steps == 0 {
        return Err(BenchError::NoSteps);
    }
    let names: Vec<String> = if config.optimizers.is_empty() {
        registry.names().into_iter().map(String::from).collect()
    } else {
        config.optimizers.clone()
    };
    let categories = names
        .iter()
        .map(|name| {
            if !registry.names().contains(&name.as_str()) && !name.starts_with(torchscript::PREFIX)
            {
                return Err(BenchError::UnknownOptimizer {
                    name: name.clone(),
                    valid: registry.names().join(", "),
                });
            }
            Ok(search_space(catalog, name)?.category)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shapes = resnet50_shapes_for(config.params)?;

    let progress = if show_progress {
        ProgressBar::new((names.len() * (config.warmup + config.steps)) as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    progress.set_message("starting the reference python");
    let mut reference = ReferencePython::start(&config.python, BENCH_SCRIPT)?;
    let cases = reference.cases()?;

    let mut rows = Vec::with_capacity(names.len());
    for (name, category) in names.into_iter().zip(categories) {
        let optim_err = |source| BenchError::Optim {
            name: name.clone(),
            source,
        };
        // A user's module is timed against itself called from python.
        let (class, hparams, script) = match name.strip_prefix(torchscript::PREFIX) {
            Some(path) => {
                let hparams = centre_hparams(search_space(catalog, &name)?.as_ref());
                let path = std::path::absolute(path).unwrap_or_else(|_| path.into());
                let class = format!("torch.jit.load({})", path.display());
                (class, hparams, Some(path))
            }
            None => {
                let case = cases
                    .get(&name)
                    .ok_or_else(|| BenchError::NoCase(name.clone()))?;
                let hparams = hparams_from_json(&case.kwargs).map_err(optim_err)?;
                (case.class.clone(), hparams, None)
            }
        };
        let lr = *hparams.get("lr").ok_or_else(|| {
            optim_err(OptimError::MissingHparam {
                optimizer: name.clone(),
                name: "lr".into(),
            })
        })?;
        progress.set_message(format!("{name} against {class}"));
        let reference_err = |e| match e {
            BenchError::Python { message, .. } => BenchError::Reference {
                name: name.clone(),
                class: class.clone(),
                message,
            },
            other => other,
        };
        let reference_path = reference
            .setup(&name, config.device, &shapes, script.as_deref(), &hparams)
            .map_err(reference_err)?;
        let mut ours = BocbRun::new(registry, &name, &hparams, lr, &shapes, config.device)?;
        // Step by step in turn, so that both sides see the same machine load.
        let (mut bocb_ms, mut reference_ms) = (Vec::new(), Vec::new());
        for step in 0..config.warmup + config.steps {
            let bocb = ours.step();
            let theirs = reference.step().map_err(reference_err)?;
            if step >= config.warmup {
                bocb_ms.push(bocb);
                reference_ms.push(theirs);
            }
            progress.inc(1);
        }
        rows.push(BenchRow {
            optimizer: name,
            category,
            reference: class.clone(),
            reference_path,
            bocb_ms: median(bocb_ms),
            reference_ms: median(reference_ms),
            goal: goal(config.device, category),
        });
    }
    progress.finish_and_clear();
    Ok(BenchReport {
        device: device_name(config.device),
        cpu_cache: bocb_trial_runner::cpu_cache::install(),
        params: total_params(&shapes),
        tensors: shapes.len(),
        warmup: config.warmup,
        steps: config.steps,
        rows,
    })
}

/// One of bocb's optimizers over random parameters with fixed gradients.
struct BocbRun {
    optimizer: Box<dyn Optimizer>,
    lr: f64,
    device: Device,
    /// Refreshed as often as the optimizer asks, as the reference side does.
    hessian: Option<(usize, Vec<Tensor>)>,
    steps: usize,
}

impl BocbRun {
    fn new(
        registry: &OptimizerRegistry,
        name: &str,
        hparams: &Hparams,
        lr: f64,
        shapes: &[ParamShape],
        device: Device,
    ) -> Result<Self, BenchError> {
        let params = with_torch_seed(0, || BenchParams::new(shapes, device));
        let optimizer = params.build(registry, name, hparams)?;
        let hessian = optimizer
            .hessian_interval()
            .map(|every| (every.max(1), params.hessian()));
        Ok(BocbRun {
            optimizer,
            lr,
            device,
            hessian,
            steps: 0,
        })
    }

    /// Milliseconds of one step.
    fn step(&mut self) -> f64 {
        synchronize(self.device);
        let start = Instant::now();
        if let Some((every, estimate)) = &self.hessian {
            if self.steps.is_multiple_of(*every) {
                self.optimizer.set_hessian(estimate);
            }
        }
        self.optimizer.step(self.lr);
        synchronize(self.device);
        self.steps += 1;
        start.elapsed().as_secs_f64() * 1e3
    }
}

/// `bocb bench optim`'s table and goal line.
pub fn render_bench(report: &BenchReport) -> String {
    let mut out = format!(
        "one optimizer step on {} float32 parameters ({} tensors shaped like ResNet-50) on {}, \
         median of {} steps after {} warm-up\n",
        report.params, report.tensors, report.device, report.steps, report.warmup
    );
    if let Some(note) = super::allocator_note(&report.device, report.cpu_cache) {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(
        out,
        "{:<12} {:<44} {:>10} {:>10} {:>7}",
        "optimizer", "reference (path)", "bocb ms", "ref ms", "ratio"
    );
    let mut missed = Vec::new();
    for row in &report.rows {
        let ratio = row.ratio();
        let reference = format!("{} ({})", row.reference, row.reference_path);
        let _ = writeln!(
            out,
            "{:<12} {:<44} {:>10.2} {:>10.2} {:>6.2}x",
            row.optimizer, reference, row.bocb_ms, row.reference_ms, ratio
        );
        if ratio > row.goal {
            missed.push(format!(
                "{} ({ratio:.2}x > {:.1}x)",
                row.optimizer, row.goal
            ));
        }
    }
    let verdict = if missed.is_empty() {
        format!("met by all {}", report.rows.len())
    } else {
        format!("missed by {}", missed.join(", "))
    };
    let goal = if report.device.starts_with("cuda") {
        "no optimizer slower than its reference's fastest CUDA path"
    } else {
        "no optimizer slower than 1.5x its reference, the Adam family (category b) at or below 1.0x"
    };
    let _ = writeln!(out, "goal: {goal}: {verdict}");
    out
}

impl ReferencePython {
    /// A new reference optimizer `name` over random parameters of `shapes`;
    /// returns the execution path the reference chose.
    /// A new reference optimizer: the recorded case of `name`, or the
    /// TorchScript module `script` with `hparams`.
    fn setup(
        &mut self,
        name: &str,
        device: Device,
        shapes: &[ParamShape],
        script: Option<&Path>,
        hparams: &Hparams,
    ) -> Result<String, BenchError> {
        let mut request = json!({
            "setup": name,
            "shapes": shapes.iter().map(|s| &s.dims).collect::<Vec<_>>(),
            "decay": shapes.iter().map(|s| s.decay).collect::<Vec<_>>(),
            "device": device_name(device),
        });
        if let Some(script) = script {
            request["torchscript"] = json!(script.display().to_string());
            request["hparams"] = json!(hparams);
        }
        let reply = self.request(&request)?;
        Ok(reply["path"].as_str().unwrap_or("default").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_size_is_torchvision_resnet50() {
        let shapes = resnet50_shapes();
        assert_eq!(total_params(&shapes), RESNET50_PARAMS);
        // 53 convolutions with their batch norms, and the classifier.
        assert_eq!(shapes.len(), 53 * 3 + 2);
        assert_eq!(shapes[0].dims, [64, 3, 7, 7]);
        assert_eq!(shapes[shapes.len() - 2].dims, [1000, 2048]);
        assert_eq!(resnet50_shapes_for(RESNET50_PARAMS).unwrap(), shapes);
    }

    #[test]
    fn scaled_sets_have_exactly_the_requested_size() {
        for params in [1000, 100_000, 1_500_000, 25_000_000, 60_000_000] {
            let shapes = resnet50_shapes_for(params).unwrap();
            assert_eq!(total_params(&shapes), params, "{params}");
            assert_eq!(shapes.len(), 161);
            assert!(shapes.iter().all(|s| s.dims.iter().all(|&d| d >= 1)));
            assert!(shapes.iter().all(|s| s.decay == (s.dims.len() > 1)));
        }
        // 25M is a slightly narrower ResNet-50, not a different network.
        let shapes = resnet50_shapes_for(25_000_000).unwrap();
        assert_eq!(shapes[0].dims[1..], [3, 7, 7]);
        assert!((2000..2048).contains(&shapes[shapes.len() - 2].dims[1]));
        assert!(matches!(
            resnet50_shapes_for(10),
            Err(BenchError::TooFewParams { requested: 10, .. })
        ));
    }

    #[test]
    fn parses_param_counts() {
        assert_eq!(parse_param_count("25M").unwrap(), 25_000_000);
        assert_eq!(parse_param_count("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_param_count("1000").unwrap(), 1000);
        assert_eq!(parse_param_count("800k").unwrap(), 800_000);
        assert_eq!(parse_param_count("0.1M").unwrap(), 100_000);
        assert_eq!(parse_param_count("2G").unwrap(), 2_000_000_000);
        for bad in ["", "M", "25X", "-1M", "0", "1.5", "abc", "1e400"] {
            assert!(parse_param_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn search_spaces_record_the_measured_state_size() {
        // The ranking reads state bytes from the search spaces (no libtorch
        // there); they must stay what the runner measures.
        let catalog = Catalog::builtin();
        let infos = optimizer_info(&OptimizerRegistry::builtin(), &catalog).unwrap();
        assert_eq!(infos.len(), catalog.optimizer_names().count());
        for info in infos {
            let recorded = catalog.optimizer(&info.name).unwrap().state_bytes_per_param;
            let recorded =
                recorded.unwrap_or_else(|| panic!("{} records no state size", info.name));
            let measured = info.state_bytes_per_param;
            assert!(
                (recorded - measured).abs() <= 1e-3 * measured.max(1.0),
                "{}: state_bytes_per_param is {recorded} in its YAML, measured {measured}",
                info.name
            );
        }
    }
}

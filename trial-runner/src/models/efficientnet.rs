//! EfficientNet-B0 as timm's `efficientnet_b0` (Table A1: RSB A2 recipe,
//! 224x224 input): MBConv blocks with squeeze-and-excitation and SiLU,
//! stochastic depth rising linearly over the blocks to 0.2, and dropout 0.2
//! before the classifier. Variable names follow timm's state dict
//! (`conv_stem`, `blocks.S.I.conv_pw`, `se.conv_reduce`, `conv_head`,
//! `classifier`) so reference weights load by name.

use tch::nn::{self, Conv2D, Init, ModuleT};
use tch::Tensor;

use super::layers::{
    batch_norm2d, conv2d_normal, drop_path, drop_path_rate, dropout, head_drop_rate, make_divisible,
};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "efficientnet_b0",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "rsb_a2",
            timm: Some("efficientnet_b0"),
            ctor: efficientnet_b0,
        },
    );
}

/// Stochastic-depth rate of the last block (timm's `drop_path_rate`).
const DROP_PATH_RATE: f64 = 0.2;
/// Dropout before the classifier (timm's `drop_rate`).
const DROP_RATE: f64 = 0.2;

/// One stage of timm's arch definition, e.g. `ir_r2_k3_s2_e6_c24_se0.25`.
struct Stage {
    /// `ds` (depthwise-separable, no expansion conv) rather than `ir`.
    depthwise_separable: bool,
    repeats: usize,
    kernel: i64,
    stride: i64,
    expansion: i64,
    outputs: i64,
}

const fn stage(
    ds: bool,
    repeats: usize,
    kernel: i64,
    stride: i64,
    expansion: i64,
    outputs: i64,
) -> Stage {
    Stage {
        depthwise_separable: ds,
        repeats,
        kernel,
        stride,
        expansion,
        outputs,
    }
}

/// `efficientnet_b0`'s arch definition; every block has SE ratio 0.25.
const B0: [Stage; 7] = [
    stage(true, 1, 3, 1, 1, 16),
    stage(false, 2, 3, 2, 6, 24),
    stage(false, 2, 5, 2, 6, 40),
    stage(false, 3, 3, 2, 6, 80),
    stage(false, 3, 5, 1, 6, 112),
    stage(false, 4, 5, 2, 6, 192),
    stage(false, 1, 3, 1, 6, 320),
];

/// `@micro`: the same block kinds, narrower, five stages.
const MICRO: [Stage; 5] = [
    stage(true, 1, 3, 1, 1, 8),
    stage(false, 2, 3, 2, 6, 16),
    stage(false, 2, 5, 2, 6, 24),
    stage(false, 1, 3, 2, 6, 32),
    stage(false, 1, 5, 2, 6, 48),
];

fn efficientnet_b0(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let net = match preset {
        Preset::Full => EfficientNet::new(p, 32, &B0, 1280, classes),
        Preset::Micro => EfficientNet::new(p, 16, &MICRO, 256, classes),
    };
    Model {
        net: Box::new(net),
        no_weight_decay: vec![],
    }
}

/// timm's `_init_weight_goog`: weights ~ N(0, sqrt(2 / fan_out)) with
/// `fan_out = k * k * out_channels / groups`, bias zero.
fn conv(
    p: nn::Path,
    inputs: i64,
    outputs: i64,
    kernel: i64,
    stride: i64,
    groups: i64,
    bias: bool,
) -> Conv2D {
    let stdev = (2.0 * groups as f64 / (kernel * kernel * outputs) as f64).sqrt();
    conv2d_normal(p, inputs, outputs, kernel, stride, groups, bias, stdev)
}

/// timm's `SqueezeExcite`: global average, 1x1 reduce, SiLU, 1x1 expand,
/// sigmoid gate.
#[derive(Debug)]
struct SqueezeExcite {
    conv_reduce: Conv2D,
    conv_expand: Conv2D,
}

impl SqueezeExcite {
    fn new(p: nn::Path, channels: i64, reduced: i64) -> Self {
        SqueezeExcite {
            conv_reduce: conv(&p / "conv_reduce", channels, reduced, 1, 1, 1, true),
            conv_expand: conv(&p / "conv_expand", reduced, channels, 1, 1, 1, true),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let gate = xs
            .mean_dim([2i64, 3].as_slice(), true, xs.kind())
            .apply(&self.conv_reduce)
            .silu()
            .apply(&self.conv_expand)
            .sigmoid();
        xs * gate
    }
}

/// timm's `DepthwiseSeparableConv` (`ds`) and `InvertedResidual` (`ir`):
/// [1x1 expand, norm, SiLU], depthwise kxk, norm, SiLU, SE, 1x1 project,
/// norm, and the shortcut (with stochastic depth) when shapes allow.
#[derive(Debug)]
struct MbConv {
    /// `ir` only: `conv_pw` and `bn1`.
    expand: Option<(Conv2D, nn::BatchNorm)>,
    conv_dw: Conv2D,
    bn_dw: nn::BatchNorm,
    se: SqueezeExcite,
    project: Conv2D,
    bn_project: nn::BatchNorm,
    residual: bool,
    drop_path: f64,
}

impl MbConv {
    fn new(p: nn::Path, stage: &Stage, inputs: i64, stride: i64, drop_path: f64) -> Self {
        let outputs = stage.outputs;
        let k = stage.kernel;
        // SE width from the block input (timm: se_from_exp=False).
        let reduced = (inputs as f64 * 0.25).round() as i64;
        let residual = stride == 1 && inputs == outputs;
        if stage.depthwise_separable {
            MbConv {
                expand: None,
                conv_dw: conv(&p / "conv_dw", inputs, inputs, k, stride, inputs, false),
                bn_dw: batch_norm2d(&p / "bn1", inputs),
                se: SqueezeExcite::new(&p / "se", inputs, reduced),
                project: conv(&p / "conv_pw", inputs, outputs, 1, 1, 1, false),
                bn_project: batch_norm2d(&p / "bn2", outputs),
                residual,
                drop_path,
            }
        } else {
            let mid = make_divisible((inputs * stage.expansion) as f64, 8);
            MbConv {
                expand: Some((
                    conv(&p / "conv_pw", inputs, mid, 1, 1, 1, false),
                    batch_norm2d(&p / "bn1", mid),
                )),
                conv_dw: conv(&p / "conv_dw", mid, mid, k, stride, mid, false),
                bn_dw: batch_norm2d(&p / "bn2", mid),
                se: SqueezeExcite::new(&p / "se", mid, reduced),
                project: conv(&p / "conv_pwl", mid, outputs, 1, 1, 1, false),
                bn_project: batch_norm2d(&p / "bn3", outputs),
                residual,
                drop_path,
            }
        }
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = match &self.expand {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train).silu(),
            None => xs.shallow_clone(),
        };
        let x = x.apply(&self.conv_dw).apply_t(&self.bn_dw, train).silu();
        let x = self
            .se
            .forward(&x)
            .apply(&self.project)
            .apply_t(&self.bn_project, train);
        if self.residual {
            drop_path(x, self.drop_path, train) + xs
        } else {
            x
        }
    }
}

#[derive(Debug)]
struct EfficientNet {
    conv_stem: Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: Conv2D,
    bn2: nn::BatchNorm,
    classifier: nn::Linear,
    head_drop: f64,
}

impl EfficientNet {
    fn new(p: &nn::Path, stem: i64, stages: &[Stage], features: i64, classes: i64) -> Self {
        let total: usize = stages.iter().map(|s| s.repeats).sum();
        let mut blocks = Vec::with_capacity(total);
        let mut inputs = stem;
        for (s, stage) in stages.iter().enumerate() {
            for i in 0..stage.repeats {
                let stride = if i == 0 { stage.stride } else { 1 };
                // timm: drop_path_rate * block_idx / block_count, over all blocks.
                let rate = drop_path_rate(DROP_PATH_RATE) * blocks.len() as f64 / total as f64;
                let path = p / "blocks" / s / i;
                blocks.push(MbConv::new(path, stage, inputs, stride, rate));
                inputs = stage.outputs;
            }
        }
        // timm's `_init_weight_goog` for Linear: uniform in ±1/sqrt(fan_out),
        // bias zero.
        let bound = 1.0 / (classes as f64).sqrt();
        let classifier = nn::linear(
            p / "classifier",
            features,
            classes,
            nn::LinearConfig {
                ws_init: Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                bs_init: Some(Init::Const(0.0)),
                bias: true,
            },
        );
        EfficientNet {
            conv_stem: conv(p / "conv_stem", 3, stem, 3, 2, 1, false),
            bn1: batch_norm2d(p / "bn1", stem),
            blocks,
            conv_head: conv(p / "conv_head", inputs, features, 1, 1, 1, false),
            bn2: batch_norm2d(p / "bn2", features),
            classifier,
            head_drop: head_drop_rate(DROP_RATE),
        }
    }
}

impl ModuleT for EfficientNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.conv_stem).apply_t(&self.bn1, train).silu();
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        let x = x
            .apply(&self.conv_head)
            .apply_t(&self.bn2, train)
            .silu()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1);
        dropout(x, self.head_drop, train).apply(&self.classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// timm's `_init_weight_goog`: convolutions N(0, 2/fan_out) with
    /// `fan_out = k * k * out_channels / groups`, classifier uniform in
    /// ±1/sqrt(classes) with zero bias.
    #[test]
    fn layers_have_timm_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| efficientnet_b0(&vs.root(), 100, Preset::Full));
        let vars = vs.variables();
        assert_eq!(vars["blocks.5.3.conv_dw.weight"].size(), [1152, 1, 5, 5]);
        assert_eq!(
            vars["blocks.5.3.se.conv_reduce.weight"].size(),
            [48, 1152, 1, 1]
        );
        for (name, fan_out) in [
            ("blocks.5.3.conv_dw", 25),
            ("blocks.5.3.conv_pwl", 192),
            ("conv_head", 1280),
        ] {
            let want = (2.0 / fan_out as f64).sqrt();
            let got = vars[&format!("{name}.weight")].std(true).double_value(&[]);
            assert!((got / want - 1.0).abs() < 0.1, "{name}: {got} vs {want}");
        }
        let w = &vars["classifier.weight"];
        // float32 rounding may put the bound itself a hair above 0.1.
        assert!(w.abs().max().double_value(&[]) <= 0.1 + 1e-7);
        assert!(w.abs().max().double_value(&[]) > 0.09);
        let bias = vars["classifier.bias"].abs().sum(Kind::Float);
        assert_eq!(bias.double_value(&[]), 0.0);
    }

    /// timm's schedule: block i of n drops its branch with 0.2 * i / n.
    #[test]
    fn stochastic_depth_rises_linearly_over_the_blocks() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::seeding::draw(|| EfficientNet::new(&vs.root(), 32, &B0, 1280, 10));
        let rates: Vec<f64> = net.blocks.iter().map(|b| b.drop_path).collect();
        assert_eq!(rates.len(), 16);
        for (i, rate) in rates.iter().enumerate() {
            assert!((rate - 0.2 * i as f64 / 16.0).abs() < 1e-12);
        }
        let ones = Tensor::ones([4000, 3, 2, 2], (Kind::Float, Device::Cpu));
        let dropped = drop_path(ones.shallow_clone(), 0.25, true);
        let per_sample = dropped.amax([1i64, 2, 3].as_slice(), false);
        let kept = per_sample.gt(0.0).to_kind(Kind::Float).mean(Kind::Float);
        assert!((kept.double_value(&[]) - 0.75).abs() < 0.03);
        let scaled = per_sample.max().double_value(&[]);
        assert!((scaled - 1.0 / 0.75).abs() < 1e-6);
        assert_eq!(drop_path(ones.shallow_clone(), 0.25, false), ones);
    }
}

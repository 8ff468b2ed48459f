//! DenseNet-BC as torchvision's `DenseNet` defines it, in its CIFAR form
//! (App. A.1): the 7x7/2 stem convolution is replaced by a 3x3 stride-1 one
//! and the max-pool after it is dropped, so 32x32 inputs are down-sampled
//! only by the transitions. Each dense layer is batch norm, ReLU, 1x1
//! convolution to `bn_size * growth` channels, batch norm, ReLU, 3x3
//! convolution to `growth` channels, its output concatenated to its input;
//! transitions halve the channels (compression 0.5) with batch norm, ReLU,
//! 1x1 convolution and a 2x2/2 average pool. Init as torchvision's: every
//! convolution Kaiming normal over fan-in (gain sqrt 2), the classifier's
//! weight PyTorch's default and its bias zero. Variable names follow
//! torchvision (`features.conv0`, `features.denseblockB.denselayerL.conv1`,
//! `features.transitionB.conv`, `features.norm5`, `classifier`).

use tch::nn::{self, Conv2D, Init, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm2d, dropout, head_drop_rate};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "densenet121_cifar",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 32,
            micro_input_size: 32,
            default_recipe: "pytorch",
            timm: Some("densenet121"),
            ctor: densenet121_cifar,
        },
    );
    // The ImageNet form under timm's name: torchvision's 7x7 stride-2 stem
    // and 3x3/2 max-pool, for images at 224 (micro: 64).
    registry.register(
        "densenet121",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "pytorch",
            timm: Some("densenet121"),
            ctor: densenet121,
        },
    );
}

struct Config {
    growth: i64,
    blocks: [usize; 4],
    stem_width: i64,
    bn_size: i64,
    /// The ImageNet stem (7x7/2 convolution, max-pool) instead of CIFAR's.
    imagenet_stem: bool,
}

fn densenet121_config(preset: Preset, imagenet_stem: bool) -> Config {
    match preset {
        Preset::Full => Config {
            growth: 32,
            blocks: [6, 12, 24, 16],
            stem_width: 64,
            bn_size: 4,
            imagenet_stem,
        },
        Preset::Micro => Config {
            growth: 8,
            blocks: [2, 2, 2, 2],
            stem_width: 16,
            bn_size: 4,
            imagenet_stem,
        },
    }
}

fn densenet121_cifar(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    densenet_model(p, &densenet121_config(preset, false), classes)
}

/// timm `densenet121`.
fn densenet121(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    densenet_model(p, &densenet121_config(preset, true), classes)
}

fn densenet_model(p: &nn::Path, config: &Config, classes: i64) -> Model {
    Model {
        net: Box::new(DenseNet::new(p, config, classes)),
        no_weight_decay: vec![],
    }
}

/// torchvision's DenseNet conv init: `kaiming_normal_` with its defaults
/// (fan-in, gain sqrt 2); no bias.
fn conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64) -> Conv2D {
    strided_conv(p, inputs, outputs, kernel, 1)
}

fn strided_conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64) -> Conv2D {
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            padding: kernel / 2,
            stride,
            bias: false,
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        },
    )
}

/// Batch norm, ReLU, convolution: the pre-activation unit DenseNet repeats.
#[derive(Debug)]
struct NormReluConv {
    norm: nn::BatchNorm,
    conv: Conv2D,
}

impl NormReluConv {
    fn new(p: &nn::Path, suffix: &str, inputs: i64, outputs: i64, kernel: i64) -> Self {
        NormReluConv {
            norm: batch_norm2d(p / format!("norm{suffix}"), inputs),
            conv: conv(p / format!("conv{suffix}"), inputs, outputs, kernel),
        }
    }
}

impl ModuleT for NormReluConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // ReLU in place, as torchvision's: batch norm does not keep its output.
        xs.apply_t(&self.norm, train).relu_().apply(&self.conv)
    }
}

#[derive(Debug)]
struct DenseLayer {
    bottleneck: NormReluConv,
    conv: NormReluConv,
}

impl ModuleT for DenseLayer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let new = self
            .conv
            .forward_t(&self.bottleneck.forward_t(xs, train), train);
        Tensor::cat(&[xs, &new], 1)
    }
}

/// A dense block and the transition after it (none after the last).
#[derive(Debug)]
struct DenseBlock {
    layers: Vec<DenseLayer>,
    transition: Option<NormReluConv>,
}

#[derive(Debug)]
struct DenseNet {
    conv0: Conv2D,
    norm0: nn::BatchNorm,
    blocks: Vec<DenseBlock>,
    norm5: nn::BatchNorm,
    classifier: nn::Linear,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
    /// A 3x3/2 max-pool after the stem (the ImageNet form).
    stem_pool: bool,
}

impl DenseNet {
    fn new(p: &nn::Path, config: &Config, classes: i64) -> Self {
        let f = p / "features";
        let mut channels = config.stem_width;
        let mut blocks = Vec::new();
        for (b, &depth) in config.blocks.iter().enumerate() {
            let block = &f / format!("denseblock{}", b + 1);
            let mut layers = Vec::new();
            for l in 0..depth {
                let layer = &block / format!("denselayer{}", l + 1);
                let width = config.bn_size * config.growth;
                layers.push(DenseLayer {
                    bottleneck: NormReluConv::new(&layer, "1", channels, width, 1),
                    conv: NormReluConv::new(&layer, "2", width, config.growth, 3),
                });
                channels += config.growth;
            }
            let transition = (b + 1 < config.blocks.len()).then(|| {
                let path = &f / format!("transition{}", b + 1);
                let unit = NormReluConv::new(&path, "", channels, channels / 2, 1);
                channels /= 2;
                unit
            });
            blocks.push(DenseBlock { layers, transition });
        }
        let bound = 1.0 / (channels as f64).sqrt();
        let classifier = nn::linear(
            p / "classifier",
            channels,
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
        DenseNet {
            conv0: if config.imagenet_stem {
                strided_conv(&f / "conv0", 3, config.stem_width, 7, 2)
            } else {
                conv(&f / "conv0", 3, config.stem_width, 3)
            },
            stem_pool: config.imagenet_stem,
            norm0: batch_norm2d(&f / "norm0", config.stem_width),
            blocks,
            norm5: batch_norm2d(&f / "norm5", channels),
            classifier,
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for DenseNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.conv0).apply_t(&self.norm0, train).relu_();
        if self.stem_pool {
            x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for block in &self.blocks {
            for layer in &block.layers {
                x = layer.forward_t(&x, train);
            }
            if let Some(transition) = &block.transition {
                x = transition.forward_t(&x, train).avg_pool2d(
                    [2, 2],
                    [2, 2],
                    [0, 0],
                    false,
                    true,
                    None::<i64>,
                );
            }
        }
        let pooled = x
            .apply_t(&self.norm5, train)
            .relu_()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1);
        dropout(pooled, self.head_drop, train).apply(&self.classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// torchvision's DenseNet init: convolutions N(0, 2/fan_in), batch norm
    /// one and zero, classifier uniform in ±1/sqrt(fan_in) with zero bias.
    #[test]
    fn layers_have_torchvision_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| densenet121_cifar(&vs.root(), 10, Preset::Micro));
        let vars = vs.variables();
        for (name, fan_in) in [
            ("features.denseblock2.denselayer1.conv2", 32 * 9),
            ("features.denseblock4.denselayer2.conv1", 24),
            ("features.transition3.conv", 32),
        ] {
            let want = (2.0 / fan_in as f64).sqrt();
            let got = vars[&format!("{name}.weight")].std(true).double_value(&[]);
            assert!((got / want - 1.0).abs() < 0.15, "{name}: {got} vs {want}");
        }
        assert_eq!(
            vars["features.norm5.weight"]
                .sum(tch::Kind::Float)
                .double_value(&[]),
            32.0
        );
        let bound = 1.0 / 32f64.sqrt();
        let w = &vars["classifier.weight"];
        assert!(w.abs().max().double_value(&[]) <= bound);
        assert_eq!(
            vars["classifier.bias"]
                .abs()
                .sum(tch::Kind::Float)
                .double_value(&[]),
            0.0
        );
    }
}

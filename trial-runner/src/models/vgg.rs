//! VGG-13 with batch norm as torchvision's `vgg13_bn` defines it: five
//! stages of 3x3 convolution, batch norm and ReLU (two per stage), each
//! closed by a 2x2/2 max-pool, an adaptive average pool to 7x7 and a
//! three-layer classifier with dropout after each hidden layer. It keeps its
//! ImageNet layout at 224x224 (Table A1); CIFAR images are up-sampled to it.
//! Init as torchvision's `VGG`: convolutions Kaiming normal over fan-out for
//! ReLU with zero bias, linear weights N(0, 0.01) with zero bias. Variable
//! names follow torchvision's `nn.Sequential` indices (`features.0`,
//! `features.1`, `classifier.0`, ...).

use tch::nn::{self, Conv2D, Init, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm2d, dropout, head_drop_rate};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "vgg13_bn",
        BackboneEntry {
            family: Family::PrimaryCnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "pytorch",
            timm: Some("vgg13_bn"),
            ctor: vgg13_bn,
        },
    );
}

/// Widths of the five stages, convolutions per stage, hidden linear width.
struct Config {
    widths: [i64; 5],
    convs_per_stage: usize,
    hidden: i64,
}

fn vgg13_bn(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        // torchvision's configuration "B".
        Preset::Full => Config {
            widths: [64, 128, 256, 512, 512],
            convs_per_stage: 2,
            hidden: 4096,
        },
        Preset::Micro => Config {
            widths: [8, 16, 32, 64, 64],
            convs_per_stage: 1,
            hidden: 64,
        },
    };
    Model {
        net: Box::new(Vgg::new(p, &config, classes)),
        no_weight_decay: vec![],
    }
}

/// Side of the adaptive average pool before the classifier.
const POOLED: i64 = 7;
/// torchvision's `dropout`, after each of the two hidden classifier layers.
const DROPOUT: f64 = 0.5;

fn conv(p: nn::Path, inputs: i64, outputs: i64) -> Conv2D {
    nn::conv2d(
        p,
        inputs,
        outputs,
        3,
        nn::ConvConfig {
            padding: 1,
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

fn linear(p: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    nn::linear(
        p,
        inputs,
        outputs,
        nn::LinearConfig {
            ws_init: Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    )
}

#[derive(Debug)]
struct Vgg {
    /// Per stage, its (convolution, batch norm) pairs; a max-pool follows
    /// each stage.
    stages: Vec<Vec<(Conv2D, nn::BatchNorm)>>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
    /// Rate of both classifier dropouts.
    dropout: f64,
}

impl Vgg {
    fn new(p: &nn::Path, config: &Config, classes: i64) -> Self {
        let f = p / "features";
        // Index in `features`: conv, batch norm and ReLU take three each,
        // a max-pool one.
        let mut index = 0;
        let mut inputs = 3;
        let mut stages = Vec::new();
        for &width in &config.widths {
            let mut stage = Vec::new();
            for _ in 0..config.convs_per_stage {
                stage.push((
                    conv(&f / index, inputs, width),
                    batch_norm2d(&f / (index + 1), width),
                ));
                index += 3;
                inputs = width;
            }
            stages.push(stage);
            index += 1;
        }
        let q = p / "classifier";
        Vgg {
            stages,
            fc1: linear(&q / 0, inputs * POOLED * POOLED, config.hidden),
            fc2: linear(&q / 3, config.hidden, config.hidden),
            fc3: linear(&q / 6, config.hidden, classes),
            dropout: head_drop_rate(DROPOUT),
        }
    }
}

impl ModuleT for Vgg {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // ReLUs in place, as torchvision's (`inplace=True`): batch norm and
        // linear layers do not keep their outputs for the backward pass.
        let mut x = xs.shallow_clone();
        for stage in &self.stages {
            for (conv, bn) in stage {
                x = x.apply(conv).apply_t(bn, train).relu_();
            }
            x = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        let x = x
            .adaptive_avg_pool2d([POOLED, POOLED])
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu_();
        let x = dropout(x, self.dropout, train).apply(&self.fc2).relu_();
        dropout(x, self.dropout, train).apply(&self.fc3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// torchvision's VGG init: convolutions N(0, 2/fan_out) with zero bias,
    /// linear weights N(0, 0.01) with zero bias, batch norm one and zero.
    #[test]
    fn layers_have_torchvision_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| vgg13_bn(&vs.root(), 10, Preset::Micro));
        let vars = vs.variables();
        let std = |name: &str| vars[name].std(true).double_value(&[]);
        let is = |name: &str, value: f64| {
            let t = &vars[name];
            (t - value).abs().max().double_value(&[]) == 0.0
        };
        for (index, outputs) in [(4, 16), (8, 32), (12, 64)] {
            let want = (2.0 / (outputs * 9) as f64).sqrt();
            let got = std(&format!("features.{index}.weight"));
            assert!(
                (got / want - 1.0).abs() < 0.1,
                "conv {index}: {got} vs {want}"
            );
            assert!(is(&format!("features.{index}.bias"), 0.0));
            assert!(is(&format!("features.{}.weight", index + 1), 1.0));
            assert!(is(&format!("features.{}.bias", index + 1), 0.0));
        }
        for index in [0, 3] {
            let got = std(&format!("classifier.{index}.weight"));
            assert!((got / 0.01 - 1.0).abs() < 0.1, "linear {index}: {got}");
            assert!(is(&format!("classifier.{index}.bias"), 0.0));
        }
        assert_eq!(vars["features.0.weight"].kind(), Kind::Float);
    }
}

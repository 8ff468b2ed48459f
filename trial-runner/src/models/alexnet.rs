//! AlexNet as torchvision defines it (the "one weird trick" single-tower
//! variant): five convolutions with ReLU and three 3x3/2 max-pools, an
//! adaptive average pool to 6x6 and a three-layer classifier with dropout
//! before each of its first two linear layers. It keeps its ImageNet layout
//! at 224x224 (Table A1); CIFAR images are up-sampled to it. torchvision sets
//! no init of its own, so every layer has PyTorch's default. Variable names
//! follow torchvision's `nn.Sequential` indices (`features.0`,
//! `classifier.1`, ...).

use tch::nn::{self, Conv2D, ModuleT};
use tch::Tensor;

use super::layers::{dropout, head_drop_rate, torch_conv2d, torch_linear};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "alexnet",
        BackboneEntry {
            family: Family::PrimaryCnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "pytorch",
            timm: None,
            ctor: alexnet,
        },
    );
}

/// Widths of the five convolutions and of the two hidden linear layers.
struct Config {
    convs: [i64; 5],
    hidden: i64,
}

fn alexnet(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => Config {
            convs: [64, 192, 384, 256, 256],
            hidden: 4096,
        },
        Preset::Micro => Config {
            convs: [16, 32, 64, 48, 48],
            hidden: 64,
        },
    };
    Model {
        net: Box::new(AlexNet::new(p, &config, classes)),
        no_weight_decay: vec![],
    }
}

/// Side of the adaptive average pool before the classifier.
const POOLED: i64 = 6;
/// torchvision's `dropout`, before each of the first two classifier layers.
const DROPOUT: f64 = 0.5;

#[derive(Debug)]
struct AlexNet {
    convs: Vec<Conv2D>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
    /// Rate of both classifier dropouts.
    dropout: f64,
}

impl AlexNet {
    fn new(p: &nn::Path, config: &Config, classes: i64) -> Self {
        let f = p / "features";
        let c = &config.convs;
        // (index in `features`, inputs, outputs, kernel, stride, padding)
        let specs = [
            (0, 3, c[0], 11, 4, 2),
            (3, c[0], c[1], 5, 1, 2),
            (6, c[1], c[2], 3, 1, 1),
            (8, c[2], c[3], 3, 1, 1),
            (10, c[3], c[4], 3, 1, 1),
        ];
        let convs = specs
            .iter()
            .map(|&(i, inputs, outputs, kernel, stride, padding)| {
                torch_conv2d(&f / i, inputs, outputs, kernel, stride, padding)
            })
            .collect();
        let q = p / "classifier";
        AlexNet {
            convs,
            fc1: torch_linear(&q / 1, c[4] * POOLED * POOLED, config.hidden),
            fc2: torch_linear(&q / 4, config.hidden, config.hidden),
            fc3: torch_linear(&q / 6, config.hidden, classes),
            dropout: head_drop_rate(DROPOUT),
        }
    }
}

fn max_pool(xs: Tensor) -> Tensor {
    xs.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

impl ModuleT for AlexNet {
    // ReLUs in place, as torchvision's (`inplace=True`): no new activation
    // buffer, and convolutions and linears do not keep their outputs for
    // the backward pass.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = max_pool(xs.apply(&self.convs[0]).relu_());
        x = max_pool(x.apply(&self.convs[1]).relu_());
        for conv in &self.convs[2..] {
            x = x.apply(conv).relu_();
        }
        let x = max_pool(x)
            .adaptive_avg_pool2d([POOLED, POOLED])
            .flatten(1, -1);
        let x = dropout(x, self.dropout, train).apply(&self.fc1).relu_();
        dropout(x, self.dropout, train)
            .apply(&self.fc2)
            .relu_()
            .apply(&self.fc3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// PyTorch's default init: uniform in ±1/sqrt(fan_in), weight and bias.
    #[test]
    fn layers_have_pytorch_default_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| alexnet(&vs.root(), 10, Preset::Micro));
        let vars = vs.variables();
        for (name, fan_in) in [
            ("features.3", 16 * 25),
            ("features.6", 32 * 9),
            ("classifier.1", 48 * 36),
        ] {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let w = &vars[&format!("{name}.weight")];
            let b = &vars[&format!("{name}.bias")];
            assert!(w.abs().max().double_value(&[]) <= bound, "{name}");
            assert!(b.abs().max().double_value(&[]) <= bound, "{name}");
            let std = w.std(true).double_value(&[]);
            let want = bound / 3f64.sqrt();
            assert!(
                (std / want - 1.0).abs() < 0.1,
                "{name}: std {std}, want {want}"
            );
            assert_eq!(w.kind(), Kind::Float);
        }
    }
}

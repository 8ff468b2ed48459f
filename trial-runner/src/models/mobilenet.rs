//! MobileNetV2 as torchvision's `mobilenet_v2` (Table A1: PyTorch recipe,
//! 224x224 input): inverted residual blocks with ReLU6 and linear
//! bottlenecks. Variable names follow torchvision's state dict
//! (`features.N.conv.K`, `classifier.1`) so reference weights load by name.

use tch::nn::{self, Conv2D, Init, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm2d, conv2d_normal, dropout, head_drop_rate, make_divisible};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// torchvision's `dropout` before the classifier.
const HEAD_DROP_RATE: f64 = 0.2;

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "mobilenet_v2",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "pytorch",
            timm: Some("mobilenetv2_100"),
            ctor: mobilenet_v2,
        },
    );
}

/// Stages as torchvision's `inverted_residual_setting`: expansion `t`,
/// output channels `c`, repeats `n`, first stride `s`.
const FULL: [[i64; 4]; 7] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
];

/// `@micro`: half width, the first five stages, mostly one block each.
const MICRO: [[i64; 4]; 5] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 2, 2],
    [6, 64, 1, 2],
    [6, 96, 1, 1],
];

fn mobilenet_v2(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let net = match preset {
        Preset::Full => MobileNetV2::new(p, 1.0, &FULL, classes),
        Preset::Micro => MobileNetV2::new(p, 0.5, &MICRO, classes),
    };
    Model {
        net: Box::new(net),
        no_weight_decay: vec![],
    }
}

/// Conv (no bias, Kaiming normal over fan-out as torchvision inits it),
/// batch norm, ReLU6: torchvision's `Conv2dNormActivation`.
#[derive(Debug)]
struct ConvBnRelu6 {
    conv: Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBnRelu6 {
    fn new(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        ConvBnRelu6 {
            conv: conv(&p / 0, inputs, outputs, kernel, stride, groups),
            bn: batch_norm2d(&p / 1, outputs),
        }
    }
}

impl ModuleT for ConvBnRelu6 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // torchvision's ReLU6(inplace=True), hardtanh_(0, 6): batch norm
        // does not keep its output, and the backward needs only the result.
        xs.apply(&self.conv).apply_t(&self.bn, train).relu6_()
    }
}

/// `kaiming_normal_(mode="fan_out")`: torch's fan-out of a conv weight is
/// `out_channels * k * k`, whatever the groups.
fn conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64, groups: i64) -> Conv2D {
    let stdev = (2.0 / (outputs * kernel * kernel) as f64).sqrt();
    conv2d_normal(p, inputs, outputs, kernel, stride, groups, false, stdev)
}

#[derive(Debug)]
struct InvertedResidual {
    expand: Option<ConvBnRelu6>,
    depthwise: ConvBnRelu6,
    project: Conv2D,
    bn: nn::BatchNorm,
    residual: bool,
}

impl InvertedResidual {
    fn new(p: nn::Path, inputs: i64, outputs: i64, stride: i64, expansion: i64) -> Self {
        let hidden = inputs * expansion;
        let p = &p / "conv";
        let mut index = 0;
        let expand = (expansion != 1).then(|| {
            index += 1;
            ConvBnRelu6::new(&p / 0, inputs, hidden, 1, 1, 1)
        });
        InvertedResidual {
            expand,
            depthwise: ConvBnRelu6::new(&p / index, hidden, hidden, 3, stride, hidden),
            project: conv(&p / (index + 1), hidden, outputs, 1, 1, 1),
            bn: batch_norm2d(&p / (index + 2), outputs),
            residual: stride == 1 && inputs == outputs,
        }
    }
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = match &self.expand {
            Some(expand) => expand.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        let out = self
            .depthwise
            .forward_t(&x, train)
            .apply(&self.project)
            .apply_t(&self.bn, train);
        if self.residual {
            out + xs
        } else {
            out
        }
    }
}

#[derive(Debug)]
struct MobileNetV2 {
    features: Vec<Box<dyn ModuleT + Send>>,
    classifier: nn::Linear,
    head_drop: f64,
}

impl MobileNetV2 {
    fn new(p: &nn::Path, width_mult: f64, setting: &[[i64; 4]], classes: i64) -> Self {
        let features_path = p / "features";
        let mut inputs = make_divisible(32.0 * width_mult, 8);
        let last = make_divisible(1280.0 * width_mult.max(1.0), 8);
        let mut features: Vec<Box<dyn ModuleT + Send>> = vec![Box::new(ConvBnRelu6::new(
            &features_path / 0,
            3,
            inputs,
            3,
            2,
            1,
        ))];
        for &[t, c, n, s] in setting {
            let outputs = make_divisible(c as f64 * width_mult, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let path = &features_path / features.len();
                features.push(Box::new(InvertedResidual::new(
                    path, inputs, outputs, stride, t,
                )));
                inputs = outputs;
            }
        }
        let path = &features_path / features.len();
        features.push(Box::new(ConvBnRelu6::new(path, inputs, last, 1, 1, 1)));
        // torchvision: Linear weight ~ N(0, 0.01), bias zero.
        let classifier = nn::linear(
            p / "classifier" / 1,
            last,
            classes,
            nn::LinearConfig {
                ws_init: Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
                bs_init: Some(Init::Const(0.0)),
                bias: true,
            },
        );
        MobileNetV2 {
            features,
            classifier,
            head_drop: head_drop_rate(HEAD_DROP_RATE),
        }
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for layer in &self.features {
            x = layer.forward_t(&x, train);
        }
        let x = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        dropout(x, self.head_drop, train).apply(&self.classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// torchvision's MobileNetV2 init: convolutions Kaiming normal over
    /// fan-out (`out_channels * k * k`, also for depthwise ones), classifier
    /// N(0, 0.01) with zero bias.
    #[test]
    fn layers_have_torchvision_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| mobilenet_v2(&vs.root(), 100, Preset::Full));
        let vars = vs.variables();
        assert_eq!(vars["features.15.conv.1.0.weight"].size(), [960, 1, 3, 3]);
        for (name, fan_out) in [
            ("features.15.conv.1.0", 960 * 9),
            ("features.15.conv.2", 160),
            ("features.18.0", 1280),
        ] {
            let want = (2.0 / fan_out as f64).sqrt();
            let got = vars[&format!("{name}.weight")].std(true).double_value(&[]);
            assert!((got / want - 1.0).abs() < 0.1, "{name}: {got} vs {want}");
        }
        let got = vars["classifier.1.weight"].std(true).double_value(&[]);
        assert!((got / 0.01 - 1.0).abs() < 0.1, "{got}");
        let bias = vars["classifier.1.bias"].abs().sum(Kind::Float);
        assert_eq!(bias.double_value(&[]), 0.0);
    }
}

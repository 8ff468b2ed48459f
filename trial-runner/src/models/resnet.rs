//! ResNet with basic blocks, in its CIFAR form (App. A.1): a 3x3 stride-1
//! stem and no max-pool, so 32x32 inputs are down-sampled only by the stages.
//! Variable names follow torchvision/timm (`conv1`, `layerN.i.downsample.0`,
//! `fc`) so reference weights load by name.

use tch::nn::{self, Conv2D, Init, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm2d, torch_linear};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "resnet18_cifar",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 32,
            default_recipe: "pytorch",
            ctor: resnet18_cifar,
        },
    );
}

fn resnet18_cifar(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let (widths, depths) = match preset {
        Preset::Full => ([64, 128, 256, 512], [2, 2, 2, 2]),
        Preset::Micro => ([16, 32, 64, 128], [1, 1, 1, 1]),
    };
    Model {
        net: Box::new(ResNet::new(p, &widths, &depths, classes)),
        no_weight_decay: vec![],
    }
}

/// torchvision's conv init: Kaiming normal over fan-out for ReLU.
fn conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64) -> Conv2D {
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride,
            padding: kernel / 2,
            bias: false,
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2D,
    bn1: nn::BatchNorm,
    conv2: Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: nn::Path, inputs: i64, outputs: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || inputs != outputs).then(|| {
            (
                conv(&p / "downsample" / 0, inputs, outputs, 1, stride),
                batch_norm2d(&p / "downsample" / 1, outputs),
            )
        });
        BasicBlock {
            conv1: conv(&p / "conv1", inputs, outputs, 3, stride),
            bn1: batch_norm2d(&p / "bn1", outputs),
            conv2: conv(&p / "conv2", outputs, outputs, 3, 1),
            bn2: batch_norm2d(&p / "bn2", outputs),
            downsample,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let shortcut = match &self.downsample {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (out + shortcut).relu()
    }
}

#[derive(Debug)]
struct ResNet {
    conv1: Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<BasicBlock>,
    fc: nn::Linear,
}

impl ResNet {
    fn new(p: &nn::Path, widths: &[i64; 4], depths: &[usize; 4], classes: i64) -> Self {
        let mut blocks = Vec::new();
        let mut inputs = widths[0];
        for (stage, (&width, &depth)) in widths.iter().zip(depths).enumerate() {
            for i in 0..depth {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let path = p / format!("layer{}", stage + 1) / i;
                blocks.push(BasicBlock::new(path, inputs, width, stride));
                inputs = width;
            }
        }
        ResNet {
            conv1: conv(p / "conv1", 3, widths[0], 3, 1),
            bn1: batch_norm2d(p / "bn1", widths[0]),
            blocks,
            fc: torch_linear(p / "fc", inputs, classes),
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc)
    }
}

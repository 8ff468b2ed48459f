//! ResNet with basic (ResNet-18) or bottleneck (ResNet-50) blocks, in its
//! CIFAR form (App. A.1): a 3x3 stride-1 stem and no max-pool, so 32x32
//! inputs are down-sampled only by the stages. Variable names follow
//! torchvision/timm (`conv1`, `layerN.i.conv3`, `layerN.i.downsample.0`,
//! `fc`) so reference weights load by name.

use tch::nn::{self, Conv2D, ModuleT};
use tch::Tensor;

use super::layers::{
    batch_norm2d, conv_kaiming_fan_out as conv, dropout, head_drop_rate, torch_linear,
};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "resnet18_cifar",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 32,
            micro_input_size: 32,
            default_recipe: "pytorch",
            timm: Some("resnet18"),
            ctor: resnet18_cifar,
        },
    );
    registry.register(
        "resnet50_cifar",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 32,
            micro_input_size: 32,
            default_recipe: "pytorch",
            timm: Some("resnet50"),
            ctor: resnet50_cifar,
        },
    );
    // The ImageNet forms, under timm's names: a 7x7 stride-2 stem and a
    // max-pool, for images at 224 (micro: 64).
    for (name, ctor) in [
        ("resnet18", resnet18 as super::BackboneCtor),
        ("resnet50", resnet50),
    ] {
        registry.register(
            name,
            BackboneEntry {
                family: Family::ClassicalCnn,
                input_size: 224,
                micro_input_size: 64,
                default_recipe: "pytorch",
                timm: Some(name),
                ctor,
            },
        );
    }
}

/// Widths and depths of ResNet-18 for `preset`.
fn resnet18_shape(preset: Preset) -> ([i64; 4], [usize; 4]) {
    match preset {
        Preset::Full => ([64, 128, 256, 512], [2, 2, 2, 2]),
        Preset::Micro => ([16, 32, 64, 128], [1, 1, 1, 1]),
    }
}

/// Bottleneck widths and depths of ResNet-50 for `preset`.
fn resnet50_shape(preset: Preset) -> ([i64; 4], [usize; 4]) {
    match preset {
        Preset::Full => ([64, 128, 256, 512], [3, 4, 6, 3]),
        Preset::Micro => ([16, 32, 64, 96], [1, 1, 1, 1]),
    }
}

fn model(
    p: &nn::Path,
    block: Block,
    shape: ([i64; 4], [usize; 4]),
    classes: i64,
    stem: Stem,
) -> Model {
    Model {
        net: Box::new(ResNet::new(p, block, &shape.0, &shape.1, classes, stem)),
        no_weight_decay: vec![],
    }
}

/// timm `resnet18`.
fn resnet18(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    model(
        p,
        Block::Basic,
        resnet18_shape(preset),
        classes,
        Stem::ImageNet,
    )
}

/// timm `resnet50`.
fn resnet50(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    model(
        p,
        Block::Bottleneck,
        resnet50_shape(preset),
        classes,
        Stem::ImageNet,
    )
}

/// The first layers of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stem {
    /// A 3x3 stride-1 convolution, no max-pool (32x32 inputs).
    Cifar,
    /// timm's: a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool.
    ImageNet,
}

fn resnet18_cifar(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    model(
        p,
        Block::Basic,
        resnet18_shape(preset),
        classes,
        Stem::Cifar,
    )
}

/// timm `resnet50` with the CIFAR stem; `widths` are the bottleneck widths
/// (`planes`), each stage's output being four times as wide.
fn resnet50_cifar(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    model(
        p,
        Block::Bottleneck,
        resnet50_shape(preset),
        classes,
        Stem::Cifar,
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
        let downsample = downsample(&p, inputs, outputs, stride);
        BasicBlock {
            conv1: conv(&p / "conv1", inputs, outputs, 3, stride),
            bn1: batch_norm2d(&p / "bn1", outputs),
            conv2: conv(&p / "conv2", outputs, outputs, 3, 1),
            bn2: batch_norm2d(&p / "bn2", outputs),
            downsample,
        }
    }
}

/// The residual sum and its ReLU, both in place on the branch's last batch
/// norm output (which its backward does not need), as timm's `x += shortcut;
/// act(x)` with `inplace=True`.
fn add_relu_(mut out: Tensor, shortcut: &Tensor) -> Tensor {
    out += shortcut;
    out.relu_()
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu_()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        add_relu_(out, &shortcut(xs, &self.downsample, train))
    }
}

/// Which residual block a ResNet stacks.
#[derive(Debug, Clone, Copy)]
enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    /// Output channels per unit of block width (`expansion` in torchvision).
    fn expansion(self) -> i64 {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }

    fn build(self, p: nn::Path, inputs: i64, width: i64, stride: i64) -> Box<dyn ModuleT + Send> {
        match self {
            Block::Basic => Box::new(BasicBlock::new(p, inputs, width, stride)),
            Block::Bottleneck => Box::new(Bottleneck::new(p, inputs, width, stride)),
        }
    }
}

/// 1x1 projection shortcut (`downsample.0` conv, `downsample.1` norm), used
/// when the block changes the resolution or the width.
fn downsample(
    p: &nn::Path,
    inputs: i64,
    outputs: i64,
    stride: i64,
) -> Option<(Conv2D, nn::BatchNorm)> {
    (stride != 1 || inputs != outputs).then(|| {
        (
            conv(p / "downsample" / 0, inputs, outputs, 1, stride),
            batch_norm2d(p / "downsample" / 1, outputs),
        )
    })
}

fn shortcut(xs: &Tensor, downsample: &Option<(Conv2D, nn::BatchNorm)>, train: bool) -> Tensor {
    match downsample {
        Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
        None => xs.shallow_clone(),
    }
}

/// timm/torchvision (v1.5) bottleneck: 1x1 reduce, 3x3 carrying the stride,
/// 1x1 expand to `4 * width`. As in timm (`zero_init_last`), the last norm's
/// weight starts at zero, so each block starts as its shortcut.
#[derive(Debug)]
struct Bottleneck {
    conv1: Conv2D,
    bn1: nn::BatchNorm,
    conv2: Conv2D,
    bn2: nn::BatchNorm,
    conv3: Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    fn new(p: nn::Path, inputs: i64, width: i64, stride: i64) -> Self {
        let outputs = width * Block::Bottleneck.expansion();
        let mut bn3 = batch_norm2d(&p / "bn3", outputs);
        if let Some(weight) = bn3.ws.as_mut() {
            let _ = tch::no_grad(|| weight.zero_());
        }
        Bottleneck {
            conv1: conv(&p / "conv1", inputs, width, 1, 1),
            bn1: batch_norm2d(&p / "bn1", width),
            conv2: conv(&p / "conv2", width, width, 3, stride),
            bn2: batch_norm2d(&p / "bn2", width),
            conv3: conv(&p / "conv3", width, outputs, 1, 1),
            bn3,
            downsample: downsample(&p, inputs, outputs, stride),
        }
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu_()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train)
            .relu_()
            .apply(&self.conv3)
            .apply_t(&self.bn3, train);
        add_relu_(out, &shortcut(xs, &self.downsample, train))
    }
}

#[derive(Debug)]
struct ResNet {
    conv1: Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Box<dyn ModuleT + Send>>,
    fc: nn::Linear,
    stem: Stem,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
}

impl ResNet {
    fn new(
        p: &nn::Path,
        block: Block,
        widths: &[i64; 4],
        depths: &[usize; 4],
        classes: i64,
        stem: Stem,
    ) -> Self {
        let mut blocks = Vec::new();
        let mut inputs = widths[0];
        for (stage, (&width, &depth)) in widths.iter().zip(depths).enumerate() {
            for i in 0..depth {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let path = p / format!("layer{}", stage + 1) / i;
                blocks.push(block.build(path, inputs, width, stride));
                inputs = width * block.expansion();
            }
        }
        ResNet {
            conv1: match stem {
                Stem::Cifar => conv(p / "conv1", 3, widths[0], 3, 1),
                Stem::ImageNet => conv(p / "conv1", 3, widths[0], 7, 2),
            },
            stem,
            bn1: batch_norm2d(p / "bn1", widths[0]),
            blocks,
            fc: torch_linear(p / "fc", inputs, classes),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu_();
        if self.stem == Stem::ImageNet {
            x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        let pooled = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        dropout(pooled, self.head_drop, train).apply(&self.fc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// timm's ResNet-50 init: convolutions N(0, 2/fan_out) and, with
    /// `zero_init_last`, each bottleneck's `bn3.weight` zero.
    #[test]
    fn bottlenecks_have_timm_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| resnet50_cifar(&vs.root(), 10, Preset::Full));
        let vars = vs.variables();
        for (name, fan_out) in [
            ("layer3.2.conv2", 256 * 9),
            ("layer4.0.conv3", 2048),
            ("layer2.0.downsample.0", 512),
        ] {
            let want = (2.0 / fan_out as f64).sqrt();
            let got = vars[&format!("{name}.weight")].std(true).double_value(&[]);
            assert!((got / want - 1.0).abs() < 0.1, "{name}: {got} vs {want}");
        }
        let bn3: Vec<_> = vars.keys().filter(|k| k.ends_with("bn3.weight")).collect();
        assert_eq!(bn3.len(), 16);
        for name in bn3 {
            let sum = vars[name].abs().sum(Kind::Float).double_value(&[]);
            assert_eq!(sum, 0.0, "{name}");
        }
        let bn2 = vars["layer1.0.bn2.weight"]
            .sum(Kind::Float)
            .double_value(&[]);
        assert_eq!(bn2, 64.0);
    }
}

//! RepVGG-A1 as timm's `ByobNet` (`repvgg_a1`): a stride-2 RepVGG block as
//! stem, then four stages of RepVGG blocks, each the sum of a 3x3 conv-BN, a
//! 1x1 conv-BN and (when shapes allow) an identity BN, followed by ReLU.
//! Variable names follow timm (`stem.conv_kxk.conv`, `stages.S.I.identity`,
//! `head.fc`) so reference weights load by name.
//!
//! [`RepVgg::reparameterize`] folds every block into a single 3x3 conv with
//! bias (the paper's structural re-parameterisation), giving a plain
//! VGG-like stack for inference with the same eval-mode outputs.

use tch::nn::{self, Conv2D, Init, Module, ModuleT};
use tch::{Kind, Tensor};

use super::layers::{conv_kaiming_fan_out as conv, dropout, head_drop_rate};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// `torch.nn.BatchNorm2d`'s default epsilon (timm's `BatchNormAct2d`).
const BN_EPS: f64 = 1e-5;

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "repvgg_a1",
        BackboneEntry {
            family: Family::ClassicalCnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "pytorch",
            timm: Some("repvgg_a1"),
            ctor: repvgg_a1_model,
        },
    );
}

fn repvgg_a1_model(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    Model {
        net: Box::new(repvgg_a1(p, classes, preset)),
        no_weight_decay: vec![],
    }
}

/// timm's `repvgg_a1` (stem 64 wide, stages of 2, 4, 14, 1 blocks, 64, 128,
/// 256, 1280 wide) or its `@micro` preset (`ByoModelCfg(blocks=
/// _rep_vgg_bcfg(d=(1, 2, 2, 1), wf=(0.25, 0.25, 0.25, 0.5)), stem_type='rep',
/// stem_chs=16)`).
pub fn repvgg_a1(p: &nn::Path, classes: i64, preset: Preset) -> RepVgg {
    let (stem, widths, depths) = match preset {
        Preset::Full => (64, [64, 128, 256, 1280], [2, 4, 14, 1]),
        Preset::Micro => (16, [16, 32, 64, 256], [1, 2, 2, 1]),
    };
    RepVgg::new(p, stem, &widths, &depths, classes)
}

/// `RepVggBlock.init_weights`: BN weight N(0.1, 0.1), bias N(0, 0.1).
fn block_bn(p: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        channels,
        nn::BatchNormConfig {
            eps: BN_EPS,
            ws_init: Init::Randn {
                mean: 0.1,
                stdev: 0.1,
            },
            bs_init: Init::Randn {
                mean: 0.0,
                stdev: 0.1,
            },
            ..Default::default()
        },
    )
}

/// The (kernel, bias) of a BN applied after a convolution with `kernel`.
fn fuse_bn(kernel: &Tensor, bn: &nn::BatchNorm) -> (Tensor, Tensor) {
    let std = (&bn.running_var + BN_EPS).sqrt();
    let gamma = bn.ws.as_ref().expect("affine batch norm");
    let beta = bn.bs.as_ref().expect("affine batch norm");
    let scale = gamma / &std;
    let kernel = kernel * scale.reshape([-1, 1, 1, 1]);
    let bias = beta - &bn.running_mean * &scale;
    (kernel, bias)
}

#[derive(Debug)]
struct ConvBn {
    conv: Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64) -> Self {
        ConvBn {
            conv: conv(&p / "conv", inputs, outputs, kernel, stride),
            bn: block_bn(&p / "bn", outputs),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train)
    }
}

#[derive(Debug)]
struct RepVggBlock {
    conv_kxk: ConvBn,
    conv_1x1: ConvBn,
    identity: Option<nn::BatchNorm>,
    inputs: i64,
    stride: i64,
}

impl RepVggBlock {
    fn new(p: nn::Path, inputs: i64, outputs: i64, stride: i64) -> Self {
        let identity =
            (inputs == outputs && stride == 1).then(|| block_bn(&p / "identity", outputs));
        RepVggBlock {
            conv_kxk: ConvBn::new(&p / "conv_kxk", inputs, outputs, 3, stride),
            conv_1x1: ConvBn::new(&p / "conv_1x1", inputs, outputs, 1, stride),
            identity,
            inputs,
            stride,
        }
    }

    /// The single 3x3 convolution (kernel, bias) equal to the block's three
    /// branches in eval mode.
    fn fused(&self) -> PlainConv {
        let (mut kernel, mut bias) = fuse_bn(&self.conv_kxk.conv.ws, &self.conv_kxk.bn);
        let (k1, b1) = fuse_bn(&self.conv_1x1.conv.ws, &self.conv_1x1.bn);
        kernel += k1.constant_pad_nd([1, 1, 1, 1]);
        bias += b1;
        if let Some(bn) = &self.identity {
            let eye = Tensor::eye(self.inputs, (Kind::Float, kernel.device()))
                .reshape([self.inputs, self.inputs, 1, 1])
                .constant_pad_nd([1, 1, 1, 1]);
            let (ki, bi) = fuse_bn(&eye, bn);
            kernel += ki;
            bias += bi;
        }
        PlainConv {
            weight: kernel.detach(),
            bias: bias.detach(),
            stride: self.stride,
        }
    }
}

impl ModuleT for RepVggBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = self.conv_1x1.forward_t(xs, train) + self.conv_kxk.forward_t(xs, train);
        if let Some(bn) = &self.identity {
            out += xs.apply_t(bn, train);
        }
        // In place, as timm's: the sum is not kept for the backward pass.
        out.relu_()
    }
}

/// The multi-branch (training-time) RepVGG network.
#[derive(Debug)]
pub struct RepVgg {
    stem: RepVggBlock,
    blocks: Vec<RepVggBlock>,
    fc: nn::Linear,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
}

impl RepVgg {
    fn new(p: &nn::Path, stem: i64, widths: &[i64; 4], depths: &[usize; 4], classes: i64) -> Self {
        let mut blocks = Vec::new();
        let mut inputs = stem;
        for (stage, (&width, &depth)) in widths.iter().zip(depths).enumerate() {
            for i in 0..depth {
                let stride = if i == 0 { 2 } else { 1 };
                blocks.push(RepVggBlock::new(
                    p / "stages" / stage / i,
                    inputs,
                    width,
                    stride,
                ));
                inputs = width;
            }
        }
        // timm's ByobNet Linear init: N(0, 0.01), bias zero.
        let fc = nn::linear(
            p / "head" / "fc",
            inputs,
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
        RepVgg {
            stem: RepVggBlock::new(p / "stem", 3, stem, 2),
            blocks,
            fc,
            head_drop: head_drop_rate(0.0),
        }
    }

    /// The inference-time network: every block folded (with its BN running
    /// statistics) into one 3x3 conv with bias, as timm's `reparameterize()`.
    /// Its outputs equal this network's eval-mode outputs; it holds detached
    /// copies, so later training of this network does not change it.
    pub fn reparameterize(&self) -> RepVggPlain {
        tch::no_grad(|| RepVggPlain {
            convs: std::iter::once(&self.stem)
                .chain(&self.blocks)
                .map(RepVggBlock::fused)
                .collect(),
            fc_weight: self.fc.ws.detach().copy(),
            fc_bias: self.fc.bs.as_ref().expect("head bias").detach().copy(),
        })
    }
}

impl ModuleT for RepVgg {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.stem.forward_t(xs, train);
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        let pooled = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        dropout(pooled, self.head_drop, train).apply(&self.fc)
    }
}

#[derive(Debug)]
struct PlainConv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
}

/// The re-parameterised RepVGG: a plain stack of 3x3 conv + ReLU, average
/// pooling and the classifier. Inference only (no batch norm left to train).
#[derive(Debug)]
pub struct RepVggPlain {
    convs: Vec<PlainConv>,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl RepVggPlain {
    /// Number of 3x3 convolutions (one per training-time block).
    pub fn depth(&self) -> usize {
        self.convs.len()
    }
}

impl Module for RepVggPlain {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut x = xs.shallow_clone();
        for c in &self.convs {
            x = x
                .conv2d(&c.weight, Some(&c.bias), [c.stride], [1], [1], 1)
                .relu();
        }
        x.adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
            .linear(&self.fc_weight, Some(&self.fc_bias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn reparameterised_network_gives_the_same_eval_outputs() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::seeding::draw(|| repvgg_a1(&vs.root(), 10, Preset::Micro));
        // Random BN statistics and affine parameters, so folding is exercised.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let shape = t.size();
                let opts = (Kind::Float, Device::Cpu);
                if name.ends_with("running_mean") {
                    t.copy_(&(crate::seeding::draw(|| Tensor::randn(&shape, opts)) * 0.1));
                } else if name.ends_with("running_var") {
                    t.copy_(&(crate::seeding::draw(|| Tensor::rand(&shape, opts)) + 0.5));
                } else if name.contains(".bn.") || name.contains("identity") {
                    if name.ends_with("weight") {
                        t.copy_(&(crate::seeding::draw(|| Tensor::rand(&shape, opts)) + 0.5));
                    } else {
                        t.copy_(&(crate::seeding::draw(|| Tensor::randn(&shape, opts)) * 0.1));
                    }
                }
            }
        });
        let plain = net.reparameterize();
        assert_eq!(plain.depth(), 1 + 6);
        let x = crate::seeding::draw(|| Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu)));
        let want = tch::no_grad(|| net.forward_t(&x, false));
        let got = tch::no_grad(|| plain.forward(&x));
        assert_eq!(got.size(), vec![3, 10]);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "max |difference| {diff:e}");
        // Also at full size (224 input, identity branches everywhere).
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::seeding::draw(|| repvgg_a1(&vs.root(), 5, Preset::Full));
        let plain = net.reparameterize();
        assert_eq!(plain.depth(), 1 + 2 + 4 + 14 + 1);
        let x =
            crate::seeding::draw(|| Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu)));
        let want = tch::no_grad(|| net.forward_t(&x, false));
        let got = tch::no_grad(|| plain.forward(&x));
        let diff = (&got - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale.max(1.0), "max |difference| {diff:e}");
    }
}

//! UniRepLKNet-T (Ding et al., CVPR 2024) as `unireplknet_t` of the official
//! repository (`unireplknet.py`), in its training-time form: a ConvNeXt-like
//! hierarchy (stem of two stride-2 3x3 convs with channels-first layer norm,
//! stride-2 3x3 down-sampling, widths 80-640, depths 3, 3, 18, 3) whose
//! blocks are a depthwise conv (3x3, or a 13x13 `DilatedReparamBlock`: the
//! large kernel plus parallel dilated small kernels, each with its own BN),
//! BN, squeeze-and-excitation, and a channels-last FFN with GELU and GRN
//! ending in BN, with LayerScale and stochastic depth (0.1, the paper's
//! ConvNeXt recipe). Variable names follow the repository's state dict
//! (`downsample_layers.0.3`, `stages.2.4.dwconv.dil_conv_k7_2`, `se.down`,
//! `pwconv1.1`, `act.1.gamma`, `pwconv2.2`, `gamma`, `norm`, `head`).
//!
//! [`UniRepLKNet::reparameterize`] gives the inference-time network of the
//! repository's `reparameterize_unireplknet` (`deploy=True`): every dilated
//! branch and BN merged into one large depthwise kernel with bias, and the
//! GRN bias, the FFN's BN and LayerScale folded into the last linear layer.

use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm2d, drop_path, drop_path_rate, dropout, head_drop_rate};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "unireplknet_t",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "convnext",
            timm: None,
            ctor: unireplknet_t_model,
        },
    );
}

/// Stochastic-depth rate of the last block (the paper's ConvNeXt recipe,
/// Table A3).
const DROP_PATH_RATE: f64 = 0.1;
/// Initial LayerScale (`layer_scale_init_value`).
const LAYER_SCALE_INIT: f64 = 1e-6;
/// Epsilon of every layer norm (channels-first and the final one).
const LN_EPS: f64 = 1e-6;
/// `torch.nn.BatchNorm2d`'s default epsilon.
const BN_EPS: f64 = 1e-5;
/// Added to GRN's mean response before dividing.
const GRN_EPS: f64 = 1e-6;

/// Depthwise kernel of each block per stage (`kernel_sizes`; a stage's
/// depth is its length).
struct UniRepLkConfig {
    dims: [i64; 4],
    kernels: [&'static [i64]; 4],
}

/// `default_UniRepLKNet_T_kernel_sizes`: 13x13 everywhere from the second
/// stage on, alternating with 3x3 in the third.
const T_STAGE3: [i64; 18] = [
    13, 3, 13, 3, 13, 3, 13, 3, 13, 3, 13, 3, 13, 3, 13, 3, 13, 3,
];

fn unireplknet_t_model(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    Model {
        net: Box::new(unireplknet_t(p, classes, preset)),
        // The repository's optimizer factory exempts only 1-d tensors and
        // biases, as bocb does by default.
        no_weight_decay: vec![],
    }
}

/// `unireplknet_t` or its `@micro` preset (widths 16-128, one block per
/// stage but two in the third, same kernel kinds).
pub fn unireplknet_t(p: &nn::Path, classes: i64, preset: Preset) -> UniRepLKNet<Block> {
    let config = match preset {
        Preset::Full => UniRepLkConfig {
            dims: [80, 160, 320, 640],
            kernels: [&[3, 3, 3], &[13, 13, 13], &T_STAGE3, &[13, 13, 13]],
        },
        Preset::Micro => UniRepLkConfig {
            dims: [16, 32, 64, 128],
            kernels: [&[3], &[13], &[13, 3], &[13]],
        },
    };
    UniRepLKNet::new(p, &config, classes)
}

/// A convolution as raw tensors, so that the re-parameterised network can
/// hold fused weights in the same form.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: i64,
    padding: i64,
    dilation: i64,
    groups: i64,
}

impl Conv {
    /// The repository's `_init_weights`: weight ~ N(0, 0.02) (truncated at
    /// ±2, which never binds), bias zero; `padding = dilation * (kernel -
    /// 1) / 2`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &nn::Path,
        inputs: i64,
        outputs: i64,
        kernel: i64,
        stride: i64,
        dilation: i64,
        groups: i64,
        bias: bool,
    ) -> Self {
        let weight = p.var(
            "weight",
            &[outputs, inputs / groups, kernel, kernel],
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        );
        Conv {
            weight,
            bias: bias.then(|| p.var("bias", &[outputs], Init::Const(0.0))),
            stride,
            padding: dilation * (kernel - 1) / 2,
            dilation,
            groups,
        }
    }

    /// A depthwise conv with a fused `weight` and `bias`, size-preserving.
    fn fused_depthwise(weight: Tensor, bias: Tensor) -> Self {
        let (channels, kernel) = (weight.size()[0], weight.size()[2]);
        Conv {
            weight,
            bias: Some(bias),
            stride: 1,
            padding: kernel / 2,
            dilation: 1,
            groups: channels,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride],
            [self.padding],
            [self.dilation],
            self.groups,
        )
    }

    fn detached(&self) -> Self {
        Conv {
            weight: self.weight.detach().copy(),
            bias: self.bias.as_ref().map(|b| b.detach().copy()),
            ..*self
        }
    }
}

/// A linear layer as raw tensors (see [`Conv`]).
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Weight ~ N(0, 0.02), bias zero (`_init_weights`).
    fn new(p: &nn::Path, inputs: i64, outputs: i64, bias: bool) -> Self {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Linear {
            weight: p.var("weight", &[outputs, inputs], init),
            bias: bias.then(|| p.var("bias", &[outputs], Init::Const(0.0))),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, self.bias.as_ref())
    }

    fn detached(&self) -> Self {
        Linear {
            weight: self.weight.detach().copy(),
            bias: self.bias.as_ref().map(|b| b.detach().copy()),
        }
    }
}

/// A layer norm over the last dimension, weight one, bias zero.
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(p: &nn::Path, dim: i64) -> Self {
        LayerNorm {
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: p.var("bias", &[dim], Init::Const(0.0)),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        xs.layer_norm([dim], Some(&self.weight), Some(&self.bias), LN_EPS, true)
    }

    /// Over the channels of an NCHW map (the repository's
    /// `channels_first` form), through the fused channels-last kernel.
    fn forward_channels_first(&self, xs: &Tensor) -> Tensor {
        self.forward(&xs.permute([0, 2, 3, 1]))
            .permute([0, 3, 1, 2])
    }

    fn detached(&self) -> Self {
        LayerNorm {
            weight: self.weight.detach().copy(),
            bias: self.bias.detach().copy(),
        }
    }
}

/// A stage's down-sampling, conv-norm pairs with GELU between them: the
/// stem (conv to half width, LN, GELU, conv, LN as `.0`, `.1`, `.3`, `.4`)
/// or one stride-2 3x3 conv and LN (`.0`, `.1`).
#[derive(Debug)]
struct Downsample {
    layers: Vec<(Conv, LayerNorm)>,
}

impl Downsample {
    fn new(p: nn::Path, widths: &[i64]) -> Self {
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                let index = 3 * i as i64;
                (
                    Conv::new(&(&p / index), pair[0], pair[1], 3, 2, 1, 1, true),
                    LayerNorm::new(&(&p / (index + 1)), pair[1]),
                )
            })
            .collect();
        Downsample { layers }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut x = xs.shallow_clone();
        for (i, (conv, norm)) in self.layers.iter().enumerate() {
            if i > 0 {
                x = x.gelu("none");
            }
            x = norm.forward_channels_first(&conv.forward(&x));
        }
        x
    }

    fn detached(&self) -> Self {
        Downsample {
            layers: self
                .layers
                .iter()
                .map(|(conv, norm)| (conv.detached(), norm.detached()))
                .collect(),
        }
    }
}

/// `SEBlock`: global average, 1x1 down (to a quarter), ReLU, 1x1 up,
/// sigmoid gate.
#[derive(Debug)]
struct SqueezeExcite {
    down: Conv,
    up: Conv,
}

impl SqueezeExcite {
    fn new(p: nn::Path, dim: i64) -> Self {
        SqueezeExcite {
            down: Conv::new(&(&p / "down"), dim, dim / 4, 1, 1, 1, 1, true),
            up: Conv::new(&(&p / "up"), dim / 4, dim, 1, 1, 1, 1, true),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let pooled = xs.adaptive_avg_pool2d([1, 1]);
        let gate = self
            .up
            .forward(&self.down.forward(&pooled).relu())
            .sigmoid();
        xs * gate
    }

    fn detached(&self) -> Self {
        SqueezeExcite {
            down: self.down.detached(),
            up: self.up.detached(),
        }
    }
}

/// `GRNwithNHWC` on a channels-last map: `(gamma * N(x) + 1) * x + beta`,
/// where `N` is each channel's spatial L2 norm over their mean.
fn global_response_norm(xs: &Tensor, gamma: &Tensor, beta: Option<&Tensor>) -> Tensor {
    let norms = xs.norm_scalaropt_dim(2.0, [1i64, 2].as_slice(), true);
    let relative = &norms / (norms.mean_dim([-1i64].as_slice(), true, norms.kind()) + GRN_EPS);
    let x = (relative * gamma + 1.0) * xs;
    match beta {
        Some(beta) => x + beta,
        None => x,
    }
}

/// The (kernel, bias) of a BN applied after a bias-free convolution.
fn fuse_bn(kernel: &Tensor, bn: &nn::BatchNorm) -> (Tensor, Tensor) {
    let (scale, shift) = bn_affine(bn);
    (kernel * scale.reshape([-1, 1, 1, 1]), shift)
}

/// A BN in eval mode as `x * scale + shift` per channel.
fn bn_affine(bn: &nn::BatchNorm) -> (Tensor, Tensor) {
    let gamma = bn.ws.as_ref().expect("affine batch norm");
    let beta = bn.bs.as_ref().expect("affine batch norm");
    let scale = gamma / (&bn.running_var + BN_EPS).sqrt();
    let shift = beta - &bn.running_mean * &scale;
    (scale, shift)
}

/// A depthwise kernel with dilation `dilation` as the equivalent undilated
/// kernel (zeros between the taps).
fn undilate(kernel: &Tensor, dilation: i64) -> Tensor {
    let size = kernel.size();
    let span = dilation * (size[2] - 1) + 1;
    let spread = Tensor::zeros(
        [size[0], size[1], span, span],
        (kernel.kind(), kernel.device()),
    );
    spread
        .slice(2, 0, span, dilation)
        .slice(3, 0, span, dilation)
        .copy_(kernel);
    spread
}

/// `(kernel size, dilation)` of the parallel branches of a
/// `DilatedReparamBlock` with a `kernel`-sized large kernel.
fn dilated_branches(kernel: i64) -> &'static [(i64, i64)] {
    match kernel {
        17 => &[(5, 1), (9, 2), (3, 4), (3, 5), (3, 7)],
        15 => &[(5, 1), (7, 2), (3, 3), (3, 5), (3, 7)],
        13 => &[(5, 1), (7, 2), (3, 3), (3, 4), (3, 5)],
        11 => &[(5, 1), (5, 2), (3, 3), (3, 4), (3, 5)],
        9 => &[(5, 1), (5, 2), (3, 3), (3, 4)],
        7 => &[(5, 1), (3, 2), (3, 3)],
        _ => panic!("a dilated re-parameterised block needs a kernel of 7 to 17, got {kernel}"),
    }
}

/// `DilatedReparamBlock`: BN(large depthwise conv) plus BN(dilated small
/// depthwise conv) for each branch.
#[derive(Debug)]
struct DilatedReparam {
    lk_origin: Conv,
    origin_bn: nn::BatchNorm,
    branches: Vec<(Conv, nn::BatchNorm)>,
}

impl DilatedReparam {
    fn new(p: nn::Path, dim: i64, kernel: i64) -> Self {
        let branches = dilated_branches(kernel)
            .iter()
            .map(|&(k, r)| {
                (
                    Conv::new(
                        &(&p / format!("dil_conv_k{k}_{r}")),
                        dim,
                        dim,
                        k,
                        1,
                        r,
                        dim,
                        false,
                    ),
                    batch_norm2d(&p / format!("dil_bn_k{k}_{r}"), dim),
                )
            })
            .collect();
        DilatedReparam {
            lk_origin: Conv::new(&(&p / "lk_origin"), dim, dim, kernel, 1, 1, dim, false),
            origin_bn: batch_norm2d(&p / "origin_bn", dim),
            branches,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = self.lk_origin.forward(xs).apply_t(&self.origin_bn, train);
        for (conv, bn) in &self.branches {
            out += conv.forward(xs).apply_t(bn, train);
        }
        out
    }

    /// `merge_dilated_branches`: one large kernel with bias.
    fn merged(&self) -> (Tensor, Tensor) {
        let (mut kernel, mut bias) = fuse_bn(&self.lk_origin.weight, &self.origin_bn);
        let large = kernel.size()[2];
        for (conv, bn) in &self.branches {
            let (small, small_bias) = fuse_bn(&conv.weight, bn);
            let spread = undilate(&small, conv.dilation);
            let pad = large / 2 - spread.size()[2] / 2;
            kernel += spread.constant_pad_nd([pad, pad, pad, pad]);
            bias += small_bias;
        }
        (kernel, bias)
    }
}

/// The block's depthwise conv: a plain 3x3 (or 5x5) or a dilated
/// re-parameterisable one.
#[derive(Debug)]
enum DepthwiseConv {
    Plain(Conv),
    Dilated(DilatedReparam),
}

/// `UniRepLKNetBlock` in training form: `x + drop_path(gamma *
/// BN(pwconv2(GRN(GELU(pwconv1(SE(BN(dwconv(x)))))))))`, the FFN
/// channels-last.
#[derive(Debug)]
pub struct Block {
    dwconv: DepthwiseConv,
    norm: nn::BatchNorm,
    se: SqueezeExcite,
    pwconv1: Linear,
    grn_gamma: Tensor,
    grn_beta: Tensor,
    pwconv2: Linear,
    pwconv2_bn: nn::BatchNorm,
    gamma: Tensor,
    drop_path: f64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, kernel: i64, drop_path: f64) -> Self {
        let ffn = 4 * dim;
        let dwconv = if kernel >= 7 {
            DepthwiseConv::Dilated(DilatedReparam::new(&p / "dwconv", dim, kernel))
        } else {
            DepthwiseConv::Plain(Conv::new(
                &(&p / "dwconv"),
                dim,
                dim,
                kernel,
                1,
                1,
                dim,
                false,
            ))
        };
        let grn = &p / "act" / 1;
        Block {
            dwconv,
            norm: batch_norm2d(&p / "norm", dim),
            se: SqueezeExcite::new(&p / "se", dim),
            pwconv1: Linear::new(&(&p / "pwconv1" / 1), dim, ffn, true),
            grn_gamma: grn.var("gamma", &[1, 1, 1, ffn], Init::Const(0.0)),
            grn_beta: grn.var("beta", &[1, 1, 1, ffn], Init::Const(0.0)),
            pwconv2: Linear::new(&(&p / "pwconv2" / 0), ffn, dim, false),
            pwconv2_bn: batch_norm2d(&p / "pwconv2" / 2, dim),
            gamma: p.var("gamma", &[dim], Init::Const(LAYER_SCALE_INIT)),
            drop_path,
        }
    }

    /// The repository's `UniRepLKNetBlock.reparameterize` (eval-mode
    /// statistics), as detached copies.
    fn fused(&self) -> FusedBlock {
        let (scale, shift) = bn_affine(&self.norm);
        let (kernel, bias) = match &self.dwconv {
            DepthwiseConv::Plain(conv) => (conv.weight.shallow_clone(), shift.zeros_like()),
            DepthwiseConv::Dilated(block) => block.merged(),
        };
        let dwconv =
            Conv::fused_depthwise(kernel * scale.reshape([-1, 1, 1, 1]), bias * &scale + shift);
        // pwconv2 then BN then LayerScale, with GRN's bias pushed through.
        let (bn_scale, bn_shift) = bn_affine(&self.pwconv2_bn);
        let out_scale = bn_scale * &self.gamma;
        let projected_beta = self.pwconv2.weight.mv(&self.grn_beta.flatten(0, -1));
        let pwconv2 = Linear {
            weight: &self.pwconv2.weight * out_scale.unsqueeze(1),
            bias: Some(projected_beta * &out_scale + bn_shift * &self.gamma),
        };
        FusedBlock {
            dwconv,
            se: self.se.detached(),
            pwconv1: self.pwconv1.detached(),
            grn_gamma: self.grn_gamma.detach().copy(),
            pwconv2: pwconv2.detached(),
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = match &self.dwconv {
            DepthwiseConv::Plain(conv) => conv.forward(xs),
            DepthwiseConv::Dilated(block) => block.forward_t(xs, train),
        };
        let y = self.se.forward(&y.apply_t(&self.norm, train));
        let y = self.pwconv1.forward(&y.permute([0, 2, 3, 1])).gelu("none");
        let y = global_response_norm(&y, &self.grn_gamma, Some(&self.grn_beta));
        let y = self
            .pwconv2
            .forward(&y)
            .permute([0, 3, 1, 2])
            .apply_t(&self.pwconv2_bn, train)
            * self.gamma.reshape([-1, 1, 1]);
        xs + drop_path(y, self.drop_path, train)
    }
}

/// A block of the re-parameterised network (`deploy=True`): one depthwise
/// conv with bias, SE, and the FFN with a bias-free GRN.
#[derive(Debug)]
pub struct FusedBlock {
    dwconv: Conv,
    se: SqueezeExcite,
    pwconv1: Linear,
    grn_gamma: Tensor,
    pwconv2: Linear,
}

impl ModuleT for FusedBlock {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let y = self.se.forward(&self.dwconv.forward(xs));
        let y = self.pwconv1.forward(&y.permute([0, 2, 3, 1])).gelu("none");
        let y = global_response_norm(&y, &self.grn_gamma, None);
        xs + self.pwconv2.forward(&y).permute([0, 3, 1, 2])
    }
}

/// The network: `downsample_layers.i` then `stages.i` for each stage,
/// global average, layer norm `norm` and `head`. `Block` is the training
/// form, `FusedBlock` the re-parameterised one.
#[derive(Debug)]
pub struct UniRepLKNet<B> {
    downsample_layers: Vec<Downsample>,
    stages: Vec<Vec<B>>,
    norm: LayerNorm,
    head: Linear,
    /// Dropout on the normed pooled features, as timm's heads apply
    /// `drop_rate` (the repository has none); none unless a recipe sets one.
    head_drop: f64,
}

impl UniRepLKNet<Block> {
    fn new(p: &nn::Path, config: &UniRepLkConfig, classes: i64) -> Self {
        let dims = config.dims;
        let total = config.kernels.iter().map(|k| k.len()).sum::<usize>();
        let mut downsample_layers = vec![Downsample::new(
            p / "downsample_layers" / 0,
            &[3, dims[0] / 2, dims[0]],
        )];
        for i in 1..4 {
            downsample_layers.push(Downsample::new(
                p / "downsample_layers" / i,
                &[dims[i - 1], dims[i]],
            ));
        }
        let mut index = 0;
        let stages = config
            .kernels
            .iter()
            .enumerate()
            .map(|(i, kernels)| {
                kernels
                    .iter()
                    .enumerate()
                    .map(|(j, &kernel)| {
                        // torch.linspace(0, rate, total)[index]
                        let rate = drop_path_rate(DROP_PATH_RATE) * index as f64
                            / (total - 1).max(1) as f64;
                        index += 1;
                        Block::new(p / "stages" / i / j, dims[i], kernel, rate)
                    })
                    .collect()
            })
            .collect();
        UniRepLKNet {
            downsample_layers,
            stages,
            norm: LayerNorm::new(&(p / "norm"), dims[3]),
            head: Linear::new(&(p / "head"), dims[3], classes, true),
            head_drop: head_drop_rate(0.0),
        }
    }

    /// The inference-time network (`reparameterize_unireplknet`): its
    /// outputs equal this network's eval-mode outputs. It holds detached
    /// copies, so later training of this network does not change it.
    pub fn reparameterize(&self) -> UniRepLKNet<FusedBlock> {
        tch::no_grad(|| UniRepLKNet {
            downsample_layers: self
                .downsample_layers
                .iter()
                .map(Downsample::detached)
                .collect(),
            stages: self
                .stages
                .iter()
                .map(|blocks| blocks.iter().map(Block::fused).collect())
                .collect(),
            norm: self.norm.detached(),
            head: self.head.detached(),
            head_drop: self.head_drop,
        })
    }
}

impl<B: ModuleT> ModuleT for UniRepLKNet<B> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for (downsample, blocks) in self.downsample_layers.iter().zip(&self.stages) {
            x = downsample.forward(&x);
            for block in blocks {
                x = block.forward_t(&x, train);
            }
        }
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, x.kind());
        let features = dropout(self.norm.forward(&pooled), self.head_drop, train);
        self.head.forward(&features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Random BN statistics and affine parameters, GRN and LayerScale, so
    /// that every fold is exercised.
    fn randomise(vs: &nn::VarStore) {
        let opts = (Kind::Float, Device::Cpu);
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let shape = t.size();
                let value = if name.ends_with("running_var") {
                    crate::seeding::draw(|| Tensor::rand(&shape, opts)) + 0.5
                } else if name.ends_with("running_mean")
                    || name.ends_with("beta")
                    || (name.ends_with("bias") && t.dim() == 1)
                {
                    crate::seeding::draw(|| Tensor::randn(&shape, opts)) * 0.1
                } else if name.ends_with("gamma") || t.dim() == 1 {
                    crate::seeding::draw(|| Tensor::rand(&shape, opts)) + 0.5
                } else {
                    continue;
                };
                t.copy_(&value);
            }
        });
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn reparameterised_network_gives_the_same_eval_outputs() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::seeding::draw(|| unireplknet_t(&vs.root(), 10, Preset::Micro));
        randomise(&vs);
        let fused = net.reparameterize();
        let x = crate::seeding::draw(|| Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu)));
        let want = tch::no_grad(|| net.forward_t(&x, false));
        let got = tch::no_grad(|| fused.forward_t(&x, false));
        assert_eq!(got.size(), vec![3, 10]);
        assert!(
            want.abs().max().double_value(&[]) > 1e-2,
            "logits too small to compare"
        );
        let diff = max_difference(&got, &want);
        assert!(diff <= 1e-4, "max |difference| {diff:e}");
        // Training the original afterwards leaves the fused copy alone.
        tch::no_grad(|| {
            for mut t in vs.trainable_variables() {
                t.copy_(&t.zeros_like());
            }
        });
        let after = tch::no_grad(|| fused.forward_t(&x, false));
        assert_eq!(max_difference(&after, &got), 0.0);
    }
}

//! MogaNet-S (Li et al., ICLR 2024) as `MogaNet(arch='small')` of the
//! official repository (`models/moganet.py`): four stages of Moga blocks,
//! each a multi-order gated aggregation (1x1 projection with feature
//! decomposition, a SiLU gate times SiLU of dilated depthwise convolutions
//! over channel splits) and a channel-aggregation FFN, both pre-BN with
//! LayerScale and stochastic depth (0.1, rising linearly over the blocks).
//! Variable names follow the repository's state dict (`patch_embed1.
//! projection.0`, `blocks3.7.attn.value.DW_conv2`, `mlp.sigma.scale`,
//! `norm4`, `head`) so reference weights load by name.
//!
//! Input 32x32 with the CIFAR stem (Table A1, App. A.1). The paper's code base
//! (OpenMixup, `MogaNet_CIFAR`, used by its `moganet_s_adamw_bs100_ep200`
//! CIFAR-100 config) replaces the stem with the same two stacked 3x3 convs at
//! stride 1 instead of 2, so the first stage works at 32x32 and the three
//! patch embeddings after it bring the map to 4x4; bocb follows that code
//! rather than the text's "1/2".

use tch::nn::{self, Conv2D, Init, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm2d, drop_path, drop_path_rate, dropout, head_drop_rate, vit_linear};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "moganet_s",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 32,
            micro_input_size: 32,
            default_recipe: "convnext",
            timm: None,
            ctor: moganet_s,
        },
    );
}

/// Stochastic-depth rate of the last block (the repository's
/// `--drop_path 0.1` for MogaNet-S, and the paper's ConvNeXt recipe).
const DROP_PATH_RATE: f64 = 0.1;
/// Initial LayerScale and feature-decomposition scale (`init_value`).
const SCALE_INIT: f64 = 1e-5;
/// Dilations of the three depthwise convolutions (`attn_dw_dilation`).
const DILATIONS: [i64; 3] = [1, 2, 3];
/// Relative widths of the three channel splits (`attn_channel_split`).
const CHANNEL_SPLIT: [i64; 3] = [1, 3, 4];

struct MogaConfig {
    widths: [i64; 4],
    depths: [i64; 4],
    ffn_ratios: [i64; 4],
}

fn moganet_s(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => MogaConfig {
            widths: [64, 128, 320, 512],
            depths: [2, 3, 12, 2],
            ffn_ratios: [8, 8, 4, 4],
        },
        Preset::Micro => MogaConfig {
            widths: [16, 32, 48, 64],
            depths: [1, 1, 2, 1],
            ffn_ratios: [8, 8, 4, 4],
        },
    };
    Model {
        net: Box::new(MogaNet::new(p, &config, classes)),
        // The paper's OpenMixup config exempts `layer_scale` and `scale`
        // (4-d tensors, so not caught by the 1-d rule) from weight decay.
        no_weight_decay: vec!["layer_scale_1", "layer_scale_2", "sigma.scale"],
    }
}

/// `MogaNet._init_weights` for convolutions: weight ~ N(0, sqrt(2 /
/// fan_out)) with `fan_out = k * k * out / groups`, bias zero; `padding =
/// dilation * (kernel - 1) / 2` keeps the map size at stride 1.
fn conv(
    p: nn::Path,
    inputs: i64,
    outputs: i64,
    kernel: i64,
    stride: i64,
    dilation: i64,
    groups: i64,
) -> Conv2D {
    let stdev = (2.0 * groups as f64 / (kernel * kernel * outputs) as f64).sqrt();
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride,
            padding: dilation * (kernel - 1) / 2,
            dilation,
            groups,
            bias: true,
            ws_init: Init::Randn { mean: 0.0, stdev },
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// A learnable per-channel scale of shape `[1, C, 1, 1]` (`ElementScale`,
/// `layer_scale_*`), initialised to `SCALE_INIT`.
fn channel_scale(p: &nn::Path, name: &str, channels: i64) -> Tensor {
    p.var(name, &[1, channels, 1, 1], Init::Const(SCALE_INIT))
}

/// `MultiOrderDWConv`: a 5x5 depthwise conv over all channels, then a
/// dilated 5x5 (dilation 2) over the middle 3/8 of the channels and a
/// dilated 7x7 (dilation 3) over the last 4/8, concatenated with the first
/// 1/8 unchanged, and a 1x1 channel mix.
#[derive(Debug)]
struct MultiOrderDwConv {
    dw_conv0: Conv2D,
    dw_conv1: Conv2D,
    dw_conv2: Conv2D,
    pw_conv: Conv2D,
    /// Widths of the three splits.
    splits: [i64; 3],
}

impl MultiOrderDwConv {
    fn new(p: nn::Path, dim: i64) -> Self {
        let total: i64 = CHANNEL_SPLIT.iter().sum();
        let dims_1 = dim * CHANNEL_SPLIT[1] / total;
        let dims_2 = dim * CHANNEL_SPLIT[2] / total;
        let dims_0 = dim - dims_1 - dims_2;
        let [d0, d1, d2] = DILATIONS;
        MultiOrderDwConv {
            dw_conv0: conv(&p / "DW_conv0", dim, dim, 5, 1, d0, dim),
            dw_conv1: conv(&p / "DW_conv1", dims_1, dims_1, 5, 1, d1, dims_1),
            dw_conv2: conv(&p / "DW_conv2", dims_2, dims_2, 7, 1, d2, dims_2),
            pw_conv: conv(&p / "PW_conv", dim, dim, 1, 1, 1, 1),
            splits: [dims_0, dims_1, dims_2],
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let [dims_0, dims_1, dims_2] = self.splits;
        let x0 = xs.apply(&self.dw_conv0);
        let x1 = x0.narrow(1, dims_0, dims_1).apply(&self.dw_conv1);
        let x2 = x0.narrow(1, dims_0 + dims_1, dims_2).apply(&self.dw_conv2);
        Tensor::cat(&[x0.narrow(1, 0, dims_0), x1, x2], 1).apply(&self.pw_conv)
    }
}

/// `MultiOrderGatedAggregation`: proj_1, feature decomposition
/// `x + sigma * (x - mean_hw(x))`, SiLU; then `proj_2(SiLU(gate(x)) *
/// SiLU(value(x)))` plus the block input.
#[derive(Debug)]
struct GatedAggregation {
    proj_1: Conv2D,
    gate: Conv2D,
    value: MultiOrderDwConv,
    proj_2: Conv2D,
    sigma: Tensor,
}

impl GatedAggregation {
    fn new(p: nn::Path, dim: i64) -> Self {
        GatedAggregation {
            proj_1: conv(&p / "proj_1", dim, dim, 1, 1, 1, 1),
            gate: conv(&p / "gate", dim, dim, 1, 1, 1, 1),
            value: MultiOrderDwConv::new(&p / "value", dim),
            proj_2: conv(&p / "proj_2", dim, dim, 1, 1, 1, 1),
            sigma: channel_scale(&(&p / "sigma"), "scale", dim),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let x = xs.apply(&self.proj_1);
        let pooled = x.adaptive_avg_pool2d([1, 1]);
        let x = (&x + (&x - pooled) * &self.sigma).silu();
        let gated = x.apply(&self.gate).silu() * self.value.forward(&x).silu();
        gated.apply(&self.proj_2) + xs
    }
}

/// `ChannelAggregationFFN`: 1x1 expand, 3x3 depthwise, GELU, channel
/// decomposition `x + sigma * (x - GELU(decompose(x)))` (a C -> 1 conv),
/// 1x1 reduce.
#[derive(Debug)]
struct ChannelAggregationFfn {
    fc1: Conv2D,
    dwconv: Conv2D,
    decompose: Conv2D,
    sigma: Tensor,
    fc2: Conv2D,
}

impl ChannelAggregationFfn {
    fn new(p: nn::Path, dim: i64, hidden: i64) -> Self {
        ChannelAggregationFfn {
            fc1: conv(&p / "fc1", dim, hidden, 1, 1, 1, 1),
            dwconv: conv(&p / "dwconv", hidden, hidden, 3, 1, 1, hidden),
            decompose: conv(&p / "decompose", hidden, 1, 1, 1, 1, 1),
            sigma: channel_scale(&(&p / "sigma"), "scale", hidden),
            fc2: conv(&p / "fc2", hidden, dim, 1, 1, 1, 1),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let x = xs.apply(&self.fc1).apply(&self.dwconv).gelu("none");
        let decomposed = x.apply(&self.decompose).gelu("none");
        let x = &x + (&x - decomposed) * &self.sigma;
        x.apply(&self.fc2)
    }
}

/// `MogaBlock`: `x + drop_path(ls1 * attn(bn1(x)))`, then
/// `x + drop_path(ls2 * mlp(bn2(x)))`.
#[derive(Debug)]
struct MogaBlock {
    norm1: nn::BatchNorm,
    attn: GatedAggregation,
    norm2: nn::BatchNorm,
    mlp: ChannelAggregationFfn,
    layer_scale_1: Tensor,
    layer_scale_2: Tensor,
    drop_path: f64,
}

impl MogaBlock {
    fn new(p: nn::Path, dim: i64, ffn_ratio: i64, drop_path: f64) -> Self {
        MogaBlock {
            norm1: batch_norm2d(&p / "norm1", dim),
            attn: GatedAggregation::new(&p / "attn", dim),
            norm2: batch_norm2d(&p / "norm2", dim),
            mlp: ChannelAggregationFfn::new(&p / "mlp", dim, dim * ffn_ratio),
            layer_scale_1: channel_scale(&p, "layer_scale_1", dim),
            layer_scale_2: channel_scale(&p, "layer_scale_2", dim),
            drop_path,
        }
    }
}

impl ModuleT for MogaBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let attn = self.attn.forward(&xs.apply_t(&self.norm1, train)) * &self.layer_scale_1;
        let x = xs + drop_path(attn, self.drop_path, train);
        let mlp = self.mlp.forward(&x.apply_t(&self.norm2, train)) * &self.layer_scale_2;
        &x + drop_path(mlp, self.drop_path, train)
    }
}

/// A stage's down-sampling, conv-BN pairs with GELU between them: the stem
/// (`StackConvPatchEmbed`: conv to half width, BN, GELU, conv, BN, as
/// `projection.0`, `.1`, `.3`, `.4`) or `ConvPatchEmbed` (stride-2 3x3 conv
/// `projection`, BN `norm`).
#[derive(Debug)]
struct PatchEmbed {
    layers: Vec<(Conv2D, nn::BatchNorm)>,
}

impl PatchEmbed {
    /// The CIFAR stem: both 3x3 convs at stride 1 (see the module docs).
    fn cifar_stem(p: nn::Path, inputs: i64, dim: i64) -> Self {
        let proj = &p / "projection";
        PatchEmbed {
            layers: vec![
                (
                    conv(&proj / 0, inputs, dim / 2, 3, 1, 1, 1),
                    batch_norm2d(&proj / 1, dim / 2),
                ),
                (
                    conv(&proj / 3, dim / 2, dim, 3, 1, 1, 1),
                    batch_norm2d(&proj / 4, dim),
                ),
            ],
        }
    }

    fn downsample(p: nn::Path, inputs: i64, dim: i64) -> Self {
        PatchEmbed {
            layers: vec![(
                conv(&p / "projection", inputs, dim, 3, 2, 1, 1),
                batch_norm2d(&p / "norm", dim),
            )],
        }
    }
}

impl ModuleT for PatchEmbed {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for (i, (conv, bn)) in self.layers.iter().enumerate() {
            if i > 0 {
                x = x.gelu("none");
            }
            x = x.apply(conv).apply_t(bn, train);
        }
        x
    }
}

#[derive(Debug)]
struct Stage {
    patch_embed: PatchEmbed,
    blocks: Vec<MogaBlock>,
    norm: nn::BatchNorm,
}

/// The network: per stage `patch_embedN`, `blocksN`, `normN` (BN), then
/// global average pooling and the linear `head`.
#[derive(Debug)]
struct MogaNet {
    stages: Vec<Stage>,
    head: nn::Linear,
    /// Dropout on the pooled features, as timm's heads apply `drop_rate`
    /// (the repository has none there: its `drop_rate` is the FFN's);
    /// none unless a recipe sets one.
    head_drop: f64,
}

impl MogaNet {
    fn new(p: &nn::Path, config: &MogaConfig, classes: i64) -> Self {
        let total: i64 = config.depths.iter().sum();
        let mut block_index = 0;
        let mut inputs = 3;
        let mut stages = Vec::new();
        for (i, &dim) in config.widths.iter().enumerate() {
            let n = i + 1;
            let patch_embed = if i == 0 {
                PatchEmbed::cifar_stem(p / format!("patch_embed{n}"), inputs, dim)
            } else {
                PatchEmbed::downsample(p / format!("patch_embed{n}"), inputs, dim)
            };
            let blocks = (0..config.depths[i])
                .map(|j| {
                    // torch.linspace(0, rate, total)[index]
                    let rate = drop_path_rate(DROP_PATH_RATE) * block_index as f64
                        / (total - 1).max(1) as f64;
                    block_index += 1;
                    MogaBlock::new(
                        p / format!("blocks{n}") / j,
                        dim,
                        config.ffn_ratios[i],
                        rate,
                    )
                })
                .collect();
            stages.push(Stage {
                patch_embed,
                blocks,
                norm: batch_norm2d(p / format!("norm{n}"), dim),
            });
            inputs = dim;
        }
        MogaNet {
            stages,
            head: vit_linear(p / "head", inputs, classes),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for MogaNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for stage in &self.stages {
            x = stage.patch_embed.forward_t(&x, train);
            for block in &stage.blocks {
                x = block.forward_t(&x, train);
            }
            x = x.apply_t(&stage.norm, train);
        }
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, x.kind());
        dropout(pooled, self.head_drop, train).apply(&self.head)
    }
}

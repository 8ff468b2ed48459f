//! The MetaFormer baselines (Yu et al., "MetaFormer Baselines for Vision",
//! TPAMI 2024) at S12 size, as timm's `MetaFormer` builds them: one network
//! whose token mixer is the only difference between IdentityFormer,
//! PoolFormerV2, ConvFormer, AttentionFormer and CAFormer (Table A1: 224x224
//! input, RSB A2 recipe).
//!
//! S12 is depths (2, 2, 6, 2) and widths (64, 128, 320, 512): a 7x7 stride-4
//! stem and 3x3 stride-2 down-sampling convolutions, each with a bias-free
//! layer norm (eps 1e-6); pre-norm blocks with a StarReLU MLP (ratio 4, no
//! biases) and ResScale (init 1) in stages 3-4; global average pooling, a
//! layer norm and the head. timm has `poolformerv2_s12`; the other four at
//! S12 take the settings of timm's / sail-sg's S18 models of the same mixer
//! (sail-sg defines `identityformer_s12` itself):
//! - `identityformer_s12`, `poolformerv2_s12`: identity / pooling mixer,
//!   `GroupNorm1NoBias` block norms, linear head (sail-sg's definitions).
//! - `convformer_s12`: SepConv mixer, `LayerNorm2dNoBias`, MLP head
//!   (as `convformer_s18`).
//! - `caformer_s12`: SepConv in stages 1-2 with `LayerNorm2dNoBias`,
//!   attention (head width 32) in stages 3-4 with `LayerNormNoBias` on
//!   tokens, MLP head (as `caformer_s18`).
//! - `attenformer_s12`: attention in all four stages with `LayerNormNoBias`
//!   and the MLP head (CAFormer's attention stages throughout).
//!
//! Layouts follow timm: convolution, pooling and identity stages run NCHW
//! (1x1 convolutions in the MLP), attention stages run on [batch, tokens,
//! channels] (linear layers). Variable names are timm's state-dict keys.
//! LayerScale (timm's `layer_scale_init_values`) is off in all five (only
//! PoolFormer V1 uses it), so it is not built.

use tch::nn::{self, Init, Module, ModuleT};
use tch::Tensor;

use super::layers::{drop_path, drop_path_rate, dropout, head_drop_rate};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// timm's MetaFormer norms all use eps 1e-6.
const NORM_EPS: f64 = 1e-6;
/// Hidden width of the block MLPs and of the MLP head, per input channel.
const MLP_RATIO: i64 = 4;
/// Stochastic-depth rate of the last block: sail-sg trains its S12 models
/// (identityformer_s12, poolformerv2_s12) with `--drop-path 0.1`.
const DROP_PATH_RATE: f64 = 0.1;
/// ResScale init of each stage (timm's `res_scale_init_values`).
const RES_SCALE: [Option<f64>; 4] = [None, None, Some(1.0), Some(1.0)];

pub(super) fn register(registry: &mut BackboneRegistry) {
    // timm has every S12 but the attention-only one.
    let entries: [(&str, Option<&'static str>, super::BackboneCtor); 5] = [
        (
            "identityformer_s12",
            Some("identityformer_s12"),
            identityformer_s12,
        ),
        (
            "poolformerv2_s12",
            Some("poolformerv2_s12"),
            poolformerv2_s12,
        ),
        ("convformer_s12", Some("convformer_s12"), convformer_s12),
        ("attenformer_s12", None, attenformer_s12),
        ("caformer_s12", Some("caformer_s12"), caformer_s12),
    ];
    for (name, timm, ctor) in entries {
        registry.register(
            name,
            BackboneEntry {
                family: Family::MetaFormer,
                input_size: 224,
                micro_input_size: 64,
                default_recipe: "rsb_a2",
                timm,
                ctor,
            },
        );
    }
}

/// Token mixer of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MixerKind {
    Identity,
    Pooling,
    SepConv,
    Attention,
}

/// The bias-free norm of a stage's blocks.
#[derive(Debug, Clone, Copy)]
enum NormKind {
    /// `GroupNorm1NoBias`: over channels and space of NCHW maps.
    GroupNorm1,
    /// `LayerNorm2dNoBias`: over the channels of NCHW maps.
    LayerNorm2d,
    /// `LayerNormNoBias`: over the channels of [batch, tokens, channels].
    LayerNorm,
}

/// What tells the five baselines apart.
struct Architecture {
    /// Token mixer and block norm of each stage.
    stages: [(MixerKind, NormKind); 4],
    /// timm's `MlpHead` (fc, SquaredReLU, layer norm, fc) rather than one
    /// linear layer.
    mlp_head: bool,
}

const IDENTITYFORMER: Architecture = Architecture {
    stages: [(MixerKind::Identity, NormKind::GroupNorm1); 4],
    mlp_head: false,
};
const POOLFORMERV2: Architecture = Architecture {
    stages: [(MixerKind::Pooling, NormKind::GroupNorm1); 4],
    mlp_head: false,
};
const CONVFORMER: Architecture = Architecture {
    stages: [(MixerKind::SepConv, NormKind::LayerNorm2d); 4],
    mlp_head: true,
};
const ATTENFORMER: Architecture = Architecture {
    stages: [(MixerKind::Attention, NormKind::LayerNorm); 4],
    mlp_head: true,
};
const CAFORMER: Architecture = Architecture {
    stages: [
        (MixerKind::SepConv, NormKind::LayerNorm2d),
        (MixerKind::SepConv, NormKind::LayerNorm2d),
        (MixerKind::Attention, NormKind::LayerNorm),
        (MixerKind::Attention, NormKind::LayerNorm),
    ],
    mlp_head: true,
};

fn identityformer_s12(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, &IDENTITYFORMER)
}

fn poolformerv2_s12(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, &POOLFORMERV2)
}

fn convformer_s12(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, &CONVFORMER)
}

fn attenformer_s12(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, &ATTENFORMER)
}

fn caformer_s12(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, &CAFORMER)
}

/// Blocks and widths of the stages, and the attention head width.
struct Size {
    depths: [usize; 4],
    dims: [i64; 4],
    /// timm's `head_dim`; widths of attention stages are multiples of it.
    head_dim: i64,
}

const S12: Size = Size {
    depths: [2, 2, 6, 2],
    dims: [64, 128, 320, 512],
    head_dim: 32,
};
/// Narrow heads keep the micro widths (and fixtures) small.
const MICRO: Size = Size {
    depths: [1, 1, 2, 1],
    dims: [16, 32, 48, 64],
    head_dim: 16,
};

fn build(p: &nn::Path, classes: i64, preset: Preset, arch: &Architecture) -> Model {
    let size = match preset {
        Preset::Full => &S12,
        Preset::Micro => &MICRO,
    };
    Model {
        net: Box::new(MetaFormer::new(p, arch, size, classes)),
        // timm's MetaFormer exempts nothing beyond 1-d tensors (norms,
        // scales, StarReLU's scalars, biases), which the trainer exempts.
        no_weight_decay: Vec::new(),
    }
}

/// timm's `_init_weights`: convolution and linear weights ~ N(0, 0.02)
/// (truncated at ±2, i.e. 100 standard deviations, which never binds),
/// biases zero.
const WEIGHT_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

fn conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, config: nn::ConvConfig) -> nn::Conv2D {
    let config = nn::ConvConfig {
        ws_init: WEIGHT_INIT,
        bs_init: Init::Const(0.0),
        ..config
    };
    nn::conv2d(p, inputs, outputs, kernel, config)
}

fn linear(p: nn::Path, inputs: i64, outputs: i64, bias: bool) -> nn::Linear {
    nn::linear(
        p,
        inputs,
        outputs,
        nn::LinearConfig {
            ws_init: WEIGHT_INIT,
            bs_init: Some(Init::Const(0.0)),
            bias,
        },
    )
}

/// A layer or group norm with weight one and an optional bias (zero).
#[derive(Debug)]
struct Norm {
    kind: NormKind,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Norm {
    fn new(p: nn::Path, kind: NormKind, dim: i64, bias: bool) -> Self {
        Norm {
            kind,
            weight: p.var("weight", &[dim], Init::Const(1.0)),
            bias: bias.then(|| p.var("bias", &[dim], Init::Const(0.0))),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let (weight, bias) = (Some(&self.weight), self.bias.as_ref());
        let dim = [self.weight.size()[0]];
        match self.kind {
            NormKind::GroupNorm1 => xs.group_norm(1, weight, bias, NORM_EPS, true),
            // As timm: to channels-last and back around the layer norm.
            NormKind::LayerNorm2d => xs
                .permute([0, 2, 3, 1])
                .layer_norm(dim, weight, bias, NORM_EPS, true)
                .permute([0, 3, 1, 2]),
            NormKind::LayerNorm => xs.layer_norm(dim, weight, bias, NORM_EPS, true),
        }
    }
}

/// StarReLU: `scale * relu(x)² + bias` with learnable scalars (1 and 0).
#[derive(Debug)]
struct StarRelu {
    scale: Tensor,
    bias: Tensor,
}

impl StarRelu {
    fn new(p: nn::Path) -> Self {
        StarRelu {
            scale: p.var("scale", &[1], Init::Const(1.0)),
            bias: p.var("bias", &[1], Init::Const(0.0)),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        // In place where autograd allows it: fewer full-size allocations.
        let mut out = xs.relu().square() * &self.scale;
        out += &self.bias;
        out
    }
}

/// Inverted separable convolution: 1x1 (x2 width), StarReLU, 7x7
/// depthwise, 1x1; no biases.
#[derive(Debug)]
struct SepConv {
    pwconv1: nn::Conv2D,
    act1: StarRelu,
    dwconv: nn::Conv2D,
    pwconv2: nn::Conv2D,
}

#[derive(Debug)]
enum TokenMixer {
    Identity,
    /// 3x3 average pooling (padding not counted) minus the input.
    Pooling,
    SepConv(Box<SepConv>),
    /// Self-attention on tokens without biases, `dim / head_dim` heads.
    Attention {
        qkv: nn::Linear,
        proj: nn::Linear,
        heads: i64,
        head_dim: i64,
    },
}

impl TokenMixer {
    fn new(p: nn::Path, kind: MixerKind, dim: i64, head_dim: i64) -> Self {
        match kind {
            MixerKind::Identity => TokenMixer::Identity,
            MixerKind::Pooling => TokenMixer::Pooling,
            MixerKind::SepConv => {
                let mid = 2 * dim;
                let no_bias = nn::ConvConfig {
                    bias: false,
                    ..Default::default()
                };
                TokenMixer::SepConv(Box::new(SepConv {
                    pwconv1: conv(&p / "pwconv1", dim, mid, 1, no_bias),
                    act1: StarRelu::new(&p / "act1"),
                    dwconv: conv(
                        &p / "dwconv",
                        mid,
                        mid,
                        7,
                        nn::ConvConfig {
                            padding: 3,
                            groups: mid,
                            ..no_bias
                        },
                    ),
                    pwconv2: conv(&p / "pwconv2", mid, dim, 1, no_bias),
                }))
            }
            MixerKind::Attention => {
                let heads = (dim / head_dim).max(1);
                let attention_dim = heads * head_dim;
                TokenMixer::Attention {
                    qkv: linear(&p / "qkv", dim, 3 * attention_dim, false),
                    proj: linear(&p / "proj", attention_dim, dim, false),
                    heads,
                    head_dim,
                }
            }
        }
    }

    fn forward(&self, xs: Tensor) -> Tensor {
        match self {
            TokenMixer::Identity => xs,
            TokenMixer::Pooling => {
                let mut out = xs.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None);
                out -= xs;
                out
            }
            TokenMixer::SepConv(sep) => sep
                .act1
                .forward(&xs.apply(&sep.pwconv1))
                .apply(&sep.dwconv)
                .apply(&sep.pwconv2),
            TokenMixer::Attention {
                qkv,
                proj,
                heads,
                head_dim,
            } => {
                let (batch, tokens, _) = xs.size3().expect("tokens are [batch, tokens, dim]");
                let qkv = xs
                    .apply(qkv)
                    .reshape([batch, tokens, 3, *heads, *head_dim])
                    .permute([2, 0, 3, 1, 4]);
                let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
                Tensor::scaled_dot_product_attention::<Tensor>(
                    &q, &k, &v, None, 0.0, false, None, false,
                )
                .transpose(1, 2)
                .reshape([batch, tokens, heads * head_dim])
                .apply(proj)
            }
        }
    }
}

/// timm's `Mlp`: fc, StarReLU, fc without biases; 1x1 convolutions on NCHW
/// maps, linear layers on tokens.
#[derive(Debug)]
struct Mlp {
    fc1: Box<dyn Module>,
    act: StarRelu,
    fc2: Box<dyn Module>,
}

impl Mlp {
    fn new(p: nn::Path, dim: i64, channels_first: bool) -> Self {
        let hidden = MLP_RATIO * dim;
        let pointwise = |name: &str, inputs: i64, outputs: i64| -> Box<dyn Module> {
            if channels_first {
                let no_bias = nn::ConvConfig {
                    bias: false,
                    ..Default::default()
                };
                Box::new(conv(&p / name, inputs, outputs, 1, no_bias))
            } else {
                Box::new(linear(&p / name, inputs, outputs, false))
            }
        };
        Mlp {
            fc1: pointwise("fc1", dim, hidden),
            act: StarRelu::new(&p / "act"),
            fc2: pointwise("fc2", hidden, dim),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(xs)))
    }
}

#[derive(Debug)]
struct Block {
    norm1: Norm,
    token_mixer: TokenMixer,
    res_scale1: Option<Tensor>,
    norm2: Norm,
    mlp: Mlp,
    res_scale2: Option<Tensor>,
    drop_path: f64,
    /// Shape that broadcasts a per-channel scale over the block's layout.
    scale_shape: Vec<i64>,
}

impl Block {
    fn new(
        p: nn::Path,
        kind: (MixerKind, NormKind),
        dim: i64,
        head_dim: i64,
        res_scale: Option<f64>,
        drop_path: f64,
    ) -> Self {
        let (mixer, norm) = kind;
        let channels_first = mixer != MixerKind::Attention;
        let scale =
            |name: &str| res_scale.map(|init| (&p / name).var("scale", &[dim], Init::Const(init)));
        Block {
            norm1: Norm::new(&p / "norm1", norm, dim, false),
            token_mixer: TokenMixer::new(&p / "token_mixer", mixer, dim, head_dim),
            res_scale1: scale("res_scale1"),
            norm2: Norm::new(&p / "norm2", norm, dim, false),
            mlp: Mlp::new(&p / "mlp", dim, channels_first),
            res_scale2: scale("res_scale2"),
            drop_path,
            scale_shape: if channels_first {
                vec![dim, 1, 1]
            } else {
                vec![dim]
            },
        }
    }

    /// `res_scale(shortcut) + branch`.
    fn residual(&self, shortcut: &Tensor, scale: &Option<Tensor>, branch: Tensor) -> Tensor {
        match scale {
            Some(scale) => {
                let mut out = shortcut * scale.view(self.scale_shape.as_slice());
                out += branch;
                out
            }
            None => shortcut + branch,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mixed = self.token_mixer.forward(self.norm1.forward(xs));
        let x = self.residual(
            xs,
            &self.res_scale1,
            drop_path(mixed, self.drop_path, train),
        );
        let mlp = self.mlp.forward(&self.norm2.forward(&x));
        self.residual(&x, &self.res_scale2, drop_path(mlp, self.drop_path, train))
    }
}

/// Norm then 3x3 stride-2 convolution (timm's `Downsampling`).
#[derive(Debug)]
struct Downsampling {
    norm: Norm,
    conv: nn::Conv2D,
}

#[derive(Debug)]
struct Stage {
    downsample: Option<Downsampling>,
    blocks: Vec<Block>,
    /// Attention stages run on [batch, tokens, channels].
    tokens: bool,
}

impl Stage {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = match &self.downsample {
            Some(down) => down.norm.forward(xs).apply(&down.conv),
            None => xs.shallow_clone(),
        };
        let (batch, channels, height, width) = x.size4().expect("feature maps are NCHW");
        if self.tokens {
            x = x.reshape([batch, channels, -1]).transpose(1, 2);
        }
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        if self.tokens {
            x = x.transpose(1, 2).reshape([batch, channels, height, width]);
        }
        x
    }
}

#[derive(Debug)]
enum Head {
    Linear(nn::Linear),
    /// fc (x4 width), SquaredReLU, layer norm, fc; with biases.
    Mlp {
        fc1: nn::Linear,
        norm: Norm,
        fc2: nn::Linear,
    },
}

#[derive(Debug)]
struct MetaFormer {
    stem_conv: nn::Conv2D,
    stem_norm: Norm,
    stages: Vec<Stage>,
    /// Layer norm (with bias) of the pooled features.
    head_norm: Norm,
    head: Head,
    /// timm's `head.drop` (`drop_rate`) between the normed pooled features
    /// and the head, linear or MLP; none unless a recipe sets one. timm
    /// leaves the MLP head's own inner dropout at 0, and so does bocb.
    head_drop: f64,
}

impl MetaFormer {
    fn new(p: &nn::Path, arch: &Architecture, size: &Size, classes: i64) -> Self {
        let dims = size.dims;
        let stem = p / "stem";
        let stem_conv = conv(
            &stem / "conv",
            3,
            dims[0],
            7,
            nn::ConvConfig {
                stride: 4,
                padding: 2,
                ..Default::default()
            },
        );
        let stem_norm = Norm::new(&stem / "norm", NormKind::LayerNorm2d, dims[0], false);
        // timm's stage-wise schedule: linear in the block index over the whole net.
        let total: usize = size.depths.iter().sum();
        let mut block_index = 0;
        let mut stages = Vec::new();
        let mut previous_dim = dims[0];
        for (i, (&depth, &dim)) in size.depths.iter().zip(&dims).enumerate() {
            let sp = p / "stages" / i;
            // As timm: no down-sampling into a stage as wide as the last.
            let downsample = (previous_dim != dim).then(|| Downsampling {
                norm: Norm::new(
                    &sp / "downsample" / "norm",
                    NormKind::LayerNorm2d,
                    previous_dim,
                    false,
                ),
                conv: conv(
                    &sp / "downsample" / "conv",
                    previous_dim,
                    dim,
                    3,
                    nn::ConvConfig {
                        stride: 2,
                        padding: 1,
                        ..Default::default()
                    },
                ),
            });
            let blocks = (0..depth)
                .map(|j| {
                    let rate =
                        drop_path_rate(DROP_PATH_RATE) * block_index as f64 / (total - 1) as f64;
                    block_index += 1;
                    let block = &sp / "blocks" / j;
                    Block::new(
                        block,
                        arch.stages[i],
                        dim,
                        size.head_dim,
                        RES_SCALE[i],
                        rate,
                    )
                })
                .collect();
            stages.push(Stage {
                downsample,
                blocks,
                tokens: arch.stages[i].0 == MixerKind::Attention,
            });
            previous_dim = dim;
        }
        let features = dims[3];
        let head = p / "head";
        let fc = &head / "fc";
        let head_layer = if arch.mlp_head {
            let hidden = MLP_RATIO * features;
            Head::Mlp {
                fc1: linear(&fc / "fc1", features, hidden, true),
                norm: Norm::new(&fc / "norm", NormKind::LayerNorm, hidden, true),
                fc2: linear(&fc / "fc2", hidden, classes, true),
            }
        } else {
            Head::Linear(linear(fc, features, classes, true))
        };
        MetaFormer {
            stem_conv,
            stem_norm,
            stages,
            head_norm: Norm::new(&head / "norm", NormKind::LayerNorm, features, true),
            head: head_layer,
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for MetaFormer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.stem_norm.forward(&xs.apply(&self.stem_conv));
        for stage in &self.stages {
            x = stage.forward_t(&x, train);
        }
        let pooled = self
            .head_norm
            .forward(&x.mean_dim([2i64, 3].as_slice(), false, None));
        let pooled = dropout(pooled, self.head_drop, train);
        match &self.head {
            Head::Linear(fc) => pooled.apply(fc),
            Head::Mlp { fc1, norm, fc2 } => {
                norm.forward(&pooled.apply(fc1).relu().square()).apply(fc2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// timm's `_init_weights` (weights N(0, 0.02), biases zero), ResScale
    /// at one in stages 3-4 only, StarReLU starting as `relu(x)²`,
    /// bias-free block norms and a biased output norm.
    #[test]
    fn layers_have_timm_init() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::seeding::draw(|| caformer_s12(&vs.root(), 100, Preset::Full));
        let vars = vs.variables();
        assert_eq!(
            vars["stages.1.blocks.0.token_mixer.dwconv.weight"].size(),
            [256, 1, 7, 7]
        );
        assert_eq!(
            vars["stages.2.blocks.5.token_mixer.qkv.weight"].size(),
            [960, 320]
        );
        for name in [
            "stem.conv.weight",
            "stages.3.downsample.conv.weight",
            "stages.2.blocks.5.token_mixer.qkv.weight",
            "stages.1.blocks.1.mlp.fc1.weight",
            "head.fc.fc1.weight",
        ] {
            let got = vars[name].std(true).double_value(&[]);
            assert!((got / 0.02 - 1.0).abs() < 0.05, "{name}: {got}");
        }
        let sum = |name: &str| vars[name].sum(Kind::Float).double_value(&[]);
        assert_eq!(sum("stem.conv.bias"), 0.0);
        assert_eq!(sum("head.fc.fc2.bias"), 0.0);
        assert_eq!(sum("stages.2.blocks.0.res_scale1.scale"), 320.0);
        assert_eq!(sum("stages.3.blocks.1.res_scale2.scale"), 512.0);
        assert!(!vars.contains_key("stages.1.blocks.0.res_scale1.scale"));
        assert_eq!(sum("stages.0.blocks.0.mlp.act.scale"), 1.0);
        assert_eq!(sum("stages.0.blocks.0.mlp.act.bias"), 0.0);
        assert!(!vars.contains_key("stages.0.blocks.0.norm1.bias"));
        assert!(vars.contains_key("head.norm.bias"));
    }

    /// timm's stage-wise schedule: block i of the 12 drops its branches
    /// with 0.1 * i / 11.
    #[test]
    fn stochastic_depth_rises_linearly_over_all_blocks() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::seeding::draw(|| MetaFormer::new(&vs.root(), &CONVFORMER, &S12, 10));
        let rates: Vec<f64> = net
            .stages
            .iter()
            .flat_map(|stage| stage.blocks.iter().map(|block| block.drop_path))
            .collect();
        assert_eq!(rates.len(), 12);
        for (i, rate) in rates.iter().enumerate() {
            assert!((rate - 0.1 * i as f64 / 11.0).abs() < 1e-12, "{i}: {rate}");
        }
    }

    /// PoolFormer's pooling averages only the pixels inside the map, so a
    /// constant map (borders included) mixes to exactly zero.
    #[test]
    fn pooling_ignores_padding() {
        let constant = Tensor::full([1, 2, 5, 5], 3.0, (Kind::Float, Device::Cpu));
        let mixed = TokenMixer::Pooling.forward(constant);
        assert_eq!(mixed.abs().max().double_value(&[]), 0.0);
        let ramp = Tensor::arange(25, (Kind::Float, Device::Cpu)).reshape([1, 1, 5, 5]);
        let mixed = TokenMixer::Pooling.forward(ramp);
        // Corner 0 averages {0, 1, 5, 6}: 3 above it.
        assert_eq!(mixed.double_value(&[0, 0, 0, 0]), 3.0);
    }

    /// Stochastic depth acts in training only; evaluation is deterministic.
    #[test]
    fn training_mode_drops_branches_and_eval_does_not() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = crate::seeding::draw(|| attenformer_s12(&vs.root(), 5, Preset::Micro));
        let x = crate::seeding::draw(|| Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)));
        let eval = |x: &Tensor| model.net.forward_t(x, false);
        assert_eq!(eval(&x), eval(&x));
        let train = |x: &Tensor| model.net.forward_t(x, true);
        let runs: Vec<Tensor> = (0..8).map(|_| train(&x)).collect();
        assert!(runs.iter().any(|run| run != &runs[0]));
    }
}

//! MLP-Mixer-S/16 as timm's `mixer_s16_224` (Table A1: DeiT recipe, 224x224
//! input): 16x16 patches embedded to width 512, eight blocks that each mix
//! tokens (an MLP across the 196 patches, hidden 256) and then channels (an
//! MLP across the width, hidden 2048), pre-norm with eps 1e-6, GELU, and a
//! mean over tokens before the classifier. Variable names follow timm's
//! state dict (`stem.proj`, `blocks.B.mlp_tokens.fc1`, `head`) so reference
//! weights load by name, and the init is timm's `_init_weights` for Mixer.

use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

use super::layers::{drop_path, dropout, head_drop_rate, layer_norm};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// timm's Mixer layer norms use eps 1e-6.
const LN_EPS: f64 = 1e-6;
/// Stochastic depth of every block (Table A3, DeiT recipe; timm's Mixer
/// uses the same rate in all blocks).
const DROP_PATH_RATE: f64 = 0.1;
/// Hidden widths of the token- and channel-mixing MLPs relative to the
/// embedding width (timm's `mlp_ratio=(0.5, 4.0)`).
const TOKEN_MLP_RATIO: f64 = 0.5;
const CHANNEL_MLP_RATIO: i64 = 4;

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "mlp_mixer_s",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "deit",
            timm: Some("mixer_s16_224"),
            ctor: mlp_mixer_s,
        },
    );
}

struct MixerConfig {
    image: i64,
    patch: i64,
    dim: i64,
    blocks: i64,
}

fn mlp_mixer_s(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => MixerConfig {
            image: 224,
            patch: 16,
            dim: 512,
            blocks: 8,
        },
        Preset::Micro => MixerConfig {
            image: 64,
            patch: 16,
            dim: 64,
            blocks: 2,
        },
    };
    Model {
        net: Box::new(MlpMixer::new(p, &config, classes)),
        // timm's MlpMixer has no `no_weight_decay()`.
        no_weight_decay: vec![],
    }
}

/// `erf(sqrt(2))`: sampling `sqrt(2) * erfinv(u)` with `u` uniform in
/// ±this gives a standard normal truncated at ±2.
const ERF_SQRT2: f64 = 0.954_499_736_103_641_6;
/// Standard deviation of a standard normal truncated at ±2.
const TRUNCATED_STD: f64 = 0.879_625_661_034_239_8;

/// timm's `lecun_normal_` for the stem convolution: a normal truncated at ±2
/// standard deviations, scaled so its variance is `1 / fan_in`.
fn lecun_normal_conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64) -> nn::Conv2D {
    let conv = nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride: kernel,
            ws_init: Init::Uniform {
                lo: -ERF_SQRT2,
                up: ERF_SQRT2,
            },
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    );
    let std = (1.0 / (inputs * kernel * kernel) as f64).sqrt() / TRUNCATED_STD;
    tch::no_grad(|| {
        let mut ws = conv.ws.shallow_clone();
        let _ = ws
            .erfinv_()
            .g_mul_scalar_(std::f64::consts::SQRT_2 * std)
            .clamp_(-2.0 * std, 2.0 * std);
    });
    conv
}

/// timm's Mixer init for the MLPs' linear layers: Xavier-uniform weight,
/// bias ~ N(0, 1e-6).
fn xavier_linear(p: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    let bound = (6.0 / (inputs + outputs) as f64).sqrt();
    nn::linear(
        p,
        inputs,
        outputs,
        nn::LinearConfig {
            ws_init: Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            }),
            bias: true,
        },
    )
}

#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    fn new(p: nn::Path, features: i64, hidden: i64) -> Self {
        Mlp {
            fc1: xavier_linear(&p / "fc1", features, hidden),
            fc2: xavier_linear(&p / "fc2", hidden, features),
        }
    }
}

impl nn::Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.fc1).gelu("none").apply(&self.fc2)
    }
}

#[derive(Debug)]
struct MixerBlock {
    norm1: nn::LayerNorm,
    mlp_tokens: Mlp,
    norm2: nn::LayerNorm,
    mlp_channels: Mlp,
}

impl MixerBlock {
    fn new(p: nn::Path, dim: i64, tokens: i64) -> Self {
        MixerBlock {
            norm1: layer_norm(&p / "norm1", dim, LN_EPS),
            mlp_tokens: Mlp::new(
                &p / "mlp_tokens",
                tokens,
                (TOKEN_MLP_RATIO * dim as f64) as i64,
            ),
            norm2: layer_norm(&p / "norm2", dim, LN_EPS),
            mlp_channels: Mlp::new(&p / "mlp_channels", dim, CHANNEL_MLP_RATIO * dim),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let tokens = xs
            .apply(&self.norm1)
            .transpose(1, 2)
            .apply(&self.mlp_tokens)
            .transpose(1, 2);
        let x = xs + drop_path(tokens, DROP_PATH_RATE, train);
        let channels = x.apply(&self.norm2).apply(&self.mlp_channels);
        drop_path(channels, DROP_PATH_RATE, train) + x
    }
}

#[derive(Debug)]
struct MlpMixer {
    stem: nn::Conv2D,
    blocks: Vec<MixerBlock>,
    norm: nn::LayerNorm,
    head: nn::Linear,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
}

impl MlpMixer {
    fn new(p: &nn::Path, c: &MixerConfig, classes: i64) -> Self {
        let tokens = (c.image / c.patch).pow(2);
        let zero = Init::Const(0.0);
        MlpMixer {
            stem: lecun_normal_conv(p / "stem" / "proj", 3, c.dim, c.patch),
            blocks: (0..c.blocks)
                .map(|i| MixerBlock::new(p / "blocks" / i, c.dim, tokens))
                .collect(),
            norm: layer_norm(p / "norm", c.dim, LN_EPS),
            // timm zeroes the classifier (`nlhb=False`: bias 0 too).
            head: nn::linear(
                p / "head",
                c.dim,
                classes,
                nn::LinearConfig {
                    ws_init: zero,
                    bs_init: Some(zero),
                    bias: true,
                },
            ),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for MlpMixer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.stem).flatten(2, -1).transpose(1, 2);
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        let pooled = x.apply(&self.norm).mean_dim(1, false, None);
        dropout(pooled, self.head_drop, train).apply(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn stem_init_is_lecun_normal_truncated_at_two_standard_deviations() {
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = crate::seeding::draw(|| lecun_normal_conv(vs.root(), 3, 512, 16));
        let bound = 2.0 * (1.0 / 768.0f64).sqrt() / TRUNCATED_STD;
        let ws = conv.ws.detach();
        assert!(ws.abs().max().double_value(&[]) <= bound + 1e-9);
        // The truncated normal's variance is 1 / fan_in.
        let var = ws.square().mean(Kind::Double).double_value(&[]);
        assert!(
            (var * 768.0 - 1.0).abs() < 0.02,
            "variance * fan_in = {}",
            var * 768.0
        );
    }

    #[test]
    fn a_new_mixer_predicts_zero_logits_as_timm_zeroes_the_head() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = crate::seeding::draw(|| mlp_mixer_s(&vs.root(), 5, Preset::Micro));
        let x = crate::seeding::draw(|| Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu)));
        let logits = model.net.forward_t(&x, false);
        assert_eq!(logits, Tensor::zeros([2, 5], (Kind::Float, Device::Cpu)));
    }
}

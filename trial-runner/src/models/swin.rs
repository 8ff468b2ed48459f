//! Swin Transformer as timm's `swin_tiny_patch4_window7_224` (Table A1:
//! ConvNeXt recipe, 224x224 input): a normalised 4x4 patch embedding, four
//! stages of window attention with a learned relative position bias, every
//! second block on windows shifted by half a window (with timm's -100 mask
//! between regions that the cyclic shift brings together), and patch merging
//! at the start of stages 2-4. Feature maps stay channels-last `[B, H, W, C]`
//! as in timm, and variable names follow timm's state dict
//! (`layers.S.downsample.reduction`, `layers.S.blocks.I.attn.qkv`,
//! `head.fc`), so reference weights load by name.

use tch::nn::{self, Init, ModuleT};
use tch::{Device, Tensor};

use super::layers::{
    drop_path, drop_path_rate, dropout, head_drop_rate, layer_norm, torch_conv2d, vit_linear,
};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// `nn.LayerNorm`'s default epsilon, which timm's Swin keeps.
const LN_EPS: f64 = 1e-5;
/// What timm adds to the attention logits between tokens from different
/// regions of a shifted window (rather than -inf).
const SHIFT_MASK: f32 = -100.0;

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "swin_t",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "convnext",
            timm: None,
            ctor: swin_t,
        },
    );
}

struct SwinConfig {
    image: i64,
    patch: i64,
    embed_dim: i64,
    depths: [i64; 4],
    heads: [i64; 4],
    window: i64,
    mlp_ratio: i64,
    /// Stochastic-depth rate of the last block (timm's default and the
    /// ConvNeXt recipe's, Table A3).
    drop_path_rate: f64,
}

fn swin_t(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => SwinConfig {
            image: 224,
            patch: 4,
            embed_dim: 96,
            depths: [2, 2, 6, 2],
            heads: [3, 6, 12, 24],
            window: 7,
            mlp_ratio: 4,
            drop_path_rate: 0.1,
        },
        // 16x16 tokens in 4x4 windows: shifted windows in stages 1-2, an
        // unshifted whole-map window in stage 3, and a window clamped to the
        // 2x2 map in stage 4, as timm does for maps no larger than a window.
        Preset::Micro => SwinConfig {
            image: 64,
            patch: 4,
            embed_dim: 16,
            depths: [2, 2, 2, 1],
            heads: [1, 2, 4, 8],
            window: 4,
            mlp_ratio: 4,
            drop_path_rate: 0.1,
        },
    };
    Model {
        net: Box::new(SwinTransformer::new(p, &config, classes)),
        no_weight_decay: vec!["relative_position_bias_table"],
    }
}

/// `index[i][j]`: the row of the bias table for query `i` and key `j` of a
/// `window`-sided window (timm's `get_relative_position_index`).
fn relative_position_index(window: i64, device: Device) -> Tensor {
    let side = 2 * window - 1;
    let tokens = window * window;
    let mut index = Vec::with_capacity((tokens * tokens) as usize);
    for i in 0..tokens {
        for j in 0..tokens {
            let dy = i / window - j / window + window - 1;
            let dx = i % window - j % window + window - 1;
            index.push(dy * side + dx);
        }
    }
    Tensor::from_slice(&index).to_device(device)
}

/// `[windows, tokens, tokens]`: 0 between tokens of the same region of the
/// shifted map and -100 between regions that only the cyclic shift made
/// neighbours (timm's `get_attn_mask`).
fn shifted_window_mask(side: i64, window: i64, shift: i64, device: Device) -> Tensor {
    let region = |pos: i64| {
        if pos < side - window {
            0
        } else if pos < side - shift {
            1
        } else {
            2
        }
    };
    let per_side = side / window;
    let tokens = window * window;
    let mut mask = Vec::with_capacity((per_side * per_side * tokens * tokens) as usize);
    for wy in 0..per_side {
        for wx in 0..per_side {
            let label =
                |t: i64| 3 * region(wy * window + t / window) + region(wx * window + t % window);
            for i in 0..tokens {
                for j in 0..tokens {
                    mask.push(if label(i) == label(j) {
                        0.0
                    } else {
                        SHIFT_MASK
                    });
                }
            }
        }
    }
    Tensor::from_slice(&mask)
        .reshape([per_side * per_side, tokens, tokens])
        .to_device(device)
}

/// timm's `WindowAttention` over `[batch * windows, tokens, dim]`.
#[derive(Debug)]
struct WindowAttention {
    relative_position_bias_table: Tensor,
    relative_position_index: Tensor,
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl WindowAttention {
    fn new(p: nn::Path, dim: i64, heads: i64, window: i64) -> Self {
        let table_rows = (2 * window - 1).pow(2);
        WindowAttention {
            relative_position_bias_table: p.var(
                "relative_position_bias_table",
                &[table_rows, heads],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            relative_position_index: relative_position_index(window, p.device()),
            qkv: vit_linear(&p / "qkv", dim, 3 * dim),
            proj: vit_linear(&p / "proj", dim, dim),
            heads,
        }
    }

    /// `[heads, tokens, tokens]` bias gathered from the table.
    fn relative_position_bias(&self, tokens: i64) -> Tensor {
        self.relative_position_bias_table
            .index_select(0, &self.relative_position_index)
            .view([tokens, tokens, self.heads])
            .permute([2, 0, 1])
    }

    /// `shift_mask` is `[windows, tokens, tokens]` for shifted windows; the
    /// batch is then `batch * windows`, windows innermost.
    fn forward(&self, xs: &Tensor, shift_mask: Option<&Tensor>) -> Tensor {
        let (batch_windows, tokens, dim) = xs.size3().expect("windows are [B*nW, N, C]");
        let head_dim = dim / self.heads;
        let qkv = xs
            .apply(&self.qkv)
            .reshape([batch_windows, tokens, 3, self.heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // timm's default (unfused) path: SDPA would fall back to its slower
        // math kernel anyway, since the bias needs a gradient.
        let logits = (q * (head_dim as f64).powf(-0.5)).matmul(&k.transpose(-2, -1));
        let bias = self.relative_position_bias(tokens);
        let logits = match shift_mask {
            None => logits + bias,
            Some(mask) => {
                let windows = mask.size()[0];
                let bias = bias.unsqueeze(0) + mask.unsqueeze(1);
                (logits.view([-1, windows, self.heads, tokens, tokens]) + bias).view([
                    batch_windows,
                    self.heads,
                    tokens,
                    tokens,
                ])
            }
        };
        logits
            .softmax(-1, None)
            .matmul(&v)
            .transpose(1, 2)
            .reshape([batch_windows, tokens, dim])
            .apply(&self.proj)
    }
}

#[derive(Debug)]
struct SwinBlock {
    norm1: nn::LayerNorm,
    attn: WindowAttention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    window: i64,
    shift: i64,
    /// Present exactly when `shift > 0`.
    shift_mask: Option<Tensor>,
    drop_path: f64,
}

impl SwinBlock {
    /// A block on a `side`-sided map; as timm, a map no larger than the
    /// window is one unshifted window.
    fn new(
        p: nn::Path,
        dim: i64,
        side: i64,
        heads: i64,
        config: &SwinConfig,
        index: i64,
        drop_path: f64,
    ) -> Self {
        let (window, shift) = if side <= config.window {
            (side, 0)
        } else if index % 2 == 1 {
            (config.window, config.window / 2)
        } else {
            (config.window, 0)
        };
        assert_eq!(
            side % window,
            0,
            "a {window}-token window must tile the {side}-token map"
        );
        let hidden = dim * config.mlp_ratio;
        let mlp = &p / "mlp";
        SwinBlock {
            norm1: layer_norm(&p / "norm1", dim, LN_EPS),
            attn: WindowAttention::new(&p / "attn", dim, heads, window),
            norm2: layer_norm(&p / "norm2", dim, LN_EPS),
            fc1: vit_linear(&mlp / "fc1", dim, hidden),
            fc2: vit_linear(&mlp / "fc2", hidden, dim),
            window,
            shift,
            shift_mask: (shift > 0).then(|| shifted_window_mask(side, window, shift, p.device())),
            drop_path,
        }
    }

    /// Window attention on a `[B, H, W, C]` map, shifted if the block is.
    fn shifted_window_attention(&self, xs: &Tensor) -> Tensor {
        let (batch, height, width, dim) = xs.size4().expect("maps are [B, H, W, C]");
        let w = self.window;
        let shifted = if self.shift > 0 {
            xs.roll([-self.shift, -self.shift], [1, 2])
        } else {
            xs.shallow_clone()
        };
        let windows = shifted
            .view([batch, height / w, w, width / w, w, dim])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([-1, w * w, dim]);
        let attended = self
            .attn
            .forward(&windows, self.shift_mask.as_ref())
            .view([batch, height / w, width / w, w, w, dim])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([batch, height, width, dim]);
        if self.shift > 0 {
            attended.roll([self.shift, self.shift], [1, 2])
        } else {
            attended
        }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let attn = self.shifted_window_attention(&xs.apply(&self.norm1));
        let x = xs + drop_path(attn, self.drop_path, train);
        let mlp = x
            .apply(&self.norm2)
            .apply(&self.fc1)
            .gelu("none")
            .apply(&self.fc2);
        &x + drop_path(mlp, self.drop_path, train)
    }
}

/// timm's `PatchMerging`: each 2x2 neighbourhood's channels concatenated
/// (order: top-left, bottom-left, top-right, bottom-right), normalised and
/// projected to `2 * dim` without bias.
#[derive(Debug)]
struct PatchMerging {
    norm: nn::LayerNorm,
    reduction: nn::Linear,
}

impl PatchMerging {
    fn new(p: nn::Path, dim: i64, out_dim: i64) -> Self {
        PatchMerging {
            norm: layer_norm(&p / "norm", 4 * dim, LN_EPS),
            reduction: nn::linear(
                &p / "reduction",
                4 * dim,
                out_dim,
                nn::LinearConfig {
                    ws_init: Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                    bs_init: None,
                    bias: false,
                },
            ),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let (batch, height, width, dim) = xs.size4().expect("maps are [B, H, W, C]");
        xs.view([batch, height / 2, 2, width / 2, 2, dim])
            .permute([0, 1, 3, 4, 2, 5])
            .reshape([batch, height / 2, width / 2, 4 * dim])
            .apply(&self.norm)
            .apply(&self.reduction)
    }
}

#[derive(Debug)]
struct SwinStage {
    downsample: Option<PatchMerging>,
    blocks: Vec<SwinBlock>,
}

#[derive(Debug)]
struct SwinTransformer {
    patch_embed: nn::Conv2D,
    patch_norm: nn::LayerNorm,
    layers: Vec<SwinStage>,
    norm: nn::LayerNorm,
    head: nn::Linear,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
}

impl SwinTransformer {
    fn new(p: &nn::Path, c: &SwinConfig, classes: i64) -> Self {
        let embed = p / "patch_embed";
        let total_blocks: i64 = c.depths.iter().sum();
        let mut block_number = 0;
        let mut side = c.image / c.patch;
        let mut dim = c.embed_dim;
        let mut layers = Vec::with_capacity(c.depths.len());
        for (stage, (&depth, &heads)) in c.depths.iter().zip(&c.heads).enumerate() {
            let sp = p / "layers" / stage;
            let downsample = (stage > 0).then(|| {
                let merge = PatchMerging::new(&sp / "downsample", dim, 2 * dim);
                dim *= 2;
                side /= 2;
                merge
            });
            let blocks = (0..depth)
                .map(|i| {
                    // timm's linear rise from 0 over all blocks.
                    let rate = drop_path_rate(c.drop_path_rate) * block_number as f64
                        / (total_blocks - 1) as f64;
                    block_number += 1;
                    SwinBlock::new(&sp / "blocks" / i, dim, side, heads, c, i, rate)
                })
                .collect();
            layers.push(SwinStage { downsample, blocks });
        }
        SwinTransformer {
            // The patch projection keeps PyTorch's conv default (timm re-inits only Linear layers).
            patch_embed: torch_conv2d(&embed / "proj", 3, c.embed_dim, c.patch, c.patch, 0),
            patch_norm: layer_norm(&embed / "norm", c.embed_dim, LN_EPS),
            layers,
            norm: layer_norm(p / "norm", dim, LN_EPS),
            head: vit_linear(p / "head" / "fc", dim, classes),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for SwinTransformer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs
            .apply(&self.patch_embed)
            .permute([0, 2, 3, 1])
            .apply(&self.patch_norm);
        for stage in &self.layers {
            if let Some(merge) = &stage.downsample {
                x = merge.forward(&x);
            }
            for block in &stage.blocks {
                x = block.forward(&x, train);
            }
        }
        // timm's ClassifierHead: pool, drop, fc.
        let pooled = x
            .apply(&self.norm)
            .mean_dim([1i64, 2].as_slice(), false, None);
        dropout(pooled, self.head_drop, train).apply(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<T>(t: &Tensor) -> Vec<T>
    where
        Vec<T>: TryFrom<Tensor, Error = tch::TchError>,
    {
        Vec::<T>::try_from(t.flatten(0, -1)).unwrap()
    }

    /// timm's `get_relative_position_index(2, 2)`.
    #[test]
    fn relative_position_index_matches_timm() {
        let index = relative_position_index(2, Device::Cpu);
        assert_eq!(
            values::<i64>(&index),
            [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    /// timm's `SwinTransformerBlock(8, (4, 4), window_size=2, shift_size=1)
    /// .attn_mask`: the top-left window is one region, the top-right one
    /// splits by column, the bottom-right one into four quarters.
    #[test]
    fn shifted_window_mask_matches_timm() {
        let mask = shifted_window_mask(4, 2, 1, Device::Cpu);
        assert_eq!(mask.size(), [4, 4, 4]);
        let m = SHIFT_MASK;
        assert_eq!(values::<f32>(&mask.get(0)), [0.0; 16]);
        assert_eq!(
            values::<f32>(&mask.get(1)),
            [0.0, m, 0.0, m, m, 0.0, m, 0.0, 0.0, m, 0.0, m, m, 0.0, m, 0.0]
        );
        assert_eq!(
            values::<f32>(&mask.get(3)),
            [0.0, m, m, m, m, 0.0, m, m, m, m, 0.0, m, m, m, m, 0.0]
        );
    }
}

//! TransNeXt-Tiny as the TransNeXt repository's `transnext_tiny` in its
//! pure-PyTorch form (`classification/transnext.py` with
//! `attention_native.py`; Table A1: DeiT recipe, 224x224 input). Four stages
//! of overlapping patch embeddings; in stages 1-3 aggregated attention, where
//! each query attends jointly (one softmax) to its 3x3 neighbourhood and to
//! keys and values pooled to 1/sr of the map, with length-scaled cosine
//! similarity, a learnable query embedding, learnable tokens for the local
//! part and a position bias from an MLP over log-spaced relative coordinates;
//! stage 4 uses full attention in the same style. The channel mixer is the
//! convolutional GLU. Variable names follow the reference's state dict
//! (`patch_embed1.proj`, `block1.0.attn.cpb_fc1`, `norm4`, `head`).
//!
//! The relative coordinates, the neighbourhood mask and the length scales
//! depend on the input side, so the model is built for one input size.

use tch::nn::{self, Init, ModuleT};
use tch::{Device, Tensor};

use super::layers::{
    conv2d_normal, drop_path, drop_path_rate, dropout, head_drop_rate, layer_norm, vit_linear,
};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// The reference's `norm_layer` (block and stage norms).
const LN_EPS: f64 = 1e-6;
/// The plain `nn.LayerNorm` of the patch embeddings and of the pooled
/// features.
const TORCH_LN_EPS: f64 = 1e-5;
/// Width of the MLP that maps relative coordinates to per-head biases.
const CPB_HIDDEN: i64 = 512;
/// `F.normalize`'s epsilon.
const NORMALIZE_EPS: f64 = 1e-12;

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "transnext_t",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 224,
            micro_input_size: MICRO_INPUT,
            default_recipe: "deit",
            timm: None,
            ctor: transnext_t,
        },
    );
}

/// The micro preset's input side: stages of 16, 8, 4 and 2 tokens a side,
/// so the pooled maps of stages 1-3 are 2x2.
const MICRO_INPUT: i64 = 64;

struct TransNextConfig {
    image: i64,
    dims: [i64; 4],
    heads: [i64; 4],
    mlp_ratios: [i64; 4],
    depths: [i64; 4],
    sr_ratios: [i64; 4],
    /// Side of the local neighbourhood of aggregated attention.
    window: i64,
    /// Stochastic-depth rate of the last block (`configs/transnext_tiny.py`).
    drop_path_rate: f64,
}

fn transnext_t(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => TransNextConfig {
            image: 224,
            dims: [72, 144, 288, 576],
            heads: [3, 6, 12, 24],
            mlp_ratios: [8, 8, 4, 4],
            depths: [2, 2, 15, 2],
            sr_ratios: [8, 4, 2, 1],
            window: 3,
            drop_path_rate: 0.25,
        },
        Preset::Micro => TransNextConfig {
            image: MICRO_INPUT,
            dims: [16, 32, 48, 64],
            heads: [1, 2, 3, 4],
            mlp_ratios: [8, 8, 4, 4],
            depths: [1, 1, 2, 1],
            sr_ratios: [8, 4, 2, 1],
            window: 3,
            drop_path_rate: 0.25,
        },
    };
    Model {
        net: Box::new(TransNext::new(p, &config, classes)),
        // The reference's `no_weight_decay_keywords` (query_embedding,
        // relative_pos_bias_local, cpb, temperature) as name suffixes; the
        // cpb biases are exempt anyway as 1-d tensors.
        no_weight_decay: vec![
            "query_embedding",
            "relative_pos_bias_local",
            "temperature",
            "cpb_fc1.weight",
            "cpb_fc2.weight",
        ],
    }
}

/// `F.normalize(xs, dim=-1)`.
fn l2_normalize(xs: &Tensor) -> Tensor {
    xs / xs
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(NORMALIZE_EPS)
}

/// The reference's `get_relative_position_cpb` for a `query`-sided map and
/// keys pooled to `key` a side: `(index, table)`, where `table` holds the
/// distinct log-spaced relative coordinates `[U, 2]` and `index[q * K + k]`
/// the row for query `q` and key `k`. The coordinates are computed in f32 as
/// the reference does, so equal offsets dedupe exactly.
fn relative_position_cpb(query: i64, key: i64, device: Device) -> (Tensor, Tensor) {
    // `adaptive_avg_pool1d(arange(query), key)`: the mean of each bin.
    let pooled: Vec<f32> = (0..key)
        .map(|j| {
            let start = j * query / key;
            let end = ((j + 1) * query + key - 1) / key;
            (start..end).sum::<i64>() as f32 / (end - start) as f32
        })
        .collect();
    let scale = (query - 1) as f32;
    let offset = |q: i64, k: f32| (q as f32 - k) / scale * 8.0;
    let mut coords = Vec::new();
    for qh in 0..query {
        for qw in 0..query {
            for &kh in &pooled {
                for &kw in &pooled {
                    coords.push((offset(qh, kh), offset(qw, kw)));
                }
            }
        }
    }
    // `torch.unique(dim=0)`: the distinct rows in ascending order.
    let ascending = |a: &(f32, f32), b: &(f32, f32)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
    let mut distinct = coords.clone();
    distinct.sort_by(ascending);
    distinct.dedup();
    let index: Vec<i64> = coords
        .iter()
        .map(|pair| {
            distinct
                .binary_search_by(|row| ascending(row, pair))
                .expect("a row of the table") as i64
        })
        .collect();
    let table: Vec<f32> = distinct
        .iter()
        .flat_map(|&(h, w)| [h, w])
        .map(|value| value.signum() * (value.abs() + 1.0).log2() / 3.0)
        .collect();
    let table = Tensor::from_slice(&table).view([-1, 2]).to_device(device);
    (Tensor::from_slice(&index).to_device(device), table)
}

/// For a `side`-sided map and a `window`-sided neighbourhood (zero-padded as
/// `nn.Unfold`): `[N, window²]` true where the neighbour falls outside the
/// map, and the count of neighbours inside it, `[N]`.
fn local_neighbourhood(side: i64, window: i64) -> (Vec<bool>, Vec<i64>) {
    let half = window / 2;
    let inside = |pos: i64| (0..side).contains(&pos);
    let mut outside = Vec::with_capacity((side * side * window * window) as usize);
    let mut counts = Vec::with_capacity((side * side) as usize);
    for y in 0..side {
        for x in 0..side {
            let mut count = 0;
            for dy in 0..window {
                for dx in 0..window {
                    let valid = inside(y + dy - half) && inside(x + dx - half);
                    count += i64::from(valid);
                    outside.push(!valid);
                }
            }
            counts.push(count);
        }
    }
    (outside, counts)
}

/// Parameters shared by both attention kinds: the learnable temperature
/// (`softplus` of it scales the cosine similarities, initially 1/0.24),
/// the query embedding, the output projection and the position-bias MLP.
#[derive(Debug)]
struct CosineAttentionParts {
    temperature: Tensor,
    query_embedding: Tensor,
    proj: nn::Linear,
    cpb_fc1: nn::Linear,
    cpb_fc2: nn::Linear,
    heads: i64,
}

impl CosineAttentionParts {
    fn new(p: &nn::Path, dim: i64, heads: i64) -> Self {
        let initial_temperature = ((1.0f64 / 0.24).exp() - 1.0).ln();
        CosineAttentionParts {
            temperature: p.var(
                "temperature",
                &[heads, 1, 1],
                Init::Const(initial_temperature),
            ),
            query_embedding: p.var("query_embedding", &[heads, 1, dim / heads], normal(0.02)),
            proj: vit_linear(p / "proj", dim, dim),
            cpb_fc1: vit_linear(p / "cpb_fc1", 2, CPB_HIDDEN),
            cpb_fc2: vit_linear(p / "cpb_fc2", CPB_HIDDEN, heads),
            heads,
        }
    }

    /// `[heads, queries, keys]` position bias.
    fn position_bias(&self, positions: &RelativePositions, queries: i64) -> Tensor {
        positions
            .table
            .apply(&self.cpb_fc1)
            .relu()
            .apply(&self.cpb_fc2)
            .transpose(0, 1)
            .index_select(1, &positions.index)
            .view([self.heads, queries, -1])
    }

    /// Normalised queries plus the query embedding, times the temperature
    /// and `length_scale` (log of the number of keys each query sees).
    fn scale_queries(&self, normalized: &Tensor, length_scale: &Tensor) -> Tensor {
        (normalized + &self.query_embedding) * self.temperature.softplus() * length_scale
    }
}

fn normal(stdev: f64) -> Init {
    Init::Randn { mean: 0.0, stdev }
}

/// A stage's relative coordinates for the position-bias MLP.
#[derive(Debug)]
struct RelativePositions {
    index: Tensor,
    table: Tensor,
}

/// The reference's `Attention` (stage 4): full attention over all tokens.
#[derive(Debug)]
struct FullAttention {
    qkv: nn::Linear,
    parts: CosineAttentionParts,
    length_scale: Tensor,
}

impl FullAttention {
    fn new(p: &nn::Path, dim: i64, heads: i64, side: i64) -> Self {
        FullAttention {
            qkv: vit_linear(p / "qkv", dim, 3 * dim),
            parts: CosineAttentionParts::new(p, dim, heads),
            length_scale: Tensor::from(((side * side) as f64).ln() as f32).to_device(p.device()),
        }
    }

    fn forward(&self, xs: &Tensor, positions: &RelativePositions) -> Tensor {
        let (batch, tokens, dim) = xs.size3().expect("tokens are [B, N, C]");
        let heads = self.parts.heads;
        let qkv = xs
            .apply(&self.qkv)
            .reshape([batch, tokens, 3 * heads, dim / heads])
            .permute([0, 2, 1, 3])
            .chunk(3, 1);
        let queries = self
            .parts
            .scale_queries(&l2_normalize(&qkv[0]), &self.length_scale);
        let logits = queries.matmul(&l2_normalize(&qkv[1]).transpose(-2, -1))
            + self.parts.position_bias(positions, tokens);
        logits
            .softmax(-1, None)
            .matmul(&qkv[2])
            .transpose(1, 2)
            .reshape([batch, tokens, dim])
            .apply(&self.parts.proj)
    }
}

/// The reference's `AggregatedAttention` (stages 1-3, native version).
#[derive(Debug)]
struct AggregatedAttention {
    q: nn::Linear,
    kv: nn::Linear,
    sr: nn::Conv2D,
    norm: nn::LayerNorm,
    parts: CosineAttentionParts,
    relative_pos_bias_local: Tensor,
    learnable_tokens: Tensor,
    learnable_bias: Tensor,
    /// `[N, 1]`: log(neighbours inside the map + pooled keys).
    length_scale: Tensor,
    /// `[N, window²]`: neighbours outside the map.
    padding_mask: Tensor,
    window: i64,
    pool_side: i64,
}

impl AggregatedAttention {
    fn new(p: &nn::Path, dim: i64, heads: i64, side: i64, sr_ratio: i64, window: i64) -> Self {
        let local = window * window;
        let pool_side = side / sr_ratio;
        let (outside, counts) = local_neighbourhood(side, window);
        let length_scale: Vec<f32> = counts
            .iter()
            .map(|&count| ((count + pool_side * pool_side) as f64).ln() as f32)
            .collect();
        let device = p.device();
        AggregatedAttention {
            q: vit_linear(p / "q", dim, dim),
            kv: vit_linear(p / "kv", dim, 2 * dim),
            sr: conv2d_normal(p / "sr", dim, dim, 1, 1, 1, true, (2.0 / dim as f64).sqrt()),
            norm: layer_norm(p / "norm", dim, TORCH_LN_EPS),
            parts: CosineAttentionParts::new(p, dim, heads),
            relative_pos_bias_local: p.var(
                "relative_pos_bias_local",
                &[heads, local],
                normal(0.0004),
            ),
            learnable_tokens: p.var(
                "learnable_tokens",
                &[heads, dim / heads, local],
                normal(0.02),
            ),
            learnable_bias: p.var("learnable_bias", &[heads, 1, local], Init::Const(0.0)),
            length_scale: Tensor::from_slice(&length_scale)
                .view([-1, 1])
                .to_device(device),
            padding_mask: Tensor::from_slice(&outside)
                .view([-1, local])
                .to_device(device),
            window,
            pool_side,
        }
    }

    fn forward(&self, xs: &Tensor, side: i64, positions: &RelativePositions) -> Tensor {
        let (batch, tokens, dim) = xs.size3().expect("tokens are [B, N, C]");
        let heads = self.parts.heads;
        let head_dim = dim / heads;
        let local = self.window * self.window;
        let pooled = self.pool_side * self.pool_side;

        let q_norm = l2_normalize(
            &xs.apply(&self.q)
                .reshape([batch, tokens, heads, head_dim])
                .permute([0, 2, 1, 3]),
        );
        let queries = self.parts.scale_queries(&q_norm, &self.length_scale);

        // Keys (normalised per head) and values of each 3x3 neighbourhood:
        // [B, heads, N, head_dim, window²] each.
        let kv = xs.apply(&self.kv).chunk(2, -1);
        let k_local = l2_normalize(&kv[0].reshape([batch, tokens, heads, head_dim]))
            .reshape([batch, tokens, dim]);
        let neighbourhoods = Tensor::cat(&[k_local, kv[1].shallow_clone()], -1)
            .permute([0, 2, 1])
            .reshape([batch, 2 * dim, side, side])
            .im2col(
                [self.window, self.window],
                [1, 1],
                [self.window / 2, self.window / 2],
                [1, 1],
            )
            .reshape([batch, 2 * heads, head_dim, local, tokens])
            .permute([0, 1, 4, 2, 3])
            .chunk(2, 1);
        let (k_local, v_local) = (&neighbourhoods[0], &neighbourhoods[1]);
        let local_logits = (queries.unsqueeze(-2).matmul(k_local).squeeze_dim(-2)
            + self.relative_pos_bias_local.unsqueeze(1))
        .masked_fill(&self.padding_mask, f64::NEG_INFINITY);

        // Keys and values pooled from the whole map: [B, heads, P, head_dim].
        let pooled_tokens = xs
            .permute([0, 2, 1])
            .reshape([batch, dim, side, side])
            .apply(&self.sr)
            .gelu("none")
            .adaptive_avg_pool2d([self.pool_side, self.pool_side])
            .reshape([batch, dim, pooled])
            .permute([0, 2, 1])
            .apply(&self.norm);
        let kv_pool = pooled_tokens
            .apply(&self.kv)
            .reshape([batch, pooled, 2 * heads, head_dim])
            .permute([0, 2, 1, 3])
            .chunk(2, 1);
        let pool_logits = queries.matmul(&l2_normalize(&kv_pool[0]).transpose(-2, -1))
            + self.parts.position_bias(positions, tokens);

        let weights = Tensor::cat(&[local_logits, pool_logits], -1).softmax(-1, None);
        let weights = weights.split_with_sizes([local, pooled], -1);
        let local_weights =
            q_norm.matmul(&self.learnable_tokens) + &self.learnable_bias + &weights[0];
        let x_local = local_weights
            .unsqueeze(-2)
            .matmul(&v_local.transpose(-2, -1))
            .squeeze_dim(-2);
        let x_pool = weights[1].matmul(&kv_pool[1]);
        (x_local + x_pool)
            .transpose(1, 2)
            .reshape([batch, tokens, dim])
            .apply(&self.parts.proj)
    }
}

#[derive(Debug)]
enum TokenMixer {
    Aggregated(Box<AggregatedAttention>),
    Full(FullAttention),
}

/// The reference's `ConvolutionalGLU`: one half of `fc1` through a 3x3
/// depthwise conv and GELU gates the other half.
#[derive(Debug)]
struct ConvolutionalGlu {
    fc1: nn::Linear,
    dwconv: nn::Conv2D,
    fc2: nn::Linear,
}

impl ConvolutionalGlu {
    fn new(p: &nn::Path, dim: i64, mlp_ratio: i64) -> Self {
        let hidden = 2 * dim * mlp_ratio / 3;
        ConvolutionalGlu {
            fc1: vit_linear(p / "fc1", dim, 2 * hidden),
            // fan-out over groups: 3 * 3 * hidden / hidden
            dwconv: conv2d_normal(
                p / "dwconv" / "dwconv",
                hidden,
                hidden,
                3,
                1,
                hidden,
                true,
                (2.0f64 / 9.0).sqrt(),
            ),
            fc2: vit_linear(p / "fc2", hidden, dim),
        }
    }

    fn forward(&self, xs: &Tensor, side: i64) -> Tensor {
        let halves = xs.apply(&self.fc1).chunk(2, -1);
        let (batch, _, hidden) = halves[0].size3().expect("tokens are [B, N, C]");
        let gate = halves[0]
            .transpose(1, 2)
            .reshape([batch, hidden, side, side])
            .apply(&self.dwconv)
            .flatten(2, -1)
            .transpose(1, 2)
            .gelu("none");
        (gate * &halves[1]).apply(&self.fc2)
    }
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: TokenMixer,
    norm2: nn::LayerNorm,
    mlp: ConvolutionalGlu,
    drop_path: f64,
}

impl Block {
    fn forward(
        &self,
        xs: &Tensor,
        side: i64,
        positions: &RelativePositions,
        train: bool,
    ) -> Tensor {
        let normed = xs.apply(&self.norm1);
        let attn = match &self.attn {
            TokenMixer::Aggregated(attn) => attn.forward(&normed, side, positions),
            TokenMixer::Full(attn) => attn.forward(&normed, positions),
        };
        let x = xs + drop_path(attn, self.drop_path, train);
        let mlp = self.mlp.forward(&x.apply(&self.norm2), side);
        &x + drop_path(mlp, self.drop_path, train)
    }
}

#[derive(Debug)]
struct Stage {
    patch_embed: nn::Conv2D,
    patch_norm: nn::LayerNorm,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    positions: RelativePositions,
}

#[derive(Debug)]
struct TransNext {
    stages: Vec<Stage>,
    head: nn::Linear,
    /// Dropout on the pooled tokens, as timm's heads apply `drop_rate`;
    /// none unless a recipe sets one.
    head_drop: f64,
}

impl TransNext {
    fn new(p: &nn::Path, c: &TransNextConfig, classes: i64) -> Self {
        let total_blocks: i64 = c.depths.iter().sum();
        let mut block_number = 0;
        let mut stages = Vec::with_capacity(4);
        for stage in 0..4 {
            let n = stage + 1;
            let dim = c.dims[stage];
            let heads = c.heads[stage];
            let side = c.image >> (stage + 2);
            let sr_ratio = c.sr_ratios[stage];
            let (index, table) = relative_position_cpb(side, side / sr_ratio, p.device());
            let (inputs, kernel, stride) = match stage {
                0 => (3, 7, 4),
                _ => (c.dims[stage - 1], 3, 2),
            };
            let embed = p / format!("patch_embed{n}");
            let fan_out = (kernel * kernel * dim) as f64;
            let blocks = (0..c.depths[stage])
                .map(|i| {
                    let bp = p / format!("block{n}") / i;
                    let ap = &bp / "attn";
                    let attn = if sr_ratio == 1 {
                        TokenMixer::Full(FullAttention::new(&ap, dim, heads, side))
                    } else {
                        TokenMixer::Aggregated(Box::new(AggregatedAttention::new(
                            &ap, dim, heads, side, sr_ratio, c.window,
                        )))
                    };
                    let rate = drop_path_rate(c.drop_path_rate) * block_number as f64
                        / (total_blocks - 1) as f64;
                    block_number += 1;
                    Block {
                        norm1: layer_norm(&bp / "norm1", dim, LN_EPS),
                        attn,
                        norm2: layer_norm(&bp / "norm2", dim, LN_EPS),
                        mlp: ConvolutionalGlu::new(&(&bp / "mlp"), dim, c.mlp_ratios[stage]),
                        drop_path: rate,
                    }
                })
                .collect();
            stages.push(Stage {
                patch_embed: conv2d_normal(
                    &embed / "proj",
                    inputs,
                    dim,
                    kernel,
                    stride,
                    1,
                    true,
                    (2.0 / fan_out).sqrt(),
                ),
                patch_norm: layer_norm(&embed / "norm", dim, TORCH_LN_EPS),
                blocks,
                norm: layer_norm(p / format!("norm{n}"), dim, LN_EPS),
                positions: RelativePositions { index, table },
            });
        }
        TransNext {
            stages,
            head: vit_linear(p / "head", c.dims[3], classes),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl Stage {
    /// `[B, C, H, W]` in, `([B, N, C'], side)` out.
    fn forward(&self, map: &Tensor, train: bool) -> (Tensor, i64) {
        let embedded = map.apply(&self.patch_embed);
        let side = embedded.size()[2];
        let mut x = embedded
            .flatten(2, -1)
            .transpose(1, 2)
            .apply(&self.patch_norm);
        for block in &self.blocks {
            x = block.forward(&x, side, &self.positions, train);
        }
        (x.apply(&self.norm), side)
    }
}

impl ModuleT for TransNext {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (last, inner) = self.stages.split_last().expect("four stages");
        let batch = xs.size()[0];
        let mut map = xs.shallow_clone();
        for stage in inner {
            let (tokens, side) = stage.forward(&map, train);
            map = tokens
                .reshape([batch, side, side, -1])
                .permute([0, 3, 1, 2]);
        }
        let (tokens, _) = last.forward(&map, train);
        let pooled = tokens.mean_dim(1, false, None);
        dropout(pooled, self.head_drop, train).apply(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's `get_seqlen_and_mask((3, 3), 3)`: corners see 4
    /// neighbours, edges 6, the centre 9.
    #[test]
    fn neighbourhood_counts_match_the_reference() {
        let (outside, counts) = local_neighbourhood(3, 3);
        assert_eq!(counts, [4, 6, 4, 6, 9, 6, 4, 6, 4]);
        // The top-left token's neighbours above or left of the map.
        assert_eq!(
            &outside[..9],
            [true, true, true, true, false, false, true, false, false]
        );
    }

    /// The reference's `get_relative_position_cpb((4, 4), (2, 2))`: 36
    /// distinct offsets, the first (most negative) being
    /// sign * log2(|(0 - 2.5) / 3 * 8| + 1) / 3 on both axes.
    #[test]
    fn relative_position_table_matches_the_reference() {
        let (index, table) = relative_position_cpb(4, 2, Device::Cpu);
        assert_eq!(index.size(), [16 * 4]);
        assert_eq!(table.size(), [36, 2]);
        let first = -((2.5f64 / 3.0 * 8.0 + 1.0).log2() / 3.0);
        for axis in 0..2 {
            let got = table.double_value(&[0, axis]);
            assert!((got - first).abs() < 1e-6, "{got} vs {first}");
        }
        // Query (0, 0) against key (1, 1) (pooled position (2.5, 2.5)).
        assert_eq!(index.int64_value(&[3]), 0);
    }
}

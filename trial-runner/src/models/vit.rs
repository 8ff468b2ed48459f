//! Vision Transformers with timm's names and initialisation: ViT-Ti (width
//! 192, 12 blocks, 3 heads) on 4x4 patches of a 32x32 image (`vit_tiny_cifar`)
//! or 16x16 patches of a 224x224 one (`vit_tiny`), and DeiT-S
//! (timm's `deit_small_patch16_224`: ViT-S/16, width 384, 12 blocks, 6 heads,
//! class token, no distillation token) on 16x16 patches of a 224x224 image.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{drop_path, drop_path_rate, dropout, head_drop_rate, layer_norm, vit_linear};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// timm's ViTs use LayerNorm with eps 1e-6.
const LN_EPS: f64 = 1e-6;

pub(super) fn register(registry: &mut BackboneRegistry) {
    registry.register(
        "vit_tiny_cifar",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 32,
            micro_input_size: 32,
            default_recipe: "deit",
            timm: Some("vit_tiny_patch16_224"),
            ctor: vit_tiny_cifar,
        },
    );
    // The ImageNet form under timm's name (16x16 patches of a 224 image;
    // micro: 64) that a `vit_tiny_cifar` at full resolution is pointed to.
    registry.register(
        "vit_tiny",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "deit",
            timm: Some("vit_tiny_patch16_224"),
            ctor: vit_tiny,
        },
    );
    registry.register(
        "deit_s",
        BackboneEntry {
            family: Family::ModernDnn,
            input_size: 224,
            micro_input_size: 64,
            default_recipe: "deit",
            timm: Some("deit_small_patch16_224"),
            ctor: deit_s,
        },
    );
}

fn vit_tiny_cifar(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => VitConfig {
            image: 32,
            patch: 4,
            dim: 192,
            depth: 12,
            heads: 3,
            mlp_ratio: 4,
            drop_path_rate: 0.0,
        },
        Preset::Micro => VitConfig {
            image: 32,
            patch: 4,
            dim: 64,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
            drop_path_rate: 0.0,
        },
    };
    Model {
        net: Box::new(VisionTransformer::new(p, &config, classes)),
        no_weight_decay: vec!["pos_embed", "cls_token"],
    }
}

/// timm `vit_tiny_patch16_224` (no stochastic depth unless a recipe sets it).
fn vit_tiny(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => VitConfig {
            image: 224,
            patch: 16,
            dim: 192,
            depth: 12,
            heads: 3,
            mlp_ratio: 4,
            drop_path_rate: 0.0,
        },
        Preset::Micro => VitConfig {
            image: 64,
            patch: 16,
            dim: 64,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
            drop_path_rate: 0.0,
        },
    };
    Model {
        net: Box::new(VisionTransformer::new(p, &config, classes)),
        no_weight_decay: vec!["pos_embed", "cls_token"],
    }
}

/// Stochastic depth of DeiT-S's last block (Table A3, DeiT recipe).
const DEIT_DROP_PATH_RATE: f64 = 0.1;

fn deit_s(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    let config = match preset {
        Preset::Full => VitConfig {
            image: 224,
            patch: 16,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4,
            drop_path_rate: DEIT_DROP_PATH_RATE,
        },
        Preset::Micro => VitConfig {
            image: 64,
            patch: 16,
            dim: 64,
            depth: 2,
            heads: 2,
            mlp_ratio: 4,
            drop_path_rate: DEIT_DROP_PATH_RATE,
        },
    };
    Model {
        net: Box::new(VisionTransformer::new(p, &config, classes)),
        no_weight_decay: vec!["pos_embed", "cls_token"],
    }
}

struct VitConfig {
    image: i64,
    patch: i64,
    dim: i64,
    depth: i64,
    heads: i64,
    mlp_ratio: i64,
    /// Stochastic depth of the last block, rising linearly from 0 at the
    /// first (timm's `drop_path_rate`).
    drop_path_rate: f64,
}

#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl Attention {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (batch, tokens, dim) = xs.size3().expect("tokens are [batch, tokens, dim]");
        let qkv = xs
            .apply(&self.qkv)
            .reshape([batch, tokens, 3, self.heads, dim / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)
            .transpose(1, 2)
            .reshape([batch, tokens, dim])
            .apply(&self.proj)
    }
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    drop_path: f64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, heads: i64, hidden: i64, drop_path: f64) -> Self {
        let attn = &p / "attn";
        let mlp = &p / "mlp";
        Block {
            norm1: layer_norm(&p / "norm1", dim, LN_EPS),
            attn: Attention {
                qkv: vit_linear(&attn / "qkv", dim, 3 * dim),
                proj: vit_linear(&attn / "proj", dim, dim),
                heads,
            },
            norm2: layer_norm(&p / "norm2", dim, LN_EPS),
            fc1: vit_linear(&mlp / "fc1", dim, hidden),
            fc2: vit_linear(&mlp / "fc2", hidden, dim),
            drop_path,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let attn = self.attn.forward(&xs.apply(&self.norm1));
        let x = xs + drop_path(attn, self.drop_path, train);
        let mlp = x
            .apply(&self.norm2)
            .apply(&self.fc1)
            .gelu("none")
            .apply(&self.fc2);
        drop_path(mlp, self.drop_path, train) + x
    }
}

#[derive(Debug)]
struct VisionTransformer {
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    head: nn::Linear,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
}

impl VisionTransformer {
    fn new(p: &nn::Path, c: &VitConfig, classes: i64) -> Self {
        let tokens = (c.image / c.patch).pow(2) + 1;
        // The patch projection keeps PyTorch's conv default (timm re-inits only Linear layers).
        let fan_in = (3 * c.patch * c.patch) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let uniform = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let patch_embed = nn::conv2d(
            p / "patch_embed" / "proj",
            3,
            c.dim,
            c.patch,
            nn::ConvConfig {
                stride: c.patch,
                ws_init: uniform,
                bs_init: uniform,
                ..Default::default()
            },
        );
        let normal = |stdev| nn::Init::Randn { mean: 0.0, stdev };
        VisionTransformer {
            patch_embed,
            cls_token: p.var("cls_token", &[1, 1, c.dim], normal(1e-6)),
            pos_embed: p.var("pos_embed", &[1, tokens, c.dim], normal(0.02)),
            blocks: (0..c.depth)
                .map(|i| {
                    // timm: linspace(0, drop_path_rate, depth).
                    let rate = match c.depth {
                        1 => 0.0,
                        _ => drop_path_rate(c.drop_path_rate) * i as f64 / (c.depth - 1) as f64,
                    };
                    Block::new(p / "blocks" / i, c.dim, c.heads, c.dim * c.mlp_ratio, rate)
                })
                .collect(),
            norm: layer_norm(p / "norm", c.dim, LN_EPS),
            head: vit_linear(p / "head", c.dim, classes),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for VisionTransformer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let patches = xs.apply(&self.patch_embed).flatten(2, -1).transpose(1, 2);
        let batch = patches.size()[0];
        let cls = self.cls_token.expand([batch, -1, -1], false);
        let mut x = Tensor::cat(&[cls, patches], 1) + &self.pos_embed;
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        // timm: norm, class-token pool, (no fc_norm), head_drop, head.
        let pooled = x.apply(&self.norm).select(1, 0);
        dropout(pooled, self.head_drop, train).apply(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn deit_s_drop_path_rises_linearly_to_the_recipe_rate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = VitConfig {
            image: 32,
            patch: 16,
            dim: 8,
            depth: 12,
            heads: 2,
            mlp_ratio: 1,
            drop_path_rate: DEIT_DROP_PATH_RATE,
        };
        let net = crate::seeding::draw(|| VisionTransformer::new(&vs.root(), &config, 3));
        let rates: Vec<f64> = net.blocks.iter().map(|b| b.drop_path).collect();
        assert_eq!(rates[0], 0.0);
        assert!((rates[11] - DEIT_DROP_PATH_RATE).abs() < 1e-12);
        assert!((rates[1] - DEIT_DROP_PATH_RATE / 11.0).abs() < 1e-12);
        // Stochastic depth acts in training only.
        let x = crate::seeding::draw(|| Tensor::randn([16, 3, 32, 32], (Kind::Float, Device::Cpu)));
        assert_eq!(net.forward_t(&x, false), net.forward_t(&x, false));
        assert_ne!(net.forward_t(&x, true), net.forward_t(&x, true));
    }
}

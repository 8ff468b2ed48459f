//! Vision Transformer (ViT-Ti layout: width 192, 12 blocks, 3 heads) on 4x4
//! patches of a 32x32 image, with timm's names and initialisation.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{layer_norm, vit_linear};
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
            ctor: vit_tiny_cifar,
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
        },
        Preset::Micro => VitConfig {
            image: 32,
            patch: 4,
            dim: 64,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
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
}

impl Block {
    fn new(p: nn::Path, dim: i64, heads: i64, hidden: i64) -> Self {
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
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let x = xs + self.attn.forward(&xs.apply(&self.norm1));
        let mlp = x
            .apply(&self.norm2)
            .apply(&self.fc1)
            .gelu("none")
            .apply(&self.fc2);
        x + mlp
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
                .map(|i| Block::new(p / "blocks" / i, c.dim, c.heads, c.dim * c.mlp_ratio))
                .collect(),
            norm: layer_norm(p / "norm", c.dim, LN_EPS),
            head: vit_linear(p / "head", c.dim, classes),
        }
    }
}

impl ModuleT for VisionTransformer {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let patches = xs.apply(&self.patch_embed).flatten(2, -1).transpose(1, 2);
        let batch = patches.size()[0];
        let cls = self.cls_token.expand([batch, -1, -1], false);
        let mut x = Tensor::cat(&[cls, patches], 1) + &self.pos_embed;
        for block in &self.blocks {
            x = block.forward(&x);
        }
        x.apply(&self.norm).select(1, 0).apply(&self.head)
    }
}

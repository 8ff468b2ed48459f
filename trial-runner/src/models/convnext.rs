//! ConvNeXt-T and ConvNeXt V2-T as timm's `convnext_tiny` and
//! `convnextv2_tiny` (Table A1: ConvNeXt recipe, 32x32 input): depthwise 7x7
//! convolution, channels-last layer norm and an inverted-bottleneck MLP per
//! block, with LayerScale (V1) or global response normalisation in the MLP
//! and no LayerScale (V2), stochastic depth rising linearly to 0.1 over the
//! blocks, and a pool -> layer norm -> linear head.
//!
//! CIFAR form (App. A.1: the stem's first down-sampling is 1/2): timm's own
//! `patch_size=2` stem, i.e. `timm.create_model("convnext_tiny",
//! patch_size=2)`, so the reference stays a stock timm model. timm then gives
//! stage 0 a stride-2 down-sampling layer too (it keeps the overall stride at
//! 32), so a 32x32 image reaches the four stages at 8, 4, 2 and 1 pixels.
//! Variable names follow timm's state dict (`stem.0`, `stages.S.downsample.1`,
//! `stages.S.blocks.B.mlp.grn`, `head.fc`) so reference weights load by name.

use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

use super::layers::{
    conv2d_normal, drop_path, drop_path_rate, dropout, head_drop_rate, layer_norm, vit_linear,
    LayerNorm2d,
};
use super::{BackboneEntry, BackboneRegistry, Family, Model, Preset};

/// timm's ConvNeXt layer norms use eps 1e-6.
const LN_EPS: f64 = 1e-6;
/// Stochastic depth of the last block (Table A3, ConvNeXt recipe).
const DROP_PATH_RATE: f64 = 0.1;
/// The CIFAR stem's patch side and stride (App. A.1).
const PATCH: i64 = 2;
/// timm's init for convolutions and linear layers: N(0, 0.02), truncated at
/// ±2 (100 standard deviations, which never binds).
const INIT_STD: f64 = 0.02;

pub(super) fn register(registry: &mut BackboneRegistry) {
    for (name, timm, ctor) in [
        (
            "convnext_t",
            "convnext_tiny",
            convnext_t as super::BackboneCtor,
        ),
        ("convnextv2_t", "convnextv2_tiny", convnextv2_t),
    ] {
        registry.register(
            name,
            BackboneEntry {
                family: Family::ModernDnn,
                input_size: 32,
                micro_input_size: 32,
                default_recipe: "convnext",
                timm: Some(timm),
                ctor,
            },
        );
    }
}

/// Which ConvNeXt: V1 scales each residual branch by a learned LayerScale
/// (initialised to 1e-6); V2 drops it and puts GRN after the MLP's GELU.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Version {
    V1,
    V2,
}

/// LayerScale's initial value in V1 (timm's `ls_init_value`).
const LAYER_SCALE_INIT: f64 = 1e-6;

fn convnext_t(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, Version::V1)
}

fn convnextv2_t(p: &nn::Path, classes: i64, preset: Preset) -> Model {
    build(p, classes, preset, Version::V2)
}

fn build(p: &nn::Path, classes: i64, preset: Preset, version: Version) -> Model {
    let (depths, dims) = match preset {
        Preset::Full => ([3, 3, 9, 3], [96, 192, 384, 768]),
        Preset::Micro => ([1, 1, 2, 1], [16, 32, 64, 128]),
    };
    Model {
        net: Box::new(ConvNeXt::new(p, &depths, &dims, version, classes)),
        // timm's ConvNeXt has no `no_weight_decay()`; its 1-d LayerScale and
        // GRN parameters are exempt as all 1-d tensors are.
        no_weight_decay: vec![],
    }
}

/// A `kernel`x`kernel` convolution with stride `kernel` and no padding (the
/// stem and the down-sampling layers), timm's init.
fn patchify(p: nn::Path, inputs: i64, outputs: i64, kernel: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride: kernel,
            ws_init: Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// ConvNeXt V2's global response normalisation on channels-last maps: each
/// channel's spatial L2 norm, relative to the mean over channels, gates the
/// features; weight and bias start at zero, so it starts as the identity.
#[derive(Debug)]
struct GlobalResponseNorm {
    weight: Tensor,
    bias: Tensor,
}

impl GlobalResponseNorm {
    fn new(p: nn::Path, channels: i64) -> Self {
        GlobalResponseNorm {
            weight: p.var("weight", &[channels], Init::Const(0.0)),
            bias: p.var("bias", &[channels], Init::Const(0.0)),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let spatial_norm = xs.norm_scalaropt_dim(2, [1, 2], true);
        let relative = &spatial_norm / (spatial_norm.mean_dim(-1, true, None) + LN_EPS);
        xs + self.bias.addcmul(&self.weight, &(xs * relative))
    }
}

#[derive(Debug)]
struct Block {
    conv_dw: nn::Conv2D,
    norm: nn::LayerNorm,
    fc1: nn::Linear,
    grn: Option<GlobalResponseNorm>,
    fc2: nn::Linear,
    gamma: Option<Tensor>,
    drop_path: f64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, version: Version, drop_path: f64) -> Self {
        let mlp = &p / "mlp";
        let hidden = 4 * dim;
        Block {
            conv_dw: conv2d_normal(&p / "conv_dw", dim, dim, 7, 1, dim, true, INIT_STD),
            norm: layer_norm(&p / "norm", dim, LN_EPS),
            fc1: vit_linear(&mlp / "fc1", dim, hidden),
            grn: (version == Version::V2).then(|| GlobalResponseNorm::new(&mlp / "grn", hidden)),
            fc2: vit_linear(&mlp / "fc2", hidden, dim),
            gamma: (version == Version::V1)
                .then(|| p.var("gamma", &[dim], Init::Const(LAYER_SCALE_INIT))),
            drop_path,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // The MLP runs channels-last, as timm's default (`conv_mlp=False`).
        let hidden = xs
            .apply(&self.conv_dw)
            .permute([0, 2, 3, 1])
            .apply(&self.norm)
            .apply(&self.fc1)
            .gelu("none");
        let hidden = match &self.grn {
            Some(grn) => grn.forward(&hidden),
            None => hidden,
        };
        let out = hidden.apply(&self.fc2);
        let out = match &self.gamma {
            Some(gamma) => out * gamma,
            None => out,
        };
        drop_path(out.permute([0, 3, 1, 2]), self.drop_path, train) + xs
    }
}

#[derive(Debug)]
struct Stage {
    downsample_norm: LayerNorm2d,
    downsample: nn::Conv2D,
    blocks: Vec<Block>,
}

#[derive(Debug)]
struct ConvNeXt {
    stem: nn::Conv2D,
    stem_norm: LayerNorm2d,
    stages: Vec<Stage>,
    head_norm: nn::LayerNorm,
    head: nn::Linear,
    /// Dropout on the pooled features (timm's `drop_rate`; none unless a
    /// recipe sets one).
    head_drop: f64,
}

impl ConvNeXt {
    fn new(
        p: &nn::Path,
        depths: &[i64; 4],
        dims: &[i64; 4],
        version: Version,
        classes: i64,
    ) -> Self {
        let stem = p / "stem";
        let total: i64 = depths.iter().sum();
        // timm: linspace(0, drop_path_rate, blocks) over all blocks.
        let rate = |index: i64| match total {
            1 => 0.0,
            _ => drop_path_rate(DROP_PATH_RATE) * index as f64 / (total - 1) as f64,
        };
        let mut index = 0;
        let mut inputs = dims[0];
        let stages = depths
            .iter()
            .zip(dims)
            .enumerate()
            .map(|(s, (&depth, &dim))| {
                let stage = p / "stages" / s;
                let downsample = &stage / "downsample";
                let built = Stage {
                    downsample_norm: LayerNorm2d::new(&downsample / 0, inputs, LN_EPS),
                    downsample: patchify(&downsample / 1, inputs, dim, 2),
                    blocks: (0..depth)
                        .map(|b| {
                            let block =
                                Block::new(&stage / "blocks" / b, dim, version, rate(index));
                            index += 1;
                            block
                        })
                        .collect(),
                };
                inputs = dim;
                built
            })
            .collect();
        let head = p / "head";
        ConvNeXt {
            stem: patchify(&stem / 0, 3, dims[0], PATCH),
            stem_norm: LayerNorm2d::new(&stem / 1, dims[0], LN_EPS),
            stages,
            head_norm: layer_norm(&head / "norm", dims[3], LN_EPS),
            head: vit_linear(&head / "fc", dims[3], classes),
            head_drop: head_drop_rate(0.0),
        }
    }
}

impl ModuleT for ConvNeXt {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.stem).apply(&self.stem_norm);
        for stage in &self.stages {
            x = x.apply(&stage.downsample_norm).apply(&stage.downsample);
            for block in &stage.blocks {
                x = block.forward_t(&x, train);
            }
        }
        // timm's NormMlpClassifierHead: global average pool, layer norm
        // over channels, dropout, fc.
        let pooled = x
            .mean_dim([2i64, 3].as_slice(), false, None)
            .apply(&self.head_norm);
        dropout(pooled, self.head_drop, train).apply(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn drop_path_rises_linearly_to_the_recipe_rate_over_all_blocks() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::seeding::draw(|| {
            ConvNeXt::new(&vs.root(), &[3, 3, 9, 3], &[8, 8, 8, 8], Version::V1, 10)
        });
        let rates: Vec<f64> = net
            .stages
            .iter()
            .flat_map(|s| s.blocks.iter().map(|b| b.drop_path))
            .collect();
        assert_eq!(rates.len(), 18);
        assert_eq!(rates[0], 0.0);
        assert!((rates[17] - DROP_PATH_RATE).abs() < 1e-12);
        assert!((rates[1] - DROP_PATH_RATE / 17.0).abs() < 1e-12);
    }

    #[test]
    fn global_response_norm_starts_as_the_identity_and_gates_by_relative_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let grn = crate::seeding::draw(|| GlobalResponseNorm::new(vs.root(), 2));
        let x = crate::seeding::draw(|| Tensor::randn([1, 2, 2, 2], (Kind::Float, Device::Cpu)));
        assert_eq!(grn.forward(&x), x);
        // Channel 0 has spatial norm 2, channel 1 norm 0: relative norms 2 and 0.
        let x =
            Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).reshape([1, 2, 2, 2]);
        tch::no_grad(|| {
            let _ = grn.weight.shallow_clone().fill_(1.0);
        });
        let y = grn.forward(&x);
        let want =
            Tensor::from_slice(&[3.0f32, 0.0, 3.0, 0.0, 3.0, 0.0, 3.0, 0.0]).reshape([1, 2, 2, 2]);
        assert!(y.allclose(&want, 1e-5, 1e-5, false), "{y}");
    }
}

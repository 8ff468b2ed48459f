//! Layers with PyTorch's default initialisation (tch's defaults differ).

use std::cell::Cell;
use std::thread::LocalKey;

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// `torch.nn.Linear`: weight and bias uniform in ±1/sqrt(fan_in).
pub fn torch_linear(p: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    let bound = 1.0 / (inputs as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::linear(
        p,
        inputs,
        outputs,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias: true,
        },
    )
}

/// timm's ViT linear init: weight ~ N(0, 0.02) (timm truncates at ±2, i.e.
/// at 100 standard deviations, which never binds), bias zero.
pub fn vit_linear(p: nn::Path, inputs: i64, outputs: i64) -> nn::Linear {
    nn::linear(
        p,
        inputs,
        outputs,
        nn::LinearConfig {
            ws_init: Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    )
}

/// `torch.nn.BatchNorm2d`: weight one, bias zero.
pub fn batch_norm2d(p: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        channels,
        nn::BatchNormConfig {
            ws_init: Init::Const(1.0),
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// `torch.nn.LayerNorm` with the given epsilon.
pub fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// `torch.nn.Conv2d` with its default init (weight and bias uniform in
/// ±1/sqrt(fan_in), fan_in = inputs * kernel²), `padding` on each side.
pub fn torch_conv2d(
    p: nn::Path,
    inputs: i64,
    outputs: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let bound = 1.0 / ((inputs * kernel * kernel) as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride,
            padding,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// `torch.nn.Conv2d` with `padding = kernel / 2` and weights ~ N(0, stdev),
/// bias (if any) zero: the init torchvision (Kaiming normal over fan-out) and
/// timm's EfficientNets (`_init_weight_goog`) spell out, with the fan-out the
/// caller computes (the two differ for grouped convolutions).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_normal(
    p: nn::Path,
    inputs: i64,
    outputs: i64,
    kernel: i64,
    stride: i64,
    groups: i64,
    bias: bool,
    stdev: f64,
) -> nn::Conv2D {
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride,
            padding: kernel / 2,
            groups,
            bias,
            ws_init: Init::Randn { mean: 0.0, stdev },
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// torchvision's `_make_divisible` / timm's `make_divisible`: `v` rounded to
/// the nearest multiple of `divisor` (at least `divisor`), never more than
/// 10% below `v`.
pub fn make_divisible(v: f64, divisor: i64) -> i64 {
    let rounded = ((v + divisor as f64 / 2.0) as i64) / divisor * divisor;
    let rounded = rounded.max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    }
}

/// A bias-free conv with `padding = kernel / 2` and Kaiming-normal weights
/// over fan-out for ReLU, N(0, sqrt(2 / fan_out)): torchvision's ResNet init
/// and timm's ByobNet (RepVGG) init.
pub fn conv_kaiming_fan_out(
    p: nn::Path,
    inputs: i64,
    outputs: i64,
    kernel: i64,
    stride: i64,
) -> nn::Conv2D {
    nn::conv2d(
        p,
        inputs,
        outputs,
        kernel,
        nn::ConvConfig {
            stride,
            padding: kernel / 2,
            bias: false,
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        },
    )
}

thread_local! {
    /// The last block's stochastic-depth rate while a recipe builds a model.
    static DROP_PATH_RATE_OVERRIDE: Cell<Option<f64>> = const { Cell::new(None) };
    /// The dropout rate before the classifier while a recipe builds a model.
    static HEAD_DROP_RATE_OVERRIDE: Cell<Option<f64>> = const { Cell::new(None) };
}

/// Runs `build` with `rate` in `slot`, restoring what was there after.
fn with_override<T>(
    slot: &'static LocalKey<Cell<Option<f64>>>,
    rate: f64,
    build: impl FnOnce() -> T,
) -> T {
    let previous = slot.with(|cell| cell.replace(Some(rate)));
    let built = build();
    slot.with(|cell| cell.set(previous));
    built
}

/// Runs `build` with every stochastic-depth rate of the models it builds
/// set from `rate` (a recipe's `drop_path`, the last block's) in place of
/// the architecture's own; the per-block rates keep their shape (timm's
/// linear rise over the blocks). Backbones without stochastic depth (the
/// classic CNNs) and MLP-Mixer (one rate for every block) ignore it.
pub fn with_drop_path_rate<T>(rate: f64, build: impl FnOnce() -> T) -> T {
    with_override(&DROP_PATH_RATE_OVERRIDE, rate, build)
}

/// The last block's stochastic-depth rate a model builds with: the
/// override of [`with_drop_path_rate`], else the architecture's `default`.
pub fn drop_path_rate(default: f64) -> f64 {
    DROP_PATH_RATE_OVERRIDE.with(Cell::get).unwrap_or(default)
}

/// Runs `build` with the dropout before the classifier of every model it
/// builds at `rate` (a recipe's `dropout`, timm's `drop_rate`): it replaces
/// the architecture's own (both of AlexNet's and VGG's classifier dropouts,
/// as torchvision's `dropout` argument does) and is added on the pooled
/// features of the backbones without one, as timm's heads do.
pub fn with_head_drop_rate<T>(rate: f64, build: impl FnOnce() -> T) -> T {
    with_override(&HEAD_DROP_RATE_OVERRIDE, rate, build)
}

/// The dropout rate before the classifier a model builds with: the
/// override of [`with_head_drop_rate`], else the architecture's `default`
/// (0 where it has none).
pub fn head_drop_rate(default: f64) -> f64 {
    HEAD_DROP_RATE_OVERRIDE.with(Cell::get).unwrap_or(default)
}

/// timm's `DropPath` (stochastic depth): zeroes whole samples of a residual
/// branch with probability `rate` in training, scaling the kept ones by
/// `1 / (1 - rate)`. Works for any rank (NCHW feature maps, NLC tokens).
pub fn drop_path(xs: Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate == 0.0 {
        return xs;
    }
    let keep = 1.0 - rate;
    let mut shape = vec![1; xs.dim()];
    shape[0] = xs.size()[0];
    let mask = crate::seeding::draw(|| Tensor::rand(&shape, (Kind::Float, xs.device())))
        .lt(keep)
        .to_kind(xs.kind());
    // Scales the per-sample mask, not the activations: one full-size pass.
    xs * (mask / keep)
}

/// Dropout with probability `rate` in training, drawn from the trial's
/// stream (see [`crate::seeding`]).
pub fn dropout(xs: Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate == 0.0 {
        return xs;
    }
    crate::seeding::draw(|| xs.dropout(rate, true))
}

/// timm's `LayerNorm2d`: layer norm over the channels of an NCHW map, done as
/// timm does (permute to channels-last, fused `layer_norm`, permute back).
#[derive(Debug)]
pub struct LayerNorm2d(nn::LayerNorm);

impl LayerNorm2d {
    /// Weight one, bias zero, as `torch.nn.LayerNorm`.
    pub fn new(p: nn::Path, channels: i64, eps: f64) -> Self {
        LayerNorm2d(layer_norm(p, channels, eps))
    }
}

impl nn::Module for LayerNorm2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.permute([0, 2, 3, 1])
            .apply(&self.0)
            .permute([0, 3, 1, 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::BackboneRegistry;
    use tch::Device;

    #[test]
    fn a_recipe_rate_replaces_the_architectures_own_while_building() {
        assert_eq!(drop_path_rate(0.1), 0.1);
        assert_eq!(with_drop_path_rate(0.3, || drop_path_rate(0.1)), 0.3);
        assert_eq!(drop_path_rate(0.1), 0.1);
        // vit_tiny_cifar has no stochastic depth of its own: training-mode
        // forwards agree until a recipe gives it some.
        let registry = BackboneRegistry::builtin();
        let x = crate::seeding::draw(|| Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)));
        let plain_vs = nn::VarStore::new(Device::Cpu);
        let plain = registry
            .build("vit_tiny_cifar@micro", &plain_vs.root(), 4, 0)
            .unwrap();
        assert_eq!(plain.net.forward_t(&x, true), plain.net.forward_t(&x, true));
        let vs = nn::VarStore::new(Device::Cpu);
        let dropped = with_drop_path_rate(0.5, || {
            registry.build("vit_tiny_cifar@micro", &vs.root(), 4, 0)
        })
        .unwrap();
        assert_ne!(
            dropped.net.forward_t(&x, true),
            dropped.net.forward_t(&x, true)
        );
        assert_eq!(
            dropped.net.forward_t(&x, false),
            dropped.net.forward_t(&x, false)
        );
    }

    /// Training-mode logits of `backbone` twice (equal unless something
    /// random runs), then eval-mode logits twice, built under `rate`.
    fn forwards_twice(backbone: &str, rate: Option<f64>) -> [(Tensor, Tensor); 2] {
        let registry = BackboneRegistry::builtin();
        let (entry, preset) = registry.lookup(backbone).unwrap();
        let side = entry.input_size(preset);
        let x =
            crate::seeding::draw(|| Tensor::randn([4, 3, side, side], (Kind::Float, Device::Cpu)));
        let vs = nn::VarStore::new(Device::Cpu);
        let build = || registry.build(backbone, &vs.root(), 5, 0).unwrap();
        let model = match rate {
            Some(rate) => with_head_drop_rate(rate, build),
            None => build(),
        };
        let twice = |train| {
            (
                model.net.forward_t(&x, train),
                model.net.forward_t(&x, train),
            )
        };
        [twice(true), twice(false)]
    }

    #[test]
    fn a_recipe_head_dropout_is_random_in_training_and_off_in_evaluation() {
        assert_eq!(head_drop_rate(0.2), 0.2);
        assert_eq!(with_head_drop_rate(0.5, || head_drop_rate(0.2)), 0.5);
        assert_eq!(with_head_drop_rate(0.5, || head_drop_rate(0.0)), 0.5);
        assert_eq!(head_drop_rate(0.0), 0.0);
        // MobileNetV2 has its own dropout (0.2), the other two none.
        for backbone in [
            "mobilenet_v2@micro",
            "vit_tiny_cifar@micro",
            "resnet18_cifar@micro",
        ] {
            let [(train, train_again), (eval, eval_again)] = forwards_twice(backbone, Some(0.5));
            assert_ne!(train, train_again, "{backbone}");
            assert_eq!(eval, eval_again, "{backbone}");
        }
        // Without a rate, only the architecture's own dropout runs.
        for backbone in ["vit_tiny_cifar@micro", "resnet18_cifar@micro"] {
            let [(train, train_again), _] = forwards_twice(backbone, None);
            assert_eq!(train, train_again, "{backbone}");
        }
        let [(train, train_again), _] = forwards_twice("mobilenet_v2@micro", None);
        assert_ne!(train, train_again);
        // A rate of 0 switches MobileNetV2's own dropout off.
        let [(train, train_again), _] = forwards_twice("mobilenet_v2@micro", Some(0.0));
        assert_eq!(train, train_again);
    }
}

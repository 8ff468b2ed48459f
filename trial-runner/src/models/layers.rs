//! Layers with PyTorch's default initialisation (tch's defaults differ).

use tch::nn::{self, Init};

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

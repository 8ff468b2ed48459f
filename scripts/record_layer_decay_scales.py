"""Record timm's layer-wise lr decay for bocb's layer-decay test.

For each backbone below, builds timm's model (random weights,
`pretrained=False`) and asks timm's `param_groups_layer_decay` (which
numbers layers with the model's `group_matcher(coarse=False)`) for its param
groups at layer_decay 0.75. Writes, per bocb backbone name, every parameter's
lr scale and whether it gets weight decay, to
trial-runner/tests/layer_decay_scales.json; trial-runner/tests/layer_decay.rs
compares bocb's layering with it.

    .venv/bin/python scripts/record_layer_decay_scales.py
"""

import json
from pathlib import Path

import timm
from timm.optim._param_groups import param_groups_layer_decay

LAYER_DECAY = 0.75
CLASSES = 10
OUT = Path(__file__).resolve().parent.parent / "trial-runner" / "tests" / "layer_decay_scales.json"

# bocb backbone -> timm model and its arguments, one backbone of each layer
# rule (bocb names its parameters as timm does; its ConvNeXt-T is the CIFAR
# form, timm's patch_size=2, whose stage 0 gains a down-sampling layer).
BACKBONES = {
    "vit_tiny": ("vit_tiny_patch16_224", {}),
    "deit_s": ("deit_small_patch16_224", {}),
    "mlp_mixer_s": ("mixer_s16_224", {}),
    "resnet18": ("resnet18", {}),
    "convnext_t": ("convnext_tiny", {"patch_size": 2}),
    "swin_t": ("swin_tiny_patch4_window7_224", {}),
    "efficientnet_b0": ("efficientnet_b0", {}),
    "repvgg_a1": ("repvgg_a1", {}),
    "densenet121": ("densenet121", {}),
}


def scales(timm_name, kwargs):
    model = timm.create_model(timm_name, pretrained=False, num_classes=CLASSES, **kwargs)
    groups = param_groups_layer_decay(
        model,
        weight_decay=0.05,
        no_weight_decay_list=model.no_weight_decay() if hasattr(model, "no_weight_decay") else (),
        layer_decay=LAYER_DECAY,
    )
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in groups:
        for p in group["params"]:
            out[names[id(p)]] = {"lr_scale": group["lr_scale"], "decay": group["weight_decay"] > 0}
    return out


def main():
    record = {
        "layer_decay": LAYER_DECAY,
        "classes": CLASSES,
        "reference": f"timm {timm.__version__} param_groups_layer_decay",
        "backbones": {bocb: scales(*timm_model) for bocb, timm_model in BACKBONES.items()},
    }
    OUT.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

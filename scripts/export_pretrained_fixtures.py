"""Full-size reference models with random weights (`pretrained=False` in
effect), saved as PyTorch checkpoints, for trial-runner/tests/pretrained.rs:
bocb loads them through scripts/pth_to_safetensors.py as a user's checkpoint
and must give the reference's eval logits.

    .venv/bin/python scripts/export_pretrained_fixtures.py OUT_DIR NAME...

Writes OUT_DIR/NAME.pth (the state dict) and OUT_DIR/NAME.expect.safetensors
(`input`: one image at the model's input size, `logits`) for each NAME, with
100 classes and what initialisation leaves constant drawn again (`randomise`):
- a backbone of reference_backbones.FULL, as `build` makes it;
- resnet18, resnet50, densenet121, vit_tiny: the ImageNet forms, which FULL
  lacks, as timm makes them;
- vit_tiny_cifar_from48: vit_tiny_cifar's checkpoint as made for 48x48
  images; its expected logits are a 32x32 ViT's after timm's
  resample_abs_pos_embed, as timm's checkpoint filter adapts a checkpoint to
  another input size.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import reference_backbones

CLASSES = 100

# bocb name -> timm name of the ImageNet forms.
IMAGENET = {"resnet18": "resnet18", "resnet50": "resnet50", "densenet121": "densenet121",
            "vit_tiny": "vit_tiny_patch16_224"}
FROM48 = "vit_tiny_cifar_from48"


def reference(name):
    """(model, input side) for a bocb name."""
    if name in IMAGENET:
        return reference_backbones.timm_model(IMAGENET[name])(CLASSES), 224
    return reference_backbones.build(name, CLASSES)


def randomise(model, gen):
    """Draws again what initialisation leaves constant, so that every part of
    the network shows in the logits: batch-norm statistics, parameters at one
    nonzero value (norm weights, LayerScale's 1e-6) in [0.5, 1.5), and those
    at zero (biases, GRN, the last norm of timm's ResNet blocks, Mixer's head)
    small around zero, which keeps the deep nets' logits O(1)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    for param in model.parameters():
        if (param == param.flatten()[0]).all():
            if param.any():
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)


@torch.no_grad()
def export(out, name):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model, side = reference("vit_tiny_cifar" if name == FROM48 else name)
    randomise(model, gen)
    state = model.state_dict()
    if name == FROM48:
        # A 48x48 ViT differs only in its position embedding: 12x12 patches
        # plus the class token, drawn as timm initialises it.
        state["pos_embed"] = torch.randn(1, 1 + 12 * 12, 192, generator=gen) * 0.02
        model.pos_embed.copy_(resample_abs_pos_embed(state["pos_embed"], [8, 8], num_prefix_tokens=1))
    torch.save(state, out / f"{name}.pth")
    model.eval()
    x = torch.randn(1, 3, side, side, generator=gen)
    save_file({"input": x, "logits": model(x)}, out / f"{name}.expect.safetensors")


def main(out, names):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        export(out, name)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: export_pretrained_fixtures.py OUT_DIR NAME...")
    main(sys.argv[1], sys.argv[2:])

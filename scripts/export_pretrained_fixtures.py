"""Full-size reference models with random weights (timm, `pretrained=False`
in effect), saved as PyTorch checkpoints, for trial-runner/tests/pretrained.rs:
bocb loads them through scripts/pth_to_safetensors.py as a user's checkpoint
and must give the reference's eval logits.

    .venv/bin/python scripts/export_pretrained_fixtures.py OUT_DIR

Writes OUT_DIR/NAME.pth (the state dict) and OUT_DIR/NAME.expect.safetensors
(`input`, `logits`) for:
- resnet18_cifar: timm's ResNet-18 with the CIFAR stem, 100 classes;
- vit_tiny_cifar: timm's ViT-Ti on 4x4 patches of 32x32 images, 100 classes;
- vit_tiny_cifar_from48: the same ViT made for 48x48 images; its expected
  logits are a 32x32 ViT's after timm's resample_abs_pos_embed, as timm's
  checkpoint filter adapts a checkpoint to another input size.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

CLASSES = 100


def resnet18_cifar():
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=CLASSES)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def vit(img_size):
    return VisionTransformer(img_size=img_size, patch_size=4, num_classes=CLASSES, embed_dim=192, depth=12,
                             num_heads=3)


@torch.no_grad()
def write(out, name, model, reference=None):
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    torch.save(model.state_dict(), out / f"{name}.pth")
    reference = reference or model
    reference.eval()
    x = torch.randn(1, 3, 32, 32, generator=gen)
    save_file({"input": x, "logits": reference(x)}, out / f"{name}.expect.safetensors")


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    write(out, "resnet18_cifar", resnet18_cifar())
    write(out, "vit_tiny_cifar", vit(32))
    big = vit(48)
    small = vit(32)
    state = big.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [8, 8], num_prefix_tokens=1)
    small.load_state_dict(state)
    write(out, "vit_tiny_cifar_from48", big, reference=small)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: export_pretrained_fixtures.py OUT_DIR")
    main(sys.argv[1])

"""The reference PyTorch definition (timm, torchvision, or the architecture's
own repository) of every backbone in bocb's registry, at full size.

`bocb bench train` trains these next to bocb's own models, and the
full-size parameter counts in trial-runner/src/models/mod.rs come from them.
The `@micro` presets are built by `export_backbone_fixtures.FIXTURES`.

    .venv/bin/python -c "import reference_backbones as r; print(r.build('resnet50_cifar', 100))"
"""

import torch
from torch import nn


def cifar_resnet(name, classes):
    """timm's ResNet in the CIFAR form of App. A.1: 3x3 stride-1 stem, no max-pool."""
    import timm

    model = timm.create_model(name, num_classes=classes)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def densenet121_cifar(classes):
    from torchvision.models import densenet121

    model = densenet121(num_classes=classes)
    model.features.conv0 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.features.pool0 = nn.Identity()
    return model


def vit_tiny_cifar(classes):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=4, num_classes=classes, embed_dim=192, depth=12, num_heads=3)


def timm_model(name):
    import timm

    return lambda classes: timm.create_model(name, num_classes=classes)


def torchvision_model(name):
    import torchvision

    return lambda classes: getattr(torchvision.models, name)(num_classes=classes)


# bocb registry name -> (function of the number of classes returning the
# reference model, input side).
FULL = {
    "alexnet": (torchvision_model("alexnet"), 224),
    "densenet121_cifar": (densenet121_cifar, 32),
    "efficientnet_b0": (timm_model("efficientnet_b0"), 224),
    "mobilenet_v2": (torchvision_model("mobilenet_v2"), 224),
    "repvgg_a1": (timm_model("repvgg_a1"), 224),
    "resnet18_cifar": (lambda classes: cifar_resnet("resnet18", classes), 32),
    "resnet50_cifar": (lambda classes: cifar_resnet("resnet50", classes), 32),
    "vgg13_bn": (torchvision_model("vgg13_bn"), 224),
    "vit_tiny_cifar": (vit_tiny_cifar, 32),
}


def build(name, classes):
    """(reference model, input side) for a registry name, full size."""
    if name not in FULL:
        raise SystemExit(f"no reference definition for {name!r}; known: {', '.join(sorted(FULL))}")
    ctor, side = FULL[name]
    return ctor(classes), side


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or sorted(FULL):
        model, side = build(name, 100)
        print(f"{name}\t{parameter_count(model)}\t{side}")
        del model
        torch.cuda.empty_cache()

"""The reference PyTorch definition (timm, torchvision, or the architecture's
own repository) of every backbone in bocb's registry, at full size.

`bocb bench train` trains these next to bocb's own models, and the
full-size parameter counts in trial-runner/src/models/mod.rs come from them.
The `@micro` presets are built by `export_backbone_fixtures.FIXTURES`.

    .venv/bin/python -c "import reference_backbones as r; print(r.build('resnet50_cifar', 100))"

Architectures timm lacks are imported from clones of their own repositories
(`REPOSITORIES`), found through environment variables: BOCB_REF_MOGANET
(default /work/refs/MogaNet), BOCB_REF_UNIREPLKNET (default
/work/refs/UniRepLKNet), BOCB_REF_TRANSNEXT (default /work/refs/TransNeXt).
"""

import torch
from torch import nn

# The architectures timm lacks: their repository's environment variable and URL.
REPOSITORIES = {
    "MogaNet": ("BOCB_REF_MOGANET", "https://github.com/Westlake-AI/MogaNet"),
    "UniRepLKNet": ("BOCB_REF_UNIREPLKNET", "https://github.com/AILab-CVC/UniRepLKNet"),
    "TransNeXt": ("BOCB_REF_TRANSNEXT", "https://github.com/DaiShiResearch/TransNeXt"),
}


def repository_file(repository, relative):
    """A file of a clone of `repository` (a key of `REPOSITORIES`): under its
    environment variable's directory, default /work/refs/<repository>. A
    missing clone is an error that says how to get one."""
    import os
    from pathlib import Path

    variable, url = REPOSITORIES[repository]
    root = Path(os.environ.get(variable, f"/work/refs/{repository}"))
    path = root / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the {repository} reference model is read from a clone of its "
                                f"repository; run `git clone {url} {root}` or set {variable} to one")
    return path


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


def cifar_convnext(name, classes):
    """timm's ConvNeXt in the CIFAR form of App. A.1: a stride-2 patch stem."""
    import timm

    return timm.create_model(name, num_classes=classes, patch_size=2)


def timm_model(name):
    import timm

    return lambda classes: timm.create_model(name, num_classes=classes)


def torchvision_model(name):
    import torchvision

    return lambda classes: getattr(torchvision.models, name)(num_classes=classes)


def moganet_repository():
    """The model file of MogaNet's own repository, models/moganet.py under
    $BOCB_REF_MOGANET (default /work/refs/MogaNet)."""
    import contextlib
    import importlib.util
    import io
    import sys
    import warnings

    name = "bocb_reference_moganet"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, repository_file("MogaNet", "models/moganet.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # timm's register_model looks the module up by name
        # Silence its notices about optional mmcv/mmdet and timm's warnings
        # about the deprecated import paths it uses.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            spec.loader.exec_module(module)
    return sys.modules[name]


def moganet_cifar(classes, arch="small"):
    """The repository's MogaNet with the CIFAR stem of the paper's code base
    (OpenMixup's `MogaNet_CIFAR`): the stacked 3x3 stem convs at stride 1."""
    moganet = moganet_repository()
    model = moganet.MogaNet(arch=arch, num_classes=classes, drop_path_rate=0.1)
    model.patch_embed1 = moganet.StackConvPatchEmbed(3, model.embed_dims[0], kernel_size=3, stride=1)
    model.patch_embed1.apply(model._init_weights)
    return model


def metaformer_s12(variant, classes, depths=(2, 2, 6, 2), dims=(64, 128, 320, 512), drop_path_rate=0.1,
                   **mixer_args):
    """timm's `MetaFormer` at S12 size with one of the MetaFormer-baselines
    token mixers. timm registers only `poolformerv2_s12` (which this equals);
    the others take the settings of timm's / sail-sg's models with the same
    mixer: identity as sail-sg's `identityformer_s12` (GroupNorm1 without
    bias, linear head), SepConv as `convformer_s18`, SepConv then attention as
    `caformer_s18` (LayerNorm2d / LayerNorm without bias, MLP head), and
    AttentionFormer with CAFormer's attention stages in all four. Drop path
    0.1 as sail-sg trains its S12 models."""
    from timm.models.metaformer import (Attention, GroupNorm1NoBias, LayerNorm2dNoBias, LayerNormNoBias,
                                        MetaFormer, Pooling, SepConv)

    token_mixers, norm_layers, use_mlp_head = {
        "identityformer": (nn.Identity, GroupNorm1NoBias, False),
        "poolformerv2": (Pooling, GroupNorm1NoBias, False),
        "convformer": (SepConv, LayerNorm2dNoBias, True),
        "attenformer": (Attention, LayerNormNoBias, True),
        "caformer": ([SepConv, SepConv, Attention, Attention], [LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2, True),
    }[variant]
    return MetaFormer(depths=depths, dims=dims, token_mixers=token_mixers, norm_layers=norm_layers,
                      use_mlp_head=use_mlp_head, num_classes=classes, drop_path_rate=drop_path_rate, **mixer_args)


def swin_t(classes, **kwargs):
    """timm's `swin_tiny_patch4_window7_224` (drop path 0.1, timm's default
    and the ConvNeXt recipe's); keyword arguments override its config."""
    from timm.models.swin_transformer import SwinTransformer

    config = dict(img_size=224, patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2),
                  num_heads=(3, 6, 12, 24), drop_path_rate=0.1)
    return SwinTransformer(num_classes=classes, **{**config, **kwargs})


def unireplknet_repository():
    """The model file of UniRepLKNet's own repository, unireplknet.py under
    $BOCB_REF_UNIREPLKNET (default /work/refs/UniRepLKNet). Its optional
    imports (huggingface_hub, mmseg/mmcv) are guarded there, so it loads
    without them."""
    import importlib.util
    import sys
    import warnings

    name = "bocb_reference_unireplknet"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, repository_file("UniRepLKNet", "unireplknet.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # timm's register_model looks the module up by name
        with warnings.catch_warnings():  # timm's, about the deprecated import paths it uses
            warnings.simplefilter("ignore", FutureWarning)
            spec.loader.exec_module(module)
    return sys.modules[name]


def unireplknet(classes, depths=(3, 3, 18, 3), dims=(80, 160, 320, 640), kernel_sizes=None):
    """The repository's UniRepLKNet (default: `unireplknet_t`) in training
    form, with stochastic depth 0.1 and the plain PyTorch convolution (no
    iGEMM kernel)."""
    import contextlib
    import io

    urlk = unireplknet_repository()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its kernel sizes and drop-path rates
        return urlk.UniRepLKNet(num_classes=classes, depths=depths, dims=dims, kernel_sizes=kernel_sizes,
                                drop_path_rate=0.1, attempt_use_lk_impl=False)


def transnext_repository():
    """The model file of TransNeXt's own repository,
    classification/transnext.py under $BOCB_REF_TRANSNEXT (default
    /work/refs/TransNeXt), with its pure-PyTorch aggregated attention
    (attention_native.py, which transnext.py imports by that name whenever
    the `swattention` CUDA extension is not installed). Needs only timm."""
    import contextlib
    import importlib.util
    import io
    import sys

    name = "bocb_reference_transnext"
    if name not in sys.modules:
        for module_name, file in (("attention_native", "attention_native.py"), (name, "transnext.py")):
            spec = importlib.util.spec_from_file_location(module_name,
                                                          repository_file("TransNeXt", f"classification/{file}"))
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # transnext.py imports attention_native by name
            with contextlib.redirect_stdout(io.StringIO()):  # its notice about the CUDA extension
                spec.loader.exec_module(module)
    return sys.modules[name]


def transnext_t(classes):
    """The repository's `transnext_tiny` with the stochastic depth of its
    configs/transnext_tiny.py (0.25)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid's indexing notice
        return transnext_repository().transnext_tiny(num_classes=classes, drop_path_rate=0.25)


# bocb registry name -> (function of the number of classes returning the
# reference model, input side).
FULL = {
    "alexnet": (torchvision_model("alexnet"), 224),
    "attenformer_s12": (lambda classes: metaformer_s12("attenformer", classes), 224),
    "caformer_s12": (lambda classes: metaformer_s12("caformer", classes), 224),
    "convformer_s12": (lambda classes: metaformer_s12("convformer", classes), 224),
    "convnext_t": (lambda classes: cifar_convnext("convnext_tiny", classes), 32),
    "convnextv2_t": (lambda classes: cifar_convnext("convnextv2_tiny", classes), 32),
    "deit_s": (timm_model("deit_small_patch16_224"), 224),
    "densenet121_cifar": (densenet121_cifar, 32),
    "efficientnet_b0": (timm_model("efficientnet_b0"), 224),
    "identityformer_s12": (lambda classes: metaformer_s12("identityformer", classes), 224),
    "mlp_mixer_s": (timm_model("mixer_s16_224"), 224),
    "mobilenet_v2": (torchvision_model("mobilenet_v2"), 224),
    "moganet_s": (moganet_cifar, 32),
    "poolformerv2_s12": (lambda classes: metaformer_s12("poolformerv2", classes), 224),
    "repvgg_a1": (timm_model("repvgg_a1"), 224),
    "resnet18_cifar": (lambda classes: cifar_resnet("resnet18", classes), 32),
    "resnet50_cifar": (lambda classes: cifar_resnet("resnet50", classes), 32),
    "unireplknet_t": (unireplknet, 224),
    "swin_t": (swin_t, 224),
    "transnext_t": (transnext_t, 224),
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

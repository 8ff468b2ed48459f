"""Export reference weights, an input batch and the reference's logits for
bocb's backbone equivalence test (trial-runner/tests/backbone_equivalence.rs).

Each fixture is a small configuration of the reference implementation (timm
or torchvision) that bocb's registry builds under the same name, so the test
loads the reference's own weights into bocb's model and compares logits in
eval mode (to 1e-4). Batch-norm running statistics are randomised first, so
eval-mode normalisation is really exercised.

    # torch pinned: the resolver would otherwise upgrade it past what tch links.
    .venv/bin/pip install torch==2.11.0 torchvision==0.26.0 timm==1.0.31
    .venv/bin/python scripts/export_backbone_fixtures.py             # all
    .venv/bin/python scripts/export_backbone_fixtures.py vit_tiny_cifar@micro

Writes trial-runner/tests/backbone_fixtures/NAME.safetensors ('@' spelled
'+'), holding the model's state dict (without num_batches_tracked), plus
`__input__` and `__logits__`.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "trial-runner" / "tests" / "backbone_fixtures"
CLASSES = 10


def cifar_stem(model, width):
    """The CIFAR adaptation of App. A.1: a 3x3 stride-1 stem and no max-pool.
    timm's plain stem is always 64 wide, so a narrower network also gets a
    first block that takes `width` channels."""
    from timm.models.resnet import BasicBlock, Bottleneck

    model.conv1 = torch.nn.Conv2d(3, width, 3, 1, 1, bias=False)
    model.bn1 = torch.nn.BatchNorm2d(width)
    model.maxpool = torch.nn.Identity()
    first = model.layer1[0]
    if first.conv1.in_channels != width:
        if isinstance(first, Bottleneck):
            out = first.conv3.out_channels
            shortcut = torch.nn.Sequential(torch.nn.Conv2d(width, out, 1, bias=False), torch.nn.BatchNorm2d(out))
            model.layer1[0] = Bottleneck(width, first.conv1.out_channels, downsample=shortcut)
        else:
            model.layer1[0] = BasicBlock(width, first.conv1.out_channels)
    return model


def imagenet_stem(model, width):
    """timm's ImageNet stem (7x7 stride 2, max-pool) at `width` channels:
    the micro presets' stem is narrower than timm's fixed 64."""
    model = cifar_stem(model, width)
    model.conv1 = torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
    model.maxpool = torch.nn.MaxPool2d(3, 2, 1)
    return model


def resnet18_micro():
    from timm.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES, channels=(16, 32, 64, 128))
    return imagenet_stem(model, 16), 64


def resnet50_micro():
    from timm.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=CLASSES, channels=(16, 32, 64, 96))
    return imagenet_stem(model, 16), 64


def resnet18_cifar_micro():
    from timm.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES, channels=(16, 32, 64, 128))
    return cifar_stem(model, 16), 32


def vit_tiny_cifar_micro():
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=4, num_classes=CLASSES, embed_dim=64, depth=2,
                              num_heads=2, mlp_ratio=2)
    return model, 32


def repvgg_a1_micro():
    from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg

    cfg = ByoModelCfg(blocks=_rep_vgg_bcfg(d=(1, 2, 2, 1), wf=(0.25, 0.25, 0.25, 0.5)), stem_type='rep',
                      stem_chs=16)
    return ByobNet(cfg, num_classes=CLASSES), 64


def alexnet_micro():
    """torchvision's AlexNet with every layer narrowed, at 64x64 (the
    smallest side its strides allow is 63)."""
    from torch import nn
    from torchvision.models import AlexNet

    model = AlexNet(num_classes=CLASSES)
    for i, (cin, cout) in zip((0, 3, 6, 8, 10), ((3, 16), (16, 32), (32, 64), (64, 48), (48, 48))):
        old = model.features[i]
        model.features[i] = nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding)
    for i, (fin, fout) in zip((1, 4, 6), ((48 * 6 * 6, 64), (64, 64), (64, CLASSES))):
        model.classifier[i] = nn.Linear(fin, fout)
    return model, 64


def vgg13_bn_micro():
    """torchvision's VGG with batch norm, one narrow convolution per stage
    and a narrow classifier, at 64x64. The new linear layers keep PyTorch's
    default init rather than VGG's N(0, 0.01), so the logits are large
    enough for the 1e-4 tolerance to mean something."""
    from torch import nn
    from torchvision.models.vgg import VGG, make_layers

    model = VGG(make_layers([8, "M", 16, "M", 32, "M", 64, "M", 64, "M"], batch_norm=True), num_classes=CLASSES)
    for i, (fin, fout) in zip((0, 3, 6), ((64 * 7 * 7, 64), (64, 64), (64, CLASSES))):
        model.classifier[i] = nn.Linear(fin, fout)
    return model, 64


def densenet121_cifar_micro():
    """torchvision's DenseNet (growth 8, blocks (2, 2, 2, 2), 16-wide stem)
    in its CIFAR form: 3x3 stride-1 stem, no max-pool."""
    from torch import nn
    from torchvision.models import DenseNet

    model = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=4, num_classes=CLASSES)
    model.features.conv0 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    model.features.pool0 = nn.Identity()
    return model, 32


def densenet121_micro():
    """torchvision's DenseNet (timm's `densenet121` is the same network) at
    the micro widths, with its ImageNet stem (7x7 stride 2, max-pool), at 64."""
    from torchvision.models import DenseNet

    model = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=4, num_classes=CLASSES)
    return model, 64


def vit_tiny_micro():
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=64, patch_size=16, num_classes=CLASSES, embed_dim=64, depth=2,
                              num_heads=2, mlp_ratio=2)
    return model, 64


def resnet50_cifar_micro():
    from timm.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=CLASSES, channels=(16, 32, 64, 96))
    return cifar_stem(model, 16), 32


def mobilenet_v2_micro():
    from torchvision.models import MobileNetV2

    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 1, 2], [6, 96, 1, 1]]
    return MobileNetV2(num_classes=CLASSES, width_mult=0.5, inverted_residual_setting=setting), 64


def efficientnet_b0_micro():
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    arch = [["ds_r1_k3_s1_e1_c8_se0.25"], ["ir_r2_k3_s2_e6_c16_se0.25"], ["ir_r2_k5_s2_e6_c24_se0.25"],
            ["ir_r1_k3_s2_e6_c32_se0.25"], ["ir_r1_k5_s2_e6_c48_se0.25"]]
    model = EfficientNet(decode_arch_def(arch), num_classes=CLASSES, num_features=256, stem_size=16,
                         act_layer=torch.nn.SiLU, drop_rate=0.2, drop_path_rate=0.2)
    return model, 64


def convnext_micro(use_grn):
    """timm's ConvNeXt (V2 with `use_grn`, no LayerScale) with one or two
    narrow blocks per stage and the CIFAR stride-2 patch stem. LayerScale and
    GRN start at values that hide their branch (1e-6, zero), so they are
    randomised to make the blocks count in the logits."""
    from timm.models.convnext import ConvNeXt

    extra = dict(use_grn=True, ls_init_value=None) if use_grn else {}
    model = ConvNeXt(num_classes=CLASSES, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), patch_size=2,
                     drop_path_rate=0.1, **extra)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma") or ".grn." in name:
                param.copy_(torch.randn(param.shape) * 0.5)
    return model, 32


def moganet_s_micro():
    """The repository's MogaNet (widths 16-64, depths (1, 1, 2, 1)) with the
    CIFAR stem, its LayerScale and decomposition scales drawn in [0, 0.2)
    rather than 1e-5 so that every block shows in the logits."""
    from reference_backbones import moganet_cifar

    arch = {"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 2, 1], "ffn_ratios": [8, 8, 4, 4]}
    model = moganet_cifar(CLASSES, arch=arch)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("layer_scale_1", "layer_scale_2", "sigma.scale")):
                param.copy_(torch.rand(param.shape) * 0.2)
    return model, 32


def deit_s_micro():
    """DeiT-S's layout (16x16 patches, class token, MLP ratio 4), narrower
    and shallower, at 64x64."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=64, patch_size=16, num_classes=CLASSES, embed_dim=64, depth=2,
                              num_heads=2, mlp_ratio=4, drop_path_rate=0.1)
    return model, 64


def mlp_mixer_s_micro():
    """Mixer-S/16's layout (16x16 patches, MLP ratios 0.5 and 4), narrower
    and shallower, at 64x64. timm zeroes the head, so it is randomised to
    give logits to compare."""
    from timm.models.mlp_mixer import MlpMixer

    model = MlpMixer(num_classes=CLASSES, img_size=64, patch_size=16, num_blocks=2, embed_dim=64,
                     drop_path_rate=0.1)
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
        model.head.bias.normal_(std=0.1)
    return model, 64


def metaformer_micro(variant):
    """The MetaFormer S12 reference of reference_backbones.py with widths
    (16, 32, 48, 64), depths (1, 1, 2, 1) and attention heads 16 wide, at
    64x64. Its 1-d parameters (norm weights and biases, ResScale, StarReLU's
    scale and bias) start at constants, so they are randomised to make
    loading each one count."""
    from reference_backbones import metaformer_s12

    narrow_heads = dict(head_dim=16) if variant in ("attenformer", "caformer") else {}
    model = metaformer_s12(variant, CLASSES, depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), **narrow_heads)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.copy_(torch.rand(param.shape) + 0.5)
    return model, 64


def swin_t_micro():
    """Swin-T's blocks at width 16, depths (2, 2, 2, 1), 4x4 windows on a 64x64
    image: shifted windows in stages 1-2, a window clamped to the 2x2 map in
    stage 4. The bias tables and layer norms are randomised so that a wrong
    relative position index or a misplaced norm shows in the logits, and the
    classifier is scaled up so the logits are O(1)."""
    from reference_backbones import swin_t

    model = swin_t(CLASSES, img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                param.normal_(std=1.0)
            elif param.dim() == 1 and "norm" in name:
                param.copy_(torch.rand(param.shape) + 0.5 if name.endswith("weight") else torch.randn(param.shape) * 0.1)
        model.head.fc.weight.normal_(std=0.5)
    return model, 64


def unireplknet_t_micro():
    """The repository's UniRepLKNet (widths 16-128, depths (1, 1, 2, 1),
    13x13 dilated re-parameterisable kernels but one 3x3 in the first and
    third stages) in training form, at 64x64. GRN and LayerScale start at
    values that hide their branch (zero, 1e-6), so they are randomised."""
    from reference_backbones import unireplknet

    model = unireplknet(CLASSES, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128),
                        kernel_sizes=((3,), (13,), (13, 3), (13,)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("act.1.gamma", "act.1.beta")):
                param.copy_(torch.randn(param.shape) * 0.5)
            elif name.endswith(".gamma"):
                param.copy_(torch.rand(param.shape) + 0.5)
    return model, 64


def transnext_t_micro():
    """TransNeXt-T's layout (mlp ratios 8, 8, 4, 4; sr ratios 8, 4, 2, 1; 3x3
    neighbourhoods) at widths (16, 32, 48, 64), depths (1, 1, 2, 1) and heads
    16 wide, built for 64x64 inputs (the position tables depend on it), so
    stages 1-3 pool to 2x2. Parameters that start at constants or tiny
    values (norms, temperatures, query embeddings, the local biases) are
    randomised so that loading each one counts, and the classifier is scaled
    up so the logits are O(1)."""
    import warnings
    from functools import partial

    from reference_backbones import transnext_repository

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid's indexing notice
        model = transnext_repository().TransNeXt(
            img_size=64, window_size=[3, 3, 3, None], patch_size=4, embed_dims=[16, 32, 48, 64],
            num_heads=[1, 2, 3, 4], mlp_ratios=[8, 8, 4, 4], qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), depths=[1, 1, 2, 1], sr_ratios=[8, 4, 2, 1],
            num_classes=CLASSES, drop_path_rate=0.25)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("temperature", "query_embedding", "relative_pos_bias_local", "learnable_bias"):
                param.normal_(std=0.5)
            elif param.dim() == 1 and "norm" in name:
                param.copy_(torch.rand(param.shape) + 0.5 if leaf == "weight" else torch.randn(param.shape) * 0.1)
        model.head.weight.normal_(std=0.5)
    return model, 64


# bocb registry name -> function returning (reference model, input side).
FIXTURES = {
    "alexnet@micro": alexnet_micro,
    "attenformer_s12@micro": lambda: metaformer_micro("attenformer"),
    "caformer_s12@micro": lambda: metaformer_micro("caformer"),
    "convformer_s12@micro": lambda: metaformer_micro("convformer"),
    "convnext_t@micro": lambda: convnext_micro(use_grn=False),
    "convnextv2_t@micro": lambda: convnext_micro(use_grn=True),
    "deit_s@micro": deit_s_micro,
    "densenet121@micro": densenet121_micro,
    "densenet121_cifar@micro": densenet121_cifar_micro,
    "efficientnet_b0@micro": efficientnet_b0_micro,
    "identityformer_s12@micro": lambda: metaformer_micro("identityformer"),
    "mlp_mixer_s@micro": mlp_mixer_s_micro,
    "mobilenet_v2@micro": mobilenet_v2_micro,
    "moganet_s@micro": moganet_s_micro,
    "poolformerv2_s12@micro": lambda: metaformer_micro("poolformerv2"),
    "repvgg_a1@micro": repvgg_a1_micro,
    "resnet18@micro": resnet18_micro,
    "resnet50@micro": resnet50_micro,
    "resnet18_cifar@micro": resnet18_cifar_micro,
    "resnet50_cifar@micro": resnet50_cifar_micro,
    "unireplknet_t@micro": unireplknet_t_micro,
    "swin_t@micro": swin_t_micro,
    "transnext_t@micro": transnext_t_micro,
    "vgg13_bn@micro": vgg13_bn_micro,
    "vit_tiny@micro": vit_tiny_micro,
    "vit_tiny_cifar@micro": vit_tiny_cifar_micro,
}


def randomise_norm_statistics(model, gen):
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            if module.affine:
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)


@torch.no_grad()
def export(name):
    torch.manual_seed(0)
    model, side = FIXTURES[name]()
    gen = torch.Generator().manual_seed(1)
    randomise_norm_statistics(model, gen)
    model.eval()
    x = torch.randn(2, 3, side, side, generator=gen)
    logits = model(x)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    tensors["__input__"] = x
    tensors["__logits__"] = logits
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / (name.replace("@", "+") + ".safetensors")
    save_file(tensors, path)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {path.name}: {params} parameters, {path.stat().st_size} bytes")


def main(names):
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        sys.exit(f"no fixture for {', '.join(unknown)}; known: {', '.join(sorted(FIXTURES))}")
    for name in names or sorted(FIXTURES):
        export(name)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Record PIL's outputs for bocb's augmentation conformance test.

Runs the per-image operations that timm's RandAugment applies (through timm's
own op functions in timm.data.auto_augment, so timm's argument conventions are
recorded too) and torchvision's PIL resize on small fixed RGB images, and
stores inputs and outputs as CHW lists. trial-runner/tests/augment_pil_conformance.rs
replays every case through bocb's Rust implementation.

    .venv/bin/python scripts/record_augment_cases.py

Writes trial-runner/tests/augment_cases.json.
"""

import json
from pathlib import Path

import numpy as np
import PIL
import timm
import torchvision
from PIL import Image
from timm.data import auto_augment as aa
from torchvision.transforms import functional as tvf

OUT = Path(__file__).resolve().parent.parent / "trial-runner" / "tests" / "augment_cases.json"
FILL = (124, 116, 104)  # timm's fill for ImageNet's mean, the one DeiT's RandAugment uses


def lcg_image(height, width, seed, low=0, high=256):
    """Deterministic pseudo-random RGB pixels in [low, high), HWC uint8."""
    state = seed
    values = []
    for _ in range(height * width * 3):
        state = (state * 1103515245 + 12345) % (1 << 31)
        values.append(low + (state >> 8) % (high - low))
    return np.array(values, dtype=np.uint8).reshape(height, width, 3)


def smooth_image(height, width):
    """Gradients plus a little texture, so that geometric ops have something to interpolate."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(width - 1, 1) + 7 * ((x + y) % 3)) % 256
    g = (y * 255 // max(height - 1, 1) + 11 * (x % 2)) % 256
    b = (128 + 40 * np.sin(x / 2.0) * np.cos(y / 3.0)).astype(np.int64)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def skewed_image(height, width):
    """Most pixels dark, a few bright: equalize's lookup table overflows 255 here."""
    img = lcg_image(height, width, 99, 0, 12)
    img[0, 0] = (250, 251, 252)
    img[-1, -1] = (200, 30, 199)
    return img


IMAGES = {
    "random": lcg_image(7, 9, 12345),
    "narrow": lcg_image(7, 9, 777, 60, 150),
    "smooth": smooth_image(12, 10),
    "square": smooth_image(8, 8),
    "skewed": skewed_image(6, 8),
    "flat_red": np.dstack([np.full((5, 6), 90), lcg_image(5, 6, 5)[..., 1:]]).astype(np.uint8),
}


def chw(img):
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).reshape(-1).tolist()


RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def pixel_cases():
    cases = []

    def add(op, image, args, out):
        cases.append({"op": op, "image": image, "args": args, "output": chw(out)})

    for name in ["random", "narrow", "skewed", "flat_red"]:
        img = Image.fromarray(IMAGES[name])
        add("invert", name, [], aa.invert(img))
        add("auto_contrast", name, [], aa.auto_contrast(img))
        add("equalize", name, [], aa.equalize(img))
        # Pillow 13 rejects bits=0 (older Pillow made the image black, which bocb keeps).
        for bits in [1, 2, 3, 4, 7, 8]:
            add("posterize", name, [bits], aa.posterize(img, bits))
        for thresh in [0, 1, 77, 128, 200, 256]:
            add("solarize", name, [thresh], aa.solarize(img, thresh))
        for addend in [0, 33, 110]:
            add("solarize_add", name, [addend], aa.solarize_add(img, addend))
        for factor in [0.0, 0.1, 0.37, 0.55, 1.0, 1.37, 1.9, 2.5]:
            add("brightness", name, [factor], aa.brightness(img, factor))
            add("contrast", name, [factor], aa.contrast(img, factor))
            add("color", name, [factor], aa.color(img, factor))
            add("sharpness", name, [factor], aa.sharpness(img, factor))
    return cases


def geometric_cases():
    cases = []

    def add(op, image, args, resample, out):
        cases.append(
            {"op": op, "image": image, "args": args, "resample": resample, "output": chw(out)}
        )

    for name in ["smooth", "square"]:
        img = Image.fromarray(IMAGES[name])
        for resample, mode in RESAMPLE.items():
            kw = {"fillcolor": FILL, "resample": mode}
            for degrees in [0.0, 90.0, 180.0, 270.0, 17.5, -23.0, 30.0]:
                add("rotate", name, [degrees], resample, aa.rotate(img, degrees, **kw))
            for factor in [0.0, 0.21, -0.3]:
                add("shear_x", name, [factor], resample, aa.shear_x(img, factor, **kw))
                add("shear_y", name, [factor], resample, aa.shear_y(img, factor, **kw))
            for pct in [0.0, 0.2, -0.45, 0.137]:
                add("translate_x_rel", name, [pct], resample, aa.translate_x_rel(img, pct, **kw))
                add("translate_y_rel", name, [pct], resample, aa.translate_y_rel(img, pct, **kw))
    return cases


def resize_cases():
    """torchvision's resized_crop on PIL images: crop (top, left, h, w), then resize to (H, W)."""
    cases = []
    for name in ["smooth", "random"]:
        img = Image.fromarray(IMAGES[name])
        for resample, mode in RESAMPLE.items():
            for box, size in [
                ((0, 0, img.height, img.width), (5, 4)),
                ((0, 0, img.height, img.width), (16, 21)),
                ((1, 2, 5, 6), (9, 9)),
                ((2, 0, 4, 7), (3, 3)),
                ((0, 0, img.height, img.width), (img.height, img.width)),
            ]:
                out = tvf.resized_crop(img, *box, list(size), interpolation=_tv_mode(mode))
                cases.append(
                    {
                        "op": "resized_crop",
                        "image": name,
                        "args": list(box) + list(size),
                        "resample": resample,
                        "output": chw(out),
                    }
                )
    return cases


def _tv_mode(mode):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BILINEAR if mode == Image.BILINEAR else InterpolationMode.BICUBIC


def main():
    record = {
        "versions": {
            "pillow": PIL.__version__,
            "timm": timm.__version__,
            "torchvision": torchvision.__version__,
        },
        "fill": list(FILL),
        "images": {
            name: {"height": img.shape[0], "width": img.shape[1], "pixels": chw(img)}
            for name, img in IMAGES.items()
        },
        "cases": pixel_cases() + geometric_cases() + resize_cases(),
    }
    OUT.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"wrote {len(record['cases'])} cases to {OUT}")


if __name__ == "__main__":
    main()

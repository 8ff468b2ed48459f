"""Records the cases of trial-runner/tests/jpeg_conformance.rs.

Writes two photograph-like JPEGs (smooth colour fields with edges and fine
texture, 4:2:0 and 4:4:4 chroma), PIL's decode of each (`NAME.decoded.png`),
and timm's evaluation transform of that decode at side 64
(`NAME.eval-RECIPE.png`): `timm.data.create_transform(is_training=False)` with
the crop_pct and interpolation of the ImageNet column of Table A3, taken
before ToTensor. Run with the project's venv:

    .venv/bin/python scripts/record_jpeg_cases.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
import timm.data

OUT = Path(__file__).resolve().parent.parent / "trial-runner/tests/jpeg_cases"
SIDE = 64
RECIPES = {"pytorch": (0.875, "bilinear"), "rsb_a2": (0.95, "bicubic")}


def photo(width, height, seed):
    """Smooth random colour field, a bright disc and a noisy texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float64)
    y, x = np.mgrid[0:height, 0:width]
    disc = (x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(width, height) * 0.2) ** 2
    field[disc] = field[disc] * 0.3 + 170
    field += rng.normal(0, 6, field.shape)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (w, h, subsampling, seed) in {
        "landscape": (200, 150, 2, 1),
        "portrait": (150, 210, 0, 2),
    }.items():
        path = OUT / f"{name}.jpg"
        photo(w, h, seed).save(path, quality=90, subsampling=subsampling)
        decoded = Image.open(path).convert("RGB")
        decoded.save(OUT / f"{name}.decoded.png")
        for recipe, (crop_pct, interpolation) in RECIPES.items():
            transform = timm.data.create_transform(
                input_size=SIDE, is_training=False, crop_pct=crop_pct, interpolation=interpolation
            )
            # Resize and CenterCrop; ToTensor and Normalize follow on the device.
            pil_steps = transform.transforms[:2]
            out = decoded
            for step in pil_steps:
                out = step(out)
            out.save(OUT / f"{name}.eval-{recipe}.png")


if __name__ == "__main__":
    main()

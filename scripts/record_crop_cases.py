"""Records the cases of trial-runner/tests/crop_statistics.rs.

For a few image sizes and RandomResizedCrop settings, draws boxes with
torchvision's `RandomResizedCrop.get_params` (ten attempts, then the centred
fallback) and writes the empirical distribution functions, on fixed grids, of
the box's area fraction, its aspect (w / h, as a log), its relative top and
left (i / (H - h), j / (W - w); 0.5 where the box spans the side), and the
share of draws that are the centred fallback box. Run with the project's venv:

    .venv/bin/python scripts/record_crop_cases.py
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import RandomResizedCrop

OUT = Path(__file__).resolve().parent.parent / "trial-runner/tests/crop_cases.json"
DRAWS = 50_000
GRID = 20
CASES = [
    # name, height, width, scale, ratio
    ("photo_default", 375, 500, (0.08, 1.0), (3 / 4, 4 / 3)),
    ("wide_strip_falls_back", 100, 1000, (0.08, 1.0), (3 / 4, 4 / 3)),
    ("portrait_narrow_scale", 640, 480, (0.25, 1.0), (0.5, 2.0)),
]


def fallback(height, width, ratio):
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def statistics(boxes, height, width):
    i, j, h, w = (boxes[:, k].astype(np.float64) for k in range(4))
    rel = lambda pos, extent, side: np.where(side > extent, pos / np.maximum(side - extent, 1), 0.5)
    return {
        "area": h * w / (height * width),
        "log_aspect": np.log(w / h),
        "top": rel(i, h, height),
        "left": rel(j, w, width),
    }


def main():
    torch.manual_seed(0)
    cases = []
    for name, height, width, scale, ratio in CASES:
        image = torch.empty(3, height, width)
        boxes = np.array([RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(DRAWS)])
        stats = statistics(boxes, height, width)
        grids = {}
        for key, values in stats.items():
            lo, hi = float(values.min()), float(values.max())
            # Grid points strictly inside the range, where the function varies.
            points = [lo + (hi - lo) * (k + 0.5) / GRID for k in range(GRID)]
            grids[key] = {"points": points, "cdf": [float(np.mean(values <= p)) for p in points]}
        centre = np.array(fallback(height, width, ratio))
        cases.append(
            {
                "name": name,
                "height": height,
                "width": width,
                "scale": list(scale),
                "ratio": list(ratio),
                "draws": DRAWS,
                "fallback_box": centre.tolist(),
                "fallback_share": float(np.mean(np.all(boxes == centre, axis=1))),
                "statistics": grids,
            }
        )
    OUT.write_text(json.dumps({"cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()

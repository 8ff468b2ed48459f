"""Convert a PyTorch checkpoint (.pth/.pt) to the safetensors file an
experiment's `init:` loads.

    .venv/bin/python scripts/pth_to_safetensors.py resnet50.pth weights/resnet50.safetensors

The state dict keeps its names (timm's, torchvision's, the architecture
repository's, which are bocb's). A checkpoint that wraps it (`state_dict`,
`model`, `state_dict_ema`: training scripts' habits) is unwrapped, a
`module.` prefix left by DataParallel is dropped, and so are batch-norm
`num_batches_tracked` counters.
"""

import sys

import torch
from safetensors.torch import save_file

WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")


def state_dict(checkpoint):
    for key in WRAPPERS:
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def main(source, target):
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    tensors = {}
    for name, value in state_dict(checkpoint).items():
        if not isinstance(value, torch.Tensor) or name.endswith("num_batches_tracked"):
            continue
        name = name.removeprefix("module.")
        tensors[name] = value.detach().contiguous()
    if not tensors:
        sys.exit(f"{source} holds no tensors by name; expected a state dict")
    save_file(tensors, target)
    print(f"wrote {target}: {len(tensors)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pth_to_safetensors.py CHECKPOINT.pth OUT.safetensors")
    main(sys.argv[1], sys.argv[2])

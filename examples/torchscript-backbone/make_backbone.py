"""Define a small CNN in PyTorch and save it as TorchScript for bocb.

    python make_backbone.py                  # writes backbone.pt (10 classes)
    python make_backbone.py OUT.pt --classes 100 --width 32

bocb loads the file with `torchscript:PATH` as a backbone name: its forward
must take a batch of 3x32x32 images (normalised, float32) and return logits
[batch, classes], where classes is the dataset's number of classes.
"""

import argparse

import torch
from torch import nn


class SmallCnn(nn.Module):
    def __init__(self, classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="backbone.pt")
    parser.add_argument("--classes", type=int, default=10, help="the dataset's number of classes")
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = SmallCnn(args.classes, args.width)
    scripted = torch.jit.script(model)
    # The check bocb runs before the first trial.
    logits = scripted(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, args.classes), logits.shape
    scripted.save(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {params} parameters, {args.classes} classes")


if __name__ == "__main__":
    main()

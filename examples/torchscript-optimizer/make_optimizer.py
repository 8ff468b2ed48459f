"""Write Signum as a TorchScript optimizer for bocb.

    python make_optimizer.py            # writes signum.pt beside this file
    python make_optimizer.py OUT.pt

Signum (Bernstein et al., 2018, "signSGD"): SGD on the sign of a momentum
average, with decoupled weight decay. bocb loads the file with
`optimizers: ["torchscript:signum.pt"]` and calls its `step` at every
training step of its own trainer; its search space is `signum.pt.yaml`.
The interface is documented in docs/extending.md ("An optimizer in PyTorch").
"""

import os
import sys
from typing import Dict, List

import torch
from torch import Tensor, nn


class Signum(nn.Module):
    # State lives in typed attributes, one entry per parameter, in the order
    # bocb passes the parameters (the same at every call).
    momentum_buffers: List[Tensor]

    def __init__(self):
        super().__init__()
        self.momentum_buffers = []

    @torch.jit.export
    def step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: float,
             iteration: int, hparams: Dict[str, Tensor]) -> None:
        momentum = float(hparams["momentum"]) if "momentum" in hparams else 0.9
        if len(self.momentum_buffers) == 0:
            self.momentum_buffers = [torch.zeros_like(p) for p in params]
        for i in range(len(params)):
            buf = self.momentum_buffers[i]
            buf.mul_(momentum).add_(grads[i], alpha=1.0 - momentum)
            params[i].mul_(1.0 - lr * weight_decays[i])
            params[i].add_(torch.sign(buf), alpha=-lr)

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return self.momentum_buffers

    @torch.jit.export
    def load_state(self, state: List[Tensor]) -> None:
        self.momentum_buffers = state


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "signum.pt")
    # A step on small tensors, as bocb takes before the first trial, on a
    # copy: the saved module must start without state.
    trial = torch.jit.script(Signum())
    params = [torch.ones(2, 3), torch.ones(3)]
    hparams = {"lr": torch.tensor(0.1, dtype=torch.float64), "momentum": torch.tensor(0.9, dtype=torch.float64)}
    with torch.no_grad():
        trial.step(params, [torch.ones(2, 3), -torch.ones(3)], [0.05, 0.0], 0.1, 1, hparams)
    assert torch.allclose(params[1], torch.full((3,), 1.1)), params
    torch.jit.script(Signum()).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

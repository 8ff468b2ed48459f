"""Write the TorchScript optimizers the trial runner's tests load.

    .venv/bin/python scripts/make_torchscript_optimizers.py [OUT_DIR]

OUT_DIR defaults to trial-runner/tests/torchscript/. Each module follows
bocb's interface (docs/extending.md, "An optimizer in PyTorch"):
`sgd_m.pt` and `adamw.pt` are torch.optim.SGD and torch.optim.AdamW written
against it (the tests replay them equal to bocb's own); the others are
refused before any trial: `no_step.pt` has no `step`, `wrong_signature.pt`
takes `lr` as a list, `fails_first_step.pt` raises on its first call. `no_load_state.pt` (plain
SGD) exports no `load_state`, so its trials are not checkpointed.
"""

import os
import sys
from typing import Dict, List

import torch
from torch import Tensor, nn


def hparam(hparams: Dict[str, Tensor], name: str, default: float) -> float:
    if name in hparams:
        return float(hparams[name])
    return default


class SgdM(nn.Module):
    """torch.optim.SGD: coupled weight decay, momentum, dampening, nesterov."""

    # State attributes are typed in the class body (TorchScript cannot infer
    # the type of an empty list).
    momentum_buffers: List[Tensor]

    def __init__(self):
        super().__init__()
        self.momentum_buffers = []

    @torch.jit.export
    def step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: float,
             iteration: int, hparams: Dict[str, Tensor]) -> None:
        momentum = hparam(hparams, "momentum", 0.0)
        dampening = hparam(hparams, "dampening", 0.0)
        nesterov = hparam(hparams, "nesterov", 0.0) == 1.0
        for i in range(len(params)):
            d = grads[i]
            if weight_decays[i] != 0.0:
                d = d.add(params[i], alpha=weight_decays[i])
            if momentum != 0.0:
                if len(self.momentum_buffers) <= i:
                    self.momentum_buffers.append(d.clone())
                else:
                    self.momentum_buffers[i].mul_(momentum).add_(d, alpha=1.0 - dampening)
                d = d.add(self.momentum_buffers[i], alpha=momentum) if nesterov else self.momentum_buffers[i]
            params[i].add_(d, alpha=-lr)

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return self.momentum_buffers

    @torch.jit.export
    def load_state(self, state: List[Tensor]) -> None:
        self.momentum_buffers = state


class AdamW(nn.Module):
    """torch.optim.AdamW (no amsgrad)."""

    exp_avg: List[Tensor]
    exp_avg_sq: List[Tensor]

    def __init__(self):
        super().__init__()
        self.exp_avg = []
        self.exp_avg_sq = []

    @torch.jit.export
    def step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: float,
             iteration: int, hparams: Dict[str, Tensor]) -> None:
        beta1 = hparam(hparams, "beta1", 0.9)
        beta2 = hparam(hparams, "beta2", 0.999)
        eps = hparam(hparams, "eps", 1e-8)
        if len(self.exp_avg) == 0:
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        bias1 = 1.0 - beta1 ** iteration
        bias2_sqrt = (1.0 - beta2 ** iteration) ** 0.5
        for i in range(len(params)):
            p, g = params[i], grads[i]
            p.mul_(1.0 - lr * weight_decays[i])
            self.exp_avg[i].lerp_(g, 1.0 - beta1)
            self.exp_avg_sq[i].mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            denom = (self.exp_avg_sq[i].sqrt() / bias2_sqrt).add_(eps)
            p.addcdiv_(self.exp_avg[i], denom, value=-lr / bias1)

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return self.exp_avg + self.exp_avg_sq

    @torch.jit.export
    def load_state(self, state: List[Tensor]) -> None:
        half = len(state) // 2
        self.exp_avg = state[:half]
        self.exp_avg_sq = state[half:]


class NoLoadState(nn.Module):
    @torch.jit.export
    def step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: float,
             iteration: int, hparams: Dict[str, Tensor]) -> None:
        for i in range(len(params)):
            params[i].add_(grads[i] + weight_decays[i] * params[i], alpha=-lr)

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return []


class NoStep(nn.Module):
    @torch.jit.export
    def update(self, params: List[Tensor], grads: List[Tensor]) -> None:
        for p, g in zip(params, grads):
            p.sub_(g)

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return []


class WrongSignature(nn.Module):
    @torch.jit.export
    def step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: List[float],
             iteration: int, hparams: Dict[str, Tensor]) -> None:
        for i in range(len(params)):
            params[i].sub_(grads[i] * lr[i])

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return []


class FailsFirstStep(nn.Module):
    @torch.jit.export
    def step(self, params: List[Tensor], grads: List[Tensor], weight_decays: List[float], lr: float,
             iteration: int, hparams: Dict[str, Tensor]) -> None:
        # A typo'd hyperparameter name: a KeyError on the first call.
        momentum = float(hparams["momentun"])
        for i in range(len(params)):
            params[i].sub_(grads[i] * lr * momentum)

    @torch.jit.export
    def state(self) -> List[Tensor]:
        return []


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "trial-runner", "tests", "torchscript")
    os.makedirs(out, exist_ok=True)
    for name, module in [("sgd_m", SgdM()), ("adamw", AdamW()), ("no_step", NoStep()),
                         ("wrong_signature", WrongSignature()), ("fails_first_step", FailsFirstStep()),
                         ("no_load_state", NoLoadState())]:
        path = os.path.join(out, f"{name}.pt")
        torch.jit.script(module).save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Record optimizer replay cases from the reference implementations.

Each case runs a reference optimizer in float64 for STEPS steps on random
parameters with given random gradients and stores the trajectory. bocb's
conformance test (trial-runner/tests/optim_conformance.rs) replays every case
through bocb's implementation and requires agreement to 1e-9 relative.

    .venv/bin/pip install timm==1.0.31 pytorch_optimizer==4.1.0
    .venv/bin/python scripts/record_optim_cases.py            # every optimizer
    .venv/bin/python scripts/record_optim_cases.py adamw lion # some

Writes trial-runner/tests/optim_cases/NAME-K.json (K = 1, 2, ...).
"""

import importlib
import importlib.metadata
import json
import sys
from pathlib import Path

import torch

STEPS = 12
OUT = Path(__file__).resolve().parent.parent / "trial-runner" / "tests" / "optim_cases"

# Shapes like a small network's: a conv kernel, a linear weight, a bias, and
# a norm scale, so per-tensor norms and factored moments are exercised.
SHAPES = [[4, 3, 3, 3], [5, 6], [5], [4]]

# name -> list of (reference class, constructor kwargs, options). Options:
#   "hessian_every": k   pass a positive random Hessian diagonal to
#                        step(hessian=...) every k steps (Sophia).
#   "step_kwargs": {...} extra keyword arguments of every step() call.
CASES = {
    "sgd_m": [
        ("torch.optim.SGD", {"lr": 0.1, "momentum": 0.9}, {}),
        ("torch.optim.SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.0,
                             "weight_decay": 5e-4, "nesterov": True}, {}),
        ("torch.optim.SGD", {"lr": 0.02, "momentum": 0.9, "dampening": 0.1,
                             "weight_decay": 1e-3}, {}),
    ],
    "adamw": [
        ("torch.optim.AdamW", {"lr": 1e-3}, {}),
        ("torch.optim.AdamW", {"lr": 4e-3, "betas": [0.8, 0.99], "eps": 1e-6,
                               "weight_decay": 0.1}, {}),
    ],
}


def reference_class(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def version_of(path):
    return importlib.metadata.version(path.split(".")[0])


def record(name, k, path, kwargs, options):
    gen = torch.Generator().manual_seed(1000 * k + sum(map(ord, name)))
    params = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in SHAPES]
    params0 = [p.detach().flatten().tolist() for p in params]
    ctor_kwargs = {key: tuple(v) if key == "betas" else v for key, v in kwargs.items()}
    opt = reference_class(path)(params, **ctor_kwargs)
    grads, trajectory, hessian_steps, hessian_values = [], [], [], []
    every = options.get("hessian_every")
    for step in range(STEPS):
        step_grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        step_kwargs = dict(options.get("step_kwargs", {}))
        if every and step % every == 0:
            hessian = [torch.rand(s, generator=gen, dtype=torch.float64) + 0.1 for s in SHAPES]
            hessian_steps.append(step)
            hessian_values.append([h.flatten().tolist() for h in hessian])
            step_kwargs["hessian"] = hessian
        opt.step(**step_kwargs)
        grads.append([g.flatten().tolist() for g in step_grads])
        trajectory.append([p.detach().flatten().tolist() for p in params])
    case = {
        "optimizer": name,
        "reference": f"{path} ({path.split('.')[0]} {version_of(path)})",
        "hparams": kwargs,
        "shapes": SHAPES,
        "params0": params0,
        "grads": grads,
        "trajectory": trajectory,
    }
    if hessian_steps:
        case["hessians"] = {"steps": hessian_steps, "values": hessian_values}
    OUT.mkdir(parents=True, exist_ok=True)
    path_out = OUT / f"{name}-{k}.json"
    path_out.write_text(json.dumps(case) + "\n")
    print(f"wrote {path_out.relative_to(OUT.parent.parent.parent)}")


def main(names):
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"no cases for {', '.join(unknown)}; known: {', '.join(sorted(CASES))}")
    torch.set_default_dtype(torch.float64)
    for name in names or sorted(CASES):
        for k, (path, kwargs, options) in enumerate(CASES[name], start=1):
            record(name, k, path, kwargs, options)


if __name__ == "__main__":
    main(sys.argv[1:])

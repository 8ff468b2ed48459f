"""Record optimizer replay cases from the reference implementations.

Each case runs a reference optimizer in float64 for STEPS steps on random
parameters with given random gradients and stores the trajectory. bocb's
conformance test (trial-runner/tests/optim_conformance.rs) replays every case
through bocb's implementation and requires agreement to 1e-9 relative.

    # torch pinned: the resolver would otherwise upgrade it past what tch links.
    .venv/bin/pip install torch==2.11.0 torchvision==0.26.0 timm==1.0.31 pytorch_optimizer==4.1.0
    .venv/bin/python scripts/record_optim_cases.py            # every optimizer
    .venv/bin/python scripts/record_optim_cases.py adamw lion # some

Writes trial-runner/tests/optim_cases/NAME-K.json (K = 1, 2, ...; a case
with timm's layer-decay param groups as NAME-layer_decay.json) and
NAME-defaults.json: every constructor argument of the reference written out
at its signature default (timm's Adafactor's lr=None included).
"""

import importlib
import inspect
import importlib.metadata
import json
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import required as TORCH_REQUIRED

STEPS = 12
OUT = Path(__file__).resolve().parent.parent / "trial-runner" / "tests" / "optim_cases"

# Shapes like a small network's: a conv kernel, a linear weight, a bias, and
# a norm scale, so per-tensor norms and factored moments are exercised.
SHAPES = [[4, 3, 3, 3], [5, 6], [5], [4]]

# name -> list of (reference class, constructor kwargs, options). Options:
#   "hessian_every": k   pass a positive random Hessian diagonal to
#                        step(hessian=...) every k steps (Sophia).
#   "step_kwargs": {...} extra keyword arguments of every step() call.
#   "layer_decay": True  timm's layer-wise lr decay (LAYER_DECAY below):
#                        param groups by lr scale and weight decay, written
#                        as NAME-layer_decay.json.
# The layer-decay cases' groups, as timm's param_groups_layer_decay makes
# them with layer_decay 0.75 over 3 layers: the conv kernel and the norm
# scale in layer 0 (0.75^2), the linear weight in layer 1 (0.75), the bias
# in the head (1); the 1-d tensors without weight decay.
LAYER_DECAY = {
    "lr_scales": [0.75 ** 2, 0.75 ** 1, 0.75 ** 0, 0.75 ** 2],
    "no_weight_decay": [False, False, True, True],
}

CASES = {
    "sgd_m": [
        ("torch.optim.SGD", {"lr": 0.1, "momentum": 0.9}, {}),
        ("torch.optim.SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.0,
                             "weight_decay": 5e-4, "nesterov": True}, {}),
        ("torch.optim.SGD", {"lr": 0.02, "momentum": 0.9, "dampening": 0.1,
                             "weight_decay": 1e-3}, {}),
        ("torch.optim.SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
         {"layer_decay": True}),
    ],
    "adamw": [
        ("torch.optim.AdamW", {"lr": 1e-3}, {}),
        ("torch.optim.AdamW", {"lr": 4e-3, "betas": [0.8, 0.99], "eps": 1e-6,
                               "weight_decay": 0.1}, {}),
        ("torch.optim.AdamW", {"lr": 3e-3, "betas": [0.85, 0.9], "weight_decay": 0.05,
                               "amsgrad": True}, {}),
        ("torch.optim.AdamW", {"lr": 4e-3, "betas": [0.8, 0.99], "weight_decay": 0.1},
         {"layer_decay": True}),
    ],
    "adam": [
        ("torch.optim.Adam", {"lr": 1e-3}, {}),
        ("torch.optim.Adam", {"lr": 3e-3, "betas": [0.8, 0.99], "eps": 1e-6,
                              "weight_decay": 0.05}, {}),
        ("torch.optim.Adam", {"lr": 2e-3, "betas": [0.85, 0.9], "weight_decay": 0.1,
                              "amsgrad": True, "decoupled_weight_decay": True}, {}),
        ("torch.optim.Adam", {"lr": 2e-3, "betas": [0.9, 0.95], "weight_decay": 0.01,
                              "amsgrad": True}, {}),
    ],
    "adamax": [
        ("torch.optim.Adamax", {"lr": 2e-3}, {}),
        ("torch.optim.Adamax", {"lr": 1e-2, "betas": [0.8, 0.99], "eps": 1e-6,
                                "weight_decay": 0.01}, {}),
    ],
    "nadam": [
        ("torch.optim.NAdam", {"lr": 2e-3}, {}),
        ("torch.optim.NAdam", {"lr": 3e-3, "betas": [0.85, 0.995], "eps": 1e-6,
                               "weight_decay": 0.01, "momentum_decay": 8e-3}, {}),
        ("torch.optim.NAdam", {"lr": 2e-3, "betas": [0.8, 0.99], "weight_decay": 0.1,
                               "decoupled_weight_decay": True}, {}),
    ],
    "radam": [
        ("torch.optim.RAdam", {"lr": 1e-3}, {}),
        ("torch.optim.RAdam", {"lr": 3e-3, "betas": [0.8, 0.99], "eps": 1e-6,
                               "weight_decay": 0.05}, {}),
        ("torch.optim.RAdam", {"lr": 2e-3, "betas": [0.85, 0.95], "weight_decay": 0.1,
                               "decoupled_weight_decay": True}, {}),
    ],
    "adagrad": [
        ("torch.optim.Adagrad", {"lr": 1e-2}, {}),
        ("torch.optim.Adagrad", {"lr": 5e-2, "lr_decay": 0.01, "weight_decay": 1e-3,
                                 "initial_accumulator_value": 0.1, "eps": 1e-8}, {}),
    ],
    "adadelta": [
        ("torch.optim.Adadelta", {"lr": 1.0}, {}),
        ("torch.optim.Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5,
                                  "weight_decay": 1e-3}, {}),
    ],
    "rmsprop": [
        ("torch.optim.RMSprop", {"lr": 1e-2}, {}),
        ("torch.optim.RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "weight_decay": 1e-3,
                                 "momentum": 0.9, "centered": True}, {}),
        ("torch.optim.RMSprop", {"lr": 2e-3, "alpha": 0.95, "weight_decay": 5e-4,
                                 "momentum": 0.5}, {}),
        ("torch.optim.RMSprop", {"lr": 1e-3, "centered": True}, {}),
    ],
    "adabelief": [
        ("timm.optim.AdaBelief", {"lr": 1e-3}, {}),
        ("timm.optim.AdaBelief", {"lr": 2e-3, "betas": [0.8, 0.99], "eps": 1e-10,
                                  "weight_decay": 0.1, "amsgrad": True, "rectify": False}, {}),
        ("timm.optim.AdaBelief", {"lr": 1e-3, "betas": [0.85, 0.995], "weight_decay": 1e-2,
                                  "decoupled_decay": False, "degenerated_to_sgd": False}, {}),
        ("timm.optim.AdaBelief", {"lr": 1e-3, "eps": 1e-8, "weight_decay": 1e-3,
                                  "fixed_decay": True, "amsgrad": True}, {}),
    ],
    "adafactor": [
        ("timm.optim.Adafactor", {"lr": 1e-2}, {}),
        ("timm.optim.Adafactor", {"lr": 5e-3, "betas": [0.9, 0.999], "weight_decay": 0.05,
                                  "min_dim_size_to_factor": 2, "clip_threshold": 0.5,
                                  "decay_rate": -0.6}, {}),
        ("timm.optim.Adafactor", {"lr": 1e-2, "betas": [0.8, 0.999], "caution": True,
                                  "min_dim_size_to_factor": 3, "eps": 1e-20}, {}),
        # timm's default lr=None: the relative step, scaled by the RMS of
        # each parameter, and with warmup_init (which needs it).
        ("timm.optim.Adafactor", {"lr": None, "weight_decay": 0.05}, {}),
        ("timm.optim.Adafactor", {"betas": [0.9, 0.999], "warmup_init": True,
                                  "eps_scale": 0.5, "min_dim_size_to_factor": 2}, {}),
        ("timm.optim.Adafactor", {"scale_parameter": False, "decay_rate": -0.5}, {}),
    ],
    "adabound": [
        ("pytorch_optimizer.AdaBound", {"lr": 1e-3}, {}),
        ("pytorch_optimizer.AdaBound", {"lr": 1e-2, "final_lr": 0.05, "betas": [0.8, 0.99],
                                        "gamma": 0.1, "weight_decay": 0.1, "ams_bound": True}, {}),
        ("pytorch_optimizer.AdaBound", {"lr": 5e-3, "weight_decay": 1e-2, "weight_decouple": False,
                                        "gamma": 0.05, "eps": 1e-6}, {}),
        ("pytorch_optimizer.AdaBound", {"lr": 1e-3, "weight_decay": 1e-2, "fixed_decay": True}, {}),
    ],
    # SophiaH estimates the Hessian itself at steps 1, 1 + update_period, ...
    # unless step(hessian=...) hands one over; hessian_every must cover those
    # steps (it may add others: any passed estimate moves the Hessian EMA).
    "sophia": [
        ("pytorch_optimizer.SophiaH", {"lr": 6e-2}, {"hessian_every": 10}),
        ("pytorch_optimizer.SophiaH", {"lr": 1e-2, "betas": [0.9, 0.95], "weight_decay": 0.1,
                                       "p": 0.05, "update_period": 1, "eps": 1e-8,
                                       "fixed_decay": True}, {"hessian_every": 1}),
        ("pytorch_optimizer.SophiaH", {"lr": 3e-2, "weight_decay": 1e-2, "weight_decouple": False,
                                       "p": 1.0, "update_period": 4,
                                       "hessian_distribution": "rademacher"}, {"hessian_every": 2}),
    ],
    # SGDP/AdamP project only when the gradient is nearly orthogonal to the
    # weights (|cosine| < delta / sqrt(row length)); delta >= 1 makes that
    # common with random tensors, so channel, layer and no projection all occur.
    "sgdp": [
        ("timm.optim.SGDP", {"lr": 0.1}, {}),
        ("timm.optim.SGDP", {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "delta": 1.0}, {}),
        ("timm.optim.SGDP", {"lr": 0.05, "momentum": 0.8, "dampening": 0.1, "weight_decay": 1e-3,
                             "wd_ratio": 0.2, "delta": 1.0, "eps": 1e-6, "caution": True}, {}),
        ("timm.optim.SGDP", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3,
                             "delta": 3.0}, {}),
    ],
    "adamp": [
        ("timm.optim.AdamP", {"lr": 1e-3}, {}),
        ("timm.optim.AdamP", {"lr": 2e-3, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05,
                              "delta": 1.0, "nesterov": True}, {}),
        ("timm.optim.AdamP", {"lr": 1e-3, "betas": [0.85, 0.995], "weight_decay": 0.1,
                              "wd_ratio": 0.2, "delta": 1.0, "caution": True}, {}),
    ],
    "lion": [
        ("timm.optim.Lion", {"lr": 1e-4}, {}),
        ("timm.optim.Lion", {"lr": 3e-4, "betas": [0.95, 0.98], "weight_decay": 0.5,
                             "caution": True}, {}),
        ("timm.optim.Lion", {"lr": 2e-4, "betas": [0.8, 0.99], "weight_decay": 1.0,
                             "corrected_weight_decay": True}, {}),
        ("timm.optim.Lion", {"lr": 2e-4, "weight_decay": 1.0, "corrected_weight_decay": True},
         {"layer_decay": True}),
    ],
    # The random gradients' global norm is about 12, so max_grad_norm 1 and 5
    # clip and 100 does not (timm's None cannot be written in a case).
    "lamb": [
        ("timm.optim.Lamb", {"lr": 1e-3}, {}),
        ("timm.optim.Lamb", {"lr": 5e-3, "betas": [0.8, 0.99], "eps": 1e-8, "weight_decay": 0.02,
                             "max_grad_norm": 5.0, "trust_clip": True,
                             "grad_averaging": False}, {}),
        ("timm.optim.Lamb", {"lr": 2e-3, "weight_decay": 0.0, "always_adapt": True,
                             "bias_correction": False, "max_grad_norm": 100.0,
                             "caution": True}, {}),
        ("timm.optim.Lamb", {"lr": 3e-3, "betas": [0.85, 0.995], "weight_decay": 0.05,
                             "decoupled_decay": True, "corrected_weight_decay": True}, {}),
        # Clipped by the global norm over every group.
        ("timm.optim.Lamb", {"lr": 3e-3, "weight_decay": 0.05, "max_grad_norm": 1.0,
                             "decoupled_decay": True, "corrected_weight_decay": True},
         {"layer_decay": True}),
    ],
    "lars": [
        ("timm.optim.Lars", {"lr": 0.1}, {}),
        ("timm.optim.Lars", {"lr": 1.0, "momentum": 0.9, "weight_decay": 5e-4}, {}),
        ("timm.optim.Lars", {"lr": 0.5, "momentum": 0.8, "weight_decay": 1e-3, "nesterov": True,
                             "trust_coeff": 0.5, "trust_clip": True}, {}),
        ("timm.optim.Lars", {"lr": 0.5, "momentum": 0.9, "dampening": 0.1, "always_adapt": True,
                             "eps": 1e-6}, {}),
    ],
    "adan": [
        ("timm.optim.Adan", {"lr": 1e-3}, {}),
        ("timm.optim.Adan", {"lr": 2e-3, "betas": [0.9, 0.9, 0.995], "eps": 1e-6,
                             "weight_decay": 0.02}, {}),
        ("timm.optim.Adan", {"lr": 1e-3, "betas": [0.95, 0.85, 0.99], "weight_decay": 0.05,
                             "no_prox": True, "caution": True}, {}),
    ],
    "novograd": [
        ("timm.optim.NvNovoGrad", {"lr": 1e-3}, {}),
        ("timm.optim.NvNovoGrad", {"lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-6,
                                   "weight_decay": 1e-3, "grad_averaging": True,
                                   "amsgrad": True}, {}),
        ("timm.optim.NvNovoGrad", {"lr": 1e-3, "betas": [0.85, 0.95], "weight_decay": 0.05,
                                   "decoupled_decay": True, "corrected_weight_decay": True}, {}),
    ],
}


def reference_class(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def version_of(path):
    return importlib.metadata.version(path.split(".")[0])


def layer_groups(params):
    """timm's layer-decay param groups: one per (lr scale, weight decay)."""
    groups = {}
    for p, scale, exempt in zip(params, LAYER_DECAY["lr_scales"], LAYER_DECAY["no_weight_decay"]):
        group = groups.setdefault((scale, exempt), {"params": [], "lr_scale": scale})
        if exempt:
            group["weight_decay"] = 0.0
        group["params"].append(p)
    return list(groups.values())


def record(name, k, path, kwargs, options, label=None):
    gen = torch.Generator().manual_seed(1000 * k + sum(map(ord, name)))
    params = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in SHAPES]
    params0 = [p.detach().flatten().tolist() for p in params]
    ctor_kwargs = {key: tuple(v) if key == "betas" and v is not None else v
                   for key, v in kwargs.items()}
    layered = options.get("layer_decay", False)
    opt = reference_class(path)(layer_groups(params) if layered else params, **ctor_kwargs)
    if layered:
        # timm's scheduler: each group's lr is the scheduled one times its
        # lr_scale (set after construction, so references that snapshot
        # the constructor's lr keep the unscaled one).
        for group in opt.param_groups:
            group["lr"] = kwargs["lr"] * group["lr_scale"]
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
    if layered:
        case.update(LAYER_DECAY)
    OUT.mkdir(parents=True, exist_ok=True)
    path_out = OUT / f"{name}-{label or k}.json"
    path_out.write_text(json.dumps(case) + "\n")
    print(f"wrote {path_out.relative_to(OUT.parent.parent.parent)}")


def signature_defaults(path):
    """Every constructor argument of the reference at its default value
    (JSON-ready: tuples as lists), and the arguments without a default."""
    params = inspect.signature(reference_class(path).__init__).parameters
    defaults, required = {}, []
    for name, p in params.items():
        if name in ("self", "params") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        # torch's `required` is a sentinel (timm's SGDP uses it for lr).
        if p.default is inspect.Parameter.empty or p.default is TORCH_REQUIRED:
            required.append(name)
        else:
            defaults[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return defaults, required


def record_defaults(name):
    """NAME-defaults.json: the reference constructed with every argument
    written out at its default, so bocb is checked to accept (and match)
    each one. An argument without a default takes the first case's value."""
    path, first_kwargs, options = CASES[name][0]
    kwargs, required = signature_defaults(path)
    for arg in required:
        kwargs[arg] = first_kwargs[arg]
    record(name, 0, path, kwargs, options, label="defaults")


def main(names):
    # Recording only the defaults cases: --defaults NAME...
    only_defaults = names[:1] == ["--defaults"]
    names = names[1:] if only_defaults else names
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"no cases for {', '.join(unknown)}; known: {', '.join(sorted(CASES))}")
    torch.set_default_dtype(torch.float64)
    for name in names or sorted(CASES):
        if not only_defaults:
            for k, (path, kwargs, options) in enumerate(CASES[name], start=1):
                label = "layer_decay" if options.get("layer_decay") else None
                record(name, k, path, kwargs, options, label=label)
        record_defaults(name)


if __name__ == "__main__":
    main(sys.argv[1:])

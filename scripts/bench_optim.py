"""The reference side of `bocb bench optim` (embedded in the `bocb` binary).

Times one step of the reference implementations (torch.optim, timm.optim,
pytorch_optimizer) so bocb's steps can be compared with them in the same run.
`bocb` starts it as `PYTHON -c SOURCE` and talks JSON lines:

  -> (on start)  {"ready": TORCH_VERSION}, or {"missing": [MODULE, ...]}
  <- {"cases": RECORDER_SOURCE}
  -> {"cases": {NAME: {"class": PATH, "kwargs": {...}}}}   the first case of
     each optimizer in the recorder's CASES, which both sides run
  <- {"bench": NAME, "shapes": [[...]], "decay": [BOOL], "device": DEV,
      "warmup": W, "steps": N}
  -> {"ms": [N step times]}, or {"error": MESSAGE}
"""

import importlib
import json
import sys
import time

REFERENCE_MODULES = ["torch", "timm", "pytorch_optimizer"]


def reply(obj):
    print(json.dumps(obj), flush=True)


def load_cases(source):
    # The recorder's `main` runs only under __main__; it reads __file__ at import.
    namespace = {"__name__": "record_optim_cases", "__file__": "scripts/record_optim_cases.py"}
    exec(compile(source, "scripts/record_optim_cases.py", "exec"), namespace)
    return {name: cases[0] for name, cases in namespace["CASES"].items() if cases}


def reference_class(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def bench(case, req):
    import torch

    path, kwargs, options = case
    device = torch.device(req["device"])
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.randn(shape, generator=gen).to(device).requires_grad_() for shape in req["shapes"]
    ]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device)
    decay = [p for p, d in zip(params, req["decay"]) if d]
    no_decay = [p for p, d in zip(params, req["decay"]) if not d]
    # The same split as bocb's ParamSet: no weight decay on biases and norms.
    groups = [{"params": decay}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    ctor_kwargs = {key: tuple(v) if key == "betas" else v for key, v in kwargs.items()}
    opt = reference_class(path)(groups, **ctor_kwargs)
    every = options.get("hessian_every")
    # One estimate per parameter in param_groups order, as step(hessian=...) wants.
    hessian = [
        torch.rand(p.shape, generator=gen).add_(0.1).to(device) for p in decay + no_decay
    ] if every else None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for step in range(req["warmup"] + req["steps"]):
        step_kwargs = dict(options.get("step_kwargs", {}))
        if every and step % every == 0:
            step_kwargs["hessian"] = hessian
        sync()
        start = time.perf_counter()
        opt.step(**step_kwargs)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times[req["warmup"]:]


def main():
    missing = []
    for module in REFERENCE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        reply({"missing": missing})
        return
    import torch

    reply({"ready": torch.__version__})
    cases = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if "cases" in req:
                cases = load_cases(req["cases"])
                reply({"cases": {n: {"class": c[0], "kwargs": c[1]} for n, c in cases.items()}})
            else:
                reply({"ms": bench(cases[req["bench"]], req)})
        except Exception as e:  # reported to bocb, which names the optimizer
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()

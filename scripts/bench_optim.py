"""The reference side of `bocb bench optim` (embedded in the `bocb` binary).

Times steps of the reference implementations (torch.optim, timm.optim,
pytorch_optimizer) one at a time, so that bocb can alternate its own steps
with them and both sides see the same machine load. `bocb` starts it as
`PYTHON -c SOURCE` and talks JSON lines:

  -> (on start)  {"ready": TORCH_VERSION}, or {"missing": [MODULE, ...]}
  <- {"cases": RECORDER_SOURCE}
  -> {"cases": {NAME: {"class": PATH, "kwargs": {...}}}}   the first case of
     each optimizer in the recorder's CASES, which both sides run
  <- {"setup": NAME, "shapes": [[...]], "decay": [BOOL], "device": DEVICE}
  -> {"ok": true}          random parameters and gradients, a new optimizer
  <- {"step": true}
  -> {"ms": STEP_TIME}     any reply may instead be {"error": MESSAGE}
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


class Run:
    """One reference optimizer over random parameters with fixed gradients."""

    def __init__(self, case, req):
        import torch

        path, kwargs, options = case
        self.device = torch.device(req["device"])
        gen = torch.Generator().manual_seed(0)
        params = [
            torch.randn(shape, generator=gen).to(self.device).requires_grad_()
            for shape in req["shapes"]
        ]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(self.device)
        decay = [p for p, d in zip(params, req["decay"]) if d]
        no_decay = [p for p, d in zip(params, req["decay"]) if not d]
        # The same split as bocb's ParamSet: no weight decay on biases and norms.
        groups = [{"params": decay}] if decay else []
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        ctor_kwargs = {key: tuple(v) if key == "betas" else v for key, v in kwargs.items()}
        self.opt = reference_class(path)(groups, **ctor_kwargs)
        self.step_kwargs = options.get("step_kwargs", {})
        self.every = options.get("hessian_every")
        # One estimate per parameter in param_groups order, as step() takes it.
        self.hessian = (
            [torch.rand(p.shape, generator=gen).add_(0.1).to(self.device) for p in decay + no_decay]
            if self.every
            else None
        )
        self.synchronize = torch.cuda.synchronize
        self.steps = 0

    def sync(self):
        if self.device.type == "cuda":
            self.synchronize(self.device)

    def step(self):
        kwargs = dict(self.step_kwargs)
        if self.every and self.steps % self.every == 0:
            kwargs["hessian"] = self.hessian
        self.sync()
        start = time.perf_counter()
        self.opt.step(**kwargs)
        self.sync()
        self.steps += 1
        return (time.perf_counter() - start) * 1e3


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
    cases, run = {}, None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if "cases" in req:
                cases = load_cases(req["cases"])
                reply({"cases": {n: {"class": c[0], "kwargs": c[1]} for n, c in cases.items()}})
            elif "setup" in req:
                run = None  # frees the previous optimizer's memory first
                run = Run(cases[req["setup"]], req)
                reply({"ok": True})
            else:
                reply({"ms": run.step()})
        except Exception as e:  # reported to bocb, which names the optimizer
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()

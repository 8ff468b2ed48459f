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
  -> {"ok": true, "path": PATH}   random parameters and gradients, a new
     optimizer; on CUDA the fastest of the class's execution paths (`fused`,
     `foreach`, or its `default`) after a short trial of each, named in PATH
     With "torchscript": PATH and "hparams": {...} in the request: a user's
     TorchScript optimizer (bocb's `torchscript:PATH`), called from python
     as bocb calls it
  <- {"step": true}
  -> {"ms": STEP_TIME}     any reply may instead be {"error": MESSAGE}
"""

import importlib
import inspect
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


def execution_paths(cls, device):
    """(name, constructor switches) of the class's execution paths to try on
    `device`: on CUDA its fused kernel and its multi-tensor (foreach) path
    where the constructor takes them, then its own default."""
    if device.type != "cuda":
        return [("default", {})]
    accepted = inspect.signature(cls.__init__).parameters
    paths = [(name, {name: True}) for name in ("fused", "foreach") if name in accepted]
    return paths + [("default", {})]


class Run:
    """One reference optimizer over random parameters with fixed gradients."""

    TRIAL_STEPS = 5

    def __init__(self, case, req):
        import torch

        self.torch = torch
        path, kwargs, options = case
        self.device = torch.device(req["device"])
        self.shapes, self.decay = req["shapes"], req["decay"]
        self.step_kwargs = options.get("step_kwargs", {})
        self.every = options.get("hessian_every")
        self.steps = 0
        cls = reference_class(path)
        ctor_kwargs = {key: tuple(v) if key == "betas" else v for key, v in kwargs.items()}
        paths = execution_paths(cls, self.device)
        if len(paths) == 1:
            self.path = "default"
            self.opt, self.hessian = self.build(cls, ctor_kwargs)
            return
        timed = []
        for name, switches in paths:
            try:
                opt, hessian = self.build(cls, {**ctor_kwargs, **switches})
                for _ in range(2):
                    self.run(opt, hessian, 0)
                ms = min(self.run(opt, hessian, i + 1) for i in range(self.TRIAL_STEPS))
            except (RuntimeError, ValueError, TypeError) as e:
                if name == "default":
                    raise
                print(f"{path} {name}: {e}", file=sys.stderr)
                continue
            timed.append((ms, name, opt, hessian))
        _, self.path, opt, _ = min(timed, key=lambda t: t[0])
        # A fresh optimizer of the chosen path: the trial's steps must not
        # move the step count that decides when it wants a Hessian.
        del timed, opt
        self.opt, self.hessian = self.build(cls, {**ctor_kwargs, **dict(paths)[self.path]})

    def build(self, cls, ctor_kwargs):
        """A new optimizer over fresh random parameters with fixed gradients."""
        torch = self.torch
        gen = torch.Generator().manual_seed(0)
        params = [
            torch.randn(shape, generator=gen).to(self.device).requires_grad_() for shape in self.shapes
        ]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(self.device)
        decay = [p for p, d in zip(params, self.decay) if d]
        no_decay = [p for p, d in zip(params, self.decay) if not d]
        # The same split as bocb's ParamSet: no weight decay on biases and norms.
        groups = [{"params": decay}] if decay else []
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        opt = cls(groups, **ctor_kwargs)
        # One estimate per parameter in param_groups order, as step() takes it.
        hessian = (
            [torch.rand(p.shape, generator=gen).add_(0.1).to(self.device) for p in decay + no_decay]
            if self.every
            else None
        )
        return opt, hessian

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def run(self, opt, hessian, step):
        """Milliseconds of step number `step` of `opt`."""
        kwargs = dict(self.step_kwargs)
        if self.every and step % self.every == 0:
            kwargs["hessian"] = hessian
        self.sync()
        start = time.perf_counter()
        opt.step(**kwargs)
        self.sync()
        return (time.perf_counter() - start) * 1e3

    def step(self):
        ms = self.run(self.opt, self.hessian, self.steps)
        self.steps += 1
        return ms


class ScriptRun:
    """A `torchscript:PATH` optimizer called from python as bocb calls it:
    parameters in bocb's order (the weight-decay group first), one step
    under no_grad with the hyperparameters as 0-dim float64 tensors."""

    def __init__(self, req):
        import torch
        self.torch = torch
        self.device = torch.device(req["device"])
        self.path = "default"
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=gen).to(self.device) for shape in req["shapes"]]
        grads = [torch.randn(p.shape, generator=gen).to(self.device) for p in params]
        decay = req["decay"]
        order = [i for i, d in enumerate(decay) if d] + [i for i, d in enumerate(decay) if not d]
        hparams = req["hparams"]
        self.params = [params[i] for i in order]
        self.grads = [grads[i] for i in order]
        self.weight_decays = [hparams.get("weight_decay", 0.0) if decay[i] else 0.0 for i in order]
        self.lr = hparams["lr"]
        self.hparams = {k: torch.tensor(v, dtype=torch.float64) for k, v in hparams.items()}
        self.module = torch.jit.load(req["torchscript"], map_location=self.device)
        self.steps = 0

    def step(self):
        torch = self.torch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with torch.no_grad():
            self.module.step(self.params, self.grads, self.weight_decays, self.lr, self.steps + 1, self.hparams)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
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
                run = ScriptRun(req) if "torchscript" in req else Run(cases[req["setup"]], req)
                reply({"ok": True, "path": run.path})
            else:
                reply({"ms": run.step()})
        except Exception as e:  # reported to bocb, which names the optimizer
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()

"""The reference side of `bocb bench train` (embedded in the `bocb` binary).

Times training steps (forward in train mode, cross-entropy, backward, the
optimizer's step) of the PyTorch definition of a registry backbone, one at a
time, so that bocb can alternate its own steps with them and both sides see
the same machine load. Full-size models come from
scripts/reference_backbones.py (`build`), `@micro` presets from
scripts/export_backbone_fixtures.py (`FIXTURES`), and the optimizer is the
first case of scripts/record_optim_cases.py, read as bench_optim.py reads it.
`bocb` sends those scripts' sources, so the binary needs no checkout.
`bocb` starts it as `PYTHON -c SOURCE` and talks JSON lines:

  -> (on start)  {"ready": TORCH_VERSION}, or {"missing": [MODULE, ...]}
  <- {"modules": [[NAME, SOURCE], ...]}   imported under NAME, in order
  -> {"ok": true}
  <- {"cases": RECORDER_SOURCE}           answered as bench_optim.py does
  -> {"cases": {NAME: {"class": PATH, "kwargs": {...}}}}
  <- {"setup": BACKBONE, "classes": N, "batch": B, "optimizer": NAME,
      "device": DEVICE, "threads": T, "channels_last": BOOL,
      "precision": "fp32" | "bf16"}   bf16: forward and loss under autocast
  -> {"params": COUNT, "side": INPUT_SIDE, "threads": T}
  <- {"step": true}
  -> {"ms": STEP_TIME}     any reply may instead be {"error": MESSAGE}
"""

import importlib
import json
import sys
import time
import types

REFERENCE_MODULES = ["torch", "torchvision", "timm", "safetensors", "pytorch_optimizer"]


def reply(obj):
    print(json.dumps(obj), flush=True)


def install_modules(modules):
    for name, source in modules:
        module = types.ModuleType(name)
        module.__file__ = f"scripts/{name}.py"
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)


def reference_model(name, classes):
    """(model, input side) of a registry name, as the scripts define it."""
    if name.endswith("@micro"):
        import export_backbone_fixtures as fixtures

        if name not in fixtures.FIXTURES:
            raise LookupError(f"no {name} in FIXTURES of scripts/export_backbone_fixtures.py")
        # The fixture constructors read the class count from the module.
        fixtures.CLASSES = classes
        return fixtures.FIXTURES[name]()
    import reference_backbones

    if name not in reference_backbones.FULL:
        raise LookupError(f"no {name} in FULL of scripts/reference_backbones.py")
    return reference_backbones.build(name, classes)


class Run:
    """One reference model and optimizer training on a fixed random batch."""

    def __init__(self, req, case):
        import torch
        from bench_optim import reference_class

        path, kwargs, options = case
        if options.get("hessian_every"):
            raise ValueError(f"{req['optimizer']} needs a Hessian estimate, which bench train does not time")
        torch.set_num_threads(req["threads"])
        self.device = torch.device(req["device"])
        torch.manual_seed(0)
        model, self.side = reference_model(req["setup"], req["classes"])
        self.model = model.to(self.device).train()
        # The same split as bocb's ParamSet: no weight decay on biases, norms
        # and the model's own exemptions.
        exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.ndim <= 1 or name in exempt else decay).append(p)
        groups = [{"params": decay}] if decay else []
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        ctor_kwargs = {key: tuple(v) if key == "betas" else v for key, v in kwargs.items()}
        self.opt = reference_class(path)(groups, **ctor_kwargs)
        self.step_kwargs = options.get("step_kwargs", {})
        self.params = sum(p.numel() for p in model.parameters())
        gen = torch.Generator().manual_seed(1)
        batch = req["batch"]
        self.images = torch.randn(batch, 3, self.side, self.side, generator=gen).to(self.device)
        self.labels = torch.randint(req["classes"], (batch,), generator=gen).to(self.device)
        if req.get("channels_last"):
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.cross_entropy = torch.nn.functional.cross_entropy
        self.synchronize = torch.cuda.synchronize
        self.autocast = lambda: torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=req.get("precision") == "bf16"
        )

    def sync(self):
        if self.device.type == "cuda":
            self.synchronize(self.device)

    def step(self):
        self.sync()
        start = time.perf_counter()
        self.opt.zero_grad()
        with self.autocast():
            loss = self.cross_entropy(self.model(self.images), self.labels)
        loss.backward()
        self.opt.step(**self.step_kwargs)
        self.sync()
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
            if "modules" in req:
                install_modules(req["modules"])
                reply({"ok": True})
            elif "cases" in req:
                from bench_optim import load_cases

                cases = load_cases(req["cases"])
                reply({"cases": {n: {"class": c[0], "kwargs": c[1]} for n, c in cases.items()}})
            elif "setup" in req:
                run = None  # frees the previous model's memory first
                run = Run(req, cases[req["optimizer"]])
                reply({"params": run.params, "side": run.side, "threads": torch.get_num_threads()})
            else:
                reply({"ms": run.step()})
        except Exception as e:  # reported to bocb, which names the backbone
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()

# bocb: the two quick-start commands are `make demo` and `make test`.
# Every target does the set-up it needs and skips what is already done.

TORCH_VERSION := 2.11.0
VENV          := .venv
PYTHON        := $(VENV)/bin/python
TORCH_STAMP   := $(VENV)/.torch-$(TORCH_VERSION)
# What the benches and scripts/gpu-check compare against, pinned with torch so
# that pip cannot move it (a plain `pip install timm` upgrades torch).
BENCH_DEPS    := torch==$(TORCH_VERSION) torchvision==0.26.0 timm==1.0.31 pytorch_optimizer==4.1.0
BENCH_STAMP   := $(VENV)/.bench-deps-$(TORCH_VERSION)
BOCB          := target/release/bocb
DEMO_STORE    ?= bocb-data
DEMO_DATA     ?= data/synth-demo
BOOTSTRAP_PY  ?= python3

# torch-sys finds libtorch through the `python3` on PATH (LIBTORCH_USE_PYTORCH).
export LIBTORCH_USE_PYTORCH := 1
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv bench-deps build demo test test-slurm lint light fmt clean-demo

## venv: project-local python with torch==$(TORCH_VERSION) (libtorch for tch; about 5 GB).
venv: $(TORCH_STAMP)

$(TORCH_STAMP):
	@command -v $(BOOTSTRAP_PY) >/dev/null || { echo "python3 is needed to create $(VENV); install it (apt-get install python3 python3-venv) and run 'make venv' again."; exit 1; }
	@test -x $(PYTHON) || $(BOOTSTRAP_PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q torch==$(TORCH_VERSION)
	@$(PYTHON) scripts/check_torch.py $(TORCH_VERSION)
	@touch $@

## bench-deps: the benches' reference packages, torch kept at $(TORCH_VERSION).
bench-deps: $(BENCH_STAMP)

$(BENCH_STAMP): $(TORCH_STAMP)
	$(PYTHON) -m pip install --disable-pip-version-check -q $(BENCH_DEPS)
	@$(PYTHON) scripts/check_torch.py $(TORCH_VERSION)
	@touch $@

## build: target/release/bocb, with an rpath to the venv's torch/lib
## (the end-to-end tests drive this binary).
build: $(TORCH_STAMP)
	@$(PYTHON) scripts/check_torch.py $(TORCH_VERSION)
	cargo build --release -p bocb-tuner --bin bocb

## demo: synthetic CIFAR-100-format data, a real 5x5 tuning run, and its report.
demo: build
	@test -f $(DEMO_DATA)/train.bin || $(BOCB) data synth --out $(DEMO_DATA) --classes 10 --train 2000 --test 500 --seed 0
	$(BOCB) run examples/demo.yaml --store $(DEMO_STORE)

## test: formatting, lints and the whole test suite, on CPU (scripts/gpu-check
## at its quick sizes included, hence the reference packages).
test: build lint light bench-deps
	cargo test --workspace --release

## test-slurm: the Slurm launcher's tests (tests/slurm.rs) on a single-node
## cluster on loopback (scripts/slurm-loopback: installs Slurm when root,
## MaxArraySize=4, no accounting storage), stopped after, pass or fail.
test-slurm: build
	@if ! scripts/slurm-loopback start; then \
		echo "SKIPPED the Slurm tests: no Slurm cluster could be installed or started here (see above); as root, 'make test-slurm' sets one up"; \
		scripts/slurm-loopback stop >/dev/null 2>&1 || true; exit 0; fi; \
	BOCB_SLURM_TESTS=1 cargo test --release --test slurm -- --nocapture; \
	status=$$?; scripts/slurm-loopback stop; exit $$status

lint: $(TORCH_STAMP)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --release -- -D warnings

## light: the bocb without training (`--no-default-features`) proven free of
## libtorch: no tch or torch-sys in its dependency tree, and without the
## variables that point torch-sys at the venv its lints pass, its library
## tests (search, service; bocb-analysis: imports, analyses, reports;
## bocb-spec: the experiment file's schema) run, and it builds
## target/light/release/bocb (which tests/light.rs serves with).
light:
	@if cargo tree -p bocb-tuner --no-default-features -e normal,build --prefix none | grep -E '^(tch|torch-sys) '; then \
		echo "the build without training depends on libtorch (above)"; exit 1; fi
	env -u LIBTORCH_USE_PYTORCH -u LIBTORCH -u VIRTUAL_ENV \
		sh -c 'cargo clippy -p bocb-tuner -p bocb-analysis -p bocb-spec --no-default-features --target-dir target/light --all-targets --release -- -D warnings && \
		cargo test -p bocb-tuner -p bocb-analysis -p bocb-spec --no-default-features --target-dir target/light --release --lib && \
		cargo build -p bocb-tuner --no-default-features --target-dir target/light --release --bin bocb'

fmt:
	cargo fmt --all

clean-demo:
	rm -rf $(DEMO_STORE) $(DEMO_DATA)

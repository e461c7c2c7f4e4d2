"""The engine: everything about how a grid runs, behind `GridRunner` (`runner`).

- `runner`: `GridRunner` + `ExecutionConfig`: path choice, fallback, checkpoints, compile and autocast, sharding.
- `loop`: `run_grid`, the loop over the points (deferred loss reads, CUDA-graph replays, checkpoint saves).
- `editors`: `WeightEditor` / `editing` (weights set in place from saved originals, restored bit for bit).
- `low_rank`: `LowRankEditor` (low-rank directions as a forward path); `stacked`: `StackedPoints` (vmap) and
  `attention` (SDPA over stacked points); `graphs`: the one-point evaluation as a CUDA graph.
- `policy`: `BatchingPolicy` / `POLICY`, every tuned threshold in one object; `modes`: compile and autocast;
  `distributed`: several processes; `checkpoint`: partial grids saved and resumed.

The names below are what code imports from `hf_landscape.engine`; the thresholds' constant names
(`engine.MERGE_MIN_RATIO`, ...) read `POLICY` live.
"""

from typing import Any

from ..grid import MAX_ABS_COORDINATE, MAX_GRID_POINTS, check_grid_size, grid_axis, max_grid_points
from .checkpoint import GridCheckpoint, tensor_fingerprint
from .distributed import distributed_state
from .editors import WeightEditor, editing, eval_mode, evaluate
from .graphs import GraphedLoss, capture_loss
from .loop import run_grid
from .low_rank import LowRankEditor, low_rank_editing
from .modes import AUTOCAST_DTYPES, compiled_forward, compiling
from .policy import LEGACY_NAMES, POLICY, BatchingPolicy, available_memory, evaluation_flop, points_per_forward
from .runner import ExecutionConfig, GridRunner
from .stacked import StackedPoints

__all__ = [
    "AUTOCAST_DTYPES",
    "MAX_ABS_COORDINATE",
    "MAX_GRID_POINTS",
    "POLICY",
    "BatchingPolicy",
    "ExecutionConfig",
    "GraphedLoss",
    "GridCheckpoint",
    "GridRunner",
    "LowRankEditor",
    "StackedPoints",
    "WeightEditor",
    "available_memory",
    "capture_loss",
    "check_grid_size",
    "compiled_forward",
    "compiling",
    "distributed_state",
    "editing",
    "eval_mode",
    "evaluate",
    "evaluation_flop",
    "grid_axis",
    "low_rank_editing",
    "max_grid_points",
    "points_per_forward",
    "run_grid",
    "tensor_fingerprint",
]


def __getattr__(name: str) -> Any:
    if name in LEGACY_NAMES:  # e.g. MERGE_MIN_RATIO: the live value of POLICY.merge_min_ratio
        return getattr(POLICY, LEGACY_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

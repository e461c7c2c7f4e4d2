"""Several processes, one grid: `distributed_state` finds the launcher's processes, `gather` merges the points each
computed, so every process returns the whole surface (plain tensor all-gathers; nothing is serialized)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch


def distributed_state() -> Any:
    """The `accelerate.PartialState` when this process was started by `accelerate launch` or `torchrun`
    with more than one process, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU-only machines, NCCL on GPUs
    return state if state.num_processes > 1 else None


def gather(
    state: Any, values: np.ndarray, done: np.ndarray, metrics: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Merge the points every process computed, with plain tensor all-gathers (no Python objects are serialized)."""
    import torch.distributed as dist

    device = state.device
    # Metric names can differ only if a process got no point; agree on the union through padded bytes.
    raw = json.dumps(sorted(metrics)).encode()
    size = torch.tensor([len(raw)], device=device)
    sizes = [torch.zeros_like(size) for _ in range(state.num_processes)]
    dist.all_gather(sizes, size)
    width = int(max(int(t) for t in sizes))
    buf = torch.zeros(width, dtype=torch.uint8, device=device)
    buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8, device=device)
    bufs = [torch.zeros_like(buf) for _ in range(state.num_processes)]
    dist.all_gather(bufs, buf)
    names = sorted({n for b, k in zip(bufs, sizes) for n in json.loads(bytes(b[: int(k)].tolist()).decode())})
    n = len(values)
    local = np.stack([values, done.astype(np.float64)] + [metrics.get(m, np.full(n, np.nan)) for m in names])
    mine = torch.from_numpy(local).to(device)
    parts = [torch.empty_like(mine) for _ in range(state.num_processes)]
    dist.all_gather(parts, mine)
    merged_values = values.copy()
    merged = {m: np.full(n, np.nan) for m in names}
    for part in (p.cpu().numpy() for p in parts):
        mask = part[1] == 1.0
        merged_values[mask] = part[0][mask]
        for i, m in enumerate(names):
            merged[m][mask] = part[2 + i][mask]
    return merged_values, merged

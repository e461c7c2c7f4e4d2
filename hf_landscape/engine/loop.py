"""The grid loop: evaluate the objective at every point, store the values, checkpoint, gather; `run_grid`.

The caller puts the weights at each point (`set_point`, from the saved originals: `editors.WeightEditor`,
`low_rank.LowRankEditor`, an interpolation) or evaluates several points per forward (`stacked.StackedPoints`). On
a GPU the loop reads many points' losses in one host sync (`POLICY.deferred_points`) and replays the one-point
evaluation recorded as a CUDA graph (`graphs`). Which path a grid takes is the runner's choice (`runner`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import redact
from ..objectives.base import LossTensor, Objective, StackedEvaluation, supports
from .checkpoint import GridCheckpoint
from .distributed import gather
from .graphs import capture_loss
from .policy import POLICY
from .stacked import StackedPoints

logger = logging.getLogger(__name__)


def run_grid(
    model: torch.nn.Module,
    objective: Objective,
    points: Sequence[tuple[float, ...]],
    set_point: Callable[[tuple[float, ...]], None] | None,
    *,
    progress: bool = True,
    desc: str = "landscape",
    checkpoint: GridCheckpoint | None = None,
    stacked: StackedPoints | None = None,
    chunk: int = 1,
    shard: Any = None,
    graphs: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """Evaluate `objective` at every point; `set_point` puts the weights there (from the original), or
    `stacked` evaluates `chunk` points per forward without touching the weights.

    With `graphs` (one point per forward, loss only, on a GPU), the evaluation is recorded as a CUDA graph at
    the first point and replayed at the others (`graphs.capture_loss`; `set_point` must write the weights in
    place); where it cannot be recorded, every point is evaluated eagerly.

    With a `checkpoint`, its folder is locked for the run, points already saved by an earlier run of the same
    configuration are loaded instead of computed, and progress is saved every `checkpoint.every` points, when the
    loop stops early and when the grid is complete. The partial files stay until the surface is saved into that
    folder (`Surface.save_pretrained`), so no finished point is lost, and running the grid again evaluates
    nothing.

    With `shard` (an `accelerate.PartialState` of several processes, see `distributed.distributed_state`), process i
    evaluates the points i, i + world, ... and the values are gathered so that every process returns the
    whole grid (checkpoints are then kept per process).

    Returns:
        values (float64, one per point; NaN/inf kept), metrics (name -> one value per point), wall seconds.
    """
    with checkpoint.locked() if checkpoint is not None else contextlib.nullcontext():
        return _run_points(
            model,
            objective,
            points,
            set_point,
            progress=progress,
            desc=desc,
            checkpoint=checkpoint,
            stacked=stacked,
            chunk=chunk,
            shard=shard,
            graphs=graphs,
        )


def _run_points(
    model: torch.nn.Module,
    objective: Objective,
    points: Sequence[tuple[float, ...]],
    set_point: Callable[[tuple[float, ...]], None] | None,
    *,
    progress: bool,
    desc: str,
    checkpoint: GridCheckpoint | None,
    stacked: StackedPoints | None,
    chunk: int,
    shard: Any,
    graphs: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    n = len(points)
    if checkpoint is not None:
        values, done, metrics = checkpoint.load(n)
    else:
        values, done, metrics = np.full(n, np.nan, dtype=np.float64), np.zeros(n, dtype=bool), {}
    todo = [k for k in range(n) if not done[k]]
    if shard is not None:
        todo = todo[shard.process_index :: shard.num_processes]
    step = chunk if stacked is not None else 1
    if step > 1 and todo:
        # Chunks of (nearly) equal size, so that one shape serves every forward (cuDNN builds an attention plan per
        # shape, torch.compile a graph): 441 points at up to 64 per forward run as 7 x 63, not 6 x 64 + 57.
        chunks = -(-len(todo) // step)
        step = -(-len(todo) // chunks)
    # Loss only (no metrics), on a GPU: each point's (or chunk's) loss stays on the device and the host reads
    # `POLICY.deferred_points` forwards' losses in one sync, so it queues the next point's weight update (or the next
    # chunk's stacked weights) and forward while the GPU still computes (stream-ordered after the forward that
    # reads them).
    deferred = POLICY.defers_reads(model, objective) and (stacked is None or supports(objective, StackedEvaluation))
    pending: list[tuple[list[int], torch.Tensor]] = []  # grid indices, their losses (on the device)
    graphed: Any = None  # the recorded evaluation (`graphs`), made at the first point
    record = graphs and deferred
    start = time.perf_counter()
    bar = tqdm(total=n, initial=n - len(todo), desc=desc, unit="pt", disable=not progress, leave=False)
    unsaved = 0
    synced = True  # whether the last save of the checkpoint (if any) was durable

    def flush() -> int:
        if not pending:
            return 0
        read = torch.cat([t.reshape(-1).to(pending[0][1].device) for _, t in pending]).tolist()
        keys = [k for ks, _ in pending for k in ks]
        for k, value in zip(keys, read):
            values[k] = value
            done[k] = True
        pending.clear()
        bar.update(len(keys))
        return len(keys)

    def queued() -> int:
        return sum(len(ks) for ks, _ in pending)

    try:
        for first in range(0, len(todo), step):
            ks = todo[first : first + step]
            with torch.inference_mode():
                if stacked is not None and deferred:
                    pending.append((ks, stacked.loss_tensor(objective, [points[k] for k in ks])))
                    if len(pending) >= POLICY.deferred_points:
                        unsaved += flush()
                    results = []
                elif stacked is not None:
                    results = stacked.evaluate(objective, [points[k] for k in ks])
                else:
                    set_point(points[ks[0]])  # type: ignore[misc]
                    if record:
                        graphed, record = capture_loss(model, objective), False
                    if deferred:
                        loss = graphed() if graphed is not None else cast(LossTensor, objective).loss_tensor(model)
                        pending.append((ks, loss))
                        if len(pending) >= POLICY.deferred_points:
                            unsaved += flush()
                        results = []
                    else:
                        results = [objective.evaluate(model)]
            for k, result in zip(ks, results):
                values[k] = result.loss
                for name, value in result.metrics.items():
                    metrics.setdefault(name, np.full(n, np.nan, dtype=np.float64))[k] = value
                done[k] = True
            if results:
                bar.update(len(ks))
                unsaved += len(ks)
            if checkpoint is not None and unsaved + queued() >= checkpoint.every:
                unsaved += flush()
                checkpoint.save(values, done, metrics, durable=False, elapsed=time.perf_counter() - start)
                unsaved, synced = 0, False
        unsaved += flush()
    except BaseException:
        try:
            unsaved += flush()  # the points already queued were computed at their own weights: keep them
        except Exception as err:  # e.g. the device itself failed: those points are lost, the rest is kept
            logger.error("could not read the last %d queued points while stopping: %s", len(pending), redact(err))
        if checkpoint is not None and (unsaved or not synced):
            try:
                checkpoint.save(values, done, metrics, elapsed=time.perf_counter() - start)
            except Exception as err:  # keep the original error; the earlier checkpoint is intact
                logger.error("could not save the partial grid while stopping: %s", redact(err))
        raise
    finally:
        bar.close()
        if graphed is not None:
            graphed.close()
    if checkpoint is not None and (unsaved or not synced):
        # the whole grid, durably: kept until the surface is saved there
        checkpoint.save(values, done, metrics, elapsed=time.perf_counter() - start)
    if shard is not None:
        values, metrics = gather(shard, values, done, metrics)
    wall = time.perf_counter() - start
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        logger.warning("%d of %d points gave a non-finite loss (kept as NaN/inf in the surface).", bad, n)
    logger.info("evaluated %d points in %.1f s (%.3f s/point)", len(todo), wall, wall / max(len(todo), 1))
    return values, metrics, wall

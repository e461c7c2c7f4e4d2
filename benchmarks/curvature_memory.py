"""Where a finite-difference Hessian-vector product's memory goes, stage by stage, against one gradient's (CPU).

Each task runs in a fresh process on `curvature_cost.py`'s models (random weights, `--sequences` × `--tokens` random
tokens) with every parameter selected, from the state `curvature_cost.py` measures from (model, data and, for the
product, the vector v already made). At each stage it reads, in GiB above that start: the resident set ("rss"), its
peak since the previous stage ("rss peak", sampled every millisecond), the bytes malloc has handed out ("in use",
glibc's `mallinfo2`: in-use heap plus mapped blocks) and their peak since the previous stage, and the heap malloc has
taken from the system ("heap", in use or freed and kept). Stages inside a product or a gradient are marked by wrapping
the objective's `loss_terms` (before and after each forward, after each backward) and the weight editor's moves.

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 python benchmarks/curvature_memory.py --models smollm2
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import torch
from curvature_cost import _MALLINFO2, CONFIGS, _in_use, _rss, build, rademacher

from hf_landscape.curvature import hvp, operators
from hf_landscape.curvature.hvp import FlatParameters, differentiable, grad_into, select
from hf_landscape.engine.editors import WeightEditor

GIB = 2**30


class Stages:
    """Reads memory at marked stages, and its peaks between them from a sampling thread."""

    def __init__(self) -> None:
        self.rss0, self.in_use0, self.heap0 = _rss(), _in_use(), _heap()
        self.rss_peak, self.in_use_peak = self.rss0, self.in_use0
        self.rows: list[tuple[str, float, float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.rss_peak, self.in_use_peak = max(self.rss_peak, _rss()), max(self.in_use_peak, _in_use())

    def mark(self, stage: str) -> None:
        rss, in_use = _rss(), _in_use()
        self.rss_peak, self.in_use_peak = max(self.rss_peak, rss), max(self.in_use_peak, in_use)
        self.rows.append(
            (
                stage,
                (rss - self.rss0) / GIB,
                (self.rss_peak - self.rss0) / GIB,
                (in_use - self.in_use0) / GIB,
                (self.in_use_peak - self.in_use0) / GIB,
                (_heap() - self.heap0) / GIB,
            )
        )
        self.rss_peak, self.in_use_peak = rss, in_use

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _heap() -> float:
    return float("nan") if _MALLINFO2 is None else float(_MALLINFO2().arena)


@contextlib.contextmanager
def marked(stages: Stages) -> Iterator[None]:
    """Marks around each forward and backward of `loss_terms` and each move of the weight editor."""
    terms = operators.loss_terms

    def loss_terms(model: torch.nn.Module, objective: Any) -> Iterator[torch.Tensor]:
        stages.mark("  before the forward")
        for term in terms(model, objective):
            stages.mark("  after the forward")
            yield term
            stages.mark("  after the backward")

    def wrap(method: Callable[..., None], stage: str) -> Callable[..., None]:
        def wrapped(*args: Any) -> None:
            method(*args)
            stages.mark(stage)

        return wrapped

    saved = WeightEditor.set_linear, WeightEditor.restore
    operators.loss_terms = hvp.loss_terms = loss_terms  # type: ignore[assignment]
    WeightEditor.set_linear = wrap(saved[0], "  weights set to θ + cv")  # type: ignore[method-assign]
    WeightEditor.restore = wrap(saved[1], "  weights copied back")  # type: ignore[method-assign]
    try:
        yield
    finally:
        operators.loss_terms = hvp.loss_terms = terms  # type: ignore[assignment]
        WeightEditor.set_linear, WeightEditor.restore = saved  # type: ignore[method-assign]


def run(model_name: str, task: str, sequences: int, tokens: int, rounds: int) -> list[tuple]:
    spec = dict(model=model_name, dtype="float32", device="cpu", sequences=sequences, tokens=tokens, batch_size=8)
    model, objective = build(spec)
    flat = FlatParameters(select(model, None, None, True))
    v = rademacher(flat, 0) if task == "fd_hvp" else None
    stages = Stages()
    stages.mark("start")
    with marked(stages):
        if task == "gradient":
            with differentiable(model, flat.params):
                for round_ in range(rounds):
                    g = grad_into(model, objective, flat)
                    stages.mark(f"gradient {round_} returned")
                    del g
                    stages.mark(f"gradient {round_} dropped")
        else:
            with operators.operator_for(model, objective, flat, hvp="finite_difference") as op:
                stages.mark("operator active (weights saved)")
                for round_ in range(rounds):
                    hv = op(v)
                    stages.mark(f"product {round_} returned")
                    del hv
                    stages.mark(f"product {round_} dropped")
    stages.mark("weights given back")
    stages.stop()
    return [(flat.size * 4 / GIB,), *stages.rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for name in args.models.split(","):
        for task in ("gradient", "fd_hvp"):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                (vector,), *rows = pool.submit(run, name, task, args.sequences, args.tokens, args.rounds).result()
            print(f"\n{name}, {task}, a float32 vector of the selection: {vector:.3f} GiB")
            print(f"{'stage':34s} {'rss':>7s} {'rss peak':>9s} {'in use':>7s} {'in-use peak':>12s} {'heap':>7s}")
            for stage, *values in rows:
                print(
                    f"{stage:34s} {values[0]:7.3f} {values[1]:9.3f} {values[2]:7.3f} {values[3]:12.3f} {values[4]:7.3f}"
                )
            print(f"{'peak':34s} {'':7s} {max(r[2] for r in rows):9.3f} {'':7s} {max(r[4] for r in rows):12.3f}")


if __name__ == "__main__":
    main()

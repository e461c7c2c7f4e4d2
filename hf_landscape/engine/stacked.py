"""Several grid points in one forward: `StackedPoints` (`torch.func.vmap` over stacked perturbed weights).

What does not live here: SDPA over the stacked points (`attention`), how many points per forward (`policy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from ..errors import redact
from ..objectives.base import Evaluation, Objective, StackedEvaluation
from .attention import stacked_attention
from .policy import POLICY

logger = logging.getLogger(__name__)


class StackedPoints:
    """Evaluates k grid points in one forward: k perturbed copies of the selected weights, stacked on a new
    leading axis, run through `torch.func.vmap` over `torch.func.functional_call`. Matrix products become
    batched ones (one launch for k points instead of k), which is what small models on a GPU need; SDPA
    attention runs as one call over all k points (`attention.stacked_attention`). The model's own weights are
    never written on this path.

    Args:
        model: the model.
        params: name -> parameter of the weights the directions perturb.
        directions: per axis, the direction tensors in the order of `params`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: dict[str, torch.nn.Parameter],
        directions: Sequence[list[torch.Tensor]],
        compile: bool = False,
    ) -> None:
        from torch.func import functional_call, vmap

        self.model = model
        self.names = list(params)
        self.originals = [p.detach() for p in params.values()]
        self.directions = directions
        self.one_call_attention = True  # False after it failed once for this model (see `evaluate`)

        def run(stacked: dict[str, torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
            one = lambda weights: functional_call(model, weights, (), inputs).logits  # noqa: E731
            return vmap(one, randomness="error")(stacked)

        # compile: one graph for the k points' forward (elementwise ops fused, no per-op dispatch through vmap);
        # recompiled per batch shape and chunk size.
        self._run = torch.compile(run, mode=POLICY.stacked_compile_mode, dynamic=False) if compile else run

    def stacked(self, coords: Sequence[tuple[float, ...]]) -> dict[str, torch.Tensor]:
        """(θ₀ + Σ_{i≥1} cᵢ·dᵢ) + c₀·d₀ for every point, shape (k, *weight.shape).

        Each point's slice is computed with the one-point path's arithmetic (`WeightEditor.set_linear`): θ₀
        copied, then `add(d, alpha=c)` per axis, the later axes first, zero coordinates skipped, so a point's
        weights are bit for bit the ones the one-point path sets (a float32 coefficient and one rounding per
        axis for bf16 weights on a GPU). Multi-tensor (`_foreach`) kernels keep it to a few launches per point.
        """
        out = {name: w.new_empty((len(coords), *w.shape)) for name, w in zip(self.names, self.originals)}
        order = [*range(1, len(self.directions)), 0]  # the later axes first, as `WeightEditor` does
        for j, point in enumerate(coords):
            views = [out[name][j] for name in self.names]
            torch._foreach_copy_(views, self.originals)
            for axis in order:
                c = float(point[axis])
                if c != 0.0:
                    torch._foreach_add_(views, self.directions[axis], alpha=c)
        return out

    def evaluate(self, objective: Objective, coords: Sequence[tuple[float, ...]]) -> list[Evaluation]:
        """The evaluations at `coords`, read by the host (one sync)."""
        return self._points(cast(StackedEvaluation, objective).evaluate_points, coords)

    def loss_tensor(self, objective: Objective, coords: Sequence[tuple[float, ...]]) -> torch.Tensor:
        """The losses at `coords` as a float64 tensor on the device, not yet read by the host (`run_grid` reads
        many chunks in one sync, so the host builds the next chunk while the GPU computes this one)."""
        return self._points(cast(StackedEvaluation, objective).loss_points, coords)

    def _points(self, evaluate_points: Callable[..., Any], coords: Sequence[tuple[float, ...]]) -> Any:
        stacked = self.stacked(coords)
        model = self.model

        def forward(inputs: dict[str, Any]) -> torch.Tensor:
            return self._run(stacked, inputs)

        # SDPA has no vmap batching rule (vmap would loop over the k points): run it as one call on k·B sequences.
        if self.one_call_attention:
            try:
                with stacked_attention(model):
                    return evaluate_points(model, forward, len(coords))
            except (torch.OutOfMemoryError, KeyboardInterrupt):
                raise
            except Exception as err:  # an architecture that reads its attention setting its own way
                logger.warning(
                    "one-call SDPA over stacked points failed for %s (%s: %s); using vmap's own loop instead",
                    type(model).__name__,
                    type(err).__name__,
                    redact(err),
                )
                self.one_call_attention = False
        return evaluate_points(model, forward, len(coords))

"""Setting a model's weights to grid points in place, and back: `WeightEditor` and `editing`.

No model is ever copied. Selected parameters are saved once; every point is then set *from the saved original*
with fused `torch._foreach_*` ops (θ = θ₀ + α·δ + β·η), never accumulated from the previous point, so a point's
value does not depend on the path through the grid. The original weights are copied back, bit for bit, when the
block ends, raises, or is interrupted (`finally`), and every module's train/eval flag with them (`eval_mode`).
What does not live here: low-rank directions (`low_rank`), stacked points (`stacked`), the grid loop (`loop`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from ..objectives.base import eval_mode, evaluate
from .policy import POLICY

__all__ = ["WeightEditor", "editing", "eval_mode", "evaluate"]


class WeightEditor:
    """Sets the selected parameters of a model to points of a grid, and back.

    A point is always computed the same way, from the saved original: θ = (θ₀ + c₁·d₁ + ... + cₙ·dₙ) + c₀·d₀,
    the later axes first. On a plane walked row by row the bracket (the "row base") is the same for a whole
    row, so when the weights are small enough (`POLICY.row_cache_max_bytes`) it is kept and each point costs one
    fused pass, `torch.add(base, d₀, alpha=c₀, out=θ)`, instead of a copy and two adds; the arithmetic, and so
    every bit of the result, is the same either way.

    Args:
        params: name -> parameter of the model; each is saved (cloned) once on construction.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        self.names = list(params)
        self.params = [p.data for p in params.values()]
        self.originals = [p.detach().clone() for p in self.params]
        nbytes = sum(p.numel() * p.element_size() for p in self.params)
        self._row: list[torch.Tensor] | None = None
        self._row_key: tuple[float, ...] | None = None
        self._row_allowed = nbytes <= POLICY.row_cache_max_bytes

    @torch.no_grad()
    def set_linear(self, coords: Sequence[float], directions: Sequence[list[torch.Tensor]]) -> None:
        """θ = (θ₀ + Σ_{i≥1} cᵢ·dᵢ) + c₀·d₀, recomputed from θ₀ (see the class docstring)."""
        c0, rest = float(coords[0]), tuple(float(c) for c in coords[1:])
        if not any(rest):  # the bracket is θ₀ itself
            base = self.originals
        elif self._row_allowed:
            if self._row_key != rest or self._row is None:
                if self._row is None:
                    self._row = [o.clone() for o in self.originals]
                else:
                    torch._foreach_copy_(self._row, self.originals)
                for c, d in zip(rest, directions[1:]):
                    if c != 0.0:
                        torch._foreach_add_(self._row, d, alpha=c)
                self._row_key = rest
            base = self._row
        else:
            torch._foreach_copy_(self.params, self.originals)
            for c, d in zip(rest, directions[1:]):
                if c != 0.0:
                    torch._foreach_add_(self.params, d, alpha=c)
            if c0 != 0.0:
                torch._foreach_add_(self.params, directions[0], alpha=c0)
            return
        if c0 == 0.0:
            torch._foreach_copy_(self.params, base)
        else:
            for param, b, d0 in zip(self.params, base, directions[0]):
                torch.add(b, d0, alpha=c0, out=param)

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.params, self.originals)


@contextlib.contextmanager
def editing(model: torch.nn.Module, params: dict[str, torch.nn.Parameter]) -> Iterator[WeightEditor]:
    """Yield a `WeightEditor` for `params`; on exit, however it comes, restore the weights and every module's
    train/eval flag."""
    with eval_mode(model):
        editor = WeightEditor(params)
        try:
            yield editor
        finally:
            editor.restore()

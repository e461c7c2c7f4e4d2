"""Token-level loss maps: how each predicted token's loss changes as the weights move along a direction.

A per-example or mean loss hides which tokens make a direction sharp. `TokenLossMap` holds the loss of
every predicted token at several points θ₀ + α·d of a line (`LandscapeProbe.token_loss_map`), ranks tokens
by how much their loss rises, and draws one example as a heatmap: one row per α, one column per token,
coloured by the rise over the centre's loss (`plotting.plot_token_map`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import result_fields
from ..errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..objectives.base import Evaluation, TokenView


@dataclass
class TokenLossMap:
    """Per-token losses along a line θ₀ + α·d.

    Args:
        alphas: the points α, increasing, 0 among them.
        losses: per example, a `(len(alphas), tokens)` array: the loss of each predicted token at each α
            (column j predicts token j + 1 of the example; NaN where the objective masks it).
        token_ids: per example, the ids of the predicted tokens (the example's ids from the second on).
        tokens: the same, decoded one by one when the objective has a tokenizer.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape.tokens import TokenLossMap
    >>> losses = [np.array([[2.0, 1.0], [1.0, 1.0], [1.5, 4.0]])]        # α = -1, 0, 1; two tokens
    >>> m = TokenLossMap(np.array([-1.0, 0.0, 1.0]), losses, [[7, 9]], [["a", "b"]])
    >>> m.rise()[0].tolist()                                               # the rise over the centre
    [[1.0, 0.0], [0.0, 0.0], [0.5, 3.0]]
    >>> [(r["token"], r["rise"]) for r in m.top(1, alpha=1.0)]
    [('b', 3.0)]

    ```
    """

    alphas: np.ndarray
    losses: list[np.ndarray]
    token_ids: list[list[int]]
    tokens: list[list[str]] | None = None

    def __post_init__(self) -> None:
        self.alphas = np.asarray(self.alphas, dtype=np.float64)
        if not np.any(self.alphas == 0.0):
            raise ConfigError(f"`alphas` must contain 0 (the centre), got {self.alphas.tolist()}.")
        for i, (loss, ids) in enumerate(zip(self.losses, self.token_ids)):
            if loss.shape != (len(self.alphas), len(ids)):
                raise ConfigError(
                    f"`losses[{i}]` has shape {loss.shape}; expected ({len(self.alphas)}, {len(ids)}) "
                    "(points, predicted tokens)."
                )

    @property
    def centre_row(self) -> int:
        return int(np.flatnonzero(self.alphas == 0.0)[0])

    def rise(self) -> list[np.ndarray]:
        """Per example, the loss of each token at each α minus its loss at α = 0."""
        c = self.centre_row
        return [loss - loss[c] for loss in self.losses]

    def top(self, k: int = 20, *, alpha: float | None = None) -> list[dict[str, Any]]:
        """The `k` tokens whose loss rises most at `alpha` (default: the largest |α|, the farthest point), as rows
        `example`, `position` (index of the predicted token in its example), `token_id`, `token`, `loss` (at
        the centre) and `rise`."""
        if alpha is None:
            alpha = float(self.alphas[np.argmax(np.abs(self.alphas))])
        hits = np.flatnonzero(self.alphas == alpha)
        if not len(hits):
            raise ConfigError(f"`alpha` {alpha!r} is not one of the map's points {self.alphas.tolist()}.")
        row, c = int(hits[0]), self.centre_row
        rows: list[dict[str, Any]] = []
        for i, loss in enumerate(self.losses):
            for j in np.flatnonzero(np.isfinite(loss[c])):
                rows.append(
                    {
                        "example": i,
                        "position": int(j) + 1,
                        "token_id": self.token_ids[i][j],
                        "token": self.tokens[i][j] if self.tokens is not None else None,
                        "loss": float(loss[c, j]),
                        "rise": float(loss[row, j] - loss[c, j]),
                    }
                )
        rows.sort(key=lambda r: -r["rise"] if np.isfinite(r["rise"]) else np.inf)  # NaN rises (diverged) last
        return rows[:k]

    def plot(self, example: int = 0, **kwargs: Any) -> Figure:
        """The heatmap of one example; see `plotting.plot_token_map`."""
        from ..plotting import plot_token_map

        return plot_token_map(self, example, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN kept as NaN)."""
        return {
            "alphas": self.alphas.tolist(),
            "losses": [loss.tolist() for loss in self.losses],
            "token_ids": [list(ids) for ids in self.token_ids],
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenLossMap:
        """The map `to_dict` describes."""
        fields = result_fields(cls, data, ("alphas", "losses", "token_ids", "tokens"))
        losses = [np.asarray(loss, dtype=np.float64).reshape(len(fields["alphas"]), -1) for loss in fields["losses"]]
        return cls(np.asarray(fields["alphas"], dtype=np.float64), losses, fields["token_ids"], fields["tokens"])


def check_alphas(alphas: Sequence[float]) -> np.ndarray:
    """`alphas` as an increasing float array containing 0 (added when missing), or a `ConfigError`."""
    try:
        values = np.asarray([float(a) for a in alphas], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"`alphas` must be a list of numbers, e.g. [-1, -0.5, 0, 0.5, 1]; got {alphas!r}.") from None
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ConfigError(f"`alphas` must be a non-empty list of finite numbers, got {alphas!r}.")
    from ..grid import MAX_ABS_COORDINATE, check_grid_size

    if np.max(np.abs(values)) > MAX_ABS_COORDINATE:
        raise ConfigError(f"`alphas` must lie within ±{MAX_ABS_COORDINATE:g}, got {alphas!r:.80}.")
    values = np.unique(np.append(values, 0.0))
    check_grid_size(values.size, "alphas")
    return values


def token_loss_map(
    objective: TokenView, alphas: np.ndarray, evaluate_at: Callable[[float], Evaluation]
) -> TokenLossMap:
    """The `TokenLossMap` of `objective` at the points `alphas` (from `check_alphas`), `evaluate_at(alpha)` giving the
    evaluation with token losses at each (θ₀ itself at 0)."""
    per_point = []
    for a in alphas:
        evaluation = evaluate_at(float(a))
        if evaluation.token_losses is None:
            raise ConfigError(f"{type(objective).__name__} gives no per-token losses; use a causal-LM objective.")
        per_point.append(evaluation.token_losses)
    examples = objective.active_examples
    token_ids = [[int(t) for t in ids[1 : 1 + len(per_point[0][i])]] for i, (ids, _) in enumerate(examples)]
    tokenizer = objective.tokenizer
    tokens = [[tokenizer.decode([t]) for t in ids] for ids in token_ids] if tokenizer is not None else None
    losses = [np.stack([point[i] for point in per_point]) for i in range(len(per_point[0]))]
    return TokenLossMap(alphas, losses, token_ids, tokens)


def token_curvature(token_map: TokenLossMap, h: float, top: int) -> list[dict[str, Any]]:
    """Per-token loss, slope and curvature from the central differences of a map at −h, 0, h, the `top` tokens by
    curvature first (see `LandscapeProbe.token_curvature`)."""
    rows: list[dict[str, Any]] = []
    for i, (lm, l0, lp) in enumerate(token_map.losses):
        for j in np.flatnonzero(np.isfinite(l0)):
            rows.append(
                {
                    "example": i,
                    "position": int(j) + 1,
                    "token_id": token_map.token_ids[i][j],
                    "token": token_map.tokens[i][j] if token_map.tokens is not None else None,
                    "loss": float(l0[j]),
                    "slope": float((lp[j] - lm[j]) / (2 * h)),
                    "curvature": float((lp[j] - 2 * l0[j] + lm[j]) / h**2),
                }
            )
    rows.sort(key=lambda r: -r["curvature"])
    return rows[:top]

"""Contour levels that fit the data: evenly spaced where the values fill their range, spaced geometrically in the
rise above the minimum where a few high points would otherwise take every level, or at quantiles on request
(`contour_levels`, `level_spacing`), and the colour limits and norm that go with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    pass


SPACINGS = ("auto", "linear", "log", "quantile")


DEFAULT_LEVELS = 15


WIDE_RANGE = 5.0  # "auto" spacing turns to "log" when the range is this many times the median's rise above the min


def check_spacing(spacing: str) -> str:
    if spacing not in SPACINGS:
        raise ConfigError(f"`spacing` must be one of {list(SPACINGS)}, got {spacing!r}.")
    return spacing


def level_spacing(values: np.ndarray, *, vmin: float | None = None, vmax: float | None = None) -> str:
    """What `spacing="auto"` picks for these values: `"log"` when the range is wide (the median point's rise above
    the lowest value is under 1/`WIDE_RANGE` of the range: most points sit near the bottom and a few far above),
    else `"linear"`.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape.plotting import level_spacing
    >>> x = np.linspace(-1, 1, 21)
    >>> level_spacing(x**2), level_spacing(np.exp(8 * np.abs(x)))
    ('linear', 'log')

    ```
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < 3:
        return "linear"
    lo = float(finite.min()) if vmin is None else float(vmin)
    hi = float(finite.max()) if vmax is None else float(vmax)
    rise = float(np.median(finite)) - lo
    return "log" if hi > lo and rise * WIDE_RANGE < hi - lo else "linear"


def contour_levels(
    values: np.ndarray,
    levels: int = DEFAULT_LEVELS,
    *,
    spacing: str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Contour levels from `vmin` to `vmax` (default: the finite values' range) that fit the values.

    Args:
        values: the plotted values (non-finite ones are ignored).
        levels: how many levels.
        spacing: `"linear"` (evenly spaced from `vmin` to `vmax`); `"log"` (the rise above `vmin` spaced geometrically, from the rise of
            the lowest percent of the points up to the range: a narrow basin with high walls gets levels at its
            bottom and on its walls); `"quantile"` (about as many points between consecutive levels); `"auto"`
            (`level_spacing`: log where the range is wide, else evenly spaced round numbers inside the range). Levels other than the ends of non-linear
            spacings are rounded to 3 significant digits, so their labels read cleanly.
        vmin, vmax: the ends (the first and last level).

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape.plotting import contour_levels
    >>> contour_levels(np.array([1.0, 2.0, 3.0]), 3, spacing="linear").tolist()
    [1.0, 2.0, 3.0]
    >>> contour_levels(np.linspace(3.69, 12.08, 50), 8).tolist()                    # round numbers
    [4.0, 6.0, 8.0, 10.0, 12.0]
    >>> contour_levels(np.array([1.0, 1.01, 1.1, 2.0, 11.0]), 5, spacing="log").tolist()   # 1 + 0.01·10^(3k/4)
    [1.0, 1.01, 1.12, 2.08, 11.0]

    ```
    """
    spacing = check_spacing(spacing)
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ConfigError(f"`levels` must be an integer >= 2 (or a list of levels), got {levels!r}.")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if not hi > lo:
        return np.array([lo, lo + max(abs(lo), 1.0) * 1e-9])
    inside = finite[(finite >= lo) & (finite <= hi)]
    if spacing == "auto":
        spacing = level_spacing(inside, vmin=lo, vmax=hi)
        if spacing == "linear":
            return _round_levels(lo, hi, int(levels))
    if spacing == "linear" or inside.size < 3:
        return np.linspace(lo, hi, int(levels))
    if spacing == "log":
        rises = inside - lo
        rises = rises[rises > 0]
        first = max(float(np.quantile(rises, 0.01)) if rises.size else 0.0, (hi - lo) * 1e-6)
        inner = lo + np.geomspace(first, hi - lo, int(levels) - 1)[:-1]
    else:
        inner = np.quantile(inside, np.linspace(0.0, 1.0, int(levels)))[1:-1]
    inner = np.array([float(f"{v:.3g}") for v in inner])
    return np.unique(np.concatenate([[lo], inner[(inner > lo) & (inner < hi)], [hi]]))


def _round_levels(lo: float, hi: float, levels: int) -> np.ndarray:
    """About `levels` evenly spaced round numbers inside [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten),
    so contour labels read 4.5, 5, 5.5 rather than 4.29, 5.49; evenly spaced from lo to hi when too few fit."""
    from matplotlib.ticker import MaxNLocator

    candidates = MaxNLocator(nbins=max(levels - 1, 1), steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    ticks = np.array([float(f"{t:.12g}") for t in candidates if lo <= t <= hi])  # 2.4, not 2.4000000000000004
    return ticks if len(ticks) >= max(3, levels // 2) else np.linspace(lo, hi, levels)


def level_format(value: float) -> str:
    return f"{value:.3g}"


def colour_limits(z: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    finite = z[np.isfinite(z)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-9
    return lo, hi


def levels_for(z: np.ndarray, levels: int | Sequence[float], spacing: str, lo: float, hi: float) -> np.ndarray:
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        return contour_levels(z, int(levels), spacing=spacing, vmin=lo, vmax=hi)
    chosen = np.asarray(levels, dtype=np.float64)
    if chosen.ndim != 1 or chosen.size < 2 or not np.all(np.diff(chosen) > 0):
        raise ConfigError(f"`levels` must be an integer >= 2 or an increasing list of levels, got {levels!r}.")
    return chosen


def colour_norm(levels: np.ndarray, lo: float, hi: float, linear: bool) -> Any:
    """Colour scale: linear from lo to hi, or one colour band per contour level where the levels are not evenly
    spaced (so the heatmap, the 3-D surface and the colour bar show the same bands as the contours)."""
    from matplotlib.colors import BoundaryNorm, Normalize

    if linear or len(levels) < 3:
        return Normalize(vmin=lo, vmax=hi)
    return BoundaryNorm(levels, ncolors=256)


def is_linear(levels: np.ndarray) -> bool:
    steps = np.diff(levels)
    return bool(len(steps) and np.allclose(steps, steps[0], rtol=1e-6, atol=0.0))


def spacing_note(levels: np.ndarray, spacing: str) -> str:
    if is_linear(levels):
        return ""
    return " (levels at quantiles)" if spacing == "quantile" else " (levels log-spaced above the minimum)"

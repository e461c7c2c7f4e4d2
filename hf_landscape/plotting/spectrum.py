"""The figure of a spectral density (`curvature.SpectrumResult.plot`): eigenvalues on a symmetric-log axis, so the
bulk near zero and the few large outliers of a network's Hessian show on one axis, and the density on a log axis."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np

from .titles import LABEL_SIZE, TITLE_SIZE


def plot_spectrum(
    grid: np.ndarray, density: np.ndarray, nodes: np.ndarray, weights: np.ndarray, *, sigma: float, title: str
) -> Any:
    """The density over `grid` (a line, log scale, floored at 1e-10 of its peak) with the Ritz `nodes` marked as a rug
    at the bottom, darker for a larger weight; the eigenvalue axis is symmetric-log, linear within ±`sigma`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    peak = float(density.max()) if density.size and density.max() > 0 else 1.0
    floor = 1e-10 * peak
    ax.plot(grid, np.maximum(density, floor), color="tab:blue", linewidth=1.2, label="density")
    keep = np.isfinite(nodes) & (weights > 0)
    shades = [(1.0, 0.5, 0.05, 0.25 + 0.75 * min(1.0, float(w) * nodes.shape[1])) for w in weights[keep]]
    ax.vlines(nodes[keep], floor, 10.0 * floor, colors=shades, linewidth=0.8, label="Ritz nodes")
    finite = nodes[keep] if keep.any() else grid
    span = float(np.abs(finite).max()) if finite.size else 1.0
    linthresh = max(sigma, 1e-12 * max(span, 1.0))
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xticks(_symlog_ticks(float(grid.min()), float(grid.max()), linthresh))
    ax.set_yscale("log")
    ax.set_ylim(floor, 2.0 * peak)
    ax.set_xlabel("eigenvalue", fontsize=LABEL_SIZE)
    ax.set_ylabel("density", fontsize=LABEL_SIZE)
    ax.set_title(textwrap.fill(title, 80), fontsize=TITLE_SIZE)
    ax.legend(loc="upper right", fontsize=LABEL_SIZE - 1)
    fig.tight_layout()
    return fig


def _symlog_ticks(low: float, high: float, linthresh: float) -> list[float]:
    """0 and the powers of ten from `linthresh` outwards within [low, high] (none inside the linear part, where their
    labels would overlap)."""
    ticks = [0.0] if low <= 0.0 <= high else []
    start = math.ceil(math.log10(linthresh))
    for k in range(start, start + 40):
        value = 10.0**k
        if value > max(abs(low), abs(high)):
            break
        ticks += [v for v in (-value, value) if low <= v <= high]
    return sorted(ticks)

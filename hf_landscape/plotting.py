"""Matplotlib figures of surfaces. Every function returns a `Figure`; nothing is shown or printed.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot state), so they work on a machine with no
display and never leak between calls. They are meant to go on a slide as they are:

- the title states the setup: model, kind of surface, objective, directions and seeds, and the centre's loss;
- contour levels fit the data (`contour_levels`): evenly spaced where the values fill their range, spaced
  geometrically in the rise above the minimum where a few high points would otherwise take every level (a deep
  basin with steep walls), or at quantiles of the values on request; about half of them are labelled, and a
  label that would overlap another (or the centre marker) is left out;
- the centre θ₀ is marked on every kind, 3-D surfaces included;
- side by side (`plot_comparison`), surfaces of one kind and one model share colour limits and one colour bar,
  and the figure says so; unrelated surfaces (kinds or models differ) get limits and a colour bar each.

What does not live here: the numbers themselves (`surface.py`, `comparison.py`).
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, SurfaceError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .surface import Surface
    from .tokens import TokenLossMap

LINE_KINDS = ("curve",)
PLANE_KINDS = ("contour", "heatmap", "surface", "spread")
FORMATS = ("png", "pdf", "svg")
SPACINGS = ("auto", "linear", "log", "quantile")
DEFAULT_LEVELS = 15
MAX_LABELS = 8  # contour labels per plot at most (every other level or sparser), so they stay legible
WIDE_RANGE = 5.0  # "auto" spacing turns to "log" when the range is this many times the median's rise above the min
TITLE_SIZE = 10
LABEL_SIZE = 8
CMAP = "viridis"
SAVE_DPI = 150
_CENTRE_STYLE = {"marker": "*", "markersize": 13, "color": "red", "markeredgecolor": "black", "markeredgewidth": 0.6}
CENTRE_LABEL = "centre (θ₀)"


# --- contour levels ------------------------------------------------------------------------------------------------


def _check_spacing(spacing: str) -> str:
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
    spacing = _check_spacing(spacing)
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


def _level_format(value: float) -> str:
    return f"{value:.3g}"


# --- titles --------------------------------------------------------------------------------------------------------


def _model_name(surface: Surface) -> str | None:
    name = (surface.metadata.get("model") or {}).get("name_or_path")
    return Path(str(name)).name if name else None


def _objective_text(surface: Surface) -> str | None:
    objective = surface.metadata.get("objective") or {}
    kind = objective.get("type")
    config = objective.get("config") or {}
    if kind == "CausalLMObjective":
        tokens = objective.get("num_tokens")
        return "causal-LM loss" + (f" on {tokens:,} tokens" if isinstance(tokens, int) else "")
    if kind == "GlueObjective":
        task = str(config.get("task", "GLUE")).upper()
        examples = objective.get("num_examples")
        loss = "MSE" if objective.get("loss") == "mse" else "cross-entropy"
        return f"{task} {loss}" + (f" on {examples:,} examples" if isinstance(examples, int) else "")
    return str(kind) if kind else None


def _directions_text(surface: Surface) -> str | None:
    configs = [c for c in surface.metadata.get("directions") or [] if isinstance(c, dict)]
    if not configs:
        return None
    first = configs[0]
    kind = first.get("kind")
    if kind == "random":
        text = f"{first.get('normalization', 'filter')}-normalized random directions"
        if first.get("orthogonalize"):
            text += ", orthogonalized"
    elif kind == "low_rank":
        text = f"rank-{first.get('rank')} LoRA-subspace directions"
    elif kind == "adapter":
        text = f"adapter directions ({first.get('adapter_name')})"
    elif kind == "trajectory":
        text = "PCA directions of the training path"
    else:
        text = "given directions"
    seeds = surface.metadata.get("seeds")
    if seeds:
        text += f", mean over seeds {_seed_list(seeds)}"
    elif surface.metadata.get("seed") is not None:
        text += f", seed {surface.metadata['seed']}"
    return text


def _seed_list(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def _kind_text(surface: Surface) -> str:
    if surface.metadata.get("trajectory"):
        return "training path on its PCA plane"
    if surface.kind != "interpolation":
        return surface.kind
    path = surface.metadata.get("path") or {}
    knots = path.get("knots") or [0, 1]
    if len(knots) > 2:
        return f"path through {len(knots)} checkpoints"
    other = (surface.metadata.get("other_model") or {}).get("name_or_path")
    return f"interpolation to {Path(str(other)).name}" if other else "interpolation"


def _model_and_kind(surface: Surface) -> str:
    model = _model_name(surface)
    return f"{model} · {_kind_text(surface)}" if model else _kind_text(surface)


def describe_surface(surface: Surface, metric: str | None = None) -> tuple[str, str]:
    """The two lines of a surface's default title: (model, kind and the centre's value; the setup: objective,
    directions and seeds).

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.plotting import describe_surface
    >>> s = Surface(np.linspace(-1, 1, 3), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line",
    ...     "model": {"name_or_path": "org/tiny"}, "seed": 0,
    ...     "directions": [{"kind": "random", "normalization": "filter"}]})
    >>> describe_surface(s)
    ('tiny · line · centre loss 1', 'filter-normalized random directions, seed 0')

    ```
    """
    headline = _model_and_kind(surface)
    index = surface.centre_index
    if index is not None:
        value = surface.values[index] if metric is None else surface.metrics[metric][index]
        headline += f" · centre {metric or 'loss'} {float(value):.4g}"
    setup = " · ".join(p for p in (_objective_text(surface), _directions_text(surface)) if p)
    return headline, setup


def _wrapped_title(lines: Sequence[str], width_inches: float, fontsize: float = TITLE_SIZE) -> str:
    """Lines wrapped to fit `width_inches` of text at `fontsize` points (an average glyph is ~0.55 em wide), broken
    between " · "-separated parts where possible, inside a part only where it is longer than a line."""
    chars = max(24, int(width_inches * 72 / (fontsize * 0.55)))
    out: list[str] = []
    for line in lines:
        current = ""
        for part in (p for p in line.split(" · ") if p):
            if current and len(current) + 3 + len(part) <= chars:
                current += " · " + part
                continue
            if current:
                out.append(current)
            pieces = textwrap.wrap(part, chars, break_on_hyphens=False) or [part]
            out.extend(pieces[:-1])
            current = pieces[-1]
        if current:
            out.append(current)
    return "\n".join(out)


def _axes_width(ax: Any) -> float:
    """The width in inches of the axes' grid cell (colour bars and layout not yet taken out)."""
    spec = ax.get_subplotspec()
    columns = spec.get_gridspec().ncols if spec is not None else 1
    span = (spec.colspan.stop - spec.colspan.start) if spec is not None else 1
    return float(ax.figure.get_figwidth() * 0.85 * span / columns)


def _set_title(ax: Any, surface: Surface, title: str | None, metric: str | None, extra: str | None = None) -> None:
    if title is not None:
        ax.set_title(title, fontsize=TITLE_SIZE)
        return
    headline, setup = describe_surface(surface, metric)
    ax.set_title(_wrapped_title([headline, setup, extra or ""], _axes_width(ax)), fontsize=TITLE_SIZE)


# --- drawing -------------------------------------------------------------------------------------------------------


def _check_kind(surface: Surface, kind: str | None) -> str:
    allowed = LINE_KINDS if surface.ndim == 1 else PLANE_KINDS
    kind = kind or allowed[0]
    if kind not in allowed:
        raise ConfigError(f"`kind` must be one of {list(allowed)} for a {surface.kind}, got {kind!r}.")
    return kind


def _data(surface: Surface, metric: str | None) -> tuple[np.ndarray, str]:
    if metric is None:
        return surface.values, "loss"
    if metric not in surface.metrics:
        raise ConfigError(f"`metric` {metric!r} is not in this surface; it has {sorted(surface.metrics)}.")
    return surface.metrics[metric], metric


def _scaled(values: np.ndarray, log_scale: bool) -> np.ndarray:
    if not log_scale:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


def _axis_labels(surface: Surface) -> tuple[str, str]:
    ratios = (surface.metadata.get("trajectory") or {}).get("explained_variance_ratio")
    if ratios and len(ratios) >= 2:  # a trajectory plane: the axes are the path's principal components
        return tuple(f"PCA component {k + 1} ({float(r):.1%} of the path's variance)" for k, r in enumerate(ratios[:2]))  # type: ignore[return-value]
    if surface.kind == "interpolation":
        knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
        if len(knots) > 2:
            return f"α  (checkpoints θ0 … θ{knots[-1]} at α = 0 … {knots[-1]})", ""
        return "α  (0 = model, 1 = other model)", ""
    return "α  (direction 1)", "β  (direction 2)"


def _limits(z: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    finite = z[np.isfinite(z)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-9
    return lo, hi


def _levels(z: np.ndarray, levels: int | Sequence[float], spacing: str, lo: float, hi: float) -> np.ndarray:
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        return contour_levels(z, int(levels), spacing=spacing, vmin=lo, vmax=hi)
    chosen = np.asarray(levels, dtype=np.float64)
    if chosen.ndim != 1 or chosen.size < 2 or not np.all(np.diff(chosen) > 0):
        raise ConfigError(f"`levels` must be an integer >= 2 or an increasing list of levels, got {levels!r}.")
    return chosen


def _norm(levels: np.ndarray, lo: float, hi: float, linear: bool) -> Any:
    """Colour scale: linear from lo to hi, or one colour band per contour level where the levels are not evenly
    spaced (so the heatmap, the 3-D surface and the colour bar show the same bands as the contours)."""
    from matplotlib.colors import BoundaryNorm, Normalize

    if linear or len(levels) < 3:
        return Normalize(vmin=lo, vmax=hi)
    return BoundaryNorm(levels, ncolors=256)


def _is_linear(levels: np.ndarray) -> bool:
    steps = np.diff(levels)
    return bool(len(steps) and np.allclose(steps, steps[0], rtol=1e-6, atol=0.0))


def _spacing_note(levels: np.ndarray, spacing: str) -> str:
    if _is_linear(levels):
        return ""
    return " (levels at quantiles)" if spacing == "quantile" else " (levels log-spaced above the minimum)"


def plot_surface(
    surface: Surface,
    kind: str | None = None,
    *,
    log_scale: bool = False,
    levels: int | Sequence[float] = DEFAULT_LEVELS,
    spacing: str = "auto",
    metric: str | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    tidy: bool = True,
    ax: Any = None,
) -> Figure:
    """Draw one surface: a curve for lines, a contour / heatmap / 3-D surface / seed-spread map for planes.

    Args:
        surface: the `Surface`.
        kind: `"curve"` (lines); `"contour"` (default for planes), `"heatmap"`, `"surface"` (3-D) or `"spread"`
            (the standard deviation over seeds of a surface made with several, under the mean's contours).
        log_scale: plot log10 of the values (non-positive values are left blank).
        levels: how many contour levels, or the levels themselves; colours follow the same levels.
        spacing: how the levels are spaced, see `contour_levels` (`"auto"`, `"linear"`, `"log"`, `"quantile"`).
        metric: plot this metric instead of the loss.
        title: the title (default: model and kind, then objective, directions, seeds and the centre's value).
        vmin, vmax: colour (or, for curves, y) limits; shared limits make surfaces comparable (`plot_comparison`).
        colorbar: draw the colour bar (`plot_comparison` draws one for several panels instead).
        tidy: place the contour labels now (`tidy_contour_labels`, which lays the whole figure out); when drawing
            several panels into one figure, pass False and call `tidy_contour_labels(fig)` once at the end.
        ax: draw into this axes (its figure is returned) instead of a new figure.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> x = np.linspace(-1, 1, 5)
    >>> fig = Surface(x, np.add.outer(x**2, x**2), y=x).plot("contour")
    >>> fig.axes[0].get_xlabel()
    'α  (direction 1)'

    ```
    """
    from matplotlib.figure import Figure

    kind = _check_kind(surface, kind)
    spacing = _check_spacing(spacing)
    values, label = _data(surface, metric)
    z = _scaled(values, log_scale)
    label = f"log10 {label}" if log_scale else label
    if ax is None:
        fig = Figure(figsize=(7.2, 5.4) if kind == "surface" else (6.8, 5.2), layout="constrained")
        ax = fig.add_subplot(projection="3d" if kind == "surface" else None)
    else:
        fig = ax.figure
    lo, hi = _limits(z, vmin, vmax)
    if kind == "curve":
        _draw_curve(ax, surface, z, label, metric, log_scale, lo, hi, vmin is not None or vmax is not None)
        _set_title(ax, surface, title, metric)
        return fig
    lv = _levels(z, levels, spacing, lo, hi)
    linear = _is_linear(lv)
    norm = _norm(lv, lo, hi, linear)
    X, Y = np.meshgrid(surface.x, np.asarray(surface.y))
    extra = None
    mappable: Any
    if kind == "contour":
        mappable = ax.contour(X, Y, np.ma.masked_invalid(z), levels=lv, cmap=CMAP, norm=norm, linewidths=1.1)
        _mark_contour_labels(mappable, lv)
    elif kind == "heatmap":
        mappable = ax.pcolormesh(X, Y, np.ma.masked_invalid(z), cmap=CMAP, norm=norm, shading="nearest")
    elif kind == "spread":
        if surface.spread is None:
            raise ConfigError("`kind='spread'` needs a surface made over several seeds (`seed=[0, 1, 2]`).")
        mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(surface.spread), cmap="magma", shading="nearest")
        if colorbar:
            fig.colorbar(mesh, ax=ax, label=f"std of {label} across seeds")
        cs = ax.contour(X, Y, np.ma.masked_invalid(z), levels=lv, colors="white", linewidths=0.7)
        _mark_contour_labels(cs, lv, dark=True)
        n = 0 if surface.samples is None else len(surface.samples)
        extra = f"colour: spread over {n} seeds; white: contours of the mean {label}"
        mappable = None
    else:
        mappable = _draw_3d(ax, X, Y, z, surface, norm, lo, hi, label)
    if mappable is not None and colorbar:
        _colorbar(fig, mappable, norm, lv, [ax], label + _spacing_note(lv, spacing), kind)
    if kind != "surface":
        _draw_overlays(ax, surface, metric)
        ax.set_xlabel(_axis_labels(surface)[0])
        ax.set_ylabel(_axis_labels(surface)[1])
    _set_title(ax, surface, title, metric, extra)
    if tidy:
        tidy_contour_labels(fig)
    return fig


def _draw_curve(
    ax: Any,
    surface: Surface,
    z: np.ndarray,
    label: str,
    metric: str | None,
    log_scale: bool,
    lo: float,
    hi: float,
    fixed_limits: bool,
) -> None:
    ax.plot(
        surface.x,
        z,
        color="C0",
        lw=1.8,
        marker="o" if len(surface.x) <= 41 else None,
        markersize=3,
        label="mean over seeds" if surface.spread is not None else None,
    )
    if surface.spread is not None and metric is None and not log_scale:
        ax.fill_between(surface.x, z - surface.spread, z + surface.spread, color="C0", alpha=0.25, label="± 1 std")
    ax.set_xlabel(_axis_labels(surface)[0])
    ax.set_ylabel(label)
    centre = np.flatnonzero(surface.x == 0.0)
    if len(centre):
        ax.plot(surface.x[centre], z[centre], linestyle="none", label=CENTRE_LABEL, **_CENTRE_STYLE)
    if surface.kind == "interpolation":
        knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
        if len(knots) <= 2:
            end = np.flatnonzero(surface.x == 1.0)
            if len(end):
                ax.plot(surface.x[end], z[end], "s", color="C2", label="other model")
        else:  # a path θ₀ → θ₁ → ...: mark and name every checkpoint after the first
            for k in knots[1:]:
                at = np.flatnonzero(surface.x == float(k))
                ax.axvline(float(k), color="0.6", lw=0.8, ls=":")
                if len(at):
                    ax.plot(surface.x[at], z[at], "s", color="C2", label="checkpoints" if k == 1 else None)
                    ax.annotate(f"θ{k}", (float(k), float(z[at[0]])), textcoords="offset points", xytext=(4, 6))
    if fixed_limits:
        pad = 0.03 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=LABEL_SIZE + 1)


def _draw_3d(
    ax: Any, X: np.ndarray, Y: np.ndarray, z: np.ndarray, surface: Surface, norm: Any, lo: float, hi: float, label: str
) -> Any:
    from matplotlib.ticker import MaxNLocator

    zz = np.clip(np.where(np.isfinite(z), z, hi), lo, hi)
    ax.computed_zorder = False  # draw in call order, so the centre marker stays on top of the surface
    surf = ax.plot_surface(X, Y, zz, cmap=CMAP, norm=norm, linewidth=0.2, edgecolor=(0, 0, 0, 0.25), zorder=1)
    ax.set_zlim(lo, hi)
    index = surface.centre_index
    if index is not None and np.isfinite(zz[index]):
        ax.plot([0.0], [0.0], [float(zz[index])], linestyle="none", label=CENTRE_LABEL, zorder=5, **_CENTRE_STYLE)
    xlabel, ylabel = _axis_labels(surface)
    ax.set_xlabel(xlabel, labelpad=6)
    ax.set_ylabel(ylabel, labelpad=6)
    ax.set_zlabel(label, labelpad=4)
    ax.tick_params(labelsize=LABEL_SIZE)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):  # few ticks: 3-D tick labels crowd each other otherwise
        axis.set_major_locator(MaxNLocator(4))
    ax.set_box_aspect((1.0, 1.0, 0.7))  # flatter walls hide less of the basin floor
    ax.view_init(elev=48, azim=-58)
    return surf


def _draw_overlays(ax: Any, surface: Surface, metric: str | None) -> None:
    """The centre marker, the projected gradient and a training path, on 2-D plots."""
    handles = False
    ax.plot([0.0], [0.0], linestyle="none", label=CENTRE_LABEL, zorder=6, **_CENTRE_STYLE)
    if metric is None and "dL/dalpha" in surface.metrics and "dL/dbeta" in surface.metrics:
        X, Y = np.meshgrid(surface.x, np.asarray(surface.y))
        u, v = surface.metrics["dL/dalpha"], surface.metrics["dL/dbeta"]
        ok = np.isfinite(u) & np.isfinite(v)
        ax.quiver(X[ok], Y[ok], -u[ok], -v[ok], color="0.3", angles="xy", label="−∇L (projected)")
        handles = True
    path = (surface.metadata.get("trajectory") or {}).get("coordinates")
    if path:  # the optimizer's path projected on the plane (Li et al. 2018, section 7)
        xy = np.asarray(path, dtype=np.float64).reshape(-1, 2)
        ax.plot(xy[:, 0], xy[:, 1], "-o", color="C3", markersize=3, lw=1.2, label="training path")
        handles = True
    if handles:
        ax.legend(loc="best", fontsize=LABEL_SIZE + 1)
    ax.set_aspect("auto")


def _colorbar(
    fig: Any, mappable: Any, norm: Any, levels: np.ndarray, axes: list[Any], label: str, kind: str, shape: str = ""
) -> Any:
    from matplotlib.cm import ScalarMappable

    if kind == "contour" or mappable is None:  # a bar of filled colours, not of the few contour lines
        mappable = ScalarMappable(norm=norm, cmap=CMAP)
    three_d = "surface" in (kind, shape)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.7 if three_d else 1.0, pad=0.06 if three_d else 0.02)
    bar.set_label(label)
    if not _is_linear(levels) and len(levels) > 2:
        step = max(1, math.ceil(len(levels) / 8))
        bar.set_ticks(levels[::step])
        bar.set_ticklabels([_level_format(v) for v in levels[::step]])
    return bar


# --- contour labels ------------------------------------------------------------------------------------------------


def _mark_contour_labels(cs: Any, levels: np.ndarray, *, dark: bool = False) -> None:
    """Choose the levels to label: all of them, or every n-th, so that at most `MAX_LABELS` are; the lowest is
    always among them. `tidy_contour_labels` places them."""
    step = max(1, math.ceil(len(levels) / MAX_LABELS))
    cs.hf_label_levels = [float(v) for v in levels[::step]]  # type: ignore[attr-defined]
    cs.hf_label_dark = dark  # type: ignore[attr-defined]


def tidy_contour_labels(fig: Any) -> None:
    """Label the contour plots of `fig` so that no label overlaps another, the centre marker or the axes' edge.

    Runs the figure's layout first (the labels' sizes on the page depend on it), lets matplotlib place a label on
    each chosen contour, and drops every label whose box overlaps one already kept. Labels sit on a light box
    over the line (the line is not cut), so calling this again after changing the figure places them afresh; the
    plotting functions call it before they return.
    """
    from matplotlib.contour import ContourSet

    sets = [(ax, c) for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet)]
    sets = [(ax, c) for ax, c in sets if getattr(c, "hf_label_levels", None)]
    if not sets:
        return
    for _, cs in sets:
        _clear_labels(cs)
        dark = getattr(cs, "hf_label_dark", False)
        texts = cs.clabel(
            cs.hf_label_levels,  # type: ignore[attr-defined]
            inline=False,
            fontsize=LABEL_SIZE,
            fmt=_level_format,
            colors="white" if dark else None,
        )
        for text in texts:
            text.set_rotation(0)  # upright: a rotated "6" reads as "9"
            text.set_bbox({"boxstyle": "round,pad=0.1", "fc": "black" if dark else "white", "ec": "none", "alpha": 0.6})
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    kept: dict[Any, list[Any]] = {}
    for ax, cs in sets:
        boxes = kept.setdefault(ax, [b for b in [_centre_box(ax, renderer)] if b is not None])
        inside = ax.get_window_extent(renderer)
        dropped = []
        for i, text in enumerate(cs.labelTexts):  # the lower levels, nearer the basin, are kept first
            box = text.get_window_extent(renderer).padded(1)
            if any(box.overlaps(b) for b in boxes) or not _contains(inside, box):
                dropped.append(i)
            else:
                boxes.append(box)
        for i in reversed(dropped):
            cs.labelTexts.pop(i).remove()
            for name in ("labelCValues", "labelXYs"):
                if len(getattr(cs, name, None) or []) > i:
                    getattr(cs, name).pop(i)


def _clear_labels(cs: Any) -> None:
    for text in list(getattr(cs, "labelTexts", [])):
        text.remove()
    for name in ("labelTexts", "labelCValues", "labelXYs"):
        if isinstance(getattr(cs, name, None), list):
            getattr(cs, name).clear()


def _centre_box(ax: Any, renderer: Any) -> Any:
    for line in ax.get_lines():
        if line.get_label() == CENTRE_LABEL:
            return line.get_window_extent(renderer).padded(2)
    return None


def _contains(outer: Any, inner: Any) -> bool:
    return bool(inner.x0 >= outer.x0 and inner.x1 <= outer.x1 and inner.y0 >= outer.y0 and inner.y1 <= outer.y1)


# --- several surfaces ----------------------------------------------------------------------------------------------


def related(surfaces: Sequence[Surface]) -> bool:
    """Whether surfaces belong on shared colour limits by default: one kind (line, plane, interpolation) and one
    model (the recorded `name_or_path`)."""
    kinds = {s.kind for s in surfaces}
    models = {str((s.metadata.get("model") or {}).get("name_or_path")) for s in surfaces}
    return len(kinds) == 1 and len(models) == 1


def plot_comparison(
    surfaces: dict[str, Surface] | Sequence[Surface],
    kind: str | None = None,
    *,
    log_scale: bool = False,
    metric: str | None = None,
    levels: int = DEFAULT_LEVELS,
    spacing: str = "auto",
    shared_limits: bool | None = None,
) -> Figure:
    """Several surfaces side by side, one panel each.

    Args:
        surfaces: `{label: surface}` (the labels title the panels) or a list; all lines or all planes.
        kind: as in `plot_surface`.
        log_scale, metric, levels, spacing: as in `plot_surface`.
        shared_limits: `True`: one colour range (y range for curves), the same contour levels and one colour bar
            for every panel, so they compare by eye; `False`: each panel its own; `None` (default): shared when the
            surfaces are of one kind and one model (`related`), independent otherwise. The figure's title says
            which it is.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> from hf_landscape.plotting import plot_comparison
    >>> x = np.linspace(-1, 1, 5)
    >>> a = Surface(x, np.add.outer(x**2, x**2), y=x, metadata={"model": {"name_or_path": "org/a"}})
    >>> b = Surface(x, 9 * np.add.outer(x**2, x**2), y=x, metadata={"model": {"name_or_path": "org/b"}})
    >>> plot_comparison({"a": a, "b": b})._suptitle.get_text()
    'loss, independent colour limits per panel (the models differ)'

    ```
    """
    from matplotlib.figure import Figure

    items = list(surfaces.items()) if isinstance(surfaces, dict) else [(None, s) for s in surfaces]
    if not items:
        raise ConfigError("`surfaces` is empty; pass at least one surface.")
    if len({s.ndim for _, s in items}) != 1:
        raise ConfigError("`surfaces` mixes lines and planes; compare surfaces of one kind.")
    if shared_limits not in (None, True, False):
        raise ConfigError(f"`shared_limits` must be None (auto), True or False, got {shared_limits!r}.")
    kind = _check_kind(items[0][1], kind)
    spacing = _check_spacing(spacing)
    plain = [s for _, s in items]
    shared = related(plain) if shared_limits is None else shared_limits
    data = [_scaled(_data(s, metric)[0], log_scale) for s in plain]
    what = ("log10 " if log_scale else "") + (metric or "loss")
    n = len(items)
    fig = Figure(figsize=(5.6 * n + (0.8 if shared else 0.0), 5.0), layout="constrained")
    axes = [fig.add_subplot(1, n, k + 1, projection="3d" if kind == "surface" else None) for k in range(n)]
    options: dict[str, Any] = {"log_scale": log_scale, "metric": metric, "spacing": spacing}
    if shared:
        everything = np.concatenate([d.ravel() for d in data])
        lo, hi = _limits(everything, None, None)
        options.update(vmin=lo, vmax=hi)
        if kind != "curve":
            options["levels"] = contour_levels(everything, levels, spacing=spacing, vmin=lo, vmax=hi)
            options["colorbar"] = kind == "spread"  # the spread's own scale differs per panel
        else:
            options["levels"] = levels
        limits = f"{'y' if kind == 'curve' else 'colour'} limits [{lo:.4g}, {hi:.4g}]"
        fig.suptitle(f"{_model_and_kind(plain[0])}: {what} on shared {limits}", fontsize=TITLE_SIZE + 1)
    else:
        options["levels"] = levels
        why = "" if shared_limits is False else " (" + _difference(plain) + ")"
        fig.suptitle(f"{what}, independent {'y' if kind == 'curve' else 'colour'} limits per panel{why}")
    for ax, (label, s) in zip(axes, items):
        plot_surface(s, kind, title=label, ax=ax, tidy=False, **options)
    if shared and kind not in ("curve", "spread"):
        shared_colorbar(fig, axes, np.asarray(options["levels"]), lo, hi, what, spacing=spacing, kind=kind)
    tidy_contour_labels(fig)
    return fig


def shared_colorbar(
    fig: Any, axes: list[Any], levels: np.ndarray, lo: float, hi: float, label: str, *, spacing: str, kind: str
) -> Any:
    """One colour bar for panels drawn on the same limits and levels (`plot_surface(..., colorbar=False)`)."""
    norm = _norm(levels, lo, hi, _is_linear(levels))
    return _colorbar(fig, None, norm, levels, axes, label + _spacing_note(levels, spacing), "contour", kind)


def _difference(surfaces: Sequence[Surface]) -> str:
    kinds = {s.kind for s in surfaces}
    models = {str((s.metadata.get("model") or {}).get("name_or_path")) for s in surfaces}
    if len(kinds) > 1 and len(models) > 1:
        return "the kinds and models differ"
    return "the kinds differ" if len(kinds) > 1 else "the models differ"


# --- token maps ----------------------------------------------------------------------------------------------------


def plot_token_map(
    token_map: TokenLossMap,
    example: int = 0,
    *,
    max_tokens: int = 80,
    title: str | None = None,
    ax: Any = None,
) -> Figure:
    """One example's per-token loss map: a row per α, a column per predicted token (labelled with the decoded
    token when known), coloured by the rise of that token's loss over its loss at the centre, on a diverging
    scale centred on zero (red: the loss rises, blue: it falls; blank: masked tokens).

    Args:
        token_map: a `TokenLossMap` (`LandscapeProbe.token_loss_map`).
        example: which example to draw.
        max_tokens: draw at most this many tokens (the first ones).
        title: figure title.
        ax: draw into this axes instead of a new figure.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    if not isinstance(example, int) or not 0 <= example < len(token_map.losses):
        raise ConfigError(f"`example` must be an index below {len(token_map.losses)}, got {example!r}.")
    rise = token_map.rise()[example][:, :max_tokens]
    labels = (
        [str(t) for t in token_map.tokens[example][:max_tokens]]
        if token_map.tokens is not None
        else [str(t) for t in token_map.token_ids[example][:max_tokens]]
    )
    if ax is None:
        fig = Figure(figsize=(max(6.4, 0.22 * rise.shape[1] + 2.0), 0.35 * len(token_map.alphas) + 2.2))
        fig.set_layout_engine("constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    finite = rise[np.isfinite(rise)]
    bound = float(np.max(np.abs(finite))) if finite.size and np.max(np.abs(finite)) > 0 else 1.0
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(rise), cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    )
    fig.colorbar(mesh, ax=ax, label="token loss − its loss at α = 0")
    ax.set_yticks(np.arange(len(token_map.alphas)) + 0.5, [f"{a:g}" for a in token_map.alphas])
    ax.set_xticks(np.arange(len(labels)) + 0.5, [s.replace("\n", "⏎") for s in labels], rotation=90, fontsize=7)
    ax.set_ylabel("α")
    ax.set_xlabel("predicted token")
    ax.set_title(title if title is not None else f"per-token loss along a direction (example {example})")
    return fig


def save_plots(
    surface: Surface,
    save_directory: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png",),
    kinds: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[Path]:
    """Write `plot_<kind>.<format>` for every plot kind of the surface (or `kinds`) and format, each atomically
    (`io.save_figure`) under the folder's lock."""
    from . import io

    check_formats(formats, "formats")
    folder = Path(save_directory)
    io.check_output_folder(folder, argument="save_directory")
    io.make_output_folder(folder, argument="save_directory")
    kinds = plot_kinds(surface, kinds)
    written = []
    with io.folder_lock(folder, argument="save_directory"):
        for kind in kinds:
            fig = plot_surface(surface, kind, **kwargs)
            for fmt in formats:
                try:
                    written.append(io.save_figure(folder / f"plot_{kind}.{fmt}", fig, dpi=SAVE_DPI))
                except OSError as err:
                    raise SurfaceError(
                        f"Could not write plot_{kind}.{fmt} to {str(folder)!r} ({err.strerror or err}); what was "
                        "saved there before is intact (a surface saved first stays saved). Free disk space or make "
                        "the folder writable, then draw the plots again (`hf-landscape plot`, `surface.save_plots`)."
                    ) from None
    return written


def plot_kinds(surface: Surface, kinds: Sequence[str] | None = None) -> list[str]:
    """The plot kinds `save_plots` draws: `kinds` if given, else every kind that fits the surface."""
    if kinds:
        return list(kinds)
    if surface.ndim == 1:
        return list(LINE_KINDS)
    return [k for k in PLANE_KINDS if k != "spread" or surface.spread is not None]


def plot_names(surface: Surface, formats: Sequence[str], kinds: Sequence[str] | None = None) -> list[str]:
    """The files `save_plots(surface, ..., formats=formats, kinds=kinds)` writes, in its order."""
    return [f"plot_{kind}.{fmt}" for kind in plot_kinds(surface, kinds) for fmt in formats]


def check_formats(formats: Any, argument: str) -> tuple[str, ...]:
    """`formats` as a tuple of plot formats, each one of `FORMATS`, or a `ConfigError` naming `argument`."""
    if isinstance(formats, str) or not isinstance(formats, Sequence) or not formats:
        raise ConfigError(f"`{argument}` must be a list of plot formats from {list(FORMATS)}, got {formats!r}.")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"`{argument}` may hold {list(FORMATS)}, got {fmt!r}.")
    return tuple(formats)

"""One surface drawn: a line's curve (with its spread band), a plane's contours, heatmap, 3-D surface or spread,
the centre θ₀ marked on every kind (`plot_surface`), contour labels kept apart (`tidy_contour_labels`), and a
token loss map (`plot_token_map`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..analysis.tokens import TokenLossMap
    from ..surface import Surface

from .levels import (
    DEFAULT_LEVELS,
    check_spacing,
    colour_limits,
    colour_norm,
    is_linear,
    level_format,
    levels_for,
    spacing_note,
)
from .titles import LABEL_SIZE, axis_labels, set_title

LINE_KINDS = ("curve",)


PLANE_KINDS = ("contour", "heatmap", "surface", "spread")


MAX_LABELS = 8  # contour labels per plot at most (every other level or sparser), so they stay legible


CMAP = "viridis"


_CENTRE_STYLE = {"marker": "*", "markersize": 13, "color": "red", "markeredgecolor": "black", "markeredgewidth": 0.6}


CENTRE_LABEL = "centre (θ₀)"


def check_kind(surface: Surface, kind: str | None) -> str:
    allowed = LINE_KINDS if surface.ndim == 1 else PLANE_KINDS
    kind = kind or allowed[0]
    if kind not in allowed:
        raise ConfigError(f"`kind` must be one of {list(allowed)} for a {surface.kind}, got {kind!r}.")
    return kind


def plotted_values(surface: Surface, metric: str | None) -> tuple[np.ndarray, str]:
    if metric is None:
        return surface.values, "loss"
    if metric not in surface.metrics:
        raise ConfigError(f"`metric` {metric!r} is not in this surface; it has {sorted(surface.metrics)}.")
    return surface.metrics[metric], metric


def log_scaled(values: np.ndarray, log_scale: bool) -> np.ndarray:
    if not log_scale:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


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

    kind = check_kind(surface, kind)
    spacing = check_spacing(spacing)
    values, label = plotted_values(surface, metric)
    z = log_scaled(values, log_scale)
    label = f"log10 {label}" if log_scale else label
    if ax is None:
        fig = Figure(figsize=(7.2, 5.4) if kind == "surface" else (6.8, 5.2), layout="constrained")
        ax = fig.add_subplot(projection="3d" if kind == "surface" else None)
    else:
        fig = ax.figure
    lo, hi = colour_limits(z, vmin, vmax)
    if kind == "curve":
        _draw_curve(ax, surface, z, label, metric, log_scale, lo, hi, vmin is not None or vmax is not None)
        set_title(ax, surface, title, metric)
        return fig
    lv = levels_for(z, levels, spacing, lo, hi)
    linear = is_linear(lv)
    norm = colour_norm(lv, lo, hi, linear)
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
        add_colorbar(fig, mappable, norm, lv, [ax], label + spacing_note(lv, spacing), kind)
    if kind != "surface":
        _draw_overlays(ax, surface, metric)
        ax.set_xlabel(axis_labels(surface)[0])
        ax.set_ylabel(axis_labels(surface)[1])
    set_title(ax, surface, title, metric, extra)
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
        label="mean over seeds"
        if surface.spread is not None
        else ("trained curve" if surface.kind == "curve" else None),
    )
    if surface.spread is not None and metric is None and not log_scale:
        ax.fill_between(surface.x, z - surface.spread, z + surface.spread, color="C0", alpha=0.25, label="± 1 std")
    ax.set_xlabel(axis_labels(surface)[0])
    ax.set_ylabel(label)
    centre = np.flatnonzero(surface.x == 0.0)
    if len(centre):
        ax.plot(surface.x[centre], z[centre], linestyle="none", label=CENTRE_LABEL, **_CENTRE_STYLE)
    straight = (surface.metadata.get("curve") or {}).get("linear_values")
    if straight is not None and metric is None and not log_scale:  # a trained curve beside the straight path
        ax.plot(surface.x, straight, "--", color="C1", lw=1.4, label="straight path")
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
    for name, (px, py) in (surface.metadata.get("points") or {}).items():  # named models, on the floor
        ax.plot([px], [py], [lo], linestyle="none", marker="o", color="black", zorder=6)
        ax.text(px, py, lo, f" {name}", fontsize=LABEL_SIZE + 2, zorder=7)
    xlabel, ylabel = axis_labels(surface)
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
    """The centre marker, the projected gradient, a training path, named models and a projected curve, on 2-D plots."""
    handles = False
    if not surface.metadata.get("points"):  # on a plane through models, the first model is the centre, named below
        ax.plot([0.0], [0.0], linestyle="none", label=CENTRE_LABEL, zorder=6, **_CENTRE_STYLE)
    if metric is None and "dL/dalpha" in surface.metrics and "dL/dbeta" in surface.metrics:
        X, Y = np.meshgrid(surface.x, np.asarray(surface.y))
        u, v = surface.metrics["dL/dalpha"], surface.metrics["dL/dbeta"]
        ok = np.isfinite(u) & np.isfinite(v)
        ax.quiver(X[ok], Y[ok], -u[ok], -v[ok], color="0.3", angles="xy", label="−∇L (projected)")
        handles = True
    points = surface.metadata.get("points") or {}
    for k, (name, (px, py)) in enumerate(points.items()):  # the models of a plane through three (`plane_through`)
        ax.plot([px], [py], linestyle="none", marker="o", color=f"C{k + 1}", markeredgecolor="black", zorder=6)
        ax.annotate(name, (px, py), xytext=(5, 5), textcoords="offset points", fontsize=LABEL_SIZE + 2, zorder=7)
    curve = (surface.metadata.get("curve_on_plane") or {}).get("coordinates")
    if curve:  # a trained curve between two of them, projected on the plane
        xy = np.asarray(curve, dtype=np.float64).reshape(-1, 2)
        ax.plot(xy[:, 0], xy[:, 1], "--", color="C3", lw=1.4, label="trained curve (projected)")
        handles = True
    path = (surface.metadata.get("trajectory") or {}).get("coordinates")
    if path:  # the optimizer's path projected on the plane (Li et al. 2018, section 7)
        xy = np.asarray(path, dtype=np.float64).reshape(-1, 2)
        ax.plot(xy[:, 0], xy[:, 1], "-o", color="C3", markersize=3, lw=1.2, label="training path")
        handles = True
    if handles:
        ax.legend(loc="best", fontsize=LABEL_SIZE + 1)
    ax.set_aspect("auto")


def add_colorbar(
    fig: Any, mappable: Any, norm: Any, levels: np.ndarray, axes: list[Any], label: str, kind: str, shape: str = ""
) -> Any:
    from matplotlib.cm import ScalarMappable

    if kind == "contour" or mappable is None:  # a bar of filled colours, not of the few contour lines
        mappable = ScalarMappable(norm=norm, cmap=CMAP)
    three_d = "surface" in (kind, shape)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.7 if three_d else 1.0, pad=0.06 if three_d else 0.02)
    bar.set_label(label)
    if not is_linear(levels) and len(levels) > 2:
        step = max(1, math.ceil(len(levels) / 8))
        bar.set_ticks(levels[::step])
        bar.set_ticklabels([level_format(v) for v in levels[::step]])
    return bar


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
            fmt=level_format,
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

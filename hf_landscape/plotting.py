"""Matplotlib figures of surfaces. Every function returns a `Figure`; nothing is shown or printed.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot state), so they work on a
machine with no display and never leak between calls.
"""

from __future__ import annotations

import os
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
    if surface.kind == "interpolation":
        knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
        if len(knots) > 2:
            return f"α  (path through checkpoints θ0 … θ{knots[-1]} at α = 0 … {knots[-1]})", ""
        return "α  (0 = model, 1 = other model)", ""
    return "α  (direction 1)", "β  (direction 2)"


def _title(surface: Surface, title: str | None) -> str:
    if title is not None:
        return title
    model = surface.metadata.get("model", {}).get("name_or_path") or "model"
    return f"{Path(str(model)).name} — {surface.kind}"


def plot_surface(
    surface: Surface,
    kind: str | None = None,
    *,
    log_scale: bool = False,
    levels: int = 20,
    metric: str | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    ax: Any = None,
) -> Figure:
    """Draw one surface: a curve for lines, a contour / heatmap / 3-D surface for planes.

    Args:
        surface: the `Surface`.
        kind: `"curve"` (lines); `"contour"` (default for planes), `"heatmap"` or `"surface"`.
        log_scale: plot log10 of the values (non-positive values are left blank).
        levels: contour levels.
        metric: plot this metric instead of the loss.
        title: figure title (default: model name and kind).
        vmin, vmax: colour limits (shared limits make surfaces comparable; see `plot_comparison`).
        ax: draw into this axes (its figure is returned) instead of a new figure.
    """
    from matplotlib.figure import Figure

    kind = _check_kind(surface, kind)
    values, label = _data(surface, metric)
    z = _scaled(values, log_scale)
    label = f"log10 {label}" if log_scale else label
    xlabel, ylabel = _axis_labels(surface)
    if ax is None:
        fig = Figure(figsize=(6.4, 4.8), constrained_layout=True)
        ax = fig.add_subplot(projection="3d" if kind == "surface" else None)
    else:
        fig = ax.figure
    finite = z[np.isfinite(z)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1e-12
    if kind == "curve":
        ax.plot(surface.x, z, color="C0", lw=1.8, label="mean over seeds" if surface.spread is not None else None)
        if surface.spread is not None and metric is None and not log_scale:
            ax.fill_between(surface.x, z - surface.spread, z + surface.spread, color="C0", alpha=0.25, label="± 1 std")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        centre = np.flatnonzero(surface.x == 0.0)
        if len(centre):
            ax.plot(surface.x[centre], z[centre], "o", color="C3", label="centre (θ₀)")
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
        if vmin is not None or vmax is not None:
            ax.set_ylim(lo, hi)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    else:
        X, Y = np.meshgrid(surface.x, np.asarray(surface.y))
        if kind == "contour":
            masked = np.ma.masked_invalid(z)
            cs = ax.contour(X, Y, masked, levels=np.linspace(lo, hi, levels), cmap="viridis")
            ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
            fig.colorbar(cs, ax=ax, label=label)
        elif kind == "spread":
            if surface.spread is None:
                raise ConfigError("`kind='spread'` needs a surface made over several seeds (`seed=[0, 1, 2]`).")
            spread = np.ma.masked_invalid(surface.spread)
            mesh = ax.pcolormesh(X, Y, spread, cmap="magma", shading="nearest")
            fig.colorbar(mesh, ax=ax, label=f"std of {label} across seeds")
            n = 0 if surface.samples is None else len(surface.samples)
            cs = ax.contour(
                X, Y, np.ma.masked_invalid(z), levels=np.linspace(lo, hi, levels), colors="w", linewidths=0.6
            )
            ax.clabel(cs, inline=True, fontsize=6, fmt="%.3g")
            if title is None:
                title = f"{_title(surface, None)}: spread over {n} seeds, contours of the mean in white"
        elif kind == "heatmap":
            mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(z), cmap="viridis", vmin=lo, vmax=hi, shading="nearest")
            fig.colorbar(mesh, ax=ax, label=label)
        else:
            zz = np.clip(np.where(np.isfinite(z), z, hi), lo, hi)
            surf = ax.plot_surface(X, Y, zz, cmap="viridis", vmin=lo, vmax=hi, linewidth=0, antialiased=True)
            ax.set_zlim(lo, hi)
            ax.set_zlabel(label)
            fig.colorbar(surf, ax=ax, shrink=0.6, label=label)
        if kind != "surface":
            ax.plot([0.0], [0.0], "r*", markersize=10)
            if metric is None and "dL/dalpha" in surface.metrics and "dL/dbeta" in surface.metrics:
                u, v = surface.metrics["dL/dalpha"], surface.metrics["dL/dbeta"]
                ok = np.isfinite(u) & np.isfinite(v)
                ax.quiver(X[ok], Y[ok], -u[ok], -v[ok], color="0.3", angles="xy", label="−∇L (projected)")
            path = (surface.metadata.get("trajectory") or {}).get("coordinates")
            if path:  # the optimizer's path projected on the plane (Li et al. 2018, section 7)
                xy = np.asarray(path, dtype=np.float64).reshape(-1, 2)
                ax.plot(xy[:, 0], xy[:, 1], "-o", color="C3", markersize=3, lw=1.2, label="training path")
                ax.legend(loc="best")
            ax.set_aspect("auto")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    ax.set_title(_title(surface, title))
    return fig


def plot_comparison(
    surfaces: dict[str, Surface] | Sequence[Surface],
    kind: str | None = None,
    *,
    log_scale: bool = False,
    metric: str | None = None,
    levels: int = 20,
) -> Figure:
    """Several surfaces side by side on shared colour (or y) limits, so they can be compared by eye.

    Args:
        surfaces: `{label: surface}` or a list; all lines or all planes.
        kind: as in `plot_surface`.
    """
    from matplotlib.figure import Figure

    items = list(surfaces.items()) if isinstance(surfaces, dict) else [(None, s) for s in surfaces]
    if not items:
        raise ConfigError("`surfaces` is empty; pass at least one surface.")
    dims = {s.ndim for _, s in items}
    if len(dims) != 1:
        raise ConfigError("`surfaces` mixes lines and planes; compare surfaces of one kind.")
    kind = _check_kind(items[0][1], kind)
    finite = np.concatenate([_scaled(_data(s, metric)[0], log_scale).ravel() for _, s in items])
    finite = finite[np.isfinite(finite)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    n = len(items)
    fig = Figure(figsize=(5.2 * n, 4.4), constrained_layout=True)
    for k, (label, s) in enumerate(items):
        ax = fig.add_subplot(1, n, k + 1, projection="3d" if kind == "surface" else None)
        plot_surface(s, kind, log_scale=log_scale, metric=metric, levels=levels, vmin=lo, vmax=hi, ax=ax, title=label)
    return fig


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
    if kinds:
        kinds = list(kinds)
    elif surface.ndim == 1:
        kinds = list(LINE_KINDS)
    else:
        kinds = [k for k in PLANE_KINDS if k != "spread" or surface.spread is not None]
    written = []
    with io.folder_lock(folder, argument="save_directory"):
        for kind in kinds:
            fig = plot_surface(surface, kind, **kwargs)
            for fmt in formats:
                try:
                    written.append(io.save_figure(folder / f"plot_{kind}.{fmt}", fig))
                except OSError as err:
                    raise SurfaceError(
                        f"Could not write plot_{kind}.{fmt} to {str(folder)!r} ({err.strerror or err}); what was "
                        "saved there before is intact (a surface saved first stays saved). Free disk space or make "
                        "the folder writable, then draw the plots again (`hf-landscape plot`, `surface.save_plots`)."
                    ) from None
    return written


def check_formats(formats: Any, argument: str) -> tuple[str, ...]:
    """`formats` as a tuple of plot formats, each one of `FORMATS`, or a `ConfigError` naming `argument`."""
    if isinstance(formats, str) or not isinstance(formats, Sequence) or not formats:
        raise ConfigError(f"`{argument}` must be a list of plot formats from {list(FORMATS)}, got {formats!r}.")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"`{argument}` may hold {list(FORMATS)}, got {fmt!r}.")
    return tuple(formats)

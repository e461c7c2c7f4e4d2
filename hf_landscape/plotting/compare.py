"""Several surfaces side by side (`plot_comparison`): of one kind and one model on shared colour limits and one
colour bar, said so in the figure; unrelated ones each with their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..surface import Surface

from .figures import add_colorbar, check_kind, log_scaled, plot_surface, plotted_values, tidy_contour_labels
from .levels import DEFAULT_LEVELS, check_spacing, colour_limits, colour_norm, contour_levels, is_linear, spacing_note
from .titles import TITLE_SIZE, model_and_kind


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
    kind = check_kind(items[0][1], kind)
    spacing = check_spacing(spacing)
    plain = [s for _, s in items]
    shared = related(plain) if shared_limits is None else shared_limits
    data = [log_scaled(plotted_values(s, metric)[0], log_scale) for s in plain]
    what = ("log10 " if log_scale else "") + (metric or "loss")
    n = len(items)
    fig = Figure(figsize=(5.6 * n + (0.8 if shared else 0.0), 5.0), layout="constrained")
    axes = [fig.add_subplot(1, n, k + 1, projection="3d" if kind == "surface" else None) for k in range(n)]
    options: dict[str, Any] = {"log_scale": log_scale, "metric": metric, "spacing": spacing}
    if shared:
        everything = np.concatenate([d.ravel() for d in data])
        lo, hi = colour_limits(everything, None, None)
        options.update(vmin=lo, vmax=hi)
        if kind != "curve":
            options["levels"] = contour_levels(everything, levels, spacing=spacing, vmin=lo, vmax=hi)
            options["colorbar"] = kind == "spread"  # the spread's own scale differs per panel
        else:
            options["levels"] = levels
        limits = f"{'y' if kind == 'curve' else 'colour'} limits [{lo:.4g}, {hi:.4g}]"
        fig.suptitle(f"{model_and_kind(plain[0])}: {what} on shared {limits}", fontsize=TITLE_SIZE + 1)
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
    norm = colour_norm(levels, lo, hi, is_linear(levels))
    return add_colorbar(fig, None, norm, levels, axes, label + spacing_note(levels, spacing), "contour", kind)


def _difference(surfaces: Sequence[Surface]) -> str:
    kinds = {s.kind for s in surfaces}
    models = {str((s.metadata.get("model") or {}).get("name_or_path")) for s in surfaces}
    if len(kinds) > 1 and len(models) > 1:
        return "the kinds and models differ"
    return "the kinds differ" if len(kinds) > 1 else "the models differ"

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

`levels` chooses contour levels, `titles` says what a figure shows, `figures` draws one surface (and a token map),
`compare` several side by side, `files` writes them. What does not live here: the numbers themselves
(`surface.py`, `comparison.py`) and the interactive viewer (`viewer/`).
"""

from .compare import plot_comparison, related, shared_colorbar
from .figures import (
    CENTRE_LABEL,
    CMAP,
    LINE_KINDS,
    MAX_LABELS,
    PLANE_KINDS,
    plot_surface,
    plot_token_map,
    tidy_contour_labels,
)
from .files import FORMATS, SAVE_DPI, check_formats, plot_kinds, plot_names, save_plots
from .levels import DEFAULT_LEVELS, SPACINGS, WIDE_RANGE, contour_levels, level_spacing
from .titles import LABEL_SIZE, TITLE_SIZE, describe_surface

__all__ = [
    "CENTRE_LABEL",
    "CMAP",
    "DEFAULT_LEVELS",
    "FORMATS",
    "LABEL_SIZE",
    "LINE_KINDS",
    "MAX_LABELS",
    "PLANE_KINDS",
    "SAVE_DPI",
    "SPACINGS",
    "TITLE_SIZE",
    "WIDE_RANGE",
    "check_formats",
    "contour_levels",
    "describe_surface",
    "level_spacing",
    "plot_comparison",
    "plot_kinds",
    "plot_names",
    "plot_surface",
    "plot_token_map",
    "related",
    "save_plots",
    "shared_colorbar",
    "tidy_contour_labels",
]

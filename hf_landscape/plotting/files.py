"""Plots written to files: one `plot_<kind>.<format>` per kind and format (`save_plots`), each atomically through
`io.save_figure`, and the names that makes (`plot_kinds`, `plot_names`, `check_formats`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SurfaceError

if TYPE_CHECKING:
    from ..surface import Surface

from .figures import LINE_KINDS, PLANE_KINDS, plot_surface

FORMATS = ("png", "pdf", "svg")


SAVE_DPI = 150


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
    from .. import io

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

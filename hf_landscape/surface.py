"""`Surface`: the coordinates, values, metrics and provenance of a line or plane; save, load, plot.

On disk a surface is two files: `surface.safetensors` (the arrays) and `surface.json` (sorted JSON:
kind, provenance, and the SHA-256 of the arrays file, so a corrupted or mismatched file is caught on
load). Both are written atomically and durably (`io.write_bytes`), arrays first, under the folder's lock,
so a crash never leaves a half-written surface. A surface made by a probe with `checkpoint_dir` remembers
its partial grid; saving it into that folder removes the partial files once both files are on disk, and a
failed save keeps them (and says so). Only safetensors and JSON are ever read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from . import io
from .errors import ConfigError, HubSurfaceError, SurfaceError
from .hub.mixin import FileSource, HubMixin

logger = logging.getLogger(__name__)

ARRAYS_NAME = "surface.safetensors"
METADATA_NAME = "surface.json"
FORMAT_VERSION = 1


class Surface(HubMixin):
    """A loss line (1-D) or plane (2-D) with its provenance.

    Args:
        x: coordinates along the first direction.
        values: the loss, shape `(len(x),)` for a line and `(len(y), len(x))` for a plane. NaN and inf
            are kept (far-out points can diverge).
        y: coordinates along the second direction, for a plane.
        metrics: further numbers with the shape of `values` (e.g. accuracy at every point).
        metadata: provenance (model, revision, objective, directions, seed, versions, wall time).
        directions: the `Direction`s along the axes, when they are at hand (not saved).
        spread: for a surface over several direction seeds, the standard deviation across seeds per point.
        samples: for a surface over several seeds, each seed's values, shape `(seeds, *values.shape)`.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> s = Surface(np.linspace(-1, 1, 3), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"})
    >>> s.save_pretrained("/tmp/surface_example", overwrite=True)
    >>> Surface.from_pretrained("/tmp/surface_example").values.tolist()
    [2.0, 1.0, 2.0]

    ```
    """

    _hub_files = (METADATA_NAME, ARRAYS_NAME)
    _hub_noun = "surface"
    _hub_error = SurfaceError
    _hub_failure = HubSurfaceError
    # A pushed surface carries its PNG plots, which the card shows, and its viewer page.
    _push_defaults = {"formats": ("png",), "viewer": True}

    def __init__(
        self,
        x: np.ndarray,
        values: np.ndarray,
        *,
        y: np.ndarray | None = None,
        metrics: dict[str, np.ndarray] | None = None,
        metadata: dict[str, Any] | None = None,
        directions: list[Any] | None = None,
        spread: np.ndarray | None = None,
        samples: np.ndarray | None = None,
    ) -> None:
        self.x = _array("x", x, ndim=1)
        self.y = None if y is None else _array("y", y, ndim=1)
        self.values = _array("values", values)
        expected = (len(self.x),) if self.y is None else (len(self.y), len(self.x))
        if self.values.shape != expected:
            raise SurfaceError(f"`values` has shape {self.values.shape}, expected {expected} from the coordinates.")
        if metrics is not None and not isinstance(metrics, Mapping):
            raise SurfaceError(f"`metrics` must be a dict {{name: array}}, got {type(metrics).__name__}.")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise SurfaceError(f"`metadata` must be a dict, got {type(metadata).__name__} {metadata!r:.60}.")
        self.metrics = {str(k): _shaped(f"metrics[{k!r}]", v, expected) for k, v in (metrics or {}).items()}
        self.metadata = dict(metadata or {})
        self.directions = directions
        self.spread = None if spread is None else _shaped("spread", spread, expected)
        self.samples = None if samples is None else _shaped("samples", samples, expected, stacked=True)
        # The partial grids (`GridCheckpoint`) this surface was computed into; `save_pretrained` removes those in
        # the folder it saves to, once the surface is durably there.
        self._partials: list[Any] = []

    @property
    def kind(self) -> str:
        """`"line"`, `"plane"` or `"interpolation"`."""
        return str(self.metadata.get("kind", "line" if self.y is None else "plane"))

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def centre_index(self) -> tuple[int, ...] | None:
        """Index of the grid's origin in `values` (`(j, i)` for planes, `(i,)` for lines), or None if the grid
        does not pass through it."""
        ix = np.flatnonzero(self.x == 0.0)
        if self.y is None:
            return (int(ix[0]),) if len(ix) else None
        iy = np.flatnonzero(self.y == 0.0)
        return (int(iy[0]), int(ix[0])) if len(ix) and len(iy) else None

    @property
    def centre(self) -> float:
        """The value at the origin of the grid (NaN if the grid does not pass through it)."""
        index = self.centre_index
        return float(self.values[index]) if index is not None else float("nan")

    def __repr__(self) -> str:
        shape = "x".join(str(n) for n in self.values.shape)
        return f"Surface(kind={self.kind!r}, shape={shape}, centre={self.centre:.6g}, metrics={sorted(self.metrics)})"

    # --- save / load ---------------------------------------------------------------------------

    def _arrays(self) -> dict[str, torch.Tensor]:
        arrays = {"x": torch.from_numpy(self.x.copy()), "values": torch.from_numpy(self.values.copy())}
        if self.y is not None:
            arrays["y"] = torch.from_numpy(self.y.copy())
        for name, value in self.metrics.items():
            arrays[f"metrics.{name}"] = torch.from_numpy(value.copy())
        if self.spread is not None:
            arrays["spread"] = torch.from_numpy(self.spread.copy())
        if self.samples is not None:
            arrays["samples"] = torch.from_numpy(self.samples.copy())
        return arrays

    def surface_id(self) -> str:
        """A hash of the arrays and metadata: two folders hold the same surface iff their ids match."""
        arrays = sorted(self._arrays().items())
        chunks = [part for name, t in arrays for part in (name.encode(), t.numpy().tobytes())]
        return io.sha256_of([*chunks, json.dumps(io.jsonable(self.metadata), sort_keys=True).encode()])

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        overwrite: bool = False,
        formats: Sequence[str] | None = None,
        viewer: bool = False,
        **plot_options: Any,
    ) -> None:
        """Write `surface.safetensors` and `surface.json` into `save_directory`, atomically and durably, with
        `formats` the plots too (`save_plots`: `plot_<kind>.<format>`, drawn with `plot_options` such as
        `log_scale=True`), and with `viewer` the interactive page `viewer.html` (`to_html`). `push_to_hub` takes the
        same options and pushes exactly these files (by default the PNG plots and the viewer).

        The folder is locked while it is written (`io.folder_lock`). If the surface was computed with a
        `checkpoint_dir` and is saved into that folder, the partial grid there is removed once both files are on
        disk; if the save fails, the partial grid is kept, so the same call (or command) finishes from it
        without evaluating any point again.

        Args:
            save_directory: the folder (created if needed).
            overwrite: replace a *different* surface already in the folder. Saving the same surface
                again is always allowed.
            formats: plot formats to write beside the surface (`"png"`, `"pdf"`, `"svg"`); none by default.
            viewer: also write `viewer.html`, the interactive page (`to_html`, in log10 with `log_scale=True`).
            plot_options: passed to `plotting.plot_surface` for every plot (`log_scale`, `levels`, ...).

        Raises:
            SurfaceError: the folder holds a different surface and `overwrite` is False, or cannot be written
                (the message says what was kept and how to finish); with `viewer`, a surface with no finite value
                (checked before anything is written). Nothing is half-written.
        """
        super().save_pretrained(save_directory, overwrite=overwrite, formats=formats, viewer=viewer, **plot_options)

    def _save_pretrained(
        self,
        folder: Path,
        *,
        overwrite: bool,
        formats: Sequence[str] | None = None,
        viewer: bool = False,
        **plot_options: Any,
    ) -> None:
        from .plotting import check_formats, plot_names
        from .viewer import VIEWER_NAME, surface_html

        if formats is None and plot_options and not (viewer and set(plot_options) == {"log_scale"}):
            raise ConfigError(f"Plot options {sorted(plot_options)} need `formats=` (e.g. formats=('png',)).")
        formats = check_formats(formats, "formats") if formats else ()
        names = (ARRAYS_NAME, METADATA_NAME, *plot_names(self, formats), *([VIEWER_NAME] if viewer else []))
        io.check_output_folder(folder, argument="save_directory", names=names)
        page = surface_html(self, log_scale=bool(plot_options.get("log_scale"))) if viewer else None  # checks values
        io.make_output_folder(folder, argument="save_directory")
        with io.folder_lock(folder, argument="save_directory"):
            self._save_locked(folder, overwrite)
            if formats:
                self.save_plots(folder, formats=formats, **plot_options)
            if page is not None:
                io.write_text(folder / VIEWER_NAME, page)

    def _save_locked(self, folder: Path, overwrite: bool) -> None:
        sid = self.surface_id()
        existing = folder / METADATA_NAME
        if existing.is_file() and not overwrite:
            try:
                old = json.loads(existing.read_text()).get("surface_id")
            except (OSError, ValueError, AttributeError):
                old = None
            if old != sid:
                raise SurfaceError(
                    f"`save_directory` {str(folder)!r} already holds a different surface; choose another folder "
                    "or pass `overwrite=True` (`--overwrite` on the command line)."
                )
        try:
            digest = io.write_safetensors(
                folder / ARRAYS_NAME, self._arrays(), metadata={"format": "hf_landscape.surface"}
            )
            record = {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "surface_id": sid,
                "arrays_sha256": digest,
                "metrics": sorted(self.metrics),
                "metadata": io.jsonable(self.metadata),
            }
            io.write_json(folder / METADATA_NAME, record)
        except Exception as err:  # a full disk, a failing rename, an unserializable array: keep every point
            raise SurfaceError(self._failed_save(folder, err)) from None
        logger.info("saved %s surface to %s", self.kind, folder)
        self._clear_partials(folder)

    def _failed_save(self, folder: Path, err: Exception) -> str:
        reason = f"{type(err).__name__}: {err.strerror}" if isinstance(err, OSError) and err.strerror else str(err)
        if not isinstance(err, OSError):
            reason = f"{type(err).__name__}: {reason}"
        partials = [str(p.folder) for p in self._partials if p.holds_this_grid()]
        if not partials:
            return (
                f"Could not save the surface to {str(folder)!r} ({reason}); the folder holds what it held before. "
                "Fix that (free disk space, make the folder writable), then save again."
            )
        points = int(self.samples.size if self.samples is not None else self.values.size)
        where = os.path.commonpath(partials) if len(partials) > 1 else partials[0]
        return (
            f"Could not save the surface to {str(folder)!r} ({reason}); all {points} evaluated points are kept in "
            f"{where!r}: fix that (free disk space, make the folder writable), then run the same command again (or "
            "call the same method with the same `checkpoint_dir`), which finishes from them without evaluating any "
            "point again."
        )

    def _clear_partials(self, folder: Path) -> None:
        """Remove the complete partial grids of this surface that live in `folder` (or its subfolders)."""
        root = folder.resolve()
        for partial in self._partials:
            where = partial.folder.resolve()
            if (where == root or root in where.parents) and partial.holds_this_grid():
                partial.clear()
                if where != root:
                    try:
                        where.rmdir()  # the per-seed or per-process subfolder, if nothing else is in it
                    except OSError:
                        pass
        self._partials = [p for p in self._partials if p.holds_this_grid()]

    @classmethod
    def _from_pretrained(cls, source: FileSource) -> Surface:
        """Read `surface.json` and `surface.safetensors` (`from_pretrained`: a folder or a Hub repo id).

        Raises:
            SurfaceError: the folder or repo holds no surface, or its arrays do not match their hash.
        """
        meta_path, arrays_path = source.path(METADATA_NAME), source.path(ARRAYS_NAME)
        try:
            record = json.loads(Path(meta_path).read_text())
        except (OSError, ValueError) as err:
            raise SurfaceError(
                f"{str(meta_path)!r} is not valid surface JSON ({err}); save the surface again."
            ) from None
        if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
            raise SurfaceError(f"{str(meta_path)!r} is not an hf_landscape surface of format {FORMAT_VERSION}.")
        if not isinstance(record.get("metadata"), dict):
            raise SurfaceError(
                f"{str(meta_path)!r} has no `metadata` dict (got {type(record.get('metadata')).__name__}); the file "
                "was not written by hf_landscape or was edited: save the surface again."
            )
        if io.sha256_file(Path(arrays_path)) != record.get("arrays_sha256"):
            raise SurfaceError(
                f"{str(arrays_path)!r} does not match the hash recorded in {METADATA_NAME}: the file is corrupted "
                "or from another surface; save or download the surface again."
            )
        try:
            arrays = {k: v.numpy() for k, v in load_file(str(arrays_path)).items()}
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise SurfaceError(f"{str(arrays_path)!r} cannot be read as safetensors ({err}).") from None
        missing = [name for name in ("x", "values") if name not in arrays]
        if missing:
            raise SurfaceError(
                f"{str(arrays_path)!r} has no {' or '.join(f'`{m}`' for m in missing)} array; it was not written by "
                "hf_landscape or was edited: save the surface again."
            )
        metrics = {k[len("metrics.") :]: v for k, v in arrays.items() if k.startswith("metrics.")}
        try:
            return cls(
                arrays["x"],
                arrays["values"],
                y=arrays.get("y"),
                metrics=metrics,
                metadata=record["metadata"],
                spread=arrays.get("spread"),
                samples=arrays.get("samples"),
            )
        except SurfaceError as err:
            raise SurfaceError(f"{str(arrays_path)!r} does not hold a valid surface: {err}") from None

    def _card(self, folder: str, written: list[str]) -> dict[str, Any]:
        return {"surfaces": {folder: self}, "plots": {folder: [n for n in written if n.startswith("plot_")]}}

    # --- plots ---------------------------------------------------------------------------------

    def plot(self, kind: str | None = None, **kwargs: Any) -> Any:
        """Draw the surface and return the matplotlib `Figure`.

        Args:
            kind: `"curve"` for lines; `"contour"` (default), `"heatmap"` or `"surface"` (3-D) for planes.
            **kwargs: passed to `hf_landscape.plotting.plot_surface` (`log_scale`, `levels`, `title`, `metric`).
        """
        from .plotting import plot_surface

        return plot_surface(self, kind=kind, **kwargs)

    def save_plots(
        self, save_directory: str | os.PathLike, *, formats: tuple[str, ...] = ("png",), **kwargs: Any
    ) -> list[Path]:
        """Write every plot kind that fits this surface to `save_directory`, one file per kind and format."""
        from .plotting import save_plots

        return save_plots(self, save_directory, formats=formats, **kwargs)

    # --- viewer and exports (hf_landscape.viewer, hf_landscape.export, hf_landscape.li2018) ----------

    def to_html(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Write the interactive viewer: one self-contained HTML file (see `hf_landscape.viewer.write_surface_html`)."""
        from .viewer import write_surface_html

        return write_surface_html(self, path, **kwargs)

    def export(self, path: str | os.PathLike) -> Path:
        """Write the surface in the format the suffix of `path` names: .parquet, .csv, .glb, .vtp or .h5 (see
        `hf_landscape.export`)."""
        from .export import export_surface

        return export_surface(self, path)

    @classmethod
    def from_li2018_h5(cls, path: str | os.PathLike, *, loss: str = "train_loss") -> Surface:
        """A surface from one of Li et al.'s (2018) `.h5` files (see `hf_landscape.li2018.read_li2018_h5`)."""
        from .li2018 import read_li2018_h5

        return cls(**read_li2018_h5(path, loss=loss))


def grid_surface(
    axes: list[np.ndarray],
    values: np.ndarray,
    metrics: dict[str, np.ndarray],
    metadata: dict[str, Any],
    *,
    directions: list[Any] | None = None,
    partials: list[Any] | None = None,
) -> Surface:
    """The surface of a grid run over `axes` (`[x]` for a line, `[x, y]` for a plane, points in `grid.grid_points`
    order): `values` and `metrics`, one per point, laid out as `values[j, i]` at (x[i], y[j]); `partials` are the
    partial grids it was computed into (removed once it is saved into their folder)."""
    shape = tuple(len(a) for a in reversed(axes))
    surface = Surface(
        axes[0],
        values.reshape(shape),
        y=axes[1] if len(axes) == 2 else None,
        metrics={k: v.reshape(shape) for k, v in metrics.items()},
        metadata=metadata,
        directions=directions,
    )
    surface._partials = list(partials or [])
    return surface


def combine_draws(surfaces: list[Surface], seeds: list[int]) -> Surface:
    """One surface of several direction draws (one surface per seed, same grid): `values` is the mean, `spread` the
    standard deviation (ddof=1) and `samples` each draw's values, so a plot can show whether a feature is one draw's.
    The metadata is the first draw's, with every draw's directions, the seeds and the summed wall time."""
    samples = np.stack([s.values for s in surfaces])
    first = surfaces[0]
    meta = dict(first.metadata)
    resumed = sum((s.metadata.get("resumed") or {}).get("points", 0) for s in surfaces)
    meta.update(
        seed=None,
        seeds=seeds,
        directions=[d for s in surfaces for d in s.metadata["directions"]],
        wall_time_s=round(sum(s.metadata["wall_time_s"] for s in surfaces), 3),
        compute_time_s=round(sum(s.metadata.get("compute_time_s", s.metadata["wall_time_s"]) for s in surfaces), 3),
        resumed={"points": resumed} if resumed else None,
    )
    metrics = {k: np.mean(np.stack([s.metrics[k] for s in surfaces]), axis=0) for k in first.metrics}
    combined = Surface(
        first.x,
        samples.mean(axis=0),
        y=first.y,
        metrics=metrics,
        metadata=meta,
        spread=samples.std(axis=0, ddof=1),
        samples=samples,
        directions=[d for s in surfaces for d in (s.directions or [])],
    )
    combined._partials = [p for s in surfaces for p in s._partials]
    return combined


def _array(name: str, value: Any, ndim: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SurfaceError(f"`{name}` must be an array of numbers ({err}).") from None
    if ndim is not None and array.ndim != ndim:
        raise SurfaceError(f"`{name}` must be 1-D (one coordinate per grid point), got shape {array.shape}.")
    return array


def _shaped(name: str, value: Any, expected: tuple[int, ...], *, stacked: bool = False) -> np.ndarray:
    """`value` as float64 of shape `expected` (or `(k, *expected)` when `stacked`): same size, any layout."""
    array = _array(name, value)
    size = int(np.prod(expected))
    if stacked:
        if size == 0 or array.size % size or array.size == 0:
            raise SurfaceError(f"`{name}` has shape {array.shape}, expected (draws, *{expected}).")
        return array.reshape(-1, *expected)
    if array.size != size:
        raise SurfaceError(f"`{name}` has {array.size} values in shape {array.shape}, expected shape {expected}.")
    return array.reshape(expected)

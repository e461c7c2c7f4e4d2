"""Loss landscapes of several models side by side ("BERT vs. BERT+SAM on CoLA"), with flatness summaries.

`compare` evaluates every model on one objective over the same grid, along random directions drawn the same way
from the same seed: each parameter's raw Gaussian draw depends only on (seed, axis, parameter name), and is then
filter-normalized to that model's own weights (Li et al. 2018). Two models of one architecture therefore see the
same raw draws, and differences between their surfaces come from the models. `CompareReport` holds the surfaces,
summarizes each (centre loss and metrics, mean loss increase within a radius, the radius where the loss first
rises by a threshold, curvature at the centre) and draws them on shared colour limits.

The summaries are small pure functions of a `Surface` (`analysis.summaries`: `mean_increase_within`, `rise_radius`,
`centre_curvature`, `summarize`, `interpolation_barrier`, importable from here too), usable on any plane or line.
What does not live here: the grid loop (`probe.py`, `engine/`) and single-surface plots (`plotting/`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import io
from .analysis.summaries import (
    SUMMARY_FIGURES,
    centre_curvature,
    grid_radius,
    interpolation_barrier,
    mean_increase_within,
    positive_number,
    radial_distance,
    rise_radius,
    rise_text,
    summarize,
)
from .directions.random import RandomDirectionConfig
from .errors import ConfigError, HubSurfaceError, SurfaceError
from .hub.mixin import FileSource, HubMixin
from .objectives.base import Objective
from .slices.search import AutoSpan, auto_span_config, shared_span, with_auto_span
from .stats import DEFAULT_CONFIDENCE, check_confidence
from .surface import Surface

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"
TABLE_NAME = "report.md"  # the table as markdown
FIGURE_STEM = "compare"  # the side-by-side figure, `compare.<format>`
FORMAT = "hf_landscape.compare"
FORMAT_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == REPORT_NAME:
        raise ConfigError(
            f"Model label {name!r} must be a non-empty name of letters, digits, '.', '_', '+' or '-' (it names a "
            f"folder when the report is saved), not {REPORT_NAME!r}; e.g. 'plain' or 'sam'."
        )
    return name


# --- the report ----------------------------------------------------------------------------------


class CompareReport(HubMixin):
    """Several surfaces over the same grid and directions, with per-model summaries and a side-by-side figure.

    Args:
        surfaces: `{label: Surface}`, in the order to show them.
        radius: the radius of `mean_increase_within` in the table.
        rise: the loss increase `rise_radius` looks for in the table.
        confidence: the level of the intervals the table gives for surfaces made over several seeds.
        metadata: how the comparison was made (seed, grid, direction options, objective).

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import CompareReport, Surface
    >>> x = y = np.linspace(-1, 1, 5)
    >>> xx, yy = np.meshgrid(x, y)
    >>> report = CompareReport({"flat": Surface(x, xx**2 + yy**2, y=y), "sharp": Surface(x, 4 * (xx**2 + yy**2), y=y)})
    >>> [row["curvature_mean"] for row in report.table()]
    [2.0, 8.0]
    >>> report.save_pretrained("/tmp/compare_example", overwrite=True)
    >>> sorted(CompareReport.from_pretrained("/tmp/compare_example").surfaces)
    ['flat', 'sharp']

    ```
    """

    _hub_files = (REPORT_NAME,)
    _hub_noun = "comparison"
    _hub_error = SurfaceError
    _hub_failure = HubSurfaceError
    _push_defaults = {"formats": ("png",), "viewer": True}  # each surface's PNG plots (the card shows them), the pages

    def __init__(
        self,
        surfaces: Mapping[str, Surface],
        *,
        radius: float = 0.5,
        rise: float = 0.1,
        confidence: float = DEFAULT_CONFIDENCE,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(surfaces, Mapping) or not surfaces:
            raise ConfigError("`surfaces` must be a non-empty dict {label: Surface}.")
        for name, surface in surfaces.items():
            _check_name(name)
            if not isinstance(surface, Surface):
                raise ConfigError(f"`surfaces[{name!r}]` must be a `Surface`, got {type(surface).__name__}.")
        if len({s.ndim for s in surfaces.values()}) != 1:
            raise ConfigError("`surfaces` mixes lines and planes; compare surfaces of one kind.")
        self.surfaces = dict(surfaces)
        self.radius = positive_number("radius", radius)
        self.rise = positive_number("rise", rise)
        self.confidence = check_confidence(confidence)
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"CompareReport(models={list(self.surfaces)}, radius={self.radius}, rise={self.rise})"

    # --- the table -------------------------------------------------------------------------------

    def table(self) -> list[dict[str, Any]]:
        """One row per model, in order: `{"model": label, **summarize(surface, radius=..., rise=..., confidence=...)}`
        (with `<figure>_ci` intervals for surfaces made over several seeds)."""
        return [
            {"model": name, **summarize(s, radius=self.radius, rise=self.rise, confidence=self.confidence)}
            for name, s in self.surfaces.items()
        ]

    def table_markdown(self, *, digits: int = 4) -> str:
        """The table as GitHub markdown, numbers to `digits` significant digits; a figure with an interval reads
        `value [low, high]`."""
        rows = self.table()
        keys = [k for k in dict.fromkeys(k for row in rows for k in row) if not k.endswith("_ci")]
        alpha, beta = ("α", "β")
        titles = {
            "model": "model",
            "centre_loss": "centre loss",
            "mean_increase": f"mean ΔL (r ≤ {self.radius:g})",
            "rise_radius": f"r where ΔL ≥ {self.rise:g}",
            "curvature_x": f"d²L/d{alpha}²",
            "curvature_y": f"d²L/d{beta}²",
            "curvature_mean": "mean curvature",
        }

        radii = [grid_radius(s) for s in self.surfaces.values()]

        def cell(value: Any, interval: Any = None, key: str = "", r_max: float = math.inf) -> str:
            if key == "rise_radius" and isinstance(value, float):
                return rise_text(value, interval, r_max, digits)
            if isinstance(value, float):
                text = f"{value:.{digits}g}"
                if interval is not None:
                    text += f" [{interval[0]:.{digits}g}, {interval[1]:.{digits}g}]"
                return text
            return "" if value is None else str(value)

        lines = [
            "| " + " | ".join(titles.get(k, k.replace("centre_", "centre ")) for k in keys) + " |",
            "|" + "|".join(":---" if k == "model" else "---:" for k in keys) + "|",
        ]
        lines += [
            "| " + " | ".join(cell(row.get(k), row.get(f"{k}_ci"), k, r_max) for k in keys) + " |"
            for row, r_max in zip(rows, radii)
        ]
        if any(k.endswith("_ci") for row in rows for k in row):
            lines.append(
                f"\nIntervals: {self.confidence:.0%} Student-t confidence intervals of the mean over the direction seeds."
            )
        return "\n".join(lines) + "\n"

    # --- the figure ------------------------------------------------------------------------------

    def colour_limits(self, *, metric: str | None = None, log_scale: bool = False) -> tuple[float, float]:
        """The shared (low, high) of the plotted values (the loss, or `metric`) over every finite point of every
        surface; log10 of the positive values when `log_scale`."""
        arrays = []
        for name, s in self.surfaces.items():
            if metric is not None and metric not in s.metrics:
                raise ConfigError(f"`metric` {metric!r} is not in surface {name!r}; it has {sorted(s.metrics)}.")
            values = s.values if metric is None else s.metrics[metric]
            if log_scale:
                with np.errstate(divide="ignore", invalid="ignore"):
                    values = np.where(values > 0, np.log10(values), np.nan)
            arrays.append(np.ravel(values))
        finite = np.concatenate(arrays)
        finite = finite[np.isfinite(finite)]
        if not finite.size:
            return 0.0, 1.0
        return float(finite.min()), float(finite.max())

    def figure(
        self,
        *,
        metric: str | None = None,
        log_scale: bool = False,
        levels: int = 15,
        spacing: str = "auto",
        vmin: float | None = None,
        vmax: float | None = None,
    ) -> Figure:
        """Contours (top row) and 3-D surfaces (bottom row) of every model, side by side on shared colour limits
        and contour levels, with one colour bar per row; curves on shared y limits for lines.

        Args:
            metric: plot this metric (e.g. `"matthews_correlation"`) instead of the loss.
            log_scale: plot log10 of the values.
            levels: how many contour levels, the same for every model.
            spacing: how they are spaced (`plotting.contour_levels`: `"auto"`, `"linear"`, `"log"`, `"quantile"`).
            vmin, vmax: override the shared limits (e.g. clip far-out divergence with `vmax=`).
        """
        from matplotlib.figure import Figure

        from .plotting import TITLE_SIZE, contour_levels, plot_surface, shared_colorbar, tidy_contour_labels

        lo, hi = self.colour_limits(metric=metric, log_scale=log_scale)
        lo = lo if vmin is None else float(vmin)
        hi = hi if vmax is None else float(vmax)
        n = len(self.surfaces)
        kinds = ("curve",) if next(iter(self.surfaces.values())).ndim == 1 else ("contour", "surface")
        what = ("log10 " if log_scale else "") + (metric or "loss")
        values = []
        for s in self.surfaces.values():
            v = s.values if metric is None else s.metrics[metric]
            if log_scale:
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.where(v > 0, np.log10(v), np.nan)
            values.append(np.ravel(v))
        shared_levels = contour_levels(np.concatenate(values), levels, spacing=spacing, vmin=lo, vmax=hi)
        fig = Figure(figsize=(5.4 * n + 1.0, 4.8 * len(kinds)), layout="constrained")
        for row, kind in enumerate(kinds):
            axes = []
            for col, (name, surface) in enumerate(self.surfaces.items()):
                ax = fig.add_subplot(len(kinds), n, row * n + col + 1, projection="3d" if kind == "surface" else None)
                plot_surface(
                    surface,
                    kind,
                    log_scale=log_scale,
                    levels=levels if kind == "curve" else list(shared_levels),
                    spacing=spacing,
                    metric=metric,
                    title=name,
                    vmin=lo,
                    vmax=hi,
                    colorbar=False,
                    tidy=False,
                    ax=ax,
                )
                axes.append(ax)
            if kind != "curve":
                shared_colorbar(fig, axes, shared_levels, lo, hi, what, spacing=spacing, kind=kind)
        fig.suptitle(
            f"{what} of {', '.join(self.surfaces)} on shared colour limits [{lo:.4g}, {hi:.4g}]",
            fontsize=TITLE_SIZE + 1,
        )
        tidy_contour_labels(fig)
        return fig

    def to_html(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Write the interactive comparison page: one self-contained HTML file (see
        `hf_landscape.viewer.write_compare_html`)."""
        from .viewer import write_compare_html

        return write_compare_html(self, path, **kwargs)

    # --- save / load -----------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "models": list(self.surfaces),
            "surface_ids": {name: s.surface_id() for name, s in self.surfaces.items()},
            "radius": self.radius,
            "rise": self.rise,
            "confidence": self.confidence,
            "metadata": io.jsonable(self.metadata),
            "table": self.table(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False, **options: Any) -> None:
        """Write each surface into `save_directory/<label>/`, `report.json` (sorted JSON: labels, grid and direction
        options, objective, the table, and each surface's id), the table as markdown (`report.md`) and the
        side-by-side figure (`compare.png`, or one file per format of `formats=`). `options` go to every surface's
        `save_pretrained` too (plots: `formats=("png",)`, `log_scale=True`, ...); with `viewer=True` each surface's
        folder gets its `viewer.html` and `save_directory` the comparison's (`to_html`). `push_to_hub` takes the same.

        Raises:
            SurfaceError: the folder holds a different report (or a label's folder a different surface) and
                `overwrite` is False. The report is checked before anything is written.
            ConfigError: with `viewer`, surfaces of different kinds (before anything is written).
        """
        super().save_pretrained(save_directory, overwrite=overwrite, **options)

    def _save_pretrained(self, folder: Path, *, overwrite: bool, **options: Any) -> None:
        from .plotting import check_formats
        from .viewer import VIEWER_NAME, compare_html

        formats = check_formats(options.get("formats") or ("png",), "formats")
        figures = [f"{FIGURE_STEM}.{fmt}" for fmt in formats]
        viewer = bool(options.get("viewer"))
        names = (REPORT_NAME, TABLE_NAME, *figures, *((VIEWER_NAME,) if viewer else ()))
        io.check_output_folder(folder, argument="save_directory", names=names)
        page = compare_html(self, log_scale=bool(options.get("log_scale"))) if viewer else None  # checks the kinds
        text = json.dumps(self._record(), sort_keys=True, indent=2, allow_nan=True) + "\n"
        io.make_output_folder(folder, argument="save_directory")
        with io.folder_lock(folder, argument="save_directory"):
            existing = folder / REPORT_NAME
            if existing.is_file() and not overwrite and existing.read_text() != text:
                raise SurfaceError(
                    f"`save_directory` {str(folder)!r} already holds a different comparison; choose another folder "
                    "or pass `overwrite=True`."
                )
            for name, surface in self.surfaces.items():
                surface.save_pretrained(folder / name, overwrite=overwrite, **options)
            figure = self.figure(log_scale=bool(options.get("log_scale", False)))
            for path in figures:
                io.save_figure(folder / path, figure)
            io.write_text(folder / TABLE_NAME, self.table_markdown())
            io.write_text(existing, text)
            if page is not None:
                io.write_text(folder / VIEWER_NAME, page)
        logger.info("saved a comparison of %d models to %s", len(self.surfaces), folder)

    @classmethod
    def _from_pretrained(cls, source: FileSource) -> CompareReport:
        """Read a report written by `save_pretrained` (`from_pretrained`: a folder or a Hub repo id; safetensors and
        JSON only).

        Raises:
            SurfaceError: the folder holds no report, or a surface does not match the id the report recorded.
        """
        path = source.path(REPORT_NAME)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SurfaceError(f"{str(path)!r} is not a readable comparison report ({err}).") from None
        if (
            not isinstance(record, dict)
            or record.get("format") != FORMAT
            or record.get("format_version") != FORMAT_VERSION
        ):
            raise SurfaceError(f"{str(path)!r} is not an hf_landscape comparison of format {FORMAT_VERSION}.")
        surfaces = {}
        for name in record["models"]:
            surface = Surface._from_pretrained(_checked(source.sub(_check_name(name), noun="surface"), Surface))
            if surface.surface_id() != record["surface_ids"].get(name):
                raise SurfaceError(
                    f"The surface in {str(path.parent / name)!r} is not the one {REPORT_NAME} recorded; save the "
                    "comparison again."
                )
            surfaces[name] = surface
        return cls(
            surfaces,
            radius=record["radius"],
            rise=record["rise"],
            confidence=record.get("confidence", DEFAULT_CONFIDENCE),
            metadata=record.get("metadata"),
        )

    def _card(self, folder: str, written: list[str]) -> dict[str, Any]:
        surfaces, plots = {}, {}
        for name, surface in self.surfaces.items():
            where = "/".join(filter(None, [folder, name]))
            surfaces[where] = surface
            plots[where] = [n.split("/", 1)[1] for n in written if n.startswith(f"{name}/plot_")]
        prefix = f"{folder}/" if folder else ""
        figure = next((n for n in written if n in (f"{FIGURE_STEM}.png", f"{FIGURE_STEM}.svg")), None)
        image = f"![comparison]({prefix}{figure})\n\n" if figure else ""
        # Labels are checked names (no markup) and the table holds numbers: it cannot break the card's markers.
        section = (
            f"<!-- surface:{folder} -->\n### {folder or 'comparison'}\n\n{image}{self.table_markdown()}\n"
            f"`CompareReport.from_pretrained` loads it whole.\n<!-- /surface:{folder} -->"
        )
        return {"surfaces": surfaces, "plots": plots, "sections": {folder: section}}


def _checked(source: FileSource, cls: Any) -> FileSource:
    """`source` once the files `cls` needs are there (downloaded from the Hub, or a `SurfaceError` naming them)."""
    if source.on_hub:
        source.download(list(cls._hub_files))
    elif not all((source.path(name)).is_file() for name in cls._hub_files):
        raise SurfaceError(f"{source.label!r} holds no surface ({' and '.join(cls._hub_files)} are needed).")
    return source


# --- the comparison ------------------------------------------------------------------------------


def compare(
    models: Mapping[str, Any],
    objective: Objective,
    *,
    steps: int | Sequence[int] = (21, 21),
    span: Sequence[Any] | str | AutoSpan = ((-1.0, 1.0), (-1.0, 1.0)),
    seed: int | Sequence[int] = 0,
    radius: float = 0.5,
    rise: float = 0.1,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = True,
    **direction_options: Any,
) -> CompareReport:
    """Evaluate the loss plane of every model on one objective, along directions drawn the same way.

    Each model gets `LandscapeProbe(model, objective).plane(steps, span, seed, **direction_options)`: the same raw
    Gaussian draws for every parameter name (seeded by (seed, axis, name)), filter-normalized (by default) to that
    model's own weights. Every model is checked against the objective before any grid is evaluated, and every
    model's weights are restored afterwards.

    Args:
        models: `{label: PreTrainedModel}`, e.g. `{"plain": model_a, "sam": model_b}`; labels name the folders of
            `CompareReport.save_pretrained`.
        objective: e.g. a `GlueObjective`, shared by every model.
        steps, span, seed: as in `LandscapeProbe.plane`; `span="auto"` (or an `AutoSpan`, whose `rise` sets the
            loss rise at the edges; `rise` below is the table's) searches every model's span and gives all models
            the widest, so the pictures stay comparable (`metadata["auto_span"]` of each surface). A list of seeds (e.g. `[0, 1, 2, 3, 4]`) makes every
            model's surface over those draws (mean, spread), and the table gives each flatness figure with its
            `confidence` interval over the draws, so a difference between models can be told from one draw's luck.
        radius, rise: the thresholds of the report's table (`mean_increase_within`, `rise_radius`).
        confidence: the level of those intervals.
        progress: show a progress bar per model.
        direction_options: `RandomDirectionConfig` fields (`normalization`, `include_1d`, `exclude`, ...).

    Returns:
        `CompareReport`.

    Example:
    ```python
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from hf_landscape import GlueObjective, compare
    >>> def tiny(seed):
    ...     _ = torch.manual_seed(seed)
    ...     return BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1,
    ...         num_attention_heads=2, intermediate_size=32, vocab_size=30, num_labels=2))
    >>> objective = GlueObjective("sst2", data={"input_ids": [[2, 5, 3], [2, 7, 8, 3]], "label": [1, 0]})
    >>> report = compare({"a": tiny(0), "b": tiny(1)}, objective, steps=(3, 3), progress=False)
    >>> [row["model"] for row in report.table()]
    ['a', 'b']

    ```
    """
    from .grid import seed_list
    from .probe import LandscapeProbe

    if not isinstance(models, Mapping) or not models:
        raise ConfigError("`models` must be a non-empty dict {label: PreTrainedModel}, e.g. {'plain': a, 'sam': b}.")
    for name in models:
        _check_name(name)
    radius = positive_number("radius", radius)
    rise = positive_number("rise", rise)
    confidence = check_confidence(confidence)
    if isinstance(seed, (list, tuple)):
        seed = seed_list(seed)  # checked before any model is evaluated
    direction_config = _direction_config(direction_options)
    auto = auto_span_config(span, None) if isinstance(span, (str, AutoSpan)) else None
    if len({id(m) for m in models.values()}) != len(models):
        logger.warning("`models` holds the same model object under two labels; their surfaces will be identical.")
    # Check every model before evaluating any, so a wrong one fails in seconds rather than after a grid.
    probes = {name: LandscapeProbe(model, objective, progress=progress) for name, model in models.items()}
    found = None
    if auto is not None:  # one span for every model: the widest any model's search found
        records = []
        for name, probe in probes.items():
            objective.bind(probe.model)
            for s in seed if isinstance(seed, list) else [cast(int, seed)]:
                records.append({**probe.find_span(2, s, span=auto, config=direction_config), "model": name})
        found = shared_span(records)
        span = found["span"]
    surfaces = {}
    for name, probe in probes.items():
        logger.info("comparing: evaluating %r", name)
        objective.bind(probe.model)  # one objective serves every model: bind it to this one again
        surface = probe.plane(steps=steps, span=span, seed=seed, config=direction_config)
        surface.metadata["compare_label"] = name
        with_auto_span(surface, found)
        surfaces[name] = surface
    first = next(iter(surfaces.values())).metadata
    metadata = {
        "seed": seed,
        "grid": first.get("grid"),
        "directions": direction_config.to_dict(),
        "objective": objective.describe(),
    }
    return CompareReport(surfaces, radius=radius, rise=rise, confidence=confidence, metadata=metadata)


def _direction_config(options: dict[str, Any]) -> RandomDirectionConfig:
    known = {f.name for f in dataclasses.fields(RandomDirectionConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"Unknown direction option(s) {unknown}; the options are {sorted(known)}.")
    return RandomDirectionConfig(**options)


__all__ = [
    "SUMMARY_FIGURES",
    "CompareReport",
    "centre_curvature",
    "compare",
    "interpolation_barrier",
    "mean_increase_within",
    "radial_distance",
    "rise_radius",
    "summarize",
]

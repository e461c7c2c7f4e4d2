"""The viewer's page: the figure, the provenance (model and revision linked to the Hub, objective, directions,
grid, versions, the command that reproduces it) and the flatness table, in one self-contained HTML file written
atomically. Every text from a surface is escaped; the page loads nothing from anywhere (`CSP`)."""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from .. import io
from ..errors import ConfigError, SurfaceError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..comparison import CompareReport
    from ..surface import Surface

from .compare import compare_figure
from .figures import surface_figure
from .traces import number

VIEWER_NAME = "viewer.html"


HTML_SUFFIXES = (".html", ".htm")


DEFAULT_ENDPOINT = "https://huggingface.co"


PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "landscape"},
}


# Nothing is fetched: scripts and styles are inline, images (plotly's PNG download) are data: or blob: URLs.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:"


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def hub_url(name_or_path: Any, revision: Any = None) -> str | None:
    """The Hub page of a model, or None when `name_or_path` is not a repo id. The base is `HF_ENDPOINT` when it is
    set (a mirror or a private Hub), https://huggingface.co otherwise.

    Example:
    ```python
    >>> from hf_landscape.viewer import hub_url
    >>> hub_url("HuggingFaceTB/SmolLM2-135M", "main")
    'https://huggingface.co/HuggingFaceTB/SmolLM2-135M/tree/main'
    >>> hub_url("../my model") is None
    True

    ```
    """
    if not isinstance(name_or_path, str) or not _REPO_ID.fullmatch(name_or_path):
        return None
    if ".." in name_or_path or name_or_path.endswith(".git"):
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT
    if not endpoint.startswith(("https://", "http://")):
        endpoint = DEFAULT_ENDPOINT
    url = f"{endpoint}/{quote(name_or_path, safe='/')}"
    if revision:
        url += f"/tree/{quote(str(revision), safe='')}"
    return url


def _model_link(model: Mapping[str, Any]) -> str:
    """The model's name, linked to its Hub page when it came from the Hub (a commit sha was resolved) or looks like
    an `org/name` repo id and was not loaded from a local folder."""
    name = model.get("name_or_path")
    if not name:
        return "<em>not recorded</em>"
    revision = model.get("commit_sha") or model.get("revision")
    local = model.get("local") or model.get("local_path")
    from_hub = bool(model.get("commit_sha")) or ("/" in str(name) and not local)
    url = hub_url(name, revision) if from_hub else None
    if url is None:
        return f"<code>{_e(name)}</code>"
    return f'<a href="{_e(url)}" rel="noopener noreferrer" target="_blank"><code>{_e(name)}</code></a>'


def _kv(items: Sequence[tuple[str, Any]]) -> str:
    parts = [f"{_e(k)} <code>{_e(v)}</code>" for k, v in items if v not in (None, "", [], {})]
    return " · ".join(parts)


def _directions_html(directions: Any, kind: str) -> str:
    if not isinstance(directions, list) or not directions:
        if kind == "interpolation":
            return "<em>none: the straight line (or path) between checkpoints</em>"
        return "<em>not recorded</em>"
    kinds = sorted({str(d.get("kind")) for d in directions if isinstance(d, dict)})
    keys = ("generator", "include_1d", "include", "exclude", "orthogonalize", "rank", "target_modules", "adapter_name")
    shared = []
    for key in keys:
        values = {json.dumps(d.get(key), sort_keys=True) for d in directions if isinstance(d, dict) and key in d}
        if len(values) == 1:
            shared.append((key, json.loads(values.pop())))
    ratios = [d.get("explained_variance_ratio") for d in directions if isinstance(d, dict)]
    summary = f"{_e(', '.join(kinds))} · {len(directions)} direction(s)"
    if any(r is not None for r in ratios):
        summary += " · explained variance " + ", ".join(f"{float(r):.1%}" for r in ratios if r is not None)
    rest = _kv([(k, v) for k, v in shared if v is not None])
    table = "".join(
        f"<li>{_kv([(k, v) for k, v in d.items() if k != 'run_dir'])}</li>" for d in directions if isinstance(d, dict)
    )
    return (
        f"{summary}{' · ' + rest if rest else ''}<details><summary>each direction</summary><ul>{table}</ul></details>"
    )


def _grid_text(surface: Surface) -> str:
    def span(a: np.ndarray) -> str:
        return f"[{a.min():.4g}, {a.max():.4g}]" if a.size else "[]"

    if surface.y is None:
        return f"{len(surface.x)} points, α ∈ {span(surface.x)}"
    return f"{len(surface.x)} × {len(surface.y)} points, α ∈ {span(surface.x)}, β ∈ {span(surface.y)}"


def _provenance_rows(surface: Surface) -> list[tuple[str, str]]:
    meta = surface.metadata
    model: dict[str, Any] = meta["model"] if isinstance(meta.get("model"), dict) else {}
    rows = [
        (
            "Model",
            " · ".join(
                part
                for part in (_model_link(model), _kv([(k, model.get(k)) for k in ("class", "num_parameters", "dtype")]))
                if part
            ),
        ),
        ("Revision", _kv([("revision", model.get("revision")), ("commit", model.get("commit_sha"))]) or "<em>—</em>"),
    ]
    path = meta.get("path") if isinstance(meta.get("path"), dict) else None
    if path and isinstance(path.get("models"), list):
        links = [f"θ{k} {_model_link(m) if isinstance(m, dict) else _e(m)}" for k, m in enumerate(path["models"])]
        rows.append(("Interpolation path", " → ".join(links)))
    objective: dict[str, Any] = meta["objective"] if isinstance(meta.get("objective"), dict) else {}
    if objective:
        rows.append(
            (
                "Objective",
                f"<code>{_e(objective.get('type'))}</code> · "
                + _kv([(k, objective.get(k)) for k in ("num_examples", "num_tokens", "tokenizer", "task", "split")]),
            )
        )
        rows.append(("Token fingerprint", f"<code>{_e(objective.get('fingerprint'))}</code>"))
        if objective.get("source"):
            rows.append(("Data", f"<code>{_e(json.dumps(objective.get('source'), sort_keys=True))}</code>"))
    directions = meta.get("directions")
    rows.append(("Directions", _directions_html(directions, surface.kind)))
    norms = sorted(
        {str(d.get("normalization")) for d in directions or [] if isinstance(d, dict) and "normalization" in d}
    )
    rows.append(("Normalization", _e(", ".join(norms)) if norms else "<em>—</em>"))
    seeds = meta.get("seeds") if meta.get("seeds") is not None else meta.get("seed")
    rows.append(("Seeds", f"<code>{_e(seeds)}</code>" if seeds is not None else "<em>—</em>"))
    rows.append(("Grid", _e(_grid_text(surface))))
    rows.append(("Precision", _kv([("weights", model.get("dtype")), ("autocast", meta.get("autocast"))]) or "—"))
    rows.append(
        (
            "Run",
            _kv(
                [
                    ("created", meta.get("created")),
                    ("wall time (s)", meta.get("wall_time_s")),
                    ("compute time over every run (s)", meta.get("compute_time_s")),
                    ("resumed points", (meta.get("resumed") or {}).get("points")),
                    ("processes", meta.get("processes")),
                    ("device", model.get("device")),
                ]
            )
            or "<em>—</em>",
        )
    )
    versions = meta.get("versions")
    if isinstance(versions, dict):
        rows.append(("Library versions", _kv(sorted(versions.items()))))
    source = meta.get("source")
    if isinstance(source, dict):
        rows.append(("Imported from", _kv(sorted(source.items()))))
    from ..hub.card import reproduce_command

    command = reproduce_command(surface)  # the card's: recorded by the CLI, or written from the metadata
    rows.append(
        (
            "Reproduce",
            f"<pre><code>{_e(command)}</code></pre>"
            if command
            else "<em>no command line makes it (the surface was made from Python)</em>",
        )
    )
    return rows


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


_TITLES = {
    "centre_loss": "centre loss",
    "mean_increase": "mean ΔL within r ≤ {radius:g}",
    "rise_radius": "r where ΔL ≥ {rise:g}",
    "curvature_x": "d²L/dα²",
    "curvature_y": "d²L/dβ²",
    "curvature_mean": "mean curvature",
}


def _table_html(
    rows: list[dict[str, Any]], radius: float, rise: float, confidence: float, radii: Sequence[float]
) -> str:
    from ..analysis.summaries import rise_text

    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "model" and not k.endswith("_ci")]

    def cell(value: Any, interval: Any, key: str = "", r_max: float = math.inf) -> str:
        if key == "rise_radius" and isinstance(value, float) and not math.isfinite(value):
            return _e(rise_text(value, interval, r_max))  # beyond the grid, not at infinity
        if isinstance(value, float):
            text = number(value, 4)
            if isinstance(interval, (list, tuple)) and len(interval) == 2:
                text += f" <span class='ci'>[{number(interval[0], 3)}, {number(interval[1], 3)}]</span>"
            return text
        return _e(value)

    head = "".join(f"<th scope='col'>{_e(row.get('model', ''))}</th>" for row in rows)
    body = ""
    for key in keys:
        if key in _TITLES:
            title = _TITLES[key].format(radius=radius, rise=rise)
        else:  # a metric's name: user text, never a format string
            title = key.replace("centre_", "centre ", 1)
        body += f"<tr><th scope='row'>{_e(title)}</th>" + "".join(
            f"<td>{cell(row.get(key), row.get(f'{key}_ci'), key, r_max)}</td>" for row, r_max in zip(rows, radii)
        )
        body += "</tr>"
    note = (
        f"<p class='note'>Intervals: {confidence:.0%} Student-t confidence intervals of the mean over the direction "
        "seeds.</p>"
        if any(k.endswith("_ci") for row in rows for k in row)
        else ""
    )
    return f"<table class='flatness'><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _summary_html(surface: Surface, label: str = "") -> str:
    from ..analysis.summaries import summarize

    try:
        row = {"model": label, **summarize(surface)}
    except SurfaceError as err:
        return f"<p class='note'>No flatness figures: {_e(err)}</p>"
    from ..analysis.summaries import grid_radius

    return _table_html([row], 0.5, 0.1, 0.95, [grid_radius(surface)])


_CSS = """
:root { --fg: #1d2330; --muted: #5b6577; --line: #e3e7ee; --bg: #f6f7fb; --card: #fff; --accent: #ff9d00; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { padding: 22px 28px 10px; }
header h1 { margin: 0; font-size: 22px; font-weight: 650; }
header h1 .tag { font-size: 12px; font-weight: 600; background: var(--accent); color: #fff; border-radius: 4px;
  padding: 2px 7px; margin-left: 8px; vertical-align: middle; letter-spacing: .03em; text-transform: uppercase; }
header p { margin: 4px 0 0; color: var(--muted); }
main { padding: 8px 28px 28px; display: grid; gap: 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 18px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row > .plot { flex: 3 1 640px; min-width: 0; }
.row > aside { flex: 1 1 300px; }
.row > aside.side { order: 2; flex: 0 1 340px; }
h2 { font-size: 15px; margin: 0 0 10px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px; margin: 0; }
dt { color: var(--muted); font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f1f3f8;
  padding: 1px 4px; border-radius: 4px; }
pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
pre code { display: block; padding: 8px 10px; }
a { color: #2563eb; text-decoration: none; } a:hover { text-decoration: underline; }
details summary { cursor: pointer; color: var(--muted); margin-top: 4px; }
details ul { margin: 6px 0 0; padding-left: 18px; }
table.flatness { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.flatness th, table.flatness td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: right; }
table.flatness th[scope=row] { text-align: left; color: var(--muted); font-weight: 600; }
table.flatness thead th { text-align: right; }
.ci { color: var(--muted); font-size: 12px; white-space: nowrap; }
.note { color: var(--muted); font-size: 12.5px; margin: 8px 0 0; }
footer { color: var(--muted); font-size: 12px; padding: 0 28px 24px; }
"""


def _plot_div(fig: go.Figure) -> str:
    import plotly.io as pio

    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=True,
        div_id="landscape",
        config=PLOTLY_CONFIG,
        default_width="100%",
        default_height=f"{fig.layout.height or 600}px",
    )


def _page(title: str, subtitle: str, tag: str, body: str) -> str:
    import plotly

    from ..version import __version__

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hf_landscape {_e(__version__)}">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{_e(title)}<span class="tag">{_e(tag)}</span></h1><p>{_e(subtitle)}</p></header>
<main>
{body}
</main>
<footer>Made with hf_landscape {_e(__version__)}. plotly.js {_e(plotly.__version__)} is inlined: this page needs no
network. Drag the 3-D view to rotate it; double-click a plot to reset its view; click legend entries to show or hide
layers.</footer>
</body>
</html>
"""


def _model_name(surface: Surface) -> str:
    model = surface.metadata.get("model")
    name = model.get("name_or_path") if isinstance(model, dict) else None
    return str(name) if name else "a model"


def surface_html(surface: Surface, *, title: str | None = None, log_scale: bool = False) -> str:
    """The viewer page of one surface, as a string (see the module docstring).

    Raises:
        SurfaceError: the surface has no finite loss value.
    """
    fig = surface_figure(surface, log_scale=log_scale)
    centre = surface.centre
    title = title or f"Loss landscape of {_model_name(surface)}"
    subtitle = f"{_grid_text(surface)} · centre loss {number(centre)}"
    summary = _summary_html(surface)
    meta_json = json.dumps(io.jsonable(surface.metadata), sort_keys=True, indent=2, allow_nan=True)
    body = (
        f"<section class='card plot'>{_plot_div(fig)}</section>\n"
        f"<div class='row'><section class='card' style='flex:2 1 520px'><h2>Provenance</h2>"
        f"{_dl(_provenance_rows(surface))}"
        f"<details><summary>all metadata (JSON)</summary><pre><code>{_e(meta_json)}</code></pre></details></section>"
        f"<aside class='card'><h2>Flatness at the centre</h2>{summary}</aside></div>"
    )
    return _page(title, subtitle, surface.kind, body)


def compare_html(report: CompareReport, *, title: str | None = None, log_scale: bool = False) -> str:
    """The comparison page of a `CompareReport`, as a string: the models side by side on shared colour limits, the
    flatness table beside them, and each model's provenance.

    Raises:
        ConfigError: the surfaces are of different kinds.
        SurfaceError: a surface has no finite loss value.
    """
    fig = compare_figure(report, log_scale=log_scale)
    labels = list(report.surfaces)
    first = next(iter(report.surfaces.values()))
    title = title or f"Loss landscapes compared: {', '.join(labels)}"
    subtitle = f"{len(labels)} {first.kind}s · {_grid_text(first)} · colour limits shared by every model"
    try:
        from ..analysis.summaries import grid_radius

        radii = [grid_radius(s) for s in report.surfaces.values()]
        table = _table_html(report.table(), report.radius, report.rise, report.confidence, radii)
    except SurfaceError as err:
        table = f"<p class='note'>No flatness table: {_e(err)}</p>"
    shared = []
    meta = report.metadata
    if meta:
        shared.append(
            "<section class='card'><h2>How the comparison was made</h2>"
            + _dl(
                [(k, f"<code>{_e(json.dumps(io.jsonable(v), sort_keys=True))}</code>") for k, v in sorted(meta.items())]
            )
            + "</section>"
        )
    per_model = "".join(
        f"<details {'open' if i == 0 else ''}><summary><strong>{_e(label)}</strong>: {_e(_model_name(s))}</summary>"
        f"{_dl(_provenance_rows(s))}</details>"
        for i, (label, s) in enumerate(report.surfaces.items())
    )
    body = (
        # The table comes first in the page so that its column exists when plotly sizes the figure (CSS puts it
        # on the right).
        f"<div class='row'><aside class='card side'><h2>Flatness and sharpness</h2>{table}</aside>"
        f"<section class='card plot'>{_plot_div(fig)}</section></div>\n"
        + "".join(shared)
        + f"<section class='card'><h2>Provenance of each model</h2>{per_model}</section>"
    )
    return _page(title, subtitle, "comparison", body)


def _write_page(path: Path, page: str) -> None:
    """Write `page` to `path` (its folder created if needed) atomically, through `io.write_text`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(path, page)


def check_html_path(path: str | os.PathLike) -> Path:
    """`path` as a `Path`, or a `ConfigError` when it does not end in .html / .htm or is a folder."""
    target = Path(path)
    if target.suffix.lower() not in HTML_SUFFIXES:
        raise ConfigError(f"`path` {str(target)!r} must end in .html (or .htm); e.g. {VIEWER_NAME!r}.")
    if target.is_dir():
        raise ConfigError(
            f"`path` {str(target)!r} is a folder; pass a file path such as {str(target / VIEWER_NAME)!r}."
        )
    return target


def write_surface_html(
    surface: Surface, path: str | os.PathLike, *, title: str | None = None, log_scale: bool = False
) -> Path:
    """Write the viewer page of `surface` to `path` (atomically; the page is built before anything is written) and
    return the path.

    Example:
    ```python
    >>> import numpy as np
    >>> from hf_landscape import Surface
    >>> x = y = np.linspace(-1, 1, 5)
    >>> plane = Surface(x, np.add.outer(y**2, x**2) + 1.0, y=y, metadata={"model": {"name_or_path": "org/tiny"}})
    >>> path = plane.to_html("/tmp/viewer_example.html")
    >>> "<title>Loss landscape of org/tiny</title>" in path.read_text()
    True

    ```

    Raises:
        ConfigError: `path` does not end in .html or is a folder.
        SurfaceError: the surface has no finite loss value.
    """
    target = check_html_path(path)
    page = surface_html(surface, title=title, log_scale=log_scale)
    _write_page(target, page)
    return target


def write_compare_html(
    report: CompareReport, path: str | os.PathLike, *, title: str | None = None, log_scale: bool = False
) -> Path:
    """Write the comparison page of `report` to `path` (atomically; built before anything is written) and return
    the path.

    Raises:
        ConfigError: `path` does not end in .html or is a folder, or the surfaces are of different kinds.
        SurfaceError: a surface has no finite loss value.
    """
    target = check_html_path(path)
    page = compare_html(report, title=title, log_scale=log_scale)
    _write_page(target, page)
    return target

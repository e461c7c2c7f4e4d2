"""The landscape viewer: one self-contained HTML page per surface or comparison, built with plotly.

The page carries plotly.js inline, so it opens offline from a disk, an e-mail attachment or a static Space, and a
Content-Security-Policy that lets it load nothing from anywhere. What it shows:

- a plane: a rotatable 3-D surface and a contour map side by side, the centre (the model itself) marked, hover
  giving α, β, the loss and every metric at that point; a menu to show the loss or any metric, a linear / log10
  switch, the training path when the surface has one (`metadata["trajectory"]`), and for a surface made over
  several direction seeds the ± 1 std layers around the mean and the spread itself as a quantity;
- a line or interpolation: the curve with its spread band, each seed's own curve (off until clicked in the
  legend), the centre and the checkpoints of an interpolation path (`metadata["path"]`) marked;
- a comparison (`CompareReport`): every model side by side on shared colour limits, with the flatness table;
- the provenance: model and revision (linked to the Hub), objective and token fingerprint, directions,
  normalization, seeds, grid, precision, library versions, the command that reproduces the surface, and the
  whole metadata as JSON.

Every piece of text that comes from a surface (model names, commands, metric names) is escaped for HTML, and
plotly's JSON is escaped for the script it sits in, so a name cannot inject markup or script.

`surface_figure` / `compare_figure` return the plotly `Figure` (for notebooks, W&B, Dash); `surface_html` /
`compare_html` the page; `write_surface_html` / `write_compare_html` (`Surface.to_html`, `CompareReport.to_html`)
write it. What does not live here: matplotlib figures (`plotting.py`) and file exports (`export.py`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from . import io
from .errors import ConfigError, SurfaceError
from .export import check_has_values, seed_labels, write_atomically

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .comparison import CompareReport
    from .surface import Surface

VIEWER_NAME = "viewer.html"
HTML_SUFFIXES = (".html", ".htm")
DEFAULT_ENDPOINT = "https://huggingface.co"
COLOURSCALE = "Viridis"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
CENTRE_COLOUR = "#e4002b"
PATH_COLOUR = "#ff6f00"
PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "landscape"},
}
# Nothing is fetched: scripts and styles are inline, images (plotly's PNG download) are data: or blob: URLs.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:"
COORDINATE_FORMAT = ".4~g"  # d3-format: 4 significant digits, trailing zeros dropped
COORDINATES_HOVER = f"α = %{{x:{COORDINATE_FORMAT}}}"
MENU_Y = 1.07  # the switches' row (their bottom edge), above the plots and below plotly's tool bar (paper coordinates)
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


# --- what a surface offers to draw ---------------------------------------------------------------


@dataclass(frozen=True)
class _Quantity:
    key: str  # "loss", a metric name, or "loss_spread"
    label: str  # as shown (raw text; escaped where it is used)
    metric: str | None  # the metric name for `CompareReport.colour_limits`, None for the loss


def _quantities(surface: Surface) -> list[_Quantity]:
    out = [_Quantity("loss", "loss", None)]
    out += [_Quantity(name, name, name) for name in sorted(surface.metrics)]
    if surface.spread is not None:
        n = 0 if surface.samples is None else len(surface.samples)
        out.append(_Quantity("loss_spread", f"loss spread (std over {n} seeds)", None))
    return out


def _array(surface: Surface, key: str) -> np.ndarray:
    if key == "loss":
        return surface.values
    if key == "loss_spread":
        assert surface.spread is not None
        return surface.spread
    return surface.metrics[key]


def _scaled(values: np.ndarray, log: bool) -> np.ndarray:
    if not log:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


def _plain(values: np.ndarray) -> list[Any]:
    """Values as nested lists for plotly's JSON, to 7 significant digits (what a colour or a height can show; the
    hover gives the values), non-finite ones as null (plotly leaves a gap there)."""
    array = np.asarray(values, dtype=np.float64)
    out = np.empty(array.shape, dtype=object)
    for index, v in np.ndenumerate(array):
        out[index] = float(f"{v:.7g}") if math.isfinite(v) else None
    return out.tolist()


def _number(value: float, digits: int = 6) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def _plotly_text(text: Any) -> str:
    """User text for a plotly string: HTML-escaped (plotly renders entities, never tags made of escaped text), and
    '%' as an entity so a name cannot be read as a hover-template field."""
    return html.escape(str(text), quote=False).replace("%", "&#37;")


def _hover(surface: Surface, label: str | None = None) -> tuple[np.ndarray, str]:
    """Per-point hover strings (`customdata`, shaped like `values` plus one axis) and the template that shows them:
    α (and β) from the point's coordinates, then the loss, every metric and the spread."""
    fields: list[tuple[str, np.ndarray, int]] = [("loss", surface.values, 6)]
    fields += [(name, surface.metrics[name], 6) for name in sorted(surface.metrics)]
    if surface.spread is not None:
        fields.append(("loss std over seeds", surface.spread, 4))
    columns = [np.vectorize(lambda v, d=d: _number(float(v), d), otypes=[object])(a) for _, a, d in fields]
    custom = np.stack(columns, axis=-1)
    lines = [COORDINATES_HOVER if surface.y is None else f"{COORDINATES_HOVER}<br>β = %{{y:{COORDINATE_FORMAT}}}"]
    lines += [f"{_plotly_text(name)} = %{{customdata[{k}]}}" for k, (name, _, _) in enumerate(fields)]
    extra = _plotly_text(label) if label else ""
    return custom, "<br>".join(lines) + f"<extra>{extra}</extra>"


def _axis_titles(surface: Surface) -> tuple[str, str]:
    if surface.kind == "interpolation":
        knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
        if len(knots) > 2:
            return f"α (path through checkpoints θ0 … θ{knots[-1]} at α = 0 … {knots[-1]})", ""
        return "α (0 = model, 1 = other model)", ""
    return "α (direction 1)", "β (direction 2)"


def _centre_value(surface: Surface, values: np.ndarray) -> float | None:
    index = surface.centre_index
    if index is None:
        return None
    value = float(values[index])
    return value if math.isfinite(value) else None


# --- figures -------------------------------------------------------------------------------------


class _Builder:
    """A figure plus the bookkeeping its two switches need: which traces belong to which quantity, and the linear
    and log10 data of every trace whose values the log switch replaces."""

    def __init__(self, fig: go.Figure, quantities: list[_Quantity]) -> None:
        self.fig = fig
        self.quantities = quantities
        self.groups: list[list[int]] = [[] for _ in quantities]
        self.legend_only: set[int] = set()
        self.scaled: list[tuple[int, Any, Any]] = []  # (trace, linear z, log10 z) for the log switch

    def add(self, trace: Any, group: int | None, *, row: int | None = None, col: int | None = None) -> int:
        if row is None:
            self.fig.add_trace(trace)
        else:
            self.fig.add_trace(trace, row=row, col=col)
        index = len(self.fig.data) - 1
        if group is not None:
            self.groups[group].append(index)
        return index

    def scale(self, index: int, values: np.ndarray) -> None:
        self.scaled.append((index, _plain(_scaled(values, False)), _plain(_scaled(values, True))))

    def quantity_menu(self, layouts: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The menu that shows one quantity's traces (and applies `layouts[k]` to the layout, when given)."""
        if len(self.quantities) < 2:
            return None
        grouped = {i for g in self.groups for i in g}
        buttons = []
        for k, q in enumerate(self.quantities):
            visible: list[Any] = []
            for i in range(len(self.fig.data)):
                if i not in grouped or i in self.groups[k]:
                    visible.append("legendonly" if i in self.legend_only else True)
                else:
                    visible.append(False)
            if layouts is None:
                buttons.append({"label": _plotly_text(q.label), "method": "restyle", "args": [{"visible": visible}]})
            else:
                args = [{"visible": visible}, layouts[k]]
                buttons.append({"label": _plotly_text(q.label), "method": "update", "args": args})
        return {
            "type": "dropdown",
            "buttons": buttons,
            "active": 0,
            "x": 0.0,
            "xanchor": "left",
            "y": MENU_Y,
            "yanchor": "bottom",
            "pad": {"l": 46},  # room for its "show" label
            "showactive": True,
            "name": "quantity",
        }

    def log_menu(self, layout_linear: dict[str, Any], layout_log: dict[str, Any], log_scale: bool) -> dict[str, Any]:
        def args(log: bool) -> list[Any]:
            traces = [index for index, _, _ in self.scaled]
            data = {"z": [lg if log else lin for _, lin, lg in self.scaled]}
            return [data, layout_log if log else layout_linear, traces]

        return {
            "type": "buttons",
            "direction": "right",
            "buttons": [
                {"label": "linear scale", "method": "update", "args": args(False)},
                {"label": "log10 scale", "method": "update", "args": args(True)},
            ],
            "active": 1 if log_scale else 0,
            "x": 1.0,
            "xanchor": "right",
            "y": MENU_Y,
            "yanchor": "bottom",
            "showactive": True,
            "name": "scale",
        }


def _base_layout(fig: go.Figure, height: int) -> None:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 50, "r": 30, "t": 100, "b": 70},
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        hoverlabel={"font": {"family": "ui-monospace, SFMono-Regular, Menlo, monospace", "size": 12}},
        legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.1, "yanchor": "top"},
    )


def _menu_labels(fig: go.Figure, quantity_menu: bool) -> None:
    if quantity_menu:
        fig.add_annotation(
            text="show",
            x=0.0,
            y=MENU_Y,
            xref="paper",
            yref="paper",
            showarrow=False,
            xanchor="left",
            yanchor="middle",
            yshift=13,  # level with the middle of the menu beside it
        )


def _coloraxis(k: int) -> str:
    return "coloraxis" if k == 0 else f"coloraxis{k + 1}"


def _colourbar(title: str, x: float = 1.02) -> dict[str, Any]:
    return {"title": {"text": _plotly_text(title), "side": "right"}, "x": x, "len": 0.85, "thickness": 14}


def surface_figure(surface: Surface, *, log_scale: bool = False) -> go.Figure:
    """The interactive plotly figure of one surface: a 3-D surface and a contour map side by side for a plane, the
    curve for a line or interpolation (see the module docstring for what it shows).

    Args:
        surface: the `Surface`.
        log_scale: start with log10 of the values shown (the page's switch turns it back).

    Raises:
        SurfaceError: the surface has no finite loss value.
    """
    check_has_values(surface)
    if surface.ndim == 1:
        return _lines_figure({"": surface}, log_scale=log_scale)
    return _plane_figure(surface, log_scale=log_scale)


def _plane_figure(surface: Surface, *, log_scale: bool) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    assert surface.y is not None
    x, y = surface.x.tolist(), surface.y.tolist()
    fig = make_subplots(
        rows=1,
        cols=2,
        specs=[[{"type": "scene"}, {"type": "xy"}]],
        column_widths=[0.52, 0.48],
        horizontal_spacing=0.06,
        subplot_titles=("3-D surface: drag to rotate, scroll to zoom", "contour map: hover for the values"),
    )
    quantities = _quantities(surface)
    b = _Builder(fig, quantities)
    custom, template = _hover(surface)
    custom_list = custom.tolist()
    layout_lin: dict[str, Any] = {}
    layout_log: dict[str, Any] = {}
    for k, q in enumerate(quantities):
        values = _array(surface, q.key)
        shown = _plain(_scaled(values, log_scale))
        axis = _coloraxis(k)
        fig.layout[axis] = {"colorscale": COLOURSCALE, "autocolorscale": False, "colorbar": _colourbar(q.label)}
        layout_lin[f"{axis}.colorbar.title.text"] = _plotly_text(q.label)
        layout_log[f"{axis}.colorbar.title.text"] = _plotly_text(f"log10 {q.label}")
        if log_scale:
            fig.layout[axis].colorbar.title.text = _plotly_text(f"log10 {q.label}")
        i = b.add(
            go.Surface(
                x=x,
                y=y,
                z=shown,
                coloraxis=axis,
                customdata=custom_list,
                hovertemplate=template,
                name=_plotly_text(q.label),
                visible=k == 0,
                contours={"z": {"show": True, "usecolormap": True, "project": {"z": True}, "width": 1}},
                lighting={"ambient": 0.75, "diffuse": 0.6, "specular": 0.15, "roughness": 0.8},
            ),
            k,
            row=1,
            col=1,
        )
        b.scale(i, values)
        i = b.add(
            go.Contour(
                x=x,
                y=y,
                z=shown,
                coloraxis=axis,
                customdata=custom_list,
                hovertemplate=template,
                name=_plotly_text(q.label),
                visible=k == 0,
                ncontours=22,
                contours={"coloring": "heatmap", "showlabels": True, "labelfont": {"size": 9, "color": "white"}},
                line={"width": 0.6, "color": "rgba(255,255,255,0.55)"},
                connectgaps=False,
            ),
            k,
            row=1,
            col=2,
        )
        b.scale(i, values)
        centre = _centre_value(surface, values)
        if centre is not None:
            i = b.add(
                go.Scatter3d(
                    x=[0.0],
                    y=[0.0],
                    z=_plain(_scaled(np.array([centre]), log_scale)),
                    mode="markers",
                    marker={"size": 6, "color": CENTRE_COLOUR, "symbol": "diamond", "line": {"width": 1}},
                    name="centre: the model (θ₀)",
                    hovertemplate=f"centre: the model (θ₀)<br>{_plotly_text(q.label)} = {_number(centre)}<extra></extra>",
                    visible=k == 0,
                    showlegend=False,
                ),
                k,
                row=1,
                col=1,
            )
            b.scale(i, np.array([centre]))
        if q.key == "loss" and surface.spread is not None:
            n = 0 if surface.samples is None else len(surface.samples)
            for sign in (1, -1):
                band = surface.values + sign * surface.spread
                i = b.add(
                    go.Surface(
                        x=x,
                        y=y,
                        z=_plain(_scaled(band, log_scale)),
                        colorscale=[[0, "rgb(120,120,120)"], [1, "rgb(120,120,120)"]],
                        showscale=False,
                        opacity=0.28,
                        # the layer lies over the mean, so it answers the hover itself
                        hovertemplate=f"layer: mean {'+' if sign == 1 else '−'} 1 std<br>{COORDINATES_HOVER}"
                        f"<br>β = %{{y:{COORDINATE_FORMAT}}}<br>loss = %{{z:.6~g}}<extra></extra>",
                        name=f"mean ± 1 std over {n} seeds (3-D layers)",
                        showlegend=sign == 1,
                        legendgroup="spread",
                    ),
                    k,
                    row=1,
                    col=1,
                )
                b.scale(i, band)
    _trajectory(b, surface, row=1, col=2)
    centre_loss = _centre_value(surface, surface.values)
    fig.add_trace(
        go.Scatter(
            x=[0.0],
            y=[0.0],
            mode="markers",
            marker={"size": 14, "color": CENTRE_COLOUR, "symbol": "star", "line": {"width": 1, "color": "white"}},
            name="centre: the model (θ₀)",
            hovertemplate="centre: the model (θ₀)"
            + (f"<br>loss = {_number(centre_loss)}" if centre_loss is not None else "")
            + "<extra></extra>",
        ),
        row=1,
        col=2,
    )
    xt, yt = _axis_titles(surface)
    fig.update_scenes(
        xaxis_title_text=xt.split(" (")[0],
        yaxis_title_text=yt.split(" (")[0],
        zaxis_title_text="",
        camera={"eye": {"x": 1.3, "y": -1.3, "z": 0.8}},
        aspectmode="manual",
        aspectratio={"x": 1, "y": 1, "z": 0.75},
    )
    fig.update_xaxes(title_text=xt, row=1, col=2)
    fig.update_yaxes(title_text=yt, row=1, col=2)
    _base_layout(fig, 620)
    _finish_menus(b, layout_lin, layout_log, log_scale)
    return fig


def _trajectory(
    b: _Builder, surface: Surface, *, row: int | None = None, col: int | None = None, legend: bool = True
) -> None:
    """The optimizer's path projected on the plane (Li et al. 2018, §7), each snapshot with its step and its own
    loss, on the contour map; always shown, whatever the quantity."""
    import plotly.graph_objects as go

    info = surface.metadata.get("trajectory") or {}
    coordinates = info.get("coordinates")
    if not coordinates:
        return
    xy = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    steps = list(info.get("steps") or range(len(xy)))
    losses = list(info.get("losses") or [])
    hover = []
    for k, (a, c) in enumerate(xy):
        text = f"training path<br>step {_plotly_text(steps[k]) if k < len(steps) else k}<br>α = {a:.4g}<br>β = {c:.4g}"
        if k < len(losses) and losses[k] is not None:
            text += f"<br>loss of this snapshot = {_number(float(losses[k]))}"
        hover.append(text)
    labels = [""] * len(xy)
    if len(xy):
        labels[0] = f"step {_plotly_text(steps[0])}" if steps else "start"
        labels[-1] = f"step {_plotly_text(steps[-1])}" if steps else "end"
    trace = go.Scatter(
        x=xy[:, 0].tolist(),
        y=xy[:, 1].tolist(),
        mode="lines+markers+text",
        text=labels,
        textposition="top center",
        textfont={"color": PATH_COLOUR, "size": 11},
        line={"color": PATH_COLOUR, "width": 2},
        marker={"size": 7, "color": PATH_COLOUR, "line": {"width": 1, "color": "white"}},
        name="training path (snapshots)",
        legendgroup="trajectory",
        showlegend=legend,
        hovertext=hover,
        hoverinfo="text",
    )
    b.add(trace, None, row=row, col=col)


def _finish_menus(b: _Builder, layout_lin: dict[str, Any], layout_log: dict[str, Any], log_scale: bool) -> None:
    menus = [m for m in (b.quantity_menu(), b.log_menu(layout_lin, layout_log, log_scale)) if m is not None]
    b.fig.update_layout(updatemenus=menus)
    _menu_labels(b.fig, quantity_menu=len(menus) == 2)


def _lines_figure(surfaces: Mapping[str, Surface], *, log_scale: bool) -> go.Figure:
    """Curves of one or several lines on one axes; `surfaces` is `{label: surface}` (label "" for a lone surface)."""
    import plotly.graph_objects as go

    first = next(iter(surfaces.values()))
    common = set.intersection(*(set(s.metrics) for s in surfaces.values()))
    quantities = [_Quantity("loss", "loss", None)] + [_Quantity(n, n, n) for n in sorted(common)]
    fig = go.Figure()
    b = _Builder(fig, quantities)
    several = len(surfaces) > 1
    for k, q in enumerate(quantities):
        for m, (label, surface) in enumerate(surfaces.items()):
            colour = PALETTE[m % len(PALETTE)]
            values = _array(surface, q.key)
            x = surface.x.tolist()
            tag = f"{label}: " if several else ""
            if q.key == "loss" and surface.spread is not None:
                n = 0 if surface.samples is None else len(surface.samples)
                b.add(
                    go.Scatter(
                        x=x,
                        y=_plain(surface.values + surface.spread),
                        mode="lines",
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=f"band{m}",
                    ),
                    k,
                )
                b.add(
                    go.Scatter(
                        x=x,
                        y=_plain(surface.values - surface.spread),
                        mode="lines",
                        line={"width": 0},
                        fill="tonexty",
                        fillcolor=_rgba(colour, 0.2),
                        hoverinfo="skip",
                        name=_plotly_text(f"{tag}± 1 std over {n} seeds"),
                        legendgroup=f"band{m}",
                    ),
                    k,
                )
                for seed, sample in zip(seed_labels(surface), surface.samples if surface.samples is not None else []):
                    i = b.add(
                        go.Scatter(
                            x=x,
                            y=_plain(sample),
                            mode="lines",
                            line={"width": 1, "color": _rgba(colour, 0.55), "dash": "dot"},
                            name=_plotly_text(f"{tag}seed {seed}"),
                            hovertemplate=f"seed {_plotly_text(seed)}<br>α = %{{x:.4g}}<br>loss = %{{y:.6g}}<extra></extra>",
                            visible="legendonly",
                        ),
                        k,
                    )
                    b.legend_only.add(i)
            custom, template = _hover(surface, label or None)
            b.add(
                go.Scatter(
                    x=x,
                    y=_plain(values),
                    mode="lines+markers" if len(x) <= 121 else "lines",
                    line={"color": colour, "width": 2.2},
                    marker={"size": 4},
                    customdata=custom.tolist(),
                    hovertemplate=template,
                    name=_plotly_text(f"{label}: {q.label}" if several else q.label),
                    visible=k == 0,
                ),
                k,
            )
            centre = _centre_value(surface, values)
            if centre is not None:
                b.add(
                    go.Scatter(
                        x=[0.0],
                        y=[centre],
                        mode="markers",
                        marker={"size": 13, "color": CENTRE_COLOUR, "symbol": "star", "line": {"width": 1}},
                        name="centre: the model (θ₀)",
                        legendgroup="centre",
                        showlegend=m == 0,
                        hovertemplate=f"{_plotly_text(tag)}centre: the model (θ₀)<br>{_plotly_text(q.label)} = "
                        f"{_number(centre)}<extra></extra>",
                        visible=k == 0,
                    ),
                    k,
                )
            _knots(b, surface, values, k, m == 0, tag)
    for k, group in enumerate(b.groups):
        for i in group:
            if k != 0:
                fig.data[i].visible = False
    xt, _ = _axis_titles(first)
    fig.update_xaxes(title_text=xt, zeroline=True)
    fig.update_yaxes(title_text="loss", type="log" if log_scale else "linear")
    for knot in sorted({k for s in surfaces.values() if s.kind == "interpolation" for k in _knot_positions(s)}):
        fig.add_vline(x=knot, line={"color": "rgba(0,0,0,0.25)", "width": 1, "dash": "dot"})
    _base_layout(fig, 560)
    titles = [{"yaxis.title.text": _plotly_text(q.label)} for q in quantities]
    menus = [m for m in (b.quantity_menu(titles),) if m is not None]
    menus.append(
        {
            "type": "buttons",
            "direction": "right",
            "buttons": [
                {"label": "linear scale", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                {"label": "log10 scale", "method": "relayout", "args": [{"yaxis.type": "log"}]},
            ],
            "active": 1 if log_scale else 0,
            "x": 1.0,
            "xanchor": "right",
            "y": MENU_Y,
            "yanchor": "bottom",
            "name": "scale",
        }
    )
    fig.update_layout(updatemenus=menus, hovermode="closest", legend_y=-0.16, margin_b=90)
    _menu_labels(fig, quantity_menu=len(menus) == 2)
    return fig


def _knots(b: _Builder, surface: Surface, values: np.ndarray, group: int, legend: bool, tag: str) -> None:
    """The checkpoints of an interpolation path (α = 1, 2, ...), marked on the curve with their model names."""
    import plotly.graph_objects as go

    if surface.kind != "interpolation":
        return
    path = surface.metadata.get("path") or {}
    knots = path.get("knots") or [0, 1]
    models = path.get("models") or []
    xs, ys, hover, text = [], [], [], []
    for k in knots[1:]:
        at = np.flatnonzero(surface.x == float(k))
        if not len(at) or not math.isfinite(float(values[at[0]])):
            continue
        name = (models[k] or {}).get("name_or_path") if k < len(models) and isinstance(models[k], dict) else None
        xs.append(float(k))
        ys.append(float(values[at[0]]))
        text.append(f"θ{k}")
        hover.append(
            f"{_plotly_text(tag)}checkpoint θ{k}: {_plotly_text(name or 'other model')}<br>value = {_number(ys[-1])}"
        )
    if xs:
        b.add(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers+text",
                text=text,
                textposition="top center",
                marker={"size": 11, "color": "#2ca02c", "symbol": "square", "line": {"width": 1, "color": "white"}},
                name="checkpoints on the path" if len(knots) > 2 else "other model",
                legendgroup="knots",
                showlegend=legend,
                hovertext=hover,
                hoverinfo="text",
                visible=group == 0,
            ),
            group,
        )


def _knot_positions(surface: Surface) -> list[float]:
    knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
    return [float(k) for k in knots[1:]]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, bl = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{bl},{alpha})"


def compare_figure(report: CompareReport, *, log_scale: bool = False) -> go.Figure:
    """The interactive plotly figure of a comparison: for planes, each model's 3-D surface (top row) and contour map
    (bottom row) side by side, every quantity on colour limits shared by all models (`CompareReport.colour_limits`);
    for lines, every model's curve on one axes.

    Raises:
        ConfigError: the surfaces are of different kinds (e.g. a line and an interpolation).
        SurfaceError: a surface has no finite loss value.
    """
    check_same_kind(report.surfaces)
    for surface in report.surfaces.values():
        check_has_values(surface)
    first = next(iter(report.surfaces.values()))
    if first.ndim == 1:
        return _lines_figure(report.surfaces, log_scale=log_scale)
    return _compare_planes_figure(report, log_scale=log_scale)


def check_same_kind(surfaces: Mapping[str, Surface]) -> None:
    """Refuse a comparison of surfaces of different kinds (lines, planes, interpolations): their axes mean
    different things, so one page cannot show them side by side."""
    kinds = {label: s.kind for label, s in surfaces.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(
            f"{label!r} is {'an' if kind[:1] in 'aeiou' else 'a'} {kind}" for label, kind in kinds.items()
        )
        raise ConfigError(f"`surfaces` mixes kinds ({listed}); compare surfaces of one kind.")


def _compare_planes_figure(report: CompareReport, *, log_scale: bool) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(report.surfaces)
    n = len(labels)
    fig = make_subplots(
        rows=2,
        cols=n,
        specs=[[{"type": "scene"}] * n, [{"type": "xy"}] * n],
        row_heights=[0.55, 0.45],
        vertical_spacing=0.08,
        horizontal_spacing=0.05 if n > 1 else 0.0,
        subplot_titles=[_plotly_text(label) for label in labels] + [""] * n,
    )
    common = set.intersection(*(set(s.metrics) for s in report.surfaces.values()))
    quantities = [_Quantity("loss", "loss", None)] + [_Quantity(m, m, m) for m in sorted(common)]
    b = _Builder(fig, quantities)
    layout_lin: dict[str, Any] = {}
    layout_log: dict[str, Any] = {}
    for k, q in enumerate(quantities):
        axis = _coloraxis(k)
        limits = {log: report.colour_limits(metric=q.metric, log_scale=log) for log in (False, True)}
        lo, hi = limits[log_scale]
        title = f"{'log10 ' if log_scale else ''}{q.label} (shared limits)"
        fig.layout[axis] = {
            "colorscale": COLOURSCALE,
            "autocolorscale": False,
            "cmin": lo,
            "cmax": hi,
            "colorbar": _colourbar(title),
        }
        for log, target in ((False, layout_lin), (True, layout_log)):
            target[f"{axis}.cmin"], target[f"{axis}.cmax"] = limits[log]
            target[f"{axis}.colorbar.title.text"] = _plotly_text(f"{'log10 ' if log else ''}{q.label} (shared limits)")
        for m, (label, surface) in enumerate(report.surfaces.items()):
            assert surface.y is not None
            x, y = surface.x.tolist(), surface.y.tolist()
            values = _array(surface, q.key)
            shown = _plain(_scaled(values, log_scale))
            custom, template = _hover(surface, label)
            custom_list = custom.tolist()
            i = b.add(
                go.Surface(
                    x=x,
                    y=y,
                    z=shown,
                    coloraxis=axis,
                    customdata=custom_list,
                    hovertemplate=template,
                    name=_plotly_text(label),
                    visible=k == 0,
                    contours={"z": {"show": True, "usecolormap": True, "project": {"z": True}, "width": 1}},
                ),
                k,
                row=1,
                col=m + 1,
            )
            b.scale(i, values)
            i = b.add(
                go.Contour(
                    x=x,
                    y=y,
                    z=shown,
                    coloraxis=axis,
                    customdata=custom_list,
                    hovertemplate=template,
                    name=_plotly_text(label),
                    visible=k == 0,
                    ncontours=18,
                    contours={"coloring": "heatmap"},
                    line={"width": 0.6, "color": "rgba(255,255,255,0.55)"},
                ),
                k,
                row=2,
                col=m + 1,
            )
            b.scale(i, values)
            centre = _centre_value(surface, values)
            if centre is not None:
                i = b.add(
                    go.Scatter3d(
                        x=[0.0],
                        y=[0.0],
                        z=_plain(_scaled(np.array([centre]), log_scale)),
                        mode="markers",
                        marker={"size": 5, "color": CENTRE_COLOUR, "symbol": "diamond"},
                        hovertemplate=f"{_plotly_text(label)}: centre (θ₀)<br>{_plotly_text(q.label)} = "
                        f"{_number(centre)}<extra></extra>",
                        showlegend=False,
                        visible=k == 0,
                    ),
                    k,
                    row=1,
                    col=m + 1,
                )
                b.scale(i, np.array([centre]))
            # Two invisible points at the shared limits: every 3-D view autoranges over the same heights.
            i = b.add(
                go.Scatter3d(
                    x=[x[0], x[0]],
                    y=[y[0], y[0]],
                    z=list(limits[log_scale]),
                    mode="markers",
                    marker={"size": 1, "opacity": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    visible=k == 0,
                ),
                k,
                row=1,
                col=m + 1,
            )
            b.scaled.append((i, list(limits[False]), list(limits[True])))
    for m, (label, surface) in enumerate(report.surfaces.items()):
        _trajectory(b, surface, row=2, col=m + 1, legend=m == 0)
        fig.add_trace(
            go.Scatter(
                x=[0.0],
                y=[0.0],
                mode="markers",
                marker={"size": 12, "color": CENTRE_COLOUR, "symbol": "star", "line": {"width": 1, "color": "white"}},
                name="centre: the model (θ₀)",
                legendgroup="centre",
                showlegend=m == 0,
                hovertemplate=f"{_plotly_text(label)}: centre (θ₀)<extra></extra>",
            ),
            row=2,
            col=m + 1,
        )
        fig.update_xaxes(title_text="α", row=2, col=m + 1)
        fig.update_yaxes(title_text="β" if m == 0 else "", row=2, col=m + 1)
    fig.update_scenes(
        xaxis_title_text="α",
        yaxis_title_text="β",
        zaxis_title_text="",
        camera={"eye": {"x": 1.35, "y": -1.35, "z": 0.85}},
        aspectmode="manual",
        aspectratio={"x": 1, "y": 1, "z": 0.75},
    )
    _base_layout(fig, 820)
    _finish_menus(b, layout_lin, layout_log, log_scale)
    return fig


# --- the page ------------------------------------------------------------------------------------


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
    from_hub = bool(model.get("commit_sha")) or ("/" in str(name) and not model.get("local_path"))
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
    command = meta.get("command")
    rows.append(
        (
            "Reproduce",
            f"<pre><code>{_e(command)}</code></pre>"
            if command
            else "<em>no command recorded (the surface was made from Python)</em>",
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


def _table_html(rows: list[dict[str, Any]], radius: float, rise: float, confidence: float) -> str:
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "model" and not k.endswith("_ci")]

    def cell(value: Any, interval: Any) -> str:
        if isinstance(value, float):
            text = _number(value, 4)
            if isinstance(interval, (list, tuple)) and len(interval) == 2:
                text += f" <span class='ci'>[{_number(interval[0], 3)}, {_number(interval[1], 3)}]</span>"
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
            f"<td>{cell(row.get(key), row.get(f'{key}_ci'))}</td>" for row in rows
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
    from .comparison import summarize

    try:
        row = {"model": label, **summarize(surface)}
    except SurfaceError as err:
        return f"<p class='note'>No flatness figures: {_e(err)}</p>"
    return _table_html([row], 0.5, 0.1, 0.95)


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

    from . import __version__

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
    subtitle = f"{_grid_text(surface)} · centre loss {_number(centre)}"
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
        table = _table_html(report.table(), report.radius, report.rise, report.confidence)
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


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


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
    write_atomically(target, lambda tmp: _write_text(tmp, page))
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
    write_atomically(target, lambda tmp: _write_text(tmp, page))
    return target


__all__ = [
    "VIEWER_NAME",
    "check_html_path",
    "check_same_kind",
    "compare_figure",
    "compare_html",
    "hub_url",
    "surface_figure",
    "surface_html",
    "write_compare_html",
    "write_surface_html",
]

"""The plotly figure of one surface: a plane as a 3-D surface beside its contours (with the training path, if any),
a line or interpolation as curves (with the spread band, each seed's curve, and the checkpoints of a path)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..export import check_has_values, seed_labels

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..surface import Surface

from .traces import (
    CENTRE_COLOUR,
    COLOURSCALE,
    COORDINATE_FORMAT,
    COORDINATES_HOVER,
    MENU_Y,
    PALETTE,
    PATH_COLOUR,
    Builder,
    Quantity,
    axis_titles,
    base_layout,
    centre_value,
    coloraxis,
    colourbar,
    finish_menus,
    hover_data,
    menu_labels,
    number,
    plain,
    plane_axes,
    plotly_text,
    rgba,
    scaled,
    surface_array,
    surface_quantities,
)


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
        return lines_figure({"": surface}, log_scale=log_scale)
    return _plane_figure(surface, log_scale=log_scale)


def _plane_figure(surface: Surface, *, log_scale: bool) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x, y = plane_axes(surface)
    fig = make_subplots(
        rows=1,
        cols=2,
        specs=[[{"type": "scene"}, {"type": "xy"}]],
        column_widths=[0.52, 0.48],
        horizontal_spacing=0.06,
        subplot_titles=("3-D surface: drag to rotate, scroll to zoom", "contour map: hover for the values"),
    )
    quantities = surface_quantities(surface)
    b = Builder(fig, quantities)
    custom, template = hover_data(surface)
    custom_list = custom.tolist()
    layout_lin: dict[str, Any] = {}
    layout_log: dict[str, Any] = {}
    for k, q in enumerate(quantities):
        values = surface_array(surface, q.key)
        shown = plain(scaled(values, log_scale))
        axis = coloraxis(k)
        fig.layout[axis] = {"colorscale": COLOURSCALE, "autocolorscale": False, "colorbar": colourbar(q.label)}
        layout_lin[f"{axis}.colorbar.title.text"] = plotly_text(q.label)
        layout_log[f"{axis}.colorbar.title.text"] = plotly_text(f"log10 {q.label}")
        if log_scale:
            fig.layout[axis].colorbar.title.text = plotly_text(f"log10 {q.label}")
        i = b.add(
            go.Surface(
                x=x,
                y=y,
                z=shown,
                coloraxis=axis,
                customdata=custom_list,
                hovertemplate=template,
                name=plotly_text(q.label),
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
                name=plotly_text(q.label),
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
        centre = centre_value(surface, values)
        if centre is not None:
            i = b.add(
                go.Scatter3d(
                    x=[0.0],
                    y=[0.0],
                    z=plain(scaled(np.array([centre]), log_scale)),
                    mode="markers",
                    marker={"size": 6, "color": CENTRE_COLOUR, "symbol": "diamond", "line": {"width": 1}},
                    name="centre: the model (θ₀)",
                    hovertemplate=f"centre: the model (θ₀)<br>{plotly_text(q.label)} = {number(centre)}<extra></extra>",
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
                        z=plain(scaled(band, log_scale)),
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
    trajectory(b, surface, row=1, col=2)
    centre_loss = centre_value(surface, surface.values)
    fig.add_trace(
        go.Scatter(
            x=[0.0],
            y=[0.0],
            mode="markers",
            marker={"size": 14, "color": CENTRE_COLOUR, "symbol": "star", "line": {"width": 1, "color": "white"}},
            name="centre: the model (θ₀)",
            hovertemplate="centre: the model (θ₀)"
            + (f"<br>loss = {number(centre_loss)}" if centre_loss is not None else "")
            + "<extra></extra>",
        ),
        row=1,
        col=2,
    )
    xt, yt = axis_titles(surface)
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
    base_layout(fig, 620)
    finish_menus(b, layout_lin, layout_log, log_scale)
    return fig


def trajectory(
    b: Builder, surface: Surface, *, row: int | None = None, col: int | None = None, legend: bool = True
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
        text = f"training path<br>step {plotly_text(steps[k]) if k < len(steps) else k}<br>α = {a:.4g}<br>β = {c:.4g}"
        if k < len(losses) and losses[k] is not None:
            text += f"<br>loss of this snapshot = {number(float(losses[k]))}"
        hover.append(text)
    labels = [""] * len(xy)
    if len(xy):
        labels[0] = f"step {plotly_text(steps[0])}" if steps else "start"
        labels[-1] = f"step {plotly_text(steps[-1])}" if steps else "end"
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


def lines_figure(surfaces: Mapping[str, Surface], *, log_scale: bool) -> go.Figure:
    """Curves of one or several lines on one axes; `surfaces` is `{label: surface}` (label "" for a lone surface)."""
    import plotly.graph_objects as go

    first = next(iter(surfaces.values()))
    common = set.intersection(*(set(s.metrics) for s in surfaces.values()))
    quantities = [Quantity("loss", "loss", None)] + [Quantity(n, n, n) for n in sorted(common)]
    fig = go.Figure()
    b = Builder(fig, quantities)
    several = len(surfaces) > 1
    for k, q in enumerate(quantities):
        for m, (label, surface) in enumerate(surfaces.items()):
            colour = PALETTE[m % len(PALETTE)]
            values = surface_array(surface, q.key)
            x = surface.x.tolist()
            tag = f"{label}: " if several else ""
            if q.key == "loss" and surface.spread is not None:
                n = 0 if surface.samples is None else len(surface.samples)
                b.add(
                    go.Scatter(
                        x=x,
                        y=plain(surface.values + surface.spread),
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
                        y=plain(surface.values - surface.spread),
                        mode="lines",
                        line={"width": 0},
                        fill="tonexty",
                        fillcolor=rgba(colour, 0.2),
                        hoverinfo="skip",
                        name=plotly_text(f"{tag}± 1 std over {n} seeds"),
                        legendgroup=f"band{m}",
                    ),
                    k,
                )
                for seed, sample in zip(seed_labels(surface), surface.samples if surface.samples is not None else []):
                    i = b.add(
                        go.Scatter(
                            x=x,
                            y=plain(sample),
                            mode="lines",
                            line={"width": 1, "color": rgba(colour, 0.55), "dash": "dot"},
                            name=plotly_text(f"{tag}seed {seed}"),
                            hovertemplate=f"seed {plotly_text(seed)}<br>α = %{{x:.4g}}<br>loss = %{{y:.6g}}<extra></extra>",
                            visible="legendonly",
                        ),
                        k,
                    )
                    b.legend_only.add(i)
            custom, template = hover_data(surface, label or None)
            b.add(
                go.Scatter(
                    x=x,
                    y=plain(values),
                    mode="lines+markers" if len(x) <= 121 else "lines",
                    line={"color": colour, "width": 2.2},
                    marker={"size": 4},
                    customdata=custom.tolist(),
                    hovertemplate=template,
                    name=plotly_text(f"{label}: {q.label}" if several else q.label),
                    visible=k == 0,
                ),
                k,
            )
            centre = centre_value(surface, values)
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
                        hovertemplate=f"{plotly_text(tag)}centre: the model (θ₀)<br>{plotly_text(q.label)} = "
                        f"{number(centre)}<extra></extra>",
                        visible=k == 0,
                    ),
                    k,
                )
            _knots(b, surface, values, k, m == 0, tag)
    for k, group in enumerate(b.groups):
        for i in group:
            if k != 0:
                fig.data[i].visible = False
    xt, _ = axis_titles(first)
    fig.update_xaxes(title_text=xt, zeroline=True)
    fig.update_yaxes(title_text="loss", type="log" if log_scale else "linear")
    for knot in sorted({k for s in surfaces.values() if s.kind == "interpolation" for k in _knot_positions(s)}):
        fig.add_vline(x=knot, line={"color": "rgba(0,0,0,0.25)", "width": 1, "dash": "dot"})
    base_layout(fig, 560)
    titles = [{"yaxis.title.text": plotly_text(q.label)} for q in quantities]
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
    menu_labels(fig, quantity_menu=len(menus) == 2)
    return fig


def _knots(b: Builder, surface: Surface, values: np.ndarray, group: int, legend: bool, tag: str) -> None:
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
            f"{plotly_text(tag)}checkpoint θ{k}: {plotly_text(name or 'other model')}<br>value = {number(ys[-1])}"
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

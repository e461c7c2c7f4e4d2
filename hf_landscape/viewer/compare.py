"""The plotly figure of a comparison: every model's plane (or line) side by side on shared colour limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..export import check_has_values

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..comparison import CompareReport

from .figures import lines_figure, trajectory
from .traces import (
    CENTRE_COLOUR,
    COLOURSCALE,
    Builder,
    Quantity,
    base_layout,
    centre_value,
    check_same_kind,
    coloraxis,
    colourbar,
    finish_menus,
    hover_data,
    number,
    plain,
    plane_axes,
    plotly_text,
    scaled,
    surface_array,
)


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
        return lines_figure(report.surfaces, log_scale=log_scale)
    return _compare_planes_figure(report, log_scale=log_scale)


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
        subplot_titles=[plotly_text(label) for label in labels] + [""] * n,
    )
    common = set.intersection(*(set(s.metrics) for s in report.surfaces.values()))
    quantities = [Quantity("loss", "loss", None)] + [Quantity(m, m, m) for m in sorted(common)]
    b = Builder(fig, quantities)
    layout_lin: dict[str, Any] = {}
    layout_log: dict[str, Any] = {}
    for k, q in enumerate(quantities):
        axis = coloraxis(k)
        limits = {log: report.colour_limits(metric=q.metric, log_scale=log) for log in (False, True)}
        lo, hi = limits[log_scale]
        title = f"{'log10 ' if log_scale else ''}{q.label} (shared limits)"
        fig.layout[axis] = {
            "colorscale": COLOURSCALE,
            "autocolorscale": False,
            "cmin": lo,
            "cmax": hi,
            "colorbar": colourbar(title),
        }
        for log, target in ((False, layout_lin), (True, layout_log)):
            target[f"{axis}.cmin"], target[f"{axis}.cmax"] = limits[log]
            target[f"{axis}.colorbar.title.text"] = plotly_text(f"{'log10 ' if log else ''}{q.label} (shared limits)")
        for m, (label, surface) in enumerate(report.surfaces.items()):
            x, y = plane_axes(surface)
            values = surface_array(surface, q.key)
            shown = plain(scaled(values, log_scale))
            custom, template = hover_data(surface, label)
            custom_list = custom.tolist()
            i = b.add(
                go.Surface(
                    x=x,
                    y=y,
                    z=shown,
                    coloraxis=axis,
                    customdata=custom_list,
                    hovertemplate=template,
                    name=plotly_text(label),
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
                    name=plotly_text(label),
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
            centre = centre_value(surface, values)
            if centre is not None:
                i = b.add(
                    go.Scatter3d(
                        x=[0.0],
                        y=[0.0],
                        z=plain(scaled(np.array([centre]), log_scale)),
                        mode="markers",
                        marker={"size": 5, "color": CENTRE_COLOUR, "symbol": "diamond"},
                        hovertemplate=f"{plotly_text(label)}: centre (θ₀)<br>{plotly_text(q.label)} = "
                        f"{number(centre)}<extra></extra>",
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
        trajectory(b, surface, row=2, col=m + 1, legend=m == 0)
        fig.add_trace(
            go.Scatter(
                x=[0.0],
                y=[0.0],
                mode="markers",
                marker={"size": 12, "color": CENTRE_COLOUR, "symbol": "star", "line": {"width": 1, "color": "white"}},
                name="centre: the model (θ₀)",
                legendgroup="centre",
                showlegend=m == 0,
                hovertemplate=f"{plotly_text(label)}: centre (θ₀)<extra></extra>",
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
    base_layout(fig, 820)
    finish_menus(b, layout_lin, layout_log, log_scale)
    return fig

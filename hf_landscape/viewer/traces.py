"""What the viewer's figures are built from: the quantities a surface offers to draw (the loss, each metric, the
spread), hover text, colour bars, menus, and the `Builder` that collects traces and the switches between them."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, SurfaceError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..surface import Surface


COLOURSCALE = "Viridis"


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


CENTRE_COLOUR = "#e4002b"


PATH_COLOUR = "#ff6f00"


COORDINATE_FORMAT = ".4~g"  # d3-format: 4 significant digits, trailing zeros dropped


COORDINATES_HOVER = f"α = %{{x:{COORDINATE_FORMAT}}}"


MENU_Y = 1.07  # the switches' row (their bottom edge), above the plots and below plotly's tool bar (paper coordinates)


@dataclass(frozen=True)
class Quantity:
    key: str  # "loss", a metric name, or "loss_spread"
    label: str  # as shown (raw text; escaped where it is used)
    metric: str | None  # the metric name for `CompareReport.colour_limits`, None for the loss


def surface_quantities(surface: Surface) -> list[Quantity]:
    out = [Quantity("loss", "loss", None)]
    out += [Quantity(name, name, name) for name in sorted(surface.metrics)]
    if surface.spread is not None:
        n = 0 if surface.samples is None else len(surface.samples)
        out.append(Quantity("loss_spread", f"loss spread (std over {n} seeds)", None))
    return out


def surface_array(surface: Surface, key: str) -> np.ndarray:
    if key == "loss":
        return surface.values
    if key == "loss_spread":
        if surface.spread is None:
            raise SurfaceError(
                "The surface holds no seed spread to show; draw it over several seeds (`seed=[0, 1, 2]`)."
            )
        return surface.spread
    return surface.metrics[key]


def plane_axes(surface: Surface) -> tuple[list[float], list[float]]:
    """The α and β axes of a plane, as lists for plotly."""
    if surface.y is None:
        raise SurfaceError(f"A {surface.kind} surface has one axis; only planes are drawn as a surface and contours.")
    return surface.x.tolist(), surface.y.tolist()


def scaled(values: np.ndarray, log: bool) -> np.ndarray:
    if not log:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


def plain(values: np.ndarray) -> list[Any]:
    """Values as nested lists for plotly's JSON, to 7 significant digits (what a colour or a height can show; the
    hover gives the values), non-finite ones as null (plotly leaves a gap there)."""
    array = np.asarray(values, dtype=np.float64)
    out = np.empty(array.shape, dtype=object)
    for index, v in np.ndenumerate(array):
        out[index] = float(f"{v:.7g}") if math.isfinite(v) else None
    return out.tolist()


def number(value: float, digits: int = 6) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def plotly_text(text: Any) -> str:
    """User text for a plotly string: HTML-escaped (plotly renders entities, never tags made of escaped text), and
    '%' as an entity so a name cannot be read as a hover-template field."""
    return html.escape(str(text), quote=False).replace("%", "&#37;")


def hover_data(surface: Surface, label: str | None = None) -> tuple[np.ndarray, str]:
    """Per-point hover strings (`customdata`, shaped like `values` plus one axis) and the template that shows them:
    α (and β) from the point's coordinates, then the loss, every metric and the spread."""
    fields: list[tuple[str, np.ndarray, int]] = [("loss", surface.values, 6)]
    fields += [(name, surface.metrics[name], 6) for name in sorted(surface.metrics)]
    if surface.spread is not None:
        fields.append(("loss std over seeds", surface.spread, 4))
    columns = [np.vectorize(lambda v, d=d: number(float(v), d), otypes=[object])(a) for _, a, d in fields]
    custom = np.stack(columns, axis=-1)
    lines = [COORDINATES_HOVER if surface.y is None else f"{COORDINATES_HOVER}<br>β = %{{y:{COORDINATE_FORMAT}}}"]
    lines += [f"{plotly_text(name)} = %{{customdata[{k}]}}" for k, (name, _, _) in enumerate(fields)]
    extra = plotly_text(label) if label else ""
    return custom, "<br>".join(lines) + f"<extra>{extra}</extra>"


def axis_titles(surface: Surface) -> tuple[str, str]:
    if surface.kind == "interpolation":
        knots = (surface.metadata.get("path") or {}).get("knots") or [0, 1]
        if len(knots) > 2:
            return f"α (path through checkpoints θ0 … θ{knots[-1]} at α = 0 … {knots[-1]})", ""
        return "α (0 = model, 1 = other model)", ""
    return "α (direction 1)", "β (direction 2)"


def centre_value(surface: Surface, values: np.ndarray) -> float | None:
    index = surface.centre_index
    if index is None:
        return None
    value = float(values[index])
    return value if math.isfinite(value) else None


class Builder:
    """A figure plus the bookkeeping its two switches need: which traces belong to which quantity, and the linear
    and log10 data of every trace whose values the log switch replaces."""

    def __init__(self, fig: go.Figure, quantities: list[Quantity]) -> None:
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
        self.scaled.append((index, plain(scaled(values, False)), plain(scaled(values, True))))

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
                buttons.append({"label": plotly_text(q.label), "method": "restyle", "args": [{"visible": visible}]})
            else:
                args = [{"visible": visible}, layouts[k]]
                buttons.append({"label": plotly_text(q.label), "method": "update", "args": args})
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


def base_layout(fig: go.Figure, height: int) -> None:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 50, "r": 30, "t": 100, "b": 70},
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        hoverlabel={"font": {"family": "ui-monospace, SFMono-Regular, Menlo, monospace", "size": 12}},
        legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.1, "yanchor": "top"},
    )


def menu_labels(fig: go.Figure, quantity_menu: bool) -> None:
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


def coloraxis(k: int) -> str:
    return "coloraxis" if k == 0 else f"coloraxis{k + 1}"


def colourbar(title: str, x: float = 1.02) -> dict[str, Any]:
    return {"title": {"text": plotly_text(title), "side": "right"}, "x": x, "len": 0.85, "thickness": 14}


def finish_menus(b: Builder, layout_lin: dict[str, Any], layout_log: dict[str, Any], log_scale: bool) -> None:
    menus = [m for m in (b.quantity_menu(), b.log_menu(layout_lin, layout_log, log_scale)) if m is not None]
    b.fig.update_layout(updatemenus=menus)
    menu_labels(b.fig, quantity_menu=len(menus) == 2)


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, bl = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{bl},{alpha})"


def check_same_kind(surfaces: Mapping[str, Surface]) -> None:
    """Refuse a comparison of surfaces of different kinds (lines, planes, interpolations): their axes mean
    different things, so one page cannot show them side by side."""
    kinds = {label: s.kind for label, s in surfaces.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(
            f"{label!r} is {'an' if kind[:1] in 'aeiou' else 'a'} {kind}" for label, kind in kinds.items()
        )
        raise ConfigError(f"`surfaces` mixes kinds ({listed}); compare surfaces of one kind.")

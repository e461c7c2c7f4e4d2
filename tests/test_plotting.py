"""Plots: every kind returns a Figure and saves in every format; shared limits; validation."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from hf_landscape import ConfigError, Surface
from hf_landscape.plotting import plot_comparison, plot_surface, save_plots


def plane(scale: float = 1.0, offset: float = 1.0, n: int = 5) -> Surface:
    x = np.linspace(-1.0, 1.0, n)
    y = np.linspace(-1.0, 1.0, n)
    values = scale * np.add.outer(y**2, 0.5 * x**2) + offset
    acc = np.exp(-values)
    return Surface(
        x, values, y=y, metrics={"accuracy": acc}, metadata={"kind": "plane", "model": {"name_or_path": "org/tiny"}}
    )


def line(scale: float = 1.0, offset: float = 1.0) -> Surface:
    x = np.linspace(-1.0, 1.0, 7)
    return Surface(x, scale * x**2 + offset, metadata={"kind": "line"})


def interpolation() -> Surface:
    x = np.linspace(-0.5, 1.5, 9)
    return Surface(x, (x - 0.5) ** 2 + 1, metadata={"kind": "interpolation"})


def main_axes(fig: Figure, titles: list[str]):
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    return [by_title[t] for t in titles]


def norm_limits(ax) -> list[tuple[float, float]]:
    return [(c.norm.vmin, c.norm.vmax) for c in ax.collections if getattr(c, "norm", None) is not None]


# What any figure of a surface must show, whatever its titles, colours and contour levels: these helpers read the
# figure's artists, not how they were made.


def panels(fig: Figure) -> list:
    """The axes that draw data: every axes of the figure but its colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and getattr(ax, "_colorbar", None) is None]


def colour_limits(ax) -> list[tuple[float, float]]:
    """(vmin, vmax) of every colour-mapped artist of `ax` (contours, meshes, 3-D surfaces)."""
    return [
        (float(c.norm.vmin), float(c.norm.vmax))
        for c in ax.collections
        if getattr(c, "norm", None) is not None and c.get_array() is not None
    ]


def assert_labelled(ax) -> None:
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip()
    if hasattr(ax, "get_zlabel"):
        assert ax.get_zlabel().strip()


def marks_point(ax, x: float, y: float) -> bool:
    """Whether a marker (not a bare line) is drawn at (x, y)."""
    for ln in ax.get_lines():
        if ln.get_marker() in (None, "None", "", " "):
            continue
        xs, ys = (np.asarray(v, dtype=float) for v in ln.get_data())
        if np.any(np.isclose(xs, x, rtol=0, atol=1e-12) & np.isclose(ys, y, rtol=0, atol=1e-12)):
            return True
    for c in ax.collections:
        if type(c).__name__ == "PathCollection":  # scatter
            offsets = np.asarray(c.get_offsets(), dtype=float)
            if len(offsets) and np.any(np.all(np.isclose(offsets, [x, y], rtol=0, atol=1e-12), axis=1)):
                return True
    return False


def assert_plane_figure(fig: Figure, limits: tuple[float, float], kind: str) -> None:
    """One labelled panel whose colour-mapped artists all span `limits`, with the centre marked on flat kinds."""
    (ax,) = panels(fig)
    assert_labelled(ax)
    found = colour_limits(ax)
    assert found
    for lo, hi in found:
        assert (lo, hi) == pytest.approx(limits, rel=1e-9, abs=1e-12)
    if kind != "surface":
        assert marks_point(ax, 0.0, 0.0)


def mesh_mask(fig: Figure) -> np.ndarray:
    """Which cells of the heatmap are left blank."""
    (ax,) = panels(fig)
    (mesh,) = [c for c in ax.collections if type(c).__name__ == "QuadMesh"]
    return np.ma.getmaskarray(mesh.get_array()).reshape(-1)


def drawn_contour_vertices(fig: Figure) -> int:
    (ax,) = panels(fig)
    sets = [c for c in ax.collections if type(c).__name__.endswith("ContourSet")]
    assert sets
    return sum(len(path.vertices) for cs in sets for path in cs.get_paths())


@pytest.mark.parametrize(
    ("factory", "kind"),
    [
        (line, None),
        (line, "curve"),
        (interpolation, "curve"),
        (plane, None),
        (plane, "contour"),
        (plane, "heatmap"),
        (plane, "surface"),
    ],
)
def test_every_kind_returns_a_figure(factory, kind):
    fig = plot_surface(factory(), kind)
    assert isinstance(fig, Figure)
    assert fig.axes
    fig2 = factory().plot(kind)
    assert isinstance(fig2, Figure)


def test_default_plane_kind_is_contour():
    fig = plot_surface(plane())
    assert any(type(c).__name__.endswith("ContourSet") for c in fig.axes[0].collections)


def test_title_defaults_to_model_name_kind_and_centre_loss():
    assert plot_surface(plane(), "heatmap").axes[0].get_title() == "tiny · plane · centre loss 1"
    assert plot_surface(plane(), "heatmap", title="custom").axes[0].get_title() == "custom"


@pytest.mark.parametrize("factory", [line, plane, interpolation])
def test_save_plots_every_kind_and_format(factory, tmp_path):
    surface = factory()
    written = surface.save_plots(tmp_path, formats=("png", "pdf", "svg"))
    kinds = ["curve"] if surface.ndim == 1 else ["contour", "heatmap", "surface"]
    expected = sorted(f"plot_{k}.{f}" for k in kinds for f in ("png", "pdf", "svg"))
    assert sorted(p.name for p in written) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    for path in written:
        assert path.stat().st_size > 0
    assert (tmp_path / f"plot_{kinds[0]}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / f"plot_{kinds[0]}.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / f"plot_{kinds[0]}.svg").read_bytes()


def test_save_plots_selected_kinds(tmp_path):
    written = save_plots(plane(), tmp_path, kinds=["heatmap"])
    assert [p.name for p in written] == ["plot_heatmap.png"]


def test_save_plots_rejects_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="formats"):
        save_plots(line(), tmp_path, formats=("jpg",))
    assert not list(tmp_path.iterdir())


def test_line_kind_on_a_plane_is_a_config_error():
    with pytest.raises(ConfigError, match="kind"):
        plot_surface(plane(), "curve")


def test_plane_kind_on_a_line_is_a_config_error():
    for kind in ("contour", "heatmap", "surface", "bogus"):
        with pytest.raises(ConfigError, match="kind"):
            plot_surface(line(), kind)


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="metric"):
        plot_surface(plane(), metric="f1")


def test_metric_is_plotted():
    fig = plot_surface(plane(), "heatmap", metric="accuracy")
    mesh = fig.axes[0].collections[0]
    acc = plane().metrics["accuracy"]
    assert mesh.norm.vmin == pytest.approx(acc.min()) and mesh.norm.vmax == pytest.approx(acc.max())


@pytest.mark.parametrize(
    ("factory", "kind"),
    [(line, "curve"), (interpolation, "curve"), (plane, "contour"), (plane, "heatmap"), (plane, "surface")],
)
def test_every_kind_shows_labels_centre_and_the_data_limits(factory, kind):
    surface = factory()
    fig = plot_surface(surface, kind)
    if surface.ndim == 2:
        assert_plane_figure(fig, (surface.values.min(), surface.values.max()), kind)
        return
    (ax,) = panels(fig)
    assert_labelled(ax)
    assert marks_point(ax, 0.0, surface.centre)
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(surface.x)]
    assert curves
    np.testing.assert_array_equal(curves[0].get_xdata(), surface.x)
    np.testing.assert_array_equal(curves[0].get_ydata(), surface.values)


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_log_scale_with_non_positive_values_does_not_crash(kind, tmp_path):
    surface = plane(offset=-1.0)  # values from -1 to 0.5
    assert (surface.values <= 0).any() and (surface.values > 0).any()
    fig = plot_surface(surface, kind, log_scale=True)
    fig.savefig(tmp_path / "log.png")
    positive = surface.values[surface.values > 0]
    assert_plane_figure(fig, (np.log10(positive.min()), np.log10(positive.max())), kind)
    if kind == "heatmap":  # non-positive values are left blank
        np.testing.assert_array_equal(mesh_mask(fig), (surface.values <= 0).reshape(-1))


def test_log_scale_line_with_non_positive_values(tmp_path):
    surface = line(offset=-0.5)
    fig = plot_surface(surface, log_scale=True)
    fig.savefig(tmp_path / "log.png")
    (ax,) = panels(fig)
    assert_labelled(ax)
    expected = np.where(surface.values > 0, np.log10(np.where(surface.values > 0, surface.values, 1.0)), np.nan)
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(surface.x)]
    np.testing.assert_array_equal(curves[0].get_ydata(), expected)  # blank where the loss is not positive


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_log_scale_with_only_non_positive_values(kind, tmp_path):
    surface = plane(scale=-1.0, offset=0.0)
    assert (surface.values <= 0).all()
    fig = plot_surface(surface, kind, log_scale=True)
    fig.savefig(tmp_path / "log.png")
    (ax,) = panels(fig)
    assert_labelled(ax)
    for lo, hi in colour_limits(ax):
        assert np.isfinite([lo, hi]).all() and lo < hi
    if kind == "heatmap":  # nothing to draw: every cell blank
        assert mesh_mask(fig).all()
    elif kind == "contour":
        assert drawn_contour_vertices(fig) == 0


def test_log_scale_uses_log10_limits():
    fig = plot_surface(plane(), "heatmap", log_scale=True)
    mesh = fig.axes[0].collections[0]
    values = plane().values
    assert mesh.norm.vmin == pytest.approx(np.log10(values.min()))
    assert mesh.norm.vmax == pytest.approx(np.log10(values.max()))


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_non_finite_values_do_not_crash(kind, tmp_path):
    surface = plane()
    surface.values[0, 0] = np.nan
    surface.values[1, 1] = np.inf
    fig = plot_surface(surface, kind)
    fig.savefig(tmp_path / f"{kind}.png")
    finite = surface.values[np.isfinite(surface.values)]
    assert_plane_figure(fig, (finite.min(), finite.max()), kind)  # the limits of the finite values only
    if kind == "heatmap":
        np.testing.assert_array_equal(mesh_mask(fig), ~np.isfinite(surface.values).reshape(-1))


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_constant_surface_does_not_crash(kind, tmp_path):
    x = np.linspace(-1, 1, 3)
    surface = Surface(x, np.full((3, 3), 2.0), y=x)
    fig = plot_surface(surface, kind)
    fig.savefig(tmp_path / f"{kind}.png")
    (ax,) = panels(fig)
    assert_labelled(ax)
    limits = colour_limits(ax)
    assert limits
    for lo, hi in limits:  # a valid colour scale around the one value
        assert np.isfinite([lo, hi]).all() and lo <= 2.0 <= hi and lo < hi
    if kind != "surface":
        assert marks_point(ax, 0.0, 0.0)
    if kind == "heatmap":
        (mesh,) = [c for c in ax.collections if type(c).__name__ == "QuadMesh"]
        np.testing.assert_array_equal(np.ma.getdata(mesh.get_array()).reshape(-1), np.full(9, 2.0))


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_plot_comparison_shares_colour_limits(kind):
    a, b = plane(scale=1.0, offset=1.0), plane(scale=3.0, offset=2.0)
    fig = plot_comparison({"a": a, "b": b}, kind)
    assert isinstance(fig, Figure)
    assert len(panels(fig)) == 2
    for ax in panels(fig):
        assert_labelled(ax)
    ax_a, ax_b = main_axes(fig, ["a", "b"])
    lims_a, lims_b = norm_limits(ax_a), norm_limits(ax_b)
    assert lims_a and lims_b
    expected = (min(a.values.min(), b.values.min()), max(a.values.max(), b.values.max()))
    for lo, hi in lims_a + lims_b:
        assert (lo, hi) == pytest.approx(expected)


def test_plot_comparison_of_lines_shares_y_limits():
    a, b = line(scale=1.0, offset=1.0), line(scale=3.0, offset=0.0)
    fig = plot_comparison([a, b])
    lines_axes = [ax for ax in fig.axes if ax.lines]
    assert len(lines_axes) == 2
    assert lines_axes[0].get_ylim() == lines_axes[1].get_ylim() == pytest.approx((0.0 - 0.09, 3.0 + 0.09))  # 3% pad


def test_plot_comparison_validation():
    with pytest.raises(ConfigError, match="empty"):
        plot_comparison([])
    with pytest.raises(ConfigError, match="mixes"):
        plot_comparison([line(), plane()])
    with pytest.raises(ConfigError, match="kind"):
        plot_comparison([plane(), plane()], "curve")


def test_plot_into_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_surface(line(), ax=ax) is fig
    assert ax.lines


def test_interpolation_marks_both_models():
    fig = plot_surface(interpolation())
    labels = [h.get_label() for h in fig.axes[0].lines]
    assert "centre (θ₀)" in labels and "other model" in labels


def test_path_marks_and_names_every_later_checkpoint():
    import numpy as np

    from hf_landscape import Surface

    x = np.linspace(-0.5, 2.5, 7)
    surface = Surface(x, x**2, metadata={"kind": "interpolation", "path": {"knots": [0, 1, 2]}})
    ax = plot_surface(surface).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["θ1", "θ2"]
    squares = [ln for ln in ax.get_lines() if ln.get_marker() == "s"]
    assert sorted(float(ln.get_xdata()[0]) for ln in squares) == [1.0, 2.0]
    assert [ln.get_label() for ln in squares].count("checkpoints") == 1  # one legend entry for all of them


def test_trajectory_path_is_drawn_on_the_contours():
    import numpy as np

    from hf_landscape import Surface

    x = np.linspace(-1, 1, 5)
    values = np.add.outer(x**2, x**2)
    path = [[0.8, -0.6], [0.3, -0.2], [0.0, 0.0]]
    surface = Surface(x, values, y=x.copy(), metadata={"kind": "plane", "trajectory": {"coordinates": path}})
    fig = surface.plot(kind="contour")
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "training path"]
    assert len(lines) == 1
    np.testing.assert_array_equal(np.column_stack(lines[0].get_data()), np.array(path))

"""What the figures show: titles with the setup, the centre marked, contour levels that fit the data, labels that do
not overlap, colour limits shared or not, one colour bar where they are shared."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import BoundaryNorm
from matplotlib.contour import ContourSet

from hf_landscape import ConfigError, Surface
from hf_landscape.plotting import (
    CENTRE_LABEL,
    contour_levels,
    level_spacing,
    plot_comparison,
    plot_surface,
)

GRID = np.linspace(-1.0, 1.0, 9)


def setup_metadata(**overrides):
    meta = {
        "kind": "plane",
        "model": {"name_or_path": "org/tiny-gpt2"},
        "objective": {"type": "CausalLMObjective", "num_tokens": 1234, "config": {}},
        "directions": [{"kind": "random", "normalization": "filter", "seed": 3, "axis": a} for a in (0, 1)],
        "seed": 3,
    }
    meta.update(overrides)
    return meta


def bowl(scale: float = 1.0, offset: float = 2.0, **meta) -> Surface:
    xx, yy = np.meshgrid(GRID, GRID)
    return Surface(GRID, offset + scale * (xx**2 + 0.5 * yy**2), y=GRID.copy(), metadata=setup_metadata(**meta))


def cliff(**meta) -> Surface:
    """A narrow basin with walls 1000 times higher than its floor: most points sit near the bottom."""
    xx, yy = np.meshgrid(GRID, GRID)
    return Surface(GRID, 3.0 + np.expm1(6 * np.sqrt(xx**2 + yy**2)), y=GRID.copy(), metadata=setup_metadata(**meta))


def main_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def colour_bars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def contour_sets(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


# --- titles and labels ---------------------------------------------------------------------------------------------


def test_title_states_model_kind_centre_objective_directions_and_seed():
    title = plot_surface(bowl(), "contour").axes[0].get_title()
    assert title.splitlines()[0] == "tiny-gpt2 · plane · centre loss 2"
    assert " · ".join(title.splitlines()[1:]) == (  # broken between the parts where the line is too long
        "causal-LM loss on 1,234 tokens · filter-normalized random directions, seed 3"
    )


def test_title_names_a_glue_task_and_lora_rank():
    surface = bowl(
        objective={"type": "GlueObjective", "config": {"task": "cola"}, "num_examples": 516, "loss": "cross_entropy"},
        directions=[{"kind": "low_rank", "rank": 8, "seed": 0}] * 2,
        seed=0,
    )
    title = " ".join(plot_surface(surface, "heatmap").axes[0].get_title().splitlines())
    assert "COLA cross-entropy on 516 examples" in title
    assert "rank-8 LoRA-subspace directions, seed 0" in title


def test_title_of_a_surface_over_seeds_names_them():
    surface = bowl(seed=None, seeds=[0, 1, 2, 3, 4])
    title = " ".join(plot_surface(surface).axes[0].get_title().splitlines())
    assert "mean over seeds 0–4" in title


def test_title_of_an_interpolation_names_the_other_model():
    x = np.linspace(-0.5, 1.5, 9)
    meta = {"kind": "interpolation", "model": {"name_or_path": "org/a"}, "other_model": {"name_or_path": "org/b"}}
    title = plot_surface(Surface(x, (x - 0.5) ** 2 + 1, metadata=meta)).axes[0].get_title()
    assert title.splitlines()[0] == "a · interpolation to b · centre loss 1.25"


def test_metric_title_gives_the_centre_metric():
    surface = bowl()
    surface.metrics["accuracy"] = np.full(surface.values.shape, 0.75)
    title = plot_surface(surface, "heatmap", metric="accuracy").axes[0].get_title()
    assert title.splitlines()[0].endswith("centre accuracy 0.75")


@pytest.mark.parametrize("kind", ["contour", "heatmap", "spread"])
def test_plane_axes_are_labelled(kind):
    surface = bowl(seeds=[0, 1], seed=None)
    surface.spread = np.full(surface.values.shape, 0.1)
    surface.samples = np.stack([surface.values, surface.values])
    ax = plot_surface(surface, kind).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("α  (direction 1)", "β  (direction 2)")


@pytest.mark.parametrize("kind", ["contour", "spread", "surface"])
def test_long_titles_are_wrapped_inside_the_figure(kind):
    name = "org/" + "a-very-long-model-name-" * 4 + "instruct"
    surface = bowl(model={"name_or_path": name}, seeds=[0, 1, 2], seed=None)
    surface.spread = np.full(surface.values.shape, 0.1)
    surface.samples = np.stack([surface.values] * 3)
    fig = plot_surface(surface, kind)
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    box, page = fig.axes[0].title.get_window_extent(renderer), fig.bbox
    assert len(fig.axes[0].get_title().splitlines()) >= 3
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


# --- the centre ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["contour", "heatmap"])
def test_centre_is_marked_on_2d_plots(kind):
    ax = plot_surface(bowl(), kind).axes[0]
    marks = [ln for ln in ax.get_lines() if ln.get_label() == CENTRE_LABEL]
    assert len(marks) == 1
    assert (list(marks[0].get_xdata()), list(marks[0].get_ydata())) == ([0.0], [0.0])


def test_centre_is_marked_on_the_3d_surface_at_its_loss():
    ax = plot_surface(bowl(offset=2.5), "surface").axes[0]
    marks = [ln for ln in ax.get_lines() if ln.get_label() == CENTRE_LABEL]
    assert len(marks) == 1
    xs, ys, zs = marks[0].get_data_3d()
    assert (list(xs), list(ys), list(zs)) == ([0.0], [0.0], [2.5])
    assert marks[0].get_zorder() > max(c.get_zorder() for c in ax.collections)  # drawn over the surface


def test_centre_is_marked_on_a_curve():
    line = Surface(GRID, GRID**2 + 1, metadata={"kind": "line"})
    marks = [ln for ln in plot_surface(line).axes[0].get_lines() if ln.get_label() == CENTRE_LABEL]
    assert [(float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in marks] == [(0.0, 1.0)]


def test_3d_axes_carry_few_ticks():
    fig = plot_surface(bowl(), "surface")
    fig.draw_without_rendering()
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        assert len(axis.get_majorticklocs()) <= 6


# --- contour levels ------------------------------------------------------------------------------------------------


def test_levels_of_a_bowl_are_evenly_spaced_round_numbers():
    values = bowl().values  # 2 to 3.5
    assert level_spacing(values) == "linear"
    assert contour_levels(values, 9).tolist() == [2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2, 3.4]
    np.testing.assert_array_equal(contour_levels(values, 9, spacing="linear"), np.linspace(2.0, 3.5, 9))


def test_levels_of_a_wide_range_are_log_spaced_above_the_minimum():
    values = cliff().values
    assert level_spacing(values) == "log"
    levels = contour_levels(values, 10)
    assert levels[0] == values.min() and levels[-1] == values.max()
    rises = np.diff(levels[1:] - levels[0])
    assert np.all(rises > 0) and rises[-1] > 20 * rises[0]  # dense at the bottom, sparse on the walls
    median, linear = np.median(values), np.linspace(values.min(), values.max(), 10)
    assert np.sum(levels < median) >= 4 and np.sum(linear < median) <= 1  # levels where the points are


def test_quantile_levels_split_the_points_evenly():
    values = np.arange(101, dtype=float) ** 3
    levels = contour_levels(values, 5, spacing="quantile")
    counts = np.histogram(values, bins=levels)[0]
    assert counts.max() - counts.min() <= 2


def test_explicit_levels_and_spacing_are_checked():
    with pytest.raises(ConfigError, match="spacing"):
        contour_levels(np.arange(5.0), 5, spacing="cubic")
    with pytest.raises(ConfigError, match="levels"):
        contour_levels(np.arange(5.0), 1)
    with pytest.raises(ConfigError, match="levels"):
        plot_surface(bowl(), "contour", levels=[3.0, 2.0])
    with pytest.raises(ConfigError, match="spacing"):
        plot_surface(bowl(), "contour", spacing="cubic")


def test_contours_of_a_wide_surface_use_log_levels_and_say_so():
    surface = cliff()
    fig = plot_surface(surface, "contour", levels=12)
    (cs,) = contour_sets(fig.axes[0])
    np.testing.assert_array_equal(cs.levels, contour_levels(surface.values, 12, spacing="log"))
    (bar,) = colour_bars(fig)
    assert bar.get_ylabel() == "loss (levels log-spaced above the minimum)"


def test_heatmap_of_a_wide_surface_colours_by_the_same_levels():
    surface = cliff()
    mesh = plot_surface(surface, "heatmap", levels=12).axes[0].collections[0]
    assert isinstance(mesh.norm, BoundaryNorm)
    np.testing.assert_array_equal(mesh.norm.boundaries, contour_levels(surface.values, 12))


def label_boxes(fig):
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    return [
        [t.get_window_extent(renderer) for cs in contour_sets(ax) for t in cs.labelTexts] for ax in main_axes(fig)
    ]


def overlapping(boxes) -> int:
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_contour_labels_never_overlap():
    xx, yy = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41))
    ridge = Surface(xx[0], 40 * np.abs(xx + 0.1 * yy) + yy, y=yy[:, 0].copy(), metadata={"kind": "plane"})
    # matplotlib alone, labelling the same levels, puts labels on top of each other here
    raw = plot_surface(ridge, "contour", levels=40, spacing="linear")
    ax = raw.axes[0]
    (cs,) = contour_sets(ax)
    for text in list(cs.labelTexts):
        text.remove()
    cs.labelTexts.clear()
    cs.clabel(cs.levels[1::2], inline=False, fontsize=8)
    assert overlapping(label_boxes(raw)[0]) > 0
    (boxes,) = label_boxes(plot_surface(ridge, "contour", levels=40, spacing="linear"))
    assert len(boxes) >= 2 and overlapping(boxes) == 0


def test_contour_labels_stay_off_the_centre_marker():
    fig = plot_surface(bowl(), "contour", levels=30, spacing="linear")
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    ax = fig.axes[0]
    (mark,) = [ln for ln in ax.get_lines() if ln.get_label() == CENTRE_LABEL]
    star = mark.get_window_extent(renderer)
    texts = [t for cs in contour_sets(ax) for t in cs.labelTexts]
    assert texts and not any(t.get_window_extent(renderer).overlaps(star) for t in texts)


# --- several panels ------------------------------------------------------------------------------------------------


def test_related_surfaces_share_limits_levels_and_one_colour_bar():
    a, b = bowl(scale=1.0), bowl(scale=4.0)
    fig = plot_comparison({"a": a, "b": b}, "contour")
    panels = main_axes(fig)
    assert [ax.get_title() for ax in panels] == ["a", "b"]
    assert len(colour_bars(fig)) == 1
    (la,), (lb,) = contour_sets(panels[0]), contour_sets(panels[1])
    np.testing.assert_array_equal(la.levels, lb.levels)
    np.testing.assert_array_equal(la.levels, contour_levels(np.concatenate([a.values, b.values])))
    assert fig.get_suptitle() == f"tiny-gpt2 · plane: loss on shared colour limits [2, {b.values.max():.4g}]"


@pytest.mark.parametrize("kind", ["heatmap", "surface"])
def test_shared_limits_hold_for_heatmaps_and_3d_surfaces(kind):
    a, b = bowl(scale=1.0), bowl(scale=4.0)
    fig = plot_comparison([a, b], kind)
    assert len(main_axes(fig)) == 2 and len(colour_bars(fig)) == 1
    for ax in main_axes(fig):
        (norm,) = {c.norm for c in ax.collections if getattr(c, "norm", None) is not None}
        assert (norm.vmin, norm.vmax) == (2.0, b.values.max())


def test_surfaces_of_different_models_get_independent_limits_by_default():
    a, b = bowl(scale=1.0), bowl(scale=4.0, model={"name_or_path": "org/other"})
    fig = plot_comparison({"a": a, "b": b}, "heatmap")
    assert len(colour_bars(fig)) == 2
    for ax, surface in zip(main_axes(fig), (a, b)):
        mesh = ax.collections[0]
        assert (mesh.norm.vmin, mesh.norm.vmax) == (surface.values.min(), surface.values.max())
    assert fig.get_suptitle() == "loss, independent colour limits per panel (the models differ)"


def test_lines_of_different_kinds_get_independent_y_limits():
    line = Surface(GRID, GRID**2, metadata={"kind": "line", "model": {"name_or_path": "m"}})
    interp = Surface(GRID, 10 * GRID**2 + 5, metadata={"kind": "interpolation", "model": {"name_or_path": "m"}})
    fig = plot_comparison([line, interp])
    low, high = (ax.get_ylim() for ax in main_axes(fig))
    assert low[1] < 2.0 and high[0] > 4.0
    assert fig.get_suptitle().endswith("(the kinds differ)")


def test_shared_limits_can_be_forced_either_way():
    a, b = bowl(scale=1.0), bowl(scale=4.0, model={"name_or_path": "org/other"})
    forced = plot_comparison([a, b], "contour", shared_limits=True)
    assert len(colour_bars(forced)) == 1 and "shared colour limits" in forced.get_suptitle()
    apart = plot_comparison([a, a], "contour", shared_limits=False)
    assert len(colour_bars(apart)) == 2
    assert apart.get_suptitle() == "loss, independent colour limits per panel"
    with pytest.raises(ConfigError, match="shared_limits"):
        plot_comparison([a, b], shared_limits="yes")


def test_labels_wait_for_tidy_when_composing_panels():
    from matplotlib.figure import Figure

    from hf_landscape.plotting import tidy_contour_labels

    fig = Figure()
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    plot_surface(bowl(), "contour", ax=left, tidy=False)
    plot_surface(bowl(scale=3.0), "contour", ax=right, tidy=False)
    assert not [t for ax in (left, right) for cs in contour_sets(ax) for t in cs.labelTexts]
    tidy_contour_labels(fig)
    assert all([t for cs in contour_sets(ax) for t in cs.labelTexts] for ax in (left, right))

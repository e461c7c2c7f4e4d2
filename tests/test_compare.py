"""compare / CompareReport: flatness summaries on analytic surfaces, shared draws, shared colour limits, save/load."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from matplotlib.contour import ContourSet
from transformers import BertConfig, BertForSequenceClassification, BertModel

from hf_landscape import CompareReport, ConfigError, GlueObjective, ModelError, Surface, SurfaceError, compare
from hf_landscape.comparison import centre_curvature, mean_increase_within, rise_radius, summarize

# --- analytic surfaces --------------------------------------------------------------------------------------


def quadratic(a: float, b: float, steps: int = 21, span: float = 1.0, metrics: bool = False) -> Surface:
    """L = a·α² + b·β² (+1) on a `steps` × `steps` grid over [-span, span]²."""
    x = y = np.linspace(-span, span, steps)
    x[np.abs(x) < 1e-12] = 0.0
    xx, yy = np.meshgrid(x, y)
    values = 1.0 + a * xx**2 + b * yy**2
    extra = {"accuracy": 1.0 - 0.1 * (xx**2 + yy**2)} if metrics else None
    return Surface(x, values, y=y, metrics=extra, metadata={"kind": "plane"})


@pytest.mark.parametrize("a, b", [(1.0, 1.0), (3.0, 0.5), (0.0, 2.0)])
def test_curvature_of_a_quadratic_is_exact(a, b):
    cx, cy = centre_curvature(quadratic(a, b))
    assert cx == pytest.approx(2 * a, abs=1e-9)
    assert cy == pytest.approx(2 * b, abs=1e-9)


def test_curvature_with_uneven_spacing_around_the_centre_is_exact():
    x = np.array([-1.0, -0.25, 0.0, 0.5, 1.0])
    assert centre_curvature(Surface(x, 2.5 * x**2 + x))[0] == pytest.approx(5.0, abs=1e-12)


def test_curvature_is_nan_where_the_centre_is_at_the_edge():
    x = np.linspace(0.0, 1.0, 5)
    assert math.isnan(centre_curvature(Surface(x, x**2))[0])


def test_mean_increase_within_radius_by_hand():
    # Grid spacing 0.5. Within r = 0.5: the centre (0) and its 4 neighbours (a/4, a/4, b/4, b/4): (a + b) / 10.
    # Within r = 0.75 the 4 diagonals ((a + b)/4 each) join: (0.5a + 0.5b + a + b) / 9 = (a + b) / 6.
    a, b = 3.0, 0.5
    surface = quadratic(a, b, steps=5)
    assert mean_increase_within(surface, 0.5) == pytest.approx((a + b) / 10, abs=1e-12)
    assert mean_increase_within(surface, 0.75) == pytest.approx((a + b) / 6, abs=1e-12)


def test_mean_increase_counts_points_on_the_circle_despite_rounding():
    # linspace(-1, 1, 21) puts 0.5 at 0.5000000000000001; it still lies on the circle r = 0.5.
    surface = quadratic(1.0, 1.0, steps=21)
    inside = [(i, j) for i in range(-5, 6) for j in range(-5, 6) if i * i + j * j <= 25]
    expected = np.mean([(0.1 * i) ** 2 + (0.1 * j) ** 2 for i, j in inside])
    assert mean_increase_within(surface, 0.5) == pytest.approx(expected, rel=1e-9)


def test_rise_radius_is_the_nearest_point_that_rises_enough():
    surface = quadratic(1.0, 1.0, steps=5)  # neighbours at 0.5 rise 0.25, diagonals at 0.707 rise 0.5
    assert rise_radius(surface, 0.3) == pytest.approx(math.sqrt(0.5))
    assert rise_radius(surface, 0.25) == pytest.approx(0.5)
    assert rise_radius(quadratic(4.0, 0.1, steps=5), 0.5) == pytest.approx(0.5)  # along α only
    assert rise_radius(surface, 10.0) == math.inf


def test_rise_radius_ignores_nan_and_counts_inf():
    surface = quadratic(0.0, 0.0, steps=5)
    surface.values[2, 4] = np.nan  # (1, 0), distance 1
    surface.values[4, 4] = np.inf  # (1, 1), distance √2
    assert rise_radius(surface, 0.1) == pytest.approx(math.sqrt(2))


def test_summaries_need_a_grid_through_the_centre():
    x = np.linspace(0.1, 1.0, 4)
    with pytest.raises(SurfaceError, match="contains 0"):
        mean_increase_within(Surface(x, x**2), 0.5)


def test_summarize_reports_centre_loss_metrics_and_flatness():
    row = summarize(quadratic(3.0, 0.5, steps=5, metrics=True), radius=0.5, rise=0.3)
    assert row == pytest.approx(
        {
            "centre_loss": 1.0,
            "centre_accuracy": 1.0,
            "mean_increase": 0.35,
            "rise_radius": 0.5,
            "curvature_x": 6.0,
            "curvature_y": 1.0,
            "curvature_mean": 3.5,
        }
    )


def test_summaries_reject_a_non_positive_radius():
    with pytest.raises(ConfigError, match="radius"):
        mean_increase_within(quadratic(1.0, 1.0), 0.0)


# --- the report -----------------------------------------------------------------------------------------------


def test_table_has_one_row_per_model_in_order():
    report = CompareReport({"sharp": quadratic(4.0, 4.0), "flat": quadratic(0.5, 0.5)}, radius=0.5, rise=0.1)
    rows = report.table()
    assert [r["model"] for r in rows] == ["sharp", "flat"]
    assert [r["curvature_mean"] for r in rows] == pytest.approx([8.0, 1.0])
    assert rows[0]["rise_radius"] < rows[1]["rise_radius"]


def test_table_markdown_has_a_header_and_a_row_per_model():
    text = CompareReport({"a": quadratic(1.0, 2.0), "b": quadratic(2.0, 1.0)}, radius=0.25, rise=0.2).table_markdown()
    lines = text.strip().splitlines()
    assert len(lines) == 4
    assert "mean ΔL (r ≤ 0.25)" in lines[0] and "r where ΔL ≥ 0.2" in lines[0]
    assert lines[2].startswith("| a | 1 |") and lines[3].startswith("| b | 1 |")


def test_report_rejects_labels_that_cannot_name_a_folder():
    with pytest.raises(ConfigError, match="label"):
        CompareReport({"a/b": quadratic(1.0, 1.0)})


def contour_levels(ax) -> np.ndarray | None:
    for child in ax.get_children():
        if isinstance(child, ContourSet):
            return np.asarray(child.levels)
    return None


def test_figure_draws_contours_and_surfaces_on_shared_colour_limits():
    report = CompareReport({"a": quadratic(1.0, 1.0, steps=5), "b": quadratic(5.0, 2.0, steps=5)})
    lo, hi = report.colour_limits()
    assert (lo, hi) == (1.0, 8.0)
    fig = report.figure(levels=10, spacing="linear")
    levels = [lv for lv in (contour_levels(ax) for ax in fig.axes) if lv is not None]
    assert len(levels) == 2
    for lv in levels:
        np.testing.assert_array_equal(lv, np.linspace(lo, hi, 10))
    zlims = [ax.get_zlim() for ax in fig.axes if hasattr(ax, "get_zlim")]
    assert zlims == [(lo, hi), (lo, hi)]
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 2  # one colour bar per row


# --- compare on tiny models -------------------------------------------------------------------------------------

SENTENCES = [[2, 5, 6, 7, 3], [2, 8, 3], [2, 9, 10, 11, 12, 3], [2, 13, 14, 3], [2, 15, 3], [2, 16, 17, 18, 3]]
LABELS = [1, 0, 1, 1, 0, 1]


def bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=20,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def objective():
    return GlueObjective("cola", data={"input_ids": SENTENCES, "label": LABELS}, batch_size=4)


@pytest.fixture(scope="module")
def two_models(objective):
    models = {"plain": bert(0), "sam": bert(1)}
    return models, compare(models, objective, steps=(5, 5), seed=3, progress=False)


def test_compare_gives_a_row_per_model_with_centre_loss_and_metric(two_models, objective):
    from hf_landscape import LandscapeProbe

    models, report = two_models
    rows = report.table()
    assert [r["model"] for r in rows] == ["plain", "sam"]
    for row, model in zip(rows, models.values()):
        centre = LandscapeProbe(model, objective, progress=False).evaluate(details=False)
        assert row["centre_loss"] == centre.loss
        assert row["centre_matthews_correlation"] == centre.metrics["matthews_correlation"]


def test_compare_draws_the_same_raw_directions_for_every_model(two_models):
    # Filter normalization rescales each row of the raw draw; the rows' unit vectors are the raw draws' own.
    _, report = two_models
    a, b = report.surfaces["plain"], report.surfaces["sam"]
    assert [d.config for d in a.directions] == [d.config for d in b.directions]
    assert [d["seed"] for d in a.metadata["directions"]] == [3, 3]
    for da, db in zip(a.directions, b.directions):
        assert da.tensors.keys() == db.tensors.keys()
        for name in da.tensors:
            na, nb = da.tensors[name].norm(dim=-1), db.tensors[name].norm(dim=-1)
            rows = (na > 0) & (nb > 0)  # an all-zero weight row (the [PAD] embedding) gets a zero direction
            ua = da.tensors[name][rows] / na[rows, None]
            ub = db.tensors[name][rows] / nb[rows, None]
            torch.testing.assert_close(ua, ub, rtol=1e-5, atol=1e-6)
        assert not all(torch.equal(da.tensors[n], db.tensors[n]) for n in da.tensors)  # own weights' norms


def test_identical_models_give_identical_surfaces(objective):
    model = bert(0)
    report = compare({"a": model, "b": copy.deepcopy(model)}, objective, steps=(3, 3), progress=False)
    a, b = report.surfaces["a"], report.surfaces["b"]
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.metrics["matthews_correlation"], b.metrics["matthews_correlation"])


def test_compare_restores_every_models_weights(objective):
    models = {"a": bert(0), "b": bert(1)}
    before = {k: {n: p.clone() for n, p in m.state_dict().items()} for k, m in models.items()}
    compare(models, objective, steps=(3, 3), progress=False)
    for k, m in models.items():
        for n, p in m.state_dict().items():
            assert torch.equal(p, before[k][n]), (k, n)


def test_compare_passes_direction_options_to_every_model(objective):
    report = compare({"a": bert(0), "b": bert(1)}, objective, steps=(3, 3), progress=False, normalization="layer")
    assert {d["normalization"] for s in report.surfaces.values() for d in s.metadata["directions"]} == {"layer"}
    assert report.metadata["directions"]["normalization"] == "layer"


def test_compare_checks_every_model_before_evaluating_any(objective, monkeypatch):
    import hf_landscape.probe as probe

    monkeypatch.setattr(probe.LandscapeProbe, "plane", lambda *a, **k: pytest.fail("evaluated before checking"))
    with pytest.raises(ModelError, match="AutoModelForSequenceClassification"):
        compare({"a": bert(0), "b": BertModel(bert(1).config)}, objective, steps=(3, 3), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"colour": 1}, "Unknown direction option"), ({"radius": -1.0}, "radius"), ({"rise": 0}, "rise")],
)
def test_compare_rejects_bad_options_before_evaluating(objective, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        compare({"a": bert(0)}, objective, steps=(3, 3), progress=False, **kwargs)


def test_compare_rejects_no_models(objective):
    with pytest.raises(ConfigError, match="non-empty"):
        compare({}, objective)


def test_compare_over_seeds_gives_each_figure_with_its_interval(objective):
    from hf_landscape import LandscapeProbe
    from hf_landscape.comparison import summarize

    models = {"a": bert(0), "b": bert(1)}
    report = compare(models, objective, steps=(3, 3), seed=[0, 1, 2], confidence=0.9, progress=False)
    row = report.table()[0]
    # The same numbers as summarizing each seed's own plane, then a t interval over the three.
    planes = [LandscapeProbe(models["a"], objective, progress=False).plane(steps=(3, 3), seed=s) for s in (0, 1, 2)]
    per_seed = np.array([summarize(p)["curvature_mean"] for p in planes])
    from hf_landscape.stats import t_interval

    assert row["curvature_mean"] == pytest.approx(per_seed.mean(), rel=1e-12)
    assert row["curvature_mean_ci"] == pytest.approx(list(t_interval(per_seed, 0.9)), rel=1e-12)
    assert report.surfaces["a"].samples.shape == (3, 3, 3)
    assert report.metadata["seed"] == [0, 1, 2]


def test_markdown_table_shows_intervals_next_to_values():
    x = np.linspace(-1, 1, 5)
    draws = np.stack([2 * x**2, 4 * x**2, 6 * x**2])
    surface = Surface(x, draws.mean(0), samples=draws, spread=draws.std(0, ddof=1))
    text = CompareReport({"m": surface}).table_markdown(digits=3)
    assert "| 8 [-1.94, 17.9] |" in text
    assert "95% Student-t confidence intervals of the mean over the direction seeds" in text


def test_one_draw_has_no_intervals(two_models):
    _, report = two_models
    assert not any(k.endswith("_ci") for k in report.table()[0])
    assert "[" not in report.table_markdown()


@pytest.mark.parametrize("seed", [[0], [1, 1], [0, "a"]])
def test_compare_rejects_bad_seed_lists(objective, seed):
    with pytest.raises(ConfigError, match="two or more distinct integers"):
        compare({"a": bert(0)}, objective, steps=(3, 3), seed=seed, progress=False)


# --- save / load ------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(two_models, tmp_path):
    _, report = two_models
    report.save_pretrained(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "compare.png",  # the side-by-side figure and the table, beside the surfaces
        "plain/surface.json",
        "plain/surface.safetensors",
        "report.json",
        "report.md",
        "sam/surface.json",
        "sam/surface.safetensors",
    ]
    text = (tmp_path / "report.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    again = CompareReport.from_pretrained(tmp_path)
    assert list(again.surfaces) == ["plain", "sam"]
    assert (again.radius, again.rise) == (report.radius, report.rise)
    assert again.table() == report.table()
    assert again.metadata["objective"]["fingerprint"] == report.metadata["objective"]["fingerprint"]


def test_saving_a_different_comparison_over_one_is_refused(tmp_path):
    CompareReport({"a": quadratic(1.0, 1.0, steps=5)}).save_pretrained(tmp_path)
    other = CompareReport({"a": quadratic(2.0, 1.0, steps=5)})
    with pytest.raises(SurfaceError, match="overwrite=True"):
        other.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path, overwrite=True)
    assert CompareReport.from_pretrained(tmp_path).table()[0]["curvature_x"] == pytest.approx(4.0)


def test_loading_a_folder_without_a_report_fails_clearly(tmp_path):
    with pytest.raises(SurfaceError, match="report"):
        CompareReport.from_pretrained(tmp_path)


def test_interpolation_barrier_is_the_rise_above_the_chord():
    import numpy as np

    from hf_landscape import Surface
    from hf_landscape.comparison import interpolation_barrier

    x = np.array([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    values = np.array([9.0, 1.0, 2.0, 3.5, 2.5, 2.0, 9.0])  # chord at 0.5 is 1.5
    assert interpolation_barrier(Surface(x, values, metadata={"kind": "interpolation"})) == 2.0


def test_interpolation_barrier_between_later_knots_of_a_path():
    from hf_landscape.comparison import interpolation_barrier

    x = np.linspace(-0.5, 2.5, 7)  # knots 0, 1, 2 on the grid
    values = np.array([9.0, 1.0, 5.0, 3.0, 3.0, 1.0, 9.0])
    surface = Surface(x, values, metadata={"kind": "interpolation"})
    assert interpolation_barrier(surface, (0, 1)) == 3.0  # 5 − (1 + 3) / 2 at α = 0.5
    assert interpolation_barrier(surface, (1, 2)) == 1.0  # 3 − (3 + 1) / 2 at α = 1.5
    assert interpolation_barrier(surface, (0, 2)) == 4.0  # 5 − 1 at α = 0.5 (chord from 1 to 1)


def test_interpolation_barrier_needs_its_ends_on_the_grid():
    from hf_landscape.comparison import interpolation_barrier

    surface = Surface(np.array([0.0, 0.7, 1.4]), np.zeros(3), metadata={"kind": "interpolation"})
    with pytest.raises(ConfigError, match="α = 1"):
        interpolation_barrier(surface)
    with pytest.raises(ConfigError, match="increasing"):
        interpolation_barrier(surface, (1, 0))


def test_the_module_and_the_function_have_different_names():
    import types

    import hf_landscape
    import hf_landscape.comparison as module

    assert isinstance(module, types.ModuleType) and module.compare is hf_landscape.compare
    assert callable(hf_landscape.compare) and not isinstance(hf_landscape.compare, types.ModuleType)

"""The slices beyond random planes: the automatic span, mode-connecting curves, the plane through three models,
worst-case directions and basin sizes, each checked against a hand computation on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testing_utils import assert_bitwise_equal, build_gpt2, build_llama, snapshot

from hf_landscape import CausalLMObjective, ConfigError, Direction, DirectionError, LandscapeProbe, compare
from hf_landscape.comparison import interpolation_barrier
from hf_landscape.directions.registry import draw_directions
from hf_landscape.objectives.loss import differentiable_loss
from hf_landscape.slices.search import AutoSpan, find_edge

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(10 + i % 3)] for i in range(4)]


def objective() -> CausalLMObjective:
    return CausalLMObjective({"input_ids": IDS}, batch_size=4)


def probe_of(model) -> LandscapeProbe:
    return LandscapeProbe(model, objective(), progress=False)


def trained(seed: int, steps: int = 60):
    """A tiny GPT-2 trained to near-zero loss on IDS from its own initialization (independent per seed)."""
    model = build_gpt2(100, seed=seed).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = objective()
    for _ in range(steps):
        optimizer.zero_grad()
        differentiable_loss(model, data).backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def models():
    return [trained(seed) for seed in range(3)]


# --- automatic span ----------------------------------------------------------------------------------------------


def test_find_edge_on_a_quadratic_matches_the_hand_computed_radius():
    edge = find_edge(lambda r: 4.0 * r * r, 1.0, start=0.1, max_radius=100.0, tol=0.1)
    # the power-law step from r = 0.1 aims at 4r² = 1.05, r = sqrt(1.05 / 4), and lands inside [1, 1.1]
    assert edge.radius == pytest.approx(math.sqrt(1.05 / 4.0), rel=1e-12)
    assert 1.0 <= edge.value <= 1.1


def test_find_edge_reports_no_edge_below_the_largest_radius():
    edge = find_edge(lambda r: 1e-6 * r, 1.0, start=0.1, max_radius=5.0, tol=0.1)
    assert edge.radius == math.inf
    assert max(r for r, _ in edge.points) == 5.0


def test_auto_span_line_edge_loss_is_within_tolerance_of_the_target():
    probe = probe_of(build_gpt2(100))
    line = probe.line(steps=5, span="auto", rise=0.5)
    record = line.metadata["auto_span"]
    centre = probe.loss()
    assert record["centre_loss"] == centre
    (d,) = probe.directions(0, axes=1)
    for side, sign in (("+", 1.0), ("-", -1.0)):
        edge = record["axes"][0]["edge"][side]
        rise = probe.evaluate((sign * edge,), [d], details=False).loss - centre
        assert 0.5 <= rise <= 0.5 * 1.1 + 1e-9, (side, rise)
    half = max(record["axes"][0]["edge"].values())
    assert line.metadata["grid"]["span"] == [[-half, half]]
    assert line.x[0] == -half and line.x[-1] == half


def test_auto_span_plane_records_every_axis_and_search_point():
    probe = probe_of(build_gpt2(100))
    plane = probe.plane(steps=3, span="auto", rise=0.5)
    record = plane.metadata["auto_span"]
    assert len(record["axes"]) == 2 and record["rise"] == 0.5
    assert record["evaluations"] == 1 + sum(len(a["points"]) for a in record["axes"])
    assert plane.metadata["grid"]["span"] == record["span"]
    dirs = probe.directions(0, axes=2)
    coordinate, loss = record["axes"][1]["points"][0]
    assert probe.evaluate((0.0, coordinate), dirs, details=False).loss == pytest.approx(loss, rel=1e-6)


def test_auto_span_over_seeds_shares_the_widest_span():
    probe = probe_of(build_gpt2(100))
    surface = probe.line(steps=3, span="auto", rise=0.5, seed=[0, 1])
    draws = surface.metadata["auto_span"]["draws"]
    widest = max(d["axes"][0]["span"][1] for d in draws)
    assert surface.metadata["auto_span"]["span"] == [[-widest, widest]]
    assert surface.x[-1] == widest


def test_compare_with_an_auto_span_gives_every_model_the_widest():
    report = compare({"a": build_gpt2(100, seed=0), "b": build_gpt2(100, seed=1)}, objective(), steps=(3, 3),
                     span=AutoSpan(rise=0.5), progress=False)  # fmt: skip
    spans = [s.metadata["grid"]["span"] for s in report.surfaces.values()]
    record = next(iter(report.surfaces.values())).metadata["auto_span"]
    assert spans[0] == spans[1] == record["span"]
    assert sorted({d["model"] for d in record["draws"]}) == ["a", "b"]
    for k in range(2):
        assert record["span"][k][1] == max(d["axes"][k]["span"][1] for d in record["draws"])


@pytest.mark.parametrize("rise", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_a_bad_rise_is_refused_before_any_work(rise):
    probe = probe_of(build_gpt2(100))
    with pytest.raises(ConfigError, match="rise"):
        probe.line(steps=3, span="auto", rise=rise)


def test_rise_without_an_auto_span_is_refused():
    with pytest.raises(ConfigError, match="only applies to span='auto'"):
        probe_of(build_gpt2(100)).line(steps=3, span=(-1, 1), rise=1.0)


def test_no_rise_within_the_largest_radius_says_so_and_restores_the_model():
    probe = probe_of(build_gpt2(100))
    saved = snapshot(probe.model)
    with pytest.raises(ConfigError, match=r"never rose by 1000 up to radius 0\.5 \(the largest tried"):
        probe.line(steps=3, span=AutoSpan(rise=1000.0, max_radius=0.5))
    assert_bitwise_equal(probe.model, saved)


def test_cli_line_with_an_auto_span(tmp_path, tokenizer):
    from hf_landscape.cli.main import main
    from hf_landscape.surface import Surface

    model = build_gpt2(len(tokenizer), n_layer=1, n_embd=16)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    data = tmp_path / "data.txt"
    data.write_text("the quick brown fox jumps over the lazy dog\n" * 4)
    out = tmp_path / "out"
    code = main(["line", str(tmp_path / "model"), "--text-file", str(data), "--steps", "3", "--span", "auto",
                 "--rise", "0.5", "--out", str(out), "--no-plots", "--no-progress"])  # fmt: skip
    assert code == 0
    surface = Surface.from_pretrained(out)
    assert surface.metadata["auto_span"]["rise"] == 0.5
    assert surface.x[-1] == max(surface.metadata["auto_span"]["axes"][0]["edge"].values())


# --- mode-connecting curves --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bezier(models):
    return probe_of(models[0]).connect(models[1], steps=11, train_steps=100, lr=1e-2)


def test_a_trained_bezier_curve_has_a_lower_barrier_than_the_straight_path(bezier):
    curve = bezier.metadata["curve"]
    assert curve["linear_barrier"] > 0.1  # two independently trained models: the straight path climbs
    assert curve["barrier"] < 0.5 * curve["linear_barrier"]
    assert curve["barrier"] == interpolation_barrier(bezier)


def test_the_straight_path_of_a_curve_is_the_interpolation(models, bezier):
    line = probe_of(models[0]).interpolate(models[1], steps=11, span=(0.0, 1.0))
    np.testing.assert_array_equal(bezier.metadata["curve"]["linear_values"], line.values)
    assert bezier.metadata["curve"]["linear_barrier"] == interpolation_barrier(line)


def test_a_curves_ends_are_each_models_own_loss_bit_for_bit(models, bezier):
    assert bezier.values[0] == probe_of(models[0]).loss()
    assert bezier.values[-1] == probe_of(models[1]).loss()


def test_a_bezier_curve_point_is_the_hand_computed_mix_of_ends_and_bend(models, bezier):
    bend = bezier.directions[0]
    a, b = dict(models[0].named_parameters()), dict(models[1].named_parameters())
    t = float(bezier.x[3])
    mixed = build_gpt2(100, seed=5)
    with torch.no_grad():
        for name, p in mixed.named_parameters():
            p.copy_((1 - t) ** 2 * a[name] + 2 * t * (1 - t) * bend[name] + t * t * b[name])
    assert probe_of(mixed).loss() == pytest.approx(bezier.values[3], rel=1e-5)


def test_a_polychain_passes_through_its_bend_at_one_half(models):
    curve = probe_of(models[0]).connect(models[1], "polychain", steps=3, train_steps=5, lr=1e-2)
    bend = curve.directions[0]
    at_bend = build_gpt2(100, seed=5)
    with torch.no_grad():
        for name, p in at_bend.named_parameters():
            p.copy_(bend[name])
    assert curve.values[1] == pytest.approx(probe_of(at_bend).loss(), rel=1e-6)


def test_a_curve_without_training_is_the_straight_path(models):
    curve = probe_of(models[0]).connect(models[1], "polychain", steps=5, train_steps=0)
    np.testing.assert_allclose(curve.values, curve.metadata["curve"]["linear_values"], rtol=1e-5)


def test_a_curves_bend_saves_and_loads(tmp_path, bezier):
    bend = bezier.directions[0]
    bend.save_pretrained(tmp_path / "bend")
    loaded = Direction.from_pretrained(tmp_path / "bend")
    assert loaded.config["kind"] == "curve_bend"
    for name in bend.keys():
        assert torch.equal(loaded[name], bend[name])


def test_a_curve_between_models_of_different_shapes_is_refused_and_the_model_restored():
    probe = probe_of(build_gpt2(100))
    saved = snapshot(probe.model)
    with pytest.raises(DirectionError, match="shape"):
        probe.connect(build_gpt2(100, n_embd=16), steps=3, train_steps=2)
    assert_bitwise_equal(probe.model, saved)


def test_a_curve_with_a_separate_training_objective_trains_on_it(models):
    other = CausalLMObjective({"input_ids": IDS[:2]})
    curve = probe_of(models[0]).connect(models[1], steps=3, train_steps=2, objective=other)
    assert curve.metadata["curve"]["training_objective"] == other.describe()
    assert curve.metadata["objective"] == objective().describe()


def test_a_curve_between_lora_fine_tunes_bends_only_the_adapter():
    from peft import LoraConfig, get_peft_model

    def tuned(seed):
        model = get_peft_model(build_llama(100), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.1)
        return model

    a, b = tuned(1), tuned(2)
    curve = probe_of(a).connect(b, steps=3, train_steps=2)
    bend = curve.directions[0]
    assert sorted(bend.keys()) == sorted(n for n, _ in a.named_parameters() if "lora_" in n)
    assert curve.metadata["curve"]["moving_parameters"] == sum(bend[n].numel() for n in bend.keys())
    assert curve.values[-1] == probe_of(b).loss()


def test_a_curve_between_lora_models_of_different_bases_is_refused():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    a, b = get_peft_model(build_llama(100), config), get_peft_model(build_llama(100, seed=1), config)
    with pytest.raises(DirectionError, match="base weight"):
        probe_of(a).connect(b, steps=3, train_steps=1)


# --- the plane through three models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def through(models, bezier):
    return probe_of(models[0]).plane_through(models[1], models[2], steps=5, names=("a", "b", "c"), curve=bezier)


def test_each_models_coordinates_reproduce_its_weights(models, through):
    u, v = through.directions
    a = dict(models[0].named_parameters())
    for name, model in zip(("b", "c"), models[1:]):
        x, y = through.metadata["points"][name]
        for n, p in model.named_parameters():
            torch.testing.assert_close(a[n] + x * u[n] + y * v[n], p.detach(), rtol=0, atol=1e-5)


def test_the_basis_is_orthonormal_and_the_axes_are_true_distances(models, through):
    u, v = through.directions
    names = list(u.keys())

    def dot(p, q):
        return sum(float((p[n].double() * q[n].double()).sum()) for n in names)

    assert dot(u, u) == pytest.approx(1.0) and dot(v, v) == pytest.approx(1.0) and abs(dot(u, v)) < 1e-6
    a, b = dict(models[0].named_parameters()), dict(models[1].named_parameters())
    distance = math.sqrt(sum(float((b[n] - a[n]).detach().double().pow(2).sum()) for n in names))
    assert through.metadata["points"]["b"] == [pytest.approx(distance, rel=1e-6), 0.0]


def test_the_loss_at_each_models_coordinates_is_its_own_loss(models, through):
    for name, model in zip(("a", "b", "c"), models):
        assert through.metadata["point_losses"][name] == probe_of(model).loss()


def test_the_grid_covers_the_three_models_with_the_margin(through):
    xs = [p[0] for p in through.metadata["points"].values()]
    ys = [p[1] for p in through.metadata["points"].values()]
    pad = 0.2 * max(max(xs) - min(xs), max(ys) - min(ys))
    assert through.x[0] == pytest.approx(min(xs) - pad) and through.x[-1] == pytest.approx(max(xs) + pad)
    assert through.y[0] == pytest.approx(min(ys) - pad) and through.y[-1] == pytest.approx(max(ys) + pad)


def test_a_curve_on_the_plane_runs_from_a_to_b(through):
    drawn = through.metadata["curve_on_plane"]
    assert drawn["coordinates"][0] == [0.0, 0.0]
    assert drawn["coordinates"][-1] == pytest.approx(through.metadata["points"]["b"])
    assert drawn["bend_off_plane"] > 0


def test_collinear_models_are_refused_and_the_model_restored(models):
    probe = probe_of(models[0])
    saved = snapshot(probe.model)
    middle = build_gpt2(100)
    with torch.no_grad():
        for (_, p), q, r in zip(middle.named_parameters(), models[0].parameters(), models[1].parameters()):
            p.copy_(0.5 * (q + r))
    with pytest.raises(DirectionError, match="collinear"):
        probe.plane_through(models[1], middle, steps=3)
    assert_bitwise_equal(probe.model, saved)


def test_the_plane_through_three_models_is_plotted_with_their_names(through, tmp_path):
    import matplotlib.pyplot as plt

    from hf_landscape.plotting import plot_surface

    fig = plot_surface(through, kind="contour")
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"a", "b", "c"} <= texts
    plt.close(fig)


# --- worst-case directions and basins ----------------------------------------------------------------------------


def test_the_adversarial_direction_beats_many_random_ones_at_the_same_radius(models):
    probe = probe_of(models[0])
    (worst,) = probe.directions(kind="adversarial", axes=1, radius=0.2, steps=5)
    randoms = probe.directions(0, axes=16)
    worst_loss = probe.evaluate((0.2,), [worst], details=False).loss
    random_losses = [probe.evaluate((0.2,), [d], details=False).loss for d in randoms]
    assert worst_loss > max(random_losses)
    assert worst.config["loss_at_radius"] == pytest.approx(worst_loss, rel=1e-5)


def test_the_adversarial_direction_is_filter_normalized(models):
    probe = probe_of(models[0])
    (worst,) = probe.directions(kind="adversarial", axes=1, radius=0.2, steps=2)
    weight = dict(models[0].named_parameters())["transformer.h.0.mlp.c_fc.weight"]
    d = worst["transformer.h.0.mlp.c_fc.weight"]
    # GPT-2's Conv1D keeps its output units along dim 1: one filter per column
    torch.testing.assert_close(d.norm(dim=0), weight.detach().norm(dim=0), rtol=1e-4, atol=1e-6)


def test_two_adversarial_axes_are_orthogonal_filter_by_filter(models):
    u, v = probe_of(models[0]).directions(kind="adversarial", axes=2, radius=0.2, steps=2)
    name = "transformer.h.0.mlp.c_fc.weight"
    assert (u[name] * v[name]).sum(dim=0).abs().max() < 1e-4


@pytest.mark.parametrize("radius", [0.0, -0.1, float("nan")])
def test_a_bad_adversarial_radius_is_refused(radius):
    with pytest.raises(ConfigError, match="radius"):
        probe_of(build_gpt2(100)).directions(kind="adversarial", axes=1, radius=radius)


def test_an_adversarial_direction_needs_the_objective():
    with pytest.raises(ConfigError, match="pass `objective=`"):
        draw_directions("adversarial", build_gpt2(100), 0, axes=1)


def test_basin_worst_case_is_narrower_than_most_case_and_its_edges_reach_the_drop(models):
    probe = probe_of(models[0])
    result = probe.basin(drop=0.5, seeds=[0, 1, 2], steps=3)
    assert result.worst_radius < min(result.random_radii)
    assert result.random_mean == pytest.approx(np.mean(result.random_radii))
    assert result.random_interval[0] < result.random_mean < result.random_interval[1]
    (d,) = probe.directions(1, axes=1)
    rise = probe.evaluate((result.random_radii[1],), [d], details=False).loss - result.centre
    assert 0.5 <= rise <= 0.5 * 1.05 + 1e-9


@pytest.mark.parametrize("drop", [0.0, float("nan"), -1.0])
def test_a_bad_basin_drop_is_refused(drop):
    with pytest.raises(ConfigError, match="drop"):
        probe_of(build_gpt2(100)).basin(drop=drop)


def test_a_line_along_the_adversarial_direction():
    probe = probe_of(build_gpt2(100))
    line = probe.line(steps=3, span=(-0.1, 0.1), direction="adversarial", radius=0.1)
    (worst,) = probe.directions(kind="adversarial", axes=1, radius=0.1)
    assert line.metadata["directions"][0]["kind"] == "adversarial"
    assert line.values[-1] == pytest.approx(worst.config["loss_at_radius"], rel=1e-5)


def test_basin_of_a_metric_is_where_it_falls_by_the_drop():
    from testing_utils import build_bert_classifier

    from hf_landscape import GlueObjective

    data = {"input_ids": [[2, 5 + 10 * (i % 2), 9 + i % 5, 3] for i in range(8)], "label": [i % 2 for i in range(8)]}
    task = GlueObjective("sst2", data=data)
    model = build_bert_classifier(30).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        differentiable_loss(model, task).backward()
        optimizer.step()
    probe = LandscapeProbe(model, task, progress=False)
    assert probe.evaluate(details=False).metrics["accuracy"] == 1.0
    result = probe.basin("accuracy", drop=0.5, seeds=[0, 1], adversarial=False)
    assert result.centre == 1.0 and result.worst_radius is None
    for seed, radius in zip(result.seeds, result.random_radii):
        (d,) = probe.directions(seed, axes=1)
        assert probe.evaluate((radius,), [d], details=False).metrics["accuracy"] <= 0.5


def test_a_basin_whose_metric_never_falls_says_so_without_a_negative_zero():
    from testing_utils import build_bert_classifier

    from hf_landscape import GlueObjective

    data = {"input_ids": [[2, 5 + 10 * (i % 2), 9 + i % 5, 3] for i in range(8)], "label": [i % 2 for i in range(8)]}
    probe = LandscapeProbe(build_bert_classifier(30).eval(), GlueObjective("sst2", data=data), progress=False)
    with pytest.raises(
        ConfigError, match=r"the accuracy \(0\.5 at the weights\): it never fell by 0\.5 up to radius 0\.01"
    ) as info:
        probe.basin("accuracy", drop=0.5, seeds=[0], adversarial=False, max_radius=0.01)
    assert "most seen 0," in str(info.value)


def test_basin_along_adapter_directions_finds_the_worst_case_among_the_adapter(models):
    import copy

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    model = get_peft_model(copy.deepcopy(models[0]), config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    result = probe_of(model).basin(drop=0.5, seeds=[0, 1], directions="adapter", steps=2, rounds=1)
    assert result.directions == "adapter"
    assert result.worst_radius < min(result.random_radii)


def test_an_unknown_basin_metric_is_named():
    with pytest.raises(ConfigError, match="'accuracy' is not among the objective's metrics"):
        probe_of(build_gpt2(100)).basin("accuracy", drop=0.1, adversarial=False)


def test_curve_and_three_model_surfaces_save_load_and_plot(tmp_path, bezier, through):
    from hf_landscape import Surface

    for name, surface in (("curve", bezier), ("through", through)):
        surface.save_pretrained(tmp_path / name)
        loaded = Surface.from_pretrained(tmp_path / name)
        np.testing.assert_array_equal(loaded.values, surface.values)
        assert loaded.metadata["kind"] == surface.metadata["kind"]
        written = surface.save_plots(tmp_path / name)
        assert written and all(path.is_file() for path in written)
    assert Surface.from_pretrained(tmp_path / "through").metadata["points"] == through.metadata["points"]
    assert (
        Surface.from_pretrained(tmp_path / "curve").metadata["curve"]["barrier"] == bezier.metadata["curve"]["barrier"]
    )

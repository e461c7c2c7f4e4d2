"""LandscapeProbe: exact centres, grid shapes, the restore guarantee, interpolation, validation, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hf_landscape
from hf_landscape import (
    CausalLMObjective,
    ConfigError,
    Direction,
    DirectionError,
    LandscapeProbe,
    ModelError,
    RandomDirectionConfig,
)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_equal(model, saved: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert list(current) == list(saved)
    for name, tensor in saved.items():
        assert torch.equal(current[name], tensor), name


@pytest.fixture
def probe(gpt2_model, tokenizer, texts):
    return LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:6], tokenizer, batch_size=4), progress=False)


@pytest.fixture
def llama_probe(llama_model, tokenizer, texts):
    return LandscapeProbe(llama_model(), CausalLMObjective(texts[:6], tokenizer, batch_size=4), progress=False)


class FailingEvaluate:
    """Wraps an objective's `evaluate`: raises `error` on call number `fail_on`, records whether weights moved."""

    def __init__(self, objective, model, error, fail_on=3):
        self.inner = objective.evaluate
        self.model = model
        self.error = error
        self.fail_on = fail_on
        self.calls = 0
        self.original = snapshot(model)
        self.moved = False

    def __call__(self, model, *, details=False):
        self.calls += 1
        current = model.state_dict()
        self.moved |= any(not torch.equal(current[k], v) for k, v in self.original.items())
        if self.calls == self.fail_on:
            raise self.error
        return self.inner(model, details=details)


# --- exact centres and shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_plane_centre_equals_loss_exactly(which, probe, llama_probe):
    p = probe if which == "gpt2" else llama_probe
    plane = p.plane(steps=(5, 5), span=(-1, 1), seed=0)
    assert plane.values[2, 2] == p.loss()
    assert plane.centre == p.loss()
    assert np.isfinite(plane.values).all()
    assert len(np.unique(plane.values)) > 20  # the points really differ


def test_line_centre_equals_loss_exactly(probe):
    line = probe.line(steps=5, span=(-1, 1), seed=0)
    assert line.values[2] == probe.loss()
    assert line.centre == probe.loss()
    np.testing.assert_array_equal(line.x, [-1.0, -0.5, 0.0, 0.5, 1.0])


def test_centre_snapped_to_zero_on_uneven_span(probe):
    """linspace(-0.3, 0.7, 11)[3] is 5.6e-17, not 0: the axis must still hold an exact 0, evaluated at θ₀ itself."""
    assert np.linspace(-0.3, 0.7, 11)[3] != 0.0  # the snap is what makes the centre exact
    line = probe.line(steps=11, span=(-0.3, 0.7), seed=1)
    assert line.x[3] == 0.0
    np.testing.assert_allclose(line.x, np.linspace(-0.3, 0.7, 11), rtol=0, atol=1e-15)
    assert line.centre_index == (3,)
    assert line.values[3] == probe.loss()
    assert line.centre == probe.loss()


def test_plane_centre_snapped_on_uneven_spans(probe):
    assert np.linspace(-0.6, 0.2, 5)[3] != 0.0 and np.linspace(-0.1, 0.2, 4)[1] != 0.0
    plane = probe.plane(steps=(5, 4), span=((-0.6, 0.2), (-0.1, 0.2)), seed=1)
    assert plane.x[3] == 0.0 and plane.y[1] == 0.0
    assert plane.centre_index == (1, 3)
    assert plane.values[1, 3] == probe.loss()


def test_engine_evaluation_is_the_loss_without_details_unless_asked(probe):
    from hf_landscape.engine import evaluate

    plain = evaluate(probe.model, probe.objective)
    assert plain.loss == probe.loss() and plain.sequence_losses is None and plain.token_losses is None
    detailed = evaluate(probe.model, probe.objective, details=True)
    assert detailed.loss == plain.loss and len(detailed.sequence_losses) == 6


def test_grid_axis_snaps_within_rounding_of_the_span():
    from hf_landscape.engine import grid_axis

    # a wide span: linspace misses 0 by 5.7e-14, far above 1e-12 / 400 but within rounding of 400
    assert np.linspace(-400.4, 200.2, 4)[2] != 0.0
    assert grid_axis(4, (-400.4, 200.2), "steps/span")[2] == 0.0
    np.testing.assert_array_equal(grid_axis(3, (0.5, 1.5), "steps/span"), [0.5, 1.0, 1.5])  # no 0: nothing snaps


@pytest.mark.parametrize(("distributed", "sharded"), [(None, True), (True, True), (False, False)])
def test_a_probe_started_by_a_launcher_shards_its_grids_unless_told_not_to(
    gpt2_model, tokenizer, texts, monkeypatch, distributed, sharded
):
    import accelerate

    class FakeState:
        def __init__(self, cpu):
            self.num_processes, self.process_index = 2, 0

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.setenv("WORLD_SIZE", "2")
    probe = LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:2], tokenizer), distributed=distributed)
    assert isinstance(probe.runner.shard, FakeState) == sharded
    assert probe.runner.num_processes == (2 if sharded else 1)


def test_the_grid_limit_may_be_set_as_low_as_one_point(monkeypatch):
    from hf_landscape.grid import max_grid_points

    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "1")
    assert max_grid_points() == 1
    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "0")
    with pytest.raises(ConfigError, match="HF_LANDSCAPE_MAX_POINTS must be a positive integer, got '0'"):
        max_grid_points()


def test_grid_axis_names_its_argument_when_the_grid_is_too_large(monkeypatch):
    from hf_landscape.engine import grid_axis

    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "10")
    with pytest.raises(ConfigError, match=r"^`steps/span` asks for 11 points, more than the limit of 10"):
        grid_axis(11, (-1.0, 1.0), "steps/span")


@pytest.mark.parametrize("span", [(float("-inf"), 1.0), (-1.0, float("inf")), (float("nan"), 1.0)])
def test_grid_axis_refuses_a_span_with_an_infinite_or_nan_end(span):
    from hf_landscape.engine import grid_axis

    with pytest.raises(ConfigError, match=r"^`steps/span` span must be finite with low < high"):
        grid_axis(3, span, "steps/span")


def test_grid_axis_may_reach_the_largest_coordinate():
    from hf_landscape.engine import grid_axis

    np.testing.assert_array_equal(grid_axis(3, (-1e6, 1e6), "steps/span"), [-1e6, 0.0, 1e6])


def test_grid_axis_keeps_a_coordinate_of_exactly_the_rounding_bound():
    from hf_landscape.engine import grid_axis

    # 1e-12 of the span's reach (1.0) is the bound: only coordinates below it are rounding of 0
    np.testing.assert_array_equal(grid_axis(2, (1e-12, 1.0), "steps/span"), [1e-12, 1.0])


def test_distributed_state_reads_the_launchers_world_size(monkeypatch):
    import os

    import accelerate

    from hf_landscape.engine import distributed_state

    made = []

    class FakeState:
        def __init__(self, cpu):
            made.append(cpu)
            self.num_processes = int(os.environ["WORLD_SIZE"])

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_state() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_state() is None and made == []  # one process: no state is made
    monkeypatch.setenv("WORLD_SIZE", "2")
    state = distributed_state()
    assert isinstance(state, FakeState) and state.num_processes == 2 and made == [not torch.cuda.is_available()]


def test_a_process_of_two_evaluates_every_second_point_and_gathers_the_rest(probe, monkeypatch):
    """Process 1 of 2 evaluates grid points 1, 3, 5, ...; the gather hands it every process's points."""
    from types import SimpleNamespace

    import hf_landscape.engine.loop as loop

    reference = probe.line(steps=5, seed=0).values
    evaluated, gathered = [], []
    original = probe.objective.evaluate
    monkeypatch.setattr(probe.objective, "evaluate", lambda *a, **k: evaluated.append(1) or original(*a, **k))

    def gather(state, values, done, metrics):  # stands in for the all-gather over the processes
        gathered.append(done.copy())
        return reference, metrics

    monkeypatch.setattr(loop, "gather", gather)
    monkeypatch.setattr(probe.runner, "shard", SimpleNamespace(process_index=1, num_processes=2))
    line = probe.line(steps=5, seed=0)
    assert len(evaluated) == 2 and [d.tolist() for d in gathered] == [[False, True, False, True, False]]
    np.testing.assert_array_equal(line.values, reference)


def test_run_grid_shows_a_landscape_bar_by_default(monkeypatch):
    from testing_utils import build_gpt2, record_bars

    from hf_landscape.engine import run_grid

    bars = record_bars(monkeypatch, "hf_landscape.engine.loop")
    model = build_gpt2(100).eval()  # no dropout: both points are θ₀
    objective = CausalLMObjective({"input_ids": [[5, 9, 2, 7, 11, 3]]})
    objective.bind(model)
    values, _, _ = run_grid(model, objective, [(0.0,), (0.0,)], lambda point: None)
    ((bar, kwargs),) = bars
    assert (bar.desc, bar.n, kwargs["disable"]) == ("landscape", 2, False)
    assert values[0] == values[1] == objective.evaluate(model).loss


def test_plane_shape_with_non_square_steps(probe):
    plane = probe.plane(steps=(3, 5), span=((-1, 1), (-0.5, 0.5)), seed=0)
    assert plane.values.shape == (5, 3)
    np.testing.assert_array_equal(plane.x, [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(plane.y, [-0.5, -0.25, 0.0, 0.25, 0.5])
    assert plane.values[2, 1] == probe.loss()


def test_plane_values_are_indexed_y_then_x(probe):
    """values[j, i] is the loss at (x[i], y[j]): check every point against a single evaluation."""
    plane = probe.plane(steps=(3, 2), span=((-1, 1), (0.5, 1.0)), seed=2)
    for j, b in enumerate(plane.y):
        for i, a in enumerate(plane.x):
            assert probe.evaluate(point=(a, b), directions=plane.directions, details=False).loss == plane.values[j, i]


def test_line_points_match_manual_perturbation(gpt2_model, tokenizer, texts):
    """An independent check of θ₀ + α·δ: perturb a copy of the model by hand and compare losses."""
    model = gpt2_model()
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    line = probe.line(steps=3, span=(-0.5, 0.5), seed=3)
    twin = gpt2_model()
    (direction,) = line.directions
    with torch.no_grad():
        for name, t in direction.tensors.items():
            twin.get_parameter(name).add_(t, alpha=0.5)
    expected = LandscapeProbe(twin, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
    assert line.values[2] == pytest.approx(expected, rel=1e-6)


def test_value_does_not_depend_on_path(probe):
    plane = probe.plane(steps=(3, 3), span=(-1, 1), seed=0)
    points = [(i, j) for j in range(3) for i in range(3)]
    for i, j in reversed(points):
        result = probe.evaluate(point=(plane.x[i], plane.y[j]), directions=plane.directions)
        assert result.loss == plane.values[j, i]
    again = probe.plane(steps=(3, 3), span=(-1, 1), seed=0)
    np.testing.assert_array_equal(again.values, plane.values)


def test_user_directions_as_plain_dicts(probe):
    (d1, d2) = probe.directions(seed=5)
    a = probe.plane(steps=3, span=(-1, 1), directions=[d1, d2])
    b = probe.plane(steps=3, span=(-1, 1), directions=[dict(d1.tensors), dict(d2.tensors)])
    c = probe.plane(steps=3, span=(-1, 1), seed=5)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, c.values)
    line = probe.line(steps=3, span=(-1, 1), direction=dict(d1.tensors))
    np.testing.assert_array_equal(line.values, c.values[1, :])


def test_zero_direction_gives_a_flat_line(probe):
    zero = Direction({n: torch.zeros_like(p) for n, p in probe.model.named_parameters() if p.dim() >= 2})
    line = probe.line(steps=3, span=(-1, 1), direction=zero)
    assert line.values.tolist() == [probe.loss()] * 3


def test_evaluate_without_point_is_the_loss(probe):
    result = probe.evaluate()
    assert result.loss == probe.loss()
    assert result.token_losses is not None and result.sequence_losses is not None


def test_evaluate_at_a_point_gives_the_details_asked_for(probe):
    directions = probe.directions(axes=1)
    detailed = probe.evaluate(point=(0.3,), directions=directions)
    plain = probe.evaluate(point=(0.3,), directions=directions, details=False)
    assert detailed.loss == plain.loss == probe.line(steps=3, span=(-0.3, 0.3), direction=directions[0]).values[-1]
    assert len(detailed.sequence_losses) == 6 and len(detailed.token_losses) == 6
    assert plain.sequence_losses is None and plain.token_losses is None


@pytest.mark.parametrize("coordinate", [1e6, -1e6])
def test_a_point_may_lie_at_the_largest_coordinate(probe, coordinate):
    zero = Direction({n: torch.zeros_like(p) for n, p in probe.model.named_parameters() if p.dim() >= 2})
    assert probe.evaluate(point=(coordinate,), directions=[zero], details=False).loss == probe.loss()


@pytest.mark.parametrize("coordinate", [1e6 * (1 + 2**-52), -2e6, float("inf"), float("nan")])
def test_a_point_beyond_the_largest_coordinate_is_refused(probe, coordinate):
    with pytest.raises(ConfigError, match="`point`"):
        probe.evaluate(point=(coordinate,), directions=probe.directions(axes=1))


def test_an_interpolation_span_of_non_numbers_is_a_config_error(probe, gpt2_model):
    with pytest.raises(ConfigError, match="^`steps/span`"):
        probe.interpolate(gpt2_model(seed=1), span=("a", "b"))


# --- restore guarantee ----------------------------------------------------------------------------------


def test_weights_restored_after_line_plane_interpolate(gpt2_model, tokenizer, texts):
    model = gpt2_model()
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    saved = snapshot(model)
    probe.line(steps=3, span=(-1, 1), seed=0, include_1d=True)
    assert_bitwise_equal(model, saved)
    probe.plane(steps=3, span=(-1, 1), seed=1, normalization="layer")
    assert_bitwise_equal(model, saved)
    probe.interpolate(gpt2_model(seed=1), steps=3, span=(-0.5, 1.5))
    assert_bitwise_equal(model, saved)
    probe.evaluate(point=(0.7,), directions=probe.directions(axes=1))
    assert_bitwise_equal(model, saved)


@pytest.mark.parametrize("training", [True, False])
def test_weights_and_mode_restored_after_exception_mid_grid(probe, monkeypatch, training):
    probe.model.train(training)
    saved = snapshot(probe.model)
    spy = FailingEvaluate(probe.objective, probe.model, RuntimeError("injected"), fail_on=3)
    monkeypatch.setattr(probe.objective, "evaluate", spy)
    with pytest.raises(RuntimeError, match="injected"):
        probe.plane(steps=(5, 5), span=(-1, 1), seed=0)
    assert spy.calls == 3 and spy.moved  # the weights did move before the failure
    assert_bitwise_equal(probe.model, saved)
    assert probe.model.training is training
    assert all(m.training is training for m in probe.model.modules())


def test_weights_and_mode_restored_after_keyboard_interrupt(probe, monkeypatch):
    probe.model.train()
    saved = snapshot(probe.model)
    spy = FailingEvaluate(probe.objective, probe.model, KeyboardInterrupt(), fail_on=3)
    monkeypatch.setattr(probe.objective, "evaluate", spy)
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=5, span=(-1, 1), seed=0)
    assert spy.moved
    assert_bitwise_equal(probe.model, saved)
    assert probe.model.training


def test_weights_restored_after_exception_in_interpolation(probe, gpt2_model, monkeypatch):
    saved = snapshot(probe.model)
    spy = FailingEvaluate(probe.objective, probe.model, RuntimeError("injected"), fail_on=2)
    monkeypatch.setattr(probe.objective, "evaluate", spy)
    with pytest.raises(RuntimeError, match="injected"):
        probe.interpolate(gpt2_model(seed=1), steps=5, span=(0, 1))
    assert spy.moved
    assert_bitwise_equal(probe.model, saved)


def test_weights_restored_after_exception_in_single_evaluation(probe, monkeypatch):
    saved = snapshot(probe.model)
    directions = probe.directions(seed=0)
    spy = FailingEvaluate(probe.objective, probe.model, RuntimeError("injected"), fail_on=1)
    monkeypatch.setattr(probe.objective, "evaluate", spy)
    with pytest.raises(RuntimeError, match="injected"):
        probe.evaluate(point=(0.5, -0.5), directions=directions)
    assert spy.moved
    assert_bitwise_equal(probe.model, saved)


def test_loss_after_failed_grid_is_unchanged(probe, monkeypatch):
    before = probe.loss()
    spy = FailingEvaluate(probe.objective, probe.model, ValueError("injected"), fail_on=4)
    monkeypatch.setattr(probe.objective, "evaluate", spy)
    with pytest.raises(ValueError, match="injected"):
        probe.line(steps=5, span=(-1, 1))
    monkeypatch.undo()
    assert probe.loss() == before


def test_objective_shared_by_two_probes_keeps_each_models_data(gpt2_model, tokenizer, texts):
    objective = CausalLMObjective(texts, tokenizer)
    probe_a = LandscapeProbe(gpt2_model(seed=0), objective, progress=False)
    before = probe_a.loss()
    LandscapeProbe(gpt2_model(seed=1, n_positions=32), objective, progress=False)  # truncates texts to 32 tokens
    assert probe_a.loss() == before
    assert probe_a.line(steps=3, span=(-1, 1)).centre == before


# --- interpolation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_interpolation_ends_are_exact(which, gpt2_model, llama_model, tokenizer, texts):
    make = gpt2_model if which == "gpt2" else llama_model
    model, other = make(seed=0), make(seed=1)
    probe = LandscapeProbe(model, CausalLMObjective(texts[:6], tokenizer), progress=False)
    other_loss = LandscapeProbe(other, CausalLMObjective(texts[:6], tokenizer), progress=False).loss()
    assert other_loss != probe.loss()
    surface = probe.interpolate(other, steps=3, span=(0, 1))
    np.testing.assert_array_equal(surface.x, [0.0, 0.5, 1.0])
    assert surface.values[0] == probe.loss()
    assert surface.values[2] == pytest.approx(other_loss, rel=0, abs=1e-12)
    assert surface.kind == "interpolation"
    assert surface.metadata["other_model"]["class"] == type(other).__name__


def test_interpolation_default_grid_hits_both_ends(probe, gpt2_model, tokenizer, texts):
    other = gpt2_model(seed=1)
    other_loss = LandscapeProbe(other, CausalLMObjective(texts[:6], tokenizer, batch_size=4), progress=False).loss()
    surface = probe.interpolate(other, steps=5, span=(-0.5, 1.5))
    assert surface.values.shape == (5,)
    assert surface.values[1] == probe.loss()
    assert surface.values[3] == pytest.approx(other_loss, rel=0, abs=1e-12)


def test_interpolation_target_in_another_dtype_takes_the_probed_models(gpt2_model, tokenizer, texts):
    """The other checkpoint in float64: the path runs in the probed model's float32, so its end is the other model
    rounded to float32, and the probed model stays float32."""
    model, other = gpt2_model(seed=0), gpt2_model(seed=1)
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    other_loss = LandscapeProbe(other, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
    surface = probe.interpolate(other.double(), steps=3, span=(0, 1))
    assert surface.values[2] == pytest.approx(other_loss, rel=0, abs=1e-12)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_interpolation_midpoint_matches_manual_average(gpt2_model, tokenizer, texts):
    model, other = gpt2_model(seed=0), gpt2_model(seed=1)
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    surface = probe.interpolate(other, steps=3, span=(0, 1))
    mid = gpt2_model(seed=0)
    with torch.no_grad():
        for p, q in zip(mid.parameters(), other.parameters()):
            p.copy_(0.5 * p + 0.5 * q)
    expected = LandscapeProbe(mid, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
    assert surface.values[1] == pytest.approx(expected, rel=1e-6)


def test_interpolation_between_different_shapes_fails_untouched(probe, gpt2_model):
    saved = snapshot(probe.model)
    with pytest.raises(DirectionError, match="shape"):
        probe.interpolate(gpt2_model(n_embd=16), steps=3)
    assert_bitwise_equal(probe.model, saved)
    with pytest.raises(DirectionError, match="parameter names"):
        probe.interpolate(gpt2_model(n_layer=1), steps=3)
    assert_bitwise_equal(probe.model, saved)


def test_path_through_two_checkpoints_is_exact_at_every_knot(gpt2_model, tokenizer, texts):
    model, m1, m2 = gpt2_model(seed=0), gpt2_model(seed=1), gpt2_model(seed=2)
    loss = {
        k: LandscapeProbe(m, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
        for k, m in ((0, model), (1, m1), (2, m2))
    }
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    surface = probe.interpolate([m1, m2], steps=5, span=(0, 2))
    np.testing.assert_array_equal(surface.x, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert [surface.values[0], surface.values[2], surface.values[4]] == [loss[0], loss[1], loss[2]]
    assert surface.metadata["path"]["knots"] == [0, 1, 2]
    assert [m["class"] for m in surface.metadata["path"]["models"]] == ["GPT2LMHeadModel"] * 3


def test_path_midpoints_lie_on_their_own_segment(gpt2_model, tokenizer, texts):
    model, m1, m2 = gpt2_model(seed=0), gpt2_model(seed=1), gpt2_model(seed=2)
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    surface = probe.interpolate([m1, m2], steps=5, span=(0, 2))
    mid = gpt2_model(seed=0)
    with torch.no_grad():  # α = 1.5: halfway between m1 and m2, whatever the probed model is
        for p, a, b in zip(mid.parameters(), m1.parameters(), m2.parameters()):
            p.copy_(0.5 * a + 0.5 * b)
    expected = LandscapeProbe(mid, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
    assert surface.values[3] == pytest.approx(expected, rel=1e-6)


def test_path_extrapolates_the_last_segment_beyond_the_last_knot(gpt2_model, tokenizer, texts):
    model, m1, m2 = gpt2_model(seed=0), gpt2_model(seed=1), gpt2_model(seed=2)
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False)
    surface = probe.interpolate([m1, m2], steps=2, span=(2, 2.5))
    far = gpt2_model(seed=0)
    with torch.no_grad():  # θ(2.5) = m2 + 0.5·(m2 − m1)
        for p, a, b in zip(far.parameters(), m1.parameters(), m2.parameters()):
            p.copy_(b + 0.5 * (b - a))
    expected = LandscapeProbe(far, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
    assert surface.values[1] == pytest.approx(expected, rel=1e-5)


def test_path_default_grid_puts_a_point_on_every_knot(gpt2_model, tokenizer, texts):
    probe = LandscapeProbe(gpt2_model(seed=0), CausalLMObjective(texts[:2], tokenizer), progress=False)
    surface = probe.interpolate([gpt2_model(seed=1), gpt2_model(seed=2)])
    assert (surface.x[0], surface.x[-1], len(surface.x)) == (-0.5, 2.5, 61)
    assert all(np.any(surface.x == k) for k in (0.0, 1.0, 2.0))


def test_path_grid_points_within_rounding_of_a_knot_are_the_knot(gpt2_model, tokenizer, texts):
    probe = LandscapeProbe(gpt2_model(seed=0), CausalLMObjective(texts[:2], tokenizer), progress=False)
    surface = probe.interpolate([gpt2_model(seed=1), gpt2_model(seed=2)], steps=25, span=(-0.3, 2.1))
    assert np.linspace(-0.3, 2.1, 25)[13] != 1.0  # linspace alone misses the knot by a rounding error
    assert all(np.any(surface.x == k) for k in (0.0, 1.0, 2.0))


def test_path_restores_the_model_and_checks_every_knot(probe, gpt2_model):
    saved = snapshot(probe.model)
    with pytest.raises(DirectionError, match="shape"):
        probe.interpolate([gpt2_model(seed=1), gpt2_model(n_embd=16)], steps=3)
    assert_bitwise_equal(probe.model, saved)
    with pytest.raises(ModelError, match=r"other_model\[1\]"):
        probe.interpolate([gpt2_model(seed=1), torch.nn.Linear(2, 2)], steps=3)
    with pytest.raises(ModelError, match="empty"):
        probe.interpolate([], steps=3)


def test_interpolation_with_a_non_model_fails(probe):
    with pytest.raises(ModelError):
        probe.interpolate(torch.nn.Linear(2, 2), steps=3)


# --- validation ---------------------------------------------------------------------------------------


def test_not_a_pretrained_model_is_a_model_error(tokenizer, texts):
    objective = CausalLMObjective(texts[:2], tokenizer)
    with pytest.raises(ModelError, match="PreTrainedModel") as info:
        LandscapeProbe(torch.nn.Linear(4, 4), objective)
    assert isinstance(info.value, TypeError)


def test_objective_must_be_an_objective(gpt2_model):
    with pytest.raises(ConfigError, match="objective"):
        LandscapeProbe(gpt2_model(), lambda model: 0.0)


@pytest.mark.parametrize(
    ("steps", "span"),
    [(1, (-1, 1)), (0, (-1, 1)), (2.5, (-1, 1)), (True, (-1, 1)), (5, (1, 1)), (5, (1, -1)), (5, (0, float("inf")))],
)
def test_bad_steps_or_span_is_a_config_error(probe, steps, span):
    saved = snapshot(probe.model)
    with pytest.raises(ConfigError, match="steps/span"):
        probe.line(steps=steps, span=span)
    with pytest.raises(ConfigError, match="steps/span"):
        probe.interpolate(probe.model, steps=steps, span=span)
    with pytest.raises(ConfigError, match="steps"):
        probe.plane(steps=steps, span=span)
    assert_bitwise_equal(probe.model, saved)


@pytest.mark.parametrize(("steps", "span"), [(2.5, (-1, 1)), ((3, 3, 3), (-1, 1)), (3, (1,))])
def test_plane_with_malformed_steps_or_span_is_a_config_error(probe, steps, span):
    try:
        probe.plane(steps=steps, span=span)
    except ConfigError:
        return
    pytest.fail("no ConfigError")


def test_unknown_normalization_is_a_config_error(probe):
    with pytest.raises(ConfigError, match="normalization"):
        probe.line(steps=3, normalization="bogus")
    with pytest.raises(ConfigError, match="normalization"):
        probe.plane(steps=3, config=RandomDirectionConfig(normalization="unit"))


def test_unknown_direction_option_is_a_config_error(probe):
    with pytest.raises(ConfigError, match="normalisation"):
        probe.line(steps=3, normalisation="filter")
    with pytest.raises(ConfigError, match="bogus"):
        probe.plane(steps=3, bogus=1)


def test_config_and_options_together_is_a_config_error(probe):
    with pytest.raises(ConfigError, match="either"):
        probe.line(steps=3, config=RandomDirectionConfig(), normalization="layer")


def test_plane_needs_two_directions(probe):
    (d,) = probe.directions(axes=1)
    with pytest.raises(ConfigError, match="must hold 2 direction"):
        probe.plane(steps=3, directions=[d])
    with pytest.raises(ConfigError):
        probe.plane(steps=3, directions="pca")


def test_point_needs_one_direction_per_coordinate(probe):
    (d,) = probe.directions(axes=1)
    with pytest.raises(ConfigError, match="one direction per coordinate"):
        probe.evaluate(point=(0.1, 0.2), directions=[d])


def test_directions_of_another_architecture_are_rejected(probe, llama_model):
    saved = snapshot(probe.model)
    foreign = hf_landscape.random_directions(llama_model(), 0, axes=1)[0]
    with pytest.raises(DirectionError, match="does not have"):
        probe.line(steps=3, direction=foreign)
    wrong_shape = Direction({"transformer.wte.weight": torch.zeros(10, 32)})
    with pytest.raises(DirectionError, match="shape"):
        probe.line(steps=3, direction=wrong_shape)
    with pytest.raises(DirectionError, match="empty"):
        probe.line(steps=3, direction=Direction({}))
    assert_bitwise_equal(probe.model, saved)


# --- loading and provenance ----------------------------------------------------------------------------


def test_from_pretrained_local_folder(gpt2_model, tokenizer, texts, tmp_path):
    model = gpt2_model()
    model.save_pretrained(tmp_path)
    objective = CausalLMObjective(texts[:4], tokenizer)
    probe = LandscapeProbe.from_pretrained(str(tmp_path), objective=objective, progress=False)
    assert type(probe.model).__name__ == "GPT2LMHeadModel"
    assert probe.model.lm_head.weight is probe.model.transformer.wte.weight
    reference = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False).loss()
    assert probe.loss() == pytest.approx(reference, rel=1e-6)
    surface = probe.line(steps=3, span=(-1, 1))
    meta = surface.metadata["model"]
    assert meta["name_or_path"] == tmp_path.name  # a local folder by its name, never its path
    assert meta["local"] is True and "local_path" not in meta
    assert meta["class"] == "GPT2LMHeadModel"
    assert meta["commit_sha"] is None


def test_from_pretrained_missing_folder_is_a_model_error(tokenizer, texts, tmp_path):
    with pytest.raises(ModelError):
        LandscapeProbe.from_pretrained(
            "no-such-user/no-such-model", objective=CausalLMObjective(texts[:2], tokenizer), progress=False
        )


def test_plane_metadata(probe):
    plane = probe.plane(steps=(3, 4), span=((-1, 1), (-2, 2)), seed=7, normalization="layer")
    meta = plane.metadata
    assert meta["kind"] == "plane" and plane.kind == "plane"
    assert meta["seed"] == 7
    assert meta["objective"]["fingerprint"] == probe.objective.fingerprint()
    assert meta["objective"]["num_tokens"] == probe.objective.num_tokens
    assert meta["objective"]["config"]["batch_size"] == 4
    assert [d["axis"] for d in meta["directions"]] == [0, 1]
    assert all(d["normalization"] == "layer" and d["seed"] == 7 for d in meta["directions"])
    assert meta["grid"] == {"steps": [3, 4], "span": [[-1.0, 1.0], [-2.0, 2.0]]}
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["hf_landscape"] == hf_landscape.__version__
    assert isinstance(meta["wall_time_s"], float) and meta["wall_time_s"] >= 0
    assert meta["model"]["class"] == "GPT2LMHeadModel"
    assert meta["model"]["num_parameters"] == sum(p.numel() for p in probe.model.parameters())
    assert meta["model"]["dtype"] == "float32"
    assert meta["created"]


def test_line_metadata(probe):
    line = probe.line(steps=3, span=(-0.5, 0.5), seed=2)
    assert line.kind == "line"
    assert line.metadata["grid"] == {"steps": [3], "span": [[-0.5, 0.5]]}
    assert line.metadata["seed"] == 2
    assert len(line.metadata["directions"]) == 1


# --- mixed precision -----------------------------------------------------------------------------------------


def test_autocast_evaluates_under_torch_autocast(gpt2_model, tokenizer, texts):
    model = gpt2_model(seed=0).eval()
    objective = CausalLMObjective(texts[:4], tokenizer)
    probe = LandscapeProbe(model, objective, progress=False, autocast="bfloat16")
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        expected = objective.evaluate(model).loss
    plain = LandscapeProbe(model, objective, progress=False).loss()
    assert probe.loss() == expected != plain
    assert expected == pytest.approx(plain, rel=2e-2)


def test_autocast_plane_centre_is_the_autocast_loss_and_weights_stay_float32(gpt2_model, tokenizer, texts):
    model = gpt2_model(seed=0)
    saved = snapshot(model)
    probe = LandscapeProbe(model, CausalLMObjective(texts[:4], tokenizer), progress=False, autocast="bfloat16")
    plane = probe.plane(steps=(3, 3), seed=0)
    assert plane.centre == probe.loss()
    assert plane.metadata["autocast"] == "bfloat16"
    assert_bitwise_equal(model, saved)
    assert next(model.parameters()).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("bad", ["bf16", ["bfloat16"]])
def test_an_execution_config_refuses_an_unknown_autocast(bad):
    from hf_landscape.engine import ExecutionConfig

    with pytest.raises(ConfigError, match=r"^`autocast` must be one of \[None, 'bfloat16', 'float16'\]"):
        ExecutionConfig(autocast=bad)


@pytest.mark.parametrize(("autocast", "dtype"), [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_autocast_runs_grids_in_the_dtype_named(gpt2_model, tokenizer, texts, autocast, dtype):
    probe = LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:2], tokenizer), autocast=autocast)
    with probe.runner.precision():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == dtype


@pytest.mark.parametrize(("autocast", "expected"), [(None, []), ("bfloat16", [torch.bfloat16])])
def test_the_objective_is_told_the_autocast_dtype_when_the_probe_is_made(
    gpt2_model, tokenizer, texts, monkeypatch, autocast, expected
):
    told = []
    monkeypatch.setattr(CausalLMObjective, "expect_dtype", lambda self, dtype: told.append(dtype))
    objective = CausalLMObjective(texts[:2], tokenizer)
    LandscapeProbe(gpt2_model(), objective, autocast=autocast)
    assert [d for d in told if d != torch.float32] == expected  # binding tells it the float32 head's dtype too


@pytest.mark.parametrize("bad", ["bf16", "float32", torch.bfloat16, ["bfloat16"]])
def test_bad_autocast_is_a_config_error(gpt2_model, tokenizer, texts, bad):
    with pytest.raises(ConfigError, match="`autocast` must be one of"):
        LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:2], tokenizer), autocast=bad)


def test_path_knots_key_a_checkpoint_by_the_target_or_by_every_knot():
    from testing_utils import build_gpt2

    from hf_landscape.directions.interpolation import interpolation_target, path_knots

    model, a, b = build_gpt2(100, seed=0), build_gpt2(100, seed=1), build_gpt2(100, seed=2)
    params, knots, keyed = path_knots(model, [a])
    target = interpolation_target(model, a)
    assert list(params) == list(target) and all(torch.equal(t, target[n]) for t, n in zip(knots[0], params))
    assert list(keyed) == list(target) and all(torch.equal(keyed[n], target[n]) for n in target)
    _, knots, keyed = path_knots(model, [a, b])
    names = list(target)
    assert list(keyed) == [f"0:{n}" for n in names] + [f"1:{n}" for n in names]
    assert all(torch.equal(keyed[f"1:{n}"], dict(b.named_parameters())[n]) for n in names)
    assert all(torch.equal(t, keyed[f"1:{n}"]) for t, n in zip(knots[1], names))


@pytest.mark.parametrize(
    ("span", "ends"),
    [
        ((1 + 1e-13, 1000.0), (1.0, 1000.0)),  # within rounding of knot 1 on an axis reaching 1000: snapped onto it
        ((-0.5, 1 + 1.5e-12), (-0.5, 1 + 1.5e-12)),  # 1.5e-12 from knot 1 on a unit axis: where it was asked
        ((0.0, 2 + 1e-13), (0.0, 2 + 1e-13)),  # 2 is no knot of a one-model path: where it was asked
        ((1.000000000001, 1.000088900582341), (1.000000000001, 1.000088900582341)),  # exactly 1e-12 · max|x| off 1
    ],
)
def test_interpolation_axis_snaps_only_points_within_rounding_of_a_knot(span, ends):
    from hf_landscape.grid import interpolation_axis

    x, steps, _ = interpolation_axis(2, span, 1)
    assert steps == 2 and (float(x[0]), float(x[-1])) == ends


@pytest.mark.parametrize(
    ("steps", "span", "axis"),
    [((1, 3), (-1, 1), "x"), ((3, 1), (-1, 1), "y"), (3, ((-1, 1), (1, -1)), "y"), (3, ((1, 1), (-1, 1)), "x")],
)
def test_a_bad_plane_axis_is_named(probe, steps, span, axis):
    with pytest.raises(ConfigError, match=rf"`steps/span \({axis}\)`"):
        probe.plane(steps=steps, span=span)


def test_a_plane_over_the_point_limit_is_refused_by_its_product_of_steps(probe, monkeypatch):
    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "11")
    with pytest.raises(ConfigError, match=r"^`steps` asks for 12 points"):
        probe.plane(steps=(4, 3))


@pytest.mark.parametrize("seeds", [[0], [0, 0], [0, 1.5]])
def test_seeds_over_which_to_average_must_be_two_or_more_distinct_integers(probe, seeds):
    with pytest.raises(ConfigError, match="seed"):
        probe.line(steps=3, seed=seeds)


@pytest.mark.parametrize(("kind", "steps"), [("line", 4), ("plane", (2, 2))])
def test_the_point_limit_counts_every_seeds_grid_before_any_work(probe, monkeypatch, kind, steps):
    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "11")  # 4 x 3 seeds, or 2 x 2 x 3 seeds: 12 points
    with pytest.raises(ConfigError, match=r"^`steps x seeds` asks for 12 points"):
        getattr(probe, kind)(steps=steps, seed=[0, 1, 2])


@pytest.mark.parametrize(
    ("kind", "span", "argument"),
    [("line", (1, -1), "steps/span"), ("plane", ((1, -1), (-1, 1)), r"steps/span \(x\)"),
     ("plane", ((-1, 1), (1, -1)), r"steps/span \(y\)")],
)  # fmt: skip
def test_a_bad_span_over_seeds_is_named(probe, kind, span, argument):
    with pytest.raises(ConfigError, match=rf"^`{argument}`"):
        getattr(probe, kind)(steps=3, span=span, seed=[0, 1])

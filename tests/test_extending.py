"""Extending hf_landscape: a user's own objective (the required methods only, declared abilities) and a user's own
direction kind (`register_direction_kind`), each working exactly like the built-in ones."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import build_gpt2

from hf_landscape import (
    CausalLMObjective,
    ConfigError,
    Direction,
    DirectionError,
    GlueObjective,
    LandscapeError,
    LandscapeProbe,
    Objective,
    RandomDirectionConfig,
    direction_kinds,
    random_directions,
    register_direction_kind,
)
from hf_landscape.objectives import (
    DifferentiableLoss,
    LossTensor,
    StackedEvaluation,
    TokenView,
    abilities,
    supports,
)
from hf_landscape.objectives.base import Evaluation

IDS = [[(3 * i + 5 * j) % 90 + 1 for j in range(10)] for i in range(3)]


class NextTokenObjective(Objective):
    """A user's objective with the required methods only: mean next-token cross-entropy of fixed ids."""

    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = torch.tensor(ids)
        self.calls = 0

    def bind(self, model: torch.nn.Module) -> None:
        self.ids = self.ids.to(model.get_input_embeddings().weight.device)

    def evaluate(self, model: torch.nn.Module, *, details: bool = False) -> Evaluation:
        self.calls += 1
        logits = model(input_ids=self.ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self.ids[:, 1:].flatten())
        return Evaluation(loss=float(loss))

    def fingerprint(self) -> str:
        return "next-token"

    def describe(self) -> dict:
        return {"type": "NextTokenObjective", "fingerprint": self.fingerprint()}


def user_probe(**kwargs) -> LandscapeProbe:
    return LandscapeProbe(build_gpt2(100, seed=0), NextTokenObjective(IDS), progress=False, **kwargs)


def own_value(probe: LandscapeProbe, coords: tuple[float, ...], dirs) -> float:
    """The objective's own `evaluate` at θ₀ + Σ cᵢ·dᵢ, weights set by hand (the later axes first, as the engine)."""
    model = probe.model
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        with torch.no_grad():
            for c, d in reversed(list(zip(coords, dirs))):
                for name, t in d.tensors.items():
                    if c != 0.0:
                        dict(model.named_parameters())[name].add_(t, alpha=c)
            with torch.inference_mode():
                return probe.objective.evaluate(model.eval()).loss
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n])


def test_builtin_objectives_declare_their_abilities():
    causal = CausalLMObjective({"input_ids": IDS})
    assert abilities(causal) == ["StackedEvaluation", "LossTensor", "DifferentiableLoss", "TokenView", "LogitTerms"]
    glue = GlueObjective("sst2", data={"input_ids": [[2, 5, 3], [2, 7, 8, 3]], "label": [1, 0]})
    assert abilities(glue) == ["DifferentiableLoss", "LogitTerms"]
    assert abilities(NextTokenObjective(IDS)) == []
    assert isinstance(causal, (StackedEvaluation, LossTensor, DifferentiableLoss, TokenView))


def test_an_objective_declares_an_ability_by_having_its_methods():
    class WithTerms(NextTokenObjective):
        def loss_terms(self, model):
            yield torch.zeros(())

    assert supports(WithTerms(IDS), DifferentiableLoss) and not supports(WithTerms(IDS), StackedEvaluation)


def test_a_user_objective_with_the_required_methods_gives_a_plane_exactly():
    probe = user_probe()
    dirs = probe.directions(seed=1)
    plane = probe.plane(steps=(3, 3), seed=1)
    with torch.inference_mode():
        assert plane.centre == probe.objective.evaluate(probe.model.eval()).loss  # bit for bit at θ₀
    for j, b in enumerate(plane.y):
        for i, a in enumerate(plane.x):
            assert plane.values[j, i] == own_value(probe, (float(a), float(b)), dirs), (a, b)


def test_a_user_objective_runs_one_point_per_forward_under_auto():
    probe = user_probe()
    probe.objective.calls = 0
    probe.line(steps=5, seed=0)
    assert probe.objective.calls == 5


ONE_POINT = "NextTokenObjective evaluates one point per forward: it has no `evaluate_points`"


@pytest.mark.parametrize(("requested", "said"), [("auto", True), (1, False)])
def test_auto_says_why_a_user_objective_runs_one_point_per_forward(caplog, requested, said):
    with caplog.at_level(logging.INFO, logger="hf_landscape"):
        user_probe(points_per_forward=requested).line(steps=3, seed=0)
    assert (ONE_POINT in caplog.text) == said


def test_auto_says_nothing_of_one_point_for_an_objective_that_stacks_points(caplog):
    objective = CausalLMObjective({"input_ids": IDS})
    with caplog.at_level(logging.INFO, logger="hf_landscape"):
        LandscapeProbe(build_gpt2(100, seed=0), objective, progress=False).line(steps=3, seed=0)
    assert "line: 1 point(s) per forward" in caplog.text and "evaluates one point per forward" not in caplog.text


def test_several_points_per_forward_on_a_user_objective_names_what_to_add():
    with pytest.raises(ConfigError, match="evaluate_points"):
        user_probe(points_per_forward=2).line(steps=3)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.hessian_eigenvalues(k=1, max_iter=2),
        lambda p: p.hessian_trace(samples=2),
        lambda p: p.sharpness(rho=0.05, kind="worst", steps=1),
    ],
    ids=["eigenvalues", "trace", "worst sharpness"],
)
def test_curvature_on_a_user_objective_names_loss_terms(call):
    probe = user_probe()
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    with pytest.raises(LandscapeError, match="loss_terms"):
        call(probe)
    assert all(torch.equal(p, before[n]) for n, p in probe.model.named_parameters())


def test_directional_derivatives_on_a_user_objective_name_loss_terms():
    probe = user_probe()
    plane = probe.plane(steps=(2, 2))
    with pytest.raises(LandscapeError, match="loss_terms"):
        probe.directional_derivatives(plane)


def test_average_sharpness_needs_no_gradient():
    result = user_probe().sharpness(rho=0.01, kind="average", samples=2)
    assert np.isfinite(result.sharpness)


def test_a_token_map_of_a_user_objective_names_what_to_add():
    with pytest.raises(LandscapeError, match="active_examples"):
        user_probe().token_loss_map([-1.0, 1.0])


# --- a user's direction kind ------------------------------------------------------------------------------------


@pytest.fixture
def registry():
    """The kinds registry, with the kinds a test registers (their default spans, whether they need the loss) removed
    afterwards."""
    from hf_landscape.directions import DIRECTION_KINDS
    from hf_landscape.directions.registry import DEFAULT_SPANS, KINDS_NEEDING_OBJECTIVE

    before = dict(DIRECTION_KINDS), dict(DEFAULT_SPANS), set(KINDS_NEEDING_OBJECTIVE)
    yield DIRECTION_KINDS
    for table, saved in zip((DIRECTION_KINDS, DEFAULT_SPANS, KINDS_NEEDING_OBJECTIVE), before):
        table.clear()
        table.update(saved)


def fixed_direction(model: torch.nn.Module, scale: float = 1.0) -> Direction:
    g = torch.Generator().manual_seed(11)
    weights = {n: p for n, p in model.named_parameters() if p.dim() == 2}
    return Direction({n: scale * torch.randn(p.shape, generator=g) / p.numel() ** 0.5 for n, p in weights.items()})


def test_builtin_kinds_are_registered():
    assert {"random", "lora", "low_rank", "adapter"} <= set(direction_kinds())


def test_a_registered_kind_gives_the_line_of_its_direction_bit_for_bit(registry):
    @register_direction_kind("fixed_line")
    def fixed(model, seed, *, axes, scale=1.0):
        return [fixed_direction(model, scale) for _ in range(axes)]

    probe = LandscapeProbe(build_gpt2(100, seed=0), CausalLMObjective({"input_ids": IDS}), progress=False)
    line = probe.line(steps=5, direction="fixed_line", scale=0.5, seed=3)
    explicit = probe.line(steps=5, direction=fixed_direction(probe.model, 0.5))
    np.testing.assert_array_equal(line.values, explicit.values)
    assert line.metadata["directions"] == [{"kind": "fixed_line", "seed": 3}] and line.metadata["seed"] == 3
    assert explicit.metadata["seed"] is None  # the user's own direction was not drawn from a seed


def test_a_registered_kind_gives_planes_with_its_options_and_config(registry):
    seen = []

    @register_direction_kind("scaled_random")
    def scaled(model, seed, *, axes, factor=1.0, **options):
        seen.append((seed, axes, factor, sorted(options)))
        dirs = random_directions(model, seed, axes=axes, config=options.get("config"))
        return [Direction({n: factor * t for n, t in d.tensors.items()}, d.config) for d in dirs]

    probe = LandscapeProbe(build_gpt2(100, seed=0), CausalLMObjective({"input_ids": IDS}), progress=False)
    plane = probe.plane(steps=(3, 3), directions="scaled_random", factor=2.0, seed=5)
    reference = probe.plane(steps=(3, 3), span=((-2, 2), (-2, 2)), seed=5)
    np.testing.assert_allclose(plane.values, reference.values, rtol=1e-6)  # 2·d over ±1 is d over ±2
    config = RandomDirectionConfig(normalization="layer")
    probe.plane(steps=(2, 2), directions="scaled_random", config=config, seed=1)
    assert seen == [(5, 2, 2.0, []), (1, 2, 1.0, ["config"])]


def test_an_unknown_kind_lists_the_kinds_and_the_closest(registry):
    probe = LandscapeProbe(build_gpt2(100, seed=0), CausalLMObjective({"input_ids": IDS}), progress=False)
    with pytest.raises(ConfigError, match=r"did you mean 'random'\?.*register_direction_kind") as info:
        probe.plane(steps=(2, 2), directions="randon")
    assert all(f"'{kind}'" in str(info.value) for kind in ("adapter", "lora", "low_rank", "random"))


def test_a_kind_name_is_checked_and_taken_once(registry):
    with pytest.raises(ConfigError, match="lower-case"):
        register_direction_kind("My Kind")
    with pytest.raises(ConfigError, match="registered already"):
        register_direction_kind("random")


def test_a_kind_returning_the_wrong_number_of_directions_is_refused(registry):
    @register_direction_kind("one_only")
    def one_only(model, seed, *, axes):
        return [fixed_direction(model)]

    probe = LandscapeProbe(build_gpt2(100, seed=0), CausalLMObjective({"input_ids": IDS}), progress=False)
    before = {n: p.detach().clone() for n, p in probe.model.named_parameters()}
    with pytest.raises(DirectionError, match=r"'one_only' returned .* list of 2 direction"):
        probe.plane(steps=(2, 2), directions="one_only")
    assert all(torch.equal(p, before[n]) for n, p in probe.model.named_parameters())


def test_a_name_with_no_close_kind_or_no_name_at_all_gets_no_hint():
    from hf_landscape.directions.registry import direction_kind

    with pytest.raises(ConfigError) as info:
        direction_kind("zzzz")
    assert "got 'zzzz'; register your own" in str(info.value)
    with pytest.raises(ConfigError) as info:
        direction_kind(3)  # not a string: no closest name is looked for
    assert "got 3; register your own" in str(info.value)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {"kind": "recorded", "seed": 4}),
        ({"kind": "its_own"}, {"kind": "its_own", "seed": 4}),
        ({"seed": 9}, {"kind": "recorded", "seed": 9}),
        ({"kind": "its_own", "seed": 9, "scale": 2}, {"kind": "its_own", "seed": 9, "scale": 2}),
    ],
)
def test_drawn_directions_record_their_kind_and_seed_where_the_kind_did_not(registry, config, expected):
    from hf_landscape.directions.registry import draw_directions

    returned = []

    @register_direction_kind("recorded")
    def recorded(model, seed, *, axes):
        returned.extend(Direction(fixed_direction(model).tensors, dict(config)) for _ in range(axes))
        return list(returned)

    drawn = draw_directions("recorded", build_gpt2(100, seed=0), 4, axes=2)
    assert [d.config for d in drawn] == [expected, expected]
    assert [d.config for d in returned] == [config, config]  # the kind's own objects are left as they were
    assert all(d.tensors is r.tensors for d, r in zip(drawn, returned))


def test_a_registered_kind_spans_its_own_default_span(registry):
    from hf_landscape.directions.registry import default_span

    register_direction_kind("wide", default_span=(-0.5, 2))(lambda model, seed, *, axes: [])
    assert default_span("wide") == (-0.5, 2.0)
    assert default_span("lora") == (-0.2, 0.2)


@pytest.mark.parametrize("name", ["not_registered", 3, ["random"]])
def test_anything_but_a_registered_kind_spans_the_default_span(name):
    from hf_landscape.directions.registry import DEFAULT_SPAN, default_span

    assert DEFAULT_SPAN == (-1.0, 1.0)
    assert default_span(name) == (-1.0, 1.0)


def test_a_kind_that_needs_the_loss_is_given_the_objective_and_no_progress_bar_by_default(registry):
    from hf_landscape.directions.registry import draw_directions

    seen = []

    @register_direction_kind("from_the_loss", needs_objective=True)
    def from_the_loss(model, seed, *, axes, **options):
        seen.append(options)
        return [fixed_direction(model) for _ in range(axes)]

    objective = NextTokenObjective(IDS)
    draw_directions("from_the_loss", build_gpt2(100, seed=0), 0, axes=1, objective=objective)
    assert seen == [{"objective": objective, "progress": False}]


def test_a_kind_that_does_not_need_the_loss_is_given_neither_objective_nor_progress(registry):
    from hf_landscape.directions.registry import draw_directions

    seen = []

    @register_direction_kind("without_the_loss")
    def without_the_loss(model, seed, *, axes, **options):
        seen.append(options)
        return [fixed_direction(model) for _ in range(axes)]

    draw_directions("without_the_loss", build_gpt2(100, seed=0), 0, axes=1, objective=NextTokenObjective(IDS))
    assert seen == [{}]


def test_unknown_options_of_a_kind_are_a_config_error():
    from hf_landscape.directions.registry import kind_config

    with pytest.raises(ConfigError, match=r"Unknown direction option\(s\) \['bogus'\]"):
        kind_config(RandomDirectionConfig, None, {"bogus": 1, "normalization": "layer"})
    assert kind_config(RandomDirectionConfig, None, {"normalization": "layer"}).normalization == "layer"


@pytest.mark.parametrize(("axes", "argument"), [(1, "`direction`"), (2, r"`directions\[1\]`")])
def test_a_given_direction_that_is_not_one_is_named_by_its_place(axes, argument):
    from hf_landscape.directions.prepare import given_directions

    model = build_gpt2(100, seed=0)
    spec = [fixed_direction(model)] * (axes - 1) + ["not a direction"]
    with pytest.raises(DirectionError, match=argument):
        given_directions(spec, axes)
    own = {n: t for n, t in fixed_direction(model).tensors.items()}  # a plain dict becomes a Direction of its own
    given = given_directions([own] * axes, axes)
    assert [type(d) for d in given] == [Direction] * axes and all(d.tensors == own for d in given)


def test_a_dict_of_tensors_becomes_a_custom_direction():
    from hf_landscape.directions.prepare import as_direction

    tensors = {"w": torch.ones(2, 2)}
    direction = as_direction(tensors, "direction")
    assert type(direction) is Direction and direction.tensors == tensors
    assert direction.config == {"kind": "custom"}


def test_a_dict_holding_something_else_than_tensors_is_named_by_its_argument():
    from hf_landscape.directions.prepare import as_direction

    with pytest.raises(DirectionError, match=r"^`directions\[1\]`\['w'\] must be a tensor"):
        as_direction({"w": [0.0, 1.0]}, "directions[1]")


@pytest.mark.parametrize("bad", ["not a direction", {"transformer.h.0.attn.c_attn.weight": torch.zeros(2, 2)}])
def test_prepare_names_the_direction_that_does_not_fit(bad):
    from hf_landscape.directions.prepare import prepare

    model = build_gpt2(100, seed=0)
    with pytest.raises(DirectionError, match=r"`directions\[1\]`"):
        prepare(model, [fixed_direction(model), bad])


def test_prepare_lines_up_directions_of_different_parameters_in_the_parameters_dtype():
    from hf_landscape.directions.prepare import prepare

    model = build_gpt2(100, seed=0)
    first, second = "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight"
    shapes = dict((n, p.shape) for n, p in model.named_parameters())
    a = {first: torch.ones(shapes[first], dtype=torch.float64)}
    b = {second: torch.full(shapes[second], 2.0, dtype=torch.float64)}
    params, tensors = prepare(model, [a, b])
    assert list(params) == [first, second]
    assert all(t.dtype == torch.float32 for axis in tensors for t in axis)
    assert torch.equal(tensors[0][0], torch.ones(shapes[first])) and torch.equal(
        tensors[0][1], torch.zeros(shapes[second])
    )
    assert torch.equal(tensors[1][0], torch.zeros(shapes[first])) and torch.equal(
        tensors[1][1], torch.full(shapes[second], 2.0)
    )


def test_compile_is_refused_for_an_objective_that_must_run_eagerly():
    probe = user_probe(compile=True)
    probe.objective.eager_only = True
    with pytest.raises(ConfigError, match="^`compile=True` cannot run NextTokenObjective"):
        probe.line(steps=3)


def test_turning_compile_off_runs_the_models_own_forward_again(monkeypatch):
    calls = []

    def fake_compile(fn, **kwargs):  # a compiled forward that counts its calls
        return lambda *args, **kw: calls.append(1) or fn(*args, **kw)

    monkeypatch.setattr(torch, "compile", fake_compile)
    probe = user_probe(compile=True, points_per_forward=1)
    probe.line(steps=3, seed=0)
    assert len(calls) >= 3
    calls.clear()
    probe.compile = False
    probe.line(steps=3, seed=0)
    assert calls == []


def test_the_one_point_forward_is_compiled_with_cuda_graphs_for_fixed_shapes(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)  # records, compiles nothing
    user_probe(compile=True, points_per_forward=1).line(steps=3, seed=0)
    assert calls == [{"mode": "reduce-overhead", "dynamic": False}]


def test_compile_runs_the_grid_through_the_compiled_forward_made_once(monkeypatch):
    made, calls = [], []

    def fake_compile(fn, **kwargs):  # stands in for torch.compile: no compilation on the CPU here
        def compiled(*args, **kw):
            calls.append(fn)
            return fn(*args, **kw)

        made.append(fn)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain = user_probe()
    plain.line(steps=3, seed=0)
    assert made == [] and calls == []
    probe = user_probe(compile=True, points_per_forward=1)
    first = probe.line(steps=3, seed=0)
    second = probe.line(steps=3, seed=0)
    forwards = [fn for fn in made if getattr(fn, "__self__", None) is probe.model]
    assert len(forwards) == 1  # the model's forward, compiled once for every grid of the probe
    assert sum(fn is forwards[0] for fn in calls) >= 6  # every point of both grids went through it
    np.testing.assert_array_equal(first.values, second.values)

"""Several grid points per forward (vmap over stacked perturbed weights) give the one-point values."""

from __future__ import annotations

import functools
import json
import re
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_gpt2, build_llama, train_tokenizer

from hf_landscape import CausalLMObjective, ConfigError, LandscapeProbe
from hf_landscape.engine import StackedPoints


@pytest.fixture(scope="module")
def objective():
    return CausalLMObjective(TEXTS, train_tokenizer(), max_length=24, batch_size=5, padding_side="left")


@pytest.mark.parametrize("build", [build_gpt2, build_llama])
def test_batched_points_equal_the_one_point_path_bitwise_on_cpu(build, objective):
    model = build(len(train_tokenizer()))
    one = LandscapeProbe(model, objective, progress=False, points_per_forward=1).plane(steps=(5, 3), seed=4)
    many = LandscapeProbe(model, objective, progress=False, points_per_forward=4).plane(steps=(5, 3), seed=4)
    np.testing.assert_array_equal(many.values, one.values)


def test_batched_points_never_write_the_weights(objective):
    model = build_gpt2(len(train_tokenizer()))
    before = {n: (p.data_ptr(), p.clone()) for n, p in model.named_parameters()}
    LandscapeProbe(model, objective, progress=False, points_per_forward=6).line(steps=7, include_1d=True)
    for n, p in model.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])
    assert model.training


def test_batched_points_resume_from_a_checkpoint(objective, tmp_path, monkeypatch):
    model = build_llama(len(train_tokenizer()))
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=3)
    reference = probe.plane(steps=(3, 3), seed=1)
    calls = {"n": 0}
    original = objective.evaluate_points

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "evaluate_points", failing)
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(3, 3), seed=1, checkpoint_dir=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    np.testing.assert_array_equal(probe.plane(steps=(3, 3), seed=1, checkpoint_dir=tmp_path).values, reference.values)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "many"])
def test_bad_points_per_forward_is_a_config_error(objective, bad):
    probe = LandscapeProbe(build_gpt2(len(train_tokenizer())), objective, progress=False, points_per_forward=bad)
    with pytest.raises(ConfigError, match="points_per_forward"):
        probe.line(steps=3)


def test_auto_is_one_point_per_forward_on_the_cpu(objective):
    from hf_landscape.engine import points_per_forward

    model = build_gpt2(len(train_tokenizer()))
    assert points_per_forward(model, dict(model.named_parameters()), objective, "auto", 100) == 1


@pytest.mark.slow
def test_compile_gives_the_same_values_and_restores_forward(objective):
    model = build_gpt2(len(train_tokenizer()))
    reference = LandscapeProbe(model, objective, progress=False).plane(steps=(3, 3))
    compiled = LandscapeProbe(model, objective, progress=False, compile=True).plane(steps=(3, 3))
    np.testing.assert_allclose(compiled.values, reference.values, rtol=1e-6, atol=0)
    assert "forward" not in model.__dict__


@pytest.mark.slow
def test_compile_also_compiles_the_full_batch_loss():
    from hf_landscape.objectives import nll as causal_lm

    model = build_gpt2(len(train_tokenizer()))
    ids = [[(3 * i + 5 * j) % 90 + 1 for j in range(12)] for i in range(8)]  # no padding: full batches
    objective = CausalLMObjective({"input_ids": ids}, batch_size=4)
    reference = LandscapeProbe(model, objective, progress=False).plane(steps=(3, 3))
    causal_lm._COMPILED_FULL_NLL = None
    compiled = LandscapeProbe(model, objective, progress=False, compile=True).plane(steps=(3, 3))
    assert causal_lm._COMPILED_FULL_NLL is not None
    np.testing.assert_allclose(compiled.values, reference.values, rtol=1e-6, atol=0)


# --- SDPA over stacked points ---------------------------------------------------------------------------------


def test_stacked_points_run_sdpa_once_not_once_per_point(objective, monkeypatch):
    import torch.nn.functional as F

    import hf_landscape.engine.attention as attention

    model = build_gpt2(len(train_tokenizer()))
    calls = {"n": 0}
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls["n"] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    LandscapeProbe(model, objective, progress=False, points_per_forward=4).line(steps=4)
    batches = -(-len(TEXTS) // 5)
    assert calls["n"] == model.config.n_layer * batches  # one call per layer and batch for all 4 points


@pytest.mark.parametrize("side", ["left", "right"])
def test_stacked_points_equal_one_point_with_grouped_query_attention(side):
    objective = CausalLMObjective(TEXTS, train_tokenizer(), max_length=24, batch_size=5, padding_side=side)
    model = build_llama(len(train_tokenizer()), num_key_value_heads=1)
    assert model.config.num_attention_heads > model.config.num_key_value_heads
    one = LandscapeProbe(model, objective, progress=False, points_per_forward=1).line(steps=5, seed=2)
    many = LandscapeProbe(model, objective, progress=False, points_per_forward=5).line(steps=5, seed=2)
    np.testing.assert_array_equal(many.values, one.values)


def test_attention_implementation_is_restored_after_an_error(monkeypatch):
    objective = CausalLMObjective(TEXTS[:4], train_tokenizer(), max_length=24)
    model = build_gpt2(len(train_tokenizer()))
    assert model.config._attn_implementation == "sdpa"
    seen = []

    def failing(self, *args, **kwargs):
        seen.append(model.config._attn_implementation)
        raise RuntimeError("boom")

    monkeypatch.setattr(objective, "evaluate_points", failing.__get__(objective))
    with pytest.raises(RuntimeError, match="boom"):
        LandscapeProbe(model, objective, progress=False, points_per_forward=3).line(steps=3)
    # tried with one-call SDPA, then once more with vmap's own loop; the error is the caller's either way
    assert seen == ["hf_landscape_sdpa", "sdpa"] and model.config._attn_implementation == "sdpa"


def test_stacked_points_fall_back_to_vmaps_loop_when_one_call_attention_fails(objective, caplog):
    import logging

    from transformers import AttentionInterface

    import hf_landscape.engine.attention as attention

    model = build_gpt2(len(train_tokenizer()))
    one = LandscapeProbe(model, objective, progress=False, points_per_forward=1).line(steps=3, seed=1)
    assert np.linspace(-1, 1, 7)[::3].tolist() == np.linspace(-1, 1, 3).tolist()

    def broken(*args, **kwargs):
        raise RuntimeError("this architecture reads its attention setting its own way")

    AttentionInterface.register(attention.NAME, broken)
    try:
        with caplog.at_level(logging.WARNING, logger="hf_landscape.engine"):
            many = LandscapeProbe(model, objective, progress=False, points_per_forward=3).line(steps=7, seed=1)
    finally:
        AttentionInterface.register(attention.NAME, attention.attention_forward)
    np.testing.assert_array_equal(many.values[::3], one.values)
    assert caplog.text.count("using vmap's own loop instead") == 1  # tried once, not at every chunk
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stacked_weights_equal_the_one_point_weights_bitwise(objective, dtype):
    from hf_landscape.directions import prepare
    from hf_landscape.engine import StackedPoints, editing

    model = build_gpt2(len(train_tokenizer())).to(dtype)
    probe = LandscapeProbe(model, objective, progress=False)
    params, tensors = prepare(probe.model, probe.directions(seed=0))
    coords = [(0.1, -0.3), (0.37, 0.0), (0.0, 0.21)]
    stacked = StackedPoints(model, params, tensors).stacked(coords)
    with editing(model, params) as editor:
        for j, point in enumerate(coords):
            editor.set_linear(point, tensors)
            for name, p in params.items():
                assert torch.equal(stacked[name][j], p.detach()), (name, point)


def test_available_memory_counts_the_allocators_unused_cache(monkeypatch):
    from hf_landscape.engine import available_memory

    second = torch.device("cuda", 1)  # each figure is asked of the device in question, not the current one
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: {second: (10 * 2**30, 80 * 2**30)}[device])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: {second: 50 * 2**30}[device])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: {second: 20 * 2**30}[device])
    assert available_memory(second) == 40 * 2**30  # 10 free + 30 cached but unused


@pytest.mark.slow
def test_compile_with_several_points_per_forward_compiles_the_stacked_forward():
    model = build_gpt2(len(train_tokenizer()))
    ids = [[(3 * i + 5 * j) % 90 + 1 for j in range(12)] for i in range(8)]
    objective = CausalLMObjective({"input_ids": ids}, batch_size=4)
    reference = LandscapeProbe(model, objective, progress=False, points_per_forward=3).plane(steps=(3, 3))
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=3, compile=True)
    calls = []
    original = StackedPoints.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append((kwargs.get("compile"), self._run))

    with mock.patch.object(StackedPoints, "__init__", spy):
        compiled = probe.plane(steps=(3, 3))
    ((flag, run),) = calls
    assert flag is True and hasattr(run, "_torchdynamo_orig_callable")  # the stacked forward went to torch.compile
    np.testing.assert_allclose(compiled.values, reference.values, rtol=1e-6, atol=0)
    assert "forward" not in model.__dict__


def test_points_are_split_into_chunks_of_nearly_equal_size(objective):
    model = build_gpt2(len(train_tokenizer()))
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=4)
    sizes = []
    evaluate = StackedPoints.evaluate

    def recording(self, objective, coords):
        sizes.append(len(coords))
        return evaluate(self, objective, coords)

    with mock.patch.object(StackedPoints, "evaluate", recording):
        probe.plane(steps=(3, 3), seed=0)  # 9 points at up to 4 per forward: 3 + 3 + 3, not 4 + 4 + 1
    assert sizes == [3, 3, 3]


def _forward_that_reads_back(model):
    original = model.forward

    @functools.wraps(original)  # keeps the signature (the objective reads it for `position_ids`)
    def forward(*args, **kwargs):  # data-dependent host code: cannot run under vmap
        out = original(*args, **kwargs)
        if out.logits.isnan().any().item():
            raise FloatingPointError
        return out

    model.forward = forward


def test_auto_falls_back_to_one_point_when_stacking_fails(objective, monkeypatch, caplog):
    import hf_landscape.engine as engine

    monkeypatch.setattr(engine.POLICY, "points_per_forward", lambda *args, **kwargs: 4)  # as "auto" picks on a GPU
    reference = LandscapeProbe(build_gpt2(len(train_tokenizer())), objective, progress=False).plane(
        steps=(3, 3), seed=0
    )
    model = build_gpt2(len(train_tokenizer()))
    _forward_that_reads_back(model)
    with caplog.at_level("WARNING", logger="hf_landscape.engine"):
        plane = LandscapeProbe(model, objective, progress=False).plane(steps=(3, 3), seed=0)
    np.testing.assert_array_equal(plane.values, reference.values)
    assert "several points per forward failed" in caplog.text


def test_explicit_points_per_forward_does_not_fall_back(objective):
    model = build_gpt2(len(train_tokenizer()))
    _forward_that_reads_back(model)
    with pytest.raises(RuntimeError, match=r"\.item\(\)"):
        LandscapeProbe(model, objective, progress=False, points_per_forward=4).plane(steps=(3, 3))


def test_an_objective_without_stacked_points_takes_one_point_per_forward():
    from testing_utils import build_bert_classifier

    from hf_landscape import GlueObjective
    from hf_landscape.engine import points_per_forward

    model = build_bert_classifier(30)
    glue = GlueObjective("sst2", data={"input_ids": [[2, 5, 3], [2, 7, 8, 3]], "label": [1, 0]})
    params = dict(model.named_parameters())
    assert points_per_forward(model, params, glue, 1, 10) == 1
    with pytest.raises(ConfigError, match="points_per_forward=1"):
        points_per_forward(model, params, glue, 2, 10)
    assert points_per_forward(model, params, glue, "auto", 10) == 1


def test_requested_points_per_forward_is_at_most_the_grid(objective):
    from hf_landscape.engine import points_per_forward

    model = build_gpt2(len(train_tokenizer()))
    params = dict(model.named_parameters())
    assert points_per_forward(model, params, objective, 8, 5) == 5
    assert points_per_forward(model, params, objective, 3, 5) == 3


def test_a_complete_saved_grid_is_returned_without_a_forward(objective, tmp_path, monkeypatch):
    """Stopped after its last point was saved: run again, every point comes from the checkpoint."""
    from hf_landscape.engine.checkpoint import META_NAME, GridCheckpoint

    model = build_gpt2(len(train_tokenizer()))
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=3)
    reference = probe.line(steps=5, seed=1)
    monkeypatch.setattr(GridCheckpoint, "clear", lambda self: None)  # stopped before the files were removed
    probe.line(steps=5, seed=1, checkpoint_dir=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    assert (tmp_path / META_NAME).is_file()
    monkeypatch.setattr(objective, "evaluate_points", mock.Mock(side_effect=AssertionError("a forward ran")))
    np.testing.assert_array_equal(probe.line(steps=5, seed=1, checkpoint_dir=tmp_path).values, reference.values)


@pytest.mark.parametrize(("compile_", "requested", "expected"), [(True, 3, 3), (True, "auto", 1), (False, 2, 2)])
def test_points_per_forward_under_compile(objective, compile_, requested, expected):
    """`compile=True` with a number of points compiles the stacked forward for them; with "auto" it takes one."""
    model = build_gpt2(len(train_tokenizer()))
    probe = LandscapeProbe(model, objective, progress=False, points_per_forward=requested, compile=compile_)
    params = dict(model.named_parameters())
    assert probe.runner._points_per_forward(params, 9, "plane") == expected


@pytest.mark.parametrize(("spare", "kept"), [(0, True), (-1, False)])
def test_a_plane_keeps_its_row_base_only_for_weights_within_the_row_cache(monkeypatch, spare, kept):
    from hf_landscape import engine
    from hf_landscape.engine import editing

    model = torch.nn.Linear(4, 3)  # 15 float32 numbers: 60 bytes
    params = dict(model.named_parameters())
    monkeypatch.setattr(engine.POLICY, "row_cache_max_bytes", 60 + spare)
    directions = [[torch.ones_like(p) for p in params.values()] for _ in range(2)]
    with editing(model, params) as editor:
        editor.set_linear((0.5, 0.25), directions)
        assert (editor._row is not None) == kept
        expected = [o + 0.25 + 0.5 for o in editor.originals]
        assert all(torch.equal(p, e) for p, e in zip(editor.params, expected))


def stacked_inits(monkeypatch) -> list[dict]:
    """Record the keyword arguments of every `StackedPoints` the engine builds."""
    made = []
    original = StackedPoints.__init__

    def spy(self, *args, **kwargs):
        made.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(StackedPoints, "__init__", spy)
    return made


def test_two_points_per_forward_are_stacked_under_the_grids_name(objective, monkeypatch, capsys):
    made = stacked_inits(monkeypatch)
    probe = LandscapeProbe(build_gpt2(len(train_tokenizer())), objective, points_per_forward=2)
    probe.line(steps=3, seed=0)
    assert made == [{"compile": False}]
    assert re.search(r"^\s*line: ", capsys.readouterr().err, flags=re.MULTILINE)


def test_compile_hands_the_stacked_forward_to_torch_compile(objective, monkeypatch):
    made = stacked_inits(monkeypatch)
    monkeypatch.setattr(StackedPoints, "evaluate", mock.Mock(side_effect=KeyboardInterrupt))  # stop before compiling
    probe = LandscapeProbe(
        build_gpt2(len(train_tokenizer())), objective, progress=False, points_per_forward=2, compile=True
    )
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=3, seed=0)
    assert made == [{"compile": True}]


def compiled_stacked_probe(objective, monkeypatch, **kwargs) -> LandscapeProbe:
    """compile=True with two points per forward, `torch.compile` standing in as the function itself."""
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    model = build_gpt2(len(train_tokenizer()))
    return LandscapeProbe(model, objective, points_per_forward=2, compile=True, **kwargs)


def test_a_compiled_stacked_grid_is_checkpointed(objective, monkeypatch, tmp_path):
    from hf_landscape.engine.checkpoint import META_NAME

    probe = compiled_stacked_probe(objective, monkeypatch, progress=False)
    assert probe.runner.config.compiles_stacked
    line = probe.line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert json.loads((tmp_path / META_NAME).read_text())["key"]["kind"] == "line"
    assert len(line.values) == 3


def test_a_compiled_stacked_grid_shows_its_bar_under_the_grids_name(objective, monkeypatch, capsys):
    compiled_stacked_probe(objective, monkeypatch).line(steps=3, seed=0)
    assert re.search(r"^\s*line: ", capsys.readouterr().err, flags=re.MULTILINE)


def test_the_stacked_forward_is_compiled_with_the_policys_mode_for_fixed_shapes(monkeypatch):
    from hf_landscape import engine

    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)  # records, compiles nothing
    monkeypatch.setattr(engine.POLICY, "stacked_compile_mode", "max-autotune-no-cudagraphs")
    model = torch.nn.Linear(2, 2)
    params = dict(model.named_parameters())
    StackedPoints(model, params, [[torch.zeros_like(p) for p in params.values()]], compile=True)
    StackedPoints(model, params, [[torch.zeros_like(p) for p in params.values()]], compile=False)
    assert calls == [{"mode": "max-autotune-no-cudagraphs", "dynamic": False}]  # one graph per batch shape

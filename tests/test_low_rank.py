"""LoRA-subspace (low-rank) directions and adapter-space directions for PeftModels."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_gpt2, build_llama, train_tokenizer

from hf_landscape import (
    CausalLMObjective,
    ConfigError,
    DirectionError,
    LandscapeProbe,
    LowRankDirection,
    LowRankDirectionConfig,
    low_rank_directions,
)
from hf_landscape.engine import LowRankEditor, low_rank_editing

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


@pytest.fixture(scope="module")
def objective(tok):
    return CausalLMObjective(TEXTS, tok, max_length=24, batch_size=5)


def build(kind, tok, **kw):
    return build_llama(len(tok), **kw) if kind == "llama" else build_gpt2(len(tok), **kw)


def targets(kind):
    return LLAMA_TARGETS if kind == "llama" else GPT2_TARGETS


@pytest.fixture(params=["fused", "merged", "hook"])
def path(request, monkeypatch):
    """Run the test with the editor's fused path (the default), the merged-weight path and forward hooks on
    every module."""
    monkeypatch.setattr(LowRankEditor, "fused_linear", request.param != "hook")
    monkeypatch.setattr(LowRankEditor, "merged_linear", request.param == "merged")
    return request.param


def build_biased(kind, tok):
    """A tiny model whose projections have biases, filled with random values (they are built as zeros)."""
    model = build_llama(len(tok), attention_bias=True, mlp_bias=True) if kind == "llama" else build("gpt2", tok)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") and p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def build_kind(kind, tok):
    return build_biased(kind.removesuffix("_bias"), tok) if kind.endswith("_bias") else build(kind, tok)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "llama_bias", "gpt2_bias"])
def test_value_equals_loss_of_explicitly_merged_copy(kind, tok, objective, path):
    model = build_kind(kind, tok)
    if kind == "llama_bias":
        assert float(model.model.layers[0].mlp.up_proj.bias.abs().sum()) > 0
    kind = kind.removesuffix("_bias")
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(
        steps=(3, 3), span=((-1, 1), (-0.5, 0.5)), directions="lora", rank=4, target_modules=targets(kind)
    )
    merged = copy.deepcopy(model)
    params = dict(merged.named_parameters())
    with torch.no_grad():
        for name, (b1, a1) in plane.directions[0].factors.items():
            b2, a2 = plane.directions[1].factors[name]
            params[name] += 1.0 * (b1 @ a1) + (-0.5) * (b2 @ a2)  # (α, β) = (x[2], y[0])
    expected = LandscapeProbe(merged, objective).loss()
    assert plane.values[0, 2] == pytest.approx(expected, rel=1e-6, abs=0)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_centre_equals_loss_and_weights_and_hooks_untouched(kind, tok, objective, path):
    model = build(kind, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(steps=(3, 3), directions="lora", rank=2, target_modules=targets(kind))
    assert plane.centre == probe.loss()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_factor_shapes_follow_the_weight_layout(tok):
    llama, gpt2 = build("llama", tok), build("gpt2", tok)
    (d,) = low_rank_directions(llama, 0, config=LowRankDirectionConfig(rank=3, target_modules=["q_proj"]), axes=1)
    b, a = d.factors["model.layers.0.self_attn.q_proj.weight"]
    assert (tuple(b.shape), tuple(a.shape)) == ((32, 3), (3, 32))
    (g,) = low_rank_directions(gpt2, 0, config=LowRankDirectionConfig(rank=3, target_modules=["c_fc"]), axes=1)
    b, a = g.factors["transformer.h.0.mlp.c_fc.weight"]  # Conv1D weight is (in=32, out=128)
    assert (tuple(b.shape), tuple(a.shape)) == ((32, 3), (3, 128))


def test_filter_normalization_rows_for_linear(tok):
    model = build("llama", tok)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=4), axes=1)
    for name in d.factors:
        w = dict(model.named_parameters())[name].detach()
        torch.testing.assert_close(d.materialize(name).norm(dim=1), w.norm(dim=1), rtol=1e-5, atol=1e-7)


def test_filter_normalization_columns_for_gpt2_conv1d(tok):
    model = build("gpt2", tok)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=4, target_modules=GPT2_TARGETS), axes=1)
    for name in d.factors:
        w = dict(model.named_parameters())[name].detach()
        torch.testing.assert_close(d.materialize(name).norm(dim=0), w.norm(dim=0), rtol=1e-5, atol=1e-7)


def test_layer_and_model_normalization(tok):
    model = build("llama", tok)
    params = dict(model.named_parameters())
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=4, normalization="layer"), axes=1)
    for name in d.factors:
        assert float(d.materialize(name).norm()) == pytest.approx(float(params[name].norm()), rel=1e-5)
    (m,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=4, normalization="model"), axes=1)
    d_norm = sum(float(m.materialize(n).norm()) ** 2 for n in m.factors) ** 0.5
    w_norm = sum(float(params[n].norm()) ** 2 for n in m.factors) ** 0.5
    assert d_norm == pytest.approx(w_norm, rel=1e-5)


def test_default_targets_skip_lm_head_and_memory_is_low_rank(tok):
    model = build("llama", tok)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=2), axes=1)
    assert "lm_head.weight" not in d.factors
    assert len(d.factors) == 2 * 7  # seven projections per layer, two layers
    expected = sum(2 * (w.shape[0] + w.shape[1]) for n, w in model.named_parameters() if n in d.factors)
    assert d.num_elements() == expected


def test_same_seed_same_factors_different_seed_different(tok):
    model = build("llama", tok)
    cfg = LowRankDirectionConfig(rank=2, target_modules=["v_proj"])
    a, b, c = (low_rank_directions(model, s, config=cfg, axes=1)[0] for s in (5, 5, 6))
    name = "model.layers.1.self_attn.v_proj.weight"
    assert torch.equal(a.factors[name][0], b.factors[name][0]) and torch.equal(a.factors[name][1], b.factors[name][1])
    assert not torch.equal(a.factors[name][0], c.factors[name][0])


@pytest.mark.parametrize("normalization", ["none", "filter"])
def test_equal_shaped_weights_get_their_own_factors(tok, normalization):
    """Llama's q_proj and o_proj are both 32 × 32: every weight's factors are drawn from its own name, on each axis."""
    model = build("llama", tok)
    config = LowRankDirectionConfig(rank=4, target_modules=["q_proj", "o_proj"], normalization=normalization)
    d1, d2 = low_rank_directions(model, 0, config=config)
    names = list(d1.factors)
    assert len(names) == 4 and len({tuple(model.get_parameter(n).shape) for n in names}) == 1
    factors = [d.factors[n] for d in (d1, d2) for n in names]  # 8 pairs (B, A) of equal shapes
    for i, (b, a) in enumerate(factors):
        for b_other, a_other in factors[i + 1 :]:
            assert not torch.equal(a, a_other)  # A is never rescaled by filter normalization of Linear rows
            assert not torch.equal(b, b_other)


def test_bf16_model_stays_bf16_and_unwritten(tok):
    model = build("llama", tok).to(torch.bfloat16)
    before = {n: (p.data_ptr(), p.clone()) for n, p in model.named_parameters()}
    objective = CausalLMObjective(TEXTS[:4], tok, max_length=16)
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(steps=(3, 3), directions="lora", rank=2)
    assert plane.directions[0].factors["model.layers.0.mlp.up_proj.weight"][0].dtype == torch.bfloat16
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_hooks_removed_and_weights_kept_after_exception(kind, tok, objective, monkeypatch, path):
    model = build(kind, tok)
    probe = LandscapeProbe(model, objective, progress=False)
    calls = {"n": 0}
    original = objective.evaluate

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "evaluate", failing)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        probe.plane(steps=(3, 3), directions="lora", rank=2, target_modules=targets(kind))
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # restored to the mode it was built in


def lora_dirs(model, kind, rank=2):
    cfg = LowRankDirectionConfig(rank=rank, target_modules=targets(kind))
    return low_rank_directions(model, 0, config=cfg, axes=2)


IDS = torch.tensor([[5, 9, 2, 7, 11, 3, 8, 1], [4, 4, 6, 10, 12, 2, 9, 5]])


def forward_logits(model):
    with torch.inference_mode():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("kind", ["llama", "gpt2", "llama_bias", "gpt2_bias"])
def test_fused_path_replaces_forward_and_gives_the_module_back(kind, tok):
    model = build_kind(kind, tok)
    kind = kind.removesuffix("_bias")
    model.eval()
    plain = forward_logits(model)
    dirs = lora_dirs(model, kind)
    with low_rank_editing(model, dirs) as editor:
        n = len(editor.slots)
        assert len(editor.patched) == n and not editor.handles
        assert sum("forward" in m.__dict__ for m in model.modules()) == n
        assert sum(len(m._forward_hooks) for m in model.modules()) == 0
        assert torch.equal(forward_logits(model), plain)  # no point set yet: the module's own forward
        editor.set_linear((0.7, -0.3))
        fused = forward_logits(model)
        fused_again = forward_logits(model)  # second forward: q/k/v and gate/up share x·L
        editor.set_linear((0.0, 0.0))
        assert torch.equal(forward_logits(model), plain)  # the centre, bit for bit
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert torch.equal(forward_logits(model), plain)
    with low_rank_editing(model, dirs) as editor, pytest.MonkeyPatch.context() as mp:
        mp.setattr(LowRankEditor, "fused_linear", False)
        assert not editor.handles  # the flag is read when the editor is made
    LowRankEditor.fused_linear = False
    try:
        with low_rank_editing(model, dirs) as editor:
            assert len(editor.handles) == n and not editor.patched
            editor.set_linear((0.7, -0.3))
            hooked = forward_logits(model)
    finally:
        LowRankEditor.fused_linear = True
    assert not torch.equal(fused, plain)
    torch.testing.assert_close(fused, hooked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_again, fused, rtol=1e-6, atol=1e-6)


def test_fused_path_bf16_matches_hook_path_and_writes_no_weight(tok):
    model = build("llama", tok).to(torch.bfloat16).eval()
    before = {n: (p.data_ptr(), p.clone()) for n, p in model.named_parameters()}
    dirs = lora_dirs(model, "llama")
    out = {}
    for fused in (True, False):
        LowRankEditor.fused_linear = fused
        try:
            with low_rank_editing(model, dirs) as editor:
                editor.set_linear((0.7, -0.3))
                forward_logits(model)
                out[fused] = forward_logits(model)
                assert len(editor.patched if fused else editor.handles) == 14
        finally:
            LowRankEditor.fused_linear = True
    assert out[True].dtype == torch.bfloat16
    torch.testing.assert_close(out[True].float(), out[False].float(), rtol=2e-2, atol=2e-2)
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])


def test_module_with_its_own_forward_keeps_it_and_gets_a_hook(tok, objective):
    model = build("llama", tok)
    q = model.model.layers[0].self_attn.q_proj
    calls = []

    def own_forward(x):
        calls.append(1)
        return torch.nn.Linear.forward(q, x)

    q.forward = own_forward
    probe = LandscapeProbe(model, objective, progress=False)
    dirs = lora_dirs(model, "llama")
    with low_rank_editing(model, dirs) as editor:
        assert q.__dict__["forward"] is own_forward and len(q._forward_hooks) == 1
        assert len(editor.handles) == 1 and len(editor.patched) == 13
    assert q.__dict__["forward"] is own_forward and not q._forward_hooks
    calls.clear()
    plane = probe.plane(steps=(3, 3), span=((-1, 1), (-0.5, 0.5)), directions=dirs)
    assert calls and q.__dict__["forward"] is own_forward
    merged = copy.deepcopy(model)
    del merged.model.layers[0].self_attn.q_proj.forward  # the copy's wrapper would call the original q
    params = dict(merged.named_parameters())
    with torch.no_grad():
        for name, (b1, a1) in dirs[0].factors.items():
            b2, a2 = dirs[1].factors[name]
            params[name] += 1.0 * (b1 @ a1) + (-0.5) * (b2 @ a2)
    assert plane.values[0, 2] == pytest.approx(LandscapeProbe(merged, objective).loss(), rel=1e-6, abs=0)
    assert plane.centre == probe.loss()


def test_accelerate_hooked_module_subclass_and_compiled_model_keep_the_hook_path(tok):
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    class MyLinear(torch.nn.Linear):
        pass

    model = build("llama", tok).eval()
    attn = model.model.layers[0].self_attn
    add_hook_to_module(attn.q_proj, ModelHook())
    accelerate_forward = attn.q_proj.__dict__["forward"]
    old = attn.k_proj
    attn.k_proj = MyLinear(old.in_features, old.out_features, bias=False)
    attn.k_proj.load_state_dict(old.state_dict())
    dirs = lora_dirs(model, "llama")
    plain = forward_logits(model)
    with low_rank_editing(model, dirs) as editor:
        assert len(editor.handles) == 2 and len(editor.patched) == 12
        assert attn.q_proj.__dict__["forward"] is accelerate_forward and "forward" not in attn.k_proj.__dict__
        editor.set_linear((0.7, -0.3))
        mixed = forward_logits(model)
    assert attn.q_proj.__dict__["forward"] is accelerate_forward and not attn.q_proj._forward_hooks
    assert "forward" not in attn.k_proj.__dict__ and not attn.k_proj._forward_hooks
    LowRankEditor.fused_linear = False
    try:
        with low_rank_editing(model, dirs) as editor:
            editor.set_linear((0.7, -0.3))
            hooked = forward_logits(model)
    finally:
        LowRankEditor.fused_linear = True
    torch.testing.assert_close(mixed, hooked, rtol=1e-5, atol=1e-5)
    assert torch.equal(forward_logits(model), plain)
    remove_hook_from_module(attn.q_proj)
    own = model.forward
    model.forward = own  # as `compiled_forward` does: an instance forward on the root
    with low_rank_editing(model, dirs) as editor:
        assert len(editor.handles) == len(editor.slots) and not editor.patched
    assert model.__dict__["forward"] is own


def test_fused_path_falls_back_under_autocast_and_for_other_dtypes(tok):
    model = build("llama", tok).eval()
    dirs = lora_dirs(model, "llama")
    with low_rank_editing(model, dirs) as editor:
        editor.set_linear((0.7, -0.3))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = forward_logits(model)
    LowRankEditor.fused_linear = False
    try:
        with low_rank_editing(model, dirs) as editor:
            editor.set_linear((0.7, -0.3))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hooked = forward_logits(model)
    finally:
        LowRankEditor.fused_linear = True
    assert torch.equal(fused, hooked)
    q = model.model.layers[0].self_attn.q_proj
    with low_rank_editing(model, dirs) as editor:
        editor.set_linear((0.7, -0.3))
        x = torch.randn(3, 32, dtype=torch.float64)
        expected = (
            x
            @ (
                q.weight.double()
                + 0.7 * dirs[0].materialize("model.layers.0.self_attn.q_proj.weight").double()
                - 0.3 * dirs[1].materialize("model.layers.0.self_attn.q_proj.weight").double()
            ).T
        )
        with torch.no_grad():
            got = q(x.float()).double()
            got_kw = q(input=x.float()).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_kw, expected, rtol=1e-5, atol=1e-5)


def test_plane_directions_expose_factors(tok, objective):
    probe = LandscapeProbe(build("llama", tok), objective, progress=False)
    plane = probe.plane(steps=(2, 2), directions="lora", rank=8, target_modules=LLAMA_TARGETS)
    b, a = plane.directions[0].factors["model.layers.0.self_attn.q_proj.weight"]
    assert isinstance(plane.directions[0], LowRankDirection) and b.shape[1] == a.shape[0] == 8
    assert plane.metadata["directions"][0]["rank"] == 8 and plane.metadata["directions"][1]["axis"] == 1


def test_unmatched_target_modules_and_bad_rank_are_errors(tok, objective):
    probe = LandscapeProbe(build("llama", tok), objective, progress=False)
    with pytest.raises(DirectionError, match="matches no nn.Linear"):
        probe.plane(steps=2, directions="lora", target_modules=["nope"])
    with pytest.raises(ConfigError, match="`rank` must be an integer >= 1, got 0"):
        probe.plane(steps=2, directions="lora", rank=0)
    with pytest.raises(ConfigError, match="Unknown direction option"):
        probe.plane(steps=2, directions="lora", orthogonalize=True)


def peft_model(tok):
    from peft import LoraConfig, get_peft_model

    model = build("llama", tok)
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft = get_peft_model(model, cfg, adapter_name="one")
    peft.add_adapter("two", LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    return peft


def test_adapter_directions_perturb_only_the_active_adapter(tok, objective):
    model = peft_model(tok)
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(directions="adapter", steps=(3, 3), seed=0)
    names = list(plane.directions[0].keys())
    assert len(names) == 8 and all(".lora_A.one." in n or ".lora_B.one." in n for n in names)
    assert plane.centre == probe.loss()
    w = dict(model.named_parameters())[names[0]].detach()
    torch.testing.assert_close(plane.directions[0][names[0]].norm(dim=1), w.norm(dim=1))


def test_adapter_directions_choose_adapter_by_name(tok, objective):
    model = peft_model(tok)
    model.set_adapter("two")
    plane = LandscapeProbe(model, objective, progress=False).plane(directions="adapter", adapter_name="two", steps=2)
    assert all(".two." in n for n in plane.directions[0].keys()) and len(plane.directions[0]) == 4


def test_adapter_directions_refuse_inactive_unknown_or_plain_models(tok, objective):
    probe = LandscapeProbe(peft_model(tok), objective, progress=False)
    with pytest.raises(ConfigError, match="is not active"):
        probe.plane(directions="adapter", adapter_name="two", steps=2)
    with pytest.raises(ConfigError, match="is not an adapter of this model"):
        probe.plane(directions="adapter", adapter_name="three", steps=2)
    with pytest.raises(ConfigError, match="needs a peft `PeftModel`"):
        LandscapeProbe(build("llama", tok), objective, progress=False).plane(directions="adapter", steps=2)


def test_rank_above_the_smallest_side_is_refused(tok, objective):
    probe = LandscapeProbe(build("llama", tok), objective, progress=False)
    with pytest.raises(ConfigError, match=r"`rank` 33 exceeds min\(rows, cols\).*use rank <= 32"):
        probe.plane(steps=2, directions="lora", rank=33, target_modules=["q_proj"])


def test_unmatched_target_modules_name_the_existing_ones(tok, objective):
    probe = LandscapeProbe(build("gpt2", tok), objective, progress=False)
    with pytest.raises(DirectionError, match=r"named \['c_attn', 'c_fc', 'c_proj', 'lm_head'\]"):
        probe.plane(steps=2, directions="lora", target_modules=["q_proj"])


def test_quantized_weights_are_refused_with_a_clear_message(tok, objective):
    class Packed(torch.nn.Parameter):
        """Stands in for a quantized parameter class (bitsandbytes' Int8Params / Params4bit)."""

    model = build("llama", tok)
    q = model.model.layers[0].self_attn.q_proj
    q.weight = Packed(q.weight.data)
    probe = LandscapeProbe(model, objective, progress=False)
    with pytest.raises(DirectionError, match="quantized or packed layers"):
        probe.plane(steps=2, directions="lora", target_modules=["q_proj"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_set_linear_gives_the_bits_of_scaled_and_concatenated_factors(tok, dtype):
    model = build("llama", tok).to(dtype).eval()
    dirs = lora_dirs(model, "llama")
    with low_rank_editing(model, dirs) as editor:
        for coords in [(0.7, -0.3), (1 / 3, 0.0), (-2.5, 1e-3)]:
            if coords[0] == -2.5:
                with torch.inference_mode():  # as the grid loop does; the buffers stay normal tensors
                    editor.set_linear(coords)
            else:
                editor.set_linear(coords)
            for slot in editor.slots:
                expected = torch.cat([c * r for c, r in zip(coords, slot["rights"])], dim=0)
                assert slot["right"].dtype == dtype and torch.equal(slot["right"], expected)
        editor.set_linear((0.0, 0.0))
        assert all(slot["right"] is None for slot in editor.slots)
        with pytest.raises(ValueError, match="2 coordinate"):
            editor.set_linear((1.0,))


@pytest.mark.parametrize(("kind", "first", "second"), [("llama", "q_proj", "down_proj"), ("gpt2", "c_attn", "c_fc")])
def test_axes_with_different_modules_and_ranks_equal_the_merged_copy(tok, objective, path, kind, first, second):
    model = build(kind, tok)
    (d0,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=3, target_modules=[first]), axes=1)
    (d1,) = low_rank_directions(model, 1, config=LowRankDirectionConfig(rank=2, target_modules=[first, second]), axes=1)
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(steps=(3, 3), span=((-1, 1), (-0.5, 0.5)), directions=[d0, d1])
    merged = copy.deepcopy(model)
    params = dict(merged.named_parameters())
    with torch.no_grad():
        for name in set(d0.factors) | set(d1.factors):
            if name in d0.factors:
                params[name] += 1.0 * d0.materialize(name)
            if name in d1.factors:
                params[name] += -0.5 * d1.materialize(name)
    assert plane.values[0, 2] == pytest.approx(LandscapeProbe(merged, objective).loss(), rel=1e-6, abs=0)
    assert plane.centre == probe.loss()


def test_merged_path_uses_one_scratch_the_size_of_the_largest_weight(tok, monkeypatch):
    monkeypatch.setattr(LowRankEditor, "merged_linear", True)
    model = build("llama", tok)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=2, target_modules=LLAMA_TARGETS), axes=1)
    largest = max(model.get_submodule(n.rpartition(".")[0]).weight.numel() for n in d.factors)
    with low_rank_editing(model, [d]) as editor:
        editor.set_linear((0.5,))
        q = model.model.layers[0].self_attn.q_proj
        b, a = d.factors["model.layers.0.self_attn.q_proj.weight"]
        with torch.inference_mode():
            few = torch.randn(2, model.config.hidden_size)  # few tokens: the fused product moves fewer bytes
            torch.testing.assert_close(q(few), torch.nn.functional.linear(few, q.weight + 0.5 * (b @ a)))
            assert not editor._scratch  # no merge yet: no scratch
            many = torch.randn(128, model.config.hidden_size)  # many tokens: the merged weight
            expected = torch.nn.functional.linear(many, q.weight + 0.5 * (b @ a))
            torch.testing.assert_close(q(many), expected, rtol=1e-6, atol=1e-6)
            assert [t.numel() for t in editor._scratch.values()] == [largest]
            (scratch,) = editor._scratch.values()
            k = model.model.layers[0].self_attn.k_proj
            b, a = d.factors["model.layers.0.self_attn.k_proj.weight"]
            expected = torch.nn.functional.linear(many, k.weight + 0.5 * (b @ a))
            torch.testing.assert_close(k(many), expected, rtol=1e-6, atol=1e-6)
            (again,) = editor._scratch.values()
            assert again is scratch  # the next merge reuses it: no second buffer
    assert not editor._scratch and "forward" not in q.__dict__


@pytest.mark.parametrize(("tokens", "merges"), [(64, False), (65, True)])
def test_merging_pays_only_beyond_the_measured_byte_ratio(tokens, merges):
    # out = in = 32, rank-2 factors per axis and 1 axis: fused moves tokens·(2·32 + 32) = 96·tokens elements,
    # merged 2·32·32 = 2048; MERGE_MIN_RATIO = 3 puts the boundary at 64 tokens.
    from hf_landscape.engine import MERGE_MIN_RATIO

    assert MERGE_MIN_RATIO == 3.0
    slot = {"left": torch.zeros(32, 2), "right": torch.zeros(2, 32)}
    x = torch.zeros(tokens, 32)
    assert LowRankEditor._merging_pays(x, torch.zeros(32, 32), slot) is merges


def test_merged_is_the_default_path():
    assert LowRankEditor.merged_linear is True and LowRankEditor.fused_linear is True


def test_merged_path_falls_back_when_autograd_records(tok, monkeypatch):
    monkeypatch.setattr(LowRankEditor, "merged_linear", True)
    model = build("llama", tok)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=2, target_modules=["q_proj"]), axes=1)
    q = model.model.layers[0].self_attn.q_proj
    x = torch.randn(64, model.config.hidden_size, requires_grad=True)
    with low_rank_editing(model, [d]) as editor:
        editor.set_linear((0.5,))
        y = q(x)
        y.sum().backward()  # a reused scratch would have been saved for backward; the fused path is used instead
    b, a = d.factors["model.layers.0.self_attn.q_proj.weight"]
    torch.testing.assert_close(x.grad, (q.weight + 0.5 * (b @ a)).sum(dim=0).expand(64, -1), rtol=1e-5, atol=1e-5)


def test_merged_path_bf16_matches_hook_path_and_writes_no_weight(tok, monkeypatch):
    model = build("llama", tok).to(torch.bfloat16).eval()
    before = {n: (p.data_ptr(), p.clone()) for n, p in model.named_parameters()}
    dirs = lora_dirs(model, "llama")
    out = {}
    for merged in (True, False):
        monkeypatch.setattr(LowRankEditor, "merged_linear", merged)
        monkeypatch.setattr(LowRankEditor, "fused_linear", merged)
        with low_rank_editing(model, dirs) as editor:
            editor.set_linear((0.7, -0.3))
            with torch.inference_mode():  # 4 x 40 tokens: enough for every module to merge
                out[merged] = model(input_ids=torch.arange(160).view(4, 40) % 50 + 1).logits
            assert bool(editor._scratch) == merged
    torch.testing.assert_close(out[True].float(), out[False].float(), rtol=2e-2, atol=2e-2)
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])


# --- the draw and its normalization on any module ---------------------------------------------------------------


def test_unnormalized_factors_give_unit_variance_entries(tok):
    """normalization="none": B ~ N(0, 1) and A ~ N(0, 1/r), so that every entry of D = B·A has variance 1."""
    model = build("llama", tok)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=4, normalization="none"), axes=1)
    b = torch.cat([b.reshape(-1) for b, _ in d.factors.values()])
    a = torch.cat([a.reshape(-1) for _, a in d.factors.values()])
    entries = torch.cat([d.materialize(n).reshape(-1) for n in d.factors])
    assert float(b.std()) == pytest.approx(1.0, abs=0.05)
    assert float(a.std()) == pytest.approx(0.5, abs=0.025)
    assert float(entries.var()) == pytest.approx(1.0, abs=0.1)


def test_layer_normalization_of_factors_whose_product_is_small():
    """A 2 × 2 weight with rank 1: ‖b·a‖ is often below 1, and must still be rescaled to ‖W‖."""
    model = torch.nn.Linear(2, 2)
    config = LowRankDirectionConfig(rank=1, normalization="layer")
    small = 0
    for seed in range(10):
        raw = low_rank_directions(model, seed, config=LowRankDirectionConfig(rank=1, normalization="none"), axes=1)
        small += float(raw[0].materialize("weight").norm()) < 1
        (d,) = low_rank_directions(model, seed, config=config, axes=1)
        assert float(d.materialize("weight").norm()) == pytest.approx(float(model.weight.detach().norm()), rel=1e-5)
    assert small > 0


class HeadFirst(torch.nn.Module):
    """A model whose output embedding is registered before its other Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 6)
        self.body = torch.nn.Linear(4, 4)
        self.tail = torch.nn.Linear(4, 4)

    def get_output_embeddings(self):
        return self.head


def test_default_targets_are_every_linear_but_the_output_embedding_wherever_it_is():
    (d,) = low_rank_directions(HeadFirst(), 0, config=LowRankDirectionConfig(rank=2), axes=1)
    assert list(d.factors) == ["body.weight", "tail.weight"]


def test_any_module_with_linear_layers_gets_directions():
    plain = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))  # no output embedding
    (d,) = low_rank_directions(plain, 0, config=LowRankDirectionConfig(rank=1), axes=1)
    assert list(d.factors) == ["0.weight", "2.weight"]
    (one,) = low_rank_directions(torch.nn.Linear(3, 5), 0, config=LowRankDirectionConfig(rank=2), axes=1)
    assert list(one.factors) == ["weight"] and one.materialize("weight").shape == (5, 3)


def test_only_linear_and_conv1d_modules_are_targets():
    class Gate(torch.nn.Module):
        nf = 4  # an attribute of the same name as Conv1D's does not make a module linear

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4, 4))

    model = torch.nn.Module()
    model.gate = Gate()
    model.proj = torch.nn.Linear(4, 4)
    (d,) = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=1), axes=1)
    assert list(d.factors) == ["proj.weight"]


def test_integer_weights_are_refused(tok):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model[0].weight = torch.nn.Parameter(torch.ones(4, 4, dtype=torch.int8), requires_grad=False)
    with pytest.raises(DirectionError, match=r"quantized weight\(s\).*0\.weight"):
        low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=1))


def test_rank_may_equal_the_smallest_side(tok):
    model = build("llama", tok)
    config = LowRankDirectionConfig(rank=16, target_modules=["k_proj"])  # k_proj is 16 × 32
    (d,) = low_rank_directions(model, 0, config=config, axes=1)
    assert d.factors["model.layers.0.self_attn.k_proj.weight"][0].shape == (16, 16)


def test_directions_record_kind_seed_axis_and_config(tok):
    config = LowRankDirectionConfig(rank=2, target_modules=["v_proj"], normalization="layer")
    d1, d2 = low_rank_directions(build("llama", tok), 7, config=config)
    for axis, d in enumerate((d1, d2)):
        assert d.config == {
            "kind": "low_rank",
            "seed": 7,
            "axis": axis,
            "rank": 2,
            "target_modules": ["v_proj"],
            "normalization": "layer",
        }


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": True}, "rank"),
        ({"rank": "2"}, "rank"),
        ({"normalization": "unit"}, "normalization"),
        ({"target_modules": [""]}, "target_modules"),
        ({"target_modules": [3]}, "target_modules"),
    ],
)
def test_bad_low_rank_options_are_config_errors(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        LowRankDirectionConfig(**kwargs)


def test_rank_one_and_a_single_module_name_are_accepted():
    config = LowRankDirectionConfig(rank=1, target_modules="q_proj")
    assert config.rank == 1 and config.target_modules == ["q_proj"]


@pytest.mark.parametrize("seed", [True, 1.5, "0"])
def test_non_integer_seed_is_refused(seed):
    with pytest.raises(ConfigError, match="`seed`"):
        low_rank_directions(torch.nn.Linear(2, 2), seed)


# --- the editor's arithmetic, path by path (one module, float64, bit for bit) ----------------------------------


def one_module(kind: str, bias: bool, dtype=torch.float64):
    """A single Linear (out 6, in 8) or transformers Conv1D (in 8, out 6) with random weights."""
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(0)
    module = torch.nn.Linear(8, 6, bias=bias) if kind == "linear" else Conv1D(6, 8)
    if kind == "conv1d" and not bias:
        module.bias = None
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module.to(dtype).eval()


def one_direction(module, rank: int = 3, dtype=torch.float64) -> LowRankDirection:
    rows, cols = module.weight.shape
    g = torch.Generator().manual_seed(1)
    b, a = torch.randn(rows, rank, generator=g), torch.randn(rank, cols, generator=g)
    return LowRankDirection({"weight": (b.to(dtype), a.to(dtype))}, {"kind": "low_rank"})


def factors_lr(module, direction, c: float):
    """(L, c·R) as the editor applies them: (Aᵀ, c·Bᵀ) for Linear, (B, c·A) for Conv1D."""
    b, a = direction.factors["weight"]
    transposed = type(module).__name__ == "Conv1D"
    left, right = (b, a) if transposed else (a.T, b.T)
    return left.contiguous(), (c * right).contiguous(), transposed  # the editor keeps both contiguous


@pytest.fixture
def fused_only(monkeypatch):
    import hf_landscape.engine as engine

    monkeypatch.setattr(LowRankEditor, "fused_linear", True)
    monkeypatch.setattr(engine.POLICY, "merge_min_ratio", float("inf"))  # merging never pays


@pytest.fixture
def merged_always(monkeypatch):
    import hf_landscape.engine as engine

    monkeypatch.setattr(LowRankEditor, "fused_linear", True)
    monkeypatch.setattr(LowRankEditor, "merged_linear", True)
    monkeypatch.setattr(engine.POLICY, "merge_min_ratio", 0.0)  # merging always pays


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(8,), (5, 8), (2, 5, 8)])
def test_fused_path_writes_the_low_rank_term_then_adds_the_base_product(kind, bias, shape, fused_only):
    module = one_module(kind, bias)
    direction = one_direction(module)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    left, right, transposed = factors_lr(module, direction, 0.7)
    x2 = x.reshape(-1, 8)
    out = (x2 @ left) @ right if module.bias is None else torch.addmm(module.bias, x2 @ left, right)
    expected = out.addmm_(x2, module.weight if transposed else module.weight.t()).view(*shape[:-1], 6)
    with low_rank_editing(module, [direction]) as editor, torch.no_grad():
        editor.set_linear((0.7,))
        assert "forward" in module.__dict__
        assert torch.equal(module(x), expected)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("bias", [True, False])
def test_merged_path_multiplies_by_the_merged_weight(kind, bias, merged_always):
    module = one_module(kind, bias)
    direction = one_direction(module)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    left, right, transposed = factors_lr(module, direction, -0.4)
    w, b = module.weight, module.bias
    if transposed:  # Conv1D: W (in × out) + L·R
        merged = torch.addmm(w, left, right)
        x2 = x.reshape(-1, 8)
        expected = (torch.mm(x2, merged) if b is None else torch.addmm(b, x2, merged)).view(2, 5, 6)
    else:  # Linear: W (out × in) + (L·R)ᵀ
        expected = torch.nn.functional.linear(x, torch.addmm(w, right.t(), left.t()), b)
    with low_rank_editing(module, [direction]) as editor, torch.inference_mode():
        editor.set_linear((-0.4,))
        assert torch.equal(module(x), expected)
        assert editor._scratch  # the merged weight was written to the scratch


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_hook_path_and_keyword_calls_add_the_low_rank_term_in_place(kind, monkeypatch):
    module = one_module(kind, bias=True)
    direction = one_direction(module)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    left, right, _ = factors_lr(module, direction, 0.3)
    with torch.no_grad():
        expected = module(x).addmm_(x @ left, right)  # the module's own output, then + (x L) R
    for fused in (False, True):
        monkeypatch.setattr(LowRankEditor, "fused_linear", fused)
        with low_rank_editing(module, [direction]) as editor, torch.no_grad():
            editor.set_linear((0.3,))
            got = module(x) if not fused else module(**{"x" if kind == "conv1d" else "input": x})
            assert torch.equal(got, expected)


def test_factors_in_another_dtype_than_the_module_are_cast_both_ways(monkeypatch):
    """A bf16 module with float32 factors: x·L and (x L)·R in float32, the term rounded to bf16 and added."""
    for fused in (True, False):
        monkeypatch.setattr(LowRankEditor, "fused_linear", fused)
        module = one_module("linear", bias=True, dtype=torch.bfloat16)
        direction = one_direction(module, dtype=torch.float32)
        x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
        left, right, _ = factors_lr(module, direction, 0.7)
        with torch.no_grad():
            expected = module(x) + ((x.float().reshape(-1, 8) @ left) @ right).view(2, 5, 6).to(torch.bfloat16)
        with low_rank_editing(module, [direction]) as editor, torch.no_grad():
            editor.set_linear((0.7,))
            got = module(x)
        assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_merged_path_is_not_taken_while_autograd_records_through_the_input(merged_always):
    """Frozen weights, an input that needs its gradient: the scratch would be overwritten by the next module before
    backward reads it, so each module takes the fused path and the gradient is exact."""
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 8, bias=False)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g)).requires_grad_(False)
    factors = {
        f"{i}.weight": (torch.randn(8, 2, generator=g).double(), torch.randn(2, 8, generator=g).double())
        for i in (0, 1)
    }
    direction = LowRankDirection(factors, {"kind": "low_rank"})
    x = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    with low_rank_editing(model, [direction]) as editor:
        editor.set_linear((0.5,))
        model(x).sum().backward()
    w = [model[i].weight + 0.5 * factors[f"{i}.weight"][0] @ factors[f"{i}.weight"][1] for i in (0, 1)]
    expected = (torch.ones(4, 8, dtype=torch.float64) @ w[1]) @ w[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_merging_pays_counts_tokens_over_every_leading_dimension():
    slot = {"left": torch.zeros(32, 2), "right": torch.zeros(2, 32)}
    weight = torch.zeros(32, 32)
    assert LowRankEditor._merging_pays(torch.zeros(5, 13, 32), weight, slot)  # 65 tokens
    assert not LowRankEditor._merging_pays(torch.zeros(4, 16, 32), weight, slot)  # 64 tokens


def test_only_plain_linear_and_transformers_conv1d_are_fused():
    class Conv1D(torch.nn.Linear):  # the name alone does not make it transformers' Conv1D
        nf = 6

    class Frozen(torch.nn.Parameter):
        pass

    accelerate_hook = torch.nn.Linear(8, 6)
    accelerate_hook._hf_hook = object()
    accelerate_old = torch.nn.Linear(8, 6)
    accelerate_old._old_forward = accelerate_old.forward
    other_weight = torch.nn.Linear(8, 6)
    other_weight.weight = Frozen(other_weight.weight.data)
    other_bias = torch.nn.Linear(8, 6)
    other_bias.bias = Frozen(other_bias.bias.data)
    for module in (Conv1D(8, 6), accelerate_hook, accelerate_old, other_weight, other_bias):
        assert not LowRankEditor._fusable(module), module
    assert LowRankEditor._fusable(torch.nn.Linear(8, 6)) and LowRankEditor._fusable(torch.nn.Linear(8, 6, bias=False))
    assert LowRankEditor._fusable(one_module("conv1d", bias=True))


def test_modules_reading_the_same_input_share_one_product(tok):
    """After the first forward, q/k/v (and gate/up) read x·[L_q L_k L_v] computed once: their own left factors are
    no longer used, which this test shows by spoiling them."""
    model = build("llama", tok).eval()
    dirs = lora_dirs(model, "llama")
    with low_rank_editing(model, dirs) as editor:
        editor.set_linear((0.7, -0.3))
        forward_logits(model)  # the first forward learns the groups
        reference = forward_logits(model)
        names = list(dict.fromkeys(n for d in dirs for n in d.factors))
        later = [i for i, n in enumerate(names) if n.split(".")[-2] in ("k_proj", "v_proj", "up_proj")]
        assert len(later) == 6
        for i in later:
            assert editor.slots[i]["group"]["first"] is not editor.slots[i]
            editor.slots[i]["left"] = torch.full_like(editor.slots[i]["left"], float("nan"))
        assert torch.equal(forward_logits(model), reference)


def test_a_group_computes_its_shared_product_once_per_forward(tok):
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountProducts(TorchDispatchMode):  # matrix products whose right operand is the group's [L_q L_k L_v]
        def __init__(self, left):
            super().__init__()
            self.left, self.count = left, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if (
                func in (torch.ops.aten.mm.default, torch.ops.aten.matmul.default)
                and args[1].data_ptr() == self.left.data_ptr()
            ):
                self.count += 1
            return func(*args, **(kwargs or {}))

    model = build("llama", tok).eval()
    with low_rank_editing(model, lora_dirs(model, "llama")) as editor:
        editor.set_linear((0.7, -0.3))
        forward_logits(model)  # the first forward learns the groups
        group = next(slot["group"] for slot in editor.slots if "group" in slot)
        assert sum(slot.get("group") is group for slot in editor.slots) == 3  # q, k and v of the first layer
        with CountProducts(group["left"]) as counter:
            forward_logits(model)
    assert counter.count == 1


def test_a_replaced_forward_kept_after_the_editor_is_gone_runs_the_modules_own():
    module = one_module("linear", bias=True)
    x = torch.randn(5, 8, dtype=torch.float64)
    with torch.no_grad():
        plain = module(x)
    with low_rank_editing(module, [one_direction(module)]) as editor:
        editor.set_linear((0.5,))
        kept = module.forward  # somebody holds on to the replaced forward
    assert "forward" not in module.__dict__
    with torch.no_grad():
        assert torch.equal(kept(x), plain)


def test_a_compiled_model_keeps_the_hook_path():
    module = torch.nn.Sequential(torch.nn.Linear(8, 6))
    module.compile()  # sets the compiled call; nothing is compiled until it runs
    d = LowRankDirection({"0.weight": (torch.ones(6, 1), torch.ones(1, 8))}, {"kind": "low_rank"})
    with low_rank_editing(module, [d]) as editor:
        assert len(editor.handles) == 1 and not editor.patched


def test_a_linear_with_an_nf_attribute_is_not_transposed(monkeypatch):
    class Gate(torch.nn.Linear):  # an attribute named like Conv1D's does not make its weight (in, out)
        nf = 6

    module = Gate(8, 6).double()
    direction = one_direction(module)
    x = torch.randn(5, 8, dtype=torch.float64)
    left, right, _ = factors_lr(torch.nn.Linear(8, 6), direction, 0.3)
    with torch.no_grad():
        expected = module(x).addmm_(x @ left, right)
    with low_rank_editing(module, [direction]) as editor, torch.no_grad():
        editor.set_linear((0.3,))
        assert torch.equal(module(x), expected)


def test_the_scratch_holds_the_largest_weight_wherever_it_comes(tok, merged_always):
    model = build("llama", tok)
    config = LowRankDirectionConfig(rank=2, target_modules=["layers.0.mlp.down_proj", "layers.1.self_attn.q_proj"])
    (d,) = low_rank_directions(model, 0, config=config, axes=1)
    assert list(d.factors) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"]
    down = model.model.layers[0].mlp.down_proj
    x = torch.randn(3, 64)
    with low_rank_editing(model, [d]) as editor, torch.inference_mode():
        editor.set_linear((0.5,))
        b, a = d.factors["model.layers.0.mlp.down_proj.weight"]
        torch.testing.assert_close(down(x), torch.nn.functional.linear(x, down.weight + 0.5 * (b @ a)))
        assert [t.numel() for t in editor._scratch.values()] == [32 * 64]


def test_shared_products_cast_the_input_to_the_factors_dtype(tok):
    """A bf16 model with float32 factors: q/k/v read one shared x·L, with x cast to float32 first."""
    model = build("llama", tok).eval()
    dirs = lora_dirs(model, "llama")  # float32 factors
    model.to(torch.bfloat16)
    with low_rank_editing(model, dirs) as editor:
        editor.set_linear((0.7, -0.3))
        first = forward_logits(model)  # learns the groups
        second = forward_logits(model)  # reads the shared products
        assert any("group" in slot for slot in editor.slots)
    assert first.dtype == second.dtype == torch.bfloat16
    torch.testing.assert_close(second.float(), first.float(), rtol=2e-2, atol=2e-2)


def test_modules_reading_different_inputs_are_not_grouped():
    """The second input is made after the first is freed, where Python may reuse its id: only inputs seen alive
    as the same tensor make a group."""

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x):
            y = self.a(x * 1.0)  # a temporary input, freed after the call
            return y + self.b(x * 2.0)  # another temporary, allocated next

    model = TwoInputs().eval()
    g = torch.Generator().manual_seed(0)
    factors = {n: (torch.randn(8, 2, generator=g), torch.randn(2, 8, generator=g)) for n in ("a.weight", "b.weight")}
    x = torch.randn(4, 8, generator=g)
    for _ in range(20):  # many first forwards, each with its own allocations
        with low_rank_editing(model, [LowRankDirection(factors, {"kind": "low_rank"})]) as editor, torch.no_grad():
            editor.set_linear((0.5,))
            model(x)
            assert not any("group" in slot for slot in editor.slots)


def test_a_grouped_module_given_another_input_later_computes_its_own_product():
    """Grouped in the first forward (both read x), the second module later reads another tensor: the identity check
    at every call gives it its own x·L, not the group's."""

    class Switch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 8).double(), torch.nn.Linear(8, 8).double()
            self.same = True

        def forward(self, x):
            return self.a(x), self.b(x if self.same else x * 2.0)

    model = Switch().eval()
    g = torch.Generator().manual_seed(0)
    factors = {
        n: (torch.randn(8, 2, generator=g).double(), torch.randn(2, 8, generator=g).double())
        for n in ("a.weight", "b.weight")
    }
    x = torch.randn(4, 8, generator=g, dtype=torch.float64)
    with low_rank_editing(model, [LowRankDirection(factors, {"kind": "low_rank"})]) as editor, torch.no_grad():
        editor.set_linear((0.5,))
        model(x)
        assert editor.slots[0]["group"] is editor.slots[1]["group"]  # learned: a and b read the same tensor
        model.same = False
        _, got = model(x)
    b1, a1 = factors["b.weight"]
    expected = torch.nn.functional.linear(x * 2.0, model.b.weight + 0.5 * (b1 @ a1), model.b.bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_keyword_calls_at_the_centre_run_the_modules_own_forward():
    module = one_module("linear", bias=True)
    x = torch.randn(5, 8, dtype=torch.float64)
    with torch.no_grad():
        plain = module(x)
    with low_rank_editing(module, [one_direction(module)]) as editor, torch.no_grad():
        assert torch.equal(module(input=x), plain)  # no point set yet: the centre
        editor.set_linear((0.0,))
        assert torch.equal(module(input=x), plain)


class Packed4bit(torch.nn.Module):
    """A layer of a quantization library (`somelib.quantized`): its weight is a packed buffer, not a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(8, dtype=torch.uint8))


Packed4bit.__module__ = "somelib.quantized.modules.linear"


class QuantizedHead(torch.nn.Module):
    """A body of linear layers and a quantized output head nested one level down (`lm.head`)."""

    def __init__(self, quantized_body: bool) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), *([Packed4bit()] if quantized_body else []))
        self.lm = torch.nn.Module()
        self.lm.head = Packed4bit()

    def get_output_embeddings(self):
        return self.lm.head


def test_a_quantized_output_head_is_left_out_by_default_and_others_refused():
    from hf_landscape.directions.low_rank import target_weights

    assert list(target_weights(QuantizedHead(quantized_body=False), None)) == ["body.0.weight"]
    with pytest.raises(DirectionError, match=r"1 quantized weight\(s\).*\['body\.1\.weight'\]"):
        target_weights(QuantizedHead(quantized_body=True), None)


def test_a_float_target_weight_that_is_not_a_matrix_is_refused():
    from hf_landscape.directions.low_rank import target_weights

    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    model[0].weight = torch.nn.Parameter(torch.zeros(4, 4, 2))  # floating point, a Parameter, but no matrix
    with pytest.raises(
        DirectionError, match=r"Cannot perturb '0\.weight': its weight is a Parameter of dtype torch\.float32"
    ):
        target_weights(model, ["0"])


def test_an_interrupted_low_rank_plane_resumes_to_the_uninterrupted_values(tok, objective, tmp_path, monkeypatch):
    from testing_utils import interrupt_at_call

    from hf_landscape.engine.checkpoint import META_NAME

    def plane(probe, **kwargs):
        return probe.plane(steps=(3, 2), directions="lora", rank=2, target_modules=LLAMA_TARGETS, **kwargs)

    reference = plane(LandscapeProbe(build("llama", tok), objective, progress=False))
    probe = LandscapeProbe(build("llama", tok), objective, progress=False)
    interrupt_at_call(monkeypatch, probe.objective, "evaluate", 4)
    with pytest.raises(KeyboardInterrupt):
        plane(probe, checkpoint_dir=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    done = json.loads((tmp_path / META_NAME).read_text())["done"]
    resumed = plane(LandscapeProbe(build("llama", tok), objective, progress=False), checkpoint_dir=tmp_path)
    assert 0 < done < 6 and resumed.metadata["resumed"] == {"points": done}
    np.testing.assert_array_equal(resumed.values, reference.values)  # the first point computed is no exception


def test_a_single_low_rank_point_has_the_bits_of_the_same_point_in_a_plane(tok, objective):
    probe = LandscapeProbe(build("llama", tok), objective, progress=False)
    plane = probe.plane(steps=(3, 3), directions="lora", rank=2, target_modules=LLAMA_TARGETS)
    for j, i in [(0, 0), (2, 1)]:
        point = (plane.x[i], plane.y[j])
        assert probe.evaluate(point=point, directions=plane.directions, details=False).loss == plane.values[j, i]


def test_learning_the_groups_costs_one_forward_before_the_grid(tok):
    """Six sequences in batches of two: three forwards per point, and one more, stopped once every module has run,
    before the first point."""
    model = build("llama", tok)
    objective = CausalLMObjective(TEXTS[:6], tok, max_length=24, batch_size=2)
    probe = LandscapeProbe(model, objective, progress=False)
    directions = low_rank_directions(model, 0, config=LowRankDirectionConfig(rank=2, target_modules=LLAMA_TARGETS))
    forwards = []
    handle = model.register_forward_pre_hook(lambda module, args: forwards.append(1))  # every forward begun
    try:
        probe.line(steps=3, span=(-1, 1), direction=directions[0])
    finally:
        handle.remove()
    assert len(forwards) == 3 * 3 + 1

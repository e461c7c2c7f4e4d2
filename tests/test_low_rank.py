"""LoRA-subspace (low-rank) directions and adapter-space directions for PeftModels."""

from __future__ import annotations

import copy

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


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_value_equals_loss_of_explicitly_merged_copy(kind, tok, objective):
    model = build(kind, tok)
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
def test_centre_equals_loss_and_weights_and_hooks_untouched(kind, tok, objective):
    model = build(kind, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(steps=(3, 3), directions="lora", rank=2, target_modules=targets(kind))
    assert plane.centre == probe.loss()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


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


def test_bf16_model_stays_bf16_and_unwritten(tok):
    model = build("llama", tok).to(torch.bfloat16)
    before = {n: (p.data_ptr(), p.clone()) for n, p in model.named_parameters()}
    objective = CausalLMObjective(TEXTS[:4], tok, max_length=16)
    probe = LandscapeProbe(model, objective, progress=False)
    plane = probe.plane(steps=(3, 3), directions="lora", rank=2)
    assert plane.directions[0].factors["model.layers.0.mlp.up_proj.weight"][0].dtype == torch.bfloat16
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])


def test_hooks_removed_and_weights_kept_after_exception(tok, objective, monkeypatch):
    model = build("gpt2", tok)
    probe = LandscapeProbe(model, objective, progress=False)
    calls = {"n": 0}
    original = objective.evaluate

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "evaluate", failing)
    with pytest.raises(RuntimeError, match="boom"):
        probe.plane(steps=(3, 3), directions="lora", rank=2, target_modules=GPT2_TARGETS)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert model.training  # restored to the mode it was built in


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

"""Random directions: reproducibility, filter / layer / model normalization, selection, orthogonality, I/O."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys

import pytest
import torch
from safetensors.torch import save_file

from hf_landscape import (
    CausalLMObjective,
    ConfigError,
    Direction,
    DirectionError,
    LandscapeProbe,
    RandomDirectionConfig,
    random_directions,
    select_parameters,
)

GPT2_CONV1D = "transformer.h.0.attn.c_attn.weight"  # transformers Conv1D: stored (in, out) = (32, 96)
GPT2_MLP = "transformer.h.1.mlp.c_fc.weight"  # Conv1D (32, 128)
GPT2_WTE = "transformer.wte.weight"  # nn.Embedding (vocab, 32), tied to lm_head
LLAMA_LINEAR = "model.layers.0.self_attn.k_proj.weight"  # nn.Linear (out, in) = (16, 32)
LLAMA_EMBED = "model.embed_tokens.weight"


def weights_2d(model) -> dict[str, torch.Tensor]:
    """Independent reference of the default selection: floating-point parameters with >= 2 dims."""
    return {n: p.detach() for n, p in model.named_parameters() if p.is_floating_point() and p.dim() >= 2}


def draw(model, seed=0, axes=2, **options):
    return random_directions(model, seed, config=RandomDirectionConfig(**options), axes=axes)


# --- reproducibility ------------------------------------------------------------------------------


def test_same_seed_gives_identical_tensors(gpt2_model):
    model = gpt2_model()
    first = draw(model, seed=7)
    second = draw(model, seed=7)
    for a, b in zip(first, second):
        assert list(a.keys()) == list(b.keys())
        for name in a.keys():
            assert torch.equal(a[name], b[name]), name


def test_same_seed_on_another_model_instance_of_the_same_weights_is_identical(gpt2_model):
    a = draw(gpt2_model(seed=0), seed=3)
    b = draw(gpt2_model(seed=0), seed=3)
    for da, db in zip(a, b):
        for name in da.keys():
            assert torch.equal(da[name], db[name]), name


def test_raw_draw_does_not_depend_on_the_weights(gpt2_model):
    """Unnormalized directions of two models with different weights are bitwise equal for the same seed."""
    m1, m2 = gpt2_model(seed=0), gpt2_model(seed=1)
    assert not torch.equal(m1.transformer.wte.weight, m2.transformer.wte.weight)
    for d1, d2 in zip(draw(m1, seed=5, normalization="none"), draw(m2, seed=5, normalization="none")):
        for name in d1.keys():
            assert torch.equal(d1[name], d2[name]), name


def test_filter_normalized_draw_differs_across_weights_only_by_unit_scale(llama_model):
    """Same seed, different weights: each row points the same way, but rows are rescaled differently."""
    m1, m2 = llama_model(seed=0), llama_model(seed=1)
    d1 = draw(m1, seed=5, axes=1)[0][LLAMA_LINEAR]
    d2 = draw(m2, seed=5, axes=1)[0][LLAMA_LINEAR]
    assert not torch.allclose(d1, d2)
    cos = torch.nn.functional.cosine_similarity(d1.double(), d2.double(), dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-6)


def test_different_seed_gives_different_directions(gpt2_model):
    model = gpt2_model()
    a = draw(model, seed=0, axes=1)[0]
    b = draw(model, seed=1, axes=1)[0]
    for name in a.keys():
        assert not torch.equal(a[name], b[name]), name


def test_the_two_axes_of_a_plane_differ(gpt2_model):
    d1, d2 = draw(gpt2_model(), seed=0)
    assert abs(d1.dot(d2)) / (d1.norm() * d2.norm()) < 0.05


def test_line_direction_is_first_axis_of_plane_with_same_seed(gpt2_model):
    model = gpt2_model()
    (line,) = draw(model, seed=11, axes=1)
    plane = draw(model, seed=11, axes=2)
    for name in line.keys():
        assert torch.equal(line[name], plane[0][name]), name
    (second,) = random_directions(model, 11, config=RandomDirectionConfig(), axes=1, first_axis=1)
    for name in second.keys():
        assert torch.equal(second[name], plane[1][name]), name


def test_probe_line_and_plane_use_the_same_first_direction(gpt2_model, tokenizer, texts):
    probe = LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:3], tokenizer), progress=False)
    line = probe.line(steps=2, span=(-0.1, 0.1), seed=4)
    plane = probe.plane(steps=2, span=(-0.1, 0.1), seed=4)
    for name in line.directions[0].keys():
        assert torch.equal(line.directions[0][name], plane.directions[0][name]), name


def test_direction_of_a_weight_does_not_depend_on_the_selection(gpt2_model):
    model = gpt2_model()
    full = draw(model, seed=2, axes=1)[0]
    only = draw(model, seed=2, axes=1, include=[r"c_attn"])[0]
    assert set(only.keys()) == {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight"}
    for name in only.keys():
        assert torch.equal(only[name], full[name]), name


def test_directions_have_the_parameters_shape_dtype_and_keys(llama_model):
    model = llama_model()
    (d,) = draw(model, seed=0, axes=1)
    ref = weights_2d(model)
    assert list(d.keys()) == list(ref)
    for name, w in ref.items():
        assert d[name].shape == w.shape and d[name].dtype == w.dtype


def test_non_integer_seed_is_rejected(gpt2_model):
    model = gpt2_model()
    for seed in (1.5, "0", True):
        with pytest.raises(ConfigError, match="seed"):
            random_directions(model, seed)


# --- normalization ----------------------------------------------------------------------------------


def test_filter_normalization_llama_linear_rows(llama_model):
    model = llama_model()
    d = draw(model, seed=0, axes=1)[0]
    w = dict(model.named_parameters())
    for name in (LLAMA_LINEAR, "model.layers.1.mlp.down_proj.weight", LLAMA_EMBED, "lm_head.weight"):
        torch.testing.assert_close(d[name].norm(dim=1), w[name].detach().norm(dim=1), rtol=1e-5, atol=0)


def test_filter_normalization_every_llama_weight(llama_model):
    model = llama_model()
    d = draw(model, seed=3, axes=1)[0]
    for name, w in weights_2d(model).items():
        torch.testing.assert_close(d[name].norm(dim=1), w.norm(dim=1), rtol=1e-5, atol=0, msg=name)


def test_filter_normalization_gpt2_conv1d_columns(gpt2_model):
    model = gpt2_model()
    d = draw(model, seed=0, axes=1)[0]
    w = model.get_parameter(GPT2_CONV1D).detach()
    assert tuple(w.shape) == (32, 96)  # (in, out): a unit is a column
    torch.testing.assert_close(d[GPT2_CONV1D].norm(dim=0), w.norm(dim=0), rtol=1e-5, atol=0)
    # and it is not the rows that were normalized
    assert not torch.allclose(d[GPT2_CONV1D].norm(dim=1), w.norm(dim=1), rtol=1e-2)


def test_filter_normalization_every_gpt2_weight(gpt2_model):
    model = gpt2_model()
    d = draw(model, seed=9, axes=1)[0]
    for name, w in weights_2d(model).items():
        dim = 1 if name.startswith("transformer.wte") or name.startswith("transformer.wpe") else 0
        torch.testing.assert_close(d[name].norm(dim=dim), w.norm(dim=dim), rtol=1e-5, atol=0, msg=name)


def test_filter_normalization_gpt2_embedding_rows(gpt2_model):
    model = gpt2_model()
    d = draw(model, seed=0, axes=1)[0]
    for name in (GPT2_WTE, "transformer.wpe.weight"):
        w = model.get_parameter(name).detach()
        torch.testing.assert_close(d[name].norm(dim=1), w.norm(dim=1), rtol=1e-5, atol=0)


def test_filter_normalization_1d_parameter_is_one_unit(gpt2_model):
    model = gpt2_model()
    d = draw(model, seed=0, axes=1, include_1d=True)[0]
    name = "transformer.h.0.ln_1.weight"
    assert d[name].norm().item() == pytest.approx(model.get_parameter(name).detach().norm().item(), rel=1e-5)


def test_filter_normalization_keeps_zero_units_zero(llama_model):
    model = llama_model()
    with torch.no_grad():
        model.get_parameter(LLAMA_LINEAR)[3].zero_()
    d = draw(model, seed=0, axes=1)[0][LLAMA_LINEAR]
    assert torch.isfinite(d).all()
    assert torch.count_nonzero(d[3]) == 0
    assert torch.count_nonzero(d[2]) == d.shape[1]


def test_layer_normalization_tensor_norms(gpt2_model):
    model = gpt2_model()
    d = draw(model, seed=0, axes=1, normalization="layer")[0]
    for name, w in weights_2d(model).items():
        assert d[name].norm().item() == pytest.approx(w.norm().item(), rel=1e-5), name
    # one scale per tensor: the raw draw times ‖W‖ / ‖raw‖
    raw = draw(model, seed=0, axes=1, normalization="none")[0]
    for name, w in weights_2d(model).items():
        scale = w.double().norm() / raw[name].double().norm()
        torch.testing.assert_close(d[name].double(), raw[name].double() * scale, rtol=1e-5, atol=1e-8, msg=name)
    # unit norms are not matched (that is filter normalization)
    assert not torch.allclose(
        d[GPT2_CONV1D].norm(dim=0), model.get_parameter(GPT2_CONV1D).detach().norm(dim=0), rtol=1e-2
    )


def test_model_normalization_global_norm(llama_model):
    model = llama_model()
    expected = sum(float(w.double().pow(2).sum()) for w in weights_2d(model).values()) ** 0.5
    # one scale for the whole direction: every tensor is the raw draw times ‖θ‖ / ‖raw‖, not rescaled on its own;
    # and without `orthogonalize` the second direction is its own raw draw, rescaled the same way
    for d, raw in zip(draw(model, seed=0, normalization="model"), draw(model, seed=0, normalization="none")):
        assert d.norm() == pytest.approx(expected, rel=1e-6)
        scale = expected / raw.norm()
        for name in raw.keys():
            torch.testing.assert_close(d[name].double(), raw[name].double() * scale, rtol=1e-5, atol=1e-7, msg=name)


def test_model_normalization_uses_only_selected_weights(llama_model):
    model = llama_model()
    d = draw(model, seed=0, axes=1, normalization="model", include=[r"mlp"])[0]
    selected = [p.detach() for n, p in model.named_parameters() if "mlp" in n and p.dim() >= 2]
    assert len(selected) == 6
    expected = sum(float(w.double().pow(2).sum()) for w in selected) ** 0.5
    assert d.norm() == pytest.approx(expected, rel=1e-6)


def test_none_normalization_is_standard_normal(gpt2_model):
    model = gpt2_model()
    d = draw(model, seed=0, axes=1, normalization="none")[0]
    flat = torch.cat([t.flatten().double() for t in d.tensors.values()])
    assert flat.numel() > 30_000
    assert flat.std().item() == pytest.approx(1.0, abs=0.02)
    assert abs(flat.mean().item()) < 0.02
    # the weights are far from unit scale, so a rescaled direction would not pass
    w = torch.cat([t.flatten().double() for t in weights_2d(model).values()])
    assert w.std().item() < 0.1


# --- selection ---------------------------------------------------------------------------------------


def test_1d_parameters_excluded_by_default(gpt2_model):
    model = gpt2_model()
    d = draw(model, axes=1)[0]
    assert set(d.keys()) == set(weights_2d(model))
    assert all(d[n].dim() >= 2 for n in d.keys())
    assert "transformer.h.0.ln_1.weight" not in d.keys()
    assert "transformer.h.0.attn.c_attn.bias" not in d.keys()


def test_include_1d_adds_biases_and_norm_weights(llama_model):
    model = llama_model()
    d = draw(model, axes=1, include_1d=True)[0]
    expected = [n for n, p in model.named_parameters() if p.is_floating_point()]
    assert list(d.keys()) == expected
    assert "model.norm.weight" in d.keys()
    assert "model.layers.0.input_layernorm.weight" in d.keys()


@pytest.mark.parametrize(
    ("include", "exclude"),
    [
        ([r"\.attn\."], None),
        ([r"\.h\.1\."], None),
        (None, [r"wte|wpe"]),
        ([r"\.h\.0\."], [r"c_proj"]),
        ([r"mlp", r"wpe"], None),
    ],
)
def test_include_exclude_regexes(gpt2_model, include, exclude):
    model = gpt2_model()
    d = draw(model, axes=1, include=include, exclude=exclude)[0]
    expected = [
        n
        for n in weights_2d(model)
        if (include is None or any(re.search(p, n) for p in include))
        and not any(re.search(p, n) for p in exclude or [])
    ]
    assert expected, "the case must select something"
    assert list(d.keys()) == expected


def test_select_parameters_matches_default_selection(llama_model):
    model = llama_model()
    assert list(select_parameters(model)) == list(weights_2d(model))


def test_selection_of_nothing_is_a_direction_error(gpt2_model):
    with pytest.raises(DirectionError, match="No parameter matched"):
        draw(gpt2_model(), include=[r"does-not-exist"])


def test_tied_weights_appear_once(gpt2_model):
    model = gpt2_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    d = draw(model, axes=1, include_1d=True)[0]
    assert GPT2_WTE in d.keys()
    assert "lm_head.weight" not in d.keys()
    assert list(d.keys()).count(GPT2_WTE) == 1


def test_untied_llama_head_is_its_own_direction(llama_model):
    d = draw(llama_model(), axes=1)[0]
    assert "lm_head.weight" in d.keys() and LLAMA_EMBED in d.keys()


# --- orthogonalization ---------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", ["filter", "layer", "model", "none"])
def test_orthogonalize_gives_orthogonal_directions(llama_model, normalization):
    model = llama_model()
    d1, d2 = draw(model, seed=0, normalization=normalization, orthogonalize=True)
    dot = sum(float((d1[n].double() * d2[n].double()).sum()) for n in d1.keys())
    n1 = sum(float(d1[n].double().pow(2).sum()) for n in d1.keys()) ** 0.5
    n2 = sum(float(d2[n].double().pow(2).sum()) for n in d2.keys()) ** 0.5
    assert abs(dot / (n1 * n2)) < 1e-6


def test_orthogonalize_keeps_exact_filter_norms(gpt2_model):
    model = gpt2_model()
    d1, d2 = draw(model, seed=0, orthogonalize=True)
    for name, w in weights_2d(model).items():
        dim = 0 if "attn" in name or "mlp" in name else 1
        for d in (d1, d2):
            torch.testing.assert_close(d[name].norm(dim=dim), w.norm(dim=dim), rtol=1e-5, atol=0, msg=name)
    dot = d1.dot(d2)
    assert abs(dot / (d1.norm() * d2.norm())) < 1e-6


def test_orthogonalize_keeps_first_direction(gpt2_model):
    model = gpt2_model()
    plain = draw(model, seed=0)
    orth = draw(model, seed=0, orthogonalize=True)
    for name in plain[0].keys():
        assert torch.equal(plain[0][name], orth[0][name])
    assert any(not torch.equal(plain[1][n], orth[1][n]) for n in plain[1].keys())


def test_orthogonalize_model_normalization_keeps_global_norm(gpt2_model):
    model = gpt2_model()
    expected = sum(float(w.double().pow(2).sum()) for w in weights_2d(model).values()) ** 0.5
    for d in draw(model, seed=1, normalization="model", orthogonalize=True):
        assert d.norm() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("include", [[r"k_proj"], None])
def test_orthogonalize_without_normalization_keeps_the_raw_norm(llama_model, include):
    """`normalization="none"`: the second direction is the raw draw made orthogonal to the first, then rescaled back
    to the raw draw's norm (Gram-Schmidt alone would shorten it)."""
    model = llama_model()
    r1, r2 = draw(model, seed=0, normalization="none", include=include)
    d1, d2 = draw(model, seed=0, normalization="none", orthogonalize=True, include=include)
    cos = r1.dot(r2) / (r1.norm() * r2.norm())
    if include:  # few numbers: the raw draws are far enough from orthogonal that Gram-Schmidt shortens r2 visibly
        assert abs(cos) > 0.01
    assert d2.norm() == pytest.approx(r2.norm(), rel=1e-6)
    assert abs(d1.dot(d2)) / (d1.norm() * d2.norm()) < 1e-6
    for name in r1.keys():
        assert torch.equal(d1[name], r1[name]), name
    assert_gram_schmidt(d2, r1, r2, r2.norm())


def assert_gram_schmidt(d2, r1, r2, norm: float) -> None:
    """Every tensor of `d2` is that of (r2 - c·r1) · norm / ‖r2 - c·r1‖, c = ⟨r1, r2⟩ / ‖r1‖² over all tensors."""
    c = r1.dot(r2) / r1.norm() ** 2
    rest = {name: r2[name].double() - c * r1[name].double() for name in r2.keys()}
    scale = norm / sum(float(t.pow(2).sum()) for t in rest.values()) ** 0.5
    for name, t in rest.items():
        torch.testing.assert_close(d2[name].double(), t * scale, rtol=1e-5, atol=1e-7, msg=name)


def test_orthogonalize_with_model_normalization_is_global_gram_schmidt(llama_model):
    """Orthogonal over the whole model (not tensor by tensor), then rescaled to ‖θ‖."""
    model = llama_model()
    r1, r2 = draw(model, seed=0, normalization="none")
    d1, d2 = draw(model, seed=0, normalization="model", orthogonalize=True)
    theta = sum(float(w.double().pow(2).sum()) for w in weights_2d(model).values()) ** 0.5
    for name in r1.keys():
        torch.testing.assert_close(d1[name].double(), r1[name].double() * (theta / r1.norm()), rtol=1e-5, atol=1e-7)
    assert_gram_schmidt(d2, r1, r2, theta)


def test_orthogonalize_with_layer_normalization_keeps_tensor_norms(gpt2_model):
    model = gpt2_model()
    d1, d2 = draw(model, seed=0, normalization="layer", orthogonalize=True)
    for name, w in weights_2d(model).items():
        for d in (d1, d2):
            assert d[name].norm().item() == pytest.approx(w.norm().item(), rel=1e-5), name
        cos = float((d1[name].double() * d2[name].double()).sum()) / (d1[name].norm() * d2[name].norm()).item()
        assert abs(cos) < 1e-5, name  # orthogonal tensor by tensor


class Toy(torch.nn.Module):
    """A 4-D convolution weight (8 output filters of 3 × 3 × 3), a Linear with one input and one without bias."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.narrow = torch.nn.Linear(1, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("orthogonalize", [False, True])
def test_filter_normalization_of_convolution_filters(orthogonalize):
    """Li et al.'s filters: each output filter (all its input channels and taps) of a Conv2d weight is one unit."""
    model = Toy()
    d1, d2 = random_directions(model, 0, config=RandomDirectionConfig(orthogonalize=orthogonalize))
    w = model.conv.weight.detach().reshape(8, -1)
    for d in (d1, d2):
        torch.testing.assert_close(d["conv.weight"].reshape(8, -1).norm(dim=1), w.norm(dim=1), rtol=1e-5, atol=0)
    if orthogonalize:  # filter by filter
        dots = (d1["conv.weight"].reshape(8, -1).double() * d2["conv.weight"].reshape(8, -1).double()).sum(dim=1)
        assert dots.abs().max().item() < 1e-5


def test_filter_normalization_of_one_entry_units():
    """A Linear with one input: every unit is one entry, so the direction is ±|w| with the sign of the draw."""
    model = Toy()
    (raw,) = random_directions(model, 0, config=RandomDirectionConfig(normalization="none"), axes=1)
    (d,) = random_directions(model, 0, axes=1)
    w = model.narrow.weight.detach()
    torch.testing.assert_close(d["narrow.weight"], torch.sign(raw["narrow.weight"]) * w.abs(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("orthogonalize", [False, True])
def test_all_zero_weights_give_zero_directions(orthogonalize):
    """A selection of zero weights (LoRA's B matrices at initialization) gets an all-zero direction, never NaN."""
    model = Toy()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.narrow.weight.zero_()
    for normalization in ("filter", "layer", "model"):
        config = RandomDirectionConfig(normalization=normalization, orthogonalize=orthogonalize)
        for d in random_directions(model, 0, config=config):
            for name, t in d.tensors.items():
                assert torch.count_nonzero(t) == 0 and torch.isfinite(t).all(), (normalization, name)


@pytest.mark.parametrize(
    "options",
    [{}, {"normalization": "layer"}, {"normalization": "model"}, {"orthogonalize": True}, {"normalization": "none"}],
)
def test_half_precision_directions_are_the_float32_ones_rounded(llama_model, options):
    """Norms and ratios are computed in float32 whatever the weights' dtype; the result is rounded once."""
    half = llama_model().to(torch.bfloat16)
    wide = llama_model().to(torch.bfloat16).float()  # the same weights, widened exactly
    for h, w in zip(draw(half, seed=0, **options), draw(wide, seed=0, **options)):
        for name, t in h.tensors.items():
            assert t.dtype == torch.bfloat16, name
            assert torch.equal(t, w[name].to(torch.bfloat16)), name


def test_draw_does_not_depend_on_the_default_dtype(gpt2_model):
    from hf_landscape.directions import draw as draws

    model = gpt2_model()
    raw = draws.gaussian((1000,), 3, 1, "w")
    directions = draw(model, seed=3)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again = draws.gaussian((1000,), 3, 1, "w")
        assert again.dtype == torch.float32 and torch.equal(again, raw)
        for a, b in zip(draw(model, seed=3), directions):
            for name, t in a.tensors.items():
                assert torch.equal(t, b[name]), name
    finally:
        torch.set_default_dtype(before)


def test_unit_dimension_is_the_columns_of_conv1d_only(gpt2_model):
    from hf_landscape.directions.random import unit_dim

    class Gate(torch.nn.Linear):
        nf = 4  # an attribute of the same name as Conv1D's does not make it transposed

    model = torch.nn.Module()
    model.gate = Gate(2, 4)
    model.sub = gpt2_model().transformer.h[0].attn
    assert unit_dim(model, "gate.weight") == 0
    assert unit_dim(model, "sub.c_attn.weight") == 1
    assert unit_dim(model, "missing.weight") == 0


def test_two_directions_by_default(gpt2_model):
    assert len(random_directions(gpt2_model(), 0)) == 2


def test_check_fits_names_the_directions_argument(gpt2_model):
    params = dict(gpt2_model().named_parameters())
    with pytest.raises(DirectionError, match="`directions` names parameters"):
        Direction({"nope": torch.zeros(1)}).check_fits(params)
    with pytest.raises(DirectionError, match=r"`directions`\['transformer.wte.weight'\] has shape"):
        Direction({"transformer.wte.weight": torch.zeros(2)}).check_fits(params)


# --- Direction object and save / load ------------------------------------------------------------------


def test_direction_norm_and_dot():
    a = Direction({"w": torch.ones(2, 3), "v": torch.full((4,), 2.0)})
    b = Direction({"w": torch.full((2, 3), 3.0), "other": torch.ones(5)})
    assert a.norm() == pytest.approx((6 + 16) ** 0.5, rel=1e-15)
    assert a.dot(b) == 18.0  # only names held by both count
    assert len(a) == 2 and list(a.keys()) == ["w", "v"]


def test_direction_config_records_how_it_was_made(gpt2_model):
    d1, d2 = draw(gpt2_model(), seed=42, normalization="layer", exclude=[r"wpe"])
    for axis, d in enumerate((d1, d2)):
        assert d.config["kind"] == "random"
        assert d.config["seed"] == 42
        assert d.config["axis"] == axis
        assert d.config["normalization"] == "layer"
        assert d.config["exclude"] == ["wpe"]
        assert d.config["include_1d"] is False


def test_direction_save_and_load_round_trip(gpt2_model, tmp_path):
    model = gpt2_model()
    (d,) = draw(model, seed=3, axes=1, normalization="filter", include=[r"\.h\."])
    path = tmp_path / "direction.safetensors"
    d.save_pretrained(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direction.safetensors"]
    loaded = Direction.from_pretrained(path)
    assert set(loaded.keys()) == set(d.keys())
    assert set(loaded.keys()) <= {n for n, _ in model.named_parameters()}
    for name in d.keys():
        assert torch.equal(loaded[name], d[name]), name
    assert loaded.config == d.config
    # and it is usable on the model
    loaded.check_fits(dict(model.named_parameters()))


def test_direction_file_metadata_is_sorted_json(tmp_path):
    from safetensors import safe_open

    d = Direction({"a": torch.zeros(2, 2)}, {"zeta": 1, "alpha": [1, 2], "kind": "custom"})
    path = tmp_path / "d.safetensors"
    d.save_pretrained(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    text = meta["hf_landscape_direction"]
    assert json.loads(text) == {"zeta": 1, "alpha": [1, 2], "kind": "custom"}
    assert text == json.dumps({"alpha": [1, 2], "kind": "custom", "zeta": 1})


def test_loading_a_non_direction_safetensors_file_fails(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(DirectionError, match="no hf_landscape direction"):
        Direction.from_pretrained(path)


def test_loading_a_missing_direction_file_fails(tmp_path):
    with pytest.raises(DirectionError, match="not a file"):
        Direction.from_pretrained(tmp_path / "missing.safetensors")


def test_check_fits_rejects_unknown_names_and_wrong_shapes(gpt2_model):
    params = dict(gpt2_model().named_parameters())
    with pytest.raises(DirectionError, match="does not have"):
        Direction({"not.a.parameter": torch.zeros(1)}).check_fits(params)
    with pytest.raises(DirectionError, match=r"\(96, 32\)"):
        Direction({GPT2_CONV1D: torch.zeros(96, 32)}).check_fits(params)


def _tree(v: torch.Tensor) -> torch.Tensor:
    """Reference pairwise sum of a 1-D float tensor, entry by entry (the order `random._tree_sum` promises)."""
    v = list(v)
    while len(v) > 1:
        h = len(v) // 2
        v = [v[k] + v[k + h] for k in range(h)] + ([v[-1]] if len(v) % 2 else [])
    return v[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_filter_directions_are_the_reference_arithmetic_bit_for_bit(gpt2_model, dtype):
    from hf_landscape.directions.draw import gaussian
    from hf_landscape.directions.random import EPS, unit_dim

    model = gpt2_model().to(dtype)
    (d,) = random_directions(model, 7, axes=1)
    params = dict(model.named_parameters())
    for name in [GPT2_WTE, GPT2_CONV1D]:  # units are rows of the embedding, columns of the Conv1D
        w = params[name].detach().float()
        dim = unit_dim(model, name)
        raw = gaussian(w.shape, 7, 0, name)
        expected = torch.empty_like(raw)
        for u in range(w.shape[dim]):
            wu, du = w.select(dim, u), raw.select(dim, u)
            # correctly rounded roots: float64's root of a float32 rounds to float32's (53 >= 2 * 24 + 2 bits)
            w_norm, d_norm = (torch.tensor(math.sqrt(_tree(v * v)), dtype=torch.float32) for v in (wu, du))
            assert torch.allclose(d_norm, du.norm(), rtol=1e-6)  # the tree is a sum
            expected.select(dim, u).copy_(du * (w_norm / (d_norm + EPS)))
        t = d.tensors[name]
        assert t.is_contiguous() and torch.equal(t, expected.to(dtype)), name


# --- the draw: a counter-based hash and a tabulated inverse CDF -------------------------------------------------


def test_draw_is_pinned_by_its_generator_name():
    from hf_landscape.directions import draw

    # Changing the draw changes every direction: it must come with a new `GENERATOR` name and these values.
    assert draw.GENERATOR == "counter-hash-v1"
    x = draw.gaussian((1 << 17,), 0, 0, "w")
    head = ["-0x1.4814d8p-3", "0x1.6b1184p-6", "0x1.3e869p-1", "-0x1.a82194p+0", "0x1.54ad22p-1", "-0x1.92028p-1"]
    assert [float(v) for v in x[:6]] == [float.fromhex(h) for h in head]
    assert float(x[35425]) == float.fromhex("0x1.17c838p+2")  # the first entry from the outermost bin's fine table


def test_entry_of_a_draw_depends_on_its_index_alone(monkeypatch):
    from hf_landscape.directions import draw

    whole = draw.gaussian((1000,), 3, 1, "w")
    assert torch.equal(draw.gaussian((10, 30), 3, 1, "w").reshape(-1), whole[:300])  # any shape: row-major index
    part = torch.empty(50)
    draw.fill_normal(part, 100, 3, 1, "w")
    assert torch.equal(part, whole[100:150])
    monkeypatch.setattr(draw, "CHUNK", 64)
    assert torch.equal(draw.gaussian((1000,), 3, 1, "w"), whole)  # chunks only bound memory


def test_draw_refuses_counters_across_a_segment():
    from hf_landscape.directions.draw import fill_normal

    with pytest.raises(ValueError, match="2\\^32 segment"):
        fill_normal(torch.empty(4), 2**32 - 2, 0, 0, "w")


@pytest.mark.parametrize("chunk", [None, 100_003])
def test_torch_integer_path_equals_numpy_path(monkeypatch, chunk):
    from hf_landscape.directions import draw

    on_numpy = draw.gaussian((1 << 20,), 5, 0, "w")  # the CPU's path
    monkeypatch.setattr(draw, "uses_numpy", lambda device: False)  # the path of every other device, run on the CPU
    monkeypatch.setattr(draw, "_device_tables", {})  # built afresh, as on a device's first draw
    draw.host_tables.cache_clear()
    if chunk:  # chunks after the first start at other counters
        monkeypatch.setattr(draw, "CHUNK", chunk)
    on_torch = draw.gaussian((1 << 20,), 5, 0, "w")
    assert (on_numpy.abs() > 4.16957).sum() > 10  # entries of the outermost bin's fine table are among them
    assert torch.equal(on_torch, on_numpy)


@contextlib.contextmanager
def address_space_grows_by_at_most(extra_bytes: int):
    """Within the block, an allocation that would take the process's address space more than `extra_bytes` beyond
    its size now raises `MemoryError` (instead of swapping or being killed for it)."""
    import resource  # Unix only

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the address space's size from /proc")
@pytest.mark.parametrize("numpy_path", [True, False])
def test_counters_beyond_two_to_the_32_take_the_next_segments_keys(monkeypatch, numpy_path):
    from hf_landscape.directions import draw

    monkeypatch.setattr(draw, "uses_numpy", lambda device: numpy_path)
    draw.host_tables()  # built (and cached) before the address space is bounded
    last, first = torch.empty(4), torch.empty(4)
    with address_space_grows_by_at_most(1 << 30):  # four draws take four counters, not the 2^32 before them
        draw.fill_normal(last, 2**32 - 4, 2, 0, "w")  # the last counters of segment 0
        draw.fill_normal(first, 2**32, 2, 0, "w")  # the first of segment 1
    assert torch.isfinite(last).all() and torch.isfinite(first).all()
    assert not torch.equal(first, draw.gaussian((4,), 2, 0, "w"))  # other keys than segment 0 at the same offsets
    assert first.tolist() == [
        float.fromhex(h) for h in ["-0x1.632d1cp-4", "0x1.550624p+0", "-0x1.15100cp-1", "0x1.3f5014p+0"]
    ]


def test_draw_is_standard_normal():
    from hf_landscape.directions.draw import gaussian

    n = 1 << 22
    x = gaussian((n,), 0, 0, "w").double()
    assert abs(float(x.mean())) < 5 / n**0.5 and abs(float(x.std()) - 1) < 5e-3
    assert abs(float((x**4).mean()) - 3) < 0.02
    ks = (torch.special.ndtr(x.sort().values) - (torch.arange(n, dtype=torch.float64) + 0.5) / n).abs().max()
    assert float(ks) < 1.5 / n**0.5  # Kolmogorov-Smirnov at ~1% significance
    tail = int((x.abs() > 4.16957).sum())  # the outermost bin holds 2^-15 of the mass
    assert abs(tail - n * 2**-15) < 5 * (n * 2**-15) ** 0.5
    assert float(x.abs().max()) <= 6.33


def test_draws_of_other_seeds_axes_and_names_are_uncorrelated():
    from hf_landscape.directions.draw import gaussian

    n = 1 << 20
    base = gaussian((n,), 0, 0, "w")
    for other in [gaussian((n,), 1, 0, "w"), gaussian((n,), 0, 1, "w"), gaussian((n,), 0, 0, "v")]:
        assert abs(float(torch.corrcoef(torch.stack([base, other]))[0, 1])) < 5 / n**0.5
        assert abs(float(torch.corrcoef(torch.stack([base[1:], other[:-1]]))[0, 1])) < 5 / n**0.5


def test_square_root_is_correctly_rounded():
    from hf_landscape.directions.random import _sqrt

    g = torch.Generator().manual_seed(0)
    scale = torch.exp2(torch.randint(-60, 60, (1 << 16,), generator=g).float())
    x = torch.cat([torch.rand(1 << 16, generator=g) * scale, torch.tensor([0.0, 1.0, 2.0, 4.0, 1e-30, 3.4e38])])
    expected = torch.tensor([math.sqrt(v) for v in x.tolist()], dtype=torch.float32)  # exact in float64, rounded once
    assert torch.equal(_sqrt(x), expected)


def test_random_directions_record_their_generator(gpt2_model):
    (d,) = random_directions(gpt2_model(), 0, axes=1)
    assert d.config["generator"] == "counter-hash-v1" and "draw_block" not in d.config


@pytest.mark.parametrize("orthogonalize", [False, True])
def test_chunks_do_not_change_the_directions(gpt2_model, monkeypatch, orthogonalize):
    import hf_landscape.directions.draw as draw

    model = gpt2_model()
    config = RandomDirectionConfig(orthogonalize=orthogonalize)
    whole = random_directions(model, 2, config=config)
    monkeypatch.setattr(draw, "CHUNK", 100)  # several chunks for every 2-D weight of the tiny GPT-2
    chunked = random_directions(model, 2, config=config)
    for a, b in zip(whole, chunked):
        for name, t in a.tensors.items():
            assert torch.equal(t, b.tensors[name]), name


@pytest.mark.parametrize("normalization", ["filter", "layer", "none"])
def test_directions_through_the_torch_integer_path_equal_numpy_ones(gpt2_model, monkeypatch, normalization):
    import hf_landscape.directions.draw as draw

    model = gpt2_model()
    config = RandomDirectionConfig(normalization=normalization)
    expected = random_directions(model, 4, config=config)
    monkeypatch.setattr(draw, "uses_numpy", lambda device: False)
    for a, b in zip(expected, random_directions(model, 4, config=config)):
        for name, t in a.tensors.items():
            assert torch.equal(t, b.tensors[name]), name


@pytest.mark.parametrize(("name", "dim"), [(GPT2_CONV1D, 1), (GPT2_WTE, 0)])
@pytest.mark.parametrize("norm", ["filter", "layer"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_path_gives_the_host_bits(gpt2_model, name, dim, norm, dtype):
    """`_on_device` draws and normalizes where the weight lives; run on the CPU it must equal the host path."""
    import hf_landscape.directions.random as rnd

    model = gpt2_model().to(dtype)
    config = RandomDirectionConfig(normalization=norm)
    expected = [d[name] for d in random_directions(model, 3, config=config, first_axis=1)]
    got = rnd._on_device(model.get_parameter(name), name, dim, norm, 3, [1, 2])
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(("name", "dim"), [(GPT2_CONV1D, 1), (GPT2_WTE, 0)])
def test_direction_falls_back_to_the_host_when_the_device_runs_out_of_memory(gpt2_model, monkeypatch, name, dim):
    import hf_landscape.directions.random as rnd

    model = gpt2_model()
    w = dict(model.named_parameters())[name]
    expected = rnd._normalized(w, (rnd.gaussian(w.shape, 3, a, name) for a in (0, 1)), dim, "filter")
    real, failed = rnd.gaussian, []

    def out_of_memory_on_devices(shape, seed, axis, name, device="cpu"):
        if device != "cpu":
            failed.append(name)
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(shape, seed, axis, name)

    monkeypatch.setattr(rnd, "gaussian", out_of_memory_on_devices)
    got = rnd._on_device(w, name, dim, "filter", 3, [0, 1])  # `w.device` counts as a device here
    assert failed == [name]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_pool_runs_with_one_intraop_thread_and_keeps_the_order():
    from hf_landscape.directions import random as rnd

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = rnd._pmap(lambda name: (name, torch.get_num_threads()), ["c", "a", "b"])
        assert list(seen) == ["c", "a", "b"]
        if min(rnd.MAX_WORKERS, os.cpu_count() or 1) > 1:  # a pool runs: one intra-op thread in each task
            assert [threads for _, threads in seen.values()] == [rnd.POOL_INTRAOP_THREADS] * 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_pool_restores_torch_threads_after_an_error():
    from hf_landscape.directions import random as rnd

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def failing(name):
            raise ValueError(name)

        with pytest.raises(ValueError):
            rnd._pmap(failing, ["a", "b", "c"])
        assert torch.get_num_threads() == 2  # one intra-op thread only while the pool ran
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("seed", "axis", "name", "expected"),
    [
        (0, 0, "w", 2363836748653666351),
        (1, 0, "w", 6475266273654058943),
        (0, 1, "w", 8166766191232664166),
        (0, 0, "model.layers.0.self_attn.q_proj.weight", 3545088314429859713),
        (7, 1, "transformer.h.0.attn.c_attn.weight", 2488256300021880350),  # the hash's top bit is cleared
    ],
)
def test_per_weight_seeds_are_fixed_63_bit_numbers(seed, axis, name, expected):
    """The generator seed of each weight is part of what a saved direction or surface reproduces: pinned."""
    from hf_landscape.directions.random import seed_for

    assert seed_for(seed, axis, name) == expected < 2**63


def test_global_orthogonalization_skips_a_zero_direction_and_goes_on():
    from hf_landscape.directions.random import _orthogonalize_global

    g = torch.Generator().manual_seed(0)
    p, v = torch.randn(6, generator=g), torch.randn(6, generator=g)
    out = _orthogonalize_global({"w": v}, [{"w": torch.zeros(6)}, {"w": p}])["w"]
    assert abs(float(out.double() @ p.double())) < 1e-5 * float(p.norm() * v.norm())
    assert float(out.norm()) == pytest.approx(float(v.norm()), rel=1e-6)


def test_check_fits_names_the_argument_of_a_tensor_replaced_after_construction():
    direction = Direction({"w": torch.zeros(2)})
    direction.tensors["w"] = [0.0, 0.0]
    with pytest.raises(DirectionError, match=r"`directions\[0\]`\['w'\] must be a tensor"):
        direction.check_fits({"w": torch.zeros(2)}, argument="directions[0]")


class Packed(torch.nn.Module):
    """Holds its weight packed (as `torch.ao` quantized layers do), with an integer parameter of its own inside."""

    def __init__(self) -> None:
        super().__init__()
        self._packed_params = torch.nn.Module()
        self.scale_codes = torch.nn.Parameter(torch.zeros(2, dtype=torch.int8), requires_grad=False)


class Linear4bit(torch.nn.Module):
    """A layer of a quantization library (`somelib.quantized`) keeping its weight as a buffer, not a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(4, dtype=torch.uint8))


class QuantizedActivation(torch.nn.Module):
    """A layer of the same library with no weight at all."""


Linear4bit.__module__ = QuantizedActivation.__module__ = "somelib.quantized.modules.linear"


class IntegerCodes(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.codes = torch.nn.Parameter(torch.zeros(3, dtype=torch.int8), requires_grad=False)


def test_quantized_weights_are_found_packed_in_a_quantized_library_or_of_integer_dtype():
    from hf_landscape.directions.base import quantized_weights

    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), Packed(), Linear4bit(), QuantizedActivation(), torch.nn.Sequential(IntegerCodes())
    )
    assert quantized_weights(model) == {
        "1.weight": f"{__name__}.Packed",  # its own integer parameter is part of it, not reported again
        "2.weight": "somelib.quantized.Linear4bit",
        "4.0.codes": f"{__name__}.IntegerCodes, int8",
    }
    assert quantized_weights(Packed()) == {"weight": f"{__name__}.Packed"}  # the model itself
    assert quantized_weights(Linear4bit()) == {"weight": "somelib.quantized.Linear4bit"}
    assert quantized_weights(model, names=["2.weight", "0.weight"]) == {"2.weight": "somelib.quantized.Linear4bit"}


class PackedParams(torch.nn.Module):
    """The holder of a packed weight, itself with `_packed_params` (as `torch.ao`'s `LinearPackedParams` is)."""

    def __init__(self) -> None:
        super().__init__()
        self._packed_params = (torch.zeros(2, 2, dtype=torch.int8),)


class PackedLinear(torch.nn.Module):
    """A layer holding its weight in a `PackedParams` submodule (the layout of `torch.ao.nn.quantized.Linear`)."""

    def __init__(self) -> None:
        super().__init__()
        self._packed_params = PackedParams()


def test_a_packed_weight_is_reported_once_under_its_layer_not_again_under_its_holder():
    from hf_landscape.directions.base import quantized_weights

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), PackedLinear())
    assert quantized_weights(model) == {"1.weight": f"{__name__}.PackedLinear"}


def test_quantized_weights_are_refused_naming_the_model_by_default():
    from hf_landscape.directions.base import refuse_quantized

    refuse_quantized({})
    with pytest.raises(DirectionError, match=r"^`model` holds 1 quantized weight\(s\).*\['1\.weight'\]"):
        refuse_quantized({"1.weight": "somelib.quantized.Linear4bit"})


def test_a_direction_of_meta_tensors_is_refused_naming_its_tensors():
    with pytest.raises(DirectionError, match=r"^`tensors`\['w'\] is on the meta device"):
        Direction({"w": torch.empty(2, 2, device="meta")})


def test_offloaded_weights_are_refused_by_the_selection():
    from hf_landscape.directions.base import select_parameters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = torch.nn.Parameter(torch.empty(4, 4, device="meta"))  # as accelerate's offloading leaves it
    with pytest.raises(DirectionError, match=r"1 selected weight\(s\) are offloaded.*'1\.weight'"):
        select_parameters(model)
    assert list(select_parameters(model, exclude=[r"^1\."])) == ["0.weight"]


def test_the_selection_refuses_only_the_quantized_weights_it_would_take():
    from hf_landscape.directions.base import select_parameters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Linear4bit(), torch.nn.Sequential(IntegerCodes()))
    with pytest.raises(DirectionError, match=r"2 quantized weight\(s\).*\['1\.weight', '2\.0\.codes'\]"):
        select_parameters(model)  # the 1-D integer codes count as a weight: a quantized matrix stored flat
    with pytest.raises(DirectionError, match=r"1 quantized weight\(s\).*\['2\.0\.codes'\]"):
        select_parameters(model, exclude=[r"^1\."])
    assert list(select_parameters(model, include=[r"^0\."])) == ["0.weight"]


def test_an_integer_parameter_left_out_of_the_selection_does_not_end_it():
    from hf_landscape.directions.base import select_parameters

    model = torch.nn.Sequential(IntegerCodes(), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    assert list(select_parameters(model, exclude=[r"codes"])) == ["1.weight", "2.weight"]

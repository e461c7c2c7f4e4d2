"""Random directions: reproducibility, filter / layer / model normalization, selection, orthogonality, I/O."""

from __future__ import annotations

import json
import re

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
    # unit norms are not matched (that is filter normalization)
    assert not torch.allclose(
        d[GPT2_CONV1D].norm(dim=0), model.get_parameter(GPT2_CONV1D).detach().norm(dim=0), rtol=1e-2
    )


def test_model_normalization_global_norm(llama_model):
    model = llama_model()
    d = draw(model, seed=0, axes=1, normalization="model")[0]
    expected = sum(float(w.double().pow(2).sum()) for w in weights_2d(model).values()) ** 0.5
    assert d.norm() == pytest.approx(expected, rel=1e-6)
    # tensors are not rescaled one by one
    w = model.get_parameter(LLAMA_LINEAR).detach()
    assert d[LLAMA_LINEAR].norm().item() != pytest.approx(w.norm().item(), rel=1e-2)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_filter_directions_are_the_reference_arithmetic_bit_for_bit(gpt2_model, dtype):
    from hf_landscape.directions.random import _as_units, _from_units, _group_rescale, seed_for, unit_dim

    model = gpt2_model().to(dtype)
    (d,) = random_directions(model, 7, axes=1)
    params = dict(model.named_parameters())
    for name, t in d.tensors.items():
        w = params[name].detach().float()
        dim = unit_dim(model, name)
        raw = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed_for(7, 0, name)))
        expected = _from_units(_group_rescale(_as_units(raw, dim), _as_units(w, dim)), w, dim).to(dtype)
        assert t.is_contiguous() and torch.equal(t, expected), name


# --- the draw: one generator per tensor, or per block of a large tensor ----------------------------------------


def test_tensor_of_at_most_draw_block_elements_is_one_generator():
    from hf_landscape.directions.random import DRAW_BLOCK, gaussian, seed_for

    shape = (DRAW_BLOCK // 1024, 1024)  # exactly DRAW_BLOCK elements
    expected = torch.randn(shape, generator=torch.Generator().manual_seed(seed_for(3, 1, "w")))
    assert torch.equal(gaussian(shape, 3, 1, "w"), expected)


def test_larger_tensor_is_drawn_in_blocks_of_their_own(monkeypatch):
    import hf_landscape.directions.random as rnd

    monkeypatch.setattr(rnd, "DRAW_BLOCK", 64)
    drawn = rnd.gaussian((10, 30), 3, 1, "w")
    seeds = [rnd.seed_for(3, 1, f"w@{b}") for b in range(5)]  # 300 elements: blocks of 64, 64, 64, 64, 44
    expected = torch.cat(
        [torch.randn(n, generator=torch.Generator().manual_seed(s)) for n, s in zip([64, 64, 64, 64, 44], seeds)]
    )
    assert torch.equal(drawn.reshape(-1), expected)


@pytest.mark.parametrize("normalization", ["filter", "none"])
def test_random_directions_draw_large_tensors_in_blocks(gpt2_model, monkeypatch, normalization):
    import hf_landscape.directions.random as rnd

    monkeypatch.setattr(rnd, "DRAW_BLOCK", 100)  # every 2-D weight of the tiny GPT-2 is larger
    model = gpt2_model()
    d0, d1 = random_directions(model, 5, config=RandomDirectionConfig(normalization=normalization))
    params = dict(model.named_parameters())
    for axis, d in enumerate((d0, d1)):
        for name, t in d.tensors.items():
            raw = rnd.gaussian(params[name].shape, 5, axis, name)
            assert raw.numel() > 100
            if normalization == "filter":
                dim = rnd.unit_dim(model, name)
                w = params[name].detach()
                raw = rnd._from_units(rnd._group_rescale(rnd._as_units(raw, dim), rnd._as_units(w, dim)), w, dim)
            assert torch.equal(t, raw), (axis, name)


def test_random_directions_record_their_draw_block(gpt2_model):
    from hf_landscape.directions.random import DRAW_BLOCK

    (d,) = random_directions(gpt2_model(), 0, axes=1)
    assert d.config["draw_block"] == DRAW_BLOCK == 4 * 2**20


@pytest.mark.parametrize("orthogonalize", [False, True])
def test_which_tensors_are_drawn_ahead_does_not_change_the_directions(gpt2_model, monkeypatch, orthogonalize):
    import hf_landscape.directions.random as rnd

    monkeypatch.setattr(rnd, "DRAW_BLOCK", 100)  # several blocks for every 2-D weight of the tiny GPT-2
    model = gpt2_model()
    config = RandomDirectionConfig(orthogonalize=orthogonalize)
    ahead = random_directions(model, 2, config=config)  # every tensor drawn first (the default)
    monkeypatch.setattr(rnd, "PREDRAW_MIN_ELEMENTS", 2000)  # only the larger ones drawn first, the rest in their task
    mixed = random_directions(model, 2, config=config)
    sizes = {p.numel() for n, p in model.named_parameters() if n in ahead[0].tensors}
    assert min(sizes) <= 2000 < max(sizes)  # both ways are taken
    for a, b in zip(ahead, mixed):
        for name, t in a.tensors.items():
            assert torch.equal(t, b.tensors[name]), name


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

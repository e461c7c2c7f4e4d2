"""Directions along curvature (`directions="hessian"` / `"ggn"`): the top eigenvectors of the exact Hessian or
Gauss-Newton matrix of a tiny GPT-2 over the matrices a random plane moves, eigenvalues recorded; and per-block
critical sharpness on a quadratic, where each block's λc is its Rayleigh quotient; the roles of GPT-2, Llama and BERT
parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testing_utils import ExactCurvature

from hf_landscape import LandscapeProbe, critical_sharpness
from hf_landscape.curvature.blocks import role_of


@pytest.fixture(scope="module")
def exact():
    case = ExactCurvature()
    return case, case.hessian(), case.ggn()


def matrix_index(case: ExactCurvature) -> torch.Tensor:
    """Flat indices of the 2-D parameters (what the curvature directions move by default)."""
    sizes = dict(zip(case.names, [s.numel() for s in case.shapes]))
    return torch.cat(
        [
            torch.arange(case.offsets[n], case.offsets[n] + sizes[n])
            for n, s in zip(case.names, case.shapes)
            if len(s) == 2
        ]
    )


def flat(direction, case: ExactCurvature) -> torch.Tensor:
    return torch.cat(
        [direction.tensors[n].double().reshape(-1) for n, s in zip(case.names, case.shapes) if len(s) == 2]
    )


@pytest.mark.parametrize("operator", ["hessian", "ggn"])
def test_the_directions_are_the_top_two_eigenvectors_with_their_eigenvalues(exact, operator):
    case, hessian, ggn = exact
    index = matrix_index(case)
    block = (hessian if operator == "hessian" else ggn)[index][:, index]
    values, vectors = torch.linalg.eigh(block)
    probe = LandscapeProbe(case.model, case.objective, progress=False)
    directions = probe.directions(0, axes=2, kind=operator, normalization="none", tol=1e-9, max_iter=400)
    for i, direction in enumerate(directions):
        assert direction.config["eigenvalue"] == pytest.approx(float(values[-1 - i]), rel=1e-7)
        assert direction.config["operator"] == operator and set(direction.tensors) == {
            n for n, s in zip(case.names, case.shapes) if len(s) == 2
        }
        cosine = float(flat(direction, case) @ vectors[:, -1 - i])
        assert abs(cosine) == pytest.approx(1.0, abs=1e-6)


def test_a_hessian_plane_records_its_directions_and_is_the_loss_along_them(exact):
    case, _, _ = exact
    probe = LandscapeProbe(case.model, case.objective, progress=False)
    plane = probe.plane(steps=(3, 3), span=(-0.01, 0.01), directions="hessian", tol=1e-9, max_iter=400)
    recorded = plane.metadata["directions"]
    assert [d["kind"] for d in recorded] == ["hessian", "hessian"] and recorded[0]["eigenvalue"] > 0
    d0, d1 = plane.directions
    for i, j in [(0, 2), (2, 1)]:  # values are indexed [y, x]
        theta = case.theta.clone()
        for coefficient, direction in ((plane.x[i], d0), (plane.y[j], d1)):
            for name, t in direction.tensors.items():
                start = case.offsets[name]
                theta[start : start + t.numel()] += float(coefficient) * t.double().reshape(-1)
        assert plane.values[j, i] == pytest.approx(float(case.loss(theta)), rel=1e-10)


class Vector(torch.nn.Module):
    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(x.double().clone())


def test_per_block_critical_sharpness_is_each_blocks_rayleigh_quotient_on_a_quadratic():
    gen = torch.Generator().manual_seed(3)
    n = 10
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0.5, 7.0, n, dtype=torch.float64)) @ q.T
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    model = torch.nn.Module()
    model.wte = Vector(torch.randn(4, generator=gen))  # "embeddings"
    model.mlp = torch.nn.Module()
    model.mlp.c_fc = Vector(torch.randn(6, generator=gen))  # "mlp"
    assert [role_of(name) for name, _ in model.named_parameters()] == ["embeddings", "mlp"]

    def loss_fn(m):
        x = torch.cat([m.wte.x, m.mlp.c_fc.x])
        return 0.5 * x @ a @ x + b @ x

    x0 = torch.cat([model.wte.x, model.mlp.c_fc.x]).detach()
    g = a @ x0 + b
    result = critical_sharpness(model, loss_fn, per_block=True, rtol=1e-9, progress=False)
    assert set(result.per_block) == {"embeddings", "mlp"}
    for role, sl in (("embeddings", slice(0, 4)), ("mlp", slice(4, 10))):
        gb = g[sl]
        expected = float(gb @ a[sl, sl] @ gb / (gb @ gb))
        assert result.per_block[role].sharpness == pytest.approx(expected, rel=1e-8)
    assert result.sharpness == pytest.approx(float(g @ a @ g / (g @ g)), rel=1e-8)
    np.testing.assert_array_equal(torch.cat([model.wte.x, model.mlp.c_fc.x]).detach().numpy(), x0.numpy())


def roles(model: torch.nn.Module) -> dict[str, str]:
    return {name: role_of(name) for name, _ in model.named_parameters()}


def test_every_parameter_of_gpt2_llama_and_bert_has_its_role():
    from testing_utils import build_gpt2, build_llama
    from transformers import BertConfig, BertForSequenceClassification

    gpt2 = roles(build_gpt2(50, n_layer=1))
    assert {n: r for n, r in gpt2.items() if "ln" not in n} == {
        "transformer.wte.weight": "embeddings",
        "transformer.wpe.weight": "embeddings",
        "transformer.h.0.attn.c_attn.weight": "attention_qkv",  # split into q/k and v columns by `parameter_roles`
        "transformer.h.0.attn.c_attn.bias": "attention_qkv",
        "transformer.h.0.attn.c_proj.weight": "attention_vo",
        "transformer.h.0.attn.c_proj.bias": "attention_vo",
        "transformer.h.0.mlp.c_fc.weight": "mlp",
        "transformer.h.0.mlp.c_fc.bias": "mlp",
        "transformer.h.0.mlp.c_proj.weight": "mlp",
        "transformer.h.0.mlp.c_proj.bias": "mlp",
    }
    assert {r for n, r in gpt2.items() if "ln" in n} == {"norms"}
    llama = roles(build_llama(50))
    expected = {"q_proj": "attention_qk", "k_proj": "attention_qk", "v_proj": "attention_vo", "o_proj": "attention_vo"}
    expected |= {"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp", "layernorm": "norms", "norm": "norms"}
    expected |= {"embed_tokens": "embeddings", "lm_head": "head"}
    for name, role in llama.items():
        module = name.split(".")[-2]
        key = "layernorm" if module.endswith("layernorm") else module
        assert role == expected[key], name
    bert = roles(BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=16)))  # fmt: skip
    layer = "bert.encoder.layer.0."
    assert bert[layer + "attention.self.query.weight"] == bert[layer + "attention.self.key.weight"] == "attention_qk"
    assert (
        bert[layer + "attention.self.value.weight"] == bert[layer + "attention.output.dense.weight"] == "attention_vo"
    )
    assert bert[layer + "intermediate.dense.weight"] == bert[layer + "output.dense.weight"] == "mlp"
    assert bert[layer + "attention.output.LayerNorm.weight"] == bert[layer + "output.LayerNorm.weight"] == "norms"
    assert bert["bert.embeddings.word_embeddings.weight"] == bert["bert.embeddings.position_embeddings.weight"]
    assert bert["bert.embeddings.word_embeddings.weight"] == "embeddings"
    assert bert["classifier.weight"] == bert["bert.pooler.dense.weight"] == "head"
    assert "other" not in set(gpt2.values()) | set(llama.values()) | set(bert.values())

"""Result classes read back what `to_dict` wrote (`from_dict`), through JSON, without loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_landscape import ConfigError, EigenResult, SharpnessResult, TokenLossMap, TraceResult
from hf_landscape.sharpness import hessian_eigenvalues, hessian_trace, sharpness


class TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False)])


def loss_fn(model: torch.nn.Module) -> torch.Tensor:
    w0, w1 = model.layers[0].weight, model.layers[1].weight
    return (torch.arange(1.0, 5.0).view(2, 2) * w0**2).sum() + 3 * (w1**2).sum() + (w0.sum() * w1.sum()) ** 2


def through_json(result):
    return type(result).from_dict(json.loads(json.dumps(result.to_dict())))


def same_dict(a, b) -> bool:
    """Equal `to_dict`s, NaN included (as JSON writes them)."""
    return json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)


def test_eigen_result_round_trips_with_its_layers():
    result = hessian_eigenvalues(TwoLayers(), loss_fn, k=2, per_layer=True, progress=False)
    again = through_json(result)
    assert same_dict(again, result)
    np.testing.assert_array_equal(again.eigenvalues, result.eigenvalues)
    np.testing.assert_array_equal(again.intervals, result.intervals)
    assert again.per_layer.keys() == result.per_layer.keys() and again.eigenvectors is None
    assert isinstance(again.per_layer["layers.0"], EigenResult)


def test_trace_result_round_trips_with_its_intervals():
    result = hessian_trace(TwoLayers(), loss_fn, samples=5, per_layer=True, confidence=0.9, progress=False)
    again = through_json(result)
    assert same_dict(again, result) and again == result
    assert again.interval == result.interval and again.per_layer_intervals == result.per_layer_intervals


@pytest.mark.parametrize("kind", ["worst", "average"])
def test_sharpness_result_round_trips(kind):
    result = sharpness(TwoLayers(), loss_fn, rho=0.1, kind=kind, steps=2, samples=3, progress=False)
    again = through_json(result)
    assert same_dict(again, result)
    np.testing.assert_array_equal(again.losses, result.losses)
    np.testing.assert_array_equal(again.interval, result.interval)
    assert isinstance(again, SharpnessResult)


def test_token_loss_map_round_trips_with_masked_tokens():
    losses = [np.array([[2.0, np.nan], [1.0, np.nan], [1.5, np.nan]]), np.zeros((3, 0))]
    token_map = TokenLossMap(np.array([-1.0, 0.0, 1.0]), losses, [[7, 9], []], [["a", "b"], []])
    again = TokenLossMap.from_dict(json.loads(json.dumps(token_map.to_dict())))
    np.testing.assert_array_equal(again.alphas, token_map.alphas)
    for a, b in zip(again.losses, token_map.losses):
        np.testing.assert_array_equal(a, b)  # NaN where masked, as written
    assert again.token_ids == token_map.token_ids and again.tokens == token_map.tokens
    assert again.top(1) == token_map.top(1)


@pytest.mark.parametrize("cls", [EigenResult, TraceResult, SharpnessResult, TokenLossMap])
def test_incomplete_data_names_what_is_missing(cls):
    with pytest.raises(ConfigError, match="missing keys"):
        cls.from_dict({})


def test_eigen_result_round_trips_its_blocks_and_product():
    result = hessian_eigenvalues(TwoLayers(), loss_fn, k=1, per_block=True, hvp="finite_difference", progress=False)
    again = through_json(result)
    assert same_dict(again, result)
    assert again.hvp == again.per_block["other"].hvp == "finite_difference" and list(again.per_block) == ["other"]
    assert isinstance(again.per_block["other"], EigenResult)
    np.testing.assert_array_equal(again.per_block["other"].eigenvalues, result.per_block["other"].eigenvalues)


def test_trace_result_round_trips_its_blocks_and_product():
    result = hessian_trace(TwoLayers(), loss_fn, samples=3, per_block=True, hvp="finite_difference", progress=False)
    again = through_json(result)
    assert again == result and again.hvp == "finite_difference" and list(result.per_block) == ["other"]
    assert again.per_block == result.per_block and again.per_block_intervals == result.per_block_intervals


def test_eigen_values_read_back_as_float64_from_integral_json():
    data = hessian_eigenvalues(TwoLayers(), loss_fn, k=1, progress=False).to_dict()
    data.update(eigenvalues=[9], residuals=[0])
    again = EigenResult.from_dict(data)
    assert again.eigenvalues.dtype == np.float64 and again.residuals.dtype == np.float64


def test_sharpness_losses_read_back_as_float64_from_integral_json():
    data = sharpness(TwoLayers(), loss_fn, rho=0.1, kind="average", samples=2, progress=False).to_dict()
    data.update(losses=[3, 4])
    assert SharpnessResult.from_dict(data).losses.dtype == np.float64


OPTIONAL_KEYS = {
    EigenResult: {"operator": "hessian", "hvp": "exact", "per_block": {}},
    TraceResult: {
        "operator": "hessian",
        "hvp": "exact",
        "per_block": {},
        "method": "hutchinson",
        "random_samples": None,
    },
}


@pytest.mark.parametrize("cls", [EigenResult, TraceResult])
def test_data_without_the_optional_keys_reads_with_their_defaults(cls):
    """Results written before operators, products, blocks and trace methods existed read back as what they were."""
    if cls is EigenResult:
        result = hessian_eigenvalues(TwoLayers(), loss_fn, k=1, per_block=True, hvp="finite_difference", progress=False)
    else:
        result = hessian_trace(TwoLayers(), loss_fn, samples=3, per_block=True, hvp="finite_difference", progress=False)
    data = result.to_dict()
    for key in OPTIONAL_KEYS[cls]:
        del data[key]
    again = cls.from_dict(data)
    assert {key: getattr(again, key) for key in OPTIONAL_KEYS[cls]} == OPTIONAL_KEYS[cls]


def test_eigen_result_reads_back_its_operator():
    data = hessian_eigenvalues(TwoLayers(), loss_fn, k=1, progress=False).to_dict()
    data["operator"] = "ggn"  # as a Gauss-Newton run writes it
    assert EigenResult.from_dict(json.loads(json.dumps(data))).operator == "ggn"


def test_trace_result_writes_its_block_intervals():
    result = hessian_trace(TwoLayers(), loss_fn, samples=3, per_block=True, progress=False)
    assert result.to_dict()["per_block_intervals"] == {"other": list(result.per_block_intervals["other"])}

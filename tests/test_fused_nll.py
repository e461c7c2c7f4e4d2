"""The one-kernel token loss for half-precision logits on a GPU (`hf_landscape.objectives.fused_nll`).

The kernel needs CUDA and Triton, so its tests are `gpu` tests (`make test-gpu`). On the CPU the objective keeps
the log-softmax path; the test below checks that it is the one taken there.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import build_gpt2
from testing_utils import require_gpu

from hf_landscape import CausalLMObjective, LandscapeProbe
from hf_landscape.objectives import fused_nll

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(12 + i % 5)] for i in range(6)]  # padded batches


def reference(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    flat = logits.reshape(-1, logits.shape[-1])[rows].float()
    return -torch.log_softmax(flat, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def random_case(rows=300, vocab=50257, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = (4 * torch.randn(rows, vocab, device="cuda", generator=g)).to(dtype)
    index = torch.randperm(rows, device="cuda", generator=g)[: rows // 2]
    targets = torch.randint(0, vocab, (index.shape[0],), device="cuda", generator=g)
    return logits, index, targets


def test_cpu_logits_take_the_log_softmax_path(monkeypatch):
    monkeypatch.setattr(fused_nll, "MIN_LOGITS", 0)  # size and Triton pass, so only the device decides
    monkeypatch.setattr(fused_nll, "_kernel", lambda: object())
    assert not fused_nll.available(torch.zeros(2, 3, 5, dtype=torch.bfloat16))


def recording_kernel(monkeypatch) -> list:
    """`fused_nll` as on a GPU, its kernel replaced by one that records its arguments and returns zeros."""
    calls: list = []
    monkeypatch.setattr(fused_nll, "available", lambda logits: True)
    monkeypatch.setattr(fused_nll, "token_nll", lambda *args: calls.append(args) or torch.zeros(len(args[1])))
    return calls


def padded_batch():
    from hf_landscape.objectives import text_data

    examples = [(ids, ids) for ids in IDS[:2]]  # lengths 12 and 13
    cpu = torch.device("cpu")
    return text_data.make_batches(examples, cpu, batch_size=2, padding_side="right", sort_by_length=False, pad=0)[0]


def test_the_kernel_reads_stacked_points_rows_batch_times_length_apart(monkeypatch):
    from hf_landscape.objectives.nll import token_nll

    calls = recording_kernel(monkeypatch)
    b = padded_batch()
    logits = torch.zeros(2, *b.input_ids.shape, 7)  # two stacked points
    with torch.no_grad():
        token_nll(logits, b)
    ((given, rows, targets),) = calls
    step = b.input_ids.numel()
    assert given is logits
    assert torch.equal(rows, torch.cat([b.counted, b.counted + step]))
    assert torch.equal(targets, torch.cat([b.targets, b.targets]))


def test_the_kernel_takes_logits_that_need_no_gradient_while_autograd_is_on(monkeypatch):
    from hf_landscape.objectives.nll import token_nll

    calls = recording_kernel(monkeypatch)
    b = padded_batch()
    with torch.enable_grad():
        token_nll(torch.zeros(*b.input_ids.shape, 7), b)
    assert len(calls) == 1


def test_a_head_is_judged_by_its_weights_device_dtype_rows_and_the_autocast_state(monkeypatch):
    from hf_landscape.objectives import nll

    calls: list = []
    monkeypatch.setattr(nll, "_alignment_pays", lambda *args: calls.append(args) or False)
    head = torch.nn.Linear(8, 300, bias=False).to(torch.bfloat16)
    assert nll._pads_head(head) is False
    assert calls == [("cpu", torch.bfloat16, 300, False)]


def test_a_kernel_that_cannot_launch_falls_back_to_log_softmax(monkeypatch, caplog):
    model = build_gpt2(100, seed=0).eval()
    objective = CausalLMObjective({"input_ids": IDS}, batch_size=4)
    with torch.inference_mode():
        expected = objective.evaluate(model).loss
    failed: list = []
    monkeypatch.setattr(fused_nll, "_FAILED", failed)
    monkeypatch.setattr(fused_nll, "available", lambda logits: not failed)  # as on a GPU, until it fails

    def broken(*args):
        raise RuntimeError("no C compiler for Triton's launcher")

    monkeypatch.setattr(fused_nll, "token_nll", broken)
    with torch.inference_mode(), caplog.at_level(logging.WARNING):
        assert objective.evaluate(model).loss == expected
    assert len(failed) == 1  # off for good after the first failure: the second batch never tried it
    assert "no C compiler" in caplog.text


@require_gpu
def test_float32_and_float64_logits_take_the_log_softmax_path(monkeypatch):
    monkeypatch.setattr(fused_nll, "MIN_LOGITS", 0)
    assert fused_nll.available(torch.zeros(1, 2, 5, device="cuda", dtype=torch.bfloat16))
    assert not fused_nll.available(torch.zeros(1, 2, 5, device="cuda", dtype=torch.float32))
    assert not fused_nll.available(torch.zeros(1, 2, 5, device="cuda", dtype=torch.float64))


@require_gpu
def test_small_evaluations_take_the_log_softmax_path():
    per_point = torch.empty(1, 8, 128, 4096, device="cuda", dtype=torch.bfloat16)  # (a)'s 2^22 logits per batch
    assert not fused_nll.available(per_point)
    assert not fused_nll.available(per_point.expand(64, 1, 8, 128, 4096))  # however many stacked points
    assert fused_nll.available(torch.empty(16, 128, 50257, device="cuda", dtype=torch.bfloat16))  # GPT-2 small


def test_probe_tells_the_objective_its_autocast_dtype(monkeypatch):
    expected: list = []
    monkeypatch.setattr(CausalLMObjective, "expect_dtype", lambda self, dtype: expected.append(dtype))
    LandscapeProbe(build_gpt2(100, seed=0), CausalLMObjective({"input_ids": IDS}), autocast="bfloat16")
    assert expected == [torch.float32, torch.bfloat16]  # the head's dtype at bind, then the autocast one


@require_gpu
def test_a_float32_model_under_bf16_autocast_warms_the_bf16_kernel_up(monkeypatch):
    monkeypatch.setattr(fused_nll, "MIN_LOGITS", 0)
    monkeypatch.setattr(fused_nll, "_WARMING", {})
    model = build_gpt2(100, seed=0).to("cuda").eval()
    LandscapeProbe(model, CausalLMObjective({"input_ids": IDS}, batch_size=4), autocast="bfloat16")
    assert list(fused_nll._WARMING) == [(torch.device("cuda", 0), torch.bfloat16)]  # none for the float32 head
    fused_nll._WARMING[(torch.device("cuda", 0), torch.bfloat16)].join(timeout=120)


@require_gpu
def test_binding_a_large_evaluation_warms_the_kernel_up(monkeypatch):
    monkeypatch.setattr(fused_nll, "MIN_LOGITS", 0)
    monkeypatch.setattr(fused_nll, "_WARMING", {})
    model = build_gpt2(100, seed=0).to("cuda", torch.float16).eval()
    CausalLMObjective({"input_ids": IDS}, batch_size=4).bind(model)
    thread = fused_nll._WARMING[(torch.device("cuda", 0), torch.float16)]
    thread.join(timeout=120)
    assert not thread.is_alive() and not fused_nll._FAILED


@require_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("vocab", [50257, 4096, 100])
def test_equals_log_softmax_to_float32_rounding(dtype, vocab):
    logits, rows, targets = random_case(vocab=vocab, dtype=dtype)
    got = fused_nll.token_nll(logits, rows, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference(logits, rows, targets), rtol=2e-6, atol=2e-6)


@require_gpu
def test_strided_rows_equal_contiguous_rows():
    padded, rows, targets = random_case(vocab=50304)
    view = padded[:, :50257]  # the aligned head's logits: a strided view, read without a copy
    got = fused_nll.token_nll(view, rows, targets)
    torch.testing.assert_close(got, reference(view, rows, targets), rtol=2e-6, atol=2e-6)
    assert torch.equal(got, fused_nll.token_nll(view.contiguous(), rows, targets))  # one code for any stride


@require_gpu
def test_a_row_does_not_depend_on_the_other_rows():
    logits, rows, targets = random_case()
    together = fused_nll.token_nll(logits, rows, targets)
    alone = torch.cat([fused_nll.token_nll(logits, rows[i : i + 1], targets[i : i + 1]) for i in range(5)])
    assert torch.equal(together[:5], alone)


@require_gpu
def test_infinite_and_nan_logits():
    logits = torch.zeros(4, 5000, device="cuda", dtype=torch.bfloat16)
    logits[0, :] = float("-inf")
    logits[0, 7] = 0.0  # only the target is finite: probability 1
    logits[1, 3] = float("nan")
    logits[2, 9] = float("inf")
    logits[3, 11] = float("-inf")  # the target is impossible
    rows = torch.arange(4, device="cuda")
    targets = torch.tensor([7, 0, 0, 11], device="cuda")
    got = fused_nll.token_nll(logits, rows, targets).tolist()
    assert got[0] == 0.0
    assert np.isnan(got[1]) and np.isnan(got[2])
    assert got[3] == float("inf")


@require_gpu
def test_objective_loss_equals_the_log_softmax_path(monkeypatch):
    monkeypatch.setattr(fused_nll, "MIN_LOGITS", 0)  # a tiny model's logits
    model = build_gpt2(100, seed=0).to("cuda", torch.bfloat16).eval()  # no dropout
    objective = CausalLMObjective({"input_ids": IDS}, batch_size=4)
    calls = []
    kernel = fused_nll.token_nll
    monkeypatch.setattr(fused_nll, "token_nll", lambda *args: calls.append(1) or kernel(*args))
    with torch.inference_mode():  # the kernel has no backward, so it runs only where no gradient is wanted
        fused = objective.evaluate(model).loss
        assert len(calls) == 2  # two batches, both through the kernel
        monkeypatch.setattr(fused_nll, "available", lambda logits: False)
        plain = objective.evaluate(model).loss
    assert len(calls) == 2
    assert abs(fused - plain) <= 1e-6 * abs(plain)


@require_gpu
def test_stacked_points_equal_one_point_per_forward(monkeypatch):
    monkeypatch.setattr(fused_nll, "MIN_LOGITS", 0)
    model = build_gpt2(100, seed=0).to("cuda", torch.bfloat16).eval()  # no dropout
    objective = CausalLMObjective({"input_ids": IDS}, batch_size=4)
    one = LandscapeProbe(model, objective, progress=False, points_per_forward=1).line(steps=5, seed=0)
    stacked = LandscapeProbe(model, objective, progress=False, points_per_forward=5).line(steps=5, seed=0)
    assert np.array_equal(one.values, stacked.values)


@require_gpu
def test_loss_terms_stay_differentiable():
    model = build_gpt2(100, seed=0).to("cuda", torch.bfloat16).eval()  # no dropout
    objective = CausalLMObjective({"input_ids": IDS}, batch_size=4)
    total = sum(objective.loss_terms(model))  # the kernel has no backward: these take the log-softmax path
    total.backward()
    assert model.transformer.wte.weight.grad.abs().sum() > 0

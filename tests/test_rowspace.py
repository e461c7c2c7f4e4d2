"""Products of a basis with a long vector split into column blocks where one product would address 2^31 entries
(cuBLAS's 32-bit indices: a 1.1B-parameter model's Lanczos basis of two rows failed on the GPU with an illegal memory
access). Here the limit is lowered so that the tiny problems of the curvature tests take the blocked path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_landscape import hessian_eigenvalues, hessian_spectrum, hessian_trace
from hf_landscape.curvature import rowspace
from tests.testing_utils import require_gpu


class Vector(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(torch.linspace(-1.0, 1.0, n, dtype=torch.float64))


def quadratic(eigenvalues, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ q.T
    return Vector(n), (lambda m: 0.5 * m.x @ a @ m.x)


SPECTRUM = np.concatenate([[9.0, 7.0, 5.0], np.linspace(-2.0, 3.0, 37)])


def test_blocks_cover_every_column_once_and_each_stays_under_the_limit(monkeypatch):
    monkeypatch.setattr(rowspace, "MAX_ENTRIES", 64)
    rows = torch.zeros(3, 100)
    blocks = rowspace._blocks(rows)
    assert blocks is not None and len(blocks) == 2  # one row's slice of a block is one product: 64 columns at most
    covered = torch.cat([torch.arange(100)[cols] for cols in blocks])
    assert covered.tolist() == list(range(100))
    assert all(len(range(100)[cols]) <= 64 for cols in blocks)


def test_the_long_path_multiplies_one_contiguous_row_slice_at_a_time(monkeypatch):
    monkeypatch.setattr(rowspace, "MAX_ENTRIES", 64)
    seen = []
    dot = torch.dot

    def recording_dot(a, b):
        seen.append((a.dim(), a.is_contiguous(), a.numel()))
        return dot(a, b)

    monkeypatch.setattr(torch, "dot", recording_dot)
    rows, w = torch.ones(3, 100, dtype=torch.float64), torch.ones(100, dtype=torch.float64)
    h = rowspace.coefficients(rows, w)
    assert h.tolist() == [100.0, 100.0, 100.0]
    assert seen == [(1, True, 64), (1, True, 36)] * 3


def test_a_product_that_fits_is_one_product():
    assert rowspace._blocks(torch.zeros(3, 100)) is None


def test_blocked_products_equal_the_one_product(monkeypatch):
    g = torch.Generator().manual_seed(0)
    rows, w = (
        torch.randn(4, 1000, generator=g, dtype=torch.float64),
        torch.randn(1000, generator=g, dtype=torch.float64),
    )
    expected_h, expected_w = rows @ w, w - rows.T @ (rows @ w)
    monkeypatch.setattr(rowspace, "MAX_ENTRIES", 50)
    h = rowspace.remove(w, rows)
    torch.testing.assert_close(h, expected_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w, expected_w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("limit", [rowspace.MAX_ENTRIES, 16])
def test_lanczos_finds_the_same_top_eigenvalues_with_blocked_products(monkeypatch, limit):
    monkeypatch.setattr(rowspace, "MAX_ENTRIES", limit)
    model, loss_fn = quadratic(SPECTRUM)
    result = hessian_eigenvalues(model, loss_fn, k=3, tol=1e-10, progress=False)
    np.testing.assert_allclose(result.eigenvalues, [9.0, 7.0, 5.0], rtol=1e-9)


def test_a_spectrum_with_blocked_reorthogonalization_equals_the_one_product(monkeypatch):
    model, loss_fn = quadratic(SPECTRUM)
    whole = hessian_spectrum(model, loss_fn, steps=8, probes=2, progress=False)
    monkeypatch.setattr(rowspace, "MAX_ENTRIES", 16)
    blocked = hessian_spectrum(model, loss_fn, steps=8, probes=2, progress=False)
    np.testing.assert_allclose(blocked.nodes, whole.nodes, rtol=1e-10)
    np.testing.assert_allclose(blocked.weights, whole.weights, rtol=1e-8, atol=1e-12)


def test_hutchpp_with_blocked_projections_gives_the_same_trace(monkeypatch):
    model, loss_fn = quadratic(SPECTRUM)
    whole = hessian_trace(model, loss_fn, samples=12, method="hutch++", progress=False).trace
    monkeypatch.setattr(rowspace, "MAX_ENTRIES", 16)
    blocked = hessian_trace(model, loss_fn, samples=12, method="hutch++", progress=False).trace
    assert blocked == pytest.approx(whole, rel=1e-10)


@require_gpu
def test_a_billion_column_basis_on_the_gpu_gives_exact_components():
    """Three rows of 1.1 B float32 columns (13 GiB): each row is 1 on its own 1,000 columns past 2^31 entries into
    the basis, 0 elsewhere, and w is 2 everywhere; sums of small integers are exact in float32."""
    n, span = 1_100_048_384, 1000
    rows = torch.zeros(3, n, device="cuda")
    starts = [n - 3 * span + i * span for i in range(3)]
    for i, lo in enumerate(starts):
        rows[i, lo : lo + span] = 1.0
    w = torch.full((n,), 2.0, device="cuda")
    h = rowspace.remove(w, rows)
    assert h.tolist() == [2.0 * span] * 3
    assert w[: starts[0]].unique().tolist() == [2.0]
    assert w[starts[0] :].unique().tolist() == [2.0 - 2.0 * span]

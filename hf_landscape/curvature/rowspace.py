"""Products of a few long rows (a Lanczos or Hutch++ basis) with a long vector, by column blocks where one product
would address 2^31 entries or more: cuBLAS indexes a matrix with 32-bit integers, so the two-row basis of a
1.1B-parameter model already fails in one matrix-vector product (an illegal memory access on the GPU). Where one
product fits, it is that product, so small problems give exactly the values they always did."""

from __future__ import annotations

import torch

MAX_ENTRIES = 1 << 30  # entries of one block's matrix: well below 2^31 for cuBLAS's 32-bit indices


def _blocks(rows: torch.Tensor) -> list[slice] | None:
    count, n = rows.shape
    if count * n < MAX_ENTRIES:
        return None
    width = max(1, MAX_ENTRIES // max(count, 1))
    return [slice(lo, lo + width) for lo in range(0, n, width)]


def coefficients(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`rows @ w`: the components of `w` along each row."""
    blocks = _blocks(rows)
    if blocks is None:
        return rows @ w
    h = torch.zeros(rows.shape[0], dtype=torch.promote_types(rows.dtype, w.dtype), device=w.device)
    for cols in blocks:
        h += rows[:, cols] @ w[cols]
    return h


def subtract(w: torch.Tensor, rows: torch.Tensor, h: torch.Tensor) -> None:
    """`w -= rows.T @ h`, in place."""
    blocks = _blocks(rows)
    if blocks is None:
        w.sub_(rows.T @ h)
        return
    for cols in blocks:
        w[cols].sub_(rows[:, cols].T @ h)


def remove(w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Remove from `w`, in place, its components along the (orthonormal) rows; return them."""
    h = coefficients(rows, w)
    subtract(w, rows, h)
    return h

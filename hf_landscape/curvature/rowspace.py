"""Products of a few long rows (a Lanczos or Hutch++ basis) with a long vector, one row and one column block at a
time where one product would address 2^31 entries or more. cuBLAS indexes a matrix with 32-bit integers, so the
two-row basis of a 1.1B-parameter model already fails in one matrix-vector product (an illegal memory access on the
GPU); and a column block of several rows is no remedy, because its rows lie a whole row length apart in memory
(on an H200 a three-row block of a 1.1B basis failed in `cublasSgemv`). Each row's slice of a block is contiguous,
so the long path multiplies 1-D slices of at most `MAX_ENTRIES` entries. Where one product fits, it is that product,
so small problems give exactly the values they always did."""

from __future__ import annotations

import torch

MAX_ENTRIES = 1 << 30  # entries of the largest product: well below 2^31 for cuBLAS's 32-bit indices


def _blocks(rows: torch.Tensor) -> list[slice] | None:
    """The column blocks of the long path (each at most `MAX_ENTRIES` columns), or None where one product fits."""
    count, n = rows.shape
    if count * n < MAX_ENTRIES:
        return None
    return [slice(lo, lo + MAX_ENTRIES) for lo in range(0, n, MAX_ENTRIES)]


def coefficients(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`rows @ w`: the components of `w` along each row."""
    blocks = _blocks(rows)
    if blocks is None:
        return rows @ w
    h = torch.zeros(rows.shape[0], dtype=torch.promote_types(rows.dtype, w.dtype), device=w.device)
    for i in range(rows.shape[0]):
        for cols in blocks:
            h[i] += torch.dot(rows[i, cols], w[cols])
    return h


def subtract(w: torch.Tensor, rows: torch.Tensor, h: torch.Tensor) -> None:
    """`w -= rows.T @ h`, in place."""
    blocks = _blocks(rows)
    if blocks is None:
        w.sub_(rows.T @ h)
        return
    h = h.to(w.dtype)
    for i in range(rows.shape[0]):
        for cols in blocks:
            w[cols].addcmul_(rows[i, cols], h[i], value=-1)


def remove(w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Remove from `w`, in place, its components along the (orthonormal) rows; return them."""
    h = coefficients(rows, w)
    subtract(w, rows, h)
    return h

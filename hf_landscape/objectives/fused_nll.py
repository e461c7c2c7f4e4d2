"""Next-token negative log-likelihoods read straight from the logits on a GPU, in one kernel.

`nll = logsumexp(logits[row]) − logits[row, target]`, accumulated in float32, for a list of rows of the logits.
`torch.log_softmax(logits, dtype=torch.float32)` computes the same numbers but writes a float32 copy of every
log-probability (twice the bytes of bf16 logits) and, for the strided logits of an aligned head, first copies
the logits contiguous: on GPT-2 small (16 × 128 tokens, bf16, H100, 2026-11-22) that takes 0.9 ms of a 3.2 ms
evaluation.
This kernel reads each counted row once, through its stride and a row index (no gather copy), and writes one
float32 per row. Values equal the log-softmax path to float32 rounding (the sum of exponentials runs in another
order); per row they never depend on how many rows, points or batches are evaluated together.

Hand-written because the libraries that fuse cross-entropy do not fit a graph-recorded evaluation: Liger-Kernel's
`cross_entropy_forward` syncs with the host (`.item()` on the token count, asserts on the targets) and returns
the per-token losses in the logits' dtype (bf16), and `torch.compile` of the same expression
(`nll._full_nll`, used under `compile=True`) costs its compile time at the first plane.

Used by `causal_lm._token_nll` for CUDA logits in float16 or bfloat16 of at least `MIN_LOGITS` per point when
Triton is importable and no gradient is wanted (the kernel has no backward); everything else (CPU, float32 and
float64 logits, small evaluations, `compile=True`, `loss_terms`) keeps the log-softmax path. float32 logits gain
least: the log-softmax writes no more bytes than it reads there, and an fp32 evaluation of GPT-2 small spends
16 ms on its matrix products against ~0.4 ms on the loss. Triton's first kernel in a
process costs ~0.6 s (its launcher and the compiled kernel loaded from its disk cache; ~2 s on a machine that
never compiled it), so `warm_up` starts it in a background thread when the objective is bound to the model, to
overlap the directions' draw.

Measured on an H100 (2026-11-22, `benchmarks/token_loss.py`, bf16): GPT-2 small, the loss alone 7.5x faster (0.12 against
0.91 ms), the recorded one-point evaluation 1.32x, a 21 x 21 plane 1.21x (233 against 192 points/s).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import torch

logger = logging.getLogger(__name__)

BLOCK = 4096  # vocabulary entries per step of a row's loop: GPT-2's 50257 in 13 steps, (a)'s 4096 in one
# Used from this many logits per point (batch × length × vocabulary): below it a plane does not earn back Triton's
# one-time set-up of the kernel (benchmarks/README.md, "Measurements behind defaults").
MIN_LOGITS = 1 << 24
DTYPES = (torch.float16, torch.bfloat16)  # the logits' dtypes it takes (float32 gains too little, see above)

_WARMING: dict[tuple[torch.device, torch.dtype], threading.Thread] = {}
_FAILED: list[BaseException] = []


@functools.cache
def _kernel() -> Any:
    """The Triton kernel, compiled at its first launch (then cached on disk by Triton); None without Triton."""
    try:
        import triton
        import triton.language as tl
    except Exception as err:  # not installed (CPU builds of torch), or installed but broken
        logger.debug("Triton unavailable (%s: %s): the token loss uses log-softmax", type(err).__name__, err)
        return None

    # The row stride and vocabulary size are not specialized on (no recompile per vocabulary, and the same code,
    # so the same sum order, for strided and contiguous rows).
    @triton.jit(do_not_specialize=["row_stride", "vocab"])
    def token_nll(x_ptr, row_stride, rows_ptr, targets_ptr, out_ptr, vocab, BLOCK: tl.constexpr):  # noqa: N803
        i = tl.program_id(0)
        base = x_ptr + tl.load(rows_ptr + i).to(tl.int64) * row_stride
        cols = tl.arange(0, BLOCK)
        # Online logsumexp (Milakov & Gimelshein 2018), one running maximum and sum per lane, float32.
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            x = tl.load(base + start + cols, mask=start + cols < vocab, other=float("-inf")).to(tl.float32)
            new = tl.maximum(m, x)
            safe = tl.where(new == float("-inf"), 0.0, new)  # a lane that has seen only -inf keeps s = 0
            s = s * tl.exp(m - safe) + tl.exp(x - safe)
            m = new
        top = tl.max(m, 0)
        safe_top = tl.where(top == float("-inf"), 0.0, top)
        total = tl.sum(s * tl.exp(m - safe_top), 0)
        picked = tl.load(base + tl.load(targets_ptr + i)).to(tl.float32)
        tl.store(out_ptr + i, top + tl.log(total) - picked)

    return token_nll


def available(logits: torch.Tensor) -> bool:
    """Whether `token_nll` runs for these logits (..., batch, length, vocab): float16 or bfloat16 on a CUDA device,
    at least `MIN_LOGITS` per point, with Triton importable. The choice depends on the dtype and shapes alone, so
    every point of a grid takes the same path."""
    if not (
        logits.is_cuda and logits.dtype in DTYPES and logits.shape[-3:].numel() >= MIN_LOGITS and _kernel() is not None
    ):
        return False
    _wait(logits.device)  # a warm-up that failed (no compiler, an unsupported GPU) turns the kernel off for good
    return not _FAILED


def disable(err: BaseException) -> None:
    """Turn the kernel off for the rest of the process after it failed to build or launch (logged once)."""
    if not _FAILED:
        logger.warning(
            "the fused token-loss kernel is unavailable (%s: %s); using log-softmax", type(err).__name__, err
        )
    _FAILED.append(err)


def _wait(device: torch.device) -> None:
    """Join every warm-up on `device`: none may still run when the loss is computed (or a CUDA graph records)."""
    for (on, _), thread in list(_WARMING.items()):
        if on == device and thread.is_alive():
            thread.join()


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """Compile (or load from Triton's disk cache) the kernel for `dtype` logits on `device` in a background
    thread, so that its one-time cost overlaps the directions' draw (`CausalLMObjective.bind` calls it when the
    probe is made); `token_nll` waits for it. Once per (device, dtype) and process."""
    if (device, dtype) in _WARMING or _kernel() is None:
        return

    def run() -> None:
        try:
            with torch.cuda.device(device):
                logits = torch.zeros(1, 16, device=device, dtype=dtype)
                index = torch.zeros(1, device=device, dtype=torch.long)
                _launch(logits, index, index)
                torch.cuda.current_stream(device).synchronize()
        except Exception as err:  # no compiler, an unsupported GPU: the log-softmax path everywhere
            disable(err)

    thread = threading.Thread(target=run, name="hf_landscape-fused-nll", daemon=True)
    _WARMING[(device, dtype)] = thread
    thread.start()


def token_nll(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """float32 `logsumexp(logits[r]) − logits[r, t]` for each row index `r` (into `logits` flattened to
    (positions, vocab)) and target `t`. No host sync: it can run inside a recorded CUDA graph. Callers check
    `available(logits)` first, which also waits for a warm-up still running on the device."""
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)  # a view for the (aligned) head's logits: rows strided, columns contiguous
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    return _launch(flat, rows, targets)


def _launch(flat: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    out = torch.empty(rows.shape[0], dtype=torch.float32, device=flat.device)
    if rows.shape[0]:
        _kernel()[(rows.shape[0],)](flat, flat.stride(0), rows, targets, out, flat.shape[-1], BLOCK=BLOCK, num_warps=8)
    return out

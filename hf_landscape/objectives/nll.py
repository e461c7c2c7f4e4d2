"""Next-token negative log-likelihoods of a causal LM's logits, and its LM head computed at an aligned width.

`token_nll` is the loss kernel of `CausalLMObjective`: the NLL of every counted prediction of a batch, from the
logits of one point or of stacked points, in float32 (float64 for float64 logits), by the fused GPU kernel
(`fused_nll`) where it applies, a compiled logsumexp under `compile=True`, and log-softmax elsewhere.
`aligned_output_head` pads the LM head's product to `HEAD_ALIGNMENT` rows where cuBLAS would otherwise take a slow
kernel. What does not live here: the data and its batches (`text_data`), the objective (`causal_lm`).
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from . import fused_nll
from .base import COMPILING

if TYPE_CHECKING:
    from .text_data import Batch

# cuBLAS runs a half-precision product whose output rows are not 16-byte aligned on a slow kernel (GPT-2's head 7x
# slower, benchmarks/README.md): the head's output is computed this much wider and viewed back.
HEAD_ALIGNMENT = 64


@contextlib.contextmanager
def aligned_output_head(model: torch.nn.Module) -> Iterator[None]:
    """While active, the model's LM head computes its output `HEAD_ALIGNMENT`-aligned: the weight (and bias)
    padded with zero rows, the extra logits cut off by a view, so the model and the loss see exactly the
    vocabulary's logits. Only where it pays (`_pads_head`): a plain `nn.Linear` head on a GPU in half precision
    (or under autocast) whose vocabulary is not a multiple of 8. The head's weight is read at each call, so
    perturbed, stacked (vmap) or swapped-in weights are padded as they are; nothing of the model is written,
    and the instance attribute is removed on exit, also after an exception."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, torch.nn.Module) or not _pads_head(head):
        yield
        return
    # A method bound to the head: a compiled forward inlines the same function every call (no recompile).
    head.forward = types.MethodType(_aligned_forward, head)
    try:
        yield
    finally:
        del head.forward


def _pads_head(head: torch.nn.Module) -> bool:
    weight = getattr(head, "weight", None)
    return (
        type(head) is torch.nn.Linear  # not a subclass, a quantized or a LoRA layer: their forward is their own
        and "forward" not in head.__dict__  # nor one an accelerate hook or another editor already replaced
        and isinstance(weight, torch.Tensor)
        and _alignment_pays(weight.device.type, weight.dtype, weight.shape[0], torch.is_autocast_enabled("cuda"))
    )


def _alignment_pays(device_type: str, dtype: torch.dtype, rows: int, autocast: bool = False) -> bool:
    """A GPU product in half precision (or under autocast) whose output rows are not 16-byte aligned. float32
    products ran at the same speed either way (50 TFLOP/s without TF32), so they are left alone."""
    return device_type == "cuda" and (autocast or dtype in (torch.float16, torch.bfloat16)) and rows % 8 != 0


def _aligned_forward(head: Any, x: torch.Tensor) -> torch.Tensor:
    weight, bias = head.weight, head.bias  # read at each call: perturbed, stacked or swapped-in weights
    vocab = int(weight.shape[0])
    pad = -vocab % HEAD_ALIGNMENT
    out = F.linear(x, F.pad(weight, (0, 0, 0, pad)), None if bias is None else F.pad(bias, (0, pad)))
    return out[..., :vocab]


def token_nll(logits: torch.Tensor, b: Batch) -> torch.Tensor:
    """Next-token negative log-likelihoods of the predictions that count, flat in row-major order, from the
    logits (..., batch, length, vocab) of a batch (a leading axis holds stacked points, if any).

    On a GPU (float16/bfloat16 logits, at least `fused_nll.MIN_LOGITS` per point, no gradient wanted) one kernel
    computes logsumexp − target logit per counted row (`fused_nll`). Elsewhere the log-softmax reads the
    model's logits once and writes float32 (`dtype=`: half-precision logits are upcast inside the kernel, never
    copied to float32 first). Either way the loss is float32 (float64 for float64 logits). A batch where every prediction
    counts is taken whole, the last position's 1/length extra work buying no gather; otherwise only the rows that
    count are gathered, by a precomputed index (no host sync, so the loss can be recorded in a CUDA graph)."""
    lead = logits.shape[:-3]
    if fused_nll.available(logits) and not COMPILING.get() and not (torch.is_grad_enabled() and logits.requires_grad):
        # On a GPU: one kernel reads the counted rows in place (`fused_nll`; no backward, so not for
        # `loss_terms`). Stacked points' rows sit `batch · length` positions apart.
        points = math.prod(lead)
        rows, targets = b.counted, b.targets
        if points > 1:
            step = logits.shape[-3] * logits.shape[-2]
            rows = (torch.arange(points, device=rows.device).unsqueeze(1) * step + rows).reshape(-1)
            targets = targets.repeat(points)
        try:
            return fused_nll.token_nll(logits, rows, targets)
        except (torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as err:  # Triton cannot build or launch it here (e.g. no C compiler for its launcher)
            if logits.is_cuda and torch.cuda.is_current_stream_capturing():
                raise  # a recording that failed: the graph module falls back to eager, which lands here again
            fused_nll.disable(err)
    dtype = _loss_dtype(logits.dtype)
    if b.full:
        targets = b.targets.view(b.mask.shape).expand(*lead, *b.mask.shape)
        if COMPILING.get():
            return _compiled_full_nll()(logits, targets)
        logp = torch.log_softmax(logits, dim=-1, dtype=dtype)[..., :-1, :]
        return -logp.gather(-1, targets.unsqueeze(-1)).reshape(-1)
    rows = logits.flatten(-3, -2).index_select(-2, b.counted)  # (..., counted, vocab)
    logp = torch.log_softmax(rows, dim=-1, dtype=dtype)
    targets = b.targets.expand(*lead, b.targets.shape[0])
    return -logp.gather(-1, targets.unsqueeze(-1)).reshape(-1)


def _full_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logsumexp − the target's logit, in float32, over every position but the last: the same value as the
    log-softmax path to float32 rounding. Compiled (`_compiled_full_nll`) it is one reduction kernel that reads
    the logits once per pass, with no float32 logits or log-probabilities written."""
    x = logits[..., :-1, :].to(_loss_dtype(logits.dtype))
    picked = x.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (torch.logsumexp(x, dim=-1) - picked).reshape(-1)


_COMPILED_FULL_NLL: Any = None


def _compiled_full_nll() -> Any:
    """`_full_nll` under `torch.compile` (made once per process), for probes run with `compile=True`."""
    global _COMPILED_FULL_NLL
    if _COMPILED_FULL_NLL is None:
        _COMPILED_FULL_NLL = torch.compile(_full_nll, dynamic=False)
    return _COMPILED_FULL_NLL


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision logits, the logits' own dtype for float32/float64."""
    return torch.promote_types(dtype, torch.float32)

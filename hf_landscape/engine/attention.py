"""Scaled dot-product attention that `torch.func.vmap` runs as one call over all stacked grid points.

The batched-points engine (`engine.StackedPoints`) evaluates k grid points in one forward by vmapping
`functional_call` over k stacked weight copies. Matrix products batch well under vmap, but PyTorch has no
batching rule for SDPA's fused kernels (flash, memory-efficient, CPU flash): vmap falls back to a Python loop
of k separate attention calls, which is what kept batched points from paying off on GPT-2-small-sized models.

Here SDPA is wrapped in a custom operator (`hf_landscape::sdpa`) whose vmap rule folds the vmapped axis into
the batch axis and calls SDPA once on k·B sequences. Each (sequence, head) is computed exactly as before, so
the values equal the one-point path. `stacked_attention(model)` switches a model's `"sdpa"` attention to this
implementation (registered with transformers' `AttentionInterface` as `"hf_landscape_sdpa"`) for the duration
of a block. Calls that use features the wrapper does not cover (a KV cache, position bias, soft-capping,
dropout, returned attention weights) go to transformers' own SDPA function unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import redact

logger = logging.getLogger(__name__)

NAME = "hf_landscape_sdpa"


def _sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    scale: float | None,
    is_causal: bool,
    enable_gqa: bool,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` as a custom operator (no dropout). The output (B, H, L, D) is laid out
    as (B, L, H, D), whichever kernel ran, as the fake below says (a compiled graph checks it): that is the
    layout the fused kernels write and the one the caller's `transpose(1, 2).contiguous()` wants, so it is
    usually no copy at all."""
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, scale=scale, is_causal=is_causal, enable_gqa=enable_gqa
    )
    return out.transpose(1, 2).contiguous().transpose(1, 2) if out.dim() == 4 else out.contiguous()


def _sdpa_fake(query, key, value, attn_mask, scale, is_causal, enable_gqa):  # type: ignore[no-untyped-def]
    shape = (*query.shape[:-1], value.shape[-1])
    if len(shape) == 4:
        b, h, length, d = shape
        return query.new_empty((b, length, h, d)).transpose(1, 2)
    return query.new_empty(shape)


def _sdpa_vmap(info, in_dims, query, key, value, attn_mask, scale, is_causal, enable_gqa):  # type: ignore[no-untyped-def]
    """Fold the vmapped axis n into the batch axis: (n, B, ...) -> (n·B, ...), one SDPA call, then unfold."""
    n = info.batch_size

    def fold(t: torch.Tensor | None, dim: int | None, batch: int) -> torch.Tensor | None:
        if t is None:
            return None
        if dim is None:
            if t.shape[0] == 1 and batch > 1:  # broadcast over the batch (e.g. one mask for every sequence)
                return t
            t = t.unsqueeze(0).expand(n, *t.shape)
        else:
            t = t.movedim(dim, 0)
        return t.reshape(n * t.shape[1], *t.shape[2:])

    batch = query.shape[1] if in_dims[0] is not None else query.shape[0]
    q = fold(query, in_dims[0], batch)
    k = fold(key, in_dims[1], batch)
    v = fold(value, in_dims[2], batch)
    mask = fold(attn_mask, in_dims[3], batch)
    out = torch.ops.hf_landscape.sdpa(q, k, v, mask, scale, is_causal, enable_gqa)
    return out.reshape(n, batch, *out.shape[1:]), 0


def _define_op() -> bool:
    """Register `hf_landscape::sdpa` with its fake (meta) kernel and vmap rule; False where this torch cannot
    (then batched points keep vmap's loop over SDPA)."""
    try:
        if hasattr(torch.ops.hf_landscape, "sdpa"):  # already defined in this process
            return True
    except (AttributeError, RuntimeError):
        pass
    try:
        op = torch.library.custom_op("hf_landscape::sdpa", mutates_args=())(_sdpa)
        op.register_fake(_sdpa_fake)
        op.register_vmap(_sdpa_vmap)
        return True
    except Exception as err:
        logger.info("could not define hf_landscape::sdpa (%s); batched points loop over SDPA", redact(err))
        return False


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention (`integrations.sdpa_attention.sdpa_attention_forward`) for the plain
    prefill case, through `hf_landscape::sdpa`; anything else goes to transformers' function itself."""
    from transformers.integrations import sdpa_attention

    unusual = (
        dropout
        or kwargs.get("softcap") is not None
        or kwargs.get("position_bias") is not None
        or kwargs.get("cache") is not None
        or kwargs.get("output_attentions", False)
        or key.shape[2] != query.shape[2]
    )
    if unusual:
        return sdpa_attention.sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    enable_gqa = False
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # the same choice as transformers makes, so the same kernel runs
        if sdpa_attention.use_gqa_in_sdpa(attention_mask, key, value):
            enable_gqa = True
        else:
            key = sdpa_attention.repeat_kv(key, groups)
            value = sdpa_attention.repeat_kv(value, groups)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    out = torch.ops.hf_landscape.sdpa(query, key, value, attention_mask, scaling, causal, enable_gqa)
    return out.transpose(1, 2).contiguous(), None


def _register() -> bool:
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        AttentionInterface.register(NAME, attention_forward)
        # The same masks as "sdpa" gets (without this, transformers passes the raw 2-D padding mask on).
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
        return True
    except Exception as err:  # an older transformers without the interface: batched points loop over SDPA
        logger.info("could not register %s with transformers' AttentionInterface (%s)", NAME, redact(err))
        return False


REGISTERED = _define_op() and _register()


def attention_configs(model: torch.nn.Module) -> list[Any]:
    """Every distinct transformers config reachable from the model's modules, sub-configs included."""
    found: dict[int, Any] = {}
    stack = [getattr(m, "config", None) for m in model.modules()]
    while stack:
        config = stack.pop()
        if config is None or id(config) in found or not hasattr(config, "_attn_implementation_internal"):
            continue
        found[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            stack.append(getattr(config, key, None))
    return list(found.values())


@contextlib.contextmanager
def switched_attention(model: torch.nn.Module, name: str, *, only: str | None = None) -> Iterator[bool]:
    """Inside the block, the model's configs (those whose attention is `only`, or all) use the attention
    implementation `name`; each gets its own value back on exit, however the block ends. Yields whether
    anything was switched."""
    configs = [c for c in attention_configs(model) if only is None or c._attn_implementation_internal == only]
    saved = [(c, c._attn_implementation_internal) for c in configs if c._attn_implementation_internal != name]
    if not saved:
        yield False
        return
    try:
        for config, _ in saved:
            config._attn_implementation_internal = name
        yield True
    finally:
        for config, value in saved:
            config._attn_implementation_internal = value


@contextlib.contextmanager
def stacked_attention(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, every config of `model` whose attention is `"sdpa"` uses `"hf_landscape_sdpa"`, whose
    vmap rule batches the stacked points into one SDPA call; each config gets its own value back on exit."""
    if not REGISTERED:
        yield
        return
    with switched_attention(model, NAME, only="sdpa"):
        yield

"""Continuations scored after a context, the way lm-evaluation-harness scores a `loglikelihood` request: how a
(context, continuation) pair is tokenized, the left-padded batches of such rows, and each row's log-likelihood of its
continuation from the logits of one forward (of one grid point, or of k stacked points).

Tokenization (`encode_pairs`) follows the harness's `_encode_pair`: whitespace that ends the context moves to the
front of the continuation; the context and the whole text are tokenized separately, and the continuation's tokens are
the whole text's tokens after as many as the context has. So the token boundary is the one the tokenizer draws in the
whole text, and the context's tokens are the same for every continuation of one context. An empty context is the
tokenizer's BOS token (EOS where it has none). Special tokens are not added unless asked (the harness's default for
causal LMs). A row longer than `max_length` + 1 tokens loses tokens from the left, as in the harness.

Rows are left-padded, so every continuation ends in the last column: a forward computes the LM head on the last `keep`
columns only (the longest continuation of the batch; `logits_to_keep` where the model takes it). Rows that read the
same tokens (one-token choices after one context) share a forward row. What does not live here: the objectives
(`multiple_choice`, `generation`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ObjectiveError
from .text_data import context_length

logger = logging.getLogger(__name__)


@dataclass
class Row:
    """One scored sequence: its tokens (context then continuation) and how many of the last are the continuation."""

    ids: list[int]
    continuation: int


@dataclass
class RowBatch:
    """Left-padded rows as one forward reads them, and where each continuation token's prediction sits."""

    inputs: dict[str, torch.Tensor]  # input_ids (B, W) and, with padding, attention_mask and position_ids
    keep: int  # the forward's logits cover the last `keep` columns
    counted: torch.Tensor  # (C,) flat positions in (B · keep) of the continuation tokens' predictions
    targets: torch.Tensor  # (C,) the continuation tokens
    row_of: torch.Tensor  # (C,) the batch row of each
    size: int  # B: rows scored (rows reading the same tokens share one row of the forward)


def prefix_id(tokenizer: Any) -> int:
    """The token an empty context becomes: BOS, else EOS (the harness's `prefix_token_id`)."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise ObjectiveError(
        "A context is empty and the tokenizer has neither a BOS nor an EOS token to stand for it; give every "
        "question some text, or use a tokenizer with a BOS or EOS token."
    )


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], *, add_special_tokens: bool = False
) -> list[tuple[list[int], list[int]]]:
    """(context tokens, continuation tokens) of every (context, continuation) pair, as the harness tokenizes them
    (module docstring). A continuation that gets no token of its own is an `ObjectiveError` naming the pair."""
    if tokenizer is None:
        raise ObjectiveError("`tokenizer` is required; pass the model's tokenizer.")
    moved = []
    for context, continuation in pairs:
        spaces = len(context) - len(context.rstrip())
        if spaces and context.strip():
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        moved.append((context, continuation))
    special = {"add_special_tokens": add_special_tokens}
    full = [(c, c + x) for c, x in moved if c]
    contexts = tokenizer([c for c, _ in full], **special)["input_ids"] if full else []
    wholes = tokenizer([w for _, w in full], **special)["input_ids"] if full else []
    empty = [x for c, x in moved if not c]
    alone = tokenizer(empty, add_special_tokens=False)["input_ids"] if empty else []
    out: list[tuple[list[int], list[int]]] = []
    k = j = 0
    for i, (context, continuation) in enumerate(moved):
        if context:
            ctx, whole = list(contexts[k]), list(wholes[k])
            k += 1
            pair = (ctx, whole[len(ctx) :]) if ctx else ([prefix_id(tokenizer)], whole)
        else:
            pair = ([prefix_id(tokenizer)], list(alone[j]))
            j += 1
        if not pair[1]:
            raise ObjectiveError(
                f"Continuation {continuation!r:.60} of pair {i} has no token of its own after its context; give every "
                "choice (or reference) some text."
            )
        out.append(pair)
    return out


def make_rows(pairs: Sequence[tuple[list[int], list[int]]], max_length: int | None) -> tuple[list[Row], int]:
    """The rows of encoded pairs, each cut from the left to `max_length` + 1 tokens (a forward reads all but the last),
    and how many were cut. A continuation longer than `max_length` is an `ObjectiveError`."""
    rows, cut = [], 0
    for i, (ctx, cont) in enumerate(pairs):
        ids = ctx + cont
        if max_length is not None and len(ids) > max_length + 1:
            if len(cont) > max_length:
                raise ObjectiveError(
                    f"Continuation {i} has {len(cont)} tokens, more than the {max_length} a forward can read; "
                    "shorten it or raise `max_length`."
                )
            ids, cut = ids[-(max_length + 1) :], cut + 1
        rows.append(Row(ids, len(cont)))
    return rows, cut


def row_limit(model: torch.nn.Module, max_length: int | None) -> int | None:
    """Tokens a forward may read: `max_length`, capped by the model's context."""
    context = context_length(model)
    if max_length is None:
        return context
    return max_length if context is None else min(max_length, context)


def make_batch(rows: Sequence[Row], device: torch.device, pad: int, *, left: bool = True) -> RowBatch:
    """The rows padded into one batch on `device`, with the positions of their continuation predictions.

    Rows that read the same tokens (choices of one token after the same context: " A" / " B", " positive" /
    " negative") share one row of the forward, whose last logits score each of them. Left padding (the default) ends
    every continuation in the last column, so a forward keeps the logits of the longest continuation's columns only;
    right padding keeps every column (a double backward through attention, as curvature takes, needs no row that
    attends to nothing)."""
    inputs: dict[tuple[int, ...], int] = {}  # tokens a forward row reads -> its index
    for r in rows:
        inputs.setdefault(tuple(r.ids[:-1]), len(inputs))
    width = max(len(x) for x in inputs)
    keep = max(r.continuation for r in rows) if left else width
    ids = torch.full((len(inputs), width), pad, dtype=torch.long)
    attn = torch.zeros((len(inputs), width), dtype=torch.long)
    for x, u in inputs.items():
        cols = slice(width - len(x), width) if left else slice(0, len(x))
        ids[u, cols] = torch.tensor(x, dtype=torch.long)
        attn[u, cols] = 1
    counted, targets, row_of = [], [], []
    for b, r in enumerate(rows):
        u = inputs[tuple(r.ids[:-1])]
        end = keep if left else len(r.ids) - 1  # the continuation's last prediction sits in the column before `end`
        counted += [u * keep + end - r.continuation + t for t in range(r.continuation)]
        targets += r.ids[-r.continuation :]
        row_of += [b] * r.continuation
    forward = {"input_ids": ids}
    if not bool(attn.all()):  # no padding: the model's causal fast path, default positions
        forward["attention_mask"] = attn
        forward["position_ids"] = (attn.cumsum(dim=1) - 1).clamp_min(0)
    return RowBatch(
        inputs={k: v.to(device) for k, v in forward.items()},
        keep=keep,
        counted=torch.tensor(counted, dtype=torch.long, device=device),
        targets=torch.tensor(targets, dtype=torch.long, device=device),
        row_of=torch.tensor(row_of, dtype=torch.long, device=device),
        size=len(rows),
    )


@dataclass
class ForwardOptions:
    """What the model's forward takes beyond `input_ids` and `attention_mask`."""

    positions: bool  # `position_ids`
    logits_to_keep: bool  # `logits_to_keep`
    cache_name: str  # the keyword of the KV cache: `cache` (transformers >= 5.x) or `past_key_values`


def forward_options(model: torch.nn.Module) -> ForwardOptions:
    """Ask the model's forward (a `PeftModel`'s base model's) which keywords it takes."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    parameters = inspect.signature(inner.forward).parameters
    return ForwardOptions(
        positions="position_ids" in parameters,
        logits_to_keep="logits_to_keep" in parameters,
        cache_name="cache" if "cache" in parameters else "past_key_values",
    )


def batch_inputs(batch: RowBatch, options: ForwardOptions) -> dict[str, Any]:
    """The keyword arguments of one forward over `batch`."""
    kwargs: dict[str, Any] = {"input_ids": batch.inputs["input_ids"], "use_cache": False}
    if "attention_mask" in batch.inputs:
        kwargs["attention_mask"] = batch.inputs["attention_mask"]
        if options.positions:
            kwargs["position_ids"] = batch.inputs["position_ids"]
    if options.logits_to_keep:
        kwargs["logits_to_keep"] = batch.keep
    return kwargs


def row_loglikelihoods(logits: torch.Tensor, batch: RowBatch) -> torch.Tensor:
    """Σ log p(continuation token) of every row, shape (..., B), from logits (..., U, L, vocab) of the batch's forward
    rows (a leading axis holds stacked points, if any; L is `batch.keep`, or the whole width for a model without
    `logits_to_keep`).

    Only the continuation tokens' rows of the logits are read (an index: no host sync); the log-softmax is float32
    for half-precision logits, the logits' own dtype otherwise."""
    if logits.shape[-2] != batch.keep:
        logits = logits[..., -batch.keep :, :]
    lead = logits.shape[:-3]
    rows = logits.flatten(-3, -2).index_select(-2, batch.counted)  # (..., C, vocab)
    logp = torch.log_softmax(rows, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    targets = batch.targets.expand(*lead, batch.targets.shape[0]).unsqueeze(-1)
    picked = logp.gather(-1, targets).squeeze(-1)  # (..., C)
    return picked.new_zeros((*lead, batch.size)).index_add(-1, batch.row_of, picked)

"""The data of a causal-LM objective: texts, prompt/completion pairs or token ids as (input ids, labels) pairs, and
the padded batches a model reads.

Labels align with input ids (as in transformers); `IGNORE_INDEX` masks a token. Nothing here runs a model or
computes a loss (`nll`), nor keeps state (`causal_lm`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ObjectiveError

IGNORE_INDEX = -100  # the label that masks a token, as in transformers


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None when the batch has no padding: the model's causal fast path
    position_ids: torch.Tensor | None
    mask: torch.Tensor  # (B, L-1) bool: which next-token predictions count
    full: bool  # every prediction counts (no padding, no masked label): no gather at all
    targets: torch.Tensor  # flat targets where mask is True
    counted: torch.Tensor  # flat (B·L) positions of the counted predictions, row-major (an index: no host sync)
    index: list[int]  # example indices of the rows
    lengths: list[int]


def check_labels(examples: list[tuple[list[int], list[int]]], vocab: int) -> None:
    """Every counted label is a token of the model's vocabulary (a loss kernel would read out of bounds)."""
    for k, (_, labels) in enumerate(examples):
        y = np.asarray(labels[1:], dtype=np.int64)
        bad = y[(y != IGNORE_INDEX) & ((y < 0) | (y >= vocab))]
        if bad.size:
            raise ObjectiveError(
                f"Example {k} has label {int(bad[0])}, outside the model's vocabulary of {vocab} tokens (0 to {vocab - 1}); "
                f"pass labels made with the model's tokenizer, and {IGNORE_INDEX} for tokens that do not count."
            )


def check_input_ids(examples: list[tuple[list[int], list[int]]], vocab: int) -> None:
    """Every input id is a row of the model's embedding table (an embedding would read out of bounds)."""
    for k, (ids, _) in enumerate(examples):
        bad = [v for v in ids if not 0 <= v < vocab]
        if bad:
            raise ObjectiveError(
                f"Example {k} has input id {bad[0]}, outside the model's vocabulary of {vocab} tokens (0 to "
                f"{vocab - 1}); tokenize with the model's own tokenizer (if the model was resized after the probe "
                "was made, make the objective again with the new tokenizer)."
            )


def count_labels(labels: list[int]) -> int:
    return sum(1 for y in labels[1:] if y != IGNORE_INDEX)


def pad_id(tokenizer: Any) -> int:
    """Any id works as padding (it is masked out); prefer the tokenizer's pad, then EOS, then 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def context_length(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def truncate(
    examples: list[tuple[list[int], list[int]]], limit: int | None
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """`examples` cut to `limit` tokens each, and how many were longer (the caller says so)."""
    if limit is None:
        return examples, 0
    long = sum(1 for ids, _ in examples if len(ids) > limit)
    if not long:
        return examples, 0
    return [(ids[:limit], labels[:limit]) for ids, labels in examples], long


def describe_source(data: Any) -> dict[str, Any]:
    if hasattr(data, "column_names") and hasattr(data, "num_rows"):
        info = getattr(data, "info", None)
        return {
            "type": "datasets.Dataset",
            "num_rows": int(data.num_rows),
            "fingerprint": getattr(data, "_fingerprint", None),
            "dataset_name": getattr(info, "dataset_name", None),
            "split": str(getattr(data, "split", None)) if getattr(data, "split", None) is not None else None,
        }
    return {"type": type(data).__name__}


def tokenize(
    data: Any, tokenizer: Any, *, text_column: str, add_special_tokens: bool
) -> list[tuple[list[int], list[int]]]:
    """Turn any accepted input into (input_ids, labels) pairs, labels aligned with input_ids."""
    if isinstance(data, str):
        raise ObjectiveError("`data` is a single string; pass a list of strings, e.g. `[text]`.")
    if isinstance(data, Mapping):
        return pretokenized(data)
    if hasattr(data, "column_names") and hasattr(data, "num_rows"):  # datasets.Dataset
        columns = list(data.column_names)
        if text_column in columns:
            data = list(data[text_column])
        elif "prompt" in columns and "completion" in columns:
            data = list(zip(data["prompt"], data["completion"]))
        elif "input_ids" in columns:
            return pretokenized({c: data[c] for c in ("input_ids", "attention_mask", "labels") if c in columns})
        else:
            raise ObjectiveError(
                f"`text_column` {text_column!r} is not a column of the dataset (columns: {columns}); "
                "pass `text_column=` naming the text column."
            )
    if not isinstance(data, Sequence) or len(data) == 0:
        raise ObjectiveError(
            f"`data` must be a non-empty list of texts, pairs or a dataset, got {type(data).__name__} {data!r:.80}."
        )
    if tokenizer is None:
        raise ObjectiveError(
            "`tokenizer` is required for text data; pass the model's tokenizer (pre-tokenized input needs none)."
        )
    special = add_special_tokens
    texts = [isinstance(x, str) for x in data]
    if any(texts) and not all(texts):  # a list of texts with something else in it: name that item, not a text
        k = texts.index(False)
        raise ObjectiveError(
            f"`data[{k}]` is {data[k]!r:.80} ({type(data[k]).__name__}), not a string like the other items; pass a "
            "list of strings, or a list of (prompt, completion) pairs, not a mix."
        )
    if all(texts):
        if not any(x.strip() for x in data):
            raise ObjectiveError("`data` holds only empty strings; pass texts to evaluate on.")
        ids = tokenizer(list(data), add_special_tokens=special)["input_ids"]
        return [(list(x), list(x)) for x in ids]
    pairs = []
    for x in data:
        if isinstance(x, Mapping) and "prompt" in x and "completion" in x:
            pairs.append((x["prompt"], x["completion"]))
        elif isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(s, str) for s in x):
            pairs.append((x[0], x[1]))
        else:
            raise ObjectiveError(
                f"`data` item {x!r:.80} is neither a string nor a (prompt, completion) pair; "
                "pass a list of strings or of pairs, not a mix."
            )
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=special)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    return [(list(p) + list(c), [IGNORE_INDEX] * len(p) + list(c)) for p, c in zip(prompts, completions)]


def pretokenized(data: Mapping[str, Any]) -> list[tuple[list[int], list[int]]]:
    if "input_ids" not in data:
        raise ObjectiveError(f"Pre-tokenized `data` needs an `input_ids` key, got keys {sorted(data)}.")

    def rows(value: Any, name: str) -> list[list[int]]:
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        out = []
        for k, row in enumerate(value):
            row = row.tolist() if isinstance(row, (torch.Tensor, np.ndarray)) else row
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
                raise ObjectiveError(f"Pre-tokenized `{name}[{k}]` must be a list of integers, got {row!r:.60}.")
            for j, v in enumerate(row):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    what = "input id" if name == "input_ids" else f"`{name}` value"
                    raise ObjectiveError(
                        f"Pre-tokenized example {k} has {what} {v!r} at position {j}; token ids must be integers "
                        "(from the model's tokenizer)."
                    )
            out.append([int(v) for v in row])
        return out

    ids = rows(data["input_ids"], "input_ids")
    if not ids:
        raise ObjectiveError("Pre-tokenized `data['input_ids']` is empty; pass at least one sequence.")
    for k, row in enumerate(ids):
        negative = [v for v in row if v < 0]
        if negative:
            raise ObjectiveError(
                f"Pre-tokenized example {k} has input id {negative[0]}; token ids are >= 0 (use `labels` of -100, "
                "not negative input ids, for tokens that do not count)."
            )
    masks = (
        rows(data["attention_mask"], "attention_mask")
        if data.get("attention_mask") is not None
        else [[1] * len(r) for r in ids]
    )
    labels = rows(data["labels"], "labels") if data.get("labels") is not None else ids
    out = []
    for k, (x, m, y) in enumerate(zip(ids, masks, labels)):
        if not (len(x) == len(m) == len(y)):
            raise ObjectiveError(
                f"Pre-tokenized example {k}: `input_ids`, `attention_mask` and `labels` have lengths "
                f"{len(x)}, {len(m)}, {len(y)}; they must be equal."
            )
        keep = [j for j, v in enumerate(m) if v]
        out.append(([x[j] for j in keep], [y[j] for j in keep]))
    if len(ids) != len(masks) or len(ids) != len(labels):
        raise ObjectiveError("Pre-tokenized `input_ids`, `attention_mask` and `labels` hold different numbers of rows.")
    return out


def make_batches(
    examples: list[tuple[list[int], list[int]]],
    device: torch.device,
    *,
    batch_size: int,
    padding_side: str,
    sort_by_length: bool,
    pad: int,
) -> list[Batch]:
    """The padded batches of `examples` on `device`: `batch_size` rows each (longest first with `sort_by_length`),
    padded with the id `pad` on `padding_side`, with the mask, targets and row index of the counted predictions."""
    # Sequences of fewer than 2 tokens predict nothing; they get no row (an all-padding row breaks models).
    order = [i for i in range(len(examples)) if len(examples[i][0]) >= 2]
    if sort_by_length:
        order.sort(key=lambda i: -len(examples[i][0]))
    left = padding_side == "left"
    batches = []
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        lengths = [len(examples[i][0]) for i in index]
        width = max(lengths)
        ids = torch.full((len(index), width), pad, dtype=torch.long)
        labels = torch.full((len(index), width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            x, y = examples[i]
            cols = slice(width - len(x), width) if left else slice(0, len(x))
            ids[row, cols] = torch.tensor(x, dtype=torch.long)
            # The first token is never a target: nothing precedes it (with left padding a pad would).
            labels[row, cols] = torch.tensor([IGNORE_INDEX, *y[1:]], dtype=torch.long)
            attn[row, cols] = 1
        positions = (attn.cumsum(dim=1) - 1).clamp_min(0)
        # Without padding the mask and positions are the defaults; leaving them out lets SDPA use its
        # causal (flash) kernel instead of a masked one.
        padded_free = bool(attn.all())
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        # Position (row, col) of a prediction is row·width + col in the logits' flattened (B·L) positions.
        at_row, at_col = mask.nonzero(as_tuple=True)
        batches.append(
            Batch(
                input_ids=ids.to(device),
                attention_mask=None if padded_free else attn.to(device),
                position_ids=None if padded_free else positions.to(device),
                mask=mask.to(device),
                full=bool(mask.all()),
                targets=targets[mask].to(device),
                counted=(at_row * width + at_col).to(device),
                index=index,
                lengths=lengths,
            )
        )
    return batches

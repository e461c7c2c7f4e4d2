"""Masked token-level causal-LM loss.

The value is the sum of next-token negative log-likelihoods over every unmasked label token of the
whole evaluation set, divided by the number of those tokens. It is not a mean of batch means, so it
is the same, to float rounding, whatever the batch size, padding side and order of the examples.
Padding never enters the loss, and position ids are passed explicitly so left padding does not
shift the positions a model sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import math
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import BaseConfig, check_choice
from ..errors import ConfigError, ModelError, ObjectiveError
from . import fused_nll
from .base import COMPILING, Evaluation, Objective

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label that masks a token, as in transformers

# cuBLAS runs a half-precision product whose output rows are not a multiple of 8 elements (16 bytes) long on a
# slow pre-Hopper kernel: GPT-2's 50257-token head took 1.66 ms for 16 x 128 tokens in bf16 on an H100 (2026-11-22; 95
# TFLOP/s) against 0.23 ms (702 TFLOP/s) padded to 50304 (`benchmarks/lm_head_alignment.py`). The head's
# output is computed that much wider and viewed back (`aligned_output_head`).
HEAD_ALIGNMENT = 64


@dataclass
class CausalLMObjectiveConfig(BaseConfig):
    """Options of `CausalLMObjective`.

    Args:
        max_length (`int`, defaults to 128): sequences are truncated to this many tokens (and to the
            model's context), with a warning.
        batch_size (`int`, defaults to 8): sequences per forward pass; the loss does not depend on it.
        padding_side (`str`, defaults to `"right"`): `"right"` or `"left"`; the loss does not depend on it.
        text_column (`str`, defaults to `"text"`): the column read from a `datasets.Dataset`.
        add_special_tokens (`bool`, defaults to `True`): let the tokenizer add BOS/EOS as it usually does.
        sort_by_length (`bool`, defaults to `True`): batch sequences of similar length together, which
            cuts padding; results are reported in the original order either way.

    Example:
    ```python
    >>> from hf_landscape import CausalLMObjectiveConfig
    >>> CausalLMObjectiveConfig(max_length=64).batch_size
    8

    ```
    """

    max_length: int = field(default=128, metadata={"help": "tokens per sequence at most"})
    batch_size: int = field(default=8, metadata={"help": "sequences per forward pass"})
    padding_side: str = field(default="right", metadata={"help": "right or left"})
    text_column: str = field(default="text", metadata={"help": "column of a datasets.Dataset"})
    add_special_tokens: bool = field(default=True, metadata={"help": "tokenizer adds BOS/EOS"})
    sort_by_length: bool = field(default=True, metadata={"help": "batch similar lengths together"})

    def __post_init__(self) -> None:
        for name, low in (("max_length", 2), ("batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        check_choice("padding_side", self.padding_side, ("right", "left"))
        for name in ("add_special_tokens", "sort_by_length"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if not isinstance(self.text_column, str) or not self.text_column:
            raise ConfigError(f"`text_column` must be a column name, got {self.text_column!r}.")


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None when the batch has no padding: the model's causal fast path
    position_ids: torch.Tensor | None
    mask: torch.Tensor  # (B, L-1) bool: which next-token predictions count
    full: bool  # every prediction counts (no padding, no masked label): no gather at all
    targets: torch.Tensor  # flat targets where mask is True
    counted: torch.Tensor  # flat (B·L) positions of the counted predictions, row-major (an index: no host sync)
    index: list[int]  # example indices of the rows
    lengths: list[int]


class CausalLMObjective(Objective):
    """Masked token-level causal-LM loss over a fixed evaluation set, tokenized once.

    Args:
        data: a list of strings; a `datasets.Dataset` (its `text_column`, or `prompt`/`completion`
            columns); prompt/completion pairs as `(prompt, completion)` tuples or dicts, whose prompt
            tokens are masked; or pre-tokenized `{"input_ids", "attention_mask", "labels"}` with -100
            marking masked labels (labels align with `input_ids`, as in transformers).
        tokenizer: a transformers tokenizer; not needed for pre-tokenized data. No pad token is needed.
        max_length, batch_size, padding_side, text_column, add_special_tokens, sort_by_length:
            see `CausalLMObjectiveConfig`.
        config: a `CausalLMObjectiveConfig` to use instead of the keyword options.

    Example:
    ```python
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_landscape import CausalLMObjective
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    >>> objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4], [5, 6, 7]]})
    >>> objective.num_tokens
    5
    >>> objective.bind(model); round(objective.evaluate(model.eval()).loss, 1) > 0
    True

    ```
    """

    def __init__(
        self,
        data: Any,
        tokenizer: Any = None,
        *,
        max_length: int = 128,
        batch_size: int = 8,
        padding_side: str = "right",
        text_column: str = "text",
        add_special_tokens: bool = True,
        sort_by_length: bool = True,
        config: CausalLMObjectiveConfig | None = None,
    ) -> None:
        self.config = config or CausalLMObjectiveConfig(
            max_length=max_length,
            batch_size=batch_size,
            padding_side=padding_side,
            text_column=text_column,
            add_special_tokens=add_special_tokens,
            sort_by_length=sort_by_length,
        )
        self.tokenizer = tokenizer
        self.source = _describe_source(data)
        examples = _tokenize(data, tokenizer, self.config)
        self.examples = _truncate(examples, self.config.max_length, "`max_length`")
        self._check_tokens(self.examples)
        self._bound: tuple[Any, ...] | None = None
        self._batches: list[_Batch] = []
        self._active = self.examples
        self._device: torch.device | None = None
        self._vocab: int | None = None
        self._num_tokens: tuple[list[tuple[list[int], list[int]]], int] | None = None  # (examples, count)

    @classmethod
    def from_long_text(
        cls,
        text: str,
        tokenizer: Any,
        *,
        max_length: int = 128,
        num_sequences: int | None = None,
        **kwargs: Any,
    ) -> CausalLMObjective:
        """Tokenize one long text once and cut it into consecutive windows of `max_length` tokens.

        Args:
            text: e.g. a whole book.
            tokenizer: the model's tokenizer.
            max_length: tokens per window; a last, shorter window is dropped.
            num_sequences: keep only the first this many windows.
            kwargs: other `CausalLMObjective` options (`batch_size`, `padding_side`, ...).
        """
        if not isinstance(text, str) or not text.strip():
            raise ObjectiveError("`text` is empty; pass the text to evaluate on.")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"`max_length` must be an integer >= 2, got {max_length!r}.")
        if tokenizer is None:
            raise ObjectiveError("`tokenizer` is required; pass the model's tokenizer.")
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        windows = [ids[i : i + max_length] for i in range(0, len(ids) - max_length + 1, max_length)]
        if not windows:
            windows = [ids]
        if num_sequences is not None:
            if not isinstance(num_sequences, int) or num_sequences < 1:
                raise ConfigError(f"`num_sequences` must be a positive integer, got {num_sequences!r}.")
            windows = windows[:num_sequences]
        objective = cls({"input_ids": windows}, tokenizer, max_length=max_length, add_special_tokens=False, **kwargs)
        objective.source = {"type": "long_text", "characters": len(text), "windows": len(windows)}
        return objective

    @staticmethod
    def _check_tokens(examples: list[tuple[list[int], list[int]]]) -> None:
        if sum(_count(labels) for _, labels in examples) == 0:
            raise ObjectiveError(
                "Every label token is masked (or every sequence is shorter than 2 tokens), so there is no "
                "loss to compute; pass longer texts or leave some labels unmasked (not -100)."
            )

    def restricted(
        self,
        *,
        token_ids: Sequence[int] | None = None,
        positions: Sequence[int] | None = None,
        mask: Sequence[Sequence[bool]] | None = None,
    ) -> CausalLMObjective:
        """A copy whose loss counts only a subset of the label tokens, e.g. to draw the surface of the tokens
        that turned out sharp: the tokens with these ids, at these positions (0-based, within each sequence),
        and/or where `mask[i][j]` is true (one row per example, one entry per token). Given several, a token
        must pass all of them. Tokens already masked stay masked.

        Raises:
            ObjectiveError: the subset holds no token, or `mask` does not match the examples' lengths.
        """
        ids = set(token_ids) if token_ids is not None else None
        pos = set(positions) if positions is not None else None
        if mask is not None and len(mask) != len(self.examples):
            raise ObjectiveError(f"`mask` has {len(mask)} rows but there are {len(self.examples)} examples.")
        examples = []
        for i, (x, y) in enumerate(self.examples):
            if mask is not None and len(mask[i]) != len(x):
                raise ObjectiveError(f"`mask[{i}]` has {len(mask[i])} entries but example {i} has {len(x)} tokens.")
            keep = [
                label != IGNORE_INDEX
                and (ids is None or label in ids)
                and (pos is None or j in pos)
                and (mask is None or bool(mask[i][j]))
                for j, label in enumerate(y)
            ]
            examples.append((list(x), [label if k else IGNORE_INDEX for label, k in zip(y, keep)]))
        self._check_tokens(examples)
        clone = object.__new__(CausalLMObjective)
        clone.__dict__.update(self.__dict__)
        clone.examples = examples
        clone._active = examples
        clone._bound = None
        clone._batches = []
        clone.source = {
            **self.source,
            "restricted": {
                "token_ids": sorted(ids) if ids else None,
                "positions": sorted(pos) if pos else None,
                "mask": mask is not None,
            },
        }
        return clone

    @property
    def num_examples(self) -> int:
        return len(self._active)

    @property
    def active_examples(self) -> list[tuple[list[int], list[int]]]:
        """The (input ids, labels) of every example the loss covers, in data order (a `restricted` objective's
        labels mask what it leaves out)."""
        return list(self._active)

    @property
    def num_tokens(self) -> int:
        """How many next-token predictions the loss averages over."""
        active = self._active  # counted once per set of examples: the grid loop divides by it at every point
        cached = self._num_tokens
        if cached is None or cached[0] is not active:
            cached = self._num_tokens = (active, sum(_count(labels) for _, labels in active))
        return cached[1]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ids, labels in self._active:
            h.update(np.asarray(ids, dtype=np.int64).tobytes())
            h.update(b"|")
            h.update(np.asarray(labels, dtype=np.int64).tobytes())
            h.update(b";")
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(num_examples=self.num_examples, num_tokens=self.num_tokens, source=self.source)
        if self.tokenizer is not None:
            out["tokenizer"] = getattr(self.tokenizer, "name_or_path", None) or type(self.tokenizer).__name__
        return out

    def bind(self, model: Any) -> None:
        embeddings = model.get_input_embeddings().weight
        device = embeddings.device
        context = _context_length(model)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        head_rows = getattr(getattr(head, "weight", None), "shape", (None,))[0]
        # The vocabulary is part of the binding: a model resized after the probe was made is checked again.
        key = (device, context, id(model), int(embeddings.shape[0]), head_rows)
        if self._bound == key:  # the common case: called at every grid point, nothing changed
            return
        if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
            raise ModelError(
                f"`model` ({type(model).__name__}) has no language-model head, so it has no causal-LM loss; "
                "load it with `AutoModelForCausalLM` (e.g. GPT2LMHeadModel rather than GPT2Model)."
            )
        active = _truncate(self.examples, context, "the model's context") if context else self.examples
        self._check_tokens(active)
        _check_input_ids(active, int(embeddings.shape[0]))
        self._active = active
        with torch.inference_mode(False):  # normal tensors, so `loss_terms` can backpropagate through them later
            self._batches = self._make_batches(active, device)
        head_weight = getattr(model.get_output_embeddings(), "weight", None)
        if isinstance(head_weight, torch.Tensor):
            _check_labels(active, int(head_weight.shape[0]))
        self._device = device
        self._vocab = int(head_weight.shape[0]) if isinstance(head_weight, torch.Tensor) else None
        if isinstance(head_weight, torch.Tensor):
            self.expect_dtype(head_weight.dtype)
        # A PeftModel's forward takes **kwargs; ask the model it wraps whether it takes position ids.
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._accepts_positions = "position_ids" in inspect.signature(inner.forward).parameters
        self._bound = key

    def expect_dtype(self, dtype: torch.dtype) -> None:
        """Start the fused loss's one-time set-up (`fused_nll.warm_up`) in the background if logits of `dtype` will use
        it: on a CUDA device, in half precision, with at least `fused_nll.MIN_LOGITS` logits in a batch. `bind` calls
        it with the head's dtype, the probe with its autocast dtype."""
        if self._device is None or self._device.type != "cuda" or self._vocab is None or not self._batches:
            return
        logits = max(b.input_ids.numel() for b in self._batches) * self._vocab
        if logits >= fused_nll.MIN_LOGITS and dtype in fused_nll.DTYPES:
            fused_nll.warm_up(self._device, dtype)

    def _make_batches(self, examples: list[tuple[list[int], list[int]]], device: torch.device) -> list[_Batch]:
        # Sequences of fewer than 2 tokens predict nothing; they get no row (an all-padding row breaks models).
        order = [i for i in range(len(examples)) if len(examples[i][0]) >= 2]
        if self.config.sort_by_length:
            order.sort(key=lambda i: -len(examples[i][0]))
        pad_id = _pad_id(self.tokenizer)
        left = self.config.padding_side == "left"
        batches = []
        for start in range(0, len(order), self.config.batch_size):
            index = order[start : start + self.config.batch_size]
            lengths = [len(examples[i][0]) for i in index]
            width = max(lengths)
            ids = torch.full((len(index), width), pad_id, dtype=torch.long)
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
                _Batch(
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

    def _inputs(self, b: _Batch) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"input_ids": b.input_ids, "use_cache": False}
        if b.attention_mask is not None:
            kwargs["attention_mask"] = b.attention_mask
            if self._accepts_positions:
                kwargs["position_ids"] = b.position_ids
        return kwargs

    def loss_tensor(self, model: torch.nn.Module) -> torch.Tensor:
        """The loss as a float64 tensor on the model's device, not yet read by the host: the grid loop reads
        many points' losses in one sync (`engine.run_grid`), so the GPU never waits for the host between
        points. `evaluate(model).loss` is its value."""
        return self._total(model, None) / self.num_tokens

    def evaluate(self, model: torch.nn.Module, *, details: bool = False) -> Evaluation:
        if not details:
            return Evaluation(loss=self.loss_tensor(model).item())
        per_row: list[tuple[_Batch, torch.Tensor]] = []
        loss = (self._total(model, per_row) / self.num_tokens).item()
        return self._details(loss, per_row)

    def _total(self, model: torch.nn.Module, per_row: list[tuple[_Batch, torch.Tensor]] | None) -> torch.Tensor:
        """Sum of the counted tokens' losses (float64, on the device); each batch's token losses go to `per_row`
        when given."""
        self.bind(model)  # a no-op unless the model (or its device or context) changed since the last call
        total = torch.zeros((), dtype=torch.float64, device=self._device)
        with aligned_output_head(model):
            for b in self._batches:
                nll = _token_nll(model(**self._inputs(b)).logits, b)
                total += nll.sum(dtype=torch.float64)
                if per_row is not None:
                    per_row.append((b, nll))
        return total

    def loss_terms(self, model: torch.nn.Module) -> Iterator[torch.Tensor]:
        """Differentiable loss, one term per batch: the terms sum to the loss. Gradients or Hessian-vector
        products can be accumulated batch by batch, so memory does not grow with the evaluation set.
        Autograd must be enabled by the caller (no inference mode)."""
        self.bind(model)
        for b in self._batches:
            yield _token_nll(model(**self._inputs(b)).logits, b).sum() / self.num_tokens

    def evaluate_points(self, model: torch.nn.Module, forward: Any, k: int) -> list[Evaluation]:
        """The loss at `k` grid points from one forward per batch: `forward(inputs)` returns the logits of all
        `k` points stacked on a leading axis (the engine's batched-points path). One host sync in all."""
        return [Evaluation(loss=v) for v in self.loss_points(model, forward, k).tolist()]

    def loss_points(self, model: torch.nn.Module, forward: Any, k: int) -> torch.Tensor:
        """`evaluate_points`' losses as a float64 tensor (k,) on the device, not yet read by the host."""
        self.bind(model)
        totals = torch.zeros(k, dtype=torch.float64, device=self._device)
        with aligned_output_head(model):
            for b in self._batches:
                nll = _token_nll(forward(self._inputs(b)), b).view(k, -1)  # logits (k, batch, length, vocab)
                totals += nll.sum(dim=1, dtype=torch.float64)
        return totals / self.num_tokens

    def _details(self, loss: float, per_row: list[tuple[_Batch, torch.Tensor]]) -> Evaluation:
        tokens: list[np.ndarray] = [np.empty(0)] * len(self._active)
        left = self.config.padding_side == "left"
        for b, nll in per_row:
            full = torch.full(b.mask.shape, float("nan"), dtype=nll.dtype)  # float32, or float64 for float64 models
            full[b.mask.cpu()] = nll.detach().cpu()
            width = b.mask.shape[1] + 1
            for row, (i, n) in enumerate(zip(b.index, b.lengths)):
                start = width - n if left else 0
                tokens[i] = full[row, start : start + max(n - 1, 0)].numpy().astype(np.float64)
        with np.errstate(invalid="ignore"):
            seq = np.array([np.nanmean(t) if np.isfinite(t).any() else np.nan for t in tokens], dtype=np.float64)
        return Evaluation(loss=loss, sequence_losses=seq, token_losses=tokens)


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


def _token_nll(logits: torch.Tensor, b: _Batch) -> torch.Tensor:
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
    loss_dtype = _loss_dtype(logits.dtype)
    if b.full:
        targets = b.targets.view(b.mask.shape).expand(*lead, *b.mask.shape)
        if COMPILING.get():
            return _compiled_full_nll()(logits, targets)
        logp = torch.log_softmax(logits, dim=-1, dtype=loss_dtype)[..., :-1, :]
        return -logp.gather(-1, targets.unsqueeze(-1)).reshape(-1)
    rows = logits.flatten(-3, -2).index_select(-2, b.counted)  # (..., counted, vocab)
    logp = torch.log_softmax(rows, dim=-1, dtype=loss_dtype)
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


def _check_labels(examples: list[tuple[list[int], list[int]]], vocab: int) -> None:
    """Every counted label is a token of the model's vocabulary (a loss kernel would read out of bounds)."""
    for k, (_, labels) in enumerate(examples):
        y = np.asarray(labels[1:], dtype=np.int64)
        bad = y[(y != IGNORE_INDEX) & ((y < 0) | (y >= vocab))]
        if bad.size:
            raise ObjectiveError(
                f"Example {k} has label {int(bad[0])}, outside the model's vocabulary of {vocab} tokens (0 to {vocab - 1}); "
                f"pass labels made with the model's tokenizer, and {IGNORE_INDEX} for tokens that do not count."
            )


def _check_input_ids(examples: list[tuple[list[int], list[int]]], vocab: int) -> None:
    """Every input id is a row of the model's embedding table (an embedding would read out of bounds)."""
    for k, (ids, _) in enumerate(examples):
        bad = [v for v in ids if not 0 <= v < vocab]
        if bad:
            raise ObjectiveError(
                f"Example {k} has input id {bad[0]}, outside the model's vocabulary of {vocab} tokens (0 to "
                f"{vocab - 1}); tokenize with the model's own tokenizer (if the model was resized after the probe "
                "was made, make the objective again with the new tokenizer)."
            )


def _count(labels: list[int]) -> int:
    return sum(1 for y in labels[1:] if y != IGNORE_INDEX)


def _pad_id(tokenizer: Any) -> int:
    """Any id works as padding (it is masked out); prefer the tokenizer's pad, then EOS, then 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _context_length(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _truncate(
    examples: list[tuple[list[int], list[int]]], limit: int | None, what: str
) -> list[tuple[list[int], list[int]]]:
    if limit is None:
        return examples
    long = sum(1 for ids, _ in examples if len(ids) > limit)
    if not long:
        return examples
    logger.warning(
        "%d of %d sequences are longer than %s (%d tokens) and were truncated.", long, len(examples), what, limit
    )
    return [(ids[:limit], labels[:limit]) for ids, labels in examples]


def _describe_source(data: Any) -> dict[str, Any]:
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


def _tokenize(data: Any, tokenizer: Any, config: CausalLMObjectiveConfig) -> list[tuple[list[int], list[int]]]:
    """Turn any accepted input into (input_ids, labels) pairs, labels aligned with input_ids."""
    if isinstance(data, str):
        raise ObjectiveError("`data` is a single string; pass a list of strings, e.g. `[text]`.")
    if isinstance(data, Mapping):
        return _pretokenized(data)
    if hasattr(data, "column_names") and hasattr(data, "num_rows"):  # datasets.Dataset
        columns = list(data.column_names)
        if config.text_column in columns:
            data = list(data[config.text_column])
        elif "prompt" in columns and "completion" in columns:
            data = list(zip(data["prompt"], data["completion"]))
        elif "input_ids" in columns:
            return _pretokenized({c: data[c] for c in ("input_ids", "attention_mask", "labels") if c in columns})
        else:
            raise ObjectiveError(
                f"`text_column` {config.text_column!r} is not a column of the dataset (columns: {columns}); "
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
    special = config.add_special_tokens
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


def _pretokenized(data: Mapping[str, Any]) -> list[tuple[list[int], list[int]]]:
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

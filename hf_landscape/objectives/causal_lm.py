"""Masked token-level causal-LM loss: `CausalLMObjective` and its config.

The value is the sum of next-token negative log-likelihoods over every unmasked label token of the
whole evaluation set, divided by the number of those tokens. It is not a mean of batch means, so it
is the same, to float rounding, whatever the batch size, padding side and order of the examples.
Padding never enters the loss, and position ids are passed explicitly so left padding does not
shift the positions a model sees. The data and its batches live in `text_data`, the loss kernels and the
aligned LM head in `nll`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import io
from ..config import BaseConfig, check_choice
from ..errors import ConfigError, ModelError, ObjectiveError
from . import fused_nll, text_data
from .base import (
    DifferentiableLoss,
    Evaluation,
    LogitTerm,
    LogitTerms,
    LossTensor,
    Objective,
    StackedEvaluation,
    TokenView,
)
from .nll import aligned_output_head, token_nll
from .text_data import IGNORE_INDEX, Batch

logger = logging.getLogger(__name__)


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


class CausalLMObjective(Objective, StackedEvaluation, LossTensor, DifferentiableLoss, TokenView, LogitTerms):
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
        self.source = text_data.describe_source(data)
        examples = text_data.tokenize(
            data, tokenizer, text_column=self.config.text_column, add_special_tokens=self.config.add_special_tokens
        )
        self.examples = _truncate(examples, self.config.max_length, "`max_length`")
        self._check_tokens(self.examples)
        self._bound: tuple[Any, ...] | None = None
        self._batches: list[Batch] = []
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
        if sum(text_data.count_labels(labels) for _, labels in examples) == 0:
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
            cached = self._num_tokens = (active, sum(text_data.count_labels(labels) for _, labels in active))
        return cached[1]

    def fingerprint(self) -> str:
        parts = (
            np.asarray(ids, dtype=np.int64).tobytes() + b"|" + np.asarray(labels, dtype=np.int64).tobytes() + b";"
            for ids, labels in self._active
        )
        return io.sha256_of(parts)[:16]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(num_examples=self.num_examples, num_tokens=self.num_tokens, source=self.source)
        if self.tokenizer is not None:
            from ..provenance import public_name

            name = getattr(self.tokenizer, "name_or_path", None)
            out["tokenizer"] = public_name(name) if name else type(self.tokenizer).__name__
        return out

    def bind(self, model: Any) -> None:
        embeddings = model.get_input_embeddings().weight
        device = embeddings.device
        context = text_data.context_length(model)
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
        text_data.check_input_ids(active, int(embeddings.shape[0]))
        self._active = active
        with torch.inference_mode(False):  # normal tensors, so `loss_terms` can backpropagate through them later
            self._batches = text_data.make_batches(
                active,
                device,
                batch_size=self.config.batch_size,
                padding_side=self.config.padding_side,
                sort_by_length=self.config.sort_by_length,
                pad=text_data.pad_id(self.tokenizer),
            )
        head_weight = getattr(model.get_output_embeddings(), "weight", None)
        if isinstance(head_weight, torch.Tensor):
            text_data.check_labels(active, int(head_weight.shape[0]))
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

    def _inputs(self, b: Batch) -> dict[str, Any]:
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
        per_row: list[tuple[Batch, torch.Tensor]] = []
        loss = (self._total(model, per_row) / self.num_tokens).item()
        return self._details(loss, per_row)

    def _total(self, model: torch.nn.Module, per_row: list[tuple[Batch, torch.Tensor]] | None) -> torch.Tensor:
        """Sum of the counted tokens' losses (float64, on the device); each batch's token losses go to `per_row`
        when given."""
        self.bind(model)  # a no-op unless the model (or its device or context) changed since the last call
        total = torch.zeros((), dtype=torch.float64, device=self._device)
        with aligned_output_head(model):
            for b in self._batches:
                nll = token_nll(model(**self._inputs(b)).logits, b)
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
            yield token_nll(model(**self._inputs(b)).logits, b).sum() / self.num_tokens

    def logit_terms(self, model: torch.nn.Module) -> Iterator[LogitTerm]:
        """The loss batch by batch as the counted predictions' logits `(rows, vocab)` and their targets, softmax
        cross-entropy scaled by 1 / the number of tokens: what the Gauss-Newton curvature needs. Autograd on."""
        self.bind(model)
        for b in self._batches:
            logits = model(**self._inputs(b)).logits
            rows = logits[:, :-1, :].reshape(-1, logits.shape[-1]) if b.full else None
            if rows is None:
                rows = logits.flatten(0, 1).index_select(0, b.counted)
            yield LogitTerm(rows, b.targets, "cross_entropy", 1.0 / self.num_tokens)

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
                nll = token_nll(forward(self._inputs(b)), b).view(k, -1)  # logits (k, batch, length, vocab)
                totals += nll.sum(dim=1, dtype=torch.float64)
        return totals / self.num_tokens

    def _details(self, loss: float, per_row: list[tuple[Batch, torch.Tensor]]) -> Evaluation:
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


def _truncate(
    examples: list[tuple[list[int], list[int]]], limit: int | None, what: str
) -> list[tuple[list[int], list[int]]]:
    """`examples` cut to `limit` tokens, with a warning saying how many were longer than `what`."""
    cut, long = text_data.truncate(examples, limit)
    if long:
        logger.warning(
            "%d of %d sequences are longer than %s (%d tokens) and were truncated.", long, len(examples), what, limit
        )
    return cut

"""Multiple-choice accuracy of a causal LM, as lm-evaluation-harness scores a `multiple_choice` task:
`MultipleChoiceObjective` and its config.

Each choice of a question is scored by the log-likelihood of its continuation, `delimiter + choice`, after the
question's context (tokenized as the harness tokenizes a `loglikelihood` request: `continuations`). The metrics are
the harness's: `accuracy`, the share of questions whose correct choice has the highest log-likelihood, and
`accuracy_norm`, the same with each log-likelihood divided by its choice's length in characters (the choice's own
text, without the delimiter, as the harness's `acc_norm` divides). Ties go to the first choice. The loss is the mean
negative log-likelihood per token of the correct continuations: the sum over every question's correct continuation
tokens divided by their number, so it does not depend on batching.

Every choice of a batch of questions is scored in one forward: the rows (one per choice, the question's context
tokens shared by all its choices) are left-padded so that every continuation ends in the last column, and the LM head
runs on the last columns only. What does not live here: the data (`choice_data`), tokenization, batches and the
log-likelihood kernel (`continuations`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import io
from ..config import BaseConfig
from ..errors import ConfigError, ModelError
from . import choice_data, continuations, text_data
from .base import DifferentiableLoss, Evaluation, Objective, StackedEvaluation, eval_mode
from .continuations import Row, RowBatch
from .nll import aligned_output_head

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "accuracy_norm")


@dataclass
class MultipleChoiceObjectiveConfig(BaseConfig):
    """Options of `MultipleChoiceObjective`.

    Args:
        question (`str`, defaults to `"question"`): the column holding each question's text (the context, unless a
            `template` makes it).
        choices (`str` or `list[str]`, defaults to `"choices"`): the column holding each question's list of choices,
            or one list of choices shared by every question (e.g. `["negative", "positive"]`).
        answer (`str`, defaults to `"answer"`): the column holding the index of the correct choice (or its text).
        template (`str`, *optional*): a format string making the context from the row's columns, e.g.
            `"Review: {sentence}\\nSentiment:"`; `{question}` is the question column. None: the question as it is.
        delimiter (`str`, defaults to `" "`): put between the context and each choice (the harness's
            `target_delimiter`).
        batch_size (`int`, defaults to 8): questions per forward pass; each brings all its choices.
        max_length (`int`, *optional*): tokens a forward reads per row at most (longer contexts lose tokens from
            the left, with a warning); None: the model's context.
        add_special_tokens (`bool`, defaults to False): let the tokenizer add BOS/EOS to contexts (the harness adds
            none for causal LMs).
        sort_by_length (`bool`, defaults to True): batch questions of similar length together, which cuts padding.
        max_examples (`int`, *optional*): keep only the first this many questions.
        split (`str`, *optional*): the split of a `DatasetDict` or of `{split: files}`; needed when there are several.

    Example:
    ```python
    >>> from hf_landscape import MultipleChoiceObjectiveConfig
    >>> MultipleChoiceObjectiveConfig(choices=["no", "yes"], answer="label").delimiter
    ' '

    ```
    """

    question: str = field(default="question", metadata={"help": "column of the question text"})
    choices: str | list[str] = field(default="choices", metadata={"help": "column of choice lists, or one list"})
    answer: str = field(default="answer", metadata={"help": "column of the correct choice's index (or text)"})
    template: str | None = field(default=None, metadata={"help": "format string making the context from a row"})
    delimiter: str = field(default=" ", metadata={"help": "between context and choice"})
    batch_size: int = field(default=8, metadata={"help": "questions per forward pass"})
    max_length: int | None = field(default=None, metadata={"help": "tokens per row at most; default the model's"})
    add_special_tokens: bool = field(default=False, metadata={"help": "tokenizer adds BOS/EOS to contexts"})
    sort_by_length: bool = field(default=True, metadata={"help": "batch similar lengths together"})
    max_examples: int | None = field(default=None, metadata={"help": "keep only the first this many questions"})
    split: str | None = field(default=None, metadata={"help": "split of a DatasetDict or of {split: files}"})

    def __post_init__(self) -> None:
        for name in ("question", "answer"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"`{name}` must be a column name, got {getattr(self, name)!r}.")
        if isinstance(self.choices, tuple):
            self.choices = list(self.choices)
        if not (isinstance(self.choices, str) and self.choices) and not isinstance(self.choices, list):
            raise ConfigError(
                f"`choices` must be a column name or a list of choice strings, got {self.choices!r:.80}; e.g. "
                "`choices='endings'` or `choices=['negative', 'positive']`."
            )
        if self.template is not None and not isinstance(self.template, str):
            raise ConfigError(f"`template` in a config must be a format string or None, got {self.template!r:.80}.")
        if not isinstance(self.delimiter, str):
            raise ConfigError(f"`delimiter` must be a string (e.g. ' ' or '\\n'), got {self.delimiter!r}.")
        for name, optional in (("batch_size", False), ("max_length", True), ("max_examples", True)):
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"`{name}` must be a positive integer{' or None' if optional else ''}, got {value!r}."
                )
        for name in ("add_special_tokens", "sort_by_length"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if self.split is not None and (not isinstance(self.split, str) or not self.split):
            raise ConfigError(f"`split` must be a split name such as 'validation', got {self.split!r}.")


@dataclass
class _Questions:
    """A batch of questions: the rows of all their choices, and which rows each question's choices are."""

    rows: RowBatch
    choice_rows: torch.Tensor  # (Q, C) batch row of each choice (0 where a question has fewer choices)
    valid: torch.Tensor  # (Q, C) whether the choice exists
    lengths: torch.Tensor  # (Q, C) float64: characters of each choice (1 where none)
    answer: torch.Tensor  # (Q,) index of the correct choice
    answer_rows: torch.Tensor  # (Q,) batch row of the correct choice
    index: list[int]  # question indices, data order


class MultipleChoiceObjective(Objective, StackedEvaluation, DifferentiableLoss):
    """Multiple-choice accuracy of a causal LM, lm-evaluation-harness style (see the module docstring).

    Args:
        dataset: the questions: a `datasets.Dataset` (a `DatasetDict` with `split`), a dict of columns or a list of
            rows; or None with `data_files`.
        tokenizer: the model's tokenizer.
        question, choices, answer, template, delimiter: which columns hold what, and how the context and
            continuations are made (see `MultipleChoiceObjectiveConfig`). `template` may also be a callable
            `row -> str`.
        data_files: local files instead of `dataset`: a path, a list of paths or `{split: paths}`, in CSV, TSV
            (tab-separated, no quoting), JSON lines or parquet.
        column_names: names of the columns of headerless CSV / TSV files, in file order.
        csv_delimiter: the field separator of CSV / TSV files (default: tab for `.tsv`, comma otherwise).
        batch_size, max_length, add_special_tokens, sort_by_length, max_examples, split: see
            `MultipleChoiceObjectiveConfig`.
        config: a `MultipleChoiceObjectiveConfig` instead of the keyword options.

    Example:
    ```python
    >>> import torch
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    >>> from hf_landscape import LandscapeProbe, MultipleChoiceObjective
    >>> words = ["<eos>", "the", "sky", "is", "grass", "blue", "green"]
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    >>> backend.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    >>> _ = torch.manual_seed(0)
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(words), n_positions=16))
    >>> data = {"question": ["the sky is", "grass is"], "choices": [["blue", "green"]] * 2, "answer": [0, 1]}
    >>> objective = MultipleChoiceObjective(data, tokenizer)
    >>> line = LandscapeProbe(model, objective, progress=False).line(steps=3, seed=0)
    >>> sorted(line.metrics)
    ['accuracy', 'accuracy_norm']

    ```
    """

    def __init__(
        self,
        dataset: Any = None,
        tokenizer: Any = None,
        *,
        question: str = "question",
        choices: str | Sequence[str] = "choices",
        answer: str = "answer",
        template: str | Callable[[dict[str, Any]], str] | None = None,
        delimiter: str = " ",
        data_files: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None = None,
        column_names: Sequence[str] | None = None,
        csv_delimiter: str | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        add_special_tokens: bool = False,
        sort_by_length: bool = True,
        max_examples: int | None = None,
        split: str | None = None,
        config: MultipleChoiceObjectiveConfig | None = None,
    ) -> None:
        self._template = template
        self.config = config or MultipleChoiceObjectiveConfig(
            question=question,
            choices=list(choices) if isinstance(choices, (list, tuple)) else choices,  # type: ignore[arg-type]
            answer=answer,
            template=template if isinstance(template, str) else None,
            delimiter=delimiter,
            batch_size=batch_size,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            sort_by_length=sort_by_length,
            max_examples=max_examples,
            split=split,
        )
        if config is not None:
            self._template = config.template
        if tokenizer is None:
            raise ModelError("`tokenizer` is required: pass the model's tokenizer (choices are scored as text).")
        self.tokenizer = tokenizer
        c = self.config
        table, self.source = choice_data.load_table(dataset, data_files, c.split, column_names, csv_delimiter)
        if c.max_examples is not None and table.num_rows > c.max_examples:
            table = table.select(range(c.max_examples))
            self.source["max_examples"] = c.max_examples
        self.source["num_rows"] = int(table.num_rows)
        self.questions = choice_data.read_questions(
            table, question=c.question, choices=c.choices, answer=c.answer, template=self._template
        )
        pairs = [(q.context, c.delimiter + choice) for q in self.questions for choice in q.choices]
        encoded = continuations.encode_pairs(tokenizer, pairs, add_special_tokens=c.add_special_tokens)
        self._pairs: list[list[tuple[list[int], list[int]]]] = []
        for q in self.questions:
            self._pairs.append(encoded[: len(q.choices)])
            encoded = encoded[len(q.choices) :]
        self._bound: tuple[Any, ...] | None = None
        self._batches: list[_Questions] = []
        self._answer_batches: list[RowBatch] = []
        self._answer_tokens = 0

    # --- provenance ------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        """The number of questions."""
        return len(self.questions)

    def fingerprint(self) -> str:
        def chunks() -> Iterator[bytes]:
            for q, pairs in zip(self.questions, self._pairs):
                for (ctx, cont), choice in zip(pairs, q.choices):
                    yield np.asarray(ctx + [-1] + cont, dtype=np.int64).tobytes() + b"|%d|" % len(choice)
                yield b"answer %d;" % q.answer

        return io.sha256_of(chunks())[:16]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if callable(self._template):
            out["template"] = getattr(self._template, "__qualname__", type(self._template).__name__)
        out.update(
            num_examples=self.num_examples,
            num_choices=sum(len(q.choices) for q in self.questions),
            source=self.source,
            loss="mean NLL per token of the correct continuations",
            metrics=list(METRICS),
            tokenizer=getattr(self.tokenizer, "name_or_path", None) or type(self.tokenizer).__name__,
        )
        return out

    # --- binding ---------------------------------------------------------------------------------

    def bind(self, model: Any) -> None:
        embeddings = model.get_input_embeddings().weight
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        limit = continuations.row_limit(model, self.config.max_length)
        key = (embeddings.device, id(model), int(embeddings.shape[0]), limit)
        if self._bound == key:  # the common case: called at every grid point, nothing changed
            return
        if head is None:
            raise ModelError(
                f"`model` ({type(model).__name__}) has no language-model head, so it cannot score choices; load it "
                "with `AutoModelForCausalLM`."
            )
        flat = [pair for pairs in self._pairs for pair in pairs]
        rows, cut = continuations.make_rows(flat, limit)
        if cut:
            logger.warning("%d of %d choice rows are longer than %s tokens: their contexts lose tokens from the left.",
                           cut, len(rows), limit)  # fmt: skip
        text_data.check_input_ids([(r.ids, []) for r in rows], int(embeddings.shape[0]))
        head_weight = getattr(head, "weight", None)
        if isinstance(head_weight, torch.Tensor):
            text_data.check_labels([(r.ids, r.ids) for r in rows], int(head_weight.shape[0]))
        per_question, start = [], 0
        for q in self.questions:
            per_question.append(rows[start : start + len(q.choices)])
            start += len(q.choices)
        self._options = continuations.forward_options(model)
        self._device = embeddings.device
        order = list(range(self.num_examples))
        if self.config.sort_by_length:
            order.sort(key=lambda i: -max(len(r.ids) for r in per_question[i]))
        size, pad = self.config.batch_size, text_data.pad_id(self.tokenizer)
        with torch.inference_mode(False):  # normal tensors, so `loss_terms` can backpropagate through them later
            self._batches = [
                self._make_batch(order[s : s + size], per_question, pad) for s in range(0, len(order), size)
            ]
            answers = [per_question[i][self.questions[i].answer] for i in order]
            self._answer_batches = [  # right-padded: every row attends to something (double backward)
                continuations.make_batch(answers[s : s + size], self._device, pad, left=False)
                for s in range(0, len(order), size)
            ]
        self._answer_tokens = sum(r.continuation for r in answers)
        self._bound = key

    def _make_batch(self, index: list[int], per_question: list[list[Row]], pad: int) -> _Questions:
        width = max(len(self.questions[i].choices) for i in index)
        choice_rows = torch.zeros((len(index), width), dtype=torch.long)
        valid = torch.zeros((len(index), width), dtype=torch.bool)
        lengths = torch.ones((len(index), width), dtype=torch.float64)
        rows: list[Row] = []
        for b, i in enumerate(index):
            q = self.questions[i]
            n = len(q.choices)
            choice_rows[b, :n] = torch.arange(len(rows), len(rows) + n)
            valid[b, :n] = True
            lengths[b, :n] = torch.tensor([float(len(c)) for c in q.choices], dtype=torch.float64)
            rows += per_question[i]
        answer = torch.tensor([self.questions[i].answer for i in index], dtype=torch.long)
        answer_rows = choice_rows[torch.arange(len(index)), answer]
        device = self._device
        return _Questions(
            rows=continuations.make_batch(rows, device, pad),
            choice_rows=choice_rows.to(device),
            valid=valid.to(device),
            lengths=lengths.to(device),
            answer=answer.to(device),
            answer_rows=answer_rows.to(device),
            index=index,
        )

    # --- the value -------------------------------------------------------------------------------

    def _totals(
        self, model: torch.nn.Module, forward: Callable[[dict[str, Any]], torch.Tensor], k: int | None, collect: bool
    ) -> tuple[torch.Tensor, list[tuple[_Questions, torch.Tensor]]]:
        """(answer NLL sum, correct, correct after normalization), shape (3,) or (3, k) for k stacked points, on the
        device; with `collect`, each batch's row log-likelihoods too."""
        self.bind(model)
        lead = () if k is None else (k,)
        totals = torch.zeros((3, *lead), dtype=torch.float64, device=self._device)
        kept = []
        with aligned_output_head(model):
            for b in self._batches:
                ll = continuations.row_loglikelihoods(
                    forward(continuations.batch_inputs(b.rows, self._options)), b.rows
                )
                scores = ll.double()[..., b.choice_rows].masked_fill(~b.valid, float("-inf"))  # (..., Q, C)
                normalized = (scores / b.lengths).masked_fill(~b.valid, float("-inf"))
                totals[0] -= ll.double()[..., b.answer_rows].sum(-1)
                totals[1] += (scores.argmax(-1) == b.answer).sum(-1)
                totals[2] += (normalized.argmax(-1) == b.answer).sum(-1)
                if collect:
                    kept.append((b, ll))
        return totals, kept

    def _evaluations(self, totals: torch.Tensor) -> list[Evaluation]:
        values = totals.reshape(3, -1).tolist()  # one host sync
        n = self.num_examples
        return [
            Evaluation(loss=nll / self._answer_tokens, metrics={"accuracy": right / n, "accuracy_norm": norm / n})
            for nll, right, norm in zip(*values)
        ]

    def evaluate(self, model: torch.nn.Module, *, details: bool = False) -> Evaluation:
        totals, kept = self._totals(model, lambda inputs: model(**inputs).logits, None, details)
        evaluation = self._evaluations(totals)[0]
        if details:
            per_question = np.empty(self.num_examples, dtype=np.float64)
            for b, ll in kept:
                answer_ll = ll.double()[b.answer_rows].cpu().numpy()
                tokens = [len(self._pairs[i][self.questions[i].answer][1]) for i in b.index]
                per_question[b.index] = -answer_ll / np.asarray(tokens, dtype=np.float64)
            evaluation.sequence_losses = per_question
        return evaluation

    def evaluate_points(self, model: torch.nn.Module, forward: Any, k: int) -> list[Evaluation]:
        """The evaluations at `k` grid points from one forward per batch: `forward(inputs)` returns the logits of all
        `k` points stacked on a leading axis (the engine's batched-points path). One host sync in all."""
        return self._evaluations(self._totals(model, forward, k, False)[0])

    def loss_points(self, model: torch.nn.Module, forward: Any, k: int) -> torch.Tensor:
        """`evaluate_points`' losses as a float64 tensor (k,) on the device, not yet read by the host."""
        return self._totals(model, forward, k, False)[0][0] / self._answer_tokens

    def loss_terms(self, model: torch.nn.Module) -> Iterator[torch.Tensor]:
        """Differentiable loss, one term per batch of correct continuations (Σ NLL / number of their tokens): the
        terms sum to the loss. Autograd must be enabled by the caller (no inference mode)."""
        self.bind(model)
        for b in self._answer_batches:
            logits = model(**continuations.batch_inputs(b, self._options)).logits
            yield -continuations.row_loglikelihoods(logits, b).sum() / self._answer_tokens

    def choice_loglikelihoods(self, model: torch.nn.Module) -> list[np.ndarray]:
        """The log-likelihood of every choice's continuation (float64), one array per question in data order, at
        the model as it stands (in eval and inference mode, each module's flag given back)."""
        out: list[np.ndarray] = [np.empty(0)] * self.num_examples
        with eval_mode(model), torch.inference_mode():
            _, kept = self._totals(model, lambda inputs: model(**inputs).logits, None, True)
        for b, ll in kept:
            values = ll.double().cpu().numpy()
            rows = b.choice_rows.cpu().numpy()
            for q, i in enumerate(b.index):
                out[i] = values[rows[q, : len(self.questions[i].choices)]]
        return out

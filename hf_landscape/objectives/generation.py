"""Scores of generated answers at every grid point: `GenerationObjective` and its config.

At each point the model answers every prompt by greedy decoding (the argmax token at every step, the model's
generation config ignored), batched with left padding and the KV cache, each answer ending at the model's EOS token or
after `max_new_tokens` tokens, then cut at the first `stop` string. `score` is the mean of
`scorer(prompt, answer[, reference])` over the prompts (`scorers`: exact match, contains, regex, refusal, or any
callable). Token for token the answers are those of `model.generate(..., do_sample=False)`.

The loss: with references, the mean negative log-likelihood per token of the reference answers (`delimiter +
reference` after each prompt, tokenized as lm-evaluation-harness tokenizes a continuation: `continuations`),
teacher-forced in one more forward per batch; without references, the mean negative log-likelihood per token of the
greedy answers themselves (EOS included), read from the decoding's own logits: how sure the model is of what it says.
Either is finite wherever the logits are. Metrics: `score`, `generated_nll` (the latter figure, always) and
`new_tokens` (mean answer length in tokens, EOS included).

Decoding reads every step's tokens back to the host (to stop when every answer has ended), so the objective declares
itself `eager_only`: one point per forward, never stacked, recorded as a CUDA graph or compiled. What does not live
here: the scorers (`scorers`), the reference rows and their log-likelihood kernel (`continuations`).
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
from ..errors import ConfigError, ModelError, ObjectiveError
from . import choice_data, continuations, scorers, text_data
from .base import Evaluation, Objective, eval_mode
from .continuations import RowBatch

logger = logging.getLogger(__name__)


@dataclass
class GenerationObjectiveConfig(BaseConfig):
    """Options of `GenerationObjective`.

    Args:
        max_new_tokens (`int`, defaults to 32): tokens generated per prompt at most (EOS ends an answer earlier).
        stop (`list[str]`, *optional*): an answer is cut at the first of these strings (e.g. `["\\n"]`) before it
            is scored; decoding itself runs on to EOS or `max_new_tokens`.
        delimiter (`str`, defaults to `" "`): put between a prompt and its reference for the reference loss.
        batch_size (`int`, defaults to 8): prompts decoded together.
        add_special_tokens (`bool`, defaults to False): let the tokenizer add BOS/EOS to prompts (as
            lm-evaluation-harness, none for causal LMs).
        sort_by_length (`bool`, defaults to True): batch prompts of similar length together, which cuts padding.

    Example:
    ```python
    >>> from hf_landscape import GenerationObjectiveConfig
    >>> GenerationObjectiveConfig(max_new_tokens=8, stop=["\\n"]).batch_size
    8

    ```
    """

    max_new_tokens: int = field(default=32, metadata={"help": "tokens generated per prompt at most"})
    stop: list[str] | None = field(default=None, metadata={"help": "answers are cut at the first of these strings"})
    delimiter: str = field(default=" ", metadata={"help": "between prompt and reference (reference loss)"})
    batch_size: int = field(default=8, metadata={"help": "prompts decoded together"})
    add_special_tokens: bool = field(default=False, metadata={"help": "tokenizer adds BOS/EOS to prompts"})
    sort_by_length: bool = field(default=True, metadata={"help": "batch similar lengths together"})

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is not None:
            self.stop = list(self.stop)
            if not all(isinstance(s, str) and s for s in self.stop):
                raise ConfigError(f"`stop` must be a list of non-empty strings (e.g. ['\\n']), got {self.stop!r}.")
        if not isinstance(self.delimiter, str):
            raise ConfigError(f"`delimiter` must be a string (e.g. ' '), got {self.delimiter!r}.")
        for name in ("add_special_tokens", "sort_by_length"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")


@dataclass
class _Prompts:
    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, position_ids (left-padded)
    index: list[int]  # prompt indices, data order


@dataclass
class Answers:
    """Greedy answers of every prompt, in data order: their tokens (EOS included, if reached), text (cut at a stop
    string) and the NLL of their tokens."""

    tokens: list[list[int]]
    texts: list[str]
    nll: np.ndarray  # Σ NLL of each answer's tokens


class GenerationObjective(Objective):
    """Scores of greedy answers to fixed prompts (see the module docstring).

    Args:
        prompts: the prompts, a non-empty list of strings.
        tokenizer: the model's tokenizer (it decodes the answers too).
        scorer: `scorer(prompt, answer[, reference]) -> number`, or a built-in by name: `"exact_match"`,
            `"contains"`, `"refusal"`, `"regex:PATTERN"` (`hf_landscape.objectives.scorers`). It is tried once on
            the first prompt when the objective is made.
        max_new_tokens: tokens generated per prompt at most.
        references: one reference answer per prompt, passed to the scorer; their loss is the objective's loss.
        stop, delimiter, batch_size, add_special_tokens, sort_by_length: see `GenerationObjectiveConfig`.
        config: a `GenerationObjectiveConfig` instead of the keyword options.

    Example:
    ```python
    >>> import torch
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    >>> from hf_landscape import GenerationObjective, LandscapeProbe
    >>> words = ["<eos>", "one", "two", "three", "plus", "is"]
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    >>> backend.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, vocab_size=len(words), max_position_embeddings=32, eos_token_id=0))
    >>> objective = GenerationObjective(["one plus one is", "one plus two is"], tokenizer, "exact_match",
    ...     max_new_tokens=2, references=["two", "three"])
    >>> line = LandscapeProbe(model, objective, progress=False).line(steps=3, seed=0)
    >>> sorted(line.metrics)
    ['generated_nll', 'new_tokens', 'score']

    ```
    """

    #: greedy decoding reads every step's tokens back to the host: no stacking, CUDA graphs or compile
    eager_only = True

    def __init__(
        self,
        prompts: Sequence[str],
        tokenizer: Any,
        scorer: Callable[..., Any] | str,
        *,
        max_new_tokens: int = 32,
        references: Sequence[str] | None = None,
        stop: Sequence[str] | str | None = None,
        delimiter: str = " ",
        batch_size: int = 8,
        add_special_tokens: bool = False,
        sort_by_length: bool = True,
        config: GenerationObjectiveConfig | None = None,
    ) -> None:
        self.config = config or GenerationObjectiveConfig(
            max_new_tokens=max_new_tokens,
            stop=None if stop is None else ([stop] if isinstance(stop, str) else list(stop)),
            delimiter=delimiter,
            batch_size=batch_size,
            add_special_tokens=add_special_tokens,
            sort_by_length=sort_by_length,
        )
        self.prompts = _strings(prompts, "prompts")
        self.references = None if references is None else _strings(references, "references")
        if self.references is not None and len(self.references) != len(self.prompts):
            raise ObjectiveError(
                f"`references` holds {len(self.references)} answers for {len(self.prompts)} prompts; pass one "
                "reference per prompt."
            )
        if tokenizer is None:
            raise ModelError("`tokenizer` is required: pass the model's tokenizer (it also decodes the answers).")
        self.tokenizer = tokenizer
        self.scorer = scorers.get_scorer(scorer)
        scorers.check_scorer(self.scorer, self.prompts[0], None if self.references is None else self.references[0])
        special = self.config.add_special_tokens
        self.prompt_ids = [list(x) for x in tokenizer(self.prompts, add_special_tokens=special)["input_ids"]]
        empty = [i for i, x in enumerate(self.prompt_ids) if not x]
        if empty:
            raise ObjectiveError(f"Prompt {empty[0]} has no tokens; every prompt needs some text.")
        self._reference_pairs = (
            None
            if self.references is None
            else continuations.encode_pairs(
                tokenizer,
                [(p, self.config.delimiter + r) for p, r in zip(self.prompts, self.references)],
                add_special_tokens=special,
            )
        )
        self.source = {"type": "prompts", "num_prompts": len(self.prompts), "references": self.references is not None}
        self._bound: tuple[Any, ...] | None = None

    @classmethod
    def from_data(
        cls,
        dataset: Any = None,
        tokenizer: Any = None,
        scorer: Callable[..., Any] | str = "exact_match",
        *,
        prompt: str = "prompt",
        reference: str | None = None,
        data_files: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None = None,
        column_names: Sequence[str] | None = None,
        csv_delimiter: str | None = None,
        split: str | None = None,
        max_examples: int | None = None,
        **options: Any,
    ) -> GenerationObjective:
        """The objective of a table of prompts (and references): `dataset` (a `datasets.Dataset`, a `DatasetDict`
        with `split`, a dict of columns or a list of rows) or local `data_files` (CSV, TSV, JSON lines, parquet;
        `column_names` for headerless CSV/TSV), its `prompt` column and optional `reference` column; `options` are
        the constructor's (`max_new_tokens`, `stop`, ...)."""
        table, source = choice_data.load_table(dataset, data_files, split, column_names, csv_delimiter)
        if max_examples is not None:
            if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
                raise ConfigError(f"`max_examples` must be a positive integer or None, got {max_examples!r}.")
            table = table.select(range(min(max_examples, table.num_rows)))
        for column in (prompt, reference):
            if column is not None and column not in table.column_names:
                raise ObjectiveError(
                    f"The data have no column {column!r} (columns: {table.column_names}); name the prompt and "
                    "reference columns with `prompt=` and `reference=`."
                )
        references = None if reference is None else list(table[reference])
        objective = cls(list(table[prompt]), tokenizer, scorer, references=references, **options)
        objective.source = {**source, **objective.source, "prompt_column": prompt, "reference_column": reference}
        return objective

    # --- provenance ------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        return len(self.prompts)

    def fingerprint(self) -> str:
        def chunks() -> Iterator[bytes]:
            for i, ids in enumerate(self.prompt_ids):
                yield np.asarray(ids, dtype=np.int64).tobytes() + b"|"
                if self._reference_pairs is not None:
                    yield np.asarray(self._reference_pairs[i][1], dtype=np.int64).tobytes() + b"|"
                    yield self.references[i].encode()  # type: ignore[index]
                yield b";"
            yield repr(scorers.describe_scorer(self.scorer)).encode()

        return io.sha256_of(chunks())[:16]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            num_examples=self.num_examples,
            source=self.source,
            scorer=scorers.describe_scorer(self.scorer),
            loss=(
                "mean NLL per token of the references"
                if self.references is not None
                else "mean NLL per token of the greedy answers"
            ),
            metrics=["generated_nll", "new_tokens", "score"],
            tokenizer=getattr(self.tokenizer, "name_or_path", None) or type(self.tokenizer).__name__,
        )
        return out

    # --- binding ---------------------------------------------------------------------------------

    def bind(self, model: Any) -> None:
        embeddings = model.get_input_embeddings().weight
        context = text_data.context_length(model)
        key = (embeddings.device, id(model), int(embeddings.shape[0]), context)
        if self._bound == key:
            return
        if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
            raise ModelError(
                f"`model` ({type(model).__name__}) has no language-model head, so it cannot generate; load it with "
                "`AutoModelForCausalLM`."
            )
        vocab = int(embeddings.shape[0])
        text_data.check_input_ids([(ids, []) for ids in self.prompt_ids], vocab)
        longest = max(range(self.num_examples), key=lambda i: len(self.prompt_ids[i]))
        needed = len(self.prompt_ids[longest]) + self.config.max_new_tokens
        if context is not None and needed > context:
            raise ConfigError(
                f"Prompt {longest} has {len(self.prompt_ids[longest])} tokens; with `max_new_tokens` "
                f"{self.config.max_new_tokens} it needs {needed} positions but the model reads at most {context}; "
                "lower `max_new_tokens` or shorten the prompt."
            )
        self._options = continuations.forward_options(model)
        self._device = embeddings.device
        self._eos = torch.tensor(_eos_ids(model, self.tokenizer), dtype=torch.long, device=self._device)
        self._pad = text_data.pad_id(self.tokenizer)
        order = list(range(self.num_examples))
        if self.config.sort_by_length:
            order.sort(key=lambda i: -len(self.prompt_ids[i]))
        size = self.config.batch_size
        with torch.inference_mode(False):  # normal tensors, usable outside inference mode too
            self._batches = [self._prompt_batch(order[s : s + size]) for s in range(0, len(order), size)]
            self._reference_batches = self._make_reference_batches(order, context, vocab)
        self._bound = key

    def _make_reference_batches(
        self, order: list[int], context: int | None, vocab: int
    ) -> list[tuple[RowBatch, list[int]]]:
        """The teacher-forced rows of the references, batched in `order`, with their prompt indices."""
        if self._reference_pairs is None:
            return []
        rows, cut = continuations.make_rows(self._reference_pairs, context)
        if cut:
            logger.warning(
                "%d of %d prompts lose tokens from the left to fit the model's context with their references.",
                cut,
                len(rows),
            )
        text_data.check_input_ids([(r.ids, []) for r in rows], vocab)
        self._reference_tokens = sum(r.continuation for r in rows)
        size = self.config.batch_size
        batches = [order[s : s + size] for s in range(0, len(order), size)]
        return [
            (continuations.make_batch([rows[i] for i in index], self._device, self._pad), index) for index in batches
        ]

    def _prompt_batch(self, index: list[int]) -> _Prompts:
        width = max(len(self.prompt_ids[i]) for i in index)
        ids = torch.full((len(index), width), self._pad, dtype=torch.long)
        attn = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            x = self.prompt_ids[i]
            ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            attn[row, width - len(x) :] = 1
        positions = (attn.cumsum(dim=1) - 1).clamp_min(0)
        inputs = {"input_ids": ids, "attention_mask": attn, "position_ids": positions}
        return _Prompts({k: v.to(self._device) for k, v in inputs.items()}, index)

    # --- decoding --------------------------------------------------------------------------------

    def _decode(self, model: torch.nn.Module, batch: _Prompts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Greedy answers of one batch: tokens (B, T) (the pad id after an answer's EOS), each answer's length in
        tokens (EOS included) and the sum of its tokens' NLL (float64)."""
        ids, attn = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        positions = batch.inputs["position_ids"][:, -1:]
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn, "use_cache": True}
        if self._options.positions:
            kwargs["position_ids"] = batch.inputs["position_ids"]
        if self._options.logits_to_keep:
            kwargs["logits_to_keep"] = 1
        rows = ids.shape[0]
        finished = torch.zeros(rows, dtype=torch.bool, device=ids.device)
        nll = torch.zeros(rows, dtype=torch.float64, device=ids.device)
        lengths = torch.zeros(rows, dtype=torch.long, device=ids.device)
        tokens: list[torch.Tensor] = []
        sequence = ids
        for step in range(self.config.max_new_tokens):
            output = model(**kwargs)
            logits = output.logits[:, -1, :]
            chosen = logits.argmax(dim=-1)
            logp = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
            live = ~finished
            nll += torch.where(live, -logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1), 0.0).double()
            lengths += live.long()
            chosen = torch.where(finished, torch.full_like(chosen, self._pad), chosen)
            tokens.append(chosen)
            finished = finished | torch.isin(chosen, self._eos)
            if step + 1 == self.config.max_new_tokens or bool(finished.all()):
                break
            attn = torch.cat([attn, attn.new_ones((rows, 1))], dim=1)
            positions = positions + 1
            cache = _output_cache(output)
            if cache is None:  # a model that returns no cache: read the whole sequence again
                sequence = torch.cat([sequence, chosen.unsqueeze(1)], dim=1)
                kwargs = {"input_ids": sequence, "attention_mask": attn, "use_cache": False}
                if self._options.positions:
                    kwargs["position_ids"] = (attn.cumsum(dim=1) - 1).clamp_min(0)
            else:
                kwargs = {"input_ids": chosen.unsqueeze(1), "attention_mask": attn, "use_cache": True}
                kwargs[self._options.cache_name] = cache
                if self._options.positions:
                    kwargs["position_ids"] = positions
            if self._options.logits_to_keep:
                kwargs["logits_to_keep"] = 1
        return torch.stack(tokens, dim=1), lengths, nll

    def _answers(self, model: torch.nn.Module) -> Answers:
        self.bind(model)
        n = self.num_examples
        tokens: list[list[int]] = [[] for _ in range(n)]
        nll = np.zeros(n, dtype=np.float64)
        for batch in self._batches:
            new, lengths, sums = self._decode(model, batch)
            new_rows, counts, values = new.tolist(), lengths.tolist(), sums.tolist()
            for row, i in enumerate(batch.index):
                tokens[i] = new_rows[row][: counts[row]]
                nll[i] = values[row]
        eos = set(self._eos.tolist())
        texts = [self._text(t, eos) for t in tokens]
        return Answers(tokens, texts, nll)

    def _text(self, tokens: list[int], eos: set[int]) -> str:
        body = tokens[:-1] if tokens and tokens[-1] in eos else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        for s in self.config.stop or ():
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return text

    def generate(self, model: torch.nn.Module) -> list[str]:
        """The greedy answer to every prompt at the model as it stands (cut at the first `stop` string), in prompt
        order; run in eval and inference mode, each module's flag given back."""
        with eval_mode(model), torch.inference_mode():
            return self._answers(model).texts

    # --- the value -------------------------------------------------------------------------------

    def evaluate(self, model: torch.nn.Module, *, details: bool = False) -> Evaluation:
        answers = self._answers(model)
        references: list[str | None] = [None] * self.num_examples if self.references is None else [*self.references]
        values = [
            scorers.score(self.scorer, p, text, r, i)
            for i, (p, text, r) in enumerate(zip(self.prompts, answers.texts, references))
        ]
        lengths = np.array([len(t) for t in answers.tokens], dtype=np.float64)
        generated = float(answers.nll.sum() / lengths.sum())
        metrics = {"score": float(np.mean(values)), "generated_nll": generated, "new_tokens": float(lengths.mean())}
        per_prompt = answers.nll / lengths
        if self.references is None:
            loss = generated
        else:
            per_prompt = self._reference_nll(model)
            loss = float(per_prompt.sum() / self._reference_tokens)
            per_prompt = per_prompt / np.array([len(p[1]) for p in self._reference_pairs or []], dtype=np.float64)
        return Evaluation(loss=loss, metrics=metrics, sequence_losses=per_prompt if details else None)

    def _reference_nll(self, model: torch.nn.Module) -> np.ndarray:
        """Σ NLL of each reference's tokens after its prompt (float64, prompt order)."""
        out = np.zeros(self.num_examples, dtype=np.float64)
        for batch, index in self._reference_batches:
            logits = model(**continuations.batch_inputs(batch, self._options)).logits
            out[index] = -continuations.row_loglikelihoods(logits, batch).double().cpu().numpy()
        return out


def _strings(values: Any, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ObjectiveError(f"`{name}` must be a list of strings, got {type(values).__name__} {values!r:.60}.")
    if len(values) == 0:
        raise ObjectiveError(f"`{name}` is empty; pass at least one.")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ObjectiveError(f"`{name}[{i}]` is {type(v).__name__} {v!r:.60}, not a string.")
    return list(values)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the model's generation config's EOS ids, else its config's, else the
    tokenizer's (none: answers run to `max_new_tokens`)."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
        ids = [int(v) for v in ids if isinstance(v, int) and not isinstance(v, bool)]
        if ids:
            return ids
    return []


def _output_cache(output: Any) -> Any:
    """The KV cache a forward returned (`cache` in transformers >= 5.x, `past_key_values` before), or None."""
    for name in ("cache", "past_key_values"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None

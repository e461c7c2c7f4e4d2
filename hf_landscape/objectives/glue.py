"""GLUE task loss and metrics for sequence-classification models.

The loss is the task's own: cross-entropy of the logits against the label for the classification tasks, and the
squared error of the single output against the float score for STS-B (regression), summed over every example of
the evaluation set in float64 and divided by their number. It is not a mean of batch means, so it is the same, to
float rounding, whatever the batch size, padding side and order. The task's official metrics (Matthews correlation
for CoLA, accuracy and F1 for MRPC and QQP, Pearson and Spearman correlations for STS-B, accuracy otherwise) are
computed with `evaluate`, from the same logits, at every evaluation, with the metric modules shipped in
`hf_landscape/metrics/` (so nothing is downloaded).

Data come from the `nyu-mll/glue` dataset on the Hub by name (online only), from local CSV / TSV / JSON / parquet
files, or from a `datasets.Dataset` (`glue_data`); the tasks' columns, labels and metrics are in `glue_tasks`. What
does not live here: the grid loop (`engine/`) and the metric scripts (`metrics/`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import io
from ..config import BaseConfig, check_choice
from ..errors import ConfigError, ModelError
from . import glue_data
from .base import DifferentiableLoss, Evaluation, LogitTerm, LogitTerms, Objective, eval_mode
from .glue_tasks import GLUE_TASKS, GlueTask, glue_task

logger = logging.getLogger(__name__)


@dataclass
class GlueObjectiveConfig(BaseConfig):
    """Options of `GlueObjective`.

    Args:
        task (`str`, defaults to `"cola"`): one of `cola`, `sst2`, `mrpc`, `qqp`, `stsb`, `mnli`, `mnli_matched`,
            `mnli_mismatched`, `qnli`, `rte`, `wnli` (case and dashes ignored). Sets the input columns, the loss
            (MSE for `stsb`, cross-entropy otherwise), the number of labels the model must have and the metrics.
        split (`str`, *optional*): the split to evaluate; defaults to `"validation"` (`"validation_matched"` for
            `mnli`). For local files given as `{split: files}` it picks the entry.
        max_length (`int`, defaults to 128): examples are truncated to this many tokens (pairs: the longer
            sentence first), with a warning saying how many were.
        batch_size (`int`, defaults to 32): examples per forward pass; the loss does not depend on it.
        padding_side (`str`, defaults to `"right"`): `"right"` or `"left"`. Encoders that read their first token
            (BERT's [CLS] pooler) need `"right"`; `check_padding` catches the mismatch.
        sort_by_length (`bool`, defaults to `True`): batch examples of similar length together, which cuts padding.
        max_examples (`int`, *optional*): evaluate only the first this many examples of the split.
        revision (`str`, *optional*): revision of the Hub dataset when loading by name (branch, tag or commit);
            the resolved commit is recorded either way.
        check_padding (`bool`, defaults to `True`): when binding a model, check once that padding does not change
            its outputs (one short example alone against the same example padded), and refuse the padding side
            otherwise.

    Example:
    ```python
    >>> from hf_landscape import GlueObjectiveConfig
    >>> GlueObjectiveConfig(task="MNLI").split
    'validation_matched'

    ```
    """

    task: str = field(default="cola", metadata={"help": "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, ..."})
    split: str | None = field(default=None, metadata={"help": "split to evaluate; default validation"})
    max_length: int = field(default=128, metadata={"help": "tokens per example at most"})
    batch_size: int = field(default=32, metadata={"help": "examples per forward pass"})
    padding_side: str = field(default="right", metadata={"help": "right or left"})
    sort_by_length: bool = field(default=True, metadata={"help": "batch similar lengths together"})
    max_examples: int | None = field(default=None, metadata={"help": "evaluate only the first this many examples"})
    revision: str | None = field(default=None, metadata={"help": "revision of the Hub dataset (by-name loading)"})
    check_padding: bool = field(default=True, metadata={"help": "check once that padding leaves outputs unchanged"})

    def __post_init__(self) -> None:
        self.task = glue_task(self.task).name
        if self.split is None:
            self.split = GLUE_TASKS[self.task].default_split
        if not isinstance(self.split, str) or not self.split:
            raise ConfigError(f"`split` must be a split name such as 'validation', got {self.split!r}.")
        for name, low in (("max_length", 2), ("batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        check_choice("padding_side", self.padding_side, ("right", "left"))
        for name in ("sort_by_length", "check_padding"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if self.max_examples is not None and (
            not isinstance(self.max_examples, int) or isinstance(self.max_examples, bool) or self.max_examples < 1
        ):
            raise ConfigError(f"`max_examples` must be a positive integer or None, got {self.max_examples!r}.")
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision):
            raise ConfigError(f"`revision` must be a branch, tag or commit of the Hub dataset, got {self.revision!r}.")


@dataclass
class _Batch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    index: list[int]  # example indices of the rows


class GlueObjective(Objective, DifferentiableLoss, LogitTerms):
    """Task loss and official metrics of a GLUE task, over a fixed evaluation set tokenized once.

    Args:
        task: the GLUE task (`"cola"`, `"sst2"`, `"mrpc"`, `"qqp"`, `"stsb"`, `"mnli"`, `"mnli_matched"`,
            `"mnli_mismatched"`, `"qnli"`, `"rte"`, `"wnli"`).
        tokenizer: the model's tokenizer; pairs are tokenized as pairs (`tokenizer(first, second)`).
        split: see `GlueObjectiveConfig`.
        data: the examples, instead of loading by name: a `datasets.Dataset` (or `DatasetDict`, indexed by
            `split`), a dict of columns or a list of rows. Columns and label ids as in the Hub's `glue` dataset.
        data_files: local files instead of loading by name: a path, a list of paths or `{split: paths}`, in CSV,
            TSV (tab-separated, no quoting, as GLUE ships them), JSON lines or parquet.
        column_names: names of the columns of headerless CSV / TSV files, in file order, e.g.
            `["sentence", "label"]` for CoLA's `dev.tsv`.
        column_mapping: `{column in the data: task column}` renames, e.g. `{"text": "sentence"}`.
        delimiter: the field separator of CSV / TSV files (default: tab for `.tsv`, comma otherwise).
        max_length, batch_size, padding_side, sort_by_length, max_examples, revision, check_padding:
            see `GlueObjectiveConfig`.
        config: a `GlueObjectiveConfig` to use instead of the keyword options (its task must be `task`).

    Loading by name (`data` and `data_files` both None) uses `datasets.load_dataset("nyu-mll/glue", task)` and
    records the dataset's resolved commit and fingerprint in `describe()`. Offline (`HF_HUB_OFFLINE`,
    `HF_DATASETS_OFFLINE`) it fails at once with an `ObjectiveError` instead of waiting on the network.

    Example:
    ```python
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from hf_landscape import GlueObjective, LandscapeProbe
    >>> _ = torch.manual_seed(0)
    >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...     intermediate_size=32, vocab_size=30, num_labels=2))
    >>> data = {"input_ids": [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 3]], "label": [1, 0, 1]}
    >>> objective = GlueObjective("cola", data=data)
    >>> plane = LandscapeProbe(model, objective, progress=False).plane(steps=(3, 3), seed=0)
    >>> plane.values.shape, sorted(plane.metrics)
    ((3, 3), ['matthews_correlation'])

    ```
    Pre-tokenized `data` (an `input_ids` column, optionally `token_type_ids`) needs no tokenizer.
    """

    auto_model_class = "AutoModelForSequenceClassification"

    def __init__(
        self,
        task: str,
        tokenizer: Any = None,
        *,
        split: str | None = None,
        data: Any = None,
        data_files: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None = None,
        column_names: Sequence[str] | None = None,
        column_mapping: Mapping[str, str] | None = None,
        delimiter: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        padding_side: str = "right",
        sort_by_length: bool = True,
        max_examples: int | None = None,
        revision: str | None = None,
        check_padding: bool = True,
        config: GlueObjectiveConfig | None = None,
    ) -> None:
        if config is not None:
            if glue_task(task).name != config.task:
                raise ConfigError(f"`task` {task!r} and `config.task` {config.task!r} differ; pass one task.")
            self.config = config
        else:
            self.config = GlueObjectiveConfig(
                task=task,
                split=split,
                max_length=max_length,
                batch_size=batch_size,
                padding_side=padding_side,
                sort_by_length=sort_by_length,
                max_examples=max_examples,
                revision=revision,
                check_padding=check_padding,
            )
        self.task = GLUE_TASKS[self.config.task]
        self.tokenizer = tokenizer
        dataset, self.source = glue_data.load_dataset(
            self.task,
            str(self.config.split),
            self.config.revision,
            data,
            data_files,
            column_names,
            column_mapping,
            delimiter,
        )
        if self.config.max_examples is not None and dataset.num_rows > self.config.max_examples:
            dataset = dataset.select(range(self.config.max_examples))
            self.source["max_examples"] = self.config.max_examples
        self.labels = glue_data.read_labels(dataset, self.task)
        self.examples = glue_data.tokenize(dataset, self.task, tokenizer, self.config.max_length)
        self._metrics = {module: _load_metric(module) for _, module in self.task.metrics}
        self._bound: tuple[Any, ...] | None = None
        self._batches: list[_Batch] = []
        self._references = self.labels

    # --- provenance ------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    def fingerprint(self) -> str:

        def chunks() -> Iterator[bytes]:
            yield self.task.name.encode()
            for ex, label in zip(self.examples, self.labels):
                yield np.asarray(ex.input_ids, dtype=np.int64).tobytes() + b"|"
                if ex.token_type_ids is not None:
                    yield np.asarray(ex.token_type_ids, dtype=np.int64).tobytes()
                yield b"|" + np.float64(label).tobytes() + b";"

        return io.sha256_of(chunks())[:16]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            num_examples=self.num_examples,
            source=self.source,
            loss="mse" if self.task.is_regression else "cross_entropy",
            metrics=[key for key, _ in self.task.metrics],
            label_names=list(self.task.label_names),
        )
        if self.tokenizer is not None:
            out["tokenizer"] = getattr(self.tokenizer, "name_or_path", None) or type(self.tokenizer).__name__
        return out

    # --- binding ---------------------------------------------------------------------------------

    def bind(self, model: Any) -> None:
        _check_model(model, self.task)
        device = model.get_input_embeddings().weight.device
        vocab = model.get_input_embeddings().weight.shape[0]  # a resized vocabulary binds again (and is checked)
        key = (device, id(model), type(model), getattr(model.config, "pad_token_id", None), vocab)
        if self._bound == key:
            return
        self._check_fits(model)
        parameters = inspect.signature(model.forward).parameters
        self._pad_id = _pad_id(model, self.tokenizer)
        self._pass_positions = "position_ids" in parameters
        self._pass_token_types = "token_type_ids" in parameters and self.examples[0].token_type_ids is not None
        self._device = device
        order = list(range(self.num_examples))
        if self.config.sort_by_length:
            order.sort(key=lambda i: -len(self.examples[i].input_ids))
        size = self.config.batch_size
        with torch.inference_mode(False):  # normal tensors, so `loss_terms` can backpropagate through them later
            self._batches = [self._make_batch(order[s : s + size]) for s in range(0, len(order), size)]
        batched = np.concatenate([b.index for b in self._batches])
        self._references = self.labels[batched]  # the metrics see predictions in batch order
        self._order = batched
        if self.config.check_padding:
            self._check_padding(model)
        self._bound = key

    def _check_fits(self, model: Any) -> None:
        vocab = model.get_input_embeddings().weight.shape[0]
        top = max(max(ex.input_ids) for ex in self.examples)
        if top >= vocab:
            raise ModelError(
                f"The data hold token id {top} but the model's embedding has {vocab} rows: the tokenizer does not "
                "belong to this model; pass the model's own tokenizer."
            )
        context = getattr(model.config, "max_position_embeddings", None)
        longest = max(len(ex.input_ids) for ex in self.examples)
        if isinstance(context, int) and longest > context:
            raise ConfigError(
                f"`max_length` {self.config.max_length} lets examples reach {longest} tokens but the model reads at "
                f"most {context}; pass `max_length={context}` or less."
            )

    def _make_batch(self, index: list[int]) -> _Batch:
        examples = [self.examples[i] for i in index]
        width = max(len(ex.input_ids) for ex in examples)
        left = self.config.padding_side == "left"
        ids = torch.full((len(index), width), self._pad_id, dtype=torch.long)
        attn = torch.zeros((len(index), width), dtype=torch.long)
        types = torch.zeros((len(index), width), dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex.input_ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[row, cols] = torch.tensor(ex.input_ids, dtype=torch.long)
            attn[row, cols] = 1
            if ex.token_type_ids is not None:
                types[row, cols] = torch.tensor(ex.token_type_ids, dtype=torch.long)
        inputs = {"input_ids": ids, "attention_mask": attn}
        if self._pass_positions:
            # Explicit positions: left padding must not shift the positions the real tokens see.
            inputs["position_ids"] = (attn.cumsum(dim=1) - 1).clamp_min(0)
        if self._pass_token_types:
            inputs["token_type_ids"] = types
        dtype = torch.float32 if self.task.is_regression else torch.long
        labels = torch.as_tensor(self.labels[index], dtype=dtype)
        return _Batch({k: v.to(self._device) for k, v in inputs.items()}, labels.to(self._device), index)

    def _check_padding(self, model: Any) -> None:
        """Refuse a padding side that changes the model's outputs (e.g. left padding with BERT's [CLS] pooler)."""
        lengths = [len(ex.input_ids) for ex in self.examples]
        short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
        if lengths[short] == lengths[long]:
            return  # nothing is ever padded
        try:
            with eval_mode(model), torch.inference_mode():
                alone = model(**self._make_batch([short]).inputs).logits[0].float()
                padded = model(**self._make_batch([long, short]).inputs).logits[1].float()
        except ValueError as err:
            raise ModelError(
                f"`model` ({type(model).__name__}) cannot evaluate a padded batch ({err}); if it reads its last "
                "token, set `model.config.pad_token_id` (e.g. to `tokenizer.pad_token_id` or the EOS id)."
            ) from None
        half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
        tolerance = (5e-2 if half else 1e-3) * max(1.0, float(alone.abs().max()))
        gap = float((alone - padded).abs().max())
        if not gap <= tolerance:
            side = self.config.padding_side
            fix = (
                "a model that reads its first token (BERT's [CLS] pooler, RoBERTa, ...) needs `padding_side='right'`"
                if side == "left"
                else "a model that reads its last token needs `model.config.pad_token_id` set to the padding id, or "
                "`padding_side='left'`"
            )
            raise ConfigError(
                f"`padding_side={side!r}` changes this model's outputs (logits differ by {gap:.3g} when an example "
                f"is padded), so the loss would depend on batching; {fix}."
            )

    # --- the value -------------------------------------------------------------------------------

    def _batch_losses(self, logits: torch.Tensor, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example loss (squared error for regression, cross-entropy otherwise) and predictions."""
        if self.task.is_regression:
            scores = logits[:, 0].float()
            return (scores - b.labels) ** 2, scores
        return F.cross_entropy(logits.float(), b.labels, reduction="none"), logits.argmax(dim=-1)

    def loss_terms(self, model: torch.nn.Module) -> Iterator[torch.Tensor]:
        """Differentiable loss, one term per batch (Σ example loss / number of examples); the terms sum to the
        loss, so gradients or Hessian-vector products can be accumulated batch by batch."""
        self.bind(model)
        for b in self._batches:
            yield self._batch_losses(model(**b.inputs).logits, b)[0].sum() / self.num_examples

    def logit_terms(self, model: torch.nn.Module) -> Iterator[LogitTerm]:
        """The loss batch by batch as logits `(examples, labels)` and labels: softmax cross-entropy, or the squared
        error of `logits[:, 0]` for a regression task, scaled by 1 / the number of examples (Gauss-Newton curvature)."""
        self.bind(model)
        loss = "squared_error" if self.task.is_regression else "cross_entropy"
        for b in self._batches:
            yield LogitTerm(model(**b.inputs).logits, b.labels, loss, 1.0 / self.num_examples)

    def evaluate(self, model: torch.nn.Module, *, details: bool = False) -> Evaluation:
        if self._bound is None or self._bound[1] != id(model):
            self.bind(model)
        total = torch.zeros((), dtype=torch.float64, device=self._device)
        predictions, losses = [], []
        for b in self._batches:
            loss, prediction = self._batch_losses(model(**b.inputs).logits, b)
            predictions.append(prediction)
            total += loss.sum(dtype=torch.float64)
            if details:
                losses.append(loss)
        value = total.item() / self.num_examples
        predicted = torch.cat(predictions).cpu().numpy()
        metrics = self.compute_metrics(predicted, self._references)
        if not details:
            return Evaluation(loss=value, metrics=metrics)
        per_example = np.empty(self.num_examples, dtype=np.float64)
        per_example[self._order] = torch.cat(losses).double().cpu().numpy()
        return Evaluation(loss=value, metrics=metrics, sequence_losses=per_example)

    def compute_metrics(self, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
        """The task's metrics of `predictions` (class ids, or scores for STS-B) against `references`."""
        if self.task.is_regression:
            predictions = np.asarray(predictions, dtype=np.float64)
        return {
            key: float(self._metrics[module].compute(predictions=predictions, references=references)[module])
            for key, module in self.task.metrics
        }


# --- models ----------------------------------------------------------------------------------------


def _check_model(model: Any, task: GlueTask) -> None:
    name = type(model).__name__
    fix = f"`AutoModelForSequenceClassification.from_pretrained(name, num_labels={task.num_labels})`"
    config = getattr(model, "config", None)
    if not name.endswith("ForSequenceClassification") or config is None:
        raise ModelError(
            f"`model` ({name}) is not a sequence-classification model, so it has no GLUE loss; load it with {fix}."
        )
    num_labels = getattr(config, "num_labels", None)
    if num_labels != task.num_labels:
        kind = "1 output (regression)" if task.is_regression else f"{task.num_labels} labels"
        raise ModelError(
            f"`model` has num_labels={num_labels} but task {task.name!r} needs {kind}; load it with {fix}."
        )
    names = [str(v).lower() for _, v in sorted((getattr(config, "id2label", None) or {}).items())]
    if task.label_names and sorted(names) == sorted(task.label_names) and tuple(names) != task.label_names:
        logger.warning(
            "The model's labels are ordered %s but GLUE's %s are %s: the loss and metrics compare label ids as GLUE "
            "numbers them; remap the model's head if its ids differ.",
            names,
            task.name,
            list(task.label_names),
        )


def _pad_id(model: Any, tokenizer: Any) -> int:
    """The id padding uses: the model's own (models that read their last token find it by this id), else the
    tokenizer's, else 0 (masked out either way)."""
    for value in (getattr(model.config, "pad_token_id", None), getattr(tokenizer, "pad_token_id", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _load_metric(name: str) -> Any:
    from ..metrics import load_metric

    return load_metric(name)

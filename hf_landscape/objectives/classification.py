"""Text classification: the loss and metrics of a sequence-classification model on your own labelled sentences or
sentence pairs (`TextClassificationObjective`); GLUE's tasks are presets of it (`glue.GlueObjective`).

The loss is the task's own: cross-entropy of the logits against the label, or for a regression task (one output) the
squared error against the float score, summed over every example of the evaluation set in float64 and divided by
their number. It is not a mean of batch means, so it is the same, to float rounding, whatever the batch size, padding
side and order. Metrics (shipped `evaluate` modules by name, your `evaluate` modules, or plain functions of the
predictions and references) are computed from the same logits at every evaluation.

Data come from a `datasets.Dataset`, a dict of columns, a list of rows, local CSV / TSV / JSON lines / parquet files
(headerless files with `column_names=`), or a Hub dataset by name (`classification_data`). What does not live here:
the grid loop (`engine/`), the metric scripts (`metrics/`), GLUE's task table (`glue_tasks`).
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
from . import classification_data
from .base import DifferentiableLoss, Evaluation, LogitTerm, LogitTerms, Objective, eval_mode
from .tasks import ClassificationTask, check_columns, metric_pairs, resolve_metrics

logger = logging.getLogger(__name__)

#: the metrics a task reports when none are named: accuracy, or the correlations for a regression task
DEFAULT_METRICS = ("accuracy",)
DEFAULT_REGRESSION_METRICS = ("pearsonr", "spearmanr")


def check_batching(config: Any) -> None:
    """The options every classification config shares: `split`, `max_length`, `batch_size`, `padding_side`,
    `sort_by_length`, `check_padding`, `max_examples`."""
    if not isinstance(config.split, str) or not config.split:
        raise ConfigError(f"`split` must be a split name such as 'validation', got {config.split!r}.")
    for name, low in (("max_length", 2), ("batch_size", 1)):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    check_choice("padding_side", config.padding_side, ("right", "left"))
    for name in ("sort_by_length", "check_padding"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"`{name}` must be True or False, got {getattr(config, name)!r}.")
    if config.max_examples is not None and (
        not isinstance(config.max_examples, int) or isinstance(config.max_examples, bool) or config.max_examples < 1
    ):
        raise ConfigError(f"`max_examples` must be a positive integer or None, got {config.max_examples!r}.")
    if config.revision is not None and (not isinstance(config.revision, str) or not config.revision):
        raise ConfigError(f"`revision` must be a branch, tag or commit of the Hub dataset, got {config.revision!r}.")


@dataclass
class TextClassificationObjectiveConfig(BaseConfig):
    """Options of `TextClassificationObjective`.

    Args:
        task_name (`str`, defaults to `"text-classification"`): what the task is called in the metadata, plot titles
            and cards, e.g. `"subj"`.
        text_columns (`list[str]`, defaults to `["text"]`): one column (single sentences) or two (sentence pairs,
            tokenized as pairs), in order.
        label_column (`str`, defaults to `"label"`): the column of the labels: ids, or names from `label_names`, or
            float scores for a regression task.
        label_names (`list[str]`, *optional*): class names by id (`["negative", "positive"]`); labels may then be
            given by name (any case). Sets `num_labels` when that is not given.
        num_labels (`int`, *optional*): classes; 1 makes it a regression task (squared error). By default
            `len(label_names)`, else the model's own `num_labels` when it is bound.
        metrics (`list[str]`, *optional*): the keys of the metrics reported; by default `["accuracy"]` (`["pearsonr",
            "spearmanr"]` for regression). Names of shipped metric modules (`accuracy`, `f1`, `matthews_correlation`,
            `pearsonr`, `spearmanr`) load by name; other metrics are passed to the objective as functions or
            `evaluate` modules and recorded here by their key.
        dataset (`str`, *optional*): a Hub dataset to load by name (online only), instead of `data` or `data_files`.
        dataset_config (`str`, *optional*): its configuration.
        split (`str`, defaults to `"validation"`): the split to read (of the Hub dataset, a `DatasetDict` or a
            `{split: files}` dict).
        revision (`str`, *optional*): revision of the Hub dataset.
        max_length (`int`, defaults to 128): examples are truncated to this many tokens, with a warning.
        batch_size (`int`, defaults to 32): examples per forward pass; the loss does not depend on it.
        padding_side (`str`, defaults to `"right"`): `"right"` or `"left"`; `check_padding` catches a side that
            changes the model's outputs.
        sort_by_length (`bool`, defaults to `True`): batch examples of similar length together.
        max_examples (`int`, *optional*): evaluate only the first this many examples.
        check_padding (`bool`, defaults to `True`): check once, when binding, that padding leaves outputs unchanged.

    Example:
    ```python
    >>> from hf_landscape import TextClassificationObjectiveConfig
    >>> TextClassificationObjectiveConfig(text_columns=["premise", "hypothesis"], label_names=["yes", "no"]).num_labels
    2

    ```
    """

    task_name: str = field(default="text-classification", metadata={"help": "the task's name in metadata and cards"})
    text_columns: list[str] = field(default_factory=lambda: ["text"], metadata={"help": "one column, or two (pairs)"})
    label_column: str = field(default="label", metadata={"help": "the column of the labels"})
    label_names: list[str] | None = field(default=None, metadata={"help": "class names by id"})
    num_labels: int | None = field(default=None, metadata={"help": "classes (1: regression); default: the model's"})
    metrics: list[str] | None = field(default=None, metadata={"help": "metric keys; default accuracy"})
    dataset: str | None = field(default=None, metadata={"help": "a Hub dataset to load by name"})
    dataset_config: str | None = field(default=None, metadata={"help": "its configuration"})
    split: str = field(default="validation", metadata={"help": "the split to read"})
    revision: str | None = field(default=None, metadata={"help": "revision of the Hub dataset"})
    max_length: int = field(default=128, metadata={"help": "tokens per example at most"})
    batch_size: int = field(default=32, metadata={"help": "examples per forward pass"})
    padding_side: str = field(default="right", metadata={"help": "right or left"})
    sort_by_length: bool = field(default=True, metadata={"help": "batch similar lengths together"})
    max_examples: int | None = field(default=None, metadata={"help": "evaluate only the first this many examples"})
    check_padding: bool = field(default=True, metadata={"help": "check once that padding leaves outputs unchanged"})

    def __post_init__(self) -> None:
        if not isinstance(self.task_name, str) or not self.task_name.strip():
            raise ConfigError(f"`task_name` must be a non-empty name such as 'subj', got {self.task_name!r}.")
        columns, self.label_column = check_columns(self.text_columns, self.label_column)
        self.text_columns = list(columns)
        if self.label_names is not None:
            if isinstance(self.label_names, str) or not all(isinstance(n, str) and n for n in self.label_names):
                raise ConfigError(f"`label_names` must be a list of class names, got {self.label_names!r}.")
            self.label_names = list(self.label_names)
            lowered = [n.lower() for n in self.label_names]
            if len(set(lowered)) != len(lowered) or len(lowered) < 2:
                raise ConfigError(f"`label_names` must name two or more distinct classes, got {self.label_names}.")
        if self.num_labels is not None:
            if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 1:
                raise ConfigError(
                    f"`num_labels` must be a positive integer (1 for regression), got {self.num_labels!r}."
                )
        if self.label_names is not None:
            if self.num_labels is None:
                self.num_labels = len(self.label_names)
            elif self.num_labels != len(self.label_names):
                raise ConfigError(
                    f"`num_labels` is {self.num_labels} but `label_names` names {len(self.label_names)} classes; "
                    "pass one of them."
                )
        if self.metrics is not None:
            if isinstance(self.metrics, str) or not all(isinstance(m, str) and m for m in self.metrics):
                raise ConfigError(f"`metrics` must be a list of metric names, got {self.metrics!r}.")
            self.metrics = list(self.metrics)
        for name in ("dataset", "dataset_config"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"`{name}` must be a name, got {value!r}.")
        check_batching(self)

    def task(self, metrics: Sequence[Any] | Mapping[str, Any] | None = None) -> ClassificationTask:
        """The `ClassificationTask` these options describe, with `metrics` (functions or modules) where given."""
        regression = self.num_labels == 1
        default = DEFAULT_REGRESSION_METRICS if regression else DEFAULT_METRICS
        pairs = metric_pairs(metrics if metrics is not None else self.metrics, default)
        return ClassificationTask(
            name=self.task_name,
            text_columns=tuple(self.text_columns),
            num_labels=self.num_labels,
            label_names=tuple(self.label_names or ()),
            metrics=pairs,
            label_column=self.label_column,
        )


@dataclass
class _Batch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    index: list[int]  # example indices of the rows


class TextClassificationObjective(Objective, DifferentiableLoss, LogitTerms):
    """Loss and metrics of a sequence-classification model on labelled sentences or sentence pairs, tokenized once.

    Args:
        data: the examples: a `datasets.Dataset` (or `DatasetDict`, indexed by `split`), a dict of columns or a list
            of rows; or None with `data_files` or `dataset`.
        tokenizer: the model's tokenizer; pairs are tokenized as pairs. Not needed for pre-tokenized data (an
            `input_ids` column, optionally `token_type_ids`).
        text_columns, label_column, label_names, num_labels, task_name, dataset, dataset_config, split, revision,
        max_length, batch_size, padding_side, sort_by_length, max_examples, check_padding:
            see `TextClassificationObjectiveConfig`.
        metrics: what to report besides the loss: a list of shipped metric names (`"accuracy"`, `"f1"`,
            `"matthews_correlation"`, `"pearsonr"`, `"spearmanr"`), `evaluate` modules, or functions
            `fn(predictions, references) -> float` (predictions are class ids, or scores for regression), or a dict
            `{key: metric}`; by default accuracy (the correlations for regression).
        data_files: local files: a path, a list of paths or `{split: paths}`, in CSV, TSV (tab-separated, no
            quoting), JSON lines or parquet.
        column_names: names of the columns of headerless CSV / TSV files, in file order, e.g. `["label", "text"]`.
        column_mapping: `{column in the data: column of the task}` renames.
        delimiter: the field separator of CSV / TSV files (default: tab for `.tsv`, comma otherwise).
        config: a `TextClassificationObjectiveConfig` instead of the keyword options.

    The surface's metadata records this objective as itself: its type, config (columns, labels, metrics), the
    data's source (files by name and SHA-256, a Hub dataset by repo id) and a fingerprint of the exact tokens.

    Example:
    ```python
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from hf_landscape import LandscapeProbe, TextClassificationObjective
    >>> _ = torch.manual_seed(0)
    >>> model = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...     intermediate_size=32, vocab_size=30, num_labels=2))
    >>> data = {"input_ids": [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 3]], "label": ["objective", "subjective", "objective"]}
    >>> subj = TextClassificationObjective(data, task_name="subj", label_names=["objective", "subjective"],
    ...     metrics=["accuracy", "f1"])
    >>> plane = LandscapeProbe(model, subj, progress=False).plane(steps=(3, 3), seed=0)
    >>> plane.metadata["objective"]["type"], plane.metadata["objective"]["task"], sorted(plane.metrics)
    ('TextClassificationObjective', 'subj', ['accuracy', 'f1'])

    ```
    """

    auto_model_class = "AutoModelForSequenceClassification"
    #: what the loss is called in messages ("GLUE loss" for the GLUE preset)
    _loss_noun = "classification loss"

    def __init__(
        self,
        data: Any = None,
        tokenizer: Any = None,
        *,
        text_columns: Sequence[str] = ("text",),
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        num_labels: int | None = None,
        metrics: Sequence[Any] | Mapping[str, Any] | None = None,
        task_name: str = "text-classification",
        data_files: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None = None,
        column_names: Sequence[str] | None = None,
        column_mapping: Mapping[str, str] | None = None,
        delimiter: str | None = None,
        dataset: str | None = None,
        dataset_config: str | None = None,
        split: str = "validation",
        revision: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        padding_side: str = "right",
        sort_by_length: bool = True,
        max_examples: int | None = None,
        check_padding: bool = True,
        config: TextClassificationObjectiveConfig | None = None,
    ) -> None:
        pairs = None if metrics is None else metric_pairs(metrics, DEFAULT_METRICS)
        self.config = config or TextClassificationObjectiveConfig(
            task_name=task_name,
            text_columns=[text_columns] if isinstance(text_columns, str) else list(text_columns),
            label_column=label_column,
            label_names=None if label_names is None else list(label_names),
            num_labels=num_labels,
            metrics=None if pairs is None else [key for key, _ in pairs],
            dataset=dataset,
            dataset_config=dataset_config,
            split=split,
            revision=revision,
            max_length=max_length,
            batch_size=batch_size,
            padding_side=padding_side,
            sort_by_length=sort_by_length,
            max_examples=max_examples,
            check_padding=check_padding,
        )
        cfg = self.config
        if cfg.dataset is not None and (data is not None or data_files is not None):
            raise ConfigError("Pass one of `data`, `data_files` and `dataset` (a Hub dataset by name), not several.")
        if cfg.dataset is None and data is None and data_files is None:
            raise ConfigError(
                "No examples: pass `data` (a datasets.Dataset, a dict of columns or a list of rows), `data_files` "
                "(CSV, TSV, JSON lines or parquet) or `dataset` (a Hub dataset by name)."
            )
        task = cfg.task(None if pairs is None else dict(pairs))
        dataset_, source = classification_data.load_examples(
            task,
            cfg.split,
            data,
            data_files,
            column_names,
            column_mapping,
            delimiter,
            lambda: classification_data.from_hub_dataset(str(cfg.dataset), cfg.dataset_config, cfg.split, cfg.revision),
        )
        self._prepare(task, tokenizer, dataset_, source)

    # --- set-up shared with the GLUE preset ------------------------------------------------------------------

    def _prepare(self, task: ClassificationTask, tokenizer: Any, dataset: Any, source: dict[str, Any]) -> None:
        """Select, label and tokenize the examples of `dataset` for `task` (after `self.config` is set)."""
        self.task = task
        self.tokenizer = tokenizer
        self.source = source
        if self.config.max_examples is not None and dataset.num_rows > self.config.max_examples:
            dataset = dataset.select(range(self.config.max_examples))
            self.source["max_examples"] = self.config.max_examples
        self.labels = classification_data.read_labels(dataset, task)
        self.examples = classification_data.tokenize(dataset, task, tokenizer, self.config.max_length)
        self._metrics = resolve_metrics(task.metrics)
        self._bound: tuple[Any, ...] | None = None
        self._batches: list[_Batch] = []
        self._references = self.labels

    # --- provenance ------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    @property
    def num_labels(self) -> int | None:
        """Classes (1: regression); None until bound when neither `label_names` nor `num_labels` was given."""
        return self.task.num_labels

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
        if type(self) is TextClassificationObjective:
            out.update(task=self.task.name, num_labels=self.task.num_labels)
        if self.tokenizer is not None:
            from ..provenance import public_name

            name = getattr(self.tokenizer, "name_or_path", None)
            out["tokenizer"] = public_name(name) if name else type(self.tokenizer).__name__
        return out

    # --- binding ---------------------------------------------------------------------------------

    def bind(self, model: Any) -> None:
        self._check_model(model)
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

    def _check_model(self, model: Any) -> None:
        """A sequence classifier with the task's number of labels (the model's own when the task leaves it open)."""
        task = self.task
        name = type(model).__name__
        config = getattr(model, "config", None)
        fix = "`AutoModelForSequenceClassification.from_pretrained(name" + (
            f", num_labels={task.num_labels})`" if task.num_labels is not None else ")`"
        )
        if not name.endswith("ForSequenceClassification") or config is None:
            raise ModelError(
                f"`model` ({name}) is not a sequence-classification model, so it has no {self._loss_noun}; load it "
                f"with {fix}."
            )
        num_labels = getattr(config, "num_labels", None)
        if task.num_labels is None:
            if num_labels == 1:
                raise ModelError(
                    f"`model` has one output (a regression head); pass `num_labels=1` for a regression task with "
                    f"float labels, or load a classifier with {fix}."
                )
            classification_data.check_label_range(self.labels, num_labels, task.name)
        elif num_labels != task.num_labels:
            kind = "1 output (regression)" if task.is_regression else f"{task.num_labels} labels"
            raise ModelError(
                f"`model` has num_labels={num_labels} but task {task.name!r} needs {kind}; load it with {fix}."
            )
        wanted = [n.lower() for n in task.label_names]
        names = [str(v).lower() for _, v in sorted((getattr(config, "id2label", None) or {}).items())]
        if wanted and sorted(names) == sorted(wanted) and names != wanted:
            logger.warning(
                "The model's labels are ordered %s but task %s's are %s: the loss and metrics compare label ids as "
                "the task numbers them; remap the model's head if its ids differ.",
                names,
                task.name,
                wanted,
            )

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
        """The task's metrics of `predictions` (class ids, or scores for regression) against `references`."""
        if self.task.is_regression:
            predictions = np.asarray(predictions, dtype=np.float64)
        return {key: self._metrics[key](predictions, references) for key, _ in self.task.metrics}


def _pad_id(model: Any, tokenizer: Any) -> int:
    """The id padding uses: the model's own (models that read their last token find it by this id), else the
    tokenizer's, else 0 (masked out either way)."""
    for value in (getattr(model.config, "pad_token_id", None), getattr(tokenizer, "pad_token_id", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0

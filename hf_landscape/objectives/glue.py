"""GLUE task loss and metrics for sequence-classification models: the GLUE tasks as presets of text classification.

`GlueObjective` is a `TextClassificationObjective` (`classification`) whose columns, labels, loss and metrics come
from the task's entry in `glue_tasks`: cross-entropy of the logits against the label for the classification tasks,
the squared error of the single output against the float score for STS-B (regression), averaged over every example
in float64. The task's official metrics (Matthews correlation for CoLA, accuracy and F1 for MRPC and QQP, Pearson and
Spearman correlations for STS-B, accuracy otherwise) are computed with `evaluate`, from the same logits, at every
evaluation, with the metric modules shipped in `hf_landscape/metrics/` (so nothing is downloaded).

Data come from the `nyu-mll/glue` dataset on the Hub by name (online only), from local CSV / TSV / JSON / parquet
files, or from a `datasets.Dataset` (`glue_data`). What does not live here: the loss and batching
(`classification`), the grid loop (`engine/`) and the metric scripts (`metrics/`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import BaseConfig
from ..errors import ConfigError
from . import glue_data
from .classification import TextClassificationObjective, check_batching
from .glue_tasks import GLUE_TASKS, glue_task

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
        check_batching(self)


class GlueObjective(TextClassificationObjective):
    """Task loss and official metrics of a GLUE task, over a fixed evaluation set tokenized once: a preset of
    `TextClassificationObjective` (the task's columns, labels and metrics), recorded as `GlueObjective` with its task.

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
    _loss_noun = "GLUE loss"

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
        spec = GLUE_TASKS[self.config.task]
        dataset, source = glue_data.load_dataset(
            spec,
            str(self.config.split),
            self.config.revision,
            data,
            data_files,
            column_names,
            column_mapping,
            delimiter,
        )
        self._prepare(spec, tokenizer, dataset, source)


__all__ = ["GlueObjective", "GlueObjectiveConfig"]

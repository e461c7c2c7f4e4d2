"""The GLUE tasks: what each reads (its text columns), predicts (labels or a score) and reports (its metrics).

`GLUE_TASKS` maps a task name to its `GlueTask`, a `ClassificationTask` (`tasks`) with GLUE's default split and Hub
configuration: GLUE tasks are presets of text classification. `glue_task` finds one by any usual spelling ("SST-2",
"mnli-m"). What does not live here: loading the examples (`glue_data`), the loss and metrics (`glue`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .tasks import ClassificationTask


@dataclass(frozen=True)
class GlueTask(ClassificationTask):
    """What a GLUE task reads and reports.

    Args:
        name: the task name, e.g. `"cola"`.
        text_columns: one column (single-sentence tasks) or two (sentence-pair tasks), in the order the
            tokenizer receives them.
        num_labels: classes, or 1 for the regression task STS-B.
        label_names: class names by label id, as in the Hub dataset (empty for STS-B).
        metrics: `(key, metric module)` pairs: `key` names the metric in `Evaluation.metrics` and `Surface.metrics`.
        label_column: the column of the labels, `"label"`.
        default_split: the split read when none is given.
        hub_config: the configuration of the Hub dataset.
    """

    default_split: str = "validation"
    hub_config: str = ""


_ACC = (("accuracy", "accuracy"),)


_ACC_F1 = (("accuracy", "accuracy"), ("f1", "f1"))


_NLI3 = ("entailment", "neutral", "contradiction")


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", ("sentence",), 2, ("unacceptable", "acceptable"), (("matthews_correlation",) * 2,)),
        GlueTask("sst2", ("sentence",), 2, ("negative", "positive"), _ACC),
        GlueTask("mrpc", ("sentence1", "sentence2"), 2, ("not_equivalent", "equivalent"), _ACC_F1),
        GlueTask("qqp", ("question1", "question2"), 2, ("not_duplicate", "duplicate"), _ACC_F1),
        GlueTask("stsb", ("sentence1", "sentence2"), 1, (), (("pearson", "pearsonr"), ("spearmanr", "spearmanr"))),
        GlueTask("mnli", ("premise", "hypothesis"), 3, _NLI3, _ACC, default_split="validation_matched"),
        GlueTask("mnli_matched", ("premise", "hypothesis"), 3, _NLI3, _ACC),
        GlueTask("mnli_mismatched", ("premise", "hypothesis"), 3, _NLI3, _ACC),
        GlueTask("qnli", ("question", "sentence"), 2, ("entailment", "not_entailment"), _ACC),
        GlueTask("rte", ("sentence1", "sentence2"), 2, ("entailment", "not_entailment"), _ACC),
        GlueTask("wnli", ("sentence1", "sentence2"), 2, ("not_entailment", "entailment"), _ACC),
    )
}


# Spellings people use for the same tasks ("SST-2", "STS-B", "mnli-m").
_ALIASES = {"mnlim": "mnli_matched", "mnlimm": "mnli_mismatched", "stsbenchmark": "stsb"}


def glue_task(task: str) -> GlueTask:
    """The `GlueTask` named `task` (case and dashes ignored: `"SST-2"` is `"sst2"`).

    Raises:
        ConfigError: `task` is not a GLUE task.
    """
    if not isinstance(task, str):
        raise ConfigError(f"`task` must be a GLUE task name such as 'cola', got {task!r}.")
    key = task.strip().lower().replace("-", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ConfigError(f"`task` must be one of the GLUE tasks {sorted(GLUE_TASKS)}, got {task!r}.")
    return GLUE_TASKS[key]

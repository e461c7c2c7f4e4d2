"""GLUE's examples: the Hub's `nyu-mll/glue` dataset by name (online only; it fails at once offline), or the same
columns from local files or a `datasets.Dataset` (`classification_data`, which loads and checks every source).

Column names and label ids follow the Hub's dataset; loading by name records its resolved commit for provenance.
What does not live here: the task tables (`glue_tasks`), the loss and metrics (`classification`, `glue`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..dependencies import require
from ..errors import ConfigError, HubObjectiveError
from .classification_data import Example, hub_offline, load_examples, read_labels, tokenize
from .glue_tasks import GlueTask

logger = logging.getLogger(__name__)

GLUE_DATASET = "nyu-mll/glue"  # the canonical Hub repo (`load_dataset("glue", ...)` redirects to it)


LABEL_COLUMN = "label"


# Splits of the Hub dataset, per configuration (test splits carry no labels, label -1).
_HUB_SPLITS = {
    "mnli": ("train", "validation_matched", "validation_mismatched"),
    "mnli_matched": ("validation",),
    "mnli_mismatched": ("validation",),
}


def load_dataset(
    task: GlueTask,
    split: str,
    revision: str | None,
    data: Any,
    data_files: Any,
    column_names: Sequence[str] | None,
    column_mapping: Mapping[str, str] | None,
    delimiter: str | None,
) -> tuple[Any, dict[str, Any]]:
    """The evaluation examples as a `datasets.Dataset` with the task's columns, and where they came from."""
    return load_examples(
        task, split, data, data_files, column_names, column_mapping, delimiter, lambda: _from_hub(task, split, revision)
    )


def _from_hub(task: GlueTask, split: str, revision: str | None) -> tuple[Any, dict[str, Any]]:
    hub_config = task.hub_config or task.name
    splits = _HUB_SPLITS.get(hub_config, ("train", "validation"))
    if split not in splits:
        raise ConfigError(
            f"`split` {split!r} is not a labelled split of GLUE {hub_config!r}; use one of {list(splits)}"
            + (
                " (or task 'mnli_matched' / 'mnli_mismatched' with split 'validation')."
                if hub_config == "mnli"
                else "."
            )
        )
    if hub_offline():
        raise HubObjectiveError(
            f"Loading GLUE {task.name!r} by name needs the Hugging Face Hub, but offline mode is on "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). Pass local files instead, e.g. "
            f"`GlueObjective({task.name!r}, tokenizer, data_files='dev.tsv', column_names={[*task.text_columns, 'label']})`"
            ", or a `datasets.Dataset` with `data=`."
        )
    datasets = require("datasets", "Loading GLUE from the Hub")

    try:
        builder = datasets.load_dataset_builder(GLUE_DATASET, hub_config, revision=revision)
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=split)
    except Exception as err:  # network, Hub and cache errors come in many types
        raise HubObjectiveError(
            f"Could not load GLUE {hub_config!r} split {split!r} from the Hub ({type(err).__name__}: {err}); pass "
            "local files with `data_files=` or a `datasets.Dataset` with `data=`."
        ) from None
    source = {
        "type": "hub",
        "path": GLUE_DATASET,
        "config_name": hub_config,
        "split": split,
        "hub_id": GLUE_DATASET,
        "revision": getattr(builder, "hash", None),  # the resolved commit of the Hub dataset
        "requested_revision": revision,
        "fingerprint": dataset._fingerprint,
    }
    return dataset, source


__all__ = ["GLUE_DATASET", "LABEL_COLUMN", "Example", "hub_offline", "load_dataset", "read_labels", "tokenize"]

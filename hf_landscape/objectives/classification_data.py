"""The examples of a text-classification objective: loaded from a `datasets.Dataset`, a dict of columns, a list of
rows, local CSV / TSV / JSON lines / parquet files, or a Hub dataset by name, with their labels checked and their
text tokenized once.

Every source is recorded for provenance: files by their name (never a local path) and SHA-256, a Hub dataset by its
repo id (`hub_id`, which a card lists under `datasets:`), configuration, split and fingerprint. What does not live here:
the tasks (`tasks`, `glue_tasks`), GLUE's own Hub dataset (`glue_data`), the loss and metrics (`classification`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..dependencies import require
from ..errors import ConfigError, HubObjectiveError, ObjectiveError
from .tasks import ClassificationTask

logger = logging.getLogger(__name__)


FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class Example:
    input_ids: list[int]
    token_type_ids: list[int] | None


def hub_offline() -> bool:
    """True when the Hub must not be contacted (huggingface_hub's flag, or the environment variables)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    truthy = {"1", "on", "yes", "true"}
    return any(os.environ.get(var, "").strip().lower() in truthy for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_examples(
    task: ClassificationTask,
    split: str,
    data: Any,
    data_files: Any,
    column_names: Sequence[str] | None,
    column_mapping: Mapping[str, str] | None,
    delimiter: str | None,
    hub: Callable[[], tuple[Any, dict[str, Any]]],
) -> tuple[Any, dict[str, Any]]:
    """The evaluation examples as a `datasets.Dataset` with the task's columns, and where they came from: `data`, or
    `data_files`, or else the Hub dataset `hub()` loads."""
    if data is not None and data_files is not None:
        raise ConfigError("Pass either `data` or `data_files`, not both.")
    if data_files is None and (column_names is not None or delimiter is not None):
        raise ConfigError("`column_names` and `delimiter` describe CSV/TSV files; pass them with `data_files=`.")
    if data is not None:
        dataset, source = _from_data(data, split)
    elif data_files is not None:
        dataset, source = _from_files(data_files, split, column_names, delimiter)
    else:
        dataset, source = hub()
    if column_mapping:
        if not isinstance(column_mapping, Mapping):
            raise ConfigError(
                f"`column_mapping` must be a dict {{column in the data: task column}}, got {column_mapping!r}."
            )
        missing = sorted(set(column_mapping) - set(dataset.column_names))
        if missing:
            raise ObjectiveError(
                f"`column_mapping` renames {missing}, which the data do not have (columns: {dataset.column_names})."
            )
        clashes = sorted(set(column_mapping.values()) & (set(dataset.column_names) - set(column_mapping)))
        if clashes:
            raise ObjectiveError(
                f"`column_mapping` renames columns to {clashes}, which the data already have; drop those columns "
                "first or leave them out of the mapping."
            )
        dataset = dataset.rename_columns(dict(column_mapping))
        source["column_mapping"] = dict(column_mapping)
    pretokenized = "input_ids" in dataset.column_names
    needed = [*([] if pretokenized else task.text_columns), task.label_column]
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        hint = (
            " The file looks headerless: pass `column_names=` in file order."
            if data_files is not None and column_names is None
            else ""
        )
        example = {"<your column>": missing[0]}
        raise ObjectiveError(
            f"Task {task.name!r} needs the column(s) {missing}, which the data do not have (columns: "
            f"{dataset.column_names}); rename yours with `column_mapping={example}`.{hint}"
        )
    if dataset.num_rows == 0:
        raise ObjectiveError(f"The {task.name!r} data hold no examples; pass a non-empty split.")
    source["num_rows"] = int(dataset.num_rows)
    return dataset, source


def _from_data(data: Any, split: str) -> tuple[Any, dict[str, Any]]:
    datasets = require("datasets", "Loading an objective's data")

    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(f"`split` {split!r} is not in the DatasetDict; it has {sorted(data)}.")
        data = data[split]
    if isinstance(data, datasets.Dataset):
        info = data.info
        source = {
            "type": "datasets.Dataset",
            "fingerprint": data._fingerprint,
            "dataset_name": getattr(info, "dataset_name", None),
            "config_name": getattr(info, "config_name", None),
            "split": str(data.split) if data.split is not None else None,
        }
        return data, source
    if isinstance(data, Mapping):
        try:
            dataset = datasets.Dataset.from_dict({str(k): list(v) for k, v in data.items()})
        except (TypeError, ValueError) as err:
            raise ObjectiveError(f"`data` must be a dict of equal-length columns ({err}).") from None
        return dataset, {"type": "dict"}
    if isinstance(data, Sequence) and not isinstance(data, str) and data and all(isinstance(r, Mapping) for r in data):
        return datasets.Dataset.from_list([dict(r) for r in data]), {"type": "list"}
    raise ObjectiveError(
        f"`data` must be a datasets.Dataset, a DatasetDict, a dict of columns or a non-empty list of rows, got "
        f"{type(data).__name__}; or pass local files with `data_files=`."
    )


def _from_files(
    data_files: Any, split: str, column_names: Sequence[str] | None, delimiter: str | None
) -> tuple[Any, dict[str, Any]]:
    datasets = require("datasets", "Loading an objective's data")

    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise ConfigError(f"`split` {split!r} is not a key of `data_files`; its keys are {sorted(data_files)}.")
        files = data_files[split]
    else:
        files = data_files
    paths = [Path(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else list(files))]
    if not paths:
        raise ConfigError("`data_files` is empty; pass the path of a CSV, TSV, JSON or parquet file.")
    for p in paths:
        if not p.is_file():
            raise ObjectiveError(f"`data_files` names {str(p)!r}, which is not a file.")
    suffixes = {p.suffix.lower() for p in paths}
    builders = {FILE_BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise ConfigError(
            f"`data_files` must all be one of {sorted(FILE_BUILDERS)} (one format), got suffixes {sorted(suffixes)}."
        )
    builder = builders.pop()
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        tsv = suffixes == {".tsv"}
        kwargs["delimiter"] = delimiter if delimiter is not None else ("\t" if tsv else ",")
        if kwargs["delimiter"] == "\t":
            kwargs["quoting"] = 3  # csv.QUOTE_NONE: GLUE's TSV files hold bare quote characters
        kwargs["na_filter"] = False  # a sentence "NA" or "null" stays text
        if column_names is not None:
            names = list(column_names)
            if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
                raise ConfigError(f"`column_names` must be distinct non-empty strings, got {column_names!r}.")
            kwargs["column_names"] = names  # the file has no header row
    elif column_names is not None or delimiter is not None:
        raise ConfigError(f"`column_names` and `delimiter` apply to CSV/TSV files only, not {builder} files.")
    try:
        dataset = datasets.load_dataset(builder, data_files=[str(p) for p in paths], split="train", **kwargs)
    except Exception as err:  # datasets and pandas/pyarrow raise many types on malformed files
        raise ObjectiveError(
            f"Could not read `data_files` {[str(p) for p in paths]} as {builder}: {type(err).__name__}: {err}"
        ) from None
    source = {
        "type": "files",
        "files": [{"path": p.name, "sha256": io.sha256_file(p)} for p in paths],  # a name, no local path
        "format": builder,
        "split": split if isinstance(data_files, Mapping) else None,
        "column_names": list(column_names) if column_names is not None else None,
        "fingerprint": dataset._fingerprint,
    }
    return dataset, source


def from_hub_dataset(name: str, config: str | None, split: str, revision: str | None) -> tuple[Any, dict[str, Any]]:
    """The split `split` of the Hub dataset `name` (configuration `config`, at `revision`); fails at once offline."""
    if hub_offline():
        raise HubObjectiveError(
            f"Loading the dataset {name!r} by name needs the Hugging Face Hub, but offline mode is on (HF_HUB_OFFLINE "
            "/ HF_DATASETS_OFFLINE). Pass local files with `data_files=`, or a `datasets.Dataset` with `data=`."
        )
    datasets = require("datasets", "Loading an objective's data")

    try:
        dataset = datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as err:  # network, Hub and cache errors come in many types
        raise HubObjectiveError(
            f"Could not load the dataset {name!r} (configuration {config!r}, split {split!r}) from the Hub "
            f"({type(err).__name__}: {err}); pass local files with `data_files=` or a `datasets.Dataset` with `data=`."
        ) from None
    source = {
        "type": "hub",
        "hub_id": name,
        "config_name": config,
        "split": split,
        "requested_revision": revision,
        "fingerprint": dataset._fingerprint,
    }
    return dataset, source


def read_labels(dataset: Any, task: ClassificationTask) -> np.ndarray:
    """Label ids (int64), or float scores (float64) for a regression task, checked. Names in `task.label_names` (any
    case) map to their ids. With `task.num_labels` None (taken from the model when bound) only negative ids are
    refused here; `check_label_range` checks the rest then."""
    values = list(dataset[task.label_column])
    if task.is_regression:
        try:
            labels = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ObjectiveError(
                f"{task.name!r} is a regression task (one output), so its labels must be numbers, got e.g. "
                f"{values[0]!r}."
            ) from None
        if not np.isfinite(labels).all():
            raise ObjectiveError(
                f"{task.name!r} labels hold NaN or inf (a test split has no labels); use a labelled split."
            )
        return labels
    names = {name.lower(): k for k, name in enumerate(task.label_names)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, str) and v.strip().lower() in names:
            out[i] = names[v.strip().lower()]
            continue
        try:
            out[i] = int(v)
        except (TypeError, ValueError):
            ids = f"ids 0..{task.num_labels - 1}" if task.num_labels else "ids"
            hint = (
                f" or the names {list(task.label_names)}"
                if task.label_names
                else "; name the labels in id order with `label_names=` (`--label-names` on the command line)"
            )
            raise ObjectiveError(f"Example {i} has label {v!r}; {task.name!r} labels are {ids}{hint}.") from None
    check_label_range(out, task.num_labels, task.name)
    return out


def check_label_range(labels: np.ndarray, num_labels: int | None, name: str) -> None:
    """Refuse label ids outside 0..num_labels - 1 (only negative ones when `num_labels` is None)."""
    top = num_labels if num_labels is not None else np.iinfo(np.int64).max
    bad = np.flatnonzero((labels < 0) | (labels >= top))
    if len(bad):
        what = " (-1 marks an unlabelled test split; use a labelled split)" if (labels[bad] == -1).any() else ""
        limit = f"outside 0..{num_labels - 1}" if num_labels is not None else "negative"
        raise ObjectiveError(f"Example {int(bad[0])} has label {int(labels[bad[0]])}, {limit} for task {name!r}{what}.")


def tokenize(dataset: Any, task: ClassificationTask, tokenizer: Any, max_length: int) -> list[Example]:
    if "input_ids" in dataset.column_names:
        ids = [list(map(int, r)) for r in dataset["input_ids"]]
        types = (
            [list(map(int, r)) for r in dataset["token_type_ids"]] if "token_type_ids" in dataset.column_names else None
        )
        if any(len(r) == 0 for r in ids):
            raise ObjectiveError("Pre-tokenized `input_ids` hold an empty example; every example needs tokens.")
        if types is not None and any(len(a) != len(b) for a, b in zip(ids, types)):
            raise ObjectiveError("Pre-tokenized `token_type_ids` and `input_ids` differ in length.")
        long = sum(len(r) > max_length for r in ids)
        if long:
            logger.warning(
                "%d of %d examples are longer than `max_length` (%d) and were cut.", long, len(ids), max_length
            )
        return [
            Example(r[:max_length], types[i][:max_length] if types is not None else None) for i, r in enumerate(ids)
        ]
    if tokenizer is None:
        raise ObjectiveError("`tokenizer` is required for text data; pass the model's tokenizer.")
    columns = [list(dataset[c]) for c in task.text_columns]
    for c, texts in zip(task.text_columns, columns):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ObjectiveError(f"Example {i} has {c}={t!r}; text columns must hold strings.")
    encoded = tokenizer(*columns)
    long = sum(len(r) > max_length for r in encoded["input_ids"])
    if long:
        logger.warning(
            "%d of %d examples are longer than `max_length` (%d) and were truncated.", long, len(columns[0]), max_length
        )
        encoded = tokenizer(*columns, truncation=True, max_length=max_length)
    types = encoded.get("token_type_ids")
    return [
        Example(list(encoded["input_ids"][i]), list(types[i]) if types is not None else None)
        for i in range(len(columns[0]))
    ]

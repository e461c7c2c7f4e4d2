"""The examples of a GLUE objective: loaded from the Hub by name, from local files or from a `datasets.Dataset`,
with their labels checked and their text tokenized once.

Column names and label ids follow the Hub's `nyu-mll/glue` dataset; loading by name needs the Hub (it fails at once
offline). Every source is recorded (files with their SHA-256, the Hub dataset's resolved commit) for provenance.
What does not live here: the task tables (`glue_tasks`), the loss and metrics (`glue`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import ConfigError, HubObjectiveError, ObjectiveError
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


_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


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
    if data is not None and data_files is not None:
        raise ConfigError("Pass either `data` or `data_files`, not both.")
    if data_files is None and (column_names is not None or delimiter is not None):
        raise ConfigError("`column_names` and `delimiter` describe CSV/TSV files; pass them with `data_files=`.")
    if data is not None:
        dataset, source = _from_data(data, split)
    elif data_files is not None:
        dataset, source = _from_files(data_files, split, column_names, delimiter)
    else:
        dataset, source = _from_hub(task, split, revision)
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
    needed = [*([] if pretokenized else task.text_columns), LABEL_COLUMN]
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
    import datasets

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
    import datasets

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
    builders = {_FILE_BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise ConfigError(
            f"`data_files` must all be one of {sorted(_FILE_BUILDERS)} (one format), got suffixes {sorted(suffixes)}."
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
        "files": [{"path": str(p.resolve()), "sha256": io.sha256_file(p)} for p in paths],
        "format": builder,
        "split": split if isinstance(data_files, Mapping) else None,
        "column_names": list(column_names) if column_names is not None else None,
        "fingerprint": dataset._fingerprint,
    }
    return dataset, source


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
    import datasets

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
        "revision": getattr(builder, "hash", None),  # the resolved commit of the Hub dataset
        "requested_revision": revision,
        "fingerprint": dataset._fingerprint,
    }
    return dataset, source


def read_labels(dataset: Any, task: GlueTask) -> np.ndarray:
    """Label ids (int64) or STS-B scores (float64), checked."""
    values = list(dataset[LABEL_COLUMN])
    if task.is_regression:
        try:
            labels = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ObjectiveError(f"STS-B labels must be numbers (similarity 0-5), got e.g. {values[0]!r}.") from None
        if not np.isfinite(labels).all():
            raise ObjectiveError("STS-B labels hold NaN or inf (a test split has no labels); use a labelled split.")
        return labels
    names = {name: k for k, name in enumerate(task.label_names)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, str) and v.strip().lower() in names:
            out[i] = names[v.strip().lower()]
            continue
        try:
            out[i] = int(v)
        except (TypeError, ValueError):
            raise ObjectiveError(
                f"Example {i} has label {v!r}; {task.name!r} labels are ids 0..{task.num_labels - 1} or the names "
                f"{list(task.label_names)}."
            ) from None
    bad = np.flatnonzero((out < 0) | (out >= task.num_labels))
    if len(bad):
        what = " (-1 marks an unlabelled test split; use a labelled split)" if (out[bad] == -1).any() else ""
        raise ObjectiveError(
            f"Example {int(bad[0])} has label {int(out[bad[0]])}, outside 0..{task.num_labels - 1} for task "
            f"{task.name!r}{what}."
        )
    return out


def tokenize(dataset: Any, task: GlueTask, tokenizer: Any, max_length: int) -> list[Example]:
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
                raise ObjectiveError(f"Example {i} has {c}={t!r}; GLUE text columns must hold strings.")
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

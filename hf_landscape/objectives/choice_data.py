"""The questions of a multiple-choice objective: read from a `datasets.Dataset`, a dict of columns, a list of rows or
local files (CSV, TSV, JSON lines, parquet), their columns checked, each question's context made from a template.

A question has a context (its question column, or a template filled from its row), two or more choices (a column of
lists of strings, or one list for every question) and an answer (the index of the correct choice, or its text).
Every source is recorded for provenance (files with their SHA-256). What does not live here: tokenization and batches
(`continuations`), the objective and its metrics (`multiple_choice`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dependencies import require
from ..errors import ConfigError, ObjectiveError
from . import classification_data


@dataclass
class Question:
    context: str
    choices: list[str]
    answer: int


def load_table(
    data: Any,
    data_files: str | os.PathLike | Sequence[Any] | Mapping[str, Any] | None,
    split: str | None,
    column_names: Sequence[str] | None,
    csv_delimiter: str | None,
) -> tuple[Any, dict[str, Any]]:
    """The rows as a `datasets.Dataset`, and where they came from: `data` (a `Dataset`, a `DatasetDict` indexed by
    `split`, a dict of columns or a list of rows) or `data_files` (a path, a list of paths or `{split: paths}`)."""
    if (data is None) == (data_files is None):
        raise ConfigError(
            "Pass the questions as `dataset` (a datasets.Dataset, a dict of columns or a list of rows) or as local "
            "files with `data_files=`, exactly one of them."
        )
    if data_files is None and (column_names is not None or csv_delimiter is not None):
        raise ConfigError("`column_names` and `csv_delimiter` describe CSV/TSV files; pass them with `data_files=`.")
    if split is None:
        splits = list(data_files) if isinstance(data_files, Mapping) else _dict_splits(data)
        if splits is not None:
            if len(splits) != 1:
                raise ConfigError(f"The data hold the splits {sorted(splits)}; pick one with `split=`.")
            split = splits[0]
    if data is not None:
        return classification_data._from_data(data, str(split))
    return classification_data._from_files(data_files, str(split), column_names, csv_delimiter)


def _dict_splits(data: Any) -> list[str] | None:
    datasets = require("datasets", "Multiple-choice and generation data")

    return list(data) if isinstance(data, datasets.DatasetDict) else None


def read_questions(
    dataset: Any,
    *,
    question: str,
    choices: str | Sequence[str],
    answer: str,
    template: str | Callable[[dict[str, Any]], str] | None,
) -> list[Question]:
    """Every row of `dataset` as a `Question`, checked: the columns exist, each context is a string, each question
    has two or more non-empty choices, and each answer names one of them."""
    columns = list(dataset.column_names)
    shared = None if isinstance(choices, str) else list(choices)
    needed = [question, answer] + ([choices] if isinstance(choices, str) else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ObjectiveError(
            f"The data have no column {missing[0]!r} (columns: {columns}); name the question, choices and answer "
            "columns with `question=`, `choices=` and `answer=`."
        )
    if dataset.num_rows == 0:
        raise ObjectiveError("The data hold no questions; pass a non-empty dataset or file.")
    if shared is not None:
        _check_choices(shared, None, "`choices`")
    contexts = _contexts(dataset, question, template)
    answers = list(dataset[answer])
    per_row = list(dataset[choices]) if isinstance(choices, str) else None
    out = []
    for i, (context, value) in enumerate(zip(contexts, answers)):
        options = _check_choices(per_row[i], i, f"column {choices!r}") if per_row is not None else list(shared or [])
        out.append(Question(context, options, _answer_index(value, options, i, answer)))
    return out


def _contexts(dataset: Any, question: str, template: Any) -> list[str]:
    if template is None:
        texts = list(dataset[question])
    elif isinstance(template, str):
        texts = []
        for row in dataset:
            try:
                texts.append(template.format_map({**row, "question": row[question]}))
            except KeyError as err:
                raise ObjectiveError(
                    f"`template` names the field {err.args[0]!r}, which is no column of the data (columns: "
                    f"{list(dataset.column_names)}; `{{question}}` is the question column)."
                ) from None
            except (ValueError, IndexError) as err:
                raise ConfigError(f"`template` {template!r:.80} is not a valid format string ({err}).") from None
    elif callable(template):
        texts = [template(dict(row)) for row in dataset]
    else:
        raise ConfigError(
            f"`template` must be a format string such as 'Review: {{question}}\\nSentiment:', a callable "
            f"row -> str, or None; got {type(template).__name__}."
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            source = "`template`" if template is not None else f"column {question!r}"
            raise ObjectiveError(f"Question {i}: {source} gave {type(text).__name__} {text!r:.60}, not a string.")
    return texts


def _check_choices(value: Any, row: int | None, what: str) -> list[str]:
    where = "" if row is None else f" in question {row}"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ObjectiveError(
            f"{what} must hold a list of choice strings per question; it holds {type(value).__name__} "
            f"{value!r:.60}{where}. Pass a column of lists, or one list for every question "
            "(e.g. `choices=['negative', 'positive']`)."
        )
    if len(value) < 2:
        raise ObjectiveError(f"{what} holds {len(value)} choice(s){where}; a question needs at least 2.")
    for j, choice in enumerate(value):
        if not isinstance(choice, str) or not choice:
            raise ObjectiveError(
                f"{what}: choice {j}{where} is {choice!r:.60}; every choice must be a non-empty string (its length "
                "normalizes `accuracy_norm`)."
            )
    return list(value)


def _answer_index(value: Any, choices: list[str], row: int, column: str) -> int:
    if isinstance(value, str):
        if value in choices:
            return choices.index(value)
        raise ObjectiveError(
            f"Question {row}: the answer {value!r:.60} (column {column!r}) is not one of its choices {choices!r:.120}; "
            "give the index of the correct choice or its exact text."
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ObjectiveError(
            f"Question {row}: the answer {value!r:.60} (column {column!r}) is neither a choice index nor a choice's "
            "text."
        )
    if not 0 <= int(value) < len(choices):
        raise ObjectiveError(
            f"Question {row}: the answer index {int(value)} (column {column!r}) is out of range for its "
            f"{len(choices)} choices (0 to {len(choices) - 1})."
        )
    return int(value)

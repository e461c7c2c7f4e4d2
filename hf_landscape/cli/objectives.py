"""The objectives the command line builds (`--objective causal-lm | classification | glue`), each registered in
`cli.objective_registry` with how it reads its data, builds its objective, and writes a recorded one back as options.

The registry's functions are re-exported here, so callers import this module (which registers the built-in entries).
An objective added in its own module (`cli/objectives_<name>.py`, see `objective_registry`) is registered by one
import line at the end of this file.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .objective_registry import (
    CLI_OBJECTIVES,
    COMMON,
    DATA_PLACEHOLDER,
    DEFAULT_MAX_LENGTH,
    TEXT_PLACEHOLDER,
    CliObjective,
    add_objective_arguments,
    check_objective_options,
    cli_objective,
    data_arguments,
    dataset_options,
    example_options,
    file_source,
    fill_defaults,
    for_objective_type,
    head_names,
    load_text_dataset,
    read_text_file,
    register_cli_objective,
    text_columns,
)

__all__ = [
    "CLI_OBJECTIVES",
    "DATA_PLACEHOLDER",
    "TEXT_PLACEHOLDER",
    "CliObjective",
    "add_objective_arguments",
    "check_objective_options",
    "cli_objective",
    "fill_defaults",
    "for_objective_type",
    "head_names",
    "register_cli_objective",
]


# --- causal-lm -------------------------------------------------------------------------------------------------------


def read_causal_lm(args: argparse.Namespace) -> Any:
    """The text of `--text-file`, or `--dataset` as a `datasets.Dataset` with its source."""
    if args.text_file is not None and args.dataset is not None:
        raise ConfigError("Pass one of `--text-file` and `--dataset`, not both.")
    if args.text_file is not None:
        if args.column_names is not None:
            raise ConfigError("`--column-names` names the columns of a `--dataset` file, not of a `--text-file`.")
        return read_text_file(args.text_file)
    if args.dataset is None:
        raise ConfigError("`--objective causal-lm` needs `--text-file FILE` or `--dataset NAME_OR_FILE`.")
    text_columns(args, ["text"], 1)
    dataset, source = load_text_dataset(args, args.split or "validation")
    return dataset.select(range(min(args.max_examples or 16, dataset.num_rows))), source


def build_causal_lm(args: argparse.Namespace, tokenizer: Any, data: Any) -> Any:
    from ..objectives.causal_lm import CausalLMObjective

    if isinstance(data, str):
        objective = CausalLMObjective.from_long_text(
            data,
            tokenizer,
            max_length=args.max_length,
            num_sequences=args.max_examples or 16,
            batch_size=args.batch_size,
        )
        objective.source.update(file_source(Path(args.text_file)))
        return objective
    dataset, source = data
    (column,) = text_columns(args, ["text"], 1)
    objective = CausalLMObjective(
        dataset, tokenizer, max_length=args.max_length, batch_size=args.batch_size, text_column=column
    )
    objective.source.update(source)
    return objective


def reproduce_causal_lm(meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    config = meta.get("config") or {}
    source = meta.get("source") or {}
    out: list[str] = []
    notes: list[str] = []
    if source.get("type") in ("hub", "file", "saved"):
        out += dataset_options(source, notes)
        if config.get("text_column", "text") != "text":
            out += ["--text-column", str(config["text_column"])]
        count = meta.get("num_examples")
    else:  # one long text cut into windows, or texts given in memory: a text file stands for them
        out += ["--text-file", str(source.get("file") or TEXT_PLACEHOLDER)]
        if not source.get("file"):
            notes.append(f"{TEXT_PLACEHOLDER}: the evaluation text (not recorded; its tokens' fingerprint is)")
        count = source.get("windows") or meta.get("num_examples")
    if count:
        out += ["--max-examples", str(count)]
    out += ["--max-length", str(config.get("max_length", DEFAULT_MAX_LENGTH))]
    return out, notes


# --- classification and glue -----------------------------------------------------------------------------------------


def read_classification(args: argparse.Namespace) -> dict[str, Any]:
    """`--dataset` as the objective's data arguments, checked (the file is read when the objective is built)."""
    if args.dataset is None:
        raise ConfigError(
            "`--objective classification` needs `--dataset FILE_OR_NAME` (e.g. a headerless dev.tsv with "
            "`--column-names label text`)."
        )
    text_columns(args, ["text"], 2)
    data = data_arguments(args)
    if "dataset" not in data and args.dataset_config is not None:
        raise ConfigError("`--dataset-config` applies to a Hub dataset loaded by name.")
    return data


def build_classification(args: argparse.Namespace, tokenizer: Any, data: dict[str, Any]) -> Any:
    from ..objectives.classification import TextClassificationObjective

    return TextClassificationObjective(
        tokenizer=tokenizer,
        text_columns=text_columns(args, ["text"], 2),
        label_column=args.label_column or "label",
        label_names=args.label_names,
        metrics=args.metrics,
        task_name=args.task or "text-classification",
        split=args.split or "validation",
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        **data,
    )


def reproduce_classification(meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    from ..metrics import METRIC_NAMES

    config = meta.get("config") or {}
    source = meta.get("source") or {}
    notes: list[str] = []
    out = ["--objective", "classification", "--task", str(config.get("task_name", "text-classification"))]
    if source.get("type") == "hub" and source.get("hub_id"):
        source = {**source, "config_name": config.get("dataset_config"), "split": config.get("split")}
    out += dataset_options(source, notes)
    out += ["--text-columns", *map(str, config.get("text_columns") or ["text"])]
    if config.get("label_column", "label") != "label":
        out += ["--label-column", str(config["label_column"])]
    if config.get("label_names"):
        out += ["--label-names", *map(str, config["label_names"])]
    metrics = [m for m in config.get("metrics") or [] if m in METRIC_NAMES]
    other = [m for m in config.get("metrics") or [] if m not in METRIC_NAMES]
    if metrics:
        out += ["--metrics", *metrics]
    if other:
        notes.append(f"metrics {other} were Python functions or modules, which the command line cannot name")
    if source.get("type") != "hub" and config.get("split", "validation") != "validation":
        out += ["--split", str(config["split"])]
    return out + example_options(config), notes


def read_glue(args: argparse.Namespace) -> dict[str, Any]:
    """The task checked, and `--dataset` as the objective's data arguments (GLUE by name when none is given)."""
    from ..objectives.glue_tasks import glue_task

    if args.task is None:
        raise ConfigError("`--objective glue` needs `--task` (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli).")
    glue_task(args.task)
    return data_arguments(args)


def build_glue(args: argparse.Namespace, tokenizer: Any, data: dict[str, Any]) -> Any:
    from ..objectives.glue import GlueObjective
    from ..objectives.glue_tasks import glue_task

    if args.task is None:
        raise ConfigError("`--objective glue` needs `--task` (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli).")
    task = glue_task(args.task)
    mapping: dict[str, str] = {}
    if args.text_column is not None:
        columns = text_columns(args, [], 2)
        if len(columns) != len(task.text_columns):
            raise ConfigError(
                f"`--text-column` names {len(columns)} column(s) but GLUE {task.name!r} reads "
                f"{len(task.text_columns)} ({list(task.text_columns)}), in that order."
            )
        mapping.update({c: t for c, t in zip(columns, task.text_columns) if c != t})
    if args.label_column is not None and args.label_column != "label":
        mapping[args.label_column] = "label"
    if "dataset" in data:  # another Hub dataset with GLUE's columns
        from ..objectives.classification_data import from_hub_dataset

        dataset, source = from_hub_dataset(args.dataset, args.dataset_config, args.split or task.default_split, None)
        data = {"data": dataset}
    else:
        source = None
    objective = GlueObjective(
        task.name,
        tokenizer,
        split=args.split,
        column_mapping=mapping or None,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        **data,
    )
    if source is not None:
        objective.source.update(source)
    return objective


def reproduce_glue(meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    config = meta.get("config") or {}
    source = meta.get("source") or {}
    notes: list[str] = []
    out = ["--objective", "glue", "--task", str(config.get("task"))]
    if not (source.get("type") == "hub" and source.get("hub_id") == "nyu-mll/glue"):
        out += dataset_options(source, notes)
        mapping = source.get("column_mapping") or {}
        if mapping:
            inverse = {task_column: column for column, task_column in mapping.items()}
            from ..objectives.glue_tasks import glue_task

            columns = glue_task(str(config.get("task"))).text_columns
            if any(c in inverse for c in columns):
                out += ["--text-columns", *(inverse.get(c, c) for c in columns)]
            if "label" in inverse:
                out += ["--label-column", inverse["label"]]
    if config.get("split"):
        out += ["--split", str(config["split"])]
    return out + example_options(config), notes


register_cli_objective(
    CliObjective(
        name="causal-lm",
        objective_type="CausalLMObjective",
        auto_class="AutoModelForCausalLM",
        help="next-token loss of a causal LM",
        read=read_causal_lm,
        build=build_causal_lm,
        options=("text_file", "dataset", "dataset_config", "split", "text_column", "column_names", *COMMON),
        reproduce=reproduce_causal_lm,
    )
)
register_cli_objective(
    CliObjective(
        name="classification",
        objective_type="TextClassificationObjective",
        auto_class="AutoModelForSequenceClassification",
        help="a sequence classifier on your labelled sentences or pairs",
        read=read_classification,
        build=build_classification,
        options=(
            "dataset",
            "dataset_config",
            "split",
            "text_column",
            "label_column",
            "label_names",
            "column_names",
            "metrics",
            "task",
            *COMMON,
        ),
        reproduce=reproduce_classification,
    )
)
register_cli_objective(
    CliObjective(
        name="glue",
        objective_type="GlueObjective",
        auto_class="AutoModelForSequenceClassification",
        help="a GLUE task's loss and metrics (--task)",
        read=read_glue,
        build=build_glue,
        options=("task", "dataset", "dataset_config", "split", "text_column", "label_column", "column_names", *COMMON),
        reproduce=reproduce_glue,
    )
)

from . import objectives_generation, objectives_multiple_choice  # noqa: E402,F401

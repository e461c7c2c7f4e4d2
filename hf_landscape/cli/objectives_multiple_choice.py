r"""`--objective multiple-choice`: benchmark accuracy of a causal LM (`MultipleChoiceObjective`), each question's choices
scored by the log-likelihood of their continuation, as lm-evaluation-harness scores a multiple-choice task.

The questions come from `--dataset` (a local .tsv/.csv/.jsonl/.json/.parquet file, a saved folder or a Hub dataset):
`--question-column` holds the question (or `--template` makes the context from a row's columns), `--choices-column` a
list of choices per question (JSON files) or `--choices A B ...` one list shared by every question (any file), and
`--answer-column` the index of the correct choice (or its text). `\n` and `\t` in `--template` and
`--target-delimiter` stand for a newline and a tab. Metrics: `accuracy` and `accuracy_norm`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .objective_registry import (
    COMMON,
    CliObjective,
    check_columns,
    dataset_options,
    escape,
    example_options,
    load_text_dataset,
    register_cli_objective,
    unescape,
)

OPTIONS = ("question_column", "choices", "choices_column", "answer_column", "template", "target_delimiter")


def add_arguments(group: Any) -> None:
    """The options only `--objective multiple-choice` reads (each default None: given to another, it is refused)."""
    group.add_argument(
        "--question-column", default=None, metavar="COLUMN", help="multiple-choice: the question (default question)"
    )
    group.add_argument(
        "--choices",
        nargs="+",
        default=None,
        metavar="CHOICE",
        help="multiple-choice: one list of choices shared by every question (e.g. negative positive)",
    )
    group.add_argument(
        "--choices-column",
        default=None,
        metavar="COLUMN",
        help="multiple-choice: a column holding each question's list of choices (default choices)",
    )
    group.add_argument(
        "--answer-column",
        default=None,
        metavar="COLUMN",
        help="multiple-choice: the index (or text) of the correct choice (default answer)",
    )
    group.add_argument(
        "--template",
        default=None,
        metavar="TEXT",
        help="multiple-choice: the context made from a row, e.g. 'Review: {question}\\nSentiment:'",
    )
    group.add_argument(
        "--target-delimiter",
        default=None,
        metavar="TEXT",
        help="multiple-choice: put between the context and each choice (default one space)",
    )


def _choices(args: argparse.Namespace) -> str | list[str]:
    if args.choices is not None and args.choices_column is not None:
        raise ConfigError(
            "Pass one of `--choices` (one list shared by every question) and `--choices-column` (a column of lists)."
        )
    return list(args.choices) if args.choices is not None else (args.choices_column or "choices")


def read_multiple_choice(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """`--dataset` as a `datasets.Dataset` with its source, its columns checked against the column options."""
    if args.dataset is None:
        raise ConfigError(
            "`--objective multiple-choice` needs `--dataset FILE_OR_NAME` (e.g. a .jsonl file with question, choices "
            "and answer fields, or a .tsv with `--choices negative positive`)."
        )
    choices = _choices(args)
    if isinstance(choices, list) and len(choices) < 2:
        raise ConfigError(f"`--choices` needs two or more choices, got {choices}.")
    dataset, source = load_text_dataset(args, args.split or "validation")
    check_columns(
        dataset,
        {
            "--question-column": args.question_column or "question",
            "--answer-column": args.answer_column or "answer",
            "--choices-column": choices if isinstance(choices, str) else None,
        },
        source,
    )
    return dataset, source


def build_multiple_choice(args: argparse.Namespace, tokenizer: Any, data: tuple[Any, dict[str, Any]]) -> Any:
    from ..objectives.multiple_choice import MultipleChoiceObjective

    dataset, source = data
    objective = MultipleChoiceObjective(
        dataset,
        tokenizer,
        question=args.question_column or "question",
        choices=_choices(args),
        answer=args.answer_column or "answer",
        template=None if args.template is None else unescape(args.template),
        delimiter=" " if args.target_delimiter is None else unescape(args.target_delimiter),
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_examples=args.max_examples,
    )
    objective.source.update(source)
    return objective


def reproduce_multiple_choice(meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    config = meta.get("config") or {}
    notes: list[str] = []
    out = ["--objective", "multiple-choice", *dataset_options(meta.get("source") or {}, notes)]
    if config.get("question", "question") != "question":
        out += ["--question-column", str(config["question"])]
    choices = config.get("choices", "choices")
    if isinstance(choices, list):
        out += ["--choices", *map(str, choices)]
    elif choices != "choices":
        out += ["--choices-column", str(choices)]
    if config.get("answer", "answer") != "answer":
        out += ["--answer-column", str(config["answer"])]
    if config.get("template") is not None:
        out += ["--template", escape(str(config["template"]))]
    elif meta.get("template"):
        notes.append(
            f"the context was made by the Python function {meta['template']}, which the command line cannot name"
        )
    if config.get("delimiter", " ") != " ":
        out += ["--target-delimiter", escape(str(config["delimiter"]))]
    return out + example_options(config), notes


register_cli_objective(
    CliObjective(
        name="multiple-choice",
        objective_type="MultipleChoiceObjective",
        auto_class="AutoModelForCausalLM",
        help="benchmark accuracy of a causal LM: each question's choices scored by log-likelihood",
        read=read_multiple_choice,
        build=build_multiple_choice,
        options=("dataset", "dataset_config", "split", "column_names", *OPTIONS, *COMMON),
        reproduce=reproduce_multiple_choice,
        arguments=add_arguments,
    )
)

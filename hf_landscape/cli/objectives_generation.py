r"""`--objective generation`: the score of a causal LM's greedy answers (`GenerationObjective`).

The prompts come from `--dataset` (a local .tsv/.csv/.jsonl/.json/.parquet file, a .txt file of one prompt a line with
`--prompt-column text`, a saved folder or a Hub dataset): `--prompt-column` holds the prompt, `--reference-column` the
reference answer (needed by the `exact_match` and `contains` scorers; its loss is the objective's loss). `--scorer` is
`exact_match` (the default with references), `contains`, `refusal` (the default without) or `regex:PATTERN`;
`--max-new-tokens` bounds each answer and `--stop` cuts it (`\n` and `\t` stand for a newline and a tab). Metrics:
`score`, `generated_nll` and `new_tokens`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .objective_registry import (
    CliObjective,
    check_columns,
    dataset_options,
    escape,
    load_text_dataset,
    register_cli_objective,
    unescape,
)

OPTIONS = ("prompt_column", "reference_column", "scorer", "max_new_tokens", "stop")


def add_arguments(group: Any) -> None:
    """The options only `--objective generation` reads (each default None: given to another, it is refused)."""
    group.add_argument(
        "--prompt-column", default=None, metavar="COLUMN", help="generation: the prompt (default prompt)"
    )
    group.add_argument(
        "--reference-column", default=None, metavar="COLUMN", help="generation: the reference answer (optional)"
    )
    group.add_argument(
        "--scorer",
        default=None,
        metavar="NAME",
        help="generation: exact_match, contains, refusal or regex:PATTERN (default exact_match with "
        "--reference-column, else refusal)",
    )
    group.add_argument(
        "--max-new-tokens", type=int, default=None, help="generation: tokens generated per prompt at most (default 32)"
    )
    group.add_argument(
        "--stop", nargs="+", default=None, metavar="TEXT", help="generation: answers are cut at the first of these"
    )


def _scorer(args: argparse.Namespace) -> Any:
    from ..objectives import scorers

    name = args.scorer or ("exact_match" if args.reference_column else "refusal")
    if not name.startswith("regex:") and name not in scorers.SCORERS:
        raise ConfigError(f"`--scorer` must be one of {[*scorers.SCORERS, 'regex:PATTERN']}, got {name!r}.")
    try:
        scorer = scorers.get_scorer(name)
    except ConfigError as err:
        raise ConfigError(f"`--scorer` {name!r}: {err}") from None
    if getattr(scorer, "needs_reference", False) and args.reference_column is None:
        raise ConfigError(
            f"`--scorer {name}` compares each answer with a reference; name the reference column with "
            "`--reference-column`, or pick `refusal` or `regex:PATTERN`."
        )
    return scorer


def read_generation(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The options checked, and `--dataset` as a `datasets.Dataset` with its source, its columns checked."""
    if args.dataset is None:
        raise ConfigError(
            "`--objective generation` needs `--dataset FILE_OR_NAME` (e.g. a .jsonl file with prompt and reference "
            "fields, or a .txt file of one prompt a line with `--prompt-column text`)."
        )
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"`--max-new-tokens` must be an integer >= 1, got {args.max_new_tokens}.")
    if args.stop is not None and not all(args.stop):
        raise ConfigError(f"`--stop` takes non-empty strings, got {args.stop}.")
    _scorer(args)
    dataset, source = load_text_dataset(args, args.split or "validation")
    check_columns(
        dataset,
        {"--prompt-column": args.prompt_column or "prompt", "--reference-column": args.reference_column},
        source,
    )
    return dataset, source


def build_generation(args: argparse.Namespace, tokenizer: Any, data: tuple[Any, dict[str, Any]]) -> Any:
    from ..objectives.generation import GenerationObjective

    dataset, source = data
    objective = GenerationObjective.from_data(
        dataset,
        tokenizer,
        _scorer(args),
        prompt=args.prompt_column or "prompt",
        reference=args.reference_column,
        max_examples=args.max_examples,
        max_new_tokens=32 if args.max_new_tokens is None else args.max_new_tokens,
        stop=None if args.stop is None else [unescape(s) for s in args.stop],
        batch_size=args.batch_size,
    )
    objective.source.update(source)
    return objective


def _scorer_option(scorer: Mapping[str, Any], notes: list[str]) -> str:
    """`--scorer`'s value for a recorded scorer (a built-in's defaults; a Python callable is named in the notes)."""
    from ..objectives import scorers

    name = str(scorer.get("name"))
    if name == "regex" and scorer.get("pattern"):
        if scorer.get("ignore_case"):
            notes.append("the regex scorer ignored case, which `--scorer regex:PATTERN` cannot say; add (?i)")
        return f"regex:{scorer['pattern']}"
    if name in scorers.SCORERS:
        defaults = scorers.SCORERS[name]().describe()
        if {k: v for k, v in scorer.items() if k != "module"} != defaults:
            notes.append(f"the {name} scorer had options {dict(scorer)}; `--scorer {name}` uses {defaults}")
        return name
    notes.append(f"the scorer was the Python callable {name}, which the command line cannot name; a built-in stands in")
    return "exact_match"


def reproduce_generation(meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    config = meta.get("config") or {}
    source = dict(meta.get("source") or {})
    notes: list[str] = []
    if source.get("type") == "prompts" and source.get("files"):  # given as data_files: the files' source
        source["type"] = "files"
    out = ["--objective", "generation", *dataset_options(source, notes)]
    if source.get("prompt_column", "prompt") != "prompt":
        out += ["--prompt-column", str(source["prompt_column"])]
    if source.get("reference_column"):
        out += ["--reference-column", str(source["reference_column"])]
    elif source.get("references"):
        notes.append("the reference answers were given in memory; name their column with `--reference-column`")
    out += ["--scorer", _scorer_option(meta.get("scorer") or {}, notes)]
    out += ["--max-new-tokens", str(config.get("max_new_tokens", 32))]
    if config.get("stop"):
        out += ["--stop", *(escape(str(s)) for s in config["stop"])]
    if config.get("delimiter", " ") != " ":
        notes.append(f"the reference loss put {config['delimiter']!r} before each reference; the command line puts ' '")
    if meta.get("num_examples"):
        out += ["--max-examples", str(meta["num_examples"])]
    return out, notes


register_cli_objective(
    CliObjective(
        name="generation",
        objective_type="GenerationObjective",
        auto_class="AutoModelForCausalLM",
        help="the score of greedy answers to prompts (exact match, contains, refusal, regex)",
        read=read_generation,
        build=build_generation,
        options=("dataset", "dataset_config", "split", "column_names", *OPTIONS, "max_examples", "batch_size"),
        reproduce=reproduce_generation,
        arguments=add_arguments,
    )
)

"""`--objective`: the objectives the command line can build, as a registry of builders.

Each entry (`CliObjective`) says how its objective is made from the command's options and the model's tokenizer, which
transformers auto class loads its models (so a checkpoint with another head is refused before it is loaded), which
data options it reads (any other one given is refused, never ignored), and how a surface's recorded objective is
written back as options (the card's Reproduce command). An objective registers itself with
`register_cli_objective(CliObjective(...))`; `--objective`'s choices, the checks and the cards follow. Options only
one objective reads are added to the parser by its entry's `arguments`.

Built in: `causal-lm` (`CausalLMObjective`), `classification` (`TextClassificationObjective`) and `glue`
(`GlueObjective`).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ObjectiveError

#: a placeholder the card's command names where the data were not a file it can name
TEXT_PLACEHOLDER = "YOUR_TEXT.txt"
DATA_PLACEHOLDER = "YOUR_DATA.tsv"

# Data options some objectives read and others do not (argparse dest -> option), each with default None, so one
# given to an objective that does not read it is refused rather than ignored.
DATA_OPTIONS = {
    "text_file": "--text-file",
    "dataset": "--dataset",
    "dataset_config": "--dataset-config",
    "split": "--split",
    "text_column": "--text-column",
    "label_column": "--label-column",
    "label_names": "--label-names",
    "column_names": "--column-names",
    "metrics": "--metrics",
    "task": "--task",
}


@dataclass(frozen=True)
class CliObjective:
    """How the command line builds one objective and writes it back as options.

    Args:
        name: the value of `--objective`.
        objective_type: the class name its surfaces record (`metadata["objective"]["type"]`).
        auto_class: the transformers auto class its models load with (`AutoModelForCausalLM`, ...).
        help: one line for `--help`.
        read: `fn(args) -> data`: reads (or checks) the evaluation data before any model is resolved, so bad data
            are refused first.
        build: `fn(args, tokenizer, data) -> Objective` (before any weight is loaded).
        options: the data options it reads (argparse dests of `DATA_OPTIONS`, or its own).
        reproduce: `fn(objective_metadata) -> (options, notes)`: its options that rebuild a recorded objective, and
            notes on what the options cannot say (a placeholder for data that were not a named file, ...).
        arguments: `fn(group)` adding options only this objective reads (each with default None), or None.
    """

    name: str
    objective_type: str
    auto_class: str
    help: str
    read: Callable[[argparse.Namespace], Any]
    build: Callable[[argparse.Namespace, Any, Any], Any]
    options: tuple[str, ...]
    reproduce: Callable[[Mapping[str, Any]], tuple[list[str], list[str]]]
    arguments: Callable[[Any], None] | None = None


CLI_OBJECTIVES: dict[str, CliObjective] = {}


def register_cli_objective(entry: CliObjective) -> CliObjective:
    """Add `entry` to `--objective`'s choices (its name must be new)."""
    if entry.name in CLI_OBJECTIVES:
        raise ConfigError(f"The command-line objective {entry.name!r} is registered already; choose another name.")
    CLI_OBJECTIVES[entry.name] = entry
    return entry


def cli_objective(name: str) -> CliObjective:
    """The entry of `--objective NAME`, or a `ConfigError` listing the choices (and the closest one)."""
    if name in CLI_OBJECTIVES:
        return CLI_OBJECTIVES[name]
    close = difflib.get_close_matches(str(name), CLI_OBJECTIVES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"`--objective` must be one of {sorted(CLI_OBJECTIVES)}, got {name!r}{hint}.")


def for_objective_type(objective_type: Any) -> CliObjective | None:
    """The entry that builds objectives of the class named `objective_type`, if any."""
    return next((e for e in CLI_OBJECTIVES.values() if e.objective_type == objective_type), None)


def head_names() -> dict[str, str]:
    """Auto class -> the `--objective` options whose models it loads (for messages naming the objective that fits)."""
    names: dict[str, list[str]] = {}
    for entry in CLI_OBJECTIVES.values():
        names.setdefault(entry.auto_class, []).append(f"`--objective {entry.name}`")
    return {auto: " or ".join(options) for auto, options in names.items()}


def check_objective_options(args: argparse.Namespace, entry: CliObjective) -> None:
    """Refuse a data option that `entry` does not read (it would be ignored), naming the objectives that read it."""
    for dest, option in {**DATA_OPTIONS, **_own_options()}.items():
        if getattr(args, dest, None) is not None and dest not in entry.options:
            readers = sorted(e.name for e in CLI_OBJECTIVES.values() if dest in e.options)
            raise ConfigError(
                f"`{option}` does not apply to `--objective {entry.name}`; it is read by "
                f"{', '.join(f'`--objective {r}`' for r in readers)}."
            )


def _own_options() -> dict[str, str]:
    """The options the entries added themselves (dest -> option), read off a parser they fill."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group()
    for entry in CLI_OBJECTIVES.values():
        if entry.arguments is not None:
            entry.arguments(group)
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


def add_objective_arguments(parser: argparse.ArgumentParser) -> None:
    """`--objective` and every data option the objectives read."""
    group = parser.add_argument_group("objective and evaluation data")
    choices = ", ".join(f"{e.name} ({e.help})" for e in CLI_OBJECTIVES.values())
    group.add_argument("--objective", default="causal-lm", metavar="NAME", help=f"what the loss is: {choices}")
    group.add_argument("--task", default=None, help="glue: the GLUE task (cola, sst2, ...); classification: its name")
    group.add_argument("--text-file", default=None, help="causal-lm: a UTF-8 text, cut into windows of --max-length")
    group.add_argument(
        "--dataset",
        default=None,
        help="a local .tsv/.csv/.jsonl/.json/.parquet/.txt file, a folder saved with save_to_disk, or a Hub dataset",
    )
    group.add_argument("--dataset-config", default=None, help="configuration of a Hub dataset")
    group.add_argument("--split", default=None, help="split of a Hub dataset (default validation; GLUE: the task's)")
    group.add_argument(
        "--text-column",
        "--text-columns",
        dest="text_column",
        nargs="+",
        default=None,
        metavar="COLUMN",
        help="the text column (default text); two columns for sentence pairs (classification, glue)",
    )
    group.add_argument("--label-column", default=None, help="classification, glue: the label column (default label)")
    group.add_argument(
        "--label-names", nargs="+", default=None, metavar="NAME", help="classification: class names in id order"
    )
    group.add_argument(
        "--column-names", nargs="+", default=None, metavar="NAME", help="names of a headerless CSV/TSV's columns"
    )
    group.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="NAME",
        help="classification: accuracy f1 matthews_correlation ...",
    )
    group.add_argument(
        "--max-examples", type=int, default=None, help="examples to evaluate (default: causal-lm 16, others all)"
    )
    group.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    group.add_argument("--batch-size", type=int, default=8, help="examples per forward pass (default 8)")
    for entry in CLI_OBJECTIVES.values():
        if entry.arguments is not None:
            entry.arguments(group)


# --- reading the data ----------------------------------------------------------------------------------------------


def read_text_file(name: str) -> str:
    path = Path(name)
    if not path.is_file():
        raise ObjectiveError(f"`--text-file` {str(path)!r} does not exist; pass a UTF-8 text file.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ObjectiveError(
            f"`--text-file` {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); pass a plain text file, or convert it with `iconv -t UTF-8`."
        ) from None
    except OSError as err:
        raise ObjectiveError(f"`--text-file` {str(path)!r} cannot be read ({err.strerror or err}).") from None


def file_source(path: Path) -> dict[str, Any]:
    """How a data file is recorded: its name (no local path) and SHA-256."""
    from .. import io

    return {"file": path.name, "sha256": io.sha256_file(path)}


def dataset_kind(name: str) -> str:
    """`"file"`, `"saved"` (a folder written by `save_to_disk`) or `"hub"` for a `--dataset` value."""
    path = Path(name)
    if path.is_file():
        return "file"
    if path.is_dir() and (path / "dataset_info.json").is_file():
        return "saved"
    if path.exists():
        raise ObjectiveError(
            f"`--dataset` {name!r} is a folder but not one written by `Dataset.save_to_disk`; pass a data file."
        )
    return "hub"


def load_text_dataset(args: argparse.Namespace, split: str) -> tuple[Any, dict[str, Any]]:
    """`--dataset` as a `datasets.Dataset` and where it came from (a local file, a saved folder or a Hub dataset)."""
    import datasets

    from ..objectives.classification_data import FILE_BUILDERS, hub_offline

    kind = dataset_kind(args.dataset)
    if kind == "file":
        path = Path(args.dataset)
        suffix = path.suffix.lower()
        builder = "text" if suffix == ".txt" and not args.column_names else FILE_BUILDERS.get(suffix)
        if builder is None:
            raise ObjectiveError(f"`--dataset` file {str(path)!r} must be .json/.jsonl/.csv/.tsv/.parquet/.txt.")
        extra: dict[str, Any] = {}
        if builder == "csv":
            extra = {"delimiter": "\t" if suffix == ".tsv" else ",", "na_filter": False}
            if suffix == ".tsv":
                extra["quoting"] = 3  # csv.QUOTE_NONE
            if args.column_names:
                extra["column_names"] = list(args.column_names)
        elif args.column_names:
            raise ConfigError("`--column-names` names the columns of a headerless .csv/.tsv file.")
        try:
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **extra)
        except Exception as err:  # datasets and pandas/pyarrow raise many types on malformed files
            raise ObjectiveError(f"Could not read `--dataset` {str(path)!r}: {type(err).__name__}: {err}") from None
        return dataset, {"type": "file", **file_source(path), "column_names": args.column_names}
    if kind == "saved":
        dataset = datasets.load_from_disk(args.dataset)
        return dataset, {"type": "saved", "file": Path(args.dataset).name}
    if hub_offline():
        raise ObjectiveError(
            f"`--dataset` {args.dataset!r} is not a local file or folder, and loading it from the Hub needs the network "
            "but offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); pass a local file."
        )
    try:
        dataset = datasets.load_dataset(args.dataset, args.dataset_config, split=split)
    except Exception as err:  # datasets raises many types for a missing or unreachable dataset
        raise ObjectiveError(f"Could not load `--dataset` {args.dataset!r} (split {split!r}): {err}") from None
    return dataset, {"type": "hub", "hub_id": args.dataset, "config_name": args.dataset_config, "split": split}


def _columns(args: argparse.Namespace, default: list[str], most: int) -> list[str]:
    columns = list(args.text_column or default)
    if not 1 <= len(columns) <= most:
        kinds = "one column" if most == 1 else "one column, or two for sentence pairs"
        raise ConfigError(f"`--text-column` takes {kinds}, got {columns}.")
    return columns


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
    _columns(args, ["text"], 1)
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
    (column,) = _columns(args, ["text"], 1)
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
        out += _dataset_options(source, notes)
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
    out += ["--max-length", str(config.get("max_length", 128))]
    return out, notes


def _dataset_options(source: Mapping[str, Any], notes: list[str]) -> list[str]:
    """`--dataset` (and its configuration, split, column names) of a recorded source."""
    kind = source.get("type")
    if kind == "hub" and source.get("hub_id"):
        out = ["--dataset", str(source["hub_id"])]
        if source.get("config_name"):
            out += ["--dataset-config", str(source["config_name"])]
        if source.get("split"):
            out += ["--split", str(source["split"])]
        return out
    files = source.get("files") or []
    name = source.get("file") or (files[0].get("path") if len(files) == 1 and isinstance(files[0], dict) else None)
    if kind in ("file", "files") and name:
        out = ["--dataset", str(name)]
        if source.get("column_names"):
            out += ["--column-names", *map(str, source["column_names"])]
        return out
    notes.append(
        f"{DATA_PLACEHOLDER}: the evaluation data (given in memory, not as a file; the fingerprint records them)"
    )
    return ["--dataset", DATA_PLACEHOLDER]


# --- classification and glue -----------------------------------------------------------------------------------------


def _classification_data(args: argparse.Namespace) -> dict[str, Any]:
    """`--dataset` as the objective's `data_files`, `data` (a saved folder) or `dataset` (a Hub name)."""
    if args.dataset is None:
        return {}
    kind = dataset_kind(args.dataset)
    if kind == "file":
        return {"data_files": args.dataset, "column_names": args.column_names}
    if args.column_names is not None:
        raise ConfigError("`--column-names` names the columns of a headerless .csv/.tsv `--dataset` file.")
    if kind == "saved":
        import datasets

        return {"data": datasets.load_from_disk(args.dataset)}
    return {"dataset": args.dataset, "dataset_config": args.dataset_config}


def read_classification(args: argparse.Namespace) -> dict[str, Any]:
    """`--dataset` as the objective's data arguments, checked (the file is read when the objective is built)."""
    if args.dataset is None:
        raise ConfigError(
            "`--objective classification` needs `--dataset FILE_OR_NAME` (e.g. a headerless dev.tsv with "
            "`--column-names label text`)."
        )
    _columns(args, ["text"], 2)
    data = _classification_data(args)
    if "dataset" not in data and args.dataset_config is not None:
        raise ConfigError("`--dataset-config` applies to a Hub dataset loaded by name.")
    return data


def build_classification(args: argparse.Namespace, tokenizer: Any, data: dict[str, Any]) -> Any:
    from ..objectives.classification import TextClassificationObjective

    return TextClassificationObjective(
        tokenizer=tokenizer,
        text_columns=_columns(args, ["text"], 2),
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
    out += _dataset_options(source, notes)
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
    return out + _example_options(config), notes


def _example_options(config: Mapping[str, Any]) -> list[str]:
    out = ["--max-length", str(config.get("max_length", 128))]
    if config.get("max_examples"):
        out += ["--max-examples", str(config["max_examples"])]
    return out


def read_glue(args: argparse.Namespace) -> dict[str, Any]:
    """The task checked, and `--dataset` as the objective's data arguments (GLUE by name when none is given)."""
    from ..objectives.glue_tasks import glue_task

    if args.task is None:
        raise ConfigError("`--objective glue` needs `--task` (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli).")
    glue_task(args.task)
    return _classification_data(args)


def build_glue(args: argparse.Namespace, tokenizer: Any, data: dict[str, Any]) -> Any:
    from ..objectives.glue import GlueObjective
    from ..objectives.glue_tasks import glue_task

    if args.task is None:
        raise ConfigError("`--objective glue` needs `--task` (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli).")
    task = glue_task(args.task)
    mapping: dict[str, str] = {}
    if args.text_column is not None:
        columns = _columns(args, [], 2)
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
        out += _dataset_options(source, notes)
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
    return out + _example_options(config), notes


COMMON = ("max_examples", "max_length", "batch_size")

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

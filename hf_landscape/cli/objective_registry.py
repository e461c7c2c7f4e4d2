"""The registry behind `--objective`: how the command line builds an objective, and the data options they share.

Each entry (`CliObjective`) says how its objective is made from the command's options and the model's tokenizer, which
transformers auto class loads its models (so a checkpoint with another head is refused before it is loaded), which
data options it reads (any other one given is refused, never ignored), and how a surface's recorded objective is
written back as options (the card's Reproduce command). `--objective`'s choices, the head check, `--dry-run` and the
cards all follow the registry.

A new objective goes in a module of its own, `cli/objectives_<name>.py`, which imports what it needs from here and
calls `register_cli_objective(CliObjective(...))` at import; one line at the end of `cli/objectives.py` imports that
module. Options only it reads are added by its entry's `arguments` (each with default None). The built-in entries
(`causal-lm`, `classification`, `glue`) live in `cli/objectives.py`.
"""

from __future__ import annotations

import argparse
import difflib
import re
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
    "max_length": "--max-length",  # every objective but generation, whose prompts are never cut
}
#: `--max-length` where it is not given
DEFAULT_MAX_LENGTH = 128


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


def fill_defaults(args: argparse.Namespace, entry: CliObjective) -> None:
    """Give the options `entry` reads but that were not given their defaults (`--max-length`: 128 tokens); after
    `check_objective_options`, which refuses them given to an objective that does not read them."""
    if args.max_length is None and "max_length" in entry.options:
        args.max_length = DEFAULT_MAX_LENGTH


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
    group.add_argument(
        "--max-length",
        type=int,
        default=None,
        help=f"tokens per example (default {DEFAULT_MAX_LENGTH}; not generation)",
    )
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
    from ..dependencies import require
    from ..objectives.classification_data import FILE_BUILDERS, hub_offline

    datasets = require("datasets", "`--dataset`")

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


def text_columns(args: argparse.Namespace, default: list[str], most: int) -> list[str]:
    """`--text-column(s)` (or `default`), checked to name one column, or up to `most`."""
    columns = list(args.text_column or default)
    if not 1 <= len(columns) <= most:
        kinds = "one column" if most == 1 else "one column, or two for sentence pairs"
        raise ConfigError(f"`--text-column` takes {kinds}, got {columns}.")
    return columns


def dataset_options(source: Mapping[str, Any], notes: list[str]) -> list[str]:
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


def data_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """`--dataset` as the objective's `data_files`, `data` (a saved folder) or `dataset` (a Hub name)."""
    if args.dataset is None:
        return {}
    kind = dataset_kind(args.dataset)
    if kind == "file":
        return {"data_files": args.dataset, "column_names": args.column_names}
    if args.column_names is not None:
        raise ConfigError("`--column-names` names the columns of a headerless .csv/.tsv `--dataset` file.")
    if kind == "saved":
        from ..dependencies import require

        datasets = require("datasets", "`--dataset`")
        return {"data": datasets.load_from_disk(args.dataset)}
    return {"dataset": args.dataset, "dataset_config": args.dataset_config}


def example_options(config: Mapping[str, Any]) -> list[str]:
    """`--max-length` and `--max-examples` of a recorded objective's config."""
    out = ["--max-length", str(config.get("max_length", DEFAULT_MAX_LENGTH))]
    if config.get("max_examples"):
        out += ["--max-examples", str(config["max_examples"])]
    return out


COMMON = ("max_examples", "max_length", "batch_size")  # the options every objective reads


def unescape(text: str) -> str:
    r"""A text option as typed: `\n`, `\t` and `\\` stand for a newline, a tab and a backslash."""
    return _ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], text)


def escape(text: str) -> str:
    r"""`text` written back as a text option (`unescape(escape(text)) == text`)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


_ESCAPE = re.compile(r"\\([\\nt])")
_UNESCAPED = {"\\": "\\", "n": "\n", "t": "\t"}


def check_columns(dataset: Any, columns: Mapping[str, str | None], source: Mapping[str, Any]) -> None:
    """Refuse an option (`{"--question-column": "q", ...}`) naming a column `dataset` does not have."""
    names = list(dataset.column_names)
    for option, column in columns.items():
        if column is not None and column not in names:
            where = source.get("file") or source.get("hub_id") or "--dataset"
            raise ObjectiveError(
                f"`{option}` {column!r} is not a column of {str(where)!r} (its columns: {names}); name one of them "
                f"with `{option}`."
            )

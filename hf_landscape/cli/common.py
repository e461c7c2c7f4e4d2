"""Arguments shared by the commands, their checks, and turning them into library objects.

Every option is checked (`check_*`) and the evaluation data is read before a model is loaded; the output folder
is checked, created and locked (`output_folder`) before the model is loaded too, and stays locked until the
surface, its plots and the push are done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ObjectiveError

DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_model_arguments(parser: argparse.ArgumentParser, *, name: str = "model") -> None:
    parser.add_argument(name, help="Hub repo id or local folder of a causal LM")
    parser.add_argument("--revision", default=None, help="branch, tag or commit sha on the Hub")
    parser.add_argument("--gguf-file", default=None, help="load this GGUF file inside the model folder")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype (default float32)")
    parser.add_argument(
        "--autocast",
        default=None,
        choices=["bfloat16", "float16"],
        help="evaluate under torch.autocast in this dtype (mixed precision; default: the weights' dtype)",
    )
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: cpu)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow code from the model repo to run")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation data (one of)")
    src = group.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-file", help="a UTF-8 text file, cut into windows of --max-length tokens")
    src.add_argument("--dataset", help="a `datasets` name or local path (json/csv/parquet/text file or folder)")
    group.add_argument("--dataset-config", default=None, help="dataset configuration name")
    group.add_argument("--split", default="validation", help="dataset split (default validation)")
    group.add_argument("--text-column", default="text", help="dataset column holding the text")
    group.add_argument("--max-examples", type=int, default=16, help="sequences to evaluate on (default 16)")
    group.add_argument("--max-length", type=int, default=128, help="tokens per sequence (default 128)")
    group.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")


def add_direction_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("directions")
    group.add_argument("--seed", type=int, default=0, help="draw of the random directions")
    group.add_argument("--normalization", default="filter", help="filter, layer, model or none")
    group.add_argument("--include-1d", action="store_true", help="perturb biases and norm weights too")
    group.add_argument("--include", nargs="*", default=None, help="regexes of parameter names to perturb")
    group.add_argument("--exclude", nargs="*", default=None, help="regexes of parameter names to leave alone")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--out", required=True, help="folder for surface.safetensors, surface.json and plots")
    group.add_argument("--overwrite", action="store_true", help="replace a different surface in --out")
    group.add_argument("--formats", nargs="+", default=["png"], help="plot formats: png pdf svg")
    group.add_argument("--no-plots", action="store_true", help="save the surface only")
    group.add_argument("--log-scale", action="store_true", help="plot log10 of the loss")
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group.add_argument(
        "--checkpoint-every", type=int, default=10, help="save finished points to --out every N points (default 10)"
    )
    group.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="also push the surface to this Hub repo")
    group.add_argument(
        "--repo-type",
        choices=["dataset", "model"],
        default=None,
        help="push to a dataset repo (tables the Dataset Viewer shows) or a model repo (default: the existing repo's "
        "type, a dataset for a new repo)",
    )
    group.add_argument("--private", action="store_true", help="create the Hub repo private")
    group.add_argument("--path-in-repo", default="", help="folder in the Hub repo (default: the root)")


def parse_span(text: str) -> tuple[float, float]:
    """`LOW:HIGH` -> (low, high). Write it as `--span=-1:1` (a leading '-' needs the '=')."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"span must look like LOW:HIGH (e.g. --span=-1:1), got {text!r}") from None
    return lo, hi


def parse_spans(text: str) -> list[tuple[float, float]]:
    """`LOW:HIGH` for both axes, or `XLOW:XHIGH,YLOW:YHIGH`."""
    spans = [parse_span(part) for part in text.split(",")]
    if len(spans) > 2:
        raise argparse.ArgumentTypeError(f"span takes one or two LOW:HIGH pairs, got {text!r}")
    return spans


def torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_model_and_tokenizer(args: argparse.Namespace, name: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The model (with provenance) and its tokenizer, from the model arguments."""
    from transformers import AutoTokenizer

    from ..hub import load_model, resolve_model

    name_or_path = name or args.model
    kwargs: dict[str, Any] = {}
    if args.gguf_file:
        kwargs["gguf_file"] = args.gguf_file
    folder, provenance = resolve_model(name_or_path, revision=args.revision)
    model, _ = load_model(
        folder,
        dtype=torch_dtype(args.dtype),
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        **kwargs,
    )
    provenance["class"] = type(model).__name__
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=args.trust_remote_code, **kwargs)
    return model, tokenizer, provenance


def check_data_options(args: argparse.Namespace) -> None:
    """The numbers of the evaluation data, before any work."""
    for option, value, low in (
        ("--max-examples", args.max_examples, 1),
        ("--max-length", args.max_length, 2),
        ("--batch-size", args.batch_size, 1),
    ):
        if value < low:
            raise ConfigError(f"`{option}` must be an integer >= {low}, got {value}.")


def check_model_options(args: argparse.Namespace) -> None:
    """The model's device, before the model is loaded."""
    from ..hub import check_device

    if args.device is not None:
        check_device(args.device, "--device")


def check_direction_options(args: argparse.Namespace) -> None:
    """The direction options, by making the config they become (its own checks name the option)."""
    from ..directions.random import RandomDirectionConfig

    RandomDirectionConfig(**direction_options(args))


def check_output_options(args: argparse.Namespace) -> None:
    """Plot formats, checkpointing and Hub options, before any work (not after the surface is saved)."""
    from ..hub import check_repo_id, clean_folder
    from ..plotting import check_formats

    if not args.no_plots:
        check_formats(args.formats, "--formats")
    if args.checkpoint_every < 1:
        raise ConfigError(f"`--checkpoint-every` must be a positive integer, got {args.checkpoint_every}.")
    if args.push_to_hub is not None:
        check_repo_id(args.push_to_hub, "--push-to-hub")
        clean_folder(args.path_in_repo, "--path-in-repo")


def read_data(args: argparse.Namespace) -> Any:
    """The evaluation data, read before the model is loaded: the text of `--text-file`, or the dataset."""
    if args.text_file:
        path = Path(args.text_file)
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
    dataset = load_text_dataset(args.dataset, args.dataset_config, args.split)
    return dataset.select(range(min(args.max_examples, dataset.num_rows)))


def build_objective(args: argparse.Namespace, tokenizer: Any, data: Any) -> Any:
    """The causal-LM objective over `data` (from `read_data`)."""
    from ..objectives.causal_lm import CausalLMObjective

    if isinstance(data, str):
        return CausalLMObjective.from_long_text(
            data,
            tokenizer,
            max_length=args.max_length,
            num_sequences=args.max_examples,
            batch_size=args.batch_size,
        )
    return CausalLMObjective(
        data, tokenizer, max_length=args.max_length, batch_size=args.batch_size, text_column=args.text_column
    )


def load_text_dataset(name_or_path: str, config: str | None, split: str) -> Any:
    """A `datasets.Dataset` from a Hub name, a local data file or a folder saved with `save_to_disk`."""
    import datasets

    path = Path(name_or_path)
    if path.is_file():
        kind = {
            ".jsonl": "json",
            ".json": "json",
            ".csv": "csv",
            ".tsv": "csv",
            ".parquet": "parquet",
            ".txt": "text",
        }.get(path.suffix.lower())
        if kind is None:
            raise ObjectiveError(f"`--dataset` file {str(path)!r} must be .json/.jsonl/.csv/.tsv/.parquet/.txt.")
        extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        return datasets.load_dataset(kind, data_files=str(path), split="train", **extra)
    if path.is_dir() and (path / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(path))
    try:
        return datasets.load_dataset(name_or_path, config, split=split)
    except Exception as err:  # datasets raises many types for a missing or unreachable dataset
        raise ObjectiveError(f"Could not load `--dataset` {name_or_path!r} (split {split!r}): {err}") from None


def direction_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "normalization": args.normalization,
        "include_1d": args.include_1d,
        "include": args.include,
        "exclude": args.exclude,
    }


def check_output_folder(args: argparse.Namespace, points: int) -> None:
    """Refuse, before any work, an --out that cannot take the output: a file, under a file, on a full disk, with a
    folder where a file goes, or holding a finished surface (unless --overwrite)."""
    from .. import io
    from ..engine import checkpoint
    from ..errors import SurfaceError
    from ..plotting import LINE_KINDS, PLANE_KINDS
    from ..surface import ARRAYS_NAME, METADATA_NAME

    plots = tuple(f"plot_{k}.{f}" for k in LINE_KINDS + PLANE_KINDS for f in getattr(args, "formats", ()) or ())
    names = (METADATA_NAME, ARRAYS_NAME, checkpoint.META_NAME, checkpoint.ARRAYS_NAME, io.LOCK_NAME, *plots)
    # The arrays (values, the partial grid) and the plots, with room to spare.
    need = 64 * points + 8 * 2**20
    io.check_output_folder(args.out, argument="--out", need_bytes=need, names=names)
    if not args.overwrite and os.path.lexists(Path(args.out) / METADATA_NAME):
        raise SurfaceError(
            f"`--out` {args.out!r} already holds a surface; choose another folder or pass `--overwrite`."
        )


@contextlib.contextmanager
def output_folder(args: argparse.Namespace, points: int) -> Iterator[None]:
    """Check `--out` (`check_output_folder`), create it, and hold its lock for the block (the main process of a
    distributed run holds it; the others write only their own partial grids). A folder created here and still
    empty when the block fails is removed again."""
    from .. import io
    from ..engine import distributed_state

    check_output_folder(args, points)
    created = io.make_output_folder(args.out, argument="--out")
    state = distributed_state()
    try:
        if state is not None and not state.is_main_process:
            yield
        else:
            with io.folder_lock(args.out, argument="--out"):
                yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()  # only if nothing was written
        raise


def grid_options(args: argparse.Namespace) -> dict[str, Any]:
    """Checkpointing into --out: running the same command again resumes an interrupted grid."""
    return {"checkpoint_dir": args.out, "checkpoint_every": args.checkpoint_every}


def write_outputs(surface: Any, args: argparse.Namespace) -> None:
    import shlex

    from ..engine import distributed_state
    from ..errors import redact
    from ..plotting import plot_names
    from ..viewer import VIEWER_NAME

    state = distributed_state()
    if state is not None and not state.is_main_process:  # every process holds the whole grid; one writes it
        return
    argv = getattr(args, "argv", None)  # recorded with any token-shaped value masked
    surface.metadata["command"] = redact(shlex.join(["hf-landscape", *argv])) if argv else None
    # One set of save options for the folder and the push: the push holds exactly the files written here.
    save = {
        "formats": () if args.no_plots else tuple(args.formats),
        "log_scale": args.log_scale,
        "viewer": not args.no_plots and has_values(surface),
    }
    surface.save_pretrained(args.out, overwrite=args.overwrite, **save)
    written = [Path(args.out) / name for name in plot_names(surface, save["formats"])]
    viewer = str(Path(args.out) / VIEWER_NAME) if save["viewer"] else None
    url = None
    if args.push_to_hub:
        url = surface.push_to_hub(
            args.push_to_hub,
            repo_type=args.repo_type,
            path_in_repo=args.path_in_repo,
            private=args.private or None,
            **save,
        )
    summary = {
        "kind": surface.kind,
        "out": args.out,
        "centre_loss": surface.centre,
        "min_loss": float(surface.values[~_isnan(surface.values)].min()) if (~_isnan(surface.values)).any() else None,
        "points": int(surface.values.size),
        "wall_time_s": surface.metadata.get("wall_time_s"),
        "plots": [str(p) for p in written],
        "viewer": viewer,
        "pushed": url,
    }
    print(json.dumps(summary, indent=2))


def has_values(surface: Any) -> bool:
    """Whether the surface has a finite loss value somewhere (else it has no viewer page: a warning says so)."""
    import logging

    from ..viewer import VIEWER_NAME

    if (~_isnan(surface.values)).any():
        return True
    logging.getLogger(__name__).warning(
        "no %s written: the loss is NaN or infinite at every point, so there is nothing to show", VIEWER_NAME
    )
    return False


def write_viewer(surface: Any, folder: str | Path, *, log_scale: bool = False) -> str | None:
    """Write the interactive viewer, `viewer.html`, into `folder` beside the plots; return its path, or None (with a
    warning) for a surface with no finite loss value, which has nothing to show."""
    import logging

    from ..errors import SurfaceError
    from ..viewer import VIEWER_NAME

    try:
        return str(surface.to_html(Path(folder) / VIEWER_NAME, log_scale=log_scale))
    except SurfaceError as err:
        logging.getLogger(__name__).warning("no %s written: %s", VIEWER_NAME, err)
        return None


def _isnan(values: Any) -> Any:
    import numpy as np

    return ~np.isfinite(values)

"""Arguments shared by the commands, their checks, loading the model, and writing the output.

Every option is checked (`check_*`), the objective is built (its data read and tokenized) and a checkpoint's head is
checked against the objective from its config, all before any weight is loaded; the output folder is checked, created
and locked (`output_folder`) before the model is loaded too, and stays locked until the surface, its plots and the
push are done. The objectives (`objectives`) and directions (`directions`) have modules of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError

DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_model_arguments(parser: argparse.ArgumentParser, *, name: str = "model") -> None:
    parser.add_argument(name, help="Hub repo id or local folder of the model (its head must fit --objective)")
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


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("running")
    group.add_argument("--threads", type=int, default=None, help="CPU threads torch uses (default: torch's choice)")
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="check every option, read the data and the model's config and tokenizer (no weights), print the plan "
        "and exit",
    )


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


def parse_span_or_auto(text: str) -> tuple[float, float] | str:
    """`auto` (the span where the loss rises by `--rise`), or `LOW:HIGH`."""
    return "auto" if text == "auto" else parse_span(text)


def parse_spans(text: str) -> list[tuple[float, float]] | str:
    """`auto` (each axis's span where the loss rises by `--rise`), `LOW:HIGH` for both axes, or
    `XLOW:XHIGH,YLOW:YHIGH`."""
    if text == "auto":
        return "auto"
    spans = [parse_span(part) for part in text.split(",")]
    if len(spans) > 2:
        raise argparse.ArgumentTypeError(f"span takes one or two LOW:HIGH pairs, got {text!r}")
    return spans


def add_rise_argument(parser: Any) -> None:
    parser.add_argument(
        "--rise",
        type=float,
        default=None,
        help="with --span auto: the loss rise at the span's edges (default 1.0, in the loss's units)",
    )


def torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


# --- checks ---------------------------------------------------------------------------------------------------------


def check_run_options(args: argparse.Namespace) -> None:
    """The numbers of the evaluation data, `--threads` and `--device`, before any work."""
    from ..hub import check_device

    for option, value, low in (
        ("--max-examples", args.max_examples, 1),
        ("--max-length", args.max_length, 2),
        ("--batch-size", args.batch_size, 1),
        ("--threads", args.threads, 1),
    ):
        if value is not None and value < low:
            raise ConfigError(f"`{option}` must be an integer >= {low}, got {value}.")
    if args.device is not None:
        check_device(args.device, "--device")


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


def public_argv(argv: list[str]) -> list[str]:
    """The command's arguments as recorded: a local absolute path (alone or after `--option=`) becomes its public
    name (a Hub cache folder its repo id, else the folder or file name)."""
    from ..provenance import public_name

    out = []
    for arg in argv:
        option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if os.path.isabs(value):
            value = str(public_name(value))
        out.append(f"{option}{eq}{value}")
    return out


# --- the model ------------------------------------------------------------------------------------------------------


def is_adapter(folder: str | Path) -> bool:
    """Whether `folder` holds a PEFT adapter (`adapter_config.json`) rather than a whole model."""
    return (Path(folder) / "adapter_config.json").is_file()


def resolve(args: argparse.Namespace, name: str, revision: str | None, *, weights: bool) -> tuple[str, dict]:
    """The local folder of a model argument and its provenance; without `weights`, only its config and tokenizer files
    are fetched from the Hub (a dry run)."""
    from ..hub import MODEL_PATTERNS, resolve_model

    patterns = MODEL_PATTERNS if weights else [p for p in MODEL_PATTERNS if p != "*.safetensors"]
    folder, provenance = resolve_model(name, revision=revision, allow_patterns=patterns)
    if args.gguf_file:
        provenance["gguf_file"] = args.gguf_file
    return folder, provenance


def _base_folder(folder: str) -> str:
    """The base model an adapter folder names (`base_model_name_or_path` in its `adapter_config.json`)."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"The adapter in {Path(folder).name!r} names no base model (`base_model_name_or_path`).")
    return str(base)


def load_config(args: argparse.Namespace, folder: str) -> Any:
    """The model's config (of the base model, for an adapter); a light read, no weights."""
    from transformers import AutoConfig

    source = _base_folder(folder) if is_adapter(folder) else folder
    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=args.trust_remote_code, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"Could not read the config of {Path(source).name!r}: {err}") from None


def check_head(config: Any, auto_class: str, name: str) -> str | None:
    """Refuse a checkpoint whose head is not the one the objective reads (from its config: nothing is loaded yet),
    naming the `--objective` that fits; return the class the model will load as."""
    from ..hub.models import check_head as check
    from ..hub.models import head_class
    from ..provenance import public_name
    from .objectives import head_names

    wanted = head_class(config, auto_class)
    check(config, wanted, f"`MODEL` {str(public_name(name))!r}", fits=head_names())
    return wanted


def load_tokenizer(args: argparse.Namespace, folder: str) -> Any:
    """The model's tokenizer (an adapter folder's own, else its base model's)."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    sources = [folder, _base_folder(folder)] if is_adapter(folder) else [folder]
    for k, source in enumerate(sources):
        try:
            return AutoTokenizer.from_pretrained(source, trust_remote_code=args.trust_remote_code, **kwargs)
        except (OSError, ValueError) as err:
            if k == len(sources) - 1:
                raise ModelError(f"Could not load the tokenizer of {Path(source).name!r}: {err}") from None
    raise AssertionError("unreachable")


def load_model(args: argparse.Namespace, folder: str, auto_class: str, provenance: dict[str, Any]) -> Any:
    """The model, loaded with the objective's auto class (a PEFT adapter with peft's), refusing fresh heads."""
    import transformers

    from ..hub import load_model as load

    kwargs: dict[str, Any] = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    if is_adapter(folder):
        try:
            import peft
        except ImportError:
            raise ModelError("`MODEL` is a PEFT adapter; install peft (`pip install peft`) to load it.") from None
        model_class = getattr(peft, auto_class.replace("AutoModel", "AutoPeftModel"))
    else:
        model_class = getattr(transformers, auto_class)
    with _transformers_progress(not getattr(args, "no_progress", False)):
        model, loaded = load(
            folder,
            model_class=model_class,
            dtype=torch_dtype(args.dtype),
            device=args.device,
            trust_remote_code=args.trust_remote_code,
            **kwargs,
        )
    provenance["class"] = loaded["class"]
    return model


@contextlib.contextmanager
def _transformers_progress(show: bool) -> Iterator[None]:
    """transformers' own progress bars (loading weights) off for the block under `--no-progress`, as they were after."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled()
    if not show:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            transformers_logging.enable_progress_bar()


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
    argv = getattr(args, "argv", None)  # recorded with any token-shaped value masked, and no local path
    surface.metadata["command"] = redact(shlex.join(["hf-landscape", *public_argv(argv)])) if argv else None
    # One set of save options for the folder and the push: the push holds exactly the files written here.
    save = {
        "formats": () if args.no_plots else tuple(args.formats),
        "log_scale": args.log_scale,
        "viewer": not args.no_plots and has_values(surface),
    }
    surface.save_pretrained(args.out, overwrite=args.overwrite, **save)
    resumed = surface.metadata.get("resumed") or {}
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
        "compute_time_s": surface.metadata.get("compute_time_s"),
        "resumed_points": resumed.get("points"),
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

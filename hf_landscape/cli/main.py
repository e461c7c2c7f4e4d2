"""`hf-landscape`: registers the subcommands and dispatches to them."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback

from ..errors import LandscapeError, redact
from ..hub.gguf import parsed_once
from .demo import demo_command, demo_command_parser
from .env import env_command, env_command_parser
from .export import export_command, export_command_parser
from .grids import (
    interpolate_command,
    interpolate_command_parser,
    line_command,
    line_command_parser,
    plane_command,
    plane_command_parser,
)
from .plot import plot_command, plot_command_parser
from .push import push_command, push_command_parser
from .space import space_command, space_command_parser
from .view import view_command, view_command_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-landscape", description="Loss landscapes of Hugging Face transformers models (Li et al. 2018)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register, run in (
        (line_command_parser, line_command),
        (plane_command_parser, plane_command),
        (interpolate_command_parser, interpolate_command),
        (plot_command_parser, plot_command),
        (push_command_parser, push_command),
        (view_command_parser, view_command),
        (space_command_parser, space_command),
        (export_command_parser, export_command),
        (demo_command_parser, demo_command),
        (env_command_parser, env_command),
    ):
        register(sub).set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in surfaces as the command that reproduces them
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # a GGUF checkpoint's config, tokenizer and weights are read from one parse of the file
    gguf = parsed_once() if getattr(args, "gguf_file", None) else contextlib.nullcontext()
    try:
        with gguf:
            return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: what was saved and how to go on, in one line
        print(f"hf-landscape {args.command}: {interrupted(args)}", file=sys.stderr)
        return 130
    except LandscapeError as err:  # bad input, or a failure the message explains: one line, no traceback
        print(f"hf-landscape {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug, or a library's own error: the traceback, with any token masked
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        print(redact(text), file=sys.stderr, end="")
        print(
            f"hf-landscape {args.command}: unexpected error: {redact(f'{type(err).__name__}: {err}')}", file=sys.stderr
        )
        return 1


def interrupted(args: argparse.Namespace) -> str:
    """The line printed on Ctrl-C: for a grid command, how many of its points are saved in `--out` (which running the
    same command again does not compute)."""
    from ..engine.checkpoint import saved_points

    total, out = getattr(args, "planned_points", None), getattr(args, "out", None)
    if total is None or out is None:
        return "interrupted."
    return f"interrupted: {saved_points(out)} of {total} points saved in {out}; run the same command to resume."


if __name__ == "__main__":
    sys.exit(main())

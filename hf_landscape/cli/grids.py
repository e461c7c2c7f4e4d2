"""`hf-landscape line | plane | interpolate`: load a model and data, evaluate, write surface + plots.

Each command checks every option, reads the evaluation data and checks, creates and locks `--out` before it
loads a model; the lock is held until the surface, its plots and the push are written.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    add_data_arguments,
    add_direction_arguments,
    add_model_arguments,
    add_output_arguments,
    add_rise_argument,
    build_objective,
    check_data_options,
    check_direction_options,
    check_model_options,
    check_output_options,
    direction_options,
    grid_options,
    load_model_and_tokenizer,
    output_folder,
    parse_span,
    parse_span_or_auto,
    parse_spans,
    read_data,
    write_outputs,
)


def _check(args: argparse.Namespace, *, directions: bool = True) -> Any:
    """Every option of a grid command, then the evaluation data (returned), before any model is loaded."""
    check_data_options(args)
    check_model_options(args)
    check_output_options(args)
    if directions:
        check_direction_options(args)
    return read_data(args)


def _probe(args: argparse.Namespace, data: Any) -> Any:
    from ..probe import LandscapeProbe

    model, tokenizer, provenance = load_model_and_tokenizer(args)
    objective = build_objective(args, tokenizer, data)
    return LandscapeProbe(
        model, objective, progress=not args.no_progress, provenance=provenance, autocast=args.autocast
    )


def line_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("line", help="loss along one random direction")
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_direction_arguments(parser)
    parser.add_argument("--steps", type=int, default=51, help="points (default 51)")
    parser.add_argument(
        "--span", type=parse_span_or_auto, default=(-1.0, 1.0), help="--span=LOW:HIGH (default -1:1) or --span auto"
    )
    add_rise_argument(parser)
    add_output_arguments(parser)
    return parser


def line_command(args: argparse.Namespace) -> int:
    from ..grid import grid_axis
    from ..slices.search import auto_span_config

    auto_span_config(args.span, args.rise)  # --rise with --span auto only, checked before any work
    x = grid_axis(args.steps, (-1.0, 1.0) if args.span == "auto" else args.span, "--steps/--span")
    data = _check(args)
    with output_folder(args, len(x)):
        probe = _probe(args, data)
        surface = probe.line(
            steps=args.steps,
            span=args.span,
            rise=args.rise,
            seed=args.seed,
            **direction_options(args),
            **grid_options(args),
        )
        write_outputs(surface, args)
    return 0


def plane_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("plane", help="loss over a plane of two random directions")
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_direction_arguments(parser)
    parser.add_argument("--orthogonalize", action="store_true", help="make the second direction orthogonal")
    parser.add_argument("--steps", type=int, nargs="+", default=[25], help="points per axis: N or NX NY (default 25)")
    parser.add_argument(
        "--span",
        type=parse_spans,
        default=[(-1.0, 1.0)],
        help="--span=LOW:HIGH, --span=XLOW:XHIGH,YLOW:YHIGH or --span auto",
    )
    add_rise_argument(parser)
    add_output_arguments(parser)
    return parser


def plane_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..grid import check_grid_size, grid_axis
    from ..slices.search import auto_span_config

    if len(args.steps) not in (1, 2):
        raise ConfigError(f"`--steps` takes one or two values, got {args.steps}.")
    steps = tuple(args.steps * 2)[:2] if len(args.steps) == 1 else tuple(args.steps)
    auto_span_config(args.span, args.rise)  # --rise with --span auto only, checked before any work
    if args.span == "auto":
        span: Any = "auto"
        x = grid_axis(steps[0], (-1.0, 1.0), "--steps (x)")
        y = grid_axis(steps[1], (-1.0, 1.0), "--steps (y)")
    else:
        span = (args.span[0], args.span[0]) if len(args.span) == 1 else tuple(args.span)
        x = grid_axis(steps[0], span[0], "--steps/--span (x)")
        y = grid_axis(steps[1], span[1], "--steps/--span (y)")
    check_grid_size(len(x) * len(y), "--steps")
    data = _check(args)
    with output_folder(args, len(x) * len(y)):
        probe = _probe(args, data)
        surface = probe.plane(
            steps=steps,
            span=span,
            rise=args.rise,
            seed=args.seed,
            orthogonalize=args.orthogonalize,
            **direction_options(args),
            **grid_options(args),
        )
        write_outputs(surface, args)
    return 0


def interpolate_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "interpolate", help="loss along the line from one checkpoint to another, or a path through several"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "other",
        nargs="+",
        help="Hub repo id or local folder of the second checkpoint; several make a path model → 1st → 2nd → ...",
    )
    parser.add_argument(
        "--other-revision",
        action="append",
        default=None,
        help="revision of the other checkpoint(s): once for all of them, or once per checkpoint in order",
    )
    add_data_arguments(parser)
    parser.add_argument("--steps", type=int, default=None, help="points (default 20 per unit of the span, plus 1)")
    parser.add_argument(
        "--span", type=parse_span, default=None, help="--span=LOW:HIGH (default -0.5:K+0.5 for K other checkpoints)"
    )
    add_output_arguments(parser)
    return parser


def interpolate_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    revisions = args.other_revision or [None]
    if len(revisions) not in (1, len(args.other)):
        raise ConfigError(
            f"`--other-revision` was given {len(revisions)} times for {len(args.other)} checkpoints; give it once "
            "for all of them or once per checkpoint."
        )
    if len(revisions) == 1:
        revisions = revisions * len(args.other)
    from ..grid import grid_axis

    span = args.span if args.span is not None else (-0.5, len(args.other) + 0.5)
    steps = args.steps if args.steps is not None else int(round(20 * (span[1] - span[0]))) + 1
    x = grid_axis(steps, span, "--steps/--span")
    data = _check(args, directions=False)
    with output_folder(args, len(x)):
        probe = _probe(args, data)
        others = []
        for name, revision in zip(args.other, revisions):
            other_args = argparse.Namespace(**{**vars(args), "revision": revision})
            other, _, _ = load_model_and_tokenizer(other_args, name=name)
            others.append(other)
        target = others[0] if len(others) == 1 else others
        surface = probe.interpolate(target, steps=args.steps, span=args.span, **grid_options(args))
        write_outputs(surface, args)
    return 0

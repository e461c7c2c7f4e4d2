"""`hf-landscape line | plane | interpolate`: load a model and data, evaluate, write surface + plots.

The three commands share one flow (`run_grid_command`): every option is checked; the objective named by `--objective`
is built (its data read and tokenized) and the checkpoint's head is checked against it from the config, before any
weight is read; `--dry-run` stops there and prints the plan. Otherwise `--out` is checked, created and locked, the
model (and for `interpolate` the other checkpoints) is loaded, the grid runs (checkpointed into `--out`, so running
the same command again resumes it), and the surface, its plots and the push are written under the lock.

A command's own options are added by its `*_command_parser`; the shared groups live in `common` (model, run, output),
`objectives` (`--objective` and the data) and `directions`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import (
    add_model_arguments,
    add_output_arguments,
    add_rise_argument,
    add_run_arguments,
    check_head,
    check_output_folder,
    check_output_options,
    check_run_options,
    grid_options,
    load_config,
    load_model,
    load_tokenizer,
    output_folder,
    parse_span,
    parse_span_or_auto,
    parse_spans,
    resolve,
    write_outputs,
)
from .directions import add_direction_arguments, describe, direction_request, seeds
from .objectives import add_objective_arguments, check_objective_options, cli_objective, fill_defaults


@dataclass
class GridPlan:
    """What a grid command will compute: its kind, the grid as the probe takes it, and how many points in all."""

    kind: str
    steps: Any
    span: Any
    points: int
    record: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """`--threads`: torch's CPU threads for the block (given back afterwards)."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_grid_command(args: argparse.Namespace, plan: GridPlan, evaluate: Callable[..., Any]) -> int:
    """Check, build the objective, check the head, then print the plan (`--dry-run`) or evaluate
    (`evaluate(probe, args, others)`) and write the outputs."""
    from ..grid import check_grid_size
    from ..probe import LandscapeProbe

    entry = cli_objective(args.objective)
    check_objective_options(args, entry)
    fill_defaults(args, entry)
    check_run_options(args)
    check_output_options(args)
    request = direction_request(args) if plan.kind != "interpolation" else None
    seed = seeds(args) if plan.kind != "interpolation" else None
    draws = len(seed) if isinstance(seed, list) else 1
    total = plan.points * draws
    check_grid_size(total, "--steps x --seed")
    args.planned_points = total  # for the line printed when interrupted
    data = entry.read(args)  # bad data are refused before any model is resolved
    with threads(args.threads):
        if args.dry_run:
            check_output_folder(args, total)
            _, _, loads_as, _, objective = prepare(args, entry, data, weights=False)
            print(json.dumps(dry_run_plan(args, plan, entry, objective, loads_as, request, seed, total), indent=2))
            return 0
        with output_folder(args, total):  # created and locked before any model is read
            folder, provenance, _, others, objective = prepare(args, entry, data, weights=True)
            model = load_model(args, folder, entry.auto_class, provenance)
            probe = LandscapeProbe(
                model, objective, progress=not args.no_progress, provenance=provenance, autocast=args.autocast
            )
            loaded = [load_model(args, f, entry.auto_class, dict(p)) for _, f, p in others]
            surface = evaluate(probe, plan, request, seed, loaded)
            write_outputs(surface, args)
    return 0


def prepare(args: argparse.Namespace, entry: Any, data: Any, *, weights: bool) -> tuple[Any, ...]:
    """Resolve the model (and the other checkpoints), check their heads against the objective from their configs,
    and build the objective (reading the data): everything before the weights. Without `weights`, only configs and
    tokenizers are fetched from the Hub."""
    folder, provenance = resolve(args, args.model, args.revision, weights=weights)
    loads_as = check_head(load_config(args, folder), entry.auto_class, args.model)
    others = [
        (name, *resolve(args, name, revision, weights=weights))
        for name, revision in zip(getattr(args, "other", []), getattr(args, "other_revisions", []))
    ]
    for name, other_folder, _ in others:
        check_head(load_config(args, other_folder), entry.auto_class, name)
    objective = entry.build(args, load_tokenizer(args, folder), data)
    return folder, provenance, loads_as, others, objective


def dry_run_plan(
    args: argparse.Namespace,
    plan: GridPlan,
    entry: Any,
    objective: Any,
    loads_as: str | None,
    request: tuple[str, dict[str, Any]] | None,
    seed: Any,
    total: int,
) -> dict[str, Any]:
    described = objective.describe()
    data = {k: described[k] for k in ("num_examples", "num_tokens", "source", "metrics", "loss") if k in described}
    return {
        "dry_run": True,
        "command": args.command,
        "model": args.model,
        "loads_as": loads_as,
        "others": list(getattr(args, "other", [])),
        "objective": {"name": entry.name, "type": described.get("type"), **data},
        "directions": None if request is None else describe(*request),
        "seed": seed,
        "grid": {"steps": plan.record.get("steps"), "span": plan.record.get("span")},
        "points": total,
        "out": args.out,
    }


def _add_grid_command(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help)
    add_model_arguments(parser)
    return parser


def _add_shared(parser: argparse.ArgumentParser, *, directions: bool, plane: bool = False) -> None:
    add_objective_arguments(parser)
    if directions:
        add_direction_arguments(parser, plane=plane)
    add_output_arguments(parser)
    add_run_arguments(parser)


# --- line -----------------------------------------------------------------------------------------------------------


def line_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_grid_command(subparsers, "line", "loss along one direction")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--steps", type=int, default=51, help="points (default 51)")
    grid.add_argument(
        "--span",
        type=parse_span_or_auto,
        default=None,
        help="--span=LOW:HIGH (default: the direction kind's, -1:1 for random) or --span auto (see --rise)",
    )
    add_rise_argument(grid)
    _add_shared(parser, directions=True)
    return parser


def _draw(probe: Any, kind: str, request: tuple[str, dict[str, Any]], seed: Any, plan: GridPlan, args: Any) -> Any:
    name, options = request
    spelling = "direction" if kind == "line" else "directions"
    method = probe.line if kind == "line" else probe.plane
    grid = {"steps": plan.steps, "span": plan.span, "rise": args.rise, "seed": seed}
    return method(**grid, **{spelling: name}, **options, **grid_options(args))


def line_command(args: argparse.Namespace) -> int:
    from ..directions.registry import default_span
    from ..grid import grid_axis
    from ..slices.search import auto_span_config

    auto = auto_span_config(args.span, args.rise)  # --rise with --span auto only, checked before any work
    span = args.span if args.span is not None else default_span(args.directions)
    x = grid_axis(args.steps, (-1.0, 1.0) if auto else span, "--steps/--span")
    record = {"steps": [args.steps], "span": "auto" if auto else [list(span)]}
    plan = GridPlan("line", args.steps, span, len(x), record)
    return run_grid_command(args, plan, lambda probe, p, r, s, _: _draw(probe, "line", r, s, p, args))


# --- plane ----------------------------------------------------------------------------------------------------------


def plane_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_grid_command(subparsers, "plane", "loss over a plane of two directions")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--steps", type=int, nargs="+", default=[25], help="points per axis: N or NX NY (default 25)")
    grid.add_argument(
        "--span",
        type=parse_spans,
        default=None,
        help="--span=LOW:HIGH, --span=XLOW:XHIGH,YLOW:YHIGH (default: the direction kind's, -1:1 for random) or "
        "--span auto (see --rise)",
    )
    add_rise_argument(grid)
    _add_shared(parser, directions=True, plane=True)
    return parser


def plane_command(args: argparse.Namespace) -> int:
    from ..directions.registry import default_span
    from ..errors import ConfigError
    from ..grid import grid_axis

    if len(args.steps) not in (1, 2):
        raise ConfigError(f"`--steps` takes one or two values, got {args.steps}.")
    steps = tuple(args.steps * 2)[:2] if len(args.steps) == 1 else tuple(args.steps)
    from ..slices.search import auto_span_config

    auto = auto_span_config(args.span, args.rise)  # --rise with --span auto only, checked before any work
    if auto:
        span: Any = "auto"
        x = grid_axis(steps[0], (-1.0, 1.0), "--steps (x)")
        y = grid_axis(steps[1], (-1.0, 1.0), "--steps (y)")
    else:
        spans = args.span if args.span is not None else [default_span(args.directions)]
        span = (spans[0], spans[0]) if len(spans) == 1 else tuple(spans)
        x = grid_axis(steps[0], span[0], "--steps/--span (x)")
        y = grid_axis(steps[1], span[1], "--steps/--span (y)")
    record = {"steps": list(steps), "span": "auto" if auto else [list(s) for s in span]}
    plan = GridPlan("plane", steps, span, len(x) * len(y), record)
    return run_grid_command(args, plan, lambda probe, p, r, s, _: _draw(probe, "plane", r, s, p, args))


# --- interpolate ----------------------------------------------------------------------------------------------------


def interpolate_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = _add_grid_command(
        subparsers, "interpolate", "loss along the line from one checkpoint to another, or a path through several"
    )
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
    grid = parser.add_argument_group("grid")
    grid.add_argument("--steps", type=int, default=None, help="points (default 20 per unit of the span, plus 1)")
    grid.add_argument(
        "--span", type=parse_span, default=None, help="--span=LOW:HIGH (default -0.5:K+0.5 for K other checkpoints)"
    )
    _add_shared(parser, directions=False)
    return parser


def interpolate_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..grid import grid_axis

    revisions = args.other_revision or [None]
    if len(revisions) not in (1, len(args.other)):
        raise ConfigError(
            f"`--other-revision` was given {len(revisions)} times for {len(args.other)} checkpoints; give it once "
            "for all of them or once per checkpoint."
        )
    args.other_revisions = revisions * len(args.other) if len(revisions) == 1 else revisions
    span = args.span if args.span is not None else (-0.5, len(args.other) + 0.5)
    steps = args.steps if args.steps is not None else int(round(20 * (span[1] - span[0]))) + 1
    x = grid_axis(steps, span, "--steps/--span")
    plan = GridPlan("interpolation", steps, span, len(x), {"steps": [steps], "span": [list(span)]})

    def evaluate(probe: Any, p: GridPlan, request: Any, seed: Any, others: list[Any]) -> Any:
        target = others[0] if len(others) == 1 else others
        return probe.interpolate(target, steps=p.steps, span=p.span, **grid_options(args))

    return run_grid_command(args, plan, evaluate)

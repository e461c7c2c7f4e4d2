"""`hf-landscape plot`: draw saved surfaces (one, or several side by side on shared limits)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def plot_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("plot", help="plot saved surfaces")
    parser.add_argument("surfaces", nargs="+", help="surface folders or Hub repo ids; several are drawn side by side")
    parser.add_argument("--kind", default=None, help="curve (lines); contour, heatmap or surface (planes)")
    parser.add_argument("--out", required=True, help="output file (.png/.pdf/.svg)")
    parser.add_argument("--log-scale", action="store_true", help="plot log10 of the values")
    parser.add_argument("--metric", default=None, help="plot this metric instead of the loss")
    parser.add_argument(
        "--limits",
        choices=["auto", "shared", "independent"],
        default="auto",
        help="several surfaces: one colour range and bar (shared) or one per panel (independent); auto (default) "
        "shares them for surfaces of one kind and one model",
    )
    return parser


def plot_command(args: argparse.Namespace) -> int:
    from .. import io
    from ..errors import ConfigError
    from ..plotting import FORMATS, plot_comparison
    from ..surface import Surface

    out = Path(args.out)
    if out.suffix.lstrip(".") not in FORMATS:
        raise ConfigError(f"`--out` must end in one of {['.' + f for f in FORMATS]}, got {str(out)!r}.")
    surfaces = {name: Surface.from_pretrained(name) for name in args.surfaces}
    if len(surfaces) == 1:
        fig = next(iter(surfaces.values())).plot(kind=args.kind, log_scale=args.log_scale, metric=args.metric)
    else:
        shared = {"auto": None, "shared": True, "independent": False}[args.limits]
        fig = plot_comparison(surfaces, args.kind, log_scale=args.log_scale, metric=args.metric, shared_limits=shared)
    out.parent.mkdir(parents=True, exist_ok=True)
    io.save_figure(out, fig)
    print(out)
    return 0

"""`hf-landscape export`: write a saved surface in the formats other tools open (.parquet, .csv, .glb, .vtp, .h5)."""

from __future__ import annotations

import argparse
from typing import Any


def export_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="write a saved surface as .parquet, .csv, .glb (mesh), .vtp (ParaView) or .h5 (Li et al.)"
    )
    parser.add_argument("surface", metavar="OUT", help="a surface folder, a Hub repo id, or Li et al.'s .h5 file")
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to write; the suffix of each names its format")
    parser.add_argument(
        "--loss", default="train_loss", help="the dataset of Li et al.'s .h5 to read as the loss (default train_loss)"
    )
    return parser


def export_command(args: argparse.Namespace) -> int:
    from ..export import check_has_values, export_format
    from .view import load_surface

    formats = [export_format(path) for path in args.files]  # every suffix is checked before anything is read
    surface = load_surface(args.surface, loss=args.loss)
    check_has_values(surface)
    for path, fmt in zip(args.files, formats):
        if fmt.planes_only and surface.ndim != 2:
            from ..errors import SurfaceError

            raise SurfaceError(f"{path!r}: {fmt.suffix} holds planes only, and {args.surface!r} is a {surface.kind}.")
    for path in args.files:
        print(surface.export(path))
    return 0

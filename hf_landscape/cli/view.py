"""`hf-landscape view`: the interactive viewer (one self-contained HTML file) of saved surfaces.

One surface folder gives its viewer; a folder saved by `CompareReport.save_pretrained` gives the comparison page;
several surface folders (or a folder of surface folders) give a comparison page of those surfaces, labelled by their
folder names. Li et al.'s `.h5` surface files are read too (`Surface.from_li2018_h5`), so their results open beside
ours, and Hub repos holding surfaces (`user/name`, `user/name/folder`): `hf_landscape.hub.load_landscape`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def view_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("view", help="write the interactive HTML viewer of saved surfaces")
    parser.add_argument(
        "surfaces",
        nargs="+",
        metavar="OUT",
        help="surface folders, Hub repo ids or Li et al.'s .h5 files (several make a comparison page), or a saved "
        "comparison folder",
    )
    parser.add_argument(
        "--html", default=None, help="the HTML file to write (default: viewer.html inside a single local OUT)"
    )
    parser.add_argument("--log-scale", action="store_true", help="open the page showing log10 of the values")
    parser.add_argument("--title", default=None, help="page title (default: from the model names)")
    parser.add_argument(
        "--loss",
        default="train_loss",
        help="the dataset of Li et al.'s .h5 files to read as the loss (default train_loss)",
    )
    return parser


def view_command(args: argparse.Namespace) -> int:
    from ..comparison import CompareReport
    from ..errors import ConfigError
    from ..hub.sources import load_landscape
    from ..viewer import VIEWER_NAME, check_html_path, write_compare_html, write_surface_html

    if args.html is None:
        if not (len(args.surfaces) == 1 and Path(args.surfaces[0]).is_dir()):
            raise ConfigError(
                "`--html` is needed unless OUT is one local surface folder (it defaults to OUT/viewer.html); e.g. "
                "`--html compare.html`."
            )
        args.html = str(Path(args.surfaces[0]) / VIEWER_NAME)
    check_html_path(args.html)  # before any surface is loaded
    view = load_landscape(args.surfaces, loss=args.loss).view
    if isinstance(view, CompareReport):
        path = write_compare_html(view, args.html, title=args.title, log_scale=args.log_scale)
    else:
        path = write_surface_html(view, args.html, title=args.title, log_scale=args.log_scale)
    print(path)
    return 0


def load_surface(name: str, *, loss: str = "train_loss") -> Any:
    """A surface from a folder or Hub repo id, or from one of Li et al.'s `.h5` files (read with `loss` as the loss)."""
    from ..surface import Surface

    path = Path(name)
    if path.suffix.lower() in (".h5", ".hdf5") and path.is_file():
        return Surface.from_li2018_h5(path, loss=loss)
    return Surface.from_pretrained(name)


def labels(names: list[str]) -> list[str]:
    """A distinct label per surface, from its folder or file name (or repo id): `hub.sources.distinct_labels`."""
    from ..hub.sources import distinct_labels

    return distinct_labels(names)

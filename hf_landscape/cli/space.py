"""`hf-landscape space SPACE_ID OUT|REPO [OUT|REPO ...]`: publish the viewer as a static Space, one URL to link.

Each OUT is a local surface folder, a saved comparison, a folder of surface folders or one of Li et al.'s `.h5` files;
each REPO a Hub dataset or model repo holding surfaces (`user/name`, or `user/name/folder` for one folder of it). One
surface gives its page, several the comparison page (`hf_landscape.hub.publish_space`).
"""

from __future__ import annotations

import argparse
from typing import Any


def space_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "space", help="publish the interactive viewer of surfaces as a static Hugging Face Space"
    )
    parser.add_argument("space_id", metavar="SPACE_ID", help="the Space, user/name (created static if needed)")
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="OUT|REPO",
        help="surface folders, saved comparisons, Li et al.'s .h5 files, or Hub dataset/model repos holding surfaces "
        "(user/name, or user/name/folder); several make a comparison page",
    )
    parser.add_argument("--title", default=None, help="page title (default: from the model names)")
    parser.add_argument("--log-scale", action="store_true", help="open the page showing log10 of the values")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--loss", default="train_loss", help="the dataset of Li et al.'s .h5 files to read as the loss")
    return parser


def space_command(args: argparse.Namespace) -> int:
    from ..hub.sources import load_landscape
    from ..hub.space import check_space_id, publish_space

    space_id = check_space_id(args.space_id, "SPACE_ID")  # before any surface is read
    landscape = load_landscape(args.sources, loss=args.loss, argument="OUT|REPO")
    url = publish_space(
        space_id,
        landscape.view,
        private=args.private or None,
        title=args.title,
        log_scale=args.log_scale,
        sources=landscape.repos,
        commit_message=args.commit_message,
    )
    print(url)
    return 0

"""`hf-landscape push OUT_DIR user/repo`: publish saved surfaces with their plots, viewer pages and card.

A new repo is a dataset repo (one Parquet table per surface, which the Hub's Dataset Viewer shows); `--repo-type
model` pushes into a model repo instead (e.g. the model's own); an existing repo keeps its type."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def push_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "push", help="push saved surfaces (with plots, viewer pages and a card) to a Hub dataset or model repo"
    )
    parser.add_argument("folder", help="a surface folder, or a folder whose subfolders hold surfaces")
    parser.add_argument("repo_id", help="Hub repo id, user/name (created if needed)")
    parser.add_argument(
        "--repo-type",
        choices=["dataset", "model"],
        default=None,
        help="dataset: tables the Dataset Viewer shows; model: e.g. the model's own repo (default: the existing "
        "repo's type, a dataset for a new repo)",
    )
    parser.add_argument("--path-in-repo", default="", help="folder in the repo for a single surface (default: root)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to commit to")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument(
        "--formats", nargs="+", default=["png"], help="plot formats pushed with each surface: png pdf svg"
    )
    parser.add_argument("--log-scale", action="store_true", help="plot log10 of the loss")
    return parser


def push_command(args: argparse.Namespace) -> int:
    from ..errors import SurfaceError
    from ..hub import push_surfaces
    from ..plotting import check_formats
    from ..surface import METADATA_NAME, Surface

    formats = check_formats(args.formats, "--formats")
    root = Path(args.folder)
    if (root / METADATA_NAME).is_file():
        surfaces = {args.path_in_repo: Surface.from_pretrained(root)}
    else:
        found = sorted(p.parent for p in root.glob(f"*/{METADATA_NAME}")) if root.is_dir() else []
        if not found:
            raise SurfaceError(f"`folder` {str(root)!r} holds no surface (no {METADATA_NAME} in it or its subfolders).")
        prefix = args.path_in_repo.strip("/")
        surfaces = {"/".join(filter(None, [prefix, p.name])): Surface.from_pretrained(p) for p in found}
    url = push_surfaces(
        surfaces,
        args.repo_id,
        repo_type=args.repo_type,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        formats=formats,
        log_scale=args.log_scale,
    )
    print(url)
    return 0

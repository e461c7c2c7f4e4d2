"""The command that makes a surface again, written from its metadata (the card's Reproduce section).

The subcommand is the one that exists for its kind (`line`, `plane`, `interpolate` with every model of the path), the
objective's options come from its `--objective` entry (`cli.objectives`), the directions' from `cli.directions` (a
LoRA plane as a LoRA plane, with its rank and target modules), the grid, seeds, dtype and autocast from the record.
Models and files are named as the metadata names them (a Hub repo id at its commit, else a folder or file name, never a
local path). What the command line cannot express (directions given in Python, an objective it does not build, data
given in memory) is said in the notes, and a placeholder stands for data that were not a named file.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from .directions import reproduce_directions
from .objectives import for_objective_type

SUBCOMMANDS = {"line": "line", "plane": "plane", "interpolation": "interpolate"}


def _pair(span: Any) -> str:
    lo, hi = span
    return f"{float(lo):g}:{float(hi):g}"


def _model(model: Mapping[str, Any]) -> list[str]:
    out = [str(model.get("name_or_path") or "MODEL")]
    if model.get("commit_sha"):
        out += ["--revision", str(model["commit_sha"])]
    elif model.get("revision"):
        out += ["--revision", str(model["revision"])]
    if model.get("gguf_file"):
        out += ["--gguf-file", str(model["gguf_file"])]
    dtype = model.get("dtype")
    if dtype and dtype != "float32":
        out += ["--dtype", str(dtype)]
    return out


def command_for(metadata: Mapping[str, Any]) -> tuple[list[str] | None, list[str]]:
    """(argv of `hf-landscape`, notes) that make the surface of `metadata` again; argv is None when the command line
    cannot make it (the notes say why)."""
    kind = metadata.get("kind")
    if metadata.get("trajectory"):
        return None, ["a training path's PCA plane is made with `LandscapeProbe.trajectory_plane` (Python API)"]
    sub = SUBCOMMANDS.get(str(kind))
    if sub is None:
        return None, [f"a {kind} surface has no command"]
    objective = metadata.get("objective") or {}
    entry = for_objective_type(objective.get("type"))
    if entry is None:
        return None, [f"the objective {objective.get('type')} is not built by the command line (Python API)"]
    notes: list[str] = []
    argv = [sub, *_model(metadata.get("model") or {})]
    if kind == "interpolation":
        models = ((metadata.get("path") or {}).get("models") or [])[1:]
        if not models and metadata.get("other_model"):
            models = [metadata["other_model"]]
        argv += [str(m.get("name_or_path") or "OTHER_MODEL") for m in models]
        shas = [m.get("commit_sha") for m in models]
        if models and all(shas):
            for sha in shas:
                argv += ["--other-revision", str(sha)]
    options, objective_notes = entry.reproduce(objective)
    argv += options
    notes += objective_notes
    if kind != "interpolation":
        directions, direction_notes = reproduce_directions(metadata.get("directions") or [])
        notes += direction_notes
        if directions is None:
            return None, notes
        argv += directions
        seeds = metadata.get("seeds") or ([metadata["seed"]] if metadata.get("seed") is not None else [])
        if seeds and seeds != [0]:
            argv += ["--seed", *map(str, seeds)]
    grid = metadata.get("grid") or {}
    if grid.get("steps"):
        argv += ["--steps", *map(str, grid["steps"])]
    if grid.get("span"):
        argv.append("--span=" + ",".join(_pair(p) for p in grid["span"]))
    if metadata.get("autocast"):
        argv += ["--autocast", str(metadata["autocast"])]
    argv += ["--out", "out"]
    return argv, notes


def reproduce_command(metadata: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """`command_for` as one shell line (`hf-landscape ...`), or None, with the notes."""
    argv, notes = command_for(metadata)
    return (None if argv is None else shlex.join(["hf-landscape", *argv])), notes

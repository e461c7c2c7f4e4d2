"""Provenance: what a surface records about how it was made (model, objective, directions, grid, versions, time).

Every surface a probe makes carries `surface_metadata(...)` in `Surface.metadata`, saved as JSON beside its arrays,
so a file says which commit of which model was probed on which tokens along which directions, by which versions.

What is recorded is portable: no absolute local path. A model, tokenizer or file loaded from this machine is named by
its Hub repo id when that is known (a folder of the Hugging Face cache, `.../models--org--name/snapshots/<sha>`, is
`org/name` at that commit) and else by its folder or file name (`public_name`), so a surface folder can be pushed,
uploaded or shared as it is.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LIBRARIES = ("hf_landscape", "torch", "transformers", "huggingface_hub", "safetensors", "numpy")

# A snapshot folder of the Hugging Face cache: `models--{org}--{name}/snapshots/{commit}` (datasets alike).
_CACHE = re.compile(r"(?:^|/)(models|datasets|spaces)--(?P<repo>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})(?:/|$)")


def cache_repo(name_or_path: Any) -> tuple[str, str] | None:
    """(repo id, commit sha) when `name_or_path` lies in a snapshot folder of the Hugging Face cache, else None.

    Example:
    ```python
    >>> cache_repo("/home/user/.cache/huggingface/hub/models--org--tiny/snapshots/" + "a" * 40)
    ('org/tiny', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')

    ```
    """
    match = _CACHE.search(str(name_or_path).replace(os.sep, "/"))
    if match is None:
        return None
    return match.group("repo").replace("--", "/"), match.group("sha")


def public_name(name_or_path: Any) -> Any:
    """How a model, tokenizer or file is named in what a surface records: a Hub repo id (or any name that is not a
    local path) as it is; a folder of the Hugging Face cache as its repo id; any other local path by its last part
    (the folder or file name). None stays None.

    Example:
    ```python
    >>> public_name("org/tiny"), public_name("/data/runs/checkpoint-500"), public_name("/tmp/book.txt")
    ('org/tiny', 'checkpoint-500', 'book.txt')

    ```
    """
    if name_or_path is None or not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        return name_or_path
    text = str(name_or_path)
    cached = cache_repo(text)
    if cached is not None:
        return cached[0]
    path = Path(text)
    if path.is_absolute() or text.startswith(("./", "../", "~")) or path.exists():
        return path.resolve().name if path.name in ("", ".", "..") else path.name
    return text


def public_model(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A model's provenance as recorded: its `name_or_path` public (`public_name`), the commit of a cache folder
    filled in, and no local path."""
    out = {k: v for k, v in provenance.items() if k != "local_path"}
    name = out.get("name_or_path")
    cached = cache_repo(name) if name else None
    if cached is not None and not out.get("commit_sha"):
        out["commit_sha"] = cached[1]
    out["name_or_path"] = public_name(name)
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries a surface depends on, for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def surface_metadata(
    kind: str,
    runner: Any,
    provenance: Mapping[str, Any],
    *,
    directions: Sequence[Any],
    seed: int | None,
    grid: dict[str, Any],
    wall: float,
    compute: float | None = None,
    resumed: int = 0,
) -> dict[str, Any]:
    """The metadata of a surface of `kind` ("line", "plane", "interpolation") that `runner` (an `engine.GridRunner`)
    computed: the model (`provenance` and what it is), the objective's `describe()`, the autocast dtype, each
    direction's config, the seed (None when a direction was not drawn from it), the grid, the wall time of this run
    and the compute time of every run (`compute`; a grid resumed from a partial one adds the earlier runs'), the
    points taken from a partial grid (`resumed`: `{"points": n}`, None when nothing was resumed), the processes and
    the library versions."""
    model, objective = runner.model, runner.objective
    first = next(model.parameters())
    return {
        "kind": kind,
        "model": {
            **public_model(provenance),
            "class": type(model).__name__,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(first.dtype).replace("torch.", ""),
            "device": str(first.device),
        },
        "objective": objective.describe(),
        "autocast": runner.config.autocast,
        "directions": [d.config for d in directions],
        # user-given directions were not drawn from `seed`
        "seed": seed if directions and all("seed" in d.config for d in directions) else None,
        "grid": grid,
        "wall_time_s": round(wall, 3),
        "compute_time_s": round(wall if compute is None else compute, 3),
        "resumed": {"points": int(resumed)} if resumed else None,
        "processes": runner.num_processes,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }


def path_metadata(provenance: Mapping[str, Any], model: Any, others: Sequence[Any]) -> dict[str, Any]:
    """What an interpolation's metadata adds: the last model (`other_model`) and the path's knots and models."""
    described = [
        {**public_model({"name_or_path": getattr(other, "name_or_path", "") or None}), "class": type(other).__name__}
        for other in others
    ]
    first = {**public_model(provenance), "class": type(model).__name__}
    return {
        "other_model": described[-1],
        "path": {"knots": list(range(len(others) + 1)), "models": [first, *described]},
    }

"""Provenance: what a surface records about how it was made (model, objective, directions, grid, versions, time).

Every surface a probe makes carries `surface_metadata(...)` in `Surface.metadata`, saved as JSON beside its arrays,
so a file says which commit of which model was probed on which tokens along which directions, by which versions.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

LIBRARIES = ("hf_landscape", "torch", "transformers", "huggingface_hub", "safetensors", "numpy")


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
) -> dict[str, Any]:
    """The metadata of a surface of `kind` ("line", "plane", "interpolation") that `runner` (an `engine.GridRunner`)
    computed: the model (`provenance` and what it is), the objective's `describe()`, the autocast dtype, each
    direction's config, the seed (None when a direction was not drawn from it), the grid, the wall time, the
    processes and the library versions."""
    model, objective = runner.model, runner.objective
    first = next(model.parameters())
    return {
        "kind": kind,
        "model": {
            **provenance,
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
        "processes": runner.num_processes,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }


def path_metadata(provenance: Mapping[str, Any], model: Any, others: Sequence[Any]) -> dict[str, Any]:
    """What an interpolation's metadata adds: the last model (`other_model`) and the path's knots and models."""
    described = [
        {"name_or_path": getattr(other, "name_or_path", "") or None, "class": type(other).__name__} for other in others
    ]
    first = {"name_or_path": provenance.get("name_or_path"), "class": type(model).__name__}
    return {
        "other_model": described[-1],
        "path": {"knots": list(range(len(others) + 1)), "models": [first, *described]},
    }

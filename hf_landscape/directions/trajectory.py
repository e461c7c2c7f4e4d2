"""Trajectory directions: the PCA of a training run's snapshots around its final weights (Li et al. 2018, §7).

Given snapshots θ_0 … θ_T written by `LandscapeCallback` and a reference θ_n (the final weights), the
directions are the top principal components of the differences d_i = θ_i − θ_n, and each snapshot's
coordinates in the plane are ⟨d_i, c_k⟩, so the optimization path can be drawn over the loss surface of
`probe.plane(directions=...)` around θ_n.

Centering: by default the differences are *not* centered, i.e. the components are the top right singular
vectors of the matrix M whose rows are d_i, as §7 of the paper describes ("PCA of M"); the plane then holds
the direction in which training moved. `center=True` subtracts the mean difference first, which is what the
authors' released code does (it fits `sklearn.decomposition.PCA`, which centers). Coordinates are the
projections of the uncentered d_i either way, as in their `project_trajectory`.

Memory: the T × P matrix M is never formed. The T × T Gram matrix G = M Mᵀ is accumulated by streaming
slices of every parameter from the snapshot files (safetensors, memory-mapped), at most `chunk_elements`
numbers at a time; G = U Λ Uᵀ gives the components c_k = Mᵀ u_k / √λ_k (exact PCA, as the SVD of M), which a
second streaming pass builds. Memory is T² plus the components plus one chunk.

What does not live here: writing snapshots (`callbacks.py`), evaluating the plane (`probe.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import check_patterns
from ..errors import ConfigError, DirectionError
from .base import Direction

logger = logging.getLogger(__name__)

INDEX_NAME = "trajectory.json"
FORMAT = "hf_landscape.trajectory"


def read_trajectory(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The index (`trajectory.json`) of a run folder written by `LandscapeCallback`, checked against its files.

    Example:
    ```python
    >>> import json, pathlib, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from hf_landscape.directions.trajectory import read_trajectory
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> save_file({"w": torch.zeros(2)}, str(run / "step_00000000.safetensors"))
    >>> _ = (run / "trajectory.json").write_text(json.dumps({"format": "hf_landscape.trajectory",
    ...     "snapshots": [{"step": 0, "file": "step_00000000.safetensors"}]}))
    >>> [s["step"] for s in read_trajectory(run)["snapshots"]]
    [0]

    ```
    """
    folder = Path(run_dir)
    index = folder / INDEX_NAME
    if not index.is_file():
        raise DirectionError(
            f"`run_dir` {str(folder)!r} holds no {INDEX_NAME}; pass the `save_dir` of a `LandscapeCallback` run."
        )
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise DirectionError(f"{str(index)!r} is not readable JSON ({err}).") from None
    data = checked_index(folder, data)
    for entry in data["snapshots"]:
        if not (folder / entry["file"]).is_file():
            raise DirectionError(
                f"the snapshot of step {entry['step']} ({entry['file']}) is missing from {str(folder)!r}."
            )
    return data


def checked_index(folder: Path, data: Any, error: type[Exception] = DirectionError) -> dict[str, Any]:
    """A trajectory index (the parsed `trajectory.json` of `folder`) checked to be what `LandscapeCallback` writes,
    its snapshots sorted by step: each entry an integer `step` and a `file` inside `folder` (no `..`, no absolute
    path, no link out of it), so nothing outside the run folder is ever read or removed.

    Raises:
        `error`: naming the index, the bad entry and the fix.
    """
    index = folder / INDEX_NAME
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("snapshots"), list):
        raise error(f"{str(index)!r} is not an hf_landscape trajectory index.")
    root = folder.resolve()
    for k, entry in enumerate(data["snapshots"]):
        step = entry.get("step") if isinstance(entry, dict) else None
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(name, str) or not name:
            raise error(
                f"{str(index)!r} is damaged: snapshot entry {k} ({entry!r:.80}) needs an integer `step` and a `file` "
                "name; run the training with `LandscapeCallback` again, or fix the entry."
            )
        path = Path(name)
        inside = not path.is_absolute() and ".." not in path.parts and (root / path).resolve().parent == root
        if not inside:
            raise error(
                f"{str(index)!r} names the snapshot {name!r} (step {step}), outside the run folder {str(folder)!r}; "
                "snapshots are read (and replaced) only inside it: move the file into the run folder."
            )
    data = dict(data)
    data["snapshots"] = sorted(data["snapshots"], key=lambda e: e["step"])
    return data


def load_snapshot(run_dir: str | os.PathLike, step: int) -> dict[str, torch.Tensor]:
    """The parameters saved at `step` (name -> CPU tensor)."""
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / _entry(read_trajectory(run_dir), step)["file"]))


def _entry(index: dict[str, Any], step: int) -> dict[str, Any]:
    for entry in index["snapshots"]:
        if int(entry["step"]) == step:
            return entry
    raise ConfigError(f"`steps` holds {step!r}, which the run did not save; it saved {_steps(index)}.")


def _steps(index: dict[str, Any]) -> list[int]:
    return [int(e["step"]) for e in index["snapshots"]]


def _chosen_steps(index: dict[str, Any], steps: Sequence[int] | None) -> list[int]:
    if steps is None:
        return _steps(index)
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise ConfigError(f"`steps` must be a list of saved steps, got {steps!r}.")
    chosen = sorted({int(s) for s in steps})
    for s in chosen:
        _entry(index, s)
    return chosen


def trajectory_directions(
    run_dir: str | os.PathLike,
    final: Any = None,
    *,
    n_components: int = 2,
    steps: Sequence[int] | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    include_1d: bool = False,
    center: bool = False,
    chunk_elements: int = 1 << 24,
    progress: bool = False,
) -> tuple[list[Direction], dict[str, Any]]:
    """Principal directions of a training path around its final weights, and the path's coordinates.

    Args:
        run_dir: a `LandscapeCallback` folder.
        final: θ_n, the centre: a model (its current weights; typically the trained model the plane is drawn
            around), a name -> tensor mapping, or None for the run's last snapshot (which then is not a row of M).
        n_components: how many directions (2 for a plane).
        steps: the snapshots to use (default all).
        include, exclude: regular expressions on parameter names; only parameters in every snapshot count.
        include_1d: use biases and norm weights too (off by default, as for random directions and in Li et al.).
        center: subtract the mean difference before the PCA (see the module docstring).
        chunk_elements: at most this many numbers (float64) are read at once from the snapshots.
        progress: tqdm progress bar over parameters.

    Returns:
        `(directions, info)`: unit-norm, mutually orthogonal `Direction`s (config kind `"trajectory"`), and a
        JSON-able dict with `steps`, `coordinates` (one `[x, y, ...]` per step, ⟨θ_i − θ_n, c_k⟩; the centre
        is at 0), `explained_variance_ratio`, `singular_values`, `center`, `pca_steps` (the rows of M),
        `final`, `num_parameters`, `run_dir` and the run's logged `train_losses`.
        Each component's sign is chosen so that the earliest snapshot has a positive coordinate.

    Example:
    ```python
    >>> import json, pathlib, tempfile, torch
    >>> from safetensors.torch import save_file
    >>> from hf_landscape.directions.trajectory import trajectory_directions
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> points = [[4.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    >>> for step, w in enumerate(points):
    ...     save_file({"w": torch.tensor([w])}, str(run / f"step_{step:08d}.safetensors"))
    >>> _ = (run / "trajectory.json").write_text(json.dumps({"format": "hf_landscape.trajectory",
    ...     "snapshots": [{"step": s, "file": f"step_{s:08d}.safetensors"} for s in range(3)]}))
    >>> dirs, info = trajectory_directions(run, n_components=2)
    >>> len(info["coordinates"]), info["coordinates"][-1]
    (3, [0.0, 0.0])

    ```
    """
    if not isinstance(n_components, int) or isinstance(n_components, bool) or n_components < 1:
        raise ConfigError(f"`n_components` must be an integer >= 1, got {n_components!r}.")
    for name, value in (("include_1d", include_1d), ("center", center)):
        if not isinstance(value, bool):
            raise ConfigError(f"`{name}` must be True or False, got {value!r}.")
    if not isinstance(chunk_elements, int) or isinstance(chunk_elements, bool) or chunk_elements < 1:
        raise ConfigError(f"`chunk_elements` must be an integer >= 1, got {chunk_elements!r}.")
    inc = check_patterns("include", include)
    exc = check_patterns("exclude", exclude)
    folder = Path(run_dir)
    index = read_trajectory(folder)
    chosen = _chosen_steps(index, steps)
    if final is None:
        reference: Any = chosen[-1]
        rows = chosen[:-1]
        final_desc: Any = {"step": reference}
    else:
        reference = final
        rows = chosen
        final_desc = "model" if isinstance(final, torch.nn.Module) else "tensors"
    if len(rows) < n_components:
        raise DirectionError(
            f"`n_components={n_components}` needs at least that many snapshots besides the centre; the run gives "
            f"{len(rows)} (steps {chosen}). Save snapshots more often (`every_n_steps`) or ask for fewer components."
        )

    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        files = {
            s: stack.enter_context(safe_open(str(folder / _entry(index, s)["file"]), framework="pt")) for s in chosen
        }
        shapes = _ordered(_common_shapes(files, chosen), final, index)
        final_get = _reference_reader(reference, files, shapes)
        names = _select_names(shapes, inc, exc, include_1d, final_get.names)
        t = len(rows)

        def blocks(desc: str) -> Any:
            """Yield (name, row range, T × chunk float64 block of differences) for every selected slice."""
            for name in tqdm(names, desc=desc, unit="param", disable=not progress, leave=False):
                shape = shapes[name]
                if len(shape) == 0:
                    block = torch.stack([files[s].get_tensor(name).double().reshape(1) for s in rows])
                    yield name, None, block - final_get(name, None).double().reshape(1)
                    continue
                row_numel = max(1, int(np.prod(shape[1:])))
                per_chunk = max(1, chunk_elements // (row_numel * t))
                for lo in range(0, shape[0], per_chunk):
                    hi = min(shape[0], lo + per_chunk)
                    block = torch.stack([files[s].get_slice(name)[lo:hi].double().reshape(-1) for s in rows])
                    yield name, (lo, hi), block - final_get(name, (lo, hi)).double().reshape(-1)

        gram = torch.zeros(t, t, dtype=torch.float64)
        for _, _, block in blocks("gram"):
            gram += block @ block.T
        g = gram.numpy()
        centering = np.eye(t) - (1.0 / t if center else 0.0)
        eigvals, eigvecs = np.linalg.eigh(centering @ g @ centering)
        eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
        total = float(eigvals.clip(min=0).sum())
        scale = float(max(abs(eigvals[0]), 1e-300))
        if eigvals[n_components - 1] <= 1e-12 * scale or total == 0.0:
            raise DirectionError(
                f"the path spans fewer than {n_components} dimensions (singular values "
                f"{np.sqrt(eigvals.clip(min=0))[: n_components + 1].tolist()}); use more or different snapshots."
            )
        sing = np.sqrt(eigvals[:n_components])
        weights = centering @ eigvecs[:, :n_components] / sing  # c_k = Σ_j weights[j, k] · d_j, unit norm
        coords = g @ weights  # ⟨d_i, c_k⟩ for the rows
        signs = np.where(coords[0] < 0, -1.0, 1.0)
        weights, coords = weights * signs, coords * signs
        w = torch.from_numpy(np.ascontiguousarray(weights.T))
        components: list[dict[str, torch.Tensor]] = [{} for _ in range(n_components)]
        pieces: dict[str, list[torch.Tensor]] = {}
        for name, _, block in blocks("components"):
            pieces.setdefault(name, []).append(w @ block)
        for name, parts in pieces.items():
            full = torch.cat(parts, dim=1)
            for k in range(n_components):
                components[k][name] = full[k].reshape(shapes[name])

    ratio = eigvals[:n_components] / total
    coordinates = {s: [float(x) + 0.0 for x in coords[i]] for i, s in enumerate(rows)}  # + 0.0: no -0.0
    if final is None:
        coordinates[reference] = [0.0] * n_components
    device_dtype = _target(final, names)
    directions = []
    for k in range(n_components):
        config = {
            "kind": "trajectory",
            "component": k,
            "explained_variance_ratio": float(ratio[k]),
            "center": center,
            "steps": chosen,
            "final": final_desc,
            "run_dir": str(folder),
            "include": list(inc) if inc is not None else None,
            "exclude": list(exc) if exc is not None else None,
            "include_1d": include_1d,
        }
        tensors = {n: v.to(*device_dtype.get(n, ("cpu", torch.float32))) for n, v in components[k].items()}
        directions.append(Direction(tensors, config))
    info = {
        "steps": chosen,
        "pca_steps": rows,
        "coordinates": [coordinates[s] for s in chosen],
        "explained_variance_ratio": [float(r) for r in ratio],
        "singular_values": [float(x) for x in sing],
        "center": center,
        "final": final_desc,
        "num_parameters": int(sum(int(np.prod(shapes[n])) for n in names)),
        "run_dir": str(folder),
        "train_losses": list(index.get("train_losses", [])),
    }
    logger.info(
        "trajectory PCA over %d snapshots: explained variance ratio %s", len(rows), info["explained_variance_ratio"]
    )
    return directions, info


class _Reader:
    """θ_n slice by slice: `reader(name, (lo, hi))` (rows lo:hi, or the whole tensor for None); `names` it has."""

    def __init__(self, fn: Any, names: set[str]) -> None:
        self.fn = fn
        self.names = names

    def __call__(self, name: str, rows: tuple[int, int] | None) -> torch.Tensor:
        return self.fn(name, rows)


def _reference_reader(reference: Any, files: dict[int, Any], shapes: dict[str, tuple[int, ...]]) -> _Reader:
    """A reader of θ_n from a snapshot file (a step), a model or a tensor mapping."""
    if isinstance(reference, int):
        f = files[reference]

        def from_file(name: str, rows: tuple[int, int] | None) -> torch.Tensor:
            return f.get_tensor(name) if rows is None else f.get_slice(name)[rows[0] : rows[1]]

        return _Reader(from_file, set(shapes))
    if isinstance(reference, torch.nn.Module):
        tensors: Mapping[str, torch.Tensor] = dict(reference.named_parameters())
    elif isinstance(reference, Mapping):
        tensors = reference
    else:
        raise ConfigError(
            f"`final` must be a model, a name -> tensor mapping or None (the last snapshot), got {type(reference).__name__}."
        )
    for name, shape in shapes.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise DirectionError(
                f"`final`[{name!r}] has shape {tuple(tensors[name].shape)} but the snapshots have {shape}; "
                "pass the model the run trained."
            )

    def from_tensors(name: str, rows: tuple[int, int] | None) -> torch.Tensor:
        t = tensors[name].detach()
        return (t if rows is None else t[rows[0] : rows[1]]).to("cpu")

    return _Reader(from_tensors, {n for n in shapes if n in tensors})


def _common_shapes(files: dict[int, Any], steps: list[int]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the floating-point tensors every chosen snapshot holds, in the first file's order."""
    first = files[steps[0]]
    shapes = {}
    for name in first.keys():
        sl = first.get_slice(name)
        if sl.get_dtype() not in ("F16", "BF16", "F32", "F64"):
            continue
        shapes[name] = tuple(sl.get_shape())
    for s in steps[1:]:
        keys = set(files[s].keys())
        for name in list(shapes):
            if name not in keys:
                del shapes[name]
            elif tuple(files[s].get_slice(name).get_shape()) != shapes[name]:
                raise DirectionError(
                    f"the snapshots disagree on the shape of {name!r} (step {steps[0]}: {shapes[name]}, step {s}: "
                    f"{tuple(files[s].get_slice(name).get_shape())}); they are not from one run."
                )
    return shapes


def _ordered(shapes: dict[str, tuple[int, ...]], final: Any, index: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """`shapes` in model order (safetensors files list names sorted): the model's, else the index's."""
    if isinstance(final, torch.nn.Module):
        order = [n for n, _ in final.named_parameters()]
    else:
        listed = (index.get("model") or {}).get("parameters") or []
        order = [entry[0] for entry in listed if isinstance(entry, (list, tuple)) and entry]
    rank = {n: i for i, n in enumerate(order)}
    return dict(sorted(shapes.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _select_names(
    shapes: dict[str, tuple[int, ...]],
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    include_1d: bool,
    available: set[str],
) -> list[str]:
    """The same rules as `select_parameters` (regexes with `re.search`, 1-D tensors only if asked)."""
    inc = [re.compile(p) for p in include] if include else None
    exc = [re.compile(p) for p in exclude or []]
    names = [
        n
        for n, shape in shapes.items()
        if n in available
        and (len(shape) >= 2 or include_1d)
        and (inc is None or any(p.search(n) for p in inc))
        and not any(p.search(n) for p in exc)
    ]
    if not names:
        raise DirectionError(
            f"No saved parameter matched the selection (include={include}, exclude={exclude}, "
            f"include_1d={include_1d}); loosen `include`/`exclude` or set `include_1d=True`."
        )
    return names


def _target(final: Any, names: list[str]) -> dict[str, tuple[torch.device, torch.dtype]]:
    """Device and dtype of each direction tensor: the model's parameter's, else the CPU in float32."""
    if isinstance(final, torch.nn.Module):
        params = dict(final.named_parameters())
        return {n: (params[n].device, params[n].dtype) for n in names if n in params}
    return {}


def trajectory_span(coordinates: Sequence[Sequence[float]], margin: float = 0.25) -> list[list[float]]:
    """A plane span `[[x_low, x_high], [y_low, y_high]]` around the path and the centre, widened by `margin`.

    Example:
    ```python
    >>> from hf_landscape.directions.trajectory import trajectory_span
    >>> trajectory_span([[2.0, 1.0], [1.0, -0.5], [0.0, 0.0]], margin=0.5)
    [[-1.0, 3.0], [-1.25, 1.75]]

    ```
    """
    pts = np.asarray(coordinates, dtype=np.float64).reshape(len(coordinates), -1)
    out = []
    for k in range(pts.shape[1]):
        lo, hi = min(0.0, float(pts[:, k].min())), max(0.0, float(pts[:, k].max()))
        width = hi - lo if hi > lo else 1.0
        out.append([lo - margin * width, hi + margin * width])
    return out


def path_losses(
    model: torch.nn.Module,
    objective: Any,
    run_dir: str | os.PathLike,
    *,
    steps: Sequence[int] | None = None,
    progress: bool = True,
) -> list[float]:
    """The objective at each snapshot's own weights (the true loss along the path, not the plane's).

    Every parameter the snapshot holds is set from it (cast to the parameter's dtype and device); the others
    keep their values. The model's weights and train/eval mode are restored bit for bit afterwards, however
    the call ends. One snapshot is in memory at a time.
    """
    from safetensors.torch import load_file

    from ..engine.editors import editing
    from ..objectives.loss import loss_value

    folder = Path(run_dir)
    index = read_trajectory(folder)
    chosen = _chosen_steps(index, steps)
    all_params = dict(model.named_parameters())
    losses = []
    first = load_file(str(folder / _entry(index, chosen[0])["file"]))
    names = [n for n in all_params if n in first]
    if not names:
        raise DirectionError(
            f"the snapshots in {str(folder)!r} name no parameter of this model; pass the model the run trained."
        )
    params = {n: all_params[n] for n in names}
    Direction({n: first[n] for n in names}).check_fits(all_params, argument="snapshot")
    del first
    with editing(model, params) as editor:
        for step in tqdm(chosen, desc="path", unit="ckpt", disable=not progress, leave=False):
            snap = load_file(str(folder / _entry(index, step)["file"]))
            missing = [n for n in names if n not in snap]
            if missing:
                raise DirectionError(f"the snapshot of step {step} lacks {missing[:3]}; the run changed its selection.")
            with torch.no_grad():
                torch._foreach_copy_(
                    editor.params, [snap[n].to(p.device, p.dtype) for n, p in zip(names, editor.params)]
                )
            del snap
            losses.append(loss_value(model, objective))
    return losses
